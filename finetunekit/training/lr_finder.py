"""The learning-rate finder: an exponential sweep of the learning rate over a few batches.

``FineTuner.find_learning_rate()`` builds a fresh copy of the recipe's model,
trains it for up to ``steps`` batches while the learning rate grows
exponentially from ``min_lr`` to ``max_lr``, records the loss of every batch
and its smoothed (bias-corrected exponential moving average) value, and stops
early once the smoothed loss exceeds ``diverge`` times the best so far. The
copy is thrown away: the recipe, the random state and later ``fit()`` runs are
exactly as if the finder had never run.

Two readings of the curve are offered (the loss keeps falling fastest at a
rate well below the one where it is lowest; the lowest point is already close
to divergence):

* ``suggestion``: the rate of the steepest descent of the smoothed loss (the
  most negative slope of loss against ``log(lr)``), before the minimum;
* ``min_loss_lr_over_10``: a tenth of the rate with the lowest smoothed loss.

Examples:
    >>> finder = tuner.find_learning_rate()                 # doctest: +SKIP
    >>> finder.suggestion                                   # doctest: +SKIP
    0.0031
    >>> finder.plot()                                       # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import keras
import numpy as np

from finetunekit import _compat
from finetunekit.errors import ArgumentTypeError, TrainerError, format_error

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["LRFinderResult", "check_finder_args", "find_learning_rate", "lr_sweep"]


@dataclass
class LRFinderResult:
    """The curve of an exponential learning-rate sweep and the rates it suggests.

    Attributes:
        learning_rates: the rate of each batch trained, increasing.
        losses: the smoothed loss after each batch (bias-corrected EMA).
        raw_losses: the loss of each batch as training reported it.
        suggestion: the rate of the steepest descent of the smoothed loss
            (most negative slope against ``log(lr)``) up to its minimum; the
            rate to start from. ``None`` only when fewer than 2 batches ran.
        min_loss_lr: the rate with the lowest smoothed loss.
        diverged_at: the rate at which the sweep stopped because the loss
            diverged (``> diverge x`` the best, or not finite), or ``None``
            when it ran every step.
        phase: 1 (head only, frozen backbone) or 2 (backbone unfrozen as the
            Trainer's phase 2 would).
        settings: the sweep's arguments (``min_lr``, ``max_lr``, ``steps``,
            ``smoothing``, ``diverge``, ``batch_size``).

    Examples:
        >>> r = LRFinderResult([1e-3, 1e-2, 1e-1, 1.0], [1.0, 0.8, 0.3, 0.5],
        ...                    [1.0, 0.7, 0.2, 0.9], suggestion=0.01, min_loss_lr=0.1)
        >>> r.min_loss_lr_over_10
        0.01
        >>> r.to_dict()["suggestion"]
        0.01
    """

    learning_rates: list[float]
    losses: list[float]
    raw_losses: list[float]
    suggestion: float | None
    min_loss_lr: float | None
    diverged_at: float | None = None
    phase: int = 1
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def min_loss_lr_over_10(self) -> float | None:
        """The "minimum / 10" rule: a tenth of :attr:`min_loss_lr`."""
        return None if self.min_loss_lr is None else self.min_loss_lr / 10.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of the curve and the suggested rates."""
        return {
            "learning_rates": [float(v) for v in self.learning_rates],
            "losses": [float(v) for v in self.losses],
            "raw_losses": [float(v) for v in self.raw_losses],
            "suggestion": self.suggestion,
            "min_loss_lr": self.min_loss_lr,
            "min_loss_lr_over_10": self.min_loss_lr_over_10,
            "diverged_at": self.diverged_at,
            "phase": self.phase,
            "settings": dict(self.settings),
        }

    def plot(self, ax: Axes | None = None, *, path: str | os.PathLike[str] | None = None) -> Figure:
        """Draws the loss against the learning rate (log scale) with both suggestions marked.

        Needs matplotlib (``pip install 'finetunekit[plots]'``); no pyplot
        backend is selected, as in :mod:`finetunekit.plots`.

        Args:
            ax: a matplotlib ``Axes`` to draw on; ``None`` creates a new figure.
            path: also save the figure there as a PNG.

        Returns:
            The matplotlib ``Figure``.

        Raises:
            PlotDependencyError: matplotlib is not installed.

        Examples:
            >>> fig = finder.plot(path="lr_finder.png")  # doctest: +SKIP
        """
        from finetunekit import plots

        if ax is None:
            fig = plots.new_figure((6.0, 4.0))
            ax = fig.add_subplot()
        else:
            fig = ax.figure  # type: ignore[assignment]
        rates = np.asarray(self.learning_rates, dtype="float64")
        ax.plot(rates, self.raw_losses, color="#bbbbbb", linewidth=0.8, label="loss per batch")
        ax.plot(rates, self.losses, color="#1f77b4", linewidth=1.8, label="smoothed loss")
        marks = (
            (self.suggestion, "#d62728", "steepest descent"),
            (self.min_loss_lr_over_10, "#2ca02c", "minimum / 10"),
        )
        for rate, color, label in marks:
            if rate is not None:
                ax.axvline(
                    rate, color=color, linestyle="--", linewidth=1.0, label=f"{label}: {rate:.2g}"
                )
        ax.set_xscale("log")
        finite = [v for v in self.losses if math.isfinite(v)]
        if finite:  # keep the interesting part: divergence can go off the scale
            low, first = min(finite), finite[0]
            ax.set_ylim(
                low - 0.05 * abs(first - low) - 1e-6,
                max(first, low) + 0.5 * abs(first - low) + 1e-6,
            )
        ax.set_xlabel("learning rate (log scale)")
        ax.set_ylabel("training loss")
        ax.set_title(f"Learning-rate finder (phase {self.phase})")
        ax.legend(fontsize="small")
        return plots.finish_figure(fig, path)

    def __repr__(self) -> str:
        def fmt(v: float | None) -> str:
            return "None" if v is None else f"{v:.3g}"

        end = f"diverged at {fmt(self.diverged_at)}" if self.diverged_at else "no divergence"
        span = (
            f"{fmt(self.learning_rates[0])}..{fmt(self.learning_rates[-1])}"
            if self.learning_rates
            else "-"
        )
        return (
            f"LRFinderResult(suggestion={fmt(self.suggestion)}, "
            f"min_loss_lr={fmt(self.min_loss_lr)}, "
            f"min_loss_lr_over_10={fmt(self.min_loss_lr_over_10)}, "
            f"phase={self.phase}, {len(self.learning_rates)} steps over {span}, {end})"
        )


