"""COCO-style detection metrics in numpy: mAP@[.5:.95], AP50, AP75, per-class AP, recall.

The definitions are those of the COCO evaluation (``pycocotools``'
``COCOeval`` for boxes), computed here from numpy arrays, one entry per
image:

* **Matching.** Per image and class, the detections (at most
  ``max_detections`` per image *and class*, the highest scores first) are
  matched greedily in score order: each takes the still unmatched ground-truth
  box of highest IoU, if that IoU is at least the threshold (ties go to the
  later box). A detection matched to an ignored box (crowd, or outside the
  size range being scored) is ignored, as is an unmatched detection outside
  the size range; a crowd box may absorb several detections, and its IoU is
  the intersection over the *detection's* area.
* **AP.** Per class, size range and IoU threshold, the detections of all
  images are ranked by score; precision is made non-increasing from the
  right and read at the 101 recall levels 0, 0.01, ..., 1 (zero beyond the
  highest recall reached); AP is their mean. ``map`` averages over the ten
  IoU thresholds 0.50, 0.55, ..., 0.95 and over the classes that have ground
  truth; ``map_50`` and ``map_75`` use one threshold.
* **Recall.** ``mar_N``: the highest recall with at most N detections per
  image and class, averaged over the IoU thresholds and classes.
* **Sizes.** ``small``: area < 32², ``medium``: 32² to 96², ``large``: > 96²
  (the area of a ground-truth box is its width x height in pixels); a size
  metric is left out when no ground-truth box has that size.

A class with no ground-truth box has no AP (COCO leaves it out of the means);
it is absent from ``per_class`` and counted in
``metrics["classes_without_ground_truth"]``.

Examples:
    >>> import numpy as np
    >>> truth = [{"boxes": np.array([[10, 10, 50, 50]]), "labels": np.array([0])}]
    >>> preds = [{"boxes": np.array([[12, 10, 50, 52]]), "scores": np.array([0.9]),
    ...           "labels": np.array([0])}]
    >>> scores = evaluate_detections(preds, truth, class_names=["cat"])
    >>> round(scores.metrics["map_50"], 4), round(scores.metrics["map"], 4)
    (1.0, 0.9)
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from finetunekit.errors import ArgumentTypeError, EvaluationError, format_error
from finetunekit.evaluation.report import EvaluationReport
from finetunekit.tasks.labels import validate_class_names

__all__ = [
    "AREA_RANGES",
    "IOU_THRESHOLDS",
    "RECALL_LEVELS",
    "DetectionReport",
    "DetectionScores",
    "box_iou",
    "detection_report",
    "evaluate_detections",
    "ground_truth_from_targets",
    "pr_curves",
]

#: the ten IoU thresholds 0.50, 0.55, ..., 0.95 (built as COCO builds them, so that
#: a threshold compares bit for bit like pycocotools')
IOU_THRESHOLDS: np.ndarray = np.linspace(0.5, 0.95, 10, endpoint=True)
#: the 101 recall levels at which precision is read
RECALL_LEVELS: np.ndarray = np.linspace(0.0, 1.0, 101, endpoint=True)
#: size ranges of ground-truth box areas in square pixels (bounds included on both sides)
AREA_RANGES: dict[str, tuple[float, float]] = {
    "all": (0.0, 1e10),
    "small": (0.0, 32.0**2),
    "medium": (32.0**2, 96.0**2),
    "large": (96.0**2, 1e10),
}
_AP50 = 0  # index of 0.50 in IOU_THRESHOLDS
_AP75 = 5  # index of 0.75


@dataclasses.dataclass(frozen=True)
class DetectionScores:
    """The result of :func:`evaluate_detections`.

    Attributes:
        metrics: ``map``, ``map_50``, ``map_75``, ``map_small``,
            ``map_medium``, ``map_large``, ``mar_1``, ``mar_10``,
            ``mar_<max_detections>``, ``mar_small``, ``mar_medium``,
            ``mar_large`` (size entries only where ground truth of that size
            exists), plus ``num_ground_truth``, ``num_predictions`` and
            ``classes_without_ground_truth``.
        per_class: class name -> ``ap``, ``ap_50``, ``ap_75``, ``recall``
            (at ``max_detections``), ``num_ground_truth``,
            ``num_predictions``; classes with ground truth only.
        class_names: all class names, in index order.
        precision: ``(T, R, K, A, M)`` interpolated precision for the IoU
            thresholds, recall levels, classes, size ranges (all, small,
            medium, large) and detection limits; ``-1`` where a class has no
            ground truth of that size (precision-recall curves read it).
        recall: ``(T, K, A, M)`` the highest recall reached; ``-1`` likewise.
        max_detections: the detection limits, e.g. ``(1, 10, 100)``.
        num_images: the number of images evaluated.
    """

    metrics: dict[str, float]
    per_class: dict[str, dict[str, float]]
    class_names: list[str]
    precision: np.ndarray
    recall: np.ndarray
    max_detections: tuple[int, ...]
    num_images: int

    def pr_curves(self, iou_threshold: float = 0.5) -> dict[str, dict[str, list[float]]]:
        """Per-class precision-recall curves at one IoU threshold; see :func:`pr_curves`.

        Examples:
            >>> truth = [{"boxes": np.array([[0, 0, 10, 10]]), "labels": np.array([0])}]
            >>> preds = [{"boxes": np.array([[0, 0, 10, 10]]), "scores": np.array([0.9]),
            ...           "labels": np.array([0])}]
            >>> curve = evaluate_detections(preds, truth).pr_curves()["0"]
            >>> len(curve["recall"]), round(curve["precision"][-1], 6)
            (101, 1.0)
        """
        return pr_curves(self, iou_threshold)


# --------------------------------------------------------------------------- inputs


def _bad(what: str, expected: str, received: dict[str, Any], fix: str | None = None) -> Exception:
    return EvaluationError(format_error(what, expected=expected, received=received, fix=fix))


def _image_arrays(
    entry: Any, i: int, name: str, keys: tuple[str, ...], box_format: str
) -> dict[str, np.ndarray]:
    """Reads one image's dict of arrays, checking shapes, counts and values."""
    if not isinstance(entry, Mapping):
        raise ArgumentTypeError(
            format_error(
                f"{name}[{i}] must be a dict of arrays",
                expected=f"a dict with the keys {list(keys)} per image",
                received={f"{name}[{i}]": entry},
                fix='Pass e.g. {"boxes": array (k, 4), "labels": array (k,)}',
            )
        )
    missing = [key for key in keys if key not in entry]
    if missing:
        raise _bad(
            f"{name}[{i}] lacks the keys {missing}",
            f"the keys {list(keys)}",
            {f"{name}[{i}]": sorted(map(str, entry))},
        )
    out: dict[str, np.ndarray] = {}
    try:
        boxes = np.asarray(entry["boxes"], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise _bad(
            f"{name}[{i}]['boxes'] is not numeric",
            "an array of shape (k, 4)",
            {f"{name}[{i}]": entry["boxes"]},
        ) from exc
    if boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise _bad(
            f"{name}[{i}]['boxes'] has shape {boxes.shape}",
            "an array of shape (k, 4), one row per box",
            {f"{name}[{i}]": boxes},
        )
    k = len(boxes)
    if not np.isfinite(boxes).all():
        raise _bad(
            f"{name}[{i}]['boxes'] holds NaN or inf",
            "finite coordinates",
            {f"{name}[{i}]": boxes},
        )
    if box_format != "xyxy":
        from finetunekit.boxes import convert_boxes

        boxes = convert_boxes(boxes, box_format, "xyxy")
    if (boxes[:, 2] < boxes[:, 0]).any() or (boxes[:, 3] < boxes[:, 1]).any():
        row = int(np.flatnonzero((boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1]))[0])
        raise _bad(
            f"{name}[{i}]['boxes'] row {row} ends before it starts: {boxes[row].tolist()}",
            f"boxes in {box_format!r} format with x2 >= x1 and y2 >= y1",
            {f"{name}[{i}]": boxes, "box_format": box_format},
            "Pass box_format= to name the coordinates' order",
        )
    out["boxes"] = boxes
    for key in keys[1:]:
        values = np.asarray(entry[key])
        if values.size == 0:
            values = values.reshape(0)
        if values.ndim != 1 or len(values) != k:
            raise _bad(
                f"{name}[{i}] has {k} boxes but {key} of shape {values.shape}",
                f"one {key} value per box: shape ({k},)",
                {f"{name}[{i}]['{key}']": values},
            )
        if key == "labels":
            if k and (values.dtype.kind not in "iuf" or (values != np.round(values)).any()):
                raise _bad(
                    f"{name}[{i}]['labels'] are not class indices",
                    "integer class indices",
                    {f"{name}[{i}]['labels']": values},
                )
            values = values.astype(np.int64)
        elif key == "scores":
            values = values.astype(np.float64)
            if not np.isfinite(values).all():
                raise _bad(
                    f"{name}[{i}]['scores'] holds NaN or inf",
                    "finite scores",
                    {f"{name}[{i}]['scores']": values},
                )
        else:  # iscrowd
            values = values.astype(bool)
        out[key] = values
    return out


