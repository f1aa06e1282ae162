"""The Trainer's methods on the embedding task: strategies, schedules, keep_best, resume.

* ``strategy="mirrored"`` on two logical CPUs (a subprocess: TensorFlow fixes
  its devices when it starts) takes the one-device SGD steps for every layout
  and loss: the contrastive losses gather the embeddings of both replicas, so
  the in-batch negatives and the masking of duplicates span the global batch.
* ``schedule="cosine"`` with warmup: every SGD step of both phases moves the
  weights by ``-rate * gradient`` with the rate of the schedule's formula,
  written out here, and the gradient taken here with a ``GradientTape``.
* ``keep_best=True`` restores the encoder weights of the best validation epoch.
* A run killed in phase 2 resumes from its checkpoint and ends with the
  weights and history of a run never killed.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf
from _crash import Crash, CrashAt

import finetunekit as ftk
from finetunekit.training.contrastive import GradientCache, InfoNCELoss, pair_model

# plain SGD, 2 replicas vs 1 device, losses and weights (measured: at most 2e-6 and 1.5e-6 over
# every case below; without the gather the first case's losses differ by 1.2, with the gather
# but each replica's loss averaged over its own rows by 4.3)
SGD_ATOL = 1e-5
TIMEOUT = 300  # seconds for the subprocess (a loaded CI machine is slow)

SCRIPT = r'''
import json, os, sys

spec = json.loads(sys.argv[1])
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
if spec.get("tf_config"):
    os.environ["TF_CONFIG"] = json.dumps(spec["tf_config"])
import tensorflow as tf

if not spec.get("tf_config"):  # two logical CPUs, before TensorFlow initialises its devices
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
import numpy as np
import finetunekit as ftk
from finetunekit.training import distribute

if spec.get("tf_config"):  # MultiWorkerMirroredStrategy first, before anything runs
    distribute.resolve_strategy("multi_worker")

rng = np.random.default_rng(1)
centers = rng.normal(size=(12, 12))
groups = np.repeat(np.arange(12), 4)
x = (centers[groups] + rng.normal(size=(48, 12))).astype("float32")
x_val = (centers[groups] + rng.normal(size=(48, 12))).astype("float32")


def encoder():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((12,))
    h = keras.layers.Dense(24, activation="tanh", name="enc1")(inputs)
    return keras.Model(inputs, keras.layers.Dense(16, name="enc2")(h))


def data(case, items):
    """Odd sizes: the last batch splits unevenly over the two replicas."""
    layout, loss, chunk = (case.split("+") + ["", ""])[:3]  # "layout+loss+chunk_size"
    task = ftk.tasks.Embedding(
        loss or "auto",
        projection_dim=8 if layout == "groups" else None,
        chunk_size=int(chunk) if chunk else None,
    )
    if layout == "pairs":
        a, p = items[0:46:2].copy(), items[1:47:2].copy()  # 23 pairs
        p[5] = p[1]  # a duplicate positive in the first batch, on the other replica
        return ftk.DatasetAdapter.from_pairs(a, p, task=task)
    if layout == "triplets":
        a, p, n = items[0::4], items[1::4], items[2::4][np.r_[1:12, 0]]
        return ftk.DatasetAdapter.from_triplets(a[:11], p[:11], n[:11], task=task)
    if layout == "scored":
        a, b = items[:23], items[24:47]
        score = np.where(groups[:23] == groups[24:47], 1.0, -0.2)
        return ftk.DatasetAdapter.from_scored_pairs(a, b, score, task=task)
    return ftk.DatasetAdapter.from_groups(items[:47], groups[:47], task=task)


out = {}
for case in spec["cases"]:
    for strategy in spec["strategies"]:
        groups_layout = case.startswith("groups")
        trainer = ftk.Trainer(
            "sgd",
            0.5,
            epochs=1 if groups_layout else 0,  # groups: a frozen phase on the projection too
            fine_tune_epochs=2,
            fine_tune_learning_rate=0.1,
            batch_size=spec["batch_size"][case.partition("+")[0]],
            shuffle=False,  # Keras' fit under the strategy draws one extra shuffle
            cache_features=False,  # one code path for both strategies
            seed=0,
            verbose=0,
            strategy=strategy,
        )
        result = (
            ftk.FineTuner()
            .with_data(data(case, x), validation=data(case, x_val))
            .with_backbone(ftk.Backbone.from_model(encoder()))
            .with_head(ftk.HeadReplacer(hidden_units=(), dropout=0.0))  # no random masks
            .with_trainer(trainer)
            .fit()
        )
        out[f"{case}/{strategy}"] = {
            "history": {k: result.history[k] for k in ("loss", "val_loss")},
            "weights": [w.ravel().tolist() for w in result.model.get_weights()],
            "replicas": result.info["strategy"]["replicas"],
            "workers": result.info["strategy"]["workers"],
        }
with open(spec["out"], "w") as f:
    json.dump(out, f)
sys.stdout.flush()
os._exit(0)  # skip the slow teardown of a cluster's servers
'''

# "layout+loss+chunk_size": the last, gradient caching in chunks of 2 pairs (3 = 2 + 1 per replica)
CASES = ["pairs", "triplets", "groups", "groups+triplet", "scored", "pairs++2"]


BATCH_SIZES = {"pairs": 6, "triplets": 4, "groups": 8, "scored": 6}


def _start(root: Path, name: str, **spec: Any) -> tuple[subprocess.Popen[bytes], Path, Path]:
    """Starts the script with ``spec``; returns the process, its log and its output file."""
    script = root / "script.py"
    script.write_text(SCRIPT)
    out, log = root / f"{name}.json", root / f"{name}.log"
    spec = {"batch_size": BATCH_SIZES, "out": str(out), **spec}
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    env.pop("TF_CONFIG", None)
    with open(log, "wb") as handle:  # a file, not a pipe: two chatty workers never block
        proc = subprocess.Popen(
            [sys.executable, str(script), json.dumps(spec)],
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    return proc, log, out


def _results(started: list[tuple[subprocess.Popen[bytes], Path, Path]]) -> list[dict[str, Any]]:
    try:
        for proc, log, _ in started:
            proc.wait(timeout=TIMEOUT)
            assert proc.returncode == 0, log.read_text(errors="replace")[-3000:]
    finally:
        for proc, _, _ in started:
            if proc.poll() is None:
                proc.kill()
    return [json.loads(out.read_text()) for _, _, out in started]


@pytest.fixture(scope="module")
def device_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every case on one device and with strategy="mirrored" over two logical CPUs."""
    root = tmp_path_factory.mktemp("embedding_devices")
    started = _start(root, "devices", cases=CASES, strategies=["default", "mirrored"])
    return _results([started])[0]


