"""Detection data (finetunekit/data/detection.py): from_detection, from_coco, from_voc.

Boxes are checked against hand conversions of every box format, the
streamed batches against the arrays they came from, and COCO / VOC files
written to ``tmp_path`` against the boxes they were written with.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorflow as tf

import finetunekit as ftk
from finetunekit.data import DatasetAdapter
from finetunekit.data.detection import BOX_FORMATS, EDGE_TOLERANCE, convert_boxes
from finetunekit.tasks.detection import Detection

# boxes in absolute xyxy, in a 32 (high) x 48 (wide) image
XYXY = np.array([[2.0, 3.0, 10.0, 20.0], [0.0, 0.0, 48.0, 32.0], [30.5, 1.25, 47.0, 9.75]])
H, W = 32, 48


def _hand(fmt: str) -> np.ndarray:
    """XYXY written by hand in ``fmt`` (independent of convert_boxes)."""
    x1, y1, x2, y2 = XYXY.T
    base = fmt.removeprefix("rel_")
    cols = {
        "xyxy": (x1, y1, x2, y2),
        "xywh": (x1, y1, x2 - x1, y2 - y1),
        "yxyx": (y1, x1, y2, x2),
        "cxcywh": ((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1),
    }[base]
    out = np.stack(cols, axis=1)
    if fmt.startswith("rel_"):
        scale = {"xyxy": [W, H, W, H], "xywh": [W, H, W, H], "yxyx": [H, W, H, W]}
        out = out / np.array(scale.get(base, [W, H, W, H]), np.float64)
    return out


def _images(n: int = 4) -> np.ndarray:
    """Images whose pixels all hold their example index (to follow them through splits)."""
    return np.stack([np.full((H, W, 3), i, "uint8") for i in range(n)])


# ---------------------------------------------------------------------- from_detection


@pytest.mark.parametrize("fmt", BOX_FORMATS)
def test_every_box_format_round_trips_to_canonical_xyxy(fmt: str) -> None:
    data = DatasetAdapter.from_detection(
        _images(1), [_hand(fmt)], [[0, 1, 1]], box_format=fmt, class_names=["a", "b"]
    )
    np.testing.assert_allclose(data.targets()[0, :, :4], XYXY, atol=1e-5)
    assert data.targets()[0, :, 4].tolist() == [0, 1, 1]
    np.testing.assert_allclose(convert_boxes(XYXY, "xyxy", fmt, (H, W)), _hand(fmt), atol=1e-12)


def test_adapter_basics_count_boxes_not_images() -> None:
    boxes = [XYXY, XYXY[:1], np.zeros((0, 4)), XYXY[1:]]
    labels = [[0, 1, 2], [2], [], [1, 2]]
    data = DatasetAdapter.from_detection(_images(), boxes, labels, class_names=["a", "b", "c"])
    assert data.task == "detection" and isinstance(data.task_object, Detection)
    assert len(data) == 4 and data.num_classes == 3 and data.class_names == ["a", "b", "c"]
    assert data.class_counts() == {"a": 1, "b": 2, "c": 3}
    targets = data.targets()
    assert targets.shape == (4, 3, 5) and targets.dtype == np.float32
    assert (targets[2] == -1).all() and (targets[1, 1:] == -1).all()
    assert data.input_shape == (H, W, 3) and data.input_dtype == "uint8"


def test_string_labels_become_sorted_class_names() -> None:
    data = DatasetAdapter.from_detection(
        _images(2), [XYXY[:2], XYXY[2:]], [["dog", "cat"], ["dog"]]
    )
    assert data.class_names == ["cat", "dog"]
    assert data.targets()[:, :, 4].tolist() == [[1, 0], [1, -1]]


def test_batches_pad_labels_with_minus_one_and_keep_boxes() -> None:
    boxes = [XYXY, XYXY[:1], np.zeros((0, 4)), XYXY[1:]]
    data = DatasetAdapter.from_detection(_images(), boxes, [[0, 1, 2], [2], [], [1, 2]])
    x, y = next(iter(data.as_dataset(4)))
    assert x.shape == (4, H, W, 3) and x.dtype == tf.uint8
    assert set(y) == {"boxes", "labels"}
    assert y["boxes"].dtype == tf.float32 and y["labels"].dtype == tf.int32
    assert y["labels"].numpy().tolist() == [[0, 1, 2], [2, -1, -1], [-1, -1, -1], [1, 2, -1]]
    np.testing.assert_allclose(y["boxes"].numpy()[0], XYXY)
    np.testing.assert_allclose(y["boxes"].numpy()[3, :2], XYXY[1:])


def test_mixed_sizes_pad_each_batch_at_the_bottom_right() -> None:
    images = [
        np.full((20, 30, 3), 1, "uint8"),
        np.full((40, 10, 3), 2, "uint8"),
        np.full((8, 8, 3), 3, "uint8"),
    ]
    boxes = [[[0, 0, 30, 20]], [[1, 1, 9, 39]], [[2, 2, 4, 4]]]
    data = DatasetAdapter.from_detection(images, boxes, [[0], [1], [0]])
    assert data.input_shape == (None, None, 3)
    batches = list(data.as_dataset(2))
    x0, y0 = batches[0]
    assert x0.shape == (2, 40, 30, 3)
    assert (x0[0, :20, :30].numpy() == 1).all() and (x0[0, 20:].numpy() == 0).all()
    assert (x0[1, :40, :10].numpy() == 2).all() and (x0[1, :, 10:].numpy() == 0).all()
    np.testing.assert_allclose(y0["boxes"].numpy()[:, 0], [[0, 0, 30, 20], [1, 1, 9, 39]])
    x1, _ = batches[1]
    assert x1.shape == (1, 8, 8, 3)
    shuffled = [int(b[0].numpy()[0, 0, 0, 0]) for b in data.as_dataset(1, shuffle=True, seed=3)]
    assert sorted(shuffled) == [1, 2, 3]
    rest, held = data.split(0.34, seed=0)
    for part in (rest, held):
        for x, y in part.as_dataset(1):
            i = int(x.numpy()[0, 0, 0, 0]) - 1
            assert x.shape[1:3] == images[i].shape[:2]
            np.testing.assert_allclose(y["boxes"].numpy()[0], boxes[i])


def test_split_keeps_every_box_with_its_image() -> None:
    n = 20
    rng = np.random.default_rng(0)
    boxes = [XYXY[: i % 4] for i in range(n)]
    labels = [rng.integers(0, 3, i % 4) for i in range(n)]
    data = DatasetAdapter.from_detection(_images(n), boxes, labels, class_names=["a", "b", "c"])
    rest, held = data.split(0.25, seed=1)
    assert len(rest) + len(held) == n and len(held) == 5
    seen = []
    for part in (rest, held):
        assert part.num_classes == 3
        for x, y in part.as_dataset(3):
            for image, lab, box in zip(x.numpy(), y["labels"].numpy(), y["boxes"].numpy()):
                i = int(image[0, 0, 0])
                seen.append(i)
                k = i % 4
                assert lab[:k].tolist() == labels[i].tolist() and (lab[k:] == -1).all()
                np.testing.assert_allclose(box[:k], XYXY[:k])
    assert sorted(seen) == list(range(n))
    total = {name: rest.class_counts()[name] + held.class_counts()[name] for name in "abc"}
    assert total == data.class_counts()


def test_inputs_dataset_and_sample() -> None:
    data = DatasetAdapter.from_detection(_images(3), [XYXY] * 3, [[0, 0, 0]] * 3)
    shapes = [tuple(b.shape) for b in data.inputs_dataset(2)]
    assert shapes == [(2, H, W, 3), (1, H, W, 3)]
    assert data.sample_inputs(2).shape == (2, H, W, 3)


def test_grayscale_arrays_get_a_channel_axis() -> None:
    data = DatasetAdapter.from_detection(
        np.zeros((2, H, W), "float32"), [XYXY, []], [[0, 0, 0], []]
    )
    assert data.input_shape == (H, W, 1)
    x, _ = next(iter(data.as_dataset(2)))
    assert x.shape == (2, H, W, 1)


def test_overshoot_within_tolerance_is_clipped() -> None:
    over = [[-0.5, -0.9, W + 0.7, H + EDGE_TOLERANCE]]
    data = DatasetAdapter.from_detection(_images(1), [over], [[0]])
    np.testing.assert_allclose(data.targets()[0, 0, :4], [0, 0, W, H])


# ---------------------------------------------------------------------- from_detection errors


def _bad(**changes: Any) -> None:
    args: dict[str, Any] = {
        "images": _images(2),
        "boxes": [XYXY, XYXY[:1]],
        "labels": [[0, 1, 0], [1]],
    }
    args.update(changes)
    DatasetAdapter.from_detection(args.pop("images"), args.pop("boxes"), args.pop("labels"), **args)


@pytest.mark.parametrize(
    "changes, error, match",
    [
        ({"boxes": [XYXY, [[0, 0, W + 1.5, 10]]]}, ftk.DataError, "outside the 48x32 image"),
        ({"boxes": [XYXY, [[-2, 0, 10, 10]]]}, ftk.DataError, "outside"),
        ({"boxes": [XYXY, [[5, 5, 5, 10]]]}, ftk.DataError, "zero or negative width"),
        ({"boxes": [XYXY, [[5, 5, 10, 2]]]}, ftk.DataError, "zero or negative"),
        (
            {"boxes": [[[1, 1, 2, 2]], [[5, 5, 0, 3]]], "labels": [[0], [1]], "box_format": "xywh"},
            ftk.DataError,
            "zero or neg",
        ),
        ({"boxes": [XYXY, [[0, 0, 2, 0.5]]], "box_format": "rel_xyxy"}, ftk.DataError, "outside"),
        ({"labels": [[0, 1, 0], [3]], "class_names": ["a", "b"]}, ftk.LabelError, "outside"),
        ({"labels": [[0, 1, 0], [-1]]}, ftk.LabelError, "outside"),
        ({"labels": [[0, 1], [1]]}, ftk.LabelError, "3 boxes but 2 labels"),
        ({"labels": [[0, 1, 0]]}, ftk.DataError, "2 images but 1 entries in labels"),
        ({"boxes": [XYXY]}, ftk.DataError, "entries in boxes"),
        ({"box_format": "xyhw"}, ftk.DataError, "Unknown box_format"),
        ({"box_format": "XYWHH"}, ftk.DataError, "Did you mean"),
        ({"boxes": [XYXY, [[np.nan, 0, 1, 1]]]}, ftk.DataError, "NaN"),
        ({"boxes": [XYXY, [[0, 0, 1]]]}, ftk.DataError, r"shape \(1, 3\)"),
        ({"boxes": [[], []], "labels": [[], []]}, ftk.DataError, "has a box"),
        ({"labels": [[0.5, 1, 0], [1]]}, ftk.LabelError, "neither"),
        ({"images": np.zeros((2, 4), "uint8")}, ftk.DataError, "images has shape"),
        ({"images": np.full((2, H, W, 3), "a")}, ftk.DataError, "dtype <U1"),
        (
            {"images": [np.zeros((H, W, 3), "uint8"), np.zeros((H, W, 1), "uint8")]},
            ftk.DataError,
            "channel count",
        ),
        ({"images": "photos/"}, ftk.ArgumentTypeError, "array or a list"),
        ({"box_format": 3}, ftk.ArgumentTypeError, "box_format must be a string"),
        ({"task": "multiclass"}, ftk.ArgumentTypeError, "detection task"),
    ],
)
def test_malformed_detection_data_raises_before_anything_is_built(
    changes: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match) as info:
        _bad(**changes)
    assert "Received:" in str(info.value) and "Expected" in str(info.value)


# ---------------------------------------------------------------------- COCO


def _write_png(path: Path, h: int, w: int, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.full((h, w, 3), value, "uint8")
    path.write_bytes(tf.io.encode_png(pixels).numpy())


def _coco(tmp_path: Path) -> tuple[dict[str, Any], Path]:
    folder = tmp_path / "images"
    _write_png(folder / "a.png", 32, 48, 10)
    _write_png(folder / "sub" / "b.png", 24, 16, 20)
    _write_png(folder / "c.png", 16, 16, 30)
    doc = {
        "images": [
            {"id": 5, "file_name": "a.png", "width": 48, "height": 32},
            {"id": 9, "file_name": "sub/b.png", "width": 16, "height": 24},
            {"id": 11, "file_name": "c.png", "width": 16, "height": 16},  # no annotation
        ],
        "annotations": [
            {"id": 1, "image_id": 5, "category_id": 7, "bbox": [2, 3, 8, 17], "iscrowd": 0},
            {"id": 2, "image_id": 5, "category_id": 3, "bbox": [0, 0, 48, 32], "iscrowd": 0},
            {"id": 3, "image_id": 9, "category_id": 7, "bbox": [1.5, 2, 10, 20]},
            {"id": 4, "image_id": 9, "category_id": 3, "bbox": [0, 0, 16, 24], "iscrowd": 1},
        ],
        "categories": [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}],
    }
    return doc, folder


def test_from_coco_maps_categories_and_reads_boxes(tmp_path: Path) -> None:
    doc, folder = _coco(tmp_path)
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(doc))
    data = DatasetAdapter.from_coco(path, folder)
    assert data.class_names == ["cat", "dog"]  # category ids 3, 7 in ascending order
    assert len(data) == 3 and data.source == "files"
    assert data.class_counts() == {"cat": 1, "dog": 2}  # the crowd box is left out
    t = data.targets()
    np.testing.assert_allclose(t[0, :2], [[2, 3, 10, 20, 1], [0, 0, 48, 32, 0]])
    np.testing.assert_allclose(t[1, 0], [1.5, 2, 11.5, 22, 1])
    assert (t[2] == -1).all()
    batches = list(data.as_dataset(2))
    x0, y0 = batches[0]
    assert x0.shape == (2, 32, 48, 3) and x0.dtype == tf.uint8
    assert (x0[0].numpy() == 10).all() and (x0[1, :24, :16].numpy() == 20).all()
    assert y0["labels"].numpy().tolist() == [[1, 0], [1, -1]]
    assert batches[1][0].shape == (1, 16, 16, 3)
    same = DatasetAdapter.from_coco(doc, folder, validate=True)  # a dict works too
    np.testing.assert_array_equal(same.targets(), t)
    rest, held = data.split(0.34, seed=0)
    for part in (rest, held):
        for x, y in part.as_dataset(1):
            row = {10: 0, 20: 1, 30: 2}[int(x.numpy()[0, 0, 0, 0])]
            np.testing.assert_allclose(y["boxes"].numpy()[0], t[row, :, :4])


def _without(doc: dict[str, Any], section: str, key: str) -> dict[str, Any]:
    doc = json.loads(json.dumps(doc))
    del doc[section][0][key]
    return doc


@pytest.mark.parametrize(
    "edit, match",
    [
        (
            lambda d: {k: v for k, v in d.items() if k != "categories"},
            r"lacks the keys \['categories'\]",
        ),
        (
            lambda d: _without(d, "annotations", "bbox"),
            r"annotations\[0\] lacks the keys \['bbox'\]",
        ),
        (lambda d: _without(d, "images", "width"), r"images\[0\] lacks the keys \['width'\]"),
        (lambda d: _without(d, "categories", "name"), "lacks the keys"),
        (
            lambda d: {
                **d,
                "annotations": [
                    *d["annotations"],
                    {"image_id": 99, "bbox": [0, 0, 1, 1], "category_id": 3},
                ],
            },
            "image id 99",
        ),
        (
            lambda d: {
                **d,
                "annotations": [{"image_id": 5, "bbox": [0, 0, 1, 1], "category_id": 4}],
            },
            "category_id 4",
        ),
        (
            lambda d: {
                **d,
                "annotations": [{"image_id": 5, "bbox": [40, 0, 10, 5], "category_id": 3}],
            },
            "outside",
        ),
        (
            lambda d: {
                **d,
                "annotations": [{"image_id": 5, "bbox": [4, 0, 0, 5], "category_id": 3}],
            },
            "zero or negative",
        ),
        (
            lambda d: {
                **d,
                "images": [
                    *d["images"],
                    {"id": 12, "file_name": "gone.png", "width": 4, "height": 4},
                ],
            },
            r"absent: \['gone.png'\]",
        ),
    ],
)
def test_malformed_coco_raises(tmp_path: Path, edit: Any, match: str) -> None:
    doc, folder = _coco(tmp_path)
    with pytest.raises(ftk.DataError, match=match):
        DatasetAdapter.from_coco(edit(doc), folder)


def test_coco_validate_finds_a_size_that_differs(tmp_path: Path) -> None:
    doc, folder = _coco(tmp_path)
    doc["images"][2]["width"] = 20
    DatasetAdapter.from_coco(doc, folder)  # sizes are not read without validate
    with pytest.raises(ftk.DataError, match="16x16 on disk, 20x16 in the annotations"):
        DatasetAdapter.from_coco(doc, folder, validate=True)


def test_coco_stream_stops_at_a_file_whose_size_differs(tmp_path: Path) -> None:
    doc, folder = _coco(tmp_path)
    doc["images"][0]["height"] = 40
    data = DatasetAdapter.from_coco(doc, folder)
    with pytest.raises(tf.errors.InvalidArgumentError, match="differs from its annotation"):
        list(data.as_dataset(3))


@pytest.mark.parametrize(
    "section, key, value, match",
    [
        ("categories", "id", "seven", "int category id"),
        ("images", "id", [5], "image id"),
        ("annotations", "category_id", None, "category_id None"),
    ],
)
def test_coco_ids_of_the_wrong_type(
    tmp_path: Path, section: str, key: str, value: Any, match: str
) -> None:
    doc, folder = _coco(tmp_path)
    doc[section][0][key] = value
    with pytest.raises(ftk.DataError, match=match):
        DatasetAdapter.from_coco(doc, folder)


def test_coco_file_that_is_not_json(tmp_path: Path) -> None:
    _, folder = _coco(tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ftk.DataError, match="not valid JSON"):
        DatasetAdapter.from_coco(bad, folder)


# ---------------------------------------------------------------------- VOC


def _voc_xml(filename: str, w: int, h: int, objects: list[tuple[str, list[int], int]]) -> str:
    parts = [
        f"<annotation><folder>VOC</folder><filename>{filename}</filename>",
        f"<size><width>{w}</width><height>{h}</height><depth>3</depth></size>",
    ]
    for name, (x1, y1, x2, y2), difficult in objects:
        parts.append(
            f"<object><name>{name}</name><difficult>{difficult}</difficult><bndbox>"
            f"<xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax>"
            "</bndbox></object>"
        )
    return "".join(parts) + "</annotation>"


def _voc(tmp_path: Path) -> Path:
    root = tmp_path / "voc"
    (root / "Annotations").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    for name, (h, w) in {"0001": (32, 48), "0002": (20, 20)}.items():
        pixels = np.zeros((h, w, 3), "uint8")
        (root / "JPEGImages" / f"{name}.jpg").write_bytes(tf.io.encode_jpeg(pixels).numpy())
    (root / "Annotations" / "0001.xml").write_text(
        _voc_xml("0001.jpg", 48, 32, [("person", [1, 1, 48, 32], 0), ("car", [5, 6, 20, 21], 1)])
    )
    (root / "Annotations" / "0002.xml").write_text(
        _voc_xml("0002.jpg", 20, 20, [("car", [3, 4, 10, 12], 0)])
    )
    return root


def test_from_voc_reads_one_based_inclusive_boxes(tmp_path: Path) -> None:
    root = _voc(tmp_path)
    data = DatasetAdapter.from_voc(root)
    assert data.class_names == ["car", "person"]
    t = data.targets()
    np.testing.assert_allclose(t[0], [[0, 0, 48, 32, 1], [4, 5, 20, 21, 0]])
    np.testing.assert_allclose(t[1, 0], [2, 3, 10, 12, 0])
    x, y = next(iter(data.as_dataset(2)))
    assert x.shape == (2, 32, 48, 3)
    easy = DatasetAdapter.from_voc(root, include_difficult=False, validate=True)
    assert easy.class_counts() == {"car": 1, "person": 1}
    named = DatasetAdapter.from_voc(root, class_names=["person", "car", "bus"])
    assert named.num_classes == 3 and named.class_counts() == {"person": 1, "car": 2, "bus": 0}


@pytest.mark.parametrize(
    "text, error, match",
    [
        ("<annotation><filename>0002.jpg", ftk.DataError, "not well-formed XML"),
        ("<annotation><filename>0002.jpg</filename></annotation>", ftk.DataError, "no <size>"),
        (
            _voc_xml("0002.jpg", 20, 20, [("car", [3, 4, 10, 12], 0)]).replace(
                "<xmax>10</xmax>", ""
            ),
            ftk.DataError,
            "lacks <xmax>",
        ),
        (
            _voc_xml("0002.jpg", 20, 20, [("car", [3, 4, 10, 12], 0)]).replace(">10<", ">ten<"),
            ftk.DataError,
            "not a number",
        ),
        (_voc_xml("0002.jpg", 20, 20, [("car", [3, 4, 30, 12], 0)]), ftk.DataError, "outside"),
        (_voc_xml("0009.jpg", 20, 20, [("car", [3, 4, 10, 12], 0)]), ftk.DataError, "absent"),
        (_voc_xml("0002.jpg", 20, 20, [("bus", [3, 4, 10, 12], 0)]), ftk.LabelError, "bus"),
    ],
)
def test_malformed_voc_raises(
    tmp_path: Path, text: str, error: type[Exception], match: str
) -> None:
    root = _voc(tmp_path)
    (root / "Annotations" / "0002.xml").write_text(text)
    with pytest.raises(error, match=match):
        DatasetAdapter.from_voc(root, class_names=["car", "person"])


# ---------------------------------------------------------------------- the task


def test_detection_task_config_and_registry() -> None:
    from finetunekit import tasks

    task = Detection(max_detections=50)
    assert tasks.get("detection") == Detection()
    assert tasks.deserialize(tasks.serialize(task)) == task
    data = DatasetAdapter.from_detection(_images(1), [XYXY], [[0, 0, 0]], task=task)
    assert data.task_object.max_detections == 50
    with pytest.raises(ftk.ConfigError, match="max_detections"):
        Detection(max_detections=0)


def test_fit_with_a_backbone_without_feature_maps_says_so() -> None:
    import keras

    data = DatasetAdapter.from_detection(_images(4), [XYXY] * 4, [[0, 1, 0]] * 4)
    net = keras.Sequential([keras.Input((None, None, 3)), keras.layers.GlobalAveragePooling2D()])
    tuner = ftk.FineTuner().with_data(data).with_backbone(ftk.Backbone.from_model(net))
    with pytest.raises(ftk.BackboneError, match="no feature map"):
        tuner.fit()
    with pytest.raises(ftk.LabelError, match="from_detection"):
        DatasetAdapter.from_arrays(_images(2), [0, 1], task="detection")


class _PerfectDetector:
    """Duck-typed detector: predicts the truth (KerasHub's output dict) from the pixels' index."""

    def __init__(self, targets: np.ndarray) -> None:
        self.targets = targets

    def predict(self, ds: tf.data.Dataset, verbose: int = 0) -> dict[str, np.ndarray]:
        index = np.concatenate([b.numpy()[:, 0, 0, 0] for b in ds]).astype(int)
        t = self.targets[index]
        return {
            "boxes": t[..., :4],
            "confidence": np.where(t[..., 4] >= 0, 0.9, 0.0),
            "labels": t[..., 4].astype(int),
            "num_detections": (t[..., 4] >= 0).sum(axis=1),
        }


def test_evaluator_scores_a_detector_through_the_task_hook() -> None:
    boxes = [XYXY, XYXY[:1], np.zeros((0, 4)), XYXY[1:]]
    data = DatasetAdapter.from_detection(_images(), boxes, [[0, 1, 2], [2], [], [1, 2]])
    report = ftk.Evaluator(batch_size=3).evaluate(_PerfectDetector(data.targets()), data)
    assert report.task == "detection" and report.num_examples == 4
    assert report.metrics["map"] == pytest.approx(1.0)
    assert report.per_class["2"]["num_ground_truth"] == 3

    class Flat:
        def predict(self, ds: Any, verbose: int = 0) -> np.ndarray:
            return np.zeros((4, 3))

    with pytest.raises(ftk.EvaluationError, match="not a dict of padded detections"):
        ftk.Evaluator().evaluate(Flat(), data)
