"""Clips: frame-wise image backbones, temporal heads, generator sources, save/load on raw clips."""

from __future__ import annotations

import importlib.util
import os

import keras
import numpy as np
import pytest

import finetunekit as ftk
from finetunekit.backbones.video import BatchToFrames, FramesToBatch

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


def _example():
    spec = importlib.util.spec_from_file_location(
        "video_clips", os.path.join(EXAMPLES, "video_clips.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_frame_layers_fold_and_unfold() -> None:
    clips = np.arange(2 * 3 * 4 * 4 * 1, dtype="float32").reshape(2, 3, 4, 4, 1)
    frames = FramesToBatch()(clips)
    assert tuple(frames.shape) == (6, 4, 4, 1)
    np.testing.assert_array_equal(np.asarray(frames)[4], clips[1, 1])
    back = BatchToFrames()([frames, clips])
    np.testing.assert_array_equal(np.asarray(back), clips)


def test_temporal_head_arguments_are_checked() -> None:
    with pytest.raises(ftk.HeadError, match="temporal"):
        ftk.HeadReplacer(temporal="lstm")
    with pytest.raises(ftk.HeadError, match="temporal_units"):
        ftk.HeadReplacer(temporal="gru", temporal_units=0)
    cfg = ftk.HeadReplacer(temporal="conv1d", temporal_units=8).get_config()
    assert ftk.HeadReplacer.from_config(cfg).temporal == "conv1d"


def test_application_backbone_accepts_clips_frame_by_frame() -> None:
    bb = ftk.Backbone("mobilenet_v3_small", weights=None, input_shape=(32, 32, 3))
    bb.check_input((5, 24, 24, 3))  # clips of RGB frames: fine
    with pytest.raises(ftk.DataError, match="channels"):
        bb.check_input((5, 24, 24, 7))


def test_motion_direction_needs_a_temporal_head() -> None:
    """The point of the test: averaging frames is at chance, a temporal head is not."""
    accuracies = _example().main(["--quick"])
    assert accuracies["average"] <= 0.7, accuracies
    assert accuracies["conv1d"] >= 0.9, accuracies
    assert accuracies["gru"] >= 0.9, accuracies
    assert accuracies["reloaded_identical"] == 1.0


def test_generator_clips_fit_save_load_predict_raw(tmp_path) -> None:
    video = _example()
    x, y = video.make_motion_clips(64, seed=3)

    def clips():
        yield from zip(x, y)

    data = ftk.DatasetAdapter.from_generator(clips)
    assert data.source == "tf.data" and data.input_shape == (6, 16, 16, 1) and len(data) == 64
    train, val = data.split(0.25, seed=0)
    result = (
        ftk.FineTuner()
        .with_data(train, validation=val)
        .with_backbone(ftk.Backbone.from_model(video.tiny_cnn()))
        .with_head(ftk.HeadReplacer(temporal="gru", temporal_units=8, pooling="flatten"))
        .with_trainer(ftk.Trainer(epochs=1, fine_tune_epochs=1, verbose=0, seed=0))
        .fit()
    )
    assert result.info["framewise"] is True
    names = [layer.name for layer in result.model.layers]
    assert {"input_frames", "frame_features", "head_temporal_gru"} <= set(names)
    probs = result.predict(x[:5])  # raw uint8 clips
    assert probs.shape == (5, 1)
    again = ftk.load(result.save(tmp_path / "clips.keras"))
    np.testing.assert_allclose(again.predict(x[:5]), probs, atol=1e-6)
    # clips of another length run through the same model (T is read at run time)
    assert again.predict(x[:2, :4]).shape == (2, 1)
    with pytest.raises(ftk.ArgumentTypeError, match="callable"):
        ftk.DatasetAdapter.from_generator(clips())


def test_framewise_weights_are_shared_and_bn_stays_frozen() -> None:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(4, 3)(inputs)
    h = keras.layers.BatchNormalization()(h)
    cnn = keras.Model(inputs, h)
    x = np.random.default_rng(0).integers(0, 255, (12, 4, 8, 8, 3)).astype("uint8")
    y = np.arange(12) % 2
    result = (
        ftk.FineTuner()
        .with_data((x, y))
        .with_backbone(ftk.Backbone.from_model(cnn))
        .with_head(ftk.HeadReplacer(temporal="average"))
        .with_trainer(ftk.Trainer(epochs=1, fine_tune_epochs=1, verbose=0, seed=0))
        .fit()
    )
    backbone = result.model.get_layer("backbone")
    assert backbone.count_params() == cnn.count_params()  # one copy for all frames
    bn = next(layer for layer in backbone.layers if "batch_normalization" in layer.name)
    np.testing.assert_array_equal(bn.moving_mean.numpy(), np.zeros(4))
