"""Every access finetunekit makes to private Keras, TensorFlow and NumPy internals.

Nothing else in the package touches another library's private attributes
(ruff's ``SLF`` rule is on; this file is its one exception). Each function
says which versions need it and what it falls back to, so an upgrade that
moves an internal breaks this file only. Checked with Keras 3.15.1,
TensorFlow 2.21.0, KerasHub 0.32 and NumPy 2.4.
"""

# ruff: noqa: SLF001

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

__all__ = [
    "builds_in_first_trace",
    "close_memmap",
    "dataset_inputs",
    "dataset_reshuffles",
    "dataset_serialized_graph",
    "detach_distribute_strategy",
    "fit_initial_epoch",
    "flatten_layers",
    "graph_nodes",
    "has_random_state",
    "hub_lora_enabled",
    "is_functional",
    "keras_mask",
    "keras_random_state",
    "lora_base_variables",
    "restore_keras_random_state",
    "restore_tf_random_state",
    "set_optimizer_iterations",
    "symbolic_build",
    "tensor_source",
    "tf_random_state",
]


# ---------------------------------------------------------------------- Keras graphs
def is_functional(model: Any) -> bool:
    """Whether ``model`` is a functional (graph) model. Keras 3: ``_inbound_nodes`` exists."""
    return hasattr(model, "_inbound_nodes") and hasattr(model, "outputs")


def _node_of(tensor: Any) -> Any:
    # Keras 3.0-3.15: a KerasTensor records (operation, node_index, tensor_index) in
    # _keras_history; the operation keeps its call nodes in _inbound_nodes.
    history = tensor._keras_history
    return history.operation._inbound_nodes[history.node_index]


def graph_nodes(outputs: list[Any]) -> list[Any]:
    """Every call node upstream of the symbolic ``outputs`` (each once).

    A node has ``operation``, ``input_tensors``, ``output_tensors`` and
    ``arguments`` (Keras 3 ``Node``). Used only by ``feature_cache.split_frozen``
    for models built outside the pipeline, whose features tensor is unknown.
    """
    seen: dict[int, Any] = {}
    stack = [_node_of(t) for t in outputs]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen[id(node)] = node
        stack.extend(_node_of(t) for t in node.input_tensors)
    return list(seen.values())


def tensor_source(tensor: Any) -> tuple[Any, list[Any]] | None:
    """The operation that produced a symbolic tensor and the input tensors of that call.

    Works where the public ``layer.input`` does not: nested models (whose
    ``input`` is their own inner ``Input``) and shared layers. ``None`` for a
    tensor without Keras history. Used by ``backbones.cut`` to walk down from
    a model's output (Keras 3.0-3.15 ``_keras_history``, see ``_node_of``).
    """
    if getattr(tensor, "_keras_history", None) is None:
        return None
    node = _node_of(tensor)
    return node.operation, list(node.input_tensors)


def keras_mask(tensor: Any) -> Any:
    """The padding mask Keras 3 attaches to a symbolic tensor (``_keras_mask``), or ``None``."""
    return getattr(tensor, "_keras_mask", None)


def has_random_state(layer: Any) -> bool:
    """Whether a layer draws random numbers: Keras 3 layers keep ``_seed_generators``."""
    return bool(getattr(layer, "_seed_generators", None))


def flatten_layers(model: Any) -> Iterator[Any] | None:
    """Every layer of ``model`` including those tracked inside layers (Keras 3
    ``_flatten_layers``: e.g. the attention projections of a KerasHub
    encoder), or ``None`` where the method is missing."""
    flatten = getattr(model, "_flatten_layers", None)
    return flatten(include_self=False) if flatten is not None else None


def lora_base_variables(layer: Any) -> tuple[Any, Any, Any]:
    """``(base, A, B)`` of a LoRA-enabled Dense / EinsumDense / Conv / Embedding layer.

    Keras 3.15 keeps the frozen base weight in ``_kernel`` (``_embeddings``
    for Embedding); the public ``kernel`` property returns the merged value.
    """
    if hasattr(layer, "lora_embeddings_a"):
        return layer._embeddings, layer.lora_embeddings_a, layer.lora_embeddings_b
    return layer._kernel, layer.lora_kernel_a, layer.lora_kernel_b


def hub_lora_enabled(encoder: Any) -> bool:
    """Whether KerasHub's ``Backbone.enable_lora`` adapted any layer (``_lora_enabled_layers``,
    KerasHub 0.18-0.32)."""
    return bool(getattr(encoder, "_lora_enabled_layers", None))


