"""Shared checks of the evaluator and the tasks' reports: arguments, arrays, thresholds.

The evaluator runs the generic checks (numeric arrays, lengths, finite
values); each :class:`~finetunekit.Task` builds its part of the report with
the helpers here (class indices, probabilities, thresholds, per-class scores).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from finetunekit.errors import ArgumentTypeError, EvaluationError, format_error
from finetunekit.evaluation import metrics as _m

__all__ = [
    "ThresholdsLike",
    "check_class_names",
    "check_finite",
    "check_int",
    "check_probabilities",
    "check_threshold",
    "class_indices",
    "default_names",
    "map_string_labels",
    "names_text",
    "plural",
    "resolve_thresholds",
    "single_label_scores",
    "to_numeric",
]

#: Predicted probabilities may exceed [0, 1] by this much (float16 rounding).
_PROB_TOLERANCE = 1e-3

ThresholdsLike = float | Sequence[float] | np.ndarray | Mapping[str, float] | None


def check_int(name: str, value: Any, minimum: int, fix: str) -> int:
    """Validates an int argument ``>= minimum`` and returns it as ``int``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ArgumentTypeError(
            format_error(
                f"{name} must be an int",
                expected=f"an int >= {minimum}",
                received={name: value},
                fix=fix,
            )
        )
    if value < minimum:
        raise EvaluationError(
            format_error(
                f"{name} must be at least {minimum}",
                expected=f"an int >= {minimum}",
                received={name: value},
                fix=fix,
            )
        )
    return int(value)


