"""Step 4: Trainer validation, freezing, phases, BatchNorm policy, recompiling."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import finetunekit as ftk
from finetunekit.training import freeze, unfreeze, weight_layers


def _backbone():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, name="c1")(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.Conv2D(4, 3, name="c2")(x)
    x = keras.layers.BatchNormalization(name="bn2")(x)
    x = keras.layers.Conv2D(4, 3, name="c3")(x)
    return keras.Model(inputs, x, name="backbone")


def _model():
    backbone = _backbone()
    inputs = keras.Input((8, 8, 3))
    feats = backbone(inputs, training=False)
    x = keras.layers.GlobalAveragePooling2D()(feats)
    out = keras.layers.Dense(2, activation="softmax", name="head_output")(x)
    return keras.Model(inputs, out), backbone


def _data(n=32):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 8, 8, 3)).astype("float32")
    y = keras.utils.to_categorical(np.arange(n) % 2, 2)
    x[y[:, 1] == 1] += 1.0
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(8)


def test_unfreeze_top_n_counts_weight_layers_and_skips_batchnorm():
    backbone = _backbone()
    freeze(backbone)
    assert not backbone.trainable_weights
    assert [la.name for la in weight_layers(backbone)] == ["c1", "c2", "c3"]
    assert unfreeze(backbone, 2) == 2
    trainable = {la.name for la in backbone.layers if la.trainable and la.weights}
    assert trainable == {"c2", "c3"}
    assert unfreeze(backbone, "all") == 3
    assert not backbone.get_layer("bn1").trainable
    assert unfreeze(backbone, "all", train_bn=True) == 5
    assert backbone.get_layer("bn1").trainable


def test_unfreeze_deeper_than_backbone_raises():
    with pytest.raises(ftk.TrainerError) as err:
        unfreeze(_backbone(), 10)
    assert "unfreeze=10" in str(err.value) and "3" in str(err.value)


def test_two_phases_recompile_and_keep_batchnorm_in_inference_mode():
    model, backbone = _model()
    bn = backbone.get_layer("bn1")
    mean_before = bn.moving_mean.numpy().copy()
    conv_before = backbone.get_layer("c1").kernel.numpy().copy()
    trainer = ftk.Trainer(
        optimizer="sgd", learning_rate=0.1, epochs=2, fine_tune_epochs=2, verbose=0, seed=1
    )
    run = trainer.train(
        model, backbone, _data(), _data(16), loss="categorical_crossentropy", metrics=["accuracy"]
    )
    assert run.history["phase"] == [1, 1, 2, 2]
    assert run.history["epoch"] == [0, 1, 2, 3]
    assert len(run.history["val_loss"]) == 4
    head_params = 4 * 2 + 2
    assert run.trainable_params["phase1"] == head_params
    assert run.trainable_params["phase2"] > head_params  # recompiled after unfreezing
    np.testing.assert_array_equal(bn.moving_mean.numpy(), mean_before)  # BN stats untouched
    assert not np.allclose(backbone.get_layer("c1").kernel.numpy(), conv_before)  # conv trained
    assert set(run.timings) == {"phase1", "phase2"}
    assert abs(model.optimizer.learning_rate.numpy() - 0.001) < 1e-9  # a hundredth in phase 2


def test_phase_one_leaves_backbone_unchanged():
    """Phase 1 trains the head only: every backbone weight is bit-identical afterwards."""
    model, backbone = _model()
    before = [w.copy() for w in backbone.get_weights()]
    head_before = model.get_layer("head_output").kernel.numpy().copy()
    ftk.Trainer(epochs=1, verbose=0).train(
        model, backbone, _data(), loss="categorical_crossentropy", metrics=[]
    )
    for a, b in zip(before, backbone.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.allclose(model.get_layer("head_output").kernel.numpy(), head_before)  # it ran


class _SpoilHeadAfter(keras.callbacks.Callback):
    """Records the full model's weights at every epoch end; from epoch ``first_bad`` on,
    overwrites the head's kernel with large seeded noise at each epoch start, so the
    monitored loss of those epochs is worse than the best one."""

    def __init__(self, first_bad: int) -> None:
        super().__init__()
        self.first_bad = first_bad
        self.weights_at: list[list[np.ndarray]] = []
        self._rng = np.random.default_rng(0)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if epoch >= self.first_bad:
            kernel = self.model.get_layer("head_output").kernel
            kernel.assign(30.0 * self._rng.normal(size=kernel.shape).astype("float32"))

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.weights_at.append([w.copy() for w in self.model.get_weights()])


def test_early_stopping_restores_best_weights_without_validation():
    """Early stopping (monitor val_loss -> loss without validation) stops ``patience``
    epochs after the best one and puts back exactly the best epoch's weights."""
    keras.utils.set_random_seed(0)
    model, backbone = _model()
    spoil = _SpoilHeadAfter(first_bad=3)
    trainer = ftk.Trainer(
        optimizer="sgd",
        learning_rate=0.1,
        epochs=30,
        early_stopping=2,
        callbacks=[spoil],
        verbose=0,
    )
    run = trainer.train(model, backbone, _data(), loss="categorical_crossentropy")
    losses = run.history["loss"]
    assert len(losses) == 3 + 2  # epochs 0-2 improve; 3 and 4 spoiled; stop after patience 2
    assert int(np.argmin(losses)) == 2 and min(losses[3:]) > losses[2]
    for got, best in zip(model.get_weights(), spoil.weights_at[2], strict=True):
        np.testing.assert_array_equal(got, best)
    changed = [
        not np.array_equal(b, la) for b, la in zip(spoil.weights_at[2], spoil.weights_at[-1])
    ]
    assert any(changed)  # the restore is visible: the last epoch's weights differ


