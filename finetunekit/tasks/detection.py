"""The ``detection`` task: boxes and classes of the objects in an image.

What exists now: the data (``DatasetAdapter.from_detection``, ``from_coco``,
``from_voc``; :mod:`finetunekit.data.detection`) and the evaluation (COCO
mAP; :mod:`finetunekit.evaluation.detection`). The detector model -- its
head, anchors, loss and training -- is not built yet (issue 15): the hooks of
steps 3 and 4 raise a :class:`~finetunekit.ConfigError` / :class:`~finetunekit.HeadError`
that says so, before anything is built.

Stored targets (``data.targets()``): float32 ``(N, M, 5)``, per image ``M``
rows ``x1, y1, x2, y2, class`` (absolute pixels of that image), padding rows
``-1``. Batch targets (:meth:`Detection.batch_targets`): a dict
``{"boxes": float32 (B, M, 4), "labels": int32 (B, M)}`` (padding ``-1``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn

import numpy as np

from finetunekit.checks import check_int
from finetunekit.errors import (
    ConfigError,
    EvaluationError,
    FineTuneError,
    HeadError,
    LabelError,
    format_error,
)
from finetunekit.tasks.base import Task, _no_thresholds

if TYPE_CHECKING:  # pragma: no cover - typing only
    from finetunekit.evaluation.report import EvaluationReport
    from finetunekit.tasks.labels import LabelEncoding

__all__ = ["Detection"]

_NOT_BUILT = (
    "Detection training is not built yet (issue 15): finetunekit has the detection data and "
    "the COCO evaluation, not the detector model"
)
#: keys of a model's prediction dict, KerasHub's object detectors' names first
_SCORE_KEYS = ("confidence", "scores")
_LABEL_KEYS = ("labels", "classes")


def _not_built(error: type[FineTuneError], what: str, received: dict[str, Any]) -> NoReturn:
    raise error(
        format_error(
            f"{_NOT_BUILT}; {what} needs it",
            expected="a task whose model exists (classification, regression, embedding)",
            received=received,
            fix="Train a detector with KerasHub yourself and score its predictions with "
            "finetunekit.evaluation.detection.detection_report (see docs/detection.md)",
        )
    )


class Detection(Task):
    """Objects in images: boxes (absolute ``xyxy`` pixels) with a class each.

    Build the data with ``DatasetAdapter.from_detection``, ``from_coco`` or
    ``from_voc``. ``num_classes`` and ``class_names`` are the object
    classes; ``class_counts()`` counts boxes.

    Args:
        max_detections: detections per image and class that the evaluation
            keeps (COCO's 100); also the last recall limit (``mar_100``).

    Examples:
        >>> import numpy as np, finetunekit as ftk
        >>> data = ftk.DatasetAdapter.from_detection(
        ...     np.zeros((2, 32, 32, 3), "uint8"), [[[2, 2, 10, 12]], []], [[1], []],
        ...     class_names=["cat", "dog"])
        >>> data.task, data.num_classes, data.class_counts()
        ('detection', 2, {'cat': 0, 'dog': 1})
    """

    name: ClassVar[str] = "detection"
    has_classes: ClassVar[bool] = True
    single_label: ClassVar[bool] = False
    headline_metric: ClassVar[str] = "map"

    def __init__(self, max_detections: int = 100) -> None:
        self.max_detections = check_int(
            "max_detections", max_detections, minimum=1, error=ConfigError
        )

    def get_config(self) -> dict[str, Any]:
        """The settings, JSON-serialisable."""
        return {"max_detections": self.max_detections}

    # ------------------------------------------------------------------ step 1: targets
    def encode(
        self,
        y: Any,
        *,
        class_names: list[str] | None = None,
        name: str = "y",
        check_single_class: bool | None = None,
    ) -> tuple[np.ndarray, LabelEncoding]:
        """Refuses plain labels: detection targets come with their images' sizes.

        Raises:
            LabelError: always; use ``DatasetAdapter.from_detection``.
        """
        raise LabelError(
            format_error(
                "Detection targets are boxes per image, not one label per example",
                expected="DatasetAdapter.from_detection(images, boxes, labels), from_coco or "
                "from_voc",
                received={
                    name: y if np.asarray(y, dtype=object).size <= 10 else "labels",
                    "task": self.name,
                },
                fix="Build detection data with DatasetAdapter.from_detection",
            )
        )

    def check_targets(self, y: np.ndarray, name: str = "y") -> None:
        """Checks stored detection targets ``(N, M, 5)``: padding rows, boxes, classes.

        Raises:
            LabelError: another shape, a padding row inside an image's boxes,
                a box with ``x2 <= x1`` or ``y2 <= y1``, or a negative
                coordinate or class.

        Examples:
            >>> Detection().check_targets(np.array([[[0, 0, 4, 4, 0]]], "float32"))
        """
        arr = np.asarray(y)
        if arr.ndim != 3 or arr.shape[2] != 5:
            raise LabelError(
                format_error(
                    f"Detection targets of shape {arr.shape}",
                    expected="(N, M, 5): x1, y1, x2, y2, class per box; -1 rows for padding",
                    received={name: arr},
                )
            )
        real = arr[..., 4] >= 0
        pad_ok = (arr[~real] == -1).all()
        in_order = (np.diff(real.astype(np.int8), axis=1) <= 0).all()  # boxes first, then padding
        boxes = arr[real]
        valid = (
            (boxes[:, :4] >= 0).all()
            and (boxes[:, 2] > boxes[:, 0]).all()
            and (boxes[:, 3] > boxes[:, 1]).all()
            and (boxes[:, 4] == np.round(boxes[:, 4])).all()
        )
        if not (pad_ok and in_order and valid):
            raise LabelError(
                format_error(
                    "Detection targets hold a malformed row",
                    expected="rows x1, y1, x2, y2, class with 0 <= x1 < x2 and 0 <= y1 < y2 and "
                    "an integer class, then rows of -1",
                    received={name: arr},
                )
            )

    def num_classes(self, encoding: LabelEncoding) -> int | None:
        return len(encoding.class_names)

    def target_dim(self, encoding: LabelEncoding) -> int:
        """The padded box count ``M`` (rows of the batch targets)."""
        return int(encoding.target_shape[0]) if encoding.target_shape else 0

    def batch_targets(self, stored: Any, encoding: LabelEncoding) -> Any:
        """``{"boxes": float32 (B, M, 4), "labels": int32 (B, M)}`` from stored ``(B, M, 5)``."""
        import tensorflow as tf

        values = tf.cast(stored, tf.float32)
        return {"boxes": values[..., :4], "labels": tf.cast(values[..., 4], tf.int32)}

    def class_counts(self, targets: np.ndarray, class_names: list[str]) -> dict[str, int]:
        """BOXES per class (not images), in class order."""
        labels = np.asarray(targets)[..., 4].reshape(-1)
        labels = labels[labels >= 0].astype(np.int64)
        counts = np.bincount(labels, minlength=len(class_names))
        return {n: int(c) for n, c in zip(class_names, counts, strict=True)}

    # ------------------------------------------------------------------ steps 3-4: not built
    def size(self, encoding: LabelEncoding) -> int:
        return len(encoding.class_names)

    def output_layer(self, x: Any, units: int, *, activation: str | None = None) -> Any:
        _not_built(HeadError, "the detection head", {"task": self.name})

    def loss(self, *, label_smoothing: float = 0.0, target_std: list[float] | None = None) -> Any:
        _not_built(HeadError, "the detection loss", {"task": self.name})

    def metrics(self, num_classes: int | None) -> list[Any]:
        _not_built(HeadError, "training metrics", {"task": self.name})

    def check_recipe(self, train: Any, validation: Any, *, head: Any, trainer: Any) -> None:
        """Raises :class:`~finetunekit.ConfigError`: the detector is not built yet."""
        _not_built(ConfigError, "FineTuner.fit on detection data", {"data": train})

    def training_model(self, built: Any, train: Any) -> Any:
        _not_built(HeadError, "the training model", {"task": self.name})

    # ------------------------------------------------------------------ results
    def expected_widths(
        self, class_names: list[str], y_true: np.ndarray
    ) -> tuple[set[int], str] | None:
        return None

    def evaluate_model(
        self, model: Any, data: Any, *, evaluator: Any, thresholds: Any = None
    ) -> EvaluationReport | None:
        """COCO metrics of a detector's predictions on detection ``data``.

        ``model.predict`` runs once on ``data.inputs_dataset`` (batches of
        images, padded at the bottom and right to the batch's largest size)
        and must return a dict as KerasHub's object detectors do: ``boxes``
        ``(N, K, 4)`` absolute ``xyxy`` in the input's pixels, ``confidence``
        (or ``scores``) ``(N, K)``, ``labels`` (or ``classes``) ``(N, K)``,
        and optionally ``num_detections`` ``(N,)``; entries beyond
        ``num_detections`` or with label ``-1`` are padding.

        Raises:
            EvaluationError: the model's output is not such a dict.
        """
        _no_thresholds(self.name, thresholds)
        from finetunekit.evaluation.detection import detection_report

        try:
            out = model.predict(data.inputs_dataset(evaluator.batch_size), verbose=0)
        except FineTuneError:
            raise
        except Exception as error:
            first = (str(error).strip().splitlines() or [""])[0][:300]
            raise EvaluationError(
                format_error(
                    f"The model failed to predict on the images ({type(error).__name__}: {first})",
                    expected="a detector taking batches of images (B, H, W, C)",
                    received={"model": type(model).__name__},
                )
            ) from error
        predictions = self.predictions_from_outputs(out, len(data))
        return detection_report(
            predictions,
            data.targets(),
            class_names=data.class_names,
            max_detections=self.max_detections,
        )

    @staticmethod
    def predictions_from_outputs(outputs: Any, n: int) -> list[dict[str, np.ndarray]]:
        """Per-image ``{"boxes", "scores", "labels"}`` from a detector's padded output dict.

        Examples:
            >>> out = {"boxes": np.zeros((1, 2, 4)), "confidence": np.array([[0.9, 0.0]]),
            ...        "labels": np.array([[3, -1]]), "num_detections": np.array([1])}
            >>> [p["labels"].tolist() for p in Detection.predictions_from_outputs(out, 1)]
            [[3]]
        """

        def pick(keys: tuple[str, ...]) -> Any:
            return next((outputs[k] for k in keys if k in outputs), None)

        scores = pick(_SCORE_KEYS) if isinstance(outputs, Mapping) else None
        labels = pick(_LABEL_KEYS) if isinstance(outputs, Mapping) else None
        boxes = outputs.get("boxes") if isinstance(outputs, Mapping) else None
        shapes_ok = (
            boxes is not None
            and scores is not None
            and labels is not None
            and np.ndim(boxes) == 3
            and np.shape(boxes)[0] == n
            and np.shape(boxes)[2] == 4
            and np.shape(scores) == np.shape(boxes)[:2]
            and np.shape(labels) == np.shape(boxes)[:2]
        )
        if not shapes_ok:
            shown = (
                {k: np.shape(v) for k, v in outputs.items()}
                if isinstance(outputs, Mapping)
                else type(outputs).__name__
            )
            raise EvaluationError(
                format_error(
                    "The detector's output is not a dict of padded detections",
                    expected=f'{{"boxes": ({n}, K, 4), "confidence": ({n}, K), "labels": '
                    f'({n}, K), optional "num_detections": ({n},)}}',
                    received={"outputs": shown},
                    fix="Return decoded detections (KerasHub's detectors do after their "
                    "prediction decoder)",
                )
            )
        boxes_np = np.asarray(boxes, np.float64)
        scores_np = np.asarray(scores, np.float64)
        labels_np = np.asarray(labels)
        count = (
            np.asarray(outputs["num_detections"]).reshape(-1)
            if "num_detections" in outputs
            else np.full(n, boxes_np.shape[1])
        )
        result = []
        for i in range(n):
            keep = (np.arange(boxes_np.shape[1]) < count[i]) & (labels_np[i] >= 0)
            result.append(
                {
                    "boxes": boxes_np[i][keep],
                    "scores": scores_np[i][keep],
                    "labels": labels_np[i][keep].astype(np.int64),
                }
            )
        return result

    def evaluate(
        self,
        y_true: np.ndarray,
        y_pred: np.ndarray,
        *,
        class_names: list[str] | None,
        evaluator: Any,
        thresholds: Any = None,
    ) -> EvaluationReport:
        """Refuses flat arrays: detections are per-image lists (see ``detection_report``)."""
        raise EvaluationError(
            format_error(
                "Detection predictions are boxes per image, not one array row per example",
                expected="finetunekit.evaluation.detection.detection_report(predictions, "
                "ground_truth) with one dict per image",
                received={"task": self.name, "y_pred": y_pred},
                fix="Call detection_report, or Evaluator().evaluate(detector, data)",
            )
        )
