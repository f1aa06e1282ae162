"""Input-adaptation layers that live inside the fine-tuned model.

They make the returned model accept the user's raw inputs (principle 3): any
image size, 1, 3 or 4 channels, integer or float pixels. Both layers are
registered Keras serialisables, so saved models load in Keras' safe mode.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

__all__ = ["ImageInputAdapter", "ImagePreprocess", "PREPROCESSING_MODES"]

PREPROCESSING_MODES = ("caffe", "tf", "torch", "0-1", "-1-1", "none")
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)


@keras.saving.register_keras_serializable(package="finetunekit")
class ImageInputAdapter(keras.layers.Layer):
    """Turns raw images into the backbone's expected size, channels and range.

    Steps, each skipped when not needed: cast to float32; add a channel axis
    to ``(H, W)`` images; convert channels (1 -> 3 by repetition, 4 -> 3 by
    dropping alpha, 3 -> 1 by averaging); rescale values with
    ``x * scale + offset``; resize bilinearly to ``target_size``.

    Args:
        target_size: ``(height, width)`` to resize to, or ``None`` to keep the size.
        in_channels: channels of the raw input (1 for ``(H, W)`` images).
        out_channels: channels the backbone expects.
        add_channel_axis: whether raw inputs are ``(H, W)`` without a channel axis.
        scale: multiplier applied to the values.
        offset: added after ``scale``.

    Examples:
        >>> import numpy as np
        >>> layer = ImageInputAdapter((32, 32), in_channels=1, out_channels=3,
        ...                           add_channel_axis=True)
        >>> tuple(layer(np.zeros((2, 28, 28), "uint8")).shape)
        (2, 32, 32, 3)
    """

    def __init__(
        self,
        target_size: tuple[int, int] | None,
        in_channels: int,
        out_channels: int,
        add_channel_axis: bool = False,
        scale: float = 1.0,
        offset: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.target_size = tuple(target_size) if target_size is not None else None
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.add_channel_axis = bool(add_channel_axis)
        self.scale = float(scale)
        self.offset = float(offset)

    def call(self, inputs: Any) -> Any:
        x = ops.cast(inputs, "float32")
        if self.add_channel_axis:
            x = ops.expand_dims(x, -1)
        if self.in_channels != self.out_channels:
            if self.in_channels == 1:
                x = ops.repeat(x, self.out_channels, axis=-1)
            elif self.in_channels == 4 and self.out_channels == 3:
                x = x[..., :3]
            elif self.out_channels == 1:
                x = ops.mean(x, axis=-1, keepdims=True)
            else:  # pragma: no cover - rejected when the model is built
                raise ValueError(f"cannot map {self.in_channels} to {self.out_channels} channels")
        if self.scale != 1.0 or self.offset != 0.0:
            x = x * self.scale + self.offset
        if self.target_size is not None:
            x = ops.image.resize(x, self.target_size, interpolation="bilinear", antialias=False)
        return x

    def compute_output_shape(self, input_shape: tuple[Any, ...]) -> tuple[Any, ...]:
        shape = list(input_shape)
        if self.add_channel_axis:
            shape.append(1)
        shape[-1] = self.out_channels
        if self.target_size is not None:
            shape[-3], shape[-2] = self.target_size
        return tuple(shape)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "target_size": list(self.target_size) if self.target_size else None,
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "add_channel_axis": self.add_channel_axis,
            "scale": self.scale,
            "offset": self.offset,
        }


@keras.saving.register_keras_serializable(package="finetunekit")
class ImagePreprocess(keras.layers.Layer):
    """The backbone's own input normalisation, as a serialisable layer.

    Takes RGB images with values in 0-255 and applies the normalisation the
    matching ``keras.applications.<module>.preprocess_input`` performs, or
    rescales them to the value range a model the user brings declares
    (``Backbone.from_model(..., preprocessing="0-1")``). Images
    with another channel count (a backbone built with
    ``adapt_channels="first_conv"``) get the mean of the RGB statistics on
    every channel, and no BGR flip.

    Args:
        mode: ``"caffe"`` (BGR, mean subtraction), ``"tf"`` (to [-1, 1]),
            ``"torch"`` (to [0, 1], ImageNet mean/std), ``"0-1"`` (divide
            by 255), ``"-1-1"`` (to [-1, 1], as ``"tf"``) or ``"none"``.

    Examples:
        >>> import numpy as np
        >>> float(ImagePreprocess("tf")(np.full((1, 2, 2, 3), 255.0))[0, 0, 0, 0])
        1.0
    """

    def __init__(self, mode: str = "none", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if mode not in PREPROCESSING_MODES:
            raise ValueError(f"mode must be one of {PREPROCESSING_MODES}. Received: mode={mode!r}")
        self.mode = mode

    def call(self, inputs: Any) -> Any:
        x = ops.cast(inputs, "float32")
        rgb = inputs.shape[-1] in (3, None)  # other channel counts: averaged statistics
        if self.mode == "caffe":
            if rgb:
                x = ops.flip(x, axis=-1) - ops.convert_to_tensor(_CAFFE_MEAN_BGR, "float32")
            else:
                x = x - sum(_CAFFE_MEAN_BGR) / 3.0
        elif self.mode in ("tf", "-1-1"):
            x = x / 127.5 - 1.0
        elif self.mode == "0-1":
            x = x / 255.0
        elif self.mode == "torch":
            if rgb:
                mean = ops.convert_to_tensor(_TORCH_MEAN, "float32")
                std = ops.convert_to_tensor(_TORCH_STD, "float32")
                x = (x / 255.0 - mean) / std
            else:
                x = (x / 255.0 - sum(_TORCH_MEAN) / 3.0) / (sum(_TORCH_STD) / 3.0)
        return x

    def compute_output_shape(self, input_shape: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(input_shape)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "mode": self.mode}
