"""Root pytest settings shared by tests/ and the package's doctests."""

from __future__ import annotations

import doctest
from typing import Any


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    """Leaves out docstring examples that are illustrations only.

    A docstring whose every ``>>>`` line is marked ``# doctest: +SKIP`` (it
    needs a file, a trained result or a network the reader supplies) checks
    nothing; collecting it would only add a "skipped" line to every run.
    Examples with at least one runnable line still run.
    """
    keep, drop = [], []
    for item in items:
        test = getattr(item, "dtest", None)
        if (
            test is not None
            and test.examples
            and all(ex.options.get(doctest.SKIP, False) for ex in test.examples)
        ):
            drop.append(item)
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
