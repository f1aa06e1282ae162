"""Texts and sentence pairs as inputs of a :class:`~finetunekit.data.DatasetAdapter`.

Texts stay raw strings all the way into the model: the backbone's own
tokenizer / preprocessor is a layer of the fine-tuned model (see
``finetunekit.backbones.text``). A single text is one string per example
(per-example input shape ``()``); a sentence pair is two strings per example,
stored as an ``(N, 2)`` string array (per-example shape ``(2,)``, first
segment in column 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from finetunekit.data.sources import ArraySource, _ArrayStore
from finetunekit.errors import ArgumentTypeError, DataError, format_error

__all__ = [
    "TextSource",
    "check_texts",
    "check_text_pairs",
    "is_text_like",
    "as_predict_inputs",
    "text_lengths",
    "length_grouped_batches",
    "GROUP_WINDOW",
    "GROUP_RESOLUTION",
]

_MAX_SHOWN = 5

GROUP_WINDOW = 16
"""Shuffled text batches are grouped by length within windows of this many batches."""

GROUP_RESOLUTION = 32
"""Texts are sorted by ``characters // GROUP_RESOLUTION``: about 8 tokens of English, the
step dynamic padding rounds to; equal keys keep their random order, so which texts share a
batch changes from epoch to epoch even when one window holds the whole data set."""


def is_text_like(x: Any) -> bool:
    """Returns whether ``x`` looks like texts: a string array or a sequence of strings.

    Examples:
        >>> is_text_like(["a cat", "a dog"]), is_text_like([[1, 2]])
        (True, False)
    """
    if isinstance(x, (str, bytes)):
        return False
    if isinstance(x, np.ndarray):
        if x.dtype.kind in "US":
            return True
        if x.dtype == object and x.size:
            return isinstance(x.flat[0], (str, bytes))
        return False
    if isinstance(x, tf.Tensor):
        return x.dtype == tf.string
    if isinstance(x, (list, tuple)) and len(x):
        first = x[0]
        if isinstance(first, (list, tuple)) and len(first):
            first = first[0]
        return isinstance(first, (str, bytes, np.str_, np.bytes_))
    return False


def _to_str_array(values: Any, name: str) -> np.ndarray:
    """Converts ``values`` to a numpy unicode array, rejecting non-strings by index."""
    if isinstance(values, (str, bytes)):
        raise ArgumentTypeError(
            format_error(
                f"{name} is a single string",
                expected="one string per example (a list or array of strings)",
                received={name: values},
                fix=f"Wrap it in a list: {name}=[{values!r}]",
            )
        )
    if isinstance(values, tf.Tensor):
        values = values.numpy()
    if not hasattr(values, "__len__"):
        raise ArgumentTypeError(
            format_error(
                f"{name} must be a list or array of strings",
                expected="one string per example",
                received={name: values},
                fix=f"Pass {name} as a list of str",
            )
        )
    arr = np.asarray(values, dtype=object)
    flat = arr.reshape(-1)
    bad = [i for i, v in enumerate(flat) if not isinstance(v, (str, bytes, np.str_, np.bytes_))]
    if bad:
        shown = ", ".join(f"{i}: {flat[i]!r}" for i in bad[:_MAX_SHOWN])
        raise DataError(
            format_error(
                f"{name} holds {len(bad)} value(s) that are not strings (index: value -> {shown})",
                expected="a string for every example (missing texts as '')",
                received={name: _short(arr)},
                fix="Drop those examples or fill them, e.g. [t if isinstance(t, str) else '' "
                "for t in texts]",
            )
        )
    text = [v.decode("utf-8") if isinstance(v, (bytes, np.bytes_)) else str(v) for v in flat]
    return np.asarray(text, dtype=str).reshape(arr.shape) if text else np.asarray([], dtype=str)


def _short(arr: np.ndarray) -> str:
    flat = arr.reshape(-1)
    head = ", ".join(repr(v)[:40] for v in flat[:3])
    return f"array of shape {arr.shape} [{head}{', ...' if flat.size > 3 else ''}]"


def check_texts(texts: Any, name: str = "texts") -> np.ndarray:
    """Checks single texts and returns them as a 1-D numpy string array.

    Raises:
        ArgumentTypeError: ``texts`` is one string, not a sequence.
        DataError: empty, not 1-D, or holding non-strings (e.g. ``None`` / NaN).

    Examples:
        >>> check_texts(["a cat", b"a dog"]).tolist()
        ['a cat', 'a dog']
    """
    arr = _to_str_array(texts, name)
    if arr.ndim == 2 and arr.shape[1] == 2:
        raise DataError(
            format_error(
                f"{name} has two strings per example",
                expected="one string per example (shape (N,))",
                received={name: _short(arr)},
                fix="Use DatasetAdapter.from_text_pairs(first, second, labels) for sentence pairs",
            )
        )
    if arr.ndim != 1:
        raise DataError(
            format_error(
                f"{name} has shape {arr.shape}",
                expected="one string per example, shape (N,)",
                received={name: _short(arr)},
                fix=f"Flatten {name} to a list of strings",
            )
        )
    if len(arr) == 0:
        raise DataError(
            format_error(
                f"{name} is empty",
                expected="at least one text",
                received={name: _short(arr)},
                fix="Pass non-empty data",
            )
        )
    return arr


def check_text_pairs(first: Any, second: Any) -> np.ndarray:
    """Checks two aligned sequences of texts and returns an ``(N, 2)`` string array.

    Raises:
        DataError: different lengths, empty, or non-strings.

    Examples:
        >>> check_text_pairs(["a cat"], ["a kitten"]).shape
        (1, 2)
    """
    a = check_texts(first, "first")
    b = check_texts(second, "second")
    if len(a) != len(b):
        raise DataError(
            format_error(
                f"first and second have different lengths ({len(a)} and {len(b)})",
                expected="one second text per first text",
                received={"first": len(a), "second": len(b)},
                fix="Pair the sentences up before building the adapter",
            )
        )
    return np.stack([a, b], axis=1)


def text_lengths(arr: np.ndarray) -> np.ndarray:
    """A cheap length estimate per example: its characters (pairs: both texts together).

    Used to group texts of similar length into the same training batch; it
    only needs to rank texts roughly as their token counts do.

    Examples:
        >>> text_lengths(np.array(["a cat", "a"])).tolist()
        [5, 1]
        >>> text_lengths(np.array([["a cat", "a"]])).tolist()
        [6]
    """
    lengths = np.char.str_len(np.asarray(arr, dtype=str)).astype(np.int64)
    return lengths.sum(axis=1) if lengths.ndim == 2 else lengths


def length_grouped_batches(
    lengths: np.ndarray,
    batch_size: int,
    seed: int | None,
    window: int = GROUP_WINDOW,
    resolution: int = GROUP_RESOLUTION,
) -> tf.data.Dataset:
    """Shuffled batches of example indices, each holding texts of similar length.

    Every epoch: shuffle all indices; cut them into windows of
    ``window * batch_size``; sort each window by ``lengths // resolution``
    (stable, so ties keep the shuffled order) and cut it into batches; then shuffle the order
    of all the epoch's batches. Every example appears exactly once per epoch,
    which examples share a window changes every epoch, and batches of short
    and long texts alternate at random. With dynamic padding
    (``Backbone.from_preset(..., padding="dynamic")``) a batch then costs its
    own longest text, not the longest of a random draw.

    Args:
        lengths: one length estimate per example (see :func:`text_lengths`).
        batch_size: examples per batch (the last batch of a window may be smaller).
        seed: seed of both shuffles (``None``: not repeatable).
        window: batches per sorting window; ``1`` sorts only inside a batch
            (no grouping gain), larger windows group more tightly.
        resolution: lengths closer than this may share a sort key (and then
            keep their random order); ``1`` sorts by exact length.

    Examples:
        >>> ds = length_grouped_batches(np.array([10, 90, 20, 80]), batch_size=2, seed=0)
        >>> sorted(sorted(b.numpy().tolist()) for b in ds)
        [[0, 2], [1, 3]]
    """
    n = len(lengths)
    keys = np.asarray(lengths, np.int64) // resolution
    span = batch_size * window
    # Which sorted positions each batch takes: windows of `span` positions, each cut into
    # batches of `batch_size` (the last of a window may be smaller). Fixed for the data.
    starts, ends = [], []
    for first in range(0, n, span):
        last = min(n, first + span)
        for start in range(first, last, batch_size):
            starts.append(start)
            ends.append(min(last, start + batch_size))
    batches = len(starts)
    with tf.device("/CPU:0"):
        keys_t = tf.convert_to_tensor(keys)
        window_t = tf.range(n, dtype=tf.int64) // span  # the window of each shuffled position
        starts_t = tf.constant(starts, tf.int64)
        ends_t = tf.constant(ends, tf.int64)
    top = int(keys.max(initial=0)) + 1

    def epoch(draw: tf.Tensor) -> tf.data.Dataset:
        # One random draw per pass makes the whole pass (a stateless function of it): a
        # chain of two reshuffling ops did not advance on an iterator that was only
        # created, so a resumed run (engine._fast_forward) saw other batches.
        perm = tf.random.experimental.stateless_shuffle(
            tf.range(n, dtype=tf.int64), seed=tf.stack([draw, 0])
        )
        order = tf.argsort(window_t * top + tf.gather(keys_t, perm), stable=True)
        ordered = tf.gather(perm, order)
        picks = tf.random.experimental.stateless_shuffle(
            tf.range(batches, dtype=tf.int64), seed=tf.stack([draw, 1])
        )
        return tf.data.Dataset.from_tensor_slices(picks).map(
            lambda b: ordered[starts_t[b] : ends_t[b]]
        )

    draws = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).take(1)
    ds = draws.flat_map(epoch)
    # flat_map loses the count; Keras needs it to end an epoch without running dry
    return ds.apply(tf.data.experimental.assert_cardinality(batches))


class TextSource(ArraySource):
    """Raw strings held in memory: ``(N,)`` single texts or ``(N, 2)`` sentence pairs.

    Batches are ``tf.string`` tensors of shape ``(B,)`` or ``(B, 2)``. Shuffled
    (training) batches group texts of similar length (see
    :func:`length_grouped_batches`) unless ``group_by_length=False``;
    unshuffled batches (validation, prediction) keep the example order.

    Args:
        x: the checked string array (or the store it lives in).
        positions: the rows of a subset.
        group_by_length: group shuffled batches by length.

    Examples:
        >>> TextSource(check_texts(["a", "b"])).input_shape
        ()
    """

    kind = "texts"

    def __init__(
        self,
        x: np.ndarray | _ArrayStore,
        positions: np.ndarray | None = None,
        *,
        group_by_length: bool = True,
    ) -> None:
        super().__init__(x, positions)
        if not isinstance(group_by_length, bool):
            raise ArgumentTypeError(
                format_error(
                    "group_by_length must be a bool",
                    expected="True (group shuffled batches by text length) or False",
                    received={"group_by_length": group_by_length},
                )
            )
        self.group_by_length = group_by_length

    def lengths(self) -> np.ndarray:
        """The length estimate (:func:`text_lengths`) of every example of this source."""
        x = self._store.x if self._positions is None else self._store.x[self._positions]
        return text_lengths(x)

    def _index_dataset(self, batch_size: int, shuffle: bool, seed: int | None) -> tf.data.Dataset:
        if not (shuffle and self.group_by_length):
            return super()._index_dataset(batch_size, shuffle, seed)
        return length_grouped_batches(self.lengths(), batch_size, seed)

    def grouped(self, group_by_length: bool) -> TextSource:
        """The same texts, with shuffled batches grouped by length or not."""
        return TextSource(self._store, self._positions, group_by_length=group_by_length)

    @property
    def input_shape(self) -> tuple[int | None, ...]:
        return tuple(int(d) for d in self._store.x.shape[1:])

    @property
    def input_dtype(self) -> str:
        return "string"

    @property
    def pairs(self) -> bool:
        """Whether every example is a pair of texts."""
        return self._store.x.ndim == 2

    def subset(self, local: np.ndarray) -> TextSource:
        pos = local if self._positions is None else self._positions[local]
        return TextSource(
            self._store, np.asarray(pos, np.int64), group_by_length=self.group_by_length
        )


def from_str_array(arr: np.ndarray) -> TextSource:
    """Wraps a checked string array (see :func:`check_texts`) as a :class:`TextSource`."""
    return TextSource(_ArrayStore(arr))


def as_predict_inputs(x: Any, batch_size: int, model: Any = None) -> Any:
    """Turns raw texts into what ``keras.Model.predict`` accepts; other inputs pass through.

    Keras cannot read numpy unicode arrays or lists of strings, so texts become
    a batched ``tf.data`` of ``tf.string``. A ``(first, second)`` tuple of two
    sequences is stacked into pairs when ``model`` takes pairs (input shape ``(None, 2)``).

    Examples:
        >>> ds = as_predict_inputs(["a cat", "a dog"], batch_size=8)
        >>> next(iter(ds)).dtype.name
        'string'
    """
    if isinstance(x, (tf.data.Dataset, dict)) or not is_text_like(x):
        return x
    takes_pairs = False
    if model is not None:
        try:
            takes_pairs = tuple(model.inputs[0].shape[1:]) == (2,)
        except (AttributeError, IndexError, TypeError, ValueError):
            takes_pairs = False
    if (
        takes_pairs
        and isinstance(x, tuple)
        and len(x) == 2
        and all(isinstance(p, Sequence | np.ndarray) and not isinstance(p, str) for p in x)
        and np.ndim(np.asarray(x[0], dtype=object)) == 1
    ):
        arr = check_text_pairs(x[0], x[1])
    else:
        arr = _to_str_array(x, "x")
    return tf.data.Dataset.from_tensor_slices(tf.constant(arr)).batch(batch_size)


def check_texts_or_pairs(x: Any) -> np.ndarray:
    """Checks ``x`` given to ``from_arrays``: ``(N,)`` texts or ``(N, 2)`` sentence pairs.

    Examples:
        >>> check_texts_or_pairs([["a", "b"], ["c", "d"]]).shape
        (2, 2)
    """
    arr = _to_str_array(x, "x")
    if arr.ndim == 2 and arr.shape[1] == 2:
        return check_text_pairs(arr[:, 0], arr[:, 1])
    if arr.ndim != 1:
        raise DataError(
            format_error(
                f"x holds strings of shape {arr.shape}",
                expected="texts of shape (N,) or sentence pairs of shape (N, 2)",
                received={"x": _short(arr)},
                fix="Pass one string per example, or use DatasetAdapter.from_text_pairs",
            )
        )
    return check_texts(arr, "x")
