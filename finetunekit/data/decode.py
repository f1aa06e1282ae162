"""Image files end to end: one decode and one resize, shared by training and serving.

A model trained from a folder (:meth:`~finetunekit.DatasetAdapter.from_directory`)
takes **decoded images of any size** with the folder's channel count
(``(None, None, C)``, float32; integer arrays are cast). Its first layer,
:class:`ImageFolderInput`, resizes them to the folder's ``image_size`` with
the folder's interpolation. So the saved model predicts on arrays at their
original size (a ``(N, 28, 28)`` stack of the digits it was trained on from
28x28 PNG files) and ``result.predict`` / ``result.evaluate`` /
``finetunekit predict`` read image files and folders by decoding them the
way the folder source does, at their stored size.

Why decoded pixels and not encoded bytes (``tf.string``) as the model's
input: a Keras model has one input signature, and the same model must take
arrays at the original size; decoding ops do not export to LiteRT or ONNX;
and the feature cache and augmentation work on pixels. Decoding is one
function (:func:`decode_image_file`) used by the folder source and by every
path / folder input of a result.

Why the folder source still resizes: images of mixed sizes must be resized
before they can be batched. It resizes with :func:`resize_images`, the same
function the model's :class:`ImageFolderInput` layer runs, and a resize to
the size an image already has is skipped (some methods, e.g. ``"gaussian"``,
would otherwise blur it), so for every image ``model(resized file) ==
model(decoded file at its stored size)``: training, files and arrays see the
same pixels.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from finetunekit.errors import DataError, InputShapeError, format_error

__all__ = [
    "COLOR_MODES",
    "IMAGE_EXTENSIONS",
    "ImageFolderInput",
    "conform_images",
    "decode_image_file",
    "files_dataset",
    "image_files",
    "image_folder_settings",
    "load_image_file",
    "model_inputs",
    "resize_images",
]

COLOR_MODES = {"rgb": 3, "rgba": 4, "grayscale": 1}
IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")
# Methods whose resize to the same size returns the input exactly (measured: max |diff| 0.0
# on random float images); the others ("lanczos3/5" 3e-5, "gaussian", "mitchellcubic") change
# it, so a same-size resize is skipped with a tf.cond when the size is only known at run time.
_SAME_SIZE_IDENTITY = frozenset({"bilinear", "nearest", "bicubic", "area"})


def resize_images(images: Any, size: Sequence[int], interpolation: str = "bilinear") -> tf.Tensor:
    """Casts images to float32 and resizes them to ``size`` (skipped when they have that size).

    Works on one image ``(H, W, C)`` or a batch ``(B, H, W, C)``. The resize
    is ``tf.image.resize(images, size, method=interpolation)`` (no
    antialiasing), as in ``keras.utils.image_dataset_from_directory``.

    Examples:
        >>> import numpy as np
        >>> x = np.arange(16, dtype="uint8").reshape(1, 4, 4, 1)
        >>> tuple(resize_images(x, (2, 2)).shape), resize_images(x, (4, 4)).numpy().ravel()[:3]
        ((1, 2, 2, 1), array([0., 1., 2.], dtype=float32))
    """
    x = tf.cast(images, tf.float32)
    h, w = int(size[0]), int(size[1])
    static = x.shape[-3:-1]
    if static[0] == h and static[1] == w:
        return x
    known = static[0] is not None and static[1] is not None

    def resize() -> tf.Tensor:
        return tf.image.resize(x, (h, w), method=interpolation)

    if known or interpolation in _SAME_SIZE_IDENTITY:
        out = resize()
    else:
        shape = tf.shape(x)
        same = tf.logical_and(tf.equal(shape[-3], h), tf.equal(shape[-2], w))
        out = tf.cond(same, lambda: x, resize)
    out.set_shape(x.shape[:-3].concatenate([h, w]).concatenate(x.shape[-1:]))
    return out


def decode_image_file(path: Any, channels: int) -> tf.Tensor:
    """Reads and decodes one image file (BMP, GIF, JPEG, PNG) to uint8 ``(H, W, channels)``.

    ``tf.image.decode_image(..., channels=channels, expand_animations=False)``:
    grayscale files are repeated to 3 channels, RGBA files lose their alpha for
    ``channels=3``, RGB files are converted to luma for ``channels=1``.

    Examples:
        >>> decode_image_file("photos/cat/1.png", 3).shape  # doctest: +SKIP
        TensorShape([375, 500, 3])
    """
    image = tf.image.decode_image(tf.io.read_file(path), channels=channels, expand_animations=False)
    image.set_shape((None, None, channels))
    return image


def load_image_file(
    path: Any, size: Sequence[int], channels: int, interpolation: str = "bilinear"
) -> tf.Tensor:
    """One image file decoded and resized to ``size``: what a folder source yields (float32, 0-255).

    Examples:
        >>> load_image_file("photos/cat/1.png", (32, 32), 3).shape  # doctest: +SKIP
        TensorShape([32, 32, 3])
    """
    return resize_images(decode_image_file(path, channels), size, interpolation)


@keras.saving.register_keras_serializable(package="finetunekit")
class ImageFolderInput(keras.layers.Layer):
    """The first layer of a model trained from a folder: images of any size to the folder's size.

    Takes ``(B, H, W, C)`` images of any height and width (``C``: the
    folder's colour mode), casts them to float32 and resizes them to
    ``image_size`` with ``interpolation``, exactly as the folder source
    resized its files for training (:func:`resize_images`; images already at
    ``image_size`` pass unchanged).

    Args:
        image_size: ``(height, width)`` the folder was loaded at.
        color_mode: ``"rgb"``, ``"rgba"`` or ``"grayscale"``.
        interpolation: the folder's resize method.

    Examples:
        >>> import numpy as np
        >>> layer = ImageFolderInput((32, 32), color_mode="grayscale")
        >>> tuple(layer(np.zeros((2, 28, 28, 1), "uint8")).shape)
        (2, 32, 32, 1)
    """

    def __init__(
        self,
        image_size: Sequence[int],
        color_mode: str = "rgb",
        interpolation: str = "bilinear",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if color_mode not in COLOR_MODES:
            raise ValueError(
                f"color_mode must be one of {list(COLOR_MODES)}. Received: color_mode={color_mode!r}"
            )
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.color_mode = color_mode
        self.interpolation = str(interpolation)

    @property
    def channels(self) -> int:
        """The channel count the layer takes (1, 3 or 4)."""
        return COLOR_MODES[self.color_mode]

    def call(self, inputs: Any) -> Any:
        return resize_images(inputs, self.image_size, self.interpolation)

    def compute_output_shape(self, input_shape: tuple[Any, ...]) -> tuple[Any, ...]:
        return (input_shape[0], *self.image_size, self.channels)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "image_size": list(self.image_size),
            "color_mode": self.color_mode,
            "interpolation": self.interpolation,
        }


# --------------------------------------------------------------------------- building


def model_inputs(data: Any) -> tuple[Any, Any, dict[str, Any]]:
    """The model's ``keras.Input``, the tensor the backbone starts from, and facts for ``info``.

    For a folder source: ``Input((None, None, C), float32)`` followed by
    :class:`ImageFolderInput`; otherwise ``Input(data.input_shape,
    data.input_dtype)`` itself.

    Examples:
        >>> import numpy as np
        >>> from finetunekit.data import DatasetAdapter
        >>> inputs, x, info = model_inputs(DatasetAdapter.from_arrays(np.zeros((4, 8, 8)), [0, 1] * 2))
        >>> tuple(inputs.shape), info
        ((None, 8, 8), {})
    """
    settings = getattr(data, "image_decoding", None)
    if not settings:
        inputs = keras.Input(shape=tuple(data.input_shape), dtype=data.input_dtype, name="inputs")
        return inputs, inputs, {}
    channels = COLOR_MODES[settings["color_mode"]]
    inputs = keras.Input(shape=(None, None, channels), dtype="float32", name="inputs")
    x = ImageFolderInput(
        settings["image_size"],
        color_mode=settings["color_mode"],
        interpolation=settings["interpolation"],
        name="input_image",
    )(inputs)
    info = {"image_files": dict(settings), "raw_input_shape": [None, None, channels]}
    return inputs, x, info


def image_folder_settings(model: Any) -> dict[str, Any] | None:
    """How a model trained from a folder decodes files (its :class:`ImageFolderInput`), else None.

    Returns:
        ``{"image_size": [h, w], "color_mode": ..., "interpolation": ...}``.

    Examples:
        >>> import keras
        >>> image_folder_settings(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])) is None
        True
    """
    for layer in getattr(model, "layers", [])[:4]:
        if isinstance(layer, ImageFolderInput):
            return {
                "image_size": list(layer.image_size),
                "color_mode": layer.color_mode,
                "interpolation": layer.interpolation,
            }
    return None


# --------------------------------------------------------------------------- serving


def _is_image_file(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def image_files(path: str | os.PathLike[str]) -> list[str]:
    """The image files ``result.predict(path)`` reads, in the order of its predictions.

    * an image file: ``[path]``;
    * a folder with sub-folders: the files the folder source lists (one
      sub-folder per class, as in training: ``from_directory`` order);
    * a folder without sub-folders: its image files, sorted by name.

    Raises:
        DataError: the path does not exist, or the folder holds no image files.

    Examples:
        >>> image_files("photos/cat/1.png")  # doctest: +SKIP
        ['photos/cat/1.png']
    """
    path = os.fspath(path)
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise DataError(
            format_error(
                "The image path does not exist",
                expected="an image file or a folder of images",
                received={"path": path},
                fix="Check the path (relative paths start at the working directory "
                f"{os.getcwd()!r})",
            )
        )
    subdirs = [
        d
        for d in sorted(os.listdir(path))
        if not d.startswith(".") and os.path.isdir(os.path.join(path, d))
    ]
    if subdirs:
        from finetunekit.data.sources import list_image_directory

        files = list_image_directory(
            path, image_size=(1, 1), color_mode="rgb", class_names=None, interpolation="bilinear"
        )[0]
    else:
        files = [os.path.join(path, f) for f in sorted(os.listdir(path)) if _is_image_file(f)]
    if not files:
        raise DataError(
            format_error(
                "The folder holds no image files",
                expected=f"files ending in {', '.join(IMAGE_EXTENSIONS)}",
                received={"path": path},
                fix="Pass a folder of images (or of class sub-folders of images)",
            )
        )
    return [str(f) for f in files]


def files_dataset(paths: Sequence[str], settings: dict[str, Any], batch_size: int) -> Any:
    """Batches of the files decoded and resized as the folder source does (for ``predict``).

    Examples:
        >>> files_dataset(["a.png"], {"image_size": [32, 32], "color_mode": "rgb",
        ...                           "interpolation": "bilinear"}, 8)  # doctest: +SKIP
    """
    size = tuple(settings["image_size"])
    channels = COLOR_MODES[settings["color_mode"]]
    interpolation = settings["interpolation"]
    ds = tf.data.Dataset.from_tensor_slices(tf.constant([str(p) for p in paths]))
    ds = ds.map(
        lambda p: load_image_file(p, size, channels, interpolation),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def conform_images(x: np.ndarray, color_mode: str) -> np.ndarray:
    """Arrays of images at any size, in the channel layout of a model trained from a folder.

    ``(N, H, W)`` gains a channel axis; other channel counts are converted as
    decoding a file of that kind with the folder's ``color_mode`` does:
    grayscale is repeated to RGB (and given an opaque alpha for ``"rgba"``),
    RGBA loses its alpha for ``"rgb"``, RGB gains an opaque alpha for
    ``"rgba"``. Colour to grayscale is refused: decoders differ in the weights
    they use.

    Raises:
        InputShapeError: the array is not images, or colour for a grayscale model.

    Examples:
        >>> conform_images(np.zeros((2, 28, 28), "uint8"), "grayscale").shape
        (2, 28, 28, 1)
        >>> conform_images(np.zeros((2, 28, 28, 1), "uint8"), "rgb").shape
        (2, 28, 28, 3)
    """
    want = COLOR_MODES[color_mode]
    expected = f"images (N, H, W, {want}) of any height and width" + (
        " or (N, H, W)" if want in (1, 3, 4) else ""
    )
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise InputShapeError(
            format_error(
                f"The model takes images, but the inputs have shape {tuple(x.shape)}",
                expected=expected,
                received={"x.shape": tuple(x.shape)},
                fix="Pass a stack of images, e.g. np.stack(images)",
            )
        )
    have = int(x.shape[-1])
    if have == want:
        return x
    opaque = 255
    if have == 1 and want in (3, 4):
        rgb = np.repeat(x, 3, axis=-1)
        if want == 3:
            return rgb
        return np.concatenate([rgb, np.full_like(x, opaque)], axis=-1)
    if have == 4 and want == 3:
        return x[..., :3]
    if have == 3 and want == 4:
        return np.concatenate([x, np.full_like(x[..., :1], opaque)], axis=-1)
    raise InputShapeError(
        format_error(
            f"The model was trained on {color_mode} images ({want} channel"
            f"{'s' if want > 1 else ''}), but the inputs have {have}",
            expected=expected,
            received={"x.shape": tuple(x.shape)},
            fix="Convert the images the way the training files were decoded (for grayscale, "
            "e.g. PIL's Image.convert('L')), or pass the image files themselves",
        )
    )
