"""The self-contained code examples of docs/methods.md run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parent.parent / "docs" / "methods.md"
BLOCKS = [
    block
    for block in re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    if "finetunekit as ftk" in block  # snippets continuing a recipe are left out
]


def test_methods_doc_has_runnable_examples():
    assert len(BLOCKS) >= 4


@pytest.mark.slow
@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_methods_doc_example_runs(block, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # examples that save files write here
    exec(compile(block, str(DOC), "exec"), {"__name__": "docs_example"})
    out = capsys.readouterr().out
    assert out.strip()  # every example prints what it shows
    if "unfrozen_groups" in block:  # the frozen set per epoch is what the comment says
        assert "[0, 0, 1, 2, 3, 4]" in out
        assert "[['d3'], ['d2'], ['d1'], ['d0']]" in out
