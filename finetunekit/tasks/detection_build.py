"""How the ``detection`` task builds and trains its model (steps 2-4).

* **Image size** ``S`` (the letterbox's side): ``Detection(image_size=...)``;
  else a square input size the backbone declares; else the median of the
  training images' longer sides, rounded up to a multiple of 32 and kept in
  ``[64, 640]`` (small images are not blown up to a classifier's 224).
* **Anchors** from the training boxes as the model will see them
  (:func:`~finetunekit.heads.anchors.choose_anchors` on the letterboxed
  boxes): from pyramid level 3 (stride 8), or level 2 when level 3 leaves
  more than 5% of the boxes without an anchor at IoU 0.5 and the backbone has
  a level-2 map. The choice and its coverage go to ``result.info["detection"]``.
* **Augmentation**: ``Trainer(augment=...)`` maps to Keras 3's random image
  layers with ``bounding_box_format="xyxy"`` (flip, zoom, translation,
  rotation; contrast leaves boxes alone), applied to the training batches in
  ``tf.data`` so boxes move with the pixels.
"""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from finetunekit.errors import ConfigError, TrainerError, format_error

__all__ = [
    "MIN_COVERAGE",
    "augment_batches",
    "build_detector",
    "check_detection_recipe",
    "choose_image_size",
    "detection_anchors",
]

#: level 3 is kept when it gives at least this share of the boxes an anchor
MIN_COVERAGE = 0.95
_SIZE_MULTIPLE = 32
_SIZE_LIMITS = (64, 640)


def choose_image_size(sizes: np.ndarray) -> int:
    """The letterbox side for images of these ``(height, width)`` sizes.

    Examples:
        >>> choose_image_size(np.array([[96, 96], [100, 80]]))
        128
        >>> choose_image_size(np.array([[28, 28]]))
        64
    """
    longest = float(np.median(np.max(np.asarray(sizes), axis=1)))
    size = _SIZE_MULTIPLE * math.ceil(longest / _SIZE_MULTIPLE)
    return int(min(max(size, _SIZE_LIMITS[0]), _SIZE_LIMITS[1]))


def _declared_size(backbone: Any) -> int | None:
    """A square input size the backbone fixes, or ``None``."""
    shape = getattr(backbone, "input_shape", None)
    if shape is None and getattr(backbone, "source", "") != "application":
        model = backbone.known_model
        shape = None if model is None else tuple(model.inputs[0].shape[1:])
    if shape is None or shape[0] is None or shape[1] is None:
        return None
    if int(shape[0]) != int(shape[1]):
        raise ConfigError(
            format_error(
                f"Backbone {backbone.name!r} takes {shape[0]}x{shape[1]} images; a detector "
                "letterboxes images into a square",
                expected="a backbone of a square or free input size",
                received={"input_shape": tuple(shape)},
                fix="Build the backbone with input_shape=(S, S, 3) or (None, None, 3)",
            )
        )
    return int(shape[0])


def _letterboxed_boxes(targets: np.ndarray, sizes: np.ndarray, size: int) -> np.ndarray:
    """Every training box in the letterbox's pixels, ``(K, 4)``."""
    from finetunekit.heads.detector import letterbox_size

    rows = []
    for image_targets, (h, w) in zip(targets, sizes, strict=True):
        real = image_targets[image_targets[:, 4] >= 0, :4]
        if len(real):
            nh, nw = letterbox_size(int(h), int(w), size)
            rows.append(real * np.array([nw / w, nh / h, nw / w, nh / h]))
    return np.concatenate(rows).astype(np.float64)


def detection_anchors(boxes: np.ndarray, size: int, finest: int = 2) -> Any:
    """The :class:`~finetunekit.heads.anchors.AnchorChoice` for letterboxed ``boxes``.

    Level 3 first; level 2 (when ``finest <= 2``) if level 3 leaves more than
    ``1 - MIN_COVERAGE`` of the boxes unmatched and level 2 matches more.
    """
    from finetunekit.heads.anchors import choose_anchors

    choice = choose_anchors(boxes, (size, size), min_level=3)
    if choice.coverage < MIN_COVERAGE and finest <= 2:
        finer = choose_anchors(boxes, (size, size), min_level=2)
        if finer.coverage > choice.coverage:
            choice = finer
    return choice


def check_detection_recipe(task: Any, train: Any, *, head: Any, trainer: Any) -> None:
    """Refuses recipe settings that have no meaning for a detector."""
    if trainer.label_smoothing:
        raise TrainerError(
            format_error(
                "label_smoothing does not apply to detection (focal loss on anchors)",
                expected="Trainer(label_smoothing=0.0)",
                received={"label_smoothing": trainer.label_smoothing},
                fix="Drop label_smoothing",
            )
        )
    if train.image_sizes is None:
        raise ConfigError(
            format_error(
                "The detection task needs detection data",
                expected="DatasetAdapter.from_detection / from_coco / from_voc",
                received={"data": train},
            )
        )