def _assert_same_steps(run: dict[str, Any], one: dict[str, Any], what: str) -> None:
    for key in ("loss", "val_loss"):
        np.testing.assert_allclose(
            run["history"][key], one["history"][key], rtol=0, atol=SGD_ATOL, err_msg=what
        )
    for i, (got, want) in enumerate(zip(run["weights"], one["weights"], strict=True)):
        np.testing.assert_allclose(got, want, rtol=0, atol=SGD_ATOL, err_msg=f"{what}: weight {i}")


@pytest.mark.slow
def test_mirrored_replicas_take_the_one_device_steps(device_runs: dict[str, Any]) -> None:
    """Two replicas, plain SGD: the losses and weights of one device, for every layout.

    In-batch negatives from the other replica's half of the batch change the
    loss; an uneven last batch (odd sizes: 3 + 2 rows, ...) still gives the
    one-device mean; gradient caching (``chunk_size``) gives the same steps
    on each replica as without chunks.
    """
    runs = device_runs
    for case in CASES:
        one, two = runs[f"{case}/default"], runs[f"{case}/mirrored"]
        assert (one["replicas"], two["replicas"]) == (1, 2)
        assert one["history"]["loss"][-1] < one["history"]["loss"][0], case  # it trained
        _assert_same_steps(two, one, case)
    _assert_same_steps(runs["pairs++2/mirrored"], runs["pairs/default"], "chunks")


