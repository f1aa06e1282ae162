"""Temporal heads: from per-frame features of clips to one vector per clip.

Frame-wise backbones (see ``finetunekit.backbones.video``) give features of
shape ``(B, T, h, w, c)`` (spatial maps per frame) or ``(B, T, F)``. The head
first pools each frame spatially (``head_frame_pool``), then models time:

| ``temporal`` | layers | sees frame order? |
| --- | --- | --- |
| ``"average"`` | mean over frames (``head_pool``) | no |
| ``"conv1d"`` | ``Conv1D`` over time (``head_temporal_conv``), then mean (``head_pool``) | yes (local) |
| ``"gru"`` | ``GRU`` over time (``head_temporal_gru``) | yes |

Averaging frames is cheap and enough when the content of single frames
decides the class; it cannot tell a clip from its reverse (motion direction),
which the two temporal models can.
"""

from __future__ import annotations

from typing import Any

import keras

__all__ = ["TEMPORAL_MODES", "build_temporal"]

TEMPORAL_MODES = ("average", "conv1d", "gru")


def build_temporal(x: Any, mode: str, units: int, pooling: str = "avg") -> Any:
    """Adds the temporal head layers on clip features ``x``; returns ``(B, F)``.

    Args:
        x: symbolic features ``(B, T, F)`` or ``(B, T, h, w, c)``.
        mode: one of :data:`TEMPORAL_MODES`.
        units: filters of the ``Conv1D`` / units of the ``GRU``.
        pooling: per-frame spatial pooling of 5-D features: ``"avg"``,
            ``"max"`` or ``"flatten"`` (keeps where things are in the frame).

    Examples:
        >>> inp = keras.Input((6, 16))
        >>> tuple(build_temporal(inp, "gru", 8).shape)
        (None, 8)
    """
    if mode not in TEMPORAL_MODES:
        raise ValueError(f"mode must be one of {TEMPORAL_MODES}. Received: mode={mode!r}")
    if len(x.shape) == 5:
        if pooling == "flatten":
            frame_pool: keras.layers.Layer = keras.layers.Flatten()
        elif pooling == "max":
            frame_pool = keras.layers.GlobalMaxPooling2D()
        else:
            frame_pool = keras.layers.GlobalAveragePooling2D()
        x = keras.layers.TimeDistributed(frame_pool, name="head_frame_pool")(x)
    elif len(x.shape) != 3:
        raise ValueError(f"clip features must be (B, T, F) or (B, T, h, w, c); got {x.shape}")
    if mode == "gru":
        return keras.layers.GRU(units, name="head_temporal_gru")(x)
    if mode == "conv1d":
        x = keras.layers.Conv1D(
            units, 3, padding="same", activation="relu", name="head_temporal_conv"
        )(x)
    return keras.layers.GlobalAveragePooling1D(name="head_pool")(x)
