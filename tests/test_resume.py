"""Resumable training: Trainer(checkpoint_dir=...) survives SIGKILL in either phase.

The kill tests run a tiny recipe in a subprocess (a from_model backbone, a
callback that sleeps per batch so there is time to aim), kill it with SIGKILL
in the middle of an epoch, start it again with the same recipe and check that
it continued after the last completed epoch, in the right phase, with the right
layers frozen and learning rate, and ended with the full merged history.
In-process tests (a callback raising mid-epoch stands in for the kill) check
that a resumed run is bit-identical to an uninterrupted one on CPU, and the
checkpoint's own guarantees (mismatch, finished run, crash while saving).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest

import finetunekit as ftk
from finetunekit.training.checkpoint import STATE_NAME

EPOCHS, FINE_TUNE_EPOCHS = 2, 2
LR = 1e-2
FT_LR = 1e-3

SCRIPT = r'''
import json, os, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import keras
import numpy as np
import finetunekit as ftk

ckpt, progress, probe_log, out = sys.argv[1:5]
sleep, slow_from = float(sys.argv[5]), int(sys.argv[6])  # sleep per batch from that epoch


def tiny_net():
    keras.utils.set_random_seed(1)
    inputs = keras.Input((16, 16, 1))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="c1")(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.Conv2D(4, 3, activation="relu", name="c2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(3, activation="softmax", name="old_head")(x)
    return keras.Model(inputs, outputs, name="tiny")


class Probe(keras.callbacks.Callback):
    """Logs the trainable backbone layers and learning rate; sleeps per batch."""

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        backbone = self.model.get_layer("backbone")
        row = {
            "pid": os.getpid(),
            "epoch": epoch,
            "trainable": sorted(l.name for l in backbone.layers if l.trainable and l.weights),
            "lr": float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)),
        }
        with open(probe_log, "a") as f:
            f.write(json.dumps(row) + "\n")

    def on_train_batch_end(self, batch, logs=None):
        with open(progress + ".tmp", "w") as f:
            f.write(f"{self.epoch} {batch}")
        os.replace(progress + ".tmp", progress)
        if self.epoch >= slow_from:
            time.sleep(sleep)


rng = np.random.default_rng(0)
x = rng.integers(0, 255, (64, 16, 16)).astype("uint8")
y = np.arange(64) % 3
tuner = (
    ftk.FineTuner()
    .with_data(ftk.DatasetAdapter.from_arrays(x, y), validation=0.25)
    .with_backbone(ftk.Backbone.from_model(tiny_net()))
    .with_head(ftk.HeadReplacer(hidden_units=(8,), dropout=0.2))
    .with_trainer(ftk.Trainer(
        learning_rate=__LR__, epochs=__EPOCHS__, fine_tune_epochs=__FT__,
        fine_tune_learning_rate=__FT_LR__, unfreeze=1, batch_size=8, seed=0, verbose=0,
        callbacks=[Probe()], checkpoint_dir=ckpt,
    ))
)
result = tuner.fit()
backbone = result.model.get_layer("backbone")
with open(out, "w") as f:
    json.dump({
        "history": result.history,
        "resumed_from": result.info.get("resumed_from"),
        "trainable": sorted(l.name for l in backbone.layers if l.trainable and l.weights),
    }, f)
'''
for _key, _value in {"LR": LR, "EPOCHS": EPOCHS, "FT": FINE_TUNE_EPOCHS, "FT_LR": FT_LR}.items():
    SCRIPT = SCRIPT.replace(f"__{_key}__", repr(_value))


class Run:
    """Paths of one kill-and-resume experiment."""

    def __init__(self, tmp_path: Path) -> None:
        self.script = tmp_path / "train.py"
        self.script.write_text(SCRIPT)
        self.ckpt = tmp_path / "ckpt"
        self.progress = tmp_path / "progress.txt"
        self.probe = tmp_path / "probe.jsonl"
        self.out = tmp_path / "out.json"

    def start(self, sleep: float = 0.0, slow_from: int = 0) -> subprocess.Popen:
        """Starts the script; batches sleep ``sleep`` s from epoch ``slow_from`` on."""
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}
        args = [
            sys.executable,
            str(self.script),
            str(self.ckpt),
            str(self.progress),
            str(self.probe),
            str(self.out),
            str(sleep),
            str(slow_from),
        ]
        return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def kill_mid_epoch(self, proc: subprocess.Popen, epoch: int, timeout: float = 90) -> None:
        """SIGKILLs ``proc`` once it has finished batch 2 of ``epoch``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                output = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
                pytest.fail(f"training ended before the kill (rc={proc.returncode}):\n{output}")
            try:
                seen_epoch, batch = map(int, self.progress.read_text().split())
            except (OSError, ValueError):
                seen_epoch, batch = -1, -1
            if seen_epoch == epoch and batch >= 2:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
                assert proc.returncode == -signal.SIGKILL
                return
            if seen_epoch > epoch:
                pytest.fail(f"missed the kill window: at epoch {seen_epoch} already")
            time.sleep(0.02)
        proc.kill()
        pytest.fail("timed out waiting for the kill window")

    def finish(self, proc: subprocess.Popen, timeout: float = 120) -> dict[str, Any]:
        output, _ = proc.communicate(timeout=timeout)
        assert proc.returncode == 0, output.decode(errors="replace")
        return json.loads(self.out.read_text())

    def probes(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.probe.read_text().splitlines()]

    def state(self) -> dict[str, Any]:
        return json.loads((self.ckpt / STATE_NAME).read_text())


