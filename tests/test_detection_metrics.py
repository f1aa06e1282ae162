"""COCO-style detection metrics (finetunekit/evaluation/detection.py) against pycocotools.

pycocotools (a test dependency) scores the same random ground truth and
predictions; the whole interpolated precision array ``(T, R, K, A, M)``, the
recall array and the twelve summary numbers must agree. Hand-computed cases
pin the definitions independently of pycocotools.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

import finetunekit as ftk
from finetunekit.evaluation import detection as det

#: measured: the largest difference over all cases below is 0 (identical float64 results);
#: the tolerance leaves room for summation order only
TOL = 1e-9
SUMMARY_KEYS = (
    "map",
    "map_50",
    "map_75",
    "map_small",
    "map_medium",
    "map_large",
    "mar_1",
    "mar_10",
    "mar_100",
    "mar_small",
    "mar_medium",
    "mar_large",
)


# ---------------------------------------------------------------------- data


def _random_case(
    seed: int, n_images: int = 12, n_classes: int = 5, crowd: float = 0.0, many: int = 0
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Ground truth (xywh) and predictions: jittered truth + false positives, random scores.

    Class ``n_classes - 1`` never has ground truth (predictions only); class
    ``n_classes - 2`` is never predicted; every third image has no ground
    truth. ``many`` adds that many detections of class 0 to image 0 (beyond
    the 100 per image and class that count).
    """
    rng = np.random.default_rng(seed)
    truth, preds = [], []
    for i in range(n_images):
        k = 0 if i % 3 == 2 else int(rng.integers(1, 7))
        wh = rng.uniform(4, 140, (k, 2))
        xy = rng.uniform(0, 300, (k, 2))
        g_boxes = np.concatenate([xy, wh], axis=1)
        g_labels = rng.integers(0, n_classes - 1, k)
        iscrowd = rng.random(k) < crowd
        p_boxes, p_labels = [], []
        for box, label in zip(g_boxes, g_labels, strict=True):
            if rng.random() < 0.85:
                for _ in range(int(rng.integers(1, 3))):  # duplicates are false positives
                    jitter = rng.normal(0, 0.12, 4) * np.r_[box[2:], box[2:]]
                    b = box + jitter
                    b[2:] = np.maximum(b[2:], 1.0)
                    p_boxes.append(b)
                    p_labels.append(label if rng.random() < 0.9 else rng.integers(0, n_classes))
        for _ in range(int(rng.integers(0, 5))):
            p_boxes.append(np.r_[rng.uniform(0, 300, 2), rng.uniform(2, 160, 2)])
            p_labels.append(rng.integers(0, n_classes))
        if i == 0:
            for _ in range(many):
                p_boxes.append(np.r_[rng.uniform(0, 300, 2), rng.uniform(2, 160, 2)])
                p_labels.append(0)
        p_labels_arr = np.array(p_labels, np.int64)
        p_labels_arr[p_labels_arr == n_classes - 2] = n_classes - 1  # never predicted
        truth.append({"boxes": g_boxes, "labels": g_labels, "iscrowd": iscrowd})
        preds.append(
            {
                "boxes": np.array(p_boxes).reshape(-1, 4),
                "labels": p_labels_arr,
                "scores": rng.random(len(p_boxes)),
            }
        )
    return truth, preds


