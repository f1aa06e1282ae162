"""Step 4: ``Trainer``, the two-phase fine-tuning schedule."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import keras

from finetunekit.errors import ArgumentTypeError, ConfigError, TrainerError, format_error
from finetunekit.training.freezing import freeze, unfreeze
from finetunekit.training.optimizers import (
    check_optimizer,
    make_optimizer,
    optimizer_config,
    optimizer_from_config,
)

__all__ = ["Trainer", "TrainingRun"]


@dataclass
class TrainingRun:
    """What :meth:`Trainer.train` returns.

    Attributes:
        history: Keras-style ``{metric: [value per epoch]}`` over both phases,
            with ``"phase"`` (1 or 2) and ``"epoch"`` lists marking each epoch.
        timings: wall seconds per phase (``"phase1"``, ``"phase2"``).
        trainable_params: trainable parameter count per phase.
    """

    history: dict[str, list[float]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    trainable_params: dict[str, int] = field(default_factory=dict)


class Trainer:
    """How to fine-tune: optimizer, rates, epochs and the two phases.

    Phase 1 trains the new head on a frozen backbone for ``epochs``. Phase 2
    (when ``fine_tune_epochs > 0``) unfreezes the whole backbone or its top
    ``unfreeze`` weight-holding layers and trains ``fine_tune_epochs`` more at
    ``fine_tune_learning_rate`` (default a tenth of ``learning_rate``).
    BatchNorm layers stay frozen and in inference mode in both phases unless
    ``train_bn=True``; the model is recompiled whenever ``trainable`` changes.

    Args:
        optimizer: a name (``"sgd"`` is plain gradient descent, ``"adam"``,
            ``"adamw"``, ``"rmsprop"``, ...) or a ``keras.optimizers.Optimizer``
            (copied per phase through its config).
        learning_rate: phase-1 learning rate.
        epochs: phase-1 epochs (head only). 0 skips phase 1.
        batch_size: examples per batch.
        fine_tune_epochs: phase-2 epochs; 0 (default) skips phase 2.
        fine_tune_learning_rate: phase-2 rate; default ``learning_rate / 10``.
        unfreeze: ``"all"`` or how many top weight-holding layers to unfreeze.
        train_bn: also train BatchNorm layers in phase 2 (default ``False``).
        callbacks: Keras callbacks, used in both phases.
        early_stopping: patience in epochs for early stopping that restores
            the best weights (per phase), or ``None``.
        monitor: quantity early stopping watches; ``"val_loss"`` falls back
            to ``"loss"`` without validation data.
        verbose: Keras ``fit`` verbosity (``"auto"``, 0, 1 or 2).
        seed: seed for Python, NumPy and TensorFlow (``keras.utils.set_random_seed``).
        jit_compile: XLA compilation, passed to ``model.compile``.
        shuffle: shuffle the training data each epoch.

    Example:
        >>> import finetunekit as ftk
        >>> trainer = ftk.Trainer(optimizer="adam", learning_rate=1e-3, epochs=2,
        ...                       fine_tune_epochs=1)
        >>> trainer.resolved_fine_tune_learning_rate
        0.0001
    """

    def __init__(
        self,
        optimizer: str | keras.optimizers.Optimizer = "adam",
        learning_rate: float = 1e-3,
        epochs: int = 10,
        batch_size: int = 32,
        *,
        fine_tune_epochs: int = 0,
        fine_tune_learning_rate: float | None = None,
        unfreeze: int | str = "all",
        train_bn: bool = False,
        callbacks: Sequence[keras.callbacks.Callback] | None = None,
        early_stopping: int | None = None,
        monitor: str = "val_loss",
        verbose: int | str = "auto",
        seed: int | None = None,
        jit_compile: bool | str = False,
        shuffle: bool = True,
    ) -> None:
        self.optimizer = check_optimizer(optimizer)
        self.learning_rate = _positive_float("learning_rate", learning_rate)
        self.epochs = _count("epochs", epochs, minimum=0)
        self.batch_size = _count("batch_size", batch_size, minimum=1)
        self.fine_tune_epochs = _count("fine_tune_epochs", fine_tune_epochs, minimum=0)
        self.fine_tune_learning_rate = (
            None
            if fine_tune_learning_rate is None
            else _positive_float("fine_tune_learning_rate", fine_tune_learning_rate)
        )
        if unfreeze != "all" and (
            isinstance(unfreeze, bool) or not isinstance(unfreeze, int) or unfreeze < 1
        ):
            raise TrainerError(
                format_error(
                    "unfreeze must be 'all' or a positive int",
                    expected="'all' or the number of top layers to unfreeze",
                    received={"unfreeze": unfreeze},
                    fix="Pass unfreeze='all' or e.g. unfreeze=4",
                )
            )
        if self.epochs + self.fine_tune_epochs == 0:
            raise TrainerError(
                format_error(
                    "Nothing to train: epochs and fine_tune_epochs are both 0",
                    expected="epochs >= 1 or fine_tune_epochs >= 1",
                    received={"epochs": epochs, "fine_tune_epochs": fine_tune_epochs},
                    fix="Pass epochs=5",
                )
            )
        callbacks = list(callbacks or [])
        for cb in callbacks:
            if not isinstance(cb, keras.callbacks.Callback):
                raise ArgumentTypeError(
                    format_error(
                        "callbacks must be Keras callbacks",
                        expected="a list of keras.callbacks.Callback",
                        received={"callbacks": cb},
                        fix="Wrap the function in keras.callbacks.LambdaCallback",
                    )
                )
        if early_stopping is not None:
            _count("early_stopping", early_stopping, minimum=1)
        if verbose not in ("auto", 0, 1, 2):
            raise TrainerError(
                format_error(
                    "Unknown verbose",
                    expected="'auto', 0, 1 or 2",
                    received={"verbose": verbose},
                    fix="Pass verbose=0 for silence",
                )
            )
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ArgumentTypeError(
                format_error(
                    "seed must be an int or None",
                    expected="an int",
                    received={"seed": seed},
                    fix="Pass seed=0",
                )
            )
        self.unfreeze = unfreeze
        self.train_bn = bool(train_bn)
        self.callbacks = callbacks
        self.early_stopping = early_stopping
        self.monitor = monitor
        self.verbose = verbose
        self.seed = seed
        self.jit_compile = jit_compile
        self.shuffle = bool(shuffle)

    @property
    def resolved_fine_tune_learning_rate(self) -> float:
        """The phase-2 learning rate actually used."""
        if self.fine_tune_learning_rate is not None:
            return self.fine_tune_learning_rate
        return self.learning_rate / 10.0

    # ------------------------------------------------------------------ training
    def check_backbone(self, backbone_model: keras.Model) -> None:
        """Raises before training when ``unfreeze`` exceeds the backbone's layers."""
        if self.fine_tune_epochs and self.unfreeze != "all":
            from finetunekit.training.freezing import weight_layers

            available = len(weight_layers(backbone_model, self.train_bn))
            if int(self.unfreeze) > available:
                unfreeze(backbone_model, self.unfreeze, self.train_bn)  # raises TrainerError

    def train(
        self,
        model: keras.Model,
        backbone_model: keras.Model,
        train_ds: Any,
        validation_ds: Any = None,
        *,
        loss: Any,
        metrics: Sequence[Any] = (),
    ) -> TrainingRun:
        """Runs phase 1 (frozen backbone) then phase 2 (unfrozen) on ``model``.

        Args:
            model: the full model (backbone nested in it as ``backbone_model``).
            backbone_model: the nested backbone.
            train_ds: batched ``tf.data`` of ``(x, y)``.
            validation_ds: batched ``tf.data`` or ``None``.
            loss: the Keras loss.
            metrics: metric factories are not shared: pass a callable returning
                fresh metric objects, or a list of metric names.

        Returns:
            A :class:`TrainingRun`.
        """
        self.check_backbone(backbone_model)
        run = TrainingRun()
        history: dict[str, list[float]] = {"phase": [], "epoch": []}
        phases = []
        if self.epochs:
            phases.append((1, self.learning_rate, 0, self.epochs))
        if self.fine_tune_epochs:
            phases.append(
                (
                    2,
                    self.resolved_fine_tune_learning_rate,
                    self.epochs,
                    self.epochs + self.fine_tune_epochs,
                )
            )
        for phase, rate, first, last in phases:
            if phase == 1:
                freeze(backbone_model)
            else:
                unfreeze(backbone_model, self.unfreeze, self.train_bn)
            model.compile(
                optimizer=make_optimizer(self.optimizer, rate),
                loss=loss,
                metrics=_fresh(metrics),
                jit_compile=self.jit_compile,
            )
            run.trainable_params[f"phase{phase}"] = _count_params(model.trainable_weights)
            start = time.perf_counter()
            fit = model.fit(
                train_ds,
                validation_data=validation_ds,
                initial_epoch=first,
                epochs=last,
                callbacks=self._callbacks(validation_ds is not None),
                verbose=self.verbose,
            )
            run.timings[f"phase{phase}"] = time.perf_counter() - start
            epochs_run = len(fit.epoch)
            for key, values in fit.history.items():
                column = history.setdefault(key, [float("nan")] * len(history["epoch"]))
                column.extend(float(v) for v in values)
            history["phase"].extend([phase] * epochs_run)
            history["epoch"].extend(int(e) for e in fit.epoch)
            for column in history.values():  # pad metrics a phase did not report
                column.extend([float("nan")] * (len(history["epoch"]) - len(column)))
        run.history = history
        return run

    def _callbacks(self, has_validation: bool) -> list[keras.callbacks.Callback]:
        callbacks = list(self.callbacks)
        if self.early_stopping:
            monitor = self.monitor
            if monitor.startswith("val_") and not has_validation:
                monitor = monitor[4:]
            callbacks.append(
                keras.callbacks.EarlyStopping(
                    monitor=monitor, patience=self.early_stopping, restore_best_weights=True
                )
            )
        return callbacks

    # ------------------------------------------------------------------ config
    def get_config(self) -> dict[str, Any]:
        """Returns the JSON-serialisable settings (callbacks are not included)."""
        return {
            "optimizer": optimizer_config(self.optimizer),
            "learning_rate": self.learning_rate,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "fine_tune_epochs": self.fine_tune_epochs,
            "fine_tune_learning_rate": self.fine_tune_learning_rate,
            "unfreeze": self.unfreeze,
            "train_bn": self.train_bn,
            "early_stopping": self.early_stopping,
            "monitor": self.monitor,
            "verbose": self.verbose,
            "seed": self.seed,
            "jit_compile": self.jit_compile,
            "shuffle": self.shuffle,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Trainer:
        """Rebuilds a trainer from :meth:`get_config`; unknown keys raise ``ConfigError``."""
        valid = set(cls().get_config())
        unknown = set(config) - valid
        if unknown:
            raise ConfigError(
                format_error(
                    f"Unknown keys in the Trainer config: {sorted(unknown)}",
                    expected=f"only {sorted(valid)}",
                    received={"config": config},
                    fix="Remove the unknown keys",
                )
            )
        config = dict(config)
        if "optimizer" in config:
            config["optimizer"] = optimizer_from_config(config["optimizer"])
        positional = [
            config.pop(k)
            for k in ("optimizer", "learning_rate", "epochs", "batch_size")
            if k in config
        ]
        return cls(*positional, **config)

    def __repr__(self) -> str:
        return (
            f"Trainer(optimizer={self.optimizer!r}, learning_rate={self.learning_rate!r}, "
            f"epochs={self.epochs!r}, batch_size={self.batch_size!r}, "
            f"fine_tune_epochs={self.fine_tune_epochs!r})"
        )


def _fresh(metrics: Any) -> list[Any]:
    return list(metrics()) if callable(metrics) else list(metrics)


def _count_params(weights: Sequence[Any]) -> int:
    total = 0
    for w in weights:
        size = 1
        for dim in w.shape:
            size *= int(dim)
        total += size
    return total


def _count(name: str, value: Any, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise TrainerError(
            format_error(
                f"{name} must be an int >= {minimum}",
                expected=f"an int >= {minimum}",
                received={name: value},
                fix=f"Pass {name}={max(minimum, 1) if name != 'batch_size' else 32}",
            )
        )
    return int(value)


def _positive_float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise TrainerError(
            format_error(
                f"{name} must be a positive number",
                expected="a float > 0, e.g. 1e-3",
                received={name: value},
                fix=f"Pass {name}=1e-3",
            )
        )
    if value != value or value == float("inf"):
        raise TrainerError(
            format_error(
                f"{name} must be finite",
                expected="a finite float > 0",
                received={name: value},
                fix=f"Pass {name}=1e-3",
            )
        )
    return float(value)