def _read(
    predictions: Any, ground_truth: Any, box_format: str
) -> tuple[list[dict[str, np.ndarray]], list[dict[str, np.ndarray]]]:
    for name, value in (("predictions", predictions), ("ground_truth", ground_truth)):
        if isinstance(value, (Mapping, str, bytes, np.ndarray)) or not isinstance(value, Sequence):
            raise ArgumentTypeError(
                format_error(
                    f"{name} must be a list with one dict per image",
                    expected='[{"boxes": (k, 4), "labels": (k,), ...}, ...] in image order',
                    received={name: value},
                    fix="Wrap a single image's dict in a list",
                )
            )
    if len(predictions) != len(ground_truth):
        raise _bad(
            f"predictions cover {len(predictions)} images but ground_truth {len(ground_truth)}",
            "one entry per image in both, in the same order (an empty entry for an image "
            "without boxes)",
            {"predictions": len(predictions), "ground_truth": len(ground_truth)},
        )
    if not ground_truth:
        raise _bad("There are no images to evaluate", "at least one image", {"ground_truth": []})
    preds = [
        _image_arrays(p, i, "predictions", ("boxes", "scores", "labels"), box_format)
        for i, p in enumerate(predictions)
    ]
    truth = []
    for i, g in enumerate(ground_truth):
        keys: tuple[str, ...] = ("boxes", "labels")
        if isinstance(g, Mapping) and "iscrowd" in g:
            keys += ("iscrowd",)
        entry = _image_arrays(g, i, "ground_truth", keys, box_format)
        entry.setdefault("iscrowd", np.zeros(len(entry["boxes"]), bool))
        truth.append(entry)
    return preds, truth


