"""Keras ``fit``'s epochs, driven by finetunekit: the callback protocol and the head loop.

Two places train without calling ``model.fit`` and must look to every
callback exactly as if they had:

- the multi-worker loop of :mod:`finetunekit.training.distribute`, because
  Keras' own ``fit`` fails under ``MultiWorkerMirroredStrategy``;
- :func:`fit_head`, phase 1 on cached features, because there the fixed cost
  of ``fit`` outweighs the training itself.

:func:`drive` is what both share: the ``keras.callbacks.CallbackList`` with
the progress bar and ``History``, the epoch and validation events, the
``stop_training`` flag, ``BackupAndRestore``'s initial epoch and the final
``finalize_variable_values``.

Why :func:`fit_head`: on cached features each step of a small head takes
about a millisecond, so at a few thousand examples ``fit``'s fixed cost
dominates the phase: it traces a multi-step loop with an optional input and
two conditionals around every step, and each epoch's validation is a full
``evaluate`` call with its own data adapter and loop. :func:`fit_head` runs
the model's own ``train_step`` and ``test_step`` (same loss, metrics,
optimizer, loss scaling, random draws), one ``tf.function`` call per epoch
and one per validation pass, each a ``tf.while_loop`` over a known number of
batches read from one iterator that spans every epoch. It hands callbacks
the events ``fit`` sends with ``steps_per_execution`` equal to an epoch.
Measured on 2 CPU cores, a 10-epoch head (Dropout + Dense(10)) on 1,024
cached 576-float features with 256 for validation, fresh processes, medians
of 5: 0.90 s against 1.16 s for ``fit``
(``benchmarks/bench_head_steps.py --examples 1024 --validation 256
--repeats 5``); inside finetunekit's cached phase, where ``fit`` also sets
up its data adapter and callbacks, the head's part went from 1.7-1.9 s to
0.8-1.0 s.

:func:`trace_head` traces those two functions from the datasets' structure
alone, before the data exists: the feature cache runs it while its worker
thread computes the features, and hands the traces to :func:`fit_head`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import keras
import tensorflow as tf

from finetunekit import _compat

__all__ = [
    "HeadSteps",
    "build_before_fit",
    "class_weight_fn",
    "drive",
    "fit_head",
    "python_logs",
    "symbolic_build",
    "trace_head",
]

logger = logging.getLogger("finetunekit")

Logs = dict[str, Any]


def python_logs(logs: dict[str, Any]) -> dict[str, Any]:
    """Tensors of a log dict as Python floats (as ``model.fit`` hands them to callbacks).

    Examples:
        >>> import tensorflow as tf
        >>> python_logs({"loss": tf.constant(0.5), "note": "x"})
        {'loss': 0.5, 'note': 'x'}
    """
    out: dict[str, Any] = {}
    for key, value in logs.items():
        try:
            out[key] = float(value)
        except (TypeError, ValueError):
            out[key] = value
    return out


def class_weight_fn(class_weight: dict[int, float]) -> Callable[..., Any]:
    """``(x, y) -> (x, y, sample_weight)`` with ``class_weight[class of y]``, as ``model.fit``.

    Examples:
        >>> import tensorflow as tf
        >>> add = class_weight_fn({0: 1.0, 1: 3.0})
        >>> add(tf.zeros((2, 1)), tf.constant([1, 0]))[2].numpy().tolist()
        [3.0, 1.0]
    """
    size = max(int(k) for k in class_weight) + 1
    table = tf.constant([float(class_weight.get(i, 1.0)) for i in range(size)], tf.float32)

    def add_weights(x: Any, y: Any, *rest: Any) -> tuple[Any, Any, Any]:
        if y.shape.rank is not None and y.shape.rank > 1 and y.shape[-1] != 1:
            classes = tf.argmax(y, axis=-1)  # one-hot
        else:
            classes = tf.cast(tf.round(tf.reshape(y, [-1])), tf.int64)  # ints, or binary 0/1
        return x, y, tf.gather(table, classes)

    return add_weights


def symbolic_build(model: keras.Model, dataset: tf.data.Dataset) -> None:
    """Creates the metric, loss and optimizer variables outside any step, as ``fit`` does."""
    batch = tf.nest.map_structure(
        lambda s: keras.KerasTensor(s.shape, dtype=s.dtype.name), dataset.element_spec
    )
    _compat.symbolic_build(model, batch)


def build_before_fit(model: keras.Model, dataset: Any) -> bool:
    """Builds the optimizer and metric variables before ``model.fit`` traces its step.

    Without a distribution strategy, Keras 3 leaves them to the first trace of
    the training step. TensorFlow then traces the step a second time, because
    the first trace created variables: on this project's 2-core CPU that
    second trace doubles the first step (MobileNetV3Small at 96x96: 20.4 s
    against 11.4 s with this build; ResNet50: 33.5 s against 19.3 s;
    all-MiniLM-L6-v2 about 10 s). Results are unchanged: the same variables,
    created once.

    Does nothing when ``dataset`` is not a ``tf.data.Dataset`` or when the
    model was built under a strategy (``fit`` then builds first itself).
    Returns whether it built. A model that cannot be built symbolically is
    left to ``fit``, which builds it while tracing as it always does; the
    reason is logged.

    Examples:
        >>> import numpy as np, keras, tensorflow as tf
        >>> net = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        >>> net.compile("adam", "mse")
        >>> data = tf.data.Dataset.from_tensor_slices((np.zeros((4, 2)), np.zeros(4))).batch(2)
        >>> build_before_fit(net, data), net.optimizer.built
        (True, True)
    """
    if not isinstance(dataset, tf.data.Dataset) or not _compat.builds_in_first_trace(model):
        return False
    try:
        symbolic_build(model, dataset)
    except Exception as error:  # noqa: BLE001 - fit builds it while tracing, as without us
        logger.info("finetunekit: %s is built by fit's first trace (%s)", model.name, error)
        return False
    return True


def drive(
    model: keras.Model,
    *,
    epochs: int,
    initial_epoch: int,
    steps: int | None,
    callbacks: Sequence[keras.callbacks.Callback],
    verbose: Any,
    train_epoch: Callable[[keras.callbacks.CallbackList], Logs],
    evaluate: Callable[[keras.callbacks.CallbackList], Logs] | None,
    validation_freq: int = 1,
) -> keras.callbacks.History:
    """Runs epochs ``initial_epoch..epochs-1`` and sends callbacks the events ``fit`` sends.

    Args:
        model: the compiled model being trained.
        epochs: the epoch to stop before, as in ``model.fit``.
        initial_epoch: the first epoch, as in ``model.fit`` (``BackupAndRestore``
            may move it on).
        steps: batches per epoch for the progress bar, or ``None`` if unknown.
        callbacks: the callbacks, as in ``model.fit``.
        verbose: as in ``model.fit``.
        train_epoch: runs one epoch's training steps (sending the batch
            events itself) and returns the logs of its last step.
        evaluate: runs one validation pass (sending the test batch events)
            and returns its logs, or ``None`` without validation.
        validation_freq: validate every this many epochs.

    Returns:
        The ``keras.callbacks.History`` of the run.

    Examples:
        >>> import keras
        >>> net = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
        >>> net.compile("sgd", "mse")
        >>> history = drive(net, epochs=2, initial_epoch=0, steps=1, callbacks=[], verbose=0,
        ...                 train_epoch=lambda cbs: {"loss": 1.0}, evaluate=None)
        >>> history.epoch, history.history
        ([0, 1], {'loss': [1.0, 1.0]})
    """
    callback_list = keras.callbacks.CallbackList(
        list(callbacks),
        add_history=True,
        add_progbar=verbose != 0,
        verbose=verbose,
        epochs=epochs,
        steps=steps,
        model=model,
    )
    history = next(cb for cb in callback_list.callbacks if isinstance(cb, keras.callbacks.History))
    model.stop_training = False
    callback_list.on_train_begin()
    training_logs = None
    for epoch in range(_compat.fit_initial_epoch(model, initial_epoch), epochs):
        model.reset_metrics()
        callback_list.on_epoch_begin(epoch)
        epoch_logs = python_logs(train_epoch(callback_list))
        if evaluate is not None and (epoch + 1) % validation_freq == 0:
            model.stop_evaluating = False
            callback_list.on_test_begin()
            model.reset_metrics()
            val_logs = python_logs(evaluate(callback_list))
            callback_list.on_test_end(val_logs)
            epoch_logs.update({f"val_{k}": v for k, v in val_logs.items()})
        callback_list.on_epoch_end(epoch, epoch_logs)
        training_logs = epoch_logs
        if model.stop_training:
            break
    if epochs > 0 and isinstance(model.optimizer, keras.optimizers.Optimizer):
        model.optimizer.finalize_variable_values(model.trainable_weights)
    callback_list.on_train_end(logs=training_logs)
    return history  # type: ignore[no-any-return]


def _steps_function(model: keras.Model, step: Callable[[Any], Any], steps: int) -> Any:
    """A ``tf.function`` running ``step`` on ``steps`` batches of an iterator; returns the
    model's metrics. No autograph: the loop is written with ``tf.while_loop``."""
    if model.jit_compile:  # as fit: XLA compiles the step, not the loop around it
        step = tf.function(step, jit_compile=True, autograph=False)

    @tf.function(autograph=False)
    def run(iterator: Any) -> dict[str, Any]:
        def body(i: tf.Tensor) -> tuple[tf.Tensor]:
            step(iterator.get_next())
            return (i + 1,)

        tf.while_loop(lambda i: i < steps, body, (tf.constant(0),), maximum_iterations=steps)
        return model.get_metrics_result()  # type: ignore[no-any-return]

    return run


