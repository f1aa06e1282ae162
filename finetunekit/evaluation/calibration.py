"""Calibration: expected calibration error, reliability bins and temperature scaling.

A classifier is *calibrated* when its confidence matches its accuracy: of all
the predictions made with 80 % confidence, 80 % are right. Fine-tuned
networks are usually *overconfident* (their confidence exceeds their
accuracy). This module measures that with the expected calibration error
(ECE) over equal-width confidence bins, and fixes most of it with
*temperature scaling* (Guo et al., 2017): the logits are divided by one
number ``T > 1`` fitted on validation data, which softens the probabilities
without changing any arg-max prediction.

Everything here is pure numpy and works on the outputs finetunekit models
produce (see ``docs/internal/architecture.md``): softmax probabilities
(N, K) for multiclass and the sigmoid probability of ``class_names[1]``
((N,) or (N, 1)) — or a two-column softmax — for binary. The logits are
recovered as ``log(p)`` (softmax: the log-probabilities differ from the
logits by a per-row constant, which softmax ignores) and ``logit(p)``
(sigmoid).

Examples:
    >>> import numpy as np
    >>> y = np.array([0, 1, 1, 0])
    >>> p = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.7, 0.3]])
    >>> round(expected_calibration_error(y, p), 4)
    0.3
"""

from __future__ import annotations

from typing import Any

import numpy as np

from finetunekit.errors import EvaluationError, format_error

__all__ = [
    "DEFAULT_BINS",
    "TEMPERATURE_RANGE",
    "TemperatureScaled",
    "apply_temperature",
    "calibrate_result",
    "ece_from_bins",
    "expected_calibration_error",
    "fit_temperature",
    "negative_log_likelihood",
    "reliability_bins",
    "top_label",
]

#: Number of equal-width confidence bins used for the ECE and the reliability diagram.
DEFAULT_BINS = 15
#: The interval searched for the temperature.
TEMPERATURE_RANGE = (0.05, 20.0)
#: Probabilities are clipped to ``[_EPS, 1 - _EPS]`` before taking logs.
_EPS = 1e-7


def _as_probabilities(y_prob: Any) -> tuple[np.ndarray, bool]:
    """Returns ``(probabilities as float64, is_sigmoid)``.

    ``is_sigmoid`` is true for one sigmoid output per example ((N,) or (N, 1)),
    false for softmax rows (N, K) with K >= 2.
    """
    prob = np.asarray(y_prob, dtype=np.float64)
    if prob.ndim == 2 and prob.shape[1] == 1:
        return prob[:, 0], True
    if prob.ndim == 1:
        return prob, True
    if prob.ndim == 2:
        return prob, False
    raise EvaluationError(
        format_error(
            "Calibration needs classifier probabilities",
            expected="softmax probabilities (N, K) or sigmoid probabilities (N,) / (N, 1)",
            received={"y_prob": prob},
        )
    )


def top_label(y_true: Any, y_prob: Any) -> tuple[np.ndarray, np.ndarray]:
    """The confidence of each prediction and whether it was right.

    For softmax rows the prediction is the arg-max class and its confidence
    the largest probability; for one sigmoid output ``p`` it is class 1 when
    ``p >= 0.5`` with confidence ``max(p, 1 - p)``.

    Args:
        y_true: Int class indices, shape (N,).
        y_prob: Softmax probabilities (N, K) or sigmoid probabilities (N,) / (N, 1).

    Returns:
        ``(confidence, correct)``: float64 (N,) in [0, 1] and bool (N,).

    Examples:
        >>> conf, correct = top_label(np.array([1, 0]), np.array([0.8, 0.3]))
        >>> conf.tolist(), correct.tolist()
        ([0.8, 0.7], [True, True])
    """
    prob, sigmoid = _as_probabilities(y_prob)
    y_true = np.asarray(y_true).reshape(-1).astype(np.int64)
    if sigmoid:
        predicted = (prob >= 0.5).astype(np.int64)
        confidence = np.where(predicted == 1, prob, 1.0 - prob)
    else:
        predicted = np.argmax(prob, axis=1)
        confidence = prob[np.arange(len(prob)), predicted]
    return np.clip(confidence, 0.0, 1.0), predicted == y_true


