"""finetunekit's embedding fine-tuning against a contrastive loop written by hand in Keras.

The same encoder (an MLP, the same initial weights), data (synthetic
clusters: an anchor and a positive drawn around the same centre, one centre
per pair), batch, optimizer (Adam), loss (in-batch negatives, InfoNCE with
temperature 0.05) and epochs on both sides, in one process, in rotating
order, ``--repeats`` times (3). Prints per side the median training
throughput in pairs per second (epochs after the first, which traces), the
ratios of the medians, and recall@1 of held-out anchors against their
positives (centres never seen in training) for every side.

Two hand-written sides, what a Keras user writes:

* ``keras_loop``: an encoder ending in ``UnitNormalization``, a
  ``tf.function`` step that embeds anchors and positives in one call, the
  ``(B, B)`` similarity logits, sparse categorical cross-entropy against the
  diagonal, ``apply_gradients``; a shuffled ``tf.data`` pipeline;
* ``keras_fit``: the same loss as a Keras loss function of a two-input model
  (the encoder called on anchors and on positives), trained with
  ``model.fit`` (Keras' own step, callbacks and logs).

Usage:

    .venv/bin/python benchmarks/bench_embeddings.py            # the figures in docs/embeddings.md
    .venv/bin/python benchmarks/bench_embeddings.py --quick    # smoke run (the test suite)
    .venv/bin/python benchmarks/bench_embeddings.py --json figures.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from bench_finetune import EpochTimer  # noqa: E402

import finetunekit as ftk  # noqa: E402

SEED = 0
TEMPERATURE = 0.05
CONFIGS: dict[str, dict[str, Any]] = {
    "full": {
        "pairs": 8192,
        "test": 1024,
        "dim": 64,
        "width": 256,
        "batch": 64,
        "epochs": 4,
        "learning_rate": 1e-3,
        "noise": 0.8,
        "repeats": 3,
    },
    "quick": {
        "pairs": 512,
        "test": 128,
        "dim": 16,
        "width": 32,
        "batch": 32,
        "epochs": 3,
        "learning_rate": 1e-3,
        "noise": 0.8,
        "repeats": 3,
    },
}


def make_pairs(n: int, dim: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` (anchor, positive) float32 pairs, each around its own random centre.

    Example:
        >>> a, p = make_pairs(4, 3, 0.1, 0)
        >>> a.shape, p.dtype.name
        ((4, 3), 'float32')
    """
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n, dim))
    a = centres + noise * rng.normal(size=(n, dim))
    p = centres + noise * rng.normal(size=(n, dim))
    return a.astype("float32"), p.astype("float32")


def make_encoder(cfg: dict[str, Any]) -> keras.Model:
    """The encoder both sides train, with fixed initial weights (its last layer: the features)."""
    keras.utils.set_random_seed(SEED)
    inputs = keras.Input((cfg["dim"],))
    x = keras.layers.Dense(cfg["width"], activation="relu", name="hidden1")(inputs)
    x = keras.layers.Dense(cfg["width"], activation="relu", name="hidden2")(x)
    x = keras.layers.Dense(cfg["width"] // 2, name="features")(x)
    return keras.Model(inputs, x, name="encoder")


def recall_at_1(queries: np.ndarray, corpus: np.ndarray) -> float:
    """Share of queries whose most similar corpus vector is their own (row ``i``).

    Example:
        >>> recall_at_1(np.eye(3), np.eye(3))
        1.0
    """
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    c = corpus / np.linalg.norm(corpus, axis=1, keepdims=True)
    return float(np.mean((q @ c.T).argmax(axis=1) == np.arange(len(q))))


def run_finetunekit(cfg: dict[str, Any], a: np.ndarray, p: np.ndarray) -> tuple[Any, list[float]]:
    """finetunekit: ``from_pairs`` -> the encoder -> InfoNCE; returns the encoder and epoch times."""
    timer = EpochTimer()
    data = ftk.DatasetAdapter.from_pairs(a, p, task=ftk.tasks.Embedding(temperature=TEMPERATURE))
    trainer = ftk.Trainer(
        "adam",
        epochs=0,
        fine_tune_epochs=cfg["epochs"],
        fine_tune_learning_rate=cfg["learning_rate"],
        batch_size=cfg["batch"],
        seed=SEED,
        verbose=0,
        callbacks=[timer],
    )
    backbone = ftk.Backbone.from_model(make_encoder(cfg), feature_layer="features")
    result = ftk.FineTuner().with_data(data).with_backbone(backbone).with_trainer(trainer).fit()
    return result.model, timer.seconds


def run_keras(cfg: dict[str, Any], a: np.ndarray, p: np.ndarray) -> tuple[Any, list[float]]:
    """The loop written by hand in Keras; returns the encoder and epoch times."""
    encoder = make_encoder(cfg)
    model = keras.Sequential([encoder, keras.layers.UnitNormalization()])
    optimizer = keras.optimizers.Adam(cfg["learning_rate"])
    ds = (
        tf.data.Dataset.from_tensor_slices((a, p))
        .shuffle(len(a), seed=SEED, reshuffle_each_iteration=True)
        .batch(cfg["batch"])
        .prefetch(tf.data.AUTOTUNE)
    )

    @tf.function
    def step(x_a: tf.Tensor, x_p: tf.Tensor) -> tf.Tensor:
        n = tf.shape(x_a)[0]
        with tf.GradientTape() as tape:
            emb = model(tf.concat([x_a, x_p], axis=0), training=True)
            logits = tf.matmul(emb[:n], emb[n:], transpose_b=True) / TEMPERATURE
            loss = tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(tf.range(n), logits)
            )
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss

    seconds = []
    for _ in range(cfg["epochs"]):
        start = time.perf_counter()
        for x_a, x_p in ds:
            step(x_a, x_p)
        seconds.append(time.perf_counter() - start)
    return model, seconds


