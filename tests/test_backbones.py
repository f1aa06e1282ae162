"""Step 2: Backbone names, validation, input adaptation and preprocessing layers."""

from __future__ import annotations

import importlib

import keras
import numpy as np
import pytest

import finetunekit as ftk
from finetunekit.backbones import ImageInputAdapter, ImagePreprocess
from finetunekit.backbones.registry import REGISTRY, available

FAMILY_SMALLEST = {
    "vgg16": "vgg16",
    "vgg19": "vgg19",
    "resnet": "resnet50",
    "resnet_v2": "resnet50_v2",
    "xception": "xception",
    "inception_v3": "inception_v3",
    "inception_resnet_v2": "inception_resnet_v2",
    "mobilenet": "mobilenet",
    "mobilenet_v2": "mobilenet_v2",
    "mobilenet_v3": "mobilenet_v3_small",
    "densenet": "densenet121",
    "nasnet": "nasnet_mobile",
    "efficientnet": "efficientnet_b0",
    "efficientnet_v2": "efficientnet_v2_b0",
    "convnext": "convnext_tiny",
}


def test_available_lists_every_keras_application():
    names = ftk.Backbone.available()
    keras_models = [n for n in dir(keras.applications) if n[0].isupper()]
    assert len(names) == len(keras_models) == 40
    for spec in set(REGISTRY.values()):
        assert hasattr(keras.applications, spec.constructor)
    assert {"vgg16", "resnet50", "mobilenet_v3_small", "efficientnet_b0"} <= set(names)


@pytest.mark.parametrize(
    "alias, canonical",
    [
        ("VGG16", "vgg16"),
        ("ResNet50", "resnet50"),
        ("resnet_50", "resnet50"),
        ("MobileNetV3Small", "mobilenet_v3_small"),
        ("mobilenet-v3-small", "mobilenet_v3_small"),
        ("ResNet50V2", "resnet50_v2"),
        ("EfficientNetV2B0", "efficientnet_v2_b0"),
    ],
)
def test_names_are_case_and_underscore_insensitive(alias, canonical):
    assert ftk.Backbone(alias, weights=None).name == canonical


def test_unknown_name_suggests_closest():
    with pytest.raises(ftk.UnknownBackboneError) as err:
        ftk.Backbone("resnet5O")
    assert "resnet50" in str(err.value)
    assert "Received: name='resnet5O'" in str(err.value)
    assert isinstance(err.value, ValueError)


def test_non_string_name_is_a_type_error():
    with pytest.raises(ftk.ArgumentTypeError):
        ftk.Backbone(keras.Sequential())


@pytest.mark.parametrize(
    "name, shape",
    [("vgg16", (16, 16, 3)), ("inception_v3", (64, 64, 3)), ("xception", (70, 70, 3))],
)
def test_input_shape_below_minimum_raises(name, shape):
    with pytest.raises(ftk.InputShapeError) as err:
        ftk.Backbone(name, weights=None, input_shape=shape)
    assert "input_shape" in str(err.value) and "minimum" in str(err.value)


def test_input_shape_must_have_three_entries():
    with pytest.raises(ftk.InputShapeError):
        ftk.Backbone("vgg16", weights=None, input_shape=(32, 32))


def test_missing_weights_file_raises(tmp_path):
    with pytest.raises(ftk.WeightsError) as err:
        ftk.Backbone("resnet50", weights=str(tmp_path / "w.h5"))
    assert "w.h5" in str(err.value)


def test_weights_file_with_wrong_extension(tmp_path):
    bad = tmp_path / "weights.txt"
    bad.write_text("x")
    with pytest.raises(ftk.WeightsError):
        ftk.Backbone("resnet50", weights=str(bad))


def test_unknown_input_range():
    with pytest.raises(ftk.ArgumentTypeError):
        ftk.Backbone("vgg16", input_range="0-100")