def test_optimizer_instance_is_copied_per_phase():
    opt = keras.optimizers.SGD(learning_rate=0.5, momentum=0.9)
    trainer = ftk.Trainer(
        optimizer=opt, learning_rate=0.05, epochs=1, fine_tune_epochs=1, verbose=0
    )
    model, backbone = _model()
    trainer.train(model, backbone, _data(), loss="categorical_crossentropy")
    assert model.optimizer is not opt
    assert abs(float(model.optimizer.momentum) - 0.9) < 1e-6


@pytest.mark.parametrize(
    "kwargs, arg",
    [
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": -4}, "batch_size"),
        ({"epochs": -1}, "epochs"),
        ({"epochs": 2.5}, "epochs"),
        ({"learning_rate": 0}, "learning_rate"),
        ({"learning_rate": -1e-3}, "learning_rate"),
        ({"learning_rate": float("nan")}, "learning_rate"),
        ({"optimizer": "adamm"}, "optimizer"),
        ({"optimizer": 3}, "optimizer"),
        ({"unfreeze": 0}, "unfreeze"),
        ({"fine_tune_learning_rate": -1.0}, "fine_tune_learning_rate"),
        ({"verbose": 5}, "verbose"),
        ({"seed": "zero"}, "seed"),
        ({"callbacks": [print]}, "callbacks"),
        ({"early_stopping": 0}, "early_stopping"),
        ({"epochs": 0, "fine_tune_epochs": 0}, "epochs"),
    ],
)
def test_bad_trainer_arguments(kwargs, arg):
    with pytest.raises(ftk.FineTuneError) as err:
        ftk.Trainer(**kwargs)
    assert f"{arg}=" in str(err.value) and "Received" in str(err.value)


@pytest.mark.parametrize(
    ("name", "cls"),
    [("sgd", "SGD"), ("adam", "Adam"), ("AdamW", "AdamW"), ("rmsprop", "RMSprop")],
)
def test_optimizer_names_build_that_keras_optimizer(name, cls):
    """A name (any case) becomes the Keras optimizer of that class at the phase's rate."""
    from finetunekit.training.optimizers import make_optimizer

    trainer = ftk.Trainer(optimizer=name, learning_rate=0.03)
    assert trainer.optimizer == name.lower()
    opt = make_optimizer(trainer.optimizer, trainer.learning_rate)
    assert type(opt) is getattr(keras.optimizers, cls)
    assert abs(float(opt.learning_rate.numpy()) - 0.03) < 1e-7


def test_config_round_trip_including_optimizer_instance():
    import json

    trainer = ftk.Trainer(
        optimizer=keras.optimizers.Adam(beta_1=0.8),
        learning_rate=3e-4,
        epochs=2,
        fine_tune_epochs=3,
        unfreeze=5,
        seed=7,
    )
    cfg = json.loads(json.dumps(trainer.get_config()))
    again = ftk.Trainer.from_config(cfg)
    assert again.fine_tune_epochs == 3 and again.unfreeze == 5 and again.seed == 7
    assert abs(again.optimizer.get_config()["beta_1"] - 0.8) < 1e-6
    with pytest.raises(ftk.ConfigError):
        ftk.Trainer.from_config({"epoch": 3})


def test_partial_config_keeps_defaults():
    trainer = ftk.Trainer.from_config({"epochs": 3, "batch_size": 16})
    assert trainer.epochs == 3 and trainer.batch_size == 16 and trainer.optimizer == "adam"
