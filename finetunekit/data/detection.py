"""Object-detection data: images with boxes and class labels.

``DatasetAdapter.from_detection``, ``from_coco`` and ``from_voc`` check
their inputs here, before anything is built, and build the adapter of the
``detection`` task (:class:`~finetunekit.tasks.detection.Detection`).

Boxes are stored in ONE canonical form: absolute ``xyxy`` float32 in the
pixels of each image's own size (``x1, y1, x2, y2`` with ``0 <= x1 < x2 <=
width`` and ``0 <= y1 < y2 <= height``). The stored targets
(``data.targets()``) are an array ``(N, M, 5)``: per image ``M`` rows of
``x1, y1, x2, y2, class``, ``M`` the largest box count of the data, rows
beyond an image's boxes filled with ``-1``.

Box formats (``box_format=``), as Keras names them:

| name | a box | units |
| --- | --- | --- |
| ``"xyxy"`` | left, top, right, bottom | pixels |
| ``"xywh"`` | left, top, width, height (COCO) | pixels |
| ``"yxyx"`` | top, left, bottom, right (TensorFlow) | pixels |
| ``"cxcywh"`` | centre x, centre y, width, height (YOLO) | pixels |
| ``"rel_xyxy"``, ``"rel_xywh"``, ``"rel_yxyx"``, ``"rel_cxcywh"`` | the same | fractions of the image's width and height |

A coordinate may overshoot the image by at most :data:`EDGE_TOLERANCE`
pixels (rounding in annotation tools): it is clipped onto the edge. A box
further out, or with zero or negative width or height (after clipping),
raises :class:`~finetunekit.DataError`.
"""

from __future__ import annotations

import json
import numbers
import os
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from finetunekit.boxes import BOX_FORMATS, check_box_format, convert_boxes
from finetunekit.errors import ArgumentTypeError, DataError, LabelError, format_error
from finetunekit.tasks.labels import validate_class_names

__all__ = [
    "BOX_FORMATS",
    "EDGE_TOLERANCE",
    "ArrayImages",
    "FileImages",
    "check_box_format",
    "coco_data",
    "convert_boxes",
    "detection_data",
    "voc_data",
]

#: how far (pixels) a coordinate may lie outside the image before it is an error
EDGE_TOLERANCE = 1.0
_SHOWN = 5
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
AUTOTUNE = tf.data.AUTOTUNE


# --------------------------------------------------------------------------- boxes


