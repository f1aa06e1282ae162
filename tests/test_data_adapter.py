"""DatasetAdapter on numpy arrays: inference, validation, datasets, split, helpers."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from finetunekit.data import DatasetAdapter, as_adapter, check_compatible
from finetunekit.errors import ArgumentTypeError, DataError, FineTuneError, LabelError


def _x(n: int = 12, shape: tuple[int, ...] = (4, 4), dtype: str = "uint8") -> np.ndarray:
    """Inputs whose first value is the example index (to check pairing and order)."""
    x = np.zeros((n, *shape), dtype)
    x.reshape(n, -1)[:, 0] = np.arange(n)
    return x


def _ids(x: np.ndarray) -> list[int]:
    return np.asarray(x).reshape(len(x), -1)[:, 0].astype(int).tolist()


def _collect(ds: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds], strict=True)
    return np.concatenate(xs), np.concatenate(ys)


def _check_message(err: pytest.ExceptionInfo, *names: str) -> None:
    msg = str(err.value)
    assert "Received:" in msg, msg
    for name in names:
        assert name in msg, (name, msg)


# --------------------------------------------------------------------------- inference


def test_int_labels_multiclass_k_is_max_plus_one():
    data = DatasetAdapter.from_arrays(_x(6), [0, 2, 2, 0, 3, 3])
    assert data.task == "multiclass"
    assert data.num_classes == 4
    assert data.class_names == ["0", "1", "2", "3"]
    assert data.class_counts() == {"0": 2, "1": 0, "2": 2, "3": 2}
    assert data.targets().dtype == np.int64
    assert data.target_dim == 4


def test_two_int_classes_are_binary():
    data = DatasetAdapter.from_arrays(_x(4), np.array([1, 0, 1, 1], dtype=np.uint8))
    assert (data.task, data.num_classes, data.class_names) == ("binary", 2, ["0", "1"])
    assert data.target_dim == 1
    assert data.targets().tolist() == [1, 0, 1, 1]


def test_string_labels_sorted():
    data = DatasetAdapter.from_arrays(_x(5), ["zebra", "ant", "cat", "ant", "zebra"])
    assert data.task == "multiclass"
    assert data.class_names == ["ant", "cat", "zebra"]
    assert data.targets().tolist() == [2, 0, 1, 0, 2]


def test_bytes_and_object_string_labels():
    data = DatasetAdapter.from_arrays(_x(3), np.array([b"b", b"a", b"b"]))
    assert data.class_names == ["a", "b"] and data.task == "binary"
    data = DatasetAdapter.from_arrays(_x(3), np.array(["b", "a", "b"], dtype=object))
    assert data.targets().tolist() == [1, 0, 1]


def test_bool_labels_binary():
    data = DatasetAdapter.from_arrays(_x(3), [True, False, True])
    assert (data.task, data.class_names) == ("binary", ["False", "True"])
    assert data.targets().tolist() == [1, 0, 1]


def test_one_hot_rows():
    y = np.eye(3, dtype=np.float32)[[0, 2, 1, 2]]
    data = DatasetAdapter.from_arrays(_x(4), y)
    assert (data.task, data.num_classes) == ("multiclass", 3)
    assert data.targets().tolist() == [0, 2, 1, 2]
    data = DatasetAdapter.from_arrays(_x(3), np.eye(2, dtype=int)[[0, 1, 1]])
    assert data.task == "binary" and data.targets().tolist() == [0, 1, 1]


def test_multi_hot_rows_are_multilabel():
    y = np.array([[1, 0, 1], [0, 1, 0], [0, 0, 0], [1, 1, 1]])
    data = DatasetAdapter.from_arrays(_x(4), y)
    assert (data.task, data.num_classes, data.target_dim) == ("multilabel", 3, 3)
    assert data.targets().dtype == np.float32
    assert data.class_counts() == {"0": 2, "1": 2, "2": 2}


def test_float_labels_are_regression():
    data = DatasetAdapter.from_arrays(_x(4), [0.5, 1.0, 2.0, 3.0])
    assert (data.task, data.num_classes, data.class_names) == ("regression", None, [])
    assert data.target_dim == 1 and data.targets().dtype == np.float32
    data = DatasetAdapter.from_arrays(_x(3), np.array([[0.1, 2.0], [1.5, 3.0], [0.0, 0.0]]))
    assert data.task == "regression" and data.target_dim == 2
    assert data.targets().shape == (3, 2)
    # integer-valued floats stay regression unless told otherwise
    assert DatasetAdapter.from_arrays(_x(3), [0.0, 1.0, 2.0]).task == "regression"


def test_two_dim_ints_other_than_zero_one_are_regression():
    data = DatasetAdapter.from_arrays(_x(3), np.array([[3, 4], [5, 6], [1, 0]]))
    assert data.task == "regression" and data.target_dim == 2


def test_single_column_layouts():
    data = DatasetAdapter.from_arrays(_x(4), np.array([[0.0], [1.0], [1.0], [0.0]]))
    assert data.task == "binary" and data.targets().tolist() == [0, 1, 1, 0]
    data = DatasetAdapter.from_arrays(_x(3), np.array([[0.5], [1.5], [2.5]]))
    assert data.task == "regression" and data.targets().shape == (3, 1)
    data = DatasetAdapter.from_arrays(_x(3), np.array([[0], [2], [1]]))
    assert data.task == "multiclass" and data.num_classes == 3


@pytest.mark.parametrize(
    ("y", "task", "expected_task", "expected_targets"),
    [
        ([0, 1, 5, 2], "regression", "regression", [0.0, 1.0, 5.0, 2.0]),
        (np.eye(3)[[0, 1, 2, 0]], "multilabel", "multilabel", None),
        ([0.0, 2.0, 1.0, 2.0], "multiclass", "multiclass", [0, 2, 1, 2]),
        ([0.0, 1.0, 1.0, 0.0], "binary", "binary", [0, 1, 1, 0]),
        ([0, 1, 1, 0], "multiclass", "multiclass", [0, 1, 1, 0]),
        (["a", "b", "a", "b"], "MultiClass", "multiclass", [0, 1, 0, 1]),
        (np.array([[1, 0], [0, 1], [2, 1], [0, 0]]), "regression", "regression", None),
    ],
)
def test_task_overrides_inference(y, task, expected_task, expected_targets):
    data = DatasetAdapter.from_arrays(_x(4), y, task=task)
    assert data.task == expected_task
    if expected_targets is not None:
        assert data.targets().tolist() == expected_targets


def test_multiclass_with_two_classes_has_two_outputs():
    data = DatasetAdapter.from_arrays(_x(4), [0, 1, 1, 0], task="multiclass")
    assert (data.num_classes, data.target_dim) == (2, 2)


def test_class_names_fix_order_and_count():
    data = DatasetAdapter.from_arrays(
        _x(4), ["cat", "dog", "cat", "dog"], class_names=["dog", "cat", "fox"]
    )
    assert data.class_names == ["dog", "cat", "fox"]
    assert data.task == "multiclass"
    assert data.targets().tolist() == [1, 0, 1, 0]
    assert data.class_counts() == {"dog": 2, "cat": 2, "fox": 0}
    ints = DatasetAdapter.from_arrays(_x(3), [0, 1, 0], class_names=("a", "b", "c"))
    assert (ints.task, ints.num_classes) == ("multiclass", 3)
    one_hot = DatasetAdapter.from_arrays(_x(2), np.eye(2)[[0, 1]], class_names=["no", "yes"])
    assert one_hot.class_names == ["no", "yes"] and one_hot.task == "binary"


def test_class_names_allow_a_single_present_class():
    # a test subset may hold one class when the full class list is given
    data = DatasetAdapter.from_arrays(_x(3), ["cat"] * 3, class_names=["cat", "dog"])
    assert data.class_counts() == {"cat": 3, "dog": 0}


def test_regression_target_names():
    data = DatasetAdapter.from_arrays(
        _x(2), np.array([[0.1, 0.2], [0.3, 0.4]]), class_names=["w", "h"]
    )
    assert data.class_names == ["w", "h"] and data.num_classes is None


@pytest.mark.parametrize(
    "shape",
    [(28, 28), (8, 8, 3), (10,), (3, 4, 4, 3)],
    ids=["grayscale", "rgb", "features", "clips"],
)
@pytest.mark.parametrize("dtype", ["uint8", "float32", "float64", "int16"])
def test_input_shapes_and_dtypes(shape, dtype):
    x = np.zeros((4, *shape), dtype)
    data = DatasetAdapter.from_arrays(x, [0, 1, 0, 1])
    assert data.input_shape == shape and data.input_dtype == dtype
    xb, _ = next(iter(data.as_dataset(4)))
    assert xb.dtype.name == dtype and tuple(xb.shape) == (4, *shape)


def test_inputs_are_not_copied():
    x = _x(6)
    data = DatasetAdapter.from_arrays(x, [0, 1, 2] * 2)
    assert data._source._store.x is x
    train, _ = data.split(0.5)
    assert train._source._store.x is x


def test_list_inputs_and_tensor_inputs():
    assert DatasetAdapter.from_arrays([[1, 2], [3, 4]], [0, 1]).input_shape == (2,)
    assert len(DatasetAdapter.from_arrays(tf.zeros((3, 2)), tf.constant([0, 1, 0]))) == 3


# --------------------------------------------------------------------------- validation

_NAN_X = _x(3, dtype="float32")
_NAN_X[1, 0, 0] = np.nan
_INF_X = _x(3, dtype="float64")
_INF_X[2, 1, 1] = np.inf

_ERROR_CASES = [
    # (id, x, y, kwargs, exception, names in the message)
    ("length_mismatch", _x(4), [0, 1, 0], {}, DataError, ["x", "y", "4", "3"]),
    ("empty", np.zeros((0, 3)), [], {}, DataError, ["x", "empty"]),
    ("nan_x", _NAN_X, [0, 1, 0], {}, DataError, ["x", "NaN", "[1]"]),
    ("inf_x", _INF_X, [0, 1, 0], {}, DataError, ["x", "[2]"]),
    ("nan_y", _x(3), [0.1, np.nan, 1.0], {}, LabelError, ["y", "NaN"]),
    ("inf_y", _x(3), [0.1, np.inf, 1.0], {"task": "regression"}, LabelError, ["y"]),
    ("negative", _x(3), [0, -1, 2], {}, LabelError, ["y", "-1"]),
    ("too_big", _x(3), [0, 1, 3], {"class_names": ["a", "b", "c"]}, LabelError, ["class_names"]),
    ("one_class", _x(3), [1, 1, 1], {}, LabelError, ["y", "one class"]),
    ("one_string_class", _x(2), ["a", "a"], {}, LabelError, ["y", "'a'"]),
    ("one_hot_one_class", _x(2), np.eye(3)[[1, 1]], {}, LabelError, ["y"]),
    ("ragged_x", [np.zeros(3), np.zeros(4)], [0, 1], {}, DataError, ["x", "shapes"]),
    ("object_x", np.array([{}, {}], dtype=object), [0, 1], {}, DataError, ["x", "object"]),
    ("string_x", np.array([["a"], ["b"]]), [0, 1], {}, DataError, ["x", "strings"]),
    ("one_dim_x", np.arange(3), [0, 1, 0], {}, DataError, ["x", "reshape(-1, 1)"]),
    ("complex_x", np.zeros((2, 2), complex), [0, 1], {}, DataError, ["x", "complex"]),
    ("mixed_labels", _x(3), [1, "cat", 2], {}, LabelError, ["y", "mix"]),
    ("mixed_object", _x(2), np.array([1, "a"], dtype=object), {}, LabelError, ["y"]),
    ("ragged_y", _x(2), [[0, 1], [1]], {}, LabelError, ["y", "ragged"]),
    ("y_3d", _x(2), np.zeros((2, 2, 2)), {}, LabelError, ["y", "3 dimensions"]),
    ("scalar_y", _x(1), 3, {}, ArgumentTypeError, ["y"]),
    (
        "forced_multiclass_fractions",
        _x(2),
        np.array([[0.5, 0.5], [1.0, 0.0]]),
        {"task": "multiclass"},
        LabelError,
        ["task", "one-hot", "fractions"],
    ),
    (
        "forced_multiclass_several_ones",
        _x(2),
        np.array([[1, 1, 0], [1, 0, 0]]),
        {"task": "multiclass"},
        LabelError,
        ["task", "several 1s", "[0]"],
    ),
    (
        "forced_multiclass_negative",
        _x(2),
        np.array([[-1, 1], [1, 0]]),
        {"task": "multiclass"},
        LabelError,
        ["task", "negatives"],
    ),
    (
        "forced_binary_three_columns",
        _x(2),
        np.eye(3)[[0, 1]],
        {"task": "binary"},
        LabelError,
        ["task"],
    ),
    ("forced_binary_three_classes", _x(3), [0, 1, 2], {"task": "binary"}, LabelError, ["task"]),
    ("fraction_as_class", _x(2), [0.5, 1.0], {"task": "multiclass"}, LabelError, ["task", "0.5"]),
    ("multilabel_1d", _x(2), [0, 1], {"task": "multilabel"}, LabelError, ["multi-hot"]),
    (
        "multilabel_values",
        _x(2),
        np.array([[0.2, 1], [1, 0]]),
        {"task": "multilabel"},
        LabelError,
        ["task", "0/1"],
    ),
    ("strings_regression", _x(2), ["a", "b"], {"task": "regression"}, LabelError, ["task"]),
    ("unknown_task", _x(2), [0, 1], {"task": "multiclas"}, LabelError, ["task", "multiclass"]),
    ("task_type", _x(2), [0, 1], {"task": 3}, ArgumentTypeError, ["task"]),
    (
        "duplicate_names",
        _x(2),
        [0, 1],
        {"class_names": ["a", "a"]},
        LabelError,
        ["class_names", "duplicates"],
    ),
    ("names_str", _x(2), [0, 1], {"class_names": "ab"}, ArgumentTypeError, ["class_names"]),
    ("names_ints", _x(2), [0, 1], {"class_names": [0, 1]}, ArgumentTypeError, ["class_names"]),
    ("names_empty", _x(2), [0, 1], {"class_names": []}, LabelError, ["class_names"]),
    (
        "names_width",
        _x(2),
        np.eye(3)[[0, 1]],
        {"class_names": ["a", "b"]},
        LabelError,
        ["class_names", "3 columns"],
    ),
    (
        "unknown_label",
        _x(3),
        ["cat", "dog", "cow"],
        {"class_names": ["cat", "dog"]},
        LabelError,
        ["'cow'", "class_names"],
    ),
    (
        "regression_names",
        _x(2),
        [0.5, 0.7],
        {"class_names": ["a", "b"]},
        LabelError,
        ["class_names"],
    ),
    ("dataset_as_x", tf.data.Dataset.range(2), [0, 1], {}, ArgumentTypeError, ["from_tf_dataset"]),
    ("path_as_x", "photos/", [0, 1], {}, ArgumentTypeError, ["from_directory"]),
]


@pytest.mark.parametrize(
    ("x", "y", "kwargs", "exc", "names"),
    [case[1:] for case in _ERROR_CASES],
    ids=[case[0] for case in _ERROR_CASES],
)
def test_from_arrays_validation(x, y, kwargs, exc, names):
    with pytest.raises(exc) as err:
        DatasetAdapter.from_arrays(x, y, **kwargs)
    assert isinstance(err.value, FineTuneError)
    assert isinstance(err.value, TypeError if exc is ArgumentTypeError else ValueError)
    _check_message(err, *names)


def test_direct_construction_points_to_constructors():
    with pytest.raises(ArgumentTypeError, match="from_arrays"):
        DatasetAdapter(np.zeros((2, 2)), [0, 1])


def test_large_nan_check_reports_rows():
    x = np.zeros((3000, 8, 8), np.float32)
    x[2999, 3, 3] = np.nan
    with pytest.raises(DataError, match="2999"):
        DatasetAdapter.from_arrays(x, np.arange(3000) % 3)


# --------------------------------------------------------------------------- datasets


def test_as_dataset_multiclass_in_order():
    x = _x(7)
    data = DatasetAdapter.from_arrays(x, [0, 1, 2, 0, 1, 2, 0])
    ds = data.as_dataset(3)
    assert int(ds.cardinality()) == 3
    xs, ys = _collect(ds)
    assert xs.dtype == np.uint8 and xs.shape == (7, 4, 4)
    np.testing.assert_array_equal(xs, x)
    assert ys.dtype == np.float32 and ys.shape == (7, 3)
    np.testing.assert_array_equal(ys, np.eye(3)[[0, 1, 2, 0, 1, 2, 0]])
    assert [int(x.shape[0]) for x, _ in ds] == [3, 3, 1]


@pytest.mark.parametrize(
    ("y", "kwargs", "expected"),
    [
        (["n", "y", "y", "n"], {}, [[0.0], [1.0], [1.0], [0.0]]),
        (
            [[1, 0, 1], [0, 1, 0], [0, 0, 0], [1, 1, 0]],
            {},
            [[1, 0, 1], [0, 1, 0], [0, 0, 0], [1, 1, 0]],
        ),
        ([0.5, 1.5, 2.5, 3.5], {}, [[0.5], [1.5], [2.5], [3.5]]),
        ([[0.5, 1.0], [2.0, 3.0], [1.0, 1.0], [4.0, 0.0]], {}, [[0.5, 1], [2, 3], [1, 1], [4, 0]]),
        ([0, 1, 1, 0], {"task": "multiclass"}, [[1, 0], [0, 1], [0, 1], [1, 0]]),
        ([3, 1, 2, 0], {"task": "regression"}, [[3], [1], [2], [0]]),
    ],
    ids=["binary", "multilabel", "regression_1d", "regression_2d", "multiclass2", "int_regression"],
)
def test_as_dataset_target_encodings(y, kwargs, expected):
    data = DatasetAdapter.from_arrays(_x(4), y, **kwargs)
    _, ys = _collect(data.as_dataset(3))
    assert ys.dtype == np.float32
    np.testing.assert_array_equal(ys, np.asarray(expected, np.float32))
    assert ys.shape[1] == data.target_dim


def test_shuffle_is_seeded_reshuffled_and_keeps_pairs():
    n = 40
    y = np.arange(n) % 4
    data = DatasetAdapter.from_arrays(_x(n, dtype="int32"), y)
    ds = data.as_dataset(8, shuffle=True, seed=3)
    first_x, first_y = _collect(ds)
    second_x, _ = _collect(ds)
    ids = _ids(first_x)
    assert sorted(ids) == list(range(n))
    assert ids != list(range(n))
    assert _ids(second_x) != ids  # reshuffled every epoch
    np.testing.assert_array_equal(first_y.argmax(1), y[ids])  # x and y stay paired
    again, _ = _collect(data.as_dataset(8, shuffle=True, seed=3))
    assert _ids(again) == ids  # same seed, same order
    other, _ = _collect(data.as_dataset(8, shuffle=True, seed=4))
    assert _ids(other) != ids
    assert sorted(_ids(_collect(data.as_dataset(8, shuffle=True))[0])) == list(range(n))


@pytest.mark.parametrize(
    ("kwargs", "exc", "name"),
    [
        ({"batch_size": 0}, DataError, "batch_size"),
        ({"batch_size": "32"}, ArgumentTypeError, "batch_size"),
        ({"batch_size": True}, ArgumentTypeError, "batch_size"),
        ({"batch_size": 2, "shuffle": "yes"}, ArgumentTypeError, "shuffle"),
        ({"batch_size": 2, "seed": 1.5}, ArgumentTypeError, "seed"),
    ],
)
def test_as_dataset_argument_errors(kwargs, exc, name):
    data = DatasetAdapter.from_arrays(_x(4), [0, 1, 0, 1])
    with pytest.raises(exc) as err:
        data.as_dataset(**kwargs)
    _check_message(err, name)


def test_inputs_dataset_and_sample_inputs():
    x = _x(5, (3,), "float32")
    data = DatasetAdapter.from_arrays(x, [0, 1, 2, 0, 1])
    batches = list(data.inputs_dataset(2))
    assert [tuple(b.shape) for b in batches] == [(2, 3), (2, 3), (1, 3)]
    np.testing.assert_array_equal(np.concatenate([b.numpy() for b in batches]), x)
    np.testing.assert_array_equal(data.sample_inputs(2), x[:2])
    assert data.sample_inputs().shape == (5, 3)
    with pytest.raises(DataError, match="Received: n=0"):
        data.sample_inputs(0)
    with pytest.raises(ArgumentTypeError, match="batch_size"):
        data.inputs_dataset(None)


def test_targets_is_a_copy_and_class_counts_regression_fails():
    data = DatasetAdapter.from_arrays(_x(3), [0, 1, 2])
    data.targets()[:] = 0
    assert data.targets().tolist() == [0, 1, 2]
    names = data.class_names
    names.append("x")
    assert data.class_names == ["0", "1", "2"]
    with pytest.raises(DataError) as err:
        DatasetAdapter.from_arrays(_x(3), [0.1, 0.2, 0.3]).class_counts()
    _check_message(err, "task", "regression")


def test_repr_is_a_short_summary():
    text = repr(DatasetAdapter.from_arrays(_x(4, (28, 28)), ["a", "b", "a", "b"]))
    for part in ("binary", "n=4", "['a', 'b']", "(28, 28)", "uint8", "arrays"):
        assert part in text
    many = repr(DatasetAdapter.from_arrays(_x(20), np.arange(20)))
    assert "classes=20" in many and len(many) < 200
    assert "target_dim=1" in repr(DatasetAdapter.from_arrays(_x(2), [0.1, 0.2]))


# --------------------------------------------------------------------------- split


def _imbalanced() -> tuple[np.ndarray, np.ndarray]:
    y = np.array([0] * 50 + [1] * 20 + [2] * 5 + [3] * 2 + [4] * 1)
    perm = np.random.default_rng(0).permutation(len(y))
    return _x(len(y), dtype="int32"), y[perm]


def test_split_is_stratified():
    x, y = _imbalanced()
    data = DatasetAdapter.from_arrays(x, y)
    rest, held = data.split(0.2, seed=0)
    assert len(rest) + len(held) == len(data)
    assert len(held) == round(0.2 * len(data))
    rc, hc = rest.class_counts(), held.class_counts()
    assert hc == {"0": 10, "1": 4, "2": 1, "3": 1, "4": 0}
    for name, total in data.class_counts().items():
        assert rc[name] + hc[name] == total
        if total >= 2:
            assert rc[name] >= 1 and hc[name] >= 1
    # both parts keep the parent's labels, task and class names
    assert held.class_names == data.class_names and held.task == "multiclass"
    assert held.num_classes == 5


def test_split_parts_are_disjoint_ordered_and_paired():
    x, y = _imbalanced()
    data = DatasetAdapter.from_arrays(x, y)
    rest, held = data.split(0.3, seed=1)
    rest_ids, held_ids = _ids(rest.sample_inputs(1000)), _ids(held.sample_inputs(1000))
    assert not set(rest_ids) & set(held_ids)
    assert sorted(rest_ids + held_ids) == list(range(len(y)))
    assert rest_ids == sorted(rest_ids) and held_ids == sorted(held_ids)
    np.testing.assert_array_equal(held.targets(), y[held_ids])
    xs, ys = _collect(held.as_dataset(4, shuffle=True, seed=0))
    np.testing.assert_array_equal(ys.argmax(1), y[_ids(xs)])


def test_split_is_deterministic():
    x, y = _imbalanced()
    data = DatasetAdapter.from_arrays(x, y)
    a = _ids(data.split(0.25, seed=7)[1].sample_inputs(100))
    b = _ids(data.split(0.25, seed=7)[1].sample_inputs(100))
    c = _ids(data.split(0.25, seed=8)[1].sample_inputs(100))
    assert a == b and a != c


def test_split_keeps_class_names_when_a_class_is_missing():
    data = DatasetAdapter.from_arrays(_x(5), ["a", "a", "b", "b", "c"])
    rest, held = data.split(0.4, seed=0)
    assert held.class_names == ["a", "b", "c"]
    assert held.class_counts()["c"] == 0 and rest.class_counts()["c"] == 1
    _, ys = _collect(held.as_dataset(8))
    assert ys.shape[1] == 3


@pytest.mark.parametrize(
    "y",
    [np.random.default_rng(0).random(20), (np.random.default_rng(1).random((20, 3)) > 0.5)],
    ids=["regression", "multilabel"],
)
def test_random_split_for_non_single_label_tasks(y):
    data = DatasetAdapter.from_arrays(_x(20), y.astype(float) if y.dtype == bool else y)
    rest, held = data.split(0.25, seed=0)
    assert (len(rest), len(held)) == (15, 5)
    assert held.task == data.task
    np.testing.assert_array_equal(held.targets(), data.targets()[_ids(held.sample_inputs(99))])


def test_nested_split():
    x, y = _imbalanced()
    rest, _ = DatasetAdapter.from_arrays(x, y).split(0.2)
    train, val = rest.split(0.25, seed=2)
    ids = _ids(val.sample_inputs(100))
    np.testing.assert_array_equal(val.targets(), y[ids])
    assert len(train) + len(val) == len(rest)


@pytest.mark.parametrize(
    ("fraction", "seed", "exc", "name"),
    [
        (0.0, 0, DataError, "fraction"),
        (1.0, 0, DataError, "fraction"),
        (1.5, 0, DataError, "fraction"),
        (-0.1, 0, DataError, "fraction"),
        ("0.2", 0, ArgumentTypeError, "fraction"),
        (True, 0, ArgumentTypeError, "fraction"),
        (0.2, -1, ArgumentTypeError, "seed"),
        (0.2, 1.0, ArgumentTypeError, "seed"),
    ],
)
def test_split_argument_errors(fraction, seed, exc, name):
    data = DatasetAdapter.from_arrays(_x(10), [0, 1] * 5)
    with pytest.raises(exc) as err:
        data.split(fraction, seed=seed)
    _check_message(err, name)


def test_split_too_small():
    with pytest.raises(DataError, match="empty"):
        DatasetAdapter.from_arrays(_x(1), [0.5]).split(0.5)
    with pytest.raises(DataError, match="single example"):
        DatasetAdapter.from_arrays(_x(2), [0, 1]).split(0.5)


# --------------------------------------------------------------------------- as_adapter


def test_as_adapter_accepts_adapters_tuples_and_datasets():
    data = DatasetAdapter.from_arrays(_x(4), [0, 1, 2, 0])
    assert as_adapter(data) is data
    assert as_adapter(data, task="multiclass", class_names=["0", "1", "2"]) is data
    assert as_adapter((_x(4), [0, 1, 2, 0])).num_classes == 3
    assert as_adapter([_x(2), ["a", "b"]]).class_names == ["a", "b"]
    ds = tf.data.Dataset.from_tensor_slices((_x(4), [0, 1, 0, 1]))
    assert as_adapter(ds).source == "tf.data"
    built = as_adapter((_x(2), [0, 0]), task="binary", class_names=["0", "1"])
    assert built.class_counts() == {"0": 2, "1": 0}


@pytest.mark.parametrize("obj", [np.zeros((3, 2)), {"x": 1, "y": 2}, (1, 2, 3), "data/"])
def test_as_adapter_rejects_other_types(obj):
    with pytest.raises(ArgumentTypeError) as err:
        as_adapter(obj)
    _check_message(err, "data", "DatasetAdapter")


def test_as_adapter_reencodes_by_class_name():
    # a test set that lacks class "3": indices keep their meaning
    test = DatasetAdapter.from_arrays(_x(4), [0, 2, 1, 2])
    full = as_adapter(test, class_names=["0", "1", "2", "3"])
    assert (full.num_classes, full.targets().tolist()) == (4, [0, 2, 1, 2])
    _, ys = _collect(full.as_dataset(4))
    assert ys.shape == (4, 4)
    # reordered names map by name
    pets = DatasetAdapter.from_arrays(_x(3), ["cat", "dog", "cat"])
    swapped = as_adapter(pets, class_names=["dog", "cat"])
    assert swapped.task == "binary" and swapped.targets().tolist() == [1, 0, 1]
    # binary -> multiclass
    multi = as_adapter(pets, task="multiclass")
    assert multi.num_classes == 2 and multi.target_dim == 2


def test_as_adapter_multilabel_reencode():
    data = DatasetAdapter.from_arrays(_x(3), np.array([[1, 0], [0, 1], [1, 1]]))
    wider = as_adapter(data, class_names=["2", "1", "0"])
    np.testing.assert_array_equal(wider.targets(), [[0, 0, 1], [0, 1, 0], [0, 1, 1]])


@pytest.mark.parametrize(
    ("kwargs", "names"),
    [
        ({"class_names": ["cat", "fox"]}, ["'dog'", "class_names"]),
        ({"task": "regression"}, ["task"]),
        ({"task": "multilabel"}, ["task"]),
        ({"task": "binary", "class_names": ["cat", "dog", "fox"]}, ["task"]),
    ],
)
def test_as_adapter_class_mismatch(kwargs, names):
    pets = DatasetAdapter.from_arrays(_x(3), ["cat", "dog", "cat"])
    with pytest.raises(LabelError) as err:
        as_adapter(pets, **kwargs)
    _check_message(err, *names)


def test_as_adapter_regression_names_must_match():
    data = DatasetAdapter.from_arrays(_x(2), [0.1, 0.2])
    assert as_adapter(data, task="regression") is data
    with pytest.raises(LabelError):
        as_adapter(data, class_names=["a"])


# --------------------------------------------------------------------------- check_compatible


def test_check_compatible_accepts_split_parts():
    x, y = _imbalanced()
    check_compatible(*DatasetAdapter.from_arrays(x, y).split(0.2))


def test_check_compatible_errors():
    train = DatasetAdapter.from_arrays(_x(4), ["a", "b", "a", "b"])
    other_task = DatasetAdapter.from_arrays(_x(4), ["a", "b", "a", "b"], task="multiclass")
    with pytest.raises(LabelError) as err:
        check_compatible(train, other_task)
    _check_message(err, "validation", "task")
    other_names = DatasetAdapter.from_arrays(_x(4), ["a", "c", "a", "c"])
    with pytest.raises(LabelError) as err:
        check_compatible(train, other_names)
    _check_message(err, "not in training: ['c']", "class_names=train.class_names")
    unseen_train = DatasetAdapter.from_arrays(_x(2), ["a", "a"], class_names=["a", "b"])
    with pytest.raises(LabelError) as err:
        check_compatible(unseen_train, train)
    _check_message(err, "no training examples", "['b']")
    other_shape = DatasetAdapter.from_arrays(_x(4, (5, 5)), ["a", "b", "a", "b"])
    with pytest.raises(DataError) as err:
        check_compatible(train, other_shape)
    _check_message(err, "(5, 5)")
    with pytest.raises(ArgumentTypeError) as err:
        check_compatible(train, (_x(2), [0, 1]))
    _check_message(err, "validation")
