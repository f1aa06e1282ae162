"""Task -> output activation, loss and training metrics."""

from __future__ import annotations

from typing import Any

import keras

__all__ = ["TASKS", "default_activation", "default_loss", "default_metrics"]

TASKS = ("multiclass", "binary", "multilabel", "regression")

_ACTIVATION = {
    "multiclass": "softmax",
    "binary": "sigmoid",
    "multilabel": "sigmoid",
    "regression": "linear",
}


def default_activation(task: str) -> str:
    """Returns the output activation for ``task``.

    Examples:
        >>> default_activation("multiclass")
        'softmax'
    """
    return _ACTIVATION[task]


def default_loss(task: str, label_smoothing: float = 0.0) -> keras.losses.Loss:
    """Returns the loss object for ``task`` (targets as in ``DatasetAdapter.as_dataset``).

    Examples:
        >>> type(default_loss("regression")).__name__
        'MeanSquaredError'
    """
    if task == "multiclass":
        return keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing)
    if task in ("binary", "multilabel"):
        return keras.losses.BinaryCrossentropy(label_smoothing=label_smoothing)
    return keras.losses.MeanSquaredError()


def default_metrics(task: str, num_classes: int | None) -> list[Any]:
    """Returns the metrics Keras tracks while training ``task``.

    Examples:
        >>> [m.name for m in default_metrics("binary", 2)]
        ['accuracy']
    """
    if task == "multiclass":
        metrics: list[Any] = [keras.metrics.CategoricalAccuracy(name="accuracy")]
        if num_classes and num_classes > 5:
            metrics.append(keras.metrics.TopKCategoricalAccuracy(k=5, name="top_5_accuracy"))
        return metrics
    if task == "binary":
        return [keras.metrics.BinaryAccuracy(name="accuracy")]
    if task == "multilabel":
        return [
            keras.metrics.BinaryAccuracy(name="binary_accuracy"),
            keras.metrics.AUC(multi_label=True, name="auc"),
        ]
    return [keras.metrics.MeanAbsoluteError(name="mae")]
