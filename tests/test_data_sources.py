"""DatasetAdapter on tf.data datasets and image directories."""

from __future__ import annotations

import math
import os
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from finetunekit.data import DatasetAdapter, as_adapter
from finetunekit.errors import ArgumentTypeError, DataError, LabelError


def _x(n: int, shape: tuple[int, ...] = (3, 3, 1)) -> np.ndarray:
    x = np.zeros((n, *shape), np.float32)
    x.reshape(n, -1)[:, 0] = np.arange(n)
    return x


def _ids(x) -> list[int]:
    return np.asarray(x).reshape(len(x), -1)[:, 0].astype(int).tolist()


def _collect(ds: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds], strict=True)
    return np.concatenate(xs), np.concatenate(ys)


def _check_message(err: pytest.ExceptionInfo, *names: str) -> None:
    msg = str(err.value)
    assert "Received:" in msg, msg
    for name in names:
        assert name in msg, (name, msg)


# --------------------------------------------------------------------------- tf.data


def test_unbatched_dataset():
    y = np.array([0, 1, 2, 1, 0, 2, 1])
    ds = tf.data.Dataset.from_tensor_slices((_x(7), y))
    data = DatasetAdapter.from_tf_dataset(ds)
    assert (data.source, data.task, len(data)) == ("tf.data", "multiclass", 7)
    assert data.input_shape == (3, 3, 1) and data.input_dtype == "float32"
    assert data.class_counts() == {"0": 2, "1": 3, "2": 2}
    xs, ys = _collect(data.as_dataset(3))
    assert _ids(xs) == list(range(7))
    np.testing.assert_array_equal(ys, np.eye(3)[y])


@pytest.mark.parametrize("drop_remainder", [False, True])
def test_batched_dataset_is_detected_and_unbatched(drop_remainder):
    y = np.array([0, 1] * 6)
    ds = tf.data.Dataset.from_tensor_slices((_x(12), y)).batch(4, drop_remainder=drop_remainder)
    data = DatasetAdapter.from_tf_dataset(ds.prefetch(1))
    assert len(data) == 12 and data.input_shape == (3, 3, 1) and data.task == "binary"
    xs, ys = _collect(data.as_dataset(5))
    assert xs.shape == (12, 3, 3, 1) and ys.shape == (12, 1)
    np.testing.assert_array_equal(ys[:, 0], y)


def test_unbatched_one_hot_labels_are_not_mistaken_for_batches():
    y = np.eye(3, dtype=np.float32)[[0, 1, 2, 2]]
    data = DatasetAdapter.from_tf_dataset(tf.data.Dataset.from_tensor_slices((_x(4), y)))
    assert (len(data), data.task, data.targets().tolist()) == (4, "multiclass", [0, 1, 2, 2])
    _, ys = _collect(data.as_dataset(3))
    np.testing.assert_array_equal(ys, y)


def test_batched_flag_overrides_detection():
    # a generator with a fixed leading size: detection says "examples", batched=True fixes it
    def gen():
        for i in range(3):
            yield np.full((2, 4), i, np.float32), np.array([0, 1])

    sig = (tf.TensorSpec((2, 4), tf.float32), tf.TensorSpec((2,), tf.int64))
    ds = tf.data.Dataset.from_generator(gen, output_signature=sig)
    data = DatasetAdapter.from_tf_dataset(ds, batched=True)
    assert len(data) == 6 and data.input_shape == (4,) and data.task == "binary"
    with pytest.raises(ArgumentTypeError) as err:
        DatasetAdapter.from_tf_dataset(ds, batched="yes")
    _check_message(err, "batched")


def test_dict_elements():
    ds = tf.data.Dataset.from_tensor_slices({"x": _x(4), "y": ["a", "b", "b", "a"]})
    data = DatasetAdapter.from_tf_dataset(ds.batch(2))
    assert data.class_names == ["a", "b"] and len(data) == 4


