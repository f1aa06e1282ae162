"""Scale out on ``tf.distribute``: strategies by name, the chief, and a ``fit`` for many hosts.

``Trainer(strategy=...)`` takes a ``tf.distribute.Strategy`` or one of the
names in :data:`STRATEGY_NAMES`; :func:`resolve_strategy` turns a name into a
strategy (one per process, reused) or raises a ``TrainerError`` that names the
fix. The model is built, compiled and trained in the strategy's scope.

Every phase trains through :func:`fit`. It calls ``model.fit`` unchanged for
every strategy Keras supports (the default one, ``MirroredStrategy``,
``TPUStrategy``). Under ``MultiWorkerMirroredStrategy`` Keras 3's own ``fit``
fails on TensorFlow (keras-team/keras#20585, still so in Keras 3.15: the
first batch is reduced with a collective that cannot take ``PerReplica``
values, and the per-step logs are reduced along an axis scalars do not
have), so :func:`fit` runs the same epochs itself: the dataset goes through
``strategy.experimental_distribute_dataset`` (sharded by data, or by file
when the pipeline reads record files), every step is the model's own
``train_step`` / ``test_step`` inside ``strategy.run``, and the metrics are
read across all workers. The loop drives a ``keras.callbacks.CallbackList``
the way ``model.fit`` does (progress bar, the user's callbacks,
validation, ``History``), so nothing changes for the caller.

Only the chief (:func:`is_chief`) writes checkpoints, TensorBoard logs and
saved results; the other workers compute the same values and write to
temporary folders or not at all (see docs/distributed.md).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import keras
import tensorflow as tf

from finetunekit import _compat
from finetunekit.errors import TrainerError, format_error
from finetunekit.training import fit_loop

__all__ = [
    "STRATEGY_NAMES",
    "broadcast_from_chief",
    "cache_problem",
    "check_batch_size",
    "check_resumed",
    "check_same_on_workers",
    "check_strategy",
    "data_seed",
    "describe",
    "distribute_dataset",
    "fit",
    "is_chief",
    "is_multi_worker",
    "num_workers",
    "release",
    "resolve_strategy",
    "shard_policy",
    "strategy_name",
    "tf_config",
    "worker_scratch",
]

logger = logging.getLogger("finetunekit")

#: The strategy names ``Trainer(strategy=...)`` accepts.
STRATEGY_NAMES = ("default", "mirrored", "multi_worker", "tpu")

_ALIASES = {
    "multiworker": "multi_worker",
    "multi_worker_mirrored": "multi_worker",
    "none": "default",
}
_RESOLVED: dict[str, tf.distribute.Strategy] = {}  # one strategy of each name per process
_FILE_READERS = ("RecordDataset", "TextLineDataset")  # op names of file-reading tf.data sources
# The loop's compiled steps per model, kept until the model is compiled again (as model.fit
# keeps its train_function), so fit once per epoch (gradual unfreezing) traces once.
_STEPS: weakref.WeakKeyDictionary[Any, tuple[tuple[int, ...], dict[str, Any]]] = (
    weakref.WeakKeyDictionary()
)


# ---------------------------------------------------------------------------- names
def _normalise(name: str) -> str:
    key = name.strip().lower().replace("-", "_").replace(" ", "_")
    return _ALIASES.get(key, key)


def check_strategy(strategy: Any) -> str | tf.distribute.Strategy:
    """Validates a ``Trainer(strategy=...)`` value; returns the name or the instance.

    Nothing is created here (a name is resolved when training starts).

    Args:
        strategy: a ``tf.distribute.Strategy`` or a name: ``"default"``,
            ``"mirrored"``, ``"multi_worker"`` or ``"tpu"``.

    Returns:
        The normalised name, or the strategy as given.

    Raises:
        TrainerError: an unknown name, a strategy Keras cannot train with
            (``ParameterServerStrategy``), or another type.

    Examples:
        >>> check_strategy("Multi-Worker")
        'multi_worker'
    """
    if isinstance(strategy, tf.distribute.Strategy):
        if "ParameterServer" in type(strategy).__name__:
            raise TrainerError(
                format_error(
                    "ParameterServerStrategy is not supported: finetunekit trains "
                    "synchronously (every worker holds the whole model)",
                    expected=f"a synchronous strategy or one of {list(STRATEGY_NAMES)}",
                    received={"strategy": type(strategy).__name__},
                    fix="Pass strategy='multi_worker' (hosts listed in TF_CONFIG)",
                )
            )
        return strategy
    if isinstance(strategy, str) and _normalise(strategy) in STRATEGY_NAMES:
        return _normalise(strategy)
    raise TrainerError(
        format_error(
            "Unknown strategy",
            expected=f"a tf.distribute.Strategy or one of {list(STRATEGY_NAMES)}",
            received={"strategy": strategy},
            fix="Pass strategy='mirrored' for all local GPUs, 'multi_worker' for several "
            "hosts (TF_CONFIG), 'tpu', or 'default' for one device",
        )
    )


def strategy_name(strategy: str | tf.distribute.Strategy) -> str:
    """The name stored in ``Trainer.get_config()``: the name, or an instance's kind.

    ``MirroredStrategy`` (and ``CentralStorageStrategy``) are ``"mirrored"``,
    ``MultiWorkerMirroredStrategy`` is ``"multi_worker"``, ``TPUStrategy`` is
    ``"tpu"`` and every other strategy (``OneDeviceStrategy``, the default
    one) is ``"default"``. A recipe rebuilt from its config therefore
    resolves the same kind of strategy on the machine it runs on (the device
    list of an instance is not kept).

    Examples:
        >>> import tensorflow as tf
        >>> strategy_name(tf.distribute.OneDeviceStrategy("/cpu:0"))
        'default'
    """
    if isinstance(strategy, str):
        return strategy
    kind = type(strategy).__name__
    if kind.startswith("TPUStrategy"):
        return "tpu"
    if is_multi_worker(strategy):
        return "multi_worker"
    if kind in ("MirroredStrategy", "CentralStorageStrategy"):
        return "mirrored"
    return "default"


# ---------------------------------------------------------------------------- resolve
def resolve_strategy(strategy: str | tf.distribute.Strategy = "default") -> tf.distribute.Strategy:
    """Returns the ``tf.distribute.Strategy`` for a name (or the instance given).

    * ``"default"``: the strategy of an enclosing ``strategy.scope()``, else
      TensorFlow's default strategy (one device).
    * ``"mirrored"``: ``MirroredStrategy`` over all local GPUs (over all
      logical CPU devices when there is no GPU).
    * ``"multi_worker"``: ``MultiWorkerMirroredStrategy`` over the hosts of
      the ``TF_CONFIG`` environment variable. TensorFlow only allows it to be
      created before it runs anything else, so call this at the top of the
      script (before data or Keras models are made); later calls, and
      ``Trainer(strategy="multi_worker")``, reuse that strategy.
    * ``"tpu"``: ``TPUStrategy`` on the TPU of this VM (or ``TPU_NAME``).

    A name is resolved once per process; later calls return the same
    strategy. A strategy of the same kind in an enclosing scope is used as is.

    Raises:
        TrainerError: the hardware or the ``TF_CONFIG`` the name needs is
            missing, or TensorFlow started before ``"multi_worker"`` could be set up.

    Examples:
        >>> resolve_strategy("default").num_replicas_in_sync
        1
    """
    strategy = check_strategy(strategy)
    current = tf.distribute.get_strategy()
    if not isinstance(strategy, str):
        resolved = strategy
    elif strategy == "default" or (
        strategy_name(current) == strategy and tf.distribute.has_strategy()
    ):
        resolved = current  # the default strategy, or the user's own strategy in scope
    else:
        resolved = _RESOLVED.get(strategy) or _create(strategy)
    if is_multi_worker(resolved):  # is_chief() without a strategy looks here
        _RESOLVED.setdefault("multi_worker", resolved)
    return resolved


def _create(name: str) -> tf.distribute.Strategy:
    """Creates the strategy a name stands for (once per process: kept in ``_RESOLVED``)."""
    make = {"mirrored": _mirrored, "multi_worker": _multi_worker, "tpu": _tpu}[name]
    strategy = _RESOLVED[name] = make()
    logger.info(
        "finetunekit: strategy %r: %s with %d replicas",
        name,
        type(strategy).__name__,
        strategy.num_replicas_in_sync,
    )
    return strategy


def _mirrored() -> tf.distribute.Strategy:
    gpus = tf.config.list_logical_devices("GPU")
    devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
    return tf.distribute.MirroredStrategy(devices)


def tf_config() -> dict[str, Any] | None:
    """The parsed ``TF_CONFIG`` environment variable, or ``None`` when unset.

    Raises:
        TrainerError: ``TF_CONFIG`` is set but is not the JSON TensorFlow expects.

    Examples:
        >>> import os
        >>> "TF_CONFIG" in os.environ or tf_config() is None
        True
    """
    text = os.environ.get("TF_CONFIG", "").strip()
    if not text:
        return None
    example = '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}'
    try:
        config = json.loads(text)
    except ValueError as exc:
        raise TrainerError(
            format_error(
                f"TF_CONFIG is not valid JSON ({exc})",
                expected=f"e.g. {example}",
                received={"TF_CONFIG": text},
                fix="Set TF_CONFIG to the JSON of the cluster and of this worker's task",
            )
        ) from exc
    cluster = config.get("cluster") if isinstance(config, dict) else None
    task = config.get("task") if isinstance(config, dict) else None
    if not isinstance(cluster, dict) or not isinstance(task, dict) or "type" not in task:
        raise TrainerError(
            format_error(
                "TF_CONFIG needs a 'cluster' (job name -> host:port list) and this "
                "process's 'task' ({'type', 'index'})",
                expected=f"e.g. {example}",
                received={"TF_CONFIG": text},
                fix="Give every worker the same cluster and its own task index",
            )
        )
    return config


def _multi_worker() -> tf.distribute.Strategy:
    if tf_config() is None:
        raise TrainerError(
            format_error(
                "strategy='multi_worker' needs the TF_CONFIG environment variable, "
                "which lists the hosts of the job and this process's place among them",
                expected='TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", '
                '"host2:12345"]}, "task": {"type": "worker", "index": 0}}\'',
                received={"TF_CONFIG": None},
                fix="Set TF_CONFIG on every worker (same cluster, own index; see "
                "docs/distributed.md), or pass strategy='mirrored' for the GPUs of one machine",
            )
        )
    try:
        return tf.distribute.MultiWorkerMirroredStrategy()
    except RuntimeError as exc:
        if "program startup" not in str(exc):
            raise
        raise TrainerError(
            format_error(
                "MultiWorkerMirroredStrategy must be created before TensorFlow runs "
                "anything, and this process already has (data, a Keras model, ...)",
                expected="the strategy created at the top of the script",
                received={"strategy": "multi_worker"},
                fix="Call finetunekit.training.distribute.resolve_strategy('multi_worker') "
                "(or tf.distribute.MultiWorkerMirroredStrategy()) right after the imports; "
                "Trainer(strategy='multi_worker') then reuses it",
            )
        ) from exc


def _tpu() -> tf.distribute.Strategy:
    local = os.path.exists("/dev/accel0") or os.path.exists("/dev/vfio/0")
    named = bool(os.environ.get("TPU_NAME") or os.environ.get("COLAB_TPU_ADDR"))
    no_tpu = TrainerError(
        format_error(
            "strategy='tpu' but this machine has no TPU",
            expected="a Cloud TPU VM (or TPU_NAME naming a TPU this machine can reach)",
            received={"strategy": "tpu"},
            fix="Run on a TPU VM or set TPU_NAME; pass strategy='mirrored' for GPUs or "
            "strategy='default' for one device",
        )
    )
    if not (local or named or tf.config.list_logical_devices("TPU")):
        raise no_tpu  # without looking for a TPU over the network
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu="local" if local else None)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as exc:
        raise no_tpu from exc


# ---------------------------------------------------------------------------- workers
def is_multi_worker(strategy: Any) -> bool:
    """Whether ``strategy`` is a ``MultiWorkerMirroredStrategy`` (collective all-reduce).

    Examples:
        >>> is_multi_worker(resolve_strategy("default"))
        False
    """
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def is_chief(strategy: Any = None) -> bool:
    """Whether this process writes the files of the run (checkpoints, logs, the model).

    On one machine it always does. Under ``MultiWorkerMirroredStrategy``: the
    ``"chief"`` task, or worker 0 when the cluster has no chief.

    Args:
        strategy: the strategy; default: the one in scope, else the
            multi-worker strategy this process trained with, if any.

    Examples:
        >>> is_chief()
        True
    """
    if strategy is None:
        strategy = tf.distribute.get_strategy()
        if not is_multi_worker(strategy):
            strategy = _RESOLVED.get("multi_worker", strategy)
    resolver = getattr(strategy, "cluster_resolver", None)
    if not is_multi_worker(strategy) or resolver is None:
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type in (None, "chief"):
        return True
    return bool(
        task_type == "worker" and task_id == 0 and "chief" not in resolver.cluster_spec().as_dict()
    )


def num_workers(strategy: Any) -> int:
    """How many worker processes train together (1 unless ``MultiWorkerMirroredStrategy``).

    Examples:
        >>> num_workers(resolve_strategy("default"))
        1
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if not is_multi_worker(strategy) or resolver is None:
        return 1
    spec = resolver.cluster_spec().as_dict()
    return max(1, sum(len(spec.get(job, [])) for job in ("chief", "worker")))