def _pycocotools(
    truth: list[dict[str, Any]], preds: list[dict[str, Any]], n_classes: int
) -> COCOeval:
    """pycocotools' evaluation of the same data (boxes xywh; ids from 1)."""
    images, annotations, results = [], [], []
    for i, (g, p) in enumerate(zip(truth, preds, strict=True)):
        images.append({"id": i + 1, "width": 640, "height": 640})
        for box, label, crowd in zip(g["boxes"], g["labels"], g["iscrowd"], strict=True):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": int(label) + 1,
                    "bbox": [float(v) for v in box],
                    "area": float(box[2] * box[3]),
                    "iscrowd": int(crowd),
                }
            )
        for box, label, score in zip(p["boxes"], p["labels"], p["scores"], strict=True):
            results.append(
                {
                    "image_id": i + 1,
                    "category_id": int(label) + 1,
                    "bbox": [float(v) for v in box],
                    "score": float(score),
                }
            )
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {
            "images": images,
            "annotations": annotations,
            "categories": [{"id": k + 1, "name": str(k)} for k in range(n_classes)],
        }
        gt.createIndex()
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def _compare(truth: list[dict[str, Any]], preds: list[dict[str, Any]], n_classes: int) -> float:
    """Asserts agreement with pycocotools; returns the largest difference seen."""
    ev = _pycocotools(truth, preds, n_classes)
    ours = det.evaluate_detections(preds, truth, num_classes=n_classes, box_format="xywh")
    worst = float(np.max(np.abs(ours.precision - ev.eval["precision"])))
    worst = max(worst, float(np.max(np.abs(ours.recall - ev.eval["recall"]))))
    np.testing.assert_allclose(ours.precision, ev.eval["precision"], rtol=0, atol=TOL)
    np.testing.assert_allclose(ours.recall, ev.eval["recall"], rtol=0, atol=TOL)
    for key, reference in zip(SUMMARY_KEYS, ev.stats, strict=True):
        if reference == -1:  # undefined in COCO: left out here
            assert key not in ours.metrics, key
        else:
            assert ours.metrics[key] == pytest.approx(reference, abs=TOL), key
            worst = max(worst, abs(ours.metrics[key] - reference))
    precision = ev.eval["precision"][:, :, :, 0, -1]
    for k in range(n_classes):
        values = precision[:, :, k]
        if (values > -1).any():
            assert ours.per_class[str(k)]["ap"] == pytest.approx(values.mean(), abs=TOL)
            assert ours.per_class[str(k)]["ap_50"] == pytest.approx(values[0].mean(), abs=TOL)
        else:
            assert str(k) not in ours.per_class
    return worst


# ---------------------------------------------------------------------- pycocotools


@pytest.mark.parametrize("seed", range(6))
def test_matches_pycocotools_on_random_cases(seed: int) -> None:
    truth, preds = _random_case(seed, n_images=10 + 2 * seed)
    assert _compare(truth, preds, 5) <= TOL


def test_matches_pycocotools_with_crowd_regions() -> None:
    truth, preds = _random_case(11, n_images=16, crowd=0.3)
    assert any(g["iscrowd"].any() for g in truth)
    assert _compare(truth, preds, 5) <= TOL


def test_matches_pycocotools_beyond_100_detections_per_image_and_class() -> None:
    truth, preds = _random_case(21, n_images=6, many=150)
    assert _compare(truth, preds, 5) <= TOL


def test_matches_pycocotools_at_exact_iou_thresholds() -> None:
    """IoU exactly 0.5, 0.75, ... : a match needs IoU >= threshold (not >)."""
    g = np.array([[0.0, 0.0, 100.0, 100.0]])
    truth = [{"boxes": g, "labels": np.array([0]), "iscrowd": np.array([False])} for _ in range(4)]
    # xywh boxes inside the truth box covering exactly 50%, 75%, 60% and 90% of it
    widths = [50.0, 75.0, 60.0, 90.0]
    preds = [
        {"boxes": np.array([[0.0, 0.0, w, 100.0]]), "labels": np.array([0]), "scores": [0.9]}
        for w in widths
    ]
    assert _compare(truth, preds, 1) <= TOL
    ours = det.evaluate_detections(preds, truth, num_classes=1, box_format="xywh")
    assert ours.metrics["map_50"] == pytest.approx(1.0)  # the 0.5 box counts at 0.5


def test_ties_in_iou_go_to_the_later_box_as_in_pycocotools() -> None:
    """The first detection overlaps both truths equally (0.6): it takes the later one."""
    truth = [
        {
            "boxes": np.array([[0.0, 0.0, 10.0, 10.0], [5.0, 0.0, 10.0, 10.0]]),  # xywh
            "labels": np.array([0, 0]),
            "iscrowd": np.array([False, False]),
        }
    ]
    preds = [
        {
            "boxes": np.array([[2.5, 0.0, 10.0, 10.0], [0.0, 0.0, 9.0, 10.0]]),
            "labels": np.array([0, 0]),
            "scores": np.array([0.9, 0.8]),
        }
    ]
    assert _compare(truth, preds, 1) <= TOL
    ours = det.evaluate_detections(preds, truth, box_format="xywh")
    assert ours.metrics["map_50"] == pytest.approx(1.0)  # both detections match


