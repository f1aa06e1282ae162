"""Reliability guarantees: atomic saves, safe loading, best-weight keeping, reproducibility.

Bad inputs are in test_bad_inputs.py and kill-and-resume in test_resume.py.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf

import finetunekit as ftk
from finetunekit.training.checkpoint import CheckpointStore, atomic_write, monitor_mode

# ---------------------------------------------------------------------- helpers


def _small_result(scale: float = 1.0) -> ftk.FineTuneResult:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    outputs = keras.layers.Dense(2, activation="softmax", name="head_output")(inputs)
    model = keras.Model(inputs, outputs)
    model.set_weights([w * scale for w in model.get_weights()])
    return ftk.FineTuneResult(model=model, task="multiclass", class_names=["a", "b"])


def _leftovers(folder: Path) -> list[str]:
    return [name for name in os.listdir(folder) if name.startswith((".ftk-", ".tmp-"))]


# ---------------------------------------------------------------------- atomic save


@pytest.mark.parametrize("crash_in", ["model.save", "metadata"])
def test_crash_while_saving_keeps_the_previous_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, crash_in: str
) -> None:
    path = tmp_path / "model.keras"
    old = _small_result()
    old.save(path)
    before = path.read_bytes()
    x = np.ones((3, 4), "float32")
    expected = old.predict(x)

    if crash_in == "model.save":
        real_save = keras.Model.save

        def crashing_save(self: keras.Model, filepath: Any, *args: Any, **kwargs: Any) -> None:
            real_save(self, filepath, *args, **kwargs)
            with open(filepath, "r+b") as handle:  # a half-written file, then the crash
                handle.truncate(os.path.getsize(filepath) // 2)
            raise RuntimeError("killed while writing the model")

        monkeypatch.setattr(keras.Model, "save", crashing_save)
    else:

        def crashing_writestr(self: zipfile.ZipFile, *args: Any, **kwargs: Any) -> None:
            raise RuntimeError("killed while writing the metadata")

        monkeypatch.setattr(zipfile.ZipFile, "writestr", crashing_writestr)

    with pytest.raises(RuntimeError, match="killed"):
        _small_result(scale=3.0).save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before  # the previous file, byte for byte
    assert _leftovers(tmp_path) == []  # and no temporary file left behind
    np.testing.assert_array_equal(ftk.load(path).predict(x), expected)


def test_crash_while_saving_a_new_file_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crashing_save(self: keras.Model, filepath: Any, *args: Any, **kwargs: Any) -> None:
        Path(filepath).write_bytes(b"PK\x03\x04 partial")
        raise RuntimeError("killed")

    monkeypatch.setattr(keras.Model, "save", crashing_save)
    with pytest.raises(RuntimeError):
        _small_result().save(tmp_path / "new.keras")
    assert os.listdir(tmp_path) == []


def test_atomic_write_helper_keeps_the_old_file_on_error(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    atomic_write(target, lambda handle: handle.write(b"old"))

    def broken(handle: Any) -> None:
        handle.write(b"new but incomplete")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(target, broken)
    assert target.read_bytes() == b"old" and _leftovers(tmp_path) == []


# ---------------------------------------------------------------------- safe loading


def _lambda_result_file(tmp_path: Path) -> tuple[Path, np.ndarray]:
    inputs = keras.Input((4,))
    doubled = keras.layers.Lambda(lambda t: t * 2.0, name="hidden_code")(inputs)
    outputs = keras.layers.Dense(2, activation="softmax", name="head_output")(doubled)
    result = ftk.FineTuneResult(
        model=keras.Model(inputs, outputs), task="multiclass", class_names=["a", "b"]
    )
    path = tmp_path / "with_lambda.keras"
    result.save(path)
    return path, result.predict(np.ones((2, 4), "float32"))


def test_load_refuses_a_file_carrying_code_unless_trusted(tmp_path: Path) -> None:
    path, expected = _lambda_result_file(tmp_path)
    with pytest.raises(ftk.LoadError) as info:
        ftk.load(path)
    message = str(info.value)
    assert "Lambda" in message and "safe_mode=True" in message and "Received" in message
    assert "safe_mode=False" in message  # the fix

    trusted = ftk.load(path, safe_mode=False)
    np.testing.assert_allclose(trusted.predict(np.ones((2, 4), "float32")), expected)

    with pytest.raises(ftk.LoadError):  # opting in once does not switch safe mode off
        ftk.load(path)


def test_checkpoints_are_read_without_unpickling(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    with open(tmp_path / "ckpt-000001.npz", "wb") as handle:
        np.savez(handle, v0=np.array([{"code": "run me"}], dtype=object))
    with pytest.raises(ftk.CheckpointError) as info:
        store.read_arrays("ckpt-000001.npz", "v")
    assert "checkpoint_dir=" in str(info.value)


# ---------------------------------------------------------------------- best weights


class _Recorder(keras.callbacks.Callback):
    """Keeps the weights after every epoch; wrecks the head before epoch ``wreck_at``."""

    def __init__(self, wreck_at: int) -> None:
        super().__init__()
        self.wreck_at = wreck_at
        self.weights: dict[int, list[np.ndarray]] = {}

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        if epoch == self.wreck_at:
            head = self.model.get_layer("head_output")
            head.kernel.assign(-50.0 * tf.sign(head.kernel))

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        self.weights[epoch] = self.model.get_weights()


def _model_and_data() -> tuple[keras.Model, keras.Model, Any, Any]:
    keras.utils.set_random_seed(5)
    backbone = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(8, activation="relu", name="d1")], name="backbone"
    )
    inputs = keras.Input((6,))
    outputs = keras.layers.Dense(2, activation="softmax", name="head_output")(
        backbone(inputs, training=False)
    )
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 6)).astype("float32")
    labels = (x[:, 0] > 0).astype(int)
    y = keras.utils.to_categorical(labels, 2)
    train = tf.data.Dataset.from_tensor_slices((x[:48], y[:48])).batch(16)
    val = tf.data.Dataset.from_tensor_slices((x[48:], y[48:])).batch(16)
    return keras.Model(inputs, outputs), backbone, train, val


@pytest.mark.parametrize("keep_best", [True, False])
def test_keep_best_restores_the_best_validation_weights(keep_best: bool) -> None:
    model, backbone, train, val = _model_and_data()
    recorder = _Recorder(wreck_at=3)  # the last epoch (phase 2) gets much worse
    trainer = ftk.Trainer(
        "sgd",
        0.05,
        epochs=2,
        fine_tune_epochs=2,
        fine_tune_learning_rate=1e-6,
        verbose=0,
        keep_best=keep_best,
        callbacks=[recorder],
    )
    run = trainer.train(model, backbone, train, val, loss="categorical_crossentropy")
    val_loss = run.history["val_loss"]
    best = int(np.argmin(val_loss))
    assert best != 3 and val_loss[3] > val_loss[best]
    kept = recorder.weights[best if keep_best else 3]
    for final, expected in zip(model.get_weights(), kept, strict=True):
        np.testing.assert_array_equal(final, expected)
    assert run.history["epoch"] == [0, 1, 2, 3]  # the history keeps every epoch


def test_keep_best_maximises_accuracy_like_metrics() -> None:
    assert monitor_mode("val_accuracy") == "max" and monitor_mode("val_auc") == "max"
    assert monitor_mode("val_loss") == "min" and monitor_mode("val_mae") == "min"


# ---------------------------------------------------------------------- reproducibility


def _tiny_net() -> keras.Model:
    keras.utils.set_random_seed(11)
    inputs = keras.Input((16, 16, 1))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="c1")(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.Conv2D(4, 3, activation="relu", name="c2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="old_head")(x), name="tiny")


def _fit(net: keras.Model, data: ftk.DatasetAdapter, seed: int) -> ftk.FineTuneResult:
    return (
        ftk.FineTuner()
        .with_data(data, validation=0.25)  # the split is seeded too
        .with_backbone(ftk.Backbone.from_model(net))
        .with_head(ftk.HeadReplacer(hidden_units=(8,), dropout=0.4))  # dropout is seeded
        .with_trainer(ftk.Trainer(epochs=2, fine_tune_epochs=1, batch_size=8, seed=seed, verbose=0))
        .fit()
    )


def test_same_seed_gives_identical_weights_and_metrics_on_cpu() -> None:
    rng = np.random.default_rng(0)
    data = ftk.DatasetAdapter.from_arrays(
        rng.integers(0, 255, (48, 16, 16)).astype("uint8"), np.arange(48) % 3
    )
    net = _tiny_net()
    first, second = _fit(net, data, seed=3), _fit(net, data, seed=3)
    assert first.history == second.history
    for a, b in zip(first.model.get_weights(), second.model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert first.evaluate(data).to_dict() == second.evaluate(data).to_dict()

    other = _fit(net, data, seed=4)
    assert any(
        not np.array_equal(a, b)
        for a, b in zip(first.model.get_weights(), other.model.get_weights(), strict=True)
    )


def test_seeded_shuffle_repeats_its_order() -> None:
    data = ftk.DatasetAdapter.from_arrays(np.arange(20).reshape(20, 1), np.arange(20) % 2)

    def orders(seed: int) -> list[list[int]]:
        ds = data.as_dataset(20, shuffle=True, seed=seed)
        return [next(iter(ds))[0].numpy().ravel().tolist() for _ in range(3)]

    first = orders(1)
    assert first == orders(1)  # the same sequence of epochs
    assert first[0] != first[1]  # a new order every epoch