def broadcast_from_chief(strategy: Any, variables: Sequence[Any]) -> None:
    """Gives every worker the chief's values of ``variables`` (floating-point ones).

    Variables made under ``MultiWorkerMirroredStrategy`` start equal on every
    worker, but values assigned afterwards (weights copied from a user's
    model, a checkpoint read from disk) are assigned on each worker alone.
    One all-reduce (the chief contributes its values, the others zeros)
    makes them equal. A no-op on one worker.
    """
    if num_workers(strategy) <= 1:
        return
    chosen = [v for v in variables if "float" in str(v.dtype)]
    if not chosen:
        return
    chief = is_chief(strategy)
    for dtype in sorted({str(v.dtype) for v in chosen}):
        group = [v for v in chosen if str(v.dtype) == dtype]
        flat = tf.concat([tf.reshape(tf.convert_to_tensor(v), [-1]) for v in group], 0)
        if not chief:
            flat = tf.zeros_like(flat)
        flat = strategy.reduce("SUM", flat, axis=None)  # one all-reduce per dtype
        sizes = [int(tf.size(v)) for v in group]
        for variable, value in zip(group, tf.split(flat, sizes), strict=True):
            variable.assign(tf.reshape(value, tuple(variable.shape)))


@contextlib.contextmanager
def worker_scratch(path: str, strategy: Any = None) -> Iterator[str]:
    """Where this worker writes ``path``: the path itself on the chief, a temporary copy elsewhere.

    On the chief it yields ``path``. On the other workers it yields the same
    file name inside a fresh temporary folder, deleted on exit: every worker
    runs the same saving code (which may read variables across workers),
    and only the chief's file stays.

    Examples:
        >>> with worker_scratch("model.keras") as where:
        ...     where
        'model.keras'
    """
    if is_chief(strategy):
        yield path
        return
    folder = tempfile.mkdtemp(prefix="finetunekit-worker-")
    try:
        yield os.path.join(folder, os.path.basename(path))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def check_same_on_workers(strategy: Any, value: float, what: str, fix: str) -> None:
    """Raises on every worker when ``value`` differs between the workers of ``strategy``.

    Uses one all-reduce of ``[value, value**2]``: the variance is zero only
    when all workers hold the same number. A no-op on one worker.

    Raises:
        TrainerError: the workers disagree.
    """
    if num_workers(strategy) <= 1:
        return
    local = tf.constant([float(value), float(value) ** 2], tf.float64)
    mean, mean_sq = (float(v) for v in strategy.reduce("MEAN", local, axis=None).numpy())
    if mean_sq - mean**2 > 1e-9 * max(1.0, mean_sq):
        raise TrainerError(
            format_error(
                f"The workers disagree on {what}",
                expected="the same value on every worker",
                received={what: value, "mean over workers": mean},
                fix=fix,
            )
        )