def reliability_bins(y_true: Any, y_prob: Any, n_bins: int = DEFAULT_BINS) -> dict[str, list[Any]]:
    """Groups predictions into equal-width confidence bins.

    Bin ``b`` holds the predictions with confidence in ``(b / n_bins,
    (b + 1) / n_bins]`` (a confidence of exactly 0 falls in the first bin).

    Args:
        y_true: Int class indices, shape (N,).
        y_prob: Softmax probabilities (N, K) or sigmoid probabilities (N,) / (N, 1).
        n_bins: Number of bins.

    Returns:
        A JSON-serialisable dict of plain lists: ``"bins"`` (the
        ``n_bins + 1`` bin edges), and per bin ``"confidence"`` (mean
        confidence), ``"accuracy"`` (fraction correct) and ``"count"``
        (number of predictions). Empty bins have count 0 and confidence and
        accuracy 0.0.

    Examples:
        >>> bins = reliability_bins(np.array([1, 0]), np.array([0.8, 0.3]), n_bins=2)
        >>> bins["bins"], bins["count"], bins["accuracy"]
        ([0.0, 0.5, 1.0], [0, 2], [0.0, 1.0])
    """
    confidence, correct = top_label(y_true, y_prob)
    edges = np.arange(n_bins + 1, dtype=np.float64) / n_bins
    index = np.searchsorted(edges[1:-1], confidence, side="left")
    count = np.bincount(index, minlength=n_bins)
    conf_sum = np.bincount(index, weights=confidence, minlength=n_bins)
    correct_sum = np.bincount(index, weights=correct.astype(np.float64), minlength=n_bins)
    safe = np.maximum(count, 1)
    return {
        "bins": [float(e) for e in edges],
        "confidence": [float(v) for v in conf_sum / safe],
        "accuracy": [float(v) for v in correct_sum / safe],
        "count": [int(c) for c in count],
    }


def ece_from_bins(bins: dict[str, list[Any]]) -> float:
    """The expected calibration error of reliability bins.

    Args:
        bins: A dict as returned by :func:`reliability_bins`.

    Returns:
        ``sum_b (count_b / N) * |accuracy_b - confidence_b|`` (0.0 when empty).

    Examples:
        >>> round(ece_from_bins({"count": [1, 3], "accuracy": [0.0, 1.0], "confidence": [0.4, 0.8]}), 4)
        0.25
    """
    count = np.asarray(bins["count"], dtype=np.float64)
    total = count.sum()
    if total == 0:
        return 0.0
    gap = np.abs(np.asarray(bins["accuracy"]) - np.asarray(bins["confidence"]))
    return float(np.sum(count / total * gap))


def expected_calibration_error(y_true: Any, y_prob: Any, n_bins: int = DEFAULT_BINS) -> float:
    """Expected calibration error over equal-width confidence bins.

    ``ECE = sum_b (n_b / N) * |accuracy_b - confidence_b|``: the average gap
    between confidence and accuracy, weighted by how many predictions fall in
    each bin. 0 is perfectly calibrated.

    Args:
        y_true: Int class indices, shape (N,).
        y_prob: Softmax probabilities (N, K) or sigmoid probabilities (N,) / (N, 1).
        n_bins: Number of bins (15 by default, as in Guo et al., 2017).

    Returns:
        The ECE in [0, 1].

    Examples:
        >>> expected_calibration_error(np.array([1, 0]), np.array([0.8, 0.3]), n_bins=2)
        0.25
    """
    return ece_from_bins(reliability_bins(y_true, y_prob, n_bins))


def _logits(prob: np.ndarray, sigmoid: bool) -> np.ndarray:
    clipped = np.clip(prob, _EPS, 1.0 - _EPS)
    if sigmoid:
        return np.log(clipped) - np.log1p(-clipped)
    return np.log(clipped)


