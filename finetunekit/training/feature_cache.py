"""Feature caching for the frozen phase: one backbone pass instead of one per epoch.

While the backbone is frozen (phase 1) the part of the model in front of the
head -- raw inputs -> input adaptation -> backbone (-> a parameter-free
pooling) -- computes the same features for an example in every epoch. This
module computes them once, keeps them in memory up to a byte budget (spilling
the rest to a temporary ``np.memmap`` file that is deleted afterwards), and
trains a head-only ``keras.Model`` that SHARES the head layer objects with the
full model, so the full model ends up with the trained head.

The cached batches replay exactly the order and batching the uncached
pipeline would use (``DatasetAdapter.index_dataset``), so for the same seed
the cached and uncached runs see the same batches. Nothing here ever calls
``tf.data.Dataset.cache()``: memory stays bounded by the budget.
"""

from __future__ import annotations

import logging
import math
import shutil
import tempfile
import threading
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from finetunekit import _compat
from finetunekit.training.freezing import iter_layers

__all__ = [
    "CacheUnavailable",
    "FeatureCache",
    "FeatureStore",
    "FrozenSplit",
    "FullModelCallback",
    "decide",
    "feature_batch_size",
    "random_layers",
    "split_at",
    "split_frozen",
]

logger = logging.getLogger("finetunekit")

AUTOTUNE = tf.data.AUTOTUNE
# tf.data functions here are plain TensorFlow: autograph would only spend time transpiling them
_plain = tf.autograph.experimental.do_not_convert

# Parameter-free, deterministic layers right after the backbone that may join the
# cached part: pooling shrinks what is stored (e.g. 3x3x576 -> 576 floats).
_POOLING_TYPES: tuple[type, ...] = (
    keras.layers.GlobalAveragePooling1D,
    keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalAveragePooling3D,
    keras.layers.GlobalMaxPooling1D,
    keras.layers.GlobalMaxPooling2D,
    keras.layers.GlobalMaxPooling3D,
    keras.layers.Flatten,
)


