"""See what happened: training curves, confusion matrix, per-class bars, examples, calibration.

Every function returns a ``matplotlib.figure.Figure`` and, when ``path`` is
given, also saves it there as a PNG. matplotlib is an optional extra
(``pip install 'finetunekit[plots]'``) imported only when a plot is drawn.

The figures are plain ``matplotlib.figure.Figure`` objects built without
``pyplot``: drawing them never selects, switches or needs a GUI backend, so
it works on headless servers and leaves a notebook's or script's own
matplotlib setup alone. In Jupyter the returned figure displays as usual;
elsewhere save it (``path=...`` or ``fig.savefig``).

Examples:
    >>> from finetunekit import plots
    >>> fig = plots.plot_history(result, path="curves.png")       # doctest: +SKIP
    >>> report = result.evaluate(test)                             # doctest: +SKIP
    >>> plots.plot_confusion_matrix(report, normalize=True)        # doctest: +SKIP
    >>> plots.plot_reliability(report, path="reliability.png")     # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from finetunekit.errors import ArgumentTypeError, EvaluationError, FineTuneError, format_error

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "INSTALL_HINT",
    "PlotDependencyError",
    "plot_confusion_matrix",
    "plot_detections",
    "plot_history",
    "plot_most_confused",
    "plot_per_class",
    "plot_precision_recall",
    "plot_reliability",
    "plot_top_losses",
]

#: How to install the optional plotting dependency.
INSTALL_HINT = "pip install 'finetunekit[plots]'  (or: pip install matplotlib)"
#: Cells of the confusion matrix are annotated with their values up to this many classes.
_ANNOTATE_MAX = 20
_PHASE_COLORS = ("#f2f2f2", "#e3edf7")


class PlotDependencyError(FineTuneError, ImportError):
    """matplotlib, needed for plots, is not installed."""


# ------------------------------------------------------------------ helpers


def new_figure(figsize: tuple[float, float]) -> Figure:
    """A pyplot-free figure (no backend is selected or changed)."""
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise PlotDependencyError(
            format_error(
                "Plots need matplotlib, which is not installed",
                expected="the optional 'plots' extra",
                received={"matplotlib": None},
                fix=INSTALL_HINT,
            )
        ) from exc
    return Figure(figsize=figsize, layout="constrained")


def finish_figure(fig: Figure, path: str | os.PathLike[str] | None) -> Figure:
    """Saves ``fig`` as a PNG at ``path`` (when given) and returns it."""
    if path is not None:
        if not isinstance(path, (str, os.PathLike)):
            raise ArgumentTypeError(
                format_error(
                    "path must be a file path or None",
                    expected="a str or os.PathLike ending in .png",
                    received={"path": path},
                    fix="Pass path='plot.png'.",
                )
            )
        folder = os.path.dirname(os.path.abspath(os.fspath(path)))
        os.makedirs(folder, exist_ok=True)
        fig.savefig(os.fspath(path), format="png", dpi=100)
    return fig


def _report(report: Any) -> Any:
    """Accepts an ``EvaluationReport`` or its ``to_dict()``."""
    from finetunekit.evaluation import EvaluationReport

    if isinstance(report, EvaluationReport):
        return report
    if isinstance(report, Mapping):
        return EvaluationReport.from_dict(dict(report))
    raise ArgumentTypeError(
        format_error(
            "Expected an evaluation report",
            expected="an EvaluationReport (result.evaluate(test)) or its to_dict()",
            received={"report": report},
            fix="Pass report = result.evaluate(test_data).",
        )
    )


def _check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ArgumentTypeError(
            format_error(
                "k must be a positive int",
                expected="an int >= 1",
                received={"k": k},
                fix="Pass e.g. k=9.",
            )
        )
    return int(k)


def _single_label(task: Any, what: str) -> None:
    """Raises unless ``task`` (a name or a Task) is a single-label classifier."""
    from finetunekit.tasks.base import get

    try:
        task_obj = get(task)
    except Exception:  # an unknown or unregistered name: not a single-label classifier
        task_obj = None
    if task_obj is None or not (task_obj.single_label and task_obj.has_classes):
        raise EvaluationError(_not_single_label(getattr(task_obj, "name", task), what))


def _not_single_label(task: Any, what: str) -> str:
    return format_error(
        f"{what} needs a single-label classifier, but the task is '{task}'",
        expected="task 'multiclass' or 'binary'",
        received={"task": task},
        fix="Use plot_per_class for multilabel and regression results.",
    )


def _grid(n: int) -> tuple[int, int]:
    cols = min(n, max(1, math.ceil(math.sqrt(n))))
    return math.ceil(n / cols), cols


# ------------------------------------------------------------------ history


def plot_history(
    result_or_history: Any,
    metrics: Sequence[str] | None = None,
    path: str | os.PathLike[str] | None = None,
) -> Figure:
    """Training curves of both phases, with the phase boundary marked.

    One panel per metric; training values are solid lines, validation
    (``val_*``) values dashed in the same colour. The epochs of phase 1
    (frozen backbone) and phase 2 (fine-tuning) are shaded differently and
    separated by a vertical line.

    Args:
        result_or_history: A ``FineTuneResult`` or its ``history`` dict
            (``{metric: [value per epoch]}`` with ``"phase"`` and ``"epoch"``
            lists), e.g. from ``ftk.load(...)``.
        metrics: Base metric names to draw (e.g. ``["loss", "accuracy"]``);
            default every logged metric except the learning rate.
        path: Where to save the PNG; ``None`` only returns the figure.

    Returns:
        The matplotlib ``Figure``.

    Raises:
        ArgumentTypeError: If ``result_or_history`` holds no history dict.
        EvaluationError: If the history is empty or a requested metric was
            never logged.
        PlotDependencyError: If matplotlib is not installed.

    Examples:
        >>> from finetunekit.plots import plot_history
        >>> history = {"phase": [1, 1, 2], "epoch": [0, 1, 2], "loss": [0.9, 0.6, 0.4],
        ...            "val_loss": [1.0, 0.7, 0.5]}
        >>> fig = plot_history(history)
        >>> [ax.get_title() for ax in fig.axes]
        ['loss']
    """
    history = getattr(result_or_history, "history", result_or_history)
    if not isinstance(history, Mapping):
        raise ArgumentTypeError(
            format_error(
                "plot_history() needs a FineTuneResult or its history dict",
                expected="result or result.history ({metric: [value per epoch]})",
                received={"result_or_history": result_or_history},
            )
        )
    epochs = [int(e) for e in history.get("epoch", [])]
    logged = [
        k
        for k in history
        if k not in ("phase", "epoch")
        and not k.startswith("val_")
        and k not in ("lr", "learning_rate")
    ]
    logged += [k[4:] for k in history if k.startswith("val_") and k[4:] not in logged]
    if not epochs and logged:
        epochs = list(range(len(history[logged[0]])))
    if not epochs or not logged:
        raise EvaluationError(
            format_error(
                "The history is empty: no epoch was recorded",
                expected="a history with at least one epoch of metrics",
                received={"keys": sorted(history)},
                fix="Train for at least one epoch first.",
            )
        )
    if metrics is None:
        names = logged
    else:
        if isinstance(metrics, str):
            metrics = [metrics]
        names = [str(m[4:] if str(m).startswith("val_") else m) for m in metrics]
        unknown = [m for m in names if m not in history and f"val_{m}" not in history]
        if unknown:
            raise EvaluationError(
                format_error(
                    f"The history has no metric {unknown}",
                    expected=f"names among {logged}",
                    received={"metrics": list(metrics)},
                    fix=f"Pass metrics={logged[:2]}.",
                )
            )
    x = np.asarray(epochs) + 1
    phases = list(history.get("phase", [1] * len(x)))
    fig = new_figure((5.0 * min(len(names), 3), 3.6 * math.ceil(len(names) / 3)))
    rows, cols = math.ceil(len(names) / 3), min(len(names), 3)
    for i, name in enumerate(names):
        ax = fig.add_subplot(rows, cols, i + 1)
        _shade_phases(ax, x, phases)
        color = f"C{i % 10}"
        for key, style, label in ((name, "-", "train"), (f"val_{name}", "--", "validation")):
            if key in history:
                values = np.array([np.nan if v is None else v for v in history[key]], dtype=float)
                ax.plot(x, values, style, color=color, marker="o", markersize=3, label=label)
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize="small")
    return finish_figure(fig, path)


def _shade_phases(ax: Axes, x: np.ndarray, phases: list[Any]) -> None:
    """Shades each phase's epochs and draws a line at each phase change."""
    start = 0
    for i in range(1, len(x) + 1):
        if i == len(x) or phases[i] != phases[start]:
            low, high = x[start] - 0.5, x[i - 1] + 0.5
            ax.axvspan(low, high, color=_PHASE_COLORS[(int(phases[start]) - 1) % 2], zorder=0)
            ax.text(
                (low + high) / 2,
                1.0,
                f"phase {phases[start]}",
                transform=ax.get_xaxis_transform(),
                ha="center",
                va="top",
                fontsize="small",
                color="0.35",
            )
            if start > 0:
                ax.axvline(low, color="0.3", linestyle=":", linewidth=1.2)
            start = i