def run_keras_fit(cfg: dict[str, Any], a: np.ndarray, p: np.ndarray) -> tuple[Any, list[float]]:
    """The same written by hand with ``model.fit``: two inputs, a loss function of the stacked pair."""
    encoder = make_encoder(cfg)
    model = keras.Sequential([encoder, keras.layers.UnitNormalization()])
    x_a, x_p = keras.Input((cfg["dim"],)), keras.Input((cfg["dim"],))
    pair = keras.Model([x_a, x_p], keras.ops.stack([model(x_a), model(x_p)], axis=1))

    def infonce(y_true: Any, y_pred: Any) -> Any:
        del y_true  # the target of anchor i is positive i
        logits = keras.ops.matmul(y_pred[:, 0], keras.ops.transpose(y_pred[:, 1])) / TEMPERATURE
        labels = keras.ops.arange(keras.ops.shape(logits)[0])
        return keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)

    pair.compile(keras.optimizers.Adam(cfg["learning_rate"]), infonce)
    ds = (
        tf.data.Dataset.from_tensor_slices(((a, p), np.zeros(len(a), "float32")))
        .shuffle(len(a), seed=SEED, reshuffle_each_iteration=True)
        .batch(cfg["batch"])
        .prefetch(tf.data.AUTOTUNE)
    )
    timer = EpochTimer()
    pair.fit(ds, epochs=cfg["epochs"], verbose=0, callbacks=[timer], shuffle=False)
    return model, timer.seconds


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small data, for the test suite")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--json", default=None, help="write the figures to this file")
    args = parser.parse_args(argv)
    cfg = dict(CONFIGS["quick" if args.quick else "full"])
    if args.repeats:
        cfg["repeats"] = args.repeats
    a, p = make_pairs(cfg["pairs"], cfg["dim"], cfg["noise"], seed=1)
    test_a, test_p = make_pairs(cfg["test"], cfg["dim"], cfg["noise"], seed=2)
    sides = {"keras_loop": run_keras, "keras_fit": run_keras_fit, "finetunekit": run_finetunekit}
    rate: dict[str, list[float]] = {side: [] for side in sides}
    recall: dict[str, list[float]] = {side: [] for side in sides}
    order = list(sides)
    for repeat in range(cfg["repeats"]):
        shift = repeat % len(order)
        for side in order[shift:] + order[:shift]:  # rotate who goes first
            keras.backend.clear_session()
            model, seconds = sides[side](cfg, a, p)
            steady = seconds[1:] or seconds
            rate[side].append(len(a) / statistics.median(steady))
            emb_a = np.asarray(model.predict(test_a, batch_size=256, verbose=0))
            emb_p = np.asarray(model.predict(test_p, batch_size=256, verbose=0))
            recall[side].append(recall_at_1(emb_a, emb_p))
    medians = {side: statistics.median(v) for side, v in rate.items()}
    figures = {
        "config": cfg,
        "pairs_per_s": medians,
        "runs": rate,
        "ratio_finetunekit_over_keras_loop": medians["finetunekit"] / medians["keras_loop"],
        "ratio_finetunekit_over_keras_fit": medians["finetunekit"] / medians["keras_fit"],
        "recall_at_1": {side: statistics.median(v) for side, v in recall.items()},
        "recall_runs": recall,
    }
    print(
        f"embeddings: {cfg['pairs']} pairs, dim {cfg['dim']}, MLP width {cfg['width']}, "
        f"batch {cfg['batch']}, {cfg['epochs']} epochs, InfoNCE t={TEMPERATURE}, "
        f"medians of {cfg['repeats']}"
    )
    print(f"{'side':<14}{'pairs/s':>10}{'recall@1':>10}")
    for side in sides:
        print(f"{side:<14}{medians[side]:>10.0f}{figures['recall_at_1'][side]:>10.3f}")
    print(
        f"finetunekit / keras_loop throughput: {figures['ratio_finetunekit_over_keras_loop']:.2f}; "
        f"finetunekit / keras_fit: {figures['ratio_finetunekit_over_keras_fit']:.2f}"
    )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(figures, handle, indent=2)
    return figures


if __name__ == "__main__":
    main()