def _box_rows(value: Any, i: int, name: str) -> np.ndarray:
    """One image's boxes as float64 ``(k, 4)``."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(
            format_error(
                f"{name}[{i}] is not an array of numbers",
                expected="an array (k, 4) of box coordinates per image (k may be 0)",
                received={f"{name}[{i}]": value},
            )
        ) from exc
    if arr.size == 0:
        return arr.reshape(0, 4)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise DataError(
            format_error(
                f"{name}[{i}] has shape {arr.shape}",
                expected="an array (k, 4): one row of four coordinates per box",
                received={f"{name}[{i}]": arr},
                fix="Pass one (k, 4) array per image (a single box as [[x1, y1, x2, y2]])",
            )
        )
    if not np.isfinite(arr).all():
        raise DataError(
            format_error(
                f"{name}[{i}] holds NaN or inf",
                expected="finite coordinates",
                received={f"{name}[{i}]": arr},
            )
        )
    return arr


def _canonical_boxes(
    raw: np.ndarray, fmt: str, size: tuple[int, int], i: int, name: str, where: str
) -> np.ndarray:
    """Absolute xyxy boxes inside the image, after the checks of the module docstring."""
    h, w = size
    boxes = convert_boxes(raw, fmt, "xyxy", (h, w))
    limits = np.array([w, h, w, h], np.float64)
    outside = (boxes < -EDGE_TOLERANCE) | (boxes > limits + EDGE_TOLERANCE)
    if outside.any():
        row = int(np.flatnonzero(outside.any(axis=1))[0])
        raise DataError(
            format_error(
                f"{where}: box {row} {raw[row].tolist()} ({fmt}) lies outside the "
                f"{w}x{h} image (as xyxy pixels: {np.round(boxes[row], 3).tolist()})",
                expected=f"coordinates within the image, at most {EDGE_TOLERANCE:g} px beyond "
                "an edge (clipped)",
                received={f"{name}[{i}]": raw, "box_format": fmt},
                fix="Check box_format (order of the numbers, 'rel_' for fractions) and that "
                "each image's boxes belong to it",
            )
        )
    boxes = np.asarray(np.clip(boxes, 0, limits), np.float64)
    empty = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
    if empty.any():
        row = int(np.flatnonzero(empty)[0])
        raise DataError(
            format_error(
                f"{where}: box {row} {raw[row].tolist()} ({fmt}) has zero or negative width "
                f"or height (as xyxy pixels: {np.round(boxes[row], 3).tolist()})",
                expected="boxes with x2 > x1 and y2 > y1 inside the image",
                received={f"{name}[{i}]": raw, "box_format": fmt},
                fix="Drop degenerate boxes, or pass the right box_format",
            )
        )
    return boxes


def _label_rows(value: Any, i: int, name: str) -> np.ndarray:
    arr = np.asarray(value)
    if arr.size == 0:
        return arr.reshape(0)
    if arr.ndim != 1:
        raise LabelError(
            format_error(
                f"{name}[{i}] has shape {arr.shape}",
                expected="a 1-D array (k,) of labels per image",
                received={f"{name}[{i}]": arr},
            )
        )
    return arr


# --------------------------------------------------------------------------- labels


def _class_indices(
    labels: list[np.ndarray], class_names: Sequence[str] | None, name: str
) -> tuple[list[np.ndarray], list[str]]:
    """Maps each image's labels (ints or names) to class indices; returns them and the names."""
    names = validate_class_names(class_names)
    kinds = {lab.dtype.kind for lab in labels if lab.size}
    if kinds <= {"U", "S", "O"} and kinds:
        found = sorted({str(v) for lab in labels for v in lab.tolist()})
        if names is None:
            names = found
        lookup = {n: k for k, n in enumerate(names)}
        unknown = [v for v in found if v not in lookup]
        if unknown:
            raise LabelError(
                format_error(
                    f"{name} holds class names not in class_names: {unknown[:_SHOWN]}",
                    expected=f"names among {names}",
                    received={name: unknown[:_SHOWN], "class_names": names},
                    fix="Add them to class_names",
                )
            )
        return [np.array([lookup[str(v)] for v in lab.tolist()], np.int64) for lab in labels], names
    out = []
    for i, lab in enumerate(labels):
        if lab.size and (
            lab.dtype.kind not in "iuf" or (lab.dtype.kind == "f" and (lab != np.round(lab)).any())
        ):
            raise LabelError(
                format_error(
                    f"{name}[{i}] are neither class indices nor class names",
                    expected="ints in [0, num_classes) or strings, one per box",
                    received={f"{name}[{i}]": lab},
                )
            )
        out.append(lab.astype(np.int64))
    flat = np.concatenate(out) if out else np.zeros(0, np.int64)
    top = int(flat.max()) + 1 if flat.size else 1
    if names is None:
        names = [str(k) for k in range(top)]
    bad = np.flatnonzero((flat < 0) | (flat >= len(names)))
    if bad.size:
        image = next(i for i, lab in enumerate(out) if ((lab < 0) | (lab >= len(names))).any())
        raise LabelError(
            format_error(
                f"{name}[{image}] holds a class index outside [0, {len(names)})",
                expected=f"indices 0..{len(names) - 1} of class_names {names}",
                received={f"{name}[{image}]": out[image], "class_names": names},
                fix="Pass all the class names, or renumber the labels from 0",
            )
        )
    return out, names


# --------------------------------------------------------------------------- targets


def _padded_targets(boxes: list[np.ndarray], labels: list[np.ndarray]) -> np.ndarray:
    """The stored targets ``(N, M, 5)`` (x1, y1, x2, y2, class; padding -1)."""
    m = max((len(b) for b in boxes), default=0)
    targets = -np.ones((len(boxes), m, 5), np.float32)
    for i, (b, lab) in enumerate(zip(boxes, labels, strict=True)):
        targets[i, : len(b), :4] = b
        targets[i, : len(b), 4] = lab
    return targets


