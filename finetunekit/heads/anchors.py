"""Anchor boxes for a detector, chosen from the training boxes (numpy only).

A one-stage detector such as RetinaNet predicts, for every anchor box of a
fixed grid, a class and a correction to the anchor. A ground-truth box gets
a training target only if some anchor overlaps it well (IoU >= 0.5 in
RetinaNet), so anchors that do not fit the data leave objects unlearnable:
KerasHub's object-detection guide uses ``anchor_size=4`` (the smallest anchor
is 32 px at pyramid level 3), and on 96x96 images with digits about 16x22 px
only 22% of the boxes could ever be matched (issue 15).

:func:`choose_anchors` picks the anchor settings of KerasHub's
``keras_hub.layers.AnchorGenerator`` (``min_level``, ``max_level``,
``num_scales``, ``aspect_ratios``, ``anchor_size``) from the training boxes:
aspect ratios from the boxes' shapes, sizes and pyramid levels from their
sizes, keeping the candidate under which the most boxes reach the matching
IoU. :func:`anchor_boxes` lays the anchors out exactly as that layer does
(tested against it), so the coverage it reports is what training will see.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> xy = rng.uniform(0, 70, (200, 2))
    >>> boxes = np.concatenate([xy, xy + [16, 22]], axis=1)  # digits of about 16x22 px
    >>> choice = choose_anchors(boxes, (96, 96))
    >>> choice.coverage >= 0.95
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from finetunekit.errors import DataError, format_error

__all__ = ["AnchorChoice", "AnchorSpec", "anchor_boxes", "choose_anchors", "coverage"]

_MAX_SEARCH_BOXES = 1000  # boxes the search scores (a random subset beyond this)


@dataclass(frozen=True)
class AnchorSpec:
    """The settings of ``keras_hub.layers.AnchorGenerator``.

    Attributes:
        min_level: the first pyramid level (stride ``2**min_level``).
        max_level: the last pyramid level.
        num_scales: anchor sizes per level, ``2**(s / num_scales)`` apart.
        aspect_ratios: anchor shapes, as KerasHub reads them: height / width.
        anchor_size: the base anchor's size over the level's stride.
    """

    min_level: int = 3
    max_level: int = 7
    num_scales: int = 3
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    anchor_size: float = 4.0

    def generator_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``keras_hub.layers.AnchorGenerator`` (add the box format)."""
        return {
            "min_level": self.min_level,
            "max_level": self.max_level,
            "num_scales": self.num_scales,
            "aspect_ratios": list(self.aspect_ratios),
            "anchor_size": self.anchor_size,
        }


@dataclass(frozen=True)
class AnchorChoice:
    """What :func:`choose_anchors` picked, and how well it fits the boxes.

    Attributes:
        spec: the anchor settings.
        coverage: the fraction of boxes whose best anchor reaches ``iou``.
        iou: the matching IoU the coverage is measured at.
        best_iou: per scored box, the IoU of its best anchor.
        reason: one sentence on how the settings were chosen.
    """

    spec: AnchorSpec
    coverage: float
    iou: float
    best_iou: np.ndarray
    reason: str


