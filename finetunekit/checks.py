"""Small argument checkers: one line per check, one message shape for every error.

Each checker validates one argument, returns it normalised, and raises the
``FineTuneError`` subclass the caller names (``error=``), with a message in
the library's shape (what was wrong, what was expected, the received value,
the fix; see :func:`finetunekit.errors.format_error`).

Examples:
    >>> from finetunekit.checks import check_int
    >>> check_int("epochs", 3, minimum=0)
    3
    >>> try:
    ...     check_int("epochs", -1, minimum=0)
    ... except ValueError as error:
    ...     print(error)
    epochs must be an int >= 0. Expected an int >= 0. Received: epochs=-1. Pass epochs=1.
"""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Callable, Iterable
from typing import Any

from finetunekit.errors import ArgumentTypeError, FineTuneError, TrainerError, format_error

__all__ = [
    "check_bool",
    "check_choice",
    "check_int",
    "check_number",
    "check_path",
    "check_str",
    "fail",
]

ErrorClass = type[FineTuneError]


def fail(
    error: ErrorClass,
    what: str,
    name: str,
    value: Any,
    *,
    expected: str | None = None,
    fix: str | None = None,
) -> FineTuneError:
    """Builds (does not raise) ``error`` with the standard message for argument ``name``.

    Examples:
        >>> str(fail(TrainerError, "Unknown verbose", "verbose", 5, expected="0, 1 or 2"))
        'Unknown verbose. Expected 0, 1 or 2. Received: verbose=5.'
    """
    return error(format_error(what, expected=expected, received={name: value}, fix=fix))


def check_int(
    name: str,
    value: Any,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    allow_none: bool = False,
    error: ErrorClass = TrainerError,
    expected: str | None = None,
    fix: str | None = None,
) -> Any:
    """An int (never a bool) in ``[minimum, maximum]``; ``None`` where allowed.

    Examples:
        >>> check_int("seed", None, allow_none=True) is None
        True
    """
    if value is None and allow_none:
        return None
    bounds = _bounds(minimum, maximum)
    if isinstance(value, bool) or not _is_int(value) or not _within(value, minimum, maximum):
        raise fail(
            error,
            f"{name} must be {'None or ' if allow_none else ''}an int{bounds}",
            name,
            value,
            expected=expected or f"an int{bounds}",
            fix=fix or f"Pass {name}={max(minimum or 0, 1)}",
        )
    return int(value)


def check_number(
    name: str,
    value: Any,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    min_open: bool = False,
    max_open: bool = False,
    allow_none: bool = False,
    error: ErrorClass = TrainerError,
    expected: str | None = None,
    fix: str | None = None,
) -> Any:
    """A finite real number (int or float, never a bool) within the bounds, as a float.

    ``min_open`` / ``max_open`` exclude the bound itself.

    Examples:
        >>> check_number("warmup", 0.1, minimum=0, maximum=1, max_open=True)
        0.1
    """
    if value is None and allow_none:
        return None
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) or _is_numpy_number(value)
    if ok:
        number = float(value)
        ok = math.isfinite(number)
        if ok and minimum is not None:
            ok = number > minimum if min_open else number >= minimum
        if ok and maximum is not None:
            ok = number < maximum if max_open else number <= maximum
    if not ok:
        low = "" if minimum is None else f"{'>' if min_open else '>='} {minimum:g}"
        high = "" if maximum is None else f"{'<' if max_open else '<='} {maximum:g}"
        bounds = " and ".join(b for b in (low, high) if b)
        shape = f"a finite number{' ' + bounds if bounds else ''}"
        raise fail(
            error,
            f"{name} must be {'None or ' if allow_none else ''}{shape}",
            name,
            value,
            expected=expected or shape,
            fix=fix,
        )
    return float(value)


