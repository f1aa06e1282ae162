"""How the Trainer optimises: layer groups, gradual unfreezing, discriminative rates,
schedules, label smoothing, class weights, gradient accumulation and weight decay.

The checks of these ``Trainer`` settings live here (``check_*``, and
:func:`check_together` for the rules across settings); a :class:`MethodsPlan`
made by the engine at the start of training turns them into the loss, the
optimizer of each phase and the frozen set of each epoch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import keras

from finetunekit.errors import TrainerError, format_error
from finetunekit.training.discriminative import DiscriminativeOptimizer, group_rates
from finetunekit.training.freezing import layer_groups, unfreeze, unfreeze_groups
from finetunekit.training.losses import class_weights, smooth_loss
from finetunekit.training.optimizers import make_optimizer
from finetunekit.training.schedules import make_schedule

__all__ = [
    "MethodsPlan",
    "check_data",
    "check_gradual_unfreeze",
    "check_lr_multipliers",
    "check_rate",
    "check_together",
    "rate_config",
    "unfrozen_counts",
]

Rate = float | tuple[float, float]


def _bad(message: str, arg: str, value: Any, expected: str, fix: str) -> TrainerError:
    return TrainerError(format_error(message, expected=expected, received={arg: value}, fix=fix))


def _number(value: Any) -> bool:
    return (
        not isinstance(value, bool)
        and isinstance(value, (int, float))
        and math.isfinite(float(value))
        and value > 0
    )


def check_rate(name: str, value: Any) -> Rate:
    """A positive learning rate, or a ``(low, high)`` range of them (``low <= high``).

    Examples:
        >>> check_rate("learning_rate", [1e-5, 1e-3])
        (1e-05, 0.001)
    """
    if isinstance(value, (tuple, list)):
        if len(value) == 2 and all(_number(v) for v in value) and value[0] <= value[1]:
            return (float(value[0]), float(value[1]))
        raise _bad(
            f"{name} as a range must be (low, high) with 0 < low <= high",
            name,
            value,
            "a float such as 1e-3, or a pair such as (1e-5, 1e-3)",
            f"Pass {name}=(1e-5, 1e-3)",
        )
    if not _number(value):
        raise _bad(
            f"{name} must be a positive number or a (low, high) range",
            name,
            value,
            "a finite float > 0, e.g. 1e-3, or a pair such as (1e-5, 1e-3)",
            f"Pass {name}=1e-3",
        )
    return float(value)


def rate_config(rate: Rate | None) -> float | list[float] | None:
    """The JSON form of a rate: ranges become lists."""
    return list(rate) if isinstance(rate, tuple) else rate


def check_gradual_unfreeze(value: Any) -> None | int | str | list[int]:
    """Validates ``Trainer(gradual_unfreeze=...)`` alone (its length is checked with the groups).

    Examples:
        >>> check_gradual_unfreeze((0, 1, 1))
        [0, 1, 1]
    """
    if value is None or (isinstance(value, str) and value == "spread"):
        return value  # type: ignore[no-any-return]
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise _bad(
                "gradual_unfreeze as an int is the groups unfrozen per epoch: >= 1",
                "gradual_unfreeze",
                value,
                "an int >= 1, or a list of phase-2 epochs (one per group, top first)",
                "Pass gradual_unfreeze=1",
            )
        return int(value)
    if (
        isinstance(value, (list, tuple))
        and value
        and all(isinstance(e, int) and not isinstance(e, bool) for e in value)
        and value[0] == 0
        and all(a <= b for a, b in zip(value, value[1:], strict=False))
    ):
        return [int(e) for e in value]
    raise _bad(
        "gradual_unfreeze must be None, 'spread', an int >= 1 or a list of phase-2 epochs",
        "gradual_unfreeze",
        value,
        "a non-decreasing list starting at 0, at most layer_groups long "
        "(the epoch each group, top first, is unfrozen)",
        "Pass gradual_unfreeze=[0, 1, 2, 3] or gradual_unfreeze=1",
    )


def check_lr_multipliers(value: Any) -> list[float] | None:
    """Validates ``Trainer(lr_multipliers=...)`` alone: ``None`` or positive numbers.

    Examples:
        >>> check_lr_multipliers([1, 0.5])
        [1.0, 0.5]
    """
    if value is None:
        return None
    if isinstance(value, (list, tuple)) and value and all(_number(m) for m in value):
        return [float(m) for m in value]
    raise _bad(
        "lr_multipliers must be one positive number per layer group, top first",
        "lr_multipliers",
        value,
        "a list of floats, one per layer group",
        "Pass e.g. lr_multipliers=[1.0, 0.3, 0.1, 0.03] with layer_groups=4",
    )


def check_together(trainer: Any) -> None:
    """The Trainer's rules across settings; raises ``TrainerError``.

    Nothing to train; a ``gradual_unfreeze`` list or ``lr_multipliers`` that
    do not fit ``layer_groups``; ``lr_multipliers`` with a rate range; LoRA
    without phase 2 or with gradual unfreezing.
    """
    if trainer.epochs + trainer.fine_tune_epochs == 0:
        raise TrainerError(
            format_error(
                "Nothing to train: epochs and fine_tune_epochs are both 0",
                expected="epochs >= 1 or fine_tune_epochs >= 1",
                received={"epochs": trainer.epochs, "fine_tune_epochs": trainer.fine_tune_epochs},
                fix="Pass epochs=5",
            )
        )
    groups = trainer.layer_groups
    gradual = trainer.gradual_unfreeze
    if isinstance(gradual, list) and len(gradual) > groups:
        raise _bad(
            f"gradual_unfreeze lists {len(gradual)} groups but layer_groups={groups}",
            "gradual_unfreeze",
            gradual,
            "a non-decreasing list starting at 0, at most layer_groups long "
            "(the epoch each group, top first, is unfrozen)",
            f"Pass at most {groups} epochs, or layer_groups={len(gradual)}",
        )
    multipliers = trainer.lr_multipliers
    if multipliers is not None:
        if len(multipliers) != groups:
            raise _bad(
                "lr_multipliers must be one positive number per layer group, top first",
                "lr_multipliers",
                multipliers,
                f"a list of {groups} floats (layer_groups={groups})",
                "Pass e.g. lr_multipliers=[1.0, 0.3, 0.1, 0.03] with layer_groups=4",
            )
        if isinstance(trainer.fine_tune_learning_rate, tuple):
            raise _bad(
                "lr_multipliers and a fine_tune_learning_rate range both set the group rates",
                "lr_multipliers",
                multipliers,
                "one of them",
                "Pass fine_tune_learning_rate as a single float with lr_multipliers",
            )
    if trainer.lora_rank is not None and trainer.fine_tune_epochs == 0:
        raise TrainerError(
            format_error(
                "lora_rank is set but there is no fine-tuning phase to train the adapters",
                expected="fine_tune_epochs >= 1 with lora_rank",
                received={"lora_rank": trainer.lora_rank, "fine_tune_epochs": 0},
                fix="Pass fine_tune_epochs=5 (LoRA trains in phase 2), or lora_rank=None",
            )
        )
    if trainer.lora_rank is not None and gradual is not None:
        raise TrainerError(
            format_error(
                "lora_rank and gradual_unfreeze cannot be combined: with LoRA only the "
                "adapters train, from the first phase-2 epoch",
                expected="either lora_rank or gradual_unfreeze",
                received={"lora_rank": trainer.lora_rank, "gradual_unfreeze": gradual},
                fix="Pass gradual_unfreeze=None to train LoRA adapters, or lora_rank=None",
            )
        )


def unfrozen_counts(groups: int, gradual: None | int | str | list[int], epochs: int) -> list[int]:
    """How many layer groups are trainable in each phase-2 epoch.

    ``"spread"`` unfreezes group ``i`` (top first) at phase-2 epoch
    ``floor(i * epochs / groups)``: evenly over the phase, all groups by its end.

    Examples:
        >>> unfrozen_counts(4, 1, 6)
        [1, 2, 3, 4, 4, 4]
        >>> unfrozen_counts(4, [0, 0, 2], 4)
        [2, 2, 3, 3]
        >>> unfrozen_counts(4, None, 2)
        [4, 4]
        >>> unfrozen_counts(2, "spread", 6)
        [1, 1, 1, 2, 2, 2]
    """
    if gradual is None:
        return [groups] * epochs
    if gradual == "spread":
        gradual = [i * epochs // groups for i in range(groups)]
    if isinstance(gradual, int):
        return [min(groups, gradual * (e + 1)) for e in range(epochs)]
    starts = [int(start) for start in gradual]
    return [min(groups, sum(1 for start in starts if start <= e)) for e in range(epochs)]


class MethodsPlan:
    """The optimisation methods of one ``Trainer.train`` call, resolved on the model.

    Args:
        trainer: the :class:`~finetunekit.Trainer`.
        backbone_model: the nested backbone.
        train_ds: the batched training ``tf.data`` (its cardinality gives
            the steps per epoch).
        train_data: the training ``DatasetAdapter`` or ``None``.
    """

    def __init__(self, trainer: Any, backbone_model: Any, train_ds: Any, train_data: Any) -> None:
        self.trainer = trainer
        self.task = getattr(train_data, "task_object", None)
        self.class_weight = class_weights(trainer.class_weight, train_data)
        self.groups: list[list[Any]] = []
        self.counts: list[int] = []
        if trainer.fine_tune_epochs:
            self.groups = layer_groups(
                backbone_model, trainer.layer_groups, trainer.unfreeze, trainer.train_bn
            )
            self.counts = unfrozen_counts(
                len(self.groups), trainer.gradual_unfreeze, trainer.fine_tune_epochs
            )
            check_groups(trainer, len(self.groups))
        self.steps_per_epoch = _steps_per_epoch(train_ds, train_data, trainer.batch_size)
        needs_steps = trainer.schedule != "constant" or trainer.warmup > 0
        if needs_steps and self.steps_per_epoch is None:
            raise TrainerError(
                format_error(
                    "The schedule needs the number of batches per epoch, which the data "
                    "does not tell",
                    expected="a tf.data dataset of known cardinality (or train_data)",
                    received={"schedule": trainer.schedule, "warmup": trainer.warmup},
                    fix="Pass train_data, use dataset.apply(tf.data.experimental."
                    "assert_cardinality(n)), or schedule='constant', warmup=0",
                )
            )

    @property
    def gradual(self) -> bool:
        """Whether phase 2 changes its frozen set between epochs."""
        return self.trainer.gradual_unfreeze is not None and bool(self.groups)

    # ------------------------------------------------------------------ loss
    def loss(self, loss: Any) -> Any:
        """The loss with the Trainer's ``label_smoothing``."""
        return smooth_loss(loss, self.trainer.label_smoothing, self.task)

    # ------------------------------------------------------------------ freezing
    def unfreeze(self, backbone_model: Any) -> None:
        """Phase 2's trainable set: every layer any epoch of the phase trains."""
        if self.gradual:
            unfreeze_groups(backbone_model, self.groups, max(self.counts), self.trainer.train_bn)
        else:
            unfreeze(backbone_model, self.trainer.unfreeze, self.trainer.train_bn)

    def unfrozen_groups(self, phase: int, epoch: int) -> int:
        """Trainable layer groups in absolute ``epoch`` of ``phase`` (0 in phase 1)."""
        if phase == 1 or not self.counts:
            return 0
        return self.counts[min(len(self.counts) - 1, max(0, epoch - self.trainer.epochs))]

    # ------------------------------------------------------------------ optimizer
    def _rate(self, peak: float, phase_epochs: int) -> Any:
        steps = (self.steps_per_epoch or 1) * max(1, phase_epochs)
        return make_schedule(self.trainer.schedule, peak, steps, self.trainer.warmup)

    def _make(self, peak: float, phase_epochs: int, name: str | None = None) -> Any:
        return make_optimizer(
            self.trainer.optimizer,
            self._rate(peak, phase_epochs),
            weight_decay=self.trainer.weight_decay,
            gradient_accumulation_steps=self.trainer.gradient_accumulation_steps,
            name=name,
        )

    def group_rates(self, rate: Rate) -> tuple[float, list[float]] | None:
        """``(head rate, [rate of each group, top first])`` in phase 2, or ``None``."""
        if not self.groups:
            return None
        if isinstance(rate, tuple):
            return rate[1], group_rates(rate[0], rate[1], len(self.groups))
        if self.trainer.lr_multipliers is not None:
            return rate, [rate * m for m in self.trainer.lr_multipliers]
        return None

    def optimizer(self, phase: int, rate: Rate) -> keras.optimizers.Optimizer:
        """A fresh optimizer for ``phase`` at ``rate`` (a float or a ``(low, high)`` range)."""
        trainer = self.trainer
        epochs = trainer.epochs if phase == 1 else trainer.fine_tune_epochs
        rates = None if phase == 1 else self.group_rates(rate)
        if rates is None:
            peak = rate[1] if isinstance(rate, tuple) else rate
            return self._make(float(peak), epochs)
        head, per_group = rates
        inner = [self._make(head, epochs, name="head_optimizer")]
        assignments: dict[str, int] = {}
        for i, (group, group_rate) in enumerate(zip(self.groups, per_group, strict=True)):
            inner.append(self._make(group_rate, epochs, name=f"group_{i}_optimizer"))
            for layer in group:
                for variable in layer.weights:
                    assignments[variable.path] = i + 1
        return DiscriminativeOptimizer(inner, assignments, name="discriminative")

    # ------------------------------------------------------------------ epochs
    def segments(
        self,
        phase: int,
        initial_epoch: int,
        last: int,
        backbone_model: Any,
        recompile: Callable[[], None],
        should_train: Callable[[int], bool],
    ) -> Iterator[tuple[int, int]]:
        """Yields ``(initial_epoch, end epoch)`` of each ``fit`` call of ``phase``.

        Without gradual unfreezing one call covers the phase. With it, each
        call covers epochs of one frozen set: the frozen set is applied and
        the model recompiled (keeping its optimizer and so its state and
        step) before the call is yielded.
        """
        if phase == 1 or not self.gradual:
            yield initial_epoch, last
            return
        epoch = initial_epoch
        while epoch < last and should_train(last):
            count = self.unfrozen_groups(phase, epoch)
            end = epoch + 1
            while end < last and self.unfrozen_groups(phase, end) == count:
                end += 1
            unfreeze_groups(backbone_model, self.groups, count, self.trainer.train_bn)
            recompile()
            yield epoch, end
            epoch = end

    def build_optimizer(self, model: Any) -> None:
        """Builds the phase's optimizer on every variable the phase will train.

        With gradual unfreezing the optimizer is built once, while the
        whole phase-2 set is trainable; each later ``fit`` trains a subset.
        """
        if self.gradual and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)

    # ------------------------------------------------------------------ report
    def annotate(self, run: Any) -> None:
        """Adds ``history["unfrozen_groups"]`` (gradual unfreezing) and ``info``."""
        if self.gradual:
            run.history["unfrozen_groups"] = [
                self.unfrozen_groups(int(p), int(e))
                for p, e in zip(run.history["phase"], run.history["epoch"], strict=True)
            ]
        if self.groups:
            run.info["layer_groups"] = [[layer.name for layer in g] for g in self.groups]
        if self.class_weight is not None:
            run.info["class_weight"] = dict(self.class_weight)