# ---------------------------------------------------------------------------- trainer hooks


def describe(strategy: Any) -> dict[str, Any]:
    """What ``result.info["strategy"]`` reports: name, class, replicas, workers, chief.

    Examples:
        >>> describe(resolve_strategy("default"))["replicas"]
        1
    """
    return {
        "name": strategy_name(strategy),
        "class": type(strategy).__name__,
        "replicas": int(strategy.num_replicas_in_sync),
        "workers": num_workers(strategy),
        "chief": is_chief(strategy),
    }


def data_seed(strategy: Any, seed: int | None) -> int | None:
    """The seed of the training data's shuffle: ``seed``, or 0 on several workers.

    Workers split each batch by data (:func:`shard_policy`), which needs the
    same example order on every worker; an unseeded shuffle would give each
    its own order (examples seen twice or never), so several workers get
    seed 0 when the ``Trainer`` has none.

    Examples:
        >>> data_seed(resolve_strategy("default"), None) is None
        True
    """
    if seed is None and num_workers(strategy) > 1:
        logger.info("finetunekit: several workers: the data shuffle is seeded with 0")
        return 0
    return seed


def check_batch_size(strategy: Any, batch_size: int) -> None:
    """Raises unless ``batch_size`` splits evenly over the strategy's replicas.

    ``batch_size`` is the global batch: each of the ``num_replicas_in_sync``
    replicas gets an equal share. A batch that does not split evenly makes
    Keras' first training step fail deep inside TensorFlow (``AddN`` of
    per-replica tensors of different shapes: measured with
    ``MirroredStrategy`` on two logical CPUs, batch 5), so it is refused
    before anything is built. The last, smaller batch of an epoch may split
    unevenly: Keras handles that one.

    Raises:
        TrainerError: ``batch_size`` is not a multiple of the replica count.

    Examples:
        >>> check_batch_size(resolve_strategy("default"), 5)
    """
    replicas = int(strategy.num_replicas_in_sync)
    if replicas > 1 and batch_size % replicas:
        lower = max(replicas, batch_size - batch_size % replicas)
        raise TrainerError(
            format_error(
                f"batch_size must split evenly over the {replicas} replicas of the strategy",
                expected=f"a multiple of {replicas} (the global batch; each replica gets a share)",
                received={"batch_size": batch_size, "replicas": replicas},
                fix=f"Pass batch_size={lower} or {lower + replicas}",
            )
        )


