"""Target inference and encoding of the built-in tasks.

This module turns whatever labels a user has (ints, strings, bools, one-hot or
multi-hot rows, float targets) into one of the four stored encodings of the
built-in tasks (:mod:`finetunekit.tasks`; see ``docs/internal/architecture.md``):

| task | stored targets (numpy) | batch targets (float32) |
| --- | --- | --- |
| multiclass | int64 class indices, (N,) | one-hot, (B, K) |
| binary | int64 in {0, 1}, (N,) | (B, 1) |
| multilabel | float32 multi-hot, (N, K) | (B, K) |
| regression | float32, (N,) or (N, D) | (B, D) |

It also records *how* raw labels map to that encoding (a :class:`LabelEncoding`),
so ``tf.data`` sources can encode labels on the fly, batch by batch. The
built-in tasks' ``encode`` methods call :func:`encode_labels`; a user task
reads value targets with :func:`encode_values` unless it overrides ``encode``.

Inference rules (``task=None``):

* strings / bytes (1-D): classes are the sorted distinct labels, or
  ``class_names`` when given; 2 classes -> ``"binary"``, else ``"multiclass"``.
* bools (1-D): ``"binary"`` with class names ``["False", "True"]``.
* integers (1-D): class indices; ``K = max + 1`` (or ``len(class_names)``),
  class names ``"0" .. "K-1"`` unless given; ``K == 2`` -> ``"binary"``.
* floats (1-D): ``"regression"``. Pass ``task="multiclass"`` (or
  ``"binary"``) to treat integer-valued floats as class indices.
* 2-D with one column: 0/1 values -> ``"binary"``; integers -> as 1-D;
  other values -> ``"regression"`` with shape (N, 1).
* 2-D, values all 0/1: every row has exactly one 1 -> one-hot
  (``"binary"`` for 2 columns, else ``"multiclass"``); otherwise
  ``"multilabel"`` (multi-hot).
* 2-D with other values: ``"regression"`` with shape (N, D).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from finetunekit.errors import ArgumentTypeError, LabelError, format_error

if TYPE_CHECKING:  # pragma: no cover - typing only
    from finetunekit.tasks.base import Task

__all__ = [
    "LabelEncoding",
    "encode_labels",
    "encode_targets",
    "encode_values",
    "raw_to_stored_tf",
    "reencode",
    "stored_to_batch_tf",
    "task_of",
    "validate_class_names",
    "validate_task",
]

_MAX_SHOWN = 5


@dataclass(frozen=True)
class LabelEncoding:
    """How raw labels map to the stored targets of one adapter.

    Attributes:
        task: The task's name (``data.task``).
        class_names: Final class names (target names for regression).
        raw: How a raw label is read: ``"index"`` (ints, bools, integer-valued
            floats, any shape ``(N,)`` or ``(N, 1)``), ``"string"`` (looked up
            in ``raw_names``), ``"onehot"`` (argmax of a row), ``"multihot"``
            or ``"values"`` (regression).
        raw_names: For ``raw="string"``: the names raw labels are looked up in.
        target_shape: Per-example stored target shape: ``()`` for
            multiclass/binary, ``(K,)`` for multilabel, ``()`` or ``(D,)`` for
            regression.
        remap: Optional mapping raw class index -> final class index (set when
            an adapter is re-encoded to a larger / reordered class list).
        task_object: The :class:`~finetunekit.Task` itself when it is not a
            built-in one (a user task may carry settings); built-ins are
            found by name. Use :func:`task_of`.
    """

    task: str
    class_names: tuple[str, ...]
    raw: str
    raw_names: tuple[str, ...] = ()
    target_shape: tuple[int, ...] = ()
    remap: tuple[int, ...] | None = None
    task_object: Task | None = field(default=None, compare=False, repr=False)

    @property
    def num_classes(self) -> int | None:
        """The task's number of classes for these targets (``None`` without classes)."""
        return task_of(self).num_classes(self)

    @property
    def target_dim(self) -> int:
        """Width of the float32 batch targets."""
        return task_of(self).target_dim(self)


