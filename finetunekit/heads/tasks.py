"""Task -> output activation, loss and training metrics, by task name.

Kept for code written before :mod:`finetunekit.tasks`: each function asks
the :class:`~finetunekit.Task` of that name (a name or a Task object).
"""

from __future__ import annotations

from typing import Any

import keras

from finetunekit.tasks.base import BUILT_IN as TASKS
from finetunekit.tasks.base import Task, get

__all__ = ["TASKS", "default_activation", "default_loss", "default_metrics"]


def default_activation(task: str | Task) -> str:
    """Returns the output activation for ``task``.

    Examples:
        >>> default_activation("multiclass")
        'softmax'
    """
    return get(task).activation


def default_loss(task: str | Task, label_smoothing: float = 0.0) -> keras.losses.Loss:
    """Returns the loss object for ``task`` (targets as in ``DatasetAdapter.as_dataset``).

    Examples:
        >>> type(default_loss("regression")).__name__
        'MeanSquaredError'
    """
    loss: keras.losses.Loss = get(task).loss(label_smoothing=label_smoothing)
    return loss


def default_metrics(task: str | Task, num_classes: int | None) -> list[Any]:
    """Returns the metrics Keras tracks while training ``task``.

    Examples:
        >>> [m.name for m in default_metrics("binary", 2)]
        ['accuracy']
    """
    return get(task).metrics(num_classes)
