"""The finetunekit exception hierarchy.

Every problem a user can cause raises a subclass of :class:`FineTuneError`,
before any expensive work starts. Each subclass also derives from the builtin
exception that fits (``ValueError`` or ``TypeError``), so code that already
catches those keeps working.

Messages follow one shape, built by :func:`format_error`::

    <what happened>. Expected <what was expected>. Received: <arg>=<value>. <how to fix>
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "FineTuneError",
    "DataError",
    "LabelError",
    "BackboneError",
    "UnknownBackboneError",
    "WeightsError",
    "InputShapeError",
    "HeadError",
    "TrainerError",
    "CheckpointError",
    "EvaluationError",
    "ConfigError",
    "ArgumentTypeError",
    "LoadError",
    "ExportError",
    "check_config_keys",
    "format_error",
]


class FineTuneError(Exception):
    """Base class of every error finetunekit raises on purpose."""


class ArgumentTypeError(FineTuneError, TypeError):
    """An argument has the wrong Python type."""


class DataError(FineTuneError, ValueError):
    """The data (inputs, shapes, values) cannot be used as given."""


class LabelError(DataError):
    """The labels / targets cannot be used as given."""


class BackboneError(FineTuneError, ValueError):
    """The pretrained model cannot be created as asked."""


class UnknownBackboneError(BackboneError):
    """No backbone of that name exists."""


class WeightsError(BackboneError):
    """Pretrained weights are missing, unreadable or cannot be downloaded."""


class InputShapeError(BackboneError):
    """The input shape does not fit the backbone."""


class HeadError(FineTuneError, ValueError):
    """The new output layer cannot be built as asked."""


class TrainerError(FineTuneError, ValueError):
    """A training setting is invalid."""


class CheckpointError(TrainerError):
    """A training checkpoint cannot be used (another recipe's, or unreadable)."""


class EvaluationError(FineTuneError, ValueError):
    """Evaluation cannot run on what was given."""


class ConfigError(FineTuneError, ValueError):
    """A recipe (config dict) is invalid or cannot be serialised."""


class LoadError(FineTuneError, ValueError):
    """A saved file cannot be loaded as a finetunekit result."""


class ExportError(FineTuneError, ValueError):
    """An export failed, or its outputs disagree with the Keras model.

    Attributes:
        report: the ``ExportReport`` when the export ran but disagreed
            (see :func:`finetunekit.export.export`).
    """

    def __init__(self, message: str, report: Any = None) -> None:
        super().__init__(message)
        self.report = report


def _short(value: Any, limit: int = 80) -> str:
    """Returns a short ``repr`` of ``value`` for an error message.

    Long strings and paths keep their start and their end (the file name),
    other values their start.

    Examples:
        >>> _short("/a/very/long/folder/" * 6 + "encoder.keras", limit=40)
        "'/a/very/long/folder...er/encoder.keras'"
    """
    np = sys.modules.get("numpy")  # not imported: no array (and the CLI's errors stay fast)
    if np is not None and isinstance(value, np.ndarray):
        return f"array(shape={value.shape}, dtype={value.dtype})"
    text = repr(value)
    if len(text) > limit:
        if isinstance(value, (str, os.PathLike)):
            head = limit // 2
            text = text[:head] + "..." + text[-(limit - head - 3) :]
        else:
            text = text[: limit - 3] + "..."
    return text


def format_error(
    what: str,
    *,
    expected: str | None = None,
    received: dict[str, Any] | None = None,
    fix: str | None = None,
) -> str:
    """Builds a message in the finetunekit error shape.

    Args:
        what: What happened, as a sentence.
        expected: What was expected instead.
        received: Offending argument names mapped to the values received.
            Values are shown with a short ``repr`` (arrays by shape and dtype).
        fix: How to fix it.

    Returns:
        The message: ``"<what>. Expected <expected>. Received: a=1. <fix>"``.

    Examples:
        >>> format_error("batch_size must be positive", expected="an int >= 1",
        ...              received={"batch_size": 0}, fix="Pass batch_size=32.")
        'batch_size must be positive. Expected an int >= 1. Received: batch_size=0. Pass batch_size=32.'
    """
    parts = [what.rstrip(".") + "."]
    if expected:
        parts.append(f"Expected {expected.rstrip('.')}.")
    if received:
        shown = ", ".join(f"{k}={_short(v)}" for k, v in received.items())
        parts.append(f"Received: {shown}.")
    if fix:
        parts.append(fix.rstrip(".") + ".")
    return " ".join(parts)


def check_config_keys(
    owner: str, config: Mapping[str, Any], valid: Iterable[str], *, shown: Any = None
) -> None:
    """Raises ``ConfigError`` when ``config`` has keys outside ``valid``, listing the valid ones.

    Args:
        owner: what the config describes, e.g. ``"Trainer"``.
        config: the config dict.
        valid: the accepted keys.
        shown: what to show as the received value (default: the config itself).

    Examples:
        >>> check_config_keys("Trainer", {"epochs": 3}, {"epochs", "batch_size"})
    """
    valid = set(valid)
    unknown = set(config) - valid
    if unknown:
        raise ConfigError(
            format_error(
                f"Unknown keys in the {owner} config: {sorted(unknown)}",
                expected=f"only {sorted(valid)}",
                received={"config": config if shown is None else shown},
                fix="Remove the unknown keys",
            )
        )
