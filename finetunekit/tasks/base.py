"""``Task``: the one object that knows a kind of target.

Everything that depends on what the targets ARE -- checking and encoding
them, the number of outputs, the output layer and its activation, the loss,
the training metrics, turning model outputs into decisions, the task's part
of the evaluation report, and its config -- lives in a ``Task`` subclass and
nowhere else. The data, the head, the trainer, the evaluator, the result,
export and plots ask the task; none of them branches on a task name.

Subclasses register themselves by their ``name`` when they are defined, so
``task="name"`` works wherever a task is accepted, and ``ftk.load`` finds the
task of a saved result again (in safe mode: a task is rebuilt from its class
in the registry and its JSON config, never from code in the file).

The base class is a complete task for value targets (one float or a vector
of floats per example, a linear output and the mean squared error): a new
kind of target overrides only what differs. See ``docs/tasks.md``.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from finetunekit.errors import ArgumentTypeError, ConfigError, LabelError, format_error

if TYPE_CHECKING:  # pragma: no cover - typing only
    from finetunekit.evaluation.report import EvaluationReport
    from finetunekit.tasks.labels import LabelEncoding

__all__ = ["Task", "available", "deserialize", "get", "serialize"]

#: name -> Task subclass; filled by ``Task.__init_subclass__``.
_REGISTRY: dict[str, type[Task]] = {}
#: the built-in names, in the order the docs list them.
BUILT_IN: tuple[str, ...] = (
    "multiclass",
    "binary",
    "multilabel",
    "regression",
    "embedding",
    "detection",
    "generative",
)


class Task:
    """Base class of every kind of target: subclass it to add one.

    A subclass sets ``name`` (its registry key: ``task="name"`` finds it)
    and overrides what differs from the defaults, which describe value
    targets: float targets of shape ``(N,)`` or ``(N, D)``, a linear output
    of ``D`` units, mean squared error, ``mae`` as training metric, and an
    evaluation report with ``mse``, ``mae``, ``rmse`` and ``r2``.

    Class attributes:
        name: the registry key, e.g. ``"poisson_counts"``.
        activation: the output layer's activation (a Keras name).
        has_classes: targets are classes (``class_names``, ``class_counts()``).
        single_label: exactly one class per example (stratified splits,
            class weights, confusion matrix, calibration, image folders).
        headline_metric: the report's main metric.

    The hooks, each with a working default:

    * step 1 (data): :meth:`check_targets` (raise ``LabelError`` for targets
      this task cannot use), :meth:`encode`, :meth:`num_classes`,
      :meth:`target_dim`, :meth:`batch_targets`;
    * step 3 (head): :meth:`output_units`, :meth:`output_layer`, :meth:`loss`,
      :meth:`metrics`;
    * results: :meth:`decide`, :meth:`predict_labels`, :meth:`evaluate`;
    * config: :meth:`get_config` / :meth:`from_config` (constructor arguments).

    Examples:
        >>> import keras, numpy as np, finetunekit as ftk
        >>> class Counts(ftk.Task):
        ...     name = "doc_counts"
        ...     activation = "exponential"
        ...     def check_targets(self, y, name="y"):
        ...         if (y < 0).any():
        ...             raise ftk.LabelError(f"{name} holds negative counts")
        ...     def loss(self, *, label_smoothing=0.0, target_std=None):
        ...         return keras.losses.Poisson()
        >>> data = ftk.DatasetAdapter.from_arrays(np.zeros((4, 2)), [0, 3, 1, 2], task=Counts())
        >>> data.task, data.target_dim
        ('doc_counts', 1)
    """

    name: ClassVar[str] = ""
    activation: ClassVar[str] = "linear"
    #: the phase-1 rate of ``Trainer(learning_rate="auto")`` (phase 2: a hundredth)
    default_learning_rate: ClassVar[float] = 1e-2
    #: the phase-2 rate when ``fine_tune_learning_rate`` is unset (``None``: a
    #: hundredth of the phase-1 rate)
    default_fine_tune_learning_rate: ClassVar[float | None] = None
    has_classes: ClassVar[bool] = False
    single_label: ClassVar[bool] = False
    headline_metric: ClassVar[str] = "mse"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get("name")
        if not name:
            return  # an abstract intermediate class: not registered
        if not isinstance(name, str) or name != name.strip().lower() or not name:
            raise ConfigError(
                format_error(
                    "A Task's name must be a non-empty lower-case string",
                    expected='e.g. name = "poisson_counts"',
                    received={"name": name},
                    fix="Set the class attribute name to a lower-case string",
                )
            )
        known = _REGISTRY.get(name)
        if known is not None and _qualified(known) != _qualified(cls):
            if name in BUILT_IN or known.__module__.startswith("finetunekit."):
                raise ConfigError(
                    format_error(
                        f"The task name {name!r} belongs to finetunekit's {known.__name__}",
                        expected="a new name for a new task",
                        received={"name": name},
                        fix="Pick another name, or subclass the built-in task and keep its "
                        "name unset (subclasses without a name of their own are not registered)",
                    )
                )
        _REGISTRY[name] = cls  # a redefinition (notebook cell run again) replaces itself

    # ------------------------------------------------------------------ step 1: targets
    def check_targets(self, y: np.ndarray, name: str = "y") -> None:
        """Raises :class:`~finetunekit.LabelError` for targets this task cannot use.

        Called by :meth:`encode` on the float targets after the generic
        checks (numeric, finite, one row per example). The default accepts
        every finite value.

        Args:
            y: the targets as float32, shape ``(N,)`` or ``(N, D)``.
            name: the argument name to show in messages.
        """

    def encode(
        self,
        y: Any,
        *,
        class_names: list[str] | None = None,
        name: str = "y",
        check_single_class: bool | None = None,
    ) -> tuple[np.ndarray, LabelEncoding]:
        """Turns raw targets into the stored targets and their encoding.

        The default reads value targets (float32, ``(N,)`` or ``(N, D)``),
        runs :meth:`check_targets` and keeps ``class_names`` as target names.

        Returns:
            ``(targets, encoding)``: numpy targets (one row per example) and a
            :class:`~finetunekit.tasks.labels.LabelEncoding` saying how raw
            labels map to them (``tf.data`` sources use it batch by batch).
        """
        from finetunekit.tasks.labels import encode_values

        targets, encoding = encode_values(y, class_names, name, task=self)
        self.check_targets(targets, name)
        return targets, encoding

    def num_classes(self, encoding: LabelEncoding) -> int | None:
        """The number of classes (``None`` for tasks without classes)."""
        return len(encoding.class_names) if self.has_classes else None

    def target_dim(self, encoding: LabelEncoding) -> int:
        """The width of the float32 batch targets (and by default of the output)."""
        return int(np.prod(encoding.target_shape)) if encoding.target_shape else 1

    def batch_targets(self, stored: Any, encoding: LabelEncoding) -> Any:
        """Turns a batch of stored targets (a ``tf.Tensor``) into what the loss receives."""
        import tensorflow as tf

        return tf.reshape(tf.cast(stored, tf.float32), (-1, self.target_dim(encoding)))

    def class_counts(self, targets: np.ndarray, class_names: list[str]) -> dict[str, int]:
        """Examples per class; raises ``DataError`` for tasks without classes."""
        from finetunekit.errors import DataError

        raise DataError(
            format_error(
                f"class_counts() is not defined for {self.name} data",
                expected='a classification task ("multiclass", "binary", "multilabel")',
                received={"task": self.name},
                fix="Inspect targets() instead",
            )
        )

    # ------------------------------------------------------------------ step 3: head
    def size(self, encoding: LabelEncoding) -> int:
        """What ``HeadReplacer(num_classes=...)`` counts: classes, or target columns."""
        classes = self.num_classes(encoding)
        return classes if classes is not None else self.target_dim(encoding)

    def output_units(self, size: int) -> int:
        """The width of the output layer for ``size`` classes (or target columns)."""
        return size

    def output_layer(self, x: Any, units: int, *, activation: str | None = None) -> Any:
        """Adds the output layer (``head_output``, float32) on the symbolic ``x``.

        Args:
            x: the head's last hidden tensor.
            units: the output width (:meth:`output_units`).
            activation: an explicit activation (``HeadReplacer(activation=...)``)
                instead of the task's own.
        """
        import keras

        return keras.layers.Dense(
            units, activation=activation or self.activation, dtype="float32", name="head_output"
        )(x)

    def loss(self, *, label_smoothing: float = 0.0, target_std: list[float] | None = None) -> Any:
        """The training loss (a Keras loss object).

        Args:
            label_smoothing: from ``Trainer(label_smoothing=...)``; tasks
                without classes never receive a non-zero value (the Trainer
                refuses it before training).
            target_std: standard deviations of standardised targets
                (``HeadReplacer(scale_targets=True)``), or ``None``.
        """
        import keras

        if target_std is not None:
            from finetunekit.heads.scaling import StandardizedMeanSquaredError

            return StandardizedMeanSquaredError(target_std)
        return keras.losses.MeanSquaredError()

    def metrics(self, num_classes: int | None) -> list[Any]:
        """Fresh Keras metric objects tracked while training (names become history keys)."""
        import keras

        return [keras.metrics.MeanAbsoluteError(name="mae")]

    # ------------------------------------------------------------------ the recipe
    def check_recipe(self, train: Any, validation: Any, *, head: Any, trainer: Any) -> None:
        """Raises before anything is built when the recipe does not fit this task.

        Called by :meth:`finetunekit.FineTuner.prepare` with the training and
        validation ``DatasetAdapter`` (or ``None``), the ``HeadReplacer`` and
        the ``Trainer``. The default accepts everything (the generic checks
        run anyway).
        """

    def default_trainer(self) -> Any:
        """The ``Trainer`` of a recipe that never called ``with_trainer``.

        Called by :meth:`finetunekit.FineTuner.prepare`; ``None`` (the
        default) keeps ``Trainer()``. A task whose training has another shape
        returns its own (generative text: the causal LM trains in phase 2
        only, so ``Trainer(epochs=0, fine_tune_epochs=3)``). A Trainer the
        user passes is never replaced.
        """
        return None

    def build_model(self, backbone: Any, train: Any, *, head: Any, trainer: Any, units: int) -> Any:
        """The whole model, for a task whose model is not "backbone features -> head".

        Called first by :meth:`finetunekit.FineTuner.build_model` with the
        ``Backbone``, the training ``DatasetAdapter``, the ``HeadReplacer``,
        the ``Trainer`` and the output width. A task that builds its own
        model (detection: a feature pyramid and box heads on several backbone
        levels; generative text: the preset's causal LM) returns a
        :class:`~finetunekit.training.engine.BuiltModel`; ``None`` (the
        default) lets the pipeline build raw input -> backbone -> head, which
        :meth:`training_model` may then wrap.
        """
        return None

    def register_objects(self) -> None:
        """Registers the Keras classes a saved model of this task needs (``ftk.load``).

        Called before the model is read; the default does nothing (finetunekit's
        own layers are registered by ``finetunekit.import_all``).
        """

    def training_batches(self, dataset: Any, *, trainer: Any, training: bool) -> Any:
        """The batched ``tf.data`` the engine trains (or validates) on.

        Called by the engine on every ``(x, y)`` dataset it makes from an
        adapter: ``training`` is ``True`` for the training split. A task whose
        targets must change with the inputs (detection: box-aware
        augmentation) maps the batches here; the default returns ``dataset``.
        """
        return dataset

    def training_model(self, built: Any, train: Any) -> Any:
        """The :class:`~finetunekit.training.engine.BuiltModel` the engine trains.

        Called by :meth:`finetunekit.FineTuner.build_model` with the model it
        built (raw input -> backbone -> head) and the training adapter. A
        task whose training sees the data differently returns a copy with
        another ``model`` (that shares the built layers), its ``loss``, the
        built model as ``inference_model`` (what the result keeps) and,
        where the feature cache cannot cut the new model, ``cache_problem``.
        The default returns ``built`` unchanged.
        """
        return built

    def export_result(
        self,
        result: Any,
        path: str,
        format: str,
        *,
        quantize: str | None,
        sample: Any,
        tolerance: float | None,
    ) -> Any:
        """Writes and checks ``result``'s export, for a task with its own artifacts.

        Called first by :func:`finetunekit.export.export` (the arguments are
        already checked). A task whose model does not export as "raw input ->
        output array" (detection: decoded boxes or the raw network plus a
        decode step; generative text: a Hugging Face folder) writes it,
        compares it with the Keras model and returns an ``ExportReport``;
        ``None`` (the default) lets ``export`` write the model as is.
        """
        return None

    # ------------------------------------------------------------------ results
    def evaluate_model(
        self, model: Any, data: Any, *, evaluator: Any, thresholds: Any = None
    ) -> EvaluationReport | None:
        """The report of ``model`` on ``data``, when the task runs the model itself.

        Called by :meth:`finetunekit.Evaluator.evaluate` once the data and
        task are resolved; ``None`` (the default) lets the evaluator predict
        on ``data.inputs_dataset`` and call :meth:`evaluate`.
        """
        return None

    def decide(self, outputs: np.ndarray, threshold: float = 0.5) -> np.ndarray | None:
        """Discrete decisions from model outputs, or ``None`` for value tasks.

        Single-label tasks return one class index per example; multilabel a
        0/1 matrix. Export uses it to compare two runtimes' decisions.
        """
        return None

    def predict_labels(
        self, outputs: np.ndarray, class_names: list[str], threshold: float = 0.5
    ) -> list[Any]:
        """What ``result.predict_classes`` returns: class names per example."""
        from finetunekit.errors import EvaluationError

        raise EvaluationError(
            format_error(
                f"predict_classes needs a classification result, not task {self.name!r}",
                expected="task multiclass, binary or multilabel",
                received={"task": self.name},
                fix="Use predict() for values",
            )
        )

    def expected_widths(
        self, class_names: list[str], y_true: np.ndarray
    ) -> tuple[set[int], str] | None:
        """Output widths a model may have for these targets, and the unit's name.

        The evaluator checks a model's declared output width against it
        before running the model. ``None``: any width.
        """
        want = 1 if y_true.ndim == 1 else int(y_true.shape[1])
        return {want}, "targets"

    def describe_output(self, want: int) -> str:
        """The model output this task expects, for messages."""
        return f"predictions of shape (N, {want})" + (" or (N,)" if want == 1 else "")

    def width_error(
        self, got: int, want: int, names: list[str] | None, received: dict[str, Any]
    ) -> Exception:
        """The error for a model whose output width does not fit the targets."""
        from finetunekit.errors import EvaluationError
        from finetunekit.evaluation.checks import plural

        return EvaluationError(
            format_error(
                f"The model predicts {plural(got, 'value')} per example but the data has "
                f"{plural(want, f'{self.name} target')}",
                expected=self.describe_output(want),
                received=received,
                fix=f"Use a model whose output layer has {plural(want, 'unit')}.",
            )
        )

    def evaluate(
        self,
        y_true: np.ndarray,
        y_pred: np.ndarray,
        *,
        class_names: list[str] | None,
        evaluator: Any,
        thresholds: Any = None,
    ) -> EvaluationReport:
        """The task's evaluation report from targets and model outputs.

        Called by :meth:`finetunekit.Evaluator.compute` after the generic
        checks (numeric 1-D or 2-D arrays, same length, finite values). The
        default reports ``mse``, ``mae``, ``rmse`` and ``r2`` (per target as
        well when there are several).

        Args:
            y_true: stored targets, as ``DatasetAdapter.targets()``.
            y_pred: the model's outputs.
            class_names: names in index order (target names), or ``None``.
            evaluator: the :class:`~finetunekit.Evaluator` (``top_k``,
                ``threshold``, ``batch_size``).
            thresholds: per-call decision thresholds, where the task has them.
        """
        from finetunekit.errors import EvaluationError
        from finetunekit.evaluation import metrics as _m
        from finetunekit.evaluation.report import EvaluationReport

        _no_thresholds(self.name, thresholds)
        names = class_names
        y_true = y_true.astype(np.float64)
        y_pred = y_pred.astype(np.float64)
        if y_true.ndim == 1:
            y_true = y_true[:, None]
        if y_pred.ndim == 1:
            y_pred = y_pred[:, None]
        d = y_true.shape[1]
        if y_pred.shape[1] != d:
            raise self.width_error(y_pred.shape[1], d, None, {"y_pred": y_pred})
        if names and len(names) != d:
            raise EvaluationError(
                format_error(
                    f"There are {d} {self.name} targets but {len(names)} target names",
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
            task=self.name,
            metrics={key: metrics[key] for key in ("mse", "mae", "rmse", "r2")},
            per_class=per_class,
            confusion_matrix=None,
            class_names=target_names,
            num_examples=len(y_true),
            headline=self.headline_metric,
        )

    # ------------------------------------------------------------------ config
    def get_config(self) -> dict[str, Any]:
        """The constructor arguments, JSON-serialisable (default: none)."""
        return {}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Task:
        """Rebuilds the task from :meth:`get_config`."""
        return cls(**dict(config))

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Task)
            and type(other) is type(self)
            and other.get_config() == self.get_config()
        )

    def __hash__(self) -> int:
        return hash((type(self).__qualname__, repr(sorted(self.get_config().items()))))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _no_thresholds(name: str, thresholds: Any) -> None:
    if thresholds is not None:
        from finetunekit.errors import EvaluationError

        raise EvaluationError(
            format_error(
                f"thresholds only apply to binary and multilabel data, not '{name}'",
                expected="thresholds=None",
                received={"thresholds": thresholds, "task": name},
                fix="Drop the thresholds argument.",
            )
        )


def _ensure_builtins() -> None:
    import finetunekit.tasks.classification  # noqa: F401 - registers the built-ins
    import finetunekit.tasks.detection  # noqa: F401
    import finetunekit.tasks.embedding  # noqa: F401
    import finetunekit.tasks.generative  # noqa: F401
    import finetunekit.tasks.regression  # noqa: F401


def available() -> list[str]:
    """The registered task names: the built-ins first, then user tasks.

    Examples:
        >>> from finetunekit import tasks
        >>> tasks.available()[:4]
        ['multiclass', 'binary', 'multilabel', 'regression']
    """
    _ensure_builtins()
    return [*BUILT_IN, *sorted(n for n in _REGISTRY if n not in BUILT_IN)]


def get(task: Any, *, arg: str = "task") -> Task:
    """The :class:`Task` for a name, a Task object or a Task subclass.

    Names are case-insensitive for the built-ins, which also ignore ``-`` and
    ``_`` (``"Multi-Class"`` is ``"multiclass"``).

    Raises:
        ArgumentTypeError: ``task`` is neither a string nor a Task.
        LabelError: no task of that name is registered (the message suggests
            the closest name).

    Examples:
        >>> from finetunekit import tasks
        >>> tasks.get("Multiclass").name
        'multiclass'
    """
    _ensure_builtins()
    if isinstance(task, Task):
        return task
    if isinstance(task, type) and issubclass(task, Task) and task.__dict__.get("name"):
        return task()
    if not isinstance(task, str):
        raise ArgumentTypeError(
            format_error(
                "task must be a task name or a finetunekit.Task",
                expected=f"one of {available()}, a Task object, or None (infer from the labels)",
                received={arg: task},
                fix='Pass e.g. task="multiclass", a Task subclass instance, or leave task=None',
            )
        )
    key = task.strip().lower()
    if key not in _REGISTRY:
        squeezed = key.replace("-", "").replace("_", "")
        if squeezed in BUILT_IN:
            key = squeezed
    cls = _REGISTRY.get(key)
    if cls is None:
        names = available()
        close = difflib.get_close_matches(key.replace("-", "").replace("_", ""), names, n=1)
        hint = f'Did you mean task="{close[0]}"?' if close else "Leave task=None to infer it"
        raise LabelError(
            format_error(
                f"Unknown task {task!r}",
                expected=f"one of {names} or None",
                received={arg: task},
                fix=hint + " (a Task subclass registers its name when its module is imported)",
            )
        )
    return cls()


def serialize(task: Task) -> dict[str, Any]:
    """The JSON form of a task: ``{"name": ..., "config": {...}}``.

    Examples:
        >>> from finetunekit import tasks
        >>> tasks.serialize(tasks.get("binary"))
        {'name': 'binary', 'config': {}}
    """
    return {"name": task.name, "config": dict(task.get_config())}


def deserialize(value: Any, *, arg: str = "task") -> Task:
    """Rebuilds a task from :func:`serialize` output or a bare name.

    Raises:
        LabelError: the name is not registered in this process.
        ConfigError: the config does not fit the task's constructor.

    Examples:
        >>> from finetunekit import tasks
        >>> tasks.deserialize({"name": "regression", "config": {}}).name
        'regression'
    """
    if isinstance(value, str):
        return get(value, arg=arg)
    if not isinstance(value, Mapping) or "name" not in value:
        raise ConfigError(
            format_error(
                "A serialised task is a dict with a name and a config",
                expected='{"name": "multiclass", "config": {}}',
                received={arg: value},
                fix="Pass the output of finetunekit.tasks.serialize(task)",
            )
        )
    cls = type(get(value["name"], arg=arg))
    try:
        return cls.from_config(value.get("config") or {})
    except TypeError as exc:
        raise ConfigError(
            format_error(
                f"The config of task {value['name']!r} does not fit {cls.__name__} ({exc})",
                expected=f"the keys {cls.__name__}.get_config() returns",
                received={arg: value},
                fix="Save and load with the same version of the task's code",
            )
        ) from exc
