"""How the Trainer optimises (issue 6, part A): gradual unfreezing, discriminative rates,
schedules, label smoothing, class weights, gradient accumulation, weight decay.

Every test checks behaviour with numbers: the frozen set of each epoch, the weight
change of each layer group after one SGD step, the rate at each step, losses against
hand computations.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf
from _crash import Crash, CrashAt

import finetunekit as ftk
from finetunekit.training.discriminative import DiscriminativeOptimizer, group_rates
from finetunekit.training.freezing import layer_groups, unfreeze_groups
from finetunekit.training.losses import SmoothedSparseCategoricalCrossentropy, smooth_loss
from finetunekit.training.methods import unfrozen_counts
from finetunekit.training.optimizers import make_optimizer
from finetunekit.training.schedules import OneCycle, WarmupConstant, WarmupCosine


def _stack(layers: int = 4, width: int = 6) -> tuple[keras.Model, keras.Model]:
    """A model with a Dense-stack backbone ``d0..d<n-1>`` nested as ``backbone``."""
    keras.utils.set_random_seed(0)
    backbone = keras.Sequential(
        [keras.Input((width,))]
        + [keras.layers.Dense(width, activation="tanh", name=f"d{i}") for i in range(layers)],
        name="backbone",
    )
    inputs = keras.Input((width,))
    outputs = keras.layers.Dense(3, activation="softmax", name="head")(backbone(inputs))
    return keras.Model(inputs, outputs), backbone


def _batch(n: int = 16, width: int = 6) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(n, width)).astype("float32")
    y = keras.utils.to_categorical(np.arange(n) % 3, 3).astype("float32")
    return x, y


def _ds(batch_size: int = 16, n: int = 16) -> tf.data.Dataset:
    return tf.data.Dataset.from_tensor_slices(_batch(n)).batch(batch_size)


class Probe(keras.callbacks.Callback):
    """Records the trainable backbone layers per epoch and the rate per batch."""

    def __init__(self) -> None:
        super().__init__()
        self.trainable: dict[int, list[str]] = {}
        self.kernels: dict[int, np.ndarray] = {}
        self.rates: list[float] = []

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        backbone = self.model.get_layer("backbone")
        self.trainable[epoch] = [
            layer.name for layer in backbone.layers if layer.trainable and layer.weights
        ]
        self.kernels[epoch] = np.array(backbone.get_layer("d0").kernel.numpy())

    def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
        self.rates.append(float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))


# ---------------------------------------------------------------------- groups / freezing
def test_layer_groups_are_contiguous_top_first_and_respect_unfreeze_and_bn() -> None:
    net = keras.Sequential(
        [keras.Input((4,))]
        + [keras.layers.Dense(4, name=f"d{i}") for i in range(5)]
        + [keras.layers.BatchNormalization(name="bn"), keras.layers.Dense(4, name="top")]
    )
    names = [[layer.name for layer in g] for g in layer_groups(net, 3)]
    assert names == [["d4", "top"], ["d2", "d3"], ["d0", "d1"]]  # BatchNorm left out
    with_bn = [[layer.name for layer in g] for g in layer_groups(net, 2, train_bn=True)]
    assert with_bn == [["d3", "d4", "bn", "top"], ["d0", "d1", "d2"]]
    assert [[layer.name for layer in g] for g in layer_groups(net, 4, unfreeze=2)] == [
        ["top"],
        ["d4"],
    ]
    assert unfreeze_groups(net, layer_groups(net, 3), 2) == 4
    assert [layer.name for layer in net.layers if layer.trainable] == ["d2", "d3", "d4", "top"]
    assert unfrozen_counts(4, 2, 3) == [2, 4, 4]
    assert unfrozen_counts(3, [0, 2, 2], 4) == [1, 1, 3, 3]
    # "spread": group i (top first) at phase-2 epoch i * epochs // groups
    assert unfrozen_counts(4, "spread", 3) == [2, 3, 4]
    assert unfrozen_counts(2, "spread", 20) == [1] * 10 + [2] * 10
    spread = ftk.Trainer(fine_tune_epochs=4, gradual_unfreeze="spread")
    assert ftk.Trainer.from_config(spread.get_config()).gradual_unfreeze == "spread"


@pytest.mark.parametrize(
    ("gradual", "expected"),
    [
        (1, [[], ["d3"], ["d2", "d3"], ["d1", "d2", "d3"]]),
        ([0, 0, 2], [[], ["d2", "d3"], ["d2", "d3"], ["d1", "d2", "d3"]]),
    ],
)
def test_gradual_unfreezing_sets_the_frozen_set_of_every_epoch(
    gradual: Any, expected: list[list[str]]
) -> None:
    model, backbone = _stack()
    probe = Probe()
    trainer = ftk.Trainer(
        "adam",
        1e-2,
        epochs=1,
        fine_tune_epochs=3,
        layer_groups=4,
        gradual_unfreeze=gradual,
        batch_size=4,
        verbose=0,
        callbacks=[probe],
    )
    run = trainer.train(model, backbone, _ds(4), loss="categorical_crossentropy")
    assert [probe.trainable[e] for e in range(4)] == expected
    assert run.history["unfrozen_groups"] == [0] + [len(names) for names in expected[1:]]
    assert run.info["layer_groups"] == [["d3"], ["d2"], ["d1"], ["d0"]]
    # d0 is never unfrozen: it never changes (weight decay, momentum included)
    for e in range(1, 4):
        np.testing.assert_array_equal(probe.kernels[e], probe.kernels[0])
    np.testing.assert_array_equal(backbone.get_layer("d0").kernel.numpy(), probe.kernels[0])
    # one optimizer for the whole phase: its step counter is never reset
    assert int(model.optimizer.iterations) == 3 * 4
    assert run.trainable_params["phase2"] > run.trainable_params["phase1"]


def _tuner(ckpt: Path | None, callbacks: list[Any], **kwargs: Any) -> ftk.FineTuner:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(24, 6)).astype("float32")
    settings: dict[str, Any] = {
        "optimizer": "adam",
        "learning_rate": 1e-2,
        "epochs": 1,
        "fine_tune_epochs": 2,
        "layer_groups": 2,
        "gradual_unfreeze": 1,
        "fine_tune_learning_rate": (1e-4, 1e-2),
        "schedule": "cosine",
        "warmup": 0.1,
        "batch_size": 8,
        "seed": 3,
        "verbose": 0,
        "checkpoint_dir": None if ckpt is None else str(ckpt),
        "callbacks": callbacks,
        **kwargs,
    }
    return (
        ftk.FineTuner()
        .with_data(ftk.DatasetAdapter.from_arrays(x, np.arange(24) % 3))
        .with_backbone(ftk.Backbone.from_model(_stack(3)[1]))  # d2 is dropped as the old head
        .with_head(ftk.HeadReplacer(hidden_units=(), dropout=0.0))
        .with_trainer(ftk.Trainer(**settings))
    )


def test_resume_mid_phase_two_restores_the_frozen_set_and_optimizer(tmp_path: Path) -> None:
    reference = _tuner(None, []).fit()
    assert reference.history["unfrozen_groups"] == [0, 1, 2]
    with pytest.raises(Crash):
        _tuner(tmp_path, [CrashAt(2)]).fit()  # in phase-2 epoch 1: both groups trainable
    keras.backend.clear_session()
    probe = Probe()
    resumed = _tuner(tmp_path, [probe]).fit()
    assert resumed.info["resumed_from"]["epochs_done"] == 2
    assert probe.trainable == {2: ["d0", "d1"]}  # saved with 1 group trainable, resumed with 2
    assert resumed.history == reference.history  # weights, Adam slots per group, schedule step
    for a, b in zip(resumed.model.get_weights(), reference.model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------------- discriminative rates
@pytest.mark.parametrize("jit_compile", [False, True])
@pytest.mark.parametrize(
    ("rate", "multipliers", "head", "groups"),
    [((1e-2, 1.0), None, 1.0, [1.0, 0.1, 0.01]), (2.0, [1.0, 0.5, 0.1], 2.0, [2.0, 1.0, 0.2])],
)
def test_each_layer_group_steps_at_its_own_rate(
    jit_compile: bool, rate: Any, multipliers: Any, head: float, groups: list[float]
) -> None:
    model, backbone = _stack()
    x, y = _batch()
    loss_fn = keras.losses.CategoricalCrossentropy()
    with tf.GradientTape() as tape:
        loss = loss_fn(y, model(x, training=True))
    grads = dict(
        zip(
            [v.path for v in model.trainable_variables],
            tape.gradient(loss, model.trainable_variables),
            strict=True,
        )
    )
    before = {v.path: np.array(v.numpy()) for v in model.trainable_variables}
    trainer = ftk.Trainer(
        "sgd",
        1e-2,
        epochs=0,
        fine_tune_epochs=1,
        fine_tune_learning_rate=rate,
        lr_multipliers=multipliers,
        layer_groups=3,
        batch_size=16,
        verbose=0,
        jit_compile=jit_compile,
        shuffle=False,
    )
    run = trainer.train(model, backbone, _ds(16), loss="categorical_crossentropy")
    # 4 layers in 3 groups, top first: [d2, d3], [d1], [d0]
    assert run.info["layer_groups"] == [["d2", "d3"], ["d1"], ["d0"]]
    expected_rate = {
        "head": head,
        "d3": groups[0],
        "d2": groups[0],
        "d1": groups[1],
        "d0": groups[2],
    }
    opt = model.optimizer
    assert isinstance(opt, DiscriminativeOptimizer)
    assert int(opt.iterations) == 1
    assert float(opt.learning_rate) == pytest.approx(head)  # callbacks see the head's rate
    assert opt.learning_rates == pytest.approx([head, *groups])
    for variable in model.trainable_variables:
        layer = variable.path.split("/")[-2]
        change = variable.numpy() - before[variable.path]
        np.testing.assert_allclose(
            change, -expected_rate[layer] * grads[variable.path].numpy(), rtol=1e-3, atol=3e-7
        )


def test_rate_range_defaults_and_group_rates() -> None:
    trainer = ftk.Trainer(learning_rate=(1e-4, 1e-2), fine_tune_epochs=1)
    assert trainer.resolved_fine_tune_learning_rate == pytest.approx((1e-6, 1e-4))  # / 100
    assert group_rates(1e-4, 1e-2, 3) == pytest.approx([1e-2, 1e-3, 1e-4])
    assert group_rates(1e-4, 1e-2, 1) == [1e-2]


def test_discriminative_optimizer_scales_every_group_and_round_trips() -> None:
    net = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, name="d")])
    opt = DiscriminativeOptimizer(
        [keras.optimizers.SGD(0.1), keras.optimizers.SGD(0.01)], {net.layers[0].kernel.path: 1}
    )
    opt.build(net.trainable_variables)
    opt.learning_rate = 0.05  # as ReduceLROnPlateau does: every group halves
    assert opt.learning_rates == pytest.approx([0.05, 0.005])
    again = keras.optimizers.deserialize(json.loads(json.dumps(keras.optimizers.serialize(opt))))
    assert isinstance(again, DiscriminativeOptimizer)
    assert again.assignments == opt.assignments
    assert len(opt.variables) == 1 + 2 * 2  # own step + (step, rate) per inner optimizer


# ---------------------------------------------------------------------- schedules
def test_schedules_give_the_documented_rate_at_each_step() -> None:
    cosine = WarmupCosine(1.0, total_steps=20, warmup_steps=4)
    assert [round(float(cosine(s)), 4) for s in (0, 3, 4, 12, 20)] == [0.25, 1.0, 1.0, 0.5, 0.0]
    cycle = OneCycle(1.0, total_steps=10)
    assert float(cycle(0)) == pytest.approx(0.04)
    assert float(cycle(3)) == pytest.approx(1.0)
    assert float(cycle(10)) == pytest.approx(0.04 / 1e4, rel=1e-3)
    assert float(WarmupConstant(0.5, 2)(0)) == pytest.approx(0.25)
    for schedule in (cosine, cycle):
        again = keras.optimizers.schedules.deserialize(
            json.loads(json.dumps(keras.optimizers.schedules.serialize(schedule)))
        )
        assert float(again(7)) == pytest.approx(float(schedule(7)))


def test_trainer_follows_the_schedule_over_each_phase() -> None:
    model, backbone = _stack()
    probe = Probe()
    trainer = ftk.Trainer(
        "sgd",
        0.1,
        epochs=2,
        fine_tune_epochs=1,
        batch_size=4,
        schedule="cosine",
        warmup=0.25,
        verbose=0,
        callbacks=[probe],
    )
    trainer.train(model, backbone, _ds(4), loss="categorical_crossentropy")
    phase1 = WarmupCosine(0.1, total_steps=8, warmup_steps=2)
    phase2 = WarmupCosine(0.001, total_steps=4, warmup_steps=1)  # a hundredth
    expected = [float(phase1(s)) for s in range(8)] + [float(phase2(s)) for s in range(4)]
    assert probe.rates == pytest.approx(expected, rel=1e-5)


# ---------------------------------------------------------------------- losses
def test_label_smoothing_matches_a_hand_computation() -> None:
    y = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]], dtype="float32")
    p = np.array([[0.2, 0.7, 0.1], [0.5, 0.3, 0.2]], dtype="float32")
    smoothed = y * 0.7 + 0.3 / 3
    hand = float(np.mean(-np.sum(smoothed * np.log(p), axis=1)))
    assert float(smooth_loss("categorical_crossentropy", 0.3)(y, p)) == pytest.approx(hand, 1e-5)
    sparse = SmoothedSparseCategoricalCrossentropy(0.3)
    assert float(sparse(np.array([1, 0]), p)) == pytest.approx(hand, 1e-5)
    b = smooth_loss(keras.losses.BinaryCrossentropy(), 0.2)
    assert b.get_config()["label_smoothing"] == 0.2
    with pytest.raises(ftk.TrainerError, match="classification"):
        smooth_loss("mse", 0.1, "regression")
    with pytest.raises(ftk.TrainerError, match="one place"):
        smooth_loss(keras.losses.CategoricalCrossentropy(label_smoothing=0.1), 0.2)


def test_trainer_trains_on_the_smoothed_and_class_weighted_loss() -> None:
    """One batch, a negligible rate: the logged loss is the loss of the initial model."""
    x, y = _batch(12)
    y = keras.utils.to_categorical([0] * 8 + [1] * 3 + [2], 3).astype("float32")
    data = ftk.DatasetAdapter.from_arrays(x, np.argmax(y, axis=1))
    model, backbone = _stack()
    p = np.asarray(model(x, training=False), dtype="float64")
    trainer = ftk.Trainer(
        "sgd",
        1e-12,
        epochs=1,
        batch_size=12,
        label_smoothing=0.2,
        class_weight="balanced",
        verbose=0,
        shuffle=False,
    )
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(12)
    run = trainer.train(model, backbone, ds, loss="categorical_crossentropy", train_data=data)
    weights = {0: 12 / (3 * 8), 1: 12 / (3 * 3), 2: 12 / (3 * 1)}
    assert run.info["class_weight"] == pytest.approx(weights)
    w = np.array([weights[int(c)] for c in np.argmax(y, axis=1)])
    per_example = -np.sum((y * 0.8 + 0.2 / 3) * np.log(p), axis=1)
    assert run.history["loss"][0] == pytest.approx(float(np.mean(w * per_example)), rel=1e-4)


def test_class_weight_reaches_the_feature_cache_path() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(24, 6)).astype("float32")
    data = ftk.DatasetAdapter.from_arrays(x, [0] * 18 + [1] * 6)

    def fit(cache: bool, class_weight: Any) -> ftk.FineTuneResult:
        trainer = ftk.Trainer(
            "sgd",
            1e-12,
            epochs=2,
            batch_size=24,
            seed=0,
            verbose=0,
            shuffle=False,
            cache_features=cache,
            class_weight=class_weight,
        )
        return (
            ftk.FineTuner()
            .with_data(data)
            .with_backbone(ftk.Backbone.from_model(_stack(2)[1]))
            .with_head(ftk.HeadReplacer(hidden_units=(), dropout=0.0))
            .with_trainer(trainer)
            .fit()
        )

    cached = fit(True, {1: 5.0})
    assert cached.info["feature_cache"]["used"]
    assert cached.history["loss"][0] == pytest.approx(fit(False, {1: 5.0}).history["loss"][0])
    assert cached.history["loss"][0] != pytest.approx(fit(True, None).history["loss"][0])


def test_class_weight_and_label_smoothing_refuse_the_wrong_task() -> None:
    x = np.zeros((8, 6), dtype="float32")
    regression = ftk.DatasetAdapter.from_arrays(x, np.linspace(0, 1, 8))
    for kwargs in ({"class_weight": "balanced"}, {"label_smoothing": 0.1}):
        tuner = (
            ftk.FineTuner()
            .with_data(regression)
            .with_backbone(ftk.Backbone.from_model(_stack(1)[1]))
            .with_trainer(ftk.Trainer(epochs=1, verbose=0, **kwargs))
        )
        with pytest.raises(ftk.TrainerError):
            tuner.fit()
    classes = ftk.DatasetAdapter.from_arrays(x, ["a", "b"] * 4)
    from finetunekit.training.losses import class_weights

    assert class_weights({"b": 3.0}, classes) == {0: 1.0, 1: 3.0}
    assert class_weights({"1": 3.0}, classes) == {0: 1.0, 1: 3.0}  # JSON-turned int keys
    with pytest.raises(ftk.TrainerError, match="unknown class"):
        class_weights({"c": 3.0}, classes)


# ---------------------------------------------------------------------- optimizer args
def test_gradient_accumulation_updates_every_k_steps_with_the_mean_gradient() -> None:
    opt = make_optimizer("sgd", 0.1, gradient_accumulation_steps=2, weight_decay=None)
    assert opt.gradient_accumulation_steps == 2
    variable = keras.Variable(np.ones(3, dtype="float32"))
    g1, g2 = np.array([1.0, 2.0, 3.0], "float32"), np.array([3.0, 2.0, 1.0], "float32")
    opt.apply([g1], [variable])
    np.testing.assert_array_equal(variable.numpy(), np.ones(3))  # accumulated only
    opt.apply([g2], [variable])
    np.testing.assert_allclose(variable.numpy(), 1 - 0.1 * (g1 + g2) / 2, rtol=1e-6)


def test_weight_decay_and_accumulation_reach_every_phase_optimizer() -> None:
    model, backbone = _stack()
    trainer = ftk.Trainer(
        "adamw",
        1e-3,
        epochs=1,
        fine_tune_epochs=1,
        fine_tune_learning_rate=(1e-5, 1e-4),
        batch_size=4,
        weight_decay=0.05,
        gradient_accumulation_steps=2,
        verbose=0,
    )
    trainer.train(model, backbone, _ds(4), loss="categorical_crossentropy")
    for inner in model.optimizer.inner_optimizers:
        assert inner.weight_decay == 0.05 and inner.gradient_accumulation_steps == 2
    assert make_optimizer("adamw", 1e-3).weight_decay == 0.004  # None keeps Keras' default


# ---------------------------------------------------------------------- recipe
def test_new_arguments_round_trip_through_json_and_defaults_are_unchanged() -> None:
    trainer = ftk.Trainer(
        learning_rate=(1e-5, 1e-3),
        fine_tune_epochs=2,
        layer_groups=3,
        gradual_unfreeze=[0, 1, 1],
        schedule="one_cycle",
        warmup=0.2,
        label_smoothing=0.1,
        class_weight={"cat": 2.0, 1: 0.5},
        gradient_accumulation_steps=4,
        weight_decay=0.01,
    )
    config = json.loads(json.dumps(trainer.get_config()))
    assert ftk.Trainer.from_config(config).get_config() == config
    assert config["learning_rate"] == [1e-5, 1e-3]
    defaults = ftk.Trainer().get_config()
    assert defaults["learning_rate"] == "auto" and defaults["schedule"] == "constant"
    assert ftk.Trainer().resolved_learning_rate() == 1e-2  # the rate of a new head
    assert ftk.Trainer().resolved_fine_tune_learning_rate == pytest.approx(1e-4)
    assert defaults["gradual_unfreeze"] is None and defaults["layer_groups"] == 4


@pytest.mark.parametrize(
    ("kwargs", "arg"),
    [
        ({"learning_rate": (1e-3, 1e-5)}, "learning_rate"),
        ({"gradual_unfreeze": [1, 2]}, "gradual_unfreeze"),
        ({"gradual_unfreeze": 0}, "gradual_unfreeze"),
        ({"layer_groups": 2, "gradual_unfreeze": [0, 1, 2]}, "gradual_unfreeze"),
        ({"lr_multipliers": [1.0, 0.5]}, "lr_multipliers"),
        ({"schedule": "linear"}, "schedule"),
        ({"warmup": 1.5}, "warmup"),
        ({"label_smoothing": 1.0}, "label_smoothing"),
        ({"class_weight": "auto"}, "class_weight"),
        ({"gradient_accumulation_steps": 0}, "gradient_accumulation_steps"),
        ({"weight_decay": -1}, "weight_decay"),
    ],
)
def test_bad_method_arguments_raise_at_construction(kwargs: dict[str, Any], arg: str) -> None:
    with pytest.raises(ftk.TrainerError) as info:
        ftk.Trainer(**kwargs)
    assert f"{arg}=" in str(info.value)


def test_multipliers_for_more_groups_than_layers_raise_before_training() -> None:
    model, backbone = _stack(2)
    trainer = ftk.Trainer(
        fine_tune_epochs=1, layer_groups=3, lr_multipliers=[1.0, 0.5, 0.1], verbose=0
    )
    with pytest.raises(ftk.TrainerError, match="only 2"):
        trainer.train(model, backbone, _ds(), loss="categorical_crossentropy")


def test_saved_model_of_a_discriminative_run_loads(tmp_path: Path) -> None:
    result = _tuner(None, [], fine_tune_epochs=1, gradual_unfreeze=None).fit()
    result.save(tmp_path / "m.keras")
    again = ftk.load(tmp_path / "m.keras")
    x = np.random.default_rng(5).normal(size=(4, 6)).astype("float32")
    np.testing.assert_allclose(again.predict(x), result.predict(x), rtol=1e-6)