# ---------------------------------------------------------------------- arguments
def check_finder_args(
    min_lr: Any, max_lr: Any, steps: Any, smoothing: Any, diverge: Any, phase: Any = None
) -> None:
    """Raises ``TrainerError`` / ``ArgumentTypeError`` for bad finder arguments.

    Examples:
        >>> check_finder_args(1e-7, 10.0, 100, 0.98, 4.0, 1)
        >>> check_finder_args(1.0, 0.1, 100, 0.98, 4.0)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        finetunekit.errors.TrainerError: max_lr must be larger than min_lr...
    """
    for name, value in (("min_lr", min_lr), ("max_lr", max_lr), ("diverge", diverge)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ArgumentTypeError(
                format_error(
                    f"{name} must be a number",
                    expected="a positive float",
                    received={name: value},
                    fix=f"Pass {name}={_DEFAULTS[name]}",
                )
            )
        if not (math.isfinite(value) and value > 0):
            raise TrainerError(
                format_error(
                    f"{name} must be a finite number > 0",
                    expected="a positive float",
                    received={name: value},
                    fix=f"Pass {name}={_DEFAULTS[name]}",
                )
            )
    if not max_lr > min_lr:
        raise TrainerError(
            format_error(
                "max_lr must be larger than min_lr",
                expected="min_lr < max_lr, e.g. min_lr=1e-7, max_lr=10",
                received={"min_lr": min_lr, "max_lr": max_lr},
                fix="Pass min_lr=1e-7, max_lr=10.0",
            )
        )
    if not diverge > 1:
        raise TrainerError(
            format_error(
                "diverge must be > 1 (the sweep stops when the loss exceeds diverge x its best)",
                expected="a float > 1, e.g. 4.0",
                received={"diverge": diverge},
                fix="Pass diverge=4.0",
            )
        )
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 5:
        raise TrainerError(
            format_error(
                "steps must be an int >= 5",
                expected="the number of batches of the sweep, e.g. 100",
                received={"steps": steps},
                fix="Pass steps=100",
            )
        )
    if (
        isinstance(smoothing, bool)
        or not isinstance(smoothing, (int, float))
        or not 0 <= smoothing < 1
    ):
        raise TrainerError(
            format_error(
                "smoothing must be a number in [0, 1)",
                expected="the EMA factor of the loss, e.g. 0.98 (0: no smoothing)",
                received={"smoothing": smoothing},
                fix="Pass smoothing=0.98",
            )
        )
    if phase is not None and (isinstance(phase, bool) or phase not in (1, 2)):
        raise TrainerError(
            format_error(
                "phase must be 1, 2 or None",
                expected="1 (head only, frozen backbone), 2 (backbone unfrozen) or None "
                "(the Trainer's first phase)",
                received={"phase": phase},
                fix="Pass phase=1",
            )
        )


_DEFAULTS = {"min_lr": "1e-7", "max_lr": "10.0", "diverge": "4.0"}


# ---------------------------------------------------------------------- the sweep
def lr_sweep(
    model: keras.Model,
    dataset: Any,
    *,
    min_lr: float = 1e-7,
    max_lr: float = 10.0,
    steps: int = 100,
    smoothing: float = 0.98,
    diverge: float = 4.0,
) -> LRFinderResult:
    """Runs the exponential sweep on a compiled Keras ``model`` (which it trains).

    Batch ``i`` (of ``steps``) is trained at
    ``min_lr * (max_lr / min_lr) ** (i / (steps - 1))``, set on
    ``model.optimizer.learning_rate`` before the batch; the loss of each
    batch comes from ``train_on_batch`` (metrics reset every batch).

    Args:
        model: a compiled model; its weights and optimizer state change.
        dataset: a batched ``tf.data.Dataset`` (repeated as needed) or any
            iterable of ``(x, y)`` batches.
        min_lr: the first rate.
        max_lr: the last rate.
        steps: the number of batches at most.
        smoothing: EMA factor of the smoothed loss (0: none).
        diverge: stop once the smoothed loss exceeds ``diverge`` x its best.

    Returns:
        An :class:`LRFinderResult`.

    Examples:
        >>> import numpy as np, keras
        >>> keras.utils.set_random_seed(0)
        >>> x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
        >>> y = x @ np.array([[1.0], [-2.0], [0.5], [1.0]], "float32")
        >>> net = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        >>> net.compile(optimizer="sgd", loss="mse")
        >>> finder = lr_sweep(net, [(x, y)], min_lr=1e-4, max_lr=10.0, steps=60)
        >>> 1e-4 < finder.suggestion <= finder.min_loss_lr < finder.diverged_at
        True
    """
    check_finder_args(min_lr, max_lr, steps, smoothing, diverge)
    if getattr(model, "optimizer", None) is None:
        raise TrainerError(
            format_error(
                "lr_sweep needs a compiled model",
                expected="a model after model.compile(optimizer, loss)",
                received={"model": getattr(model, "name", model)},
                fix="Call model.compile(optimizer='adam', loss=...) first",
            )
        )
    rates = [float(min_lr * (max_lr / min_lr) ** (i / (steps - 1))) for i in range(steps)]
    batches = _batches(dataset)
    used: list[float] = []
    raw: list[float] = []
    smoothed: list[float] = []
    average, best, diverged_at = 0.0, math.inf, None
    for i, rate in enumerate(rates):
        batch = next(batches, None)
        if batch is None:
            break
        model.optimizer.learning_rate = rate
        args = batch if isinstance(batch, (tuple, list)) else (batch,)
        logs = model.train_on_batch(*args, return_dict=True)
        loss = float(logs["loss"])
        if not math.isfinite(loss):
            diverged_at = rate
            break
        average = smoothing * average + (1.0 - smoothing) * loss
        value = average / (1.0 - smoothing ** (i + 1))
        used.append(rate)
        raw.append(loss)
        smoothed.append(value)
        best = min(best, value)
        if value > diverge * best:
            diverged_at = rate
            break
    suggestion, min_loss_lr = _suggest(used, smoothed)
    settings = {
        "min_lr": float(min_lr),
        "max_lr": float(max_lr),
        "steps": int(steps),
        "smoothing": float(smoothing),
        "diverge": float(diverge),
    }
    return LRFinderResult(
        learning_rates=used,
        losses=smoothed,
        raw_losses=raw,
        suggestion=suggestion,
        min_loss_lr=min_loss_lr,
        diverged_at=diverged_at,
        settings=settings,
    )


def _batches(dataset: Any) -> Iterator[Any]:
    """Endless batches: a ``tf.data`` dataset repeated, or any iterable cycled."""
    repeat = getattr(dataset, "repeat", None)
    if callable(repeat):
        yield from repeat()
        return
    items = list(dataset)
    while items:
        yield from items


def _suggest(rates: list[float], losses: list[float]) -> tuple[float | None, float | None]:
    """``(steepest-descent rate up to the minimum, rate of the minimum)`` of the curve."""
    if not losses:
        return None, None
    lowest = int(np.argmin(losses))
    min_loss_lr = float(rates[lowest])
    if len(losses) < 2:
        return None, min_loss_lr
    end = max(lowest, 1) + 1  # the descent before the minimum (2 points at least)
    # The first smoothed values average only a few batches: skip a tenth of the curve.
    start = min(len(losses) // 10, end - 2)
    slope = np.gradient(np.asarray(losses[start:end]), np.log10(np.asarray(rates[start:end])))
    return float(rates[start + int(np.argmin(slope))]), min_loss_lr


# ---------------------------------------------------------------------- random state
@contextmanager
def preserved_random_state() -> Iterator[None]:
    """Restores the Python, NumPy, Keras and TensorFlow global random state on exit.

    Whatever runs inside (seeding, weight initialisation, shuffles) leaves the
    random numbers drawn afterwards as they would have been without it.
    """
    py_state = random.getstate()
    np_state = np.random.get_state()
    saved_keras = _compat.keras_random_state()
    saved_tf = _compat.tf_random_state()
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
        _compat.restore_keras_random_state(saved_keras)
        _compat.restore_tf_random_state(saved_tf)


# ---------------------------------------------------------------------- the pipeline
def find_learning_rate(
    tuner: Any,
    *,
    min_lr: float = 1e-7,
    max_lr: float = 10.0,
    steps: int = 100,
    phase: int | None = None,
    smoothing: float = 0.98,
    diverge: float = 4.0,
) -> LRFinderResult:
    """The work of ``FineTuner.find_learning_rate`` (see there); ``tuner`` is not changed."""
    from finetunekit.training import engine
    from finetunekit.training.compute import precision_scope
    from finetunekit.training.freezing import freeze, unfreeze
    from finetunekit.training.losses import smooth_loss
    from finetunekit.training.optimizers import make_optimizer

    check_finder_args(min_lr, max_lr, steps, smoothing, diverge, phase)
    from finetunekit.training.distribute import strategy_name

    trainer = tuner.trainer
    if strategy_name(trainer.strategy) == "multi_worker":
        raise TrainerError(
            format_error(
                "find_learning_rate does not run under several workers (it trains batch by "
                "batch with Keras' train_on_batch, which MultiWorkerMirroredStrategy breaks)",
                expected="a Trainer with strategy 'default', 'mirrored' or 'tpu'",
                received={"strategy": strategy_name(trainer.strategy)},
                fix="Run the finder on one machine: tuner.with_trainer(Trainer.from_config("
                "{**cfg, 'strategy': 'default'})).find_learning_rate()",
            )
        )
    trainer.resolved_strategy()  # as fit: a strategy is created before TF runs anything
    prepared = tuner.prepare()  # every recipe check fit() makes, before building
    trainer = prepared.trainer
    if phase is None:
        phase = 1 if trainer.epochs else 2
    with preserved_random_state(), trainer.scope():
        if trainer.seed is not None:
            keras.utils.set_random_seed(trainer.seed)
        with precision_scope(trainer.precision):
            built = tuner.build_model(prepared.train, prepared.units)
        model, backbone_model = built.model, built.backbone_model
        snapshot = backbone_model.get_weights() if phase == 2 else None
        try:
            if phase == 1:
                freeze(backbone_model)
            else:
                engine.check_backbone(trainer, backbone_model, built.lora_targets)
                unfreeze(backbone_model, trainer.unfreeze, trainer.train_bn)
            engine.compile_phase(  # fit's compile: the loss with the Trainer's smoothing
                trainer,
                model,
                make_optimizer(trainer.optimizer, float(min_lr), weight_decay=trainer.weight_decay),
                smooth_loss(built.loss, trainer.label_smoothing, built.task),
                metrics=(),
                step="frozen" if phase == 1 else "full",
            )
            # An explicit shuffle seed: no TensorFlow op-seed counter is consumed.
            seed = trainer.seed if trainer.seed is not None else 0
            dataset = engine.TrainingData(adapter=prepared.train).batches(
                trainer.batch_size, shuffle=trainer.shuffle, seed=seed
            )
            result = lr_sweep(
                model,
                dataset,
                min_lr=min_lr,
                max_lr=max_lr,
                steps=steps,
                smoothing=smoothing,
                diverge=diverge,
            )
        finally:
            if snapshot is not None:  # a from_model backbone may share the user's layers
                backbone_model.set_weights(snapshot)
    result.phase = int(phase)
    result.settings["batch_size"] = trainer.batch_size
    return result
