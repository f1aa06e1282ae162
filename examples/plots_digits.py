"""See what happened: plots, calibration and TensorBoard logs of a small digits run.

Fine-tunes a small CNN on scikit-learn's 8x8 digits (installed with the
``demo`` extra, no download) in two phases, then draws every plot of
:mod:`finetunekit.plots`, fits temperature scaling on the validation split
and writes TensorBoard logs. The images in ``docs/img/`` are made by::

    python examples/plots_digits.py docs/img

Needs ``pip install 'finetunekit[plots,demo]'``.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import keras
import numpy as np

import finetunekit as ftk
from finetunekit import plots


def small_cnn() -> ftk.Backbone:
    """A small CNN standing in for a pretrained backbone (16x16 grayscale input)."""
    inputs = keras.Input((16, 16, 1))
    x = keras.layers.Conv2D(16, 3, activation="relu", name="conv1")(inputs)
    x = keras.layers.Conv2D(16, 3, activation="relu", name="conv2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(32, activation="relu", name="features")(x)
    return ftk.Backbone.from_model(keras.Model(inputs, outputs, name="small_cnn"))


def main(
    out_dir: str = "docs/img",
    n: int = 1797,
    epochs: int = 4,
    fine_tune_epochs: int = 12,
    log_dir: str | None = None,
) -> dict[str, Any]:
    """Trains, plots and calibrates; returns the paths written and the figures' inputs.

    Args:
        out_dir: Folder for the PNG files.
        n: How many digits to use (at most 1797).
        epochs: Phase-1 epochs (frozen backbone).
        fine_tune_epochs: Phase-2 epochs (whole network).
        log_dir: TensorBoard folder, or ``None`` for no logs.

    Returns:
        ``{"paths": {name: png path}, "result": FineTuneResult, "report":
        EvaluationReport, "calibration": dict}``.

    Example:
        >>> out = main("/tmp/plots", n=300, epochs=1, fine_tune_epochs=1)  # doctest: +SKIP
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = np.round(digits.images * (255.0 / 16.0)).astype("uint8")[:n]
    y = digits.target.astype("int64")[:n]
    data = ftk.DatasetAdapter.from_arrays(x, y)
    rest, test = data.split(0.25, seed=0)
    train, val = rest.split(0.2, seed=0)
    trainer = ftk.Trainer(
        learning_rate=3e-3,
        epochs=epochs,
        fine_tune_epochs=fine_tune_epochs,
        fine_tune_learning_rate=1e-2,
        batch_size=32,
        verbose=0,
        seed=0,
        log_dir=log_dir,
    )
    tuner = (
        ftk.FineTuner()
        .with_data(train, validation=val)
        .with_backbone(small_cnn())
        .with_head(ftk.HeadReplacer(hidden_units=(32,), dropout=0.1))
        .with_trainer(trainer)
    )
    result = tuner.fit()
    report = result.evaluate(test)
    os.makedirs(out_dir, exist_ok=True)
    paths = {
        name: os.path.join(out_dir, f"{name}.png")
        for name in (
            "training_curves",
            "confusion_matrix",
            "per_class_f1",
            "most_confused",
            "top_losses",
            "reliability",
        )
    }
    plots.plot_history(result, path=paths["training_curves"])
    plots.plot_confusion_matrix(report, path=paths["confusion_matrix"])
    plots.plot_per_class(report, metric="f1", path=paths["per_class_f1"])
    plots.plot_most_confused(result, test, k=9, path=paths["most_confused"])
    plots.plot_top_losses(result, test, k=9, path=paths["top_losses"])
    plots.plot_reliability(report, path=paths["reliability"])
    calibration = result.calibrate(val)
    print(report)
    print("temperature scaling:", {k: round(v, 4) for k, v in calibration.items()})
    return {"paths": paths, "result": result, "report": report, "calibration": calibration}


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "docs/img")