def anchor_boxes(spec: AnchorSpec, image_size: tuple[int, int]) -> np.ndarray:
    """All anchors of ``spec`` on an image of ``(height, width)``, ``xyxy`` pixels, ``(A, 4)``.

    Level by level, the layout of KerasHub's ``AnchorGenerator`` (0.32):
    ``ceil(size / 2**level)`` centres per axis at multiples of the stride
    ``size // cells`` starting at 0; at each centre, for every aspect ratio
    and scale, a box of side ``int(2**level * anchor_size * 2**(s / num_scales))``
    stretched to height ``side * sqrt(ratio)`` and width ``side / sqrt(ratio)``,
    half-extents rounded.

    Examples:
        >>> anchor_boxes(AnchorSpec(3, 3, 1, (1.0,), 1.0), (16, 16)).tolist()
        [[-4.0, -4.0, 4.0, 4.0], [4.0, -4.0, 12.0, 4.0], [-4.0, 4.0, 4.0, 12.0], [4.0, 4.0, 12.0, 12.0]]
    """
    height, width = int(image_size[0]), int(image_size[1])
    ratios = np.asarray(spec.aspect_ratios, np.float32)
    h_ratio, w_ratio = np.sqrt(ratios), 1.0 / np.sqrt(ratios)
    out = []
    for level in range(spec.min_level, spec.max_level + 1):
        cells_y, cells_x = math.ceil(height / 2**level), math.ceil(width / 2**level)
        stride_y, stride_x = height // cells_y, width // cells_x
        cy, cx = np.meshgrid(
            np.arange(cells_y, dtype=np.float32) * stride_y,
            np.arange(cells_x, dtype=np.float32) * stride_x,
            indexing="ij",
        )
        shifts = np.stack([cx.ravel(), cy.ravel(), cx.ravel(), cy.ravel()], axis=1)
        sides = np.array(
            [
                int(2**level * spec.anchor_size * 2 ** (s / spec.num_scales))
                for s in range(spec.num_scales)
            ],
            np.float32,
        )
        ws = (w_ratio[:, None] * sides[None, :]).ravel()
        hs = (h_ratio[:, None] * sides[None, :]).ravel()
        base = np.round(np.stack([-ws, -hs, ws, hs], axis=1) / 2)
        out.append((shifts[:, None, :] + base[None, :, :]).reshape(-1, 4))
    return np.concatenate(out, axis=0).astype(np.float32)


def _best_iou(boxes: np.ndarray, anchors: np.ndarray, chunk: int = 256) -> np.ndarray:
    """For every box, the highest IoU with any anchor."""
    best = np.zeros(len(boxes), np.float64)
    area_a = (anchors[:, 2] - anchors[:, 0]) * (anchors[:, 3] - anchors[:, 1])
    for start in range(0, len(boxes), chunk):
        b = boxes[start : start + chunk, None, :]
        iw = np.clip(
            np.minimum(b[..., 2], anchors[:, 2]) - np.maximum(b[..., 0], anchors[:, 0]), 0, None
        )
        ih = np.clip(
            np.minimum(b[..., 3], anchors[:, 3]) - np.maximum(b[..., 1], anchors[:, 1]), 0, None
        )
        inter = iw * ih
        area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
        best[start : start + chunk] = (inter / (area_b + area_a - inter)).max(axis=1)
    return best


def coverage(
    spec: AnchorSpec, boxes: Any, image_size: tuple[int, int], iou: float = 0.5
) -> tuple[float, np.ndarray]:
    """The fraction of ``boxes`` (``xyxy`` pixels) whose best anchor reaches ``iou``, and the IoUs.

    Examples:
        >>> spec = AnchorSpec(3, 3, 1, (1.0,), 1.0)
        >>> coverage(spec, [[4, 4, 12, 12], [0, 0, 2, 2]], (16, 16))[0]
        0.5
    """
    boxes = _check_boxes(boxes)
    best = _best_iou(boxes, anchor_boxes(spec, image_size))
    return float(np.mean(best >= iou)), best


def _check_boxes(boxes: Any) -> np.ndarray:
    array = np.asarray(boxes, np.float64)
    if array.ndim != 2 or array.shape[1] != 4 or len(array) == 0:
        raise DataError(
            format_error(
                "boxes must be a non-empty (N, 4) array of xyxy pixel boxes",
                expected="(N, 4) with N >= 1",
                received={"boxes.shape": tuple(array.shape)},
                fix="Pass every training box in the model's input pixels (after resizing)",
            )
        )
    if np.any(array[:, 2] <= array[:, 0]) or np.any(array[:, 3] <= array[:, 1]):
        raise DataError(
            format_error(
                "boxes must have positive width and height (xyxy: x2 > x1, y2 > y1)",
                expected="x1 < x2 and y1 < y2 in every row",
                received={
                    "boxes": array[(array[:, 2] <= array[:, 0]) | (array[:, 3] <= array[:, 1])][
                        :3
                    ].tolist()
                },
                fix="Convert the boxes to xyxy first (finetunekit.boxes.convert_boxes)",
            )
        )
    return array


