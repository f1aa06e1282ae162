"""Plots of object detection results: boxes on images, precision-recall curves.

Both functions return a ``matplotlib.figure.Figure`` built without
``pyplot`` (see :mod:`finetunekit.plots`) and, when ``path`` is given, save
it as a PNG. matplotlib is the optional ``plots`` extra. They are re-exported
by :mod:`finetunekit.plots`.

Detections are one dict per image, as everywhere in finetunekit:
``{"boxes": (k, 4) xyxy in that image's pixels, "scores": (k,), "labels":
(k,) class indices}``; ground truth likewise without ``scores`` (or the
``(N, M, 5)`` array of ``DatasetAdapter.targets()``).

Examples:
    >>> import numpy as np
    >>> from finetunekit.plots import plot_detections
    >>> image = np.zeros((40, 60, 3), "uint8")
    >>> pred = {"boxes": np.array([[5, 5, 20, 30]]), "scores": np.array([0.9]),
    ...         "labels": np.array([1])}
    >>> truth = {"boxes": np.array([[6, 4, 21, 30]]), "labels": np.array([1])}
    >>> fig = plot_detections([image], [pred], [truth], class_names=["cat", "dog"])
    >>> len(fig.axes[0].patches), fig.axes[0].texts[0].get_text()
    (2, 'dog 0.90')
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from finetunekit.errors import ArgumentTypeError, EvaluationError, FineTuneError, format_error

if TYPE_CHECKING:  # pragma: no cover - typing only
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["plot_detections", "plot_precision_recall"]

#: batch size of the predictions made for ``plot_detections(result, data)``
_PREDICT_BATCH = 16


# ------------------------------------------------------------------ inputs


def _bad(what: str, expected: str, received: dict[str, Any], fix: str | None = None) -> Exception:
    return EvaluationError(format_error(what, expected=expected, received=received, fix=fix))


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ArgumentTypeError(
            format_error(
                f"{name} must be a positive int",
                expected="an int >= 1",
                received={name: value},
                fix=f"Pass e.g. {name}=16.",
            )
        )
    return int(value)


def _per_image(value: Any, name: str) -> list[Any]:
    """A list with one entry per image (a list, tuple or array along its first axis)."""
    if hasattr(value, "__array__") and not isinstance(value, (np.ndarray, Mapping)):
        value = np.asarray(value)  # a tf.Tensor or another array type
    if isinstance(value, (Mapping, str, bytes)) or not isinstance(value, (Sequence, np.ndarray)):
        raise ArgumentTypeError(
            format_error(
                f"{name} must be a list with one entry per image",
                expected="a list (or an array whose first axis is the image)",
                received={name: value},
                fix="Wrap a single image's entry in a list",
            )
        )
    return list(value)


def _image(value: Any, i: int) -> np.ndarray:
    """One image as ``(H, W)`` or ``(H, W, 3|4)``, ready for ``imshow`` (uint8 or floats in [0, 1])."""
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as exc:  # pragma: no cover - ragged nested lists
        raise _bad(
            f"images[{i}] is not an array", "an (H, W[, C]) array", {"images": value}
        ) from exc
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    ok = (
        array.dtype.kind in "biuf"
        and array.size > 0
        and (array.ndim == 2 or (array.ndim == 3 and array.shape[-1] in (3, 4)))
    )
    if not ok:
        raise _bad(
            f"images[{i}] has shape {array.shape} and dtype {array.dtype}",
            "a numeric image (H, W), (H, W, 1), (H, W, 3) or (H, W, 4)",
            {f"images[{i}]": array},
            "Pass the images themselves, channels last",
        )
    if array.dtype == np.uint8:
        return array
    array = array.astype(np.float64)
    if not np.isfinite(array).all():
        raise _bad(
            f"images[{i}] holds NaN or inf",
            "finite pixel values",
            {f"images[{i}]": f"shape {array.shape}"},
        )
    if array.min() >= 0.0 and array.max() <= 1.0:  # already [0, 1]: keep its brightness
        return array
    if array.min() >= 0.0 and array.max() <= 255.0:  # 0..255 in another dtype
        return array / 255.0
    low, high = float(array.min()), float(array.max())  # anything else: stretched
    return (array - low) / (high - low) if high > low else np.zeros_like(array)


def _detections(
    entries: list[Any], name: str, keys: tuple[str, ...], num_classes: int | None
) -> list[dict[str, np.ndarray]]:
    from finetunekit.evaluation.detection import _image_arrays

    out = [_image_arrays(entry, i, name, keys, "xyxy") for i, entry in enumerate(entries)]
    labels = np.concatenate([e["labels"] for e in out]) if out else np.zeros(0, np.int64)
    if not len(labels):
        return out
    if labels.min() < 0 or (num_classes is not None and labels.max() >= num_classes):
        classes = "class indices >= 0" if num_classes is None else f"[0, {num_classes})"
        raise _bad(
            f"A label in {name} lies outside the classes (labels from {labels.min()} to "
            f"{labels.max()})",
            f"class indices in {classes}",
            {f"{name} labels": f"min {labels.min()}, max {labels.max()}"},
            "Pass all the class names of the data; drop padding rows (label -1)",
        )
    return out


def _from_result(
    result: Any, data: Any, max_images: int
) -> tuple[list[np.ndarray], list[dict[str, Any]], list[dict[str, np.ndarray]], list[str]]:
    """Images, predictions, ground truth and class names of a detector on the first images."""
    task = getattr(getattr(result, "task_object", None), "name", getattr(result, "task", None))
    if task != "detection":
        raise EvaluationError(
            format_error(
                "plot_detections(result, data) needs a detection result",
                expected="a FineTuneResult of task 'detection'",
                received={"task": task},
                fix="For other tasks use plot_top_losses or plot_most_confused",
            )
        )
    from finetunekit.data import DatasetAdapter
    from finetunekit.evaluation.detection import ground_truth_from_targets
    from finetunekit.tasks.detection import Detection

    if not isinstance(data, DatasetAdapter) or data.task != "detection":
        raise ArgumentTypeError(
            format_error(
                "plot_detections(result, data) needs detection data",
                expected="a DatasetAdapter from from_detection, from_coco or from_voc",
                received={"data": data},
                fix="Pass data = ftk.DatasetAdapter.from_detection(images, boxes, labels)",
            )
        )
    n = min(len(data), max_images)
    batches = math.ceil(n / _PREDICT_BATCH)
    inputs = data.inputs_dataset(_PREDICT_BATCH).take(batches)
    try:
        outputs = result.model.predict(inputs, verbose=0)
    except FineTuneError:
        raise
    except Exception as error:
        first = (str(error).strip().splitlines() or [""])[0][:300]
        raise EvaluationError(
            format_error(
                f"The model failed to predict on the images ({type(error).__name__}: {first})",
                expected="a detector taking batches of images (B, H, W, C)",
                received={"model": type(result.model).__name__},
            )
        ) from error
    taken = min(len(data), batches * _PREDICT_BATCH)
    predictions = Detection.predictions_from_outputs(outputs, taken)[:n]
    sizes = data.image_sizes
    images: list[np.ndarray] = []
    for batch in inputs:  # the same images, unshuffled; padding cut off
        for padded in np.asarray(batch):
            if len(images) < n:
                h, w = padded.shape[:2] if sizes is None else sizes[len(images)]
                images.append(padded[: int(h), : int(w)])
    truth = ground_truth_from_targets(np.asarray(data.targets())[:n])
    return images, predictions, truth, list(result.class_names)


# ------------------------------------------------------------------ boxes


def _draw(
    ax: Axes,
    image: np.ndarray,
    pred: dict[str, np.ndarray] | None,
    truth: dict[str, np.ndarray] | None,
    names: list[str] | None,
    score_threshold: float,
) -> tuple[int, int]:
    """Draws one image with its boxes; returns (predicted boxes drawn, true boxes drawn)."""
    from matplotlib.patches import Rectangle

    h, w = image.shape[:2]
    if image.ndim == 2:
        vmax = 255 if image.dtype == np.uint8 else 1
        ax.imshow(image, cmap="gray", vmin=0, vmax=vmax, extent=(0, w, h, 0))
    else:
        ax.imshow(image, extent=(0, w, h, 0))  # pixel i spans [i, i + 1]: boxes' coordinates

    def name(label: int) -> str:
        return names[label] if names is not None else str(label)

    n_true = 0
    if truth is not None:
        for box, label in zip(truth["boxes"], truth["labels"], strict=True):
            x1, y1, x2, y2 = (float(v) for v in box)
            color = f"C{int(label) % 10}"
            ax.add_patch(
                Rectangle(
                    (x1, y1),
                    x2 - x1,
                    y2 - y1,
                    fill=False,
                    edgecolor=color,
                    linestyle="--",
                    linewidth=1.5,
                )
            )
            n_true += 1
    n_pred = 0
    if pred is not None:
        keep = pred["scores"] >= score_threshold
        order = np.argsort(-pred["scores"][keep], kind="stable")
        for j in order:
            x1, y1, x2, y2 = (float(v) for v in pred["boxes"][keep][j])
            label = int(pred["labels"][keep][j])
            color = f"C{label % 10}"
            ax.add_patch(
                Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=color, linewidth=1.8)
            )
            inside = y1 < 0.08 * h  # no room above the box: the label goes inside it
            ax.text(
                x1,
                y1,
                f"{name(label)} {float(pred['scores'][keep][j]):.2f}",
                color="white",
                fontsize="x-small",
                va="top" if inside else "bottom",
                ha="left",
                clip_on=True,
                bbox={"facecolor": color, "edgecolor": "none", "pad": 1.0, "alpha": 0.8},
            )
            n_pred += 1
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.set_xticks([])
    ax.set_yticks([])
    return n_pred, n_true


def plot_detections(
    images: Any,
    predictions: Any,
    ground_truth: Any = None,
    *,
    class_names: Sequence[str] | None = None,
    score_threshold: float = 0.3,
    max_images: int = 16,
    path: str | os.PathLike[str] | None = None,
) -> Figure:
    """A grid of images with their predicted boxes (solid) and true boxes (dashed).

    Each predicted box with a score of at least ``score_threshold`` is drawn
    solid and labelled ``"name 0.87"``; each true box is dashed; a box's
    colour is its class's. Boxes are ``xyxy`` in the image's pixels (pixel
    ``i`` spans ``[i, i + 1]``). Images may differ in size and dtype and be
    grayscale: ``uint8`` is shown as is, floats in [0, 1] as is, values in
    [0, 255] divided by 255, anything else stretched to its range.

    Also ``plot_detections(result, data)``: a detection ``FineTuneResult``
    predicts on the first ``max_images`` images of detection ``data`` (a
    ``DatasetAdapter``), drawn with the data's boxes and the result's class
    names.

    Args:
        images: the images, one ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or
            ``(H, W, 4)`` array each (a list, or one ``(N, H, W[, C])``
            array); or a detection ``FineTuneResult``.
        predictions: one dict per image, ``{"boxes": (k, 4), "scores": (k,),
            "labels": (k,)}``, or a detector's padded output for all the
            images (``model.predict``: ``{"boxes": (N, K, 4), "confidence":
            (N, K), "labels": (N, K), "num_detections": (N,)}``, padding
            label ``-1``), or ``None`` to draw only the ground truth; the
            ``DatasetAdapter`` when ``images`` is a result.
        ground_truth: optional, one dict per image ``{"boxes": (k, 4),
            "labels": (k,)}``, or ``DatasetAdapter.targets()``.
        class_names: class names in index order (default: the indices).
        score_threshold: predictions scoring below it are not drawn.
        max_images: the most images shown (the first ones).
        path: where to save the PNG; ``None`` only returns the figure.

    Returns:
        The matplotlib ``Figure``, one axes per image, titled with the
        image's index and its numbers of drawn predicted and true boxes.

    Raises:
        EvaluationError: the lists' lengths differ, a dict lacks a key or
            has arrays of the wrong shape, a box ends before it starts, a
            label has no class name, an image is not an image.
        ArgumentTypeError: an argument has the wrong type.
        PlotDependencyError: matplotlib is not installed.

    Examples:
        >>> import numpy as np
        >>> from finetunekit.plots import plot_detections
        >>> images = [np.zeros((32, 32), "float32"), np.full((20, 50, 3), 200, "uint8")]
        >>> preds = [{"boxes": np.array([[1, 1, 9, 9], [2, 2, 5, 5]]),
        ...           "scores": np.array([0.8, 0.1]), "labels": np.array([0, 0])},
        ...          {"boxes": np.zeros((0, 4)), "scores": np.zeros(0), "labels": np.zeros(0)}]
        >>> fig = plot_detections(images, preds, class_names=["digit"])
        >>> [len(ax.patches) for ax in fig.axes]
        [1, 0]
    """
    from finetunekit.plots import _grid, finish_figure, new_figure

    max_images = _positive_int("max_images", max_images)
    if (
        isinstance(score_threshold, bool)
        or not isinstance(score_threshold, numbers.Real)
        or not math.isfinite(score_threshold)
    ):
        raise ArgumentTypeError(
            format_error(
                "score_threshold must be a number",
                expected="a float, e.g. 0.3 (0.0 draws every prediction)",
                received={"score_threshold": score_threshold},
            )
        )
    names = None
    if hasattr(images, "model") and hasattr(images, "class_names"):  # plot_detections(result, data)
        if ground_truth is not None:
            raise ArgumentTypeError(
                format_error(
                    "plot_detections(result, data) takes the ground truth from data",
                    expected="plot_detections(result, data) without ground_truth",
                    received={"ground_truth": type(ground_truth).__name__},
                )
            )
        images, predictions, ground_truth, names = _from_result(images, predictions, max_images)
    if class_names is not None:
        from finetunekit.tasks.labels import validate_class_names

        names = list(validate_class_names(class_names) or [])
    image_list = _per_image(images, "images")[:max_images]
    if not image_list:
        raise _bad("images is empty", "at least one image", {"images": images})
    count = len(_per_image(images, "images"))
    entries: dict[str, list[dict[str, np.ndarray]] | None] = {}
    for what, value, keys in (
        ("predictions", predictions, ("boxes", "scores", "labels")),
        ("ground_truth", ground_truth, ("boxes", "labels")),
    ):
        if value is None:
            entries[what] = None
            continue
        if what == "ground_truth" and isinstance(value, np.ndarray):
            from finetunekit.evaluation.detection import ground_truth_from_targets

            value = ground_truth_from_targets(value)
        if what == "predictions" and isinstance(value, Mapping):  # a detector's padded output
            from finetunekit.tasks.detection import Detection

            value = Detection.predictions_from_outputs(value, count)
        listed = _per_image(value, what)
        if len(listed) != count:
            raise _bad(
                f"{what} covers {len(listed)} images but images {count}",
                "one entry per image, in the images' order (empty arrays for an image "
                "without boxes)",
                {"images": count, what: len(listed)},
            )
        entries[what] = _detections(
            listed[:max_images], what, keys, None if names is None else len(names)
        )
    preds, truth = entries["predictions"], entries["ground_truth"]
    if preds is None and truth is None:
        raise ArgumentTypeError(
            format_error(
                "There are no boxes to draw",
                expected="predictions, ground_truth or both",
                received={"predictions": None, "ground_truth": None},
            )
        )
    pictures = [_image(image, i) for i, image in enumerate(image_list)]
    rows, cols = _grid(len(pictures))
    fig = new_figure((3.2 * cols, 3.3 * rows))
    shown_pred = shown_true = 0
    for i, picture in enumerate(pictures):
        ax = fig.add_subplot(rows, cols, i + 1)
        n_pred, n_true = _draw(
            ax,
            picture,
            None if preds is None else preds[i],
            None if truth is None else truth[i],
            names,
            float(score_threshold),
        )
        shown_pred += n_pred
        shown_true += n_true
        parts = [f"image {i}"]
        if preds is not None:
            parts.append(f"{n_pred} predicted")
        if truth is not None:
            parts.append(f"{n_true} true")
        ax.set_title(", ".join(parts), fontsize="small")
    legend = []
    if preds is not None:
        legend.append(f"solid: predicted (score >= {float(score_threshold):g})")
    if truth is not None:
        legend.append("dashed: true")
    fig.suptitle(
        f"Detections on {len(pictures)} of {count} images: " + ", ".join(legend),
        fontsize="medium",
    )
    return finish_figure(fig, path)


# ------------------------------------------------------------------ precision-recall


def _curves_of(report_or_scores: Any) -> tuple[dict[str, dict[str, list[float]]], dict[str, Any]]:
    """The per-class curves at IoU 0.5 and the metrics, from scores, a report or its dict."""
    from finetunekit.evaluation.detection import DetectionScores, pr_curves
    from finetunekit.evaluation.report import EvaluationReport

    if isinstance(report_or_scores, DetectionScores):
        return pr_curves(report_or_scores, 0.5), dict(report_or_scores.metrics)
    task: Any
    if isinstance(report_or_scores, EvaluationReport):
        curves = getattr(report_or_scores, "pr_curves", None)
        task, metrics = report_or_scores.task, dict(report_or_scores.metrics)
    elif isinstance(report_or_scores, Mapping):
        curves = report_or_scores.get("pr_curves")
        task, metrics = report_or_scores.get("task"), dict(report_or_scores.get("metrics") or {})
    else:
        raise ArgumentTypeError(
            format_error(
                "plot_precision_recall() needs detection evaluation results",
                expected="a detection EvaluationReport (result.evaluate(test) or "
                "detection_report(...)), its to_dict(), or evaluate_detections(...)",
                received={"report_or_scores": report_or_scores},
            )
        )
    if task != "detection" or not curves:
        raise EvaluationError(
            format_error(
                "The report holds no precision-recall curves",
                expected="a detection report with pr_curves (from detection_report or "
                "evaluating a detector)",
                received={"task": task, "pr_curves": curves},
                fix="Evaluate the detector again with this version of finetunekit, or pass "
                "evaluate_detections(predictions, ground_truth)",
            )
        )
    from finetunekit.evaluation.detection import _curves

    return _curves(curves), metrics


def plot_precision_recall(
    report_or_scores: Any, path: str | os.PathLike[str] | None = None
) -> Figure:
    """Per-class precision-recall curves at IoU 0.5, and their mean.

    The curves are the COCO-interpolated ones the AP is computed from:
    precision made non-increasing from the right, at the 101 recall levels
    (zero beyond the highest recall a class reaches). The area under a curve
    (the mean of its 101 points) is the class's AP at IoU 0.5, shown in the
    legend; the mean curve (black, dashed) has the area ``map_50``.

    Args:
        report_or_scores: a detection ``EvaluationReport`` (its
            ``pr_curves``: ``result.evaluate(test)`` or
            ``finetunekit.evaluation.detection.detection_report``), its
            ``to_dict()``, or the ``DetectionScores`` of
            ``evaluate_detections``.
        path: where to save the PNG; ``None`` only returns the figure.

    Returns:
        The matplotlib ``Figure``: one axes, one line per class with ground
        truth, then the mean.

    Raises:
        EvaluationError: the report is not a detection report or holds no curves.
        ArgumentTypeError: ``report_or_scores`` is none of the accepted types.
        PlotDependencyError: matplotlib is not installed.

    Examples:
        >>> import numpy as np
        >>> from finetunekit.evaluation.detection import detection_report
        >>> from finetunekit.plots import plot_precision_recall
        >>> truth = [{"boxes": np.array([[0, 0, 10, 10], [20, 20, 30, 30]]),
        ...           "labels": np.array([0, 1])}]
        >>> preds = [{"boxes": np.array([[0, 0, 10, 10]]), "scores": np.array([0.9]),
        ...           "labels": np.array([0])}]
        >>> fig = plot_precision_recall(detection_report(preds, truth, class_names=["a", "b"]))
        >>> [line.get_label() for line in fig.axes[0].get_lines()]
        ['a (AP50 1.000)', 'b (AP50 0.000)', 'mean (mAP50 0.500)']
    """
    from finetunekit.plots import finish_figure, new_figure

    curves, metrics = _curves_of(report_or_scores)
    fig = new_figure((6.5, 5.0))
    ax = fig.add_subplot(1, 1, 1)
    precisions = []
    for i, (name, curve) in enumerate(curves.items()):
        recall = np.asarray(curve["recall"], np.float64)
        precision = np.asarray(curve["precision"], np.float64)
        precisions.append(precision)
        area = float(np.mean(precision))
        ax.plot(
            recall,
            precision,
            color=f"C{i % 10}",
            linewidth=1.4,
            drawstyle="steps-pre",
            label=f"{name} (AP50 {area:.3f})",
        )
    lengths = {len(p) for p in precisions}
    if len(lengths) == 1:
        mean = np.mean(np.stack(precisions), axis=0)
        first = next(iter(curves.values()))
        ax.plot(
            np.asarray(first["recall"], np.float64),
            mean,
            color="black",
            linestyle="--",
            linewidth=2.2,
            drawstyle="steps-pre",
            label=f"mean (mAP50 {float(np.mean(mean)):.3f})",
        )
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(-0.02, 1.05)  # lines at 0 stay visible
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    title = "Precision-recall at IoU 0.5 (COCO, 101 points)"
    if "map" in metrics:
        title += f"\nmAP@[.5:.95] {float(metrics['map']):.3f}"
    ax.set_title(title, fontsize="medium")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize="small", ncol=1 if len(curves) <= 12 else 2)
    return finish_figure(fig, path)