def task_of(encoding: LabelEncoding) -> Task:
    """The :class:`~finetunekit.Task` an encoding belongs to.

    Examples:
        >>> _, enc = encode_labels([0, 1, 2])
        >>> type(task_of(enc)).__name__
        'Multiclass'
    """
    if encoding.task_object is not None:
        return encoding.task_object
    from finetunekit.tasks.base import get

    return get(encoding.task)


# --------------------------------------------------------------------------- arguments


def validate_task(task: Any) -> Task | None:
    """Checks ``task`` (a name, a :class:`~finetunekit.Task` or None) and returns the Task.

    Raises:
        ArgumentTypeError: ``task`` is not a string, a Task or None.
        LabelError: no task of that name is registered.

    Examples:
        >>> validate_task("Multiclass").name
        'multiclass'
    """
    if task is None:
        return None
    from finetunekit.tasks.base import get

    return get(task)


def validate_class_names(class_names: Any) -> list[str] | None:
    """Checks ``class_names`` (a sequence of distinct strings) and returns a list.

    Raises:
        ArgumentTypeError: Not a list/tuple/array of strings.
        LabelError: Empty, or with duplicates.

    Examples:
        >>> validate_class_names(("cat", "dog"))
        ['cat', 'dog']
    """
    if class_names is None:
        return None
    if isinstance(class_names, (str, bytes)) or not isinstance(class_names, (Sequence, np.ndarray)):
        raise ArgumentTypeError(
            format_error(
                "class_names must be a list of strings",
                expected="a list or tuple of distinct class names, e.g. ['cat', 'dog']",
                received={"class_names": class_names},
                fix="Wrap the names in a list",
            )
        )
    names = list(class_names.tolist() if isinstance(class_names, np.ndarray) else class_names)
    bad = [n for n in names if not isinstance(n, str)]
    if bad:
        raise ArgumentTypeError(
            format_error(
                "Every class name must be a string",
                expected="a list of str",
                received={"class_names": names},
                fix="Convert the names with [str(n) for n in class_names]",
            )
        )
    if not names:
        raise LabelError(
            format_error(
                "class_names is empty",
                expected="at least one class name",
                received={"class_names": names},
                fix="Pass the class names, or class_names=None to infer them",
            )
        )
    seen: set[str] = set()
    dups = sorted({n for n in names if n in seen or seen.add(n)})  # type: ignore[func-returns-value]
    if dups:
        raise LabelError(
            format_error(
                f"class_names contains duplicates: {dups[:_MAX_SHOWN]}",
                expected="distinct class names",
                received={"class_names": names},
                fix="Remove the repeated names",
            )
        )
    return names


# --------------------------------------------------------------------------- helpers


def _shown(values: Any) -> str:
    values = list(values)
    text = ", ".join(repr(v) for v in values[:_MAX_SHOWN])
    if len(values) > _MAX_SHOWN:
        text += f", ... ({len(values)} in all)"
    return "[" + text + "]"


def _kind(value: Any) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "bool"
    if isinstance(value, numbers.Integral):
        return "int"
    if isinstance(value, numbers.Real):
        return "float"
    if isinstance(value, (str, bytes, np.str_, np.bytes_)):
        return "str"
    if isinstance(value, (list, tuple, np.ndarray)):
        return "sequence"
    return type(value).__name__


