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
    LabelError,
    format_error,
)
from finetunekit.evaluation.checks import (
    ThresholdsLike,
    check_class_names,
    check_finite,
    check_int,
    check_threshold,
    map_string_labels,
    to_numeric,
)
from finetunekit.evaluation.report import EvaluationReport
from finetunekit.tasks.base import BUILT_IN, Task
from finetunekit.tasks.base import available as available_tasks
from finetunekit.tasks.base import get as get_task

__all__ = ["TASKS", "Evaluator"]

#: The built-in tasks (see :mod:`finetunekit.tasks`; user tasks are accepted too).
TASKS = BUILT_IN


def _task(task: Any) -> Task:
    """The Task for a name or Task object; an unknown name is an ``EvaluationError``."""
    try:
        return get_task(task)
    except LabelError as exc:
        import difflib

        names = available_tasks()
        close = difflib.get_close_matches(str(task).strip().lower(), names, n=1)
        fix = f"Did you mean task='{close[0]}'?" if close else f"Pass one of {names}."
        raise EvaluationError(
            format_error(
                f"Unknown task '{task}'",
                expected=f"one of {names} (or a finetunekit.Task)",
                received={"task": task},
                fix=fix,
            )
        ) from exc


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
        self._top_k = check_int("top_k", top_k, 1, "Pass e.g. top_k=5.")
        self._batch_size = check_int("batch_size", batch_size, 1, "Pass e.g. batch_size=64.")
        self._threshold = check_threshold("threshold", threshold)

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
        task: str | Task | None = None,
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
            task: Overrides the task inferred from ``data`` (a name or a
                :class:`~finetunekit.Task`).
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
        adapter_task = _task(getattr(adapter, "task_object", None) or adapter.task)
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
        report = adapter_task.evaluate_model(model, adapter, evaluator=self, thresholds=thresholds)
        if report is not None:  # the task ran the model itself (embeddings)
            return report
        self._check_model_output(model, adapter_task, names, y_true)
        y_pred = self.predict_outputs(model, adapter)
        return self.compute(
            y_true, y_pred, task=adapter_task, class_names=names, thresholds=thresholds
        )

    def predict_outputs(self, model: Any, adapter: Any) -> np.ndarray:
        """Runs ``model`` on ``adapter.inputs_dataset`` and returns its single output.

        A failure of the model on the data, or several outputs, raise
        :class:`EvaluationError` naming the shapes. Tasks that run the model
        themselves (``Task.evaluate_model``) call it too.

        Examples:
            >>> import numpy as np, keras
            >>> from finetunekit.data import DatasetAdapter
            >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
            >>> data = DatasetAdapter.from_arrays(np.zeros((3, 4)), [0, 1, 0])
            >>> Evaluator().predict_outputs(model, data).shape
            (3, 2)
        """
        try:
            y_pred = model.predict(adapter.inputs_dataset(self._batch_size), verbose=0)
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
        return np.asarray(y_pred)

    @staticmethod
    def _as_adapter(
        data: Any, *, task: str | Task | None, class_names: Sequence[str] | None
    ) -> Any:
        """Turns ``data`` into an object following the ``DatasetAdapter`` protocol."""
        protocol = ("task", "class_names", "targets", "inputs_dataset")
        if task is None and class_names is None and all(hasattr(data, a) for a in protocol):
            return data  # an adapter (or a duck-typed one): use as is
        from finetunekit.data import as_adapter

        return as_adapter(data, task=task, class_names=list(class_names) if class_names else None)

    @staticmethod
    def _check_model_output(model: Any, task: Task, names: list[str], y_true: np.ndarray) -> None:
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
        allowed = task.expected_widths(names, y_true)
        if allowed is not None and width not in allowed[0]:
            want = max(allowed[0]) if len(allowed[0]) > 1 else next(iter(allowed[0]))
            raise task.width_error(width, want, names or None, {"model.output_shape": shape})

    # ----------------------------------------------------------- compute

    def compute(
        self,
        y_true: Any,
        y_pred: Any,
        *,
        task: str | Task,
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
        task_obj = _task(task)
        names = check_class_names(class_names)
        y_true_raw = y_true
        if names is not None and task_obj.single_label:
            y_true_raw = map_string_labels(y_true, names)
        y_true = to_numeric("y_true", y_true_raw)
        y_pred = to_numeric("y_pred", y_pred)
        for name, array in (("y_true", y_true), ("y_pred", y_pred)):
            if array.ndim == 0 or array.ndim > 2:
                raise EvaluationError(
                    format_error(
                        f"{name} must be a 1-D or 2-D array",
                        expected=f"shape (N,) or (N, K) for task '{task_obj.name}'",
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
        check_finite(y_true, y_pred)
        return task_obj.evaluate(
            y_true, y_pred, class_names=names, evaluator=self, thresholds=thresholds
        )
