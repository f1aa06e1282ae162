"""One table of malformed inputs across the five steps and the pipeline.

Every row checks that the problem raises a ``finetunekit.FineTuneError``
subclass whose message names the offending argument (``arg=``) and the value
(``Received:``), and that it is raised before any model is built, any weight
is loaded or downloaded, or any training / prediction starts: those entry
points are replaced by spies that record every call.

docs/reliability.md lists the same table for users; keep them in step.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf

import finetunekit as ftk
from finetunekit.data import DatasetAdapter

# ---------------------------------------------------------------------- fixtures


@dataclass
class Ctx:
    """Inputs shared by the rows (made once per module, nothing trained)."""

    x: np.ndarray
    y: np.ndarray
    net: keras.Model
    result: ftk.FineTuneResult
    no_images_dir: str
    bad_images_dir: str
    plain_keras: str
    garbage_keras: str
    truncated_result: str
    corrupt_h5: str
    truncated_h5: str
    not_a_zip_backbone: str
    text_file: str


def _tiny_net() -> keras.Model:
    inputs = keras.Input((16, 16, 1))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="c1")(inputs)
    x = keras.layers.Conv2D(4, 3, activation="relu", name="c2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(3, activation="softmax", name="old_head")(x)
    return keras.Model(inputs, outputs, name="tiny")


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory) -> Ctx:
    root = tmp_path_factory.mktemp("bad_inputs")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (12, 16, 16)).astype("uint8")
    y = np.arange(12) % 2

    no_images = root / "no_images"
    for name in ("cat", "dog"):
        (no_images / name).mkdir(parents=True)
        (no_images / name / "notes.txt").write_text("not an image")
    bad_images = root / "bad_images"
    for name in ("cat", "dog"):
        (bad_images / name).mkdir(parents=True)
        for i in range(2):
            (bad_images / name / f"{i}.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")

    net = _tiny_net()
    plain = str(root / "plain.keras")
    net.save(plain)
    garbage = root / "garbage.keras"
    garbage.write_bytes(os.urandom(2048))

    head_in = keras.Input((16, 16, 1))
    head_out = keras.layers.Dense(1, activation="sigmoid")(
        keras.layers.GlobalAveragePooling2D()(head_in)
    )
    result = ftk.FineTuneResult(
        model=keras.Model(head_in, head_out),
        task="binary",
        class_names=["0", "1"],
    )
    saved = str(root / "result.keras")
    result.save(saved)
    truncated = root / "truncated.keras"
    data = open(saved, "rb").read()
    truncated.write_bytes(data[: len(data) // 2])

    corrupt_h5 = root / "corrupt_notop.h5"
    corrupt_h5.write_bytes(os.urandom(4096))
    weights_h5 = str(root / "full.weights.h5")
    net.save_weights(weights_h5)
    truncated_h5 = root / "truncated_notop.h5"
    full = open(weights_h5, "rb").read()
    truncated_h5.write_bytes(full[: len(full) // 3])
    not_zip = root / "encoder.keras"
    not_zip.write_bytes(b"plain text, not a keras archive")
    text_file = root / "weights.txt"
    text_file.write_text("weights")

    return Ctx(
        x=x,
        y=y,
        net=net,
        result=result,
        no_images_dir=str(no_images),
        bad_images_dir=str(bad_images),
        plain_keras=plain,
        garbage_keras=str(garbage),
        truncated_result=str(truncated),
        corrupt_h5=str(corrupt_h5),
        truncated_h5=str(truncated_h5),
        not_a_zip_backbone=str(not_zip),
        text_file=str(text_file),
    )


@pytest.fixture
def expensive_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Replaces every expensive entry point with a spy; returns the calls made."""
    calls: list[str] = []

    def spy(name: str) -> Callable[..., Any]:
        def called(*args: Any, **kwargs: Any) -> Any:
            calls.append(name)
            raise RuntimeError(f"{name} must not be reached for a bad input")

        return called

    monkeypatch.setattr(ftk.Backbone, "create_model", spy("Backbone.create_model"))
    monkeypatch.setattr(ftk.FineTuner, "build_model", spy("FineTuner.build_model"))
    monkeypatch.setattr(keras.Model, "fit", spy("keras.Model.fit"))
    monkeypatch.setattr(keras.Model, "predict", spy("keras.Model.predict"))
    monkeypatch.setattr(keras.utils, "get_file", spy("keras.utils.get_file"))
    monkeypatch.setattr(keras.saving, "load_model", spy("keras.saving.load_model"))
    for name in ftk.Backbone.available():
        from finetunekit.backbones import registry

        ctor = registry.lookup(name).constructor
        monkeypatch.setattr(keras.applications, ctor, spy(f"keras.applications.{ctor}"))
    return calls


