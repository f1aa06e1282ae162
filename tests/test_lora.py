"""LoRA fine-tuning from the Trainer: what trains, how much, merging, saving, resuming."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
from _crash import Crash as _Crash
from _crash import CrashAt as _CrashAt

import finetunekit as ftk
from finetunekit.errors import TrainerError
from finetunekit.training.lora import apply_lora, lora_param_count, merge_lora

# conv c1 3x3 3->4, conv c2 3x3 4->5, dense d1 5->6: LoRA params r * (k*k*cin + cout) / r * (in + out)
RANK = 2
LORA_C1 = RANK * (3 * 3 * 3 + 4)
LORA_C2 = RANK * (3 * 3 * 4 + 5)
LORA_D1 = RANK * (5 + 6)
HEAD = 6 * 3 + 3  # Dense(6 -> 3) on the 6 features
BN = 2 * 4  # gamma and beta of BatchNorm(4)


def _net() -> keras.Model:
    keras.utils.set_random_seed(1)
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="c1")(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.Conv2D(5, 3, activation="relu", name="c2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    x = keras.layers.Dense(6, activation="relu", name="d1")(x)
    outputs = keras.layers.Dense(3, activation="softmax", name="old_head")(x)
    return keras.Model(inputs, outputs, name="tiny")


def _data(n: int = 48, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    x = (
        rng.integers(0, 120, (n, 16, 16, 3)).astype("uint8")
        + (y * 40).astype("uint8")[:, None, None, None]
    )
    return x, y


def _tuner(**kwargs: Any) -> ftk.FineTuner:
    x, y = _data()
    settings: dict[str, Any] = {
        "epochs": 1,
        "fine_tune_epochs": 2,
        "learning_rate": 1e-2,
        "fine_tune_learning_rate": 1e-2,
        "batch_size": 8,
        "lora_rank": RANK,
        "seed": 3,
        "verbose": 0,
        **kwargs,
    }
    return (
        ftk.FineTuner()
        .with_data(ftk.DatasetAdapter.from_arrays(x, y))
        .with_backbone(ftk.Backbone.from_model(_net(), feature_layer="d1"))
        .with_head(ftk.HeadReplacer(dropout=0.0))
        .with_trainer(ftk.Trainer(**settings))
    )


def _lora_names(model: keras.Model) -> list[str]:
    return [v.name for v in model.variables if v.name.startswith("lora_")]


def test_arguments_are_checked_and_serialised() -> None:
    with pytest.raises(TrainerError, match="lora_rank"):
        ftk.Trainer(fine_tune_epochs=1, lora_rank=0)
    with pytest.raises(TrainerError, match="lora_alpha"):
        ftk.Trainer(fine_tune_epochs=1, lora_rank=4, lora_alpha=-1.0)
    with pytest.raises(TrainerError, match="lora_layers"):
        ftk.Trainer(fine_tune_epochs=1, lora_rank=4, lora_layers=["conv", "attention"])
    with pytest.raises(TrainerError, match="fine_tune_epochs"):
        ftk.Trainer(epochs=2, lora_rank=4)
    trainer = ftk.Trainer(fine_tune_epochs=1, lora_rank=4, lora_alpha=8, lora_layers=["conv"])
    config = json.loads(json.dumps(trainer.get_config()))
    assert config["lora_rank"] == 4 and config["lora_alpha"] == 8.0
    assert config["lora_layers"] == ["conv"]
    again = ftk.Trainer.from_config(config)
    assert again.get_config() == trainer.get_config()
    assert ftk.Trainer().get_config()["lora_rank"] is None


def test_nothing_to_adapt_raises_before_training() -> None:
    with pytest.raises(TrainerError, match="no layer to adapt"):
        _tuner(lora_layers="embedding").fit()
    net = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    apply_lora(net, 2)
    with pytest.raises(TrainerError, match="already has LoRA"):
        apply_lora(net, 2)


@pytest.fixture(scope="module")
def reference() -> ftk.FineTuneResult:
    """An uninterrupted LoRA run without the feature cache."""
    return _tuner(epochs=2, cache_features=False, callbacks=[_CrashAt(None)]).fit()


def test_lora_trains_only_the_adapters_and_merges_exactly(
    tmp_path: Path, reference: ftk.FineTuneResult
) -> None:
    original = _net()
    result = _tuner(epochs=2, cache_features=True).fit()
    backbone = result.model.get_layer("backbone")

    # how much trains, by hand: adapters of c1, c2, d1 and the new head
    assert result.info["lora"]["params"] == LORA_C1 + LORA_C2 + LORA_D1
    assert result.info["lora"]["layers"] == 3
    assert result.params["trainable_phase1"] == HEAD
    assert result.params["trainable_phase2"] == LORA_C1 + LORA_C2 + LORA_D1 + HEAD
    assert sorted({v.name for v in backbone.trainable_weights}) == [
        "lora_kernel_a",
        "lora_kernel_b",
    ]
    # the pretrained weights themselves did not move; the adapters did
    for name in ("c1", "c2", "d1", "bn1"):
        for got, want in zip(
            backbone.get_layer(name).weights[:4], original.get_layer(name).weights, strict=False
        ):
            if not got.name.startswith("lora_"):
                np.testing.assert_array_equal(got.numpy(), want.numpy())
    assert np.abs(backbone.get_layer("c2").lora_kernel_b.numpy()).max() > 0
    # phase 1 ran on cached features; LoRA did not stop it, nor change the run
    assert result.info["feature_cache"]["used"]
    assert not reference.info["feature_cache"]["used"]
    np.testing.assert_allclose(result.history["loss"], reference.history["loss"], rtol=1e-4)

    # merged model: same outputs, no LoRA variables, kernel = W + alpha/r * A @ B
    x, _ = _data(16, seed=5)
    probs = result.predict(x)
    merged = result.merge_lora()
    assert _lora_names(merged.model) == [] and _lora_names(result.model)
    np.testing.assert_allclose(merged.predict(x), probs, atol=1e-5)
    c2 = backbone.get_layer("c2")
    by_hand = c2._kernel.numpy() + (c2.lora_alpha / c2.lora_rank) * np.matmul(
        c2.lora_kernel_a.numpy(), c2.lora_kernel_b.numpy()
    )
    merged_c2 = merged.model.get_layer("backbone").get_layer("c2")
    np.testing.assert_allclose(merged_c2.kernel.numpy(), by_hand, atol=1e-6)

    # save / load: a plain model with the same predictions; export verifies too
    again = ftk.load(result.save(tmp_path / "lora.keras"))
    assert _lora_names(again.model) == []
    np.testing.assert_allclose(again.predict(x), probs, atol=1e-5)
    report = result.export(tmp_path / "lora_export.keras", format="keras", sample=x)
    assert report.ok and report.max_abs_diff <= 1e-5


def test_layer_kinds_unfreeze_and_train_bn_choose_what_trains() -> None:
    # top 2 weight layers are c2 and d1 (BatchNorm not counted); only conv kinds: c2
    net = _net()
    features = keras.Model(net.input, net.get_layer("d1").output)
    assert apply_lora(features, RANK, kinds="conv", unfreeze=2)["params"] == LORA_C2
    adapted = [layer.name for layer in features.layers if getattr(layer, "lora_enabled", False)]
    assert adapted == ["c2"]
    with_bn = _tuner(epochs=0, fine_tune_epochs=1, train_bn=True, lora_alpha=4.0).fit()
    assert with_bn.params["trainable_phase2"] == LORA_C1 + LORA_C2 + LORA_D1 + HEAD + BN
    bn = with_bn.model.get_layer("backbone").get_layer("bn1")
    assert {v.name for v in bn.trainable_weights} == {"gamma", "beta"}
    assert with_bn.model.get_layer("backbone").get_layer("c1").lora_alpha == 4.0


def test_embedding_and_einsum_dense_adapters_merge() -> None:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((7,), dtype="int32")
    x = keras.layers.Embedding(20, 6, name="emb")(inputs)
    x = keras.layers.EinsumDense("abc,cd->abd", output_shape=(None, 4), name="ein")(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    outputs = keras.layers.Dense(3, name="out")(x)
    model = keras.Model(inputs, outputs)
    info = apply_lora(model, rank=2, alpha=3.0)
    assert info["layers"] == 3
    assert lora_param_count(model) == 2 * (20 + 6) + 2 * (6 + 4) + 2 * (4 + 3)
    rng = np.random.default_rng(0)
    for layer in model.layers:
        for variable in layer.weights:
            if variable.name.endswith("_b") and variable.name.startswith("lora_"):
                variable.assign(rng.normal(size=variable.shape))  # adapters that matter
    tokens = rng.integers(0, 20, (5, 7)).astype("int32")
    merged = merge_lora(model)
    assert _lora_names(merged) == []
    assert len(merged.weights) == len(model.weights) - 6
    np.testing.assert_allclose(merged(tokens), model(tokens), atol=1e-5)
    assert np.abs(np.asarray(merged(tokens)) - np.asarray(model.get_layer("out").bias)).max() > 0


def test_keep_best_restores_a_phase_1_epoch_of_a_lora_run() -> None:
    # a huge phase-2 rate ruins training: the best epoch is in phase 1, before any LoRA step
    result = _tuner(
        epochs=2,
        fine_tune_epochs=1,
        optimizer="sgd",
        fine_tune_learning_rate=1e4,
        keep_best=True,
        monitor="loss",
    ).fit()
    losses = result.history["loss"]
    assert int(np.nanargmin(losses)) < 2 or not np.isfinite(losses[2])
    backbone = result.model.get_layer("backbone")
    for name in ("c1", "c2", "d1"):
        np.testing.assert_array_equal(backbone.get_layer(name).lora_kernel_b.numpy(), 0.0)


def test_resume_in_phase_2_continues_the_adapters(
    tmp_path: Path, reference: ftk.FineTuneResult
) -> None:
    ckpt = str(tmp_path / "ckpt")
    with pytest.raises(_Crash):  # in the second phase-2 epoch
        _tuner(epochs=2, callbacks=[_CrashAt(3)], checkpoint_dir=ckpt).fit()
    keras.backend.clear_session()
    resumed = _tuner(epochs=2, callbacks=[_CrashAt(None)], checkpoint_dir=ckpt).fit()
    assert resumed.info["resumed_from"] == {"phase": 2, "epoch": 2, "epochs_done": 3}
    assert resumed.history == reference.history
    for a, b in zip(resumed.model.variables, reference.model.variables, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_lora_and_gradual_unfreezing_are_refused_together():
    with pytest.raises(ftk.FineTuneError, match="gradual_unfreeze"):
        ftk.Trainer(epochs=1, fine_tune_epochs=2, lora_rank=4, gradual_unfreeze=1)