def cache_problem(strategy: Any) -> str | None:
    """Why the feature cache is off under ``strategy`` (``None`` for one device, no strategy)."""
    if strategy_name(strategy) == "default" and strategy.num_replicas_in_sync == 1:
        return None
    return (
        f"a tf.distribute strategy ({type(strategy).__name__}) is set: phase 1 trains the "
        "full model on every replica (the cache would compute features on one device)"
    )


def check_resumed(strategy: Any, epochs_done: int, checkpoint_dir: str) -> None:
    """Raises on every worker unless all workers resumed from the same checkpoint.

    A ``checkpoint_dir`` on a disk only the chief sees leaves the other
    workers starting afresh while the chief resumes; they would then run
    different epochs and hang.
    """
    check_same_on_workers(
        strategy,
        epochs_done,
        "the epochs done in checkpoint_dir",
        f"Put checkpoint_dir ({checkpoint_dir}) on storage every worker reads "
        "(NFS, GCS, ...): only the chief writes it, all workers read it on restart",
    )


def release(model: keras.Model, strategy: Any) -> None:
    """After multi-worker training, makes ``model`` predict and evaluate on this worker alone.

    A model built under ``MultiWorkerMirroredStrategy`` runs ``predict`` and
    ``evaluate`` across all workers (each must call them at the same time);
    released, it runs them locally with the trained weights, so the chief
    can evaluate and save on its own. ``fit`` runs under the strategy again
    through :func:`fit`.
    """
    if is_multi_worker(strategy):
        _compat.detach_distribute_strategy(model)


