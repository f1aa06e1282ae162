"""The self-contained code examples of the docs run as written and print what the docs show.

A ``print(...)  # value`` line shows its output in the comment; a ``print`` without
one is shown by the comment lines that close the block (a long line, wrapped). In
what the docs show, ``...`` stands for anything, a number followed by ``...`` for
any number starting with those digits, and prose after a value (``[...]: top
first``, ``adapters + head: ... = 469``) is explanation. Values the docs elide
are checked against an independent computation.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.utils.class_weight import compute_class_weight

DOCS = Path(__file__).resolve().parent.parent / "docs"
PAGES = ("methods.md", "errors.md")  # the pages whose examples need no data, file or download
EXAMPLES = [
    (page, block)
    for page in PAGES
    for block in re.findall(r"```python\n(.*?)```", (DOCS / page).read_text("utf-8"), re.S)
    if "finetunekit as ftk" in block  # snippets continuing a recipe are left out
]
NUMBER = r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?"


def shown_outputs(block: str) -> list[str]:
    """What the docs show for each ``print`` of ``block``, in order."""
    lines = block.rstrip("\n").splitlines()
    closing: list[str] = []
    while lines and lines[-1].startswith("# "):
        closing.insert(0, lines.pop()[2:])
    shown = []
    for line in lines:
        if not line.lstrip().startswith("print("):
            continue
        _, sep, comment = line.partition("  # ")
        shown.append(shown_value(comment.strip()) if sep else " ".join(closing))
    return shown


def shown_value(comment: str) -> str:
    """The value a comment shows: after a last `` = `` if any, then its leading literal."""
    comment = comment.rsplit(" = ", 1)[-1]
    opening = re.match(r"\w*([\[{(]|'|\")", comment)
    if opening is None:
        return comment.split()[0]
    first = opening.start(1)
    if comment[first] in "'\"":  # a string
        return comment[: comment.index(comment[first], first + 1) + 1]
    depth, quote = 0, ""
    for end in range(first, len(comment)):
        char = comment[end]
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "[{(":
            depth += 1
        elif char in "]})":
            depth -= 1
            if depth == 0:
                return comment[: end + 1]
    return comment


def agrees(printed: str, shown: str) -> bool:
    """Whether a printed line is what the docs show (see the module docstring)."""
    if shown[:1] in "'\"" and shown[-1:] == shown[0] and printed == shown[1:-1]:
        return True  # print() of a string shows it without quotes
    pattern, numbers = "", []
    for token in re.findall(rf"({NUMBER})(\.\.\.)?|(\.\.\.)|(.)", shown, re.S):
        number, truncated, ellipsis, char = token
        if number:
            pattern += f"({NUMBER})"
            numbers.append((number, bool(truncated)))
        else:
            pattern += ".*?" if ellipsis else re.escape(char)
    found = re.fullmatch(pattern, printed, re.S)
    if found is None:
        return False
    for value, (number, truncated) in zip(found.groups(), numbers, strict=True):
        got, want = float(value), float(number)
        if truncated:  # "0.7..." : the printed number starts with these digits
            step = 10.0 ** -(len(number.split(".")[1]) if "." in number else 0)
            if not want <= abs(got) < want + step:
                return False
        elif not math.isclose(got, want, rel_tol=1e-6, abs_tol=1e-12):
            return False
    return True


def test_docs_have_runnable_examples():
    assert sum(page == "methods.md" for page, _ in EXAMPLES) >= 5
    assert sum(page == "errors.md" for page, _ in EXAMPLES) >= 1


@pytest.mark.parametrize(
    "shown, printed, same",
    [
        ("[1, 2]", "[1, 2]", True),
        ("[1, 2]", "[1, 3]", False),
        ("{0: 0.70..., 1: 1.71...}", "{0: 0.7058823529411765, 1: 1.7142857142857142}", True),
        ("{0: 0.70..., 1: 1.6...}", "{0: 0.7058823529411765, 1: 1.7142857142857142}", False),
        ("{'rank': 4, 'kinds': [...]}", "{'rank': 4, 'kinds': ['conv', 'dense']}", True),
        ("{'rank': 4, 'kinds': [...]}", "{'rank': 8, 'kinds': ['conv', 'dense']}", False),
        ("'standard'", "standard", True),
        ("(None, 28, 28, 1)", "(None, 28, 28, 3)", False),
    ],
)
def test_agrees(shown, printed, same):
    """The comparison of printed and shown output is strict where the docs are."""
    assert agrees(printed, shown) is same


def test_shown_values_are_read_from_comments():
    block = (
        "print(a)  # [['d3'], ['d0']]: top first\n"
        "print(b)  # adapters + head: 4*(3+8) + 9 = 53\n"
        "print(c)  # LRFinderResult(suggestion=..., ...)\n"
        "print(d)\n"
        "# a long message,\n"
        "# wrapped.\n"
    )
    assert shown_outputs(block) == [
        "[['d3'], ['d0']]",
        "53",
        "LRFinderResult(suggestion=..., ...)",
        "a long message, wrapped.",
    ]


def check_elided_values(block: str, scope: dict[str, Any], out: str) -> None:
    """Independent computations of the values a block's comments leave out."""
    if 'class_weight="balanced"' in block:
        y = scope["y"]  # no validation split: every example trains
        balanced = compute_class_weight("balanced", classes=np.array([0, 1]), y=y)
        weights = scope["result"].info["class_weight"]
        assert weights == pytest.approx({0: balanced[0], 1: balanced[1]}, rel=1e-9)
    if "find_learning_rate" in block:
        finder = scope["finder"]
        rates, losses = np.asarray(finder.learning_rates), np.asarray(finder.losses)
        # the documented rule, written out again: the most negative slope of the loss
        # against log(rate) from a tenth of the curve to its minimum
        lowest = int(np.argmin(losses))
        end = max(lowest, 1) + 1
        start = min(len(losses) // 10, end - 2)
        slope = np.gradient(losses[start:end], np.log(rates[start:end]))
        assert finder.suggestion == rates[start + int(np.argmin(slope))]
        assert finder.min_loss_lr == rates[lowest]
        for name in ("suggestion", "min_loss_lr", "min_loss_lr_over_10"):
            figure = float(re.search(rf"\b{name}=({NUMBER})", out).group(1))
            assert figure == pytest.approx(getattr(finder, name), rel=5e-3), name
    if "lora_rank=4" in block:
        model = scope["result"].model
        adapters = sum(int(np.prod(v.shape)) for v in model.weights if "lora" in v.path)
        head = sum(int(np.prod(v.shape)) for v in model.get_layer("head_output").weights)
        assert scope["result"].info["lora"]["params"] == adapters == 460
        assert scope["result"].params["trainable_phase2"] == adapters + head


@pytest.mark.slow
@pytest.mark.parametrize(
    "page, block", EXAMPLES, ids=[f"{page[:-3]}{i}" for i, (page, _) in enumerate(EXAMPLES)]
)
def test_docs_example_prints_what_the_docs_show(page, block, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # examples that save files write here
    scope: dict[str, Any] = {"__name__": "docs_example"}
    exec(compile(block, str(DOCS / page), "exec"), scope)
    out = capsys.readouterr().out
    printed, shown = out.splitlines(), shown_outputs(block)
    assert shown and len(printed) == len(shown), (printed, shown)
    for line, value in zip(printed, shown, strict=True):
        assert agrees(line, value), f"printed {line!r}, the docs show {value!r}"
    check_elided_values(block, scope, out)
