"""Anchors chosen from the training boxes (finetunekit/heads/anchors.py), issue 15.

References: KerasHub's own ``AnchorGenerator`` for the anchor layout, and the
COCO-checked ``box_iou`` of the detection metrics for the coverage.
"""

from __future__ import annotations

import numpy as np
import pytest

import finetunekit as ftk
from finetunekit.evaluation.detection import box_iou
from finetunekit.heads.anchors import AnchorSpec, anchor_boxes, choose_anchors, coverage

keras_hub = pytest.importorskip("keras_hub")


def _keras_hub_anchors(spec: AnchorSpec, size: tuple[int, int]) -> np.ndarray:
    layer = keras_hub.layers.AnchorGenerator(bounding_box_format="xyxy", **spec.generator_kwargs())
    levels = layer(np.zeros((1, *size, 3), "float32"))
    return np.concatenate([np.asarray(levels[f"P{k}"]) for k in sorted(int(p[1:]) for p in levels)])


@pytest.mark.parametrize(
    ("spec", "size"),
    [
        (AnchorSpec(), (96, 96)),  # the guide's settings
        (AnchorSpec(3, 5, 3, (0.5, 1.0, 2.0), 2.0), (96, 96)),
        (AnchorSpec(2, 4, 2, (1.37, 0.41), 1.625), (100, 72)),  # uneven sizes, odd values
        (AnchorSpec(3, 3, 1, (1.0,), 1.0), (16, 16)),
    ],
)
def test_anchor_layout_is_keras_hubs(spec: AnchorSpec, size: tuple[int, int]) -> None:
    np.testing.assert_array_equal(anchor_boxes(spec, size), _keras_hub_anchors(spec, size))


def _digit_boxes(n_images: int, seed: int) -> np.ndarray:
    """Boxes like the issue's: 1-3 digits of about 16x22 px (thin ones about 6x22) in 96x96."""
    rng = np.random.default_rng(seed)
    boxes = []
    for _ in range(n_images):
        for _ in range(rng.integers(1, 4)):
            w = rng.choice([rng.uniform(5, 8), rng.uniform(13, 19)], p=[0.2, 0.8])
            h = rng.uniform(19, 25)
            x, y = rng.uniform(0, 96 - w), rng.uniform(0, 96 - h)
            boxes.append([x, y, x + w, y + h])
    return np.array(boxes)


# Held-out boxes matched at IoU >= 0.5, measured 2026-12-03: the guide's anchors 0.21 (the
# issue measured 22%); chosen from level 3 (stride 8) 0.87: 0.98 of the wide digits but 0.44
# of the thin ones, whose centres can sit 4 px off an anchor's; chosen from level 2 0.997.
MIN_GUIDE, MIN_LEVEL3, MIN_LEVEL2 = 0.4, 0.85, 0.97


@pytest.mark.parametrize(("min_level", "at_least"), [(3, MIN_LEVEL3), (2, MIN_LEVEL2)])
def test_chosen_anchors_match_nearly_every_box_where_the_guides_match_few(
    min_level: int, at_least: float
) -> None:
    boxes = _digit_boxes(600, seed=0)
    held_out = _digit_boxes(150, seed=1)
    choice = choose_anchors(boxes, (96, 96), min_level=min_level)
    assert choice.spec.min_level == min_level
    # the independent reference: KerasHub's anchors, the metrics' IoU
    best = box_iou(held_out, _keras_hub_anchors(choice.spec, (96, 96))).max(axis=1)
    guide = box_iou(held_out, _keras_hub_anchors(AnchorSpec(), (96, 96))).max(axis=1)
    assert np.mean(guide >= 0.5) < MIN_GUIDE
    assert np.mean(best >= 0.5) >= at_least
    wide = (held_out[:, 2] - held_out[:, 0]) >= 9
    assert np.mean(best[wide] >= 0.5) >= 0.95
    assert choice.coverage == pytest.approx(float(np.mean(choice.best_iou >= 0.5)))
    share, ious = coverage(choice.spec, held_out, (96, 96))
    np.testing.assert_allclose(ious, best, atol=1e-6)
    assert share == pytest.approx(float(np.mean(best >= 0.5)))
    assert choice.spec.aspect_ratios[0] > 1.0  # the digits are taller than wide (h / w)
    assert "anchor_size" in choice.reason and f"{choice.coverage:.0%}" in choice.reason


def test_large_boxes_get_more_levels() -> None:
    rng = np.random.default_rng(0)
    sides = np.concatenate([rng.uniform(12, 20, 100), rng.uniform(150, 250, 100)])
    xy = rng.uniform(0, 256 - sides[:, None], (200, 2))
    boxes = np.concatenate([xy, xy + sides[:, None]], axis=1)
    choice = choose_anchors(boxes, (512, 512))
    assert choice.spec.max_level - choice.spec.min_level >= 3
    assert choice.coverage >= 0.9


@pytest.mark.parametrize(
    ("boxes", "match"),
    [
        (np.zeros((0, 4)), "non-empty"),
        (np.zeros((3, 5)), "non-empty"),
        ([[10, 10, 5, 20]], "positive width"),
    ],
)
def test_bad_boxes_are_refused(boxes, match: str) -> None:
    with pytest.raises(ftk.DataError, match=match):
        choose_anchors(boxes, (96, 96))
