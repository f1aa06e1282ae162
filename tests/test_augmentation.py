"""Trainer(augment=...): Keras random layers inside the model, active only in training."""

from __future__ import annotations

import json
import os

import keras
import numpy as np
import pytest

import finetunekit as ftk
from finetunekit.backbones.augmentation import (
    AUGMENT_KEYS,
    AUGMENT_PRESETS,
    augmentation_layers,
    check_augment,
    check_augment_inputs,
)
from finetunekit.errors import ArgumentTypeError, TrainerError


def _net(shape: tuple[int, ...] = (16, 16, 3)) -> keras.Model:
    keras.utils.set_random_seed(1)
    return keras.Sequential(
        [
            keras.Input(shape),
            keras.layers.Rescaling(1 / 255.0),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
        ],
        name="tiny",
    )


def _images(n: int = 24) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = np.arange(n) % 2
    x = rng.integers(0, 120, (n, 16, 16)).astype("uint8")
    x[y == 1] += 120
    return x, y


def _tuner(augment: object = "standard", data: object = None, **trainer: object) -> ftk.FineTuner:
    settings = {"epochs": 1, "batch_size": 8, "verbose": 0, "seed": 0, "augment": augment}
    settings.update(trainer)
    backbone = ftk.Backbone.from_model(_net(), input_range="0-255")
    return (
        ftk.FineTuner()
        .with_data(data if data is not None else _images())
        .with_backbone(backbone)
        .with_trainer(ftk.Trainer(**settings))  # type: ignore[arg-type]
    )


@pytest.fixture(scope="module")
def fitted() -> ftk.FineTuneResult:
    return _tuner("standard", epochs=2).fit()


# ---------------------------------------------------------------------- the argument
def test_presets_and_dict_form_are_validated() -> None:
    assert set(AUGMENT_PRESETS) == {"light", "standard", "strong"}
    assert check_augment(None) is None and check_augment("strong") == "strong"
    given = {"contrast": 0.2, "flip": "horizontal", "zoom": 0.2}
    assert check_augment(given) == {"flip": "horizontal", "zoom": 0.2, "contrast": 0.2}
    with pytest.raises(TrainerError, match="'standard'"):
        check_augment("standrd")
    with pytest.raises(TrainerError) as info:
        check_augment({"flip": "horizontal", "blur": 0.1})
    assert "'blur'" in str(info.value) and all(k in str(info.value) for k in AUGMENT_KEYS)
    for bad, error in [
        ({"rotation": 0.7}, TrainerError),
        ({"zoom": -0.1}, TrainerError),
        ({"contrast": "high"}, ArgumentTypeError),
        ({"flip": "diagonal"}, TrainerError),
        ({"flip": None, "zoom": 0}, TrainerError),  # every transform off
        (0.2, ArgumentTypeError),
    ]:
        with pytest.raises(error, match="Received"):
            ftk.Trainer(augment=bad)  # type: ignore[arg-type]


def test_augment_is_serialised_in_the_recipe() -> None:
    spec = {"flip": "horizontal_and_vertical", "rotation": 0.1, "translation": 0.1}
    tuner = ftk.FineTuner().with_trainer(ftk.Trainer(augment=spec))
    config = json.loads(json.dumps(tuner.get_config()))
    assert config["trainer"]["augment"] == spec
    again = ftk.FineTuner.from_config(config)
    assert again.trainer.augment == spec and again.trainer.augment is not spec
    assert ftk.Trainer().get_config()["augment"] is None
    assert ftk.Trainer.from_config(ftk.Trainer(augment="light").get_config()).augment == "light"


# ---------------------------------------------------------------------- the layers
def test_block_is_identity_in_inference_and_random_in_training() -> None:
    block = augmentation_layers("standard", (0.0, 255.0))
    assert block is not None
    names = [type(layer).__name__ for layer in block.layers]
    assert names == [
        "RandomFlip",
        "RandomRotation",
        "RandomZoom",
        "RandomTranslation",
        "RandomContrast",
    ]
    assert tuple(block.layers[-1].value_range) == (0.0, 255.0)
    x = np.random.default_rng(0).uniform(0, 255, (4, 16, 16, 3)).astype("float32")
    np.testing.assert_array_equal(np.asarray(block(x, training=False)), x)
    np.testing.assert_array_equal(np.asarray(block(x)), x)  # Keras' own layers would augment
    a, b = np.asarray(block(x, training=True)), np.asarray(block(x, training=True))
    assert a.shape == x.shape and not np.allclose(a, b) and not np.allclose(a, x)
    assert a.min() >= 0.0 and a.max() <= 255.0  # contrast clips to the value range


def test_block_sits_after_adaptation_and_before_the_backbone(fitted: ftk.FineTuneResult) -> None:
    names = [layer.name for layer in fitted.model.layers]
    assert names.index("input_adapter") < names.index("augmentation") < names.index("backbone")
    assert fitted.info["augmentation"] == "standard"
    contrast = fitted.model.get_layer("augmentation").layers[-1]
    assert tuple(contrast.value_range) == (0.0, 255.0)  # the adapter's output range


