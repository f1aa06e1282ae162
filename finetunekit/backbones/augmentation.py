"""Data augmentation inside the model: presets of Keras preprocessing layers.

``Trainer(augment=...)`` names a preset (``"light"``, ``"standard"``,
``"strong"``) or gives a dict of transforms. The pipeline inserts the
augmentation block into the model right after the raw input adaptation
(resize, channel conversion, cast) and before the backbone's own
normalisation, so it works on backbone-sized float images in their raw value
range. The block is an ``AugmentationBlock`` (a ``keras.Sequential``) named
``"augmentation"`` of standard Keras layers (``RandomFlip``,
``RandomRotation``, ``RandomZoom``, ``RandomTranslation``,
``RandomContrast``): they transform images only when the model runs with
``training=True`` (``fit``) and are the identity in ``predict``,
``evaluate``, ``model(x)`` and exported artifacts; saved models load in
Keras' safe mode.

Clips ``(T, H, W, C)`` on an image backbone get the same random transform on
every frame of a clip: the frames are stacked along the channel axis
(``FramesToChannels``), augmented together and unstacked
(``ChannelsToFrames``).
"""

from __future__ import annotations

import difflib
from typing import Any

import keras
from keras import ops

from finetunekit.errors import ArgumentTypeError, TrainerError, format_error

__all__ = [
    "AUGMENT_KEYS",
    "AUGMENT_PRESETS",
    "AugmentationBlock",
    "ChannelsToFrames",
    "FramesToChannels",
    "apply_augmentation",
    "augmentation_layers",
    "check_augment",
    "check_augment_inputs",
    "resolve_augment",
]

#: The named presets of ``Trainer(augment=...)``.
AUGMENT_PRESETS: dict[str, dict[str, Any]] = {
    "light": {"flip": "horizontal", "rotation": 0.05, "zoom": 0.1},
    "standard": {
        "flip": "horizontal",
        "rotation": 0.1,
        "zoom": 0.15,
        "translation": 0.1,
        "contrast": 0.2,
    },
    "strong": {
        "flip": "horizontal",
        "rotation": 0.2,
        "zoom": 0.25,
        "translation": 0.15,
        "contrast": 0.4,
    },
}

#: The keys of the dict form, in the order their layers are applied.
AUGMENT_KEYS = ("flip", "rotation", "zoom", "translation", "contrast")
_FLIP_MODES = ("horizontal", "vertical", "horizontal_and_vertical")
_LIMITS = {  # key: (upper bound, meaning)
    "rotation": (0.5, "fraction of a full turn: 0.1 rotates by up to +-36 degrees"),
    "zoom": (0.9, "fraction of the size: 0.2 zooms in or out by up to 20%"),
    "translation": (0.9, "fraction of the size: 0.1 shifts by up to 10% each way"),
    "contrast": (1.0, "0.2 scales the contrast by a factor in [0.8, 1.2]"),
}