def _class_names(
    class_names: Sequence[str] | None,
    num_classes: int | None,
    preds: list[dict[str, np.ndarray]],
    truth: list[dict[str, np.ndarray]],
) -> list[str]:
    labels = np.concatenate([e["labels"] for e in [*preds, *truth]])
    if class_names is not None:
        names = validate_class_names(class_names) or []
    elif num_classes is not None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral):
            raise ArgumentTypeError(
                format_error(
                    "num_classes must be an int",
                    expected="an int >= 1",
                    received={"num_classes": num_classes},
                )
            )
        names = [str(i) for i in range(int(num_classes))]
    else:
        names = [str(i) for i in range(int(labels.max()) + 1 if len(labels) else 1)]
    if num_classes is not None and class_names is not None and len(names) != num_classes:
        raise _bad(
            f"{len(names)} class_names but num_classes={num_classes}",
            "as many names as classes",
            {"class_names": names, "num_classes": num_classes},
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= len(names)):
        raise _bad(
            f"A label lies outside the {len(names)} classes (labels from {labels.min()} to "
            f"{labels.max()})",
            f"class indices in [0, {len(names)})",
            {"labels": f"min {labels.min()}, max {labels.max()}", "class_names": names},
            "Pass all the class names (or num_classes) of the data",
        )
    return names


# --------------------------------------------------------------------------- core


def box_iou(boxes: np.ndarray, others: np.ndarray, crowd: np.ndarray | None = None) -> np.ndarray:
    """IoU of every box in ``boxes`` ``(D, 4)`` with every box in ``others`` ``(G, 4)``, xyxy.

    Where ``crowd[g]`` is true the union is the area of the box of ``boxes``
    alone (COCO's crowd regions). Boxes that do not overlap, or overlap in a
    line, have IoU 0.

    Examples:
        >>> box_iou(np.array([[0, 0, 2, 2]]), np.array([[1, 0, 3, 2], [5, 5, 6, 6]])).round(4)
        array([[0.3333, 0.    ]])
    """
    d = np.asarray(boxes, np.float64).reshape(-1, 4)
    g = np.asarray(others, np.float64).reshape(-1, 4)
    width = np.minimum(d[:, None, 2], g[None, :, 2]) - np.maximum(d[:, None, 0], g[None, :, 0])
    height = np.minimum(d[:, None, 3], g[None, :, 3]) - np.maximum(d[:, None, 1], g[None, :, 1])
    overlap = (width > 0) & (height > 0)
    inter = np.where(overlap, width * height, 0.0)
    d_area = (d[:, 2] - d[:, 0]) * (d[:, 3] - d[:, 1])
    g_area = (g[:, 2] - g[:, 0]) * (g[:, 3] - g[:, 1])
    union = d_area[:, None] + g_area[None, :] - inter
    if crowd is not None:
        union = np.where(np.asarray(crowd, bool)[None, :], d_area[:, None], union)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(overlap, inter / np.where(overlap, union, 1.0), 0.0)