@pytest.mark.parametrize(
    ("ds", "names"),
    [
        (
            tf.data.Dataset.from_tensor_slices({"image": _x(2), "label": [0, 1]}),
            ["ds", "element_spec", "image", "ds.map"],
        ),
        (tf.data.Dataset.from_tensor_slices((_x(2), [0, 1], [1.0, 1.0])), ["3 items", "weights"]),
        (tf.data.Dataset.from_tensor_slices(_x(2)), ["ds", "element_spec", "pair"]),
        (
            tf.data.Dataset.from_tensor_slices(((_x(2), _x(2)), [0, 1])),
            ["x is a tuple", "element_spec"],
        ),
        (
            tf.data.Dataset.from_tensor_slices((tf.ragged.constant([[1, 2], [3]]), [0, 1])),
            ["RaggedTensorSpec"],
        ),
        (tf.data.Dataset.from_tensor_slices((["a", "b"], [0, 1])), ["strings"]),
        (tf.data.Dataset.from_tensor_slices((_x(2), [0, 1])).repeat(), ["infinite", "repeat"]),
        (tf.data.Dataset.from_tensor_slices((_x(2), [0, 1])).take(0), ["empty"]),
        (tf.data.Dataset.from_tensor_slices(([1.0, 2.0], [0, 1])), ["scalar"]),
    ],
    ids=[
        "dict_keys",
        "three_tuple",
        "single",
        "nested_x",
        "ragged_x",
        "string_x",
        "infinite",
        "empty",
        "scalar_x",
    ],
)
def test_tf_dataset_structure_errors(ds, names):
    with pytest.raises(DataError) as err:
        DatasetAdapter.from_tf_dataset(ds)
    _check_message(err, "ds", *names)


def test_tf_dataset_type_and_label_errors():
    with pytest.raises(ArgumentTypeError) as err:
        DatasetAdapter.from_tf_dataset((_x(2), [0, 1]))
    _check_message(err, "ds", "from_arrays")
    nan = tf.data.Dataset.from_tensor_slices((_x(3), [0.5, np.nan, 1.0]))
    with pytest.raises(LabelError) as err:
        DatasetAdapter.from_tf_dataset(nan)
    _check_message(err, "ds.y", "NaN")
    one = tf.data.Dataset.from_tensor_slices((_x(3), [1, 1, 1]))
    with pytest.raises(LabelError, match="one class"):
        DatasetAdapter.from_tf_dataset(one)
    failing = tf.data.Dataset.from_tensor_slices((_x(3), [0, 1, 2])).map(
        lambda x, y: (x, tf.debugging.check_numerics(0.0 / tf.cast(y, tf.float32), "bad label"))
    )
    with pytest.raises(DataError) as err:
        DatasetAdapter.from_tf_dataset(failing)
    _check_message(err, "Reading the labels of ds failed")


@pytest.mark.parametrize(
    ("y", "kwargs", "expected_task"),
    [
        (["dog", "cat", "cow", "dog"], {}, "multiclass"),
        ([[1, 0, 1], [0, 1, 0], [0, 0, 0], [1, 1, 1]], {}, "multilabel"),
        ([0.5, 1.5, 2.5, 3.5], {}, "regression"),
        ([[0.5, 1.0], [2.0, 3.0], [1.0, 1.0], [4.0, 0.0]], {}, "regression"),
        ([[0.0], [1.0], [1.0], [0.0]], {}, "binary"),
        ([True, False, True, True], {}, "binary"),
        ([2.0, 0.0, 1.0, 2.0], {"task": "multiclass"}, "multiclass"),
        (["b", "a", "a", "b"], {"class_names": ["b", "a", "c"]}, "multiclass"),
    ],
)
def test_tf_labels_encode_like_arrays(y, kwargs, expected_task):
    x = _x(4)
    from_ds = DatasetAdapter.from_tf_dataset(tf.data.Dataset.from_tensor_slices((x, y)), **kwargs)
    from_np = DatasetAdapter.from_arrays(x, y, **kwargs)
    assert from_ds.task == from_np.task == expected_task
    assert from_ds.class_names == from_np.class_names
    np.testing.assert_array_equal(from_ds.targets(), from_np.targets())
    _, ys_ds = _collect(from_ds.as_dataset(3))
    _, ys_np = _collect(from_np.as_dataset(3))
    np.testing.assert_array_equal(ys_ds, ys_np)
    assert ys_ds.dtype == np.float32


