"""Learning-rate schedules for one training phase: warmup, cosine decay, one-cycle.

Each schedule is a serialisable ``keras.optimizers.schedules.LearningRateSchedule``
evaluated at the optimizer's step counter; the :class:`~finetunekit.Trainer`
builds one per phase (``Trainer(schedule=..., warmup=...)``) from the phase's
number of steps: ``ceil(examples / batch_size) * phase epochs``.
"""

from __future__ import annotations

import math
from typing import Any

import keras
from keras import ops

from finetunekit.errors import TrainerError, format_error

__all__ = [
    "SCHEDULES",
    "WarmupConstant",
    "WarmupCosine",
    "OneCycle",
    "check_schedule",
    "check_warmup",
    "make_schedule",
]

SCHEDULES = ("constant", "cosine", "one_cycle")

_PACKAGE = "finetunekit"


def _step(step: Any) -> Any:
    return ops.cast(step, "float32")


@keras.saving.register_keras_serializable(package=_PACKAGE)
class WarmupConstant(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup from 0 to ``peak`` over ``warmup_steps``, then constant.

    Args:
        peak: the learning rate after warmup.
        warmup_steps: optimizer steps of the linear warmup (0: none).

    Examples:
        >>> schedule = WarmupConstant(0.1, warmup_steps=10)
        >>> [round(float(schedule(s)), 4) for s in (0, 5, 10, 100)]
        [0.01, 0.06, 0.1, 0.1]
    """

    def __init__(self, peak: float, warmup_steps: int = 0) -> None:
        self.peak = float(peak)
        self.warmup_steps = int(warmup_steps)

    def __call__(self, step: Any) -> Any:
        s = _step(step)
        if self.warmup_steps <= 0:
            return ops.cast(self.peak, "float32") + 0.0 * s
        # step s is the (s+1)-th update: the first uses peak / warmup_steps, not 0
        return self.peak * ops.minimum(1.0, (s + 1.0) / self.warmup_steps)

    def get_config(self) -> dict[str, Any]:
        return {"peak": self.peak, "warmup_steps": self.warmup_steps}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup to ``peak``, then cosine decay to ``peak * alpha`` at ``total_steps``.

    Args:
        peak: the highest learning rate, reached at the end of warmup.
        total_steps: optimizer steps of the whole phase (warmup included).
        warmup_steps: steps of the linear warmup (0: start at ``peak``).
        alpha: the final rate as a fraction of ``peak`` (default 0).

    Examples:
        >>> schedule = WarmupCosine(1.0, total_steps=110, warmup_steps=10)
        >>> [round(float(schedule(s)), 3) for s in (4, 10, 60, 110, 500)]
        [0.5, 1.0, 0.5, 0.0, 0.0]
    """

    def __init__(
        self, peak: float, total_steps: int, warmup_steps: int = 0, alpha: float = 0.0
    ) -> None:
        self.peak = float(peak)
        self.total_steps = max(1, int(total_steps))
        self.warmup_steps = max(0, min(int(warmup_steps), self.total_steps - 1))
        self.alpha = float(alpha)

    def __call__(self, step: Any) -> Any:
        s = _step(step)
        w = float(self.warmup_steps)
        decay = float(self.total_steps - self.warmup_steps)
        progress = ops.clip((s - w) / decay, 0.0, 1.0)
        cosine = 0.5 * (1.0 + ops.cos(math.pi * progress))
        decayed = self.peak * (self.alpha + (1.0 - self.alpha) * cosine)
        if self.warmup_steps <= 0:
            return decayed
        warm = self.peak * (s + 1.0) / w
        return ops.where(s < w, warm, decayed)

    def get_config(self) -> dict[str, Any]:
        return {
            "peak": self.peak,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "alpha": self.alpha,
        }


@keras.saving.register_keras_serializable(package=_PACKAGE)
class OneCycle(keras.optimizers.schedules.LearningRateSchedule):
    """The one-cycle policy: linear rise to ``peak``, then cosine annealing far below.

    Starts at ``peak / div_factor``, rises linearly to ``peak`` over the
    first ``pct_start`` of ``total_steps``, then follows a cosine down to
    ``peak / div_factor / final_div_factor`` at ``total_steps``.

    Args:
        peak: the highest learning rate.
        total_steps: optimizer steps of the whole phase.
        pct_start: fraction of the steps spent rising (default 0.3).
        div_factor: ``peak / initial rate`` (default 25).
        final_div_factor: ``initial rate / final rate`` (default 1e4).

    Examples:
        >>> schedule = OneCycle(1.0, total_steps=100)
        >>> [round(float(schedule(s)), 4) for s in (0, 30, 65, 100)]
        [0.04, 1.0, 0.5, 0.0]
    """

    def __init__(
        self,
        peak: float,
        total_steps: int,
        pct_start: float = 0.3,
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
    ) -> None:
        self.peak = float(peak)
        self.total_steps = max(1, int(total_steps))
        self.pct_start = float(pct_start)
        self.div_factor = float(div_factor)
        self.final_div_factor = float(final_div_factor)

    def __call__(self, step: Any) -> Any:
        s = _step(step)
        start = self.peak / self.div_factor
        final = start / self.final_div_factor
        up = max(1.0, round(self.pct_start * self.total_steps))
        down = max(1.0, self.total_steps - up)
        rising = start + (self.peak - start) * ops.clip(s / up, 0.0, 1.0)
        progress = ops.clip((s - up) / down, 0.0, 1.0)
        falling = final + (self.peak - final) * 0.5 * (1.0 + ops.cos(math.pi * progress))
        return ops.where(s < up, rising, falling)

    def get_config(self) -> dict[str, Any]:
        return {
            "peak": self.peak,
            "total_steps": self.total_steps,
            "pct_start": self.pct_start,
            "div_factor": self.div_factor,
            "final_div_factor": self.final_div_factor,
        }


def check_schedule(schedule: Any) -> str:
    """Validates ``Trainer(schedule=...)``; returns it.

    Examples:
        >>> check_schedule("cosine")
        'cosine'
    """
    if schedule not in SCHEDULES:
        raise TrainerError(
            format_error(
                "Unknown learning-rate schedule",
                expected=f"one of {list(SCHEDULES)}",
                received={"schedule": schedule},
                fix="Pass schedule='cosine' (warmup then cosine decay) or 'constant'",
            )
        )
    return str(schedule)


def check_warmup(warmup: Any) -> float:
    """Validates ``Trainer(warmup=...)``: a fraction of a phase's steps in ``[0, 1)``.

    Examples:
        >>> check_warmup(0.1)
        0.1
    """
    if (
        isinstance(warmup, bool)
        or not isinstance(warmup, (int, float))
        or not 0.0 <= float(warmup) < 1.0
    ):
        raise TrainerError(
            format_error(
                "warmup must be a fraction of the phase's steps in [0, 1)",
                expected="a float such as 0.05 (0 switches warmup off)",
                received={"warmup": warmup},
                fix="Pass warmup=0.05",
            )
        )
    return float(warmup)


def make_schedule(schedule: str, peak: float, total_steps: int, warmup: float = 0.0) -> Any:
    """The learning rate of one phase: a float (constant, no warmup) or a schedule.

    Args:
        schedule: ``"constant"``, ``"cosine"`` or ``"one_cycle"``.
        peak: the phase's (peak) learning rate.
        total_steps: optimizer steps in the phase.
        warmup: fraction of ``total_steps`` of linear warmup; for
            ``"one_cycle"`` the fraction spent rising (default 0.3 when 0).

    Examples:
        >>> make_schedule("constant", 1e-3, 100)
        0.001
        >>> type(make_schedule("cosine", 1e-3, 100, warmup=0.1)).__name__
        'WarmupCosine'
    """
    warmup_steps = int(round(warmup * total_steps))
    if schedule == "cosine":
        return WarmupCosine(peak, total_steps, warmup_steps)
    if schedule == "one_cycle":
        return OneCycle(peak, total_steps, pct_start=warmup or 0.3)
    if warmup_steps > 0:
        return WarmupConstant(peak, warmup_steps)
    return float(peak)