def test_max_detections_count_per_image_and_class() -> None:
    """The hit ranks 75th of its class, after 80 higher-scored detections of another class."""
    truth = [
        {
            "boxes": np.array([[0.0, 0.0, 20.0, 20.0], [100.0, 100.0, 20.0, 20.0]]),  # xywh
            "labels": np.array([0, 1]),
            "iscrowd": np.array([False, False]),
        }
    ]
    misses = np.array([[200.0 + i, 200.0, 10.0, 10.0] for i in range(154)])
    boxes = np.concatenate([misses[:74], [[0.0, 0.0, 20.0, 20.0]], misses[74:]])
    labels = np.array([0] * 75 + [1] * 80)
    scores = np.concatenate([np.linspace(0.9, 0.5, 74), [0.45], np.linspace(0.99, 0.91, 80)])
    preds = [{"boxes": boxes, "labels": labels, "scores": scores}]
    assert _compare(truth, preds, 2) <= TOL
    ours = det.evaluate_detections(preds, truth, box_format="xywh")
    assert ours.per_class["0"]["ap_50"] == pytest.approx(1 / 75)  # kept: 75 <= 100 of class 0
    assert ours.per_class["1"]["ap_50"] == 0.0


# ---------------------------------------------------------------------- by hand


def _one(box: list[float], score: float = 0.9, label: int = 0) -> dict[str, np.ndarray]:
    return {"boxes": np.array([box]), "scores": np.array([score]), "labels": np.array([label])}


def test_a_single_box_scores_by_hand() -> None:
    truth = [{"boxes": np.array([[0.0, 0.0, 10.0, 10.0]]), "labels": np.array([0])}]
    # IoU 0.8: a match at the thresholds 0.50 .. 0.80 (7 of 10)
    s = det.evaluate_detections([_one([0, 0, 10, 8])], truth)
    assert s.metrics["map"] == pytest.approx(0.7)
    assert s.metrics["map_50"] == pytest.approx(1.0) and s.metrics["map_75"] == pytest.approx(1.0)
    assert s.metrics["mar_100"] == pytest.approx(0.7)
    assert s.metrics["map_small"] == pytest.approx(0.7)
    assert "map_medium" not in s.metrics and "map_large" not in s.metrics


def test_101_point_interpolation_by_hand() -> None:
    """Two truths, ranked detections hit, miss, hit: precision 1 up to recall 0.5, then 2/3."""
    boxes = np.array([[0.0, 0.0, 10.0, 10.0], [20.0, 0.0, 30.0, 10.0]])
    truth = [{"boxes": boxes, "labels": np.array([0, 0])}]
    preds = [
        {
            "boxes": np.array([boxes[0], [50.0, 50.0, 60.0, 60.0], boxes[1]]),
            "scores": np.array([0.9, 0.8, 0.7]),
            "labels": np.array([0, 0, 0]),
        }
    ]
    s = det.evaluate_detections(preds, truth)
    expected = (51 * 1.0 + 50 * (2 / 3)) / 101  # recall levels 0..0.5 and 0.51..1
    assert s.metrics["map"] == pytest.approx(expected, abs=1e-12)
    np.testing.assert_allclose(s.precision[0, :51, 0, 0, -1], 1.0, atol=1e-12)


def test_classes_without_truth_or_predictions() -> None:
    truth = [
        {"boxes": np.array([[0.0, 0.0, 10.0, 10.0]]), "labels": np.array([1])},
        {"boxes": np.zeros((0, 4)), "labels": np.zeros(0)},
    ]
    preds = [_one([0, 0, 10, 10], label=1), _one([5, 5, 9, 9], label=2)]
    s = det.evaluate_detections(preds, truth, class_names=["a", "b", "c"])
    assert list(s.per_class) == ["b"]  # "a": neither; "c": predictions only
    assert s.metrics["classes_without_ground_truth"] == 2
    assert s.metrics["map"] == pytest.approx(1.0) and s.metrics["num_predictions"] == 2


