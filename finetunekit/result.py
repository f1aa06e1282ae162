"""``FineTuneResult`` (what ``fit`` returns) and ``load``: atomic save, safe load."""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np

from finetunekit.errors import (
    DataError,
    FineTuneError,
    InputShapeError,
    LabelError,
    LoadError,
    format_error,
)

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
    def predict(self, x: Any, batch_size: int = 64) -> Any:
        """Returns probabilities (classification) or values (regression) as numpy.

        A detection result returns one dict per image (boxes in that image's
        pixels, scores, class indices and names; see
        ``Detection.predict_model``); a generative one the generated strings.

        Args:
            x: raw inputs, as given to ``DatasetAdapter``: a numpy array, a
                ``tf.data`` of inputs, or texts for a text model. A model
                trained from a folder (``from_directory``) also takes an image
                file path, a list of paths, a folder (predictions in the order
                of ``finetunekit.data.decode.image_files(folder)``: the
                training order for a folder of class sub-folders), and arrays
                of images at any size (``(N, H, W)`` or ``(N, H, W, C)``): it
                decodes and resizes them as it did its training files.
            batch_size: examples per forward pass.

        Raises:
            InputShapeError: inputs the model cannot take (the message names
                the expected and received shapes).
            DataError: a path that does not exist, an unreadable image file,
                or image paths for a model not trained from a folder.

        Examples:
            >>> probs = result.predict(x_new)  # doctest: +SKIP
            >>> probs = result.predict("photos/test/")  # a model trained from a folder  # doctest: +SKIP
        """
        task_predict = getattr(self.task_object, "predict_model", None)
        if task_predict is not None:  # a task that runs its model itself (detection, generative)
            return task_predict(
                self.model, x, batch_size=batch_size, class_names=list(self.class_names)
            )
        inputs, files = self._predict_inputs(x, batch_size)
        probs = self._run(inputs, batch_size, files)
        if self.temperature != 1.0:
            from finetunekit.evaluation.calibration import apply_temperature

            probs = apply_temperature(probs, self.temperature)
        return probs

    def _predict_inputs(self, x: Any, batch_size: int) -> tuple[Any, list[str] | None]:
        """What ``model.predict`` takes for ``x``, and the image files read (``None``: no files)."""
        from finetunekit.data import decode

        settings = decode.image_folder_settings(self.model)
        if not _takes_text(self.model):
            paths = _as_paths(x)
            if paths is not None:
                if settings is None:
                    raise DataError(_no_files_message(self.model, x))
                files = [f for p in paths for f in decode.image_files(p)]
                return decode.files_dataset(files, settings, batch_size), files
        if hasattr(x, "inputs_dataset"):  # a DatasetAdapter: its inputs, checked like data
            if x.input_dtype != "string":
                _check_input_shape(self.model, (None, *x.input_shape), settings, "data")
            return x.inputs_dataset(batch_size), None
        from finetunekit.data.text import as_predict_inputs

        x = as_predict_inputs(x, batch_size, self.model)  # texts -> tf.data of strings
        if _takes_text(self.model) or isinstance(x, dict) or not _is_array_like(x):
            if hasattr(x, "element_spec"):  # a tf.data of inputs: check its shape now
                spec = x.element_spec
                if hasattr(spec, "shape") and spec.shape.rank:
                    _check_input_shape(self.model, tuple(spec.shape), settings, "the dataset")
            return x, None
        return self._conform(np.asarray(x), settings), None

    def _conform(self, x: np.ndarray, settings: dict[str, Any] | None) -> np.ndarray:
        """``x`` checked against the model's input (images of a folder model: any size)."""
        if x.dtype.kind not in "biuf":
            raise DataError(
                format_error(
                    f"The inputs have dtype {x.dtype}",
                    expected="numeric arrays (or image paths for a model trained from a folder)",
                    received={"x": x},
                    fix="Convert the inputs to numbers, e.g. np.stack(images)",
                )
            )
        if settings is not None:
            from finetunekit.data.decode import conform_images

            x = conform_images(x, settings["color_mode"])
        _check_input_shape(self.model, tuple(x.shape), settings, "x")
        return x

    def _run(self, inputs: Any, batch_size: int, files: list[str] | None) -> np.ndarray:
        """``model.predict`` whose failures on bad inputs are ``FineTuneError``s, not Keras'."""
        import tensorflow as tf

        try:
            return np.asarray(self.model.predict(inputs, batch_size=batch_size, verbose=0))
        except (ValueError, TypeError, tf.errors.OpError) as exc:
            first = (str(getattr(exc, "message", exc)).strip().splitlines() or [""])[0][:200]
            if files is not None:
                from finetunekit.data.decode import COLOR_MODES, image_folder_settings
                from finetunekit.data.sources import find_unreadable_images

                settings = image_folder_settings(self.model) or {"color_mode": "rgb"}
                bad = find_unreadable_images(files, COLOR_MODES[settings["color_mode"]])
                if bad:
                    listed = "; ".join(f"{p} ({why})" for p, why in bad[:5])
                    raise DataError(
                        format_error(
                            f"{len(bad)} of {len(files)} image files cannot be decoded: {listed}",
                            expected="readable BMP, GIF, JPEG or PNG files",
                            received={"files": len(files)},
                            fix="Delete or re-save those files",
                        )
                    ) from exc
            raise InputShapeError(
                format_error(
                    f"The model could not run on the inputs ({type(exc).__name__}: {first})",
                    expected=_expected_inputs(self.model),
                    received={"inputs": _describe_inputs(inputs)},
                    fix="Pass inputs shaped like the training data (the full error is "
                    "chained below)",
                )
            ) from exc

    def _evaluation_data(self, data: Any) -> Any:
        """``data`` with a folder read as in training and arrays conformed to the model."""
        from finetunekit.data import DatasetAdapter, decode

        settings = decode.image_folder_settings(self.model)
        if isinstance(data, (str, os.PathLike)):
            if settings is None:
                raise DataError(_no_files_message(self.model, data))
            return DatasetAdapter.from_directory(
                data,
                image_size=(int(settings["image_size"][0]), int(settings["image_size"][1])),
                color_mode=settings["color_mode"],
                interpolation=settings["interpolation"],
            )
        if isinstance(data, DatasetAdapter):
            if data.input_dtype != "string":
                _check_input_shape(self.model, (None, *data.input_shape), settings, "data")
            return data
        if (
            isinstance(data, (tuple, list))
            and len(data) == 2
            and _is_array_like(data[0])
            and not _takes_text(self.model)
        ):
            x = np.asarray(data[0])
            if x.dtype.kind in "biuf":
                return (self._conform(x, settings), data[1])
        return data

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

        return calibrate_result(self, self._evaluation_data(validation_data), batch_size)

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

    # ------------------------------------------------------------------ generative text
    def generate(
        self,
        prompts: Any,
        *,
        max_length: int | None = None,
        sampler: Any = "greedy",
        batch_size: int = 16,
    ) -> Any:
        """The model's answer to each prompt (``generative`` task): a list of strings.

        Args:
            prompts: a string (returns a list of one) or a list of strings.
            max_length: total tokens (prompt + answer) at most; default the
                training ``sequence_length``.
            sampler: ``"greedy"`` (deterministic), ``"top_k"``, ``"top_p"``,
                ``"beam"``, ``"random"``, ``"contrastive"`` or a
                ``keras_hub.samplers.Sampler``.
            batch_size: prompts generated together.

        Raises:
            EvaluationError: not a generative result, an unknown sampler, or a
                prompt longer than ``max_length``.

        Examples:
            >>> result.generate(["Translate to French: cat"], max_length=32)  # doctest: +SKIP
            ['chat']
        """
        task = self.task_object
        task_generate = getattr(task, "generate", None)
        if task_generate is None:
            from finetunekit.errors import EvaluationError

            raise EvaluationError(
                format_error(
                    f"result.generate() needs a generative model; this one is {self.task!r}",
                    expected="a result of DatasetAdapter.from_prompts data",
                    received={"task": self.task},
                    fix="Use predict() for this task",
                )
            )
        return task_generate(
            self.model, prompts, max_length=max_length, sampler=sampler, batch_size=batch_size
        )

    def save_adapters(self, path: str | os.PathLike[str]) -> str:
        """Saves the LoRA adapters alone (small), for ``ftk.load_adapters`` on the same base.

        Examples:
            >>> result.save_adapters("adapters.npz")  # doctest: +SKIP
        """
        task_save = getattr(self.task_object, "save_adapters", None)
        if task_save is None:
            raise LoadError(
                format_error(
                    f"Saving adapters alone is supported for generative results, not {self.task!r}",
                    expected="a generative result trained with LoRA",
                    received={"task": self.task},
                    fix="Save the whole model with result.save('model.keras')",
                )
            )
        return str(task_save(self, path))

    # ------------------------------------------------------------------ embeddings
    def embed(self, items: Any, batch_size: int = 64) -> np.ndarray:
        """L2-normalised embeddings of ``items`` (``embedding`` task): float32 ``(N, D)``.

        ``items`` are raw inputs as in training: a list of texts, an array of
        images or features, or what :meth:`predict` takes. The dot product of
        two rows is their cosine similarity.

        Raises:
            EvaluationError: the result is not an embedding model.
            DataError: empty texts (they carry nothing to embed).

        Examples:
            >>> import keras, numpy as np
            >>> encoder = keras.Sequential([keras.Input((2,)), keras.layers.UnitNormalization()])
            >>> result = FineTuneResult(model=encoder, task="embedding", class_names=[])
            >>> result.embed(np.array([[3.0, 4.0]])).tolist()
            [[0.6000000238418579, 0.800000011920929]]
        """
        from finetunekit.retrieval import normalize

        self._require_embedding("embed")
        if isinstance(items, (list, tuple)) and items and isinstance(items[0], str):
            from finetunekit.data.pairs import check_items

            check_items(items, "items")
        vectors = np.asarray(self.predict(items, batch_size), np.float32)
        return np.asarray(normalize(vectors.reshape(len(vectors), -1)), np.float32)

    def similarity(self, a: Any, b: Any, batch_size: int = 64) -> np.ndarray:
        """Cosine similarities of every item of ``a`` with every item of ``b``: ``(len(a), len(b))``.

        Examples:
            >>> import keras, numpy as np
            >>> encoder = keras.Sequential([keras.Input((2,)), keras.layers.UnitNormalization()])
            >>> result = FineTuneResult(model=encoder, task="embedding", class_names=[])
            >>> result.similarity(np.array([[1.0, 0.0]]), np.array([[2.0, 0.0], [0.0, 1.0]]))
            array([[1., 0.]], dtype=float32)
        """
        self._require_embedding("similarity")
        return np.asarray(self.embed(a, batch_size) @ self.embed(b, batch_size).T, np.float32)

    def search(
        self, queries: Any, corpus: Any, k: int = 10, batch_size: int = 64
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` corpus items most similar to each query: ``(indices, scores)``, best first.

        Exact search in numpy (:func:`finetunekit.retrieval.search`): fine
        for corpora up to about a million items. For larger ones, embed the
        corpus once with :meth:`embed` and hand the vectors to a vector index
        (inner-product metric; see ``docs/embeddings.md``).

        Args:
            queries: raw items (texts, arrays) to look up.
            corpus: raw items to search.
            k: results per query (at most ``len(corpus)``).
            batch_size: items per forward pass.

        Returns:
            ``indices`` int64 ``(Q, k)`` into ``corpus`` and cosine ``scores``
            float32 ``(Q, k)``; ties go to the earlier corpus item.

        Examples:
            >>> import keras, numpy as np
            >>> encoder = keras.Sequential([keras.Input((2,)), keras.layers.UnitNormalization()])
            >>> result = FineTuneResult(model=encoder, task="embedding", class_names=[])
            >>> corpus = np.array([[0.0, 1.0], [1.0, 0.1], [1.0, 1.0]])
            >>> indices, scores = result.search(np.array([[1.0, 0.0]]), corpus, k=2)
            >>> indices.tolist()
            [[1, 2]]
        """
        from finetunekit.retrieval import search

        self._require_embedding("search")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            from finetunekit.errors import ArgumentTypeError

            raise ArgumentTypeError(
                format_error("k must be a positive int", expected="e.g. k=10", received={"k": k})
            )
        return search(self.embed(queries, batch_size), self.embed(corpus, batch_size), k)

    def _require_embedding(self, method: str) -> None:
        from finetunekit.errors import EvaluationError

        if self.task != "embedding":
            raise EvaluationError(
                format_error(
                    f"result.{method}() needs an embedding model; this one is {self.task!r}",
                    expected="a result trained on DatasetAdapter.from_pairs / from_triplets / "
                    "from_scored_pairs / from_groups",
                    received={"task": self.task},
                    fix="Use result.predict() for this model",
                )
            )

    def evaluate(self, data: Any, evaluator: Any = None, *, thresholds: Any = None) -> Any:
        """Evaluates the model on ``data`` (an adapter, ``(x, y)`` or, for a folder model, a folder).

        Labels are encoded with the training classes, so string labels map to
        the same outputs; a mismatch in classes raises a ``FineTuneError``.
        ``thresholds`` (binary / multilabel) are the decision thresholds, e.g.
        ``{"label": 0.3}`` per label, as in ``Evaluator.evaluate``.

        A model trained from a folder evaluates on a folder path (one
        sub-folder per class, named as in training; a subset of the classes
        is fine), loaded with the training image size, colour mode and
        interpolation, and on ``(x, y)`` with images of any size.

        Raises:
            InputShapeError: inputs the model cannot take (expected and
                received shapes in the message).
            LabelError: classes the model was not trained on.

        Returns:
            An ``EvaluationReport``.

        Examples:
            >>> print(result.evaluate("digits/test"))  # doctest: +SKIP
        """
        from finetunekit.evaluation import Evaluator

        data = self._evaluation_data(data)

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

        task_merge = getattr(self.task_object, "merge_lora", None)
        if task_merge is not None:  # a task whose model is not a plain functional one
            import dataclasses

            model = task_merge(self.model)
            return self if model is self.model else dataclasses.replace(self, model=model)
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
    import finetunekit

    finetunekit.import_all()  # registers every custom layer (the package imports lazily)
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
    task.register_objects()  # e.g. the detector's Keras classes

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


def _takes_text(model: Any) -> bool:
    try:
        return str(model.inputs[0].dtype) == "string"
    except (AttributeError, IndexError, TypeError):
        return False


def _is_path(value: Any) -> bool:
    return isinstance(value, (str, os.PathLike))


def _as_paths(x: Any) -> list[Any] | None:
    """``x`` as a list of paths when it is one path or a sequence of them, else ``None``."""
    if _is_path(x):
        return [x]
    if isinstance(x, np.ndarray) and x.dtype.kind in "US" and x.ndim == 1 and len(x):
        return [str(p) for p in x]
    if isinstance(x, (list, tuple)) and x and all(_is_path(p) for p in x):
        return list(x)
    return None


def _is_array_like(x: Any) -> bool:
    if isinstance(x, np.ndarray):
        return True
    if isinstance(x, (list, tuple)):
        return True
    return hasattr(x, "__array__") and not hasattr(x, "element_spec")


def _fits(shape: tuple[Any, ...], spec: tuple[Any, ...]) -> bool:
    """Whether per-example ``shape`` feeds an input of per-example ``spec`` (None: any)."""
    if len(shape) == len(spec):
        return all(s is None or g is None or int(s) == int(g) for g, s in zip(shape, spec))
    # Keras adds a trailing axis of 1 itself: (H, W) feeds (H, W, 1)
    return len(shape) == len(spec) - 1 and spec[-1] == 1 and _fits((*shape, 1), spec)


def _shape_text(spec: tuple[Any, ...]) -> str:
    return "(N, " + ", ".join("any" if d is None else str(d) for d in spec) + ")"


def _expected_inputs(model: Any) -> str:
    try:
        spec = tuple(model.inputs[0].shape[1:])
        dtype = str(model.inputs[0].dtype)
    except (AttributeError, IndexError, TypeError):
        return "inputs shaped like the training data"
    return f"inputs of shape {_shape_text(spec)} ({dtype})"


def _describe_inputs(inputs: Any) -> str:
    if hasattr(inputs, "element_spec"):
        return f"tf.data of {inputs.element_spec}"
    shape = getattr(inputs, "shape", None)
    return f"shape {tuple(shape)}" if shape is not None else type(inputs).__name__


def _check_input_shape(
    model: Any, shape: tuple[Any, ...], settings: dict[str, Any] | None, name: str
) -> None:
    """Raises ``InputShapeError`` naming both shapes when ``model`` cannot take ``shape``."""
    try:
        if len(model.inputs) != 1:
            return
        spec = tuple(model.inputs[0].shape[1:])
    except (AttributeError, TypeError):
        return
    per_example = tuple(shape[1:])
    if _fits(per_example, spec):
        return
    if len(spec) == 4 and len(per_example) == 4 and _fits(per_example[1:], spec[1:]):
        return  # video clips (T, H, W, C): the model reads T at run time, any length runs
    if settings is not None:
        fix = "Pass images (N, H, W, C) of any size with the training colour mode, or image files"
    else:
        fix = (
            "The model takes the per-example shape it was trained on: resize or reshape the "
            "inputs the way the training data was made (only a model trained with "
            "DatasetAdapter.from_directory takes images of any size)"
        )
    raise InputShapeError(
        format_error(
            f"The model cannot take {name} of shape {tuple(shape)}: it takes {_shape_text(spec)}",
            expected=_expected_inputs(model),
            received={f"{name}.shape": tuple(shape)},
            fix=fix,
        )
    )


def _no_files_message(model: Any, x: Any) -> str:
    spec = tuple(model.inputs[0].shape[1:]) if getattr(model, "inputs", None) else ()
    return format_error(
        "Image files and folders are read by models trained from a folder "
        "(DatasetAdapter.from_directory); this model was trained on arrays",
        expected=f"arrays of shape {_shape_text(spec)}",
        received={"x": x},
        fix="Decode and resize the images yourself the way the training arrays were made, "
        "or train from the folder with DatasetAdapter.from_directory",
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