@pytest.mark.slow
def test_two_workers_take_the_one_device_steps(device_runs: dict[str, Any], tmp_path: Path) -> None:
    """MultiWorkerMirroredStrategy, two processes on 127.0.0.1 (finetunekit's own loop):
    the gather runs through the collective ops (which need placed tensors: without
    ``_placed`` TensorFlow raised "destinations can not be empty"); both workers end with
    the one-device losses and weights, with and without gradient caching."""
    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    cases = ["pairs", "pairs++2"]
    workers = _results(
        [
            _start(
                tmp_path,
                f"worker{i}",
                cases=cases,
                strategies=["multi_worker"],
                tf_config={"cluster": cluster, "task": {"type": "worker", "index": i}},
            )
            for i in range(2)
        ]
    )
    for worker in workers:
        for case in cases:
            run = worker[f"{case}/multi_worker"]
            assert (run["replicas"], run["workers"]) == (2, 2)
            _assert_same_steps(run, device_runs[f"{case}/default"], f"{case} on a worker")


# --------------------------------------------------------------------------- in process


def _encoder() -> keras.Model:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((12,))
    x = keras.layers.Dense(24, activation="tanh", name="enc1")(inputs)
    return keras.Model(inputs, keras.layers.Dense(16, name="enc2")(x))


def _pairs(seed: int = 1, n: int = 24) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n, 12))
    noise = 0.7 * rng.normal(size=(2, n, 12))
    return (centers + noise[0]).astype("float32"), (centers + noise[1]).astype("float32")


def _tuner(trainer: ftk.Trainer, validation: bool = False, **task: Any) -> ftk.FineTuner:
    a, p = _pairs()
    emb = ftk.tasks.Embedding(temperature=0.1, **task)
    val = None
    if validation:
        va, vp = _pairs(seed=2, n=16)
        val = ftk.DatasetAdapter.from_pairs(va, vp, task=emb)
    return (
        ftk.FineTuner()
        .with_data(ftk.DatasetAdapter.from_pairs(a, p, task=emb), validation=val)
        .with_backbone(ftk.Backbone.from_model(_encoder()))
        .with_head(ftk.HeadReplacer(hidden_units=(), dropout=0.0))
        .with_trainer(trainer)
    )


def _cosine_rate(peak: float, total: int, warmup: int, step: int) -> float:
    """Linear warmup to ``peak`` (the first step at ``peak / warmup``), then cosine to 0."""
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))


class _Steps(keras.callbacks.Callback):
    """Per SGD step: the rate in force, the weights before and after, the batch's gradient.

    The gradient is taken here, on the batch the unshuffled pipeline feeds at
    that step (``batch_size`` consecutive pairs), with the task's InfoNCE loss.
    """

    def __init__(self, items: np.ndarray, groups: np.ndarray, batch_size: int) -> None:
        super().__init__()
        self.items, self.groups, self.batch_size = items, groups, batch_size
        self.steps: list[dict[str, Any]] = []

    def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
        rows = slice(batch * self.batch_size, (batch + 1) * self.batch_size)
        weights = self.model.trainable_weights
        with tf.GradientTape() as tape:
            emb = self.model(self.items[rows], training=True)
            loss = InfoNCELoss(0.1)(self.groups[rows], emb)
        self.steps.append(
            {
                "rate": float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)),
                "before": [np.array(w.numpy()) for w in weights],
                "grads": [np.asarray(g) for g in tape.gradient(loss, weights)],
            }
        )

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        self.steps[-1]["after"] = [np.array(w.numpy()) for w in self.model.trainable_weights]