def test_tf_split_is_stratified_and_selects_by_index():
    y = np.array([0] * 12 + [1] * 6 + [2] * 3)
    data = DatasetAdapter.from_tf_dataset(tf.data.Dataset.from_tensor_slices((_x(21), y)).batch(5))
    rest, held = data.split(0.3, seed=0)
    assert held.class_counts() == {"0": 3, "1": 2, "2": 1}
    assert len(rest) + len(held) == 21
    for part in (rest, held):
        xs, ys = _collect(part.as_dataset(4))
        ids = _ids(xs)
        assert ids == sorted(ids)
        np.testing.assert_array_equal(ys.argmax(1), y[ids])
        np.testing.assert_array_equal(part.targets(), y[ids])
        assert int(part.as_dataset(4).cardinality()) == math.ceil(len(part) / 4)
        assert _ids(part.sample_inputs(100)) == ids
        assert _ids(np.concatenate(list(part.inputs_dataset(3)))) == ids
    assert not set(_ids(rest.sample_inputs(100))) & set(_ids(held.sample_inputs(100)))
    again = data.split(0.3, seed=0)[1]
    assert _ids(again.sample_inputs(100)) == _ids(held.sample_inputs(100))
    # nested split of a tf.data part
    a, b = rest.split(0.5, seed=1)
    xs, ys = _collect(b.as_dataset(10))
    np.testing.assert_array_equal(ys.argmax(1), y[_ids(xs)])


def test_tf_shuffle_is_seeded_and_keeps_pairs():
    y = np.arange(30) % 3
    data = DatasetAdapter.from_tf_dataset(tf.data.Dataset.from_tensor_slices((_x(30), y)))
    ds = data.as_dataset(7, shuffle=True, seed=5)
    first, ys = _collect(ds)
    second, _ = _collect(ds)
    assert sorted(_ids(first)) == list(range(30)) and _ids(first) != list(range(30))
    assert _ids(second) != _ids(first)
    np.testing.assert_array_equal(ys.argmax(1), y[_ids(first)])
    again, _ = _collect(data.as_dataset(7, shuffle=True, seed=5))
    assert _ids(again) == _ids(first)


def test_reshuffling_source_warns_and_refuses_split():
    ds = tf.data.Dataset.from_tensor_slices((_x(10), [0, 1] * 5)).shuffle(10)
    with pytest.warns(UserWarning, match="reshuffles"):
        data = DatasetAdapter.from_tf_dataset(ds)
    assert len(data) == 10
    with pytest.raises(DataError) as err:
        data.split(0.2)
    _check_message(err, "reshuffle", "fraction")
    fixed = tf.data.Dataset.from_tensor_slices((_x(10), [0, 1] * 5))
    stable = DatasetAdapter.from_tf_dataset(
        fixed.shuffle(10, seed=1, reshuffle_each_iteration=False)
    )
    assert len(stable.split(0.2)[1]) == 2


def test_tf_adapter_reencode_applies_on_the_fly():
    ds = tf.data.Dataset.from_tensor_slices((_x(4), ["cat", "dog", "dog", "cat"]))
    data = as_adapter(DatasetAdapter.from_tf_dataset(ds), class_names=["fox", "dog", "cat"])
    assert data.task == "multiclass" and data.targets().tolist() == [2, 1, 1, 2]
    _, ys = _collect(data.as_dataset(4))
    np.testing.assert_array_equal(ys.argmax(1), [2, 1, 1, 2])
    multi = tf.data.Dataset.from_tensor_slices((_x(2), [[1.0, 0.0], [1.0, 1.0]]))
    wide = as_adapter(DatasetAdapter.from_tf_dataset(multi), class_names=["1", "x", "0"])
    _, ys = _collect(wide.as_dataset(2))
    np.testing.assert_array_equal(ys, [[0, 0, 1], [1, 0, 1]])


# --------------------------------------------------------------------------- directory