def test_contrast_range_follows_raw_float_inputs() -> None:
    x, y = _images()
    floats = (x / 255.0).astype("float32")[..., None].repeat(3, -1)
    backbone = ftk.Backbone.from_model(_net())  # input_range="none": raw values reach it
    tuner = (
        ftk.FineTuner()
        .with_data((floats, y))
        .with_backbone(backbone)
        .with_trainer(ftk.Trainer(augment={"contrast": 0.3}, epochs=1))
    )
    prepared = tuner.prepare()
    model = tuner.build_model(prepared.train, prepared.units).model
    low, high = model.get_layer("augmentation").layers[0].value_range
    assert (low, high) == (float(floats.min()), float(floats.max()))


def test_inference_is_deterministic_and_equals_the_model_without_augmentation(
    fitted: ftk.FineTuneResult,
) -> None:
    x, _ = _images()
    model = fitted.model
    plain = _tuner(None)
    prepared = plain.prepare()
    twin = plain.build_model(prepared.train, prepared.units).model
    for layer in twin.layers:  # same weights, layer by layer
        if layer.weights:
            layer.set_weights(model.get_layer(layer.name).get_weights())
    out = np.asarray(model(x, training=False))
    np.testing.assert_array_equal(out, np.asarray(model(x, training=False)))
    np.testing.assert_array_equal(out, np.asarray(model(x)))  # no training argument: inference
    np.testing.assert_array_equal(out, np.asarray(twin(x, training=False)))
    np.testing.assert_allclose(fitted.predict(x), out, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(fitted.predict(x), fitted.predict(x))
    # in training mode the augmentation block changes what the backbone sees
    seen = keras.Model(model.inputs[0], model.get_layer("augmentation").output)
    adapted = keras.Model(model.inputs[0], model.get_layer("input_adapter").output)
    one, two = np.asarray(seen(x, training=True)), np.asarray(seen(x, training=True))
    assert not np.allclose(one, two)
    np.testing.assert_array_equal(np.asarray(seen(x, training=False)), np.asarray(adapted(x)))


def test_saved_model_loads_in_safe_mode_and_predicts_identically(
    fitted: ftk.FineTuneResult, tmp_path: object
) -> None:
    x, _ = _images()
    path = os.path.join(str(tmp_path), "augmented.keras")
    fitted.save(path)
    loaded = ftk.load(path)  # safe_mode=True
    np.testing.assert_array_equal(loaded.predict(x), fitted.predict(x))
    block = loaded.model.get_layer("augmentation")
    assert type(block).__name__ == "AugmentationBlock"
    assert [type(layer).__name__ for layer in block.layers] == [
        type(layer).__name__ for layer in fitted.model.get_layer("augmentation").layers
    ]
    images = np.random.default_rng(0).uniform(0, 255, (2, 16, 16, 3)).astype("float32")
    np.testing.assert_array_equal(np.asarray(block(images)), images)  # identity at inference
    assert not np.allclose(np.asarray(block(images, training=True)), images)  # still random


def test_saved_model_export_works(fitted: ftk.FineTuneResult, tmp_path: object) -> None:
    x, _ = _images()
    report = fitted.export(os.path.join(str(tmp_path), "sm"), "saved_model", sample=x[:8])
    assert report.ok and report.max_abs_diff <= 1e-4


def test_feature_cache_is_switched_off_by_augmentation(fitted: ftk.FineTuneResult) -> None:
    cache = fitted.info["feature_cache"]
    assert cache["used"] is False and "augmentation" in cache["reason"]
    without = _tuner(None, epochs=2).fit()  # the same run without augmentation caches
    assert without.info["feature_cache"]["used"] is True


def test_clips_get_one_transform_for_all_their_frames() -> None:
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 255, (6, 1, 16, 16, 3)).astype("uint8")
    clips = np.repeat(frame, 4, axis=1)  # 6 clips of 4 identical frames
    y = np.arange(6) % 2
    tuner = _tuner(
        {"flip": "horizontal", "rotation": 0.2, "zoom": 0.2, "contrast": 0.3}, (clips, y)
    )
    prepared = tuner.prepare()
    model = tuner.build_model(prepared.train, prepared.units).model
    frames = keras.Model(model.inputs[0], model.get_layer("augmentation_unstack_frames").output)
    out = np.asarray(frames(clips, training=True)).reshape(6, 4, 16, 16, 3)
    for clip in out:  # every frame of a clip transformed alike
        for other in clip[1:]:
            np.testing.assert_allclose(other, clip[0], rtol=1e-5, atol=1e-3)
    raw = clips.astype("float32")
    assert not np.allclose(out, raw)  # but transformed
    assert not np.allclose(out[0, 0], out[1, 0])  # differently per clip
    np.testing.assert_array_equal(np.asarray(frames(clips, training=False)).reshape(raw.shape), raw)
    result = tuner.fit()
    assert result.predict(clips).shape == (6, 1)


def test_non_image_inputs_raise_before_building(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ftk.FineTuner, "build_model", lambda *a, **k: pytest.fail("built"))
    vectors = np.random.default_rng(0).normal(size=(16, 8)).astype("float32")
    net = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)])
    tuner = (
        ftk.FineTuner()
        .with_data((vectors, np.arange(16) % 2))
        .with_backbone(ftk.Backbone.from_model(net))
        .with_trainer(ftk.Trainer(augment="light"))
    )
    with pytest.raises(TrainerError, match="augments images"):
        tuner.fit()
    with pytest.raises(TrainerError, match="texts"):
        check_augment_inputs("light", (), "string")
    check_augment_inputs("light", (8, 16, 16, 3), "uint8", (16, 16, 3))  # clips are fine
    check_augment_inputs(None, (), "string")  # nothing to check
