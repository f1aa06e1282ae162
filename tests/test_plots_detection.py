"""Detection plots (finetunekit/plots_detection.py) and the precision-recall curves behind them.

The boxes drawn are checked artist by artist against the input arrays; the
curves against a hand-computed case and against pycocotools' own
interpolated precision (a test dependency) on random detections.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("matplotlib")
from matplotlib.patches import Rectangle  # noqa: E402
from pycocotools.coco import COCO  # noqa: E402
from pycocotools.cocoeval import COCOeval  # noqa: E402

import finetunekit as ftk  # noqa: E402
from finetunekit import plots  # noqa: E402
from finetunekit.errors import ArgumentTypeError, EvaluationError, FineTuneError  # noqa: E402
from finetunekit.evaluation import EvaluationReport, Evaluator  # noqa: E402
from finetunekit.evaluation import detection as det  # noqa: E402
from finetunekit.tasks.base import get as get_task  # noqa: E402
from finetunekit.tasks.detection import Detection  # noqa: E402

#: measured: the curves equal pycocotools' precision exactly (max difference 0.0);
#: the tolerance leaves room for summation order only
TOL = 1e-9
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _rectangles(ax: Any) -> list[Rectangle]:
    return [p for p in ax.patches if isinstance(p, Rectangle)]


def _pred(boxes: list[list[float]], scores: list[float], labels: list[int]) -> dict[str, Any]:
    return {
        "boxes": np.array(boxes, np.float64).reshape(-1, 4),
        "scores": np.array(scores, np.float64),
        "labels": np.array(labels, np.int64),
    }


def _truth(boxes: list[list[float]], labels: list[int]) -> dict[str, Any]:
    return {"boxes": np.array(boxes, np.float64).reshape(-1, 4), "labels": np.array(labels)}


# ---------------------------------------------------------------------- plot_detections


def test_boxes_drawn_are_those_above_the_threshold_plus_the_true_ones(tmp_path: Path) -> None:
    images = [
        np.zeros((40, 60, 3), np.uint8),  # RGB uint8
        np.linspace(0, 1, 30 * 50).reshape(30, 50).astype(np.float32),  # grayscale float
        np.full((64, 32, 1), 300, np.int16),  # one channel, another dtype and range
    ]
    preds = [
        _pred([[5, 6, 20, 30], [1, 1, 4, 4], [30, 10, 50, 35]], [0.87, 0.1, 0.3], [1, 0, 2]),
        _pred([], [], []),
        _pred([[0, 0, 32, 64]], [0.95], [0]),
    ]
    truth = [
        _truth([[6, 5, 21, 30], [30, 12, 52, 36]], [1, 2]),
        _truth([[10, 10, 20, 20]], [0]),
        _truth([], []),
    ]
    names = ["cat", "dog", "bird"]
    fig = plots.plot_detections(
        images, preds, truth, class_names=names, score_threshold=0.3, path=tmp_path / "d.png"
    )
    assert (tmp_path / "d.png").read_bytes()[:8] == PNG_MAGIC
    assert len(fig.axes) == 3
    expected_counts = [(2, 2), (0, 1), (1, 0)]  # (predicted >= 0.3, true)
    for ax, image, pred, gt, (n_pred, n_true) in zip(
        fig.axes, images, preds, truth, expected_counts, strict=True
    ):
        rects = _rectangles(ax)
        assert len(rects) == n_pred + n_true
        dashed = [r for r in rects if r.get_linestyle() in ("--", "dashed")]
        solid = [r for r in rects if r.get_linestyle() in ("-", "solid")]
        assert len(dashed) == n_true and len(solid) == n_pred
        # each true box is drawn where it is: xy = (x1, y1), size = (x2 - x1, y2 - y1)
        drawn = sorted((r.get_x(), r.get_y(), r.get_width(), r.get_height()) for r in dashed)
        want = sorted((b[0], b[1], b[2] - b[0], b[3] - b[1]) for b in gt["boxes"].tolist())
        assert drawn == want
        keep = pred["scores"] >= 0.3
        drawn = sorted((r.get_x(), r.get_y(), r.get_width(), r.get_height()) for r in solid)
        want = sorted((b[0], b[1], b[2] - b[0], b[3] - b[1]) for b in pred["boxes"][keep].tolist())
        assert drawn == want
        texts = sorted(t.get_text() for t in ax.texts)
        assert texts == sorted(
            f"{names[int(label)]} {score:.2f}"
            for label, score in zip(pred["labels"][keep], pred["scores"][keep], strict=True)
        )
        h, w = np.asarray(image).shape[:2]
        assert ax.get_xlim() == (0.0, w) and ax.get_ylim() == (h, 0.0)  # the whole image, no more
        # pixel i spans [i, i + 1], the boxes' convention (imshow's default centres it on i)
        assert list(ax.get_images()[0].get_extent()) == [0, w, h, 0]
        assert ax.get_title().endswith(f"{n_pred} predicted, {n_true} true")
    assert fig.axes[0].texts[0].get_text() == "dog 0.87"  # highest score first
    # pixels: uint8 as is, floats in [0, 1] as is, a constant image of another range black
    shown = [np.asarray(ax.get_images()[0].get_array()) for ax in fig.axes]
    np.testing.assert_array_equal(shown[0], images[0])
    np.testing.assert_allclose(shown[1], images[1], rtol=0, atol=1e-7)
    np.testing.assert_array_equal(shown[2], np.zeros((64, 32)))
    gray = plots.plot_detections([np.full((4, 4, 3), 51.0)], [_pred([], [], [])])
    np.testing.assert_allclose(gray.axes[0].get_images()[0].get_array(), 0.2)  # 0..255 floats
    # colour = class: the true and the predicted "dog" share one
    rects = _rectangles(fig.axes[0])
    dog = [r.get_edgecolor() for r in rects if r.get_x() in (5.0, 6.0)]
    assert len(dog) == 2 and dog[0] == dog[1]


def test_threshold_zero_draws_every_prediction_and_max_images_cuts_the_grid() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (20, 24, 24, 3)).astype(np.uint8)  # one (N, H, W, C) array
    preds = [_pred([[1, 1, 5, 5]] * 3, [0.0, 0.5, 0.99], [0, 0, 0]) for _ in range(20)]
    fig = plots.plot_detections(images, preds, score_threshold=0.0, max_images=5)
    assert len(fig.axes) == 5
    assert [len(_rectangles(ax)) for ax in fig.axes] == [3] * 5
    assert sorted(t.get_text() for t in fig.axes[0].texts) == ["0 0.00", "0 0.50", "0 0.99"]
    fig = plots.plot_detections(images, preds, score_threshold=0.6)
    assert len(fig.axes) == 16  # the default max_images
    assert [len(_rectangles(ax)) for ax in fig.axes] == [1] * 16


def test_a_detectors_padded_output_and_tensors_are_accepted() -> None:
    tf = pytest.importorskip("tensorflow")
    images = tf.zeros((2, 20, 30, 3), tf.uint8)
    out = {
        "boxes": np.array([[[1, 1, 9, 9], [2, 2, 8, 8]], [[0, 0, 5, 5], [0, 0, 0, 0]]], "f"),
        "confidence": np.array([[0.9, 0.8], [0.7, 0.0]], "f"),
        "labels": np.array([[1, 0], [2, -1]]),
        "num_detections": np.array([2, 1]),
    }
    fig = plots.plot_detections(images, out)
    assert [sorted(t.get_text() for t in ax.texts) for ax in fig.axes] == [
        ["0 0.80", "1 0.90"],
        ["2 0.70"],
    ]


def test_ground_truth_alone_and_dataset_targets() -> None:
    data = ftk.DatasetAdapter.from_detection(
        np.zeros((2, 32, 32, 3), "uint8"),
        boxes=[[[4, 4, 12, 20], [0, 0, 32, 8]], [[1, 2, 3, 4]]],
        labels=[[0, 1], [1]],
        class_names=["cat", "dog"],
    )
    images = [np.zeros((32, 32, 3), "uint8")] * 2
    fig = plots.plot_detections(images, None, data.targets(), class_names=data.class_names)
    assert [len(_rectangles(ax)) for ax in fig.axes] == [2, 1]
    assert all(not ax.texts for ax in fig.axes)
    assert fig.axes[1].get_title() == "image 1, 1 true"


class _OutlineDetector:
    """A test double for a detector's Keras model: one box around each image's bright pixels.

    It reads only the pixels (not the boxes), so the boxes it "predicts" are an
    independent check of what plot_detections(result, data) draws.
    """

    def __init__(self) -> None:
        self.images_seen = 0

    def predict(self, inputs: Any, verbose: int = 0) -> dict[str, np.ndarray]:
        boxes, scores, labels = [], [], []
        for batch in inputs:
            for image in np.asarray(batch):
                ys, xs = np.nonzero(image[..., 0] > 100)
                boxes.append([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], [0, 0, 1, 1]])
                scores.append([0.9, 0.0])
                labels.append([1, -1])  # second row: padding
                self.images_seen += 1
        return {
            "boxes": np.array(boxes, np.float32),
            "confidence": np.array(scores, np.float32),
            "labels": np.array(labels, np.int32),
            "num_detections": np.ones(len(boxes), np.int32),
        }


def test_result_and_data_form_predicts_the_first_images_and_cuts_the_padding() -> None:
    rng = np.random.default_rng(1)
    images, boxes = [], []
    for i in range(20):
        h, w = 30 + i, 50 - i  # every image another size: batches are padded
        image = rng.integers(0, 60, (h, w, 3)).astype(np.uint8)
        x1, y1 = int(rng.integers(0, w - 12)), int(rng.integers(0, h - 12))
        image[y1 : y1 + 10, x1 : x1 + 8] = 255
        images.append(image)
        boxes.append([[x1, y1, x1 + 8, y1 + 10]])
    data = ftk.DatasetAdapter.from_detection(images, boxes, [[1]] * 20, class_names=["cat", "dog"])
    detector = _OutlineDetector()
    result = types.SimpleNamespace(
        model=detector, class_names=["cat", "dog"], task_object=Detection()
    )
    fig = plots.plot_detections(result, data, max_images=3)
    assert len(fig.axes) == 3
    assert detector.images_seen == 16  # one batch predicted, not all 20 images
    for i, ax in enumerate(fig.axes):
        h, w = images[i].shape[:2]
        assert ax.get_xlim() == (0.0, w) and ax.get_ylim() == (h, 0.0)  # padding cut off
        assert ax.get_images()[0].get_array().shape[:2] == (h, w)
        rects = _rectangles(ax)
        assert len(rects) == 2  # one predicted, one true; the padding row is not drawn
        x1, y1, x2, y2 = boxes[i][0]
        for r in rects:  # the detector found the true box exactly
            assert (r.get_x(), r.get_y(), r.get_width(), r.get_height()) == (
                x1,
                y1,
                x2 - x1,
                y2 - y1,
            )
        assert [t.get_text() for t in ax.texts] == ["dog 0.90"]


def test_bad_inputs_to_plot_detections_are_finetune_errors() -> None:
    image = [np.zeros((10, 10, 3), np.uint8)]
    good = [_pred([[1, 1, 5, 5]], [0.9], [0])]
    cases: list[tuple[dict[str, Any], type[Exception], str]] = [
        ({"predictions": good * 2}, EvaluationError, "predictions covers 2 images but images 1"),
        ({"predictions": [{"boxes": np.zeros((1, 4))}]}, EvaluationError, "lacks the keys"),
        ({"predictions": [_pred([[5, 5, 1, 1]], [0.9], [0])]}, EvaluationError, "ends before"),
        (
            {"predictions": [{"boxes": np.zeros((1, 3)), "scores": [1], "labels": [0]}]},
            EvaluationError,
            "shape",
        ),
        (
            {"predictions": [_pred([[1, 1, 5, 5]], [0.9], [3])], "class_names": ["a", "b"]},
            EvaluationError,
            "outside the classes",
        ),
        ({"ground_truth": [_truth([[1, 1, 2, 2]], [-1])]}, EvaluationError, "outside"),
        ({"images": [np.zeros((10, 10, 2))]}, EvaluationError, "images[0] has shape"),
        ({"images": [np.array(["a", "b"])]}, EvaluationError, "images[0]"),
        ({"images": [np.full((4, 4), np.nan)]}, EvaluationError, "NaN"),
        ({"images": []}, EvaluationError, "images is empty"),
        ({"images": "picture.png"}, ArgumentTypeError, "one entry per image"),
        ({"predictions": {"boxes": []}}, EvaluationError, "not a dict of padded detections"),
        ({"predictions": 3}, ArgumentTypeError, "one entry per image"),
        ({"predictions": None}, ArgumentTypeError, "no boxes to draw"),
        ({"max_images": 0}, ArgumentTypeError, "max_images"),
        ({"score_threshold": "high"}, ArgumentTypeError, "score_threshold"),
        ({"path": 3}, ArgumentTypeError, "path"),
    ]
    for change, error, message in cases:
        kwargs: dict[str, Any] = {"images": image, "predictions": good, **change}
        with pytest.raises(error) as info:
            plots.plot_detections(**kwargs)
        assert isinstance(info.value, FineTuneError)
        assert message in str(info.value), (change, str(info.value))


def test_result_form_refuses_other_tasks_and_other_data() -> None:
    data = ftk.DatasetAdapter.from_detection(
        np.zeros((1, 16, 16, 3), "uint8"), [[[1, 1, 5, 5]]], [[0]]
    )
    classifier = types.SimpleNamespace(
        model=None, class_names=["a"], task_object=get_task("multiclass")
    )
    with pytest.raises(EvaluationError, match="needs a detection result"):
        plots.plot_detections(classifier, data)
    detector = types.SimpleNamespace(
        model=_OutlineDetector(), class_names=["a"], task_object=Detection()
    )
    with pytest.raises(ArgumentTypeError, match="needs detection data"):
        plots.plot_detections(detector, (np.zeros((1, 16, 16, 3)), np.zeros(1)))
    broken = types.SimpleNamespace(
        model=types.SimpleNamespace(predict=lambda *a, **k: 1 / 0),
        class_names=["a"],
        task_object=Detection(),
    )
    with pytest.raises(EvaluationError, match="failed to predict.*ZeroDivisionError"):
        plots.plot_detections(broken, data)
    not_a_dict = types.SimpleNamespace(
        model=types.SimpleNamespace(predict=lambda *a, **k: np.zeros((1, 4))),
        class_names=["a"],
        task_object=Detection(),
    )
    with pytest.raises(EvaluationError, match="not a dict of padded detections"):
        plots.plot_detections(not_a_dict, data)


# ---------------------------------------------------------------------- precision-recall


def _hand_case() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """One class, 3 true boxes in 2 images; detections by score: TP, FP, TP, FP (one box missed)."""
    truth = [
        _truth([[0, 0, 10, 10], [20, 20, 30, 30]], [0, 0]),
        _truth([[50, 50, 60, 60]], [0]),
    ]
    preds = [
        _pred([[0, 0, 10, 10], [70, 70, 80, 80]], [0.9, 0.8], [0, 0]),  # TP, FP
        _pred([[50, 50, 60, 60], [0, 0, 5, 5]], [0.7, 0.6], [0, 0]),  # TP, FP
    ]
    return truth, preds


def test_curve_of_a_hand_computed_case() -> None:
    truth, preds = _hand_case()
    # ranked: TP FP TP FP -> recall 1/3 1/3 2/3 2/3, precision 1 1/2 2/3 1/2;
    # non-increasing from the right: 1 2/3 2/3 1/2; read at recall 0, .01, ..., 1:
    # r <= 1/3 (0 .. 0.33, 34 levels): 1; 1/3 < r <= 2/3 (0.34 .. 0.66, 33 levels): 2/3;
    # r > 2/3 (0.67 .. 1, 34 levels): 0 (never reached)
    expected = np.r_[np.ones(34), np.full(33, 2 / 3), np.zeros(34)]
    report = det.detection_report(preds, truth, class_names=["box"])
    curve = report.pr_curves["box"]
    np.testing.assert_allclose(curve["recall"], np.linspace(0, 1, 101), rtol=0, atol=1e-12)
    np.testing.assert_allclose(curve["precision"], expected, rtol=0, atol=TOL)
    # the 101-point area is AP@0.5: (34 + 33 * 2/3) / 101 = 56/101
    assert np.mean(curve["precision"]) == pytest.approx(56 / 101, abs=TOL)
    assert report.per_class["box"]["ap_50"] == pytest.approx(56 / 101, abs=TOL)
    assert report.metrics["map_50"] == pytest.approx(56 / 101, abs=TOL)
    # the figure draws exactly these points, labelled with the area
    fig = plots.plot_precision_recall(report)
    lines = fig.axes[0].get_lines()
    assert [line.get_label() for line in lines] == ["box (AP50 0.554)", "mean (mAP50 0.554)"]
    np.testing.assert_allclose(lines[0].get_ydata(), expected, rtol=0, atol=TOL)
    np.testing.assert_allclose(lines[0].get_xdata(), np.linspace(0, 1, 101), atol=1e-12)


def _random_case(seed: int, n_images: int = 10, n_classes: int = 4) -> tuple[list, list]:
    """Jittered truth as predictions plus false positives; class n_classes - 1 has no truth."""
    rng = np.random.default_rng(seed)
    truth, preds = [], []
    for _ in range(n_images):
        k = int(rng.integers(0, 6))
        xy = rng.uniform(0, 200, (k, 2))
        g = np.concatenate([xy, xy + rng.uniform(5, 90, (k, 2))], axis=1)
        g_labels = rng.integers(0, n_classes - 1, k)
        p = g + rng.normal(0, 4, g.shape)
        p[:, 2:] = np.maximum(p[:, 2:], p[:, :2] + 1)
        extra = int(rng.integers(0, 4))
        e_xy = rng.uniform(0, 200, (extra, 2))
        p = np.concatenate([p, np.concatenate([e_xy, e_xy + 20], axis=1)])
        p_labels = np.r_[g_labels, rng.integers(0, n_classes, extra)]
        truth.append({"boxes": g, "labels": g_labels})
        preds.append({"boxes": p, "labels": p_labels, "scores": rng.random(len(p))})
    return truth, preds


def _pycocotools_precision(truth: list, preds: list, n_classes: int) -> np.ndarray:
    """pycocotools' interpolated precision (T, R, K, A, M) of the same boxes (xyxy -> xywh)."""
    images, annotations, results = [], [], []
    for i, (g, p) in enumerate(zip(truth, preds, strict=True)):
        images.append({"id": i + 1, "width": 400, "height": 400})
        for box, label in zip(g["boxes"], g["labels"], strict=True):
            x1, y1, x2, y2 = (float(v) for v in box)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": int(label) + 1,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": 0,
                }
            )
        for box, label, score in zip(p["boxes"], p["labels"], p["scores"], strict=True):
            x1, y1, x2, y2 = (float(v) for v in box)
            results.append(
                {
                    "image_id": i + 1,
                    "category_id": int(label) + 1,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
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
        ev = COCOeval(gt, gt.loadRes(results), "bbox")
        ev.evaluate()
        ev.accumulate()
    return np.asarray(ev.eval["precision"])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_curves_equal_pycocotools_and_their_areas_the_reported_ap50(seed: int) -> None:
    truth, preds = _random_case(seed)
    reference = _pycocotools_precision(truth, preds, 4)[0, :, :, 0, -1]  # IoU .5, all, 100
    report = det.detection_report(preds, truth, num_classes=4)
    assert set(report.pr_curves) == set(report.per_class)  # classes with ground truth only
    assert "3" not in report.pr_curves
    for name, curve in report.pr_curves.items():
        np.testing.assert_allclose(curve["precision"], reference[:, int(name)], rtol=0, atol=TOL)
        assert np.mean(curve["precision"]) == pytest.approx(
            report.per_class[name]["ap_50"], abs=TOL
        )
    fig = plots.plot_precision_recall(report)
    mean_line = fig.axes[0].get_lines()[-1]
    assert np.mean(mean_line.get_ydata()) == pytest.approx(report.metrics["map_50"], abs=TOL)
    assert len(fig.axes) == 1 and len(fig.axes[0].get_lines()) == len(report.pr_curves) + 1
    # AP75 curves, from the scores
    scores = det.evaluate_detections(preds, truth, num_classes=4)
    ref75 = _pycocotools_precision(truth, preds, 4)[5, :, :, 0, -1]
    for name, curve in scores.pr_curves(0.75).items():
        np.testing.assert_allclose(curve["precision"], ref75[:, int(name)], rtol=0, atol=TOL)
        assert np.mean(curve["precision"]) == pytest.approx(
            scores.per_class[name]["ap_75"], abs=TOL
        )


def test_report_round_trips_through_json_and_every_form_plots(tmp_path: Path) -> None:
    truth, preds = _random_case(3)
    report = det.detection_report(preds, truth, num_classes=4)
    assert isinstance(report, EvaluationReport) and report.task == "detection"
    data = json.loads(json.dumps(report.to_dict()))
    assert data["pr_curves"] == report.pr_curves
    again = det.DetectionReport.from_dict(data)
    assert again.pr_curves == report.pr_curves and again.to_dict() == report.to_dict()
    scores = det.evaluate_detections(preds, truth, num_classes=4)
    figures = [
        plots.plot_precision_recall(form, path=tmp_path / f"pr{i}.png")
        for i, form in enumerate((report, data, again, scores))
    ]
    ys = [[line.get_ydata().tolist() for line in f.axes[0].get_lines()] for f in figures]
    assert ys[0] == ys[1] == ys[2] == ys[3]
    for i in range(4):
        assert (tmp_path / f"pr{i}.png").read_bytes()[:8] == PNG_MAGIC


def test_bad_inputs_to_precision_recall_are_finetune_errors() -> None:
    truth, preds = _hand_case()
    classification = Evaluator().compute(np.array([0, 1]), np.array([0.2, 0.9]), task="binary")
    with pytest.raises(EvaluationError, match="no precision-recall curves"):
        plots.plot_precision_recall(classification)
    with pytest.raises(EvaluationError, match="no precision-recall curves"):
        plots.plot_precision_recall(classification.to_dict())
    plain = EvaluationReport.from_dict(det.detection_report(preds, truth).to_dict())
    with pytest.raises(EvaluationError, match="Evaluate the detector again"):
        plots.plot_precision_recall(plain)  # a base report rebuilt without the curves
    with pytest.raises(ArgumentTypeError, match="needs detection evaluation results"):
        plots.plot_precision_recall("report.json")
    broken = det.detection_report(preds, truth).to_dict()
    broken["pr_curves"] = {"0": {"recall": [0.0, 1.0], "precision": [1.0]}}
    with pytest.raises(EvaluationError, match="is not a precision-recall curve"):
        plots.plot_precision_recall(broken)
    scores = det.evaluate_detections(preds, truth)
    with pytest.raises(EvaluationError, match="not one of the evaluated IoU thresholds"):
        scores.pr_curves(0.52)
    with pytest.raises(EvaluationError, match="not one of the evaluated IoU thresholds"):
        det.pr_curves(scores, iou_threshold="0.5")  # type: ignore[arg-type]
    with pytest.raises(ArgumentTypeError, match="needs the result of evaluate_detections"):
        det.pr_curves(det.detection_report(preds, truth))  # type: ignore[arg-type]


def test_without_matplotlib_both_plots_raise_the_install_hint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    truth, preds = _hand_case()
    report = det.detection_report(preds, truth)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # unimportable
    with pytest.raises(plots.PlotDependencyError, match="finetunekit\\[plots\\]"):
        plots.plot_precision_recall(report)
    with pytest.raises(plots.PlotDependencyError, match="finetunekit\\[plots\\]"):
        plots.plot_detections([np.zeros((80, 80))] * 2, preds, truth)