def _write_image(path: Path, size: tuple[int, int], value: int, mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    channels = {"RGB": 3, "L": 1}[mode]
    arr = np.full((size[1], size[0], channels), value, np.uint8)
    arr[0, 0] = 255 - value
    Image.fromarray(arr.squeeze(-1) if channels == 1 else arr, mode).save(path)


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    for i, size in enumerate([(10, 12), (7, 7), (16, 9)]):
        _write_image(root / "cat" / f"c{i}.png", size, 10 + i)
    for i in range(2):
        _write_image(root / "dog" / f"d{i}.jpg", (8, 8), 200 + i)
    _write_image(root / "dog" / "nested" / "d9.png", (5, 5), 150, mode="L")
    _write_image(root / ".hidden" / "h.png", (5, 5), 1)
    (root / "dog" / "notes.txt").write_text("not an image")
    return root


def test_from_directory_lists_and_counts_without_decoding(image_dir):
    data = DatasetAdapter.from_directory(image_dir, image_size=(6, 5))
    assert (data.source, data.task, data.class_names) == ("directory", "binary", ["cat", "dog"])
    assert data.class_counts() == {"cat": 3, "dog": 3}
    assert len(data) == 6
    assert data.input_shape == (6, 5, 3) and data.input_dtype == "float32"
    assert data.targets().tolist() == [0, 0, 0, 1, 1, 1]


def test_directory_images_match_keras(image_dir):
    data = DatasetAdapter.from_directory(str(image_dir), image_size=(6, 5))
    xs, ys = _collect(data.as_dataset(4))
    assert xs.shape == (6, 6, 5, 3) and xs.dtype == np.float32
    np.testing.assert_array_equal(ys[:, 0], [0, 0, 0, 1, 1, 1])
    reference = keras.utils.image_dataset_from_directory(
        str(image_dir), image_size=(6, 5), batch_size=None, shuffle=False, verbose=False
    )
    ref_x = np.stack([x.numpy() for x, _ in reference])
    np.testing.assert_allclose(xs, ref_x)
    np.testing.assert_allclose(data.sample_inputs(2), ref_x[:2])
    np.testing.assert_allclose(np.concatenate(list(data.inputs_dataset(5))), ref_x)


def test_directory_options(image_dir):
    gray = DatasetAdapter.from_directory(image_dir, image_size=4, color_mode="grayscale")
    assert gray.input_shape == (4, 4, 1)
    assert next(iter(gray.as_dataset(2)))[0].shape == (2, 4, 4, 1)
    ordered = DatasetAdapter.from_directory(image_dir, class_names=["dog", "cat"], image_size=4)
    assert ordered.class_names == ["dog", "cat"] and ordered.targets().tolist()[:3] == [0, 0, 0]
    multi = DatasetAdapter.from_directory(image_dir, image_size=4, task="multiclass")
    assert multi.task == "multiclass" and multi.target_dim == 2
    _write_image(image_dir / "cow" / "m.png", (4, 4), 90)
    three = DatasetAdapter.from_directory(image_dir, image_size=4)
    assert three.task == "multiclass" and three.class_counts()["cow"] == 1
    only_cats = DatasetAdapter.from_directory(image_dir, image_size=4, class_names=["cat"])
    assert only_cats.class_counts() == {"cat": 3}


def test_directory_split_and_shuffle(image_dir):
    for i in range(3, 8):
        _write_image(image_dir / "cat" / f"c{i}.png", (4, 4), 10 + i)
    data = DatasetAdapter.from_directory(image_dir, image_size=(4, 4))
    rest, held = data.split(0.25, seed=0)
    assert held.class_counts() == {"cat": 2, "dog": 1}
    assert len(rest) + len(held) == len(data) == 11
    assert not set(rest._source.file_paths) & set(held._source.file_paths)
    xs, ys = _collect(held.as_dataset(2, shuffle=True, seed=0))
    # cats are dark (10..17), dogs bright (150..201): labels stay paired with images
    np.testing.assert_array_equal(ys[:, 0], (xs[:, 2, 2, 0] > 100).astype(np.float32))
    a, _ = _collect(data.as_dataset(3, shuffle=True, seed=9))
    b, _ = _collect(data.as_dataset(3, shuffle=True, seed=9))
    np.testing.assert_array_equal(a, b)


def test_directory_errors(tmp_path, image_dir):
    cases = [
        (lambda: DatasetAdapter.from_directory(tmp_path / "missing"), DataError, ["path"]),
        (
            lambda: DatasetAdapter.from_directory(image_dir / "cat" / "c0.png"),
            DataError,
            ["path", "not a directory"],
        ),
        (lambda: DatasetAdapter.from_directory(image_dir / "cat"), DataError, ["sub-folders"]),
        (
            lambda: DatasetAdapter.from_directory(image_dir, class_names=["cat", "bird"]),
            LabelError,
            ["class_names", "bird"],
        ),
        (
            lambda: DatasetAdapter.from_directory(image_dir, image_size=(0, 4)),
            DataError,
            ["image_size"],
        ),
        (
            lambda: DatasetAdapter.from_directory(image_dir, image_size="big"),
            ArgumentTypeError,
            ["image_size"],
        ),
        (
            lambda: DatasetAdapter.from_directory(image_dir, color_mode="cmyk"),
            DataError,
            ["color_mode"],
        ),
        (
            lambda: DatasetAdapter.from_directory(image_dir, interpolation="cubic"),
            DataError,
            ["interpolation"],
        ),
        (
            lambda: DatasetAdapter.from_directory(image_dir, task="regression"),
            LabelError,
            ["task"],
        ),
        (lambda: DatasetAdapter.from_directory(123), ArgumentTypeError, ["path"]),
    ]
    for build, exc, names in cases:
        with pytest.raises(exc) as err:
            build()
        _check_message(err, *names)


def test_directory_without_images_or_with_one_class(tmp_path):
    empty = tmp_path / "empty"
    (empty / "a").mkdir(parents=True)
    (empty / "b").mkdir()
    (empty / "b" / "readme.txt").write_text("x")
    with pytest.raises(DataError) as err:
        DatasetAdapter.from_directory(empty)
    _check_message(err, "path", "No images")
    _write_image(empty / "a" / "x.png", (4, 4), 1)
    with pytest.raises(LabelError) as err:
        DatasetAdapter.from_directory(empty)
    _check_message(err, "path", "Only one class")
    with pytest.warns(UserWarning, match="without images"):
        single = DatasetAdapter.from_directory(empty, class_names=["a", "b"], image_size=4)
    assert single.class_counts() == {"a": 1, "b": 0}


def test_unreadable_images(image_dir):
    bad = image_dir / "dog" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    data = DatasetAdapter.from_directory(image_dir, image_size=4)  # listing does not decode
    assert len(data) == 7
    with pytest.raises(tf.errors.InvalidArgumentError):
        _collect(data.as_dataset(8))
    with pytest.raises(DataError) as err:
        DatasetAdapter.from_directory(image_dir, image_size=4, validate=True)
    _check_message(err, "path", "1 of 7", os.path.join("dog", "broken.png"))
    with pytest.raises(ArgumentTypeError):
        DatasetAdapter.from_directory(image_dir, validate="yes")


# --------------------------------------------------------------------------- tf.data options


def _every_dataset(data: DatasetAdapter) -> dict[str, tf.data.Dataset]:
    return {
        "as_dataset": data.as_dataset(2, shuffle=True, seed=0),
        "inputs_dataset": data.inputs_dataset(2),
        "index_dataset": data.index_dataset(2, shuffle=True, seed=0),
    }


def test_every_dataset_switches_autotuning_off_and_keeps_its_elements(image_dir):
    """Each source's datasets run without tf.data's autotuning model (data/options.py: deleting
    an iterator can wait ~1 s for it), with the same elements as the pipeline with it on."""
    arrays = DatasetAdapter.from_arrays(_x(5), [0, 1, 2, 0, 1])
    pipeline = DatasetAdapter.from_tf_dataset(
        tf.data.Dataset.from_tensor_slices((_x(5), [0, 1, 2, 0, 1])).prefetch(1)
    )
    folder = DatasetAdapter.from_directory(image_dir, image_size=(6, 5))
    texts = DatasetAdapter.from_texts(["a b", "c", "d e f", "g"], [0, 1, 0, 1])
    on = tf.data.Options()
    on.autotune.enabled = True
    for data in (arrays, pipeline, folder, texts):
        for name, ds in _every_dataset(data).items():
            assert ds.options().autotune.enabled is False, (data.source, name)
        for name, ds in _every_dataset(data).items():  # fresh, seeded the same way
            reference = _every_dataset(data)[name].with_options(on)
            assert reference.options().autotune.enabled is True
            for got, want in zip(ds, reference, strict=True):
                tf.nest.map_structure(
                    lambda a, b: np.testing.assert_array_equal(a.numpy(), b.numpy()), got, want
                )
