"""The generated detection scenes of ``examples/detection_data.py``: exact boxes, determinism."""

from __future__ import annotations

import doctest
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture(scope="module")
def scenes_module() -> ModuleType:
    """Imports ``examples/detection_data.py`` by path (the folder is not a package)."""
    spec = importlib.util.spec_from_file_location(
        "ftk_example_detection_data", EXAMPLES / "detection_data.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def pairwise_iou(boxes: np.ndarray) -> np.ndarray:
    """IoU of every pair of xyxy boxes (hand formula), the diagonal zeroed."""
    x1 = np.maximum(boxes[:, None, 0], boxes[None, :, 0])
    y1 = np.maximum(boxes[:, None, 1], boxes[None, :, 1])
    x2 = np.minimum(boxes[:, None, 2], boxes[None, :, 2])
    y2 = np.minimum(boxes[:, None, 3], boxes[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    iou = inter / (area[:, None] + area[None, :] - inter)
    np.fill_diagonal(iou, 0.0)
    return iou


def check_exact_boxes(module, images, boxes, labels, names, max_objects: int) -> None:
    """From the pixels alone: no object pixel outside every box, each box touched on all four sides."""
    assert len(images) == len(boxes) == len(labels)
    for image, image_boxes, image_labels in zip(images, boxes, labels, strict=True):
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        assert image_boxes.dtype == np.float32 and image_boxes.shape == (len(image_labels), 4)
        assert image_labels.dtype == np.int64
        assert 1 <= len(image_labels) <= max_objects
        assert set(image_labels.tolist()) <= set(range(len(names)))
        brightest = image.max(axis=2)
        ink = brightest >= module.OBJECT_MIN
        # every pixel is clearly background or clearly object
        assert np.all(ink | (brightest <= module.BACKGROUND_MAX))
        height, width = brightest.shape
        covered = np.zeros_like(ink)
        for x1, y1, x2, y2 in image_boxes.astype(int):
            assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
            window = ink[y1:y2, x1:x2]
            assert window[0].any() and window[-1].any(), "top or bottom edge without object"
            assert window[:, 0].any() and window[:, -1].any(), "left or right edge without object"
            covered[y1:y2, x1:x2] = True
        assert not np.any(ink & ~covered), "object pixels outside every box"
        # each object has one random colour: the tight box of each colour's pixels is its box
        colours = np.unique(image[ink], axis=0)
        colour_boxes = []
        for colour in colours:
            rows, cols = np.nonzero(np.all(image == colour, axis=2))
            colour_boxes.append((cols.min(), rows.min(), cols.max() + 1, rows.max() + 1))
        assert sorted(colour_boxes) == sorted(map(tuple, image_boxes.astype(int).tolist()))
        assert np.array_equal(image_boxes, np.round(image_boxes)), "pixel-edge boxes are integers"
        if len(image_boxes) > 1:
            assert pairwise_iou(image_boxes.astype("float64")).max() <= 0.1 + 1e-9


def test_digit_scenes_have_exact_boxes_of_digit_size(scenes_module):
    images, boxes, labels, names = scenes_module.digit_scenes(40, seed=3)
    assert isinstance(images, np.ndarray) and images.shape == (40, 96, 96, 3)
    assert names == ["0", "1", "2"]
    check_exact_boxes(scenes_module, images, boxes, labels, names, max_objects=3)
    stacked = np.concatenate(boxes)
    width, height = stacked[:, 2] - stacked[:, 0], stacked[:, 3] - stacked[:, 1]
    # the setting: boxes about 16x22 px; thin "1"s narrower than the others
    assert 12 <= np.median(width) <= 20 and 18 <= np.median(height) <= 25
    all_labels = np.concatenate(labels)
    assert np.median(width[all_labels == 1]) < np.median(width[all_labels != 1])
    assert set(all_labels.tolist()) == {0, 1, 2}


def test_shape_scenes_have_exact_boxes(scenes_module):
    images, boxes, labels, names = scenes_module.shape_scenes(40, seed=5)
    assert isinstance(images, np.ndarray) and images.shape == (40, 64, 64, 3)
    assert names == ["square", "disc", "triangle"]
    check_exact_boxes(scenes_module, images, boxes, labels, names, max_objects=4)
    stacked = np.concatenate(boxes)
    sides = np.maximum(stacked[:, 2] - stacked[:, 0], stacked[:, 3] - stacked[:, 1])
    assert sides.max() <= 30 and np.median(sides) >= 8
    # each shape fills its own share of its box (boxes that touch another skipped)
    fills: dict[int, list[float]] = {0: [], 1: [], 2: []}
    for image, image_boxes, image_labels in zip(images, boxes, labels, strict=True):
        ink = image.max(axis=2) >= scenes_module.OBJECT_MIN
        alone = pairwise_iou(image_boxes.astype("float64")).max(axis=1, initial=0.0) == 0.0
        for (x1, y1, x2, y2), label, single in zip(
            image_boxes.astype(int), image_labels, alone, strict=True
        ):
            if single:
                fills[int(label)].append(float(ink[y1:y2, x1:x2].mean()))
    assert min(fills[0]) == 1.0  # squares fill their box
    assert 0.7 < np.median(fills[1]) < 0.85  # discs: pi / 4
    assert 0.4 < np.median(fills[2]) < 0.6  # triangles: about half


def test_shape_scenes_mixed_sizes(scenes_module):
    images, boxes, labels, names = scenes_module.shape_scenes(30, sizes=[48, (64, 96)], seed=1)
    assert isinstance(images, list) and len(images) == 30
    assert {image.shape for image in images} == {(48, 48, 3), (64, 96, 3)}
    check_exact_boxes(scenes_module, images, boxes, labels, names, max_objects=4)


def test_crowded_scenes_box_what_stays_visible(scenes_module):
    """Many objects on small canvases: later objects hide parts of earlier ones."""
    scenes = scenes_module.shape_scenes(
        60, size=40, max_objects=8, min_side=10, max_side=20, seed=4
    )
    check_exact_boxes(scenes_module, *scenes, max_objects=8)
    assert max(len(b) for b in scenes[1]) >= 5


def test_digit_subsets_draw_disjoint_mnist_images(scenes_module, monkeypatch):
    """``subset="train"`` and ``"test"`` scenes never show the same MNIST image."""
    digits, labels = scenes_module._mnist()
    # mark every MNIST image with its index in its two corner pixels (cropped away as non-ink)
    marked = digits.copy()
    marked[:, 0, 0] = np.arange(len(digits)) % 100
    marked[:, 0, 1] = np.arange(len(digits)) // 100
    drawn: dict[str, set[int]] = {"train": set(), "test": set()}
    original = scenes_module._digit_mask

    for subset in drawn:

        def spy(rng, digit, subset=subset):
            drawn[subset].add(int(digit[0, 0]) + 100 * int(digit[0, 1]))
            return original(rng, digit)

        monkeypatch.setattr(scenes_module, "_mnist", lambda: (marked, labels))
        monkeypatch.setattr(scenes_module, "_digit_mask", spy)
        scenes_module.digit_scenes(150, seed=0, subset=subset)
    assert drawn["train"] and drawn["test"] and not drawn["train"] & drawn["test"]
    for subset, low, high in (("train", 0, 400), ("test", 400, 500)):
        within = {i - 500 * int(labels[i]) for i in drawn[subset]}
        assert min(within) >= low and max(within) < high
        assert set(labels[sorted(drawn[subset])].tolist()) == {0, 1, 2}


def test_scenes_are_deterministic_by_seed(scenes_module):
    for make in (scenes_module.digit_scenes, scenes_module.shape_scenes):
        first, again, other = make(6, seed=7), make(6, seed=7), make(6, seed=8)
        assert np.array_equal(first[0], again[0])
        for a, b in zip(first[1] + first[2], again[1] + again[2], strict=True):
            assert np.array_equal(a, b)
        assert not np.array_equal(first[0], other[0])
    assert np.array_equal(
        scenes_module.digit_scenes(3, seed=2)[0], scenes_module.digit_scenes(5, seed=2)[0][:3]
    )


@pytest.mark.parametrize(
    ("call", "kwargs", "message"),
    [
        ("digit_scenes", {"n": -1}, "n must be an integer >= 0"),
        ("digit_scenes", {"n": 2, "size": 16}, "size must be an integer >= 32"),
        ("digit_scenes", {"n": 2, "classes": (1, 1)}, "distinct digits"),
        ("digit_scenes", {"n": 2, "classes": (3, 10)}, "distinct digits"),
        ("digit_scenes", {"n": 2, "max_objects": 0}, "max_objects must be"),
        ("digit_scenes", {"n": 2, "subset": "val"}, "subset must be one of"),
        ("shape_scenes", {"n": 2, "sizes": [24]}, "max_side=30 does not fit"),
        ("shape_scenes", {"n": 2, "sizes": []}, "at least one size"),
        ("shape_scenes", {"n": 2, "min_side": 20, "max_side": 10}, "max_side must be"),
    ],
)
def test_bad_arguments_are_named(scenes_module, call, kwargs, message):
    with pytest.raises(ValueError, match=message):
        getattr(scenes_module, call)(**kwargs)


def test_docstring_examples_run(scenes_module):
    failures, attempted = doctest.testmod(scenes_module, verbose=False, report=True)
    assert attempted >= 4 and failures == 0