def test_constructor_does_not_build(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("model built in the constructor")

    monkeypatch.setattr(keras.applications, "VGG16", boom)
    ftk.Backbone("vgg16")  # only validates


def test_offline_imagenet_error_names_file_and_cache(monkeypatch):
    url = (
        "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/"
        "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
    )

    def offline(*args, **kwargs):
        raise Exception(f"URL fetch failure on {url}: None -- [Errno -2] Name or service not known")

    monkeypatch.setattr(keras.applications, "VGG16", offline)
    bb = ftk.Backbone("vgg16", weights="imagenet", input_shape=(32, 32, 3))
    with pytest.raises(ftk.WeightsError) as err:
        bb.create_model()
    message = str(err.value)
    assert "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5" in message
    from finetunekit.backbones.backbone import keras_cache_dir

    assert keras_cache_dir() in message
    assert "weights=" in message


def test_local_weights_file_round_trip(tmp_path):
    net = keras.applications.MobileNetV3Small(
        include_top=False, weights=None, input_shape=(32, 32, 3), include_preprocessing=True
    )
    path = tmp_path / "mnv3_notop.weights.h5"
    net.save_weights(path)
    bb = ftk.Backbone("mobilenet_v3_small", weights=str(path), input_shape=(32, 32, 3))
    model = bb.create_model()
    for a, b in zip(model.get_weights(), net.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_corrupt_weights_file_raises(tmp_path):
    path = tmp_path / "broken.weights.h5"
    path.write_bytes(b"not an hdf5 file at all")
    with pytest.raises(ftk.WeightsError) as err:  # checked at once, before any build
        ftk.Backbone("mobilenet_v3_small", weights=str(path), input_shape=(32, 32, 3))
    assert "broken.weights.h5" in str(err.value)


@pytest.mark.parametrize("module, name", sorted(FAMILY_SMALLEST.items()))
def test_every_family_builds_tiny(module, name):
    spec = REGISTRY[name.replace("_", "")]
    size = max(spec.min_size, 32)
    bb = ftk.Backbone(name, weights=None, input_shape=(size, size, 3))
    inputs = keras.Input((20, 20), dtype="uint8")
    built = bb.build(inputs, input_dtype="uint8")
    model = keras.Model(inputs, built.features)
    out = model.predict(np.zeros((2, 20, 20), "uint8"), verbose=0)
    assert out.shape[0] == 2 and np.all(np.isfinite(out))
    assert built.info["input_size"] == [size, size, 3]
    assert built.model.name == "backbone"


def test_all_registry_families_covered():
    assert {s.module for s in REGISTRY.values()} == set(FAMILY_SMALLEST)
    assert len(available()) == 40


@pytest.mark.parametrize("module", sorted(FAMILY_SMALLEST))
def test_preprocess_layer_matches_keras_preprocess_input(module):
    spec = next(s for s in REGISTRY.values() if s.module == module)
    keras_module = importlib.import_module(f"keras.applications.{module}")
    images = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    expected = np.asarray(keras_module.preprocess_input(images.copy()))
    got = np.asarray(ImagePreprocess(spec.preprocessing)(images))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)


def test_input_adapter_grayscale_resize_and_scale():
    layer = ImageInputAdapter((32, 32), 1, 3, add_channel_axis=True, scale=255.0)
    x = np.full((2, 28, 28), 0.5, "float32")
    out = np.asarray(layer(x))
    assert out.shape == (2, 32, 32, 3)
    np.testing.assert_allclose(out, 127.5, rtol=1e-5)


def test_input_adapter_rgba_drops_alpha():
    x = np.zeros((1, 4, 4, 4), "uint8")
    x[..., 3] = 255
    out = np.asarray(ImageInputAdapter(None, 4, 3)(x))
    assert out.shape == (1, 4, 4, 3) and out.max() == 0


@pytest.mark.parametrize(
    "dtype, values, expected",
    [
        ("uint8", None, "0-255"),
        ("float32", (0.0, 1.0), "0-1"),
        ("float32", (-1.0, 1.0), "-1-1"),
        ("float32", (0.0, 255.0), "0-255"),
    ],
)
def test_auto_input_range(dtype, values, expected):
    bb = ftk.Backbone("vgg16", weights=None)
    assert bb.resolve_range(dtype, values) == expected


def test_float01_inputs_are_scaled_inside_model():
    bb = ftk.Backbone("mobilenet_v3_small", weights=None, input_shape=(32, 32, 3))
    inputs = keras.Input((32, 32, 3), dtype="float32")
    built = bb.build(inputs, input_dtype="float32", value_range=(0.0, 1.0))
    assert built.info["input_range"] == "0-1"
    layer = next(
        la for la in keras.Model(inputs, built.features).layers if la.name == "input_adapter"
    )
    assert layer.scale == 255.0


def test_rejects_non_image_inputs_for_applications():
    bb = ftk.Backbone("vgg16", weights=None, input_shape=(32, 32, 3))
    with pytest.raises(ftk.DataError):
        bb.check_input((10,))
    with pytest.raises(ftk.DataError):
        bb.check_input((32, 32, 5))


def _classifier():
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = keras.layers.Flatten(name="flat")(x)
    x = keras.layers.Dense(6, activation="relu", name="embed")(x)
    outputs = keras.layers.Dense(3, activation="softmax", name="cls")(x)
    return keras.Model(inputs, outputs, name="mynet")


def test_from_model_cuts_below_the_dense_stack_and_clones():
    net = _classifier()
    bb = ftk.Backbone.from_model(net)
    model = bb.create_model()
    assert model.output.shape[-1] == 144  # "flat": below the Dense stack embed -> cls
    assert model.name == "backbone"
    kernel = model.get_layer("conv").kernel
    kernel.assign(np.zeros(kernel.shape, "float32"))
    assert np.abs(net.get_layer("conv").kernel.numpy()).sum() > 0  # original untouched


def test_from_model_explicit_and_unknown_feature_layer():
    net = _classifier()
    assert ftk.Backbone.from_model(net, feature_layer="flat").create_model().output.shape[-1] == 144
    with pytest.raises(ftk.BackboneError) as err:
        ftk.Backbone.from_model(net, feature_layer="nope")
    assert "feature_layer='nope'" in str(err.value)


def test_from_model_rejects_non_models():
    with pytest.raises(ftk.ArgumentTypeError):
        ftk.Backbone.from_model("resnet50")


def test_from_file_round_trip(tmp_path):
    net = _classifier()
    path = tmp_path / "encoder.keras"
    net.save(path)
    bb = ftk.Backbone.from_file(path)
    assert bb.get_config()["file"] == str(path)
    model = bb.create_model()
    assert model.output.shape[-1] == 144
    again = ftk.Backbone.from_config(bb.get_config())
    assert again.source == "file"


def test_from_file_errors(tmp_path):
    with pytest.raises(ftk.WeightsError):
        ftk.Backbone.from_file(tmp_path / "missing.keras")
    other = tmp_path / "encoder.txt"
    other.write_text("x")
    with pytest.raises(ftk.WeightsError):
        ftk.Backbone.from_file(other)
    broken = tmp_path / "broken.keras"
    broken.write_bytes(b"garbage")
    with pytest.raises(ftk.WeightsError):
        ftk.Backbone.from_file(broken).create_model()


def test_config_round_trip_and_from_model_refuses():
    bb = ftk.Backbone("ResNet50", weights=None, input_shape=(64, 64, 3), input_range="0-1")
    again = ftk.Backbone.from_config(bb.get_config())
    assert again.get_config() == bb.get_config()
    with pytest.raises(ftk.ConfigError):
        ftk.Backbone.from_model(_classifier()).get_config()
    with pytest.raises(ftk.ConfigError):
        ftk.Backbone.from_config({"name": "vgg16", "colour": "red"})


# ---------------------------------------------------------------------- copies of the user's model
class _Encoder(keras.Model):
    """A user's subclassed encoder (conv, BatchNorm, pooling, dense) with a ``get_config``."""

    def __init__(self, width: int = 4, **kwargs):
        super().__init__(**kwargs)
        self.width = width
        self.conv = keras.layers.Conv2D(width, 3, activation="relu")
        self.bn = keras.layers.BatchNormalization()
        self.pool = keras.layers.GlobalAveragePooling2D()
        self.dense = keras.layers.Dense(6, activation="relu")

    def call(self, x, training=False):
        return self.dense(self.pool(self.bn(self.conv(x), training=training)))

    def get_config(self):
        return {**super().get_config(), "width": self.width}


class _ProjectionEncoder(keras.Model):
    """A subclassed encoder built from an array, without ``get_config``: Keras cannot rebuild it."""

    def __init__(self, basis: np.ndarray, **kwargs):
        super().__init__(**kwargs)
        self.basis = basis
        self.flat = keras.layers.Flatten()
        self.dense = keras.layers.Dense(basis.shape[1])

    def call(self, x):
        return self.dense(self.flat(x))


def _user_model(kind: str) -> keras.Model:
    """A classifier whose penultimate output is the feature; functional, subclassed or + Lambda."""
    keras.utils.set_random_seed(3)
    inputs = keras.Input((8, 8, 1))
    if kind == "functional":
        x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
        x = keras.layers.BatchNormalization()(x)
        features = keras.layers.Dense(6)(keras.layers.GlobalAveragePooling2D(name="pool")(x))
    elif kind == "subclassed":
        features = _Encoder(4)(inputs)
    else:  # a Python lambda Keras rebuilds only outside safe mode, before a subclassed encoder
        features = _Encoder(4)(keras.layers.Lambda(lambda t: t * 0.5, name="halve")(inputs))
    outputs = keras.layers.Dense(3, activation="softmax", name="cls")(features)
    return keras.Model(inputs, outputs, name=f"user_{kind}")


@pytest.mark.parametrize("kind", ["functional", "subclassed", "subclassed_and_lambda"])
def test_from_model_builds_a_copy_not_the_users_model(kind):
    """create_model returns the user's features with the same weights held in new variables."""
    net = _user_model(kind)
    x = np.random.default_rng(0).uniform(0, 1, (5, 8, 8, 1)).astype("float32")
    weights = [w.copy() for w in net.get_weights()]
    # the default cut: below the Dense stack (the pooled conv features) of the functional
    # net; the output of the nested encoder (which the cut does not walk into) otherwise
    cut = net.get_layer("pool").output if kind == "functional" else net.get_layer("cls").input
    features = keras.Model(net.inputs, cut)
    expected = features.predict(x, verbose=0)
    copy = ftk.Backbone.from_model(net).create_model()
    np.testing.assert_allclose(copy.predict(x, verbose=0), expected, rtol=1e-6, atol=1e-6)
    for variable in copy.weights:  # "train" the copy as hard as possible
        variable.assign(np.zeros(variable.shape, variable.dtype))
    assert np.abs(copy.predict(x, verbose=0)).max() == 0.0
    for before, after in zip(weights, net.get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)  # the user's model is untouched
    np.testing.assert_array_equal(features.predict(x, verbose=0), expected)


def test_from_model_refuses_a_model_it_cannot_copy():
    """A weighted subclassed model without get_config raises at build, naming class and fix."""
    inputs = keras.Input((8, 8, 1))
    encoder = _ProjectionEncoder(np.eye(64, 6, dtype="float32"), name="projection")
    net = keras.Model(inputs, keras.layers.Dense(3, name="cls")(encoder(inputs)), name="mine")
    backbone = ftk.Backbone.from_model(net)
    with pytest.raises(ftk.BackboneError) as err:
        backbone.create_model()
    message = str(err.value)
    assert "_ProjectionEncoder 'projection' of model 'mine'" in message
    assert "Implement get_config() on _ProjectionEncoder" in message
    assert "Received: model='mine', layer='projection'" in message
    assert isinstance(err.value, ValueError)


def test_from_file_refuses_a_file_that_carries_code(tmp_path):
    """A .keras file with a Python lambda is refused in safe mode: fit raises, its code never runs.

    Loading it yourself with ``safe_mode=False`` (the opt-in for a file you trust) and
    passing the model to ``from_model`` trains on it, the lambda inside the model.
    """
    ran = tmp_path / "code_ran"
    # The path must be a constant of the lambda's code: Keras stores a lambda's bytecode.
    code = eval(f"lambda t: (__import__('pathlib').Path({str(ran)!r}).touch(), t * 2.0)[1]")
    inputs = keras.Input((4,))
    keras.utils.set_random_seed(0)
    features = keras.layers.Dense(3, name="feat")(keras.layers.Lambda(code, name="code")(inputs))
    path = tmp_path / "encoder.keras"
    keras.Model(inputs, features).save(path)
    ran.unlink()  # building the model above ran the lambda once
    x = np.random.default_rng(0).normal(size=(16, 4)).astype("float32")
    y = np.arange(16) % 2
    recipe = ftk.FineTuner().with_data((x, y)).with_trainer(ftk.Trainer(epochs=1, verbose=0))
    backbone = ftk.Backbone.from_file(path, feature_layer="feat")  # only reads the archive
    with pytest.raises(ftk.WeightsError) as err:
        recipe.with_backbone(backbone).fit()
    message = str(err.value)
    assert "`Lambda` layer" in message and "arbitrary code execution" in message
    assert "path=" in message and "encoder.keras" in message  # long paths are shortened
    assert not ran.exists()  # the file's code never ran

    trusted = keras.saving.load_model(path, safe_mode=False)
    assert ran.exists()  # the file does carry code that runs when loaded unsafely
    result = recipe.with_backbone(ftk.Backbone.from_model(trusted, feature_layer="feat")).fit()
    kernel, bias = trusted.get_layer("feat").get_weights()
    got = result.model.get_layer("backbone").predict(x, verbose=0)
    np.testing.assert_allclose(got, (2.0 * x) @ kernel + bias, rtol=1e-5, atol=1e-5)
