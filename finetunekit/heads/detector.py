"""The detector model: raw images in, boxes in those images' pixels out.

:class:`Detector` is a ``keras.Model`` around one functional network
(:func:`detector_network`):

    raw images (B, H, W, C), any size and dtype
      -> :class:`Letterbox` to S x S (aspect ratio kept, padded at the bottom and right)
      -> the backbone's input adaptation and preprocessing
      -> backbone feature maps at strides 2**level (``Backbone.build_pyramid``)
      -> KerasHub's ``FeaturePyramid`` and two ``PredictionHead``s (RetinaNet)
      -> {"boxes": (B, A, 4) box deltas, "classes": (B, A, K) logits} per anchor

``Detector.compute_loss`` takes the targets as the data gives them (boxes in
the raw images' pixels): it scales them into the letterboxed frame, matches
them to the anchors with KerasHub's ``RetinaNetLabelEncoder`` (a
``BoxMatcher`` that also force-matches every box to its best anchor) and
returns focal loss + Huber loss over the matched anchors.

``Detector.predict`` (``predict_step``) decodes the deltas on the anchors,
runs per-class non-max suppression (TensorFlow's
``combined_non_max_suppression``: KerasHub's ``NonMaxSuppression`` needs a
fixed batch size, so the last partial batch of a ``predict`` crashed) and maps
the boxes back to the input's pixels: ``{"boxes": (B, D, 4) xyxy,
"confidence": (B, D), "labels": (B, D), "num_detections": (B,)}``, padding
rows labelled ``-1``.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from finetunekit.errors import ConfigError, format_error
from finetunekit.heads.anchors import AnchorSpec

__all__ = ["Detector", "Letterbox", "detector_network", "letterbox_size", "require_keras_hub"]

#: box deltas are encoded as KerasHub's RetinaNet does: centre x, y, width, height
ENCODING = "center_xywh"
BOX_VARIANCE = (0.1, 0.1, 0.2, 0.2)


def require_keras_hub() -> Any:
    """Imports ``keras_hub`` or raises a ``ConfigError`` naming the extra to install."""
    try:
        import keras_hub
    except ImportError as exc:  # pragma: no cover - the test extra installs it
        raise ConfigError(
            format_error(
                "Detection needs KerasHub (its RetinaNet building blocks)",
                expected="the keras-hub package installed",
                received={"keras_hub": "not importable"},
                fix="pip install 'finetunekit[detection]'  (or pip install keras-hub)",
            )
        ) from exc
    return keras_hub


def letterbox_size(height: Any, width: Any, size: int) -> tuple[Any, Any]:
    """The ``(height, width)`` an image takes inside the ``size x size`` letterbox.

    Works on Python numbers and on scalar tensors.

    Examples:
        >>> letterbox_size(60, 120, 96)
        (48, 96)
    """
    if isinstance(height, (int, np.integer)) and isinstance(width, (int, np.integer)):
        scale = size / max(int(height), int(width))
        return max(1, round(height * scale)), max(1, round(width * scale))
    h = tf.cast(height, tf.float32)
    w = tf.cast(width, tf.float32)
    scale = size / tf.maximum(h, w)
    return (
        tf.maximum(1, tf.cast(tf.round(h * scale), tf.int32)),
        tf.maximum(1, tf.cast(tf.round(w * scale), tf.int32)),
    )


def box_scale(images: Any, size: int) -> Any:
    """``(x, y, x, y)`` factors from the images' pixels to the letterbox's (float32 (4,))."""
    shape = tf.shape(images)
    nh, nw = letterbox_size(shape[1], shape[2], size)
    sy = tf.cast(nh, tf.float32) / tf.cast(shape[1], tf.float32)
    sx = tf.cast(nw, tf.float32) / tf.cast(shape[2], tf.float32)
    return tf.stack([sx, sy, sx, sy])


@keras.saving.register_keras_serializable(package="finetunekit")
class Letterbox(keras.layers.Layer):
    """Resizes a batch to ``size x size`` keeping the aspect ratio; pads bottom and right.

    Values keep their range (bilinear resizing, float32 out); the padding is
    zeros. Boxes scale by :func:`box_scale` (the same factor on both axes up
    to rounding), with no offset.

    Examples:
        >>> import numpy as np
        >>> out = Letterbox(8)(np.ones((1, 2, 4, 3), "uint8"))
        >>> out.shape, float(out[0, 3, 7, 0]), float(out[0, 4, 0, 0])
        (TensorShape([1, 8, 8, 3]), 1.0, 0.0)
    """

    def __init__(self, size: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.size = int(size)

    def call(self, images: Any) -> Any:
        x = tf.cast(images, tf.float32)
        shape = tf.shape(x)
        nh, nw = letterbox_size(shape[1], shape[2], self.size)
        same = tf.logical_and(tf.equal(nh, shape[1]), tf.equal(nw, shape[2]))
        x = tf.cond(same, lambda: x, lambda: tf.image.resize(x, tf.stack([nh, nw])))
        x = tf.pad(x, [[0, 0], [0, self.size - nh], [0, self.size - nw], [0, 0]])
        return tf.ensure_shape(x, [None, self.size, self.size, None])

    def compute_output_shape(self, input_shape: Any) -> tuple[Any, ...]:
        return (input_shape[0], self.size, self.size, input_shape[-1])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "size": self.size}


def detector_network(
    inputs: Any,
    features: dict[str, Any],
    *,
    spec: AnchorSpec,
    num_classes: int,
    filters: int,
    head_convs: int,
) -> keras.Model:
    """The functional network: letterboxed images -> per-anchor outputs.

    Args:
        inputs: the symbolic ``(S, S, C)`` images.
        features: the backbone's maps ``{"P3": ..., ...}`` computed from
            ``inputs`` (``Backbone.build_pyramid``), from ``spec.min_level``
            on; KerasHub's ``FeaturePyramid`` makes the levels up to
            ``spec.max_level`` the backbone lacks with strided convolutions.
        spec: the anchors (their levels are the pyramid's).
        num_classes: object classes.
        filters: width of the feature pyramid and the heads' convolutions.
        head_convs: convolutions in each head before its output layer.
    """
    require_keras_hub()
    from keras_hub.src.models.retinanet.feature_pyramid import FeaturePyramid

    PredictionHead = _prediction_head_class()
    used = {k: v for k, v in features.items() if spec.min_level <= int(k[1:]) <= spec.max_level}
    pyramid = FeaturePyramid(
        min_level=spec.min_level,
        max_level=spec.max_level,
        use_p5=False,
        num_filters=filters,
        name="feature_pyramid",
    )(used)
    per_location = spec.num_scales * len(spec.aspect_ratios)
    box_head = PredictionHead(
        output_filters=per_location * 4,
        num_filters=filters,
        num_conv_layers=head_convs,
        name="box_head",
    )
    class_head = PredictionHead(
        output_filters=per_location * num_classes,
        num_filters=filters,
        num_conv_layers=head_convs,
        use_prior_probability=True,  # sigmoid ~0.01 at start: focal loss stays stable
        prior_probability=0.01,
        name="class_head",
    )
    boxes, classes = [], []
    for level in range(spec.min_level, spec.max_level + 1):
        feature = pyramid[f"P{level}"]
        boxes.append(keras.layers.Reshape((-1, 4), name=f"boxes_P{level}")(box_head(feature)))
        classes.append(
            keras.layers.Reshape((-1, num_classes), name=f"classes_P{level}")(class_head(feature))
        )
    outputs = {
        "boxes": keras.layers.Concatenate(axis=1, name="boxes", dtype="float32")(boxes),
        "classes": keras.layers.Concatenate(axis=1, name="classes", dtype="float32")(classes),
    }
    return keras.Model(inputs, outputs, name="detector_network")


_HEAD_CLASS: Any = None


def register_objects() -> None:
    """Registers :class:`Detector` and its heads with Keras (importing this module does)."""
    require_keras_hub()
    _prediction_head_class()


def _prediction_head_class() -> Any:
    """KerasHub's RetinaNet ``PredictionHead``, loadable from a saved file.

    Its ``build`` adds a tuple to the input shape, which a loaded file gives
    as a list (``TypeError`` in ``keras.saving.load_model``); the subclass
    only turns the shape into a tuple first.
    """
    global _HEAD_CLASS
    if _HEAD_CLASS is None:
        from keras_hub.src.models.retinanet.prediction_head import PredictionHead

        @keras.saving.register_keras_serializable(package="finetunekit")
        class DetectionHead(PredictionHead):  # type: ignore[misc]
            def build(self, input_shape: Any) -> None:
                super().build(tuple(input_shape))

        _HEAD_CLASS = DetectionHead
    return _HEAD_CLASS


def _focal(labels: Any, logits: Any, alpha: float = 0.25, gamma: float = 2.0) -> Any:
    """Sigmoid focal loss per element (RetinaNet's)."""
    p = tf.sigmoid(logits)
    ce = tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits)
    p_t = labels * p + (1 - labels) * (1 - p)
    a_t = labels * alpha + (1 - labels) * (1 - alpha)
    return a_t * tf.pow(1.0 - p_t, gamma) * ce


@keras.saving.register_keras_serializable(package="finetunekit")
class Detector(keras.Model):
    """A one-stage (RetinaNet) detector taking raw images of any size.

    Args:
        network: the functional network from :func:`detector_network`.
        num_classes: object classes.
        image_size: ``S``, the letterbox's side.
        anchors: :class:`~finetunekit.heads.anchors.AnchorSpec` settings (a dict).
        score_threshold: detections below this confidence are dropped.
        iou_threshold: non-max suppression's overlap limit (per class).
        max_detections: detections kept per image.

    Call it on images to get the raw per-anchor outputs; ``predict`` returns
    decoded detections (see the module docstring).
    """

    def __init__(
        self,
        network: keras.Model,
        num_classes: int,
        image_size: int,
        anchors: dict[str, Any],
        score_threshold: float = 0.05,
        iou_threshold: float = 0.5,
        max_detections: int = 100,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        keras_hub = require_keras_hub()
        from keras_hub.src.models.retinanet.retinanet_label_encoder import (
            RetinaNetLabelEncoder,
        )

        self.network = network
        self.num_classes = int(num_classes)
        self.image_size = int(image_size)
        self.anchors = dict(anchors)
        self.score_threshold = float(score_threshold)
        self.iou_threshold = float(iou_threshold)
        self.max_detections = int(max_detections)
        self.letterbox = Letterbox(self.image_size, name="letterbox")
        generator = keras_hub.layers.AnchorGenerator(
            "xyxy",
            **AnchorSpec(
                **{**self.anchors, "aspect_ratios": tuple(self.anchors["aspect_ratios"])}
            ).generator_kwargs(),
        )
        self.label_encoder = RetinaNetLabelEncoder(
            generator,
            bounding_box_format="xyxy",
            encoding_format=ENCODING,
            box_variance=list(BOX_VARIANCE),
            box_matcher_force_match_for_each_col=True,  # every box gets its best anchor
        )
        canvas = np.zeros((1, self.image_size, self.image_size, 1), np.float32)
        boxes = generator(canvas)
        self._anchor_boxes = np.concatenate(
            [np.asarray(b, np.float32) for b in boxes.values()], axis=0
        )

        self.build((None, None, None, int(network.inputs[0].shape[-1])))

    def build(self, input_shape: Any = None) -> None:
        """Nothing to create: the network is built already (``count_params`` works at once)."""
        self.built = True

    @property
    def anchor_boxes(self) -> np.ndarray:
        """Every anchor ``(A, 4)`` xyxy in the letterbox's pixels, in output order."""
        return self._anchor_boxes

    def call(self, images: Any, training: Any = None) -> Any:
        return self.network(self.letterbox(images), training=training)

    # ------------------------------------------------------------------ training
    def encode_targets(self, images: Any, y: Any) -> tuple[Any, Any]:
        """Box deltas ``(B, A, 4)`` and anchor classes ``(B, A)`` (-1 background, -2 ignored)."""
        boxes = tf.cast(y["boxes"], tf.float32)
        labels = tf.cast(y["labels"], tf.float32)
        valid = labels >= 0
        scaled = boxes * box_scale(images, self.image_size)
        # Padding rows: far outside the image, overlapping no anchor, class -1. One
        # more such row is always appended: KerasHub's BoxMatcher force-matches its
        # own all -1 helper column to anchor 0 and, in an image whose every row is a
        # real box, hands anchor 0 that column's out-of-range index (a gather error).
        # A padding row sorts before the helper column and absorbs it; a real box
        # whose best anchor is anchor 0 still comes first.
        far = tf.constant([-1e4, -1e4, -1e4 + 1, -1e4 + 1], tf.float32)
        scaled = tf.where(valid[..., None], scaled, far)
        batch = tf.shape(boxes)[0]
        scaled = tf.concat([scaled, tf.tile(far[None, None, :], [batch, 1, 1])], axis=1)
        classes = tf.concat([tf.where(valid, labels, -1.0), -tf.ones([batch, 1])], axis=1)
        canvas = tf.zeros(tf.stack([batch, self.image_size, self.image_size, 1]))
        deltas, anchor_classes = self.label_encoder(
            images=canvas, gt_boxes=scaled, gt_classes=classes
        )
        return deltas, anchor_classes

    def compute_loss(
        self,
        x: Any = None,
        y: Any = None,
        y_pred: Any = None,
        sample_weight: Any = None,
        training: bool = True,
    ) -> Any:
        """Focal loss over non-ignored anchors + Huber over matched ones, per matched anchor."""
        deltas, classes = self.encode_targets(x, y)
        positive = tf.cast(classes >= 0, tf.float32)
        counted = tf.cast(classes > -2, tf.float32)
        normaliser = tf.maximum(tf.reduce_sum(positive), 1.0)
        onehot = tf.one_hot(tf.cast(tf.maximum(classes, 0), tf.int32), self.num_classes)
        onehot = onehot * positive[..., None]
        logits = tf.cast(y_pred["classes"], tf.float32)
        cls = tf.reduce_sum(_focal(onehot, logits) * counted[..., None]) / normaliser
        diff = tf.abs(tf.cast(y_pred["boxes"], tf.float32) - tf.stop_gradient(deltas))
        huber = tf.where(diff < 1.0, 0.5 * diff**2, diff - 0.5)
        box = tf.reduce_sum(tf.reduce_sum(huber, -1) * positive) / normaliser
        total = cls + box
        losses = [tf.cast(loss, tf.float32) for loss in self.losses]  # regularisers
        if losses:
            total = total + tf.add_n(losses)
        return total

    @property
    def metrics(self) -> list[Any]:
        """The loss only: box-level quality is mAP, computed by ``evaluate`` over a whole set."""
        tracker = getattr(self, "_loss_tracker", None)
        return [] if tracker is None else [tracker]

    def compute_metrics(
        self, x: Any, y: Any, y_pred: Any, sample_weight: Any = None
    ) -> dict[str, Any]:
        """``{"loss": ...}``: see :attr:`metrics`."""
        return self.get_metrics_result()  # type: ignore[no-any-return]

    # ------------------------------------------------------------------ prediction
    def decode(self, images: Any, outputs: Any, score_threshold: float | None = None) -> Any:
        """Detections in the pixels of ``images`` from the raw outputs of ``self(images)``."""
        anchors = tf.constant(self._anchor_boxes)
        deltas = tf.cast(outputs["boxes"], tf.float32) * tf.constant(BOX_VARIANCE)
        wa = anchors[:, 2] - anchors[:, 0]
        ha = anchors[:, 3] - anchors[:, 1]
        cx = anchors[:, 0] + 0.5 * wa + deltas[..., 0] * wa
        cy = anchors[:, 1] + 0.5 * ha + deltas[..., 1] * ha
        w = tf.exp(tf.minimum(deltas[..., 2], 8.0)) * wa
        h = tf.exp(tf.minimum(deltas[..., 3], 8.0)) * ha
        boxes = tf.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=-1)
        scores = tf.sigmoid(tf.cast(outputs["classes"], tf.float32))
        cut = self.score_threshold if score_threshold is None else float(score_threshold)
        nms_boxes, nms_scores, nms_classes, count = tf.image.combined_non_max_suppression(
            boxes[:, :, None, :],
            scores,
            max_output_size_per_class=self.max_detections,
            max_total_size=self.max_detections,
            iou_threshold=self.iou_threshold,
            score_threshold=cut,
            clip_boxes=False,
        )
        scale = box_scale(images, self.image_size)
        shape = tf.cast(tf.shape(images), tf.float32)
        limit = tf.stack([shape[2], shape[1], shape[2], shape[1]])
        nms_boxes = tf.clip_by_value(nms_boxes / scale, 0.0, limit)
        slots = tf.range(self.max_detections)[None, :]
        real = slots < count[:, None]
        return {
            "boxes": nms_boxes,
            "confidence": tf.where(real, nms_scores, 0.0),
            "labels": tf.where(real, tf.cast(nms_classes, tf.int32), -1),
            "num_detections": count,
        }

    def predict_step(self, data: Any) -> Any:
        x = data[0] if isinstance(data, (tuple, list)) else data
        return self.decode(x, self(x, training=False))

    # ------------------------------------------------------------------ config
    def get_config(self) -> dict[str, Any]:
        return {
            "network": keras.saving.serialize_keras_object(self.network),
            "num_classes": self.num_classes,
            "image_size": self.image_size,
            "anchors": self.anchors,
            "score_threshold": self.score_threshold,
            "iou_threshold": self.iou_threshold,
            "max_detections": self.max_detections,
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects: Any = None) -> Detector:
        config = dict(config)
        register_objects()  # the heads' class, before the network is rebuilt
        config["network"] = keras.saving.deserialize_keras_object(
            config["network"], custom_objects=custom_objects
        )
        return cls(**config)


# --------------------------------------------------------------------------- predict on raw images
def _image_list(images: Any, channels: int) -> list[np.ndarray]:
    """``images`` as a list of ``(H, W, C)`` arrays, checked."""
    from finetunekit.errors import InputShapeError

    if isinstance(images, np.ndarray) and images.dtype != object:
        if images.ndim == 3 and channels == 1:
            images = images[..., None]
        if images.ndim != 4:
            raise InputShapeError(
                format_error(
                    "A detector predicts on a batch of images",
                    expected=f"an array (N, H, W, {channels}) or a list of (H, W, {channels}) "
                    "arrays of any sizes",
                    received={"images": f"array of shape {images.shape}"},
                    fix="Wrap a single image in a list: result.predict([image])",
                )
            )
        items = list(images)
    elif isinstance(images, (list, tuple)):
        items = [np.asarray(image) for image in images]
    else:
        raise InputShapeError(
            format_error(
                "A detector predicts on images given as arrays",
                expected=f"an array (N, H, W, {channels}) or a list of (H, W, {channels}) arrays",
                received={"images": type(images).__name__},
            )
        )
    out = []
    for i, image in enumerate(items):
        if image.ndim == 2 and channels == 1:
            image = image[..., None]
        if image.ndim != 3 or image.shape[-1] != channels or image.dtype.kind not in "biuf":
            raise InputShapeError(
                format_error(
                    f"Image {i} cannot feed this detector",
                    expected=f"a numeric array (H, W, {channels}), as in training",
                    received={f"images[{i}]": f"{image.dtype} array of shape {image.shape}"},
                    fix="Pass images with the channel count the detector was trained on",
                )
            )
        out.append(image)
    return out


def predict_images(
    model: Any,
    images: Any,
    *,
    batch_size: int = 16,
    class_names: list[str] | None = None,
    score_threshold: float | None = None,
) -> list[dict[str, Any]]:
    """Detections per image, in that image's own pixels.

    Images of the same size are batched together (a batch of mixed sizes
    would letterbox the smaller ones at a lower resolution).

    Args:
        model: a :class:`Detector`.
        images: an array ``(N, H, W, C)`` or a list of ``(H, W, C)`` arrays of
            any sizes (``(H, W)`` for a grayscale model).
        batch_size: images per forward pass.
        class_names: names for the class indices.
        score_threshold: drop detections below it (default: the model's).

    Returns:
        One dict per image: ``boxes`` float32 ``(k, 4)`` xyxy, ``scores``
        ``(k,)``, ``labels`` int ``(k,)`` and ``classes`` (names), best first.
    """
    channels = int(model.network.inputs[0].shape[-1])
    items = _image_list(images, channels)
    results: list[dict[str, Any] | None] = [None] * len(items)
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i, image in enumerate(items):
        groups.setdefault((image.shape, image.dtype.str), []).append(i)
    predict = tf.function(lambda x: model.decode(x, model(x, training=False), score_threshold))
    for indices in groups.values():
        for start in range(0, len(indices), batch_size):
            chunk = indices[start : start + batch_size]
            batch = np.stack([items[i] for i in chunk])
            out = {k: np.asarray(v) for k, v in predict(tf.constant(batch)).items()}
            for row, i in enumerate(chunk):
                k = int(out["num_detections"][row])
                labels = out["labels"][row, :k].astype(np.int64)
                results[i] = {
                    "boxes": out["boxes"][row, :k].astype(np.float32),
                    "scores": out["confidence"][row, :k].astype(np.float32),
                    "labels": labels,
                    "classes": [class_names[j] if class_names else str(j) for j in labels.tolist()],
                }
    return [r for r in results if r is not None]
