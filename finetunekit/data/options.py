"""The ``tf.data`` options finetunekit sets on every dataset it builds.

tf.data's autotuning runs a model thread beside each iterator, which tunes
buffer sizes and parallelism. Deleting an iterator that has lived about a
second or longer sometimes waits about a second for that thread. Measured on 2
CPU cores (TensorFlow 2.21) in the cached phase's feature pass over 1,280
images of 96x96 (MobileNetV3Small, about 1.5 s): deleting its iterator took
1.05-1.13 s in 6 of 16 passes, and under 0.005 s in all 16 with
autotuning off. Keras' ``fit`` deletes two iterators per epoch and
``predict`` one per call, so the wait can come back at every epoch: ``fit``
of a dense network for 6 epochs of about a second took 6.7 s with autotuning
and 4.8 s without it.

Switching autotuning off keeps ``num_parallel_calls=AUTOTUNE`` and
``prefetch(AUTOTUNE)`` working. A map whose 64 calls each sleep 50 ms took
1.65 s either way (2 calls at a time on 2 cores), and decoding and resizing
2,048 JPEGs in a parallel map took 0.98 s without autotuning against 1.15 s
with it. The figures come from ``benchmarks/bench_fixed_costs.py``
(docs/performance.md, "Deleting tf.data iterators").
"""

from __future__ import annotations

import tensorflow as tf

__all__ = ["without_autotune"]


def without_autotune(ds: tf.data.Dataset) -> tf.data.Dataset:
    """``ds`` with tf.data's autotuning model switched off (see the module docstring).

    Other options already set on ``ds`` are kept.

    Args:
        ds: a ``tf.data`` dataset.

    Returns:
        The same dataset with ``options().autotune.enabled`` set to ``False``.

    Examples:
        >>> import tensorflow as tf
        >>> ds = without_autotune(tf.data.Dataset.range(3).prefetch(tf.data.AUTOTUNE))
        >>> ds.options().autotune.enabled, [int(v) for v in ds]
        (False, [0, 1, 2])
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.with_options(options)
