"""Plots render to valid PNGs; TensorBoard logs appear; matplotlib stays optional."""

from __future__ import annotations

import glob
import importlib.util
import os
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

import finetunekit as ftk
from finetunekit import plots
from finetunekit.evaluation import Evaluator

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def assert_png(path: os.PathLike[str] | str, min_bytes: int = 3000) -> None:
    data = Path(path).read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path} is not a PNG"
    assert len(data) > min_bytes, f"{path} is suspiciously small ({len(data)} bytes)"


def _report(k: int = 4, n: int = 200, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(0, 1, (n, k))
    logits[np.arange(n), y] += 1.5
    p = np.exp(3 * logits)
    return Evaluator().compute(
        y,
        p / p.sum(1, keepdims=True),
        task="multiclass",
        class_names=[f"class {i}" for i in range(k)],
    )


def test_report_plots_render_png(tmp_path):
    report = _report()
    from matplotlib.figure import Figure

    figs = {
        "cm": plots.plot_confusion_matrix(report, path=tmp_path / "cm.png"),
        "cm_norm": plots.plot_confusion_matrix(
            report.to_dict(), normalize=True, path=tmp_path / "cm_norm.png"
        ),
        "per_class": plots.plot_per_class(report, metric="recall", path=tmp_path / "per_class.png"),
        "reliability": plots.plot_reliability(report, path=tmp_path / "reliability.png"),
    }
    for name, fig in figs.items():
        assert isinstance(fig, Figure)
        assert_png(tmp_path / f"{name}.png")
    labels = [t.get_text() for t in figs["cm"].axes[0].get_xticklabels()]
    assert labels == ["class 0", "class 1", "class 2", "class 3"]
    assert "ECE" in figs["reliability"].axes[0].get_title()
    # per-class bars: worst recall at the top
    bars = plots.plot_per_class(report, metric="f1").axes[0]
    top = bars.get_yticklabels()[0].get_text()
    assert top == min(report.per_class, key=lambda n: report.per_class[n]["f1"])
    # no path: nothing written, figure still returned
    assert isinstance(plots.plot_reliability(report), Figure)


def test_history_plot_marks_the_phase_boundary(tmp_path):
    history = {
        "phase": [1, 1, 1, 2, 2],
        "epoch": [0, 1, 2, 3, 4],
        "loss": [1.0, 0.8, 0.7, 0.5, 0.4],
        "accuracy": [0.5, 0.6, 0.65, 0.8, 0.85],
        "val_loss": [1.1, 0.9, 0.8, 0.6, None],  # None: a NaN saved to JSON
        "val_accuracy": [0.4, 0.5, 0.6, 0.7, 0.75],
    }
    fig = plots.plot_history(history, path=tmp_path / "h.png")
    assert_png(tmp_path / "h.png")
    assert [ax.get_title() for ax in fig.axes] == ["loss", "accuracy"]
    ax = fig.axes[0]
    styles = {line.get_label(): line.get_linestyle() for line in ax.get_lines()}
    assert styles["train"] == "-" and styles["validation"] == "--"
    boundary = [line for line in ax.get_lines() if line.get_linestyle() == ":"]
    assert len(boundary) == 1 and boundary[0].get_xdata()[0] == pytest.approx(3.5)
    only = plots.plot_history(history, metrics=["val_accuracy"])
    assert [a.get_title() for a in only.axes] == ["accuracy"]
    with pytest.raises(ftk.EvaluationError, match="no metric"):
        plots.plot_history(history, metrics=["auc"])
    with pytest.raises(ftk.ArgumentTypeError):
        plots.plot_history(42)


def test_bad_reports_raise_finetune_errors():
    regression = Evaluator().compute(np.arange(4.0), np.arange(4.0), task="regression")
    with pytest.raises(ftk.EvaluationError, match="single-label"):
        plots.plot_confusion_matrix(regression)
    with pytest.raises(ftk.EvaluationError, match="calibration"):
        plots.plot_reliability(regression)
    with pytest.raises(ftk.EvaluationError, match="per-class"):
        plots.plot_per_class(regression)
    with pytest.raises(ftk.EvaluationError, match="Unknown per-class metric"):
        plots.plot_per_class(_report(), metric="auc")
    with pytest.raises(ftk.ArgumentTypeError):
        plots.plot_confusion_matrix("report")


def test_without_matplotlib_core_works_and_plots_raise_install_hint():
    """With matplotlib unimportable, finetunekit imports and plots raise a clear error."""
    import subprocess

    code = (
        "import sys; sys.modules['matplotlib'] = None\n"
        "import numpy as np, finetunekit as ftk\n"
        "from finetunekit import plots\n"
        "report = ftk.Evaluator().compute(np.array([0, 1]), np.array([0.2, 0.7]), task='binary')\n"
        "try:\n"
        "    plots.plot_reliability(report)\n"
        "except ftk.FineTuneError as e:\n"
        "    print(type(e).__name__, isinstance(e, ImportError), str(e))\n"
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert out.stdout.startswith("PlotDependencyError True")
    assert "pip install 'finetunekit[plots]'" in out.stdout


def test_plots_do_not_touch_the_pyplot_state():
    import matplotlib

    backend = matplotlib.get_backend()
    plots.plot_confusion_matrix(_report())
    assert matplotlib.get_backend() == backend
    if "matplotlib.pyplot" in sys.modules:
        assert sys.modules["matplotlib.pyplot"].get_fignums() == []


def _load_example():
    spec = importlib.util.spec_from_file_location("ftk_plots_digits", EXAMPLES / "plots_digits.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_real_tiny_run_renders_every_plot_and_tensorboard_logs(tmp_path):
    example = _load_example()
    log_dir = tmp_path / "tb"
    out = example.main(
        str(tmp_path / "img"), n=240, epochs=1, fine_tune_epochs=1, log_dir=str(log_dir)
    )
    for path in out["paths"].values():
        assert_png(path)
    assert out["result"].history["phase"] == [1, 2]
    # TensorBoard: event files of both phases under train/ and validation/
    events = glob.glob(str(log_dir / "**" / "events.out.tfevents.*"), recursive=True)
    assert any(os.sep + "train" + os.sep in e for e in events)
    assert any(os.sep + "validation" + os.sep in e for e in events)
    assert ftk.Trainer(log_dir=str(log_dir)).get_config()["log_dir"] == str(log_dir)
    with pytest.raises(ftk.ArgumentTypeError, match="log_dir"):
        ftk.Trainer(log_dir=3)
    # example plots need image inputs; binary results work too
    result, report = out["result"], out["report"]
    assert report.calibration is not None and "ece" in report.metrics
    assert out["calibration"]["temperature"] == result.temperature


def test_example_plots_binary_rgb_and_float_images(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.random((30, 12, 12, 3)).astype("float32")
    y = np.arange(30) % 2
    inputs = keras.Input((12, 12, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(pooled))
    result = ftk.FineTuneResult(model=model, task="binary", class_names=["cat", "dog"])
    fig = plots.plot_top_losses(result, (x, y), k=4, path=tmp_path / "top.png")
    assert_png(tmp_path / "top.png")
    titles = [ax.get_title() for ax in fig.axes]
    assert len(titles) == 4 and all("loss=" in t and "p=" in t for t in titles)
    plots.plot_most_confused(result, (x, y), k=5, path=tmp_path / "confused.png")
    assert_png(tmp_path / "confused.png", min_bytes=1000)
    flat = (rng.random((6, 5)).astype("float32"), np.arange(6) % 2)
    vector_model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(1, "sigmoid")])
    vec = ftk.FineTuneResult(model=vector_model, task="binary", class_names=["a", "b"])
    with pytest.raises(ftk.EvaluationError, match="image inputs"):
        plots.plot_top_losses(vec, flat, k=2)
    with pytest.raises(ftk.ArgumentTypeError, match="k must"):
        plots.plot_top_losses(vec, flat, k=0)


def test_log_dir_without_tensorboard_raises_install_hint(monkeypatch, tmp_path):
    import importlib.util as util

    real = util.find_spec
    monkeypatch.setattr(
        util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a)
    )
    with pytest.raises(ftk.TrainerError, match=r"finetunekit\[tensorboard\]"):
        ftk.Trainer(log_dir=str(tmp_path))
    assert ftk.Trainer().log_dir is None
