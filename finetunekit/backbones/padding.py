"""Dynamic padding for text models: pay for the tokens a batch has, not for ``sequence_length``.

A KerasHub preprocessor pads every text to ``sequence_length`` tokens. With
``padding="dynamic"`` (the default of :class:`~finetunekit.backbones.text.TextBackbone`)
the model cuts each batch's ``token_ids`` / ``padding_mask`` / ``segment_ids``
after the last real token of its longest text, rounded **up** to a multiple of
:data:`PAD_MULTIPLE` (and never past ``sequence_length``), before the encoder
runs. Only padding at the end is removed, so every real token keeps its
position (position embeddings are unchanged) and, because the padding mask
already hides padding from attention and pooling, every example's output is
the one the fully padded batch gives (tested to float tolerance). The cut
happens inside the model, so a saved model still takes raw strings, in
batches of any size and any mix of lengths: there is no train/serve skew.

Examples:
    >>> import numpy as np
    >>> mask = np.array([[1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    ...                  [1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0]], dtype=bool)
    >>> out = trim_padding({"padding_mask": mask, "token_ids": np.ones((2, 12), "int32")},
    ...                    multiple=4, cap=12)
    >>> tuple(out["token_ids"].shape)
    (2, 8)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from finetunekit.errors import BackboneError, format_error

__all__ = ["TEXT_PADDINGS", "PAD_MULTIPLE", "check_padding", "padded_length", "trim_padding"]

TEXT_PADDINGS = ("dynamic", "fixed")
"""``"dynamic"``: cut each batch after its longest text (rounded up); ``"fixed"``: always
``sequence_length`` tokens."""

PAD_MULTIPLE = 8
"""Kept lengths are multiples of this (capped at ``sequence_length``): at most 7 padding
tokens per text beyond the longest, and at most ``sequence_length / 8`` distinct shapes."""


def check_padding(padding: Any) -> str:
    """Validates a text ``padding`` setting and returns it.

    Raises:
        BackboneError: ``padding`` is not one of :data:`TEXT_PADDINGS`.

    Examples:
        >>> check_padding("dynamic")
        'dynamic'
    """
    if not isinstance(padding, str) or padding not in TEXT_PADDINGS:
        raise BackboneError(
            format_error(
                "Unknown text padding",
                expected=f"one of {TEXT_PADDINGS}: 'dynamic' cuts each batch after its longest "
                "text (same outputs, less work), 'fixed' always pads to sequence_length",
                received={"padding": padding},
                fix="Pass padding='dynamic' (or 'fixed' for one constant shape, e.g. for export)",
            )
        )
    return padding


def padded_length(longest: int, multiple: int, cap: int) -> int:
    """The kept length for a batch whose longest text has ``longest`` tokens.

    ``longest`` rounded up to a multiple of ``multiple``, at most ``cap``
    (``sequence_length``), at least ``min(multiple, cap)``.

    Examples:
        >>> padded_length(11, 8, 128), padded_length(16, 8, 128), padded_length(126, 8, 128)
        (16, 16, 128)
    """
    rounded = -(-max(int(longest), 1) // multiple) * multiple
    return min(rounded, cap)


def trim_padding(inputs: Mapping[str, Any], *, multiple: int, cap: int) -> dict[str, Any]:
    """Cuts the padding at the end of a batch of packed token sequences.

    Every ``(B, L)`` tensor of ``inputs`` keeps its first ``K`` positions, ``K``
    being :func:`padded_length` of the last real position (``padding_mask``
    true) over the batch. Positions before ``K`` are untouched, so nothing real
    is dropped even if padding were not at the end (then nothing is cut).

    Args:
        inputs: the preprocessor's outputs, with a ``"padding_mask"``.
        multiple: round the kept length up to a multiple of this.
        cap: the full length (``sequence_length``): never keep more.

    Returns:
        The same keys, each ``(B, K)``.

    Examples:
        >>> import numpy as np
        >>> mask = np.array([[1, 1, 0, 0, 0, 0]], dtype=bool)
        >>> trim_padding({"padding_mask": mask}, multiple=4, cap=6)["padding_mask"].numpy().tolist()
        [[True, True, False, False]]
    """
    import tensorflow as tf

    mask = tf.convert_to_tensor(inputs["padding_mask"])
    full = tf.shape(mask)[1]
    positions = tf.range(1, full + 1, dtype=tf.int32)
    # 1 + the index of each row's last real token (0 for a row of padding only)
    last = tf.reduce_max(tf.where(tf.cast(mask, tf.bool), positions[None, :], 0), axis=1)
    longest = tf.reduce_max(tf.concat([last, [1]], axis=0))  # an empty batch keeps 1
    rounded = (longest + multiple - 1) // multiple * multiple
    keep = tf.minimum(rounded, tf.minimum(full, cap))
    return {name: tf.convert_to_tensor(value)[:, :keep] for name, value in inputs.items()}
