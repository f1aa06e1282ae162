"""Freezing and unfreezing a backbone, BatchNorm-aware."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import keras

from finetunekit import _compat
from finetunekit.errors import TrainerError, format_error

__all__ = [
    "iter_layers",
    "weight_layers",
    "freeze",
    "unfreeze",
    "is_batchnorm",
    "lora_layers",
    "layer_groups",
    "unfreeze_groups",
]

_BN_TYPES: tuple[type, ...] = (keras.layers.BatchNormalization,)


def is_batchnorm(layer: Any) -> bool:
    """Returns whether ``layer`` normalises with batch statistics."""
    return isinstance(layer, _BN_TYPES)


def iter_layers(model: Any) -> Iterator[Any]:
    """Yields the leaf layers of ``model`` in order, descending into nested models."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from iter_layers(layer)
        else:
            yield layer


def weight_layers(model: Any, train_bn: bool = False) -> list[Any]:
    """Returns the leaf layers that hold weights (BatchNorm only when ``train_bn``)."""
    return [
        layer
        for layer in iter_layers(model)
        if layer.weights and (train_bn or not is_batchnorm(layer))
    ]


def lora_layers(model: Any) -> list[Any]:
    """Returns the layers of ``model`` (at any depth) with LoRA enabled (``enable_lora``)."""
    layers = _compat.flatten_layers(model)
    if layers is None:
        layers = iter_layers(model)
    return [layer for layer in layers if getattr(layer, "lora_enabled", False)]


def freeze(model: Any) -> None:
    """Makes every layer of ``model`` non-trainable."""
    model.trainable = False
    # With TensorFlow, setting ``trainable`` to the value a layer already has is a
    # no-op that does not reach its sub-layers, and LoRA (KerasHub's enable_lora)
    # leaves frozen layers with trainable children: switch every variable off.
    for variable in model.weights:
        variable.trainable = False


def unfreeze(model: Any, layers: int | str = "all", train_bn: bool = False) -> int:
    """Unfreezes the whole ``model`` or its top ``layers`` weight-holding layers.

    BatchNorm layers stay frozen (and so in inference mode in Keras 3)
    unless ``train_bn`` is true.

    Args:
        model: the backbone model.
        layers: ``"all"`` or the number of top weight-holding layers.
        train_bn: whether BatchNorm layers are trained too.

    Returns:
        The number of weight-holding layers now trainable.

    A backbone with LoRA enabled (``Trainer(lora_rank=...)`` or
    ``Backbone.from_preset(..., lora_rank=4)``) trains only its LoRA adapters
    (and BatchNorm with ``train_bn``): every other weight stays frozen, whatever
    ``layers`` says (Keras' ``trainable`` setter would otherwise re-enable the
    adapted kernels).

    Raises:
        TrainerError: when ``layers`` exceeds the backbone's weight-holding layers.
    """
    adapted = lora_layers(model)
    if adapted:
        model.trainable = True
        for variable in model.weights:
            variable.trainable = variable.name.startswith(("lora_kernel", "lora_embeddings"))
        for layer in iter_layers(model):
            if is_batchnorm(layer):  # gamma / beta with train_bn; moving statistics never train
                layer.trainable = train_bn
                for variable in (getattr(layer, "gamma", None), getattr(layer, "beta", None)):
                    if variable is not None:
                        variable.trainable = train_bn
        return len(adapted)
    candidates = weight_layers(model, train_bn=train_bn)
    if layers != "all" and int(layers) > len(candidates):
        raise TrainerError(
            format_error(
                f"unfreeze asks for more layers than the backbone has ({len(candidates)} "
                "weight-holding layers" + ("" if train_bn else ", BatchNorm excluded") + ")",
                expected=f"'all' or an int between 1 and {len(candidates)}",
                received={"unfreeze": layers},
                fix="Pass unfreeze='all' or a smaller number",
            )
        )
    model.trainable = True
    chosen = candidates if layers == "all" else candidates[len(candidates) - int(layers) :]
    chosen_ids = {id(layer) for layer in chosen}
    for layer in iter_layers(model):
        layer.trainable = id(layer) in chosen_ids or (not layer.weights)
    return len(chosen)


def layer_groups(
    model: Any, n: int, unfreeze: int | str = "all", train_bn: bool = False
) -> list[list[Any]]:
    """Splits the layers phase 2 may train into ``n`` contiguous groups, top first.

    The layers are those :func:`unfreeze` selects for ``unfreeze`` (the
    weight-holding layers, BatchNorm only with ``train_bn``); group 0 is the
    one closest to the head. Sizes differ by at most one (the top groups get
    the extra layers); a backbone with fewer layers than ``n`` gives one
    group per layer.

    Examples:
        >>> import keras
        >>> net = keras.Sequential([keras.Input((2,))] + [
        ...     keras.layers.Dense(2, name=f"d{i}") for i in range(5)])
        >>> [[layer.name for layer in g] for g in layer_groups(net, 2)]
        [['d2', 'd3', 'd4'], ['d0', 'd1']]
    """
    candidates = weight_layers(model, train_bn=train_bn)
    if unfreeze != "all":
        candidates = candidates[max(0, len(candidates) - int(unfreeze)) :]
    top_first = candidates[::-1]
    count = max(1, min(int(n), len(top_first))) if top_first else 0
    groups: list[list[Any]] = []
    start = 0
    for i in range(count):
        size = len(top_first) // count + (1 if i < len(top_first) % count else 0)
        groups.append(top_first[start : start + size][::-1])  # each group in model order
        start += size
    return groups


def unfreeze_groups(model: Any, groups: list[list[Any]], k: int, train_bn: bool = False) -> int:
    """Makes the top ``k`` of ``groups`` (from :func:`layer_groups`) trainable, the rest frozen.

    Layers without weights stay trainable; BatchNorm layers outside the
    groups stay frozen (in inference mode). Returns the number of
    weight-holding layers now trainable.

    Examples:
        >>> import keras
        >>> net = keras.Sequential([keras.Input((2,))] + [
        ...     keras.layers.Dense(2, name=f"d{i}") for i in range(4)])
        >>> unfreeze_groups(net, layer_groups(net, 4), 2)
        2
        >>> [layer.name for layer in net.layers if layer.trainable]
        ['d2', 'd3']
    """
    layers = sum(len(group) for group in groups[: max(0, int(k))])
    if layers == 0:
        freeze(model)
        return 0
    # the top ``k`` groups are exactly the top ``layers`` candidates of :func:`unfreeze`
    return unfreeze(model, layers, train_bn)
