"""Exporting a detector: decoded boxes where the runtime has the ops, raw outputs elsewhere.

* ``"keras"``: the ``.keras`` file (``result.save``); checked by loading it
  and predicting.
* ``"saved_model"``: a SavedModel whose ``serve`` (and ``serving_default``)
  signature takes raw images ``(B, H, W, C)`` of any size in the training
  dtype and returns the decoded detections in those images' pixels:
  ``boxes`` ``(B, D, 4)`` xyxy, ``confidence`` ``(B, D)``, ``labels``
  ``(B, D)`` (``-1`` padding) and ``num_detections`` ``(B,)``: the letterbox,
  decoding and non-max suppression are inside.
* ``"litert"`` and ``"onnx"``: LiteRT has no kernel for TensorFlow's
  ``CombinedNonMaxSuppression`` without the Flex delegate, so these hold the
  network alone: letterboxed float32 images ``(B, S, S, C)`` in the raw value
  range (:class:`~finetunekit.heads.detector.Letterbox`) -> ``boxes`` (box
  offsets per anchor) and ``classes`` (logits per anchor and class). The
  decode step is :func:`decode_raw` (numpy), with the anchors and settings
  written to the metadata JSON beside the file.

Each export is run in its own runtime on a sample and compared with the Keras
model; a disagreement raises :class:`~finetunekit.ExportError`.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from finetunekit.errors import ExportError, format_error

__all__ = ["decode_raw", "export_detector", "letterbox_images"]


def letterbox_images(images: np.ndarray, size: int) -> np.ndarray:
    """Raw images of one size -> the letterboxed float32 batch the raw network takes."""
    from finetunekit.heads.detector import Letterbox

    return np.asarray(Letterbox(size)(images), np.float32)


def _nms(boxes: np.ndarray, scores: np.ndarray, iou: float, limit: int) -> list[int]:
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while len(order) and len(keep) < limit:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        x1 = np.maximum(boxes[i, 0], boxes[rest, 0])
        y1 = np.maximum(boxes[i, 1], boxes[rest, 1])
        x2 = np.minimum(boxes[i, 2], boxes[rest, 2])
        y2 = np.minimum(boxes[i, 3], boxes[rest, 3])
        inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        union = area[i] + area[rest] - inter
        order = rest[inter / np.maximum(union, 1e-12) <= iou]
    return keep


def decode_raw(
    outputs: dict[str, Any],
    anchors: np.ndarray,
    *,
    image_shape: tuple[int, int],
    image_size: int,
    score_threshold: float = 0.05,
    iou_threshold: float = 0.5,
    max_detections: int = 100,
    box_variance: tuple[float, ...] = (0.1, 0.1, 0.2, 0.2),
) -> list[dict[str, Any]]:
    """Detections from the raw network's outputs, in numpy (per-class NMS).

    Args:
        outputs: ``{"boxes": (B, A, 4), "classes": (B, A, K)}`` of the raw
            network (LiteRT / ONNX export).
        anchors: ``(A, 4)`` xyxy in the letterbox's pixels (the metadata's ``anchors``).
        image_shape: the original images' ``(height, width)``.
        image_size: the letterbox's side ``S``.
        score_threshold, iou_threshold, max_detections, box_variance: as
            the detector's (the metadata's ``decode`` entry).

    Returns:
        One dict per image: ``boxes`` (xyxy in the original pixels),
        ``scores``, ``labels``, best first.
    """
    from finetunekit.heads.detector import letterbox_size

    h, w = image_shape
    nh, nw = letterbox_size(int(h), int(w), image_size)
    scale = np.array([nw / w, nh / h, nw / w, nh / h], np.float64)
    d = np.asarray(outputs["boxes"], np.float64) * np.asarray(box_variance)
    a = np.asarray(anchors, np.float64)
    wa, ha = a[:, 2] - a[:, 0], a[:, 3] - a[:, 1]
    cx = a[:, 0] + wa / 2 + d[..., 0] * wa
    cy = a[:, 1] + ha / 2 + d[..., 1] * ha
    bw = np.exp(np.minimum(d[..., 2], 8.0)) * wa
    bh = np.exp(np.minimum(d[..., 3], 8.0)) * ha
    boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=-1)
    scores = 1.0 / (1.0 + np.exp(-np.asarray(outputs["classes"], np.float64)))
    result = []
    for b in range(boxes.shape[0]):
        found: list[tuple[float, int, np.ndarray]] = []
        for k in range(scores.shape[2]):
            keep = np.flatnonzero(scores[b, :, k] > score_threshold)
            for i in _nms(boxes[b, keep], scores[b, keep, k], iou_threshold, max_detections):
                found.append((float(scores[b, keep[i], k]), k, boxes[b, keep[i]]))
        found.sort(key=lambda t: -t[0])
        found = found[:max_detections]
        limit = np.array([w, h, w, h], np.float64)
        result.append(
            {
                "boxes": np.array(
                    [np.clip(box / scale, 0, limit) for _, _, box in found], np.float32
                ).reshape(-1, 4),
                "scores": np.array([s for s, _, _ in found], np.float32),
                "labels": np.array([k for _, k, _ in found], np.int64),
            }
        )
    return result


def _sample(result: Any, sample: Any) -> np.ndarray:
    model = result.model
    channels = int(model.network.inputs[0].shape[-1])
    if sample is not None:
        arr = np.asarray(sample)
        if arr.ndim != 4 or arr.shape[-1] != channels:
            raise ExportError(
                format_error(
                    "A detector's export sample is a batch of images of one size",
                    expected=f"an array (N, H, W, {channels})",
                    received={"sample": f"array of shape {arr.shape}"},
                )
            )
        return arr
    dtype = str(result.info.get("raw_input_dtype") or "uint8")
    rng = np.random.default_rng(0)
    size = model.image_size
    return rng.integers(0, 256, (8, size, size, channels)).astype(dtype)


def _compare(expected: list[dict[str, Any]], got: list[dict[str, Any]]) -> tuple[float, float]:
    """Max |diff| of boxes and scores over the detections both keep, and label agreement."""
    diff, same, total = 0.0, 0, 0
    for a, b in zip(expected, got, strict=True):
        n = min(len(a["scores"]), len(b["scores"]))
        if len(a["scores"]) != len(b["scores"]):
            diff = max(diff, float("inf") if n == 0 else diff)
        if n:
            diff = max(
                diff,
                float(np.max(np.abs(np.asarray(a["boxes"][:n]) - np.asarray(b["boxes"][:n])))),
                float(np.max(np.abs(np.asarray(a["scores"][:n]) - np.asarray(b["scores"][:n])))),
            )
            same += int(np.sum(np.asarray(a["labels"][:n]) == np.asarray(b["labels"][:n])))
            total += n
    return diff, (same / total if total else 1.0)


def _saved_model(model: Any, path: str, dtype: str) -> None:
    import keras
    import tensorflow as tf

    channels = int(model.network.inputs[0].shape[-1])
    archive = keras.export.ExportArchive()
    archive.track(model)

    def serve(images: Any) -> Any:
        return model.decode(images, model(images, training=False))

    archive.add_endpoint(
        name="serve",
        fn=serve,
        input_signature=[tf.TensorSpec([None, None, None, channels], dtype, name="images")],
    )
    archive.write_out(path, verbose=False)


def _run_saved_model(path: str, images: np.ndarray) -> list[dict[str, Any]]:
    import tensorflow as tf

    loaded = tf.saved_model.load(path)  # kept alive while serve runs (it owns the variables)
    out = {k: np.asarray(v) for k, v in loaded.serve(tf.constant(images)).items()}
    return _unpad(out)


def _unpad(out: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    result = []
    for row in range(len(out["num_detections"])):
        k = int(out["num_detections"][row])
        result.append(
            {
                "boxes": out["boxes"][row, :k],
                "scores": out["confidence"][row, :k],
                "labels": out["labels"][row, :k],
            }
        )
    return result


def _raw_network(model: Any) -> Any:
    """The network with one float32 input (LiteRT / ONNX take it as it is)."""
    return model.network


def _run_raw(path: str, format: str, batch: np.ndarray) -> dict[str, np.ndarray]:
    if format == "onnx":
        from finetunekit.export import _require

        ort = _require("onnxruntime", "onnxruntime", "onnx")
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        values = session.run(None, {session.get_inputs()[0].name: batch})
        return _named(dict(zip(names, values, strict=True)), batch)
    from finetunekit.export import _litert_interpreter

    interpreter = _litert_interpreter(path)
    detail = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(detail["index"], list(batch.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(detail["index"], batch.astype(detail["dtype"]))
    interpreter.invoke()
    outs = {o["name"]: interpreter.get_tensor(o["index"]) for o in interpreter.get_output_details()}
    return _named(outs, batch)


def _named(outs: dict[str, np.ndarray], batch: np.ndarray) -> dict[str, np.ndarray]:
    """``boxes`` (last axis 4) and ``classes`` among two unnamed outputs."""
    values = list(outs.values())
    if len(values) != 2:
        raise ExportError(
            format_error(
                "The exported detector network should have two outputs",
                expected="boxes (B, A, 4) and classes (B, A, K)",
                received={"outputs": {k: np.shape(v) for k, v in outs.items()}},
            )
        )
    by_name = {k.split(":")[0].split("/")[-1]: v for k, v in outs.items()}
    if "boxes" in by_name and "classes" in by_name:
        return {"boxes": by_name["boxes"], "classes": by_name["classes"]}
    first, second = values
    if np.shape(first)[-1] == 4 and np.shape(second)[-1] != 4:
        return {"boxes": first, "classes": second}
    return {"boxes": second, "classes": first}


def export_detector(
    result: Any,
    path: str,
    format: str,
    *,
    quantize: str | None,
    sample: Any,
    tolerance: float | None,
) -> Any:
    """The detection side of :func:`finetunekit.export.export` (see the module docstring)."""
    from finetunekit.export import _require, checked_report, metadata_path
    from finetunekit.heads.detector import BOX_VARIANCE, predict_images

    model = result.model
    images = _sample(result, sample)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    meta: dict[str, Any] = {
        "format": format,
        "quantize": quantize,
        "task": result.task,
        "class_names": list(result.class_names),
        "info": result.info,
    }
    try:
        if format == "keras":
            from finetunekit.result import load

            result.save(path)
            expected = predict_images(model, images, batch_size=len(images))
            got = predict_images(load(path).model, images, batch_size=len(images))
            diff, agreement = _compare(expected, got)
            meta["input"] = {"images": "raw (B, H, W, C) of any size", "dtype": str(images.dtype)}
        elif format == "saved_model":
            _saved_model(model, path, str(images.dtype))
            expected = predict_images(model, images, batch_size=len(images))
            diff, agreement = _compare(expected, _run_saved_model(path, images))
            meta["input"] = {"images": "raw (B, H, W, C) of any size", "dtype": str(images.dtype)}
            meta["output"] = "boxes (B, D, 4) xyxy pixels, confidence, labels (-1 padding), "
            "num_detections"
        else:
            if format == "onnx":
                _require("tf2onnx", "tf2onnx onnx onnxruntime", "onnx")
            kwargs: dict[str, Any] = {}
            if quantize:
                import tensorflow as tf

                kwargs["optimizations"] = [tf.lite.Optimize.DEFAULT]
            network = _raw_network(model)
            network.export(path, format=format, verbose=False, **kwargs)
            batch = letterbox_images(images, model.image_size)
            raw = network.predict(batch, verbose=0)
            outputs = _run_raw(path, format, batch)
            diff = max(
                float(np.max(np.abs(np.asarray(outputs[k], np.float64) - np.asarray(raw[k]))))
                for k in raw
            )
            agreement = float(
                np.mean(
                    np.argmax(outputs["classes"], -1) == np.argmax(np.asarray(raw["classes"]), -1)
                )
            )
            meta["input"] = {
                "images": f"letterboxed float32 (B, {model.image_size}, {model.image_size}, C) "
                "in the raw value range: finetunekit.heads.detector_export.letterbox_images",
            }
            meta["decode"] = {
                "function": "finetunekit.heads.detector_export.decode_raw",
                "image_size": model.image_size,
                "score_threshold": model.score_threshold,
                "iou_threshold": model.iou_threshold,
                "max_detections": model.max_detections,
                "box_variance": list(BOX_VARIANCE),
                "anchors": model.anchor_boxes.tolist(),
            }
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(
            format_error(
                f"The detector could not be exported as {format} ({str(exc)[:300]})",
                expected="a detector the converter supports",
                received={"format": format, "path": path},
                fix="Try format='saved_model', which keeps every TensorFlow op",
            )
        ) from exc
    target = metadata_path(path, format)
    with open(target, "w", encoding="utf-8") as handle:
        json.dump(meta, handle, indent=2, default=str)
    return checked_report(
        path, format, quantize, target, int(len(images)), diff, agreement, tolerance, "detector"
    )
