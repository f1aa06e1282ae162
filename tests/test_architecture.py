"""One room per concern: settings declared once, one hand-off, one home per setting.

These pin the internal promises of docs/internal/architecture.md that users
feel: the Trainer's settings are one declaration (signature, defaults,
config and checks agree), ``prepare()`` builds nothing, ``build_model`` hands
the engine one object and the feature cache cuts where it says, deprecated
homes of a setting still work and move onto the Trainer, and both writers of
files go through the one atomic writer.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest

import finetunekit as ftk
from finetunekit import files
from finetunekit.training import engine


def _net() -> keras.Model:
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="c1")(inputs)
    x = keras.layers.Conv2D(4, 3, activation="relu", name="c2")(x)
    return keras.Model(inputs, x, name="net")


def _data(n: int = 24) -> ftk.DatasetAdapter:
    rng = np.random.default_rng(0)
    y = np.arange(n) % 2
    x = rng.integers(0, 100, (n, 8, 8, 3)).astype("uint8")
    x[y == 1] += 120
    return ftk.DatasetAdapter.from_arrays(x, y)


# ---------------------------------------------------------------- settings declared once


def test_trainer_signature_defaults_and_config_come_from_one_declaration():
    fields = {f.name: f for f in dataclasses.fields(ftk.Trainer)}
    params = inspect.signature(ftk.Trainer).parameters
    assert list(params)[:4] == ["optimizer", "learning_rate", "epochs", "batch_size"]
    assert set(params) == set(fields)
    assert all(params[n].kind is inspect.Parameter.KEYWORD_ONLY for n in list(params)[4:])
    config = ftk.Trainer().get_config()
    assert set(config) == set(fields) - {"callbacks"}  # callbacks are not JSON
    for name, value in config.items():  # defaults as declared (after their checks)
        default = fields[name].default
        assert value == (default if name != "optimizer" else "adam"), name
    assert len(fields) == 35  # the issue counted 33 before augment and lora_layers joined


def test_every_setting_round_trips_through_json_and_is_checked_on_replace():
    trainer = ftk.Trainer(
        "sgd",
        (1e-4, 1e-2),
        3,
        8,
        fine_tune_epochs=2,
        unfreeze=2,
        gradual_unfreeze=[0, 1],
        layer_groups=2,
        schedule="cosine",
        warmup=0.1,
        lora_layers=["conv"],
        augment={"flip": "horizontal"},
        class_weight="balanced",
    )
    again = ftk.Trainer.from_config(json.loads(json.dumps(trainer.get_config())))
    assert again.get_config() == trainer.get_config()
    assert again.learning_rate == (1e-4, 1e-2)  # the JSON list is a range again
    changed = trainer.replace(epochs=5)
    assert changed.epochs == 5 and trainer.epochs == 3  # immutable: a new Trainer
    with pytest.raises(ftk.TrainerError, match="epochs="):
        trainer.replace(epochs=-1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        trainer.epochs = 4  # type: ignore[misc]
    assert repr(ftk.Trainer(epochs=2)) == "Trainer(epochs=2)"


def test_head_replacer_is_declared_the_same_way():
    head = ftk.HeadReplacer(3, (16,), 0.1, pooling="max")
    assert head.get_config()["hidden_units"] == [16]
    again = ftk.HeadReplacer.from_config(head.get_config())
    assert again.get_config() == head.get_config() and again.hidden_units == (16,)
    with pytest.raises(ftk.ConfigError, match="units"):
        ftk.HeadReplacer.from_config({"units": 3})
    with pytest.raises(ftk.HeadError, match="dropout="):
        head.replace(dropout=1.0)


# ---------------------------------------------------------------- one hand-off


def test_prepare_checks_everything_and_builds_nothing(monkeypatch):
    monkeypatch.setattr(ftk.FineTuner, "build_model", lambda *a, **k: pytest.fail("built"))
    tuner = (
        ftk.FineTuner()
        .with_data(_data(), validation=0.25)
        .with_backbone(ftk.Backbone.from_model(_net()))
    )
    prepared = tuner.prepare()
    assert len(prepared.train) == 18 and len(prepared.validation) == 6
    assert prepared.task.name == "binary" and prepared.units == 1
    assert prepared.trainer is tuner.trainer  # nothing deprecated to move
    with pytest.raises(ftk.TrainerError, match="monitor"):
        tuner.with_trainer(ftk.Trainer(early_stopping=1, monitor="val_auc")).prepare()


def test_build_model_hands_over_one_object_and_the_cache_cuts_at_its_features():
    tuner = ftk.FineTuner().with_data(_data()).with_backbone(ftk.Backbone.from_model(_net()))
    prepared = tuner.prepare()
    built = tuner.build_model(prepared.train, prepared.units)
    assert isinstance(built, engine.BuiltModel) and built.task.name == "binary"
    assert built.backbone_model is built.model.get_layer("backbone")
    # the cache point is the head's parameter-free pooling, not the 4x4x4 feature map
    assert built.features is built.model.get_layer("head_pool").output
    assert isinstance(built.loss, keras.losses.BinaryCrossentropy)
    model, backbone_model, info = built  # the tuple build_model used to return
    assert model is built.model and backbone_model is built.backbone_model
    split, info = __import__("finetunekit.training.feature_cache", fromlist=["x"]).decide(
        ftk.Trainer(epochs=3),
        built,
        engine.TrainingData(adapter=prepared.train),
        None,
        ftk.Trainer().resolved_strategy(),
    )
    assert info["used"] and tuple(split.feature_model.outputs[0].shape) == (None, 4)
    assert split.head_model.get_layer("head_output") is built.model.get_layer("head_output")


def test_the_engine_makes_the_batches_from_the_adapter(monkeypatch):
    seen = []
    real = ftk.DatasetAdapter.as_dataset

    def spy(self, batch_size, **kwargs):
        seen.append((batch_size, kwargs.get("shuffle", False), kwargs.get("seed")))
        return real(self, batch_size, **kwargs)

    monkeypatch.setattr(ftk.DatasetAdapter, "as_dataset", spy)
    data = _data()
    (
        ftk.FineTuner()
        .with_data(data, validation=0.25)
        .with_backbone(ftk.Backbone.from_model(_net()))
        .with_trainer(ftk.Trainer(epochs=1, batch_size=5, seed=3, verbose=0))
        .fit()
    )
    assert seen == [(5, True, 3), (5, False, None)]  # training (seeded shuffle), validation


# ---------------------------------------------------------------- one home per setting


def test_head_label_smoothing_is_deprecated_and_moves_onto_the_trainer():
    with pytest.warns(DeprecationWarning, match="Trainer\\(label_smoothing"):
        head = ftk.HeadReplacer(label_smoothing=0.1)
    tuner = (
        ftk.FineTuner()
        .with_data(_data())
        .with_backbone(ftk.Backbone.from_model(_net()))
        .with_head(head)
    )
    assert tuner.prepare().trainer.label_smoothing == 0.1
    assert tuner.head.get_config()["label_smoothing"] == 0.1  # the recipe is unchanged
    with pytest.raises(ftk.TrainerError, match="set twice"):
        tuner.with_trainer(ftk.Trainer(label_smoothing=0.2)).prepare()
    same = tuner.with_trainer(ftk.Trainer(label_smoothing=0.1)).prepare()
    assert same.trainer.label_smoothing == 0.1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ftk.HeadReplacer()  # no warning without it


def test_smoothing_from_the_head_trains_as_smoothing_from_the_trainer():
    def fit(head, trainer):
        keras.utils.set_random_seed(0)
        return (
            ftk.FineTuner()
            .with_data(_data())
            .with_backbone(ftk.Backbone.from_model(_net()))
            .with_head(head)
            .with_trainer(trainer)
            .fit()
        )

    base = {"epochs": 2, "seed": 0, "verbose": 0, "cache_features": False}
    with pytest.warns(DeprecationWarning):
        old = fit(ftk.HeadReplacer(label_smoothing=0.2), ftk.Trainer(**base))
    new = fit(ftk.HeadReplacer(), ftk.Trainer(label_smoothing=0.2, **base))
    plain = fit(ftk.HeadReplacer(), ftk.Trainer(**base))
    np.testing.assert_allclose(old.history["loss"], new.history["loss"], rtol=1e-6)
    assert abs(old.history["loss"][0] - plain.history["loss"][0]) > 1e-3  # it smooths


def test_lora_on_the_trainer_uses_the_backbones_default_targets():
    x = np.random.default_rng(0).normal(size=(16, 4, 8)).astype("float32")
    inputs = keras.Input((4, 8))
    attention = keras.layers.MultiHeadAttention(2, 4, name="attn")
    h = attention(inputs, inputs)
    h = keras.layers.Dense(8, name="ffn")(h)
    net = keras.Model(inputs, keras.layers.GlobalAveragePooling1D()(h))
    data = ftk.DatasetAdapter.from_arrays(x, np.arange(16) % 2)
    tuner = (
        ftk.FineTuner()
        .with_data(data)
        .with_backbone(ftk.Backbone.from_model(net))
        .with_trainer(ftk.Trainer(epochs=1, fine_tune_epochs=1, lora_rank=2, verbose=0))
    )
    prepared = tuner.prepare()
    built = tuner.build_model(prepared.train, prepared.units)
    targets = [built.model.get_layer("backbone").get_layer("attn")._query_dense]
    built.lora_targets = targets  # what a KerasHub text backbone supplies
    run = engine.run(
        prepared.trainer,
        built,
        engine.TrainingData(adapter=prepared.train),
        metrics=lambda: prepared.task.metrics(2),
    )
    assert run.info["lora"]["layers"] == 1 and run.info["lora"]["kinds"] == ["query"]
    assert targets[0].lora_enabled
    assert not built.model.get_layer("backbone").get_layer("ffn").lora_enabled


# ---------------------------------------------------------------- one atomic writer


def test_result_save_and_checkpoints_use_the_one_atomic_writer(monkeypatch, tmp_path: Path):
    used = []
    real = files.atomic_path

    def spy(path, suffix=""):
        used.append(Path(path).name)
        return real(path, suffix)

    monkeypatch.setattr(files, "atomic_path", spy)
    result = (
        ftk.FineTuner()
        .with_data(_data())
        .with_backbone(ftk.Backbone.from_model(_net()))
        .with_trainer(ftk.Trainer(epochs=1, verbose=0, checkpoint_dir=str(tmp_path / "ckpt")))
        .fit()
    )
    assert "state.json" in used and any(n.startswith("ckpt-") for n in used)
    result.save(tmp_path / "m.keras")
    assert used[-1] == "m.keras"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp-")] == []


def test_export_error_is_a_top_level_finetune_error():
    assert issubclass(ftk.ExportError, ftk.FineTuneError)
    assert issubclass(ftk.ExportError, ValueError)
    from finetunekit.export import ExportError

    assert ExportError is ftk.ExportError
