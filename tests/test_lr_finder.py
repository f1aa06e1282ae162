"""FineTuner.find_learning_rate: the exponential sweep, its suggestions, and that it leaves no trace."""

from __future__ import annotations

import json
import os
import random
import sys

import keras
import numpy as np
import pytest

import finetunekit as ftk
from finetunekit.errors import ArgumentTypeError, ConfigError, TrainerError
from finetunekit.training import lr_finder
from finetunekit.training.lr_finder import LRFinderResult, lr_sweep


def _regression_data(n: int = 64) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 8)).astype("float32")
    y = (x @ rng.normal(size=(8,))).astype("float32")
    return x, y


def _backbone_net() -> keras.Model:
    keras.utils.set_random_seed(1)
    return keras.Sequential([keras.Input((8,)), keras.layers.Dense(8)], name="tiny")


def _tuner(backbone: ftk.Backbone | None = None, **trainer: object) -> ftk.FineTuner:
    x, y = _regression_data()
    settings = {"optimizer": "sgd", "epochs": 2, "batch_size": 64, "verbose": 0, "seed": 0}
    settings.update(trainer)
    return (
        ftk.FineTuner()
        .with_data((x, y))
        .with_backbone(backbone or ftk.Backbone.from_model(_backbone_net()))
        .with_head(ftk.HeadReplacer(dropout=0.0))
        .with_trainer(ftk.Trainer(**settings))  # type: ignore[arg-type]
    )


@pytest.fixture(scope="module")
def sweep() -> LRFinderResult:
    # Full-batch SGD on a linear regression: a smooth curve that falls, then blows up.
    return _tuner().find_learning_rate(min_lr=1e-4, max_lr=100.0, steps=60)


