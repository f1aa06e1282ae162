"""Feeding images of any channel count to an RGB-pretrained network.

``Backbone(..., adapt_channels="first_conv")`` builds the network with the
input's own channel count and adapts the pretrained kernel of its first
convolution instead of converting the images to RGB:

* one channel (grayscale): the kernel summed over its RGB input axis. A
  convolution is linear, so the adapted layer computes exactly what the RGB
  layer computes on the gray image repeated to three channels, with a third of
  the multiplications.
* ``C`` channels: the RGB kernel repeated cyclically over the ``C`` inputs
  (R, G, B, R, ...) and scaled by ``3 / C``, so that a constant image gives
  the same response (exactly when ``C`` is a multiple of 3, approximately
  otherwise).

The backbone's own normalisation (``ImagePreprocess``) uses, for ``C != 3``
channels, the mean of its per-channel RGB statistics on every channel.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from finetunekit.errors import ArgumentTypeError, BackboneError, format_error

__all__ = [
    "ADAPT_CHANNELS",
    "adapt_first_conv",
    "adapt_kernel",
    "check_adapt_channels",
    "first_conv",
]

ADAPT_CHANNELS = ("convert", "first_conv")

# weight-free layers that may come before the first convolution: they treat every
# channel alike, so they work unchanged on any channel count
_CHANNEL_AGNOSTIC: tuple[type, ...] = (
    keras.layers.InputLayer,
    keras.layers.ZeroPadding1D,
    keras.layers.ZeroPadding2D,
    keras.layers.ZeroPadding3D,
    keras.layers.Cropping1D,
    keras.layers.Cropping2D,
    keras.layers.Cropping3D,
)
_CONV_TYPES: tuple[type, ...] = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)


def check_adapt_channels(value: Any) -> str:
    """Validates ``Backbone(adapt_channels=...)``.

    Examples:
        >>> check_adapt_channels("first_conv")
        'first_conv'
    """
    if not isinstance(value, str) or value not in ADAPT_CHANNELS:
        raise ArgumentTypeError(
            format_error(
                "Unknown adapt_channels",
                expected="'convert' (grayscale repeated to RGB, RGBA -> RGB) or 'first_conv' "
                "(the first convolution's pretrained kernel adapted to the input's channels)",
                received={"adapt_channels": value},
                fix="Pass adapt_channels='convert' or adapt_channels='first_conv'",
            )
        )
    return value


def adapt_kernel(kernel: np.ndarray, channels: int, *, bgr: bool = False) -> np.ndarray:
    """Adapts a convolution kernel ``(..., in, out)`` to ``channels`` input channels.

    One channel: the sum over the input axis. ``C`` channels: the input axis
    repeated cyclically to ``C`` and scaled by ``in / C``. The same channel
    count: a copy.

    Args:
        kernel: the pretrained kernel, input channels on the second-to-last axis.
        channels: the new number of input channels.
        bgr: the kernel's inputs are in BGR order (``"caffe"`` preprocessing):
            they are put in RGB order before repeating, as the raw images are RGB.

    Examples:
        >>> import numpy as np
        >>> k = np.arange(6, dtype="float32").reshape(1, 1, 3, 2)
        >>> adapt_kernel(k, 1)[0, 0]
        array([[6., 9.]], dtype=float32)
        >>> adapt_kernel(k, 6)[0, 0, :, 0]
        array([0., 1., 2., 0., 1., 2.], dtype=float32)
    """
    kernel = np.asarray(kernel)
    source = int(kernel.shape[-2])
    if channels == source:
        return kernel.copy()
    if channels == 1:
        return kernel.sum(axis=-2, keepdims=True)
    if bgr:
        kernel = kernel[..., ::-1, :]
    index = np.arange(channels) % source
    return (kernel[..., index, :] * (source / channels)).astype(kernel.dtype)


def first_conv(model: keras.Model, what: str) -> Any:
    """The model's first layer with weights, checked to be a convolution reached safely.

    Raises:
        BackboneError: when the first weight-holding layer is not a
            ``Conv1D/2D/3D`` (channels last, ``groups=1``), or a layer that
            treats channels differently (per-channel rescaling, normalisation,
            a lambda) comes before it.

    Examples:
        >>> import keras
        >>> net = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.ZeroPadding2D(),
        ...                         keras.layers.Conv2D(4, 3, name="stem")])
        >>> first_conv(net, "net").name
        'stem'
    """
    found = None
    layer: Any
    for layer in model.layers:
        if layer.weights:
            if (
                isinstance(layer, _CONV_TYPES)
                and getattr(layer, "data_format", None) == "channels_last"
                and getattr(layer, "groups", 1) == 1
            ):
                return layer
            found = layer.name
            break
        if isinstance(layer, _CHANNEL_AGNOSTIC) or _scalar_rescaling(layer):
            continue
        raise BackboneError(
            format_error(
                f"adapt_channels='first_conv' cannot adapt {what!r}: layer {layer.name!r} "
                f"({type(layer).__name__}) comes before its first convolution and may treat "
                "channels differently",
                expected="a network whose first weights are a convolution, reached only through "
                "padding, cropping or a scalar Rescaling",
                received={"adapt_channels": "first_conv", "backbone": what},
                fix="Use adapt_channels='convert' (grayscale repeated to RGB)",
            )
        )
    raise BackboneError(
        format_error(
            f"adapt_channels='first_conv' cannot adapt {what!r}: its first layer with weights "
            f"({found!r}) is not a plain convolution",
            expected="a Conv1D/2D/3D (channels last, groups=1) as the first layer with weights",
            received={"adapt_channels": "first_conv", "backbone": what},
            fix="Use adapt_channels='convert' (grayscale repeated to RGB)",
        )
    )


def _scalar_rescaling(layer: Any) -> bool:
    if not isinstance(layer, keras.layers.Rescaling):
        return False
    return all(np.ndim(v) == 0 for v in (layer.scale, layer.offset))


def adapt_first_conv(
    model: keras.Model, channels: int, *, what: str = "backbone", bgr: bool = False
) -> keras.Model:
    """A copy of ``model`` that takes ``channels`` input channels.

    The model is rebuilt (``keras.models.clone_model``) on an input with
    ``channels`` channels; every weight is copied, the first convolution's
    kernel adapted with :func:`adapt_kernel`.

    Args:
        model: a functional or Sequential model with one image input.
        channels: the new channel count.
        what: the backbone's name, for error messages.
        bgr: the first convolution expects BGR inputs (``"caffe"`` models).

    Returns:
        The adapted ``keras.Model`` (named like ``model``).

    Raises:
        BackboneError: a model this cannot adapt (see :func:`first_conv`).

    Examples:
        >>> import keras, numpy as np
        >>> rgb = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3)])
        >>> gray = adapt_first_conv(rgb, 1)
        >>> x = np.random.default_rng(0).random((1, 8, 8, 1)).astype("float32")
        >>> bool(np.allclose(gray(x), rgb(np.repeat(x, 3, axis=-1)), atol=1e-5))
        True
    """
    conv = first_conv(model, what)
    shape = tuple(model.inputs[0].shape[1:]) if len(model.inputs) == 1 else ()
    if len(shape) < 2:
        raise BackboneError(
            format_error(
                f"adapt_channels='first_conv' needs a model with one image input; {what!r} "
                f"has {len(model.inputs)} inputs",
                expected="one input of shape (H, W, C)",
                received={"adapt_channels": "first_conv", "backbone": what},
                fix="Use adapt_channels='convert'",
            )
        )
    inputs = keras.Input((*shape[:-1], channels), dtype=model.inputs[0].dtype)
    try:
        listed = not isinstance(model, keras.Sequential) and isinstance(model.input, list)
        structure = [inputs] if listed else inputs
        clone = keras.models.clone_model(model, input_tensors=structure)
    except Exception as exc:
        raise BackboneError(
            format_error(
                f"adapt_channels='first_conv' could not rebuild {what!r} with {channels} input "
                f"channels ({str(exc)[:200]})",
                expected="a functional or Sequential model whose layers serialise",
                received={"adapt_channels": "first_conv", "backbone": what},
                fix="Use adapt_channels='convert'",
            )
        ) from exc
    if len(clone.layers) != len(model.layers):
        raise BackboneError(
            format_error(
                f"{what!r} rebuilt with {channels} channels has other layers than the original",
                expected="the same layers",
                received={"adapt_channels": "first_conv", "backbone": what},
                fix="Use adapt_channels='convert'",
            )
        )
    for old, new in zip(model.layers, clone.layers, strict=True):
        values = old.get_weights()
        if old is conv:
            values[0] = adapt_kernel(values[0], channels, bgr=bgr)
        if [np.shape(v) for v in values] != [tuple(w.shape) for w in new.weights]:
            raise BackboneError(
                format_error(
                    f"adapt_channels='first_conv' cannot adapt {what!r}: layer {old.name!r} "
                    f"changes shape with {channels} input channels",
                    expected="only the first convolution depending on the channel count",
                    received={"adapt_channels": "first_conv", "backbone": what},
                    fix="Use adapt_channels='convert'",
                )
            )
        new.set_weights(values)
    outputs = clone.outputs[0] if len(clone.outputs) == 1 else clone.outputs
    return keras.Model(clone.inputs[0], outputs, name=model.name)
