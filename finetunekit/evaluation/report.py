"""`EvaluationReport`: the result of :meth:`Evaluator.evaluate`."""

from __future__ import annotations

from typing import Any

import numpy as np

from finetunekit.errors import ArgumentTypeError, EvaluationError, format_error

__all__ = ["EvaluationReport"]

#: Show the full confusion matrix up to this many classes.
MAX_MATRIX_CLASSES = 20
#: Show every class in the per-class table up to this many classes.
MAX_TABLE_CLASSES = 50
#: Width at which class names are cut in tables.
NAME_WIDTH = 24
#: Width at which class names are cut in confusion-matrix column headers.
MATRIX_NAME_WIDTH = 8

#: The headline metric of reports rebuilt from dicts that predate ``headline``.
_HEADLINE = {
    "multiclass": "accuracy",
    "binary": "accuracy",
    "multilabel": "f1_micro",
    "regression": "mse",
}


def _cut(name: str, width: int) -> str:
    """Cuts ``name`` to ``width`` characters, marking the cut with ``~``."""
    return name if len(name) <= width else name[: width - 1] + "~"


def _number(value: Any) -> str:
    """Formats a metric value for the text table."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return str(int(value))
    return f"{float(value):.4f}"


def _table(header: list[str], rows: list[list[str]], indent: str = "  ") -> list[str]:
    """Formats rows as an aligned table: first column left, the others right."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = []
    for row in [header, *rows]:
        cells = [row[0].ljust(widths[0])]
        cells += [cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)]
        lines.append((indent + "  ".join(cells)).rstrip())
    return lines


