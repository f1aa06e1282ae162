"""The FineTuner pipeline end to end: recipe immutability, config, fit, result, save/load."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from sklearn.metrics import accuracy_score, mean_absolute_error, r2_score

import finetunekit as ftk


def tiny_net() -> keras.Model:
    """A small pretrained-style CNN with BatchNorm (fixed initial weights), a user's own model."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 1))
    x = keras.layers.Conv2D(8, 3, activation="relu", name="c1")(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.Conv2D(8, 3, activation="relu", name="c2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    x = keras.layers.Dense(16, activation="relu", name="embed")(x)
    outputs = keras.layers.Dense(4, activation="softmax", name="old_head")(x)
    return keras.Model(inputs, outputs, name="tiny")


def tiny_backbone() -> ftk.Backbone:
    return ftk.Backbone.from_model(tiny_net())


class SubclassedEncoder(keras.Model):
    """A user's subclassed encoder (conv, BatchNorm, pooling, dense) with a ``get_config``."""

    def __init__(self, width: int = 8, **kwargs):
        super().__init__(**kwargs)
        self.width = width
        self.conv = keras.layers.Conv2D(width, 3, activation="relu")
        self.bn = keras.layers.BatchNormalization()
        self.pool = keras.layers.GlobalAveragePooling2D()
        self.dense = keras.layers.Dense(16, activation="relu")

    def call(self, x, training=False):
        return self.dense(self.pool(self.bn(self.conv(x), training=training)))

    def get_config(self):
        return {**super().get_config(), "width": self.width}


def blocks_net() -> keras.Model:
    """A CNN whose features keep where an image is bright: 4x4 block means of 4 channels."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 1))
    x = keras.layers.Rescaling(1 / 255, name="rescale")(inputs)
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(x)
    x = keras.layers.Flatten(name="flat")(keras.layers.AveragePooling2D(4, name="pool")(x))
    outputs = keras.layers.Dense(4, activation="softmax", name="old_head")(x)
    return keras.Model(inputs, outputs, name="blocks")


def subclassed_net() -> keras.Model:
    """The subclassed encoder after a Lambda (which Keras rebuilds only outside safe mode)."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 1))
    x = keras.layers.Lambda(lambda t: t / 255.0, name="scale")(inputs)
    x = SubclassedEncoder(8, name="encoder")(x)
    outputs = keras.layers.Dense(4, activation="softmax", name="old_head")(x)
    return keras.Model(inputs, outputs, name="subclassed")


def app_backbone() -> ftk.Backbone:
    return ftk.Backbone("mobilenet_v3_small", weights=None, input_shape=(32, 32, 3))


def _tuner(data, backbone=None, **trainer_kwargs):
    kwargs = {"epochs": 2, "batch_size": 8, "verbose": 0, "seed": 0, **trainer_kwargs}
    return (
        ftk.FineTuner()
        .with_data(data, validation=0.25)
        .with_backbone(backbone or tiny_backbone())
        .with_head(ftk.HeadReplacer(hidden_units=(8,), dropout=0.1))
        .with_trainer(ftk.Trainer(learning_rate=1e-2, **kwargs))
    )


def test_with_methods_return_new_recipes(tiny_images):
    base = ftk.FineTuner()
    data = ftk.DatasetAdapter.from_arrays(*tiny_images)
    with_data = base.with_data(data)
    assert with_data is not base and base.data is None and with_data.data is data
    with_bb = with_data.with_backbone("vgg16")
    assert isinstance(with_bb.backbone, ftk.Backbone) and with_data.backbone is None
    assert with_bb.with_head(10).head.num_classes == 10
    assert with_bb.head.num_classes == "auto"
    trainer = ftk.Trainer(epochs=1)
    assert with_bb.with_trainer(trainer).trainer is trainer and with_bb.trainer is not trainer
    ev = ftk.Evaluator(top_k=3)
    assert with_bb.with_evaluator(ev).evaluator is ev


@pytest.mark.parametrize(
    "method, value",
    [
        ("with_backbone", 3),
        ("with_head", "ten"),
        ("with_trainer", {"epochs": 3}),
        ("with_evaluator", "accuracy"),
    ],
)
def test_with_methods_reject_wrong_types(method, value):
    with pytest.raises(ftk.ArgumentTypeError):
        getattr(ftk.FineTuner(), method)(value)


@pytest.mark.parametrize("fraction", [0.0, 1.0, 1.5, -0.2])
def test_validation_fraction_outside_unit_interval(tiny_images, fraction):
    with pytest.raises(ftk.DataError) as err:
        ftk.FineTuner().with_data(tiny_images, validation=fraction)
    assert "validation=" in str(err.value)


def test_config_round_trip_is_json():
    tuner = (
        ftk.FineTuner()
        .with_backbone(ftk.Backbone("resnet50", weights=None, input_shape=(64, 64, 3)))
        .with_head(ftk.HeadReplacer(hidden_units=(1024,), dropout=0.2))
        .with_trainer(ftk.Trainer(optimizer="sgd", epochs=3, fine_tune_epochs=2, unfreeze=10))
        .with_evaluator(ftk.Evaluator(top_k=3))
    )
    cfg = json.loads(json.dumps(tuner.get_config()))
    again = ftk.FineTuner.from_config(cfg)
    assert again.get_config() == tuner.get_config()
    with pytest.raises(ftk.ConfigError) as err:
        ftk.FineTuner.from_config({**cfg, "optimiser": "adam"})
    assert "optimiser" in str(err.value) and "trainer" in str(err.value)


def test_fit_requires_data_and_backbone(tiny_images):
    with pytest.raises(ftk.ConfigError, match="no data"):
        ftk.FineTuner().with_backbone("vgg16").fit()
    with pytest.raises(ftk.ConfigError, match="no backbone"):
        ftk.FineTuner().with_data(tiny_images).fit()


def test_bad_inputs_raise_before_any_model_is_built(tiny_images, monkeypatch):
    built = []
    monkeypatch.setattr(ftk.Backbone, "create_model", lambda self: built.append(1))
    x, y = tiny_images
    with pytest.raises(ftk.HeadError):  # num_classes contradicts the data
        _tuner((x, y)).with_head(5).fit()
    with pytest.raises(ftk.DataError):  # not images, for an image backbone
        _tuner((x.reshape(40, -1), y), backbone=app_backbone()).fit()
    assert built == []


@pytest.mark.slow
def test_end_to_end_application_backbone_two_phases(tiny_images, tmp_path):
    x, y = tiny_images
    data = ftk.DatasetAdapter.from_arrays(x, y)
    tuner = _tuner(data, backbone=app_backbone(), fine_tune_epochs=1, unfreeze=5)
    result = tuner.fit()
    model = result.model
    assert isinstance(model, keras.Model)
    assert model.input.shape[1:] == (16, 16) and model.input.dtype == "uint8"
    assert result.history["phase"] == [1, 1, 2]
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(result.history)
    assert set(result.timings) >= {"build", "phase1", "phase2", "total"}
    assert result.params["trainable_phase2"] > result.params["trainable_phase1"] > 0
    assert result.info["input_range"] == "0-255" and result.info["input_size"] == [32, 32, 3]
    probs = result.predict(x[:5])
    assert probs.shape == (5, 1)  # binary: probability of class_names[1]
    report = result.evaluate((x, y))
    positive = (model.predict(x, verbose=0)[:, 0] >= 0.5).astype(int)  # class_names[1] == "1"
    assert report.metrics["accuracy"] == pytest.approx(accuracy_score(y, positive), abs=1e-9)
    # BatchNorm stayed in inference mode: moving statistics never changed.
    bn = next(
        la
        for la in model.get_layer("backbone").layers
        if isinstance(la, keras.layers.BatchNormalization)
    )
    fresh = app_backbone().create_model()
    fresh_bn = fresh.get_layer(bn.name)
    np.testing.assert_allclose(bn.moving_variance.numpy(), fresh_bn.moving_variance.numpy())
    # save / load round trip: identical predictions, metadata kept
    path = result.save(tmp_path / "model.keras")
    again = ftk.load(path)
    np.testing.assert_allclose(again.predict(x), result.predict(x), rtol=1e-6, atol=1e-6)
    assert again.class_names == result.class_names and again.task == "binary"
    assert again.history["phase"] == [1, 1, 2]
    assert ftk.FineTuner.from_config(again.recipe).get_config() == tuner.get_config()


def test_end_to_end_multiclass_string_labels_and_evaluate(tmp_path):
    rng = np.random.default_rng(1)
    names = np.array(["cat", "dog", "emu"])
    y = names[np.arange(60) % 3]
    x = rng.integers(0, 60, (60, 16, 16, 1)).astype("uint8")
    for i, name in enumerate(names):
        x[y == name, : 4 * (i + 1)] += 150
    # 15 epochs: accuracy 1.0 on 8 of 8 seeds (seed of the CNN and of the Trainer 0-7);
    # with 8 epochs one seed in 6 stopped at 0.67. Chance is 1/3.
    backbone = ftk.Backbone.from_model(blocks_net())
    result = _tuner((x, y), backbone=backbone, epochs=15).fit()
    assert result.class_names == ["cat", "dog", "emu"]
    assert result.predict(x).shape == (60, 3)
    report = result.evaluate((x, y))
    predicted = names[result.model.predict(x, verbose=0).argmax(axis=1)]  # class_names are sorted
    assert report.metrics["accuracy"] == pytest.approx(accuracy_score(y, predicted), abs=1e-9)
    assert report.metrics["accuracy"] >= 0.9
    assert set(report.per_class) >= {"cat", "dog", "emu"}
    assert report.confusion_matrix.shape == (3, 3)
    assert result.predict_classes(x[:3])[0] in {"cat", "dog", "emu"}
    json.dumps(report.to_dict())
    again = ftk.load(result.save(tmp_path / "m.keras"))
    np.testing.assert_allclose(again.predict(x), result.predict(x), atol=1e-6)


def test_end_to_end_regression_and_multilabel():
    rng = np.random.default_rng(2)
    x = rng.uniform(0, 1, (48, 16, 16, 1)).astype("float32")
    target = x.mean(axis=(1, 2, 3)).astype("float32")
    reg = _tuner((x, target), epochs=3).fit()
    assert reg.task == "regression" and reg.predict(x).shape == (48, 1)
    assert "mae" in reg.history
    metrics = reg.evaluate((x, target)).metrics
    values = reg.model.predict(x, verbose=0)[:, 0]
    assert metrics["mae"] == pytest.approx(mean_absolute_error(target, values), rel=1e-5)
    assert metrics["r2"] == pytest.approx(r2_score(target, values), rel=1e-5, abs=1e-6)
    multi = (rng.uniform(size=(48, 3)) > 0.5).astype("float32")
    multi[0] = [1, 1, 0]
    ml = _tuner((x, multi), epochs=1).fit()
    assert ml.task == "multilabel" and ml.predict(x).shape == (48, 3)


def test_explicit_validation_adapter_and_no_validation(tiny_images):
    x, y = tiny_images
    val = ftk.DatasetAdapter.from_arrays(x[:10], y[:10])
    tuner = (
        ftk.FineTuner()
        .with_data(ftk.DatasetAdapter.from_arrays(x, y), validation=val)
        .with_backbone(tiny_backbone())
        .with_trainer(ftk.Trainer(epochs=1, verbose=0))
    )
    assert "val_loss" in tuner.fit().history
    no_val = tuner.with_data(ftk.DatasetAdapter.from_arrays(x, y))
    assert "val_loss" not in no_val.fit().history


@pytest.mark.parametrize(
    "make_net", [tiny_net, subclassed_net], ids=["functional", "subclassed_with_lambda"]
)
def test_refit_starts_from_the_same_weights(tiny_images, make_net):
    """fit() trains a copy of a from_model network: a second fit repeats the first, and the
    user's model (weights and trainable flags) is the same after both."""
    x, y = tiny_images
    net = make_net()
    weights = [w.copy() for w in net.get_weights()]
    flags = [v.trainable for v in net.weights]
    # the default cut: below the Dense stack (embed -> old_head) of tiny_net, the pooled
    # conv features; the nested encoder's output (the cut does not walk into it) otherwise
    cut = net.get_layer("gap").output if make_net is tiny_net else net.get_layer("old_head").input
    features = keras.Model(net.inputs, cut)
    images = x[..., None].astype("float32")
    given = features.predict(images, verbose=0)
    tuner = _tuner((x, y), backbone=ftk.Backbone.from_model(net), epochs=1, fine_tune_epochs=1)
    first = tuner.fit()
    second = tuner.fit()
    np.testing.assert_allclose(first.predict(x), second.predict(x), rtol=1e-5, atol=1e-5)
    for before, after in zip(weights, net.get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)
    assert [v.trainable for v in net.weights] == flags
    # phase 2 did train the copy, so a shared model would have changed
    trained = first.model.get_layer("backbone").predict(images, verbose=0)
    assert np.abs(trained - given).max() > 1e-3