def test_a_cosine_schedule_sets_every_sgd_step_of_both_phases() -> None:
    """24 pairs, batch 8: phase 1 (projection, rate 0.5) 1 epoch = 3 steps, warmup 1 step;
    phase 2 (encoder, rate 0.2) 2 epochs = 6 steps, warmup round(0.25 * 6) = 2 steps."""
    a, p = _pairs()
    items = np.stack([a, p], axis=1)
    groups = np.arange(24, dtype="float32")[:, None]  # every pair its own group
    steps = _Steps(items, groups, batch_size=8)
    trainer = ftk.Trainer(
        "sgd",
        0.5,
        epochs=1,
        fine_tune_epochs=2,
        fine_tune_learning_rate=0.2,
        batch_size=8,
        schedule="cosine",
        warmup=0.25,
        shuffle=False,
        seed=0,
        verbose=0,
        callbacks=[steps],
    )
    result = _tuner(trainer, projection_dim=8).fit()
    want = [_cosine_rate(0.5, 3, 1, s) for s in range(3)] + [
        _cosine_rate(0.2, 6, 2, s) for s in range(6)
    ]
    assert [s["rate"] for s in steps.steps] == pytest.approx(want, rel=1e-6)
    # the rate is the one applied: SGD moves every trainable weight by -rate * gradient
    # (measured: at most 3e-7 off; a constant rate in phase 2 would be 0.08 off)
    for i, (step, rate) in enumerate(zip(steps.steps, want, strict=True)):
        # phase 1: the projection; phase 2: enc1 too (from_model drops enc2 as the old head)
        assert len(step["grads"]) == (2 if i < 3 else 4)
        for before, grad, after in zip(step["before"], step["grads"], step["after"], strict=True):
            np.testing.assert_allclose(after, before - rate * grad, rtol=0, atol=1e-6)
    assert result.history["phase"] == [1, 2, 2]