def _as_label_array(y: Any, name: str) -> np.ndarray:
    """np.asarray(y) with checks for mixed and ragged labels."""
    if isinstance(y, (list, tuple)) and len(y) and not isinstance(y[0], (list, tuple, np.ndarray)):
        kinds = {_kind(v) for v in y}
        if "str" in kinds and len(kinds) > 1:
            raise LabelError(
                format_error(
                    f"The labels mix types: {sorted(kinds)}",
                    expected="labels of one type: all class-name strings or all integers",
                    received={name: _shown(y)},
                    fix="Convert every label to the same type, e.g. [str(v) for v in y]",
                )
            )
    try:
        arr = np.asarray(y)
    except (ValueError, TypeError) as err:
        raise LabelError(
            format_error(
                "The labels cannot be read as one array (ragged rows?)",
                expected="a 1-D array of labels or a 2-D (N, K) array of one-hot / "
                "multi-hot / target rows",
                received={name: _short_obj(y)},
                fix="Give every row the same length; for lists of label sets build a "
                "multi-hot matrix (e.g. sklearn MultiLabelBinarizer)",
            )
        ) from err
    if arr.dtype == object:
        flat = arr.ravel()
        kinds = {_kind(v) for v in flat}
        if kinds == {"str"}:
            text = [v.decode() if isinstance(v, bytes) else str(v) for v in flat]
            arr = np.asarray(text).reshape(arr.shape)
        elif kinds <= {"int", "bool"} and "int" in kinds:
            arr = arr.astype(np.int64)
        elif kinds <= {"int", "float", "bool"}:
            arr = arr.astype(np.float64)
        elif "sequence" in kinds:
            raise LabelError(
                format_error(
                    "The labels are ragged (rows of different lengths)",
                    expected="a 1-D array of labels or a 2-D (N, K) array with equal rows",
                    received={name: _short_obj(y)},
                    fix="Build a multi-hot matrix (e.g. sklearn MultiLabelBinarizer)",
                )
            )
        else:
            raise LabelError(
                format_error(
                    f"The labels mix types or have an unsupported type: {sorted(kinds)}",
                    expected="labels of one type: class-name strings, ints, bools or floats",
                    received={name: _short_obj(y)},
                    fix="Convert every label to the same type",
                )
            )
    if arr.dtype.kind == "S":
        arr = np.char.decode(arr, "utf-8")
    return arr


def _short_obj(y: Any) -> Any:
    if isinstance(y, np.ndarray):
        return y
    if isinstance(y, (list, tuple)):
        return _shown(y)
    return y


def _check_finite(arr: np.ndarray, name: str) -> None:
    if arr.dtype.kind != "f":
        return
    bad = ~np.isfinite(arr)
    if bad.any():
        rows = np.unique(np.nonzero(bad)[0])
        raise LabelError(
            format_error(
                f"The labels contain NaN or infinite values ({int(bad.sum())} values, "
                f"rows {_shown(rows.tolist())})",
                expected="finite labels",
                received={name: arr},
                fix="Drop or fill the examples with missing targets before building the adapter",
            )
        )


def _is_binary_valued(arr: np.ndarray) -> bool:
    if arr.dtype.kind == "b":
        return True
    return bool(np.isin(arr, (0, 1)).all())


def _integral(arr: np.ndarray) -> bool:
    return arr.dtype.kind in "iub" or bool(np.all(np.mod(arr, 1) == 0))


def _single_class_error(present: list[str], name: str, arr: np.ndarray) -> LabelError:
    return LabelError(
        format_error(
            f"Only one class is present in the labels ({present[0]!r})",
            expected="at least two different classes to train a classifier",
            received={name: arr},
            fix="Check the labels; for a subset that legitimately holds one class (e.g. a "
            "test set) pass class_names=<the full class list>",
        )
    )


# --------------------------------------------------------------------------- inference


def encode_targets(
    y: Any,
    *,
    task: Task | None = None,
    class_names: list[str] | None = None,
    name: str = "y",
    check_single_class: bool | None = None,
) -> tuple[np.ndarray, LabelEncoding]:
    """Encodes raw labels for ``task``, or infers a built-in task when it is ``None``.

    The entry point of every data source: ``task.encode`` does the work (the
    built-ins call :func:`encode_labels`); the encoding remembers the task
    object, so a user task's settings reach the ``tf.data`` pipeline.

    Examples:
        >>> targets, enc = encode_targets([0.5, 2.0])
        >>> enc.task, targets.dtype.name
        ('regression', 'float32')
    """
    if task is None:
        return encode_labels(
            y, task=None, class_names=class_names, name=name, check_single_class=check_single_class
        )
    targets, encoding = task.encode(
        y, class_names=class_names, name=name, check_single_class=check_single_class
    )
    return targets, replace(encoding, task=task.name, task_object=task)


