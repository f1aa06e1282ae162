"""``FineTuneResult`` (what ``fit`` returns) and ``load``: atomic save, safe load."""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np

from finetunekit.errors import FineTuneError, LabelError, LoadError, format_error

__all__ = ["FineTuneResult", "load", "METADATA_NAME"]

METADATA_NAME = "finetunekit.json"
_FORMAT_VERSION = 1


@dataclass
class FineTuneResult:
    """The trained model and what the run measured.

    Attributes:
        model: a plain ``keras.Model`` that takes the user's RAW inputs.
        task: the task's name: ``"multiclass"``, ``"binary"``, ``"multilabel"``,
            ``"regression"`` or a user task's (see :attr:`task_object`).
        class_names: class names in output order (``[]`` for regression).
        history: Keras-style ``{metric: [value per epoch]}`` over all phases,
            with ``"phase"`` and ``"epoch"`` columns.
        timings: wall seconds: ``"build"``, ``"phase1"``, ``"phase2"``, ``"total"``.
        params: ``"total"`` parameters and ``"trainable_phase1"`` / ``"trainable_phase2"``.
        info: how the inputs were adapted (backbone, input size, input range).
        recipe: the ``FineTuner.get_config()`` that produced it, when serialisable.
        temperature: the softmax / sigmoid temperature fitted by :meth:`calibrate`
            (1.0: uncalibrated); :meth:`predict` and :meth:`evaluate` apply it.
        task_config: the task's ``get_config()`` (``{}`` for the built-ins);
            saved, so ``load`` rebuilds the same task.
    """

    model: keras.Model
    task: str
    class_names: list[str]
    history: dict[str, list[Any]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    params: dict[str, int] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    recipe: dict[str, Any] | None = None
    evaluator_config: dict[str, Any] | None = None
    temperature: float = 1.0
    task_config: dict[str, Any] = field(default_factory=dict)

    @property
    def task_object(self) -> Any:
        """The :class:`~finetunekit.Task` of the result (rebuilt from ``task`` and ``task_config``).

        Raises:
            LabelError: a user task whose module is not imported in this process.
        """
        from finetunekit.tasks.base import deserialize

        return deserialize({"name": self.task, "config": self.task_config})

    # ------------------------------------------------------------------ use
    def predict(self, x: Any, batch_size: int = 64) -> np.ndarray:
        """Returns probabilities (classification) or values (regression) as numpy.

        Args:
            x: raw inputs, as given to ``DatasetAdapter`` (numpy array or ``tf.data``
                of inputs).
            batch_size: examples per forward pass.

        Examples:
            >>> probs = result.predict(x_new)  # doctest: +SKIP
        """
        from finetunekit.data.text import as_predict_inputs

        x = as_predict_inputs(x, batch_size, self.model)  # texts -> tf.data of strings
        probs = np.asarray(self.model.predict(x, batch_size=batch_size, verbose=0))
        if self.temperature != 1.0:
            from finetunekit.evaluation.calibration import apply_temperature

            probs = apply_temperature(probs, self.temperature)
        return probs

    def calibrate(self, validation_data: Any, batch_size: int = 64) -> dict[str, float]:
        """Fits temperature scaling on held-out data; ``predict`` then applies it.

        Finds the single temperature ``T`` minimising the negative
        log-likelihood of ``validation_data`` (logits recovered as ``log p``
        for softmax, ``logit(p)`` for sigmoid), stores it in
        ``self.temperature`` (saved by :meth:`save`) and returns the
        calibration before and after. Arg-max predictions never change.
        Calling it again refits from the uncalibrated model.

        Args:
            validation_data: data NOT used for training: an adapter, ``(x, y)``
                or a ``tf.data`` of ``(x, y)``.
            batch_size: examples per forward pass.

        Returns:
            ``{"temperature", "ece_before", "ece_after", "nll_before", "nll_after"}``.

        Raises:
            EvaluationError: for multilabel and regression results.

        Examples:
            >>> result.calibrate(val)["ece_after"]  # doctest: +SKIP
            0.021
        """
        from finetunekit.evaluation.calibration import calibrate_result

        return calibrate_result(self, validation_data, batch_size)

    def predict_classes(self, x: Any, batch_size: int = 64) -> list[Any]:
        """Returns predicted class names (tasks with labels: ``Task.predict_labels``).

        Multiclass: the arg-max class; binary: ``class_names[1]`` when the
        probability is >= 0.5; multilabel: the list of classes >= 0.5.

        Raises:
            EvaluationError: for tasks without labels (regression), before predicting.
        """
        from finetunekit.tasks.base import Task

        task = self.task_object
        if type(task).predict_labels is Task.predict_labels:  # no labels: raise before predicting
            task.predict_labels(np.zeros((0, 1)), list(self.class_names))
        return list(task.predict_labels(self.predict(x, batch_size), list(self.class_names)))

    def evaluate(self, data: Any, evaluator: Any = None, *, thresholds: Any = None) -> Any:
        """Evaluates the model on ``data`` (an adapter or ``(x, y)``).

        Labels are encoded with the training classes, so string labels map to
        the same outputs; a mismatch in classes raises a ``FineTuneError``.
        ``thresholds`` (binary / multilabel) are the decision thresholds, e.g.
        ``{"label": 0.3}`` per label, as in ``Evaluator.evaluate``.

        Returns:
            An ``EvaluationReport``.
        """
        from finetunekit.evaluation import Evaluator

        if evaluator is None:
            evaluator = (
                Evaluator.from_config(self.evaluator_config)
                if self.evaluator_config
                else Evaluator()
            )
        class_names = self.class_names or None
        model = self.model
        if self.temperature != 1.0:
            from finetunekit.evaluation.calibration import TemperatureScaled

            model = TemperatureScaled(self.model, self.temperature)
        try:
            return evaluator.evaluate(
                model,
                data,
                task=self.task_object,
                class_names=class_names,
                thresholds=thresholds,
            )
        except LabelError as exc:  # say which classes the model knows
            shown = list(self.class_names[:10]) + (["..."] if len(self.class_names) > 10 else [])
            raise LabelError(
                f"The evaluation data does not fit the {len(self.class_names)} classes the "
                f"model was trained on {shown}: {exc}"
            ) from exc

    def merge_lora(self) -> FineTuneResult:
        """Returns this result with the LoRA adapters folded into the kernels.

        After ``Trainer(lora_rank=...)``, ``model`` holds Keras LoRA layers
        (``W + alpha / r * A @ B``); the merged model computes the same outputs
        with plain kernels and no ``lora_*`` variables. :meth:`save` and
        :meth:`export` merge on their own, so files never hold adapters. The
        merged model shares its layers without adapters with ``model``.
        Without LoRA, returns ``self``.

        Examples:
            >>> plain = result.merge_lora()  # doctest: +SKIP
        """
        from finetunekit.training.lora import merged_result

        merged: FineTuneResult = merged_result(self)
        return merged

    # ------------------------------------------------------------------ persistence
    def metadata(self) -> dict[str, Any]:
        """Returns the JSON metadata saved beside the model."""
        return {
            "format_version": _FORMAT_VERSION,
            "task": self.task,
            "task_config": _jsonable(self.task_config),
            "class_names": list(self.class_names),
            "history": _jsonable(self.history),
            "timings": _jsonable(self.timings),
            "params": _jsonable(self.params),
            "info": _jsonable(self.info),
            "recipe": self.recipe,
            "evaluator_config": self.evaluator_config,
            "temperature": float(self.temperature),
        }

    def save(self, path: str | os.PathLike[str]) -> str:
        """Saves model and metadata to one ``.keras`` file, atomically.

        The file is written to a temporary file in the same folder and then
        moved over ``path``, so a crash never leaves a half-written file.
        Safe to call on every worker of a multi-worker run: only the chief
        writes ``path`` (see docs/distributed.md).
        LoRA adapters are merged into the kernels first (:meth:`merge_lora`).

        Returns:
            The path written.
        """
        path = os.fspath(path)
        if not path.endswith(".keras"):
            raise LoadError(
                format_error(
                    "A finetunekit result is saved as a .keras file",
                    expected="a path ending in .keras",
                    received={"path": path},
                    fix=f"Use {os.path.splitext(path)[0]}.keras",
                )
            )
        from finetunekit.training.distribute import worker_scratch

        # Several workers (MultiWorkerMirroredStrategy): all may call save; only the
        # chief writes path, the others a temporary folder deleted at once.
        with worker_scratch(path) as target:
            self._write(target)
        return path

    def _write(self, path: str) -> None:
        """Writes the model and metadata to ``path`` atomically (``finetunekit.files``)."""
        from finetunekit.files import atomic_path

        with atomic_path(path, suffix=".keras") as tmp:
            self.merge_lora().model.save(tmp)  # LoRA adapters folded in: a plain model
            with zipfile.ZipFile(tmp, "a") as archive:
                archive.writestr(METADATA_NAME, json.dumps(self.metadata()))

    def export(
        self,
        path: str | os.PathLike[str],
        format: str = "saved_model",
        *,
        quantize: str | None = None,
        sample: Any = None,
        representative_data: Any = None,
        tolerance: float | None = None,
    ) -> Any:
        """Exports the model and verifies the artifact in its own runtime.

        See :func:`finetunekit.export.export` for the arguments.

        Returns:
            An ``ExportReport`` (max absolute difference, top-1 agreement).

        Examples:
            >>> result.export("digits.tflite", format="litert", quantize="dynamic")  # doctest: +SKIP
        """
        from finetunekit.export import export

        return export(
            self,
            path,
            format,
            quantize=quantize,
            sample=sample,
            representative_data=representative_data,
            tolerance=tolerance,
        )

    def __repr__(self) -> str:
        return (
            f"FineTuneResult(task={self.task!r}, classes={len(self.class_names)}, "
            f"epochs={len(self.history.get('epoch', []))}, params={self.params.get('total')})"
        )


def load(path: str | os.PathLike[str], *, safe_mode: bool = True) -> FineTuneResult:
    """Loads a result saved with :meth:`FineTuneResult.save`.

    Keras' safe mode is on by default: a file carrying code (a ``Lambda``
    layer) is refused unless ``safe_mode=False`` is passed for a file you trust.

    Args:
        path: the ``.keras`` file.
        safe_mode: refuse to deserialise code from the file.

    Examples:
        >>> import finetunekit as ftk
        >>> again = ftk.load("model.keras")  # doctest: +SKIP
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise LoadError(
            format_error(
                "The file does not exist",
                expected="a .keras file written by FineTuneResult.save",
                received={"path": path},
                fix="Check the path",
            )
        )
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            meta = json.loads(archive.read(METADATA_NAME)) if METADATA_NAME in names else None
    except zipfile.BadZipFile as exc:
        raise LoadError(
            format_error(
                "The file is not a .keras archive (corrupt or another format)",
                expected="a .keras file written by FineTuneResult.save",
                received={"path": path},
                fix="Save the result again with result.save('model.keras')",
            )
        ) from exc
    if meta is None:
        raise LoadError(
            format_error(
                "The file is a Keras model but not a finetunekit result (no finetunekit.json)",
                expected="a file written by FineTuneResult.save",
                received={"path": path},
                fix="Load it with keras.saving.load_model, or use it as Backbone.from_file(path)",
            )
        )
    import finetunekit.backbones.layers  # noqa: F401 - registers the custom layers

    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=safe_mode)
    except ValueError as exc:
        if "safe_mode" in str(exc) or "Lambda" in str(exc):
            raise LoadError(
                format_error(
                    "The file contains code (a Lambda layer); loading it would run that code",
                    expected="a model without Lambda layers, or an explicit opt-in",
                    received={"path": path, "safe_mode": safe_mode},
                    fix="Only if you trust the file, pass safe_mode=False",
                )
            ) from exc
        raise LoadError(
            format_error(
                f"Keras could not load the model ({str(exc)[:200]})",
                expected="an intact .keras file",
                received={"path": path},
                fix="Save the result again",
            )
        ) from exc
    from finetunekit.tasks.base import deserialize

    try:  # a user task must be importable (registered) here, as Keras custom layers must
        task = deserialize({"name": meta["task"], "config": meta.get("task_config") or {}})
    except FineTuneError as exc:
        raise LoadError(
            format_error(
                f"The model was trained for task {meta['task']!r}, which this process does "
                f"not know ({str(exc).split('.')[0]})",
                expected="the task's class registered: import the module that defines it",
                received={"path": path, "task": meta["task"]},
                fix="Import the module defining the Task subclass (its name attribute is "
                f"{meta['task']!r}) before calling ftk.load",
            )
        ) from exc
    return FineTuneResult(
        model=model,
        task=task.name,
        task_config=task.get_config(),
        class_names=list(meta.get("class_names", [])),
        history=meta.get("history", {}),
        timings=meta.get("timings", {}),
        params=meta.get("params", {}),
        info=meta.get("info", {}),
        recipe=meta.get("recipe"),
        evaluator_config=meta.get("evaluator_config"),
        temperature=float(meta.get("temperature", 1.0)),
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, float)):
        v = float(value)
        return None if v != v else v
    if isinstance(value, (np.integer,)):
        return int(value)
    return value