class _Wreck(keras.callbacks.Callback):
    """Keeps the weights after every epoch; scrambles the encoder before epoch ``at``."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at = at
        self.weights: dict[int, list[np.ndarray]] = {}

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        if epoch == self.at:
            kernel = next(w for w in self.model.weights if "enc1" in w.path and "kernel" in w.path)
            kernel.assign(np.random.default_rng(0).normal(size=kernel.shape) * 5.0)

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        self.weights[epoch] = self.model.get_weights()  # the pair wrapper: the encoder's


@pytest.mark.parametrize("keep_best", [True, False])
def test_keep_best_restores_the_encoder_of_the_best_validation_epoch(keep_best: bool) -> None:
    wreck = _Wreck(at=3)  # the last epoch: a scrambled encoder, a rate too small to recover
    trainer = ftk.Trainer(
        "sgd",
        0.5,
        epochs=0,
        fine_tune_epochs=4,
        fine_tune_learning_rate=0.5,
        batch_size=8,
        keep_best=keep_best,
        seed=0,
        verbose=0,
        callbacks=[wreck],
    )
    result = _tuner(trainer, validation=True).fit()
    val_loss = result.history["val_loss"]
    best = int(np.argmin(val_loss))
    assert best != 3 and val_loss[3] > val_loss[best] + 0.3  # measured: 1.33 against 0.81
    kept = wreck.weights[best if keep_best else 3]
    for final, expected in zip(result.model.get_weights(), kept, strict=True):
        np.testing.assert_array_equal(final, expected)
    assert result.history["epoch"] == [0, 1, 2, 3]


def test_a_run_killed_in_phase_2_resumes_to_the_uninterrupted_weights(tmp_path: Path) -> None:
    """Adam, a shuffled pipeline and a cosine schedule: the checkpoint carries the weights,
    the optimizer's slots and step, and the data order; resumed, the run ends as one never
    killed, bit for bit."""

    def trainer(ckpt: Path | None, callbacks: list[Any]) -> ftk.Trainer:
        return ftk.Trainer(
            epochs=1,
            fine_tune_epochs=2,
            learning_rate=1e-2,
            fine_tune_learning_rate=1e-3,
            batch_size=8,
            schedule="cosine",
            seed=3,
            verbose=0,
            checkpoint_dir=None if ckpt is None else str(ckpt),
            callbacks=callbacks,
        )

    reference = _tuner(trainer(None, []), validation=True, projection_dim=8).fit()
    with pytest.raises(Crash):  # after 2 batches of the second phase-2 epoch
        _tuner(trainer(tmp_path, [CrashAt(2)]), validation=True, projection_dim=8).fit()
    keras.backend.clear_session()
    resumed = _tuner(trainer(tmp_path, []), validation=True, projection_dim=8).fit()
    assert resumed.info["resumed_from"]["epochs_done"] == 2
    assert resumed.history == reference.history
    for got, want in zip(resumed.model.get_weights(), reference.model.get_weights(), strict=True):
        np.testing.assert_array_equal(got, want)
    a, _ = _pairs()
    np.testing.assert_array_equal(resumed.embed(a), reference.embed(a))


# --------------------------------------------------------------------------- gradient caching


def _dropout_encoder(rate: float) -> keras.Model:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,))
    h = keras.layers.Dense(16, activation="tanh")(inputs)
    if rate:
        h = keras.layers.Dropout(rate, seed=1)(h)
    return keras.Model(inputs, keras.layers.Dense(8)(h))


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_a_gradient_cache_step_is_the_whole_batch_step(dropout: float) -> None:
    """10 pairs (one duplicate positive) in chunks of 3, 3, 3, 1; one SGD step at rate 1.

    The reference differentiates the loss of the whole batch in one tape:
    without dropout Keras' own step on the plain wrapper; with dropout the
    same encoder called chunk by chunk from the same seed state (the masks
    gradient caching must replay when it recomputes the chunks).
    """
    rng = np.random.default_rng(0)
    x = rng.normal(size=(10, 2, 6)).astype("float32")
    x[3, 1] = x[1, 1]
    y = np.array([0, 1, 2, 1, 3, 4, 5, 6, 7, 8], "float32")[:, None]
    plain = pair_model(_dropout_encoder(dropout), 2, (6,), "float32")
    before = plain.get_weights()
    if dropout:
        with tf.GradientTape() as tape:
            emb = tf.concat([plain(x[i : i + 3], training=True) for i in range(0, 10, 3)], 0)
            loss = InfoNCELoss(0.1)(y, emb)
        grads = tape.gradient(loss, plain.trainable_weights)
        want = [w - g.numpy() for w, g in zip(before, grads, strict=True)]
    else:
        plain.compile(keras.optimizers.SGD(1.0), InfoNCELoss(0.1))
        plain.fit(x, y, batch_size=10, verbose=0, shuffle=False)
        want = plain.get_weights()
    cached = GradientCache(pair_model(_dropout_encoder(dropout), 2, (6,), "float32"), 3)
    cached.compile(keras.optimizers.SGD(1.0), InfoNCELoss(0.1))
    cached.fit(x, y, batch_size=10, verbose=0, shuffle=False)
    got = cached.get_weights()
    assert max(np.abs(g - b).max() for g, b in zip(got, before, strict=True)) > 1.0  # a big step
    for g, w in zip(got, want, strict=True):  # measured: at most 8e-7 off
        np.testing.assert_allclose(g, w, rtol=0, atol=1e-5)
    again = GradientCache.from_config(cached.get_config())
    assert again.chunk_size == 3
    assert [w.shape for w in again.weights] == [w.shape for w in cached.weights]


def test_chunk_size_trains_as_the_whole_batch_in_the_pipeline() -> None:
    """Pairs, batch 10 in chunks of 4 (10 = 4 + 4 + 2; the last batch of 4 is one chunk),
    plain SGD for 2 epochs: the losses and weights of the run without chunks."""

    def fit(chunk_size: int | None) -> ftk.FineTuneResult:
        trainer = ftk.Trainer(
            "sgd",
            0.5,
            epochs=0,
            fine_tune_epochs=2,
            fine_tune_learning_rate=0.5,
            batch_size=10,
            shuffle=False,
            seed=0,
            verbose=0,
        )
        return _tuner(trainer, chunk_size=chunk_size).fit()

    whole, chunked = fit(None), fit(4)
    assert chunked.info["embedding"]["chunk_size"] == 4
    assert whole.history["loss"][-1] < whole.history["loss"][0] - 0.3  # it trained
    # measured: losses within 2e-7, weights within 1.2e-7
    np.testing.assert_allclose(chunked.history["loss"], whole.history["loss"], rtol=0, atol=1e-5)
    for got, want in zip(chunked.model.get_weights(), whole.model.get_weights(), strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    assert type(chunked.model) is type(whole.model)  # the result keeps the encoder
    with pytest.raises(ftk.ConfigError, match=r"chunk_size=10\) is not smaller"):
        _tuner(ftk.Trainer(epochs=0, fine_tune_epochs=1, batch_size=10), chunk_size=10).prepare()
    with pytest.raises(ftk.ConfigError, match="chunk_size"):
        ftk.tasks.Embedding(chunk_size=0)
