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
    head = ftk.HeadReplacer(hidden_units=(16, 8), dropout=0.3, pooling="max")
    features = keras.Input((4, 4, 8))
    model = keras.Model(features, head.build(features, task="multiclass", units=5))
    names = [layer.name for layer in model.layers]
    assert names == [
        names[0],
        "head_pool",
        "head_dropout_0",
        "head_dense_0",
        "head_dropout_1",
        "head_dense_1",
        "head_output_dropout",
        "head_output",
    ]
    assert model.output.shape[-1] == 5
    assert isinstance(model.get_layer("head_pool"), keras.layers.GlobalMaxPooling2D)
    # (that head_output stays float32 under a mixed policy: tests/test_compute.py)


def test_flat_features_need_no_pooling_and_no_dropout():
    head = ftk.HeadReplacer(dropout=0.0)
    features = keras.Input((12,))
    model = keras.Model(features, head.build(features, task="regression", units=2))
    assert [la.name for la in model.layers][1:] == ["head_output"]
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
    with pytest.raises(ftk.ConfigError) as err:
        ftk.HeadReplacer.from_config({"units": 3})
    assert "hidden_units" in str(err.value)
