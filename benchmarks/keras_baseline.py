"""The hand-written Keras transfer-learning baseline finetunekit is measured against.

Written the way the Keras transfer-learning guide
(https://keras.io/guides/transfer_learning/) does it: a ``tf.data`` pipeline
with shuffling, batching and ``prefetch``; the pretrained base frozen and
called with ``training=False`` (so BatchNorm stays in inference mode); a new
``Dense`` head; ``model.fit``; then the base unfrozen and the model recompiled
at a low learning rate for a second ``fit``.

Run alone for a quick look (the comparison lives in ``bench_finetune.py``):

    .venv/bin/python benchmarks/keras_baseline.py
"""

from __future__ import annotations

import os
import time
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

__all__ = ["BASES", "build", "make_dataset", "run"]

# keras.applications constructors by the names the benchmark uses.
BASES = {
    "mobilenet_v3_small": keras.applications.MobileNetV3Small,
    "resnet50": keras.applications.ResNet50,
}


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
        >>> model, base = build("mobilenet_v3_small", (32, 32, 3), 2)  # doctest: +SKIP
    """
    base_model = BASES[backbone](include_top=False, weights=None, input_shape=input_shape)
    base_model.trainable = False
    inputs = keras.Input(shape=input_shape)
    x = base_model(inputs, training=False)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(dropout)(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs), base_model


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
        callbacks: Keras callbacks passed to both ``fit`` calls.
        verbose: ``fit`` verbosity.

    Returns:
        ``{"model", "timings": {"build", "phase1", "phase2"}, "history": [h1, h2]}``;
        a phase's time covers its ``compile`` and ``fit``.

    Example:
        >>> x = np.random.randint(0, 255, (16, 32, 32, 3), "uint8")
        >>> out = run(x, np.arange(16) % 2, epochs=1)  # doctest: +SKIP
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
    if epochs:
        start = time.perf_counter()
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate),
            loss=keras.losses.SparseCategoricalCrossentropy(),
            metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        )
        h = model.fit(
            train_ds, epochs=epochs, validation_data=val_ds, callbacks=callbacks, verbose=verbose
        )
        timings["phase1"] = time.perf_counter() - start
        histories.append(h.history)
    if fine_tune_epochs:
        start = time.perf_counter()
        base_model.trainable = True  # called with training=False: BatchNorm keeps inference mode
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate / 10),
            loss=keras.losses.SparseCategoricalCrossentropy(),
            metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        )
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
    return {"model": model, "timings": timings, "history": histories}


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
