"""Deterministic (stratified) train / held-out index splits."""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from finetunekit.errors import ArgumentTypeError, DataError, format_error

__all__ = ["check_fraction", "split_indices"]


def check_fraction(fraction: Any, seed: Any) -> float:
    """Checks ``fraction`` (in (0, 1)) and ``seed`` (an int >= 0); returns the fraction.

    Examples:
        >>> check_fraction(0.2, 0)
        0.2
    """
    if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real):
        raise ArgumentTypeError(
            format_error(
                "fraction must be a number",
                expected="a float strictly between 0 and 1, e.g. 0.2",
                received={"fraction": fraction},
            )
        )
    if not 0.0 < float(fraction) < 1.0:
        raise DataError(
            format_error(
                "fraction is out of range",
                expected="a float strictly between 0 and 1 (the share held out)",
                received={"fraction": fraction},
                fix="Pass e.g. fraction=0.2 to hold out 20% of the examples",
            )
        )
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ArgumentTypeError(
            format_error(
                "seed must be a non-negative int",
                expected="an int >= 0",
                received={"seed": seed},
            )
        )
    return float(fraction)


def _allocate(counts: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Per-class held-out sizes: close to ``fraction`` of each class and of the total.

    Every class with >= 2 examples keeps at least one example on each side;
    single-example classes stay on the training side.
    """
    exact = counts * fraction
    low = np.where(counts >= 2, 1, 0)
    high = np.where(counts >= 2, counts - 1, 0)
    quota = np.clip(np.floor(exact).astype(np.int64), low, high)
    target = int(np.clip(round(fraction * counts.sum()), low.sum(), high.sum()))
    tie = rng.random(len(counts))  # random but seeded tie-breaking
    while quota.sum() < target:
        room = quota < high
        score = np.where(room, exact - quota, -np.inf)
        best = np.lexsort((tie, score))[-1]
        quota[best] += 1
    while quota.sum() > target:
        room = quota > low
        score = np.where(room, quota - exact, -np.inf)
        best = np.lexsort((tie, score))[-1]
        quota[best] -= 1
    return quota


def split_indices(
    targets: np.ndarray,
    strata: int | None,
    fraction: float,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Splits ``range(len(targets))`` into sorted ``(rest, held_out)`` index arrays.

    Stratified by class when ``strata`` gives the number of classes of
    single-label targets (class indices), random when it is ``None``; the
    same ``seed`` always gives the same split.

    Raises:
        DataError: One of the parts would be empty.

    Examples:
        >>> rest, held = split_indices(np.array([0, 0, 1, 1]), 2, 0.5, seed=0)
        >>> len(rest), len(held)
        (2, 2)
    """
    n = len(targets)
    rng = np.random.default_rng(seed)
    if strata is not None:
        groups = [np.flatnonzero(targets == c) for c in range(strata)]
        counts = np.array([len(g) for g in groups], dtype=np.int64)
        quota = _allocate(counts, fraction, rng)
        held_parts = [rng.permutation(g)[:q] for g, q in zip(groups, quota, strict=True) if q]
        held = np.concatenate(held_parts) if held_parts else np.zeros(0, np.int64)
    else:
        size = min(max(round(fraction * n), 1), n - 1) if n >= 2 else 0
        held = rng.permutation(n)[:size]
    held = np.sort(held).astype(np.int64)
    rest = np.setdiff1d(np.arange(n, dtype=np.int64), held, assume_unique=True)
    if len(held) == 0 or len(rest) == 0:
        why = (
            "every class has a single example"
            if strata is not None and n >= 2
            else f"there are only {n} example(s)"
        )
        raise DataError(
            format_error(
                f"Cannot split {n} example(s): one part would be empty ({why})",
                expected="at least 2 examples (2 in some class when stratifying)",
                received={"fraction": fraction},
                fix="Use more data, or pass a separate validation set",
            )
        )
    return rest, held
