"""Where the inputs of a :class:`~finetunekit.data.DatasetAdapter` come from.

Three sources share one small internal interface (``__len__``, ``input_shape``,
``input_dtype``, ``subset``, ``dataset``, ``inputs``, ``sample``):

* :class:`ArraySource` keeps the user's numpy array (no copy) and gathers whole
  batches of rows from one CPU tensor with ``tf.gather``.
* :class:`TFDataSource` keeps a ``tf.data.Dataset`` of single examples; a
  subset is an index mask applied with ``enumerate().filter()``.
* :class:`DirectorySource` keeps the list of image files; images are decoded
  and resized per example, in parallel, only while iterating, with
  :func:`finetunekit.data.decode.load_image_file`: the decode and resize a
  model trained from the folder also applies to files and arrays it is given.

Labels never live here: the adapter owns the (small) stored targets and the
:class:`~finetunekit.tasks.labels.LabelEncoding`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from finetunekit import _compat
from finetunekit.data.decode import COLOR_MODES, IMAGE_EXTENSIONS, load_image_file
from finetunekit.errors import ArgumentTypeError, DataError, LabelError, format_error
from finetunekit.tasks.labels import LabelEncoding, raw_to_stored_tf, stored_to_batch_tf

__all__ = [
    "ArraySource",
    "TFDataSource",
    "DirectorySource",
    "check_input_array",
    "check_finite_inputs",
    "normalize_tf_dataset",
    "read_tf_labels",
    "reshuffles_each_iteration",
    "random_ops",
    "list_image_directory",
    "find_unreadable_images",
]

AUTOTUNE = tf.data.AUTOTUNE
_SHUFFLE_BUFFER_BYTES = 256 * 2**20  # bound of a tf.data-source shuffle buffer
_LABEL_PASS_BATCH = 4096
_FINITE_CHUNK = 2**24  # values checked per chunk in check_finite_inputs
COLOR_CHANNELS = COLOR_MODES  # color_mode -> channels (finetunekit.data.decode)


# --------------------------------------------------------------------------- arrays


def check_input_array(x: Any) -> np.ndarray:
    """Returns ``np.asarray(x)`` after checking it can be a batch of inputs.

    Raises:
        ArgumentTypeError: ``x`` is a dataset or a path (wrong constructor).
        DataError: ``x`` is ragged, object/string-valued, has fewer than 2
            dimensions or is empty.

    Examples:
        >>> check_input_array([[1, 2], [3, 4]]).shape
        (2, 2)
    """
    if isinstance(x, tf.data.Dataset):
        raise ArgumentTypeError(
            format_error(
                "x is a tf.data.Dataset",
                expected="a numpy-convertible array of inputs",
                received={"x": x},
                fix="Use DatasetAdapter.from_tf_dataset(ds) for a dataset of (x, y)",
            )
        )
    if isinstance(x, (str, bytes, os.PathLike)):
        raise ArgumentTypeError(
            format_error(
                "x is a path",
                expected="a numpy-convertible array of inputs",
                received={"x": x},
                fix="Use DatasetAdapter.from_directory(path) for a folder of images",
            )
        )
    try:
        arr = np.asarray(x)
    except (ValueError, TypeError) as err:
        raise DataError(
            format_error(
                "x cannot be read as one array: its examples have different shapes",
                expected="an array of shape (N, ...) whose examples all share one shape",
                received={"x": _describe(x)},
                fix="Resize / pad the examples to one shape, or use from_directory / "
                "from_tf_dataset for images of different sizes",
            )
        ) from err
    if arr.dtype == object:
        raise DataError(
            format_error(
                "x has dtype object (ragged examples or Python objects)",
                expected="a numeric array of shape (N, ...) whose examples share one shape",
                received={"x": arr},
                fix="Stack the examples into one numeric array, e.g. np.stack(x)",
            )
        )
    if arr.dtype.kind in "US":
        raise DataError(
            format_error(
                "x holds strings",
                expected="numeric inputs (images, features or clips) of shape (N, ...)",
                received={"x": arr},
                fix="Convert the inputs to numbers first (e.g. tokenize texts), or load "
                "image files with DatasetAdapter.from_directory",
            )
        )
    if arr.dtype.kind not in "biuf":
        raise DataError(
            format_error(
                f"x has unsupported dtype {arr.dtype}",
                expected="integer, unsigned, float or bool inputs",
                received={"x": arr},
                fix="Convert x with x.astype('float32')",
            )
        )
    if arr.ndim < 2:
        raise DataError(
            format_error(
                f"x has {arr.ndim} dimension(s)",
                expected="at least 2 dimensions: (N, D) features, (N, H, W) grayscale, "
                "(N, H, W, C) images or (N, T, H, W, C) clips",
                received={"x": arr},
                fix="For one feature per example use x.reshape(-1, 1)",
            )
        )
    if len(arr) == 0:
        raise DataError(
            format_error(
                "x is empty",
                expected="at least one example",
                received={"x": arr},
                fix="Pass non-empty data",
            )
        )
    return arr


def check_finite_inputs(arr: np.ndarray) -> None:
    """Raises :class:`DataError` when a float ``arr`` holds NaN or inf.

    Scans in chunks of rows so memory stays bounded for large arrays.

    Examples:
        >>> check_finite_inputs(np.zeros((2, 3), np.float32))
    """
    if arr.dtype.kind != "f":
        return
    row = max(1, int(np.prod(arr.shape[1:])))
    step = max(1, _FINITE_CHUNK // row)
    bad_rows: list[int] = []
    for start in range(0, len(arr), step):
        chunk = arr[start : start + step]
        ok = np.isfinite(chunk).reshape(len(chunk), -1).all(axis=1)
        if not ok.all():
            bad_rows.extend((np.flatnonzero(~ok) + start).tolist())
            if len(bad_rows) >= 5:
                break
    if bad_rows:
        raise DataError(
            format_error(
                f"x contains NaN or infinite values (examples {bad_rows[:5]}"
                f"{', ...' if len(bad_rows) > 5 else ''})",
                expected="finite inputs",
                received={"x": arr},
                fix="Fill or drop those examples, e.g. x = np.nan_to_num(x)",
            )
        )


def _describe(x: Any) -> str:
    if isinstance(x, (list, tuple)):
        shapes = {np.shape(e) for e in list(x)[:50] if _has_shape(e)}
        return f"{type(x).__name__} of {len(x)} items with shapes {sorted(shapes)[:4]}"
    return repr(x)


def _has_shape(e: Any) -> bool:
    try:
        np.shape(e)
    except (ValueError, TypeError):
        return False
    return True


class _ArrayStore:
    """The user's array plus a lazily created CPU tensor shared by all subsets."""

    def __init__(self, x: np.ndarray) -> None:
        self.x = x
        self._tensor: tf.Tensor | None = None

    def tensor(self) -> tf.Tensor:
        if self._tensor is None:
            # On CPU: never copy the whole dataset into accelerator memory.
            with tf.device("/CPU:0"):
                self._tensor = tf.convert_to_tensor(self.x)
        return self._tensor