@dataclass(frozen=True)
class HeadSteps:
    """The compiled functions :func:`fit_head` runs, traced by :func:`trace_head`.

    Attributes:
        train: runs ``steps`` training steps on batches from an iterator and
            returns the model's metrics.
        test: runs one validation pass from an iterator, or ``None`` without
            validation.
        steps: training batches per epoch.
        validation_steps: batches per validation pass (``None`` without validation).
    """

    train: Any
    test: Any
    steps: int
    validation_steps: int | None


def trace_head(
    model: keras.Model,
    train: tf.data.Dataset,
    steps: int,
    *,
    validation: tf.data.Dataset | None = None,
    class_weight: dict[int, float] | None = None,
) -> HeadSteps:
    """Builds ``model``'s variables and traces :func:`fit_head`'s functions.

    Only the datasets' ``element_spec`` (and the number of validation batches)
    are read, never their elements. So the functions can be traced while the
    data they will train on is still being computed: the feature cache traces
    the head while the backbone runs over the images
    (:class:`~finetunekit.training.feature_cache.FeatureCache`).

    Args:
        model: a compiled model.
        train: a dataset with the training batches' structure (before class
            weights are added).
        steps: batches per epoch.
        validation: a dataset with the validation batches' structure and
            number, or ``None``.
        class_weight: as in ``model.fit``.

    Returns:
        The traced :class:`HeadSteps`; later calls on iterators of datasets
        with the same structure run these traces.

    Raises:
        ValueError: the number of validation batches is unknown.

    Examples:
        >>> import keras, tensorflow as tf
        >>> net = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        >>> net.compile("sgd", "mse")
        >>> shape = tf.data.Dataset.from_tensors((tf.zeros((4, 2)), tf.zeros((4, 1))))
        >>> steps = trace_head(net, shape, 3)
        >>> steps.train.experimental_get_tracing_count(), steps.test
        (1, None)
    """
    if class_weight is not None:
        train = train.map(class_weight_fn(class_weight), num_parallel_calls=tf.data.AUTOTUNE)
    symbolic_build(model, train)
    run_train = _steps_function(model, model.train_step, steps)
    run_train.get_concrete_function(tf.data.IteratorSpec(train.element_spec))
    run_test, val_steps = None, None
    if validation is not None:
        val_steps = int(validation.cardinality())
        if val_steps < 0:
            raise ValueError("fit_head needs validation data with a known number of batches")
        run_test = _steps_function(model, model.test_step, val_steps)
        run_test.get_concrete_function(tf.data.IteratorSpec(validation.element_spec))
    return HeadSteps(run_train, run_test, int(steps), val_steps)