def _finish(
    source: Any,
    boxes: list[np.ndarray],
    labels: list[np.ndarray],
    names: list[str],
    task: Any,
    argument: str,
) -> tuple[Any, np.ndarray, Any]:
    from finetunekit.tasks.detection import Detection
    from finetunekit.tasks.labels import LabelEncoding

    if task is None:
        task = Detection()
    elif isinstance(task, str) and task.strip().lower() == "detection":
        task = Detection()
    if not isinstance(task, Detection):
        raise ArgumentTypeError(
            format_error(
                "Detection data take a detection task",
                expected="None or a finetunekit.tasks.Detection",
                received={"task": task},
                fix="Leave task=None",
            )
        )
    if not any(len(b) for b in boxes):
        raise DataError(
            format_error(
                f"No image of the {len(boxes)} has a box",
                expected="at least one box in the data (images without boxes are fine "
                "among others)",
                received={argument: f"{len(boxes)} images, 0 boxes"},
            )
        )
    targets = _padded_targets(boxes, labels)
    task.check_targets(targets, argument)
    encoding = LabelEncoding(
        task=task.name,
        class_names=tuple(names),
        raw="index",
        target_shape=tuple(int(d) for d in targets.shape[1:]),
        task_object=None if task == Detection() else task,
    )
    return source, targets, encoding


# --------------------------------------------------------------------------- sources


def _gather_targets(targets: tf.Tensor, encoding: Any) -> Any:
    from finetunekit.tasks.labels import stored_to_batch_tf

    return stored_to_batch_tf(targets, encoding)


class _ImageSource:
    """Shared streaming of one image per example, batched with padding when sizes differ."""

    kind = "arrays"
    channels: int
    sizes: np.ndarray  # (N, 2) height, width

    def __len__(self) -> int:
        return len(self.sizes)

    @property
    def input_shape(self) -> tuple[int | None, ...]:
        if len(np.unique(self.sizes, axis=0)) == 1:
            return (int(self.sizes[0, 0]), int(self.sizes[0, 1]), self.channels)
        return (None, None, self.channels)

    @property
    def input_dtype(self) -> str:
        raise NotImplementedError

    def _image_fn(self) -> Any:
        """A tf function: local example index (scalar int64) -> image ``(h, w, C)``."""
        raise NotImplementedError

    def subset(self, local: np.ndarray) -> Any:
        raise NotImplementedError

    def order(self, batch_size: int, shuffle: bool, seed: int | None) -> tf.data.Dataset:
        """Batches of local indices in the order :meth:`dataset` yields examples."""
        ds = tf.data.Dataset.range(len(self))
        if shuffle:
            ds = ds.shuffle(len(self), seed=seed, reshuffle_each_iteration=True)
        return ds.batch(batch_size)

    def _examples(self, shuffle: bool, seed: int | None) -> tf.data.Dataset:
        ds = tf.data.Dataset.range(len(self))
        if shuffle:
            ds = ds.shuffle(len(self), seed=seed, reshuffle_each_iteration=True)
        return ds

    def dataset(
        self,
        batch_size: int,
        targets: np.ndarray,
        encoding: Any,
        shuffle: bool,
        seed: int | None,
    ) -> tf.data.Dataset:
        image = self._image_fn()
        with tf.device("/CPU:0"):
            t_t = tf.convert_to_tensor(targets)
        ds = self._examples(shuffle, seed).map(
            lambda i: (image(i), tf.gather(t_t, i)), num_parallel_calls=AUTOTUNE
        )
        ds = ds.padded_batch(batch_size, padded_shapes=([None, None, self.channels], t_t.shape[1:]))
        ds = ds.map(lambda x, t: (x, _gather_targets(t, encoding)), num_parallel_calls=AUTOTUNE)
        return ds.prefetch(AUTOTUNE)

    def inputs(self, batch_size: int) -> tf.data.Dataset:
        ds = self._examples(False, None).map(self._image_fn(), num_parallel_calls=AUTOTUNE)
        return ds.padded_batch(batch_size, padded_shapes=[None, None, self.channels]).prefetch(
            AUTOTUNE
        )

    def sample(self, n: int) -> np.ndarray:
        batch = next(iter(self.inputs(max(n, 1))))
        return np.asarray(batch)[:n]