# ---------------------------------------------------------------------- Keras training
def set_optimizer_iterations(optimizer: Any, value: Any) -> None:
    """Sets an optimizer's step counter (Keras 3 ``_iterations``, a variable); the
    discriminative optimizer keeps its inner optimizers on its own step."""
    optimizer._iterations.assign(value)


def symbolic_build(model: Any, batch: Any) -> None:
    """Builds model, metrics and optimizer variables from one batch as ``fit`` does
    (Keras 3.15 ``Trainer._symbolic_build``); needed before ``strategy.run``."""
    model._symbolic_build(data_batch=batch)


def builds_in_first_trace(model: Any) -> bool:
    """Whether ``fit`` leaves building optimizer and metrics to the first trace of its step:
    Keras 3.15 builds first only for a model made under a strategy (``_distribute_strategy``)."""
    return getattr(model, "_distribute_strategy", None) is None


def detach_distribute_strategy(model: Any) -> None:
    """Forgets the strategy a model was built under (Keras 3.15 ``_distribute_strategy``),
    so each worker predicts, evaluates and saves on its own after training."""
    if hasattr(model, "_distribute_strategy"):
        model._distribute_strategy = None


def fit_initial_epoch(model: Any, default: int) -> int:
    """The epoch ``BackupAndRestore`` asks ``fit`` to resume at (Keras 3 ``_initial_epoch``)."""
    return getattr(model, "_initial_epoch", None) or default


# ---------------------------------------------------------------------- tf.data
def dataset_inputs(dataset: Any) -> list[Any]:
    """The datasets ``dataset`` reads from (TF 2.x ``DatasetV2._inputs()``)."""
    return list(dataset._inputs())


def dataset_reshuffles(dataset: Any) -> Any:
    """A shuffle dataset's ``reshuffle_each_iteration`` flag (TF 2.x private attribute;
    ``True`` when missing)."""
    return getattr(dataset, "_reshuffle_each_iteration", True)


def dataset_serialized_graph(dataset: Any) -> Any:
    """The dataset's serialised ``GraphDef`` (TF 2.x ``_as_serialized_graph()``)."""
    return dataset._as_serialized_graph()


# ---------------------------------------------------------------------- random state
def keras_random_state() -> Any:
    """Keras' global seed generator and seed (keras.src internals, Keras 3.0-3.15)."""
    try:
        import keras
        from keras.src.backend.common import global_state
        from keras.src.random import seed_generator
        from keras.src.utils import rng_utils
    except ImportError:  # pragma: no cover - internal layout changed
        return None
    generator = global_state.get_global_attribute(seed_generator.GLOBAL_SEED_GENERATOR)
    value = None
    if generator is not None:
        value = keras.ops.convert_to_numpy(generator.state.value).copy()
    seed = global_state.get_global_attribute(rng_utils.GLOBAL_RANDOM_SEED)
    keys = (seed_generator.GLOBAL_SEED_GENERATOR, rng_utils.GLOBAL_RANDOM_SEED)
    return global_state, keys, (generator, value, seed)


def restore_keras_random_state(saved: Any) -> None:
    """Puts back what :func:`keras_random_state` returned."""
    if saved is None:
        return
    global_state, (generator_key, seed_key), (generator, value, seed) = saved
    global_state.set_global_attribute(generator_key, generator)
    global_state.set_global_attribute(seed_key, seed)
    if generator is not None and value is not None:
        generator.state.assign(value)


def tf_random_state() -> Any:
    """TensorFlow's eager context seed and op-seed generator (``context._seed`` /
    ``_rng``, TF 2.x)."""
    try:
        from tensorflow.python.eager import context
    except ImportError:  # pragma: no cover
        return None
    ctx = context.context()
    rng = getattr(ctx, "_rng", None)
    return ctx, getattr(ctx, "_seed", None), (rng.getstate() if rng is not None else None)


def restore_tf_random_state(saved: Any) -> None:
    """Puts back what :func:`tf_random_state` returned."""
    if saved is None:
        return
    ctx, seed, rng_state = saved
    if getattr(ctx, "_seed", None) == seed and rng_state is None:
        return
    try:
        ctx._seed = seed
        if rng_state is None:
            ctx._rng = None
        else:
            rng = random.Random()
            rng.setstate(rng_state)
            ctx._rng = rng
    except AttributeError:  # pragma: no cover - internal layout changed
        pass


# ---------------------------------------------------------------------- numpy
def close_memmap(array: Any) -> None:
    """Closes a ``np.memmap``'s file now (NumPy keeps it in ``_mmap``) so the file can go."""
    mapped = getattr(array, "_mmap", None)
    if mapped is not None:
        mapped.close()
