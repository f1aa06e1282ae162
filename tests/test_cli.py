"""The finetunekit command line, end to end."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from sklearn.metrics import accuracy_score, log_loss

import finetunekit as ftk
from finetunekit.cli import main


def held_out_images(n: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Fresh images drawn like ``tiny_images`` (class 1 is brighter), none of them trained on."""
    rng = np.random.default_rng(1)
    y = np.arange(n) % 2
    x = rng.integers(0, 100, (n, 16, 16)).astype("uint8")
    x[y == 1] += 120
    return x, y


@pytest.fixture
def files(tmp_path, tiny_images):
    x, y = tiny_images
    np.savez(tmp_path / "train.npz", x=x, y=y)
    x_test, y_test = held_out_images()
    np.savez(tmp_path / "test.npz", x=x_test, y=y_test)
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 1))
    h = keras.layers.Conv2D(4, 3)(keras.layers.Rescaling(1 / 255)(inputs))
    encoder = keras.Model(inputs, keras.layers.Dense(4)(keras.layers.GlobalAveragePooling2D()(h)))
    encoder.save(tmp_path / "encoder.keras")
    # 12 epochs at 0.05: held-out accuracy 1.0 for seeds 0-7 (encoder and Trainer); with
    # 1-8 epochs at 1e-3 or 1e-2 the head stayed at chance (0.5) for most seeds.
    recipe = (
        ftk.FineTuner()
        .with_backbone(ftk.Backbone.from_file(tmp_path / "encoder.keras"))
        .with_trainer(ftk.Trainer(epochs=12, learning_rate=0.05, batch_size=8, verbose=0, seed=0))
        .get_config()
    )
    (tmp_path / "recipe.json").write_text(json.dumps(recipe))
    return tmp_path


def test_train_evaluate_export(files, capsys):
    model = str(files / "model.keras")
    code = main(
        [
            "train",
            str(files / "recipe.json"),
            "--data",
            str(files / "train.npz"),
            "--validation",
            "0.25",
            "--output",
            model,
            "--quiet",
        ]
    )
    assert code == 0 and "saved" in capsys.readouterr().out
    trained = ftk.load(model)
    assert trained.task == "binary" and trained.class_names == ["0", "1"]
    assert (
        main(
            ["evaluate", model, "--data", str(files / "test.npz"), "--json", str(files / "r.json")]
        )
        == 0
    )
    out = capsys.readouterr().out
    accuracy = json.loads((files / "r.json").read_text())["metrics"]["accuracy"]
    x, y = held_out_images()
    positive = (trained.model.predict(x, verbose=0)[:, 0] >= 0.5).astype(int)
    assert accuracy == pytest.approx(accuracy_score(y, positive), abs=1e-12)
    shown = re.findall(r"^\s+accuracy\s+(\d\.\d{4})$", out, re.M)
    assert shown == [f"{accuracy:.4f}"]  # the printed table shows the same figure
    assert accuracy >= 0.9  # class 1 is brighter; chance is 0.5
    assert (
        main(
            [
                "export",
                model,
                "--format",
                "litert",
                "--output",
                str(files / "m.tflite"),
                "--sample",
                str(files / "test.npz"),
            ]
        )
        == 0
    )
    assert "OK" in capsys.readouterr().out


