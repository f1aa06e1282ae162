"""The training engine: the two-phase algorithm that runs a :class:`~finetunekit.Trainer`.

It reads as the algorithm::

    for each phase (1: frozen backbone, 2: unfrozen):
        freeze or unfreeze the backbone
        compile (one place: the phase's optimizer, loss, metrics, XLA choice)
        if phase 1 trains on cached features: fit the head on them
        else: for each frozen set of the phase (gradual unfreezing): fit

around it: the datasets are made here from the adapters (``batch_size`` has
one home), the methods plan (``training/methods.py``) gives the loss, the
optimizers and the frozen sets, a :class:`~finetunekit.training.checkpoint.
TrainingSession` keeps history, early stopping, best weights and
checkpoints, and ``training/distribute.py`` runs ``fit`` under the strategy.

What the pipeline built arrives as one :class:`BuiltModel` (the model, the
nested backbone, the features tensor where the feature cache may cut, the
task, the loss and facts); the data as :class:`TrainingData`.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import keras
import tensorflow as tf

from finetunekit.errors import TrainerError, format_error
from finetunekit.training import distribute, fit_loop
from finetunekit.training.checkpoint import CheckpointStore, TrainingSession, fingerprint
from finetunekit.training.compute import AutoPrecision, resolve_jit_compile
from finetunekit.training.freezing import freeze, unfreeze
from finetunekit.training.lora import apply_lora, check_lora_targets
from finetunekit.training.methods import MethodsPlan

__all__ = [
    "BuiltModel",
    "TrainingData",
    "TrainingRun",
    "check_backbone",
    "check_monitor",
    "compile_phase",
    "run",
]

_HEAD_STEPS_PER_CALL = 64  # steps per tf.function call when training on cached features


@dataclass
class BuiltModel:
    """What the pipeline built, handed to the engine in one piece.

    Attributes:
        model: the full model: raw inputs -> input adaptation -> backbone -> head.
        backbone_model: the backbone nested in ``model`` (frozen / unfrozen by phase).
        features: the symbolic tensor of ``model``'s graph where phase 1 may be
            cut for the feature cache (the backbone's features, after the
            head's parameter-free pooling when it has one), or ``None``: the
            cache then looks for the backbone's output in the graph itself.
        task: the :class:`~finetunekit.Task` (``None`` for a bare Keras model).
        loss: the task's loss for the head (the Trainer adds label smoothing).
        info: facts about the build (input adaptation, backbone, target scaling...).
        lora_targets: the backbone's default LoRA target layers
            (``Trainer(lora_layers="auto")``), or ``None``: every supported kind.
        inference_model: what the result keeps when training runs another
            model around it (``Task.training_model``: the embedding task trains
            a pair wrapper and keeps the encoder), or ``None``: ``model``.
        cache_problem: why the feature cache cannot cut ``model`` (reported
            in ``result.info["feature_cache"]``), or ``None``.
    """

    model: keras.Model
    backbone_model: keras.Model
    features: Any = None
    task: Any = None
    loss: Any = None
    info: dict[str, Any] = field(default_factory=dict)
    lora_targets: list[Any] | None = None
    inference_model: keras.Model | None = None
    cache_problem: str | None = None

    @property
    def result_model(self) -> keras.Model:
        """The model the result holds: ``inference_model`` or else ``model``."""
        return self.inference_model if self.inference_model is not None else self.model

    def __iter__(self) -> Any:
        """``model, backbone_model, info = built``: the tuple ``build_model`` used to return."""
        return iter((self.model, self.backbone_model, self.info))

    @classmethod
    def of(cls, model: keras.Model, backbone_model: keras.Model) -> BuiltModel:
        """A bare Keras model and the backbone nested in it (``Trainer.train``)."""
        return cls(model=model, backbone_model=backbone_model)


@dataclass
class TrainingData:
    """One split of the data: a ``DatasetAdapter``, a batched ``tf.data``, or both.

    The engine makes the batches from the adapter (``batch_size``, shuffling
    and its seed are the Trainer's); a ``tf.data`` dataset given by a user of
    ``Trainer.train`` is used as it is.
    """

    adapter: Any = None
    dataset: Any = None

    @classmethod
    def of(cls, data: Any, adapter: Any = None) -> TrainingData:
        """From what ``Trainer.train`` received: an adapter, a dataset, or a dataset + adapter."""
        if data is not None and hasattr(data, "as_dataset") and hasattr(data, "index_dataset"):
            return cls(adapter=data)
        return cls(adapter=adapter, dataset=data)

    def batches(self, batch_size: int, *, shuffle: bool = False, seed: int | None = None) -> Any:
        """The batched ``tf.data`` of ``(x, y)`` training / validation reads."""
        if self.dataset is not None:
            return self.dataset
        return self.adapter.as_dataset(batch_size, shuffle=shuffle, seed=seed)


@dataclass
class TrainingRun:
    """What :func:`run` (and ``Trainer.train``) returns.

    Attributes:
        history: Keras-style ``{metric: [value per epoch]}`` over both phases,
            with ``"phase"`` (1 or 2) and ``"epoch"`` lists marking each epoch.
        timings: wall seconds per phase (``"phase1"``, ``"phase2"``); with the
            feature cache also ``"feature_cache"`` (included in ``"phase1"``:
            the feature pass, and the head's compile and trace that run
            alongside it).
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


# ---------------------------------------------------------------------- checks
def check_backbone(
    trainer: Any, backbone_model: keras.Model, lora_targets: list[Any] | None = None
) -> None:
    """Raises before training when ``unfreeze`` exceeds the backbone or LoRA has no target."""
    if trainer.fine_tune_epochs and trainer.unfreeze != "all":
        from finetunekit.training.freezing import weight_layers

        available = len(weight_layers(backbone_model, trainer.train_bn))
        if int(trainer.unfreeze) > available:
            unfreeze(backbone_model, trainer.unfreeze, trainer.train_bn)  # raises TrainerError
    if trainer.lora_rank is not None:  # raises when LoRA has nothing to adapt
        check_lora_targets(
            backbone_model, trainer.lora_layers, trainer.unfreeze, trainer.train_bn, lora_targets
        )


def check_monitor(trainer: Any, metric_names: Sequence[str], has_validation: bool) -> None:
    """Raises when early stopping or ``keep_best`` watch a quantity training never logs."""
    if not (trainer.early_stopping or trainer.keep_best):
        return
    names = ["loss", *metric_names]
    valid = names + ([f"val_{n}" for n in names] if has_validation else [])
    if trainer.resolved_monitor(has_validation) not in valid:
        raise TrainerError(
            format_error(
                f"Unknown monitor {trainer.monitor!r}: training logs no such quantity",
                expected=f"one of {valid}"
                + ("" if has_validation else " (no validation data, so no val_ values)"),
                received={"monitor": trainer.monitor},
                fix="Pass monitor='val_loss' (or a metric name from the list)",
            )
        )


def compile_phase(
    trainer: Any,
    model: keras.Model,
    optimizer: Any,
    loss: Any,
    metrics: Any = (),
    *,
    step: str,
) -> None:
    """Compiles ``model`` as training does: fresh metrics and the XLA choice for ``step``.

    Args:
        trainer: the :class:`~finetunekit.Trainer` (its ``jit_compile``).
        model: the model.
        optimizer: the optimizer (a new one per phase; the same one again
            when gradual unfreezing changes the frozen set).
        loss: the loss.
        metrics: a callable returning fresh metric objects, or metric names.
        step: ``"frozen"`` (phase 1) or ``"full"`` (phase 2); see
            :func:`~finetunekit.training.compute.resolve_jit_compile`.
    """
    model.compile(
        optimizer=optimizer,
        loss=loss,
        metrics=_fresh(metrics),
        jit_compile=resolve_jit_compile(trainer.jit_compile, step),
    )


# ---------------------------------------------------------------------- the algorithm
def run(
    trainer: Any,
    built: BuiltModel,
    train: TrainingData,
    validation: TrainingData | None = None,
    *,
    loss: Any = None,
    metrics: Sequence[Any] | Callable[[], Sequence[Any]] = (),
) -> TrainingRun:
    """Trains ``built.model``: phase 1 (frozen backbone) then phase 2 (unfrozen).

    With ``checkpoint_dir``, a checkpoint left there by an interrupted run of
    the same recipe is loaded first and training continues after its last
    completed epoch.

    Args:
        trainer: the :class:`~finetunekit.Trainer` (its settings).
        built: the model and what the pipeline knows about it.
        train: the training data.
        validation: the validation data, or ``None``.
        loss: the loss (default ``built.loss``).
        metrics: a callable returning fresh metric objects, or metric names.

    Returns:
        A :class:`TrainingRun`.
    """
    with trainer.resolved_strategy().scope():
        return _run(
            trainer, built, train, validation, built.loss if loss is None else loss, metrics
        )


def _run(
    trainer: Any,
    built: BuiltModel,
    train: TrainingData,
    validation: TrainingData | None,
    loss: Any,
    metrics: Any,
) -> TrainingRun:
    model, backbone_model = built.model, built.backbone_model
    strategy = trainer.resolved_strategy()
    train_ds = train.batches(
        trainer.batch_size,
        shuffle=trainer.shuffle,
        seed=distribute.data_seed(strategy, trainer.seed),
    )
    validation_ds = validation.batches(trainer.batch_size) if validation is not None else None
    if built.task is not None:  # detection: box-aware augmentation of the training batches
        if train.dataset is None:
            train_ds = built.task.training_batches(train_ds, trainer=trainer, training=True)
        if validation_ds is not None and validation is not None and validation.dataset is None:
            validation_ds = built.task.training_batches(
                validation_ds, trainer=trainer, training=False
            )
    check_backbone(trainer, backbone_model, built.lora_targets)
    has_validation = validation_ds is not None
    check_monitor(trainer, _metric_names(metrics), has_validation)
    plan = MethodsPlan(trainer, backbone_model, train_ds, train.adapter)  # training/methods.py
    loss = plan.loss(loss)  # label_smoothing
    result = TrainingRun()
    result.info["strategy"] = distribute.describe(strategy)
    distribute.broadcast_from_chief(strategy, model.weights)  # same start on every worker
    if trainer.lora_rank is not None:  # before epoch 1: the same variables in every phase
        result.info["lora"] = apply_lora(
            backbone_model,
            trainer.lora_rank,
            alpha=trainer.lora_alpha,
            kinds=trainer.lora_layers,
            unfreeze=trainer.unfreeze,
            train_bn=trainer.train_bn,
            targets=built.lora_targets,
        )
    session = TrainingSession(
        monitor=trainer.resolved_monitor(has_validation),
        early_stopping=trainer.early_stopping,
        keep_best=trainer.keep_best,
        store=CheckpointStore(trainer.checkpoint_dir, writer=distribute.is_chief(strategy))
        if trainer.checkpoint_dir
        else None,
        run_fingerprint=fingerprint(trainer.get_config(), model, train_ds, validation_ds, loss),
        verbose=trainer.verbose,
    )
    if session.resume(model):
        result.resumed_from = session.resumed_from
        _fast_forward(train_ds, len(session.rows))
    if trainer.checkpoint_dir:  # every worker, resumed or not: all must have read the chief's
        distribute.check_resumed(strategy, len(session.rows), trainer.checkpoint_dir)
    from finetunekit.training import feature_cache as fc

    split, cache_info = fc.decide(trainer, built, train, validation, strategy)
    result.info["feature_cache"] = cache_info
    cache_seconds = 0.0
    precision = AutoPrecision(trainer.precision, model)  # "auto": the policy per phase

    for phase, rate, first, last in trainer.phases(built.task):
        step = "frozen" if phase == 1 else "full"
        if phase == 1:
            freeze(backbone_model)
        else:
            plan.unfreeze(backbone_model)  # with gradual_unfreeze: every group it reaches
        result.trainable_params[f"phase{phase}"] = _count_params(model.trainable_weights)
        if session.phase_done(phase):  # completed before a restart
            continue
        head_only = split.head_model if phase == 1 and split is not None else None
        choice = precision.choose(  # phase 1 on cached features trains the head alone
            model if head_only is None else head_only,
            step if head_only is None else "head",
            trainer.batch_size,
            steps=_phase_steps(train, train_ds, trainer.batch_size, last - first),
        )
        result.info.setdefault("precision", {})[f"phase{phase}"] = choice.info()
        # a fresh optimizer per phase: rates per group, schedule, decay
        compile_phase(trainer, model, plan.optimizer(phase, rate), loss, metrics, step=step)
        plan.build_optimizer(model)
        initial_epoch = session.begin_phase(phase, first, model)
        if not session.should_train(last):
            pass
        elif phase == 1 and split is not None:
            cache_seconds = _fit_cached(
                trainer,
                split,
                built,
                train,
                validation,
                train_ds,
                session,
                plan,
                loss,
                metrics,
                initial_epoch,
                last,
                cache_info,
            )
        else:
            # one fit per frozen set (gradual_unfreeze recompiles between them, keeping the
            # optimizer: its state and step carry on)
            for start, end in plan.segments(
                phase,
                initial_epoch,
                last,
                backbone_model,
                recompile=functools.partial(
                    compile_phase, trainer, model, model.optimizer, loss, metrics, step=step
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
                    callbacks=[*trainer.callbacks, *_tensorboard(trainer), session.callback(phase)],
                    verbose=trainer.verbose,
                    shuffle=False,  # the tf.data pipeline already shuffles, seeded
                    class_weight=plan.class_weight,
                )
        session.end_phase(phase, model)
    session.finish(model)
    distribute.release(model, strategy)  # predict / evaluate / save on each worker alone
    result.history = session.history()
    plan.annotate(result)  # history["unfrozen_groups"], info["layer_groups"]
    result.timings = {k: v for k, v in session.timings.items() if k.startswith("phase")}
    if cache_seconds:  # phase 1 includes computing the cached features
        result.timings["phase1"] = result.timings.get("phase1", 0.0) + cache_seconds
        result.timings["feature_cache"] = cache_seconds
    return result


def _fit_cached(
    trainer: Any,
    split: Any,
    built: BuiltModel,
    train: TrainingData,
    validation: TrainingData | None,
    train_ds: Any,
    session: TrainingSession,
    plan: MethodsPlan,
    loss: Any,
    metrics: Any,
    initial_epoch: int,
    last: int,
    info: dict[str, Any],
) -> float:
    """Phase 1 on cached features; returns the seconds spent outside ``fit``."""
    from finetunekit.training.feature_cache import FeatureCache, FullModelCallback

    model = built.model
    start = time.perf_counter()
    head = split.head_model
    cache = FeatureCache(
        split,
        train.adapter,
        validation.adapter if validation is not None else None,
        trainer.batch_size,
        int(trainer.cache_memory_mb * 2**20),
        jit_compile=bool(resolve_jit_compile(trainer.jit_compile, "features")),
    )
    batches = cache.train_steps
    one_iterator = cache.replays_epochs()
    validation_shape = cache.validation_shape_dataset()  # structure only: no features yet
    problem = _head_loop_problem(trainer, one_iterator, validation_shape)
    info["head_loop"] = "finetunekit" if problem is None else f"keras fit: {problem}"
    # A head step takes about a millisecond, so fit's fixed and per-step Python costs
    # dominate: finetunekit's head loop runs an epoch per call; Keras' fit (used when the
    # head loop cannot be) runs many steps per call unless callbacks may want every batch.
    per_call = 1 if trainer.callbacks else _steps_per_call(batches)

    def prepare_head() -> fit_loop.HeadSteps | None:
        """Compiles the head and traces its loop: run while the backbone computes features."""
        head.compile(  # the full model's optimizer (loss-scaled for mixed_float16): one state
            optimizer=model.optimizer,
            loss=loss,
            metrics=_fresh(metrics),
            jit_compile=resolve_jit_compile(trainer.jit_compile, "head"),
            steps_per_execution=per_call,
        )
        if problem is not None:
            return None
        return fit_loop.trace_head(
            head,
            cache.train_shape_dataset(),
            batches,
            validation=validation_shape,
            class_weight=plan.class_weight,
        )

    cache.meanwhile = prepare_head
    with cache:
        seconds = time.perf_counter() - start
        info.update(bytes=cache.nbytes, spilled=cache.spilled)
        validation_ds = cache.validation_dataset()
        epochs = last - initial_epoch
        callbacks = [
            *trainer.callbacks,
            *_tensorboard(trainer),
            FullModelCallback(session.callback(1), model),
        ]
        if problem is None:
            fit = fit_loop.fit_head(
                head,
                cache.train_epochs_dataset(epochs, shuffle=trainer.shuffle, seed=trainer.seed),
                batches,
                validation=validation_ds,
                epochs=last,
                initial_epoch=initial_epoch,
                callbacks=callbacks,
                verbose=trainer.verbose,
                class_weight=plan.class_weight,
                traced=cache.meanwhile_result,
            )
        else:
            # One iterator for every epoch (the same batches per epoch as one per epoch,
            # see FeatureCache.train_epochs_dataset) when the epoch splits into whole calls.
            one_iterator = one_iterator and batches % per_call == 0
            fit = distribute.fit(  # model.fit, after building its variables (one trace)
                head,
                None,
                cache.train_epochs_dataset(epochs, shuffle=trainer.shuffle, seed=trainer.seed)
                if one_iterator
                else cache.train_dataset(shuffle=trainer.shuffle, seed=trainer.seed),
                steps_per_epoch=batches if one_iterator else None,
                validation_data=validation_ds,
                initial_epoch=initial_epoch,
                epochs=last,
                class_weight=plan.class_weight,
                callbacks=callbacks,
                verbose=trainer.verbose,
                shuffle=False,
            )
    if trainer.fine_tune_epochs:
        # Draw the raw pipeline's shuffles of the epochs just run, so phase 2 sees
        # the same order of examples as it would after an uncached phase 1.
        start = time.perf_counter()
        _fast_forward(train_ds, len(fit.epoch))
        seconds += time.perf_counter() - start
    return seconds


def _phase_steps(train: TrainingData, train_ds: Any, batch_size: int, epochs: int) -> int | None:
    """Training steps of a phase of ``epochs`` epochs, or ``None`` when the batches are unknown."""
    if train.adapter is not None:
        return epochs * -(-len(train.adapter) // batch_size)
    try:
        batches = int(train_ds.cardinality())
    except (AttributeError, TypeError):  # not a tf.data dataset
        return None
    return epochs * batches if batches > 0 else None


def _head_loop_problem(
    trainer: Any, replays_epochs: bool, validation: tf.data.Dataset | None
) -> str | None:
    """Why phase 1 on cached features trains through Keras' ``fit`` rather than
    :func:`~finetunekit.training.fit_loop.fit_head` (``None``: it does not).

    Examples:
        >>> from finetunekit import Trainer
        >>> _head_loop_problem(Trainer(), True, None) is None
        True
        >>> _head_loop_problem(Trainer(log_dir="logs"), True, None)
        'log_dir is set (TensorBoard logs every batch)'
    """
    if trainer.callbacks:
        return "callbacks are given, and they may want every batch"
    if trainer.log_dir is not None:
        return "log_dir is set (TensorBoard logs every batch)"
    if not replays_epochs:
        return "the number of batches per epoch is unknown"
    if validation is not None and int(validation.cardinality()) < 0:
        return "the number of validation batches is unknown"
    return None


def _steps_per_call(batches: int) -> int:
    """Head steps per ``tf.function`` call: the largest divisor of ``batches`` up to 64,
    or 64 (up to ``batches``) when the best divisor is below 8 (a prime count, say).

    Examples:
        >>> [_steps_per_call(b) for b in (5, 32, 80, 256, 67)]
        [5, 32, 40, 64, 64]
    """
    top = max(1, min(_HEAD_STEPS_PER_CALL, batches))
    best = max(d for d in range(1, top + 1) if batches % d == 0)
    return best if best >= min(8, batches) else top


def _tensorboard(trainer: Any) -> list[keras.callbacks.Callback]:
    """A fresh TensorBoard callback for one phase (``[]`` without ``log_dir``)."""
    if trainer.log_dir is None or not distribute.is_chief():  # only the chief logs
        return []
    return [keras.callbacks.TensorBoard(log_dir=trainer.log_dir)]


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