def _check_complete(result: dict[str, Any]) -> None:
    history = result["history"]
    assert history["phase"] == [1] * EPOCHS + [2] * FINE_TUNE_EPOCHS
    assert history["epoch"] == list(range(EPOCHS + FINE_TUNE_EPOCHS))
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert len(history[key]) == EPOCHS + FINE_TUNE_EPOCHS
        assert all(np.isfinite(history[key])), (key, history[key])
    assert result["trainable"] == ["c2"]  # unfreeze=1: top conv only, BatchNorm stays frozen


def _check_phases(probes: list[dict[str, Any]]) -> None:
    for row in probes:
        if row["epoch"] < EPOCHS:
            assert row["trainable"] == [], row  # phase 1: frozen backbone
            assert row["lr"] == pytest.approx(LR), row
        else:
            assert row["trainable"] == ["c2"], row  # phase 2: top layer only
            assert row["lr"] == pytest.approx(FT_LR), row


@pytest.mark.slow
def test_sigkill_mid_epoch_in_phase_1_then_resume(tmp_path: Path) -> None:
    run = Run(tmp_path)
    first = run.start(sleep=0.25, slow_from=1)
    run.kill_mid_epoch(first, epoch=1)  # epoch 0 is checkpointed, epoch 1 half done
    state = run.state()
    assert [row["epoch"] for row in state["rows"]] == [0]
    assert state["current"]["phase"] == 1 and state["completed"] == []

    killed_pid = run.probes()[-1]["pid"]
    second = run.start()
    result = run.finish(second)
    _check_complete(result)
    assert result["resumed_from"] == {"phase": 1, "epoch": 0, "epochs_done": 1}
    resumed = [row for row in run.probes() if row["pid"] != killed_pid]
    assert [row["epoch"] for row in resumed] == [1, 2, 3]  # continues after epoch 0
    _check_phases(run.probes())


