"""Step 3: HeadReplacer validation, task rules and layer building."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import finetunekit as ftk
from finetunekit.heads import default_activation, default_loss, default_metrics


@pytest.mark.parametrize(
    "task, activation, loss",
    [
        ("multiclass", "softmax", "CategoricalCrossentropy"),
        ("binary", "sigmoid", "BinaryCrossentropy"),
        ("multilabel", "sigmoid", "BinaryCrossentropy"),
        ("regression", "linear", "MeanSquaredError"),
    ],
)
def test_task_decides_activation_and_loss(task, activation, loss):
    assert default_activation(task) == activation
    assert type(default_loss(task)).__name__ == loss
    head = ftk.HeadReplacer()
    features = keras.Input((4, 4, 8))
    out = head.build(features, task=task, units=3)
    layer = keras.Model(features, out).get_layer("head_output")
    assert layer.activation.__name__ == activation
    assert type(head.make_loss(task)).__name__ == loss


def test_layers_are_named_and_sized():
    head = ftk.HeadReplacer(hidden_units=(16, 8), dropout=0.3, pooling="max", normalize="layer")
    features = keras.Input((4, 4, 8))
    model = keras.Model(features, head.build(features, task="multiclass", units=5))
    names = [layer.name for layer in model.layers]
    assert names == [
        names[0],
        "head_pool",
        "head_norm",
        "head_dropout_0",
        "head_dense_0",
        "head_dropout_1",
        "head_dense_1",
        "head_output_dropout",
        "head_output",
    ]
    assert model.output.shape[-1] == 5
    assert isinstance(model.get_layer("head_pool"), keras.layers.GlobalMaxPooling2D)
    assert isinstance(model.get_layer("head_norm"), keras.layers.LayerNormalization)
    assert model.get_layer("head_norm").weights == []  # the next Dense absorbs scale and shift
    # (that head_output stays float32 under a mixed policy: tests/test_compute.py)


def test_flat_features_need_no_pooling_and_no_dropout():
    head = ftk.HeadReplacer(dropout=0.0)
    features = keras.Input((12,))
    model = keras.Model(features, head.build(features, task="regression", units=2))
    assert [la.name for la in model.layers][1:] == ["head_output"]  # default: normalize=None
    out = model.predict(np.ones((3, 12)), verbose=0)
    assert out.shape == (3, 2)


def test_sequence_features_pool_over_time():
    head = ftk.HeadReplacer()
    features = keras.Input((7, 6))
    model = keras.Model(features, head.build(features, task="binary", units=1))
    assert isinstance(model.get_layer("head_pool"), keras.layers.GlobalAveragePooling1D)


def test_output_units_by_task_and_contradiction():
    assert ftk.HeadReplacer().output_units("binary", 2) == 1
    assert ftk.HeadReplacer().output_units("multiclass", 7) == 7
    assert ftk.HeadReplacer(num_classes=7).output_units("multiclass", 7) == 7
    with pytest.raises(ftk.HeadError) as err:
        ftk.HeadReplacer(num_classes=10).output_units("multiclass", 3)
    assert "num_classes=10" in str(err.value) and "3 classes" in str(err.value)


@pytest.mark.parametrize(
    "kwargs, arg",
    [
        ({"num_classes": 0}, "num_classes"),
        ({"num_classes": "many"}, "num_classes"),
        ({"hidden_units": 1024}, "hidden_units"),
        ({"hidden_units": (0,)}, "hidden_units"),
        ({"dropout": 1.0}, "dropout"),
        ({"dropout": -0.1}, "dropout"),
        ({"pooling": "median"}, "pooling"),
        ({"activation": "sofmax"}, "activation"),
        ({"loss": "cross_entropy_typo"}, "loss"),
        ({"label_smoothing": 1.5}, "label_smoothing"),
        ({"normalize": "instance"}, "normalize"),
        ({"normalize": True}, "normalize"),
    ],
)
def test_bad_arguments_raise_head_errors(kwargs, arg):
    with pytest.raises(ftk.FineTuneError) as err:
        ftk.HeadReplacer(**kwargs)
    assert f"Received: {arg}=" in str(err.value)


def test_explicit_loss_and_activation_override():
    head = ftk.HeadReplacer(activation="sigmoid", loss="mse")
    features = keras.Input((5,))
    model = keras.Model(features, head.build(features, task="multiclass", units=3))
    assert model.get_layer("head_output").activation.__name__ == "sigmoid"
    assert head.make_loss("multiclass").__name__ == "mean_squared_error"


def test_metrics_per_task():
    assert [m.name for m in default_metrics("multiclass", 10)] == ["accuracy", "top_5_accuracy"]
    assert [m.name for m in default_metrics("multiclass", 3)] == ["accuracy"]
    assert [m.name for m in default_metrics("regression", None)] == ["mae"]


def test_config_round_trip_and_unknown_keys():
    head = ftk.HeadReplacer(num_classes=4, hidden_units=(32,), dropout=0.3, pooling="max")
    again = ftk.HeadReplacer.from_config(head.get_config())
    assert again.get_config() == head.get_config()
    assert head.get_config()["normalize"] is None
    for normalize in ("layer", "batch"):
        config = ftk.HeadReplacer(normalize=normalize).get_config()
        assert config["normalize"] == normalize
        assert ftk.HeadReplacer.from_config(config).normalize == normalize
    with pytest.raises(ftk.ConfigError) as err:
        ftk.HeadReplacer.from_config({"units": 3})
    assert "hidden_units" in str(err.value)


def _head_model(normalize, units=3, width=8):
    head = ftk.HeadReplacer(dropout=0.0, normalize=normalize)
    features = keras.Input((4, 4, width))
    return keras.Model(features, head.build(features, task="multiclass", units=units))


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_layer_normalisation_matches_numpy_and_ignores_the_feature_scale():
    """normalize="layer": each example's pooled features to mean 0, variance 1 (numpy by hand),
    so features 300 times larger give the same probabilities; without it they saturate."""
    rng = np.random.default_rng(0)
    per_example = rng.normal(1.0, 1.0, (6, 1, 1, 8))  # pooled variance ~1 >> the epsilon
    x = (per_example + 0.1 * rng.normal(size=(6, 4, 4, 8))).astype("float32")
    model = _head_model("layer")
    kernel, bias = model.get_layer("head_output").get_weights()
    pooled = x.mean(axis=(1, 2))
    eps = model.get_layer("head_norm").epsilon
    z = (pooled - pooled.mean(1, keepdims=True)) / np.sqrt(pooled.var(1, keepdims=True) + eps)
    expected = _softmax(z @ kernel + bias)
    np.testing.assert_allclose(model.predict(x, verbose=0), expected, atol=1e-5)
    # the epsilon (1e-3 against a variance ~1) moves the probabilities by < 1e-3
    np.testing.assert_allclose(model.predict(x * 300, verbose=0), expected, atol=2e-3)
    plain = _head_model(None)
    plain.get_layer("head_output").set_weights([kernel, bias])
    np.testing.assert_allclose(
        plain.predict(x, verbose=0), _softmax(pooled @ kernel + bias), atol=1e-5
    )
    assert not np.allclose(plain.predict(x * 300, verbose=0), expected, atol=0.1)


def test_batch_normalisation_uses_its_moving_statistics_at_inference():
    """normalize="batch": inference standardises each feature with the moving mean/variance."""
    rng = np.random.default_rng(1)
    x = rng.normal(3.0, 2.0, (5, 4, 4, 8)).astype("float32")
    model = _head_model("batch")
    norm = model.get_layer("head_norm")
    assert isinstance(norm, keras.layers.BatchNormalization)
    assert norm.trainable_weights == []  # only the moving statistics
    mean, var = rng.normal(size=8).astype("float32"), rng.random(8).astype("float32") + 0.5
    norm.set_weights([mean, var])
    kernel, bias = model.get_layer("head_output").get_weights()
    z = (x.mean(axis=(1, 2)) - mean) / np.sqrt(var + norm.epsilon)
    np.testing.assert_allclose(model.predict(x, verbose=0), _softmax(z @ kernel + bias), atol=1e-5)


def test_a_single_feature_is_not_normalised():
    """Layer normalisation of one value is always 0: a width-1 feature goes through as it is."""
    model = _head_model("layer", width=1)
    assert "head_norm" not in [layer.name for layer in model.layers]
    assert "head_norm" not in [la.name for la in _head_model(None).layers]


@pytest.mark.parametrize("normalize", ["layer", "batch"])
def test_normalised_head_trains_the_same_on_cached_features_and_saves(normalize, tmp_path):
    """The feature cache cuts below head_norm: the cached frozen phase gives the model the
    uncached phase gives (BatchNorm's moving statistics included), and it saves and loads."""
    rng = np.random.default_rng(0)
    y = np.arange(24) % 2
    x = (rng.random((24, 16, 16, 3)) + y[:, None, None, None]).astype("float32")
    inputs = keras.Input((16, 16, 3))
    conv = keras.layers.Conv2D(6, 3, strides=2, name="conv")
    net = keras.Model(inputs, keras.layers.ReLU()(conv(inputs)), name="tiny")
    results = {}
    for cache in (False, True):
        results[cache] = (
            ftk.FineTuner()
            .with_data(ftk.DatasetAdapter.from_arrays(x, y))
            .with_backbone(ftk.Backbone.from_model(net))
            .with_head(ftk.HeadReplacer(dropout=0.0, normalize=normalize))
            .with_trainer(
                ftk.Trainer(epochs=2, batch_size=8, seed=0, verbose=0, cache_features=cache)
            )
            .fit()
        )
    plain, cached = results[False], results[True]
    assert cached.info["feature_cache"]["used"] is True
    assert plain.info["feature_cache"]["used"] is False
    np.testing.assert_allclose(cached.predict(x), plain.predict(x), rtol=1e-4, atol=1e-5)
    norm = cached.model.get_layer("head_norm")
    for a, b in zip(norm.get_weights(), plain.model.get_layer("head_norm").get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    if normalize == "batch":  # the cached phase updated the statistics (they start at 0 / 1)
        assert not np.allclose(norm.get_weights()[0], 0.0)
    path = str(tmp_path / "m.keras")
    cached.save(path)
    np.testing.assert_allclose(ftk.load(path).predict(x), cached.predict(x), atol=1e-6)