class CacheUnavailable(Exception):
    """Raised internally when the frozen phase cannot use cached features.

    Attributes:
        reason: a short sentence saying why, reported in ``result.info``.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class FrozenSplit:
    """The full model cut in two at the cached features.

    Attributes:
        feature_model: raw inputs -> features (input adaptation, the frozen
            backbone and a following parameter-free pooling, if any).
        head_model: features -> outputs; its layers ARE the full model's head
            layers (shared objects, shared weights).
    """

    feature_model: keras.Model
    head_model: keras.Model


def random_layers(layers: Any) -> list[str]:
    """Returns the names of layers that draw random numbers (augmentation, dropout, noise).

    Nested models are searched too.

    Examples:
        >>> import keras
        >>> random_layers([keras.layers.RandomFlip(name="flip"), keras.layers.Dense(2)])
        ['flip']
    """
    found = []
    for layer in layers:
        leaves = iter_layers(layer) if isinstance(layer, keras.Model) else [layer]
        for leaf in leaves:
            if _compat.has_random_state(leaf):
                found.append(leaf.name)
    return found


def decide(
    trainer: Any, built: Any, train: Any, validation: Any, strategy: Any
) -> tuple[FrozenSplit | None, dict[str, Any]]:
    """Whether phase 1 trains on cached features: ``(split or None, info)``.

    ``info`` is what ``result.info["feature_cache"]`` reports: ``{"used",
    "reason", "bytes", "spilled"}``. The cut is ``built.features`` when the
    pipeline knows it, else the backbone's output found in the graph.

    Args:
        trainer: the :class:`~finetunekit.Trainer`.
        built: the :class:`~finetunekit.training.engine.BuiltModel`.
        train: the training :class:`~finetunekit.training.engine.TrainingData`.
        validation: the validation ``TrainingData`` or ``None``.
        strategy: the resolved ``tf.distribute.Strategy``.
    """
    from finetunekit.training import distribute

    info: dict[str, Any] = {"used": False, "reason": "", "bytes": 0, "spilled": False}
    reason = None
    if trainer.cache_features is False:
        reason = "switched off (Trainer(cache_features=False))"
    elif not trainer.epochs:
        reason = "no frozen phase (epochs=0)"
    elif trainer.cache_features == "auto" and trainer.epochs < 2:
        reason = "one frozen epoch: every feature is computed once anyway"
    elif problem := distribute.cache_problem(strategy):
        reason = problem
    elif trainer.checkpoint_dir is not None:
        reason = "checkpoint_dir is set: resumable runs train the full model in phase 1"
    elif getattr(built, "cache_problem", None):
        reason = built.cache_problem
    elif train.adapter is None or (validation is not None and validation.adapter is None):
        reason = "the Trainer got tf.data datasets, not DatasetAdapters to replay"
    else:
        savers = [
            type(cb).__name__
            for cb in trainer.callbacks
            if isinstance(cb, (keras.callbacks.ModelCheckpoint, keras.callbacks.BackupAndRestore))
        ]
        data = [train.adapter, validation.adapter if validation is not None else None]
        problems = [d.replay_problem() for d in data if d is not None]
        if savers:
            reason = f"callbacks {savers} would save the head-only model"
        elif any(problems):
            reason = next(p for p in problems if p)
    split = None
    if reason is None:
        try:
            if built.features is not None:
                split = split_at(built.model, built.features, built.backbone_model)
            else:
                split = split_frozen(built.model, built.backbone_model)
        except CacheUnavailable as exc:
            reason = exc.reason
    if split is None:
        info["reason"] = str(reason)
        if trainer.cache_features is True:
            warnings.warn(
                f"cache_features=True but phase 1 runs without the cache: {reason}",
                UserWarning,
                stacklevel=4,
            )
        logger.info("finetunekit: feature cache not used: %s", reason)
        return None, info
    info.update(used=True, reason="frozen backbone, deterministic inputs")
    return split, info


def split_at(model: keras.Model, features: Any, backbone_model: keras.Model) -> FrozenSplit:
    """Cuts ``model`` at the symbolic tensor ``features`` of its graph.

    The pipeline knows the tensor (the backbone's features, or the head's
    parameter-free pooling of them). The head model is built from it with
    Keras' functional API, which clones graph nodes but shares layer
    objects, so training it trains ``model``'s head.

    Raises:
        CacheUnavailable: the head reads anything besides ``features`` (clips'
            frame layout reads the raw inputs), random layers run before the
            cut in training (augmentation), the features carry a mask or have
            an unknown size, or a layer with weights is on both sides.

    Examples:
        >>> import keras
        >>> bb = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)], name="backbone")
        >>> inp = keras.Input((4,))
        >>> feats = bb(inp, training=False)
        >>> model = keras.Model(inp, keras.layers.Dense(2, name="head_output")(feats))
        >>> split_at(model, feats, bb).head_model.layers[-1] is model.get_layer("head_output")
        True
    """
    if _compat.keras_mask(features) is not None:
        raise CacheUnavailable("the features carry a padding mask the head would lose")
    if any(d is None for d in features.shape[1:]):
        raise CacheUnavailable(f"the features have an unknown size {tuple(features.shape)}")
    try:
        feature_model = keras.Model(model.inputs, features, name="frozen_features")
        head_model = keras.Model(features, model.outputs, name=f"{model.name}_head")
    except ValueError as exc:  # e.g. the head also reads the raw inputs
        raise CacheUnavailable(f"the head does not depend on the features alone ({exc})") from exc
    noisy = random_layers([layer for layer in feature_model.layers if layer is not backbone_model])
    if noisy:
        raise CacheUnavailable(
            f"random layers run before the backbone in training (augmentation?): {noisy}"
        )
    head_ids = {id(layer) for layer in head_model.layers}
    if any(id(layer) in head_ids for layer in feature_model.layers if layer.weights):
        raise CacheUnavailable("a layer with weights is shared by the frozen part and the head")
    return FrozenSplit(feature_model=feature_model, head_model=head_model)


def split_frozen(model: keras.Model, backbone_model: keras.Model) -> FrozenSplit:
    """Cuts ``model`` at the output of its (frozen) ``backbone_model`` call, found in the graph.

    For a model built outside the pipeline (``Trainer.train`` on your own
    Keras model), where the features tensor is not handed over: the cut is
    the backbone call's output, moved past parameter-free pooling / flatten
    layers that are its only consumer, then :func:`split_at` makes the split.

    Raises:
        CacheUnavailable: the model has no single backbone call, the backbone
            is called in training mode with random layers, or :func:`split_at`
            refuses the cut.

    Examples:
        >>> import keras
        >>> bb = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)], name="backbone")
        >>> inp = keras.Input((4,))
        >>> out = keras.layers.Dense(2, name="head_output")(bb(inp, training=False))
        >>> model = keras.Model(inp, out)
        >>> split_frozen(model, bb).head_model.layers[-1] is model.get_layer("head_output")
        True
    """
    if not isinstance(model, keras.Model) or not _compat.is_functional(model):
        raise CacheUnavailable("the model is not a functional Keras model")
    try:
        nodes = _compat.graph_nodes(list(model.outputs))
    except (AttributeError, IndexError, TypeError) as exc:
        raise CacheUnavailable(f"the model graph cannot be walked ({exc})") from exc
    calls = [n for n in nodes if n.operation is backbone_model]
    if len(calls) != 1 or len(calls[0].output_tensors) != 1:
        raise CacheUnavailable("the backbone is not called exactly once with one output")
    call = calls[0]
    if call.arguments.kwargs.get("training") is not False:
        noisy = random_layers([backbone_model])
        if noisy:
            raise CacheUnavailable(
                f"the backbone is not called with training=False and has random layers {noisy}"
            )
    boundary = call.output_tensors[0]
    consumers: dict[int, list[Any]] = {}
    for node in nodes:
        for t in node.input_tensors:
            consumers.setdefault(id(t), []).append(node)
    while True:  # move the cut past parameter-free pooling
        users = consumers.get(id(boundary), [])
        if len(users) != 1:
            break
        user = users[0]
        op = user.operation
        if not isinstance(op, _POOLING_TYPES) or op.weights or len(user.output_tensors) != 1:  # type: ignore[attr-defined]
            break
        if any(o is boundary for o in model.outputs):
            break
        boundary = user.output_tensors[0]
    return split_at(model, boundary, backbone_model)


class FeatureStore:
    """Features of ``n`` examples: a numpy array within a byte budget, else a temp file.

    Args:
        n: number of examples.
        shape: per-example feature shape.
        dtype: the features' tensor dtype (``"float32"``, ``"float16"``, ...);
            float16 is stored as float16, everything else as float32.
        memory_bytes: keep the array in memory when it needs at most this many
            bytes; otherwise write it to an ``np.memmap`` in a temporary folder.

    Examples:
        >>> store = FeatureStore(4, (2,), "float32", memory_bytes=0)
        >>> store.spilled, store.nbytes
        (True, 32)
        >>> store.close()
    """

    def __init__(self, n: int, shape: tuple[int, ...], dtype: str, memory_bytes: int) -> None:
        self.n = int(n)
        self.shape = tuple(int(d) for d in shape)
        self.dtype = str(dtype)
        self.np_dtype = np.dtype("float16" if self.dtype == "float16" else "float32")
        self.nbytes = int(self.n * math.prod(self.shape) * self.np_dtype.itemsize)
        self.spilled = self.nbytes > memory_bytes
        self.folder: str | None = None
        self._tensor: tf.Tensor | None = None
        full_shape = (max(self.n, 1), *self.shape)
        if self.spilled:
            self.folder = tempfile.mkdtemp(prefix="finetunekit-features-")
            path = f"{self.folder}/features.dat"
            self._array: np.ndarray | None = np.memmap(
                path, dtype=self.np_dtype, mode="w+", shape=full_shape
            )
        else:
            self._array = np.empty(full_shape, self.np_dtype)

    def fill(
        self,
        compute: Callable[[Any], Any],
        inputs: tf.data.Dataset,
        stop: threading.Event | None = None,
    ) -> None:
        """Writes ``compute(batch)`` for every batch of ``inputs`` (in example order).

        A set ``stop`` ends the pass after the current batch, leaving the store unfilled.
        """
        assert self._array is not None
        pos = 0
        for batch in inputs:
            if stop is not None and stop.is_set():
                return
            values = np.asarray(compute(batch), dtype=self.np_dtype)
            self._array[pos : pos + len(values)] = values
            pos += len(values)
        if pos != self.n:
            raise CacheUnavailable(f"the data yielded {pos} examples instead of {self.n}")
        if self.spilled:
            self._array.flush()  # type: ignore[attr-defined]
        else:
            with tf.device("/CPU:0"):  # never copy the cache into accelerator memory
                self._tensor = tf.convert_to_tensor(self._array)
            self._array = None

    def gather(self, idx: tf.Tensor) -> tf.Tensor:
        """Returns the features of examples ``idx`` (a tensor of int64 indices)."""
        if self._tensor is not None:
            out = tf.gather(self._tensor, idx)
        else:
            array = self._array
            out = tf.numpy_function(lambda i: array[i], [idx], tf.as_dtype(self.np_dtype))  # type: ignore[index]
            out.set_shape((None, *self.shape))
        if out.dtype.name != self.dtype:
            out = tf.cast(out, self.dtype)
        return out

    def close(self) -> None:
        """Frees the memory and deletes the temporary file (idempotent)."""
        self._tensor = None
        array, self._array = self._array, None
        if isinstance(array, np.memmap):
            _compat.close_memmap(array)
        del array
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None


_FEATURE_BATCH_BYTES = 16 * 2**20  # widest activation of one feature-pass batch, roughly
_FEATURE_BATCH_MAX = 256


def feature_batch_size(batch_size: int, feature_model: keras.Model) -> int:
    """Batch size of the one-off feature pass: larger than training's when examples are small.

    Convolutions on CPU run ~1.4x faster per image at batch 128 than at 32
    (measured, MobileNetV3Small 96x96), so the pass uses up to 256 examples
    per batch while the widest tensor between the raw inputs and the
    backbone (e.g. the resized image) stays within about 16 MiB per batch.

    Examples:
        >>> m = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten()])
        >>> feature_batch_size(32, m)
        256
    """
    widest = 1
    for layer in feature_model.layers:
        try:
            shape = layer.output.shape
        except (AttributeError, ValueError):
            continue
        if all(d is not None for d in shape[1:]):
            widest = max(widest, math.prod(int(d) for d in shape[1:]))
    fits = _FEATURE_BATCH_BYTES // (4 * widest)
    return int(max(batch_size, min(_FEATURE_BATCH_MAX, fits)))


class FeatureCache:
    """Cached features of the training (and validation) data for one frozen phase.

    Use as a context manager: leaving it frees the memory and deletes any
    temporary file.

    Args:
        split: the model cut from :func:`split_frozen`.
        train_data: the training ``DatasetAdapter``.
        validation_data: the validation ``DatasetAdapter`` or ``None``.
        batch_size: batch size of training. Features are computed in larger
            batches when examples are small (see :func:`feature_batch_size`).
        memory_bytes: byte budget for features held in memory (training data
            first, validation gets what is left); beyond it features spill to
            a temporary file.
        jit_compile: compile the feature pass with XLA.
        meanwhile: work for this thread while a worker thread runs the
            backbone over the data (the engine traces the head's training
            functions, see :func:`~finetunekit.training.fit_loop.trace_head`);
            its return value is kept in :attr:`meanwhile_result`. ``None``:
            the pass runs in this thread.

    The feature pass is traced in the calling thread. While the worker runs
    the traced pass, the calling thread's Python work (tracing the head) uses
    the core the pass leaves idle during graph optimisation. Measured on 2
    cores, MobileNetV3Small at 96x96, 1,024 + 256 images, 10 epochs: the
    frozen phase took a median of 1.95 s this way and 2.18 s with the head
    traced after the pass, faster in each of 10 alternating pairs
    (``benchmarks/bench_fixed_costs.py --cases overlap``).

    Examples:
        >>> with FeatureCache(split, train, None, 32, 2**28) as cache:  # doctest: +SKIP
        ...     head_model.fit(cache.train_dataset(shuffle=True, seed=0))
    """

    def __init__(
        self,
        split: FrozenSplit,
        train_data: Any,
        validation_data: Any,
        batch_size: int,
        memory_bytes: int,
        *,
        jit_compile: bool = False,
        meanwhile: Callable[[], Any] | None = None,
    ) -> None:
        self.split = split
        self.train_data = train_data
        self.validation_data = validation_data
        self.batch_size = int(batch_size)
        self.memory_bytes = int(memory_bytes)
        self.jit_compile = bool(jit_compile)
        self.meanwhile = meanwhile
        self.meanwhile_result: Any = None
        self.stores: list[FeatureStore] = []
        features = split.feature_model.outputs[0]
        self.feature_shape = tuple(int(d) for d in features.shape[1:])
        self.feature_dtype = str(features.dtype)

    def __enter__(self) -> FeatureCache:
        try:
            self.build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def build(self) -> None:
        """Computes the features of every training and validation example once."""
        model = self.split.feature_model
        budget = self.memory_bytes
        jobs: list[tuple[FeatureStore, tf.data.Dataset]] = []
        for data in (self.train_data, self.validation_data):
            if data is None:
                continue
            inputs = data.inputs_dataset(feature_batch_size(self.batch_size, model))
            store = FeatureStore(len(data), self.feature_shape, self.feature_dtype, budget)
            self.stores.append(store)
            jobs.append((store, inputs))
            if not store.spilled:
                budget -= store.nbytes
        compute = tf.function(  # traced once, here: any batch size (the last batch is smaller)
            lambda x: model(x, training=False),
            input_signature=[jobs[0][1].element_spec],
            jit_compile=self.jit_compile,
            autograph=False,  # a Keras call: nothing to convert (transpiling takes 0.3 s)
        )
        compute.get_concrete_function()
        if self.meanwhile is None:
            for store, inputs in jobs:
                store.fill(compute, inputs)
        else:
            stop = threading.Event()
            with ThreadPoolExecutor(1, thread_name_prefix="finetunekit-features") as worker:
                passes = worker.submit(_fill_all, compute, jobs, stop)
                try:
                    self.meanwhile_result = self.meanwhile()
                    error = passes.exception()  # waits for the pass
                except BaseException:  # meanwhile failed, or Ctrl-C while waiting
                    stop.set()  # the worker ends after its current batch
                    raise
            if error is not None:
                raise error
        logger.info(
            "finetunekit: cached %d bytes of frozen features%s",
            self.nbytes,
            " (spilled to a temporary file)" if self.spilled else " in memory",
        )

    @property
    def nbytes(self) -> int:
        """Total bytes of cached features."""
        return sum(s.nbytes for s in self.stores)

    @property
    def spilled(self) -> bool:
        """Whether any features live in a temporary file."""
        return any(s.spilled for s in self.stores)

    def _shaped(self, index_ds: tf.data.Dataset) -> tf.data.Dataset:
        """``index_ds`` with zeros for the features: the structure and batches of the cached
        datasets, before the features exist (for :func:`~finetunekit.training.fit_loop.trace_head`)."""
        zero = tf.zeros((1, *self.feature_shape), self.feature_dtype)
        return index_ds.map(_plain(lambda idx, y: (tf.gather(zero, tf.zeros_like(idx)), y)))

    def train_shape_dataset(self) -> tf.data.Dataset:
        """A dataset of zeros with the structure of :meth:`train_epochs_dataset`'s batches."""
        return self._shaped(self.train_data.index_dataset(self.batch_size))

    def validation_shape_dataset(self) -> tf.data.Dataset | None:
        """A dataset of zeros with the structure and batches of :meth:`validation_dataset`."""
        if self.validation_data is None:
            return None
        return self._shaped(self.validation_data.index_dataset(self.batch_size))

    def _dataset(self, store: FeatureStore, index_ds: tf.data.Dataset) -> tf.data.Dataset:
        ds = index_ds.map(
            _plain(lambda idx, y: (store.gather(idx), y)), num_parallel_calls=AUTOTUNE
        )
        return ds.prefetch(AUTOTUNE)

    def train_dataset(self, *, shuffle: bool, seed: int | None) -> tf.data.Dataset:
        """Batched ``(features, y)`` in the order ``train_data.as_dataset`` would use."""
        index_ds = self.train_data.index_dataset(self.batch_size, shuffle=shuffle, seed=seed)
        return self._dataset(self.stores[0], index_ds)

    @property
    def train_steps(self) -> int:
        """Batches per training epoch."""
        return -(-len(self.train_data) // self.batch_size)

    def replays_epochs(self) -> bool:
        """Whether :meth:`train_epochs_dataset` can be used: every epoch has ``train_steps`` batches.

        The index dataset's number of batches must be known and equal to
        :attr:`train_steps` (true for every finetunekit source, including
        length-grouped text), so that epochs can be told apart by counting.
        """
        index_ds = self.train_data.index_dataset(self.batch_size)
        return int(index_ds.cardinality()) == self.train_steps

    def train_epochs_dataset(
        self, epochs: int, *, shuffle: bool, seed: int | None
    ) -> tf.data.Dataset:
        """``epochs`` epochs of batched ``(features, y)`` in one dataset, for ONE iterator.

        ``fit(..., steps_per_epoch=self.train_steps)`` on it sees in epoch
        ``e`` exactly the batches ``fit`` sees in epoch ``e`` of
        :meth:`train_dataset`, without Keras' two ``tf.data`` iterators per
        epoch (each starts threads and a prefetch). ``fit`` reads the fresh
        iterators number 0, 2, 4, ... of a dataset whose number of batches is
        known (it makes one ahead at the end of every epoch and drops it), and
        each fresh iterator of the index dataset draws the next shuffle, as
        each repetition of ``repeat()`` does. So this reads the index dataset
        repeated ``2 * epochs`` times and keeps the even repetitions (the odd
        ones cost only their indices), then gathers the features. Use it only
        when :meth:`replays_epochs`.

        Args:
            epochs: how many epochs the fit runs (at most).
            shuffle: shuffle every epoch, as :meth:`train_dataset`.
            seed: the shuffle seed.

        Examples:
            >>> cache.train_epochs_dataset(10, shuffle=True, seed=0)  # doctest: +SKIP
        """
        index_ds = self.train_data.index_dataset(self.batch_size, shuffle=shuffle, seed=seed)
        steps = self.train_steps
        kept = (
            index_ds.repeat(2 * int(epochs))
            .enumerate()
            .filter(_plain(lambda i, batch: (i // steps) % 2 == 0))
            .map(_plain(lambda i, batch: batch))
        )
        store = self.stores[0]
        ds = kept.map(_plain(lambda idx, y: (store.gather(idx), y)), num_parallel_calls=AUTOTUNE)
        return ds.prefetch(AUTOTUNE)

    def validation_dataset(self) -> tf.data.Dataset | None:
        """Batched ``(features, y)`` of the validation data, in order (or ``None``)."""
        if self.validation_data is None:
            return None
        index_ds = self.validation_data.index_dataset(self.batch_size)
        return self._dataset(self.stores[1], index_ds)

    def close(self) -> None:
        """Frees every store and deletes temporary files."""
        for store in self.stores:
            store.close()


def _fill_all(
    compute: Callable[[Any], Any],
    jobs: list[tuple[FeatureStore, tf.data.Dataset]],
    stop: threading.Event,
) -> None:
    for store, inputs in jobs:
        store.fill(compute, inputs, stop)


class FullModelCallback(keras.callbacks.Callback):
    """Runs a callback against the FULL model while Keras fits the head-only model.

    Bookkeeping callbacks (history, early stopping, best weights,
    checkpoints) snapshot and restore ``model.variables``: they must see the
    full model, whose head is the head being trained. A stop request they
    make is passed on to the model being fitted.

    Args:
        inner: the callback to forward epoch events to.
        full_model: the model ``inner`` sees as ``self.model``.

    Examples:
        >>> cb = FullModelCallback(keras.callbacks.Callback(), keras.Sequential())  # doctest: +SKIP
    """

    def __init__(self, inner: keras.callbacks.Callback, full_model: keras.Model) -> None:
        super().__init__()
        self.inner = inner
        self.full_model = full_model
        inner.set_model(full_model)
        self._fitted: keras.Model | None = None

    def set_model(self, model: keras.Model) -> None:
        self._fitted = model  # the head-only model; ``inner`` keeps the full one

    def set_params(self, params: dict[str, Any]) -> None:
        self.inner.set_params(params)

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.full_model.stop_training = False
        self.inner.on_train_begin(logs)

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.inner.on_epoch_begin(epoch, logs)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.inner.on_epoch_end(epoch, logs)
        if getattr(self.full_model, "stop_training", False) and self._fitted is not None:
            self._fitted.stop_training = True

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self.inner.on_train_end(logs)