class ArrayImages(_ImageSource):
    """Images in memory: one array ``(N, H, W, C)``, or images of several sizes.

    Images of several sizes are kept in one flat buffer (one copy) and cut
    out per example; a batch pads them at the bottom and right to its
    largest height and width.
    """

    def __init__(
        self,
        flat: np.ndarray,
        offsets: np.ndarray,
        sizes: np.ndarray,
        channels: int,
        stacked: np.ndarray | None,
        positions: np.ndarray | None = None,
        tensors: dict[str, tf.Tensor] | None = None,
    ) -> None:
        self._flat = flat
        self._offsets = offsets
        self._all_sizes = sizes
        self._stacked = stacked
        self._positions = positions
        self._tensors = {} if tensors is None else tensors
        self.channels = channels
        self.sizes = sizes if positions is None else sizes[positions]

    @classmethod
    def from_images(cls, images: Any) -> ArrayImages:
        """Checks and wraps the ``images`` argument of ``from_detection``."""
        if isinstance(images, np.ndarray) and images.dtype != object:
            if images.ndim not in (3, 4) or len(images) == 0 or images.dtype.kind not in "biuf":
                raise DataError(
                    format_error(
                        f"images has shape {images.shape} and dtype {images.dtype}",
                        expected="a non-empty numeric array (N, H, W, C) or (N, H, W), or a list of "
                        "(H, W, C) arrays of different sizes",
                        received={"images": images},
                    )
                )
            stacked = images if images.ndim == 4 else images[..., None]
            _check_pixels(stacked, "images")
            n, h, w, c = stacked.shape
            sizes = np.tile(np.array([[h, w]], np.int64), (n, 1))
            return cls(np.zeros(0, stacked.dtype), np.zeros(n + 1, np.int64), sizes, c, stacked)
        if isinstance(images, (str, bytes, Mapping)) or not isinstance(
            images, (Sequence, np.ndarray)
        ):
            raise ArgumentTypeError(
                format_error(
                    "images must be an array or a list of arrays",
                    expected="an array (N, H, W, C) or a list of (H, W, C) arrays",
                    received={"images": images},
                    fix="Use DatasetAdapter.from_coco or from_voc for image files",
                )
            )
        if len(images) == 0:
            raise DataError(
                format_error(
                    "images is empty", expected="at least one image", received={"images": images}
                )
            )
        arrays = []
        for i, image in enumerate(images):
            arr = np.asarray(image)
            if arr.ndim == 2:
                arr = arr[..., None]
            if arr.ndim != 3 or arr.dtype.kind not in "biuf" or min(arr.shape) == 0:
                raise DataError(
                    format_error(
                        f"images[{i}] has shape {arr.shape} and dtype {arr.dtype}",
                        expected="a numeric, non-empty (H, W, C) or (H, W) array per image",
                        received={f"images[{i}]": arr},
                    )
                )
            arrays.append(arr)
        shapes = {(a.shape[2], a.dtype.str) for a in arrays}
        if len(shapes) > 1:
            raise DataError(
                format_error(
                    "The images differ in channel count or dtype: "
                    f"{sorted((c, np.dtype(d).name) for c, d in shapes)}",
                    expected="one channel count and one dtype (the height and width may differ)",
                    received={"images": f"{len(arrays)} arrays"},
                    fix="Convert them all, e.g. to uint8 RGB",
                )
            )
        for i, arr in enumerate(arrays):
            _check_pixels(arr[None], f"images[{i}]")
        sizes = np.array([a.shape[:2] for a in arrays], np.int64)
        c = arrays[0].shape[2]
        if len(np.unique(sizes, axis=0)) == 1:
            return cls(
                np.zeros(0, arrays[0].dtype),
                np.zeros(len(arrays) + 1, np.int64),
                sizes,
                c,
                np.stack(arrays),
            )
        flat = np.concatenate([a.reshape(-1) for a in arrays])
        offsets = np.concatenate([[0], np.cumsum([a.size for a in arrays])]).astype(np.int64)
        return cls(flat, offsets, sizes, c, None)

    @property
    def input_dtype(self) -> str:
        return str((self._stacked if self._stacked is not None else self._flat).dtype)

    def _tensor(self, key: str, value: np.ndarray) -> tf.Tensor:
        if key not in self._tensors:
            with tf.device("/CPU:0"):  # never the whole data set in accelerator memory
                self._tensors[key] = tf.convert_to_tensor(value)
        return self._tensors[key]

    def subset(self, local: np.ndarray) -> ArrayImages:
        pos = local if self._positions is None else self._positions[local]
        return ArrayImages(
            self._flat,
            self._offsets,
            self._all_sizes,
            self.channels,
            self._stacked,
            np.asarray(pos, np.int64),
            self._tensors,
        )

    def _image_fn(self) -> Any:
        pos = None
        if self._positions is not None:  # this subset's own (the cache holds the shared arrays)
            with tf.device("/CPU:0"):
                pos = tf.convert_to_tensor(self._positions)

        def where(i: tf.Tensor) -> tf.Tensor:
            return i if pos is None else tf.gather(pos, i)

        if self._stacked is not None:
            stacked = self._tensor("stacked", self._stacked)
            return lambda i: tf.gather(stacked, where(i))
        flat = self._tensor("flat", self._flat)
        offsets = self._tensor("offsets", self._offsets)
        sizes = self._tensor("sizes", self._all_sizes)
        channels = self.channels

        def image(i: tf.Tensor) -> tf.Tensor:
            j = where(i)
            part = flat[offsets[j] : offsets[j + 1]]
            return tf.reshape(part, tf.concat([sizes[j], [channels]], axis=0))

        return image


