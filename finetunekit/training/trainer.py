"""Step 4: ``Trainer``, the two-phase fine-tuning schedule."""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import keras
import tensorflow as tf

from finetunekit.backbones.augmentation import check_augment
from finetunekit.errors import (
    ArgumentTypeError,
    TrainerError,
    check_config_keys,
    format_error,
)
from finetunekit.training import distribute
from finetunekit.training.checkpoint import CheckpointStore, TrainingSession, fingerprint
from finetunekit.training.compute import check_jit_compile, check_precision, resolve_jit_compile
from finetunekit.training.freezing import freeze, unfreeze
from finetunekit.training.lora import apply_lora, check_lora_args, check_lora_targets
from finetunekit.training.methods import MethodsPlan, check_methods, rate_config
from finetunekit.training.optimizers import (
    check_optimizer,
    optimizer_config,
    optimizer_from_config,
)

__all__ = ["Trainer", "TrainingRun"]

_HEAD_STEPS_PER_CALL = 64  # steps per tf.function call when training on cached features


@dataclass
class TrainingRun:
    """What :meth:`Trainer.train` returns.

    Attributes:
        history: Keras-style ``{metric: [value per epoch]}`` over both phases,
            with ``"phase"`` (1 or 2) and ``"epoch"`` lists marking each epoch.
        timings: wall seconds per phase (``"phase1"``, ``"phase2"``); with the
            feature cache also ``"feature_cache"`` (included in ``"phase1"``).
        trainable_params: trainable parameter count per phase.
        resumed_from: ``None`` for a fresh run; after a restart from
            ``checkpoint_dir``: ``{"phase", "epoch", "epochs_done"}`` of the last
            epoch the checkpoint held.
        info: facts about the run; ``"feature_cache"``: ``{"used", "reason",
            "bytes", "spilled"}``.
    """

    history: dict[str, list[float]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    trainable_params: dict[str, int] = field(default_factory=dict)
    resumed_from: dict[str, Any] | None = None
    info: dict[str, Any] = field(default_factory=dict)


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
        learning_rate: phase-1 learning rate, or a ``(low, high)`` range for
            discriminative rates (phase 1 trains the head at ``high``; the
            default phase-2 range is the range / 10).
        epochs: phase-1 epochs (head only). 0 skips phase 1.
        batch_size: examples per batch.
        fine_tune_epochs: phase-2 epochs; 0 (default) skips phase 2.
        fine_tune_learning_rate: phase-2 rate; default ``learning_rate / 10``.
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
        precision: ``"float32"`` (default), ``"mixed_float16"`` or
            ``"mixed_bfloat16"``: the Keras dtype policy the model is built
            under (the head output stays float32). Mixed precision pays off
            on GPUs/TPUs; on a CPU-only machine it warns.
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
        lora_layers: which layer kinds get adapters: ``"all"`` (default),
            ``"conv"`` (Conv1D/2D/3D), ``"dense"``, ``"einsum_dense"``,
            ``"embedding"``, or a list of them.
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

    Examples:
        >>> import finetunekit as ftk
        >>> trainer = ftk.Trainer(optimizer="adam", learning_rate=1e-3, epochs=2,
        ...                       fine_tune_epochs=1)
        >>> trainer.resolved_fine_tune_learning_rate
        0.0001
    """

    def __init__(
        self,
        optimizer: str | keras.optimizers.Optimizer = "adam",
        learning_rate: float | tuple[float, float] = 1e-3,
        epochs: int = 10,
        batch_size: int = 32,
        *,
        fine_tune_epochs: int = 0,
        fine_tune_learning_rate: float | tuple[float, float] | None = None,
        unfreeze: int | str = "all",
        train_bn: bool = False,
        callbacks: Sequence[keras.callbacks.Callback] | None = None,
        early_stopping: int | None = None,
        monitor: str = "val_loss",
        verbose: int | str = "auto",
        seed: int | None = None,
        jit_compile: bool | str = "auto",
        shuffle: bool = True,
        keep_best: bool = False,
        checkpoint_dir: str | os.PathLike[str] | None = None,
        log_dir: str | os.PathLike[str] | None = None,
        cache_features: bool | str = "auto",
        cache_memory_mb: float = 512,
        precision: str = "float32",
        strategy: str | tf.distribute.Strategy = "default",
        layer_groups: int = 4,
        gradual_unfreeze: None | int | str | list[int] = None,
        lr_multipliers: list[float] | None = None,
        schedule: str = "constant",
        warmup: float = 0.0,
        label_smoothing: float = 0.0,
        class_weight: None | str | dict[int | str, float] = None,
        gradient_accumulation_steps: int | None = None,
        weight_decay: float | None = None,
        lora_rank: int | None = None,
        lora_alpha: float | None = None,
        lora_layers: str | list[str] = "all",
        augment: None | str | dict[str, Any] = None,
    ) -> None:
        self.optimizer = check_optimizer(optimizer)
        methods = check_methods(  # training/methods.py
            learning_rate=learning_rate,
            fine_tune_learning_rate=fine_tune_learning_rate,
            layer_groups=layer_groups,
            gradual_unfreeze=gradual_unfreeze,
            lr_multipliers=lr_multipliers,
            schedule=schedule,
            warmup=warmup,
            label_smoothing=label_smoothing,
            class_weight=class_weight,
            gradient_accumulation_steps=gradient_accumulation_steps,
            weight_decay=weight_decay,
        )
        self.learning_rate = methods["learning_rate"]
        self.layer_groups: int = methods["layer_groups"]
        self.gradual_unfreeze: None | int | str | list[int] = methods["gradual_unfreeze"]
        self.lr_multipliers: list[float] | None = methods["lr_multipliers"]
        self.schedule: str = methods["schedule"]
        self.warmup: float = methods["warmup"]
        self.label_smoothing: float = methods["label_smoothing"]
        self.class_weight: Any = methods["class_weight"]
        self.gradient_accumulation_steps: int | None = methods["gradient_accumulation_steps"]
        self.weight_decay: float | None = methods["weight_decay"]
        self.epochs = _count("epochs", epochs, minimum=0)
        self.batch_size = _count("batch_size", batch_size, minimum=1)
        self.fine_tune_epochs = _count("fine_tune_epochs", fine_tune_epochs, minimum=0)
        self.fine_tune_learning_rate = methods["fine_tune_learning_rate"]
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
        if not isinstance(monitor, str) or not monitor:
            raise ArgumentTypeError(
                format_error(
                    "monitor must be a metric name",
                    expected="a string such as 'val_loss' or 'val_accuracy'",
                    received={"monitor": monitor},
                    fix="Pass monitor='val_loss'",
                )
            )
        if not isinstance(keep_best, bool):
            raise ArgumentTypeError(
                format_error(
                    "keep_best must be a bool",
                    expected="True or False",
                    received={"keep_best": keep_best},
                    fix="Pass keep_best=True to restore the best epoch's weights at the end",
                )
            )
        if checkpoint_dir is not None:
            if not isinstance(checkpoint_dir, (str, os.PathLike)) or not os.fspath(checkpoint_dir):
                raise ArgumentTypeError(
                    format_error(
                        "checkpoint_dir must be a folder path or None",
                        expected="a str or os.PathLike naming a folder",
                        received={"checkpoint_dir": checkpoint_dir},
                        fix="Pass checkpoint_dir='checkpoints/run1'",
                    )
                )
            checkpoint_dir = os.fspath(checkpoint_dir)
            if os.path.exists(checkpoint_dir) and not os.path.isdir(checkpoint_dir):
                raise TrainerError(
                    format_error(
                        "checkpoint_dir is a file, not a folder",
                        expected="a folder path (created when missing)",
                        received={"checkpoint_dir": checkpoint_dir},
                        fix="Pass the path of a folder",
                    )
                )
        self.unfreeze = unfreeze
        self.train_bn = bool(train_bn)
        self.callbacks = callbacks
        self.early_stopping = early_stopping
        self.monitor = monitor
        self.verbose = verbose
        self.seed = seed
        self.jit_compile = check_jit_compile(jit_compile)
        self.shuffle = bool(shuffle)
        self.cache_features = _check_cache_features(cache_features)
        self.cache_memory_mb = _check_memory_mb(cache_memory_mb)
        self.precision = check_precision(precision)
        self.strategy = distribute.check_strategy(strategy)  # a name is resolved in train()
        self.lora_rank, self.lora_alpha, self.lora_layers = check_lora_args(
            lora_rank, lora_alpha, lora_layers, self.fine_tune_epochs
        )
        if self.lora_rank is not None and self.gradual_unfreeze is not None:
            raise TrainerError(
                format_error(
                    "lora_rank and gradual_unfreeze cannot be combined: with LoRA only the "
                    "adapters train, from the first phase-2 epoch",
                    expected="either lora_rank or gradual_unfreeze",
                    received={
                        "lora_rank": self.lora_rank,
                        "gradual_unfreeze": self.gradual_unfreeze,
                    },
                    fix="Pass gradual_unfreeze=None to train LoRA adapters, or lora_rank=None",
                )
            )
        self.augment = check_augment(augment)
        self.keep_best = keep_best
        self.checkpoint_dir = checkpoint_dir
        if log_dir is not None and (
            not isinstance(log_dir, (str, os.PathLike)) or not os.fspath(log_dir)
        ):
            raise ArgumentTypeError(
                format_error(
                    "log_dir must be a folder path or None",
                    expected="a str or os.PathLike naming a folder for TensorBoard logs",
                    received={"log_dir": log_dir},
                    fix="Pass log_dir='logs/run1'",
                )
            )
        if log_dir is not None:
            import importlib.util

            if importlib.util.find_spec("tensorboard") is None:
                raise TrainerError(
                    format_error(
                        "log_dir needs the tensorboard package, which is not installed",
                        expected="tensorboard installed (Keras' TensorBoard callback uses it)",
                        received={"log_dir": log_dir},
                        fix="pip install 'finetunekit[tensorboard]'  (or: pip install tensorboard)",
                    )
                )
        self.log_dir = None if log_dir is None else os.fspath(log_dir)

    @property
    def resolved_fine_tune_learning_rate(self) -> Any:
        """The phase-2 learning rate actually used (a ``(low, high)`` range stays a range)."""
        if self.fine_tune_learning_rate is not None:
            return self.fine_tune_learning_rate
        if isinstance(self.learning_rate, tuple):
            return (self.learning_rate[0] / 10.0, self.learning_rate[1] / 10.0)
        return self.learning_rate / 10.0

    # ------------------------------------------------------------------ training
    def check_backbone(self, backbone_model: keras.Model) -> None:
        """Raises before training when ``unfreeze`` exceeds the backbone's layers.

        The pipeline calls it before building the model whenever the backbone
        network is already known (``Backbone.from_model``), and again on the
        built backbone before the first epoch.

        Examples:
            >>> import keras, finetunekit as ftk
            >>> net = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
            >>> ftk.Trainer(fine_tune_epochs=1, unfreeze=1).check_backbone(net)
        """
        if self.fine_tune_epochs and self.unfreeze != "all":
            from finetunekit.training.freezing import weight_layers

            available = len(weight_layers(backbone_model, self.train_bn))
            if int(self.unfreeze) > available:
                unfreeze(backbone_model, self.unfreeze, self.train_bn)  # raises TrainerError
        if self.lora_rank is not None:  # raises when LoRA has nothing to adapt
            check_lora_targets(backbone_model, self.lora_layers, self.unfreeze, self.train_bn)

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
        if not (self.early_stopping or self.keep_best):
            return
        names = ["loss", *metric_names]
        valid = names + ([f"val_{n}" for n in names] if has_validation else [])
        if self.resolved_monitor(has_validation) not in valid:
            raise TrainerError(
                format_error(
                    f"Unknown monitor {self.monitor!r}: training logs no such quantity",
                    expected=f"one of {valid}"
                    + ("" if has_validation else " (no validation data, so no val_ values)"),
                    received={"monitor": self.monitor},
                    fix="Pass monitor='val_loss' (or a metric name from the list)",
                )
            )

    def _phases(self) -> list[tuple[int, float, int, int]]:
        """``(phase, learning rate, first epoch, end epoch)`` of each phase to run."""
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
        return phases

    def resolved_strategy(self) -> tf.distribute.Strategy:
        """The ``tf.distribute.Strategy`` that ``strategy`` names (created once per process).

        Raises:
            TrainerError: the strategy cannot be created here (no TPU, no
                ``TF_CONFIG``, ...); the message names the fix.

        Examples:
            >>> import finetunekit as ftk
            >>> ftk.Trainer().resolved_strategy().num_replicas_in_sync
            1
        """
        return distribute.resolve_strategy(self.strategy)

    def scope(self) -> Any:
        """The scope of ``strategy`` (build the model in it; ``train`` enters it itself).

        Examples:
            >>> import finetunekit as ftk
            >>> with ftk.Trainer().scope():
            ...     pass
        """
        return self.resolved_strategy().scope()

    def data_seed(self) -> int | None:
        """The training data's shuffle seed: ``seed``, or 0 when several workers need one order."""
        return distribute.data_seed(self.resolved_strategy(), self.seed)

    @distribute.in_strategy_scope
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
        """Runs phase 1 (frozen backbone) then phase 2 (unfrozen) on ``model``.

        Given the ``DatasetAdapter`` s behind the datasets (``train_data``,
        ``validation_data``), phase 1 may train the head on cached features
        (``cache_features``); ``train_ds`` must then be
        ``train_data.as_dataset(batch_size, shuffle=shuffle, seed=seed)`` so
        both paths see the same batches.

        With ``checkpoint_dir``, a checkpoint left there by an interrupted run
        of the same recipe is loaded first and training continues after its
        last completed epoch (see the class docstring).

        Args:
            model: the full model (backbone nested in it as ``backbone_model``).
            backbone_model: the nested backbone.
            train_ds: batched ``tf.data`` of ``(x, y)``.
            validation_ds: batched ``tf.data`` or ``None``.
            loss: the Keras loss.
            metrics: metric factories are not shared: pass a callable returning
                fresh metric objects, or a list of metric names.
            train_data: the training ``DatasetAdapter`` behind ``train_ds``
                (needed for feature caching), or ``None``.
            validation_data: the validation ``DatasetAdapter`` behind
                ``validation_ds``, or ``None``.

        Returns:
            A :class:`TrainingRun`; ``info["feature_cache"]`` reports caching.

        Raises:
            TrainerError: ``unfreeze`` deeper than the backbone, or an unknown ``monitor``.
            CheckpointError: ``checkpoint_dir`` holds another run's checkpoint.
        """
        self.check_backbone(backbone_model)
        has_validation = validation_ds is not None
        self.check_monitor(_metric_names(metrics), has_validation)
        plan = MethodsPlan(self, backbone_model, train_ds, train_data)  # training/methods.py
        loss = plan.loss(loss)  # label_smoothing
        run = TrainingRun()
        strategy = self.resolved_strategy()  # train() runs in its scope
        run.info["strategy"] = distribute.describe(strategy)
        distribute.broadcast_from_chief(strategy, model.weights)  # same start on every worker
        if self.lora_rank is not None:  # before epoch 1: the same variables in every phase
            run.info["lora"] = apply_lora(
                backbone_model,
                self.lora_rank,
                alpha=self.lora_alpha,
                kinds=self.lora_layers,
                unfreeze=self.unfreeze,
                train_bn=self.train_bn,
            )
        session = TrainingSession(
            monitor=self.resolved_monitor(has_validation),
            early_stopping=self.early_stopping,
            keep_best=self.keep_best,
            store=CheckpointStore(self.checkpoint_dir, writer=distribute.is_chief(strategy))
            if self.checkpoint_dir
            else None,
            run_fingerprint=fingerprint(self.get_config(), model, train_ds, validation_ds, loss),
            verbose=self.verbose,
        )
        if session.resume(model):
            run.resumed_from = session.resumed_from
            _fast_forward(train_ds, len(session.rows))
        if self.checkpoint_dir:  # all workers must have read the chief's checkpoint
            distribute.check_resumed(strategy, len(session.rows), self.checkpoint_dir)
        split, cache_info = self._plan_cache(
            model, backbone_model, train_data, validation_data, validation_ds is not None
        )
        run.info["feature_cache"] = cache_info
        cache_seconds = 0.0
        for phase, rate, first, last in self._phases():
            if phase == 1:
                freeze(backbone_model)
            else:
                plan.unfreeze(backbone_model)  # with gradual_unfreeze: every group it reaches
            run.trainable_params[f"phase{phase}"] = _count_params(model.trainable_weights)
            if session.phase_done(phase):  # completed before a restart
                continue
            cached = phase == 1 and split is not None
            model.compile(
                optimizer=plan.optimizer(phase, rate),  # rates per group, schedule, decay
                loss=loss,
                metrics=_fresh(metrics),
                jit_compile=resolve_jit_compile(
                    self.jit_compile, "frozen" if phase == 1 else "full"
                ),
            )
            plan.build_optimizer(model)
            initial_epoch = session.begin_phase(phase, first, model)
            if cached and session.should_train(last):
                cache_seconds = self._fit_cached(
                    split,
                    model,
                    loss,
                    metrics,
                    session,
                    initial_epoch,
                    last,
                    train_data,
                    validation_data,
                    train_ds,
                    cache_info,
                    class_weight=plan.class_weight,
                )
            elif session.should_train(last):
                # one fit per frozen set (gradual_unfreeze recompiles between them)
                for start, end in plan.segments(
                    phase,
                    initial_epoch,
                    last,
                    backbone_model,
                    recompile=lambda: model.compile(
                        optimizer=model.optimizer,  # same optimizer: state and step carry on
                        loss=loss,
                        metrics=_fresh(metrics),
                        jit_compile=model.jit_compile,
                    ),
                    should_train=session.should_train,
                ):
                    distribute.fit(  # model.fit, or its loop under MultiWorkerMirroredStrategy
                        model,
                        strategy,
                        train_ds,
                        validation_data=validation_ds,
                        initial_epoch=start,
                        epochs=end,
                        callbacks=[*self.callbacks, *self._tensorboard(), session.callback(phase)],
                        verbose=self.verbose,
                        shuffle=False,  # the tf.data pipeline already shuffles, seeded
                        class_weight=plan.class_weight,
                    )
            session.end_phase(phase, model)
        session.finish(model)
        distribute.release(model, strategy)  # predict / evaluate / save on each worker alone
        run.history = session.history()
        plan.annotate(run)  # history["unfrozen_groups"], info["layer_groups"]
        run.timings = {k: v for k, v in session.timings.items() if k.startswith("phase")}
        if cache_seconds:  # phase 1 includes computing the cached features
            run.timings["phase1"] = run.timings.get("phase1", 0.0) + cache_seconds
            run.timings["feature_cache"] = cache_seconds
        return run

    # ------------------------------------------------------------------ feature cache
    def _plan_cache(
        self,
        model: keras.Model,
        backbone_model: keras.Model,
        train_data: Any,
        validation_data: Any,
        has_validation: bool,
    ) -> tuple[Any, dict[str, Any]]:
        """Decides whether phase 1 trains on cached features: ``(split or None, info)``."""
        from finetunekit.training import feature_cache as fc

        info: dict[str, Any] = {"used": False, "reason": "", "bytes": 0, "spilled": False}
        reason = None
        if self.cache_features is False:
            reason = "switched off (Trainer(cache_features=False))"
        elif not self.epochs:
            reason = "no frozen phase (epochs=0)"
        elif self.cache_features == "auto" and self.epochs < 2:
            reason = "one frozen epoch: every feature is computed once anyway"
        elif problem := distribute.cache_problem(self.resolved_strategy()):
            reason = problem
        elif self.checkpoint_dir is not None:
            reason = "checkpoint_dir is set: resumable runs train the full model in phase 1"
        elif train_data is None or (has_validation and validation_data is None):
            reason = "the Trainer got tf.data datasets, not DatasetAdapters to replay"
        else:
            savers = [
                type(cb).__name__
                for cb in self.callbacks
                if isinstance(
                    cb, (keras.callbacks.ModelCheckpoint, keras.callbacks.BackupAndRestore)
                )
            ]
            problems = [d.replay_problem() for d in (train_data, validation_data) if d is not None]
            if savers:
                reason = f"callbacks {savers} would save the head-only model"
            elif any(problems):
                reason = next(p for p in problems if p)
        split = None
        if reason is None:
            try:
                split = fc.split_frozen(model, backbone_model)
            except fc.CacheUnavailable as exc:
                reason = exc.reason
        if split is None:
            info["reason"] = str(reason)
            if self.cache_features is True:
                warnings.warn(
                    f"cache_features=True but phase 1 runs without the cache: {reason}",
                    UserWarning,
                    stacklevel=3,
                )
            fc.logger.info("finetunekit: feature cache not used: %s", reason)
            return None, info
        info.update(used=True, reason="frozen backbone, deterministic inputs")
        return split, info

    def _fit_cached(
        self,
        split: Any,
        model: keras.Model,
        loss: Any,
        metrics: Any,
        session: Any,
        initial_epoch: int,
        last: int,
        train_data: Any,
        validation_data: Any,
        train_ds: Any,
        info: dict[str, Any],
        class_weight: dict[int, float] | None = None,
    ) -> float:
        """Phase 1 on cached features; returns the seconds spent outside ``fit``."""
        from finetunekit.training.feature_cache import FeatureCache, FullModelCallback

        start = time.perf_counter()
        with FeatureCache(
            split,
            train_data,
            validation_data,
            self.batch_size,
            int(self.cache_memory_mb * 2**20),
            jit_compile=bool(resolve_jit_compile(self.jit_compile, "features")),
        ) as cache:
            seconds = time.perf_counter() - start
            info.update(bytes=cache.nbytes, spilled=cache.spilled)
            head = split.head_model
            # A head step takes microseconds, so Keras' per-step Python dominates: run
            # many steps per call unless user callbacks may want every batch.
            batches = -(-len(train_data) // self.batch_size)
            per_call = 1 if self.callbacks else max(1, min(_HEAD_STEPS_PER_CALL, batches))
            head.compile(  # the full model's optimizer (loss-scaled for mixed_float16): one state
                optimizer=model.optimizer,
                loss=loss,
                metrics=_fresh(metrics),
                jit_compile=resolve_jit_compile(self.jit_compile, "head"),
                steps_per_execution=per_call,
            )
            fit = head.fit(
                cache.train_dataset(shuffle=self.shuffle, seed=self.seed),
                validation_data=cache.validation_dataset(),
                initial_epoch=initial_epoch,
                epochs=last,
                class_weight=class_weight,
                callbacks=[
                    *self.callbacks,
                    *self._tensorboard(),
                    FullModelCallback(session.callback(1), model),
                ],
                verbose=self.verbose,
                shuffle=False,
            )
        if self.fine_tune_epochs:
            # Draw the raw pipeline's shuffles of the epochs just run, so phase 2 sees
            # the same order of examples as it would after an uncached phase 1.
            start = time.perf_counter()
            _fast_forward(train_ds, len(fit.epoch))
            seconds += time.perf_counter() - start
        return seconds

    def _tensorboard(self) -> list[keras.callbacks.Callback]:
        """A fresh TensorBoard callback for one phase (``[]`` without ``log_dir``)."""
        if self.log_dir is None or not distribute.is_chief():  # only the chief logs
            return []
        return [keras.callbacks.TensorBoard(log_dir=self.log_dir)]

    # ------------------------------------------------------------------ config
    def get_config(self) -> dict[str, Any]:
        """Returns the JSON-serialisable settings (callbacks are not included)."""
        return {
            "optimizer": optimizer_config(self.optimizer),
            "learning_rate": rate_config(self.learning_rate),
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "fine_tune_epochs": self.fine_tune_epochs,
            "fine_tune_learning_rate": rate_config(self.fine_tune_learning_rate),
            "unfreeze": self.unfreeze,
            "train_bn": self.train_bn,
            "early_stopping": self.early_stopping,
            "monitor": self.monitor,
            "verbose": self.verbose,
            "seed": self.seed,
            "jit_compile": self.jit_compile,
            "shuffle": self.shuffle,
            "keep_best": self.keep_best,
            "checkpoint_dir": self.checkpoint_dir,
            "log_dir": self.log_dir,
            "cache_features": self.cache_features,
            "cache_memory_mb": self.cache_memory_mb,
            "precision": self.precision,
            "strategy": distribute.strategy_name(self.strategy),
            "layer_groups": self.layer_groups,
            "gradual_unfreeze": self.gradual_unfreeze,
            "lr_multipliers": self.lr_multipliers,
            "schedule": self.schedule,
            "warmup": self.warmup,
            "label_smoothing": self.label_smoothing,
            "class_weight": self.class_weight,
            "gradient_accumulation_steps": self.gradient_accumulation_steps,
            "weight_decay": self.weight_decay,
            "lora_rank": self.lora_rank,
            "lora_alpha": self.lora_alpha,
            "lora_layers": self.lora_layers,
            "augment": self.augment,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Trainer:
        """Rebuilds a trainer from :meth:`get_config`; unknown keys raise ``ConfigError``."""
        valid = set(cls().get_config())
        check_config_keys("Trainer", config, valid)
        config = dict(config)
        if "optimizer" in config:
            config["optimizer"] = optimizer_from_config(config["optimizer"])
        return cls(**config)

    def __repr__(self) -> str:
        return (
            f"Trainer(optimizer={self.optimizer!r}, learning_rate={self.learning_rate!r}, "
            f"epochs={self.epochs!r}, batch_size={self.batch_size!r}, "
            f"fine_tune_epochs={self.fine_tune_epochs!r})"
        )


def _fresh(metrics: Any) -> list[Any]:
    return list(metrics()) if callable(metrics) else list(metrics)


def _fast_forward(train_ds: Any, epochs: int) -> None:
    """Advances a reshuffling ``tf.data`` pipeline by ``epochs`` passes without reading it.

    ``Dataset.shuffle(seed=..., reshuffle_each_iteration=True)`` draws each
    pass's order when an iterator is created. Keras 3's ``fit`` creates two
    iterators per epoch when the number of batches is known (one for the
    epoch, one made ahead at its end) and one otherwise; creating and dropping
    as many here makes a resumed run see the same order of examples in its
    next epochs as the uninterrupted run would have.
    """
    if not isinstance(train_ds, tf.data.Dataset) or epochs <= 0:
        return
    try:
        known = int(train_ds.cardinality()) > 0
    except Exception:  # pragma: no cover - cardinality always exists on tf.data
        known = False
    for _ in range(epochs * (2 if known else 1)):
        iterator = iter(train_ds)
        del iterator


def _metric_names(metrics: Any) -> list[str]:
    """The log names of ``metrics`` (names, metric objects or functions)."""
    names = []
    for metric in _fresh(metrics):
        if isinstance(metric, str):
            names.append(metric)
        else:
            name = getattr(metric, "name", None) or getattr(metric, "__name__", None)
            if name:
                names.append(str(name))
    return names


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


def _check_cache_features(value: Any) -> bool | str:
    if value not in ("auto", True, False) or not (isinstance(value, bool) or value == "auto"):
        raise TrainerError(
            format_error(
                "cache_features must be 'auto', True or False",
                expected="'auto' (when it pays off), True or False",
                received={"cache_features": value},
                fix="Pass cache_features='auto'",
            )
        )
    return value


def _check_memory_mb(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 2**40:
        raise TrainerError(
            format_error(
                "cache_memory_mb must be a number of MiB >= 0",
                expected="e.g. 512 (0 keeps every cached feature in a temporary file)",
                received={"cache_memory_mb": value},
                fix="Pass cache_memory_mb=512",
            )
        )
    return float(value) if not float(value).is_integer() else int(value)