def _label_array(y: Any, name: str) -> np.ndarray:
    """``y`` as a numpy array of one label row per example, after the generic checks."""
    arr = _as_label_array(y, name)
    if arr.ndim == 0:
        raise LabelError(
            format_error(
                "The labels are a single scalar",
                expected="one label per example: an array of shape (N,) or (N, K)",
                received={name: y},
                fix="Pass an array with one entry per example",
            )
        )
    if len(arr) == 0:
        raise LabelError(
            format_error(
                "The labels are empty",
                expected="at least one example",
                received={name: arr},
                fix="Pass non-empty data",
            )
        )
    if arr.ndim > 2:
        raise LabelError(
            format_error(
                f"The labels have {arr.ndim} dimensions",
                expected="shape (N,) for class labels / scalar targets or (N, K) for one-hot, "
                "multi-hot or vector targets",
                received={name: arr},
                fix="Flatten the per-example targets to 1-D, e.g. y.reshape(len(y), -1)",
            )
        )
    kind = arr.dtype.kind
    if kind not in "biufU":
        raise LabelError(
            format_error(
                f"Labels of dtype {arr.dtype} are not supported",
                expected="ints, bools, floats or class-name strings",
                received={name: arr},
                fix="Convert the labels to ints or strings",
            )
        )
    _check_finite(arr, name)
    return arr


def encode_values(
    y: Any, class_names: list[str] | None, name: str = "y", *, task: Task | None = None
) -> tuple[np.ndarray, LabelEncoding]:
    """Reads value targets: float32, shape ``(N,)`` or ``(N, D)`` (the base ``Task.encode``).

    ``class_names`` name the ``D`` target columns (or ``None``).

    Examples:
        >>> targets, enc = encode_values([[1, 2], [3, 4]], ["w", "h"])
        >>> targets.shape, enc.target_shape, enc.class_names
        ((2, 2), (2,), ('w', 'h'))
    """
    arr = _label_array(y, name)
    task_name = task.name if task is not None else "regression"
    if arr.dtype.kind == "U":
        raise LabelError(
            format_error(
                f'String labels cannot be used with task="{task_name}"',
                expected="numeric targets",
                received={name: arr, "task": task_name},
                fix="Convert the labels to numbers",
            )
        )
    targets, encoding = _encode_regression(arr, class_names, name)
    return targets, replace(encoding, task=task_name, task_object=task)


def encode_labels(
    y: Any,
    *,
    task: str | None = None,
    class_names: list[str] | None = None,
    name: str = "y",
    check_single_class: bool | None = None,
) -> tuple[np.ndarray, LabelEncoding]:
    """Infers a built-in task and encodes labels as stored targets.

    Args:
        y: Raw labels (anything ``np.asarray`` accepts).
        task: The name of a built-in task, or None to infer it.
        class_names: Validated class names or None to infer them.
        name: Name of the argument shown in error messages.
        check_single_class: Raise when only one class is present. Defaults to
            ``class_names is None`` (a given class list may legitimately be only
            partly present, e.g. in a test set).

    Returns:
        ``(targets, encoding)``: the stored targets (see the module table) and
        the :class:`LabelEncoding` describing them.

    Raises:
        LabelError: The labels cannot be used, or contradict ``task`` /
            ``class_names``.

    Examples:
        >>> targets, enc = encode_labels(["dog", "cat", "dog"])
        >>> targets.tolist(), enc.task, enc.class_names
        ([1, 0, 1], 'binary', ('cat', 'dog'))
    """
    if check_single_class is None:
        check_single_class = class_names is None
    arr = _label_array(y, name)
    kind = arr.dtype.kind
    if kind == "U":
        if arr.ndim != 1:
            raise LabelError(
                format_error(
                    "String labels must be one name per example",
                    expected="a 1-D array of class names",
                    received={name: arr},
                    fix="Pass one class name per example, or a multi-hot matrix for multilabel",
                )
            )
        return _encode_strings(arr, task, class_names, name, check_single_class)

    if arr.ndim == 2 and arr.shape[1] == 1 and task not in ("multilabel", "regression"):
        # a single column: (N, 1) 0/1 is the Keras layout of binary targets
        if task is not None or kind in "iub" or _is_binary_valued(arr):
            return _encode_indices(arr.reshape(-1), task, class_names, name, check_single_class)
        return _encode_regression(arr, class_names, name)
    if arr.ndim == 2:
        return _encode_rows(arr, task, class_names, name, check_single_class)
    if task == "multilabel":
        raise LabelError(
            format_error(
                'task="multilabel" needs one multi-hot row per example',
                expected="a 2-D (N, K) array of 0/1 values",
                received={name: arr},
                fix="Build a multi-hot matrix (e.g. sklearn MultiLabelBinarizer), or use "
                'task="multiclass" for one label per example',
            )
        )
    if task == "regression" or (task is None and kind == "f"):
        return _encode_regression(arr, class_names, name)
    if kind == "b" and class_names is None:
        class_names = ["False", "True"]
    return _encode_indices(arr, task, class_names, name, check_single_class)