def _last_best(values: np.ndarray) -> np.ndarray:
    """Per row, the index of the LAST maximum (COCO's ties go to the later box)."""
    width = values.shape[1]
    return np.asarray(width - 1 - np.argmax(values[:, ::-1], axis=1))


def _match(
    ious: np.ndarray, gt_ignore: np.ndarray, gt_crowd: np.ndarray, thresholds: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy matching of detections (rows, best score first) to ground truth (columns).

    ``gt_ignore`` marks boxes that are matched only when no other box fits.

    Returns:
        ``(matched, matched_ignored)``: ``(T, D)`` bools -- the detection
        matched a box at each threshold, and that box is ignored.
    """
    n_det, n_gt = ious.shape
    n_thr = len(thresholds)
    matched = np.zeros((n_thr, n_det), bool)
    matched_ignored = np.zeros((n_thr, n_det), bool)
    if n_gt == 0:
        return matched, matched_ignored
    taken = np.zeros((n_thr, n_gt), bool)
    limits = np.minimum(thresholds, 1 - 1e-10)[:, None]
    rows = np.arange(n_thr)
    for d in range(n_det):
        fits = (ious[d][None, :] >= limits) & (~taken | gt_crowd[None, :])
        pick = np.full(n_thr, -1)
        for ignored in (False, True):  # a box that counts beats an ignored one
            group = fits & (gt_ignore[None, :] == ignored)
            scores = np.where(group, ious[d][None, :], -1.0)
            best = _last_best(scores)
            found = (pick < 0) & group[rows, best]
            pick = np.where(found, best, pick)
        hit = pick >= 0
        matched[hit, d] = True
        matched_ignored[hit, d] = gt_ignore[pick[hit]]
        taken[rows[hit], pick[hit]] = True
    return matched, matched_ignored


@dataclasses.dataclass
class _Evaluated:
    """One (image, class, size range): detections in score order, matched per threshold."""

    scores: np.ndarray  # (D,)
    true_positive: np.ndarray  # (T, D)
    counted: np.ndarray  # (T, D): not ignored
    num_counted_gt: int


def _evaluate_image(
    pred: dict[str, np.ndarray],
    gt: dict[str, np.ndarray],
    k: int,
    max_det: int,
    thresholds: np.ndarray,
) -> list[_Evaluated] | None:
    """The matching of class ``k`` in one image, for each size range (``None``: nothing there)."""
    g_sel = gt["labels"] == k
    d_sel = pred["labels"] == k
    if not g_sel.any() and not d_sel.any():
        return None
    g_boxes = gt["boxes"][g_sel]
    g_crowd = gt["iscrowd"][g_sel]
    order = np.argsort(-pred["scores"][d_sel], kind="mergesort")[:max_det]
    d_boxes = pred["boxes"][d_sel][order]
    d_scores = pred["scores"][d_sel][order]
    g_area = (g_boxes[:, 2] - g_boxes[:, 0]) * (g_boxes[:, 3] - g_boxes[:, 1])
    d_area = (d_boxes[:, 2] - d_boxes[:, 0]) * (d_boxes[:, 3] - d_boxes[:, 1])
    all_ious = box_iou(d_boxes, g_boxes, g_crowd)
    out = []
    for low, high in AREA_RANGES.values():
        ignore = g_crowd | (g_area < low) | (g_area > high)
        g_order = np.argsort(ignore, kind="mergesort")  # counted boxes first
        matched, matched_ignored = _match(
            all_ious[:, g_order], ignore[g_order], g_crowd[g_order], thresholds
        )
        outside = (d_area < low) | (d_area > high)
        ignored = matched_ignored | (~matched & outside[None, :])
        out.append(
            _Evaluated(
                scores=d_scores,
                true_positive=matched & ~ignored,
                counted=~ignored,
                num_counted_gt=int((~ignore).sum()),
            )
        )
    return out


def _accumulate(
    parts: list[_Evaluated], max_det: int, n_rec: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """Interpolated precision ``(T, R)`` and final recall ``(T,)`` over all images."""
    num_gt = sum(p.num_counted_gt for p in parts)
    if num_gt == 0:
        return None
    scores = np.concatenate([p.scores[:max_det] for p in parts])
    order = np.argsort(-scores, kind="mergesort")
    tp = np.concatenate([p.true_positive[:, :max_det] for p in parts], axis=1)[:, order]
    counted = np.concatenate([p.counted[:, :max_det] for p in parts], axis=1)[:, order]
    fp = counted & ~tp
    tp_sum = np.cumsum(tp, axis=1, dtype=np.float64)
    fp_sum = np.cumsum(fp, axis=1, dtype=np.float64)
    n_thr = tp.shape[0]
    precision = np.zeros((n_thr, n_rec))
    recall = np.zeros(n_thr)
    n_det = tp.shape[1]
    if n_det == 0:
        return precision, recall
    rec = tp_sum / num_gt
    prec = tp_sum / (tp_sum + fp_sum + np.spacing(1))
    # precision made non-increasing: the best precision at this recall or beyond
    prec = np.maximum.accumulate(prec[:, ::-1], axis=1)[:, ::-1]
    recall = rec[:, -1]
    for t in range(n_thr):
        at = np.searchsorted(rec[t], RECALL_LEVELS, side="left")
        reached = at < n_det
        precision[t, reached] = prec[t, at[reached]]
    return precision, recall


def _mean(values: np.ndarray) -> float | None:
    valid = values[values > -1]
    return float(np.mean(valid)) if valid.size else None


def evaluate_detections(
    predictions: Sequence[Mapping[str, Any]],
    ground_truth: Sequence[Mapping[str, Any]],
    *,
    class_names: Sequence[str] | None = None,
    num_classes: int | None = None,
    box_format: str = "xyxy",
    max_detections: int = 100,
) -> DetectionScores:
    """COCO-style metrics of detections against ground truth, from numpy arrays.

    Args:
        predictions: one dict per image: ``boxes`` ``(k, 4)``, ``scores``
            ``(k,)`` and ``labels`` ``(k,)`` (class indices); ``k`` may be 0.
        ground_truth: one dict per image, in the same order: ``boxes``
            ``(k, 4)``, ``labels`` ``(k,)`` and optionally ``iscrowd``
            ``(k,)`` (crowd regions: ignored, see the module docstring).
            :func:`ground_truth_from_targets` makes it from
            ``DatasetAdapter.targets()``.
        class_names: the class names in index order (default ``"0"``,
            ``"1"``, ... up to the largest label).
        num_classes: the number of classes, when ``class_names`` is not given.
        box_format: the boxes' format, ``"xyxy"`` (absolute pixels, the
            default) or another absolute format of
            :data:`finetunekit.boxes.BOX_FORMATS`. Areas (the size
            ranges) are in the boxes' units.
        max_detections: detections kept per image and class (COCO: 100).

    Returns:
        A :class:`DetectionScores`.

    Raises:
        EvaluationError: the lists differ in length, an array has the wrong
            shape or non-finite values, a label is out of range, a box ends
            before it starts, or no image holds a (non-crowd) ground-truth box.
        ArgumentTypeError: an argument has the wrong type.

    Examples:
        >>> import numpy as np
        >>> truth = [{"boxes": np.array([[0, 0, 10, 10], [20, 20, 30, 30]]),
        ...           "labels": np.array([0, 1])}]
        >>> preds = [{"boxes": np.array([[0, 0, 10, 10]]), "scores": np.array([0.8]),
        ...           "labels": np.array([0])}]
        >>> s = evaluate_detections(preds, truth, class_names=["cat", "dog"])
        >>> round(s.metrics["map"], 6), s.per_class["dog"]["ap"]
        (0.5, 0.0)
    """
    if (
        isinstance(max_detections, bool)
        or not isinstance(max_detections, numbers.Integral)
        or max_detections < 1
    ):
        raise _bad(
            "max_detections must be a positive int",
            "an int >= 1 (COCO: 100)",
            {"max_detections": max_detections},
        )
    from finetunekit.boxes import check_box_format

    fmt = check_box_format(box_format)
    if fmt.startswith("rel_"):
        raise _bad(
            f"box_format={fmt!r} is relative, but metrics need pixel coordinates",
            "an absolute format ('xyxy', 'xywh', 'yxyx', 'cxcywh'): the size ranges are in "
            "square pixels",
            {"box_format": fmt},
            "Scale the boxes by the image's width and height first",
        )
    preds, truth = _read(predictions, ground_truth, fmt)
    names = _class_names(class_names, num_classes, preds, truth)
    limits = tuple(sorted({1, 10, int(max_detections)}))
    thresholds = IOU_THRESHOLDS
    n_thr, n_rec, n_cls, n_area, n_lim = (
        len(thresholds),
        len(RECALL_LEVELS),
        len(names),
        len(AREA_RANGES),
        len(limits),
    )
    precision = -np.ones((n_thr, n_rec, n_cls, n_area, n_lim))
    recall = -np.ones((n_thr, n_cls, n_area, n_lim))
    # per class and size range, the images' matchings in image order (only the classes
    # an image holds in its ground truth or predictions)
    per_class_area: list[list[list[_Evaluated]]] = [
        [[] for _ in range(n_area)] for _ in range(n_cls)
    ]
    for pred, gt in zip(preds, truth, strict=True):
        for k in np.union1d(pred["labels"], gt["labels"]).tolist():
            found = _evaluate_image(pred, gt, int(k), limits[-1], thresholds)
            for a, part in enumerate(found or []):
                per_class_area[int(k)][a].append(part)
    for k in range(n_cls):
        for a, parts in enumerate(per_class_area[k]):
            for m, limit in enumerate(limits):
                done = _accumulate(parts, limit, n_rec)
                if done is not None:
                    precision[:, :, k, a, m], recall[:, k, a, m] = done
    num_gt = [
        sum(int(((g["labels"] == k) & ~g["iscrowd"]).sum()) for g in truth) for k in range(n_cls)
    ]
    if sum(num_gt) == 0:
        raise _bad(
            "No image holds a ground-truth box: AP is undefined",
            "at least one (non-crowd) ground-truth box",
            {"ground_truth": f"{len(truth)} images without boxes"},
            "Evaluate on images that contain objects",
        )
    metrics: dict[str, float] = {}
    top = n_lim - 1
    entries: list[tuple[str, float | None]] = [
        ("map", _mean(precision[:, :, :, 0, top])),
        ("map_50", _mean(precision[_AP50, :, :, 0, top])),
        ("map_75", _mean(precision[_AP75, :, :, 0, top])),
    ]
    for a, size in enumerate(list(AREA_RANGES)[1:], start=1):
        entries.append((f"map_{size}", _mean(precision[:, :, :, a, top])))
    for m, limit in enumerate(limits):
        entries.append((f"mar_{limit}", _mean(recall[:, :, 0, m])))
    for a, size in enumerate(list(AREA_RANGES)[1:], start=1):
        entries.append((f"mar_{size}", _mean(recall[:, :, a, top])))
    metrics = {key: value for key, value in entries if value is not None}
    num_pred = [sum(int((p["labels"] == k).sum()) for p in preds) for k in range(n_cls)]
    per_class: dict[str, dict[str, float]] = {}
    for k, name in enumerate(names):
        if num_gt[k] == 0:
            continue
        per_class[name] = {
            "ap": float(np.mean(precision[:, :, k, 0, top])),
            "ap_50": float(np.mean(precision[_AP50, :, k, 0, top])),
            "ap_75": float(np.mean(precision[_AP75, :, k, 0, top])),
            "recall": float(np.mean(recall[:, k, 0, top])),
            "num_ground_truth": num_gt[k],
            "num_predictions": num_pred[k],
        }
    metrics["num_ground_truth"] = sum(num_gt)
    metrics["num_predictions"] = sum(num_pred)
    metrics["classes_without_ground_truth"] = n_cls - len(per_class)
    return DetectionScores(
        metrics=metrics,
        per_class=per_class,
        class_names=names,
        precision=precision,
        recall=recall,
        max_detections=limits,
        num_images=len(truth),
    )


def pr_curves(
    scores: DetectionScores, iou_threshold: float = 0.5
) -> dict[str, dict[str, list[float]]]:
    """Per-class precision-recall curves of :func:`evaluate_detections`, COCO-interpolated.

    Each curve is the precision that the AP averages: precision made
    non-increasing from the right, read at the 101 recall levels 0, 0.01,
    ..., 1 (zero beyond the highest recall reached), at one IoU threshold,
    over all box sizes, with ``max(max_detections)`` detections per image
    and class. The mean of a curve's ``precision`` (its area under the
    101-point rule) is that class's AP at the threshold: ``ap_50`` for 0.5.

    Args:
        scores: what :func:`evaluate_detections` returned.
        iou_threshold: one of :data:`IOU_THRESHOLDS` (0.5, 0.55, ..., 0.95).

    Returns:
        ``{class name: {"recall": 101 floats, "precision": 101 floats}}`` for
        the classes with ground truth (those of ``scores.per_class``), plain
        Python floats (JSON-serialisable).

    Raises:
        EvaluationError: ``iou_threshold`` is not one of the ten thresholds.
        ArgumentTypeError: ``scores`` is not a :class:`DetectionScores`.

    Examples:
        >>> truth = [{"boxes": np.array([[0, 0, 10, 10], [20, 20, 30, 30]]),
        ...           "labels": np.array([0, 0])}]
        >>> preds = [{"boxes": np.array([[0, 0, 10, 10]]), "scores": np.array([0.9]),
        ...           "labels": np.array([0])}]
        >>> curve = pr_curves(evaluate_detections(preds, truth))["0"]
        >>> p = curve["precision"]
        >>> round(p[50], 6), p[51], round(sum(p) / 101, 4)  # recall 0.5 reached, AP50 0.505
        (1.0, 0.0, 0.505)
    """
    if not isinstance(scores, DetectionScores):
        raise ArgumentTypeError(
            format_error(
                "pr_curves() needs the result of evaluate_detections",
                expected="a DetectionScores",
                received={"scores": scores},
                fix="Pass scores = evaluate_detections(predictions, ground_truth)",
            )
        )
    if isinstance(iou_threshold, bool) or not isinstance(iou_threshold, numbers.Real):
        found = np.zeros(0, np.int64)
    else:
        found = np.flatnonzero(np.isclose(IOU_THRESHOLDS, float(iou_threshold)))
    if len(found) != 1:
        raise _bad(
            f"iou_threshold={iou_threshold!r} is not one of the evaluated IoU thresholds",
            "one of 0.5, 0.55, ..., 0.95",
            {"iou_threshold": iou_threshold},
            "Pass iou_threshold=0.5 (AP50) or 0.75 (AP75)",
        )
    t = int(found[0])
    top = len(scores.max_detections) - 1
    recall = [float(r) for r in RECALL_LEVELS]
    curves: dict[str, dict[str, list[float]]] = {}
    for k, name in enumerate(scores.class_names):
        if name not in scores.per_class:
            continue
        precision = scores.precision[t, :, k, 0, top]
        curves[name] = {"recall": list(recall), "precision": [float(p) for p in precision]}
    return curves


def _curves(value: Any) -> dict[str, dict[str, list[float]]]:
    """Checks precision-recall curves ``{class: {"recall": [...], "precision": [...]}}``."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _bad(
            "pr_curves is not a dict of curves",
            '{class: {"recall": [...], "precision": [...]}}',
            {"pr_curves": value},
        )
    out: dict[str, dict[str, list[float]]] = {}
    for name, curve in value.items():
        ok = isinstance(curve, Mapping) and {"recall", "precision"} <= set(curve)
        if ok:
            recall = np.asarray(curve["recall"], np.float64).reshape(-1)
            precision = np.asarray(curve["precision"], np.float64).reshape(-1)
            ok = len(recall) == len(precision) > 0
        if not ok:
            raise _bad(
                f"pr_curves[{name!r}] is not a precision-recall curve",
                '{"recall": [...], "precision": [...]} of one length',
                {f"pr_curves[{name!r}]": curve},
            )
        out[str(name)] = {"recall": recall.tolist(), "precision": precision.tolist()}
    return out