def test_bad_input_gives_one_line_and_exit_2(files, capsys):
    code = main(["train", str(files / "recipe.json"), "--data", str(files / "missing.npz")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--data" in err and "Received" in err
    assert main(["evaluate", str(files / "encoder.keras"), "--data", str(files / "test.npz")]) == 2
    assert "not a finetunekit result" in capsys.readouterr().err
    bad = files / "bad.json"
    bad.write_text(json.dumps({"trainer": {"epochs": -1}}))
    assert main(["train", str(bad), "--data", str(files / "train.npz")]) == 2
    assert "epochs" in capsys.readouterr().err


def test_help_for_each_command(capsys):
    for args in (["--help"], ["train", "--help"], ["evaluate", "--help"], ["export", "--help"]):
        with pytest.raises(SystemExit) as exit_info:
            main(args)
        assert exit_info.value.code == 0
        assert "usage: finetunekit" in capsys.readouterr().out


def test_entry_point_runs_as_a_module():
    out = subprocess.run(
        [sys.executable, "-m", "finetunekit", "--help"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0 and "train" in out.stdout and "export" in out.stdout


def test_backbones_lists_names(capsys):
    assert main(["backbones"]) == 0
    assert "vgg16" in capsys.readouterr().out.split()


# --------------------------------------------------------------------------- start-up

# Runs main() in a fresh interpreter and reports whether TensorFlow / Keras got imported.
_WRAPPER = textwrap.dedent(
    """
    import sys
    from finetunekit.cli import main
    code = main(sys.argv[1:])
    print(sorted(m for m in ("tensorflow", "keras") if m in sys.modules))
    sys.exit(code)
    """
)


def _quiet_env() -> dict[str, str]:
    """The environment of a user who set nothing (conftest sets TF_CPP_MIN_LOG_LEVEL)."""
    return {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}


def test_user_errors_are_one_line_exit_2_and_never_import_tensorflow(tmp_path):
    recipe = tmp_path / "recipe.json"
    recipe.write_text("{}")
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "plain.keras").write_bytes(b"not a zip")
    cases = {
        "recipe does not exist": ["train", "missing.json", "--data", "missing.npz"],
        "data does not exist": ["train", str(recipe), "--data", str(tmp_path / "missing.npz")],
        "not valid JSON": ["train", str(tmp_path / "broken.json"), "--data", str(tmp_path)],
        "--image-size": ["train", str(recipe), "--data", str(tmp_path), "--image-size", "0"],
        "must end in .keras": ["train", str(recipe), "--data", str(tmp_path), "--output", "m.h5"],
        "model file does not exist": ["evaluate", "missing.keras", "--data", str(tmp_path)],
        "not a .keras archive": ["predict", str(tmp_path / "plain.keras"), str(tmp_path)],
        "required": ["train", str(recipe)],
        "invalid choice": ["fit", str(recipe)],
    }
    for expected, args in cases.items():
        out = subprocess.run(
            [sys.executable, "-c", _WRAPPER, *args],
            capture_output=True,
            text=True,
            timeout=60,
            env=_quiet_env(),
            cwd=tmp_path,
        )
        assert out.returncode == 2, (args, out.stderr)
        assert out.stderr.count("\n") == 1 and out.stderr.startswith("finetunekit"), out.stderr
        assert expected in out.stderr, (expected, out.stderr)
        assert out.stdout.strip() == "[]", (args, out.stdout)  # neither TensorFlow nor Keras
    # the installed entry point behaves the same
    out = subprocess.run(
        [sys.executable, "-m", "finetunekit", "train", "missing.json", "--data", "missing.npz"],
        capture_output=True,
        text=True,
        timeout=60,
        env=_quiet_env(),
        cwd=tmp_path,
    )
    assert out.returncode == 2 and out.stdout == "" and out.stderr.count("\n") == 1
    assert "Received: recipe='missing.json'" in out.stderr


@pytest.mark.slow
def test_tensorflow_start_up_logging_is_silenced(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "finetunekit", "backbones"],
        capture_output=True,
        text=True,
        timeout=300,
        env=_quiet_env(),
        cwd=tmp_path,
    )
    assert out.returncode == 0 and "vgg16" in out.stdout.split()
    assert out.stderr == ""  # unfiltered: 4-6 lines (oneDNN, CUDA drivers, absl preamble)


# --------------------------------------------------------------------------- folders


def _write_folder(root, rng, n_per_class):
    """28x28 grayscale PNGs in left/ and right/ (that half is brighter), file paths in order."""
    paths = []
    for name, half in (("left", slice(0, 14)), ("right", slice(14, 28))):
        (root / name).mkdir(parents=True)
        for i in range(n_per_class):
            pixels = rng.integers(0, 100, (28, 28))
            pixels[:, half] += 120
            path = root / name / f"{i:02d}.png"
            Image.fromarray(pixels.astype("uint8")).save(path)
            paths.append(path)
    return paths


def test_a_folder_model_evaluates_and_predicts_folders_as_trained(tmp_path, capsys):
    rng = np.random.default_rng(0)
    _write_folder(tmp_path / "train", rng, 12)
    test_paths = _write_folder(tmp_path / "test", rng, 6)
    inputs = keras.Input((16, 16, 1))
    pooled = keras.layers.AveragePooling2D(4)(keras.layers.Rescaling(1 / 255)(inputs))
    encoder = keras.Model(inputs, keras.layers.Flatten()(pooled))  # 16 pixel features
    encoder.save(tmp_path / "encoder.keras")
    recipe = (
        ftk.FineTuner()
        .with_backbone(ftk.Backbone.from_file(tmp_path / "encoder.keras"))
        .with_trainer(ftk.Trainer(epochs=8, learning_rate=0.05, batch_size=8, verbose=0, seed=0))
        .get_config()
    )
    (tmp_path / "recipe.json").write_text(json.dumps(recipe))
    files = tmp_path
    model = str(files / "folder.keras")
    args = ["train", str(files / "recipe.json"), "--data", str(files / "train"), "--quiet"]
    args += ["--image-size", "32", "--color-mode", "grayscale", "--output", model]
    assert main(args) == 0
    capsys.readouterr()
    # no size or colour mode given again: the model reads the folder as it was trained
    report = str(files / "report.json")
    assert main(["evaluate", model, "--data", str(files / "test"), "--json", report]) == 0
    predictions = str(files / "predictions.json")
    inputs = [str(test_paths[0]), str(files / "test" / "right")]
    assert main(["predict", model, *inputs, "--json", predictions]) == 0
    assert capsys.readouterr().err == ""

    # reference: PIL pixels resized by tf.image.resize, through the layers after the resize
    loaded = ftk.load(model)
    assert loaded.info["image_files"]["image_size"] == [32, 32]
    pixels = np.stack([np.asarray(Image.open(p)) for p in test_paths])[..., None]
    resized = tf.image.resize(pixels.astype("float32"), (32, 32)).numpy()
    tail = keras.Model(loaded.model.get_layer("input_image").output, loaded.model.output)
    p_right = tail.predict(resized, verbose=0)[:, 0]
    y = np.repeat([0, 1], 6)
    metrics = json.loads((files / "report.json").read_text())["metrics"]
    assert metrics["accuracy"] == pytest.approx(accuracy_score(y, p_right >= 0.5), abs=1e-12)
    assert metrics["loss"] == pytest.approx(log_loss(y, p_right), abs=1e-5)
    assert metrics["accuracy"] >= 0.9  # one half is brighter; chance is 0.5
    rows = json.loads((files / "predictions.json").read_text())
    assert [r["input"] for r in rows] == [str(p) for p in [test_paths[0], *test_paths[6:]]]
    got = [r["probabilities"]["right"] for r in rows]
    np.testing.assert_allclose(got, p_right[[0, *range(6, 12)]], atol=1e-5)  # measured < 1e-7