def _encode_strings(
    arr: np.ndarray,
    task: str | None,
    class_names: list[str] | None,
    name: str,
    check_single: bool,
) -> tuple[np.ndarray, LabelEncoding]:
    if task in ("regression", "multilabel"):
        raise LabelError(
            format_error(
                f'String labels cannot be used with task="{task}"',
                expected='task="multiclass", task="binary" or None for class-name labels',
                received={name: arr, "task": task},
                fix="Leave task=None, or convert the labels to numbers",
            )
        )
    present, inverse = np.unique(arr, return_inverse=True)
    if class_names is None:
        names = [str(v) for v in present]
        targets = inverse.reshape(-1).astype(np.int64)
    else:
        names = list(class_names)
        unknown = sorted(set(present.tolist()) - set(names))
        if unknown:
            raise LabelError(
                format_error(
                    f"Labels {_shown(unknown)} are not in class_names",
                    expected=f"every label to be one of class_names={_shown(names)}",
                    received={name: arr, "class_names": names},
                    fix="Add the missing names to class_names, or fix the labels",
                )
            )
        lookup = {n: i for i, n in enumerate(names)}
        targets = np.array([lookup[v] for v in present.tolist()], dtype=np.int64)[
            inverse.reshape(-1)
        ]
    task = _single_label_task(task, names, name, arr)
    if check_single and len(present) < 2:
        raise _single_class_error([str(present[0])], name, arr)
    enc = LabelEncoding(task=task, class_names=tuple(names), raw="string", raw_names=tuple(names))
    return targets, enc


def _single_label_task(task: str | None, names: list[str], name: str, arr: np.ndarray) -> str:
    if task is None:
        return "binary" if len(names) == 2 else "multiclass"
    if task == "binary" and len(names) != 2:
        raise LabelError(
            format_error(
                f'task="binary" needs exactly 2 classes, found {len(names)}: {_shown(names)}',
                expected="two classes",
                received={name: arr, "task": task},
                fix='Pass task="multiclass" (or None) for more than two classes',
            )
        )
    return task


def _encode_indices(
    arr: np.ndarray,
    task: str | None,
    class_names: list[str] | None,
    name: str,
    check_single: bool,
) -> tuple[np.ndarray, LabelEncoding]:
    if arr.dtype.kind == "f" and not _integral(arr):
        bad = arr[np.mod(arr, 1) != 0]
        raise LabelError(
            format_error(
                f'task="{task}" needs integer class indices, but some labels are fractions '
                f"(e.g. {_shown(bad.tolist())})",
                expected="integer-valued labels 0 .. K-1",
                received={name: arr, "task": task},
                fix='Round the labels, or use task="regression" for continuous targets',
            )
        )
    idx = arr.astype(np.int64)
    if idx.min() < 0:
        neg = np.unique(idx[idx < 0])
        raise LabelError(
            format_error(
                f"Class labels must not be negative, found {_shown(neg.tolist())}",
                expected="integer class indices 0 .. K-1",
                received={name: arr},
                fix="Shift or re-map the labels to 0 .. K-1 (e.g. np.unique(y, "
                "return_inverse=True)[1])",
            )
        )
    top = int(idx.max())
    if class_names is not None:
        if top >= len(class_names):
            too_big = np.unique(idx[idx >= len(class_names)])
            raise LabelError(
                format_error(
                    f"Labels {_shown(too_big.tolist())} are out of range for "
                    f"{len(class_names)} class names",
                    expected=f"integer labels 0 .. {len(class_names) - 1} (one per class name)",
                    received={name: arr, "class_names": class_names},
                    fix="Pass one class name per class index, or fix the labels",
                )
            )
        names = list(class_names)
    else:
        names = [str(i) for i in range(top + 1)]
    task = _single_label_task(task, names, name, arr)
    if check_single:
        present = np.unique(idx)
        if len(present) < 2:
            raise _single_class_error([names[int(present[0])]], name, arr)
    enc = LabelEncoding(task=task, class_names=tuple(names), raw="index")
    return idx, enc


