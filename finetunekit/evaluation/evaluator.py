"""`Evaluator`: step 5 of fine-tuning, "how good is it, and where does it fail"."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from finetunekit.errors import (
    ArgumentTypeError,
    ConfigError,
    EvaluationError,
    FineTuneError,
    format_error,
)
from finetunekit.evaluation import calibration as _cal
from finetunekit.evaluation import metrics as _m
from finetunekit.evaluation.report import EvaluationReport

__all__ = ["TASKS", "Evaluator"]

#: The tasks finetunekit knows (see ``docs/internal/architecture.md``).
TASKS = ("multiclass", "binary", "multilabel", "regression")

#: Predicted probabilities may exceed [0, 1] by this much (float16 rounding).
_PROB_TOLERANCE = 1e-3

ThresholdsLike = float | Sequence[float] | np.ndarray | Mapping[str, float] | None


# ---------------------------------------------------------------- arguments


def _check_int(name: str, value: Any, minimum: int, fix: str) -> int:
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


def _check_threshold(name: str, value: Any) -> float:
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


def _check_task(task: Any) -> str:
    """Validates a task name."""
    if not isinstance(task, str):
        raise ArgumentTypeError(
            format_error(
                "task must be a string",
                expected=f"one of {list(TASKS)}",
                received={"task": task},
            )
        )
    normalised = task.strip().lower()
    if normalised not in TASKS:
        import difflib

        close = difflib.get_close_matches(normalised, TASKS, n=1)
        fix = f"Did you mean task='{close[0]}'?" if close else f"Pass one of {list(TASKS)}."
        raise EvaluationError(
            format_error(
                f"Unknown task '{task}'",
                expected=f"one of {list(TASKS)}",
                received={"task": task},
                fix=fix,
            )
        )
    return normalised


def _check_class_names(class_names: Any) -> list[str] | None:
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


def _to_numeric(name: str, value: Any) -> np.ndarray:
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


def _shape_text(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"


def _names_text(names: list[str], limit: int = 6) -> str:
    shown = names if len(names) <= limit else [*names[:limit], "..."]
    return "[" + ", ".join(repr(n) if n != "..." else n for n in shown) + "]"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _width_error(
    task: str, got: int, want: int, names: list[str] | None, received: dict[str, Any]
) -> EvaluationError:
    """The error for a model output width that does not fit the data."""
    if task == "regression":
        what = (
            f"The model predicts {_plural(got, 'value')} per example but the data has "
            f"{_plural(want, 'regression target')}"
        )
        fix = f"Use a model whose output layer has {_plural(want, 'unit')}."
    else:
        unit = "labels" if task == "multilabel" else "classes"
        shown = f" {_names_text(names)}" if names else ""
        what = f"The model predicts {got} {unit} but the data has {want} {unit}{shown}"
        fix = (
            f"Use a model whose output layer has {_plural(want, 'unit')} "
            f"(e.g. HeadReplacer(num_classes={want})), or evaluate on data with the "
            f"classes the model was trained on"
        )
        if got > want:
            fix += (
                f"; if the test data lacks some of the model's classes, pass all {got} "
                f"names in order as class_names= to evaluate()"
            )
        fix += "."
        if task == "binary":
            what = f"The model predicts {got} classes but the data is binary (2 classes{shown})"
            fix = (
                "Use a model with one sigmoid output (or two softmax outputs) for binary "
                "data, or pass task='multiclass' with the model's class_names."
            )
    return EvaluationError(
        format_error(what, expected=_expected_output(task, want), received=received, fix=fix)
    )


def _expected_output(task: str, want: int) -> str:
    return {
        "multiclass": f"predictions of shape (N, {want}) (softmax probabilities)",
        "binary": "predictions of shape (N,), (N, 1) (sigmoid) or (N, 2) (softmax)",
        "multilabel": f"predictions of shape (N, {want}) (sigmoid probabilities)",
        "regression": f"predictions of shape (N, {want})" + (" or (N,)" if want == 1 else ""),
    }[task]


# ---------------------------------------------------------------- Evaluator


class Evaluator:
    """Computes metrics, per-class scores and a confusion matrix for a model.

    The constructor only stores and validates its arguments; the work happens
    in :meth:`evaluate` (runs a Keras model on data) or :meth:`compute`
    (pure numpy on targets and predictions). Works on any Keras model whose
    output follows the finetunekit conventions: softmax probabilities (N, K)
    for multiclass, the sigmoid probability of ``class_names[1]`` (N, 1) or
    (N,) — or a two-column softmax — for binary, sigmoid probabilities (N, K)
    for multilabel, and values (N, D) for regression.

    Args:
        top_k: Also report ``top_{top_k}_accuracy`` for multiclass data with
            more than ``top_k`` classes.
        batch_size: Batch size for ``model.predict``.
        threshold: Decision threshold on predicted probabilities for binary
            and multilabel data (a prediction is positive when
            ``prob >= threshold``).

    Raises:
        ArgumentTypeError: If an argument has the wrong type.
        EvaluationError: If ``top_k < 1``, ``batch_size < 1`` or ``threshold``
            is not strictly between 0 and 1.

    Examples:
        >>> import numpy as np
        >>> evaluator = Evaluator(top_k=2)
        >>> y_prob = np.array([[0.7, 0.2, 0.1], [0.5, 0.3, 0.2], [0.1, 0.1, 0.8]])
        >>> report = evaluator.compute(np.array([0, 1, 2]), y_prob, task="multiclass",
        ...                            class_names=["a", "b", "c"])
        >>> report.metrics["accuracy"], report.metrics["top_2_accuracy"]
        (0.6666666666666666, 1.0)
    """

    def __init__(self, *, top_k: int = 5, batch_size: int = 64, threshold: float = 0.5) -> None:
        self._top_k = _check_int("top_k", top_k, 1, "Pass e.g. top_k=5.")
        self._batch_size = _check_int("batch_size", batch_size, 1, "Pass e.g. batch_size=64.")
        self._threshold = _check_threshold("threshold", threshold)

    @property
    def top_k(self) -> int:
        """The k of the reported top-k accuracy."""
        return self._top_k

    @property
    def batch_size(self) -> int:
        """The batch size used for ``model.predict``."""
        return self._batch_size

    @property
    def threshold(self) -> float:
        """The default decision threshold for binary and multilabel data."""
        return self._threshold

    # ------------------------------------------------------------ config

    def get_config(self) -> dict[str, Any]:
        """The constructor arguments as a JSON-serialisable dict.

        Returns:
            ``{"top_k": ..., "batch_size": ..., "threshold": ...}``.

        Examples:
            >>> Evaluator(top_k=3).get_config()
            {'top_k': 3, 'batch_size': 64, 'threshold': 0.5}
        """
        return {"top_k": self._top_k, "batch_size": self._batch_size, "threshold": self._threshold}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Evaluator:
        """Creates an ``Evaluator`` from :meth:`get_config` output.

        Args:
            config: A dict with any of the keys ``top_k``, ``batch_size``,
                ``threshold``.

        Returns:
            A new ``Evaluator``.

        Raises:
            ConfigError: If ``config`` is not a dict or has unknown keys.

        Examples:
            >>> Evaluator.from_config({"top_k": 3}).top_k
            3
        """
        if not isinstance(config, Mapping):
            raise ConfigError(
                format_error(
                    "Evaluator.from_config() needs a dict",
                    expected="the dict returned by Evaluator.get_config()",
                    received={"config": config},
                )
            )
        valid = ("top_k", "batch_size", "threshold")
        unknown = sorted(str(key) for key in config if key not in valid)
        if unknown:
            raise ConfigError(
                format_error(
                    f"Unknown Evaluator config keys {unknown}",
                    expected=f"only the keys {list(valid)}",
                    received={"config": dict(config)},
                    fix=f"Remove {unknown}; valid keys are {list(valid)}.",
                )
            )
        return cls(**dict(config))

    def __repr__(self) -> str:
        args = ", ".join(f"{key}={value!r}" for key, value in self.get_config().items())
        return f"Evaluator({args})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Evaluator):
            return NotImplemented
        return self.get_config() == other.get_config()

    def __hash__(self) -> int:
        return hash(tuple(self.get_config().items()))

    # ---------------------------------------------------------- evaluate

    def evaluate(
        self,
        model: Any,
        data: Any,
        *,
        task: str | None = None,
        class_names: Sequence[str] | None = None,
        thresholds: ThresholdsLike = None,
    ) -> EvaluationReport:
        """Runs ``model`` on ``data`` and reports how good the predictions are.

        Args:
            model: Any Keras model (or object with a Keras-like
                ``predict(dataset, verbose=0)``) with a single output.
            data: A ``DatasetAdapter``, an ``(x, y)`` tuple of arrays, or a
                ``tf.data.Dataset`` of ``(x, y)``. The task and class names
                are taken from it.
            task: Overrides the task inferred from ``data``.
            class_names: Overrides the class names of ``data``.
            thresholds: Per-call decision thresholds: for binary one float;
                for multilabel a float, one float per label, or a dict
                ``{label name: threshold}`` (missing labels use
                ``self.threshold``). Default: ``self.threshold``.

        Returns:
            An :class:`EvaluationReport`.

        Raises:
            ArgumentTypeError: If ``model`` has no ``predict`` method.
            EvaluationError: If the model's output does not fit the data
                (e.g. 5 classes predicted for 3-class data), the model
                produced NaN, the model cannot run on the inputs, or the
                data is empty.
            DataError: If ``data`` cannot be turned into a dataset.

        Examples:
            >>> import numpy as np, keras
            >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, "softmax")])
            >>> x, y = np.random.rand(12, 4).astype("float32"), np.arange(12) % 3
            >>> Evaluator().evaluate(model, (x, y)).num_examples
            12
        """
        predict = getattr(model, "predict", None)
        if not callable(predict):
            raise ArgumentTypeError(
                format_error(
                    "Evaluator.evaluate() needs a model with a predict() method",
                    expected="a keras.Model",
                    received={"model": model},
                    fix="Pass result.model (or any keras.Model) as the first argument.",
                )
            )
        adapter = self._as_adapter(data, task=task, class_names=class_names)
        adapter_task = _check_task(adapter.task)
        names = list(adapter.class_names)
        y_true = np.asarray(adapter.targets())
        if len(y_true) == 0:
            raise EvaluationError(
                format_error(
                    "Cannot evaluate on empty data",
                    expected="at least one example",
                    received={"num_examples": 0},
                    fix="Pass a non-empty test set.",
                )
            )
        self._check_model_output(model, adapter_task, names, y_true)
        try:
            y_pred = predict(adapter.inputs_dataset(self._batch_size), verbose=0)
        except FineTuneError:
            raise
        except Exception as error:
            first_line = (str(error).strip().splitlines() or [""])[0][:300]
            raise EvaluationError(
                format_error(
                    f"The model failed to predict on the data ({type(error).__name__}: "
                    f"{first_line})",
                    expected=(
                        f"a model accepting inputs of shape "
                        f"{getattr(adapter, 'input_shape', '?')} and dtype "
                        f"{getattr(adapter, 'input_dtype', '?')} (per example)"
                    ),
                    received={"model_input_shape": getattr(model, "input_shape", None)},
                    fix="Evaluate the model on data shaped like its training data "
                    "(the full error is chained below).",
                )
            ) from error
        if isinstance(y_pred, Mapping):
            y_pred = list(y_pred.values())
        if isinstance(y_pred, (list, tuple)):
            if len(y_pred) != 1:
                raise EvaluationError(
                    format_error(
                        f"The model has {len(y_pred)} outputs",
                        expected="a model with a single output",
                        received={"num_outputs": len(y_pred)},
                        fix="Evaluate a keras.Model(model.input, model.outputs[i]) for the "
                        "output you want.",
                    )
                )
            y_pred = y_pred[0]
        return self.compute(
            y_true, y_pred, task=adapter_task, class_names=names, thresholds=thresholds
        )

    @staticmethod
    def _as_adapter(data: Any, *, task: str | None, class_names: Sequence[str] | None) -> Any:
        """Turns ``data`` into an object following the ``DatasetAdapter`` protocol."""
        protocol = ("task", "class_names", "targets", "inputs_dataset")
        if task is None and class_names is None and all(hasattr(data, a) for a in protocol):
            return data  # an adapter (or a duck-typed one): use as is
        from finetunekit.data import as_adapter

        return as_adapter(data, task=task, class_names=list(class_names) if class_names else None)

    @staticmethod
    def _check_model_output(model: Any, task: str, names: list[str], y_true: np.ndarray) -> None:
        """Checks the model's declared output width before running predict."""
        try:
            shape = tuple(model.output_shape)
        except Exception:  # not built, several outputs, not a Keras model...
            return
        if not shape or not all(d is None or isinstance(d, int) for d in shape):
            return
        width = shape[-1] if len(shape) > 1 else 1
        if width is None:
            return
        received = {"model.output_shape": shape}
        if task in ("multiclass", "multilabel") and names and width != len(names):
            raise _width_error(task, width, len(names), names, received)
        if task == "binary" and width not in (1, 2):
            raise _width_error(task, width, 2, names, received)
        if task == "regression":
            want = 1 if y_true.ndim == 1 else int(y_true.shape[1])
            if width != want:
                raise _width_error(task, width, want, None, received)

    # ----------------------------------------------------------- compute

    def compute(
        self,
        y_true: Any,
        y_pred: Any,
        *,
        task: str,
        class_names: Sequence[str] | None = None,
        thresholds: ThresholdsLike = None,
    ) -> EvaluationReport:
        """Computes the report from targets and predictions (pure numpy).

        Args:
            y_true: Targets in the stored encoding of
                ``DatasetAdapter.targets()``: int class indices (N,) for
                multiclass (one-hot (N, K) and, with ``class_names``, string
                labels are accepted too), 0/1 (N,) for binary, multi-hot
                (N, K) for multilabel, values (N,) or (N, D) for regression.
            y_pred: Model outputs: probabilities (N, K) for multiclass;
                probability of ``class_names[1]`` (N,) / (N, 1), or (N, 2)
                softmax, for binary; probabilities (N, K) for multilabel;
                values (N,) / (N, D) for regression.
            task: ``"multiclass"``, ``"binary"``, ``"multilabel"`` or
                ``"regression"``.
            class_names: Names in class-index order (target names for
                regression). Default: ``"0"``, ``"1"``, ...
            thresholds: Per-call decision thresholds, see :meth:`evaluate`.

        Returns:
            An :class:`EvaluationReport`.

        Raises:
            EvaluationError: If shapes do not fit the task or each other, the
                predictions contain NaN, labels are out of range, the data is
                empty or the task is unknown.
            ArgumentTypeError: If an argument has the wrong type.

        Examples:
            >>> import numpy as np
            >>> report = Evaluator().compute(np.array([0, 1, 1]), np.array([0.2, 0.7, 0.4]),
            ...                              task="binary", class_names=["ok", "defect"])
            >>> report.metrics["accuracy"], report.per_class["defect"]["recall"]
            (0.6666666666666666, 0.5)
        """
        task = _check_task(task)
        names = _check_class_names(class_names)
        y_true_raw = y_true
        if names is not None and task in ("multiclass", "binary"):
            y_true_raw = self._map_string_labels(y_true, names)
        y_true = _to_numeric("y_true", y_true_raw)
        y_pred = _to_numeric("y_pred", y_pred)
        for name, array in (("y_true", y_true), ("y_pred", y_pred)):
            if array.ndim == 0 or array.ndim > 2:
                raise EvaluationError(
                    format_error(
                        f"{name} must be a 1-D or 2-D array",
                        expected=f"shape (N,) or (N, K) for task '{task}'",
                        received={name: array},
                    )
                )
        n_true, n_pred = len(y_true), len(y_pred)
        if n_true == 0 or n_pred == 0:
            raise EvaluationError(
                format_error(
                    "Cannot evaluate on empty data",
                    expected="at least one example",
                    received={"y_true": y_true, "y_pred": y_pred},
                    fix="Pass a non-empty test set.",
                )
            )
        if n_true != n_pred:
            raise EvaluationError(
                format_error(
                    f"y_true has {n_true} examples but y_pred has {n_pred}",
                    expected="one prediction per example",
                    received={"y_true": y_true, "y_pred": y_pred},
                    fix="Predict on exactly the examples whose targets you pass, in order.",
                )
            )
        self._check_finite(y_true, y_pred)
        if task in ("multiclass", "regression") and thresholds is not None:
            raise EvaluationError(
                format_error(
                    f"thresholds only apply to binary and multilabel data, not '{task}'",
                    expected="thresholds=None",
                    received={"thresholds": thresholds, "task": task},
                    fix="Drop the thresholds argument.",
                )
            )
        if task == "multiclass":
            return self._multiclass(y_true, y_pred, names)
        if task == "binary":
            return self._binary(y_true, y_pred, names, thresholds)
        if task == "multilabel":
            return self._multilabel(y_true, y_pred, names, thresholds)
        return self._regression(y_true, y_pred, names)

    # ----------------------------------------------------------- helpers

    @staticmethod
    def _map_string_labels(y_true: Any, names: list[str]) -> Any:
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
                    expected=f"labels among {_names_text(names)}",
                    received={"class_names": names},
                    fix="Pass the class_names the model was trained on.",
                )
            )
        return np.array([lookup[label] for label in labels], dtype=np.int64)

    @staticmethod
    def _check_finite(y_true: np.ndarray, y_pred: np.ndarray) -> None:
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

    @staticmethod
    def _check_probabilities(y_prob: np.ndarray, activation: str) -> np.ndarray:
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

    @staticmethod
    def _class_indices(y_true: np.ndarray, num_classes: int, names: list[str]) -> np.ndarray:
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
                    f"the model predicts only {num_classes} classes {_names_text(names)}",
                    expected=f"class indices in [0, {num_classes})",
                    received={"y_true": y_true},
                    fix="Evaluate on data with the classes the model was trained on, or "
                    "pass the full class_names.",
                )
            )
        return indices

    def _resolve_thresholds(
        self, thresholds: ThresholdsLike, names: list[str], task: str
    ) -> np.ndarray:
        """Turns the thresholds argument into one float per label."""
        k = len(names)
        if thresholds is None:
            return np.full(k, self._threshold)
        if isinstance(thresholds, Mapping):
            unknown = sorted(str(key) for key in thresholds if key not in names)
            if unknown:
                raise EvaluationError(
                    format_error(
                        f"thresholds names unknown labels {unknown}",
                        expected=f"keys among {_names_text(names)}",
                        received={"thresholds": dict(thresholds)},
                    )
                )
            return np.array(
                [
                    _check_threshold(f"thresholds['{n}']", thresholds[n])
                    if n in thresholds
                    else self._threshold
                    for n in names
                ]
            )
        if isinstance(thresholds, (int, float, np.integer, np.floating)) and not isinstance(
            thresholds, bool
        ):
            return np.full(k, _check_threshold("thresholds", thresholds))
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
        checked = [_check_threshold(f"thresholds[{i}]", v) for i, v in enumerate(values)]
        return np.array(checked if task == "multilabel" else checked * k)

    @staticmethod
    def _default_names(names: list[str] | None, k: int) -> list[str]:
        return names if names is not None else [str(i) for i in range(k)]

    # ------------------------------------------------------------- tasks

    def _single_label_report(
        self,
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

    def _multiclass(
        self, y_true: np.ndarray, y_pred: np.ndarray, names: list[str] | None
    ) -> EvaluationReport:
        if y_pred.ndim != 2:
            want = len(names) if names is not None else "K"
            raise EvaluationError(
                format_error(
                    "The model predicts one value per example, but multiclass evaluation "
                    "needs one probability per class",
                    expected=f"predictions of shape (N, {want}) (softmax probabilities)",
                    received={"y_pred": y_pred},
                    fix="Use a softmax output layer with one unit per class, or pass "
                    "task='binary' for two-class data.",
                )
            )
        k = y_pred.shape[1]
        if names is not None and k != len(names):
            raise _width_error("multiclass", k, len(names), names, {"y_pred": y_pred})
        if k < 2:
            raise EvaluationError(
                format_error(
                    "Multiclass evaluation needs at least 2 classes",
                    expected="predictions of shape (N, K) with K >= 2",
                    received={"y_pred": y_pred},
                    fix="Pass task='binary' or 'regression' for a single output.",
                )
            )
        names = self._default_names(names, k)
        y_true = self._class_indices(y_true, k, names)
        y_prob = self._check_probabilities(y_pred, "softmax")
        y_hat = np.argmax(y_prob, axis=1)
        metrics: dict[str, float] = {
            "loss": _m.categorical_cross_entropy(y_true, y_prob),
            "accuracy": _m.accuracy(y_true, y_hat),
        }
        if k > self._top_k:
            metrics[f"top_{self._top_k}_accuracy"] = _m.top_k_accuracy(y_true, y_prob, self._top_k)
        metrics, per_class, matrix = self._single_label_report(y_true, y_hat, names, metrics)
        calibration = _cal.reliability_bins(y_true, y_prob)
        metrics["ece"] = _cal.ece_from_bins(calibration)
        return EvaluationReport(
            task="multiclass",
            metrics=metrics,
            per_class=per_class,
            confusion_matrix=matrix,
            class_names=names,
            num_examples=len(y_true),
            calibration=calibration,
        )

    def _binary(
        self,
        y_true: np.ndarray,
        y_pred: np.ndarray,
        names: list[str] | None,
        thresholds: ThresholdsLike,
    ) -> EvaluationReport:
        if names is not None and len(names) != 2:
            raise EvaluationError(
                format_error(
                    f"Binary data needs exactly 2 class names, got {len(names)}",
                    expected="class_names=[negative name, positive name]",
                    received={"class_names": names},
                    fix="Pass two names, or task='multiclass' for more classes.",
                )
            )
        names = self._default_names(names, 2)
        if isinstance(thresholds, Mapping):
            raise EvaluationError(
                format_error(
                    "Binary data takes a single threshold, not a dict",
                    expected=f"one float: the threshold on the probability of '{names[1]}'",
                    received={"thresholds": dict(thresholds)},
                    fix="Pass e.g. thresholds=0.3.",
                )
            )
        if y_pred.ndim == 2:
            if y_pred.shape[1] == 2:
                y_pred = y_pred[:, 1]  # two-column softmax: probability of class 1
            elif y_pred.shape[1] == 1:
                y_pred = y_pred[:, 0]
            else:
                raise _width_error("binary", y_pred.shape[1], 2, names, {"y_pred": y_pred})
        y_true = self._class_indices(y_true, 2, names)
        y_prob = self._check_probabilities(y_pred, "sigmoid")
        threshold = float(self._resolve_thresholds(thresholds, names, "binary")[0])
        y_hat = (y_prob >= threshold).astype(np.int64)
        metrics: dict[str, float] = {
            "loss": _m.binary_cross_entropy(y_true, y_prob),
            "accuracy": _m.accuracy(y_true, y_hat),
        }
        auc = _m.roc_auc(y_true, y_prob)
        if auc is not None:
            metrics["roc_auc"] = auc
        tp = float(np.sum((y_true == 1) & (y_hat == 1)))
        fp = float(np.sum((y_true == 0) & (y_hat == 1)))
        fn = float(np.sum((y_true == 1) & (y_hat == 0)))
        p, r, f = _m.precision_recall_f1(np.array([tp]), np.array([fp]), np.array([fn]))
        metrics.update(precision=float(p[0]), recall=float(r[0]), f1=float(f[0]))
        metrics, per_class, matrix = self._single_label_report(y_true, y_hat, names, metrics)
        calibration = _cal.reliability_bins(y_true, y_prob)
        metrics["ece"] = _cal.ece_from_bins(calibration)
        return EvaluationReport(
            task="binary",
            metrics=metrics,
            per_class=per_class,
            confusion_matrix=matrix,
            class_names=names,
            num_examples=len(y_true),
            thresholds=[threshold],
            calibration=calibration,
        )

    def _multilabel(
        self,
        y_true: np.ndarray,
        y_pred: np.ndarray,
        names: list[str] | None,
        thresholds: ThresholdsLike,
    ) -> EvaluationReport:
        if y_true.ndim != 2:
            raise EvaluationError(
                format_error(
                    "Multilabel targets must be multi-hot rows",
                    expected="y_true of shape (N, K) holding 0/1",
                    received={"y_true": y_true},
                    fix="Pass DatasetAdapter.targets() of a multilabel adapter.",
                )
            )
        k = y_true.shape[1]
        if names is not None and len(names) != k:
            raise EvaluationError(
                format_error(
                    f"y_true has {k} label columns but class_names has {len(names)} names",
                    expected=f"{k} class names",
                    received={"class_names": names},
                )
            )
        names = self._default_names(names, k)
        if y_pred.ndim != 2 or y_pred.shape[1] != k:
            got = 1 if y_pred.ndim == 1 else y_pred.shape[1]
            raise _width_error("multilabel", got, k, names, {"y_pred": y_pred})
        if not np.all((y_true == 0) | (y_true == 1)):
            raise EvaluationError(
                format_error(
                    "Multilabel targets must be 0 or 1",
                    expected="a multi-hot array of 0/1",
                    received={"y_true": y_true},
                )
            )
        y_true = y_true.astype(np.int64)
        y_prob = self._check_probabilities(y_pred, "sigmoid")
        per_label = self._resolve_thresholds(thresholds, names, "multilabel")
        y_hat = (y_prob >= per_label[None, :]).astype(np.int64)
        matrices = _m.multilabel_confusion_matrices(y_true, y_hat)
        tp, fp, fn = matrices[:, 1, 1], matrices[:, 0, 1], matrices[:, 1, 0]
        precision, recall, f1 = _m.precision_recall_f1(tp, fp, fn)
        averages = _m.average_scores(tp, fp, fn, micro=True)
        metrics: dict[str, float] = {
            "loss": _m.binary_cross_entropy(y_true, y_prob),
            "subset_accuracy": float(np.mean(np.all(y_true == y_hat, axis=1))),
            "hamming_loss": float(np.mean(y_true != y_hat)),
        }
        for average in ("micro", "macro", "weighted"):
            for metric in ("precision", "recall", "f1"):
                metrics[f"{metric}_{average}"] = averages[f"{metric}_{average}"]
        per_class = {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(tp[i] + fn[i]),
                "threshold": float(per_label[i]),
            }
            for i, name in enumerate(names)
        }
        return EvaluationReport(
            task="multilabel",
            metrics=metrics,
            per_class=per_class,
            confusion_matrix=matrices,
            class_names=names,
            num_examples=len(y_true),
            thresholds=[float(t) for t in per_label],
        )

    def _regression(
        self, y_true: np.ndarray, y_pred: np.ndarray, names: list[str] | None
    ) -> EvaluationReport:
        y_true = y_true.astype(np.float64)
        y_pred = y_pred.astype(np.float64)
        if y_true.ndim == 1:
            y_true = y_true[:, None]
        if y_pred.ndim == 1:
            y_pred = y_pred[:, None]
        d = y_true.shape[1]
        if y_pred.shape[1] != d:
            raise _width_error("regression", y_pred.shape[1], d, None, {"y_pred": y_pred})
        if names and len(names) != d:
            raise EvaluationError(
                format_error(
                    f"There are {d} regression targets but {len(names)} target names",
                    expected=f"{d} names in class_names (or none)",
                    received={"class_names": names},
                )
            )
        scores = _m.regression_scores(y_true, y_pred)
        metrics = {key: float(np.mean(values)) for key, values in scores.items()}
        # RMSE of the pooled errors is sqrt(mean MSE); report the mean per-target RMSE
        # only through per_class, so that rmse == sqrt(mse) holds for the headline.
        metrics["rmse"] = float(np.sqrt(metrics["mse"]))
        per_class: dict[str, dict[str, float]] = {}
        target_names = list(names) if names else []
        if d > 1:
            target_names = target_names or [f"target_{i}" for i in range(d)]
            per_class = {
                name: {key: float(values[i]) for key, values in scores.items()}
                for i, name in enumerate(target_names)
            }
        return EvaluationReport(
            task="regression",
            metrics={key: metrics[key] for key in ("mse", "mae", "rmse", "r2")},
            per_class=per_class,
            confusion_matrix=None,
            class_names=target_names,
            num_examples=len(y_true),
        )
