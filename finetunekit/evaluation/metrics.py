"""Pure numpy metric functions used by :class:`~finetunekit.evaluation.Evaluator`.

Every function takes plain numpy arrays that are already validated and
encoded (see ``docs/internal/architecture.md``) and returns numpy arrays or
Python floats. Nothing here imports TensorFlow or Keras.

Conventions:

* Confusion matrices have rows = true class, columns = predicted class.
* Per-multilabel-label 2x2 matrices use scikit-learn's layout
  ``[[tn, fp], [fn, tp]]``.
* Undefined ratios (e.g. the precision of a class that is never predicted)
  are 0.0, like scikit-learn's ``zero_division=0``.
* Macro averages are taken over the classes that occur in the true or in the
  predicted labels (``tp + fp + fn > 0``), like scikit-learn's default
  ``labels=None`` for single-label data.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "EPSILON",
    "accuracy",
    "average_scores",
    "binary_cross_entropy",
    "categorical_cross_entropy",
    "confusion_matrix",
    "multilabel_confusion_matrices",
    "precision_recall_f1",
    "regression_scores",
    "roc_auc",
    "top_k_accuracy",
]

#: Probability clipping used by the losses (Keras' ``backend.epsilon()``).
EPSILON = 1e-7


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Divides element-wise, returning 0.0 where the denominator is 0."""
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    out = np.zeros(np.broadcast(numerator, denominator).shape, dtype=np.float64)
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


def categorical_cross_entropy(y_true: np.ndarray, y_prob: np.ndarray) -> float:
    """Mean categorical cross-entropy, computed like Keras with ``from_logits=False``.

    Rows of ``y_prob`` are renormalised to sum to one, then clipped to
    ``[EPSILON, 1 - EPSILON]``.

    Args:
        y_true: Int class indices, shape (N,).
        y_prob: Class probabilities, shape (N, K).

    Returns:
        The mean loss over the N examples.

    Examples:
        >>> y_prob = np.array([[0.5, 0.5], [1.0, 0.0]])
        >>> round(categorical_cross_entropy(np.array([0, 0]), y_prob), 4)
        0.3466
    """
    y_prob = np.asarray(y_prob, dtype=np.float64)
    totals = y_prob.sum(axis=1, keepdims=True)
    y_prob = _safe_divide(y_prob, totals)
    picked = y_prob[np.arange(len(y_true)), y_true]
    picked = np.clip(picked, EPSILON, 1.0 - EPSILON)
    return float(np.mean(-np.log(picked)))