def check_augment(augment: Any) -> None | str | dict[str, Any]:
    """Validates ``Trainer(augment=...)``; returns the JSON-serialisable form kept in the recipe.

    Args:
        augment: ``None``, a preset name (one of :data:`AUGMENT_PRESETS`) or a
            dict with some of the keys ``"flip"`` (``"horizontal"``,
            ``"vertical"``, ``"horizontal_and_vertical"`` or ``None``),
            ``"rotation"``, ``"zoom"``, ``"translation"`` and ``"contrast"``
            (floats; 0 or ``None`` switch a transform off).

    Returns:
        ``None``, the preset name, or a normalised copy of the dict.

    Raises:
        TrainerError: an unknown preset or key, or a value out of range.
        ArgumentTypeError: ``augment`` or a value of the wrong type.

    Examples:
        >>> check_augment("light")
        'light'
        >>> check_augment({"flip": "horizontal", "zoom": 0.2})
        {'flip': 'horizontal', 'zoom': 0.2}
    """
    if augment is None:
        return None
    if isinstance(augment, str):
        if augment not in AUGMENT_PRESETS:
            close = difflib.get_close_matches(augment.lower(), list(AUGMENT_PRESETS), n=1)
            hint = f"Did you mean {close[0]!r}? " if close else ""
            raise TrainerError(
                format_error(
                    f"Unknown augmentation preset {augment!r}",
                    expected=f"one of {sorted(AUGMENT_PRESETS)}, a dict of transforms or None",
                    received={"augment": augment},
                    fix=f"{hint}Pass augment='standard' or e.g. "
                    "augment={'flip': 'horizontal', 'rotation': 0.1}",
                )
            )
        return augment
    if not isinstance(augment, dict):
        raise ArgumentTypeError(
            format_error(
                "augment must be None, a preset name or a dict of transforms",
                expected=f"None, one of {sorted(AUGMENT_PRESETS)}, or a dict with keys "
                f"{list(AUGMENT_KEYS)}",
                received={"augment": augment},
                fix="Pass augment='standard'",
            )
        )
    unknown = sorted(str(k) for k in augment if k not in AUGMENT_KEYS)
    if unknown:
        raise TrainerError(
            format_error(
                f"Unknown augmentation key(s) {unknown}",
                expected=f"keys among {list(AUGMENT_KEYS)}",
                received={"augment": augment},
                fix="Use e.g. augment={'flip': 'horizontal', 'rotation': 0.1, 'zoom': 0.2}",
            )
        )
    out: dict[str, Any] = {}
    for key in AUGMENT_KEYS:
        if key not in augment:
            continue
        value = augment[key]
        if key == "flip":
            if value is not None and value not in _FLIP_MODES:
                raise TrainerError(
                    format_error(
                        "Unknown flip mode",
                        expected=f"one of {list(_FLIP_MODES)} or None",
                        received={"flip": value},
                        fix="Pass 'flip': 'horizontal'",
                    )
                )
            out[key] = value
            continue
        if value is None:
            out[key] = None
            continue
        limit, meaning = _LIMITS[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ArgumentTypeError(
                format_error(
                    f"augment[{key!r}] must be a number",
                    expected=f"a float in [0, {limit}] ({meaning})",
                    received={key: value},
                    fix=f"Pass {key!r}: 0.1",
                )
            )
        if not 0.0 <= float(value) <= limit:
            raise TrainerError(
                format_error(
                    f"augment[{key!r}] is out of range",
                    expected=f"a float in [0, {limit}] ({meaning})",
                    received={key: value},
                    fix=f"Pass {key!r}: 0.1",
                )
            )
        out[key] = float(value)
    if not any(out.values()):
        raise TrainerError(
            format_error(
                "augment switches every transform off",
                expected=f"at least one of {list(AUGMENT_KEYS)} set (non-zero), or augment=None",
                received={"augment": augment},
                fix="Pass augment=None for no augmentation, or e.g. {'flip': 'horizontal'}",
            )
        )
    return out


def resolve_augment(augment: Any) -> dict[str, Any]:
    """The transforms of a checked ``augment`` value (a preset is expanded), ``{}`` for ``None``.

    Examples:
        >>> resolve_augment("light")
        {'flip': 'horizontal', 'rotation': 0.05, 'zoom': 0.1}
    """
    augment = check_augment(augment)
    if augment is None:
        return {}
    spec = AUGMENT_PRESETS[augment] if isinstance(augment, str) else augment
    return {k: v for k, v in spec.items() if v}


def augmentation_layers(
    augment: Any,
    value_range: tuple[float, float] = (0.0, 255.0),
    *,
    name: str = "augmentation",
) -> AugmentationBlock | None:
    """Builds the augmentation block: an :class:`AugmentationBlock` of Keras random layers.

    Each layer runs in float32 (also under a mixed-precision policy), so at
    inference the block passes images through unchanged, bit for bit.

    Args:
        augment: a value :func:`check_augment` accepts.
        value_range: ``(low, high)`` of the image values the block sees;
            ``RandomContrast`` clips its output to it.
        name: the block's name.

    Returns:
        The block, or ``None`` when ``augment`` is ``None``.

    Examples:
        >>> import numpy as np
        >>> block = augmentation_layers("light")
        >>> [layer.__class__.__name__ for layer in block.layers]
        ['RandomFlip', 'RandomRotation', 'RandomZoom']
        >>> x = np.random.rand(2, 8, 8, 3).astype("float32")
        >>> bool(np.array_equal(block(x, training=False), x))
        True
    """
    spec = resolve_augment(augment)
    if not spec:
        return None
    low, high = float(value_range[0]), float(value_range[1])
    layers: list[Any] = []
    opts: dict[str, Any] = {"dtype": "float32"}
    if spec.get("flip"):
        layers.append(keras.layers.RandomFlip(spec["flip"], name=f"{name}_flip", **opts))
    if spec.get("rotation"):
        layers.append(
            keras.layers.RandomRotation(spec["rotation"], name=f"{name}_rotation", **opts)
        )
    if spec.get("zoom"):
        layers.append(keras.layers.RandomZoom(spec["zoom"], name=f"{name}_zoom", **opts))
    if spec.get("translation"):
        t = spec["translation"]
        layers.append(keras.layers.RandomTranslation(t, t, name=f"{name}_translation", **opts))
    if spec.get("contrast"):
        layers.append(
            keras.layers.RandomContrast(
                spec["contrast"],
                value_range=(low, high if high > low else low + 1.0),
                name=f"{name}_contrast",
                **opts,
            )
        )
    return AugmentationBlock(layers, name=name)


@keras.saving.register_keras_serializable(package="finetunekit")
class AugmentationBlock(keras.Sequential):
    """A ``keras.Sequential`` of random layers that only runs when ``training`` is true.

    Keras' image preprocessing layers default to ``training=True`` when
    called without it, so a bare ``model(x)`` (and a traced SavedModel
    signature) would augment. This block turns an unspecified ``training``
    into ``False``: it transforms images in ``fit`` (``training=True``) and
    nowhere else. It stays a Keras model, so tools that walk nested layers
    (the feature cache) see its random layers.

    Examples:
        >>> import numpy as np
        >>> block = AugmentationBlock([keras.layers.RandomFlip("horizontal")])
        >>> x = np.arange(8, dtype="float32").reshape(1, 2, 4, 1)
        >>> bool(np.array_equal(block(x), x))
        True
    """

    def call(self, inputs: Any, training: Any = None, mask: Any = None, **kwargs: Any) -> Any:
        return super().call(inputs, training=bool(training), mask=mask, **kwargs)


def check_augment_inputs(
    augment: Any,
    raw_shape: tuple[Any, ...],
    input_dtype: str,
    backbone_input_shape: tuple[Any, ...] | None = None,
) -> None:
    """Raises ``TrainerError`` before anything is built when ``augment`` cannot apply.

    Augmentation needs images ``(H, W)`` / ``(H, W, C)`` or clips
    ``(T, H, W, C)`` of them; texts and other arrays (e.g. feature vectors)
    are refused.

    Args:
        augment: the Trainer's ``augment`` (``None`` checks nothing).
        raw_shape: the raw per-example input shape.
        input_dtype: the raw inputs' dtype name (``"string"`` for texts).
        backbone_input_shape: the backbone's input shape when known (not an
            image backbone when it is not ``(H, W, C)``), or ``None``.

    Examples:
        >>> check_augment_inputs("light", (28, 28), "uint8")
        >>> check_augment_inputs("light", (), "string")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        finetunekit.errors.TrainerError: Trainer(augment=...) augments images, ...
    """
    if augment is None:
        return
    problem = None
    if input_dtype == "string":
        problem = "texts"
    elif backbone_input_shape is not None and len(tuple(backbone_input_shape)) != 3:
        problem = f"inputs of a non-image backbone (input shape {tuple(backbone_input_shape)})"
    elif len(tuple(raw_shape)) not in (2, 3, 4):
        problem = f"examples of shape {tuple(raw_shape)}"
    if problem:
        raise _not_images(augment, problem)


def _not_images(augment: Any, problem: str) -> TrainerError:
    return TrainerError(
        format_error(
            f"Trainer(augment=...) augments images, but the inputs are {problem}",
            expected="images (H, W) or (H, W, C), or clips (T, H, W, C), on an image backbone",
            received={"augment": augment},
            fix="Pass Trainer(augment=None) for these inputs",
        )
    )


def apply_augmentation(
    x: Any,
    augment: Any,
    *,
    input_range: str,
    value_range: tuple[float, float] | None = None,
    clips: Any = None,
) -> Any:
    """Adds the augmentation block to the symbolic backbone-sized images ``x``.

    Called by :meth:`Backbone.build` right after the raw input adaptation.

    Args:
        x: symbolic images ``(B, H, W, C)`` (frames ``(B*T, H, W, C)`` for clips).
        augment: the Trainer's ``augment``; ``None`` returns ``x`` unchanged.
        input_range: the resolved raw range (``"0-255"``, ``"0-1"``, ``"-1-1"``
            or ``"none"``); every range but ``"none"`` reaches this point
            rescaled to 0-255.
        value_range: ``(min, max)`` of a sample of raw float inputs, used
            for ``"none"`` (default 0-255).
        clips: the raw clips ``(B, T, H, W, C)`` when ``x`` holds their
            frames: every frame of a clip then gets the same transform.

    Returns:
        The augmented symbolic tensor (same shape as ``x``).

    Raises:
        TrainerError: ``x`` is not a batch of images.
    """
    if augment is None:
        return x
    if len(x.shape) != 4:
        raise _not_images(augment, f"tensors of shape {tuple(x.shape[1:])} at the backbone")
    if input_range == "none" and value_range is not None:
        pixel_range = (float(value_range[0]), float(value_range[1]))
    else:
        pixel_range = (0.0, 255.0)
    block = augmentation_layers(augment, pixel_range)
    if block is None:
        return x
    if clips is None:
        return block(x)
    stacked = FramesToChannels(name="augmentation_stack_frames")([x, clips])
    return ChannelsToFrames(name="augmentation_unstack_frames")([block(stacked), clips])


def describe(augment: Any) -> str:
    """A one-line description of the transforms, for ``info`` and reprs.

    Examples:
        >>> describe("light")
        'flip=horizontal, rotation=0.05, zoom=0.1'
    """
    return ", ".join(f"{k}={v}" for k, v in resolve_augment(augment).items())


@keras.saving.register_keras_serializable(package="finetunekit")
class FramesToChannels(keras.layers.Layer):
    """Stacks the frames of each clip along the channel axis: ``(B*T, H, W, C)`` -> ``(B, H, W, T*C)``.

    Called on ``[frames, clips]`` (``T`` is read from the clips), so a
    spatial transform or contrast change drawn per example applies to every
    frame of a clip alike.

    Examples:
        >>> import numpy as np
        >>> tuple(FramesToChannels()([np.zeros((6, 4, 4, 3)), np.zeros((2, 3, 4, 4, 3))]).shape)
        (2, 4, 4, 9)
    """

    def call(self, inputs: Any) -> Any:
        frames, clips = inputs
        c, f = ops.shape(clips), ops.shape(frames)
        x = ops.reshape(frames, (c[0], c[1], f[1], f[2], f[3]))
        x = ops.transpose(x, (0, 2, 3, 1, 4))
        return ops.reshape(x, (c[0], f[1], f[2], c[1] * f[3]))

    def compute_output_shape(self, input_shape: Any) -> tuple[Any, ...]:
        frames, clips = input_shape
        t, ch = clips[1], frames[-1]
        return (clips[0], frames[1], frames[2], t * ch if t and ch else None)


@keras.saving.register_keras_serializable(package="finetunekit")
class ChannelsToFrames(keras.layers.Layer):
    """Inverse of :class:`FramesToChannels`: ``(B, H, W, T*C)`` -> ``(B*T, H, W, C)``.

    Called on ``[stacked, clips]``.

    Examples:
        >>> import numpy as np
        >>> clips = np.random.rand(2, 3, 4, 4, 3).astype("float32")
        >>> frames = clips.reshape(6, 4, 4, 3)
        >>> back = ChannelsToFrames()([FramesToChannels()([frames, clips]), clips])
        >>> bool(np.array_equal(back, frames))
        True
    """

    def call(self, inputs: Any) -> Any:
        x, clips = inputs
        t, s = ops.shape(clips)[1], ops.shape(x)
        channels = s[3] // t
        x = ops.reshape(x, (s[0], s[1], s[2], t, channels))
        x = ops.transpose(x, (0, 3, 1, 2, 4))
        return ops.reshape(x, (-1, s[1], s[2], channels))

    def compute_output_shape(self, input_shape: Any) -> tuple[Any, ...]:
        stacked, clips = input_shape
        b, t, ch = clips[0], clips[1], stacked[-1]
        return (b * t if b and t else None, stacked[1], stacked[2], ch // t if t and ch else None)