def test_curve_decreases_then_diverges_and_suggestion_is_inside(sweep: LRFinderResult) -> None:
    rates, losses = np.asarray(sweep.learning_rates), np.asarray(sweep.losses)
    assert rates[0] == pytest.approx(1e-4)
    ratios = rates[1:] / rates[:-1]  # exponential: a constant ratio, (max/min) ** (1 / (steps-1))
    np.testing.assert_allclose(ratios, (100.0 / 1e-4) ** (1 / 59), rtol=1e-9)
    lowest = int(np.argmin(losses))
    assert losses[lowest] < 0.8 * losses[0]  # it learned
    assert np.all(np.diff(losses[: lowest + 1]) <= 1e-6)  # full batch: falls steadily ...
    assert sweep.diverged_at is not None and len(rates) < 60  # ... then diverged and stopped early
    assert losses[-1] > 4.0 * losses[lowest]
    assert sweep.diverged_at == pytest.approx(rates[-1])
    assert 1e-4 < sweep.suggestion < 100.0
    assert sweep.suggestion <= sweep.min_loss_lr < sweep.diverged_at
    assert sweep.min_loss_lr == pytest.approx(rates[lowest])
    assert sweep.min_loss_lr_over_10 == pytest.approx(sweep.min_loss_lr / 10)
    # the suggestion is where the smoothed loss falls fastest (per decade of the rate)
    slope = np.gradient(losses[: lowest + 1], np.log10(rates[: lowest + 1]))
    i = int(np.argmin(slope[len(losses) // 10 :])) + len(losses) // 10
    assert sweep.suggestion == pytest.approx(rates[i])
    assert sweep.phase == 1 and sweep.settings["batch_size"] == 64


def test_smoothed_loss_is_a_bias_corrected_ema(sweep: LRFinderResult) -> None:
    beta, avg = 0.98, 0.0
    for i, (raw, smooth) in enumerate(zip(sweep.raw_losses, sweep.losses)):
        avg = beta * avg + (1 - beta) * raw
        assert smooth == pytest.approx(avg / (1 - beta ** (i + 1)), rel=1e-9)
    assert sweep.losses[0] == pytest.approx(sweep.raw_losses[0])


def test_suggestion_on_a_known_curve() -> None:
    rates = list(np.logspace(-5, 1, 61))
    # falls fastest at 1e-2, lowest at 1e-1, then rises
    losses = [
        1.0 - np.tanh(2 * (np.log10(r) + 2)) + (max(0.0, np.log10(r) + 1) ** 2) for r in rates
    ]
    suggestion, lowest = lr_finder._suggest(rates, losses)
    assert suggestion == pytest.approx(1e-2, rel=0.05)
    assert lowest == pytest.approx(rates[int(np.argmin(losses))])


def test_suggested_rate_trains_better_than_the_extremes(sweep: LRFinderResult) -> None:
    def final_loss(rate: float) -> float:
        tuner = _tuner(learning_rate=rate, epochs=5)
        return float(tuner.fit().history["loss"][-1])

    good = final_loss(sweep.suggestion)
    assert good < final_loss(1e-4)
    assert good < final_loss(sweep.diverged_at * 2)


def test_leaves_no_trace_with_a_seed(tmp_path: object) -> None:
    tuner = _tuner()
    config = json.dumps(tuner.trainer.get_config(), sort_keys=True)
    first = tuner.fit()
    tuner.find_learning_rate(min_lr=1e-4, max_lr=10.0, steps=20)
    second = tuner.fit()
    assert json.dumps(tuner.trainer.get_config(), sort_keys=True) == config
    assert first.history == second.history
    for a, b in zip(first.model.get_weights(), second.model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_leaves_no_trace_on_the_global_random_state_without_a_seed() -> None:
    tuner = _tuner(seed=None, shuffle=True, batch_size=16)

    def run(with_finder: bool) -> tuple[object, list[np.ndarray], float, float]:
        keras.utils.set_random_seed(7)
        if with_finder:
            tuner.find_learning_rate(min_lr=1e-4, max_lr=1.0, steps=10)
        result = tuner.fit()
        return result.history, result.model.get_weights(), random.random(), np.random.rand()

    history_a, weights_a, py_a, np_a = run(False)
    history_b, weights_b, py_b, np_b = run(True)
    assert history_a == history_b
    for a, b in zip(weights_a, weights_b):
        np.testing.assert_array_equal(a, b)
    assert (py_a, np_a) == (py_b, np_b)


def test_recipe_unchanged_and_no_files_left(tmp_path: object, monkeypatch: object) -> None:
    path = os.path.join(str(tmp_path), "encoder.keras")
    _backbone_net().save(path)
    monkeypatch.chdir(tmp_path)  # type: ignore[attr-defined]
    tuner = _tuner(ftk.Backbone.from_file(path))
    before = json.dumps(tuner.get_config(), sort_keys=True)
    files = sorted(os.listdir(str(tmp_path)))
    finder = tuner.find_learning_rate(min_lr=1e-4, max_lr=10.0, steps=10)
    assert json.dumps(tuner.get_config(), sort_keys=True) == before
    assert sorted(os.listdir(str(tmp_path))) == files
    assert len(finder.learning_rates) == 10


def test_phase_two_sweeps_the_unfrozen_backbone() -> None:
    net = _backbone_net()
    weights = [w.copy() for w in net.get_weights()]
    tuner = _tuner(ftk.Backbone.from_model(net), fine_tune_epochs=1)
    one = tuner.find_learning_rate(min_lr=1e-3, max_lr=1.0, steps=10, smoothing=0.0)
    two = tuner.find_learning_rate(min_lr=1e-3, max_lr=1.0, steps=10, smoothing=0.0, phase=2)
    assert (one.phase, two.phase) == (1, 2)
    assert one.raw_losses[0] == pytest.approx(two.raw_losses[0])  # same fresh model ...
    assert one.raw_losses[-1] != pytest.approx(two.raw_losses[-1])  # ... backbone trains too
    assert two.losses == two.raw_losses  # smoothing=0: no smoothing
    for a, b in zip(weights, net.get_weights()):  # the user's network is untouched
        np.testing.assert_array_equal(a, b)
    # a Trainer with no frozen phase sweeps phase 2 by default
    only_two = _tuner(epochs=0, fine_tune_epochs=1)
    assert only_two.find_learning_rate(min_lr=1e-3, max_lr=1.0, steps=5).phase == 2


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"min_lr": 0.0}, TrainerError),
        ({"min_lr": "1e-3"}, ArgumentTypeError),
        ({"max_lr": float("inf")}, TrainerError),
        ({"min_lr": 1.0, "max_lr": 0.1}, TrainerError),
        ({"steps": 2}, TrainerError),
        ({"steps": 10.5}, TrainerError),
        ({"smoothing": 1.0}, TrainerError),
        ({"diverge": 1.0}, TrainerError),
        ({"phase": 3}, TrainerError),
        ({"phase": True}, TrainerError),
    ],
)
def test_bad_arguments_raise_before_building(
    kwargs: dict[str, object], error: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_build(*args: object, **kw: object) -> None:
        raise AssertionError("built a model")

    monkeypatch.setattr(ftk.FineTuner, "build_model", no_build)
    with pytest.raises(error) as info:
        _tuner().find_learning_rate(**kwargs)  # type: ignore[arg-type]
    assert "Received:" in str(info.value)


def test_recipe_errors_raise_before_building(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ftk.FineTuner, "build_model", lambda *a, **k: pytest.fail("built"))
    with pytest.raises(ConfigError):
        ftk.FineTuner().with_backbone(ftk.Backbone.from_model(_backbone_net())).find_learning_rate()
    with pytest.raises(TrainerError):  # unfreeze deeper than the backbone, as fit checks
        _tuner(fine_tune_epochs=1, unfreeze=5).find_learning_rate(phase=2)


def test_result_dict_repr_and_plot(sweep: LRFinderResult, tmp_path: object) -> None:
    data = json.loads(json.dumps(sweep.to_dict()))
    assert data["suggestion"] == sweep.suggestion
    assert data["min_loss_lr_over_10"] == pytest.approx(sweep.min_loss_lr / 10)
    assert len(data["learning_rates"]) == len(data["losses"]) == len(data["raw_losses"])
    text = repr(sweep)
    assert text.startswith("LRFinderResult(suggestion=") and "diverged at" in text
    path = os.path.join(str(tmp_path), "lr.png")
    fig = sweep.plot(path=path)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and os.path.getsize(path) > 0
    lines = {line.get_label().split(":")[0] for line in ax.get_lines()}
    assert {"smoothed loss", "steepest descent", "minimum / 10"} <= lines
    assert sweep.plot(ax=ax) is fig  # draws onto a given Axes


def test_plot_without_matplotlib_says_how_to_install(
    sweep: LRFinderResult, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ftk.FineTuneError, match="pip install") as info:
        sweep.plot()
    assert isinstance(info.value, ImportError)


def test_lr_sweep_on_a_plain_keras_model() -> None:
    x, y = _regression_data()
    net = keras.Sequential([keras.Input((8,)), keras.layers.Dense(1)])
    with pytest.raises(TrainerError, match="compiled"):
        lr_sweep(net, [(x, y)])
    net.compile(optimizer="sgd", loss="mse")
    result = lr_sweep(net, [(x, y)], min_lr=1e-3, max_lr=10.0, steps=20, smoothing=0.0)
    assert result.raw_losses[0] > result.raw_losses[int(np.argmin(result.raw_losses))]
    assert float(net.optimizer.learning_rate) == pytest.approx(result.learning_rates[-1])


def test_multi_worker_strategy_is_refused_before_anything_runs() -> None:
    tuner = _tuner(strategy="multi_worker")
    with pytest.raises(TrainerError, match="several workers"):
        tuner.find_learning_rate()
