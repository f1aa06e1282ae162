"""Optimizer creation: by name or from a Keras optimizer, at a given learning rate."""

from __future__ import annotations

from typing import Any

import keras

from finetunekit.errors import ArgumentTypeError, TrainerError, format_error

__all__ = ["OPTIMIZERS", "check_optimizer", "make_optimizer", "optimizer_config"]

OPTIMIZERS = {
    "sgd": "SGD",
    "adam": "Adam",
    "adamw": "AdamW",
    "rmsprop": "RMSprop",
    "adagrad": "Adagrad",
    "adadelta": "Adadelta",
    "adamax": "Adamax",
    "nadam": "Nadam",
    "ftrl": "Ftrl",
    "lion": "Lion",
    "lamb": "Lamb",
}


def check_optimizer(optimizer: Any) -> Any:
    """Validates an optimizer name or Keras optimizer instance; returns it.

    Examples:
        >>> check_optimizer("Adam")
        'adam'
    """
    if isinstance(optimizer, keras.optimizers.Optimizer):
        return optimizer
    if not isinstance(optimizer, str):
        raise ArgumentTypeError(
            format_error(
                "optimizer must be a name or a keras.optimizers.Optimizer",
                expected=f"one of {sorted(OPTIMIZERS)} or an optimizer instance",
                received={"optimizer": optimizer},
                fix="Pass optimizer='adam'",
            )
        )
    key = optimizer.lower().replace("_", "")
    if key not in OPTIMIZERS or not hasattr(keras.optimizers, OPTIMIZERS[key]):
        raise TrainerError(
            format_error(
                f"Unknown optimizer {optimizer!r}",
                expected=f"one of {sorted(OPTIMIZERS)} or a keras.optimizers.Optimizer",
                received={"optimizer": optimizer},
                fix="Pass optimizer='adam' or 'sgd'",
            )
        )
    return key


def make_optimizer(
    optimizer: Any,
    learning_rate: Any,
    *,
    weight_decay: float | None = None,
    gradient_accumulation_steps: int | None = None,
    name: str | None = None,
) -> keras.optimizers.Optimizer:
    """Returns a NEW optimizer of the given kind at ``learning_rate``.

    A Keras optimizer instance is copied through its config (never reused
    across phases), with its learning rate replaced.

    Args:
        optimizer: a name from :data:`OPTIMIZERS` or a Keras optimizer.
        learning_rate: a float or a ``LearningRateSchedule``.
        weight_decay: decoupled weight decay (Keras 3 applies
            ``w -= lr * weight_decay * w`` in every optimizer); ``None``
            keeps the optimizer's own (``"adamw"``: 0.004, others none).
        gradient_accumulation_steps: average the gradients of this many
            batches per update (``None`` or 1: update every batch).
        name: the optimizer's name (default: Keras' automatic name).

    Examples:
        >>> type(make_optimizer("sgd", 0.01)).__name__
        'SGD'
        >>> opt = make_optimizer("adamw", 1e-3, weight_decay=0.05, gradient_accumulation_steps=4)
        >>> opt.weight_decay, opt.gradient_accumulation_steps
        (0.05, 4)
    """
    extra: dict[str, Any] = {}
    if weight_decay is not None:
        extra["weight_decay"] = float(weight_decay)
    if gradient_accumulation_steps is not None and int(gradient_accumulation_steps) > 1:
        extra["gradient_accumulation_steps"] = int(gradient_accumulation_steps)
    if name is not None:
        extra["name"] = name
    if isinstance(optimizer, keras.optimizers.Optimizer):
        config = optimizer.get_config()
        config["learning_rate"] = learning_rate
        config.update(extra)
        return type(optimizer).from_config(config)
    cls = getattr(keras.optimizers, OPTIMIZERS[check_optimizer(optimizer)])
    return cls(learning_rate=learning_rate, **extra)


def optimizer_config(optimizer: Any) -> Any:
    """Returns a JSON-serialisable form of a name or optimizer instance."""
    if isinstance(optimizer, keras.optimizers.Optimizer):
        return keras.optimizers.serialize(optimizer)
    return optimizer


def optimizer_from_config(value: Any) -> Any:
    """Inverse of :func:`optimizer_config`."""
    if isinstance(value, dict):
        return keras.optimizers.deserialize(value)
    return value