def check_bool(
    name: str, value: Any, *, error: ErrorClass = ArgumentTypeError, fix: str | None = None
) -> bool:
    """``True`` or ``False`` (not a truthy value).

    Examples:
        >>> check_bool("shuffle", True)
        True
    """
    if not isinstance(value, bool):
        raise fail(
            error,
            f"{name} must be a bool",
            name,
            value,
            expected="True or False",
            fix=fix or f"Pass {name}=True or {name}=False",
        )
    return value


def check_choice(
    name: str,
    value: Any,
    choices: Iterable[Any],
    *,
    error: ErrorClass = TrainerError,
    what: str | None = None,
    expected: str | None = None,
    fix: str | None = None,
    normalise: Callable[[Any], Any] | None = None,
) -> Any:
    """One of ``choices`` (compared after ``normalise``); suggests the closest name.

    Bools and ints are told apart (``True`` is not ``1``).

    Examples:
        >>> check_choice("schedule", "cosine", ("constant", "cosine"))
        'cosine'
    """
    options = list(choices)
    key = normalise(value) if normalise is not None and isinstance(value, str) else value
    for option in options:
        if type(option) is type(key) and option == key:
            return option
    hint = fix
    if hint is None and isinstance(value, str):
        names = [o for o in options if isinstance(o, str)]
        close = difflib.get_close_matches(str(key), names, n=1)
        hint = f"Did you mean {name}={close[0]!r}?" if close else None
    raise fail(
        error,
        what or f"Unknown {name}",
        name,
        value,
        expected=expected or f"one of {options}",
        fix=hint or f"Pass {name}={options[0]!r}",
    )


def check_str(
    name: str,
    value: Any,
    *,
    allow_none: bool = False,
    error: ErrorClass = ArgumentTypeError,
    expected: str | None = None,
    fix: str | None = None,
) -> Any:
    """A non-empty string (``None`` where allowed).

    Examples:
        >>> check_str("monitor", "val_loss")
        'val_loss'
    """
    if value is None and allow_none:
        return None
    if not isinstance(value, str) or not value:
        raise fail(
            error,
            f"{name} must be a non-empty string",
            name,
            value,
            expected=expected or "a non-empty str",
            fix=fix,
        )
    return value


def check_path(
    name: str,
    value: Any,
    *,
    kind: str = "folder",
    allow_none: bool = True,
    error: ErrorClass = ArgumentTypeError,
    fix: str | None = None,
) -> Any:
    """A path (``str`` or ``os.PathLike``) as ``str``; ``kind="folder"`` refuses an existing file.

    Examples:
        >>> check_path("log_dir", None) is None
        True
    """
    if value is None and allow_none:
        return None
    if not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
        raise fail(
            error,
            f"{name} must be a {kind} path{' or None' if allow_none else ''}",
            name,
            value,
            expected=f"a str or os.PathLike naming a {kind}",
            fix=fix or f"Pass {name}='path/to/{kind}'",
        )
    path = os.fspath(value)
    if kind == "folder" and os.path.exists(path) and not os.path.isdir(path):
        raise fail(
            TrainerError if error is ArgumentTypeError else error,
            f"{name} is a file, not a folder",
            name,
            path,
            expected="a folder path (created when missing)",
            fix="Pass the path of a folder",
        )
    return str(path)


def _is_int(value: Any) -> bool:
    if isinstance(value, int):
        return True
    try:
        import numpy as np

        return isinstance(value, np.integer)
    except ImportError:  # pragma: no cover - numpy is a dependency
        return False


def _is_numpy_number(value: Any) -> bool:
    try:
        import numpy as np

        return isinstance(value, (np.integer, np.floating))
    except ImportError:  # pragma: no cover - numpy is a dependency
        return False


def _within(value: Any, minimum: Any, maximum: Any) -> bool:
    return (minimum is None or value >= minimum) and (maximum is None or value <= maximum)


def _bounds(minimum: Any, maximum: Any) -> str:
    if minimum is not None and maximum is not None:
        return f" in [{minimum}, {maximum}]"
    if minimum is not None:
        return f" >= {minimum}"
    if maximum is not None:
        return f" <= {maximum}"
    return ""
