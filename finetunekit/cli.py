"""The ``finetunekit`` command line: train, evaluate, predict and export from JSON recipes.

Recipes are exactly what ``FineTuner.get_config()`` returns. Data is a folder
of images (one sub-folder per class) or a ``.npz`` file holding arrays ``x``
and ``y``. A model trained from a folder reads folders and image files the
way it was trained (size, colour mode) without being told again.

Arguments and paths are checked before TensorFlow is imported, so a mistake
costs well under a second; every user error (a bad argument, a missing file,
any ``FineTuneError``) prints exactly one line on stderr and exits with 2.
TensorFlow's start-up logging is silenced (``TF_CPP_MIN_LOG_LEVEL=3``) unless
``TF_CPP_MIN_LOG_LEVEL`` is set in the environment.

This module imports only the standard library at import time.

Examples:
    $ finetunekit train recipe.json --data train.npz --output model.keras
    $ finetunekit evaluate model.keras --data test.npz --json report.json
    $ finetunekit predict model.keras photos/new/ --json predictions.json
    $ finetunekit export model.keras --format litert --output model.tflite --sample test.npz
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from finetunekit.errors import DataError, FineTuneError, LoadError, format_error

__all__ = ["main", "load_data", "EXIT_USER_ERROR"]

EXIT_USER_ERROR = 2
_COLOR_MODES = ("rgb", "grayscale", "rgba")
# absl / TensorFlow C++ log lines: "I0000 00:00:1796230946.439415   22988 file.cc:31] text"
# (before absl is initialised the "seconds" are the Unix time) or "I1202 18:56:15.538525 ..."
_LOG_LINE = re.compile(r"^([IWEF])\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ \S+:\d+\] ")
_ABSL_PREAMBLE = "WARNING: All log messages before absl::InitializeLog() is called"


class _UsageError(Exception):
    """A bad command line: one line on stderr, exit code 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (no usage block) and is not ``SystemExit``."""

    def error(self, message: str) -> Any:
        raise _UsageError(f"{self.prog}: error: {message} (see {self.prog} --help)")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an int >= 1, received {text!r}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, received {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
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
    train.add_argument("--validation", type=_fraction, help="validation fraction split off --data")
    train.add_argument(
        "--output", default="model.keras", help="where to save (default model.keras)"
    )
    train.add_argument(
        "--image-size",
        type=_positive_int,
        default=224,
        help="size folders are loaded at (default 224); the model then resizes any image to it",
    )
    train.add_argument(
        "--color-mode", choices=_COLOR_MODES, default="rgb", help="colour mode of folders"
    )
    train.add_argument("--epochs", type=_positive_int, help="override the recipe's epochs")
    train.add_argument("--quiet", action="store_true", help="no progress bar")

    evaluate = commands.add_parser(
        "evaluate",
        help="evaluate a saved result on labelled data",
        description="Print the evaluation report of a saved .keras result on labelled data. "
        "Folders are read the way the model was trained (size, colour mode).",
    )
    evaluate.add_argument("model", help="a .keras file written by finetunekit")
    evaluate.add_argument("--data", required=True, help="test data: image folder or .npz (x, y)")
    evaluate.add_argument("--json", help="also write report.to_dict() to this file")

    predict = commands.add_parser(
        "predict",
        help="predict with a saved result",
        description="Print one line per input: the input, the predicted class (or values) "
        "and its probability. Image files and folders need a model trained from a folder.",
    )
    predict.add_argument("model", help="a .keras file written by finetunekit")
    predict.add_argument(
        "inputs", nargs="+", help="image files, folders of images, or .npz (x) / .npy arrays"
    )
    predict.add_argument("--json", help="also write the predictions to this file")
    predict.add_argument("--batch-size", type=_positive_int, default=64, help="default 64")

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


# --------------------------------------------------------------------------- checks (no TF)


def _missing(name: str, path: str, expected: str, fix: str = "Check the path") -> DataError:
    return DataError(
        format_error(
            f"{name} does not exist" if not os.path.exists(path) else f"{name} is not usable",
            expected=expected,
            received={name.lstrip("-").replace("-", "_"): path},
            fix=fix,
        )
    )


def _check_data_path(name: str, path: str) -> None:
    expected = "an image folder (one sub-folder per class) or a .npz file with x and y"
    if os.path.isdir(path):
        return
    if os.path.isfile(path) and path.endswith(".npz"):
        return
    if os.path.isfile(path):
        raise DataError(
            format_error(
                f"{name} must be an image folder or a .npz file",
                expected=expected,
                received={name.lstrip("-").replace("-", "_"): path},
                fix="Save arrays with np.savez(path, x=inputs, y=labels)",
            )
        )
    raise _missing(name, path, expected)


def _check_model_file(path: str) -> None:
    """A finetunekit ``.keras`` result, checked from its zip directory (nothing imported)."""
    expected = "a .keras file written by FineTuneResult.save"
    if not os.path.isfile(path):
        raise LoadError(
            format_error(
                "The model file does not exist", expected=expected, received={"model": path}
            )
        )
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise LoadError(
            format_error(
                "The model file is not a .keras archive (corrupt or another format)",
                expected=expected,
                received={"model": path},
                fix="Save the result again with result.save('model.keras')",
            )
        ) from exc
    if "finetunekit.json" not in names:
        raise LoadError(
            format_error(
                "The file is a Keras model but not a finetunekit result (no finetunekit.json)",
                expected=expected,
                received={"model": path},
                fix="Load it with keras.saving.load_model, or use it as Backbone.from_file(path)",
            )
        )


def _check_output(name: str, path: str, suffix: str | None = None) -> None:
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise DataError(
            format_error(
                f"The folder of {name} does not exist",
                expected="a path in an existing folder",
                received={name.lstrip("-"): path},
                fix=f"Create {parent!r} first",
            )
        )
    if suffix and not path.endswith(suffix):
        raise DataError(
            format_error(
                f"{name} must end in {suffix}",
                expected=f"a path ending in {suffix}",
                received={name.lstrip("-"): path},
                fix=f"Use {os.path.splitext(path)[0]}{suffix}",
            )
        )


def _read_recipe(path: str) -> dict[str, Any]:
    if not os.path.isfile(path):
        raise _missing("recipe", path, "a JSON file written from FineTuner.get_config()")
    with open(path, encoding="utf-8") as handle:
        try:
            config = json.load(handle)
        except json.JSONDecodeError as exc:
            raise DataError(
                format_error(
                    f"The recipe is not valid JSON ({exc.msg} at line {exc.lineno})",
                    expected="a JSON object written from FineTuner.get_config()",
                    received={"recipe": path},
                    fix="Write it with json.dump(tuner.get_config(), file)",
                )
            ) from exc
    if not isinstance(config, dict):
        raise DataError(
            format_error(
                "The recipe is not a JSON object",
                expected="a JSON object written from FineTuner.get_config()",
                received={"recipe": path},
            )
        )
    return config


def _check(args: argparse.Namespace) -> None:
    """Every check that needs no TensorFlow: paths, suffixes, contradicting options."""
    if args.command == "train":
        args.config = _read_recipe(args.recipe)
        _check_data_path("--data", args.data)
        if args.validation_data:
            _check_data_path("--validation-data", args.validation_data)
            if args.validation is not None:
                raise DataError(
                    format_error(
                        "--validation and --validation-data are both given",
                        expected="one of them",
                        received={
                            "validation": args.validation,
                            "validation_data": args.validation_data,
                        },
                    )
                )
        _check_output("--output", args.output, ".keras")
    elif args.command == "evaluate":
        _check_model_file(args.model)
        _check_data_path("--data", args.data)
        if args.json:
            _check_output("--json", args.json)
    elif args.command == "predict":
        _check_model_file(args.model)
        for path in args.inputs:
            if not os.path.exists(path):
                raise _missing("input", path, "image files, folders, .npz or .npy files")
        if args.json:
            _check_output("--json", args.json)
    elif args.command == "export":
        _check_model_file(args.model)
        _check_output("--output", args.output)
        if args.sample and not (os.path.isfile(args.sample) and args.sample.endswith(".npz")):
            raise _missing("--sample", args.sample, "a .npz file with an array x")


# --------------------------------------------------------------------------- TensorFlow


@contextmanager
def _filtered_stderr(level: int) -> Iterator[None]:
    """Drops TensorFlow's C++ start-up log lines below ``level`` (as TF_CPP_MIN_LOG_LEVEL).

    Lines written before absl's logging is initialised ignore
    ``TF_CPP_MIN_LOG_LEVEL``; they go straight to file descriptor 2, so it is
    redirected to a temporary file while TensorFlow is imported, and every
    other line is written back.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real stderr (embedded): nothing to filter
        yield
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            try:
                sys.stderr.flush()
            finally:
                os.dup2(saved, 2)
                os.close(saved)
            capture.seek(0)
            text = capture.read().decode("utf-8", errors="replace")
            dropped = {"I": 0, "W": 1, "E": 2, "F": 99}
            kept = [
                line
                for line in text.splitlines(keepends=True)
                if not (level >= 1 and line.startswith(_ABSL_PREAMBLE))
                and not ((m := _LOG_LINE.match(line)) and dropped[m.group(1)] < level)
            ]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


