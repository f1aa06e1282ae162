"""The test suite's own scheduling (root conftest.py): module fixtures built once under xdist."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _root_conftest() -> Any:
    spec = importlib.util.spec_from_file_location("root_conftest", ROOT / "conftest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SOURCE = textwrap.dedent(
    """
    import pytest

    @pytest.fixture(scope="module")
    def expensive():
        return 1

    @pytest.fixture
    def uses_expensive(expensive):
        return expensive

    @pytest.fixture()
    def cheap():
        return 2

    @pytest.fixture(scope="session")
    def per_session():
        return 3

    def test_direct(expensive):
        pass

    def test_through_a_fixture(uses_expensive, cheap):
        pass

    def test_cheap(cheap, per_session, tmp_path):
        pass

    class TestGroup:
        def test_method(self, expensive):
            pass

    def helper(expensive):
        pass
    """
)


def test_module_fixture_users_read_from_the_source(tmp_path: Path) -> None:
    conftest = _root_conftest()
    file = tmp_path / "test_sample.py"
    file.write_text(SOURCE)
    users = conftest._module_fixture_users(str(file))
    assert users == {"test_direct", "test_through_a_fixture", "test_method"}
    assert conftest._module_fixture_users(str(tmp_path / "missing.py")) == frozenset()


PROBE = textwrap.dedent(
    """
    import os
    import pytest

    @pytest.fixture(scope="module")
    def built():
        with open("builds.txt", "a") as log:
            log.write(os.environ.get("PYTEST_XDIST_WORKER", "none") + "\\n")

    @pytest.mark.parametrize("i", range(12))
    def test_shares(built, i):
        pass

    @pytest.mark.parametrize("i", range(12))
    def test_alone(i):
        pass
    """
)


def test_under_two_workers_a_module_fixture_is_built_once(tmp_path: Path) -> None:
    """Plain xdist ``load`` scheduling builds it on both workers (checked by removing the hook)."""
    shutil.copy(ROOT / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_probe.py").write_text(PROBE)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-n", "2", "-p", "no:cacheprovider"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "24 passed" in proc.stdout
    builds = (tmp_path / "builds.txt").read_text().split()
    assert len(builds) == 1, builds
