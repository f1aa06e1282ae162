"""Root pytest settings shared by tests/ and the package's doctests."""

from __future__ import annotations

import ast
import doctest
import functools
from pathlib import Path
from typing import Any

import pytest


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    """Leaves out illustration-only docstrings; puts slow tests first.

    A docstring whose every ``>>>`` line is marked ``# doctest: +SKIP`` (it
    needs a file, a trained result or a network the reader supplies) checks
    nothing; collecting it would only add a "skipped" line to every run.
    Examples with at least one runnable line still run.

    Tests marked ``slow`` move to the front (a stable sort), so that under
    ``pytest -n 2`` no minute-long test starts when the other worker is about
    to run out of work.
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
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.hookimpl(optionalhook=True)  # pytest-xdist's hook: absent under -p no:xdist
def pytest_xdist_make_scheduler(config: Any, log: Any) -> Any:
    """``pytest -n N``: each test on its own, except those sharing a module fixture.

    pytest-xdist's default ``load`` scheduling splits a module's tests across
    workers, so a module-scoped fixture (often a minute of fresh processes:
    the SIGKILL runs of tests/test_resume.py, the multi-worker runs of
    tests/test_distributed.py) was built once per worker. Here the tests that
    use one go to one worker together; every other test is a unit of its own,
    handed out as workers free up. Other ``--dist`` modes are left as they are.
    """
    if config.getvalue("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ModuleFixtureScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path, _, rest = nodeid.partition("::")
            test = rest.rsplit("::", 1)[-1].split("[", 1)[0]
            users = _module_fixture_users(str(Path(str(config.rootpath), path)))
            return path if test in users else nodeid

    return ModuleFixtureScheduling(config, log)


@functools.cache
def _module_fixture_users(file: str) -> frozenset[str]:
    """Names of the test functions in ``file`` that use a module-scoped fixture of it.

    Read from the source (the controller collects nothing): fixtures asked for
    by parameter name, directly or through the module's other fixtures.
    """
    if not file.endswith(".py") or not Path(file).is_file():
        return frozenset()
    functions = [
        node
        for node in ast.walk(ast.parse(Path(file).read_text()))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
    ]
    fixtures = {f.name: f for f in functions if _fixture_scope(f) is not None}
    memo: dict[str, bool] = {}

    def shared(name: str) -> bool:  # a module-scoped fixture, or one that asks for one
        if name not in memo:
            memo[name] = False  # guards against cycles
            node = fixtures[name]
            memo[name] = _fixture_scope(node) == "module" or any(
                shared(arg.arg) for arg in node.args.args if arg.arg in fixtures
            )
        return memo[name]

    return frozenset(
        f.name
        for f in functions
        if f.name.startswith("test")
        and any(shared(a.arg) for a in f.args.args if a.arg in fixtures)
    )


def _fixture_scope(node: ast.FunctionDef | ast.AsyncFunctionDef) -> str | None:
    """The scope of a ``@pytest.fixture`` function ("function" by default), else None."""
    for decorator in node.decorator_list:
        call = decorator if isinstance(decorator, ast.Call) else None
        target = call.func if call is not None else decorator
        if ast.unparse(target) not in ("pytest.fixture", "fixture"):
            continue
        for keyword in call.keywords if call is not None else []:
            if keyword.arg == "scope" and isinstance(keyword.value, ast.Constant):
                return str(keyword.value.value)
        return "function"
    return None