def _from_logits(logits: np.ndarray, sigmoid: bool) -> np.ndarray:
    if sigmoid:
        return 1.0 / (1.0 + np.exp(-logits))
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def apply_temperature(y_prob: Any, temperature: float) -> np.ndarray:
    """Rescales probabilities as if the logits were divided by ``temperature``.

    Softmax rows become ``softmax(log p / T)``; a sigmoid output becomes
    ``sigmoid(logit(p) / T)``. ``T > 1`` softens, ``T < 1`` sharpens; the
    arg-max (and the side of 0.5) never changes. The shape is kept.

    Args:
        y_prob: Softmax probabilities (N, K) or sigmoid probabilities (N,) / (N, 1).
        temperature: A positive float; 1.0 returns the input unchanged.

    Returns:
        float32 probabilities of the same shape.

    Examples:
        >>> apply_temperature(np.array([[0.9, 0.1]]), 2.0).round(3).tolist()
        [[0.75, 0.25]]
    """
    array = np.asarray(y_prob)
    if float(temperature) == 1.0:
        return array.astype(np.float32)
    prob, sigmoid = _as_probabilities(array)
    scaled = _from_logits(_logits(prob, sigmoid) / float(temperature), sigmoid)
    return scaled.reshape(array.shape).astype(np.float32)


def negative_log_likelihood(y_true: Any, y_prob: Any) -> float:
    """Mean negative log-likelihood of the true classes (the cross-entropy).

    Args:
        y_true: Int class indices, shape (N,).
        y_prob: Softmax probabilities (N, K) or sigmoid probabilities (N,) / (N, 1).

    Returns:
        The mean NLL over the N examples.

    Examples:
        >>> round(negative_log_likelihood(np.array([1]), np.array([[0.5, 0.5]])), 4)
        0.6931
    """
    prob, sigmoid = _as_probabilities(y_prob)
    y_true = np.asarray(y_true).reshape(-1).astype(np.int64)
    if sigmoid:
        picked = np.where(y_true == 1, prob, 1.0 - prob)
    else:
        picked = prob[np.arange(len(prob)), y_true]
    return float(np.mean(-np.log(np.clip(picked, _EPS, 1.0))))


def _nll_at(logits: np.ndarray, y_true: np.ndarray, sigmoid: bool, temperature: float) -> float:
    scaled = logits / temperature
    if sigmoid:
        signed = np.where(y_true == 1, scaled, -scaled)
        return float(np.mean(np.logaddexp(0.0, -signed)))  # -log sigmoid(signed)
    top = scaled.max(axis=1)
    log_norm = top + np.log(np.exp(scaled - top[:, None]).sum(axis=1))
    return float(np.mean(log_norm - scaled[np.arange(len(scaled)), y_true]))


def fit_temperature(
    y_true: Any, y_prob: Any, bounds: tuple[float, float] = TEMPERATURE_RANGE
) -> float:
    """Fits the temperature that minimises the NLL of ``y_prob`` on ``y_true``.

    A golden-section search over ``log T`` in ``bounds`` (the NLL is a
    unimodal function of ``log T``), to a relative precision of about 1e-6.

    Args:
        y_true: Int class indices, shape (N,), of held-out (validation) data.
        y_prob: The model's softmax (N, K) or sigmoid (N,) / (N, 1)
            probabilities on the same examples.
        bounds: The ``(lowest, highest)`` temperature considered.

    Returns:
        The fitted temperature, a float in ``bounds``.

    Raises:
        EvaluationError: If there are no examples.

    Examples:
        >>> rng = np.random.default_rng(0)
        >>> y = rng.integers(0, 2, 500)
        >>> p = np.where(y == 1, 0.99, 0.01)            # always sure ...
        >>> p[:150] = 1 - p[:150]                       # ... but 30 % wrong
        >>> fit_temperature(y, p) > 1.0                 # softened
        True
    """
    prob, sigmoid = _as_probabilities(y_prob)
    y_true = np.asarray(y_true).reshape(-1).astype(np.int64)
    if len(prob) == 0:
        raise EvaluationError(
            format_error(
                "Cannot fit a temperature on empty data",
                expected="at least one validation example",
                received={"num_examples": 0},
                fix="Pass non-empty validation data to calibrate().",
            )
        )
    logits = _logits(prob, sigmoid)
    low, high = np.log(bounds[0]), np.log(bounds[1])
    ratio = (np.sqrt(5.0) - 1.0) / 2.0
    a, b = low + (1 - ratio) * (high - low), low + ratio * (high - low)
    fa = _nll_at(logits, y_true, sigmoid, float(np.exp(a)))
    fb = _nll_at(logits, y_true, sigmoid, float(np.exp(b)))
    while high - low > 1e-6:
        if fa <= fb:
            high, b, fb = b, a, fa
            a = low + (1 - ratio) * (high - low)
            fa = _nll_at(logits, y_true, sigmoid, float(np.exp(a)))
        else:
            low, a, fa = a, b, fb
            b = low + ratio * (high - low)
            fb = _nll_at(logits, y_true, sigmoid, float(np.exp(b)))
    return float(np.exp((low + high) / 2.0))