# ---------------------------------------------------------------------------- data
def _reads_files(dataset: tf.data.Dataset) -> bool:
    """Whether a ``tf.data`` pipeline reads record files (TFRecord, text lines, ...)."""
    try:
        from tensorflow.core.framework import graph_pb2

        graph = graph_pb2.GraphDef.FromString(_compat.dataset_serialized_graph(dataset).numpy())
    except Exception:  # noqa: BLE001 - best effort: an unreadable graph shards by data
        return False
    nodes = list(graph.node)
    for function in graph.library.function:
        nodes.extend(function.node_def)
    return any(any(reader in node.op for reader in _FILE_READERS) for node in nodes if node.op)


def shard_policy(dataset: tf.data.Dataset) -> tf.data.experimental.AutoShardPolicy:
    """How the workers split ``dataset``: by file for record-file pipelines, else by data.

    ``FILE`` (through ``AUTO``, which falls back to ``DATA`` when there are
    fewer files than workers) gives every worker its own files; ``DATA``
    has every worker run the pipeline and keep its share of each batch,
    which needs the same example order on every worker (finetunekit seeds the
    shuffle for that). A policy the user set on the dataset is kept.

    Examples:
        >>> import tensorflow as tf
        >>> shard_policy(tf.data.Dataset.range(4)).name
        'DATA'
    """
    AutoShard = tf.data.experimental.AutoShardPolicy
    chosen = dataset.options().experimental_distribute.auto_shard_policy
    if chosen != AutoShard.AUTO:
        return chosen
    return AutoShard.AUTO if _reads_files(dataset) else AutoShard.DATA


