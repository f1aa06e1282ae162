"""Box formats: names, checks and conversions (numpy only, no TensorFlow).

The names are Keras': ``"xyxy"``, ``"xywh"``, ``"yxyx"`` and ``"cxcywh"`` in
pixels, and the same with the ``"rel_"`` prefix in fractions of the image's
width and height. Detection data (:mod:`finetunekit.data.detection`) and the
detection metrics (:mod:`finetunekit.evaluation.detection`) both use them.
"""

from __future__ import annotations

import difflib
from typing import Any

import numpy as np

from finetunekit.errors import ArgumentTypeError, DataError, format_error

__all__ = ["BOX_FORMATS", "check_box_format", "convert_boxes"]

_BASE_FORMATS = ("xyxy", "xywh", "yxyx", "cxcywh")
#: every accepted ``box_format``
BOX_FORMATS: tuple[str, ...] = (*_BASE_FORMATS, *(f"rel_{f}" for f in _BASE_FORMATS))


def check_box_format(box_format: Any) -> str:
    """The box format's canonical name; raises for unknown ones (suggesting the closest).

    Examples:
        >>> check_box_format("XYWH")
        'xywh'
    """
    if not isinstance(box_format, str):
        raise ArgumentTypeError(
            format_error(
                "box_format must be a string",
                expected=f"one of {list(BOX_FORMATS)}",
                received={"box_format": box_format},
            )
        )
    name = box_format.strip().lower()
    if name not in BOX_FORMATS:
        close = difflib.get_close_matches(name, BOX_FORMATS, n=1)
        raise DataError(
            format_error(
                f"Unknown box_format {box_format!r}",
                expected=f"one of {list(BOX_FORMATS)} ('rel_' formats: fractions of the "
                "image's width and height)",
                received={"box_format": box_format},
                fix=f"Did you mean box_format={close[0]!r}?"
                if close
                else "Name the order of the four numbers of a box",
            )
        )
    return name


def convert_boxes(
    boxes: Any,
    source: str,
    target: str,
    image_size: tuple[float, float] | None = None,
) -> np.ndarray:
    """Converts boxes ``(..., 4)`` between box formats (float64; no checks of the values).

    Args:
        boxes: the boxes, last axis the four numbers.
        source: their format (see :data:`BOX_FORMATS`).
        target: the wanted format.
        image_size: ``(height, width)`` of the image, needed when exactly one
            of the formats is relative.

    Examples:
        >>> convert_boxes([[10, 20, 30, 40]], "xywh", "xyxy").tolist()
        [[10.0, 20.0, 40.0, 60.0]]
        >>> convert_boxes([[0.5, 0.5, 0.5, 1.0]], "rel_cxcywh", "yxyx", (20, 40)).tolist()
        [[0.0, 10.0, 20.0, 30.0]]
    """
    source = check_box_format(source)
    target = check_box_format(target)
    b = np.asarray(boxes, dtype=np.float64)
    a0, a1, a2, a3 = (b[..., i] for i in range(4))
    base = source.removeprefix("rel_")
    if base == "xyxy":
        x1, y1, x2, y2 = a0, a1, a2, a3
    elif base == "xywh":
        x1, y1, x2, y2 = a0, a1, a0 + a2, a1 + a3
    elif base == "yxyx":
        x1, y1, x2, y2 = a1, a0, a3, a2
    else:  # cxcywh
        x1, y1, x2, y2 = a0 - a2 / 2, a1 - a3 / 2, a0 + a2 / 2, a1 + a3 / 2
    relative_in, relative_out = source.startswith("rel_"), target.startswith("rel_")
    if relative_in != relative_out:
        if image_size is None:
            raise DataError(
                format_error(
                    f"Converting {source!r} to {target!r} needs the image size",
                    expected="image_size=(height, width)",
                    received={"image_size": image_size},
                )
            )
        h, w = float(image_size[0]), float(image_size[1])
        sx, sy = (w, h) if relative_in else (1 / w, 1 / h)
        x1, x2, y1, y2 = x1 * sx, x2 * sx, y1 * sy, y2 * sy
    base = target.removeprefix("rel_")
    if base == "xyxy":
        out = (x1, y1, x2, y2)
    elif base == "xywh":
        out = (x1, y1, x2 - x1, y2 - y1)
    elif base == "yxyx":
        out = (y1, x1, y2, x2)
    else:
        out = ((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1)
    return np.stack(out, axis=-1)