# ---------------------------------------------------------------------- helpers


def _arrays(ctx: Ctx, x: Any = None, y: Any = None, **kw: Any) -> DatasetAdapter:
    return DatasetAdapter.from_arrays(ctx.x if x is None else x, ctx.y if y is None else y, **kw)


def _y_float(values: list[Any], n: int = 12) -> np.ndarray:
    return np.array([values[i % len(values)] for i in range(n)], dtype="float64")


def _rows(rows: list[Any], n: int = 12) -> np.ndarray:
    return np.array([rows[i % len(rows)] for i in range(n)], dtype="float64")


def _tuner(ctx: Ctx, *, data: Any = None, head: Any = None, **trainer: Any) -> ftk.FineTuner:
    kwargs = {"epochs": 1, "batch_size": 4, "verbose": 0, **trainer}
    return (
        ftk.FineTuner()
        .with_data(data if data is not None else _arrays(ctx))
        .with_backbone(ftk.Backbone.from_model(ctx.net))
        .with_head(head if head is not None else ftk.HeadReplacer())
        .with_trainer(ftk.Trainer(**kwargs))
    )


def _with_validation(ctx: Ctx, val_y: Any) -> ftk.FineTuner:
    train = _arrays(ctx, y=np.arange(12) % 2, class_names=["a", "b", "c"], task="multiclass")
    val = DatasetAdapter.from_arrays(
        ctx.x[:6], val_y, class_names=["a", "b", "c"], task="multiclass"
    )
    return _tuner(ctx, data=train).with_data(train, validation=val)


def _ds(*tensors: Any) -> tf.data.Dataset:
    return tf.data.Dataset.from_tensor_slices(tensors if len(tensors) > 1 else tensors[0])


def _app(**kw: Any) -> ftk.Backbone:
    return ftk.Backbone("mobilenet_v3_small", **kw)


def _app_pipeline(ctx: Ctx, x: np.ndarray) -> ftk.FineTuneResult:
    return (
        ftk.FineTuner()
        .with_data(DatasetAdapter.from_arrays(x, ctx.y))
        .with_backbone(_app(weights=None, input_shape=(32, 32, 3)))
        .with_trainer(ftk.Trainer(epochs=1, verbose=0))
        .fit()
    )


def _nan_images(ctx: Ctx) -> np.ndarray:
    x = ctx.x.astype("float32")
    x[3, 2, 2] = np.nan
    return x


def _inf_images(ctx: Ctx) -> np.ndarray:
    x = ctx.x.astype("float32")
    x[0, 0, 0] = np.inf
    return x


def _detection(**kw: Any) -> DatasetAdapter:
    args: dict[str, Any] = {
        "images": np.zeros((2, 16, 16, 3), "uint8"),
        "boxes": [[[1, 1, 8, 8]], []],
        "labels": [[0], []],
        **kw,
    }
    return DatasetAdapter.from_detection(
        args.pop("images"), args.pop("boxes"), args.pop("labels"), **args
    )


def _coco_absent_image(c: Ctx) -> DatasetAdapter:
    doc = {
        "images": [{"id": 1, "file_name": "gone.png", "width": 16, "height": 16}],
        "annotations": [{"image_id": 1, "bbox": [1, 1, 4, 4], "category_id": 1}],
        "categories": [{"id": 1, "name": "cat"}],
    }
    return DatasetAdapter.from_coco(doc, c.no_images_dir)


def _voc_malformed(c: Ctx) -> DatasetAdapter:
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="voc_"))
    (root / "Annotations").mkdir()
    (root / "JPEGImages").mkdir()
    (root / "Annotations" / "0001.xml").write_text("<annotation><filename>0001.jpg")
    return DatasetAdapter.from_voc(root)


