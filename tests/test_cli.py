"""The finetunekit command line, end to end."""

from __future__ import annotations

import json
import subprocess
import sys

import keras
import numpy as np
import pytest

import finetunekit as ftk
from finetunekit.cli import main


@pytest.fixture
def files(tmp_path, tiny_images):
    x, y = tiny_images
    np.savez(tmp_path / "train.npz", x=x, y=y)
    np.savez(tmp_path / "test.npz", x=x[:10], y=y[:10])
    inputs = keras.Input((16, 16, 1))
    h = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inputs))
    encoder = keras.Model(inputs, keras.layers.Dense(4)(h))
    encoder.save(tmp_path / "encoder.keras")
    recipe = (
        ftk.FineTuner()
        .with_backbone(ftk.Backbone.from_file(tmp_path / "encoder.keras"))
        .with_trainer(ftk.Trainer(epochs=1, batch_size=8, verbose=0))
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
    assert ftk.load(model).task == "binary"
    assert (
        main(
            ["evaluate", model, "--data", str(files / "test.npz"), "--json", str(files / "r.json")]
        )
        == 0
    )
    assert "accuracy" in capsys.readouterr().out
    assert json.loads((files / "r.json").read_text())["metrics"]["accuracy"] >= 0
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
