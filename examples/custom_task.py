"""Your own kind of target: counts with a Poisson loss, as a ``finetunekit.Task``.

A ``Task`` is the one place that knows a kind of target. This one says what
counts are (non-negative integers), which output fits them (an exponential
activation: the expected count is positive), which loss trains them
(Poisson), which metric Keras tracks, and what the evaluation report adds
(the mean Poisson deviance). Everything else -- data, backbone, head,
trainer, saving and loading -- is finetunekit's as usual.

    python examples/custom_task.py        # fits, evaluates, saves and reloads

The task registers its name when this module is imported, so a saved model
loads with ``ftk.load`` in any process that imports this module first.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import keras
import numpy as np

import finetunekit as ftk
from finetunekit.errors import format_error


class PoissonCounts(ftk.Task):
    """Counts (0, 1, 2, ...): the model predicts the expected count."""

    name = "poisson_counts"
    activation = "exponential"
    headline_metric = "poisson_deviance"

    def check_targets(self, y: np.ndarray, name: str = "y") -> None:
        bad = np.flatnonzero((y < 0) | (y != np.round(y)))
        if len(bad):
            raise ftk.LabelError(
                format_error(
                    f"Counts must be whole numbers >= 0; rows {bad[:5].tolist()} are not",
                    expected="non-negative integers",
                    received={name: y},
                    fix="Pass the raw counts, or use task='regression' for other values",
                )
            )

    def loss(self, *, label_smoothing: float = 0.0, target_std: Any = None) -> Any:
        return keras.losses.Poisson()

    def metrics(self, num_classes: int | None) -> list[Any]:
        return [keras.metrics.MeanAbsoluteError(name="mae")]

    def evaluate(
        self,
        y_true: np.ndarray,
        y_pred: np.ndarray,
        *,
        class_names: list[str] | None,
        evaluator: Any,
        thresholds: Any = None,
    ) -> ftk.EvaluationReport:
        report = super().evaluate(  # mse, mae, rmse, r2 of the expected counts
            y_true, y_pred, class_names=class_names, evaluator=evaluator, thresholds=thresholds
        )
        report.metrics["poisson_deviance"] = poisson_deviance(y_true, y_pred)
        return report


def poisson_deviance(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean Poisson deviance ``2 * mean(y log(y / mu) - (y - mu))`` (0 log 0 = 0)."""
    y = np.asarray(y_true, np.float64).reshape(-1)
    mu = np.clip(np.asarray(y_pred, np.float64).reshape(-1), 1e-12, None)
    ratio = np.where(y > 0, y / mu, 1.0)
    return float(2.0 * np.mean(y * np.log(ratio) - (y - mu)))


RATE_WEIGHTS = np.linspace(-0.5, 0.5, 8)


def true_rate(x: np.ndarray) -> np.ndarray:
    """The expected count the data is drawn with: ``exp(1 + x @ w)``."""
    return np.exp(1.0 + np.asarray(x, np.float64) @ RATE_WEIGHTS)


def counts_data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Inputs (n, 8) and counts drawn from Poisson(:func:`true_rate`)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8)).astype("float32")
    return x, rng.poisson(true_rate(x)).astype("int64")


def encoder() -> keras.Model:
    """A small (linear) encoder standing in for a pretrained network."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8,))
    return keras.Model(inputs, keras.layers.Dense(16, name="enc_dense")(inputs), name="encoder")


def main(epochs: int = 30, verbose: int = 0) -> dict[str, float]:
    """Fits the counts task, evaluates it and checks a saved copy predicts the same."""
    x, y = counts_data(600)
    data = ftk.DatasetAdapter.from_arrays(x, y, task=PoissonCounts())
    train, test = data.split(0.25, seed=0)
    result = (
        ftk.FineTuner()
        .with_data(train, validation=0.2)
        .with_backbone(ftk.Backbone.from_model(encoder()))
        .with_head(ftk.HeadReplacer(dropout=0.0))
        .with_trainer(
            ftk.Trainer(epochs=epochs, learning_rate=1e-2, batch_size=32, seed=0, verbose=verbose)
        )
        .fit()
    )
    report = result.evaluate(test)
    print(report)
    # the mean count as the only prediction: what the model has to beat; the true
    # rate the counts were drawn with: the best any model can do
    baseline = poisson_deviance(test.targets(), np.full(len(test), train.targets().mean()))
    x_test = np.concatenate([batch for batch, _ in test.as_dataset(256).as_numpy_iterator()])
    best = poisson_deviance(test.targets(), true_rate(x_test))
    print(
        f"mean Poisson deviance {report.metrics['poisson_deviance']:.3f} "
        f"(predicting the mean count: {baseline:.3f}; the true rate: {best:.3f})"
    )
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "counts.keras")
        result.save(path)
        again = ftk.load(path)
        same = np.allclose(again.predict(x[:8]), result.predict(x[:8]), atol=1e-6)
    print(f"reloaded: task={again.task!r}, same predictions: {same}")
    return {
        "poisson_deviance": report.metrics["poisson_deviance"],
        "baseline_deviance": baseline,
        "true_rate_deviance": best,
        "mae": report.metrics["mae"],
        "reloaded_same": float(same),
    }


if __name__ == "__main__":
    main(verbose=2)
