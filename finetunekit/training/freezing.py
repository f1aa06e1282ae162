"""Freezing and unfreezing a backbone, BatchNorm-aware."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import keras

from finetunekit.errors import TrainerError, format_error

__all__ = ["iter_layers", "weight_layers", "freeze", "unfreeze", "is_batchnorm", "lora_layers"]

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
    flatten = getattr(model, "_flatten_layers", None)
    layers = flatten(include_self=False) if flatten is not None else iter_layers(model)
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

    A backbone with LoRA enabled (e.g. ``Backbone.from_preset(..., lora_rank=4)``)
    trains only its LoRA adapters: every other weight stays frozen, whatever
    ``layers`` says (Keras' ``trainable`` setter would otherwise re-enable the
    adapted kernels).

    Raises:
        TrainerError: when ``layers`` exceeds the backbone's weight-holding layers.
    """
    adapted = lora_layers(model)
    if adapted:
        model.trainable = True
        for variable in model.weights:
            variable.trainable = variable.name.startswith("lora_kernel")
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