class FileImages(_ImageSource):
    """Image files (COCO, VOC) decoded one by one while a dataset is iterated (uint8 RGB)."""

    kind = "files"

    def __init__(self, paths: np.ndarray, sizes: np.ndarray) -> None:
        self.paths = paths
        self.sizes = sizes
        self.channels = 3

    @property
    def input_dtype(self) -> str:
        return "uint8"

    def subset(self, local: np.ndarray) -> FileImages:
        return FileImages(self.paths[local], self.sizes[local])

    def _image_fn(self) -> Any:
        with tf.device("/CPU:0"):
            paths = tf.constant(self.paths)
            sizes = tf.constant(self.sizes)

        def image(i: tf.Tensor) -> tf.Tensor:
            decoded = tf.io.decode_image(
                tf.io.read_file(paths[i]), channels=3, expand_animations=False
            )
            tf.debugging.assert_equal(
                tf.shape(decoded)[:2],
                tf.cast(sizes[i], tf.int32),
                message="An image file's size differs from its annotation's width and height "
                "(build the adapter with validate=True to find all such files)",
            )
            return decoded

        return image


def _check_pixels(arr: np.ndarray, name: str) -> None:
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise DataError(
            format_error(
                f"{name} holds NaN or inf",
                expected="finite pixel values",
                received={name: arr},
            )
        )


# --------------------------------------------------------------------------- from_detection


def _sequence(value: Any, name: str) -> list[Any]:
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, (Sequence, np.ndarray)):
        raise ArgumentTypeError(
            format_error(
                f"{name} must be a list with one entry per image",
                expected=f"a list of per-image arrays ({'(k, 4)' if name == 'boxes' else '(k,)'})",
                received={name: value},
            )
        )
    return list(value)


def detection_data(
    images: Any,
    boxes: Any,
    labels: Any,
    *,
    box_format: str,
    class_names: Sequence[str] | None,
    task: Any,
) -> tuple[Any, np.ndarray, Any]:
    """Checks in-memory detection data; returns ``(source, targets, encoding)`` for the adapter."""
    fmt = check_box_format(box_format)
    source = ArrayImages.from_images(images)
    box_list = _sequence(boxes, "boxes")
    label_list = _sequence(labels, "labels")
    n = len(source)
    for name, values in (("boxes", box_list), ("labels", label_list)):
        if len(values) != n:
            raise DataError(
                format_error(
                    f"There are {n} images but {len(values)} entries in {name}",
                    expected=f"one entry of {name} per image (an empty one for an image "
                    "without boxes)",
                    received={"images": n, name: len(values)},
                )
            )
    raw_boxes = [_box_rows(b, i, "boxes") for i, b in enumerate(box_list)]
    raw_labels = [_label_rows(lab, i, "labels") for i, lab in enumerate(label_list)]
    for i, (b, lab) in enumerate(zip(raw_boxes, raw_labels, strict=True)):
        if len(b) != len(lab):
            raise LabelError(
                format_error(
                    f"Image {i} has {len(b)} boxes but {len(lab)} labels",
                    expected="one label per box",
                    received={f"boxes[{i}]": b, f"labels[{i}]": lab},
                )
            )
    indices, names = _class_indices(raw_labels, class_names, "labels")
    canonical = [
        _canonical_boxes(b, fmt, (int(s[0]), int(s[1])), i, "boxes", f"Image {i}")
        for i, (b, s) in enumerate(zip(raw_boxes, source.sizes, strict=True))
    ]
    return _finish(source, canonical, indices, names, task, "boxes")


# --------------------------------------------------------------------------- COCO


def _coco_error(
    what: str, expected: str, received: dict[str, Any], fix: str | None = None
) -> DataError:
    return DataError(format_error(what, expected=expected, received=received, fix=fix))