class DetectionReport(EvaluationReport):
    """The :class:`~finetunekit.EvaluationReport` of detections, with precision-recall curves.

    Everything of an ``EvaluationReport`` (task ``"detection"``, headline
    ``map``), plus:

    Attributes:
        pr_curves: per class with ground truth, the COCO-interpolated
            precision-recall curve at IoU 0.5 (see :func:`pr_curves`):
            ``{class: {"recall": [...], "precision": [...]}}``, 101 points
            each; the mean of ``precision`` is the class's ``ap_50``.
            ``to_dict()`` includes it and ``DetectionReport.from_dict`` reads
            it back; ``finetunekit.plots.plot_precision_recall`` draws it.

    Examples:
        >>> truth = [{"boxes": np.array([[0, 0, 10, 10]]), "labels": np.array([0])}]
        >>> preds = [{"boxes": np.array([[0, 0, 10, 10]]), "scores": np.array([0.7]),
        ...           "labels": np.array([0])}]
        >>> report = detection_report(preds, truth, class_names=["cat"])
        >>> sorted(report.pr_curves["cat"]), report.to_dict()["pr_curves"] == report.pr_curves
        (['precision', 'recall'], True)
    """

    def __init__(
        self,
        *,
        pr_curves: Mapping[str, Mapping[str, Sequence[float]]] | None = None,
        **fields: Any,
    ) -> None:
        """Stores the report's fields (those of ``EvaluationReport``) and the curves."""
        super().__init__(**fields)
        self.pr_curves: dict[str, dict[str, list[float]]] = _curves(pr_curves)

    def to_dict(self) -> dict[str, Any]:
        """``EvaluationReport.to_dict()`` plus ``pr_curves`` (plain lists, JSON)."""
        data = super().to_dict()
        data["pr_curves"] = {
            name: {key: list(values) for key, values in curve.items()}
            for name, curve in self.pr_curves.items()
        }
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DetectionReport:
        """Rebuilds a report from :meth:`to_dict` output (curves included when present)."""
        report = super().from_dict(data)
        if not isinstance(report, DetectionReport):  # pragma: no cover - from_dict builds cls
            raise TypeError(type(report).__name__)
        report.pr_curves = _curves(data.get("pr_curves"))
        return report


