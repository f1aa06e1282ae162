"""A model trained from a folder predicts and evaluates on files, folders and arrays at any size.

References are independent of finetunekit: files decoded with PIL, resized with
``tf.image.resize`` called directly, pushed through the trained model's layers
after its input layer; accuracies and losses recomputed with scikit-learn.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.metrics import accuracy_score, log_loss

import finetunekit as ftk
from finetunekit.data.decode import (
    ImageFolderInput,
    conform_images,
    decode_image_file,
    image_files,
    resize_images,
)

# Measured: predictions on files, folders and arrays agree with the reference within 6e-8
# (float32 batch effects); 1e-5 leaves room and still sees a changed resize (>1e-2).
TOL = 1e-5
CLASSES = ["zero", "one", "two"]


def _digits(n_per_class: int, offset: int) -> tuple[np.ndarray, np.ndarray]:
    """28x28 uint8 digits 0-2 (sklearn's 8x8 digits upscaled with PIL), labels 0-2."""
    digits = load_digits()
    images, labels = [], []
    for c in range(3):
        rows = np.flatnonzero(digits.target == c)[offset : offset + n_per_class]
        for r in rows:
            small = (digits.images[r] * 16).clip(0, 255).astype("uint8")
            images.append(np.asarray(Image.fromarray(small).resize((28, 28), Image.BILINEAR)))
            labels.append(c)
    return np.stack(images), np.array(labels)


def _write_folder(root, images, labels):
    paths = []
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        folder = root / CLASSES[label]
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{i:03d}.png"
        Image.fromarray(image).save(path)
        paths.append(str(path))
    return paths


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A grayscale 28x28 digit folder trained at image_size=(32, 32) (about 4 s)."""
    root = tmp_path_factory.mktemp("digits")
    x_train, y_train = _digits(20, 0)
    x_test, y_test = _digits(10, 20)
    train_paths = _write_folder(root / "train", x_train, y_train)
    test_paths = _write_folder(root / "test", x_test, y_test)
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 1))
    pooled = keras.layers.AveragePooling2D(2)(keras.layers.Rescaling(1 / 255)(inputs))
    net = keras.Model(inputs, keras.layers.Flatten()(pooled))  # 64 pixel features
    data = ftk.DatasetAdapter.from_directory(
        root / "train", image_size=(32, 32), color_mode="grayscale"
    )
    result = (
        ftk.FineTuner()
        .with_data(data)
        .with_backbone(ftk.Backbone.from_model(net))
        .with_trainer(ftk.Trainer(epochs=8, learning_rate=0.05, batch_size=16, verbose=0, seed=0))
        .fit()
    )
    return {
        "root": root,
        "result": result,
        "data": data,
        "x_test": x_test,
        "y_test": y_test,
        "test_paths": test_paths,
        "train_paths": train_paths,
    }


def _pil(paths):
    return np.stack([np.asarray(Image.open(p)) for p in paths])


def _reference(result, images):
    """Probabilities computed without finetunekit's decode or resize: PIL pixels resized by
    tf.image.resize, fed to the trained layers after the model's input layer."""
    resized = tf.image.resize(images[..., None].astype("float32"), (32, 32)).numpy()
    tail = keras.Model(result.model.get_layer("input_image").output, result.model.output)
    return tail.predict(resized, verbose=0), resized


def test_the_model_takes_images_of_any_size_and_records_how(trained):
    result = trained["result"]
    assert tuple(result.model.inputs[0].shape) == (None, None, None, 1)
    assert result.info["image_files"] == {
        "image_size": [32, 32],
        "color_mode": "grayscale",
        "interpolation": "bilinear",
    }
    # what training saw is what the reference computes from the PNG files
    seen = np.concatenate([b.numpy() for b in trained["data"].inputs_dataset(16)])
    # in the folder source's order (class sub-folders sorted by name), not the writing order
    _, resized = _reference(result, _pil(image_files(trained["root"] / "train")))
    np.testing.assert_allclose(seen, resized, atol=1e-4)  # measured 0 (same op on the same bytes)


def test_predict_on_paths_lists_folders_and_original_size_arrays(trained):
    result, paths = trained["result"], trained["test_paths"]
    reference, resized = _reference(result, trained["x_test"])
    assert np.ptp(reference) > 0.1  # the model's outputs vary: a wrong resize would show
    by_folder = result.predict(trained["root"] / "test")
    order = [paths.index(f) for f in image_files(trained["root"] / "test")]
    assert sorted(order) == list(range(len(paths)))  # every file once
    np.testing.assert_allclose(by_folder, reference[order], atol=TOL)
    np.testing.assert_allclose(result.predict(paths), reference, atol=TOL)
    np.testing.assert_allclose(result.predict(paths[3]), reference[3:4], atol=TOL)
    np.testing.assert_allclose(result.predict(np.array(paths[:4])), reference[:4], atol=TOL)
    np.testing.assert_allclose(result.predict(trained["x_test"]), reference, atol=TOL)  # (N,28,28)
    float_4d = trained["x_test"][..., None].astype("float32")
    np.testing.assert_allclose(result.predict(float_4d), reference, atol=TOL)
    np.testing.assert_allclose(result.predict(resized), reference, atol=TOL)  # training size
    assert result.predict_classes(paths[:2]) == [
        result.class_names[i] for i in reference[:2].argmax(-1)
    ]


def test_evaluate_a_folder_as_in_training(trained):
    result = trained["result"]
    reference, _ = _reference(result, trained["x_test"])
    y = trained["y_test"]
    report = result.evaluate(str(trained["root"] / "test")).to_dict()
    # classes are the sorted sub-folder names (one, two, zero), the model's output order
    assert report["num_examples"] == len(y) and report["class_names"] == sorted(CLASSES)
    folder_y = np.array([sorted(CLASSES).index(CLASSES[c]) for c in y])
    assert report["metrics"]["accuracy"] == pytest.approx(
        accuracy_score(folder_y, reference.argmax(-1)), abs=1e-12
    )
    assert report["metrics"]["loss"] == pytest.approx(log_loss(folder_y, reference), abs=1e-5)
    assert report["metrics"]["accuracy"] >= 0.8  # 3 classes: chance is 0.33 (measured 1.0)
    by_arrays = result.evaluate((trained["x_test"], [CLASSES[c] for c in y])).to_dict()
    assert by_arrays["metrics"] == pytest.approx(report["metrics"], abs=1e-6)


def test_evaluate_a_folder_with_some_classes(trained, tmp_path):
    result = trained["result"]
    keep = [p for p in trained["test_paths"] if "/two/" not in p and "\\two\\" not in p]
    images = _pil(keep)
    labels = [p.replace("\\", "/").split("/")[-2] for p in keep]
    _write_folder(tmp_path / "part", images, [CLASSES.index(n) for n in labels])
    report = result.evaluate(tmp_path / "part").to_dict()
    reference, _ = _reference(result, images)
    names = result.class_names
    assert report["num_examples"] == len(keep)
    assert report["metrics"]["accuracy"] == pytest.approx(
        accuracy_score([names.index(n) for n in labels], reference.argmax(-1)), abs=1e-12
    )


@pytest.mark.slow
def test_a_loaded_result_reads_folders_in_a_fresh_process(trained, tmp_path):
    result = trained["result"]
    path = tmp_path / "digits.keras"
    result.save(path)
    folder = trained["root"] / "test"
    # `import finetunekit` is lazy (no TensorFlow): ftk.load must register the layers itself
    code = textwrap.dedent(
        f"""
        import json, sys, numpy as np, finetunekit as ftk
        lazy = "tensorflow" not in sys.modules and "keras" not in sys.modules
        again = ftk.load({str(path)!r})
        probs = again.predict({str(folder)!r})
        report = again.evaluate({str(folder)!r}).to_dict()
        exec("from finetunekit import " + ", ".join(ftk.__all__))  # every public name
        print(json.dumps({{"probs": probs.tolist(), "metrics": report["metrics"],
                          "info": again.info["image_files"], "lazy": lazy}}))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
    )
    fresh = json.loads(out.stdout.strip().splitlines()[-1])
    assert fresh["lazy"]
    np.testing.assert_allclose(fresh["probs"], result.predict(folder), atol=TOL)
    assert fresh["metrics"] == pytest.approx(result.evaluate(folder).to_dict()["metrics"])
    assert fresh["info"]["image_size"] == [32, 32] and fresh["info"]["color_mode"] == "grayscale"
    # the file is a Keras model too: finetunekit registers its layers in either import order
    for imports in ("import keras\nimport finetunekit", "import finetunekit\nimport keras"):
        code = imports + textwrap.dedent(
            f"""
            import numpy as np
            model = keras.saving.load_model({str(path)!r})
            print(np.asarray(model.predict(np.zeros((1, 20, 24, 1)), verbose=0)).tolist())
            """
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
        )
        bare = json.loads(out.stdout.strip().splitlines()[-1])
        np.testing.assert_allclose(bare, result.predict(np.zeros((1, 20, 24, 1))), atol=TOL)


def test_inputs_the_model_cannot_take_raise_finetune_errors(trained, tmp_path):
    result = trained["result"]
    with pytest.raises(ftk.InputShapeError) as err:
        result.predict(np.zeros((2, 28, 28, 3), "uint8"))  # colour for a grayscale model
    assert "(2, 28, 28, 3)" in str(err.value) and "(N, H, W, 1)" in str(err.value)
    with pytest.raises(ftk.InputShapeError) as err:
        result.predict(np.zeros((2, 64), "float32"))
    assert "(2, 64)" in str(err.value)
    with pytest.raises(ftk.DataError, match="does not exist"):
        result.predict(str(tmp_path / "missing.png"))
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ftk.DataError, match="cannot be decoded") as err:
        result.predict([str(tmp_path / "broken.png")])
    assert "broken.png" in str(err.value)
    with pytest.raises(ftk.InputShapeError, match=r"\(3, 28, 28, 3\)"):
        result.evaluate((np.zeros((3, 28, 28, 3)), ["one", "two", "zero"]))

    # a model trained on (16, 16) arrays: other sizes and image files are refused clearly
    inputs = keras.Input((16, 16), dtype="uint8")
    flat = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(flat))
    arrays = ftk.FineTuneResult(model=model, task="binary", class_names=["a", "b"])
    assert arrays.predict(np.zeros((3, 16, 16), "uint8")).shape == (3, 1)
    with pytest.raises(ftk.InputShapeError) as err:
        arrays.predict(np.zeros((3, 20, 20), "uint8"))
    message = str(err.value)
    assert "(N, 16, 16)" in message and "(3, 20, 20)" in message
    with pytest.raises(ftk.InputShapeError, match=r"\(4, 20, 20\)"):
        arrays.evaluate((np.zeros((4, 20, 20), "uint8"), [0, 1, 0, 1]))
    with pytest.raises(ftk.DataError, match="trained from a folder"):
        arrays.predict(trained["test_paths"][:2])
    with pytest.raises(ftk.DataError, match="trained from a folder"):
        arrays.evaluate(str(trained["root"] / "test"))


def test_a_same_size_resize_is_skipped_even_for_blurring_methods():
    x = np.random.default_rng(0).uniform(0, 255, (2, 12, 12, 1)).astype("float32")
    for method in ("gaussian", "bilinear"):
        np.testing.assert_array_equal(resize_images(x, (12, 12), method).numpy(), x)
        np.testing.assert_allclose(
            resize_images(x, (9, 9), method).numpy(),
            tf.image.resize(x, (9, 9), method=method).numpy(),
        )
    # inside a model whose input size is only known at run time (the tf.cond path)
    inputs = keras.Input((None, None, 1))
    model = keras.Model(inputs, ImageFolderInput((12, 12), "grayscale", "gaussian")(inputs))
    step = tf.function(lambda t: model(t), input_signature=[tf.TensorSpec((None, None, None, 1))])
    np.testing.assert_array_equal(step(x).numpy(), x)
    np.testing.assert_allclose(
        step(x[:, :9, :9]).numpy(),
        tf.image.resize(x[:, :9, :9], (12, 12), method="gaussian").numpy(),
        atol=1e-4,
    )


def test_channel_conversions_match_decoding_the_file(tmp_path):
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (5, 6), dtype=np.uint8)
    rgba = rng.integers(0, 256, (5, 6, 4), dtype=np.uint8)
    rgb = rgba[..., :3].copy()
    Image.fromarray(gray).save(tmp_path / "g.png")
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    Image.fromarray(rgb).save(tmp_path / "c.png")
    cases = [
        ("g.png", gray, "rgb"),
        ("g.png", gray, "rgba"),
        ("g.png", gray[..., None], "grayscale"),
        ("a.png", rgba, "rgb"),
        ("c.png", rgb, "rgba"),
    ]
    for name, pixels, mode in cases:
        channels = {"rgb": 3, "rgba": 4, "grayscale": 1}[mode]
        decoded = decode_image_file(str(tmp_path / name), channels).numpy()
        np.testing.assert_array_equal(conform_images(pixels[None], mode)[0], decoded, name + mode)
    with pytest.raises(ftk.InputShapeError, match="grayscale"):
        conform_images(rgb[None], "grayscale")