def fit_head(
    model: keras.Model,
    train: tf.data.Dataset,
    steps: int,
    *,
    validation: tf.data.Dataset | None,
    epochs: int,
    initial_epoch: int = 0,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    verbose: Any = "auto",
    class_weight: dict[int, float] | None = None,
    traced: HeadSteps | None = None,
) -> keras.callbacks.History:
    """``model.fit`` for a compiled model on batches whose count per epoch is known.

    Same results as ``model.fit(train, steps_per_epoch=steps,
    validation_data=validation, ...)`` with less fixed cost (see the module
    docstring). Callbacks get the epoch events and one batch event per
    epoch, as ``fit`` sends them with ``steps_per_execution=steps``.

    Args:
        model: a compiled model on the default strategy.
        train: batches of every epoch to run, read by ONE iterator:
            ``steps`` batches per epoch (e.g.
            ``FeatureCache.train_epochs_dataset``).
        steps: batches per epoch.
        validation: a batched dataset with a known number of batches, read
            in full after every epoch, or ``None``.
        epochs: the epoch to stop before, as in ``model.fit``.
        initial_epoch: the first epoch, as in ``model.fit``.
        callbacks: as in ``model.fit``.
        verbose: as in ``model.fit``.
        class_weight: as in ``model.fit``.
        traced: the functions :func:`trace_head` traced for this model, these
            datasets' structure and ``class_weight``; ``None`` traces them here.

    Returns:
        The ``keras.callbacks.History`` of the run.

    Raises:
        ValueError: the number of validation batches is unknown, or ``traced``
            was traced for other steps or validation batches.

    Examples:
        >>> import keras, numpy as np, tensorflow as tf
        >>> net = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        >>> net.compile("sgd", "mse")
        >>> data = tf.data.Dataset.from_tensor_slices((np.ones((4, 2)), np.ones(4))).batch(2)
        >>> fit_head(net, data.repeat(3), 2, validation=None, epochs=3, verbose=0).epoch
        [0, 1, 2]
    """
    if class_weight is not None:
        train = train.map(class_weight_fn(class_weight), num_parallel_calls=tf.data.AUTOTUNE)
    if traced is None:
        traced = trace_head(model, train, steps, validation=validation)  # weights added above
    val_steps = None if validation is None else int(validation.cardinality())
    if (traced.steps, traced.validation_steps) != (steps, val_steps):
        raise ValueError(
            f"traced for {traced.steps} steps and {traced.validation_steps} validation batches, "
            f"but the data has {steps} and {val_steps}"
        )
    train_iterator = iter(train)

    def train_epoch(callback_list: keras.callbacks.CallbackList) -> Logs:
        callback_list.on_train_batch_begin(0)
        logs: Logs = traced.train(train_iterator)
        callback_list.on_train_batch_end(steps - 1, logs)
        return logs

    evaluate = None
    if validation is not None and val_steps is not None:
        val_iterator = iter(validation.repeat())

        def evaluate(callback_list: keras.callbacks.CallbackList) -> Logs:
            callback_list.on_test_batch_begin(0)
            logs: Logs = traced.test(val_iterator)
            callback_list.on_test_batch_end(val_steps - 1, logs)
            return logs

    return drive(
        model,
        epochs=epochs,
        initial_epoch=initial_epoch,
        steps=steps,
        callbacks=callbacks,
        verbose=verbose,
        train_epoch=train_epoch,
        evaluate=evaluate,
    )