def _encode_regression(
    arr: np.ndarray, class_names: list[str] | None, name: str
) -> tuple[np.ndarray, LabelEncoding]:
    targets = arr.astype(np.float32)
    if np.isinf(targets).any():
        raise LabelError(
            format_error(
                "The targets overflow float32",
                expected="finite float32 targets",
                received={name: arr},
                fix="Rescale the targets",
            )
        )
    dim = 1 if targets.ndim == 1 else targets.shape[1]
    names: list[str] = []
    if class_names is not None:
        if len(class_names) != dim:
            raise LabelError(
                format_error(
                    f"For regression, class_names names the {dim} target column(s), but "
                    f"{len(class_names)} names were given",
                    expected=f"{dim} target names, or None",
                    received={"class_names": class_names, name: arr},
                    fix="Pass one name per target column, or class_names=None",
                )
            )
        names = list(class_names)
    enc = LabelEncoding(
        task="regression",
        class_names=tuple(names),
        raw="values",
        target_shape=tuple(targets.shape[1:]),
    )
    return targets, enc


def _encode_rows(
    arr: np.ndarray,
    task: str | None,
    class_names: list[str] | None,
    name: str,
    check_single: bool,
) -> tuple[np.ndarray, LabelEncoding]:
    width = arr.shape[1]
    if task == "regression":
        return _encode_regression(arr, class_names, name)
    zero_one = _is_binary_valued(arr)
    sums = arr.sum(axis=1) if zero_one else None
    one_hot = zero_one and bool(np.all(sums == 1))
    if task is None:
        if not zero_one:
            return _encode_regression(arr, class_names, name)
        task = ("binary" if width == 2 else "multiclass") if one_hot else "multilabel"
    if class_names is not None and len(class_names) != width:
        raise LabelError(
            format_error(
                f"The label rows have {width} columns but {len(class_names)} class names "
                "were given",
                expected=f"{width} class names (one per column)",
                received={name: arr, "class_names": class_names},
                fix="Pass one name per column, or class_names=None",
            )
        )
    names = list(class_names) if class_names is not None else [str(i) for i in range(width)]
    if task == "multilabel":
        if not zero_one:
            bad = np.unique(np.nonzero(~np.isin(arr, (0, 1)))[0])
            raise LabelError(
                format_error(
                    f'task="multilabel" needs 0/1 (multi-hot) rows; rows {_shown(bad.tolist())} '
                    "hold other values",
                    expected="a 2-D array of 0s and 1s",
                    received={name: arr, "task": task},
                    fix='Threshold the targets (y > 0.5), or use task="regression" for '
                    "continuous targets",
                )
            )
        targets = arr.astype(np.float32)
        present = np.flatnonzero(targets.sum(axis=0) > 0)
        if check_single and len(present) < 2:
            shown = [names[int(present[0])]] if len(present) else ["<none>"]
            raise _single_class_error(shown, name, arr)
        enc = LabelEncoding(
            task="multilabel", class_names=tuple(names), raw="multihot", target_shape=(width,)
        )
        return targets, enc
    # multiclass / binary from one-hot rows
    if not one_hot:
        if zero_one:
            counts = arr.sum(axis=1)
            bad = np.flatnonzero(counts != 1)
            problem = "rows with no 1 or several 1s"
        else:
            bad = np.unique(np.nonzero(~np.isin(arr, (0, 1)))[0])
            problem = "rows with values other than 0 and 1 (fractions or negatives)"
        raise LabelError(
            format_error(
                f'task="{task}" with 2-D labels needs one-hot rows (exactly one 1, rest 0); '
                f"found {len(bad)} {problem}, e.g. rows {_shown(bad.tolist())}",
                expected="one-hot rows, or 1-D integer class indices",
                received={name: arr, "task": task},
                fix='Use task="multilabel" for several labels per example, task="regression" '
                "for soft/continuous targets, or pass y.argmax(axis=1)",
            )
        )
    if task == "binary" and width != 2:
        raise LabelError(
            format_error(
                f'task="binary" needs 2 one-hot columns, found {width}',
                expected="one-hot rows of width 2, or 1-D 0/1 labels",
                received={name: arr, "task": task},
                fix='Pass task="multiclass" (or None)',
            )
        )
    idx = np.argmax(arr, axis=1).astype(np.int64)
    if check_single:
        present = np.unique(idx)
        if len(present) < 2:
            raise _single_class_error([names[int(present[0])]], name, arr)
    enc = LabelEncoding(task=task, class_names=tuple(names), raw="onehot")
    return idx, enc


