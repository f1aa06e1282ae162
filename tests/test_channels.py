"""Backbone(adapt_channels="first_conv"): any channel count through an adapted first convolution."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest

import finetunekit as ftk
from finetunekit.backbones.channels import adapt_first_conv, adapt_kernel
from finetunekit.backbones.layers import ImagePreprocess


def _net() -> keras.Model:
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            keras.layers.Conv2D(4, 3, padding="same", name="stem"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.ReLU(),
            keras.layers.Conv2D(5, 3, name="c2"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(2, activation="softmax", name="old_head"),
        ],
        name="tiny",
    )


def _features(net: keras.Model) -> keras.Model:
    return keras.Model(net.inputs[0], net.layers[-2].output)  # the default features: GAP


def _images(shape: tuple[int, ...], n: int = 12) -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 255, (n, *shape)).astype("float32")


def test_kernel_math() -> None:
    kernel = np.random.default_rng(0).normal(size=(3, 3, 3, 5)).astype("float32")
    np.testing.assert_allclose(adapt_kernel(kernel, 1), kernel.sum(axis=2, keepdims=True))
    six = adapt_kernel(kernel, 6)
    np.testing.assert_allclose(six[:, :, 3:], six[:, :, :3])
    np.testing.assert_allclose(six[:, :, :3], kernel / 2)
    # a constant image gives the same response (exact for multiples of 3)
    np.testing.assert_allclose(six.sum(axis=2), kernel.sum(axis=2), rtol=1e-5)
    four = adapt_kernel(kernel, 4)
    np.testing.assert_allclose(four[:, :, 3], kernel[:, :, 0] * 0.75)
    # BGR kernels ("caffe") are put in RGB order before repeating
    np.testing.assert_allclose(adapt_kernel(kernel, 4, bgr=True)[:, :, 0], kernel[:, :, 2] * 0.75)
    np.testing.assert_array_equal(adapt_kernel(kernel, 3), kernel)


def test_grayscale_features_equal_the_rgb_network_on_repeated_images() -> None:
    net = _net()
    bb = ftk.Backbone.from_model(net, adapt_channels="first_conv")
    gray = bb.create_adapted_model(1)
    assert tuple(gray.inputs[0].shape) == (None, 16, 16, 1)
    assert not any(w.name.startswith("lora") for w in gray.weights)
    np.testing.assert_allclose(
        gray.get_layer("stem").kernel.numpy(),
        net.get_layer("stem").kernel.numpy().sum(axis=2, keepdims=True),
        rtol=1e-6,
    )
    x = _images((16, 16, 1))
    want = _features(net)(np.repeat(x, 3, axis=-1))
    np.testing.assert_allclose(gray(x), want, rtol=1e-4, atol=1e-3)
    # the user's model is untouched
    assert net.get_layer("stem").kernel.shape == (3, 3, 3, 4)


def test_preprocessing_uses_averaged_statistics_for_other_channel_counts() -> None:
    g = _images((4, 4, 1), n=2)
    rgb = np.repeat(g, 3, axis=-1)
    for mode in ("tf", "none"):  # channel-agnostic: the same values per channel
        np.testing.assert_allclose(ImagePreprocess(mode)(g), ImagePreprocess(mode)(rgb)[..., :1])
    caffe = np.asarray(ImagePreprocess("caffe")(g))
    np.testing.assert_allclose(caffe, g - np.mean([103.939, 116.779, 123.68]), rtol=1e-6)
    torch = np.asarray(ImagePreprocess("torch")(np.repeat(g, 5, axis=-1)))
    mean, std = np.mean([0.485, 0.456, 0.406]), np.mean([0.229, 0.224, 0.225])
    np.testing.assert_allclose(torch, np.repeat((g / 255 - mean) / std, 5, -1), rtol=1e-5)


def test_caffe_first_conv_matches_rgb_network_with_the_averaged_mean() -> None:
    # a 'caffe' network sees BGR; the gray kernel is the sum, fed g - mean(mean_bgr)
    keras.utils.set_random_seed(1)
    rgb = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(3, 3, name="stem")])
    gray = adapt_first_conv(rgb, 1, bgr=True)
    two = adapt_first_conv(rgb, 2, bgr=True)
    g = _images((8, 8, 1), n=3)
    got = gray(ImagePreprocess("caffe")(g))
    preprocessed = np.asarray(ImagePreprocess("caffe")(g))
    np.testing.assert_allclose(got, rgb(np.repeat(preprocessed, 3, -1)), atol=1e-3)
    kernel = rgb.get_layer("stem").kernel.numpy()
    np.testing.assert_allclose(
        two.get_layer("stem").kernel.numpy(), kernel[:, :, [2, 1]] * 1.5, rtol=1e-6
    )


def test_application_with_pretrained_weights_file(tmp_path: Path) -> None:
    # "pretrained" 3-channel weights: a seeded mobilenet_v3_small saved to a file
    keras.utils.set_random_seed(2)
    source = keras.applications.MobileNetV3Small(
        include_top=False, weights=None, input_shape=(32, 32, 3), include_preprocessing=True
    )
    path = str(tmp_path / "mnv3.weights.h5")
    source.save_weights(path)
    bb = ftk.Backbone(
        "mobilenet_v3_small", weights=path, input_shape=(32, 32, 3), adapt_channels="first_conv"
    )
    x = _images((32, 32), n=4).round().astype("uint8")  # raw (H, W) grayscale, 0-255
    data = ftk.DatasetAdapter.from_arrays(x, np.arange(4) % 2)
    built = ftk.FineTuner().with_data(data).with_backbone(bb).build_model(data, 1)
    gray, info = built.backbone_model, built.info
    assert tuple(gray.inputs[0].shape) == (None, 32, 32, 1) and info["adapt_channels"]
    # Rescaling (scalar) before the first conv is fine; features match the RGB network's
    x = x[..., None].astype("float32")
    np.testing.assert_allclose(gray(x), source(np.repeat(x, 3, axis=-1)), rtol=1e-3, atol=1e-4)
    config = json.loads(json.dumps(bb.get_config()))
    assert config["adapt_channels"] == "first_conv"
    assert ftk.Backbone.from_config(config).adapt_channels == "first_conv"


def test_fit_with_two_channels_save_and_load(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    y = np.arange(24) % 2
    x = (rng.uniform(0, 0.5, (24, 16, 16, 2)) + y[:, None, None, None] * 0.5).astype("float32")
    result = (
        ftk.FineTuner()
        .with_data(ftk.DatasetAdapter.from_arrays(x, y))
        .with_backbone(ftk.Backbone.from_model(_net(), adapt_channels="first_conv"))
        .with_trainer(ftk.Trainer(epochs=1, batch_size=8, verbose=0, seed=0))
        .fit()
    )
    backbone = result.model.get_layer("backbone")
    assert tuple(backbone.inputs[0].shape) == (None, 16, 16, 2)
    assert result.info["adapt_channels"] == "first_conv"
    again = ftk.load(result.save(tmp_path / "two.keras"))
    np.testing.assert_allclose(again.predict(x[:4]), result.predict(x[:4]), atol=1e-6)
    # "convert" cannot take two channels: the error names the alternative
    with pytest.raises(ftk.DataError):
        ftk.FineTuner().with_data((x, y)).with_backbone(ftk.Backbone.from_model(_net())).fit()


def test_bad_arguments_and_unadaptable_models_raise_at_once() -> None:
    with pytest.raises(ftk.ArgumentTypeError, match="adapt_channels"):
        ftk.Backbone("vgg16", weights=None, adapt_channels="sum")
    dense_first = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Dense(4)])
    with pytest.raises(ftk.BackboneError, match="not a plain convolution"):
        ftk.Backbone.from_model(dense_first, adapt_channels="first_conv")
    per_channel = keras.Sequential(
        [keras.Input((8, 8, 3)), keras.layers.Rescaling([1.0, 2.0, 3.0]), keras.layers.Conv2D(2, 3)]
    )
    with pytest.raises(ftk.BackboneError, match="Rescaling"):
        ftk.Backbone.from_model(per_channel, adapt_channels="first_conv")
    assert ftk.Backbone("vgg16", weights=None).get_config()["adapt_channels"] == "convert"
