"""Embedding data: pairs, triplets, scored pairs and grouped items.

The data constructors ``DatasetAdapter.from_pairs``, ``from_triplets``,
``from_scored_pairs`` and ``from_groups`` check their inputs here, before
anything is built, and build the adapter of the ``embedding`` task
(:class:`~finetunekit.tasks.embedding.Embedding`).

Pairs and triplets are held by a :class:`PairSource`: one array (or string
array) per *slot* (anchor, positive, negative), never copied into one
stacked array; a batch stacks the slots' rows into ``(B, slots, *item)``.
Grouped items are an ordinary array or text source with the group ids as
targets.

Items are identified by their value (a text's string, an array row's bytes):
anchors and positives connected through identical items form one *group*
(a query with two passages, a passage shared by two queries, a symmetric
pair), and two examples of one group are never each other's negatives.
The stored targets of pair data hold the group and the item ids (see
:func:`pair_targets`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from finetunekit.data.sources import _ArrayStore
from finetunekit.data.text import check_texts, is_text_like
from finetunekit.errors import ArgumentTypeError, DataError, LabelError, format_error

__all__ = [
    "PAIRS",
    "SCORED",
    "TRIPLETS",
    "PairSource",
    "check_groups",
    "check_items",
    "check_scores",
    "pair_targets",
]

#: slot names of each kind of pair data
PAIRS = ("anchor", "positive")
TRIPLETS = ("anchor", "positive", "negative")
SCORED = ("first", "second")

_SHOWN = 5
AUTOTUNE = tf.data.AUTOTUNE


# --------------------------------------------------------------------------- checks


def check_items(values: Any, name: str) -> np.ndarray:
    """Checks one slot of items: texts (no empty strings) or a numeric array ``(N, ...)``.

    Raises:
        ArgumentTypeError: ``values`` is a single string, a dataset or a path.
        DataError: empty, ragged, not numeric, NaN / inf, or empty strings.

    Examples:
        >>> check_items(["a cat", "a dog"], "anchors").tolist()
        ['a cat', 'a dog']
        >>> check_items(np.zeros((2, 4, 4), "uint8"), "anchors").shape
        (2, 4, 4)
    """
    if isinstance(values, (str, bytes)) or is_text_like(values):
        texts = check_texts(values, name)
        empty = [i for i, t in enumerate(texts.tolist()) if not t.strip()]
        if empty:
            raise DataError(
                format_error(
                    f"{name} holds {len(empty)} empty text(s) (indices {empty[:_SHOWN]}"
                    f"{', ...' if len(empty) > _SHOWN else ''})",
                    expected="a non-empty text for every item (an empty text has no meaning "
                    "to embed, and all empty texts would count as one identical item)",
                    received={name: [texts[i] for i in empty[:_SHOWN]]},
                    fix="Drop those examples before building the adapter",
                )
            )
        return texts
    if isinstance(values, tf.data.Dataset) or not hasattr(values, "__len__"):
        raise ArgumentTypeError(
            format_error(
                f"{name} must be a list of texts or an array of items",
                expected="one text or one array row (image, features) per example",
                received={name: values},
                fix=f"Pass {name} as a list of strings or a numpy array of shape (N, ...)",
            )
        )
    try:
        arr = np.asarray(values)
    except (TypeError, ValueError) as exc:
        raise DataError(
            format_error(
                f"{name} cannot be read as one array: its items have different shapes",
                expected="an array of shape (N, ...) whose items share one shape",
                received={name: type(values).__name__},
                fix="Resize the items to one shape",
            )
        ) from exc
    if arr.dtype.kind not in "biuf" or arr.ndim < 2 or len(arr) == 0:
        raise DataError(
            format_error(
                f"{name} has dtype {arr.dtype} and shape {arr.shape}",
                expected="texts, or a non-empty numeric array of shape (N, D), (N, H, W) or "
                "(N, H, W, C)",
                received={name: arr.shape},
                fix="Pass a list of strings, or stack the items into one numeric array",
            )
        )
    if arr.dtype.kind == "f":
        bad = np.flatnonzero(~np.isfinite(arr.reshape(len(arr), -1)).all(axis=1))
        if len(bad):
            raise DataError(
                format_error(
                    f"{name} holds NaN or inf (items {bad[:_SHOWN].tolist()})",
                    expected="finite inputs",
                    received={name: arr.shape},
                    fix="Fill or drop those items",
                )
            )
    return arr


def check_slots(slots: Sequence[np.ndarray], names: Sequence[str]) -> None:
    """Raises unless every slot has the first slot's length, kind, item shape and dtype.

    Examples:
        >>> check_slots([np.array(["a"]), np.array(["b"])], ["anchors", "positives"])
    """
    first, name0 = slots[0], names[0]
    for arr, name in zip(slots[1:], names[1:], strict=True):
        if len(arr) != len(first):
            raise DataError(
                format_error(
                    f"{name0} and {name} have different lengths ({len(first)} and {len(arr)})",
                    expected=f"one {name[:-1]} per {name0[:-1]}",
                    received={name: len(arr), name0: len(first)},
                    fix="Pair the items up before building the adapter",
                )
            )
        texts = (first.dtype.kind == "U", arr.dtype.kind == "U")
        if texts[0] != texts[1] or (
            not texts[0] and (arr.shape[1:] != first.shape[1:] or arr.dtype != first.dtype)
        ):
            kind = [
                "texts" if t else f"arrays of {a.dtype} {a.shape[1:]}"
                for t, a in zip(texts, (first, arr), strict=True)
            ]
            raise DataError(
                format_error(
                    f"{name} holds {kind[1]} but {name0} holds {kind[0]}",
                    expected="items of one kind, shape and dtype in every slot (one encoder "
                    "embeds them all)",
                    received={name: kind[1]},
                    fix=f"Convert {name} like {name0} (e.g. astype, resize)",
                )
            )


def check_scores(scores: Any, n: int, name: str = "scores") -> np.ndarray:
    """Checks similarity scores: ``n`` finite floats in ``[-1, 1]``; returns float32.

    Examples:
        >>> check_scores([0.0, 1.0], 2).tolist()
        [0.0, 1.0]
    """
    if isinstance(scores, (str, bytes)) or not hasattr(scores, "__len__"):
        raise ArgumentTypeError(
            format_error(
                f"{name} must be a list or array of floats",
                expected="one similarity score per pair",
                received={name: scores},
                fix="Pass a list of floats in [-1, 1]",
            )
        )
    try:
        arr = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise LabelError(
            format_error(
                f"{name} are not numbers",
                expected="one float per pair",
                received={name: scores},
                fix="Convert the scores to floats",
            )
        ) from exc
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1 or len(arr) != n:
        raise DataError(
            format_error(
                f"{name} has shape {arr.shape} for {n} pairs",
                expected=f"one score per pair: shape ({n},)",
                received={name: arr.shape},
                fix="Pass one score per (first, second) pair",
            )
        )
    bad = np.flatnonzero(~np.isfinite(arr) | (arr < -1) | (arr > 1))
    if len(bad):
        raise LabelError(
            format_error(
                f"{name} must be cosine similarities in [-1, 1]; items "
                f"{bad[:_SHOWN].tolist()} are not ({arr[bad[:_SHOWN]].tolist()})",
                expected="finite floats in [-1, 1] (1: same, 0 or -1: unrelated)",
                received={name: arr[bad[:_SHOWN]].tolist()},
                fix="Rescale the scores, e.g. STS scores 0-5 as score / 5",
            )
        )
    return arr.astype(np.float32)


def check_groups(ids: np.ndarray, name: str = "groups", *, minimum: int = 2) -> None:
    """Raises when a group has fewer than ``minimum`` members (it has no positive).

    Examples:
        >>> check_groups(np.array([0, 0, 1, 1]))
    """
    counts = np.bincount(ids)
    alone = np.flatnonzero((counts > 0) & (counts < minimum))
    if len(alone):
        rows = [int(np.flatnonzero(ids == g)[0]) for g in alone[:_SHOWN]]
        raise LabelError(
            format_error(
                f"{len(alone)} group(s) have a single member (items {rows}): an item needs "
                "another item of its group as its positive",
                expected="at least two items in every group",
                received={name: f"{len(alone)} single-member group(s) of {len(counts)}"},
                fix="Drop the single items, or add another item of their group",
            )
        )


# --------------------------------------------------------------------------- targets


def item_keys(arr: np.ndarray) -> list[Any]:
    """A hashable key per item: the text, or the row's bytes (equal items, equal keys).

    Examples:
        >>> item_keys(np.array(["a", "b", "a"]))
        ['a', 'b', 'a']
    """
    if arr.dtype.kind == "U":
        return arr.tolist()  # type: ignore[no-any-return]
    flat = np.ascontiguousarray(arr).reshape(len(arr), -1)
    return [row.tobytes() for row in flat]


def pair_targets(slots: Sequence[np.ndarray]) -> np.ndarray:
    """The stored targets of pairs / triplets: int64 ``(N, 3)`` or ``(N, 5)``.

    Columns: ``group``, (triplets: the negative's ``group``), then the item
    id of every slot. Item ids number the distinct items of all slots
    together; groups are the connected components of the (anchor, positive)
    links, numbered from 0 in order of appearance; a negative that is no
    anchor or positive has a group of its own.

    Raises:
        DataError: a triplet's negative is in its anchor's group (it would be
            a positive as well).

    Examples:
        >>> pair_targets([np.array(["q1", "q2", "q3"]), np.array(["p1", "p1", "p2"])]).tolist()
        [[0, 0, 3], [0, 1, 3], [1, 2, 4]]
    """
    ids: dict[Any, int] = {}
    columns = []
    for arr in slots:
        keys = item_keys(arr)
        columns.append(np.array([ids.setdefault(k, len(ids)) for k in keys], np.int64))
    parent = np.arange(len(ids))

    def find(i: int) -> int:
        root = i
        while parent[root] != root:
            root = parent[root]
        while parent[i] != root:  # path compression
            parent[i], i = root, parent[i]
        return root

    for a, p in zip(columns[0].tolist(), columns[1].tolist(), strict=True):
        ra, rp = find(a), find(p)
        if ra != rp:
            parent[max(ra, rp)] = min(ra, rp)
    roots = np.array([find(i) for i in range(len(ids))], np.int64)
    dense: dict[int, int] = {}
    for root in roots[np.concatenate(columns)].tolist():  # number in order of appearance
        dense.setdefault(root, len(dense))
    group_of = np.array([dense[r] for r in roots.tolist()], np.int64)
    group = group_of[columns[0]]
    out = [group]
    if len(slots) == 3:
        neg_group = group_of[columns[2]]
        clash = np.flatnonzero(neg_group == group)
        if len(clash):
            raise DataError(
                format_error(
                    f"{len(clash)} triplet(s) have a negative that is the anchor or one of its "
                    f"positives (rows {clash[:_SHOWN].tolist()})",
                    expected="negatives that are neither the anchor nor linked to it as a "
                    "positive anywhere in the data",
                    received={"negatives": [str(slots[2][i])[:40] for i in clash[:_SHOWN]]},
                    fix="Drop those triplets or pick other negatives",
                )
            )
        out.append(neg_group)
    return np.stack([*out, *columns], axis=1)


# --------------------------------------------------------------------------- the source


class PairSource:
    """Pairs or triplets: one array (or string array) per slot, stacked per batch.

    Batches are ``(B, slots, *input_shape)`` in the items' dtype (``tf.string``
    for texts); ``input_shape`` is the shape of one item, what the encoder
    takes. Nothing is copied beyond the user's arrays.

    Examples:
        >>> src = PairSource([np.array(["q"]), np.array(["p"])], PAIRS)
        >>> src.input_shape, src.input_dtype, src.slot_names
        ((), 'string', ('anchor', 'positive'))
    """

    kind = "pairs"

    def __init__(
        self,
        slots: Sequence[np.ndarray | _ArrayStore],
        names: Sequence[str],
        positions: np.ndarray | None = None,
    ) -> None:
        self._stores = [s if isinstance(s, _ArrayStore) else _ArrayStore(s) for s in slots]
        self.slot_names = tuple(names)
        self._positions = positions

    def __len__(self) -> int:
        first = self._stores[0].x
        return len(first) if self._positions is None else len(self._positions)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of ONE item (``()`` for a text): what the encoder takes."""
        return tuple(int(d) for d in self._stores[0].x.shape[1:])

    @property
    def input_dtype(self) -> str:
        x = self._stores[0].x
        return "string" if x.dtype.kind == "U" else str(x.dtype)

    def slot_arrays(self) -> list[np.ndarray]:
        """The items of every slot, in example order (texts or arrays)."""
        return [s.x if self._positions is None else s.x[self._positions] for s in self._stores]

    def subset(self, local: np.ndarray) -> PairSource:
        pos = local if self._positions is None else self._positions[local]
        return PairSource(self._stores, self.slot_names, np.asarray(pos, np.int64))

    def order(self, batch_size: int, shuffle: bool, seed: int | None) -> tf.data.Dataset:
        """Batches of local indices in the order ``dataset`` yields examples."""
        ds = tf.data.Dataset.range(len(self))
        if shuffle:
            ds = ds.shuffle(len(self), seed=seed, reshuffle_each_iteration=True)
        return ds.batch(batch_size)

    def _gather(self) -> Any:
        tensors = [s.tensor() for s in self._stores]
        pos_t = None
        if self._positions is not None:
            with tf.device("/CPU:0"):
                pos_t = tf.convert_to_tensor(self._positions)

        def rows(idx: tf.Tensor) -> tf.Tensor:
            if pos_t is not None:
                idx = tf.gather(pos_t, idx)
            return tf.stack([tf.gather(t, idx) for t in tensors], axis=1)

        return rows

    def dataset(
        self,
        batch_size: int,
        targets: np.ndarray,
        encoding: Any,
        shuffle: bool,
        seed: int | None,
    ) -> tf.data.Dataset:
        from finetunekit.tasks.labels import stored_to_batch_tf

        rows = self._gather()
        with tf.device("/CPU:0"):
            t_t = tf.convert_to_tensor(targets)

        def gather(idx: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            return rows(idx), stored_to_batch_tf(tf.gather(t_t, idx), encoding)

        ds = self.order(batch_size, shuffle, seed)
        return ds.map(gather, num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)

    def inputs(self, batch_size: int) -> tf.data.Dataset:
        ds = self.order(batch_size, False, None)
        return ds.map(self._gather(), num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)

    def sample(self, n: int) -> np.ndarray:
        return np.stack([arr[:n] for arr in self.slot_arrays()], axis=1)


# --------------------------------------------------------------------------- constructors


def embedding_task(task: Any) -> Any:
    """The :class:`~finetunekit.tasks.embedding.Embedding` for ``task`` (None: the default).

    Raises:
        LabelError: ``task`` is another kind of task.

    Examples:
        >>> embedding_task(None).name
        'embedding'
    """
    from finetunekit.tasks.embedding import Embedding
    from finetunekit.tasks.labels import validate_task

    resolved = Embedding() if task is None else validate_task(task)
    if not isinstance(resolved, Embedding):
        raise LabelError(
            format_error(
                "Pairs, triplets and groups train embeddings, not "
                f"task={getattr(resolved, 'name', task)!r}",
                expected='task=None, "embedding" or a finetunekit.tasks.Embedding(...)',
                received={"task": task},
                fix="Leave task=None, or pass tasks.Embedding(...) for other settings",
            )
        )
    return resolved


def pair_data(
    slots: dict[str, Any], task: Any, scores: Any = None
) -> tuple[PairSource, np.ndarray, Any]:
    """Checks pair / triplet / scored-pair inputs and returns ``(source, targets, encoding)``.

    ``slots`` maps the argument names (``"anchors"``, ...) to their items, in
    slot order; with ``scores`` the pairs are scored pairs.
    """
    from finetunekit.tasks.labels import LabelEncoding

    resolved = embedding_task(task)
    names = list(slots)
    arrays = [check_items(values, name) for name, values in slots.items()]
    check_slots(arrays, names)
    slot_names: tuple[str, ...]
    if scores is not None:
        targets = check_scores(scores, len(arrays[0]))
        encoding = LabelEncoding(task=resolved.name, class_names=(), raw="values")
        slot_names = SCORED
    else:
        targets = pair_targets(arrays)
        slot_names = TRIPLETS if len(arrays) == 3 else PAIRS
        encoding = LabelEncoding(
            task=resolved.name,
            class_names=(),
            raw="index",
            target_shape=(targets.shape[1],),
        )
    from dataclasses import replace

    encoding = replace(encoding, task_object=resolved)
    return PairSource(arrays, slot_names), targets, encoding


def group_data(items: Any, groups: Any, task: Any) -> tuple[Any, np.ndarray, Any]:
    """Checks grouped items and returns ``(source, targets, encoding)`` (``from_groups``)."""
    from finetunekit.data.sources import ArraySource
    from finetunekit.data.text import from_str_array
    from finetunekit.tasks.labels import encode_targets

    resolved = embedding_task(task)
    arr = check_items(items, "items")
    if isinstance(groups, (str, bytes)) or not hasattr(groups, "__len__"):
        raise ArgumentTypeError(
            format_error(
                "groups must be a list or array of group labels",
                expected="one int or string label per item",
                received={"groups": groups},
                fix="Pass one group label per item",
            )
        )
    if len(groups) != len(arr):
        raise DataError(
            format_error(
                f"items and groups have different lengths ({len(arr)} and {len(groups)})",
                expected="one group label per item",
                received={"groups": len(groups), "items": len(arr)},
                fix="Check that the items and labels come from the same examples",
            )
        )
    targets, encoding = encode_targets(groups, task=resolved, name="groups")
    source = from_str_array(arr) if arr.dtype.kind == "U" else ArraySource(arr)
    return source, targets, encoding