def test_crowd_region_absorbs_detections_without_penalty() -> None:
    truth = [
        {
            "boxes": np.array([[0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 150.0, 150.0]]),
            "labels": np.array([0, 0]),
            "iscrowd": np.array([False, True]),
        }
    ]
    inside = [[60.0, 60.0, 80.0, 80.0], [90.0, 90.0, 120.0, 120.0]]
    preds = [
        {
            "boxes": np.array([[0.0, 0.0, 10.0, 10.0], *inside]),
            "scores": np.array([0.5, 0.9, 0.8]),  # the crowd detections rank first
            "labels": np.array([0, 0, 0]),
        }
    ]
    s = det.evaluate_detections(preds, truth)
    assert s.metrics["map"] == pytest.approx(1.0) and s.metrics["num_ground_truth"] == 1


def test_report_holds_metrics_and_per_class_table() -> None:
    truth, preds = _random_case(3)
    report = det.detection_report(preds, truth, class_names=list("abcde"), box_format="xywh")
    assert isinstance(report, ftk.EvaluationReport)
    assert report.task == "detection" and report.headline == "map"
    assert set(report.per_class) == {"a", "b", "c", "d"}  # "e" has no ground truth
    assert set(report.per_class["a"]) == {
        "ap",
        "ap_50",
        "ap_75",
        "recall",
        "num_ground_truth",
        "num_predictions",
    }
    text = str(report)
    assert "map_50" in text and "ap_75" in text
    import json

    again = ftk.EvaluationReport.from_dict(json.loads(json.dumps(report.to_dict())))
    assert again.metrics == report.metrics


def test_report_takes_adapter_targets() -> None:
    images = np.zeros((2, 64, 64, 3), "uint8")
    data = ftk.DatasetAdapter.from_detection(
        images, [[[4, 4, 20, 20]], [[10, 10, 40, 30], [0, 0, 8, 8]]], [[0], [1, 0]]
    )
    truth = det.ground_truth_from_targets(data.targets())
    preds = [
        {"boxes": g["boxes"], "scores": np.ones(len(g["labels"])), "labels": g["labels"]}
        for g in truth
    ]
    report = det.detection_report(preds, data.targets(), class_names=data.class_names)
    assert report.metrics["map"] == pytest.approx(1.0) and report.num_examples == 2


# ---------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "preds, truth, match",
    [
        ([_one([0, 0, 5, 5])], [], "cover 1 images"),
        ([_one([0, 0, 5, 5], label=-1)], [{"boxes": [[0, 0, 5, 5]], "labels": [0]}], "outside"),
        ([_one([5, 5, 0, 0])], [{"boxes": [[0, 0, 5, 5]], "labels": [0]}], "ends before"),
        (
            [{"boxes": [[0, 0, 5, 5]], "labels": [0]}],
            [{"boxes": [[0, 0, 5, 5]], "labels": [0]}],
            "lacks the keys",
        ),
        ([_one([0, 0, 5, 5])], [{"boxes": [[0, 0, 5, 5]], "labels": [0, 1]}], "one labels"),
        ([_one([0, 0, 5, 5])], [{"boxes": np.zeros((0, 4)), "labels": []}], "no image holds"),
    ],
)
def test_bad_inputs_raise_evaluation_errors(preds: Any, truth: Any, match: str) -> None:
    with pytest.raises(ftk.EvaluationError, match=f"(?i){match}"):
        det.evaluate_detections(preds, truth)


# ---------------------------------------------------------------------- docs


def test_the_examples_of_docs_detection_run_and_print_what_they_show() -> None:
    """Each ``print(...)  # shown`` line of docs/detection.md prints what its comment starts with."""
    import re
    from pathlib import Path

    page = Path(__file__).resolve().parents[1] / "docs" / "detection.md"
    blocks = re.findall(r"```python\n(.*?)```", page.read_text("utf-8"), re.S)
    runnable = [b for b in blocks if "import finetunekit as ftk" in b and "# a sketch" not in b]
    assert len(runnable) == 2
    for block in runnable:
        shown = [
            line.partition("  # ")[2]
            for line in block.splitlines()
            if line.startswith("print(") and "  # " in line
        ]
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(block, str(page), "exec"), {})
        printed = out.getvalue().splitlines()
        assert len(printed) == len(shown) > 0
        for got, want in zip(printed, shown, strict=True):
            assert want.startswith(got), (got, want)
