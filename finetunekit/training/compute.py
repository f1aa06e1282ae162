"""Compute settings: XLA per phase and mixed precision.

The defaults come from measurements (see docs/performance.md): on CPU, XLA
makes every step through a convolutional backbone several times slower (its
CPU convolutions do not use oneDNN) and adds long compile times; for the
small head-only model trained on cached features it saves a little per step
but costs seconds of compiling, more than it saves over a typical frozen
phase. So on CPU every step kind runs without XLA. With a GPU or TPU, Keras'
own ``"auto"`` rule (XLA when the model supports it) applies.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

import keras
import tensorflow as tf

from finetunekit.errors import TrainerError, format_error

__all__ = [
    "JIT_SETTINGS",
    "PRECISIONS",
    "check_jit_compile",
    "check_precision",
    "has_accelerator",
    "precision_scope",
    "resolve_jit_compile",
]

PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
JIT_SETTINGS = ("auto", True, False)

# What "auto" picks per step kind on a CPU-only machine (measured, docs/performance.md).
_CPU_AUTO = {"features": False, "head": False, "frozen": False, "full": False}


def has_accelerator() -> bool:
    """Whether TensorFlow sees a GPU or TPU.

    Examples:
        >>> isinstance(has_accelerator(), bool)
        True
    """
    return any(d.device_type in ("GPU", "TPU") for d in tf.config.list_physical_devices())


def check_jit_compile(jit_compile: Any) -> bool | str:
    """Validates a ``jit_compile`` setting: ``"auto"``, ``True`` or ``False``.

    Examples:
        >>> check_jit_compile("auto")
        'auto'
    """
    if jit_compile not in JIT_SETTINGS or (
        not isinstance(jit_compile, bool) and jit_compile != "auto"
    ):
        raise TrainerError(
            format_error(
                "jit_compile must be 'auto', True or False",
                expected="'auto' (measured per phase), True (XLA) or False",
                received={"jit_compile": jit_compile},
                fix="Pass jit_compile='auto'",
            )
        )
    return "auto" if jit_compile == "auto" else bool(jit_compile)


def resolve_jit_compile(setting: bool | str, step: str) -> bool | str:
    """Returns the ``jit_compile`` value for ``step`` under ``setting``.

    ``"auto"`` on a CPU-only machine picks the measured faster choice per
    step (no XLA for any of them, see the module docstring); with a GPU or
    TPU it returns Keras' own ``"auto"`` (XLA where the model supports it)
    for compiled steps and ``False`` for the one-off feature pass.

    Args:
        setting: ``"auto"``, ``True`` or ``False`` (the ``Trainer`` argument).
        step: ``"features"`` (the one-off cached feature pass), ``"head"``
            (phase 1 on cached features), ``"frozen"`` (phase 1 through the
            frozen backbone) or ``"full"`` (phase 2).

    Examples:
        >>> resolve_jit_compile(False, "head")
        False
    """
    if setting != "auto":
        return bool(setting)
    if has_accelerator():
        return False if step == "features" else "auto"
    return _CPU_AUTO[step]


def check_precision(precision: Any) -> str:
    """Validates ``precision``; warns when a mixed policy runs on a CPU-only machine.

    Examples:
        >>> check_precision("float32")
        'float32'
    """
    if precision not in PRECISIONS:
        raise TrainerError(
            format_error(
                "Unknown precision",
                expected=f"one of {PRECISIONS}",
                received={"precision": precision},
                fix="Pass precision='float32' (CPU) or 'mixed_float16' / 'mixed_bfloat16' "
                "on a GPU or TPU",
            )
        )
    return str(precision)


@contextlib.contextmanager
def precision_scope(precision: str) -> Iterator[None]:
    """Builds models under the Keras dtype policy ``precision``, then restores the old one.

    ``"mixed_float16"`` / ``"mixed_bfloat16"`` compute in 16 bits and keep
    float32 weights; Keras adds loss scaling for float16 when compiling. The
    head's output layer stays float32. On a machine without GPU or TPU a
    mixed policy was measured no faster than float32 (slower for
    MobileNetV3Small), so a warning says so with the figures.

    Examples:
        >>> with precision_scope("float32"):
        ...     keras.layers.Dense(2).dtype_policy.name
        'float32'
    """
    precision = check_precision(precision)
    if precision != "float32" and not has_accelerator():
        warnings.warn(
            f"precision={precision!r} on a machine without GPU or TPU: measured on a CPU "
            "with avx512_bf16 but no AMX, a mixed_bfloat16 training epoch ran at 0.56x "
            "(MobileNetV3Small) and 1.00x (ResNet50) the float32 speed, and float16 has no "
            "fast CPU path; float32 is the CPU default (docs/performance.md, 'Precision')",
            UserWarning,
            stacklevel=3,
        )
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)