def check_threshold(name: str, value: Any) -> float:
    """Validates a decision threshold strictly between 0 and 1."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ArgumentTypeError(
            format_error(
                f"{name} must be a number",
                expected="a float strictly between 0 and 1",
                received={name: value},
                fix="Pass e.g. threshold=0.5.",
            )
        )
    value = float(value)
    if not 0.0 < value < 1.0:
        raise EvaluationError(
            format_error(
                f"{name} must lie strictly between 0 and 1",
                expected="a float in the open interval (0, 1)",
                received={name: value},
                fix="Pass e.g. threshold=0.5; a prediction counts as positive when "
                "its probability is >= the threshold.",
            )
        )
    return value


def check_class_names(class_names: Any) -> list[str] | None:
    """Validates class names: None or a sequence of distinct names (made str)."""
    if class_names is None:
        return None
    if isinstance(class_names, (str, bytes)) or not isinstance(class_names, (Sequence, np.ndarray)):
        raise ArgumentTypeError(
            format_error(
                "class_names must be a list of names",
                expected="a list of str, one per class in index order",
                received={"class_names": class_names},
                fix="Pass e.g. class_names=['cat', 'dog'].",
            )
        )
    names = [str(name) for name in class_names]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise EvaluationError(
            format_error(
                f"class_names contains duplicates {duplicates}",
                expected="distinct names",
                received={"class_names": class_names},
            )
        )
    return names


def to_numeric(name: str, value: Any) -> np.ndarray:
    """Converts ``value`` to a numeric numpy array."""
    try:
        array = np.asarray(value)
    except Exception as error:  # e.g. ragged lists
        raise ArgumentTypeError(
            format_error(
                f"{name} cannot be converted to a numpy array ({error})",
                expected="a numpy array, a list of numbers or a tensor",
                received={name: type(value).__name__},
            )
        ) from error
    if array.dtype == bool:
        array = array.astype(np.int64)
    if not np.issubdtype(array.dtype, np.number):
        raise ArgumentTypeError(
            format_error(
                f"{name} must hold numbers",
                expected="a numeric array",
                received={name: array},
                fix="Encode labels as class indices (DatasetAdapter.targets() does this), "
                "or pass class_names so string labels can be mapped.",
            )
        )
    return array


def shape_text(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"


def names_text(names: list[str], limit: int = 6) -> str:
    shown = names if len(names) <= limit else [*names[:limit], "..."]
    return "[" + ", ".join(repr(n) if n != "..." else n for n in shown) + "]"


def plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def map_string_labels(y_true: Any, names: list[str]) -> Any:
    """Maps string labels to indices in ``names``; other inputs pass through."""
    array = np.asarray(y_true)
    if array.dtype.kind not in ("U", "S", "O") or array.ndim != 1:
        return y_true
    if array.dtype.kind == "O" and not all(isinstance(x, (str, bytes)) for x in array):
        return y_true
    lookup = {name: i for i, name in enumerate(names)}
    labels = [x.decode() if isinstance(x, bytes) else str(x) for x in array]
    unknown = sorted({label for label in labels if label not in lookup})
    if unknown:
        raise EvaluationError(
            format_error(
                f"y_true holds labels that are not in class_names: {unknown[:10]}",
                expected=f"labels among {names_text(names)}",
                received={"class_names": names},
                fix="Pass the class_names the model was trained on.",
            )
        )
    return np.array([lookup[label] for label in labels], dtype=np.int64)


def check_finite(y_true: np.ndarray, y_pred: np.ndarray) -> None:
    """Rejects NaN / inf in predictions and targets."""
    bad_pred = ~np.isfinite(y_pred.astype(np.float64))
    if bad_pred.any():
        rows = bad_pred.reshape(len(y_pred), -1).any(axis=1)
        raise EvaluationError(
            format_error(
                f"The model produced NaN or infinite predictions for {int(rows.sum())} of "
                f"{len(y_pred)} examples",
                expected="finite predictions",
                received={"y_pred": y_pred},
                fix="Check the inputs for NaN, lower the learning rate if training "
                "diverged, and keep the output layer in float32 under mixed precision.",
            )
        )
    bad_true = ~np.isfinite(y_true.astype(np.float64))
    if bad_true.any():
        raise EvaluationError(
            format_error(
                f"y_true contains {int(bad_true.sum())} NaN or infinite values",
                expected="finite targets",
                received={"y_true": y_true},
                fix="Remove or fill the examples with missing targets.",
            )
        )


def check_probabilities(y_prob: np.ndarray, activation: str) -> np.ndarray:
    """Rejects outputs that are not probabilities (e.g. logits)."""
    low, high = float(y_prob.min()), float(y_prob.max())
    if low < -_PROB_TOLERANCE or high > 1.0 + _PROB_TOLERANCE:
        raise EvaluationError(
            format_error(
                f"y_pred holds values outside [0, 1] (min {low:.4g}, max {high:.4g}); "
                f"the model seems to output logits, not probabilities",
                expected=f"{activation} probabilities",
                received={"y_pred": y_prob},
                fix=f"Give the model's output layer a {activation} activation, e.g. "
                f"keras.Sequential([model, keras.layers.Activation('{activation}')]).",
            )
        )
    return np.clip(y_prob.astype(np.float64), 0.0, 1.0)


def class_indices(y_true: np.ndarray, num_classes: int, names: list[str]) -> np.ndarray:
    """Validates int class indices in ``[0, num_classes)``; accepts one-hot rows."""
    if y_true.ndim == 2:
        if y_true.shape[1] == 1:
            y_true = y_true[:, 0]
        elif y_true.shape[1] == num_classes:
            y_true = np.argmax(y_true, axis=1)
        else:
            raise EvaluationError(
                format_error(
                    f"y_true has {y_true.shape[1]} columns but there are {num_classes} classes",
                    expected=f"class indices (N,) or one-hot (N, {num_classes})",
                    received={"y_true": y_true},
                )
            )
    if not np.all(np.equal(np.mod(y_true, 1), 0)):
        raise EvaluationError(
            format_error(
                "y_true holds non-integer class indices",
                expected=f"int class indices in [0, {num_classes})",
                received={"y_true": y_true},
                fix="Pass DatasetAdapter.targets() or integer labels.",
            )
        )
    indices = y_true.astype(np.int64)
    low, high = int(indices.min()), int(indices.max())
    if low < 0 or high >= num_classes:
        raise EvaluationError(
            format_error(
                f"y_true holds class index {high if high >= num_classes else low}, but "
                f"the model predicts only {num_classes} classes {names_text(names)}",
                expected=f"class indices in [0, {num_classes})",
                received={"y_true": y_true},
                fix="Evaluate on data with the classes the model was trained on, or "
                "pass the full class_names.",
            )
        )
    return indices


def resolve_thresholds(
    thresholds: ThresholdsLike, names: list[str], task: str, default: float
) -> np.ndarray:
    """Turns the thresholds argument into one float per label."""
    k = len(names)
    if thresholds is None:
        return np.full(k, default)
    if isinstance(thresholds, Mapping):
        unknown = sorted(str(key) for key in thresholds if key not in names)
        if unknown:
            raise EvaluationError(
                format_error(
                    f"thresholds names unknown labels {unknown}",
                    expected=f"keys among {names_text(names)}",
                    received={"thresholds": dict(thresholds)},
                )
            )
        return np.array(
            [
                check_threshold(f"thresholds['{n}']", thresholds[n]) if n in thresholds else default
                for n in names
            ]
        )
    if isinstance(thresholds, (int, float, np.integer, np.floating)) and not isinstance(
        thresholds, bool
    ):
        return np.full(k, check_threshold("thresholds", thresholds))
    values = np.asarray(thresholds, dtype=object).reshape(-1)
    want = 1 if task == "binary" else k
    if values.shape[0] != want:
        raise EvaluationError(
            format_error(
                f"thresholds has {values.shape[0]} values but there are {want} "
                f"{'labels' if task == 'multilabel' else 'thresholds to set'}",
                expected=f"one float, or {want} floats in label order",
                received={"thresholds": thresholds},
            )
        )
    checked = [check_threshold(f"thresholds[{i}]", v) for i, v in enumerate(values)]
    return np.array(checked if task == "multilabel" else checked * k)


def default_names(names: list[str] | None, k: int) -> list[str]:
    return names if names is not None else [str(i) for i in range(k)]


def single_label_scores(
    y_true: np.ndarray,
    y_hat: np.ndarray,
    names: list[str],
    metrics: dict[str, float],
) -> tuple[dict[str, float], dict[str, dict[str, float]], np.ndarray]:
    """Shared per-class scores and confusion matrix for multiclass / binary."""
    k = len(names)
    matrix = _m.confusion_matrix(y_true, y_hat, k)
    tp = np.diag(matrix)
    fp = matrix.sum(axis=0) - tp
    fn = matrix.sum(axis=1) - tp
    precision, recall, f1 = _m.precision_recall_f1(tp, fp, fn)
    support = matrix.sum(axis=1)
    per_class = {
        name: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(names)
    }
    averages = _m.average_scores(tp, fp, fn)
    for average in ("macro", "weighted"):
        for metric in ("precision", "recall", "f1"):
            key = f"{metric}_{average}"
            metrics[key] = averages[key]
    return metrics, per_class, matrix
