"""Step 4: ``Trainer``, the settings of the two-phase fine-tuning schedule.

The settings are declared once, as dataclass fields (see
:mod:`finetunekit.settings`): each field's declaration gives its default,
its check, its config form and its place in ``repr``. The algorithm that
runs them -- phases, frozen sets, compiling, the feature cache, checkpoints,
strategies -- is :mod:`finetunekit.training.engine`.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from collections.abc import Callable, Sequence
from typing import Any

import keras
import tensorflow as tf

from finetunekit.backbones.augmentation import check_augment
from finetunekit.checks import (
    check_bool,
    check_choice,
    check_int,
    check_number,
    check_path,
    check_str,
    fail,
)
from finetunekit.errors import ArgumentTypeError, TrainerError
from finetunekit.settings import Settings, setting
from finetunekit.training import distribute
from finetunekit.training.compute import check_jit_compile, check_precision
from finetunekit.training.engine import TrainingRun
from finetunekit.training.lora import check_lora_alpha, check_lora_layers, check_lora_rank
from finetunekit.training.losses import check_class_weight, check_label_smoothing
from finetunekit.training.methods import (
    check_gradual_unfreeze,
    check_lr_multipliers,
    check_rate,
    check_together,
    rate_config,
)
from finetunekit.training.optimizers import (
    check_optimizer,
    optimizer_config,
    optimizer_from_config,
)
from finetunekit.training.schedules import check_schedule, check_warmup

__all__ = ["Trainer", "TrainingRun"]


# ---------------------------------------------------------------------- field checks
def _count(name: str, minimum: int, fix: str | None = None) -> Callable[[Any], int]:
    return lambda value: check_int(name, value, minimum=minimum, fix=fix)


def _optional_rate(value: Any) -> Any:
    return None if value is None else check_rate("fine_tune_learning_rate", value)


def _unfreeze(value: Any) -> int | str:
    if value == "all" and isinstance(value, str):
        return "all"
    return check_int(
        "unfreeze",
        value,
        minimum=1,
        expected="'all' or the number of top layers to unfreeze",
        fix="Pass unfreeze='all' or e.g. unfreeze=4",
    )


def _callbacks(value: Any) -> list[keras.callbacks.Callback]:
    callbacks = list(value or [])
    for cb in callbacks:
        if not isinstance(cb, keras.callbacks.Callback):
            raise fail(
                ArgumentTypeError,
                "callbacks must be Keras callbacks",
                "callbacks",
                cb,
                expected="a list of keras.callbacks.Callback",
                fix="Wrap the function in keras.callbacks.LambdaCallback",
            )
    return callbacks


def _verbose(value: Any) -> int | str:
    return check_choice(  # type: ignore[no-any-return]
        "verbose", value, ("auto", 0, 1, 2), fix="Pass verbose=0 for silence"
    )


def _log_dir(value: Any) -> str | None:
    path = check_path(
        "log_dir",
        value,
        fix="Pass log_dir='logs/run1'",
    )
    if path is not None and importlib.util.find_spec("tensorboard") is None:
        raise fail(
            TrainerError,
            "log_dir needs the tensorboard package, which is not installed",
            "log_dir",
            path,
            expected="tensorboard installed (Keras' TensorBoard callback uses it)",
            fix="pip install 'finetunekit[tensorboard]'  (or: pip install tensorboard)",
        )
    return path  # type: ignore[no-any-return]


def _cache_features(value: Any) -> bool | str:
    return check_choice(  # type: ignore[no-any-return]
        "cache_features",
        value,
        ("auto", True, False),
        expected="'auto' (when it pays off), True or False",
        fix="Pass cache_features='auto'",
        what="cache_features must be 'auto', True or False",
    )


def _memory_mb(value: Any) -> float:
    number = check_number(
        "cache_memory_mb",
        value,
        minimum=0,
        maximum=2**40,
        max_open=True,
        expected="e.g. 512 (0 keeps every cached feature in a temporary file)",
        fix="Pass cache_memory_mb=512",
    )
    return int(number) if float(number).is_integer() else number  # type: ignore[no-any-return]


def _strategy_config(value: Any) -> str:
    return distribute.strategy_name(value)


# ---------------------------------------------------------------------- the settings
@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class Trainer(Settings):
    """How to fine-tune: optimizer, rates, epochs and the two phases.

    Phase 1 trains the new head on a frozen backbone for ``epochs``. Phase 2
    (when ``fine_tune_epochs > 0``) unfreezes the whole backbone or its top
    ``unfreeze`` weight-holding layers and trains ``fine_tune_epochs`` more at
    ``fine_tune_learning_rate`` (default a hundredth of ``learning_rate``).
    BatchNorm layers stay frozen and in inference mode in both phases unless
    ``train_bn=True``; the model is recompiled whenever ``trainable`` changes.

    Args:
        optimizer: a name (``"sgd"`` is plain gradient descent, ``"adam"``,
            ``"adamw"``, ``"rmsprop"``, ...) or a ``keras.optimizers.Optimizer``
            (copied per phase through its config).
        learning_rate: phase-1 learning rate, or a ``(low, high)`` range for
            discriminative rates (phase 1 trains the head at ``high``; the
            default phase-2 range is the range / 100). ``"auto"`` (default)
            is the task's rate: ``1e-2`` for a new classification,
            regression or embedding head (it needs large steps on frozen
            features, above all on small data; measured in
            ``docs/training.md``), ``1e-3`` for a detector's heads (at
            ``1e-2`` Adam throws them off in the first steps; measured in
            ``docs/detection.md``).
        epochs: phase-1 epochs (head only). 0 skips phase 1.
        batch_size: examples per batch.
        fine_tune_epochs: phase-2 epochs; 0 (default) skips phase 2.
        fine_tune_learning_rate: phase-2 rate; default the phase-1 rate / 100
            (``1e-4`` for a new head with the defaults), or with
            ``learning_rate="auto"`` the task's own phase-2 rate where it has
            one (generative text's LoRA adapters, see ``docs/generative.md``).
            A ``(low, high)`` range gives the head and the top layer group
            ``high``, the deepest group ``low``, geometrically spaced between
            (one Keras optimizer per group, see ``training/discriminative.py``).
        unfreeze: ``"all"`` or how many top weight-holding layers to unfreeze.
        train_bn: also train BatchNorm layers in phase 2 (default ``False``).
        callbacks: Keras callbacks, used in both phases.
        early_stopping: patience in epochs for early stopping that restores
            the best weights (per phase), or ``None``.
        monitor: quantity early stopping and ``keep_best`` watch: ``"loss"``
            or a training metric (``"accuracy"``, ``"auc"``, ``"mae"``, ...),
            with ``"val_"`` for the validation value; ``"val_..."`` falls back
            to the training value without validation data. Losses and errors
            are minimised, the rest maximised.
        keep_best: keep the weights of the best epoch of the whole run (by
            ``monitor``, over both phases) and restore them when training
            ends, instead of the last epoch's weights.
        checkpoint_dir: folder for resumable training, or ``None``. After
            every completed epoch (and at the end of each phase) the weights,
            optimizer state, phase, epoch, early-stopping / ``keep_best`` state
            and history so far are saved there atomically. Training the same
            recipe on the same data again with the same folder continues after
            the last completed epoch, in the right phase, with the right layers
            frozen and the phase's learning rate; a finished run returns at
            once. A checkpoint of a different recipe raises ``CheckpointError``.
            See docs/reliability.md.
        log_dir: folder for TensorBoard logs, or ``None``. Both phases write
            through ``keras.callbacks.TensorBoard`` into this one folder as one
            continuous run (``train/`` and ``validation/`` subfolders), so the
            epochs continue across the phase boundary: phase 2 starts at epoch
            ``epochs``. View with ``tensorboard --logdir <log_dir>``.
        verbose: Keras ``fit`` verbosity (``"auto"``, 0, 1 or 2).
        seed: seed for Python, NumPy and TensorFlow (``keras.utils.set_random_seed``).
        jit_compile: XLA compilation: ``"auto"`` (default) picks per phase
            what measured faster (on CPU: no XLA in any phase; with a GPU/TPU:
            Keras' ``"auto"``), or ``True`` / ``False`` for every phase. See
            docs/performance.md.
        cache_features: train phase 1 on features computed once instead of
            running the frozen backbone every epoch: ``"auto"`` (default:
            when phase 1 has 2+ epochs and it is safe), ``True`` (whenever it
            is safe) or ``False``. Safe means: no random layer (augmentation)
            runs before the backbone, the data replays the same inputs every
            pass, and no ``checkpoint_dir`` (resumable runs train the full
            model). ``result.info["feature_cache"]`` says whether it was used
            and why. See docs/performance.md.
        cache_memory_mb: memory budget of the feature cache in MiB; features
            beyond it go to a temporary file (deleted afterwards).
        precision: ``"auto"`` (default), ``"float32"``, ``"mixed_float16"``
            or ``"mixed_bfloat16"``: the Keras dtype policy of the model (the
            head output stays float32). ``"auto"`` builds in float32 and picks
            per phase: mixed bfloat16 only where the device has fast bfloat16
            (TPU, GPU of compute capability 8.0+, CPU flags ``amx_bf16`` /
            ``avx512_bf16``) and a few timed training steps of the phase's
            model show it at least 1.1x faster; float32 otherwise, without
            measuring for models under 5M parameters or phases under 64
            steps.
            ``result.info["precision"]`` gives each phase's policy and why.
            An explicit mixed policy on a CPU-only machine warns.
        strategy: where training runs: a ``tf.distribute.Strategy`` or a name:
            ``"default"`` (one device, or the strategy of an enclosing
            ``strategy.scope()``), ``"mirrored"`` (all local GPUs),
            ``"multi_worker"`` (the hosts of ``TF_CONFIG``) or ``"tpu"``. The
            model is built, compiled and trained in its scope; ``batch_size``
            is then the GLOBAL batch, split across the replicas.
            ``get_config`` stores the name (for an instance: its kind). Only
            the chief writes checkpoints and TensorBoard logs. See
            docs/distributed.md.
        lora_rank: LoRA instead of unfreezing: phase 2 trains low-rank adapters
            of this rank (Keras' ``enable_lora``) on the backbone's layers of
            ``lora_layers`` kinds (within the top ``unfreeze`` layers), plus the
            head (and BatchNorm with ``train_bn``); all other backbone weights
            stay frozen. ``None`` (default): no LoRA. Needs
            ``fine_tune_epochs >= 1``. ``result.save`` / ``export`` merge the
            adapters into the kernels. See ``finetunekit.training.lora``.
        lora_alpha: LoRA scale: the update is ``lora_alpha / lora_rank * A @ B``;
            ``None`` (default) means ``lora_alpha = lora_rank``.
        lora_layers: which layers get adapters: ``"auto"`` (default: the
            backbone's own default targets -- a KerasHub text encoder's
            attention query / value projections -- and every kind below for
            other networks), ``"all"`` (every ``"conv"`` (Conv1D/2D/3D),
            ``"dense"``, ``"einsum_dense"`` and ``"embedding"`` layer at the
            backbone's top level), one of those kinds, or a list of them.
        shuffle: shuffle the training data each epoch.
        layer_groups: the backbone layers phase 2 trains (those ``unfreeze``
            selects; BatchNorm only with ``train_bn``) split into this many
            contiguous groups, top (next to the head) first. Used by
            ``gradual_unfreeze``, ``lr_multipliers`` and rate ranges.
        gradual_unfreeze: ``None`` (default: the whole phase-2 set from its
            first epoch), an int ``k`` (``k`` more groups, top first, at the
            start of each phase-2 epoch) or a list of the phase-2 epoch
            (0-based, non-decreasing, first 0) each group is unfrozen at, or
            ``"spread"`` (group ``i`` at epoch ``i * fine_tune_epochs //
            groups``: evenly over phase 2).
            The model is recompiled whenever the set changes, keeping the
            optimizer state; ``history["unfrozen_groups"]`` records it.
        lr_multipliers: one factor per layer group, top first, applied to
            the phase-2 rate (the head gets 1.0); ``None``: one rate.
        schedule: learning-rate schedule of each phase: ``"constant"``
            (default), ``"cosine"`` (warmup, then cosine decay to 0 at the end
            of the phase) or ``"one_cycle"`` (linear rise from peak/25 over
            ``warmup`` (default 0.3) of the steps, cosine down to peak/2.5e5).
        warmup: fraction of each phase's steps of linear warmup (0: none).
        label_smoothing: label smoothing of the classification loss (0: none).
        class_weight: ``None``, ``"balanced"`` (``n / (classes * n_class)``
            from the training data) or ``{class index or name: weight}``;
            multiclass and binary data only.
        gradient_accumulation_steps: average the gradients of this many
            batches per update (Keras optimizers' own accumulation).
        weight_decay: decoupled weight decay of the optimizer; ``None``
            (default) keeps the optimizer's own (``"adamw"``: 0.004).
        augment: data augmentation inside the model, active only while
            training: ``None`` (default), a preset (``"light"``,
            ``"standard"``, ``"strong"``) or a dict such as ``{"flip":
            "horizontal", "rotation": 0.1, "zoom": 0.2, "translation": 0.1,
            "contrast": 0.2}``. Images and clips only (clips get one
            transform for all their frames). See docs/methods.md.

    A ``Trainer`` only holds validated settings (every argument is checked
    when it is made); :mod:`finetunekit.training.engine` runs them. It is
    immutable: :meth:`replace` returns a changed copy.

    Examples:
        >>> import finetunekit as ftk
        >>> trainer = ftk.Trainer(optimizer="adam", learning_rate=1e-2, epochs=2,
        ...                       fine_tune_epochs=1)
        >>> trainer.resolved_fine_tune_learning_rate
        0.0001
        >>> trainer.replace(epochs=5)
        Trainer(learning_rate=0.01, epochs=5, fine_tune_epochs=1)
    """

    optimizer: str | keras.optimizers.Optimizer = setting(
        "adam",
        kw_only=False,
        check=check_optimizer,
        to_config=optimizer_config,
        from_config=optimizer_from_config,
    )
    learning_rate: float | tuple[float, float] | str = setting(
        "auto",
        kw_only=False,
        check=lambda v: v if v == "auto" else check_rate("learning_rate", v),
        to_config=rate_config,
    )
    epochs: int = setting(10, kw_only=False, check=_count("epochs", 0))
    batch_size: int = setting(
        32, kw_only=False, check=_count("batch_size", 1, "Pass batch_size=32")
    )
    fine_tune_epochs: int = setting(0, check=_count("fine_tune_epochs", 0))
    fine_tune_learning_rate: float | tuple[float, float] | None = setting(
        None, check=_optional_rate, to_config=rate_config
    )
    unfreeze: int | str = setting("all", check=_unfreeze)
    train_bn: bool = setting(False, check=lambda v: check_bool("train_bn", v))
    callbacks: Sequence[keras.callbacks.Callback] | None = setting(
        None, check=_callbacks, config=False
    )
    early_stopping: int | None = setting(
        None, check=lambda v: check_int("early_stopping", v, minimum=1, allow_none=True)
    )
    monitor: str = setting(
        "val_loss",
        check=lambda v: check_str(
            "monitor",
            v,
            expected="a string such as 'val_loss' or 'val_accuracy'",
            fix="Pass monitor='val_loss'",
        ),
    )
    verbose: int | str = setting("auto", check=_verbose)
    seed: int | None = setting(
        None,
        check=lambda v: check_int(
            "seed", v, allow_none=True, error=ArgumentTypeError, fix="Pass seed=0"
        ),
    )
    jit_compile: bool | str = setting("auto", check=check_jit_compile)
    shuffle: bool = setting(True, check=lambda v: check_bool("shuffle", v))
    keep_best: bool = setting(
        False,
        check=lambda v: check_bool(
            "keep_best", v, fix="Pass keep_best=True to restore the best epoch's weights at the end"
        ),
    )
    checkpoint_dir: str | os.PathLike[str] | None = setting(
        None,
        check=lambda v: check_path(
            "checkpoint_dir", v, fix="Pass checkpoint_dir='checkpoints/run1'"
        ),
    )
    log_dir: str | os.PathLike[str] | None = setting(None, check=_log_dir)
    cache_features: bool | str = setting("auto", check=_cache_features)
    cache_memory_mb: float = setting(512, check=_memory_mb)
    precision: str = setting("auto", check=check_precision)
    strategy: str | tf.distribute.Strategy = setting(
        "default", check=distribute.check_strategy, to_config=_strategy_config
    )
    layer_groups: int = setting(
        4,
        check=lambda v: check_int(
            "layer_groups",
            v,
            minimum=1,
            expected="the number of backbone layer groups, e.g. 4",
            fix="Pass layer_groups=4",
        ),
    )
    gradual_unfreeze: None | int | str | list[int] = setting(None, check=check_gradual_unfreeze)
    lr_multipliers: list[float] | None = setting(None, check=check_lr_multipliers)
    schedule: str = setting("constant", check=check_schedule)
    warmup: float = setting(0.0, check=check_warmup)
    label_smoothing: float = setting(0.0, check=check_label_smoothing)
    class_weight: None | str | dict[int | str, float] = setting(None, check=check_class_weight)
    gradient_accumulation_steps: int | None = setting(
        None,
        check=lambda v: check_int(
            "gradient_accumulation_steps",
            v,
            minimum=1,
            allow_none=True,
            expected="None (update every batch) or the number of batches per update",
            fix="Pass gradient_accumulation_steps=4",
        ),
    )
    weight_decay: float | None = setting(
        None,
        check=lambda v: check_number(
            "weight_decay",
            v,
            minimum=0,
            allow_none=True,
            expected="None (the optimizer's own default) or e.g. 0.01",
            fix="Pass weight_decay=0.01",
        ),
    )
    lora_rank: int | None = setting(None, check=check_lora_rank)
    lora_alpha: float | None = setting(None, check=check_lora_alpha)
    lora_layers: str | list[str] = setting("auto", check=check_lora_layers)
    augment: None | str | dict[str, Any] = setting(None, check=check_augment)

    def check_together(self) -> None:
        """The rules across settings (see ``training/methods.py``: ``check_together``)."""
        check_together(self)

    # ------------------------------------------------------------------ derived settings
    def resolved_learning_rate(self, task: Any = None) -> Any:
        """The phase-1 rate: ``learning_rate``, or for ``"auto"`` the task's default.

        ``"auto"`` is the task's ``default_learning_rate``: ``1e-2`` for a new
        classification / regression / embedding head, ``1e-3`` for a
        detector's heads (see ``docs/training.md``); ``task=None`` means
        the base task's ``1e-2``.

        Examples:
            >>> import finetunekit as ftk
            >>> from finetunekit import tasks
            >>> ftk.Trainer().resolved_learning_rate(), ftk.Trainer(learning_rate=3e-3).resolved_learning_rate()
            (0.01, 0.003)
            >>> ftk.Trainer().resolved_learning_rate(tasks.get("detection"))
            0.001
        """
        if self.learning_rate != "auto":
            return self.learning_rate
        from finetunekit.tasks.base import Task

        return float((task if task is not None else Task).default_learning_rate)

    def resolved_fine_tune_rate(self, task: Any = None) -> Any:
        """The phase-2 rate: ``fine_tune_learning_rate``, else the task's own.

        The task's own is its ``default_fine_tune_learning_rate`` (generative
        text: the LoRA rate measured in docs/generative.md) when it has one,
        else the phase-1 rate / 100.

        Examples:
            >>> import finetunekit as ftk
            >>> ftk.Trainer().resolved_fine_tune_rate()
            0.0001
        """
        if self.fine_tune_learning_rate is not None:
            return self.fine_tune_learning_rate
        own = getattr(task, "default_fine_tune_learning_rate", None)
        if own is not None and self.learning_rate == "auto":
            return float(own)
        rate = self.resolved_learning_rate(task)
        if isinstance(rate, tuple):
            return (rate[0] / 100.0, rate[1] / 100.0)
        return rate / 100.0

    @property
    def resolved_fine_tune_learning_rate(self) -> Any:
        """The phase-2 learning rate for a new head (a ``(low, high)`` range stays a range)."""
        return self.resolved_fine_tune_rate()

    def phases(self, task: Any = None) -> list[tuple[int, Any, int, int]]:
        """``(phase, learning rate, first epoch, end epoch)`` of each phase to run.

        Args:
            task: the :class:`~finetunekit.Task` trained (its default rate
                for ``learning_rate="auto"``), or ``None``.

        Examples:
            >>> import finetunekit as ftk
            >>> ftk.Trainer(epochs=2, fine_tune_epochs=1).phases()
            [(1, 0.01, 0, 2), (2, 0.0001, 2, 3)]
        """
        phases: list[tuple[int, Any, int, int]] = []
        if self.epochs:
            phases.append((1, self.resolved_learning_rate(task), 0, self.epochs))
        if self.fine_tune_epochs:
            end = self.epochs + self.fine_tune_epochs
            phases.append((2, self.resolved_fine_tune_rate(task), self.epochs, end))
        return phases

    def resolved_monitor(self, has_validation: bool) -> str:
        """The quantity watched: ``monitor``, without ``"val_"`` when there is no validation.

        Examples:
            >>> import finetunekit as ftk
            >>> ftk.Trainer(monitor="val_accuracy").resolved_monitor(has_validation=False)
            'accuracy'
        """
        if self.monitor.startswith("val_") and not has_validation:
            return self.monitor[4:]
        return self.monitor

    def resolved_strategy(self) -> tf.distribute.Strategy:
        """The ``tf.distribute.Strategy`` that ``strategy`` names (created once per process).

        Raises:
            TrainerError: the strategy cannot be created here (no TPU, no
                ``TF_CONFIG``, ...), or ``batch_size`` does not split evenly
                over its replicas; the message names the fix.

        Examples:
            >>> import finetunekit as ftk
            >>> ftk.Trainer().resolved_strategy().num_replicas_in_sync
            1
        """
        strategy = distribute.resolve_strategy(self.strategy)
        distribute.check_batch_size(strategy, self.batch_size)
        return strategy

    def scope(self) -> Any:
        """The scope of ``strategy`` (build the model in it; training enters it itself).

        Examples:
            >>> import finetunekit as ftk
            >>> with ftk.Trainer().scope():
            ...     pass
        """
        return self.resolved_strategy().scope()

    def data_seed(self) -> int | None:
        """The training data's shuffle seed: ``seed``, or 0 when several workers need one order."""
        return distribute.data_seed(self.resolved_strategy(), self.seed)

    # ------------------------------------------------------------------ checks against the model
    def check_backbone(self, backbone_model: keras.Model) -> None:
        """Raises before training when ``unfreeze`` exceeds the backbone's layers.

        The pipeline calls it before building the model whenever the backbone
        network is already known (``Backbone.from_model``), and the engine
        again on the built backbone before the first epoch.

        Examples:
            >>> import keras, finetunekit as ftk
            >>> net = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
            >>> ftk.Trainer(fine_tune_epochs=1, unfreeze=1).check_backbone(net)
        """
        from finetunekit.training.engine import check_backbone

        check_backbone(self, backbone_model)

    def check_monitor(self, metric_names: Sequence[str], has_validation: bool) -> None:
        """Raises when early stopping or ``keep_best`` watch a quantity training never logs.

        Args:
            metric_names: names of the compiled metrics (``"loss"`` is implied).
            has_validation: whether validation data is given.

        Examples:
            >>> import finetunekit as ftk
            >>> ftk.Trainer(early_stopping=2, monitor="val_accuracy").check_monitor(
            ...     ["accuracy"], has_validation=True)
        """
        from finetunekit.training.engine import check_monitor

        check_monitor(self, metric_names, has_validation)

    # ------------------------------------------------------------------ running
    def train(
        self,
        model: keras.Model,
        backbone_model: keras.Model,
        train_ds: Any,
        validation_ds: Any = None,
        *,
        loss: Any,
        metrics: Sequence[Any] | Callable[[], Sequence[Any]] = (),
        train_data: Any = None,
        validation_data: Any = None,
    ) -> TrainingRun:
        """Runs phase 1 (frozen backbone) then phase 2 (unfrozen) on a Keras model.

        The Trainer used alone, on a model you built: ``model`` contains
        ``backbone_model`` (called once). :meth:`FineTuner.fit` hands the
        engine what it built instead (see :func:`finetunekit.training.engine.run`).

        Args:
            model: the full model (backbone nested in it as ``backbone_model``).
            backbone_model: the nested backbone.
            train_ds: batched ``tf.data`` of ``(x, y)``, or a ``DatasetAdapter``
                (batched here with ``batch_size``, ``shuffle`` and ``seed``).
            validation_ds: batched ``tf.data``, a ``DatasetAdapter`` or ``None``.
            loss: the Keras loss.
            metrics: metric factories are not shared: pass a callable returning
                fresh metric objects, or a list of metric names.
            train_data: the training ``DatasetAdapter`` behind a ``train_ds``
                dataset (lets phase 1 train on cached features), or ``None``.
            validation_data: the validation ``DatasetAdapter`` behind
                ``validation_ds``, or ``None``.

        Returns:
            A :class:`TrainingRun`; ``info["feature_cache"]`` reports caching.

        Raises:
            TrainerError: ``unfreeze`` deeper than the backbone, or an unknown ``monitor``.
            CheckpointError: ``checkpoint_dir`` holds another run's checkpoint.
        """
        from finetunekit.training import engine

        return engine.run(
            self,
            engine.BuiltModel.of(model, backbone_model),
            engine.TrainingData.of(train_ds, train_data),
            None
            if validation_ds is None and validation_data is None
            else engine.TrainingData.of(validation_ds, validation_data),
            loss=loss,
            metrics=metrics,
        )