class TemperatureScaled:
    """A thin wrapper whose ``predict`` applies a temperature to a model's outputs.

    Used by :meth:`FineTuneResult.evaluate` so that reports of a calibrated
    result show the calibrated probabilities. It is not a Keras model: export
    or save the wrapped ``model`` and keep the temperature beside it.

    Args:
        model: A Keras classifier (softmax or sigmoid output).
        temperature: The temperature to apply.

    Examples:
        >>> import keras
        >>> net = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3, "softmax")])
        >>> TemperatureScaled(net, 2.0).predict(np.ones((4, 2)), verbose=0).shape
        (4, 3)
    """

    def __init__(self, model: Any, temperature: float) -> None:
        self.model = model
        self.temperature = float(temperature)

    @property
    def output_shape(self) -> Any:
        """The wrapped model's output shape."""
        return self.model.output_shape

    def predict(self, x: Any, **kwargs: Any) -> np.ndarray:
        """``model.predict(x, **kwargs)`` with the temperature applied."""
        return apply_temperature(np.asarray(self.model.predict(x, **kwargs)), self.temperature)


def calibrate_result(result: Any, validation_data: Any, batch_size: int = 64) -> dict[str, float]:
    """Fits and stores the temperature of a ``FineTuneResult``; see ``FineTuneResult.calibrate``.

    Args:
        result: A multiclass or binary ``FineTuneResult``.
        validation_data: Held-out data: an adapter, ``(x, y)`` or a ``tf.data`` of ``(x, y)``.
        batch_size: Examples per forward pass.

    Returns:
        ``{"temperature", "ece_before", "ece_after", "nll_before", "nll_after"}``.

    Raises:
        EvaluationError: For multilabel and regression results, or empty data.

    Examples:
        >>> calibrate_result(result, (x_val, y_val))["temperature"]  # doctest: +SKIP
        1.83
    """
    task = result.task_object
    if not (task.has_classes and task.single_label):
        raise EvaluationError(
            format_error(
                f"Temperature scaling needs a single-label classifier, not task '{result.task}'",
                expected="a multiclass or binary result",
                received={"task": result.task},
                fix="Calibrate multiclass or binary models only.",
            )
        )
    from finetunekit.data import as_adapter

    adapter = as_adapter(validation_data, task=task, class_names=result.class_names)
    y_true = np.asarray(adapter.targets()).reshape(-1).astype(np.int64)
    if len(y_true) == 0:
        fit_temperature(y_true, np.zeros((0, 1)))  # raises the empty-data error
    y_prob = np.asarray(result.model.predict(adapter.inputs_dataset(batch_size), verbose=0))
    temperature = fit_temperature(y_true, y_prob)
    calibrated = apply_temperature(y_prob, temperature)
    result.temperature = temperature
    return {
        "temperature": temperature,
        "ece_before": expected_calibration_error(y_true, y_prob),
        "ece_after": expected_calibration_error(y_true, calibrated),
        "nll_before": negative_log_likelihood(y_true, y_prob),
        "nll_after": negative_log_likelihood(y_true, calibrated),
    }