def _require(entry: Any, keys: tuple[str, ...], where: str, path: str) -> None:
    if not isinstance(entry, Mapping):
        raise _coco_error(
            f"{where} is not an object", "a JSON object", {"annotations_json": path, where: entry}
        )
    missing = [k for k in keys if k not in entry]
    if missing:
        raise _coco_error(
            f"{where} lacks the keys {missing}",
            f"the COCO keys {list(keys)}",
            {"annotations_json": path, where: entry},
            "Pass a COCO 'instances' annotation file",
        )


def _check_files(paths: list[str], argument: str, folder: str) -> None:
    absent = [p for p in paths if not os.path.isfile(p)]
    if absent:
        raise DataError(
            format_error(
                f"{len(absent)} of {len(paths)} listed images are absent: "
                f"{[os.path.basename(p) for p in absent[:_SHOWN]]}",
                expected=f"every listed image file under {folder}",
                received={argument: folder, "missing": absent[:_SHOWN]},
                fix="Check the image folder, or drop those images from the annotations",
            )
        )


def _validate_files(paths: list[str], sizes: np.ndarray, argument: str) -> None:
    """Decodes every file: unreadable ones and sizes that differ from the annotations raise."""
    problems = []
    for p, (h, w) in zip(paths, sizes.tolist(), strict=True):
        try:
            image = tf.io.decode_image(tf.io.read_file(p), channels=3, expand_animations=False)
        except (tf.errors.OpError, ValueError) as err:
            problems.append(f"{os.path.basename(p)}: unreadable ({type(err).__name__})")
            continue
        if tuple(image.shape[:2]) != (h, w):
            problems.append(
                f"{os.path.basename(p)}: {image.shape[1]}x{image.shape[0]} on disk, "
                f"{w}x{h} in the annotations"
            )
    if problems:
        raise DataError(
            format_error(
                f"{len(problems)} image file(s) do not fit their annotations: {problems[:_SHOWN]}",
                expected="readable images of the annotated width and height",
                received={argument: f"{len(paths)} images"},
                fix="Fix or drop those images",
            )
        )


