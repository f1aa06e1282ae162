"""The runnable examples, each run in-process at its smallest setting (no download)."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load_example(name: str) -> ModuleType:
    """Imports ``examples/<name>.py`` by path (the folder is not a package)."""
    spec = importlib.util.spec_from_file_location(f"ftk_example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def is_fraction(value: object) -> bool:
    return isinstance(value, float) and 0.0 <= value <= 1.0


@pytest.fixture
def offline(monkeypatch):
    """Makes every Keras download fail the way it does without a network."""
    from keras.src.utils import file_utils

    def no_network(fname=None, origin=None, *args, **kwargs):
        raise Exception(f"URL fetch failure on {origin}: None -- no network in tests")

    monkeypatch.setattr(file_utils, "get_file", no_network)


def test_digits_data_loads_real_digits():
    digits = load_example("digits_data")
    x, y = digits.load_digits("mnist")
    assert x.shape == (5000, 28, 28) and x.dtype == np.uint8 and y.dtype == np.int64
    assert np.bincount(y).tolist() == [500] * 10
    x, y = digits.load_digits("sklearn")
    assert x.shape == (1797, 8, 8) and int(x.max()) == 255 and set(y.tolist()) == set(range(10))
    with pytest.raises(SystemExit, match="unknown source"):
        digits.load_digits("cifar")


@pytest.mark.slow
def test_own_backbone_quick(capsys):
    numbers = load_example("own_backbone").main(["--quick"])
    out = capsys.readouterr().out
    for key in ("pretrain", "finetuned", "scratch", "penultimate"):
        assert is_fraction(numbers[f"{key}_accuracy"]), key
        assert numbers[f"{key}_seconds"] > 0, key
    assert numbers["num_train"] == 25  # 5 labelled images of each digit 5-9
    assert numbers["num_test"] > 400  # every other image of 5-9 (of a fifth in --quick)
    assert "EvaluationReport: multiclass" in out
    assert "Confusion matrix" in out
    # the comparison table prints the measured numbers, not made-up ones
    assert f"{numbers['finetuned_accuracy']:.4f}" in out
    assert f"{numbers['scratch_accuracy']:.4f}" in out
    assert "same network from scratch" in out


@pytest.mark.slow
def test_seed_mnist_vgg16_offline(capsys, offline):
    numbers = load_example("seed_mnist_vgg16").main(["--offline"])
    out = capsys.readouterr().out
    assert is_fraction(numbers["accuracy"]) and is_fraction(numbers["val_accuracy"])
    assert numbers["num_test"] == 100
    assert numbers["num_train"] == 320  # 400 training digits minus 20% validation
    for key in ("build_seconds", "phase1_seconds", "total_seconds"):
        assert numbers[key] > 0 and math.isfinite(numbers[key]), key
    assert "phase2_seconds" not in numbers  # the classic recipe keeps VGG16 frozen
    assert "EvaluationReport: multiclass, 100 examples" in out
    assert "VGG16 (random weights, frozen), input [32, 32, 3]" in out
    assert f"test accuracy: {numbers['accuracy']:.4f}" in out


@pytest.mark.slow
def test_demo_quick_falls_back_to_random_weights(capsys, offline):
    numbers = load_example("demo").main(["--quick"])
    out = capsys.readouterr().out
    assert "NOTE: starting from RANDOM weights, not ImageNet" in out
    assert "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5" in out  # names the file
    assert "vgg16 (random weights)" in out
    assert is_fraction(numbers["accuracy"])
    assert numbers["phase1"] > 0 and numbers["phase2"] > 0
    assert "EvaluationReport: multiclass" in out and "test accuracy:" in out


@pytest.mark.slow
def test_multi_worker_example_two_local_workers(tmp_path):
    """examples/multi_worker.py: two worker processes on 127.0.0.1, the chief's model reloads."""
    pytest.importorskip("sklearn")
    module = load_example("multi_worker")
    figures = module.main(["--epochs", "2", "--out", str(tmp_path)])
    assert figures["strategy"]["workers"] == 2 and figures["strategy"]["replicas"] == 2
    assert len(figures["epochs"]) == 3  # 1 head epoch + 2 with every layer
    assert figures["accuracy"] > 0.5  # 10 digits: chance is 0.1
    assert figures["reload_max_difference"] < 1e-5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chief.json", "model.keras", "sample.npy"]