def ground_truth_from_targets(targets: np.ndarray) -> list[dict[str, np.ndarray]]:
    """Per-image ground truth from detection targets ``(N, M, 5)`` (padding rows dropped).

    ``targets`` is what ``DatasetAdapter.targets()`` returns for detection
    data: ``x1, y1, x2, y2, class`` per box, rows with class ``-1`` padding.

    Examples:
        >>> t = np.array([[[0, 0, 4, 4, 1], [-1, -1, -1, -1, -1]]], "float32")
        >>> gt = ground_truth_from_targets(t)
        >>> gt[0]["boxes"].tolist(), gt[0]["labels"].tolist()
        ([[0.0, 0.0, 4.0, 4.0]], [1])
    """
    arr = np.asarray(targets)
    if arr.ndim != 3 or arr.shape[2] != 5:
        raise _bad(
            f"targets of shape {arr.shape} are not detection targets",
            "an array (N, M, 5): x1, y1, x2, y2, class per box, class -1 for padding",
            {"targets": arr},
            "Pass DatasetAdapter.targets() of detection data",
        )
    out = []
    for rows in arr:
        keep = rows[:, 4] >= 0
        out.append(
            {
                "boxes": rows[keep, :4].astype(np.float64),
                "labels": rows[keep, 4].astype(np.int64),
            }
        )
    return out