def binary_cross_entropy(y_true: np.ndarray, y_prob: np.ndarray) -> float:
    """Mean binary cross-entropy over all elements, computed like Keras.

    Args:
        y_true: 0/1 targets, any shape.
        y_prob: Probabilities of the positive class, same shape as ``y_true``.

    Returns:
        The mean loss over all elements.

    Examples:
        >>> round(binary_cross_entropy(np.array([1, 0]), np.array([0.5, 0.5])), 4)
        0.6931
    """
    y_true = np.asarray(y_true, dtype=np.float64)
    y_prob = np.clip(np.asarray(y_prob, dtype=np.float64), EPSILON, 1.0 - EPSILON)
    losses = -(y_true * np.log(y_prob) + (1.0 - y_true) * np.log(1.0 - y_prob))
    return float(np.mean(losses))


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Fraction of examples whose predicted class equals the true class.

    Args:
        y_true: True class indices, shape (N,).
        y_pred: Predicted class indices, shape (N,).

    Returns:
        The accuracy in [0, 1].

    Examples:
        >>> accuracy(np.array([0, 1, 1, 2]), np.array([0, 1, 0, 2]))
        0.75
    """
    return float(np.mean(np.asarray(y_true) == np.asarray(y_pred)))


def top_k_accuracy(y_true: np.ndarray, y_prob: np.ndarray, k: int) -> float:
    """Fraction of examples whose true class is among the ``k`` highest scores.

    A true class counts as found when fewer than ``k`` classes score strictly
    higher than it (ties are resolved in the example's favour).

    Args:
        y_true: True class indices, shape (N,).
        y_prob: Class scores, shape (N, K).
        k: How many top classes count as a hit.

    Returns:
        The top-k accuracy in [0, 1].

    Examples:
        >>> y_prob = np.array([[0.1, 0.3, 0.6], [0.7, 0.2, 0.1]])
        >>> top_k_accuracy(np.array([1, 2]), y_prob, k=2)
        0.5
    """
    y_prob = np.asarray(y_prob, dtype=np.float64)
    true_scores = y_prob[np.arange(len(y_true)), y_true]
    higher = (y_prob > true_scores[:, None]).sum(axis=1)
    return float(np.mean(higher < k))


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts (true, predicted) pairs.

    Args:
        y_true: True class indices in ``[0, num_classes)``, shape (N,).
        y_pred: Predicted class indices in ``[0, num_classes)``, shape (N,).
        num_classes: K.

    Returns:
        An int64 array of shape (K, K); rows are true classes, columns
        predicted classes.

    Examples:
        >>> confusion_matrix(np.array([0, 1, 1]), np.array([0, 0, 1]), 2).tolist()
        [[1, 0], [1, 1]]
    """
    flat = np.asarray(y_true, dtype=np.int64) * num_classes + np.asarray(y_pred, dtype=np.int64)
    counts = np.bincount(flat, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).astype(np.int64)


def multilabel_confusion_matrices(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """One 2x2 confusion matrix per label.

    Args:
        y_true: 0/1 multi-hot targets, shape (N, K).
        y_pred: 0/1 multi-hot predictions, shape (N, K).

    Returns:
        An int64 array of shape (K, 2, 2); entry ``[k]`` is
        ``[[tn, fp], [fn, tp]]`` for label k (scikit-learn's layout).

    Examples:
        >>> y_true = np.array([[1, 0], [1, 1]])
        >>> y_pred = np.array([[1, 1], [0, 1]])
        >>> multilabel_confusion_matrices(y_true, y_pred)[0].tolist()
        [[0, 0], [1, 1]]
    """
    t = np.asarray(y_true).astype(bool)
    p = np.asarray(y_pred).astype(bool)
    tp = np.sum(t & p, axis=0)
    fp = np.sum(~t & p, axis=0)
    fn = np.sum(t & ~p, axis=0)
    tn = np.sum(~t & ~p, axis=0)
    return np.stack([np.stack([tn, fp], axis=-1), np.stack([fn, tp], axis=-1)], axis=1).astype(
        np.int64
    )


def precision_recall_f1(
    tp: np.ndarray, fp: np.ndarray, fn: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class precision, recall and F1 from true/false positive/negative counts.

    Args:
        tp: True positives per class, shape (K,).
        fp: False positives per class, shape (K,).
        fn: False negatives per class, shape (K,).

    Returns:
        ``(precision, recall, f1)``, each float64 of shape (K,); undefined
        values are 0.0.

    Examples:
        >>> p, r, f = precision_recall_f1(np.array([2]), np.array([2]), np.array([0]))
        >>> float(p[0]), float(r[0]), round(float(f[0]), 4)
        (0.5, 1.0, 0.6667)
    """
    tp = np.asarray(tp, dtype=np.float64)
    fp = np.asarray(fp, dtype=np.float64)
    fn = np.asarray(fn, dtype=np.float64)
    precision = _safe_divide(tp, tp + fp)
    recall = _safe_divide(tp, tp + fn)
    f1 = _safe_divide(2.0 * tp, 2.0 * tp + fp + fn)
    return precision, recall, f1


def average_scores(
    tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, *, micro: bool = False
) -> dict[str, float]:
    """Macro, weighted (and optionally micro) averages of precision, recall and F1.

    Macro averages are taken over the classes with ``tp + fp + fn > 0`` (the
    classes that occur in the true or predicted labels); weighted averages
    weigh each class by its support ``tp + fn``.

    Args:
        tp: True positives per class, shape (K,).
        fp: False positives per class, shape (K,).
        fn: False negatives per class, shape (K,).
        micro: Also return micro averages (pooled counts).

    Returns:
        A dict with keys ``precision_macro``, ``recall_macro``, ``f1_macro``,
        ``precision_weighted``, ``recall_weighted``, ``f1_weighted`` and, when
        ``micro`` is true, ``precision_micro``, ``recall_micro``, ``f1_micro``.

    Examples:
        >>> scores = average_scores(np.array([1, 1]), np.array([1, 0]), np.array([0, 1]))
        >>> round(scores["f1_macro"], 4)
        0.6667
    """
    tp = np.asarray(tp, dtype=np.float64)
    fp = np.asarray(fp, dtype=np.float64)
    fn = np.asarray(fn, dtype=np.float64)
    precision, recall, f1 = precision_recall_f1(tp, fp, fn)
    support = tp + fn
    present = (tp + fp + fn) > 0
    out: dict[str, float] = {}
    for name, values in (("precision", precision), ("recall", recall), ("f1", f1)):
        out[f"{name}_macro"] = float(values[present].mean()) if present.any() else 0.0
        total = support.sum()
        out[f"{name}_weighted"] = float((values * support).sum() / total) if total > 0 else 0.0
    if micro:
        p, r, f = precision_recall_f1(
            tp.sum(keepdims=True), fp.sum(keepdims=True), fn.sum(keepdims=True)
        )
        out["precision_micro"] = float(p[0])
        out["recall_micro"] = float(r[0])
        out["f1_micro"] = float(f[0])
    return out


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..N of ``values``, ties sharing their average rank."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    # Start index of each run of equal values.
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], len(values)]
    run_ranks = (starts + ends + 1) / 2.0  # mean of the 1-based ranks starts+1..ends
    ranks_sorted = np.repeat(run_ranks, ends - starts)
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = ranks_sorted
    return ranks


def roc_auc(y_true: np.ndarray, y_score: np.ndarray) -> float | None:
    """Area under the ROC curve, via the rank-sum (Mann-Whitney U) statistic.

    Ties in ``y_score`` count one half, as in scikit-learn.

    Args:
        y_true: 0/1 labels, shape (N,).
        y_score: Scores of the positive class, shape (N,).

    Returns:
        The AUC in [0, 1], or ``None`` when only one class is present
        (the AUC is undefined).

    Examples:
        >>> roc_auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
        0.75
    """
    y_true = np.asarray(y_true).astype(bool)
    n_pos = int(y_true.sum())
    n_neg = len(y_true) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = _average_ranks(np.asarray(y_score, dtype=np.float64))
    u = ranks[y_true].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def regression_scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, np.ndarray]:
    """Per-target MSE, MAE, RMSE and R².

    R² follows scikit-learn's ``force_finite`` rule for a constant target:
    1.0 when the prediction is perfect, else 0.0.

    Args:
        y_true: Targets, shape (N, D).
        y_pred: Predictions, shape (N, D).

    Returns:
        A dict ``{"mse", "mae", "rmse", "r2"}`` of float64 arrays of shape (D,).

    Examples:
        >>> scores = regression_scores(np.array([[1.0], [3.0]]), np.array([[2.0], [3.0]]))
        >>> float(scores["mse"][0]), float(scores["r2"][0])
        (0.5, 0.5)
    """
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    error = y_pred - y_true
    mse = np.mean(error**2, axis=0)
    mae = np.mean(np.abs(error), axis=0)
    residual = np.sum(error**2, axis=0)
    total = np.sum((y_true - y_true.mean(axis=0)) ** 2, axis=0)
    r2 = np.where(total > 0, 1.0 - _safe_divide(residual, total), np.where(residual == 0, 1.0, 0.0))
    return {"mse": mse, "mae": mae, "rmse": np.sqrt(mse), "r2": r2}
