"""Regression target scaling that lives in the model (``HeadReplacer(scale_targets=True)``).

The head's linear output layer predicts standardised targets ``z``; the layer
``head_rescale`` (:class:`TargetScaler`) maps them back, ``y = z * std + mean``,
so ``predict`` (also after saving and loading) returns the original units. The
loss (:class:`StandardizedMeanSquaredError`) divides the error by ``std``, which
makes training exactly the same as training on standardised targets, while the
reported metrics (MAE, R²) stay in the original units.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

__all__ = ["TargetScaler", "StandardizedMeanSquaredError", "target_statistics"]


def target_statistics(targets: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-column mean and standard deviation of regression targets (std 0 -> 1).

    Examples:
        >>> target_statistics(np.array([1.0, 3.0]))
        ([2.0], [1.0])
    """
    arr = np.asarray(targets, dtype=np.float64)
    arr = arr.reshape(len(arr), -1)
    mean = arr.mean(axis=0)
    std = arr.std(axis=0)
    std = np.where(std > 1e-12, std, 1.0)
    return [float(v) for v in mean], [float(v) for v in std]


@keras.saving.register_keras_serializable(package="finetunekit")
class TargetScaler(keras.layers.Layer):
    """Maps standardised predictions back to target units: ``x * std + mean``.

    Args:
        mean: per-target means (one per output column).
        std: per-target standard deviations.

    Examples:
        >>> import numpy as np
        >>> TargetScaler([10.0], [2.0])(np.array([[0.5]], "float32")).numpy().tolist()
        [[11.0]]
    """

    def __init__(self, mean: list[float], std: list[float], **kwargs: Any) -> None:
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.mean = [float(v) for v in mean]
        self.std = [float(v) for v in std]

    def call(self, inputs: Any) -> Any:
        mean = ops.convert_to_tensor(self.mean, "float32")
        std = ops.convert_to_tensor(self.std, "float32")
        return ops.cast(inputs, "float32") * std + mean

    def compute_output_shape(self, input_shape: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(input_shape)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "mean": list(self.mean), "std": list(self.std)}


@keras.saving.register_keras_serializable(package="finetunekit")
class StandardizedMeanSquaredError(keras.losses.Loss):
    """Mean squared error of ``(y_true - y_pred) / std``: MSE on standardised targets.

    Args:
        std: per-target standard deviations.

    Examples:
        >>> import numpy as np
        >>> loss = StandardizedMeanSquaredError([2.0])
        >>> float(loss(np.array([[4.0]]), np.array([[2.0]])))
        1.0
    """

    def __init__(self, std: list[float], name: str = "standardized_mse", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.std = [float(v) for v in std]

    def call(self, y_true: Any, y_pred: Any) -> Any:
        std = ops.convert_to_tensor(self.std, "float32")
        diff = (ops.cast(y_true, "float32") - ops.cast(y_pred, "float32")) / std
        return ops.mean(ops.square(diff), axis=-1)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "std": list(self.std)}