def _tiny_detector_result() -> ftk.FineTuneResult:
    """A detector built (not trained) on an 8-px-stride CNN, as a result."""
    from finetunekit.heads.anchors import AnchorSpec
    from finetunekit.heads.detector import Detector, detector_network

    x = images = keras.Input((32, 32, 3))
    for i in range(3):  # stride 8: pyramid level 3
        x = keras.layers.Conv2D(4, 3, strides=2, padding="same", name=f"s{i}")(x)
    spec = AnchorSpec(min_level=3, max_level=3, num_scales=1, aspect_ratios=(1.0,))
    network = detector_network(images, {"P3": x}, spec=spec, num_classes=2, filters=4, head_convs=0)
    anchors = {**spec.generator_kwargs(), "aspect_ratios": [1.0]}
    model = Detector(network, 2, 32, anchors)
    return ftk.FineTuneResult(model=model, task="detection", class_names=["a", "b"])


def _detector_predict_gray(c: Ctx) -> Any:
    return _tiny_detector_result().predict([np.zeros((20, 20, 1), "uint8")])


def _detector_export_int8(c: Ctx) -> Any:
    path = Path(c.no_images_dir).parent / "det.tflite"
    sample = np.zeros((2, 32, 32, 3), "uint8")
    return _tiny_detector_result().export(
        path, "litert", quantize="int8", representative_data=sample
    )


def _classifier_export_transformers(c: Ctx) -> Any:
    net = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    result = ftk.FineTuneResult(model=net, task="multiclass", class_names=["a", "b"])
    return result.export(Path(c.no_images_dir).parent / "hf", "transformers")


def _detection_fit(c: Ctx) -> ftk.FineTuneResult:
    return _tuner(c, data=_detection(), label_smoothing=0.1).fit()