def detection_report(
    predictions: Sequence[Mapping[str, Any]],
    ground_truth: Sequence[Mapping[str, Any]] | np.ndarray,
    *,
    class_names: Sequence[str] | None = None,
    num_classes: int | None = None,
    box_format: str = "xyxy",
    max_detections: int = 100,
) -> DetectionReport:
    """The :class:`~finetunekit.EvaluationReport` of detections (task ``"detection"``).

    The same arguments as :func:`evaluate_detections`; ``ground_truth`` may
    also be ``DatasetAdapter.targets()`` of detection data. The report's
    ``metrics`` are those of :class:`DetectionScores` (headline ``map``),
    ``per_class`` its per-class table, ``pr_curves`` the per-class
    precision-recall curves at IoU 0.5 (a :class:`DetectionReport`);
    ``report.to_dict()`` is JSON.

    Examples:
        >>> import numpy as np
        >>> truth = [{"boxes": np.array([[0, 0, 10, 10]]), "labels": np.array([0])}]
        >>> preds = [{"boxes": np.array([[0, 0, 10, 10]]), "scores": np.array([0.7]),
        ...           "labels": np.array([0])}]
        >>> report = detection_report(preds, truth, class_names=["cat"])
        >>> report.headline, round(report.metrics["map"], 6), round(report.per_class["cat"]["ap_50"], 6)
        ('map', 1.0, 1.0)
    """

    if isinstance(ground_truth, np.ndarray):
        ground_truth = ground_truth_from_targets(ground_truth)
    scores = evaluate_detections(
        predictions,
        ground_truth,
        class_names=class_names,
        num_classes=num_classes,
        box_format=box_format,
        max_detections=max_detections,
    )
    return DetectionReport(
        task="detection",
        metrics=scores.metrics,
        per_class=scores.per_class,
        confusion_matrix=None,
        class_names=scores.class_names,
        num_examples=scores.num_images,
        headline="map",
        pr_curves=scores.pr_curves(0.5),
    )
