"""The built-in ``regression`` task: float targets, a linear output, mean squared error.

Stored targets are float32 ``(N,)`` or ``(N, D)``; batch targets ``(B, D)``.
With ``HeadReplacer(scale_targets=True)`` the loss is the mean squared error
of standardised targets (the head undoes the scaling inside the model).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from finetunekit.tasks.base import Task

if TYPE_CHECKING:  # pragma: no cover - typing only
    from finetunekit.tasks.labels import LabelEncoding

__all__ = ["Regression"]


class Regression(Task):
    """One float (or a vector of floats) per example.

    Everything but reading the labels is the base :class:`~finetunekit.Task`
    (value targets); labels go through the same inference as the other
    built-ins, so ``task="regression"`` refuses string labels with the same
    message.

    Examples:
        >>> from finetunekit import tasks
        >>> task = tasks.get("regression")
        >>> type(task.loss()).__name__, task.activation, task.has_classes
        ('MeanSquaredError', 'linear', False)
    """

    name: ClassVar[str] = "regression"

    def encode(
        self,
        y: Any,
        *,
        class_names: list[str] | None = None,
        name: str = "y",
        check_single_class: bool | None = None,
    ) -> tuple[np.ndarray, LabelEncoding]:
        from finetunekit.tasks.labels import encode_labels

        targets, encoding = encode_labels(y, task="regression", class_names=class_names, name=name)
        self.check_targets(targets, name)
        return targets, encoding
