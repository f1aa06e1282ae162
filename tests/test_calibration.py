"""Calibration: ECE and reliability bins in the report, temperature scaling on the result."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

import finetunekit as ftk
from finetunekit.evaluation import EvaluationReport, Evaluator
from finetunekit.evaluation import calibration as cal


def test_ece_matches_a_hand_computed_example():
    # 4 bins of width 0.25. Confidences (top-label) and correctness:
    #   0.9 right, 0.8 wrong, 0.95 right  -> bin (0.75, 1]: conf 0.8833, acc 2/3
    #   0.6 right, 0.7 wrong               -> bin (0.5, 0.75]: conf 0.65, acc 1/2
    # ECE = 3/5 * |2/3 - 0.88333| + 2/5 * |0.5 - 0.65| = 0.13 + 0.06 = 0.19
    y = np.array([0, 1, 2, 0, 1])
    p = np.array(
        [
            [0.9, 0.05, 0.05],
            [0.8, 0.1, 0.1],
            [0.025, 0.025, 0.95],
            [0.6, 0.3, 0.1],
            [0.7, 0.2, 0.1],
        ]
    )
    bins = cal.reliability_bins(y, p, n_bins=4)
    assert bins["bins"] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert bins["count"] == [0, 0, 2, 3]
    assert bins["confidence"][2:] == pytest.approx([0.65, 2.65 / 3])
    assert bins["accuracy"][2:] == pytest.approx([0.5, 2 / 3])
    assert cal.expected_calibration_error(y, p, n_bins=4) == pytest.approx(0.19)


def test_report_has_ece_bins_in_dict_and_str():
    y = np.array([0, 1, 2, 0, 1])
    p = np.array(
        [[0.9, 0.05, 0.05], [0.8, 0.1, 0.1], [0.025, 0.025, 0.95], [0.6, 0.3, 0.1], [0.7, 0.2, 0.1]]
    )
    report = Evaluator().compute(y, p, task="multiclass")
    # 15 bins: 0.6, 0.7, 0.8, 0.9, 0.95 all fall in different bins -> mean |acc - conf|
    expected = (0.1 + 0.8 + 0.05 + 0.4 + 0.7) / 5
    assert report.metrics["ece"] == pytest.approx(expected)
    assert len(report.calibration["bins"]) == 16 and sum(report.calibration["count"]) == 5
    d = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert d["calibration"] == report.calibration
    assert EvaluationReport.from_dict(d).to_dict() == d
    line = [ln for ln in str(report).splitlines() if ln.startswith("Calibration:")]
    assert len(line) == 1 and "ECE 0.4100" in line[0] and "overconfident" in line[0]
    # binary: the sigmoid and two-column softmax layouts give the same ECE
    yb = np.array([0, 1, 1, 0])
    pb = np.array([0.1, 0.9, 0.3, 0.8])
    flat = Evaluator().compute(yb, pb, task="binary")
    two = Evaluator().compute(yb, np.stack([1 - pb, pb], 1), task="binary")
    assert flat.metrics["ece"] == pytest.approx(two.metrics["ece"])
    assert flat.metrics["ece"] == pytest.approx((0.1 + 0.1 + 0.7 + 0.8) / 4)
    # no calibration for multilabel / regression
    assert Evaluator().compute(np.eye(3), np.eye(3) * 0.9, task="multilabel").calibration is None
    assert (
        "ece" not in Evaluator().compute(np.arange(3.0), np.arange(3.0), task="regression").metrics
    )


def test_apply_temperature_keeps_argmax_and_shape():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(4), 50)
    for t in (0.5, 2.0, 7.0):
        q = cal.apply_temperature(p, t)
        assert q.shape == p.shape and np.allclose(q.sum(1), 1, atol=1e-5)
        np.testing.assert_array_equal(q.argmax(1), p.argmax(1))
    s = rng.random((20, 1))
    q = cal.apply_temperature(s, 3.0)
    assert q.shape == (20, 1)
    np.testing.assert_array_equal(q >= 0.5, s >= 0.5)
    np.testing.assert_allclose(cal.apply_temperature(p, 1.0), p, rtol=1e-6)


def _overconfident_multiclass(n: int, k: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A classifier whose logits are 4 x while the calibrated ones are 1.8 x."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(0, 1, (n, k))
    logits[np.arange(n), y] += 1.8
    logits *= 4.0
    p = np.exp(logits - logits.max(1, keepdims=True))
    return y, p / p.sum(1, keepdims=True)


def test_fit_temperature_recovers_the_sharpening():
    y, p = _overconfident_multiclass(4000)
    t = cal.fit_temperature(y, p)
    assert 1.8 < t < 2.7  # Bayes-optimal logits are 1.8 x, these are 4 x: T = 4 / 1.8
    before = cal.expected_calibration_error(y, p)
    after = cal.expected_calibration_error(y, cal.apply_temperature(p, t))
    assert after < before / 3
    assert cal.negative_log_likelihood(y, cal.apply_temperature(p, t)) < (
        cal.negative_log_likelihood(y, p)
    )
    # binary sigmoid: an overconfident sigmoid is softened too
    rng = np.random.default_rng(1)
    yb = rng.integers(0, 2, 2000)
    logit = (2 * yb - 1) * 1.0 + rng.normal(0, 1.5, 2000)
    pb = 1 / (1 + np.exp(-5 * logit))
    assert cal.fit_temperature(yb, pb[:, None]) > 2.0
    with pytest.raises(ftk.EvaluationError, match="empty"):
        cal.fit_temperature(np.zeros(0, int), np.zeros((0, 3)))


def _overconfident_result(k: int = 4):
    inputs = keras.Input((k,))
    sharp = keras.layers.Rescaling(4.0)(inputs)  # "logits" 4x too sharp
    model = keras.Model(inputs, keras.layers.Activation("softmax")(sharp))
    return ftk.FineTuneResult(model=model, task="multiclass", class_names=list("abcd")[:k])


def _logit_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    x = rng.normal(0, 1, (n, 4)).astype("float32")
    x[np.arange(n), y] += 1.8
    return x, y


def test_result_calibrate_lowers_ece_and_nll_and_round_trips(tmp_path):
    result = _overconfident_result()
    x_val, y_val = _logit_data(2000, seed=0)
    x_test, y_test = _logit_data(1000, seed=1)
    raw = result.predict(x_test)
    before = result.evaluate((x_test, y_test))
    out = result.calibrate((x_val, y_val))
    assert set(out) == {"temperature", "ece_before", "ece_after", "nll_before", "nll_after"}
    assert out["ece_after"] < out["ece_before"] and out["nll_after"] < out["nll_before"]
    assert result.temperature == out["temperature"] and 1.8 < result.temperature < 2.7
    calibrated = result.predict(x_test)
    np.testing.assert_array_equal(calibrated.argmax(1), raw.argmax(1))
    assert not np.allclose(calibrated, raw)
    after = result.evaluate((x_test, y_test))  # evaluate applies the temperature too
    assert after.metrics["ece"] < before.metrics["ece"]
    assert after.metrics["loss"] < before.metrics["loss"]
    assert after.metrics["accuracy"] == before.metrics["accuracy"]
    again = ftk.load(result.save(tmp_path / "calibrated.keras"))
    assert again.temperature == pytest.approx(result.temperature)
    np.testing.assert_allclose(again.predict(x_test), calibrated, atol=1e-6)


def test_calibrate_refuses_regression():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    result = ftk.FineTuneResult(model=model, task="regression", class_names=[])
    with pytest.raises(ftk.EvaluationError, match="single-label"):
        result.calibrate((np.zeros((4, 2), "float32"), np.zeros(4, "float32")))
