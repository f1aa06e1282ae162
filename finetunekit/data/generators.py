"""``tf.data`` from a Python generator function of ``(x, y)`` examples."""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
import tensorflow as tf

from finetunekit.errors import ArgumentTypeError, DataError, format_error

__all__ = ["generator_dataset"]


def _spec(value: Any, name: str) -> tf.TensorSpec:
    if isinstance(value, (str, bytes)):
        return tf.TensorSpec(shape=(), dtype=tf.string)
    arr = np.asarray(value)
    if arr.dtype == object or arr.dtype.kind not in "biufUS":
        raise DataError(
            format_error(
                f"The generator's {name} cannot be read as one numeric array",
                expected=f"{name} as a numpy array (or number / string)",
                received={name: type(value).__name__},
                fix=f"Yield {name} as np.asarray(...) of one shape and dtype",
            )
        )
    dtype = tf.string if arr.dtype.kind in "US" else tf.as_dtype(arr.dtype)
    return tf.TensorSpec(shape=arr.shape, dtype=dtype)


def generator_dataset(generator: Any) -> tf.data.Dataset:
    """Returns ``tf.data.Dataset.from_generator(generator, ...)`` with the signature of its first example.

    Args:
        generator: A callable returning an iterator of ``(x, y)`` pairs.

    Raises:
        ArgumentTypeError: ``generator`` is a generator object or not callable.
        DataError: It yields nothing or not ``(x, y)`` pairs.

    Examples:
        >>> ds = generator_dataset(lambda: iter([(np.zeros((2, 3)), 1)]))
        >>> ds.element_spec[0].shape
        TensorShape([2, 3])
    """
    if inspect.isgenerator(generator) or not callable(generator):
        raise ArgumentTypeError(
            format_error(
                "generator must be a function returning an iterator (it is called once per pass)",
                expected="a callable such as a generator function",
                received={"generator": generator},
                fix="Pass the function itself, e.g. from_generator(read_clips), not read_clips()",
            )
        )
    try:
        first = next(iter(generator()))
    except StopIteration:
        first = None
    if first is None:
        raise DataError(
            format_error(
                "The generator yields no examples",
                expected="at least one (x, y) pair",
                received={"generator": generator},
                fix="Check the files or list the generator reads",
            )
        )
    if not isinstance(first, (tuple, list)) or len(first) != 2:
        raise DataError(
            format_error(
                "The generator must yield (x, y) pairs, one example each",
                expected="tuples (x, y)",
                received={"first item": type(first).__name__},
                fix="yield x, y",
            )
        )
    signature = (_spec(first[0], "x"), _spec(first[1], "y"))
    return tf.data.Dataset.from_generator(generator, output_signature=signature)