def build_detector(task: Any, backbone: Any, train: Any) -> Any:
    """The :class:`~finetunekit.training.engine.BuiltModel` of a RetinaNet for ``train``."""
    from finetunekit.heads.anchors import choose_anchors
    from finetunekit.heads.detector import Detector, detector_network
    from finetunekit.training.engine import BuiltModel

    sizes = train.image_sizes
    size = task.image_size or _declared_size(backbone) or choose_image_size(sizes)
    boxes = _letterboxed_boxes(train.targets(), sizes, size)
    choice = detection_anchors(boxes, size)
    channels = int(train.input_shape[-1])
    value_range = None
    if str(train.input_dtype).startswith("float"):
        sample = np.asarray(train.sample_inputs(64), dtype="float64")
        value_range = (float(sample.min()), float(sample.max()))
    inputs = keras.Input((size, size, channels), name="images")
    built = backbone.build_pyramid(
        inputs,
        input_dtype=str(train.input_dtype),
        levels=list(range(choice.spec.min_level, choice.spec.max_level + 1)),
        value_range=value_range,
        partial=True,
    )
    finest = min(int(k[1:]) for k in built.features)
    if finest != choice.spec.min_level:  # e.g. no stride-4 map: anchors from the finest there is
        choice = choose_anchors(boxes, (size, size), min_level=finest)
    spec = choice.spec
    network = detector_network(
        inputs,
        built.features,
        spec=spec,
        num_classes=train.num_classes,
        filters=task.filters,
        head_convs=task.head_convs,
    )
    model = Detector(
        network,
        num_classes=train.num_classes,
        image_size=size,
        anchors={
            "min_level": spec.min_level,
            "max_level": spec.max_level,
            "num_scales": spec.num_scales,
            "aspect_ratios": list(spec.aspect_ratios),
            "anchor_size": spec.anchor_size,
        },
        score_threshold=task.score_threshold,
        iou_threshold=task.iou_threshold,
        max_detections=task.max_detections,
        name=f"detector_{backbone.name}",
    )
    info = dict(built.info)
    info["detection"] = {
        "image_size": size,
        "anchors": dict(model.anchors),
        "anchor_coverage": round(float(choice.coverage), 4),
        "anchors_reason": choice.reason,
        "backbone_levels": built.info["pyramid"],
        "num_anchors": int(len(model.anchor_boxes)),
        "filters": task.filters,
        "head_convs": task.head_convs,
    }
    return BuiltModel(
        model=model,
        backbone_model=built.model,
        features=None,
        task=task,
        loss=None,
        info=info,
        cache_problem="the detector reads several backbone levels and its targets depend on "
        "the letterbox of each batch: phase 1 runs the frozen backbone every step",
    )


# --------------------------------------------------------------------------- augmentation
_BOX_LAYERS = ("flip", "zoom", "translation", "rotation", "contrast")


def _box_layers(spec: dict[str, Any], seed: int | None) -> list[keras.layers.Layer]:
    layers: list[keras.layers.Layer] = []
    fmt = {"bounding_box_format": "xyxy"}
    if spec.get("flip"):
        mode = spec["flip"] if isinstance(spec["flip"], str) else "horizontal"
        layers.append(keras.layers.RandomFlip(mode, seed=seed, **fmt))
    if spec.get("zoom"):
        layers.append(keras.layers.RandomZoom(spec["zoom"], fill_mode="constant", seed=seed, **fmt))
    if spec.get("translation"):
        t = spec["translation"]
        layers.append(keras.layers.RandomTranslation(t, t, fill_mode="constant", seed=seed, **fmt))
    if spec.get("rotation"):
        layers.append(
            keras.layers.RandomRotation(spec["rotation"], fill_mode="constant", seed=seed, **fmt)
        )
    if spec.get("contrast"):  # the images' own range is kept by the clipping below
        layers.append(
            keras.layers.RandomContrast(spec["contrast"], value_range=(-1e9, 1e9), seed=seed)
        )
    return layers


def augment_batches(dataset: Any, augment: Any, *, seed: int | None = None) -> Any:
    """Maps ``(images, {"boxes", "labels"})`` batches through box-aware random layers.

    Boxes pushed out of the image are clipped; a box left without area
    becomes padding (label ``-1``). The transforms of a pass are a function
    of ``seed`` and the number of passes made before (see ``apply``).
    """
    from finetunekit.backbones.augmentation import resolve_augment

    spec = resolve_augment(augment)  # every key it accepts moves boxes (or leaves them)
    layers = _box_layers(spec, seed)

    def apply(images: Any, targets: Any, draw: Any) -> Any:
        # Each batch's transforms come from its own draw of a seeded random stream
        # that starts anew with every pass (tf.data rerandomises it per iterator, as
        # it reshuffles): a resumed run, whose engine fast-forwards the passes,
        # sees the same transforms as the uninterrupted run.
        for i, layer in enumerate(layers):
            state = layer.generator.state
            state.assign(tf.cast(tf.stack([draw % 2_147_483_647, i]), state.dtype))
        x = tf.cast(images, tf.float32)
        valid = targets["labels"] >= 0
        boxes = tf.where(valid[..., None], targets["boxes"], 0.0)
        data = {"images": x, "bounding_boxes": {"boxes": boxes, "labels": targets["labels"]}}
        for layer in layers:
            data = layer(data, training=True)
        out = data["bounding_boxes"]
        shape = tf.cast(tf.shape(x), tf.float32)
        limit = tf.stack([shape[2], shape[1], shape[2], shape[1]])
        moved = tf.clip_by_value(tf.cast(out["boxes"], tf.float32), 0.0, limit)
        alive = (
            valid & (moved[..., 2] - moved[..., 0] >= 1.0) & (moved[..., 3] - moved[..., 1] >= 1.0)
        )
        labels = tf.where(alive, tf.cast(targets["labels"], tf.int32), -1)
        moved = tf.where(alive[..., None], moved, -1.0)
        out_images = data["images"]
        if images.dtype.is_integer:  # back to the raw dtype and range
            out_images = tf.clip_by_value(tf.round(out_images), images.dtype.min, images.dtype.max)
        return tf.cast(out_images, images.dtype), {"boxes": moved, "labels": labels}

    draws = tf.data.Dataset.random(
        seed=0 if seed is None else seed, rerandomize_each_iteration=True
    )
    # sequential: the layers' seed state is set per batch
    return tf.data.Dataset.zip(dataset, draws).map(
        lambda batch, draw: apply(batch[0], batch[1], draw)
    )