def _int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def coco_data(
    annotations_json: Any, image_dir: Any, *, task: Any, validate: bool
) -> tuple[Any, np.ndarray, Any]:
    """Reads a COCO ``instances`` file; returns ``(source, targets, encoding)``."""
    if isinstance(annotations_json, Mapping):
        data: Any = annotations_json
        where = "<dict>"
    elif isinstance(annotations_json, (str, os.PathLike)):
        where = os.fspath(annotations_json)
        if not os.path.isfile(where):
            raise DataError(
                format_error(
                    "The COCO annotation file does not exist",
                    expected="the path of a COCO instances JSON file",
                    received={"annotations_json": where},
                )
            )
        try:
            with open(where, encoding="utf-8") as f:
                data = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError(
                format_error(
                    f"The COCO annotation file is not valid JSON ({exc})",
                    expected="a COCO instances JSON file",
                    received={"annotations_json": where},
                )
            ) from exc
    else:
        raise ArgumentTypeError(
            format_error(
                "annotations_json must be a path or a dict",
                expected="the path of a COCO instances JSON file, or its parsed dict",
                received={"annotations_json": annotations_json},
            )
        )
    if not isinstance(image_dir, (str, os.PathLike)) or not os.path.isdir(image_dir):
        raise DataError(
            format_error(
                "image_dir is not a folder",
                expected="the folder holding the images' file_name paths",
                received={"image_dir": image_dir},
            )
        )
    folder = os.fspath(image_dir)
    _require(data, ("images", "annotations", "categories"), "the file", where)
    for key in ("images", "annotations", "categories"):
        if not isinstance(data[key], list):
            raise _coco_error(
                f"'{key}' is not a list", "a JSON list", {"annotations_json": where, key: data[key]}
            )
    if not data["images"]:
        raise _coco_error("'images' is empty", "at least one image", {"annotations_json": where})
    for j, cat in enumerate(data["categories"]):
        _require(cat, ("id", "name"), f"categories[{j}]", where)
        if not _int(cat["id"]):
            raise _coco_error(
                f"categories[{j}] has id {cat['id']!r}",
                "an int category id",
                {"annotations_json": where, f"categories[{j}]": cat},
            )
    cat_ids = sorted({int(c["id"]) for c in data["categories"]})
    if len(cat_ids) != len(data["categories"]):
        raise _coco_error(
            "Two categories share an id",
            "distinct category ids",
            {"annotations_json": where, "categories": data["categories"]},
        )
    names_by_id = {int(c["id"]): str(c["name"]) for c in data["categories"]}
    names = [names_by_id[c] for c in cat_ids]
    if len(set(names)) != len(names):
        raise _coco_error(
            "Two categories share a name",
            "distinct category names (they become the class names)",
            {"annotations_json": where, "categories": names},
        )
    index_of = {c: k for k, c in enumerate(cat_ids)}
    row_of: dict[Any, int] = {}
    paths, sizes = [], []
    for j, image in enumerate(data["images"]):
        _require(image, ("id", "file_name", "width", "height"), f"images[{j}]", where)
        if (
            not (_int(image["width"]) and _int(image["height"]))
            or min(image["width"], image["height"]) < 1
        ):
            raise _coco_error(
                f"images[{j}] has width {image['width']!r} and height {image['height']!r}",
                "positive int width and height",
                {"annotations_json": where, f"images[{j}]": image},
            )
        if not isinstance(image["id"], (int, str)) or isinstance(image["id"], bool):
            raise _coco_error(
                f"images[{j}] has id {image['id']!r}",
                "an int (or string) image id",
                {"annotations_json": where, f"images[{j}]": image},
            )
        if image["id"] in row_of:
            raise _coco_error(
                f"images[{j}] repeats the image id {image['id']!r}",
                "distinct image ids",
                {"annotations_json": where, f"images[{j}]": image},
            )
        row_of[image["id"]] = j
        paths.append(os.path.join(folder, str(image["file_name"])))
        sizes.append((int(image["height"]), int(image["width"])))
    boxes: list[list[Any]] = [[] for _ in paths]
    labels: list[list[int]] = [[] for _ in paths]
    refs: list[list[int]] = [[] for _ in paths]
    for j, ann in enumerate(data["annotations"]):
        _require(ann, ("image_id", "bbox", "category_id"), f"annotations[{j}]", where)
        if ann.get("iscrowd", 0):
            continue  # a crowd region is not one object: left out (see docs/detection.md)
        if not isinstance(ann["image_id"], (int, str)) or ann["image_id"] not in row_of:
            raise _coco_error(
                f"annotations[{j}] refers to image id {ann['image_id']!r}, which 'images' "
                "does not list",
                "an image_id of an entry of 'images'",
                {"annotations_json": where, f"annotations[{j}]": ann},
            )
        if not _int(ann["category_id"]) or ann["category_id"] not in index_of:
            raise _coco_error(
                f"annotations[{j}] has category_id {ann['category_id']!r}, which 'categories' "
                "does not list",
                f"one of the category ids {cat_ids}",
                {"annotations_json": where, f"annotations[{j}]": ann},
            )
        bbox = ann["bbox"]
        if not isinstance(bbox, list) or len(bbox) != 4:
            raise _coco_error(
                f"annotations[{j}] has bbox {bbox!r}",
                "a list [x, y, width, height] in pixels",
                {"annotations_json": where, f"annotations[{j}]": ann},
            )
        row = row_of[ann["image_id"]]
        boxes[row].append(bbox)
        labels[row].append(index_of[ann["category_id"]])
        refs[row].append(j)
    canonical = []
    for row, (b, size) in enumerate(zip(boxes, sizes, strict=True)):
        raw = _box_rows(b, row, "boxes")
        first = f"annotations[{refs[row][0]}]" if refs[row] else ""
        canonical.append(
            _canonical_boxes(
                raw,
                "xywh",
                size,
                row,
                "bbox",
                f"Image {data['images'][row]['file_name']!r} ({first}...)",
            )
        )
    _check_files(paths, "image_dir", folder)
    size_arr = np.array(sizes, np.int64).reshape(-1, 2)
    if validate:
        _validate_files(paths, size_arr, "image_dir")
    source = FileImages(np.array(paths, dtype=str), size_arr)
    index_lists = [np.array(lab, np.int64) for lab in labels]
    return _finish(source, canonical, index_lists, names, task, "annotations_json")


# --------------------------------------------------------------------------- VOC


def _voc_error(path: str, what: str, fix: str | None = None) -> DataError:
    return DataError(
        format_error(
            f"{os.path.basename(path)}: {what}",
            expected="a Pascal VOC annotation: <annotation> with <filename>, <size> "
            "(<width>, <height>) and <object>s (<name>, <bndbox> with <xmin> <ymin> <xmax> "
            "<ymax>)",
            received={"folder": path},
            fix=fix,
        )
    )