def _ratios(boxes: np.ndarray, count: int) -> tuple[float, ...]:
    """``count`` aspect ratios (height / width) at evenly spaced quantiles of the boxes'."""
    log_ratio = np.log((boxes[:, 3] - boxes[:, 1]) / (boxes[:, 2] - boxes[:, 0]))
    quantiles = (np.arange(count) + 0.5) / count
    values = np.round(np.exp(np.quantile(log_ratio, quantiles)), 2)
    return tuple(sorted({float(max(v, 0.01)) for v in values}))


def choose_anchors(
    boxes: Any,
    image_size: tuple[int, int],
    *,
    min_level: int = 3,
    max_level: int = 7,
    num_scales: int = 3,
    num_ratios: int = 3,
    iou: float = 0.5,
    seed: int = 0,
) -> AnchorChoice:
    """Anchor settings that give the most training boxes an anchor at ``iou`` or more.

    Aspect ratios are the boxes' shapes at evenly spaced quantiles. For the
    sizes, candidate ``anchor_size`` values put the smallest anchor between a
    third of and twice the size (``sqrt(w * h)``) of the boxes' 5th
    percentile; each candidate uses as many levels from ``min_level`` as the
    largest boxes need (at most ``max_level``), and the candidate with the
    highest coverage wins (ties: fewer levels, then the larger size). Boxes
    beyond 1,000 are scored on a random subset.

    Args:
        boxes: every training box, ``(N, 4)`` ``xyxy`` in the model's input
            pixels (after resizing).
        image_size: the model's input ``(height, width)``.
        min_level: the first pyramid level the backbone provides (3: stride 8).
        max_level: the last level the detector may use.
        num_scales: anchor sizes per level.
        num_ratios: aspect ratios (fewer when the boxes' shapes coincide).
        iou: the IoU at which training matches a box to an anchor.
        seed: seed of the subset of scored boxes.

    Raises:
        DataError: ``boxes`` is not a non-empty ``(N, 4)`` array of valid boxes.

    Examples:
        >>> boxes = np.array([[10, 10, 26, 32], [40, 40, 56, 62], [5, 50, 21, 72]], float)
        >>> choice = choose_anchors(boxes, (96, 96))
        >>> choice.coverage, choice.spec.min_level
        (1.0, 3)
    """
    boxes = _check_boxes(boxes)
    if len(boxes) > _MAX_SEARCH_BOXES:
        pick = np.random.default_rng(seed).choice(len(boxes), _MAX_SEARCH_BOXES, replace=False)
        boxes = boxes[np.sort(pick)]
    sizes = np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    small, large = np.quantile(sizes, 0.05), np.quantile(sizes, 0.95)
    ratios = _ratios(boxes, num_ratios)
    best: tuple[tuple[float, int, float], AnchorSpec, np.ndarray] | None = None
    for factor in np.geomspace(1 / 3, 2.0, 15):
        anchor_size = float(np.round(small * factor / 2**min_level, 3))
        if anchor_size <= 0:
            continue
        top = 2**min_level * anchor_size * 2 ** ((num_scales - 1) / num_scales)
        extra = max(0, math.ceil(math.log2(max(large / top, 1.0))))
        spec = AnchorSpec(
            min_level=min_level,
            max_level=min(max_level, min_level + extra),
            num_scales=num_scales,
            aspect_ratios=ratios,
            anchor_size=anchor_size,
        )
        share, ious = coverage(spec, boxes, image_size, iou)
        key = (share, -spec.max_level, anchor_size)
        if best is None or key > best[0]:
            best = (key, spec, ious)
    assert best is not None  # 15 candidates, sizes > 0
    (share, _, _), spec, ious = best
    reason = (
        f"aspect ratios {list(spec.aspect_ratios)} at the quantiles of the boxes' shapes; "
        f"anchor_size {spec.anchor_size} and levels {spec.min_level}-{spec.max_level} match "
        f"{share:.0%} of {len(boxes)} boxes at IoU >= {iou} (box sizes {small:.0f}-{large:.0f} px, "
        "5th-95th percentile)"
    )
    return AnchorChoice(spec=spec, coverage=share, iou=iou, best_iou=ious, reason=reason)