def _plain(value: Any) -> Any:
    """Converts numpy scalars / arrays inside ``value`` to plain Python values."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    return value


class EvaluationReport:
    """Metrics, per-class scores and the confusion matrix of one evaluation.

    Reports are produced by :meth:`Evaluator.evaluate` and
    :meth:`Evaluator.compute`; users only read them.

    Attributes:
        task: the task's name (``"multiclass"``, ``"binary"``, ``"multilabel"``,
            ``"regression"`` or a user task's name).
        metrics: Headline metrics, name -> float (e.g. ``"accuracy"``,
            ``"f1_macro"``, ``"top_5_accuracy"``, ``"roc_auc"``, ``"mse"``).
        per_class: Class (or label / target) name -> dict of scores
            (``precision``, ``recall``, ``f1``, ``support``; multilabel adds
            ``threshold``; multi-target regression has ``mse``, ``mae``,
            ``rmse``, ``r2``).
        confusion_matrix: int64 array; (K, K) with rows = true class and
            columns = predicted class for multiclass / binary, (K, 2, 2)
            ``[[tn, fp], [fn, tp]]`` per label for multilabel, ``None`` for
            regression.
        class_names: Class names in index order.
        num_examples: Number of evaluated examples.
        thresholds: Decision thresholds per label (multilabel) or the single
            threshold on ``class_names[1]`` (binary, a one-element list);
            ``None`` otherwise.
        calibration: Reliability bins of the top-label confidence for
            multiclass / binary reports (``None`` otherwise): a dict of lists
            ``{"bins": 16 bin edges, "confidence": mean confidence per bin,
            "accuracy": fraction correct per bin, "count": predictions per
            bin}``; ``metrics["ece"]`` is the expected calibration error they
            give. See :mod:`finetunekit.evaluation.calibration`.
        headline: the name of the main metric (the task's ``headline_metric``).

    Examples:
        >>> import numpy as np
        >>> from finetunekit.evaluation import Evaluator
        >>> report = Evaluator().compute(np.array([0, 1]), np.array([[0.9, 0.1], [0.2, 0.8]]),
        ...                              task="multiclass", class_names=["cat", "dog"])
        >>> report.metrics["accuracy"]
        1.0
    """

    def __init__(
        self,
        *,
        task: str,
        metrics: dict[str, float],
        per_class: dict[str, dict[str, float]],
        confusion_matrix: np.ndarray | None,
        class_names: list[str],
        num_examples: int,
        thresholds: list[float] | None = None,
        calibration: dict[str, list[Any]] | None = None,
        headline: str | None = None,
    ) -> None:
        """Stores the results; see the class docstring for the fields.

        Examples:
            >>> r = EvaluationReport(task="regression", metrics={"mse": 0.5}, per_class={},
            ...                      confusion_matrix=None, class_names=[], num_examples=2)
            >>> r.num_examples
            2
        """
        self.task = task
        self.metrics = dict(metrics)
        self.per_class = {name: dict(scores) for name, scores in per_class.items()}
        self.confusion_matrix = (
            None if confusion_matrix is None else np.asarray(confusion_matrix, dtype=np.int64)
        )
        self.class_names = list(class_names)
        self.num_examples = int(num_examples)
        self.thresholds = None if thresholds is None else [float(t) for t in thresholds]
        self.calibration = (
            None if calibration is None else {k: list(v) for k, v in calibration.items()}
        )
        self.headline = headline or _HEADLINE.get(task) or next(iter(self.metrics), "")

    @property
    def _single_label(self) -> bool:
        """Whether the report has a (K, K) confusion matrix (multiclass / binary)."""
        return self.confusion_matrix is not None and self.confusion_matrix.ndim == 2

    # ------------------------------------------------------------------ API

    def most_confused(self, k: int = 5) -> list[tuple[str, str, int]]:
        """The ``k`` most frequent mistakes, largest first.

        Args:
            k: How many (true, predicted) pairs to return.

        Returns:
            A list of ``(true class name, predicted class name, count)`` for
            the off-diagonal confusion-matrix cells with a count > 0, sorted
            by count (ties by true, then predicted class index).

        Raises:
            EvaluationError: For multilabel and regression reports, which have
                no single-label confusion matrix.
            ArgumentTypeError: If ``k`` is not an int.

        Examples:
            >>> import numpy as np
            >>> from finetunekit.evaluation import Evaluator
            >>> y_prob = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7]])
            >>> report = Evaluator().compute(np.array([0, 1, 1]), y_prob, task="multiclass",
            ...                              class_names=["cat", "dog"])
            >>> report.most_confused()
            [('dog', 'cat', 1)]
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
            raise ArgumentTypeError(
                format_error(
                    "most_confused() needs an int k",
                    expected="an int >= 0",
                    received={"k": k},
                    fix="Pass e.g. k=5.",
                )
            )
        if not self._single_label or self.confusion_matrix is None:
            raise EvaluationError(
                format_error(
                    f"most_confused() needs a single-label classification report, but this "
                    f"report is for task '{self.task}'",
                    expected="task 'multiclass' or 'binary'",
                    received={"task": self.task},
                    fix="Use report.per_class (and report.confusion_matrix for multilabel) "
                    "instead.",
                )
            )
        matrix = self.confusion_matrix
        pairs = [
            (int(matrix[i, j]), i, j)
            for i in range(matrix.shape[0])
            for j in range(matrix.shape[1])
            if i != j and matrix[i, j] > 0
        ]
        pairs.sort(key=lambda item: (-item[0], item[1], item[2]))
        return [(self.class_names[i], self.class_names[j], count) for count, i, j in pairs[:k]]

    def to_dict(self) -> dict[str, Any]:
        """The report as plain, JSON-serialisable Python values.

        Returns:
            A dict with keys ``task``, ``num_examples``, ``class_names``,
            ``metrics``, ``per_class``, ``confusion_matrix`` (nested lists or
            ``None``), ``thresholds``, ``calibration`` (reliability bins or
            ``None``) and ``headline``.

        Examples:
            >>> import json
            >>> import numpy as np
            >>> from finetunekit.evaluation import Evaluator
            >>> report = Evaluator().compute(np.array([0, 1]), np.array([0.2, 0.9]),
            ...                              task="binary")
            >>> json.loads(json.dumps(report.to_dict()))["confusion_matrix"]
            [[1, 0], [0, 1]]
        """
        return {
            "task": self.task,
            "num_examples": self.num_examples,
            "class_names": list(self.class_names),
            "metrics": _plain(self.metrics),
            "per_class": _plain(self.per_class),
            "confusion_matrix": _plain(self.confusion_matrix),
            "thresholds": _plain(self.thresholds),
            "calibration": _plain(self.calibration),
            "headline": self.headline,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvaluationReport:
        """Rebuilds a report from :meth:`to_dict` output.

        Args:
            data: A dict as returned by :meth:`to_dict`.

        Returns:
            An equivalent ``EvaluationReport``.

        Raises:
            ArgumentTypeError: If ``data`` is not a dict.
            EvaluationError: If a required key is missing.

        Examples:
            >>> import numpy as np
            >>> from finetunekit.evaluation import Evaluator
            >>> report = Evaluator().compute(np.array([0, 1]), np.array([0.2, 0.9]),
            ...                              task="binary")
            >>> EvaluationReport.from_dict(report.to_dict()).to_dict() == report.to_dict()
            True
        """
        if not isinstance(data, dict):
            raise ArgumentTypeError(
                format_error(
                    "EvaluationReport.from_dict() needs a dict",
                    expected="the dict returned by EvaluationReport.to_dict()",
                    received={"data": data},
                )
            )
        required = ("task", "num_examples", "class_names", "metrics", "per_class")
        missing = [key for key in required if key not in data]
        if missing:
            raise EvaluationError(
                format_error(
                    f"The report dict is missing the keys {missing}",
                    expected=f"a dict with the keys {list(required)}",
                    received={"keys": sorted(data)},
                    fix="Pass the dict returned by EvaluationReport.to_dict().",
                )
            )
        matrix = data.get("confusion_matrix")
        return cls(
            task=data["task"],
            metrics=data["metrics"],
            per_class=data["per_class"],
            confusion_matrix=None if matrix is None else np.asarray(matrix, dtype=np.int64),
            class_names=data["class_names"],
            num_examples=data["num_examples"],
            thresholds=data.get("thresholds"),
            calibration=data.get("calibration"),
            headline=data.get("headline"),
        )

    # ------------------------------------------------------------- printing

    def __repr__(self) -> str:
        """A one-line summary, e.g. ``EvaluationReport(task='binary', num_examples=10, ...)``."""
        parts = [f"task={self.task!r}", f"num_examples={self.num_examples}"]
        if self.confusion_matrix is not None:
            parts.append(f"num_classes={len(self.class_names)}")
        for name in dict.fromkeys((self.headline, "loss")):
            if name in self.metrics:
                parts.append(f"{name}={self.metrics[name]:.4f}")
        return f"EvaluationReport({', '.join(parts)})"

    def __str__(self) -> str:
        """A readable report: headline metrics, per-class table and confusion matrix."""
        title = f"EvaluationReport: {self.task}, {self.num_examples} examples"
        binary = self._single_label and self.thresholds and len(self.thresholds) == 1
        if binary and len(self.class_names) == 2:
            assert self.thresholds is not None
            title += f" (positive: {self.class_names[1]!r} when prob >= {self.thresholds[0]:g})"
        lines = [title, ""]
        lines.append("Metrics")
        width = max((len(name) for name in self.metrics), default=0)
        for name, value in self.metrics.items():
            lines.append(f"  {name.ljust(width)}  {_number(value)}")
        lines += self._calibration_lines()
        if self.confusion_matrix is None:
            lines += self._values_lines()
        else:
            lines += self._per_class_lines()
            if self.confusion_matrix.ndim == 3:
                lines += self._multilabel_matrix_lines()
            else:
                lines += self._matrix_lines()
        return "\n".join(lines)

    def _calibration_lines(self) -> list[str]:
        """One line: the ECE and whether the model is over- or underconfident."""
        if not self.calibration or "ece" not in self.metrics:
            return []
        count = np.asarray(self.calibration["count"], dtype=np.float64)
        total = count.sum()
        if total == 0:
            return []
        confidence = float(np.sum(count * np.asarray(self.calibration["confidence"])) / total)
        accuracy = float(np.sum(count * np.asarray(self.calibration["accuracy"])) / total)
        gap = confidence - accuracy
        verdict = (
            "overconfident" if gap > 0.01 else "underconfident" if gap < -0.01 else "calibrated"
        )
        return [
            "",
            f"Calibration: ECE {self.metrics['ece']:.4f} over {len(count)} bins; mean "
            f"confidence {confidence:.4f} vs accuracy {accuracy:.4f} ({verdict})",
        ]

    def _per_class_lines(self) -> list[str]:
        """The per-class precision / recall / F1 / support table."""
        multilabel = self.confusion_matrix is not None and self.confusion_matrix.ndim == 3
        header = ["label" if multilabel else "class", "precision", "recall", "f1", "support"]
        if multilabel:
            header.append("threshold")
        names = list(self.per_class)
        note = None
        if len(names) > MAX_TABLE_CLASSES:
            order = {name: i for i, name in enumerate(names)}
            worst = sorted(names, key=lambda n: (self.per_class[n]["f1"], order[n]))
            shown = set(worst[:MAX_TABLE_CLASSES])
            names = [n for n in names if n in shown]
            note = (
                f"  (showing the {MAX_TABLE_CLASSES} classes with the lowest f1 of "
                f"{len(self.per_class)}; see report.per_class for all)"
            )
        rows = []
        for name in names:
            scores = self.per_class[name]
            row = [_cut(name, NAME_WIDTH)]
            row += [_number(scores[key]) for key in ("precision", "recall", "f1")]
            row.append(str(int(scores["support"])))
            if multilabel:
                row.append(f"{scores['threshold']:.2f}")
            rows.append(row)
        total_support = str(sum(int(s["support"]) for s in self.per_class.values()))
        averages = ("micro", "macro", "weighted") if multilabel else ("macro", "weighted")
        for average in averages:
            keys = [f"{metric}_{average}" for metric in ("precision", "recall", "f1")]
            if all(key in self.metrics for key in keys):
                row = [f"{average} avg", *(_number(self.metrics[key]) for key in keys)]
                row.append(total_support)
                if multilabel:
                    row.append("")
                rows.append(row)
        lines = ["", "Per-label scores" if multilabel else "Per-class scores"]
        lines += _table(header, rows)
        if note:
            lines.append(note)
        return lines

    def _matrix_lines(self) -> list[str]:
        """The confusion matrix, or the most confused pairs for many classes."""
        if self.confusion_matrix is None:
            return []
        k = len(self.class_names)
        if k > MAX_MATRIX_CLASSES:
            lines = [
                "",
                f"Confusion matrix: {k} classes, too many to show (see report.confusion_matrix).",
                "Most confused (true -> predicted: count)",
            ]
            pairs = self.most_confused(10)
            if not pairs:
                lines.append("  none: every example was classified correctly")
            width = max((len(_cut(t, NAME_WIDTH)) for t, _, _ in pairs), default=0)
            for true, pred, count in pairs:
                lines.append(
                    f"  {_cut(true, NAME_WIDTH).ljust(width)} -> {_cut(pred, NAME_WIDTH)}: {count}"
                )
            return lines
        header = ["true \\ predicted", *(_cut(n, MATRIX_NAME_WIDTH) for n in self.class_names)]
        rows = [
            [_cut(name, NAME_WIDTH), *(str(int(v)) for v in self.confusion_matrix[i])]
            for i, name in enumerate(self.class_names)
        ]
        return [
            "",
            "Confusion matrix (rows = true class, columns = predicted class)",
            *_table(header, rows),
        ]

    def _multilabel_matrix_lines(self) -> list[str]:
        """Per-label confusion counts (tp, fp, fn, tn) for multilabel reports."""
        if self.confusion_matrix is None:
            return []
        k = len(self.class_names)
        if k > MAX_MATRIX_CLASSES:
            return [
                "",
                f"Per-label confusion counts: {k} labels, too many to show (see "
                "report.confusion_matrix, shape (K, 2, 2) = [[tn, fp], [fn, tp]]).",
            ]
        rows = []
        for name, m in zip(self.class_names, self.confusion_matrix, strict=True):
            rows.append(
                [
                    _cut(name, NAME_WIDTH),
                    *(str(int(v)) for v in (m[1, 1], m[0, 1], m[1, 0], m[0, 0])),
                ]
            )
        return ["", "Per-label confusion counts", *_table(["label", "tp", "fp", "fn", "tn"], rows)]

    def _values_lines(self) -> list[str]:
        """The per-target table of reports without classes (e.g. multi-target regression)."""
        if not self.per_class:
            return []
        header = ["target", *next(iter(self.per_class.values()))]
        rows = [
            [_cut(name, NAME_WIDTH), *(_number(scores[key]) for key in header[1:])]
            for name, scores in self.per_class.items()
        ]
        return ["", "Per-target scores", *_table(header, rows)]