def distribute_dataset(strategy: tf.distribute.Strategy, dataset: tf.data.Dataset) -> Any:
    """``strategy.experimental_distribute_dataset`` with the shard policy of :func:`shard_policy`.

    ``dataset`` is batched by the GLOBAL batch size; each replica gets its
    slice of every batch.
    """
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = shard_policy(dataset)
    return strategy.experimental_distribute_dataset(dataset.with_options(options))


# ---------------------------------------------------------------------------- fit
def fit(
    model: keras.Model,
    strategy: tf.distribute.Strategy | None,
    x: Any,
    *,
    validation_data: Any = None,
    epochs: int = 1,
    initial_epoch: int = 0,
    callbacks: Sequence[keras.callbacks.Callback] | None = None,
    verbose: Any = "auto",
    **kwargs: Any,
) -> keras.callbacks.History:
    """``model.fit`` that also works under ``MultiWorkerMirroredStrategy``.

    Every strategy but ``MultiWorkerMirroredStrategy`` (and ``None``) goes to
    ``model.fit(x, ...)`` with all arguments unchanged. Under
    ``MultiWorkerMirroredStrategy`` the epochs run in :class:`_StrategyLoop`
    with the same callbacks, progress bar, validation and ``History``.

    Args:
        model: a compiled model built in ``strategy.scope()``.
        strategy: the strategy, or ``None`` for ``model.fit``.
        x: a batched ``tf.data.Dataset`` of ``(x, y)`` (global batch size).
        validation_data: a batched ``tf.data.Dataset`` or ``None``.
        epochs: as in ``model.fit``.
        initial_epoch: as in ``model.fit``.
        callbacks: as in ``model.fit``.
        verbose: as in ``model.fit``.
        **kwargs: passed to ``model.fit``; the multi-worker loop accepts
            ``shuffle`` (ignored: ``tf.data`` shuffles), ``validation_freq``
            and ``class_weight``.

    Returns:
        The ``keras.callbacks.History`` of the call.

    Examples:
        >>> import numpy as np, keras
        >>> net = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        >>> net.compile("sgd", "mse")
        >>> fit(net, None, np.zeros((4, 2)), y=np.zeros(4), verbose=0).history["loss"]
        [0.0]
    """
    if strategy is None or not is_multi_worker(strategy):
        fit_loop.build_before_fit(model, x)  # else fit traces its first step twice
        return model.fit(
            x,
            validation_data=validation_data,
            epochs=epochs,
            initial_epoch=initial_epoch,
            callbacks=callbacks,
            verbose=verbose,
            **kwargs,
        )
    kwargs.pop("shuffle", None)  # the tf.data pipeline shuffles
    validation_freq = kwargs.pop("validation_freq", 1)
    class_weight = kwargs.pop("class_weight", None)
    if kwargs or not isinstance(x, tf.data.Dataset):
        raise TrainerError(
            format_error(
                "Under MultiWorkerMirroredStrategy, finetunekit's fit takes a batched "
                "tf.data.Dataset and no other model.fit arguments",
                expected="fit(model, strategy, dataset, validation_data=..., epochs=..., "
                "initial_epoch=..., callbacks=..., verbose=..., validation_freq=...)",
                received={"x": type(x).__name__, "other arguments": sorted(kwargs)},
                fix="Batch the data with tf.data (DatasetAdapter.as_dataset) first",
            )
        )
    if class_weight is not None:  # as model.fit: a sample weight per example from its class
        x = x.map(fit_loop.class_weight_fn(class_weight), num_parallel_calls=tf.data.AUTOTUNE)
    loop = _StrategyLoop(model, strategy)
    return loop.fit(
        x,
        validation_data=validation_data,
        epochs=epochs,
        initial_epoch=initial_epoch,
        callbacks=list(callbacks or []),
        verbose=verbose,
        validation_freq=validation_freq,
    )


