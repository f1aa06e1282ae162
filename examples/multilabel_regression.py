"""Multi-label classification and regression, end to end through FineTuner.

Multi-label: small images holding any subset of a red, a green and a blue blob;
multi-hot targets give sigmoid outputs and binary cross-entropy. Per-label
decision thresholds are tuned on a validation split (best F1 per label) and
used in the test report, which lists precision / recall / F1 per label.

Regression: the same kind of images, the target is the scene's "illuminance"
in lux (thousands). With ``HeadReplacer(scale_targets=True)`` the head learns
standardised targets and a layer at the end of the model restores lux, so
``predict`` (also after saving and loading) returns lux. Without scaling, the
linear output starts near 0 and a few epochs do not get near the targets.

Run: python examples/multilabel_regression.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import finetunekit as ftk  # noqa: E402

COLOURS = ["red", "green", "blue"]


def make_blob_images(n: int, size: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Returns uint8 images (N, size, size, 3) and multi-hot labels (N, 3) for red/green/blue blobs.

    Example:
        >>> x, y = make_blob_images(5)
        >>> x.shape, y.shape, set(np.unique(y)) <= {0, 1}
        ((5, 16, 16, 3), (5, 3), True)
    """
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 60, (n, size, size, 3)).astype("uint8")
    y = (rng.random((n, 3)) < 0.45).astype("int64")
    for i in range(n):
        for c in np.flatnonzero(y[i]):
            r, col = rng.integers(0, size - 5, 2)
            x[i, r : r + 5, col : col + 5, c] = 230
    return x, y


def make_lux_images(n: int, size: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Returns uint8 images and their illuminance in lux (about 1,000 - 9,000).

    Example:
        >>> x, lux = make_lux_images(3)
        >>> x.shape, bool(lux.min() > 500)
        ((3, 16, 16, 3), True)
    """
    rng = np.random.default_rng(seed)
    level = rng.uniform(0.1, 0.9, n)
    noise = rng.normal(0, 12, (n, size, size, 3))
    x = np.clip(level[:, None, None, None] * 255 + noise, 0, 255).astype("uint8")
    lux = (1000 + 10000 * level).astype("float32")
    return x, lux


def small_cnn(seed: int = 0) -> keras.Model:
    """A small convolutional encoder (stands in for a pretrained image backbone)."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(x)
    return keras.Model(inputs, x, name="small_cnn")


def best_thresholds(probs: np.ndarray, targets: np.ndarray, names: list[str]) -> dict[str, float]:
    """Per label, the threshold in 0.05 .. 0.95 with the best F1 on validation data."""
    chosen = {}
    grid = np.arange(0.05, 0.96, 0.05)
    for k, name in enumerate(names):
        scores = []
        for t in grid:
            hat = probs[:, k] >= t
            tp = np.sum(hat & (targets[:, k] == 1))
            fp = np.sum(hat & (targets[:, k] == 0))
            fn = np.sum(~hat & (targets[:, k] == 1))
            scores.append(2 * tp / max(2 * tp + fp + fn, 1))
        chosen[name] = round(float(grid[int(np.argmax(scores))]), 2)
    return chosen


def multilabel(quick: bool, verbose: int = 0) -> dict[str, Any]:
    """Trains the multi-label model, tunes thresholds on validation, reports on test."""
    x, y = make_blob_images(360 if quick else 900, seed=0)
    x_test, y_test = make_blob_images(150, seed=1)
    data = ftk.DatasetAdapter.from_arrays(x, y, class_names=COLOURS)
    train, val = data.split(0.25, seed=0)
    result = (
        ftk.FineTuner()
        .with_data(train, validation=val)
        .with_backbone(ftk.Backbone.from_model(small_cnn()))
        .with_head(ftk.HeadReplacer(pooling="max", dropout=0.0))
        .with_trainer(
            ftk.Trainer(
                epochs=10 if quick else 20,
                fine_tune_epochs=2 if quick else 5,
                learning_rate=1e-2,
                fine_tune_learning_rate=1e-3,
                verbose=verbose,
                seed=0,
            )
        )
        .fit()
    )
    thresholds = best_thresholds(result.predict(val.inputs_dataset(64)), val.targets(), COLOURS)
    test = ftk.DatasetAdapter.from_arrays(x_test, y_test, class_names=COLOURS)
    report = result.evaluate(test, thresholds=thresholds)
    print(f"multi-label ({data.task}): thresholds tuned on validation: {thresholds}")
    print(report)
    return {"report": report, "thresholds": thresholds, "result": result}


def regression(quick: bool, scale_targets: bool, verbose: int = 0) -> dict[str, Any]:
    """Trains the lux regressor with or without target scaling; returns R² and the result."""
    x, lux = make_lux_images(300 if quick else 800, seed=0)
    x_test, lux_test = make_lux_images(120, seed=1)
    result = (
        ftk.FineTuner()
        .with_data(ftk.DatasetAdapter.from_arrays(x, lux), validation=0.2)
        .with_backbone(ftk.Backbone.from_model(small_cnn()))
        .with_head(ftk.HeadReplacer(hidden_units=(16,), dropout=0.0, scale_targets=scale_targets))
        .with_trainer(
            ftk.Trainer(epochs=8 if quick else 15, learning_rate=1e-2, verbose=verbose, seed=0)
        )
        .fit()
    )
    report = result.evaluate((x_test, lux_test))
    return {"r2": report.metrics["r2"], "mae": report.metrics["mae"], "result": result}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="less data and fewer epochs (tests)")
    parser.add_argument("--verbose", type=int, default=0)
    args = parser.parse_args(argv)

    ml = multilabel(args.quick, args.verbose)
    scaled = regression(args.quick, True, args.verbose)
    raw = regression(args.quick, False, args.verbose)
    print(
        f"regression (lux): scale_targets=True  R² {scaled['r2']:.3f}, MAE {scaled['mae']:.0f} lux\n"
        f"                  scale_targets=False R² {raw['r2']:.3f}, MAE {raw['mae']:.0f} lux"
    )
    x_new, lux_new = make_lux_images(3, seed=7)
    with tempfile.TemporaryDirectory() as folder:
        again = ftk.load(scaled["result"].save(os.path.join(folder, "lux.keras")))
        predicted = again.predict(x_new).reshape(-1)
    print(f"after save/load, predict returns lux: {np.round(predicted)} (true {np.round(lux_new)})")
    return {
        "multilabel_f1_macro": ml["report"].metrics["f1_macro"],
        "thresholds": ml["thresholds"],
        "per_label": ml["report"].per_class,
        "r2_scaled": scaled["r2"],
        "r2_unscaled": raw["r2"],
        "mae_scaled": scaled["mae"],
        "reloaded_prediction": predicted.tolist(),
        "reloaded_truth": lux_new.tolist(),
    }


if __name__ == "__main__":
    main()