# --------------------------------------------------------------------------- re-encoding


def reencode(
    targets: np.ndarray,
    encoding: LabelEncoding,
    *,
    task: Task | None,
    class_names: list[str] | None,
) -> tuple[np.ndarray, LabelEncoding]:
    """Maps stored targets onto another class list / task, by class *name*.

    Only lossless conversions are done: every class of ``encoding`` must appear
    in ``class_names`` (which may add classes or reorder them), and single-label
    tasks stay single-label. Anything else raises :class:`LabelError`.

    Args:
        targets: Stored targets of ``encoding``.
        encoding: The current encoding.
        task: The wanted task, or None to keep a compatible one.
        class_names: The wanted class names, or None to keep them.

    Returns:
        ``(targets, encoding)`` re-encoded.

    Examples:
        >>> t, e = encode_labels([0, 1, 0])
        >>> t2, e2 = reencode(t, e, task=None, class_names=["0", "1", "2"])
        >>> t2.tolist(), e2.task
        ([0, 1, 0], 'multiclass')
    """
    wanted = task
    task_name = None if task is None else task.name
    if not (task_of(encoding).has_classes and (task is None or task.has_classes)):
        # value targets (regression or a user task) are only re-labelled as themselves
        same_task = task_name in (None, encoding.task)
        if same_task and (class_names is None or list(class_names) == list(encoding.class_names)):
            if wanted is None or wanted == task_of(encoding):
                return targets, encoding
            return targets, replace(encoding, task_object=wanted)
        raise LabelError(
            format_error(
                f'The data has task="{encoding.task}" and class_names='
                f"{_shown(list(encoding.class_names))}, which cannot be turned into "
                f"task={task_name!r}, class_names="
                f"{_shown(list(class_names) if class_names is not None else [])}",
                expected="the same task and target names as the data",
                received={"task": task_name, "class_names": class_names},
                fix="Rebuild the adapter from the raw labels with the task you want",
            )
        )
    old_task = encoding.task
    old_names = list(encoding.class_names)
    new_names = old_names if class_names is None else list(class_names)
    missing = [n for n in old_names if n not in new_names]
    if missing:
        raise LabelError(
            format_error(
                f"The data has classes {_shown(missing)} that are not in class_names "
                "(classes are matched by name)",
                expected=f"class_names to include every class of the data: {_shown(old_names)}",
                received={"class_names": class_names},
                fix="Build both adapters with the same class_names, or fix the labels",
            )
        )
    multi_hot = not task_of(encoding).single_label  # multilabel targets stay multilabel
    if multi_hot:
        new_task = task_name or old_task
        if wanted is not None and wanted.single_label:
            raise _task_mismatch(old_task, task_name)
    else:
        if wanted is not None and not wanted.single_label:
            raise _task_mismatch(old_task, task_name)
        if task_name is None:  # more class names turn binary data into multiclass data
            promote = old_task == "binary" and len(new_names) != 2
            new_task = "multiclass" if promote else old_task
        else:
            new_task = task_name
        if new_task == "binary" and len(new_names) != 2:
            raise LabelError(
                format_error(
                    f'task="binary" needs exactly 2 classes, got {len(new_names)}',
                    expected="two class names",
                    received={"task": task_name, "class_names": class_names},
                    fix='Use task="multiclass"',
                )
            )
    mapping = np.array([new_names.index(n) for n in old_names], dtype=np.int64)
    if multi_hot:
        new_targets = np.zeros((len(targets), len(new_names)), np.float32)
        new_targets[:, mapping] = targets
        shape: tuple[int, ...] = (len(new_names),)
    else:
        new_targets = mapping[targets]
        shape = ()
    base = encoding.remap
    composed = tuple(int(mapping[i]) for i in (base if base is not None else range(len(mapping))))
    new_enc = replace(
        encoding,
        task=new_task,
        class_names=tuple(new_names),
        target_shape=shape,
        remap=composed,
        task_object=wanted
        if wanted is not None
        else (encoding.task_object if new_task == old_task else None),
    )
    return new_targets, new_enc