class _StrategyLoop:
    """The epochs of ``model.fit`` written around ``strategy.run``.

    Each step runs the model's own ``train_step`` (or ``test_step``) on
    every replica; the optimizer all-reduces the gradients and the loss is
    scaled by the replica count, as Keras does inside ``fit``. The logs are
    the compiled metrics read in cross-replica context: their variables sum
    over every replica of every worker, so the values are those of the
    global batch, identical on every worker (early stopping and ``keep_best``
    decide alike everywhere).
    """

    def __init__(self, model: keras.Model, strategy: tf.distribute.Strategy) -> None:
        self.model = model
        self.strategy = strategy

    def _step(self, kind: str) -> Any:
        """The compiled ``train`` or ``test`` step: one global batch, the metrics so far."""
        strategy, model = self.strategy, self.model
        # compile() makes new metric trackers and may set a new optimizer: a new key
        key = (id(strategy), id(model.optimizer), *(id(m) for m in model.metrics))
        cached_key, steps = _STEPS.get(model, ((), {}))
        if cached_key != key:
            steps = {}
            _STEPS[model] = (key, steps)
        if kind not in steps:
            step_fn = model.train_step if kind == "train" else model.test_step

            @tf.function(reduce_retracing=True)
            def step(data: Any) -> dict[str, Any]:
                strategy.run(step_fn, args=(data,))
                return model.get_metrics_result()  # type: ignore[no-any-return]

            steps[kind] = step
        return steps[kind]

    def _build(self, dataset: tf.data.Dataset) -> None:
        """Creates the metric, loss and optimizer variables outside any step (as fit does)."""
        with self.strategy.scope():
            fit_loop.symbolic_build(self.model, dataset)

    def fit(
        self,
        x: tf.data.Dataset,
        *,
        validation_data: Any,
        epochs: int,
        initial_epoch: int,
        callbacks: list[keras.callbacks.Callback],
        verbose: Any,
        validation_freq: int,
    ) -> keras.callbacks.History:
        model = self.model
        self._build(x)
        train_data = distribute_dataset(self.strategy, x)
        val_data = (
            distribute_dataset(self.strategy, validation_data)
            if validation_data is not None
            else None
        )
        steps = int(x.cardinality())
        train_step = self._step("train")
        test_step = self._step("test") if val_data is not None else None

        def train_epoch(callbacks: keras.callbacks.CallbackList) -> dict[str, Any]:
            logs = _batches(
                train_data,
                train_step,
                callbacks.on_train_batch_begin,
                callbacks.on_train_batch_end,
                lambda: bool(model.stop_training),
            )
            if steps >= 0:  # as model.fit, which makes the next epoch's iterator ahead
                del_iterator = iter(train_data)
                del del_iterator
            return logs

        def evaluate(callbacks: keras.callbacks.CallbackList) -> dict[str, Any]:
            """One pass over the validation data, with the test batch events (as fit)."""
            return _batches(
                val_data,
                test_step,
                callbacks.on_test_batch_begin,
                callbacks.on_test_batch_end,
                lambda: bool(model.stop_evaluating),
            )

        return fit_loop.drive(
            model,
            epochs=epochs,
            initial_epoch=initial_epoch,
            steps=steps if steps >= 0 else None,
            callbacks=callbacks,
            verbose=verbose,
            train_epoch=train_epoch,
            evaluate=evaluate if test_step is not None else None,
            validation_freq=validation_freq,
        )


def _batches(
    data: Any,
    step: Any,
    begin: Callable[[int], None],
    end: Callable[[int, Any], None],
    stop: Callable[[], bool],
) -> dict[str, Any]:
    """Runs ``step`` on every batch of ``data`` between the batch events; the last logs."""
    logs: dict[str, Any] = {}
    for index, batch in enumerate(data):
        begin(index)
        logs = step(batch)
        end(index, logs)
        if stop():
            break
    return logs