def _voc_number(node: ET.Element, tag: str, path: str) -> float:
    text = node.findtext(tag)
    if text is None:
        raise _voc_error(path, f"<{node.tag}> lacks <{tag}>")
    try:
        return float(text)
    except ValueError:
        raise _voc_error(path, f"<{tag}> is {text!r}, not a number") from None


def _read_voc_file(
    path: str,
) -> tuple[str, tuple[int, int], list[list[float]], list[str], list[bool]]:
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise _voc_error(path, f"not well-formed XML ({exc})") from exc
    if root.tag != "annotation":
        raise _voc_error(path, f"the root element is <{root.tag}>, not <annotation>")
    filename = root.findtext("filename")
    if not filename:
        raise _voc_error(path, "no <filename>")
    size = root.find("size")
    if size is None:
        raise _voc_error(path, "no <size>")
    w, h = _voc_number(size, "width", path), _voc_number(size, "height", path)
    if w < 1 or h < 1 or w != int(w) or h != int(h):
        raise _voc_error(path, f"<size> {w}x{h} is not a positive whole number of pixels")
    boxes, names, difficult = [], [], []
    for obj in root.findall("object"):
        name = (obj.findtext("name") or "").strip()
        if not name:
            raise _voc_error(path, "an <object> has no <name>")
        box = obj.find("bndbox")
        if box is None:
            raise _voc_error(path, f"the <object> {name!r} has no <bndbox>")
        # VOC counts pixels from 1, both ends included: pixels xmin..xmax cover [xmin - 1, xmax)
        x1, y1 = _voc_number(box, "xmin", path) - 1, _voc_number(box, "ymin", path) - 1
        x2, y2 = _voc_number(box, "xmax", path), _voc_number(box, "ymax", path)
        boxes.append([x1, y1, x2, y2])
        names.append(name)
        difficult.append((obj.findtext("difficult") or "0").strip() == "1")
    return filename, (int(h), int(w)), boxes, names, difficult


def voc_data(
    folder: Any,
    *,
    class_names: Sequence[str] | None,
    include_difficult: bool,
    task: Any,
    validate: bool,
) -> tuple[Any, np.ndarray, Any]:
    """Reads a Pascal VOC folder (``Annotations/*.xml`` + ``JPEGImages/``)."""
    if not isinstance(folder, (str, os.PathLike)) or not os.path.isdir(folder):
        raise DataError(
            format_error(
                "folder is not a folder",
                expected="a Pascal VOC folder with Annotations/ and JPEGImages/",
                received={"folder": folder},
            )
        )
    root = Path(folder)
    annotations = sorted((root / "Annotations").glob("*.xml"))
    if not (root / "JPEGImages").is_dir() or not annotations:
        raise DataError(
            format_error(
                "The folder lacks Annotations/*.xml or JPEGImages/",
                expected="the Pascal VOC layout: Annotations/<name>.xml and JPEGImages/<name>.jpg",
                received={"folder": os.fspath(folder)},
            )
        )
    paths, sizes, raw_boxes, raw_names = [], [], [], []
    for xml_path in annotations:
        filename, size, boxes, names, difficult = _read_voc_file(str(xml_path))
        keep = [include_difficult or not d for d in difficult]
        paths.append(str(root / "JPEGImages" / filename))
        sizes.append(size)
        raw_boxes.append([b for b, k in zip(boxes, keep, strict=True) if k])
        raw_names.append(np.array([n for n, k in zip(names, keep, strict=True) if k], dtype=str))
    label_arrays = [n if n.size else np.zeros(0, dtype=str) for n in raw_names]
    if class_names is None:
        found = sorted({str(v) for n in label_arrays for v in n.tolist()})
        class_names = found or None
    indices, names = _class_indices(
        [n.astype(object) if n.size else np.zeros(0, object) for n in label_arrays],
        class_names,
        "<object><name>",
    )
    canonical = [
        _canonical_boxes(
            _box_rows(b, i, "boxes"), "xyxy", s, i, "folder", os.path.basename(annotations[i])
        )
        for i, (b, s) in enumerate(zip(raw_boxes, sizes, strict=True))
    ]
    _check_files(paths, "folder", str(root / "JPEGImages"))
    size_arr = np.array(sizes, np.int64).reshape(-1, 2)
    if validate:
        _validate_files(paths, size_arr, "folder")
    source = FileImages(np.array(paths, dtype=str), size_arr)
    return _finish(source, canonical, indices, names, task, "folder")