def _task_mismatch(old: str, new: str | None) -> LabelError:
    return LabelError(
        format_error(
            f'The data has task="{old}" and cannot be used as task="{new}"',
            expected=f'task="{old}" (or None)',
            received={"task": new},
            fix="Rebuild the adapter from the raw labels with the task you want",
        )
    )


# --------------------------------------------------------------------------- tf encoders


def raw_to_stored_tf(y: Any, encoding: LabelEncoding) -> Any:
    """Encodes a batch of raw labels (a tf.Tensor, leading batch dim) as stored targets.

    Mirrors :func:`encode_labels` inside a ``tf.data`` pipeline.

    Examples:
        >>> import tensorflow as tf
        >>> _, enc = encode_labels(["a", "b", "a"])
        >>> raw_to_stored_tf(tf.constant([b"b", b"a"]), enc).numpy().tolist()
        [1, 0]
    """
    import tensorflow as tf

    if encoding.raw == "string":
        names = tf.constant(list(encoding.raw_names))
        flat = tf.reshape(y, (-1, 1))
        idx = tf.argmax(tf.cast(tf.equal(flat, names[tf.newaxis, :]), tf.int32), axis=1)
    elif encoding.raw == "index":
        idx = tf.cast(tf.reshape(y, (-1,)), tf.int64)
    elif encoding.raw == "onehot":
        idx = tf.argmax(tf.reshape(y, (tf.shape(y)[0], -1)), axis=1)
    elif encoding.raw == "multihot":
        width = len(encoding.remap) if encoding.remap is not None else encoding.target_shape[0]
        vals = tf.reshape(tf.cast(y, tf.float32), (-1, width))
        if encoding.remap is not None:
            perm = np.zeros((width, len(encoding.class_names)), np.float32)
            perm[np.arange(width), list(encoding.remap)] = 1.0
            vals = tf.matmul(vals, tf.constant(perm))
        return vals
    else:  # values
        return tf.reshape(tf.cast(y, tf.float32), (-1, *encoding.target_shape))
    idx = tf.cast(idx, tf.int64)
    if encoding.remap is not None:
        idx = tf.gather(tf.constant(list(encoding.remap), tf.int64), idx)
    return idx


def stored_to_batch_tf(t: Any, encoding: LabelEncoding) -> Any:
    """Turns a batch of stored targets into the float32 batch targets the loss receives.

    The task of ``encoding`` decides (:meth:`finetunekit.Task.batch_targets`).

    Examples:
        >>> import tensorflow as tf
        >>> _, enc = encode_labels([0, 1, 2])
        >>> stored_to_batch_tf(tf.constant([2, 0], tf.int64), enc).numpy().tolist()
        [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]
    """
    import tensorflow as tf

    # Finding the task is plain Python: inside a tf.data map, autograph would otherwise
    # transpile the task registry on first use (0.3 s). batch_targets stays converted.
    task = tf.autograph.experimental.do_not_convert(task_of)(encoding)
    return task.batch_targets(t, encoding)
