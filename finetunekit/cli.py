"""The ``finetunekit`` command line: train, evaluate and export from JSON recipes.

Recipes are exactly what ``FineTuner.get_config()`` returns. Data is a folder
of images (one sub-folder per class) or a ``.npz`` file holding arrays ``x``
and ``y``. Every ``FineTuneError`` ends the command with a one-line message
and exit code 2.

Examples:
    $ finetunekit train recipe.json --data train.npz --output model.keras
    $ finetunekit evaluate model.keras --data test.npz --json report.json
    $ finetunekit export model.keras --format litert --output model.tflite --sample test.npz
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["main", "load_data"]

EXIT_USER_ERROR = 2


def load_data(path: str, *, image_size: int = 224, class_names: list[str] | None = None) -> Any:
    """Returns a ``DatasetAdapter`` for a ``.npz`` file (arrays ``x``, ``y``) or an image folder.

    Examples:
        >>> load_data("train.npz")  # doctest: +SKIP
    """
    from finetunekit.data import DatasetAdapter
    from finetunekit.errors import DataError, format_error

    if os.path.isdir(path):
        return DatasetAdapter.from_directory(
            path, image_size=(image_size, image_size), class_names=class_names
        )
    if path.endswith(".npz") and os.path.isfile(path):
        with __import__("numpy").load(path, allow_pickle=False) as arrays:
            if "x" not in arrays or "y" not in arrays:
                raise DataError(
                    format_error(
                        "The .npz file must hold arrays named 'x' and 'y'",
                        expected="np.savez(path, x=images, y=labels)",
                        received={"data": path, "arrays": sorted(arrays.files)},
                        fix="Save the arrays under the names x and y",
                    )
                )
            x, y = arrays["x"], arrays["y"]
        return DatasetAdapter.from_arrays(x, y, class_names=class_names)
    raise DataError(
        format_error(
            "--data must be an image folder or a .npz file",
            expected="an existing folder (one sub-folder per class) or file.npz with x and y",
            received={"data": path},
            fix="Check the path",
        )
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="finetunekit",
        description="Fine-tune pretrained Keras models from JSON recipes.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser(
        "train",
        help="fine-tune from a recipe (FineTuner.get_config() JSON)",
        description="Fine-tune from a JSON recipe and save the result as a .keras file.",
    )
    train.add_argument("recipe", help="recipe JSON written from FineTuner.get_config()")
    train.add_argument("--data", required=True, help="training data: image folder or .npz (x, y)")
    train.add_argument("--validation-data", help="validation data (folder or .npz)")
    train.add_argument("--validation", type=float, help="validation fraction split off --data")
    train.add_argument(
        "--output", default="model.keras", help="where to save (default model.keras)"
    )
    train.add_argument("--image-size", type=int, default=224, help="image size for folders")
    train.add_argument("--epochs", type=int, help="override the recipe's epochs")
    train.add_argument("--quiet", action="store_true", help="no progress bar")

    evaluate = commands.add_parser(
        "evaluate",
        help="evaluate a saved result on labelled data",
        description="Print the evaluation report of a saved .keras result on labelled data.",
    )
    evaluate.add_argument("model", help="a .keras file written by finetunekit")
    evaluate.add_argument("--data", required=True, help="test data: image folder or .npz (x, y)")
    evaluate.add_argument("--image-size", type=int, default=224, help="image size for folders")
    evaluate.add_argument("--json", help="also write report.to_dict() to this file")

    export = commands.add_parser(
        "export",
        help="export a saved result, verified in its runtime",
        description="Export a saved result and check it against the Keras model.",
    )
    export.add_argument("model", help="a .keras file written by finetunekit")
    export.add_argument(
        "--format", default="saved_model", choices=["keras", "saved_model", "onnx", "litert"]
    )
    export.add_argument("--output", required=True, help="artifact path (folder for saved_model)")
    export.add_argument("--quantize", choices=["dynamic", "int8"], help="LiteRT quantisation")
    export.add_argument("--sample", help=".npz whose x is compared (and calibrates int8)")
    export.add_argument("--unsafe", action="store_true", help="load with safe_mode=False")

    commands.add_parser(
        "backbones",
        help="list the backbone names",
        description="List every keras.applications backbone name.",
    )
    return parser


def _train(args: argparse.Namespace) -> int:
    import finetunekit as ftk

    with open(args.recipe, encoding="utf-8") as handle:
        config = json.load(handle)
    if args.epochs is not None and isinstance(config.get("trainer"), dict):
        config["trainer"]["epochs"] = args.epochs
    if args.quiet and isinstance(config.get("trainer"), dict):
        config["trainer"]["verbose"] = 0
    tuner = ftk.FineTuner.from_config(config)
    data = load_data(args.data, image_size=args.image_size)
    validation: Any = args.validation if args.validation is not None else config.get("validation")
    if args.validation_data:
        validation = load_data(
            args.validation_data, image_size=args.image_size, class_names=data.class_names
        )
    result = tuner.with_data(data, validation=validation).fit()
    result.save(args.output)
    timing = ", ".join(f"{k} {v:.1f}s" for k, v in result.timings.items())
    print(f"saved {args.output} ({result.task}, {len(result.class_names)} classes; {timing})")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    import finetunekit as ftk

    result = ftk.load(args.model)
    data = load_data(args.data, image_size=args.image_size, class_names=result.class_names or None)
    report = result.evaluate(data)
    print(report)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(report.to_dict(), handle, indent=2)
    return 0


def _export(args: argparse.Namespace) -> int:
    import finetunekit as ftk

    result = ftk.load(args.model, safe_mode=not args.unsafe)
    sample = None
    if args.sample:
        import numpy as np

        with np.load(args.sample, allow_pickle=False) as arrays:
            sample = arrays["x"]
    report = result.export(
        args.output,
        args.format,
        quantize=args.quantize,
        sample=sample,
        representative_data=sample,
    )
    print(report)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit code (0 ok, 2 user error).

    Examples:
        >>> main(["backbones"])  # doctest: +SKIP
        0
    """
    args = _parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from finetunekit.errors import FineTuneError

    try:
        if args.command == "backbones":
            from finetunekit.backbones.registry import available

            print("\n".join(available()))
            return 0
        handler = {"train": _train, "evaluate": _evaluate, "export": _export}[args.command]
        return handler(args)
    except FineTuneError as err:
        print(f"finetunekit {args.command}: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except (OSError, json.JSONDecodeError) as err:
        print(f"finetunekit {args.command}: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
