"""The built-in classification tasks: ``multiclass``, ``binary`` and ``multilabel``.

| task | stored targets | batch targets | output | loss |
| --- | --- | --- | --- | --- |
| multiclass | int64 class indices (N,) | one-hot (B, K) | softmax (K) | categorical cross-entropy |
| binary | int64 in {0, 1} (N,) | (B, 1) | sigmoid (1): P(class_names[1]) | binary cross-entropy |
| multilabel | float32 multi-hot (N, K) | (B, K) | sigmoid (K) | binary cross-entropy |
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from finetunekit.errors import EvaluationError, format_error
from finetunekit.evaluation import checks as _c
from finetunekit.tasks.base import Task

if TYPE_CHECKING:  # pragma: no cover - typing only
    from finetunekit.evaluation.report import EvaluationReport
    from finetunekit.tasks.labels import LabelEncoding

__all__ = ["Binary", "ClassificationTask", "Multiclass", "Multilabel"]


class ClassificationTask(Task):
    """What the three built-in classification tasks share (not registered itself).

    Targets are classes: ``class_names``, ``class_counts()``, label smoothing
    of the cross-entropy loss.
    """

    has_classes: ClassVar[bool] = True
    unit: ClassVar[str] = "classes"  # what one output unit stands for, in messages

    def encode(
        self,
        y: Any,
        *,
        class_names: list[str] | None = None,
        name: str = "y",
        check_single_class: bool | None = None,
    ) -> tuple[np.ndarray, LabelEncoding]:
        """Reads class labels (ints, strings, bools, one-hot or multi-hot rows)."""
        from finetunekit.tasks.labels import encode_labels

        return encode_labels(
            y,
            task=self.name,
            class_names=class_names,
            name=name,
            check_single_class=check_single_class,
        )

    def target_dim(self, encoding: LabelEncoding) -> int:
        return len(encoding.class_names)

    def class_counts(self, targets: np.ndarray, class_names: list[str]) -> dict[str, int]:
        """Examples per class, in class order."""
        counts = np.bincount(targets, minlength=len(class_names))
        return {n: int(c) for n, c in zip(class_names, counts, strict=True)}

    def metrics(self, num_classes: int | None) -> list[Any]:
        import keras

        return [keras.metrics.BinaryAccuracy(name="accuracy")]

    def expected_widths(
        self, class_names: list[str], y_true: np.ndarray
    ) -> tuple[set[int], str] | None:
        return ({len(class_names)}, self.unit) if class_names else None

    def describe_output(self, want: int) -> str:
        """The expected output, for messages."""
        return f"predictions of shape (N, {want}) ({self.activation} probabilities)"

    def width_error(
        self, got: int, want: int, names: list[str] | None, received: dict[str, Any]
    ) -> EvaluationError:
        """The error for a model output width that does not fit the data."""
        shown = f" {_c.names_text(names)}" if names else ""
        what = f"The model predicts {got} {self.unit} but the data has {want} {self.unit}{shown}"
        fix = (
            f"Use a model whose output layer has {_c.plural(want, 'unit')} "
            f"(e.g. HeadReplacer(num_classes={want})), or evaluate on data with the "
            f"classes the model was trained on"
        )
        if got > want:
            fix += (
                f"; if the test data lacks some of the model's classes, pass all {got} "
                f"names in order as class_names= to evaluate()"
            )
        return EvaluationError(
            format_error(what, expected=self.describe_output(want), received=received, fix=fix)
        )


class Multiclass(ClassificationTask):
    """One of ``K`` classes per example: softmax output, categorical cross-entropy.

    Examples:
        >>> from finetunekit import tasks
        >>> task = tasks.get("multiclass")
        >>> type(task.loss(label_smoothing=0.1)).__name__, task.activation
        ('CategoricalCrossentropy', 'softmax')
    """

    name: ClassVar[str] = "multiclass"
    activation: ClassVar[str] = "softmax"
    single_label: ClassVar[bool] = True
    headline_metric: ClassVar[str] = "accuracy"

    def batch_targets(self, stored: Any, encoding: LabelEncoding) -> Any:
        import tensorflow as tf

        return tf.one_hot(tf.cast(stored, tf.int64), len(encoding.class_names), dtype=tf.float32)

    def loss(self, *, label_smoothing: float = 0.0, target_std: list[float] | None = None) -> Any:
        import keras

        return keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing)

    def metrics(self, num_classes: int | None) -> list[Any]:
        import keras

        metrics: list[Any] = [keras.metrics.CategoricalAccuracy(name="accuracy")]
        if num_classes and num_classes > 5:
            metrics.append(keras.metrics.TopKCategoricalAccuracy(k=5, name="top_5_accuracy"))
        return metrics

    def decide(self, outputs: np.ndarray, threshold: float = 0.5) -> np.ndarray | None:
        return np.asarray(outputs).argmax(-1)

    def predict_labels(
        self, outputs: np.ndarray, class_names: list[str], threshold: float = 0.5
    ) -> list[Any]:
        return [class_names[int(i)] for i in np.asarray(outputs).argmax(-1)]

    def evaluate(
        self,
        y_true: np.ndarray,
        y_pred: np.ndarray,
        *,
        class_names: list[str] | None,
        evaluator: Any,
        thresholds: Any = None,
    ) -> EvaluationReport:
        from finetunekit.evaluation import calibration as _cal
        from finetunekit.evaluation import metrics as _m
        from finetunekit.evaluation.report import EvaluationReport
        from finetunekit.tasks.base import _no_thresholds

        _no_thresholds(self.name, thresholds)
        names = class_names
        if y_pred.ndim != 2:
            want = len(names) if names is not None else "K"
            raise EvaluationError(
                format_error(
                    "The model predicts one value per example, but multiclass evaluation "
                    "needs one probability per class",
                    expected=f"predictions of shape (N, {want}) (softmax probabilities)",
                    received={"y_pred": y_pred},
                    fix="Use a softmax output layer with one unit per class, or pass "
                    "task='binary' for two-class data.",
                )
            )
        k = y_pred.shape[1]
        if names is not None and k != len(names):
            raise self.width_error(k, len(names), names, {"y_pred": y_pred})
        if k < 2:
            raise EvaluationError(
                format_error(
                    "Multiclass evaluation needs at least 2 classes",
                    expected="predictions of shape (N, K) with K >= 2",
                    received={"y_pred": y_pred},
                    fix="Pass task='binary' or 'regression' for a single output.",
                )
            )
        names = _c.default_names(names, k)
        y_true = _c.class_indices(y_true, k, names)
        y_prob = _c.check_probabilities(y_pred, "softmax")
        y_hat = np.argmax(y_prob, axis=1)
        metrics: dict[str, float] = {
            "loss": _m.categorical_cross_entropy(y_true, y_prob),
            "accuracy": _m.accuracy(y_true, y_hat),
        }
        top_k = evaluator.top_k
        if k > top_k:
            metrics[f"top_{top_k}_accuracy"] = _m.top_k_accuracy(y_true, y_prob, top_k)
        metrics, per_class, matrix = _c.single_label_scores(y_true, y_hat, names, metrics)
        calibration = _cal.reliability_bins(y_true, y_prob)
        metrics["ece"] = _cal.ece_from_bins(calibration)
        return EvaluationReport(
            task=self.name,
            metrics=metrics,
            per_class=per_class,
            confusion_matrix=matrix,
            class_names=names,
            num_examples=len(y_true),
            calibration=calibration,
            headline=self.headline_metric,
        )


class Binary(ClassificationTask):
    """Two classes: one sigmoid output, the probability of ``class_names[1]``.

    Examples:
        >>> from finetunekit import tasks
        >>> import tensorflow as tf
        >>> _, enc = tasks.get("binary").encode(["no", "yes", "no"])
        >>> tasks.get("binary").batch_targets(tf.constant([1, 0]), enc).numpy().tolist()
        [[1.0], [0.0]]
    """

    name: ClassVar[str] = "binary"
    activation: ClassVar[str] = "sigmoid"
    single_label: ClassVar[bool] = True
    headline_metric: ClassVar[str] = "accuracy"

    def target_dim(self, encoding: LabelEncoding) -> int:
        return 1

    def output_units(self, size: int) -> int:
        return 1  # the probability of class_names[1]

    def batch_targets(self, stored: Any, encoding: LabelEncoding) -> Any:
        import tensorflow as tf

        return tf.reshape(tf.cast(stored, tf.float32), (-1, 1))

    def loss(self, *, label_smoothing: float = 0.0, target_std: list[float] | None = None) -> Any:
        import keras

        return keras.losses.BinaryCrossentropy(label_smoothing=label_smoothing)

    def decide(self, outputs: np.ndarray, threshold: float = 0.5) -> np.ndarray | None:
        out = np.asarray(outputs)
        if out.ndim == 2 and out.shape[1] == 2:
            return out.argmax(-1)
        return (out.reshape(len(out)) >= threshold).astype(np.int64)

    def predict_labels(
        self, outputs: np.ndarray, class_names: list[str], threshold: float = 0.5
    ) -> list[Any]:
        decided = self.decide(outputs, threshold)
        assert decided is not None
        return [class_names[int(d)] for d in decided]

    def expected_widths(
        self, class_names: list[str], y_true: np.ndarray
    ) -> tuple[set[int], str] | None:
        return {1, 2}, "classes"

    def describe_output(self, want: int) -> str:
        return "predictions of shape (N,), (N, 1) (sigmoid) or (N, 2) (softmax)"

    def width_error(
        self, got: int, want: int, names: list[str] | None, received: dict[str, Any]
    ) -> EvaluationError:
        shown = f" {_c.names_text(names)}" if names else ""
        return EvaluationError(
            format_error(
                f"The model predicts {got} classes but the data is binary (2 classes{shown})",
                expected=self.describe_output(want),
                received=received,
                fix="Use a model with one sigmoid output (or two softmax outputs) for binary "
                "data, or pass task='multiclass' with the model's class_names.",
            )
        )

    def evaluate(
        self,
        y_true: np.ndarray,
        y_pred: np.ndarray,
        *,
        class_names: list[str] | None,
        evaluator: Any,
        thresholds: Any = None,
    ) -> EvaluationReport:
        from finetunekit.evaluation import calibration as _cal
        from finetunekit.evaluation import metrics as _m
        from finetunekit.evaluation.report import EvaluationReport

        names = class_names
        if names is not None and len(names) != 2:
            raise EvaluationError(
                format_error(
                    f"Binary data needs exactly 2 class names, got {len(names)}",
                    expected="class_names=[negative name, positive name]",
                    received={"class_names": names},
                    fix="Pass two names, or task='multiclass' for more classes.",
                )
            )
        names = _c.default_names(names, 2)
        if isinstance(thresholds, Mapping):
            raise EvaluationError(
                format_error(
                    "Binary data takes a single threshold, not a dict",
                    expected=f"one float: the threshold on the probability of '{names[1]}'",
                    received={"thresholds": dict(thresholds)},
                    fix="Pass e.g. thresholds=0.3.",
                )
            )
        if y_pred.ndim == 2:
            if y_pred.shape[1] == 2:
                y_pred = y_pred[:, 1]  # two-column softmax: probability of class 1
            elif y_pred.shape[1] == 1:
                y_pred = y_pred[:, 0]
            else:
                raise self.width_error(y_pred.shape[1], 2, names, {"y_pred": y_pred})
        y_true = _c.class_indices(y_true, 2, names)
        y_prob = _c.check_probabilities(y_pred, "sigmoid")
        threshold = float(
            _c.resolve_thresholds(thresholds, names, "binary", evaluator.threshold)[0]
        )
        y_hat = (y_prob >= threshold).astype(np.int64)
        metrics: dict[str, float] = {
            "loss": _m.binary_cross_entropy(y_true, y_prob),
            "accuracy": _m.accuracy(y_true, y_hat),
        }
        auc = _m.roc_auc(y_true, y_prob)
        if auc is not None:
            metrics["roc_auc"] = auc
        tp = float(np.sum((y_true == 1) & (y_hat == 1)))
        fp = float(np.sum((y_true == 0) & (y_hat == 1)))
        fn = float(np.sum((y_true == 1) & (y_hat == 0)))
        p, r, f = _m.precision_recall_f1(np.array([tp]), np.array([fp]), np.array([fn]))
        metrics.update(precision=float(p[0]), recall=float(r[0]), f1=float(f[0]))
        metrics, per_class, matrix = _c.single_label_scores(y_true, y_hat, names, metrics)
        calibration = _cal.reliability_bins(y_true, y_prob)
        metrics["ece"] = _cal.ece_from_bins(calibration)
        return EvaluationReport(
            task=self.name,
            metrics=metrics,
            per_class=per_class,
            confusion_matrix=matrix,
            class_names=names,
            num_examples=len(y_true),
            thresholds=[threshold],
            calibration=calibration,
            headline=self.headline_metric,
        )


class Multilabel(ClassificationTask):
    """Any subset of ``K`` labels per example: sigmoid outputs, binary cross-entropy.

    Examples:
        >>> from finetunekit import tasks
        >>> [m.name for m in tasks.get("multilabel").metrics(3)]
        ['binary_accuracy', 'auc']
    """

    name: ClassVar[str] = "multilabel"
    activation: ClassVar[str] = "sigmoid"
    headline_metric: ClassVar[str] = "f1_micro"
    unit: ClassVar[str] = "labels"

    def batch_targets(self, stored: Any, encoding: LabelEncoding) -> Any:
        import tensorflow as tf

        return tf.cast(stored, tf.float32)

    def class_counts(self, targets: np.ndarray, class_names: list[str]) -> dict[str, int]:
        """Examples carrying each label."""
        counts = (targets > 0.5).sum(axis=0)
        return {n: int(c) for n, c in zip(class_names, counts, strict=True)}

    def loss(self, *, label_smoothing: float = 0.0, target_std: list[float] | None = None) -> Any:
        import keras

        return keras.losses.BinaryCrossentropy(label_smoothing=label_smoothing)

    def metrics(self, num_classes: int | None) -> list[Any]:
        import keras

        return [
            keras.metrics.BinaryAccuracy(name="binary_accuracy"),
            keras.metrics.AUC(multi_label=True, name="auc"),
        ]

    def decide(self, outputs: np.ndarray, threshold: float = 0.5) -> np.ndarray | None:
        return (np.asarray(outputs) >= threshold).astype(np.int64)

    def predict_labels(
        self, outputs: np.ndarray, class_names: list[str], threshold: float = 0.5
    ) -> list[Any]:
        return [
            [c for c, p in zip(class_names, row, strict=True) if p >= threshold]
            for row in np.asarray(outputs)
        ]

    def evaluate(
        self,
        y_true: np.ndarray,
        y_pred: np.ndarray,
        *,
        class_names: list[str] | None,
        evaluator: Any,
        thresholds: Any = None,
    ) -> EvaluationReport:
        from finetunekit.evaluation import metrics as _m
        from finetunekit.evaluation.report import EvaluationReport

        names = class_names
        if y_true.ndim != 2:
            raise EvaluationError(
                format_error(
                    "Multilabel targets must be multi-hot rows",
                    expected="y_true of shape (N, K) holding 0/1",
                    received={"y_true": y_true},
                    fix="Pass DatasetAdapter.targets() of a multilabel adapter.",
                )
            )
        k = y_true.shape[1]
        if names is not None and len(names) != k:
            raise EvaluationError(
                format_error(
                    f"y_true has {k} label columns but class_names has {len(names)} names",
                    expected=f"{k} class names",
                    received={"class_names": names},
                )
            )
        names = _c.default_names(names, k)
        if y_pred.ndim != 2 or y_pred.shape[1] != k:
            got = 1 if y_pred.ndim == 1 else y_pred.shape[1]
            raise self.width_error(got, k, names, {"y_pred": y_pred})
        if not np.all((y_true == 0) | (y_true == 1)):
            raise EvaluationError(
                format_error(
                    "Multilabel targets must be 0 or 1",
                    expected="a multi-hot array of 0/1",
                    received={"y_true": y_true},
                )
            )
        y_true = y_true.astype(np.int64)
        y_prob = _c.check_probabilities(y_pred, "sigmoid")
        per_label = _c.resolve_thresholds(thresholds, names, "multilabel", evaluator.threshold)
        y_hat = (y_prob >= per_label[None, :]).astype(np.int64)
        matrices = _m.multilabel_confusion_matrices(y_true, y_hat)
        tp, fp, fn = matrices[:, 1, 1], matrices[:, 0, 1], matrices[:, 1, 0]
        precision, recall, f1 = _m.precision_recall_f1(tp, fp, fn)
        averages = _m.average_scores(tp, fp, fn, micro=True)
        metrics: dict[str, float] = {
            "loss": _m.binary_cross_entropy(y_true, y_prob),
            "subset_accuracy": float(np.mean(np.all(y_true == y_hat, axis=1))),
            "hamming_loss": float(np.mean(y_true != y_hat)),
        }
        for average in ("micro", "macro", "weighted"):
            for metric in ("precision", "recall", "f1"):
                metrics[f"{metric}_{average}"] = averages[f"{metric}_{average}"]
        per_class = {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(tp[i] + fn[i]),
                "threshold": float(per_label[i]),
            }
            for i, name in enumerate(names)
        }
        return EvaluationReport(
            task=self.name,
            metrics=metrics,
            per_class=per_class,
            confusion_matrix=matrices,
            class_names=names,
            num_examples=len(y_true),
            thresholds=[float(t) for t in per_label],
            headline=self.headline_metric,
        )