def _import_tensorflow() -> None:
    """Imports TensorFlow quietly for the command line's own runs (unless the user set the level)."""
    if "tensorflow" in sys.modules:
        return
    user_level = os.environ.get("TF_CPP_MIN_LOG_LEVEL")
    if user_level is None:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    try:
        level = int(os.environ["TF_CPP_MIN_LOG_LEVEL"])
    except ValueError:
        level = 0
    with _filtered_stderr(level):
        import tensorflow  # noqa: F401

    if user_level is None:
        try:
            from absl import logging as absl_logging

            absl_logging.set_verbosity(absl_logging.ERROR)
        except ImportError:  # pragma: no cover - absl comes with TensorFlow
            pass


# --------------------------------------------------------------------------- data


def load_data(
    path: str,
    *,
    image_size: int = 224,
    color_mode: str = "rgb",
    class_names: list[str] | None = None,
) -> Any:
    """Returns a ``DatasetAdapter`` for a ``.npz`` file (arrays ``x``, ``y``) or an image folder.

    Examples:
        >>> load_data("train.npz")  # doctest: +SKIP
    """
    from finetunekit.data import DatasetAdapter

    if os.path.isdir(path):
        return DatasetAdapter.from_directory(
            path,
            image_size=(image_size, image_size),
            color_mode=color_mode,
            class_names=class_names,
        )
    if path.endswith(".npz") and os.path.isfile(path):
        x, y = _read_npz(path, need_y=True)
        return DatasetAdapter.from_arrays(x, y, class_names=class_names)
    _check_data_path("--data", path)  # raises
    raise AssertionError("unreachable")  # pragma: no cover