class ArraySource:
    """Inputs held in a numpy array (optionally a subset of its rows)."""

    kind = "arrays"

    def __init__(self, x: np.ndarray | _ArrayStore, positions: np.ndarray | None = None):
        self._store = x if isinstance(x, _ArrayStore) else _ArrayStore(x)
        self._positions = positions

    def __len__(self) -> int:
        return len(self._store.x) if self._positions is None else len(self._positions)

    @property
    def input_shape(self) -> tuple[int | None, ...]:
        return tuple(int(d) for d in self._store.x.shape[1:])

    @property
    def input_dtype(self) -> str:
        return str(self._store.x.dtype)

    def subset(self, local: np.ndarray) -> ArraySource:
        pos = local if self._positions is None else self._positions[local]
        return ArraySource(self._store, np.asarray(pos, np.int64))

    def _index_dataset(self, batch_size: int, shuffle: bool, seed: int | None) -> tf.data.Dataset:
        ds = tf.data.Dataset.range(len(self))
        if shuffle:
            ds = ds.shuffle(len(self), seed=seed, reshuffle_each_iteration=True)
        return ds.batch(batch_size)

    def _row_gatherer(self) -> Any:
        """A function mapping a batch of local indices to rows of x (captures tensors once)."""
        x_t = self._store.tensor()
        if self._positions is None:
            return tf.autograph.experimental.do_not_convert(lambda idx: tf.gather(x_t, idx))
        with tf.device("/CPU:0"):
            pos_t = tf.convert_to_tensor(self._positions)
        return tf.autograph.experimental.do_not_convert(
            lambda idx: tf.gather(x_t, tf.gather(pos_t, idx))
        )

    def dataset(
        self,
        batch_size: int,
        targets: np.ndarray,
        encoding: LabelEncoding,
        shuffle: bool,
        seed: int | None,
    ) -> tf.data.Dataset:
        rows = self._row_gatherer()
        with tf.device("/CPU:0"):
            t_t = tf.convert_to_tensor(targets)

        def gather(idx: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            return rows(idx), stored_to_batch_tf(tf.gather(t_t, idx), encoding)

        ds = self._index_dataset(batch_size, shuffle, seed)
        return ds.map(gather, num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)

    def inputs(self, batch_size: int) -> tf.data.Dataset:
        ds = self._index_dataset(batch_size, False, None)
        return ds.map(self._row_gatherer(), num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)

    def order(self, batch_size: int, shuffle: bool, seed: int | None) -> tf.data.Dataset:
        """Batches of local indices in the order ``dataset`` yields examples."""
        return self._index_dataset(batch_size, shuffle, seed)

    def sample(self, n: int) -> np.ndarray:
        if self._positions is None:
            return np.array(self._store.x[:n])
        return self._store.x[self._positions[:n]]


# --------------------------------------------------------------------------- tf.data


def _spec_text(ds: Any) -> str:
    try:
        return repr(ds.element_spec)
    except Exception:  # pragma: no cover - defensive
        return repr(ds)


def _structure_error(ds: tf.data.Dataset, problem: str) -> DataError:
    spec = _spec_text(ds)
    return DataError(
        format_error(
            f"ds has the wrong structure: {problem}. Its element_spec is {spec}",
            expected="a dataset whose elements are (x, y) pairs (or dicts with keys 'x' and "
            "'y'), x one dense tensor of inputs and y the labels",
            received={"ds": ds},
            fix="Map it to pairs first, e.g. ds.map(lambda d: (d['image'], d['label']))",
        )
    )


def _walk_datasets(ds: Any, limit: int = 200) -> list[Any]:
    """All datasets of a pipeline (best effort, private tf.data API)."""
    seen: list[Any] = []
    stack = [ds]
    while stack and len(seen) < limit:
        d = stack.pop()
        seen.append(d)
        try:
            stack.extend(_compat.dataset_inputs(d))
        except Exception:  # noqa: BLE001 - private API; stop walking this branch
            pass
    return seen


def reshuffles_each_iteration(ds: tf.data.Dataset) -> bool:
    """Best-effort check: does ``ds`` contain a ``shuffle`` that reshuffles every pass?

    Examples:
        >>> reshuffles_each_iteration(tf.data.Dataset.range(4).shuffle(4))
        True
    """
    for d in _walk_datasets(ds):
        if type(d).__name__ in ("_ShuffleDataset", "ShuffleDataset"):
            flag = _compat.dataset_reshuffles(d)
            try:
                if bool(np.asarray(flag)):
                    return True
            except Exception:  # noqa: BLE001 - symbolic flag: assume it reshuffles
                return True
    return False


_PASSTHROUGH = {
    "_PrefetchDataset",
    "_OptionsDataset",
    "_MapDataset",
    "_ParallelMapDataset",
    "_CacheDataset",
    "_TakeDataset",
    "_SkipDataset",
    "_AssertCardinalityDataset",
}
_BATCHING = {"_BatchDataset", "_ParallelBatchDataset", "_PaddedBatchDataset"}


def _ends_with_batch(ds: tf.data.Dataset) -> bool:
    d = ds
    try:
        for _ in range(50):
            name = type(d).__name__
            if name in _BATCHING:
                return True
            if name not in _PASSTHROUGH:
                return False
            d = _compat.dataset_inputs(d)[0]
    except Exception:  # noqa: BLE001 - private API
        return False
    return False


def _detect_batched(ds: tf.data.Dataset, x_spec: tf.TensorSpec, y_spec: tf.TensorSpec) -> bool:
    xs, ys = x_spec.shape, y_spec.shape
    if xs.rank is None or ys.rank is None or xs.rank < 1 or ys.rank < 1:
        return False
    if xs[0] is None and ys[0] is None:
        return True
    # batch(..., drop_remainder=True) gives a known, equal leading dimension
    return xs[0] is not None and xs[0] == ys[0] and _ends_with_batch(ds)


def normalize_tf_dataset(
    ds: Any, batched: bool | None
) -> tuple[tf.data.Dataset, tf.data.Dataset, tf.TensorSpec, tf.TensorSpec, bool]:
    """Checks the structure of ``ds`` and returns its per-example form.

    Args:
        ds: A ``tf.data.Dataset`` of ``(x, y)`` pairs or ``{"x": ..., "y": ...}``.
        batched: Whether ``ds`` yields batches; None to detect it (x and y both
            with an unknown leading dimension, or a trailing ``batch`` with
            ``drop_remainder=True``).

    Returns:
        ``(pairs, examples, x_spec, y_spec, batched)``: ``pairs`` yields ``(x, y)``
        as ``ds`` does (batched or not), ``examples`` one example at a time;
        the specs are per example.

    Raises:
        ArgumentTypeError: ``ds`` is not a dataset or ``batched`` not a bool.
        DataError: The structure cannot be used, or ``ds`` is infinite.

    Examples:
        >>> ds = tf.data.Dataset.from_tensor_slices(([[1.0], [2.0]], [0, 1])).batch(2)
        >>> normalize_tf_dataset(ds, None)[4]
        True
    """
    if not isinstance(ds, tf.data.Dataset):
        raise ArgumentTypeError(
            format_error(
                "ds must be a tf.data.Dataset",
                expected="a tf.data.Dataset yielding (x, y)",
                received={"ds": ds},
                fix="Use DatasetAdapter.from_arrays(x, y) for arrays, or "
                "tf.data.Dataset.from_tensor_slices((x, y))",
            )
        )
    if batched is not None and not isinstance(batched, bool):
        raise ArgumentTypeError(
            format_error(
                "batched must be a bool or None",
                expected="True, False or None (detect)",
                received={"batched": batched},
            )
        )
    spec = ds.element_spec
    if isinstance(spec, dict):
        if set(spec) != {"x", "y"}:
            raise _structure_error(ds, f"a dict with keys {sorted(spec)} (need exactly 'x', 'y')")
        pairs = ds.map(lambda d: (d["x"], d["y"]))
    elif isinstance(spec, tuple):
        if len(spec) != 2:
            extra = " (sample weights are not supported)" if len(spec) == 3 else ""
            raise _structure_error(ds, f"a tuple of {len(spec)} items{extra}")
        pairs = ds
    else:
        raise _structure_error(ds, f"a single {type(spec).__name__}, not an (x, y) pair")
    x_spec, y_spec = pairs.element_spec
    for name, s in (("x", x_spec), ("y", y_spec)):
        if not isinstance(s, tf.TensorSpec):
            raise _structure_error(
                ds,
                f"{name} is a {type(s).__name__}, not one dense tensor (nested, ragged or "
                "sparse values are not supported)",
            )
    if x_spec.dtype == tf.string:
        raise _structure_error(ds, "x holds strings (decode / tokenize them in the dataset)")
    if int(ds.cardinality()) == int(tf.data.INFINITE_CARDINALITY):
        raise DataError(
            format_error(
                "ds is infinite (it repeats forever)",
                expected="a finite dataset that can be iterated again and again",
                received={"ds": ds},
                fix="Drop the .repeat() - Keras iterates the data once per epoch",
            )
        )
    if batched is None:
        batched = _detect_batched(ds, x_spec, y_spec)
    if batched:
        if x_spec.shape.rank in (None, 0) or y_spec.shape.rank in (None, 0):
            raise _structure_error(ds, "batched=True but x or y has no batch dimension")
        examples = pairs.unbatch()
        x_spec, y_spec = examples.element_spec
    else:
        examples = pairs
    if x_spec.shape.rank is None or x_spec.shape.rank < 1:
        raise DataError(
            format_error(
                "Each x of ds is a scalar",
                expected="per-example inputs with at least one dimension, e.g. (D,) features "
                "or (H, W, C) images",
                received={"ds": ds},
                fix="Map x to a vector, e.g. ds.map(lambda x, y: (tf.reshape(x, [1]), y)); if ds "
                "is batched, pass batched=True",
            )
        )
    return pairs, examples, x_spec, y_spec, bool(batched)


def read_tf_labels(pairs: tf.data.Dataset, batched: bool, ds: Any) -> np.ndarray:
    """One pass over the labels of ``pairs`` (``ds.map(lambda x, y: y)``) into numpy.

    Examples:
        >>> pairs = tf.data.Dataset.from_tensor_slices(([[1.0], [2.0]], [0, 1]))
        >>> read_tf_labels(pairs, False, pairs).tolist()
        [0, 1]
    """
    labels = pairs.map(lambda x, y: y)
    if not batched:
        labels = labels.batch(_LABEL_PASS_BATCH)
    chunks: list[np.ndarray] = []
    try:
        for chunk in labels.as_numpy_iterator():
            chunks.append(np.asarray(chunk))
    except (tf.errors.OpError, ValueError, TypeError) as err:
        message = str(getattr(err, "message", err)).strip().splitlines()[0][:300]
        raise DataError(
            format_error(
                f"Reading the labels of ds failed: {message}",
                expected="a re-iterable dataset of (x, y) whose labels share one shape",
                received={"ds": ds},
                fix="Check that ds iterates without error, e.g. list(ds.take(2))",
            )
        ) from err
    if not chunks:
        raise DataError(
            format_error(
                "ds is empty",
                expected="at least one (x, y) example",
                received={"ds": ds},
                fix="Check the dataset's source and filters",
            )
        )
    shapes = {c.shape[1:] for c in chunks}
    if len(shapes) > 1:
        raise LabelError(
            format_error(
                f"The labels of ds have different shapes: {sorted(shapes)}",
                expected="one label shape for every example",
                received={"ds": ds},
                fix="Give every label the same shape",
            )
        )
    return np.concatenate(chunks, axis=0)


def random_ops(ds: tf.data.Dataset) -> list[str]:
    """Names of the random-number ops a ``tf.data`` pipeline runs (e.g. in augmentation maps).

    Reads the dataset's serialised graph, including the functions of its
    ``map`` calls; shuffling is not counted. Best effort: an unreadable graph
    gives ``[]``.

    Examples:
        >>> ds = tf.data.Dataset.range(4).map(lambda i: tf.random.uniform(()) + tf.cast(i, "float32"))
        >>> random_ops(ds)
        ['RandomUniform']
    """
    try:
        from tensorflow.core.framework import graph_pb2

        graph = graph_pb2.GraphDef.FromString(_compat.dataset_serialized_graph(ds).numpy())
    except Exception:  # noqa: BLE001 - best effort
        return []
    nodes = list(graph.node)
    for function in graph.library.function:
        nodes.extend(function.node_def)
    found = sorted(
        {
            n.op
            for n in nodes
            if "Random" in n.op and "Dataset" not in n.op and "Shuffle" not in n.op
        }
    )
    return found


def _shuffle_buffer(spec: tf.TensorSpec, n: int) -> int:
    if spec.shape.is_fully_defined():
        nbytes = max(1, int(np.prod(spec.shape.as_list())) * spec.dtype.size)
        buffer = max(64, _SHUFFLE_BUFFER_BYTES // nbytes)
    else:
        buffer = 1024
    return max(1, min(n, buffer))


class TFDataSource:
    """Inputs streamed from a re-iterable ``tf.data.Dataset`` of single examples.

    Labels are re-encoded on the fly from the dataset's own ``y`` (so x and y
    always stay paired); a subset is a boolean mask over the example index.
    Shuffling uses a buffer bounded to about 256 MiB of examples.
    """

    kind = "tf.data"

    def __init__(
        self,
        examples: tf.data.Dataset,
        x_spec: tf.TensorSpec,
        base_len: int,
        positions: np.ndarray | None = None,
    ) -> None:
        self._examples = examples
        self._x_spec = x_spec
        self._base_len = base_len
        self._positions = positions

    def __len__(self) -> int:
        return self._base_len if self._positions is None else len(self._positions)

    @property
    def input_shape(self) -> tuple[int | None, ...]:
        return tuple(self._x_spec.shape.as_list())

    @property
    def input_dtype(self) -> str:
        return self._x_spec.dtype.name

    def subset(self, local: np.ndarray) -> TFDataSource:
        pos = local if self._positions is None else self._positions[local]
        return TFDataSource(self._examples, self._x_spec, self._base_len, np.asarray(pos, np.int64))

    def _selected(self) -> tf.data.Dataset:
        if self._positions is None:
            return self._examples
        mask = np.zeros(self._base_len, bool)
        mask[self._positions] = True
        mask_t = tf.constant(mask)
        n = self._base_len

        def keep(i: tf.Tensor, _: Any) -> tf.Tensor:
            inside = i < n
            return tf.logical_and(inside, tf.gather(mask_t, tf.minimum(i, n - 1)))

        return self._examples.enumerate().filter(keep).map(lambda i, xy: xy)

    def _finish(self, ds: tf.data.Dataset, batch_size: int) -> tf.data.Dataset:
        batches = math.ceil(len(self) / batch_size)
        ds = ds.apply(tf.data.experimental.assert_cardinality(batches))
        return ds.prefetch(AUTOTUNE)

    def dataset(
        self,
        batch_size: int,
        targets: np.ndarray,
        encoding: LabelEncoding,
        shuffle: bool,
        seed: int | None,
    ) -> tf.data.Dataset:
        del targets  # labels come from the dataset itself, so x and y stay paired
        ds = self._selected()
        if shuffle:
            buffer = _shuffle_buffer(self._x_spec, len(self))
            ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
        ds = ds.batch(batch_size)
        ds = ds.map(
            lambda x, y: (x, stored_to_batch_tf(raw_to_stored_tf(y, encoding), encoding)),
            num_parallel_calls=AUTOTUNE,
        )
        return self._finish(ds, batch_size)

    def inputs(self, batch_size: int) -> tf.data.Dataset:
        ds = self._selected().map(lambda x, y: x).batch(batch_size)
        return self._finish(ds, batch_size)

    def order(self, batch_size: int, shuffle: bool, seed: int | None) -> tf.data.Dataset:
        """Batches of local indices in the order ``dataset`` yields examples.

        A shuffle's permutation depends only on its seed and buffer size, so
        shuffling the indices with the same buffer replays ``dataset``'s order.
        """
        ds = tf.data.Dataset.range(len(self))
        if shuffle:
            buffer = _shuffle_buffer(self._x_spec, len(self))
            ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
        return ds.batch(batch_size)

    def random_ops(self) -> list[str]:
        """Names of random-number ops in the user's pipeline (augmentation), if any."""
        return random_ops(self._examples)

    def sample(self, n: int) -> np.ndarray:
        n = min(n, len(self))
        for batch in self.inputs(n).take(1):
            return batch.numpy()
        raise DataError(  # pragma: no cover - the source changed under us
            format_error("The dataset yielded no examples", received={"n": n})
        )


# --------------------------------------------------------------------------- directory


def list_image_directory(
    path: str,
    *,
    image_size: tuple[int, int],
    color_mode: str,
    class_names: list[str] | None,
    interpolation: str,
) -> tuple[list[str], np.ndarray, list[str], tf.TensorSpec]:
    """Lists the images of a one-sub-folder-per-class directory (no decoding).

    Built on ``keras.utils.image_dataset_from_directory(..., labels="inferred",
    label_mode="int", batch_size=None, shuffle=False)``; labels come from
    ``ds.file_paths``.

    Returns:
        ``(file_paths, labels, class_names, x_spec)``.

    Raises:
        DataError: Missing path, no sub-folders or no images.
        LabelError: ``class_names`` names a sub-folder that does not exist.
    """
    import keras

    if not os.path.exists(path):
        raise DataError(
            format_error(
                f"The directory {path!r} does not exist",
                expected="a folder with one sub-folder of images per class",
                received={"path": path},
                fix="Check the path (relative paths start at the working directory "
                f"{os.getcwd()!r})",
            )
        )
    if not os.path.isdir(path):
        raise DataError(
            format_error(
                f"{path!r} is a file, not a directory",
                expected="a folder with one sub-folder of images per class",
                received={"path": path},
                fix="Pass the folder that holds the class sub-folders",
            )
        )
    subdirs = sorted(
        d
        for d in os.listdir(path)
        if os.path.isdir(os.path.join(path, d)) and not d.startswith(".")
    )
    if not subdirs:
        loose = [f for f in os.listdir(path) if f.lower().endswith(IMAGE_EXTENSIONS)]
        detail = f" ({len(loose)} images lie directly in it)" if loose else ""
        raise DataError(
            format_error(
                f"The directory {path!r} has no sub-folders{detail}",
                expected="one sub-folder per class, e.g. photos/cat/*.jpg, photos/dog/*.jpg",
                received={"path": path},
                fix="Move the images into one sub-folder per class",
            )
        )
    if class_names is not None:
        unknown = [c for c in class_names if c not in subdirs]
        if unknown:
            raise LabelError(
                format_error(
                    f"class_names {unknown} have no sub-folder in {path!r}",
                    expected=f"names among the sub-folders {subdirs}",
                    received={"class_names": class_names, "path": path},
                    fix="Fix the names, or leave class_names=None to use every sub-folder",
                )
            )
    try:
        keras_ds = keras.utils.image_dataset_from_directory(
            path,
            labels="inferred",
            label_mode="int",
            class_names=class_names,
            color_mode=color_mode,
            batch_size=None,
            image_size=tuple(image_size),
            shuffle=False,
            interpolation=interpolation,
            data_format="channels_last",
            verbose=False,
        )
    except ValueError as err:
        raise DataError(
            format_error(
                f"No images could be listed in {path!r}: {err}",
                expected=f"image files ({', '.join(IMAGE_EXTENSIONS)}) inside the class "
                "sub-folders",
                received={"path": path},
                fix="Put the images in the sub-folders",
            )
        ) from err
    names = list(keras_ds.class_names)
    files = list(keras_ds.file_paths)
    index = {n: i for i, n in enumerate(names)}
    root = os.path.abspath(path)
    labels = np.array(
        [index[os.path.relpath(os.path.abspath(f), root).split(os.sep)[0]] for f in files],
        dtype=np.int64,
    )
    # float32 whatever the method ("nearest" keeps uint8 in Keras): what load_image_file yields
    channels = COLOR_CHANNELS[color_mode]
    x_spec = tf.TensorSpec((*image_size, channels), tf.float32)
    return files, labels, names, x_spec


def find_unreadable_images(paths: Sequence[str], channels: int) -> list[tuple[str, str]]:
    """Tries decoding every file; returns ``(path, reason)`` for those that fail.

    Examples:
        >>> find_unreadable_images([], 3)
        []
    """
    bad: list[tuple[str, str]] = []
    for p in paths:
        try:
            tf.io.decode_image(tf.io.read_file(p), channels=channels, expand_animations=False)
        except (tf.errors.OpError, ValueError) as err:
            msg = str(getattr(err, "message", err)).strip().splitlines()
            bad.append((p, (msg[0] if msg else type(err).__name__)[:120]))
    return bad


class DirectorySource:
    """Image files decoded and resized on the fly (like ``image_dataset_from_directory``).

    Each file goes through :func:`finetunekit.data.decode.load_image_file`;
    :attr:`settings` is what a model trained on it records to read files
    and arrays the same way.
    """

    kind = "directory"

    def __init__(
        self,
        paths: np.ndarray,
        x_spec: tf.TensorSpec,
        image_size: tuple[int, int],
        channels: int,
        interpolation: str,
        color_mode: str | None = None,
    ) -> None:
        self._paths = paths
        self._x_spec = x_spec
        self._image_size = tuple(int(s) for s in image_size)
        self._channels = channels
        self._interpolation = interpolation
        self._color_mode = color_mode or {v: k for k, v in COLOR_CHANNELS.items()}[channels]

    @property
    def settings(self) -> dict[str, Any]:
        """``{"image_size": [h, w], "color_mode": ..., "interpolation": ...}``."""
        return {
            "image_size": list(self._image_size),
            "color_mode": self._color_mode,
            "interpolation": self._interpolation,
        }

    def __len__(self) -> int:
        return len(self._paths)

    @property
    def input_shape(self) -> tuple[int | None, ...]:
        return tuple(self._x_spec.shape.as_list())

    @property
    def input_dtype(self) -> str:
        return self._x_spec.dtype.name

    @property
    def file_paths(self) -> list[str]:
        return [str(p) for p in self._paths]

    def subset(self, local: np.ndarray) -> DirectorySource:
        return DirectorySource(
            self._paths[local],
            self._x_spec,
            (int(self._image_size[0]), int(self._image_size[1])),
            self._channels,
            self._interpolation,
            self._color_mode,
        )

    def load(self, path: tf.Tensor) -> tf.Tensor:
        """Reads, decodes and resizes one image as Keras does (a same-size resize is skipped)."""
        return load_image_file(path, self._image_size, self._channels, self._interpolation)

    def dataset(
        self,
        batch_size: int,
        targets: np.ndarray,
        encoding: LabelEncoding,
        shuffle: bool,
        seed: int | None,
    ) -> tf.data.Dataset:
        ds = tf.data.Dataset.from_tensor_slices((self._paths, targets))
        if shuffle:  # shuffling file names is cheap: a full shuffle every epoch
            ds = ds.shuffle(len(self), seed=seed, reshuffle_each_iteration=True)
        ds = ds.map(lambda p, t: (self.load(p), t), num_parallel_calls=AUTOTUNE)
        ds = ds.batch(batch_size)
        ds = ds.map(lambda x, t: (x, stored_to_batch_tf(t, encoding)), num_parallel_calls=AUTOTUNE)
        return ds.prefetch(AUTOTUNE)

    def inputs(self, batch_size: int) -> tf.data.Dataset:
        ds = tf.data.Dataset.from_tensor_slices(self._paths)
        ds = ds.map(self.load, num_parallel_calls=AUTOTUNE).batch(batch_size)
        return ds.prefetch(AUTOTUNE)

    def order(self, batch_size: int, shuffle: bool, seed: int | None) -> tf.data.Dataset:
        """Batches of local indices in the order ``dataset`` yields examples."""
        ds = tf.data.Dataset.range(len(self))
        if shuffle:
            ds = ds.shuffle(len(self), seed=seed, reshuffle_each_iteration=True)
        return ds.batch(batch_size)

    def sample(self, n: int) -> np.ndarray:
        n = min(n, len(self))
        for batch in self.inputs(n).take(1):
            return batch.numpy()
        raise DataError(format_error("No images to sample", received={"n": n}))  # pragma: no cover
