"""Multi-label and regression end to end through FineTuner: thresholds, target scaling."""

from __future__ import annotations

import importlib.util
import json
import os

import keras
import numpy as np
import pytest

import finetunekit as ftk
from finetunekit.heads.scaling import StandardizedMeanSquaredError, TargetScaler

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


def _example():
    spec = importlib.util.spec_from_file_location(
        "multilabel_regression", os.path.join(EXAMPLES, "multilabel_regression.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _dense_backbone(width: int) -> ftk.Backbone:
    keras.utils.set_random_seed(0)
    net = keras.Sequential([keras.Input((width,)), keras.layers.Dense(16, activation="tanh")])
    return ftk.Backbone.from_model(net)


def test_scaling_layer_and_loss() -> None:
    out = TargetScaler([100.0, -1.0], [10.0, 0.5])(np.array([[1.0, 2.0]], "float32"))
    np.testing.assert_allclose(np.asarray(out), [[110.0, 0.0]])
    loss = StandardizedMeanSquaredError([10.0, 0.5])
    value = loss(np.array([[110.0, 0.0]]), np.array([[100.0, 0.5]]))
    assert float(value) == pytest.approx((1.0 + 1.0) / 2)
    again = StandardizedMeanSquaredError.from_config(loss.get_config())
    assert again.std == [10.0, 0.5]


def test_scale_targets_is_for_regression_only() -> None:
    with pytest.raises(ftk.ArgumentTypeError, match="scale_targets"):
        ftk.HeadReplacer(scale_targets="yes")
    x = np.random.default_rng(0).normal(size=(20, 4)).astype("float32")
    tuner = (
        ftk.FineTuner()
        .with_data((x, np.arange(20) % 2))
        .with_backbone(_dense_backbone(4))
        .with_head(ftk.HeadReplacer(scale_targets=True))
    )
    with pytest.raises(ftk.HeadError, match="regression"):
        tuner.fit()
    cfg = ftk.HeadReplacer(scale_targets=True).get_config()
    assert ftk.HeadReplacer.from_config(json.loads(json.dumps(cfg))).scale_targets is True


def test_regression_two_targets_predicts_original_units(tmp_path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 4)).astype("float32")
    y = np.stack([5000 + 800 * x[:, 0], 0.01 * x[:, 1] - 3], axis=1).astype("float32")
    result = (
        ftk.FineTuner()
        .with_data(ftk.DatasetAdapter.from_arrays(x, y, class_names=["lux", "offset"]))
        .with_backbone(_dense_backbone(4))
        .with_head(ftk.HeadReplacer(dropout=0.0, scale_targets=True))
        .with_trainer(ftk.Trainer(epochs=30, learning_rate=1e-2, verbose=0, seed=0))
        .fit()
    )
    scaling = result.info["target_scaling"]
    np.testing.assert_allclose(scaling["mean"], y.mean(0), rtol=1e-4)
    np.testing.assert_allclose(scaling["std"], y.std(0), rtol=1e-4)
    assert result.model.layers[-1].name == "head_rescale"
    report = result.evaluate((x, y))
    assert report.metrics["r2"] >= 0.8
    assert set(report.per_class) == {"lux", "offset"}
    pred = result.predict(x[:50])
    assert abs(pred[:, 0].mean() - 5000) < 300 and abs(pred[:, 1].mean() + 3) < 0.05
    again = ftk.load(result.save(tmp_path / "reg.keras"))
    np.testing.assert_allclose(again.predict(x[:50]), pred, rtol=1e-5, atol=1e-3)


def test_multilabel_thresholds_and_per_label_scores(tmp_path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(240, 6)).astype("float32")
    y = (x[:, :3] > 0).astype("int64")
    result = (
        ftk.FineTuner()
        .with_data(ftk.DatasetAdapter.from_arrays(x, y, class_names=["a", "b", "c"]))
        .with_backbone(_dense_backbone(6))
        .with_trainer(ftk.Trainer(epochs=20, learning_rate=1e-2, verbose=0, seed=0))
        .fit()
    )
    assert result.task == "multilabel"
    thresholds = {"a": 0.3, "b": 0.5, "c": 0.7}
    report = result.evaluate((x, y), thresholds=thresholds)
    for name, value in thresholds.items():
        row = report.per_class[name]
        assert row["threshold"] == value
        assert {"precision", "recall", "f1"} <= set(row)
    assert report.metrics["f1_macro"] >= 0.8
    assert json.dumps(report.to_dict())  # JSON-serialisable with the thresholds
    again = ftk.load(result.save(tmp_path / "ml.keras"))
    np.testing.assert_allclose(again.predict(x[:8]), result.predict(x[:8]), atol=1e-6)


def test_multilabel_regression_example_quick() -> None:
    figures = _example().main(["--quick"])
    assert figures["multilabel_f1_macro"] >= 0.9
    for name, value in figures["thresholds"].items():
        assert figures["per_label"][name]["threshold"] == value
    assert figures["r2_scaled"] >= 0.5
    assert figures["r2_scaled"] > figures["r2_unscaled"] + 0.5
    pred, truth = np.array(figures["reloaded_prediction"]), np.array(figures["reloaded_truth"])
    assert np.all(np.abs(pred - truth) < 0.3 * truth)  # lux, not standardised units