def _read_npz(path: str, *, need_y: bool) -> tuple[Any, Any]:
    import numpy as np

    with np.load(path, allow_pickle=False) as arrays:
        wanted = ("x", "y") if need_y else ("x",)
        if any(k not in arrays for k in wanted):
            raise DataError(
                format_error(
                    f"The .npz file must hold arrays named {' and '.join(repr(k) for k in wanted)}",
                    expected="np.savez(path, x=images, y=labels)",
                    received={"data": path, "arrays": sorted(arrays.files)},
                    fix="Save the arrays under the names x and y",
                )
            )
        return arrays["x"], (arrays["y"] if need_y else None)


# --------------------------------------------------------------------------- commands


def _train(args: argparse.Namespace) -> int:
    import finetunekit as ftk

    config = args.config
    if args.epochs is not None and isinstance(config.get("trainer"), dict):
        config["trainer"]["epochs"] = args.epochs
    if args.quiet and isinstance(config.get("trainer"), dict):
        config["trainer"]["verbose"] = 0
    tuner = ftk.FineTuner.from_config(config)
    data = load_data(args.data, image_size=args.image_size, color_mode=args.color_mode)
    validation: Any = args.validation if args.validation is not None else config.get("validation")
    if args.validation_data:
        validation = load_data(
            args.validation_data,
            image_size=args.image_size,
            color_mode=args.color_mode,
            class_names=data.class_names,
        )
    result = tuner.with_data(data, validation=validation).fit()
    result.save(args.output)
    timing = ", ".join(f"{k} {v:.1f}s" for k, v in result.timings.items())
    print(f"saved {args.output} ({result.task}, {len(result.class_names)} classes; {timing})")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    import finetunekit as ftk

    result = ftk.load(args.model)
    # a folder is read the way the model was trained (result.evaluate knows its size and mode)
    data = args.data if os.path.isdir(args.data) else _read_npz(args.data, need_y=True)
    report = result.evaluate(data)
    print(report)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(report.to_dict(), handle, indent=2)
    return 0


