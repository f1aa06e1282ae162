"""Step 1 of fine-tuning: prepare the data.

:class:`DatasetAdapter` wraps numpy arrays, ``tf.data`` datasets or folders of
images, validates them up front, infers the task from the labels and streams
``(x, y)`` batches with ``tf.data`` (inputs in their raw dtype and shape).

Examples:
    >>> import numpy as np
    >>> from finetunekit.data import DatasetAdapter
    >>> data = DatasetAdapter.from_arrays(np.zeros((8, 28, 28), "uint8"), [0, 1] * 4)
    >>> train, val = data.split(0.25, seed=0)
    >>> data.task, len(train), len(val)
    ('binary', 6, 2)
"""

from finetunekit.data.adapter import DatasetAdapter, as_adapter, check_compatible
from finetunekit.tasks.base import BUILT_IN as TASKS
from finetunekit.tasks.labels import LabelEncoding

__all__ = ["DatasetAdapter", "as_adapter", "check_compatible", "TASKS", "LabelEncoding"]
