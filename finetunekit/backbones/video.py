"""Clips through an image backbone, frame by frame (weights shared across frames).

Raw clips ``(B, T, H, W, C)`` are folded into a batch of frames
``(B*T, H, W, C)`` (layer ``input_frames``), adapted and fed to the image
backbone like images, and the per-frame features are unfolded again to
``(B, T, ...)`` (layer ``frame_features``). The head then pools or models
time (see ``HeadReplacer(temporal=...)``). Reshaping instead of
``TimeDistributed`` keeps one backbone call per batch, so BatchNorm stays in
inference mode and feature caching sees an ordinary backbone.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

__all__ = ["FramesToBatch", "BatchToFrames", "is_framewise"]


def is_framewise(raw_shape: tuple[Any, ...], target_shape: tuple[Any, ...]) -> bool:
    """Whether raw examples are clips of the backbone's images: one more leading axis.

    Examples:
        >>> is_framewise((8, 32, 32, 3), (32, 32, 3)), is_framewise((32, 32, 3), (32, 32, 3))
        (True, False)
    """
    return len(target_shape) == 3 and len(raw_shape) == 4


@keras.saving.register_keras_serializable(package="finetunekit")
class FramesToBatch(keras.layers.Layer):
    """Folds clips ``(B, T, ...)`` into frames ``(B*T, ...)``.

    Examples:
        >>> import numpy as np
        >>> tuple(FramesToBatch()(np.zeros((2, 5, 8, 8, 3))).shape)
        (10, 8, 8, 3)
    """

    def call(self, inputs: Any) -> Any:
        shape = ops.shape(inputs)
        return ops.reshape(inputs, (-1, *shape[2:]))

    def compute_output_shape(self, input_shape: tuple[Any, ...]) -> tuple[Any, ...]:
        b, t = input_shape[0], input_shape[1]
        folded = b * t if b is not None and t is not None else None
        return (folded, *input_shape[2:])


@keras.saving.register_keras_serializable(package="finetunekit")
class BatchToFrames(keras.layers.Layer):
    """Unfolds per-frame features ``(B*T, ...)`` to ``(B, T, ...)``, given the clips.

    Called on ``[features, clips]``; ``T`` is read from the clips at run time,
    so clips of any length work.

    Examples:
        >>> import numpy as np
        >>> tuple(BatchToFrames()([np.zeros((10, 16)), np.zeros((2, 5, 8, 8, 3))]).shape)
        (2, 5, 16)
    """

    def call(self, inputs: Any) -> Any:
        features, clips = inputs
        clip_shape = ops.shape(clips)
        feat_shape = ops.shape(features)
        return ops.reshape(features, (clip_shape[0], clip_shape[1], *feat_shape[1:]))

    def compute_output_shape(self, input_shape: Any) -> tuple[Any, ...]:
        features, clips = input_shape
        return (clips[0], clips[1], *features[1:])
