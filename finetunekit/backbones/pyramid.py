"""Feature maps at several strides from one backbone network, for detectors.

A detector's feature pyramid reads the backbone at strides ``2**level``
(level 3: a map 8 times smaller than the input). :func:`pyramid_taps` finds,
in any functional Keras network (``keras.applications``, a model the user
brings), the LAST layer whose output has the spatial size of each wanted
level: the deepest features at that resolution, just before the network
downsamples again. Nothing is assumed about layer names.

Example:
    >>> import keras
    >>> net = keras.applications.MobileNetV3Small(
    ...     input_shape=(64, 64, 3), include_top=False, weights=None)
    >>> taps = pyramid_taps(net, (64, 64), [3, 4, 5])
    >>> {k: tuple(v.shape[1:3]) for k, v in taps.items()}
    {'P3': (8, 8), 'P4': (4, 4), 'P5': (2, 2)}
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from finetunekit.errors import BackboneError, format_error

__all__ = ["available_levels", "pyramid_taps"]


def _maps(model: keras.Model, size: tuple[int, int]) -> list[tuple[Any, tuple[int, int]]]:
    """``(output, (height, width))`` of every layer with one 4-D output, in graph order.

    A network of free input size (``(None, None, C)``) has no static map
    sizes: one pass of a blank ``size`` image measures them. Maps smaller than
    the network's final output are left out: they are squeeze-and-excitation
    poolings inside a block, not a stage of the network.
    """
    outs = []
    for layer in model.layers:
        try:
            out = layer.output
        except (AttributeError, ValueError, RuntimeError):  # shared or unused layers
            continue
        if isinstance(out, (list, tuple, dict)) or len(getattr(out, "shape", ())) != 4:
            continue
        outs.append(out)
    if not outs:
        return []
    if any(d is None for out in outs for d in out.shape[1:3]):
        channels = int(model.inputs[0].shape[-1] or 3)
        probe = keras.Model(model.inputs[0], outs)
        blank = np.zeros((1, *size, channels), np.float32)
        shapes = [(int(np.shape(v)[1]), int(np.shape(v)[2])) for v in probe(blank, training=False)]
    else:
        shapes = [(int(out.shape[1]), int(out.shape[2])) for out in outs]
    last = next((i for i, out in enumerate(outs) if out is model.outputs[0]), len(outs) - 1)
    final = shapes[last]
    return [
        (out, hw)
        for out, hw in zip(outs, shapes, strict=True)
        if hw[0] >= final[0] and hw[1] >= final[1]
    ]


def _level_sizes(size: tuple[int, int], level: int) -> tuple[int, int]:
    stride = 2**level
    return math.ceil(size[0] / stride), math.ceil(size[1] / stride)


def available_levels(model: keras.Model, size: tuple[int, int], top: int = 7) -> list[int]:
    """The pyramid levels (1..``top``) at which ``model`` has a feature map.

    Examples:
        >>> import keras
        >>> net = keras.applications.MobileNetV3Small(
        ...     input_shape=(64, 64, 3), include_top=False, weights=None)
        >>> available_levels(net, (64, 64))
        [1, 2, 3, 4, 5]
    """
    spatial = {hw for _, hw in _maps(model, size)}
    return [lv for lv in range(1, top + 1) if _level_sizes(size, lv) in spatial]


def pyramid_taps(
    model: keras.Model,
    size: tuple[int, int],
    levels: Sequence[int],
    *,
    what: str = "backbone",
    partial: bool = False,
) -> dict[str, Any]:
    """The symbolic feature map of ``model`` at each level, keyed ``"P<level>"``.

    Args:
        model: a functional network built for ``size`` input images.
        size: the input ``(height, width)``.
        levels: the wanted levels (stride ``2**level``), finest first.
        what: the backbone's name, for messages.
        partial: return the run of consecutive levels the network has,
            starting at the first of ``levels`` it has (a detector makes the
            coarser ones itself; its finest level falls back to a coarser one).

    Raises:
        BackboneError: the network has no layer output at a wanted stride
            (e.g. a level finer than its first downsampling, or a nested
            sub-model that hides its layers).
    """
    maps = _maps(model, size)
    taps: dict[str, Any] = {}
    for level in levels:
        want = _level_sizes(size, level)
        found = [out for out, hw in maps if hw == want]
        if not found and partial:
            if taps:
                break
            continue
        if not found:
            have = available_levels(model, size)
            raise BackboneError(
                format_error(
                    f"Backbone {what!r} has no feature map at pyramid level {level} "
                    f"(stride {2**level}: {want[0]}x{want[1]} for {size[0]}x{size[1]} images)",
                    expected=f"levels the network provides: {have}",
                    received={"levels": list(levels)},
                    fix="Use a convolutional backbone whose layers are visible in "
                    "model.layers (not wrapped in one nested model), or larger images",
                )
            )
        taps[f"P{level}"] = found[-1]
    if not taps:
        raise BackboneError(
            format_error(
                f"Backbone {what!r} has no feature map at any of the levels {list(levels)}",
                expected=f"levels the network provides: {available_levels(model, size)}",
                received={"levels": list(levels), "image size": size},
                fix="Use a convolutional backbone whose layers are visible in model.layers",
            )
        )
    return taps
