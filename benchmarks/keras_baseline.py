"""The hand-written Keras transfer-learning baselines finetunekit is measured against.

Written the way the Keras transfer-learning guide
(https://keras.io/guides/transfer_learning/) does it:

- :func:`run`, the guide's fine-tuning recipe: a ``tf.data`` pipeline with
  shuffling, batching and ``prefetch``; the pretrained base frozen and called
  with ``training=False`` (so BatchNorm stays in inference mode); a new
  ``Dense`` head; ``model.fit``; then the base unfrozen and the model
  recompiled at a low learning rate for a second ``fit``. The guide's
  ``base_model.trainable = True`` also trains every BatchNorm's gamma and
  beta; ``train_bn=False`` keeps them frozen, the set finetunekit trains by
  default, so the two can be timed on the same trainable weights.
- :func:`run_feature_extraction`, the guide's lighter workflow for a frozen
  base: run the base once over the data with ``predict`` ("feature
  extraction") and train a small head model on the stored features.

Run alone for a quick look (the comparison lives in ``bench_finetune.py``):

    .venv/bin/python benchmarks/keras_baseline.py
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

__all__ = [
    "BASES",
    "batchnorm_layers",
    "bn_gamma_beta_count",
    "build",
    "make_dataset",
    "run",
    "run_feature_extraction",
    "tiny_cnn",
    "trainable_count",
]


def tiny_cnn(
    *, include_top: bool = False, weights: str | None = None, input_shape: tuple[int, ...]
) -> keras.Model:
    """A small stand-in base (3 conv + BatchNorm + ReLU blocks, its own rescaling).

    Shaped like a ``keras.applications`` constructor so both sides build it
    the same way; ``bench_finetune.py --quick`` uses it so the smoke run does
    not spend a minute tracing MobileNetV3. Its timings mean nothing.

    Example:
        >>> tiny_cnn(input_shape=(32, 32, 3)).output.shape
        (None, 4, 4, 32)
    """
    if include_top or weights is not None:
        raise ValueError("tiny_cnn has no top and no pretrained weights")
    inputs = keras.Input(input_shape)
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(inputs)  # takes 0-255, as MobileNetV3
    for filters in (8, 16, 32):
        x = keras.layers.Conv2D(filters, 3, strides=2, padding="same", use_bias=False)(x)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.ReLU()(x)
    return keras.Model(inputs, x, name="tiny_cnn")


# keras.applications constructors (and the quick stand-in) by the names the benchmark uses.
BASES: dict[str, Callable[..., keras.Model]] = {
    "mobilenet_v3_small": keras.applications.MobileNetV3Small,
    "resnet50": keras.applications.ResNet50,
    "tiny_cnn": tiny_cnn,
}


def trainable_count(model: keras.Model) -> int:
    """Number of trainable parameters (scalars) of ``model`` as it is now."""
    return int(sum(math.prod(w.shape) for w in model.trainable_weights))


def batchnorm_layers(model: keras.Model) -> list[keras.layers.BatchNormalization]:
    """The BatchNorm layers of ``model``, descending into nested models."""
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found.extend(batchnorm_layers(layer))
        elif isinstance(layer, keras.layers.BatchNormalization):
            found.append(layer)
    return found


def bn_gamma_beta_count(model: keras.Model) -> int:
    """Number of BatchNorm gamma and beta scalars in ``model`` (at any depth).

    Example:
        >>> bn_gamma_beta_count(tiny_cnn(input_shape=(32, 32, 3)))  # 2 x (8 + 16 + 32)
        112
    """
    return int(
        sum(
            math.prod(v.shape)
            for layer in batchnorm_layers(model)
            for v in (layer.gamma, layer.beta)
            if v is not None
        )
    )


def make_dataset(
    x: np.ndarray, y: np.ndarray, batch_size: int, *, shuffle: bool, seed: int | None
) -> tf.data.Dataset:
    """The guide's input pipeline: slices -> (shuffle) -> batch -> prefetch.

    Example:
        >>> ds = make_dataset(np.zeros((4, 8, 8, 3), "uint8"), np.arange(4), 2,
        ...                   shuffle=False, seed=None)
        >>> [int(b[0].shape[0]) for b in ds]
        [2, 2]
    """
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def build(
    backbone: str, input_shape: tuple[int, int, int], num_classes: int, *, dropout: float = 0.2
) -> tuple[keras.Model, keras.Model]:
    """Frozen base (``training=False``) + pooling + dropout + ``Dense`` head.

    Returns:
        ``(model, base_model)``.

    Example:
        >>> model, base = build("tiny_cnn", (32, 32, 3), 2)
        >>> trainable_count(model)  # the head: 32 features x 2 classes + 2 biases
        66
    """
    base_model = BASES[backbone](include_top=False, weights=None, input_shape=input_shape)
    base_model.trainable = False
    inputs = keras.Input(shape=input_shape)
    x = base_model(inputs, training=False)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(dropout)(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs), base_model


def _compile(model: keras.Model, learning_rate: float) -> None:
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )


def run(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray | None = None,
    y_val: np.ndarray | None = None,
    *,
    backbone: str = "mobilenet_v3_small",
    epochs: int = 10,
    fine_tune_epochs: int = 0,
    batch_size: int = 32,
    learning_rate: float = 1e-3,
    seed: int = 0,
    train_bn: bool = True,
    callbacks: list[keras.callbacks.Callback] | None = None,
    verbose: int = 0,
) -> dict[str, Any]:
    """Trains the head on the frozen base, then (optionally) fine-tunes everything.

    Args:
        x_train: images ``(N, H, W, 3)`` (uint8 or float, 0-255).
        y_train: integer class labels ``(N,)``.
        x_val: validation images, or ``None``.
        y_val: validation labels, or ``None``.
        backbone: a key of :data:`BASES`.
        epochs: frozen-phase epochs (0 skips it).
        fine_tune_epochs: epochs with the base unfrozen (0 skips it).
        batch_size: examples per batch.
        learning_rate: frozen-phase rate; the fine-tuning rate is a tenth of it.
        seed: seeds Python, NumPy and TensorFlow, and the shuffle.
        train_bn: whether fine-tuning trains BatchNorm's gamma and beta too
            (``True``: the guide's ``base_model.trainable = True`` as it is;
            ``False``: every BatchNorm layer set back to ``trainable = False``).
        callbacks: Keras callbacks passed to both ``fit`` calls.
        verbose: ``fit`` verbosity.

    Returns:
        ``{"model", "timings": {"build", "phase1", "phase2"}, "history": [h1, h2],
        "trainable": {"phase1", "phase2"}}``; a phase's time covers its
        ``compile`` and ``fit``, ``trainable`` counts the parameters it trained.

    Example:
        >>> x = np.random.randint(0, 255, (16, 32, 32, 3), "uint8")
        >>> out = run(x, np.arange(16) % 2, backbone="tiny_cnn", epochs=0,
        ...           fine_tune_epochs=1, train_bn=False)
        >>> out["trainable"]["phase2"]  # conv kernels 216 + 1152 + 4608, head 66
        6042
    """
    keras.utils.set_random_seed(seed)
    num_classes = int(np.max(y_train)) + 1
    start = time.perf_counter()
    model, base_model = build(backbone, tuple(x_train.shape[1:]), num_classes)
    timings = {"build": time.perf_counter() - start}
    train_ds = make_dataset(x_train, y_train, batch_size, shuffle=True, seed=seed)
    val_ds = (
        make_dataset(x_val, y_val, batch_size, shuffle=False, seed=None)
        if x_val is not None and y_val is not None
        else None
    )
    histories = []
    trainable: dict[str, int] = {}
    if epochs:
        start = time.perf_counter()
        _compile(model, learning_rate)
        h = model.fit(
            train_ds, epochs=epochs, validation_data=val_ds, callbacks=callbacks, verbose=verbose
        )
        timings["phase1"] = time.perf_counter() - start
        histories.append(h.history)
        trainable["phase1"] = trainable_count(model)
    if fine_tune_epochs:
        start = time.perf_counter()
        base_model.trainable = True  # called with training=False: BatchNorm keeps inference mode
        if not train_bn:
            for layer in batchnorm_layers(base_model):
                layer.trainable = False
        _compile(model, learning_rate / 10)
        h = model.fit(
            train_ds,
            epochs=epochs + fine_tune_epochs,
            initial_epoch=epochs,
            validation_data=val_ds,
            callbacks=callbacks,
            verbose=verbose,
        )
        timings["phase2"] = time.perf_counter() - start
        histories.append(h.history)
        trainable["phase2"] = trainable_count(model)
    return {"model": model, "timings": timings, "history": histories, "trainable": trainable}


def run_feature_extraction(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray | None = None,
    y_val: np.ndarray | None = None,
    *,
    backbone: str = "mobilenet_v3_small",
    epochs: int = 10,
    batch_size: int = 32,
    learning_rate: float = 1e-3,
    dropout: float = 0.2,
    seed: int = 0,
    verbose: int = 0,
) -> dict[str, Any]:
    """The guide's feature extraction: ``predict`` the base once, fit a head on the features.

    The base is followed by the same global average pooling as :func:`build`,
    so the stored features are what the head's ``Dense`` layer sees there;
    the head is dropout + ``Dense``, compiled and trained like :func:`run`'s
    frozen phase (``fit`` on the arrays, shuffled every epoch).

    Returns:
        ``{"model" (the head), "extractor", "timings": {"build", "features",
        "phase1"}, "history": [h1], "trainable": {"phase1"}}``; ``phase1``
        covers both ``predict`` calls, ``compile`` and ``fit``.

    Example:
        >>> x = np.random.randint(0, 255, (16, 32, 32, 3), "uint8")
        >>> out = run_feature_extraction(x, np.arange(16) % 2, backbone="tiny_cnn", epochs=1)
        >>> out["trainable"]["phase1"]  # the same head as run()'s frozen phase
        66
    """
    keras.utils.set_random_seed(seed)
    num_classes = int(np.max(y_train)) + 1
    start = time.perf_counter()
    base_model = BASES[backbone](
        include_top=False, weights=None, input_shape=tuple(x_train.shape[1:])
    )
    base_model.trainable = False
    pooled = keras.layers.GlobalAveragePooling2D()(base_model.output)
    extractor = keras.Model(base_model.input, pooled)
    head = keras.Sequential(
        [
            keras.Input((int(pooled.shape[-1]),)),
            keras.layers.Dropout(dropout),
            keras.layers.Dense(num_classes, activation="softmax"),
        ]
    )
    timings = {"build": time.perf_counter() - start}
    start = time.perf_counter()
    f_train = extractor.predict(x_train, batch_size=batch_size, verbose=verbose)
    validation = None
    if x_val is not None and y_val is not None:
        validation = (extractor.predict(x_val, batch_size=batch_size, verbose=verbose), y_val)
    timings["features"] = time.perf_counter() - start
    _compile(head, learning_rate)
    h = head.fit(
        f_train,
        y_train,
        batch_size=batch_size,
        epochs=epochs,
        validation_data=validation,
        shuffle=True,
        verbose=verbose,
    )
    timings["phase1"] = time.perf_counter() - start
    return {
        "model": head,
        "extractor": extractor,
        "timings": timings,
        "history": [h.history],
        "trainable": {"phase1": trainable_count(head)},
    }


if __name__ == "__main__":
    rng = np.random.default_rng(0)
    labels = np.arange(256) % 4
    images = rng.integers(0, 128, (256, 96, 96, 3)).astype("uint8")
    images[..., 0] += (labels * 30).astype("uint8")[:, None, None]
    out = run(
        images[:192],
        labels[:192],
        images[192:],
        labels[192:],
        epochs=3,
        fine_tune_epochs=1,
        verbose=2,
    )
    print({k: round(v, 2) for k, v in out["timings"].items()})