def check_data(trainer: Any, train_data: Any) -> None:
    """Raises before training when ``class_weight`` / ``label_smoothing`` misfit the data.

    ``FineTuner`` calls it before building the model.

    Examples:
        >>> import numpy as np, finetunekit as ftk
        >>> data = ftk.DatasetAdapter.from_arrays(np.zeros((4, 2)), [0.5, 1.0, 2.0, 3.0])
        >>> try:
        ...     check_data(ftk.Trainer(label_smoothing=0.1), data)
        ... except ftk.TrainerError as error:
        ...     print(str(error).split(".")[0])
        label_smoothing only applies to classification
    """
    class_weights(trainer.class_weight, train_data)
    task = getattr(train_data, "task_object", None)
    if trainer.label_smoothing and task is not None and not task.has_classes:
        smooth_loss("mse", trainer.label_smoothing, task)


def check_groups(trainer: Any, groups: int) -> None:
    """Raises when ``gradual_unfreeze`` / ``lr_multipliers`` need more groups than exist."""
    wanted = trainer.layer_groups
    if groups >= wanted:
        return
    gradual = trainer.gradual_unfreeze
    if isinstance(gradual, list) and len(gradual) > groups:
        raise _bad(
            f"gradual_unfreeze lists {len(gradual)} groups but the backbone has only "
            f"{groups} layers to split",
            "gradual_unfreeze",
            gradual,
            f"at most {groups} entries",
            f"Pass layer_groups={groups} and a shorter list",
        )
    if trainer.lr_multipliers is not None:
        raise _bad(
            f"lr_multipliers gives {wanted} groups but the backbone has only {groups} "
            "layers to split",
            "lr_multipliers",
            trainer.lr_multipliers,
            f"layer_groups <= {groups} and as many multipliers",
            f"Pass layer_groups={groups}",
        )


def _steps_per_epoch(train_ds: Any, train_data: Any, batch_size: int) -> int | None:
    try:
        batches = int(train_ds.cardinality())
    except Exception:
        batches = -1
    if batches > 0:
        return batches
    if train_data is not None:
        try:
            return max(1, -(-len(train_data) // batch_size))
        except TypeError:
            return None
    return None
