"""Tests for finetunekit.evaluation (step 5: Evaluator, EvaluationReport)."""

from __future__ import annotations

import json
import math

import keras
import numpy as np
import pytest
from sklearn import metrics as skm

from finetunekit.errors import (
    ArgumentTypeError,
    ConfigError,
    EvaluationError,
    FineTuneError,
)
from finetunekit.evaluation import EvaluationReport, Evaluator
from finetunekit.evaluation import metrics as fm

NAMES3 = ["ant", "bee", "cat"]


def _probs(pred: list[int], k: int, high: float = 0.8) -> np.ndarray:
    """Rows with ``high`` at the predicted class and the rest spread evenly."""
    out = np.full((len(pred), k), (1.0 - high) / (k - 1))
    out[np.arange(len(pred)), pred] = high
    return out


def _random_multiclass(n: int = 300, k: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[y]
    prob = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, prob


# ------------------------------------------------------------ hand-computed


def _hand_report() -> EvaluationReport:
    # true: a a b b c c ; predicted: a b b b c a
    y_true = np.array([0, 0, 1, 1, 2, 2])
    y_prob = _probs([0, 1, 1, 1, 2, 0], 3)
    return Evaluator().compute(y_true, y_prob, task="multiclass", class_names=NAMES3)


def test_multiclass_hand_computed():
    report = _hand_report()
    assert report.task == "multiclass"
    assert report.num_examples == 6
    assert report.class_names == NAMES3
    np.testing.assert_array_equal(report.confusion_matrix, [[1, 1, 0], [0, 2, 0], [1, 0, 1]])
    assert report.confusion_matrix.dtype == np.int64
    pc = report.per_class
    assert pc["ant"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert pc["bee"] == pytest.approx({"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "support": 2})
    assert pc["cat"] == pytest.approx({"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2})
    assert isinstance(pc["ant"]["support"], int)
    m = report.metrics
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["precision_macro"] == pytest.approx((0.5 + 2 / 3 + 1.0) / 3)
    assert m["recall_macro"] == pytest.approx((0.5 + 1.0 + 0.5) / 3)
    assert m["f1_macro"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert m["f1_weighted"] == pytest.approx(m["f1_macro"])  # equal supports
    assert m["loss"] == pytest.approx((4 * -math.log(0.8) + 2 * -math.log(0.1)) / 6)
    assert "top_5_accuracy" not in m  # K=3 <= 5
    assert all(type(v) is float for v in m.values())
    assert report.thresholds is None


def test_most_confused():
    report = _hand_report()
    assert report.most_confused() == [("ant", "bee", 1), ("cat", "ant", 1)]
    assert report.most_confused(1) == [("ant", "bee", 1)]
    y = np.array([0, 1, 2])
    perfect = Evaluator().compute(y, _probs([0, 1, 2], 3), task="multiclass")
    assert perfect.most_confused() == []
    assert perfect.class_names == ["0", "1", "2"]


def test_binary_hand_computed():
    y_true = np.array([0, 0, 1, 1, 1])
    p = np.array([0.1, 0.6, 0.4, 0.8, 0.9])
    report = Evaluator().compute(y_true, p, task="binary", class_names=["ok", "bad"])
    m = report.metrics
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["roc_auc"] == pytest.approx(5 / 6)
    assert m["loss"] == pytest.approx(skm.log_loss(y_true, p))
    np.testing.assert_array_equal(report.confusion_matrix, [[1, 1], [1, 2]])
    assert report.per_class["bad"]["support"] == 3
    assert report.thresholds == [0.5]
    # A lower threshold turns 0.4 into a hit.
    low = Evaluator(threshold=0.35).compute(y_true, p, task="binary")
    assert low.metrics["recall"] == 1.0
    assert low.thresholds == [0.35]
    per_call = Evaluator().compute(y_true, p, task="binary", thresholds=0.35)
    assert per_call.metrics == low.metrics


def test_binary_output_layouts_agree():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 50)
    p = rng.random(50)
    flat = Evaluator().compute(y, p, task="binary")
    column = Evaluator().compute(y, p[:, None], task="binary")
    softmax = Evaluator().compute(y, np.stack([1 - p, p], axis=1), task="binary")
    assert flat.to_dict() == column.to_dict()
    assert softmax.metrics == pytest.approx(flat.metrics)
    np.testing.assert_array_equal(softmax.confusion_matrix, flat.confusion_matrix)


def test_binary_auc_omitted_when_one_class_absent():
    report = Evaluator().compute(np.ones(4, int), np.array([0.2, 0.7, 0.9, 0.6]), task="binary")
    assert "roc_auc" not in report.metrics
    assert report.per_class["0"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}


def test_top_k_accuracy_present_only_when_k_exceeds_top_k():
    y, prob = _random_multiclass(n=200, k=7, seed=3)
    report = Evaluator(top_k=3).compute(y, prob, task="multiclass")
    expected = skm.top_k_accuracy_score(y, prob, k=3, labels=range(7))
    assert report.metrics["top_3_accuracy"] == pytest.approx(expected)
    report6 = Evaluator(top_k=6).compute(y, prob, task="multiclass")
    assert "top_6_accuracy" in report6.metrics
    report7 = Evaluator(top_k=7).compute(y, prob, task="multiclass")
    assert not any(key.startswith("top_") for key in report7.metrics)


# ------------------------------------------------------- against sklearn


@pytest.mark.parametrize("seed", [0, 1])
def test_multiclass_matches_sklearn(seed):
    y, prob = _random_multiclass(n=400, k=5, seed=seed)
    report = Evaluator().compute(y, prob, task="multiclass")
    y_hat = prob.argmax(axis=1)
    p, r, f, s = skm.precision_recall_fscore_support(y, y_hat, zero_division=0)
    for i, name in enumerate(report.class_names):
        assert report.per_class[name]["precision"] == pytest.approx(p[i])
        assert report.per_class[name]["recall"] == pytest.approx(r[i])
        assert report.per_class[name]["f1"] == pytest.approx(f[i])
        assert report.per_class[name]["support"] == s[i]
    for average in ("macro", "weighted"):
        p, r, f, _ = skm.precision_recall_fscore_support(y, y_hat, average=average)
        assert report.metrics[f"precision_{average}"] == pytest.approx(p)
        assert report.metrics[f"recall_{average}"] == pytest.approx(r)
        assert report.metrics[f"f1_{average}"] == pytest.approx(f)
    assert report.metrics["accuracy"] == pytest.approx(skm.accuracy_score(y, y_hat))
    assert report.metrics["loss"] == pytest.approx(skm.log_loss(y, prob))
    np.testing.assert_array_equal(report.confusion_matrix, skm.confusion_matrix(y, y_hat))


def test_macro_average_skips_absent_classes_like_sklearn():
    y = np.array([0, 0, 1, 1, 2, 2])
    pred = [0, 1, 1, 1, 0, 0]  # class 3 never true nor predicted, class 2 never predicted
    report = Evaluator().compute(y, _probs(pred, 4), task="multiclass")
    expected = skm.f1_score(y, pred, average="macro", zero_division=0)
    assert report.metrics["f1_macro"] == pytest.approx(expected)
    assert report.per_class["3"]["support"] == 0


def test_binary_matches_sklearn_with_ties():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 300)
    p = np.round(np.clip(0.3 * y + rng.random(300) * 0.7, 0, 1), 1)  # many ties
    report = Evaluator().compute(y, p, task="binary")
    y_hat = (p >= 0.5).astype(int)
    assert report.metrics["roc_auc"] == pytest.approx(skm.roc_auc_score(y, p))
    assert report.metrics["f1"] == pytest.approx(skm.f1_score(y, y_hat))
    assert report.metrics["precision"] == pytest.approx(skm.precision_score(y, y_hat))
    assert report.metrics["f1_macro"] == pytest.approx(skm.f1_score(y, y_hat, average="macro"))
    assert report.metrics["loss"] == pytest.approx(skm.log_loss(y, np.clip(p, 1e-7, 1 - 1e-7)))


def test_multilabel_matches_sklearn():
    rng = np.random.default_rng(4)
    y = (rng.random((200, 4)) < 0.4).astype(np.float32)
    prob = np.clip(0.35 * y + rng.random((200, 4)) * 0.65, 0, 1)
    thresholds = [0.5, 0.4, 0.6, 0.5]
    report = Evaluator().compute(
        y, prob, task="multilabel", class_names=list("wxyz"), thresholds=thresholds
    )
    y_hat = (prob >= np.array(thresholds)).astype(int)
    for average in ("micro", "macro", "weighted"):
        p, r, f, _ = skm.precision_recall_fscore_support(y, y_hat, average=average)
        assert report.metrics[f"precision_{average}"] == pytest.approx(p)
        assert report.metrics[f"recall_{average}"] == pytest.approx(r)
        assert report.metrics[f"f1_{average}"] == pytest.approx(f)
    assert report.metrics["subset_accuracy"] == pytest.approx(skm.accuracy_score(y, y_hat))
    assert report.metrics["hamming_loss"] == pytest.approx(skm.hamming_loss(y, y_hat))
    np.testing.assert_array_equal(
        report.confusion_matrix, skm.multilabel_confusion_matrix(y, y_hat)
    )
    assert report.confusion_matrix.shape == (4, 2, 2)
    f_each = skm.f1_score(y, y_hat, average=None)
    assert [report.per_class[n]["f1"] for n in "wxyz"] == pytest.approx(f_each)
    assert [report.per_class[n]["threshold"] for n in "wxyz"] == thresholds
    assert report.thresholds == thresholds
    assert report.per_class["w"]["support"] == int(y[:, 0].sum())
    # a dict sets some labels; the others keep the default
    by_name = Evaluator().compute(
        y, prob, task="multilabel", class_names=list("wxyz"), thresholds={"x": 0.4, "y": 0.6}
    )
    assert by_name.to_dict() == report.to_dict()


def test_regression_matches_sklearn():
    rng = np.random.default_rng(5)
    y = rng.normal(size=(100, 3))
    pred = y + rng.normal(scale=0.3, size=(100, 3))
    report = Evaluator().compute(y, pred, task="regression", class_names=["a", "b", "c"])
    assert report.metrics["mse"] == pytest.approx(skm.mean_squared_error(y, pred))
    assert report.metrics["mae"] == pytest.approx(skm.mean_absolute_error(y, pred))
    assert report.metrics["rmse"] == pytest.approx(math.sqrt(skm.mean_squared_error(y, pred)))
    assert report.metrics["r2"] == pytest.approx(skm.r2_score(y, pred))
    r2_each = skm.r2_score(y, pred, multioutput="raw_values")
    assert [report.per_class[n]["r2"] for n in "abc"] == pytest.approx(r2_each)
    assert report.confusion_matrix is None
    # 1-D targets; (N, 1) predictions accepted; no per-target table
    one = Evaluator().compute(y[:, 0], pred[:, :1], task="regression")
    assert one.metrics["r2"] == pytest.approx(skm.r2_score(y[:, 0], pred[:, 0]))
    assert one.per_class == {}
    generated = Evaluator().compute(y, pred, task="regression")
    assert list(generated.per_class) == ["target_0", "target_1", "target_2"]
    with pytest.raises(EvaluationError, match="most_confused"):
        one.most_confused()


def test_losses_match_keras():
    y, prob = _random_multiclass(n=50, k=4, seed=6)
    report = Evaluator().compute(y, prob, task="multiclass")
    expected = keras.losses.CategoricalCrossentropy()(np.eye(4)[y], prob)
    assert report.metrics["loss"] == pytest.approx(float(expected), rel=1e-4)
    yb = (np.random.default_rng(7).random((50, 3)) < 0.5).astype("float32")
    pb = np.random.default_rng(8).random((50, 3))
    ml = Evaluator().compute(yb, pb, task="multilabel")
    expected = keras.losses.BinaryCrossentropy()(yb, pb)
    assert ml.metrics["loss"] == pytest.approx(float(expected), rel=1e-4)


def test_metric_functions():
    assert fm.roc_auc(np.array([1, 1]), np.array([0.1, 0.2])) is None
    assert fm.roc_auc(np.array([0, 1]), np.array([0.5, 0.5])) == 0.5
    np.testing.assert_array_equal(
        fm._average_ranks(np.array([3.0, 1.0, 3.0, 2.0])), [3.5, 1.0, 3.5, 2.0]
    )
    scores = fm.regression_scores(np.ones((3, 1)), np.ones((3, 1)))
    assert scores["r2"][0] == 1.0  # constant target, perfect prediction


# ------------------------------------------------------------------ report


def test_str_is_readable_table():
    text = str(_hand_report())
    for expected in (
        "multiclass",
        "accuracy",
        "precision",
        "recall",
        "f1",
        "support",
        "macro avg",
        "weighted avg",
        "Confusion matrix",
        *NAMES3,
    ):
        assert expected in text
    lines = text.splitlines()
    header = next(line for line in lines if "precision" in line and "support" in line)
    ant = next(line for line in lines if line.strip().startswith("ant") and "0.5000" in line)
    assert len(header) == len(ant)  # aligned columns
    matrix_rows = [line for line in lines if line.strip().startswith("bee")]
    assert matrix_rows[-1].split()[-3:] == ["0", "2", "0"]


def test_str_other_tasks():
    rng = np.random.default_rng(9)
    y = (rng.random((20, 3)) < 0.5).astype(int)
    ml = Evaluator().compute(
        y, rng.random((20, 3)), task="multilabel", class_names=["red", "green", "blue"]
    )
    text = str(ml)
    assert "micro avg" in text and "threshold" in text and "green" in text
    reg = Evaluator().compute(
        rng.random((20, 2)), rng.random((20, 2)), task="regression", class_names=["height", "width"]
    )
    text = str(reg)
    assert "r2" in text and "width" in text and "Confusion" not in text
    binary = str(Evaluator().compute(np.array([0, 1]), np.array([0.3, 0.6]), task="binary"))
    assert "roc_auc" in binary


def test_str_many_classes_shows_most_confused_instead_of_matrix():
    k = 60
    rng = np.random.default_rng(10)
    y = rng.integers(0, k, 600)
    pred = np.where(rng.random(600) < 0.7, y, (y + 1) % k)
    names = [f"class_with_a_long_name_{i:02d}" for i in range(k)]
    report = Evaluator().compute(
        y, _probs(list(pred), k, high=0.9), task="multiclass", class_names=names
    )
    text = str(report)
    assert "too many to show" in text
    assert "->" in text
    assert "lowest f1" in text  # per-class table limited for 60 classes
    assert max(len(line) for line in text.splitlines()) < 120
    top = report.most_confused(3)
    assert len(top) == 3 and top[0][2] >= top[1][2] >= top[2][2]
    assert all(t != p for t, p, _ in top)


def test_to_dict_is_json_serialisable_and_round_trips():
    reports = [
        _hand_report(),
        Evaluator().compute(np.array([0, 1, 1]), np.array([0.2, 0.7, 0.4]), task="binary"),
        Evaluator().compute(np.eye(3), np.eye(3) * 0.9, task="multilabel"),
        Evaluator().compute(np.arange(4.0), np.arange(4.0) + 0.5, task="regression"),
    ]
    for report in reports:
        d = report.to_dict()
        text = json.dumps(d, allow_nan=False)
        assert json.loads(text) == d
        again = EvaluationReport.from_dict(json.loads(text))
        assert again.to_dict() == d
    d = reports[0].to_dict()
    assert d["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert set(d) >= {"task", "metrics", "per_class", "confusion_matrix", "class_names"}
    assert reports[3].to_dict()["confusion_matrix"] is None


def test_repr_is_short():
    text = repr(_hand_report())
    assert text.startswith("EvaluationReport(task='multiclass'")
    assert "\n" not in text and len(text) < 150


# --------------------------------------------------------------- Evaluator


def test_config_round_trip():
    evaluator = Evaluator(top_k=3, batch_size=16, threshold=0.4)
    cfg = evaluator.get_config()
    assert json.loads(json.dumps(cfg)) == cfg == {"top_k": 3, "batch_size": 16, "threshold": 0.4}
    assert Evaluator.from_config(cfg) == evaluator
    assert "top_k=3" in repr(evaluator)


def test_from_config_unknown_key():
    with pytest.raises(ConfigError, match="top_k") as info:
        Evaluator.from_config({"topk": 3})
    assert "topk" in str(info.value) and "batch_size" in str(info.value)
    with pytest.raises(ConfigError):
        Evaluator.from_config([("top_k", 3)])


@pytest.mark.parametrize(
    ("kwargs", "error", "text"),
    [
        ({"top_k": 0}, EvaluationError, "top_k=0"),
        ({"top_k": 2.5}, ArgumentTypeError, "top_k=2.5"),
        ({"batch_size": 0}, EvaluationError, "batch_size=0"),
        ({"batch_size": True}, ArgumentTypeError, "batch_size=True"),
        ({"threshold": 0.0}, EvaluationError, "threshold=0.0"),
        ({"threshold": 1.0}, EvaluationError, "threshold=1.0"),
        ({"threshold": "half"}, ArgumentTypeError, "threshold='half'"),
    ],
)
def test_constructor_validation(kwargs, error, text):
    with pytest.raises(error) as info:
        Evaluator(**kwargs)
    assert "Received: " + text in str(info.value)
    assert isinstance(info.value, FineTuneError)


def test_positional_arguments_rejected():
    with pytest.raises(TypeError):
        Evaluator(5)  # type: ignore[misc]


# ------------------------------------------------------------ input errors


def test_too_many_model_classes():
    y = np.array([0, 1, 2, 1])
    with pytest.raises(EvaluationError) as info:
        Evaluator().compute(y, np.full((4, 5), 0.2), task="multiclass", class_names=NAMES3)
    message = str(info.value)
    assert "predicts 5 classes" in message and "has 3 classes" in message
    assert "Received: y_pred=array(shape=(4, 5)" in message


@pytest.mark.parametrize(
    ("y_true", "y_pred", "task", "match"),
    [
        (np.array([0, 1, 2]), _probs([0, 1], 3), "multiclass", "3 examples but y_pred has 2"),
        (np.array([0, 1]), np.array([[0.5, np.nan], [0.5, 0.5]]), "multiclass", "produced NaN"),
        (np.array([0, 1]), np.array([0.2, np.inf]), "binary", "produced NaN"),
        (np.array([], dtype=int), np.zeros((0, 3)), "multiclass", "empty"),
        (np.array([0, 1]), _probs([0, 1], 3), "multiclas", "Did you mean task='multiclass'"),
        (np.array([0, 3]), _probs([0, 1], 3), "multiclass", "class index 3"),
        (np.array([0, 1]), np.array([[2.0, -1.0], [0.1, 3.0]]), "multiclass", "logits"),
        (np.array([0, 2]), np.array([0.2, 0.9]), "binary", "class index 2"),
        (np.array([0, 1]), np.full((2, 3), 0.3), "binary", "predicts 3 classes"),
        (np.eye(3), np.full((3, 2), 0.5), "multilabel", "predicts 2 labels"),
        (np.eye(3) * 2, np.full((3, 3), 0.5), "multilabel", "0 or 1"),
        (
            np.ones((3, 2)),
            np.ones((3, 3)),
            "regression",
            "predicts 3 values per example but the data has 2 regression",
        ),
        (np.array([0, 1]), np.array([0.2, 0.6]), "multiclass", "one probability per class"),
        (np.ones((2, 2, 2)), np.ones((2, 2)), "multiclass", "1-D or 2-D"),
    ],
)
def test_compute_errors(y_true, y_pred, task, match):
    with pytest.raises(EvaluationError, match=match) as info:
        Evaluator().compute(y_true, y_pred, task=task)
    assert "Received:" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_compute_type_errors():
    with pytest.raises(ArgumentTypeError, match="task"):
        Evaluator().compute([0, 1], [[0.9, 0.1], [0.2, 0.8]], task=3)
    with pytest.raises(ArgumentTypeError, match="y_pred"):
        Evaluator().compute([0, 1], ["a", "b"], task="binary")
    with pytest.raises(ArgumentTypeError, match="class_names"):
        Evaluator().compute([0, 1], [0.1, 0.9], task="binary", class_names="ab")


def test_threshold_argument_errors():
    y, p = np.array([0, 1]), np.array([0.2, 0.8])
    with pytest.raises(EvaluationError, match="thresholds"):
        Evaluator().compute(y, _probs([0, 1], 2), task="multiclass", thresholds=0.3)
    with pytest.raises(EvaluationError, match="strictly between 0 and 1"):
        Evaluator().compute(y, p, task="binary", thresholds=1.5)
    with pytest.raises(EvaluationError, match="3 values"):
        Evaluator().compute(np.eye(2), np.eye(2), task="multilabel", thresholds=[0.1, 0.2, 0.3])
    with pytest.raises(EvaluationError, match="unknown labels"):
        Evaluator().compute(np.eye(2), np.eye(2), task="multilabel", thresholds={"zz": 0.3})


def test_float16_predictions_and_binary_dict_thresholds():
    y, prob = _random_multiclass(n=60, k=3, seed=14)
    half = Evaluator().compute(y, prob.astype(np.float16), task="multiclass")
    full = Evaluator().compute(y, prob, task="multiclass")
    assert half.metrics["accuracy"] == full.metrics["accuracy"]
    assert half.metrics["loss"] == pytest.approx(full.metrics["loss"], rel=1e-2)
    with pytest.raises(EvaluationError, match="single threshold"):
        Evaluator().compute(
            np.array([0, 1]), np.array([0.2, 0.8]), task="binary", thresholds={"1": 0.3}
        )
    text = str(
        Evaluator().compute(
            np.array([0, 1]),
            np.array([0.2, 0.8]),
            task="binary",
            class_names=["ok", "defect"],
            thresholds=0.3,
        )
    )
    assert "positive: 'defect' when prob >= 0.3" in text


def test_compute_accepts_one_hot_lists_and_string_labels():
    prob = _probs([0, 1, 1, 1, 2, 0], 3)
    reference = _hand_report().to_dict()
    one_hot = Evaluator().compute(
        np.eye(3)[[0, 0, 1, 1, 2, 2]], prob, task="multiclass", class_names=NAMES3
    )
    assert one_hot.to_dict() == reference
    strings = ["ant", "ant", "bee", "bee", "cat", "cat"]
    named = Evaluator().compute(strings, prob.tolist(), task="multiclass", class_names=NAMES3)
    assert named.to_dict() == reference
    with pytest.raises(EvaluationError, match="not in class_names"):
        Evaluator().compute(["ant", "dog"], prob[:2], task="multiclass", class_names=NAMES3)


# ------------------------------------------------------------- evaluate()


class FakeAdapter:
    """The DatasetAdapter protocol the Evaluator relies on, on numpy arrays."""

    def __init__(self, x, y, task, class_names):
        self.x, self.y = x, y
        self.task, self.class_names = task, class_names
        self.input_shape, self.input_dtype = x.shape[1:], str(x.dtype)

    def __len__(self):
        return len(self.y)

    def targets(self):
        return self.y

    def inputs_dataset(self, batch_size):
        import tensorflow as tf

        return tf.data.Dataset.from_tensor_slices(self.x).batch(batch_size)


def _dense_model(inputs, units, activation):
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((inputs,)), keras.layers.Dense(units, activation)])


def test_evaluate_keras_model_on_adapter():
    rng = np.random.default_rng(11)
    x = rng.normal(size=(40, 4)).astype("float32")
    y = rng.integers(0, 3, 40)
    model = _dense_model(4, 3, "softmax")
    report = Evaluator(batch_size=7).evaluate(model, FakeAdapter(x, y, "multiclass", NAMES3))
    expected = Evaluator().compute(
        y, model.predict(x, verbose=0), task="multiclass", class_names=NAMES3
    )
    assert report.class_names == NAMES3 and report.num_examples == 40
    assert report.metrics == pytest.approx(expected.metrics)
    np.testing.assert_array_equal(report.confusion_matrix, expected.confusion_matrix)


def test_evaluate_binary_sigmoid_and_softmax_models():
    rng = np.random.default_rng(12)
    x = rng.normal(size=(30, 3)).astype("float32")
    y = rng.integers(0, 2, 30)
    data = FakeAdapter(x, y, "binary", ["no", "yes"])
    sigmoid = Evaluator().evaluate(_dense_model(3, 1, "sigmoid"), data)
    softmax = Evaluator().evaluate(_dense_model(3, 2, "softmax"), data)
    for report in (sigmoid, softmax):
        assert report.task == "binary" and list(report.per_class) == ["no", "yes"]


def test_evaluate_rejects_wrong_width_before_predict():
    class FiveClassModel:
        output_shape = (None, 5)

        def predict(self, *args, **kwargs):
            raise AssertionError("predict must not run")

    data = FakeAdapter(np.zeros((4, 2), "float32"), np.array([0, 1, 2, 0]), "multiclass", NAMES3)
    with pytest.raises(EvaluationError, match="predicts 5 classes but the data has 3 classes"):
        Evaluator().evaluate(FiveClassModel(), data)


def test_evaluate_wrong_width_after_predict_without_output_shape():
    class Model:
        def predict(self, dataset, verbose=0):
            return np.full((4, 5), 0.2)

    data = FakeAdapter(np.zeros((4, 2), "float32"), np.array([0, 1, 2, 0]), "multiclass", NAMES3)
    with pytest.raises(EvaluationError, match="predicts 5 classes"):
        Evaluator().evaluate(Model(), data)


def test_evaluate_nan_model():
    x = np.full((5, 2), np.nan, "float32")
    data = FakeAdapter(x, np.array([0, 1, 0, 1, 1]), "binary", ["a", "b"])
    with pytest.raises(EvaluationError, match="model produced NaN"):
        Evaluator().evaluate(_dense_model(2, 1, "sigmoid"), data)


def test_evaluate_wraps_predict_failure():
    data = FakeAdapter(np.zeros((4, 7), "float32"), np.array([0, 1, 2, 0]), "multiclass", NAMES3)
    with pytest.raises(EvaluationError, match="failed to predict") as info:
        Evaluator().evaluate(_dense_model(4, 3, "softmax"), data)
    assert info.value.__cause__ is not None


def test_evaluate_other_errors():
    data = FakeAdapter(np.zeros((0, 2), "float32"), np.array([], int), "binary", ["a", "b"])
    with pytest.raises(EvaluationError, match="empty"):
        Evaluator().evaluate(_dense_model(2, 1, "sigmoid"), data)
    with pytest.raises(ArgumentTypeError, match="predict"):
        Evaluator().evaluate("not a model", data)
    inputs = keras.Input((2,))
    two_heads = keras.Model(inputs, [keras.layers.Dense(1)(inputs), keras.layers.Dense(1)(inputs)])
    data = FakeAdapter(np.zeros((3, 2), "float32"), np.array([0.0, 1.0, 2.0]), "regression", [])
    with pytest.raises(EvaluationError, match="2 outputs"):
        Evaluator().evaluate(two_heads, data)


def test_evaluate_with_real_data_adapter():
    rng = np.random.default_rng(13)
    x = rng.normal(size=(24, 4)).astype("float32")
    y = np.arange(24) % 3
    model = _dense_model(4, 3, "softmax")
    report = Evaluator().evaluate(model, (x, y))
    assert report.task == "multiclass" and report.num_examples == 24
    assert report.confusion_matrix.shape == (3, 3)
    assert sum(s["support"] for s in report.per_class.values()) == 24
    named = Evaluator().evaluate(model, (x, y), class_names=NAMES3)
    assert named.class_names == NAMES3
    with pytest.raises(EvaluationError, match="predicts 5 classes but the data has 3"):
        Evaluator().evaluate(_dense_model(4, 5, "softmax"), (x, y))


def test_evaluate_real_adapter_binary_strings_and_tf_data():
    import tensorflow as tf

    from finetunekit.data import DatasetAdapter

    rng = np.random.default_rng(15)
    x = rng.normal(size=(20, 4)).astype("float32")
    data = DatasetAdapter.from_arrays(x, np.array(["no", "yes"] * 10))
    report = Evaluator().evaluate(_dense_model(4, 1, "sigmoid"), data)
    assert report.task == "binary" and report.class_names == ["no", "yes"]
    assert "roc_auc" in report.metrics
    ds = tf.data.Dataset.from_tensor_slices((x, np.arange(20) % 4)).batch(5)
    report = Evaluator().evaluate(_dense_model(4, 4, "softmax"), ds)
    assert report.task == "multiclass" and report.num_examples == 20
    # a test set lacking a class of the model: name all the model's classes
    with pytest.raises(EvaluationError, match="pass all 4 names"):
        Evaluator().evaluate(_dense_model(4, 4, "softmax"), (x, np.arange(20) % 3))
    report = Evaluator().evaluate(
        _dense_model(4, 4, "softmax"), (x, np.arange(20) % 3), class_names=list("abcd")
    )
    assert report.per_class["d"]["support"] == 0 and report.confusion_matrix.shape == (4, 4)