@pytest.mark.slow
def test_sigkill_mid_epoch_in_phase_2_then_resume(tmp_path: Path) -> None:
    run = Run(tmp_path)
    first = run.start(sleep=0.25, slow_from=EPOCHS + 1)
    run.kill_mid_epoch(first, epoch=EPOCHS + 1)  # phase 2, its second epoch
    state = run.state()
    assert [row["epoch"] for row in state["rows"]] == [0, 1, 2]
    assert state["completed"] == [1] and state["current"]["phase"] == 2

    killed_pid = run.probes()[-1]["pid"]
    second = run.start()
    result = run.finish(second)
    _check_complete(result)
    assert result["resumed_from"] == {"phase": 2, "epoch": 2, "epochs_done": 3}
    resumed = [row for row in run.probes() if row["pid"] != killed_pid]
    assert [row["epoch"] for row in resumed] == [3]  # phase 1 is not run again
    _check_phases(run.probes())


# ---------------------------------------------------------------------- in process


class Crash(Exception):
    """Stands in for a kill: raised by a callback in the middle of an epoch."""


class CrashAt(keras.callbacks.Callback):
    def __init__(self, epoch: int | None) -> None:
        super().__init__()
        self.at = epoch
        self.epoch = -1
        self.fits = 0

    def on_train_begin(self, logs: Any = None) -> None:
        self.fits += 1

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        self.epoch = epoch

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        if self.epoch == self.at and batch == 1:
            raise Crash(f"crash in epoch {self.epoch}")