def _predict(args: argparse.Namespace) -> int:
    import numpy as np

    import finetunekit as ftk

    result = ftk.load(args.model)
    task = result.task_object
    names: list[str] = []
    outputs: list[Any] = []
    for path in args.inputs:
        if os.path.isfile(path) and path.endswith((".npz", ".npy")):
            if path.endswith(".npz"):
                x = _read_npz(path, need_y=False)[0]
            else:
                x = np.load(path, allow_pickle=False)
            names.extend(f"{path}[{i}]" for i in range(len(x)))
        else:
            from finetunekit.data.decode import image_files

            x = path
            names.extend(image_files(path))
        outputs.append(result.predict(x, batch_size=args.batch_size))
    probs = np.concatenate(outputs) if outputs else np.zeros((0, 1))
    rows: list[dict[str, Any]] = []
    if task.has_classes:
        labels = task.predict_labels(probs, list(result.class_names))
        for name, label, row in zip(names, labels, probs, strict=True):
            score = float(np.max(row)) if task.single_label else None
            if task.single_label and probs.shape[-1] == 1:  # binary: p of the predicted class
                p = float(row[0])
                score = p if label == result.class_names[1] else 1.0 - p
            shown = label if isinstance(label, str) else ",".join(map(str, label))
            print(f"{name}\t{shown}" + (f"\t{score:.4f}" if score is not None else ""))
            rows.append(
                {
                    "input": name,
                    "prediction": label,
                    "probabilities": dict(
                        zip(
                            result.class_names if probs.shape[-1] > 1 else result.class_names[1:],
                            map(float, row),
                            strict=True,
                        )
                    ),
                }
            )
    else:
        for name, row in zip(names, probs, strict=True):
            print(f"{name}\t" + "\t".join(f"{v:.6g}" for v in np.ravel(row)))
            rows.append({"input": name, "values": [float(v) for v in np.ravel(row)]})
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(rows, handle, indent=2)
    return 0


def _export(args: argparse.Namespace) -> int:
    import finetunekit as ftk

    result = ftk.load(args.model, safe_mode=not args.unsafe)
    sample = _read_npz(args.sample, need_y=False)[0] if args.sample else None
    report = result.export(
        args.output,
        args.format,
        quantize=args.quantize,
        sample=sample,
        representative_data=sample,
    )
    print(report)
    return 0


def _backbones(args: argparse.Namespace) -> int:
    from finetunekit.backbones.registry import available

    print("\n".join(available()))
    return 0


def _say(prefix: str, err: BaseException) -> None:
    """One line on stderr, whatever the message holds."""
    text = " ".join(str(err).split()) or type(err).__name__
    print(f"{prefix}: error: {text}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit code (0 ok, 2 user error).

    Examples:
        >>> main(["train", "missing.json", "--data", "missing.npz"])  # doctest: +SKIP
        2
    """
    try:
        args = _parser().parse_args(argv)
    except _UsageError as err:
        print(" ".join(str(err).split()), file=sys.stderr)
        return EXIT_USER_ERROR
    prefix = f"finetunekit {args.command}"
    handlers = {
        "train": _train,
        "evaluate": _evaluate,
        "predict": _predict,
        "export": _export,
        "backbones": _backbones,
    }
    try:
        _check(args)  # paths and options: before TensorFlow is imported
        _import_tensorflow()
        return handlers[args.command](args)
    except BrokenPipeError:  # the reader stopped early (``| head``): no message, as Unix tools
        try:  # further writes at exit would raise again
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 1
    except (FineTuneError, OSError, json.JSONDecodeError) as err:
        _say(prefix, err)
        return EXIT_USER_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