# ---------------------------------------------------------------------- the table
# (id, action(ctx), exception class, offending argument as named in the message)
R = pytest.param
BAD_INPUTS = [
    # ---- step 1: DatasetAdapter
    R(lambda c: _arrays(c, x=np.zeros(12)), ftk.DataError, "x", id="x-1d"),
    R(
        lambda c: _arrays(c, x=[np.zeros((4, 4)), np.zeros((5, 5))], y=[0, 1]),
        ftk.DataError,
        "x",
        id="x-ragged",
    ),
    R(
        lambda c: _arrays(c, x=np.array([np.zeros(2), "a"] * 6, dtype=object)),
        ftk.DataError,
        "x",
        id="x-object-array",
    ),
    R(lambda c: _arrays(c, x=np.full((12, 4, 4), "a")), ftk.DataError, "x", id="x-string-images"),
    R(lambda c: _arrays(c, x=np.zeros((0, 4)), y=[]), ftk.DataError, "x", id="x-empty"),
    R(lambda c: _arrays(c, x=_nan_images(c)), ftk.DataError, "x", id="x-nan"),
    R(lambda c: _arrays(c, x=_inf_images(c)), ftk.DataError, "x", id="x-inf"),
    R(lambda c: _arrays(c, y=c.y[:-1]), ftk.DataError, "y", id="xy-length-mismatch"),
    R(lambda c: _arrays(c, y=[0, "cat"] * 6), ftk.LabelError, "y", id="y-mixed-types"),
    R(lambda c: _arrays(c, y=[{"a": 1}] * 12), ftk.LabelError, "y", id="y-dicts"),
    R(
        lambda c: _arrays(c, y=_y_float([0.5, 1.5, 2.5]), task="multiclass"),
        ftk.LabelError,
        "y",
        id="y-fractional-class-indices",
    ),
    R(
        lambda c: _arrays(c, y=[0, 1, 2, 3] * 3, class_names=["a", "b"]),
        ftk.LabelError,
        "y",
        id="y-index-beyond-class-names",
    ),
    R(
        lambda c: _arrays(c, y=["cat", "dog", "cow"] * 4, class_names=["cat", "dog"]),
        ftk.LabelError,
        "y",
        id="y-name-not-in-class-names",
    ),
    R(
        lambda c: _arrays(c, y=_rows([[0.5, 0.5, 0.0], [0.2, 0.8, 0.0]]), task="multiclass"),
        ftk.LabelError,
        "y",
        id="y-onehot-fractions",
    ),
    R(
        lambda c: _arrays(c, y=_rows([[-1, 1, 0], [1, 0, 0]]), task="multiclass"),
        ftk.LabelError,
        "y",
        id="y-onehot-negative",
    ),
    R(
        lambda c: _arrays(c, y=_rows([[1, 1, 0], [0, 1, 0]]), task="multiclass"),
        ftk.LabelError,
        "y",
        id="y-onehot-several-ones",
    ),
    R(lambda c: _arrays(c, y=_y_float([0.0, np.nan])), ftk.LabelError, "y", id="y-nan"),
    R(
        lambda c: _arrays(c, y=_y_float([0.3, np.inf]), task="regression"),
        ftk.LabelError,
        "y",
        id="regression-inf",
    ),
    R(
        lambda c: _arrays(c, y=_y_float([0.3, np.nan, 1.7]), task="regression"),
        ftk.LabelError,
        "y",
        id="regression-nan",
    ),
    R(lambda c: _arrays(c, y=[1] * 12), ftk.LabelError, "y", id="y-single-class"),
    R(lambda c: _arrays(c, task="classification"), ftk.LabelError, "task", id="unknown-task"),
    R(
        lambda c: _arrays(c, class_names=["a", "a"]),
        ftk.LabelError,
        "class_names",
        id="duplicate-class-names",
    ),
    R(lambda c: _arrays(c).split(1.5), ftk.DataError, "fraction", id="split-fraction>1"),
    R(lambda c: _arrays(c).split(0.0), ftk.DataError, "fraction", id="split-fraction-0"),
    R(lambda c: _arrays(c).as_dataset(0), ftk.DataError, "batch_size", id="as_dataset-batch-0"),
    R(
        lambda c: DatasetAdapter.from_directory("/no/such/folder"),
        ftk.DataError,
        "path",
        id="directory-missing",
    ),
    R(
        lambda c: DatasetAdapter.from_directory(c.no_images_dir),
        ftk.DataError,
        "path",
        id="directory-without-images",
    ),
    R(
        lambda c: DatasetAdapter.from_directory(c.bad_images_dir, validate=True),
        ftk.DataError,
        "path",
        id="directory-unreadable-images",
    ),
    R(
        lambda c: DatasetAdapter.from_tf_dataset(_ds(c.x)),
        ftk.DataError,
        "ds",
        id="tfdata-x-only",
    ),
    R(
        lambda c: DatasetAdapter.from_tf_dataset(_ds(c.x, c.y, c.y)),
        ftk.DataError,
        "ds",
        id="tfdata-triples",
    ),
    R(
        lambda c: DatasetAdapter.from_tf_dataset(_ds(np.array(["a b"] * 12), c.y)),
        ftk.DataError,
        "ds",
        id="tfdata-string-x",
    ),
    R(
        lambda c: DatasetAdapter.from_tf_dataset((c.x, c.y)),
        ftk.ArgumentTypeError,
        "ds",
        id="tfdata-not-a-dataset",
    ),
    R(
        lambda c: _detection(boxes=[[[1, 1, 20, 8]], []]),
        ftk.DataError,
        "boxes[0]",
        id="detection-box-outside-image",
    ),
    R(
        lambda c: _detection(boxes=[[[5, 1, 5, 8]], []]),
        ftk.DataError,
        "boxes[0]",
        id="detection-box-zero-width",
    ),
    R(
        lambda c: _detection(class_names=["cat"], labels=[[1], []]),
        ftk.LabelError,
        "labels[0]",
        id="detection-label-out-of-range",
    ),
    R(
        lambda c: _detection(labels=[[0, 0], []]),
        ftk.LabelError,
        "labels[0]",
        id="detection-box-label-counts-differ",
    ),
    R(
        lambda c: _detection(box_format="xyhw"),
        ftk.DataError,
        "box_format",
        id="detection-unknown-box-format",
    ),
    R(
        lambda c: DatasetAdapter.from_coco({"images": [], "annotations": []}, c.no_images_dir),
        ftk.DataError,
        "annotations_json",
        id="coco-missing-keys",
    ),
    R(_coco_absent_image, ftk.DataError, "image_dir", id="coco-image-absent"),
    R(_voc_malformed, ftk.DataError, "folder", id="voc-malformed-xml"),
    R(_detection_fit, ftk.TrainerError, "label_smoothing", id="detection-label-smoothing"),
    R(_detector_predict_gray, ftk.InputShapeError, "images[0]", id="detector-predict-channels"),
    R(_detector_export_int8, ftk.ExportError, "quantize", id="detector-export-int8"),
    R(
        _classifier_export_transformers,
        ftk.ExportError,
        "format",
        id="classifier-export-transformers",
    ),
    R(
        lambda c: DatasetAdapter.from_prompts(["a", None], ["b", "c"]),
        ftk.DataError,
        "prompts",
        id="prompts-not-strings",
    ),
    R(
        lambda c: DatasetAdapter.from_prompts(["a", "b"], ["c", " "]),
        ftk.DataError,
        "responses",
        id="prompts-empty-response",
    ),
    R(
        lambda c: DatasetAdapter.from_prompts(["a", "b"], ["c"]),
        ftk.DataError,
        "prompts",
        id="prompts-lengths-differ",
    ),
    R(
        lambda c: DatasetAdapter.from_prompts(c.text_file.replace(".txt", ".jsonl")),
        ftk.DataError,
        "path",
        id="prompts-missing-file",
    ),
    R(
        lambda c: DatasetAdapter.from_prompts(
            [[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hey"}]]
        ),
        ftk.DataError,
        "chat_template",
        id="prompts-chat-without-template",
    ),
    R(
        lambda c: _tuner(c, data=DatasetAdapter.from_prompts(["a"], ["b"]), epochs=2).fit(),
        ftk.TrainerError,
        "epochs",
        id="generative-frozen-phase",
    ),
    R(
        lambda c: _tuner(
            c,
            data=DatasetAdapter.from_prompts(["a"], ["b"]),
            head=ftk.HeadReplacer(num_classes=3),
            epochs=0,
            fine_tune_epochs=1,
        ).fit(),
        ftk.HeadError,
        "num_classes",
        id="generative-new-head",
    ),
    # ---- step 2: Backbone
    R(lambda c: ftk.Backbone("resnet5O"), ftk.UnknownBackboneError, "name", id="backbone-typo"),
    R(lambda c: ftk.Backbone(50), ftk.ArgumentTypeError, "name", id="backbone-name-int"),
    R(
        lambda c: _app(weights="/no/such/file_notop.h5"),
        ftk.WeightsError,
        "weights",
        id="weights-missing-file",
    ),
    R(lambda c: _app(weights=c.text_file), ftk.WeightsError, "weights", id="weights-txt"),
    R(lambda c: _app(weights=c.corrupt_h5), ftk.WeightsError, "weights", id="weights-corrupt"),
    R(
        lambda c: _app(weights=c.truncated_h5),
        ftk.WeightsError,
        "weights",
        id="weights-truncated",
    ),
    R(
        lambda c: _app(weights=None, input_shape=(32, 32)),
        ftk.InputShapeError,
        "input_shape",
        id="input-shape-2d",
    ),
    R(
        lambda c: _app(weights=None, input_shape=(8, 8, 3)),
        ftk.InputShapeError,
        "input_shape",
        id="input-shape-too-small",
    ),
    R(
        lambda c: _app(weights="imagenet", input_shape=(64, 64, 1)),
        ftk.InputShapeError,
        "input_shape",
        id="pretrained-1-channel",
    ),
    R(
        lambda c: _app(input_range="0-100"),
        ftk.ArgumentTypeError,
        "input_range",
        id="input-range-unknown",
    ),
    R(
        lambda c: ftk.Backbone.from_model(c.net, feature_layer="c9"),
        ftk.BackboneError,
        "feature_layer",
        id="feature-layer-unknown",
    ),
    R(
        lambda c: ftk.Backbone.from_model(c.net, preprocessing="mobilenetv9"),
        ftk.BackboneError,
        "preprocessing",
        id="preprocessing-unknown",
    ),
    R(
        lambda c: ftk.Backbone.from_model(
            c.net, preprocessing=keras.layers.Lambda(lambda t: t / 255.0)
        ),
        ftk.BackboneError,
        "preprocessing",
        id="preprocessing-not-safe-mode",
    ),
    R(
        lambda c: ftk.Backbone.from_model("tiny"),
        ftk.ArgumentTypeError,
        "model",
        id="from-model-not-a-model",
    ),
    R(
        lambda c: ftk.Backbone.from_file("/no/such/encoder.keras"),
        ftk.WeightsError,
        "path",
        id="from-file-missing",
    ),
    R(
        lambda c: ftk.Backbone.from_file(c.not_a_zip_backbone),
        ftk.WeightsError,
        "path",
        id="from-file-corrupt",
    ),
    # ---- step 3: HeadReplacer
    R(lambda c: ftk.HeadReplacer(num_classes=0), ftk.HeadError, "num_classes", id="classes-0"),
    R(lambda c: ftk.HeadReplacer(dropout=1.0), ftk.HeadError, "dropout", id="dropout-1"),
    R(lambda c: ftk.HeadReplacer(dropout=-0.1), ftk.HeadError, "dropout", id="dropout-negative"),
    R(
        lambda c: ftk.HeadReplacer(hidden_units=128),
        ftk.HeadError,
        "hidden_units",
        id="hidden-units-int",
    ),
    R(lambda c: ftk.HeadReplacer(pooling="mean"), ftk.HeadError, "pooling", id="pooling-unknown"),
    R(lambda c: ftk.HeadReplacer(loss="cross_entropy"), ftk.HeadError, "loss", id="loss-unknown"),
    R(
        lambda c: ftk.HeadReplacer(activation="softmaxx"),
        ftk.HeadError,
        "activation",
        id="activation-unknown",
    ),
    R(
        lambda c: ftk.HeadReplacer(label_smoothing=1.5),
        ftk.HeadError,
        "label_smoothing",
        id="label-smoothing-1.5",
    ),
    # ---- step 4: Trainer
    R(lambda c: ftk.Trainer(optimizer="adamm"), ftk.TrainerError, "optimizer", id="optimizer"),
    R(lambda c: ftk.Trainer(learning_rate=0), ftk.TrainerError, "learning_rate", id="lr-0"),
    R(
        lambda c: ftk.Trainer(learning_rate=-1e-3),
        ftk.TrainerError,
        "learning_rate",
        id="lr-negative",
    ),
    R(
        lambda c: ftk.Trainer(learning_rate=float("inf")),
        ftk.TrainerError,
        "learning_rate",
        id="lr-inf",
    ),
    R(
        lambda c: ftk.Trainer(fine_tune_learning_rate=0.0),
        ftk.TrainerError,
        "fine_tune_learning_rate",
        id="ft-lr-0",
    ),
    R(lambda c: ftk.Trainer(epochs=-1), ftk.TrainerError, "epochs", id="epochs-negative"),
    R(lambda c: ftk.Trainer(epochs=2.5), ftk.TrainerError, "epochs", id="epochs-float"),
    R(
        lambda c: ftk.Trainer(epochs=0, fine_tune_epochs=0),
        ftk.TrainerError,
        "epochs",
        id="nothing-to-train",
    ),
    R(lambda c: ftk.Trainer(batch_size=0), ftk.TrainerError, "batch_size", id="batch-0"),
    R(lambda c: ftk.Trainer(batch_size=-8), ftk.TrainerError, "batch_size", id="batch-negative"),
    R(lambda c: ftk.Trainer(unfreeze=0), ftk.TrainerError, "unfreeze", id="unfreeze-0"),
    R(
        lambda c: ftk.Trainer(callbacks=[print]),
        ftk.ArgumentTypeError,
        "callbacks",
        id="callback-not-keras",
    ),
    R(
        lambda c: ftk.Trainer(early_stopping=0),
        ftk.TrainerError,
        "early_stopping",
        id="early-stopping-0",
    ),
    R(lambda c: ftk.Trainer(monitor=3), ftk.ArgumentTypeError, "monitor", id="monitor-not-str"),
    R(lambda c: ftk.Trainer(verbose=5), ftk.TrainerError, "verbose", id="verbose-5"),
    R(lambda c: ftk.Trainer(seed="zero"), ftk.ArgumentTypeError, "seed", id="seed-str"),
    R(
        lambda c: ftk.Trainer(checkpoint_dir=3),
        ftk.ArgumentTypeError,
        "checkpoint_dir",
        id="checkpoint-dir-int",
    ),
    R(
        lambda c: ftk.Trainer(keep_best="yes"),
        ftk.ArgumentTypeError,
        "keep_best",
        id="keep-best-str",
    ),
    # ---- step 5: Evaluator and results
    R(lambda c: ftk.Evaluator(top_k=0), ftk.EvaluationError, "top_k", id="top-k-0"),
    R(lambda c: ftk.Evaluator(threshold=1.5), ftk.EvaluationError, "threshold", id="threshold"),
    R(
        lambda c: c.result.evaluate((c.x, np.arange(12) % 3)),
        ftk.LabelError,
        "y",
        id="evaluate-other-class-count",
    ),
    R(
        lambda c: c.result.evaluate(DatasetAdapter.from_arrays(c.x, ["0", "1", "cow"] * 4)),
        ftk.LabelError,
        "class_names",
        id="evaluate-adapter-with-unknown-class",
    ),
    R(lambda c: ftk.load("/no/such/model.keras"), ftk.LoadError, "path", id="load-missing"),
    R(lambda c: ftk.load(c.plain_keras), ftk.LoadError, "path", id="load-not-a-result"),
    R(lambda c: ftk.load(c.garbage_keras), ftk.LoadError, "path", id="load-garbage"),
    R(lambda c: ftk.load(c.truncated_result), ftk.LoadError, "path", id="load-truncated"),
    R(lambda c: c.result.save("model.h5"), ftk.LoadError, "path", id="save-not-keras"),
    # ---- the pipeline
    R(
        lambda c: ftk.FineTuner().with_data(_arrays(c), validation=1.5),
        ftk.DataError,
        "validation",
        id="validation-fraction>1",
    ),
    R(
        lambda c: ftk.FineTuner().with_data(_arrays(c), validation=0.0),
        ftk.DataError,
        "validation",
        id="validation-fraction-0",
    ),
    R(
        lambda c: ftk.FineTuner().with_data(_arrays(c), validation=1),
        ftk.DataError,
        "validation",
        id="validation-int",
    ),
    R(lambda c: ftk.FineTuner().with_data("photos/"), ftk.ArgumentTypeError, "data", id="data-str"),
    R(
        lambda c: _with_validation(c, [0, 1, 2] * 2).fit(),
        ftk.LabelError,
        "validation",
        id="validation-class-absent-in-training",
    ),
    R(
        lambda c: _tuner(c, head=ftk.HeadReplacer(num_classes=5)).fit(),
        ftk.HeadError,
        "num_classes",
        id="num-classes-contradicts-data",
    ),
    R(
        lambda c: _tuner(c, fine_tune_epochs=1, unfreeze=50).fit(),
        ftk.TrainerError,
        "unfreeze",
        id="unfreeze-deeper-than-backbone",
    ),
    R(
        lambda c: _tuner(c, early_stopping=2, monitor="val_acuracy").fit(),
        ftk.TrainerError,
        "monitor",
        id="monitor-unknown-metric",
    ),
    R(
        lambda c: _app_pipeline(c, np.zeros((12, 20), "float32")),
        ftk.DataError,
        "input_shape",
        id="app-backbone-non-image",
    ),
    R(
        lambda c: _app_pipeline(c, np.array(["photo.jpg"] * 12)),
        ftk.DataError,
        "input_dtype",
        id="app-backbone-strings",
    ),
    R(
        lambda c: _tuner(c, data=_arrays(c, x=np.zeros((12, 20), "float32"))).fit(),
        ftk.DataError,
        "input_shape",
        id="own-backbone-wrong-input-rank",
    ),
    R(
        lambda c: _app_pipeline(c, np.zeros((12, 16, 16, 5), "uint8")),
        ftk.DataError,
        "input_shape",
        id="app-backbone-5-channels",
    ),
    R(
        lambda c: ftk.FineTuner().with_trainer(ftk.Trainer()).fit(),
        ftk.ConfigError,
        "data",
        id="fit-without-data",
    ),
    R(
        lambda c: ftk.FineTuner().with_data(_arrays(c)).fit(),
        ftk.ConfigError,
        "backbone",
        id="fit-without-backbone",
    ),
    R(
        lambda c: ftk.FineTuner().with_backbone(3),
        ftk.ArgumentTypeError,
        "backbone",
        id="with-backbone-int",
    ),
    R(
        lambda c: ftk.FineTuner().with_head("ten"),
        ftk.ArgumentTypeError,
        "head",
        id="with-head-str",
    ),
    R(
        lambda c: ftk.FineTuner.from_config({"trainer": {}, "optimizer": "adam"}),
        ftk.ConfigError,
        "config",
        id="recipe-unknown-key",
    ),
    R(
        lambda c: ftk.Trainer.from_config({"epoch": 3}),
        ftk.ConfigError,
        "config",
        id="trainer-config-unknown-key",
    ),
    R(
        lambda c: ftk.HeadReplacer.from_config({"units": 3}),
        ftk.ConfigError,
        "config",
        id="head-config-unknown-key",
    ),
    R(
        lambda c: ftk.Backbone.from_config({"name": "vgg16", "weight": None}),
        ftk.ConfigError,
        "config",
        id="backbone-config-unknown-key",
    ),
    R(
        lambda c: ftk.Evaluator.from_config({"topk": 3}),
        ftk.ConfigError,
        "config",
        id="evaluator-config-unknown-key",
    ),
]


def test_the_table_is_wide_enough_and_documented():
    assert len(BAD_INPUTS) >= 40
    assert len({p.id for p in BAD_INPUTS}) == len(BAD_INPUTS)
    doc = Path(__file__).resolve().parents[1] / "docs" / "reliability.md"
    section = doc.read_text().split("## 1. Guarded inputs")[1].split("\n## 2.")[0]
    rows = [
        line
        for line in section.splitlines()
        if line.startswith("| ") and not line.startswith(("| input ", "| --- "))
    ]
    assert len(rows) == len(BAD_INPUTS), "docs/reliability.md lists every row of this table"
    assert f"({len(BAD_INPUTS)} cases)" in section


@pytest.mark.parametrize("action, error, arg", BAD_INPUTS)
def test_bad_input_fails_early_and_clearly(
    ctx: Ctx,
    expensive_calls: list[str],
    action: Callable[[Ctx], Any],
    error: type[Exception],
    arg: str,
) -> None:
    with pytest.raises(ftk.FineTuneError) as info:
        action(ctx)
    message = str(info.value)
    assert isinstance(info.value, error), f"{type(info.value).__name__}: {message}"
    assert "Received: " in message, message
    assert f"{arg}=" in message, message
    assert "Expected" in message, message
    assert expensive_calls == [], f"reached {expensive_calls} before raising: {message}"


# ---------------------------------------------------------------------- from_config


@pytest.mark.parametrize(
    "cls, config",
    [
        (ftk.Trainer, {"epochs": 2, "epoch": 3}),
        (ftk.HeadReplacer, {"dropout": 0.1, "units": 3}),
        (ftk.Backbone, {"name": "vgg16", "weight": None}),
        (ftk.Backbone, {"file": "a.keras", "layer": "x"}),
        (ftk.Evaluator, {"topk": 3}),
        (ftk.FineTuner, {"format": "finetunekit.FineTuner", "trainr": {}}),
    ],
)
def test_from_config_rejects_unknown_keys_listing_the_valid_ones(cls: Any, config: dict) -> None:
    valid = {
        ftk.Trainer: ftk.Trainer().get_config(),
        ftk.HeadReplacer: ftk.HeadReplacer().get_config(),
        ftk.Evaluator: ftk.Evaluator().get_config(),
        ftk.FineTuner: ftk.FineTuner().get_config(),
    }.get(cls)
    with pytest.raises(ftk.ConfigError) as info:
        cls.from_config(config)
    message = str(info.value)
    if valid is None:  # Backbone: either form's keys
        valid = {"name": 0, "weights": 0} if "name" in config else {"file": 0, "feature_layer": 0}
    for key in valid:
        assert repr(key) in message, (key, message)


def test_recipes_are_plain_json_round_trips(tmp_path: Any) -> None:
    tuner = (
        ftk.FineTuner()
        .with_backbone(ftk.Backbone("resnet50", weights=None, input_shape=(64, 64, 3)))
        .with_head(ftk.HeadReplacer(hidden_units=(8,)))
        .with_trainer(ftk.Trainer(epochs=1, checkpoint_dir=str(tmp_path), keep_best=True))
    )
    text = json.dumps(tuner.get_config())
    again = ftk.FineTuner.from_config(json.loads(text))
    assert again.get_config() == tuner.get_config()
    assert again.trainer.checkpoint_dir == str(tmp_path) and again.trainer.keep_best
