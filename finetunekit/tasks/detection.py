"""The ``detection`` task: boxes and classes of the objects in an image.

The data: ``DatasetAdapter.from_detection``, ``from_coco``, ``from_voc``
(:mod:`finetunekit.data.detection`). The model: a RetinaNet on any image
``Backbone`` (:mod:`finetunekit.tasks.detection_build` chooses the image
size and anchors from the training boxes; :mod:`finetunekit.heads.detector`
is the model). The evaluation: COCO mAP (:mod:`finetunekit.evaluation.detection`).

Stored targets (``data.targets()``): float32 ``(N, M, 5)``, per image ``M``
rows ``x1, y1, x2, y2, class`` (absolute pixels of that image), padding rows
``-1``. Batch targets (:meth:`Detection.batch_targets`): a dict
``{"boxes": float32 (B, M, 4), "labels": int32 (B, M)}`` (padding ``-1``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

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

#: keys of a model's prediction dict, KerasHub's object detectors' names first
_SCORE_KEYS = ("confidence", "scores")
_LABEL_KEYS = ("labels", "classes")


def _fraction(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ConfigError(
            format_error(
                f"{name} must be a number in [0, 1)",
                expected="e.g. 0.05 (scores) or 0.5 (IoU)",
                received={name: value},
            )
        )
    return float(value)


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
    #: Adam at 1e-2 throws RetinaNet heads off in the first steps (measured in docs/detection.md)
    default_learning_rate: ClassVar[float] = 1e-3

    def __init__(
        self,
        max_detections: int = 100,
        *,
        image_size: int | None = None,
        score_threshold: float = 0.05,
        iou_threshold: float = 0.5,
        filters: int = 128,
        head_convs: int = 2,
    ) -> None:
        self.max_detections = check_int(
            "max_detections", max_detections, minimum=1, error=ConfigError
        )
        self.image_size = (
            None
            if image_size is None
            else check_int("image_size", image_size, minimum=32, error=ConfigError)
        )
        self.score_threshold = _fraction("score_threshold", score_threshold)
        self.iou_threshold = _fraction("iou_threshold", iou_threshold)
        self.filters = check_int("filters", filters, minimum=1, error=ConfigError)
        self.head_convs = check_int("head_convs", head_convs, minimum=0, error=ConfigError)

    def get_config(self) -> dict[str, Any]:
        """The settings, JSON-serialisable."""
        return {
            "max_detections": self.max_detections,
            "image_size": self.image_size,
            "score_threshold": self.score_threshold,
            "iou_threshold": self.iou_threshold,
            "filters": self.filters,
            "head_convs": self.head_convs,
        }

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

    # ------------------------------------------------------------------ steps 2-4: the detector
    def size(self, encoding: LabelEncoding) -> int:
        return len(encoding.class_names)

    def output_layer(self, x: Any, units: int, *, activation: str | None = None) -> Any:
        raise HeadError(
            format_error(
                "A detector has no single output layer",
                expected="FineTuner.fit on detection data (the task builds RetinaNet heads)",
                received={"task": self.name},
                fix="Fit through FineTuner; Detection.build_model makes the whole model",
            )
        )

    def loss(self, *, label_smoothing: float = 0.0, target_std: list[float] | None = None) -> Any:
        return None  # the Detector computes its own (focal + Huber over matched anchors)

    def metrics(self, num_classes: int | None) -> list[Any]:
        return []  # mAP is computed by evaluate(), not per batch

    def check_recipe(self, train: Any, validation: Any, *, head: Any, trainer: Any) -> None:
        """Refuses settings that have no meaning for a detector, before anything is built."""
        from finetunekit.tasks.detection_build import check_detection_recipe

        check_detection_recipe(self, train, head=head, trainer=trainer)

    def build_model(self, backbone: Any, train: Any, *, head: Any, trainer: Any, units: int) -> Any:
        """The :class:`~finetunekit.heads.detector.Detector` for ``train`` (see ``detection_build``)."""
        from finetunekit.tasks.detection_build import build_detector

        return build_detector(self, backbone, train)

    def register_objects(self) -> None:
        """Registers the detector's classes (``Detector``, its heads) before a load."""
        from finetunekit.heads.detector import register_objects

        register_objects()

    def training_batches(self, dataset: Any, *, trainer: Any, training: bool) -> Any:
        """Box-aware augmentation of the training batches (``Trainer(augment=...)``)."""
        if not training or trainer.augment is None:
            return dataset
        from finetunekit.tasks.detection_build import augment_batches

        return augment_batches(dataset, trainer.augment, seed=trainer.seed)

    # ------------------------------------------------------------------ results
    def predict_model(
        self,
        model: Any,
        x: Any,
        *,
        batch_size: int = 16,
        class_names: list[str] | None = None,
    ) -> list[dict[str, Any]]:
        """What ``result.predict(images)`` returns: one dict per image.

        ``images``: an array ``(N, H, W, C)`` or a list of ``(H, W, C)``
        arrays of any sizes. Each dict has ``boxes`` (float32 ``(k, 4)``
        ``xyxy`` in that image's pixels), ``scores``, ``labels`` (class
        indices) and ``classes`` (names), best first; detections below the
        task's ``score_threshold`` are left out.
        """
        from finetunekit.heads.detector import predict_images

        return predict_images(model, x, batch_size=batch_size, class_names=class_names)

    def export_result(
        self,
        result: Any,
        path: str,
        format: str,
        *,
        quantize: str | None,
        sample: Any,
        tolerance: float | None,
    ) -> Any:
        """SavedModel: raw images in, decoded boxes out; LiteRT / ONNX: the raw network.

        See :func:`finetunekit.heads.detector_export.export_detector`.

        Raises:
            ExportError: ``quantize="int8"`` or ``format="transformers"``.
        """
        from finetunekit.errors import ExportError
        from finetunekit.heads.detector_export import export_detector

        if quantize == "int8" or format == "transformers":
            raise ExportError(
                format_error(
                    f"A detector does not export with format={format!r}, quantize={quantize!r}",
                    expected="format 'saved_model', 'litert', 'onnx' or 'keras'; quantize None "
                    "or 'dynamic'",
                    received={"format": format, "quantize": quantize},
                    fix="Pass format='saved_model', or quantize='dynamic' for LiteRT",
                )
            )
        return export_detector(
            result, path, format, quantize=quantize, sample=sample, tolerance=tolerance
        )

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
