"""Tasks: the registry, the built-ins' hooks, and a user task end to end.

The user task is ``examples/custom_task.py``'s ``PoissonCounts`` (counts, an
exponential output, a Poisson loss, the Poisson deviance in the report): it
must fit, predict, evaluate, save and reload (in safe mode, in a fresh
process that imports its module; refused with a clear error in one that
does not), and each of its hooks must actually be used.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import finetunekit as ftk
from finetunekit import tasks

ROOT = Path(__file__).resolve().parents[1]


def _example():
    spec = importlib.util.spec_from_file_location("custom_task", ROOT / "examples/custom_task.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["custom_task"] = module
    spec.loader.exec_module(module)
    return module


ct = _example()


# ---------------------------------------------------------------- the registry


def test_builtins_are_registered_by_name_and_found_case_insensitively():
    assert tasks.available()[:4] == ["multiclass", "binary", "multilabel", "regression"]
    assert isinstance(tasks.get("Multi-Class"), tasks.Multiclass)
    assert "poisson_counts" in tasks.available()
    assert tasks.get("poisson_counts") == ct.PoissonCounts()
    task = ct.PoissonCounts()
    assert tasks.get(task) is task


def test_unknown_task_names_suggest_and_wrong_types_are_type_errors():
    with pytest.raises(ftk.LabelError, match='Did you mean task="poisson_counts"'):
        tasks.get("poisson_count")
    with pytest.raises(ftk.ArgumentTypeError):
        tasks.get(3)
    with pytest.raises(ftk.LabelError):
        ftk.DatasetAdapter.from_arrays(np.zeros((4, 2)), [0, 1, 0, 1], task="multiclas")


def test_a_new_task_cannot_take_a_builtin_name():
    with pytest.raises(ftk.ConfigError, match="belongs to finetunekit"):

        class Clash(ftk.Task):
            name = "binary"

    assert type(tasks.get("binary")) is tasks.Binary


def test_serialize_round_trip_keeps_the_config():
    class Scaled(ftk.Task):
        name = "test_scaled_values"

        def __init__(self, scale: float = 1.0) -> None:
            self.scale = scale

        def get_config(self):
            return {"scale": self.scale}

    task = Scaled(2.5)
    again = tasks.deserialize(json.loads(json.dumps(tasks.serialize(task))))
    assert isinstance(again, Scaled) and again.scale == 2.5 and again == task
    with pytest.raises(ftk.ConfigError):
        tasks.deserialize({"name": "test_scaled_values", "config": {"scal": 1}})


# ---------------------------------------------------------------- the built-ins' hooks


@pytest.mark.parametrize(
    "labels, name, units, stored, batch",
    [
        (["b", "a", "c"], "multiclass", 3, [1, 0, 2], [[0, 1, 0], [1, 0, 0], [0, 0, 1]]),
        (["n", "y", "y"], "binary", 1, [0, 1, 1], [[0], [1], [1]]),
        ([[1, 1], [0, 1], [1, 0]], "multilabel", 2, [[1, 1], [0, 1], [1, 0]], None),
        ([0.5, 1.5, -2.0], "regression", 1, [0.5, 1.5, -2.0], [[0.5], [1.5], [-2.0]]),
    ],
)
def test_builtin_tasks_encode_and_batch_targets(labels, name, units, stored, batch):
    data = ftk.DatasetAdapter.from_arrays(np.zeros((3, 2)), labels)
    task = data.task_object
    assert data.task == task.name == name
    assert task.output_units(task.size(data.encoding)) == units
    np.testing.assert_allclose(data.targets(), stored)
    _, y = next(iter(data.as_dataset(3)))
    np.testing.assert_allclose(y.numpy(), batch if batch is not None else stored)


def test_builtin_decisions_and_labels():
    probs = np.array([[0.2, 0.7, 0.1], [0.6, 0.3, 0.1]])
    assert tasks.get("multiclass").predict_labels(probs, ["a", "b", "c"]) == ["b", "a"]
    assert tasks.get("binary").predict_labels(np.array([[0.4], [0.5]]), ["n", "y"]) == ["n", "y"]
    assert tasks.get("multilabel").predict_labels(np.array([[0.9, 0.1]]), ["x", "z"]) == [["x"]]
    assert tasks.get("regression").decide(np.array([[1.0]])) is None
    with pytest.raises(ftk.EvaluationError, match="classification"):
        tasks.get("regression").predict_labels(np.zeros((1, 1)), [])


# ---------------------------------------------------------------- a user task


def test_user_task_checks_its_targets_before_anything_is_built():
    with pytest.raises(ftk.LabelError, match="whole numbers >= 0; rows \\[1\\]"):
        ftk.DatasetAdapter.from_arrays(np.zeros((3, 2)), [1, -2, 3], task=ct.PoissonCounts())
    with pytest.raises(ftk.LabelError, match="whole numbers"):
        ftk.DatasetAdapter.from_arrays(np.zeros((3, 2)), [1, 2.5, 3], task="poisson_counts")
    with pytest.raises(ftk.LabelError, match="String labels"):
        ftk.DatasetAdapter.from_arrays(np.zeros((2, 2)), ["a", "b"], task="poisson_counts")


def test_user_task_data_from_arrays_and_tf_data_agree():
    x, y = ct.counts_data(40)
    a = ftk.DatasetAdapter.from_arrays(x, y, task="poisson_counts")
    b = ftk.DatasetAdapter.from_tf_dataset(
        tf.data.Dataset.from_tensor_slices((x, y)), task=ct.PoissonCounts()
    )
    assert a.task == b.task == "poisson_counts"
    assert a.num_classes is None and a.target_dim == 1
    _, ya = next(iter(a.as_dataset(40)))
    _, yb = next(iter(b.as_dataset(40)))
    np.testing.assert_array_equal(ya.numpy(), y.reshape(-1, 1).astype("float32"))
    np.testing.assert_array_equal(ya.numpy(), yb.numpy())
    with pytest.raises(ftk.DataError, match="class_counts"):
        a.class_counts()
    train, val = a.split(0.25, seed=0)  # a random split: no classes to stratify
    assert len(train) == 30 and len(val) == 10 and val.task == "poisson_counts"
    with pytest.raises(ftk.TrainerError, match="label_smoothing"):
        ftk.FineTuner().with_data(a).with_backbone(
            ftk.Backbone.from_model(ct.encoder())
        ).with_trainer(ftk.Trainer(label_smoothing=0.1)).fit()


@pytest.fixture(scope="module")
def counts_run(tmp_path_factory):
    x, y = ct.counts_data(400)
    data = ftk.DatasetAdapter.from_arrays(x, y, task=ct.PoissonCounts())
    train, test = data.split(0.25, seed=0)
    result = (
        ftk.FineTuner()
        .with_data(train, validation=0.2)
        .with_backbone(ftk.Backbone.from_model(ct.encoder()))
        .with_head(ftk.HeadReplacer(dropout=0.0))
        .with_trainer(ftk.Trainer(epochs=25, learning_rate=1e-2, seed=0, verbose=0))
        .fit()
    )
    path = str(tmp_path_factory.mktemp("counts") / "counts.keras")
    result.save(path)
    return result, train, test, path


def test_user_task_builds_its_output_loss_and_metrics(counts_run):
    result, *_ = counts_run
    assert result.task == "poisson_counts"
    assert result.model.get_layer("head_output").get_config()["activation"] == "exponential"
    assert isinstance(result.model.loss, keras.losses.Poisson)
    assert "mae" in result.history and "val_mae" in result.history
    assert np.all(result.predict(ct.counts_data(5, seed=3)[0]) > 0)  # expected counts


def test_user_task_learns_and_reports_what_numpy_computes(counts_run):
    result, train, test, _ = counts_run
    report = result.evaluate(test)
    x_test = np.stack([xi for xi, _ in test.as_dataset(1000).unbatch().as_numpy_iterator()])
    mu = result.predict(x_test).reshape(-1)
    y = test.targets().astype("float64")
    expected = 2 * np.mean(np.where(y > 0, y * np.log(np.where(y > 0, y, 1) / mu), 0) - (y - mu))
    assert report.task == "poisson_counts" and report.headline == "poisson_deviance"
    assert report.metrics["poisson_deviance"] == pytest.approx(expected, rel=1e-5)
    assert report.metrics["mae"] == pytest.approx(np.mean(np.abs(y - mu)), rel=1e-5)
    # It learned the rate. Measured over data/split/trainer seeds 0-2: 0.19-0.44 x the
    # deviance of predicting the mean count, 1.00-1.14 x that of the true rate.
    baseline = ct.poisson_deviance(y, np.full(len(y), train.targets().mean()))
    best = ct.poisson_deviance(y, ct.true_rate(x_test))
    assert report.metrics["poisson_deviance"] < 0.6 * baseline
    assert report.metrics["poisson_deviance"] < 1.4 * best
    assert "poisson_deviance" in str(report)


def test_user_task_result_reloads_in_a_fresh_process_only_with_its_module(counts_run):
    result, _, test, path = counts_run
    x = ct.counts_data(6, seed=5)[0]
    np.save(Path(path).with_suffix(".npy"), x)
    code = (
        "import sys, json, numpy as np\n"
        "import finetunekit as ftk\n"
        "if sys.argv[2] == 'import':\n"
        f"    sys.path.insert(0, {str(ROOT / 'examples')!r}); import custom_task\n"
        "try:\n"
        "    r = ftk.load(sys.argv[1])\n"
        "except ftk.LoadError as e:\n"
        "    print(json.dumps({'error': str(e)})); raise SystemExit\n"
        "p = r.predict(np.load(sys.argv[1][:-6] + '.npy'))\n"
        "print(json.dumps({'task': r.task, 'pred': p.tolist()}))\n"
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    outs = {}
    for mode in ("import", "no-import"):
        done = subprocess.run(
            [sys.executable, "-c", code, path, mode],
            capture_output=True,
            text=True,
            timeout=240,
            env=env,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        outs[mode] = json.loads(done.stdout.strip().splitlines()[-1])
    assert outs["import"]["task"] == "poisson_counts"
    np.testing.assert_allclose(outs["import"]["pred"], result.predict(x), atol=1e-6)
    assert "poisson_counts" in outs["no-import"]["error"]
    assert "Import the module" in outs["no-import"]["error"]


def test_subclass_of_a_builtin_keeps_its_own_loss_through_fit_and_evaluate():
    class FocalMulticlass(tasks.Multiclass):
        name = "test_focal_multiclass"

        def loss(self, *, label_smoothing=0.0, target_std=None):
            return keras.losses.CategoricalFocalCrossentropy(label_smoothing=label_smoothing)

    rng = np.random.default_rng(0)
    y = np.arange(60) % 3
    x = rng.normal(size=(60, 8)).astype("float32") + y[:, None]
    data = ftk.DatasetAdapter.from_arrays(x, y, task=FocalMulticlass())
    assert data.task == "test_focal_multiclass" and data.num_classes == 3
    result = (
        ftk.FineTuner()
        .with_data(data)
        .with_backbone(ftk.Backbone.from_model(ct.encoder()))
        .with_trainer(ftk.Trainer(epochs=3, seed=0, verbose=0))
        .fit()
    )
    assert isinstance(result.model.loss, keras.losses.CategoricalFocalCrossentropy)
    report = result.evaluate((x, y))
    probs = result.predict(x)
    assert report.metrics["accuracy"] == pytest.approx(np.mean(probs.argmax(1) == y))
    assert report.confusion_matrix.shape == (3, 3)
    assert result.predict_classes(x[:2]) == [str(i) for i in probs[:2].argmax(1)]


def test_evaluator_accepts_a_task_object_and_its_report():
    y = np.array([0, 2, 4, 1])
    mu = np.array([0.5, 2.0, 3.0, 1.0])
    report = ftk.Evaluator().compute(y, mu, task=ct.PoissonCounts())
    assert report.metrics["poisson_deviance"] == pytest.approx(ct.poisson_deviance(y, mu))
    assert report.metrics["mse"] == pytest.approx(np.mean((y - mu) ** 2))
    with pytest.raises(ftk.EvaluationError, match="thresholds"):
        ftk.Evaluator().compute(y, mu, task=ct.PoissonCounts(), thresholds=0.3)


def test_the_example_runs_and_learns_the_rate(capsys):
    figures = ct.main()
    assert figures["reloaded_same"] == 1.0
    # measured (600 examples, 30 epochs, seeds 0-2): 0.27-0.32 x the mean, 0.98-1.01 x the true rate
    assert figures["poisson_deviance"] < 0.5 * figures["baseline_deviance"]
    assert figures["poisson_deviance"] < 1.3 * figures["true_rate_deviance"]
    printed = capsys.readouterr().out
    assert f"mean Poisson deviance {figures['poisson_deviance']:.3f}" in printed