def _net() -> keras.Model:
    keras.utils.set_random_seed(1)
    inputs = keras.Input((16, 16, 1))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="c1")(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.Conv2D(4, 3, activation="relu", name="c2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(3, activation="softmax", name="old_head")(x)
    return keras.Model(inputs, outputs, name="tiny")


def _data() -> ftk.DatasetAdapter:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (48, 16, 16)).astype("uint8")
    return ftk.DatasetAdapter.from_arrays(x, np.arange(48) % 3)


def _tuner(ckpt: Any, callback: keras.callbacks.Callback, **kwargs: Any) -> ftk.FineTuner:
    settings = {
        "learning_rate": LR,
        "epochs": 2,
        "fine_tune_epochs": 2,
        "unfreeze": 1,
        "batch_size": 8,
        "seed": 7,
        "verbose": 0,
        "checkpoint_dir": None if ckpt is None else str(ckpt),
        "callbacks": [callback],
        **kwargs,
    }
    return (
        ftk.FineTuner()
        .with_data(_data(), validation=0.25)
        .with_backbone(ftk.Backbone.from_model(_net()))
        .with_head(ftk.HeadReplacer(hidden_units=(8,), dropout=0.3))
        .with_trainer(ftk.Trainer(**settings))
    )


def _same_weights(a: keras.Model, b: keras.Model) -> bool:
    return all(np.array_equal(p, q) for p, q in zip(a.get_weights(), b.get_weights(), strict=True))


@pytest.fixture(scope="module")
def reference() -> ftk.FineTuneResult:
    """The uninterrupted run every resumed run must reproduce."""
    return _tuner(None, CrashAt(None)).fit()


@pytest.mark.parametrize("crash_epoch", [1, 3])
def test_resumed_run_is_identical_to_an_uninterrupted_one(
    tmp_path: Path, crash_epoch: int, reference: ftk.FineTuneResult
) -> None:
    ckpt = tmp_path / "ckpt"
    with pytest.raises(Crash):
        _tuner(ckpt, CrashAt(crash_epoch)).fit()
    keras.backend.clear_session()
    resumed = _tuner(ckpt, CrashAt(None)).fit()
    assert resumed.info["resumed_from"]["epochs_done"] == crash_epoch
    assert resumed.history == reference.history
    assert _same_weights(resumed.model, reference.model)  # weights, optimizer, seeds, order


def test_finished_run_returns_at_once_with_the_same_result(
    tmp_path: Path, reference: ftk.FineTuneResult
) -> None:
    first = _tuner(tmp_path, CrashAt(None)).fit()
    assert first.history == reference.history  # checkpointing changes nothing
    again_cb = CrashAt(None)
    again = _tuner(tmp_path, again_cb).fit()
    assert again_cb.fits == 0  # nothing trained
    assert again.history == first.history
    assert _same_weights(again.model, first.model)


def test_checkpoint_of_another_recipe_is_refused(tmp_path: Path) -> None:
    _tuner(tmp_path, CrashAt(None), fine_tune_epochs=0).fit()
    with pytest.raises(ftk.CheckpointError) as info:
        _tuner(tmp_path, CrashAt(None), fine_tune_epochs=1).fit()
    message = str(info.value)
    assert "trainer.fine_tune_epochs" in message and "checkpoint_dir=" in message
    assert "Received" in message and "delete the folder" in message


def test_unreadable_checkpoint_is_refused(tmp_path: Path) -> None:
    (tmp_path / STATE_NAME).write_text("{not json")
    with pytest.raises(ftk.CheckpointError) as info:
        _tuner(tmp_path, CrashAt(None)).fit()
    assert "checkpoint_dir=" in str(info.value)


def test_crash_while_writing_a_checkpoint_keeps_the_previous_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_savez = np.savez
    calls = {"n": 0}

    def flaky_savez(file: Any, **arrays: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 2:  # the checkpoint of epoch 1
            file.write(b"half a file")
            raise OSError("disk full")
        real_savez(file, **arrays)

    monkeypatch.setattr(np, "savez", flaky_savez)
    with pytest.raises(OSError, match="disk full"):
        _tuner(tmp_path, CrashAt(None)).fit()
    monkeypatch.setattr(np, "savez", real_savez)
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp-")]
    state = json.loads((tmp_path / STATE_NAME).read_text())
    assert [row["epoch"] for row in state["rows"]] == [0]
    keras.backend.clear_session()
    resumed = _tuner(tmp_path, CrashAt(None)).fit()
    assert resumed.history["epoch"] == [0, 1, 2, 3]


def test_early_stopping_state_survives_a_restart(tmp_path: Path) -> None:
    kwargs = {"epochs": 6, "fine_tune_epochs": 1, "learning_rate": 1e-9, "early_stopping": 1}
    uninterrupted = _tuner(None, CrashAt(None), **kwargs).fit()
    assert uninterrupted.history["phase"].count(1) < 6  # stopped early
    with pytest.raises(Crash):
        _tuner(tmp_path, CrashAt(6), **kwargs).fit()  # the epoch of phase 2
    keras.backend.clear_session()
    resumed = _tuner(tmp_path, CrashAt(None), **kwargs).fit()
    assert resumed.history == uninterrupted.history
    assert _same_weights(resumed.model, uninterrupted.model)


def test_trainer_alone_resumes_with_keras_models(tmp_path: Path) -> None:
    import tensorflow as tf

    def build() -> tuple[keras.Model, keras.Model]:
        keras.utils.set_random_seed(3)
        backbone = keras.Sequential(
            [keras.Input((4,)), keras.layers.Dense(8, name="d1"), keras.layers.Dense(8, name="d2")],
            name="backbone",
        )
        inputs = keras.Input((4,))
        out = keras.layers.Dense(2, activation="softmax")(backbone(inputs, training=False))
        return keras.Model(inputs, out), backbone

    rng = np.random.default_rng(1)
    x = rng.normal(size=(32, 4)).astype("float32")
    y = keras.utils.to_categorical(np.arange(32) % 2, 2)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)

    def trainer(cb: keras.callbacks.Callback) -> ftk.Trainer:
        return ftk.Trainer(
            "sgd",
            0.1,
            epochs=2,
            fine_tune_epochs=2,
            verbose=0,
            checkpoint_dir=tmp_path,
            callbacks=[cb],
        )

    model, backbone = build()
    with pytest.raises(Crash):
        trainer(CrashAt(2)).train(model, backbone, ds, loss="categorical_crossentropy")
    model, backbone = build()
    run = trainer(CrashAt(None)).train(model, backbone, ds, loss="categorical_crossentropy")
    assert run.history["epoch"] == [0, 1, 2, 3] and run.resumed_from["epochs_done"] == 2
    assert all(layer.trainable for layer in backbone.layers)