# ------------------------------------------------------------------ reports


def plot_confusion_matrix(
    report: Any, normalize: bool = False, path: str | os.PathLike[str] | None = None
) -> Figure:
    """The confusion matrix with class names (rows true, columns predicted).

    Args:
        report: A multiclass or binary ``EvaluationReport`` (or its ``to_dict()``).
        normalize: Show each row as fractions of the true class (recall on
            the diagonal) instead of counts.
        path: Where to save the PNG; ``None`` only returns the figure.

    Returns:
        The matplotlib ``Figure``. Cells are annotated up to 20 classes.

    Raises:
        EvaluationError: For multilabel and regression reports.
        PlotDependencyError: If matplotlib is not installed.

    Examples:
        >>> import numpy as np
        >>> from finetunekit.evaluation import Evaluator
        >>> report = Evaluator().compute(np.array([0, 1, 1]), np.array([0.2, 0.7, 0.4]),
        ...                              task="binary", class_names=["ok", "defect"])
        >>> fig = plot_confusion_matrix(report, normalize=True)
        >>> fig.axes[0].get_xlabel()
        'predicted'
    """
    report = _report(report)
    if report.confusion_matrix is None or report.confusion_matrix.ndim != 2:
        raise EvaluationError(_not_single_label(report.task, "plot_confusion_matrix()"))
    matrix = np.asarray(report.confusion_matrix, dtype=np.float64)
    names = list(report.class_names)
    k = len(names)
    if normalize:
        totals = matrix.sum(axis=1, keepdims=True)
        matrix = np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)
    size = min(4.0 + 0.45 * k, 16.0)
    fig = new_figure((size + 1.2, size))
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(matrix, cmap="Blues", vmin=0.0, vmax=1.0 if normalize else None)
    fig.colorbar(image, ax=ax, shrink=0.8, label="fraction of true class" if normalize else "count")
    ax.set_xticks(
        range(k), labels=names, rotation=45 if k > 3 else 0, ha="right" if k > 3 else "center"
    )
    ax.set_yticks(range(k), labels=names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    title = "Confusion matrix" + (" (normalised by true class)" if normalize else "")
    if "accuracy" in report.metrics:
        title += f"\naccuracy {report.metrics['accuracy']:.3f}, {report.num_examples} examples"
    ax.set_title(title)
    if k <= _ANNOTATE_MAX:
        high = matrix.max() if matrix.size else 0.0
        for i in range(k):
            for j in range(k):
                value = matrix[i, j]
                text = f"{value:.2f}" if normalize else str(int(value))
                color = "white" if high and value > 0.6 * high else "black"
                ax.text(j, i, text, ha="center", va="center", color=color, fontsize="small")
    return finish_figure(fig, path)


def plot_per_class(
    report: Any, metric: str = "f1", path: str | os.PathLike[str] | None = None
) -> Figure:
    """Horizontal bars of one per-class score, worst class at the top.

    Args:
        report: An ``EvaluationReport`` (or its ``to_dict()``) with per-class
            scores (classification, or multi-target regression).
        metric: The per-class score to draw: ``"f1"``, ``"precision"``,
            ``"recall"``, ``"support"`` (classification) or ``"mse"``,
            ``"mae"``, ``"rmse"``, ``"r2"`` (regression).
        path: Where to save the PNG; ``None`` only returns the figure.

    Returns:
        The matplotlib ``Figure``.

    Raises:
        EvaluationError: If the report has no per-class scores or no such metric.
        PlotDependencyError: If matplotlib is not installed.

    Examples:
        >>> import numpy as np
        >>> from finetunekit.evaluation import Evaluator
        >>> probs = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1]])
        >>> report = Evaluator().compute(np.array([0, 1, 2]), probs, task="multiclass",
        ...                              class_names=["a", "b", "c"])
        >>> plot_per_class(report, metric="recall").axes[0].get_xlabel()
        'recall'
    """
    report = _report(report)
    if not report.per_class:
        raise EvaluationError(
            format_error(
                "The report has no per-class scores",
                expected="a classification or multi-target regression report",
                received={"task": report.task},
            )
        )
    available = sorted({key for scores in report.per_class.values() for key in scores})
    if metric not in available:
        raise EvaluationError(
            format_error(
                f"Unknown per-class metric '{metric}'",
                expected=f"one of {available}",
                received={"metric": metric},
                fix=f"Pass metric='{available[0]}'.",
            )
        )
    names = list(report.per_class)
    values = np.array([float(report.per_class[n].get(metric, np.nan)) for n in names])
    lower_is_better = metric in ("mse", "mae", "rmse")
    order = np.argsort(-values if lower_is_better else values, kind="stable")  # worst first
    fig = new_figure((7.0, min(1.2 + 0.32 * len(names), 30.0)))
    ax = fig.add_subplot(1, 1, 1)
    positions = np.arange(len(names))
    ax.barh(positions, values[order], color="C0")
    ax.set_yticks(positions, labels=[names[i] for i in order])
    ax.invert_yaxis()  # worst first (top)
    ax.set_xlabel(metric)
    if metric in ("precision", "recall", "f1"):
        ax.set_xlim(0.0, 1.05)
    for pos, value in zip(positions, values[order], strict=True):
        label = str(int(value)) if metric == "support" else f"{value:.3f}"
        ax.text(float(value), float(pos), f" {label}", va="center", fontsize="small")
    ax.set_title(f"Per-class {metric} ({report.task}, {report.num_examples} examples)")
    ax.grid(axis="x", alpha=0.3)
    return finish_figure(fig, path)


def plot_reliability(report: Any, path: str | os.PathLike[str] | None = None) -> Figure:
    """The reliability diagram: accuracy against confidence, per confidence bin.

    Bars show the accuracy of the predictions in each equal-width confidence
    bin; the diagonal is perfect calibration, and the red part of each bar
    the gap to it (bars below the diagonal: overconfident). A lower panel
    shows how many predictions fall in each bin. The title gives the ECE.

    Args:
        report: A multiclass or binary ``EvaluationReport`` (or its ``to_dict()``).
        path: Where to save the PNG; ``None`` only returns the figure.

    Returns:
        The matplotlib ``Figure``.

    Raises:
        EvaluationError: If the report has no calibration bins (multilabel,
            regression).
        PlotDependencyError: If matplotlib is not installed.

    Examples:
        >>> import numpy as np
        >>> from finetunekit.evaluation import Evaluator
        >>> report = Evaluator().compute(np.array([0, 1, 1, 0]), np.array([0.1, 0.9, 0.3, 0.8]),
        ...                              task="binary")
        >>> plot_reliability(report).axes[0].get_ylabel()
        'accuracy'
    """
    report = _report(report)
    if not report.calibration:
        raise EvaluationError(
            format_error(
                "The report has no calibration bins",
                expected="a multiclass or binary EvaluationReport",
                received={"task": report.task},
                fix="Reliability diagrams need single-label classification reports.",
            )
        )
    cal = report.calibration
    edges = np.asarray(cal["bins"], dtype=np.float64)
    count = np.asarray(cal["count"], dtype=np.float64)
    accuracy = np.asarray(cal["accuracy"], dtype=np.float64)
    confidence = np.asarray(cal["confidence"], dtype=np.float64)
    width = np.diff(edges)
    filled = count > 0
    fig = new_figure((5.5, 6.5))
    grid = fig.add_gridspec(2, 1, height_ratios=(3, 1))
    ax = fig.add_subplot(grid[0])
    ax.bar(
        edges[:-1][filled],
        accuracy[filled],
        width=width[filled],
        align="edge",
        color="C0",
        edgecolor="white",
        label="accuracy",
    )
    gap_low = np.minimum(accuracy, confidence)[filled]
    gap = np.abs(confidence - accuracy)[filled]
    ax.bar(
        edges[:-1][filled],
        gap,
        bottom=gap_low,
        width=width[filled],
        align="edge",
        color="C3",
        alpha=0.35,
        edgecolor="C3",
        hatch="//",
        label="gap to confidence",
    )
    ax.plot([0, 1], [0, 1], "--", color="0.3", label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ece = report.metrics.get("ece")
    ax.set_title("Reliability diagram" + (f"  (ECE {ece:.4f})" if ece is not None else ""))
    ax.legend(loc="upper left", fontsize="small")
    ax.grid(alpha=0.3)
    below = fig.add_subplot(grid[1], sharex=ax)
    below.bar(edges[:-1], count, width=width, align="edge", color="0.5", edgecolor="white")
    below.set_xlabel("confidence (probability of the predicted class)")
    below.set_ylabel("count")
    return finish_figure(fig, path)


# ------------------------------------------------------------------ examples


def _predictions(result: Any, data: Any) -> tuple[Any, np.ndarray, np.ndarray]:
    """``(adapter, y_true indices, probabilities (N, K))`` of ``result`` on ``data``."""
    task = getattr(result, "task_object", None) or getattr(result, "task", None) or "?"
    _single_label(task, "Plotting examples")
    from finetunekit.data import as_adapter

    adapter = as_adapter(data, task=task, class_names=result.class_names)
    y_true = np.asarray(adapter.targets()).reshape(-1).astype(np.int64)
    probs = np.asarray(result.model.predict(adapter.inputs_dataset(64), verbose=0))
    temperature = float(getattr(result, "temperature", 1.0))
    if temperature != 1.0:
        from finetunekit.evaluation.calibration import apply_temperature

        probs = apply_temperature(probs, temperature)
    probs = probs.astype(np.float64)
    if probs.ndim == 1 or probs.shape[1] == 1:
        p = probs.reshape(-1)
        probs = np.stack([1.0 - p, p], axis=1)
    return adapter, y_true, probs


def _gather(adapter: Any, indices: Sequence[int]) -> list[np.ndarray]:
    """The raw inputs at ``indices``, streamed (only those are kept)."""
    wanted = {int(i): None for i in indices}
    position = 0
    for batch in adapter.inputs_dataset(64):
        array = np.asarray(batch)
        for j in range(len(array)):
            if position + j in wanted:
                wanted[position + j] = array[j]
        position += len(array)
        if all(v is not None for v in wanted.values()):
            break
    return [np.asarray(wanted[int(i)]) for i in indices]


def _as_image(x: np.ndarray) -> tuple[np.ndarray, str | None]:
    """Turns one raw input into something ``imshow`` draws, and the colour map."""
    array = np.asarray(x)
    if array.dtype.kind in ("U", "S", "O") or array.ndim not in (2, 3):
        raise EvaluationError(
            format_error(
                "Example plots need image inputs",
                expected="examples of shape (H, W), (H, W, 1) or (H, W, 3)",
                received={"example_shape": array.shape, "dtype": str(array.dtype)},
                fix="Use plot_confusion_matrix or plot_per_class for non-image data.",
            )
        )
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    elif array.ndim == 3 and array.shape[-1] not in (3, 4):
        array = array[..., :3] if array.shape[-1] > 4 else array[..., 0]
    if array.dtype != np.uint8:
        array = array.astype(np.float64)
        low, high = float(np.nanmin(array)), float(np.nanmax(array))
        array = (array - low) / (high - low) if high > low else np.zeros_like(array)
    return array, ("gray" if array.ndim == 2 else None)


def _example_grid(
    images: list[np.ndarray], titles: list[str], suptitle: str, colors: list[str]
) -> Figure:
    rows, cols = _grid(len(images))
    fig = new_figure((2.6 * cols, 2.9 * rows))
    for i, (image, title, color) in enumerate(zip(images, titles, colors, strict=True)):
        ax = fig.add_subplot(rows, cols, i + 1)
        picture, cmap = _as_image(image)
        if cmap:
            ax.imshow(picture, cmap=cmap, vmin=0, vmax=255 if picture.dtype == np.uint8 else 1)
        else:
            ax.imshow(picture)
        ax.set_title(title, fontsize="small", color=color)
        ax.axis("off")
    fig.suptitle(suptitle)
    return fig


def plot_most_confused(
    result: Any, data: Any, k: int = 9, path: str | os.PathLike[str] | None = None
) -> Figure:
    """Shows misclassified examples of the most-confused (true, predicted) pairs.

    The pairs are ranked by how often the model makes that mistake on
    ``data``; the grid takes one example from each pair in turn (the most
    confident mistake first), so the commonest confusions are all visible.

    Args:
        result: A multiclass or binary ``FineTuneResult`` (its temperature is applied).
        data: Image data with labels: an adapter, ``(x, y)`` or a ``tf.data`` of ``(x, y)``.
        k: The most examples to show.
        path: Where to save the PNG; ``None`` only returns the figure.

    Returns:
        The matplotlib ``Figure``; each title reads ``true -> predicted (n x)``
        and the predicted probability. Without a single mistake the figure
        only says so.

    Raises:
        EvaluationError: For multilabel / regression results or non-image inputs.
        PlotDependencyError: If matplotlib is not installed.

    Examples:
        >>> from finetunekit.plots import plot_most_confused
        >>> fig = plot_most_confused(result, (x_test, y_test), k=6)  # doctest: +SKIP
    """
    k = _check_k(k)
    adapter, y_true, probs = _predictions(result, data)
    y_hat = probs.argmax(axis=1)
    names = list(result.class_names)
    wrong = np.flatnonzero(y_hat != y_true)
    pairs: dict[tuple[int, int], list[int]] = {}
    for i in wrong[np.argsort(-probs[wrong, y_hat[wrong]], kind="stable")]:
        pairs.setdefault((int(y_true[i]), int(y_hat[i])), []).append(int(i))
    ranked = sorted(pairs.items(), key=lambda item: (-len(item[1]), item[0]))
    chosen: list[tuple[int, tuple[int, int], int]] = []
    depth = 0
    while len(chosen) < k and any(depth < len(ids) for _, ids in ranked):
        for pair, ids in ranked:
            if depth < len(ids) and len(chosen) < k:
                chosen.append((ids[depth], pair, len(ids)))
        depth += 1
    if not chosen:
        fig = new_figure((5.0, 2.0))
        fig.text(
            0.5,
            0.5,
            "No mistakes: every example was classified correctly.",
            ha="center",
            va="center",
        )
        return finish_figure(fig, path)
    images = _gather(adapter, [i for i, _, _ in chosen])
    titles = [f"{names[t]} -> {names[p]} ({n}x)\np={probs[i, p]:.2f}" for i, (t, p), n in chosen]
    fig = _example_grid(
        images,
        titles,
        f"Most confused pairs ({len(wrong)} mistakes of {len(y_true)})",
        ["C3"] * len(titles),
    )
    return finish_figure(fig, path)


def plot_top_losses(
    result: Any, data: Any, k: int = 9, path: str | os.PathLike[str] | None = None
) -> Figure:
    """Shows the ``k`` examples with the highest loss (cross-entropy), highest first.

    High-loss examples are confident mistakes, hard or ambiguous examples, or
    wrong labels: look at them before training longer.

    Args:
        result: A multiclass or binary ``FineTuneResult`` (its temperature is applied).
        data: Image data with labels: an adapter, ``(x, y)`` or a ``tf.data`` of ``(x, y)``.
        k: How many examples to show.
        path: Where to save the PNG; ``None`` only returns the figure.

    Returns:
        The matplotlib ``Figure``; each title reads ``true / predicted``,
        ``p=`` (probability of the predicted class) and ``loss=``; mistakes
        are titled in red.

    Raises:
        EvaluationError: For multilabel / regression results or non-image inputs.
        PlotDependencyError: If matplotlib is not installed.

    Examples:
        >>> from finetunekit.plots import plot_top_losses
        >>> fig = plot_top_losses(result, (x_test, y_test), k=9, path="losses.png")  # doctest: +SKIP
    """
    k = _check_k(k)
    adapter, y_true, probs = _predictions(result, data)
    y_hat = probs.argmax(axis=1)
    names = list(result.class_names)
    losses = -np.log(np.clip(probs[np.arange(len(y_true)), y_true], 1e-7, 1.0))
    top = np.argsort(-losses, kind="stable")[:k]
    images = _gather(adapter, top.tolist())
    titles = [
        f"{names[y_true[i]]} / {names[y_hat[i]]}\np={probs[i, y_hat[i]]:.2f} loss={losses[i]:.2f}"
        for i in top
    ]
    colors = ["C3" if y_hat[i] != y_true[i] else "black" for i in top]
    fig = _example_grid(images, titles, "Top losses (true / predicted)", colors)
    return finish_figure(fig, path)


# ------------------------------------------------------------------ detection (re-exported)

from finetunekit.plots_detection import plot_detections, plot_precision_recall  # noqa: E402
