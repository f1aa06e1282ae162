"""LoRA fine-tuning of any Keras backbone, and merging the adapters back for export.

``Trainer(lora_rank=r)`` turns phase 2 into parameter-efficient fine-tuning:
instead of unfreezing the backbone's weights, it adds Keras' own low-rank
adapters (``layer.enable_lora(r)``) to the backbone's default targets -- for
a KerasHub text encoder the attention query / value projections it names
itself (``default_lora_layer_names``), for other networks every ``Conv1D`` /
``Conv2D`` / ``Conv3D``, ``Dense``, ``EinsumDense`` and ``Embedding`` layer
(``lora_layers="auto"``) -- or to the layer kinds ``lora_layers`` names, and
trains only those (plus the head, and BatchNorm with ``train_bn``). An adapted layer
computes with ``W + (alpha / r) * A @ B``: ``A`` starts random, ``B`` at zero,
so enabling LoRA changes no output.

The adapters are added before the first epoch (frozen during phase 1), so the
model's variables are the same in every phase: checkpoints, resuming,
``keep_best`` and early stopping work unchanged.

:func:`merge_lora` folds the adapters into the kernels and returns an
equivalent model without LoRA; ``FineTuneResult.save`` and ``export`` use it,
so saved files are plain Keras models.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from finetunekit import _compat
from finetunekit.checks import check_int, check_number
from finetunekit.errors import TrainerError, format_error
from finetunekit.training.freezing import lora_layers, weight_layers

__all__ = [
    "LORA_KINDS",
    "apply_lora",
    "check_lora_alpha",
    "check_lora_layers",
    "check_lora_rank",
    "lora_candidates",
    "lora_param_count",
    "merge_lora",
    "merged_result",
]

#: The layer kinds LoRA can adapt, as named in ``Trainer(lora_layers=...)``.
LORA_KINDS = ("conv", "dense", "einsum_dense", "embedding")

_KIND_TYPES: dict[str, tuple[type, ...]] = {
    "conv": (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D),
    "dense": (keras.layers.Dense,),
    "einsum_dense": (keras.layers.EinsumDense,),
    "embedding": (keras.layers.Embedding,),
}


def check_lora_rank(value: Any) -> int | None:
    """Validates ``Trainer(lora_rank=...)``: ``None`` or an int >= 1.

    Examples:
        >>> check_lora_rank(4)
        4
    """
    return check_int(  # type: ignore[no-any-return]
        "lora_rank",
        value,
        minimum=1,
        allow_none=True,
        expected="the rank of the low-rank adapters, e.g. 4 or 8",
        fix="Pass lora_rank=8, or None to fine-tune the weights themselves",
    )


def check_lora_alpha(value: Any) -> float | None:
    """Validates ``Trainer(lora_alpha=...)``: ``None`` or a number > 0."""
    return check_number(  # type: ignore[no-any-return]
        "lora_alpha",
        value,
        minimum=0,
        min_open=True,
        allow_none=True,
        expected="the adapter scale numerator (the update is alpha / rank * A @ B); "
        "None means alpha = rank",
        fix="Pass lora_alpha=None",
    )


def check_lora_layers(value: Any) -> str | list[str]:
    """Validates ``Trainer(lora_layers=...)``: ``"auto"``, ``"all"``, a kind or a list of kinds.

    Examples:
        >>> check_lora_layers(["conv", "dense"])
        ['conv', 'dense']
    """
    kinds = [value] if isinstance(value, str) else value
    valid = ("auto", "all", *LORA_KINDS)
    if (
        not isinstance(kinds, (list, tuple))
        or not kinds
        or any(not isinstance(k, str) or k not in valid for k in kinds)
        or (("all" in kinds or "auto" in kinds) and len(kinds) > 1)
    ):
        raise TrainerError(
            format_error(
                "Unknown lora_layers",
                expected=f"'auto' (the backbone's default targets), 'all', one of {LORA_KINDS} "
                "or a list of them",
                received={"lora_layers": value},
                fix="Pass lora_layers='auto' or e.g. lora_layers=['conv', 'dense']",
            )
        )
    return kinds[0] if kinds[0] in ("auto", "all") else [str(k) for k in kinds]


def _sublayers(layer: Any) -> list[Any]:
    found = _compat.flatten_layers(layer) if isinstance(layer, keras.layers.Layer) else None
    return list(found) if found is not None else []


def _kind_types(kinds: str | Sequence[str]) -> tuple[type, ...]:
    names = LORA_KINDS if kinds == "all" else ([kinds] if isinstance(kinds, str) else kinds)
    return tuple(t for name in names for t in _KIND_TYPES[name])


def lora_candidates(
    backbone_model: keras.Model,
    kinds: str | Sequence[str] = "all",
    unfreeze: int | str = "all",
    train_bn: bool = False,
    targets: Sequence[Any] | None = None,
) -> list[Any]:
    """The layers of ``backbone_model`` LoRA would adapt.

    With ``kinds="auto"`` and the backbone's default ``targets`` (a KerasHub
    encoder's attention projections, from ``BuiltModel.lora_targets``): those
    layers. Otherwise the layers of the kinds asked (see :data:`LORA_KINDS`;
    ``"auto"`` without targets means ``"all"``). Either way only among the
    whole backbone (``unfreeze="all"``) or its top ``unfreeze``
    weight-holding layers (counted as ``Trainer(unfreeze=...)`` counts them),
    and without kernel constraints (which Keras' LoRA refuses).

    Examples:
        >>> import keras
        >>> net = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3),
        ...                         keras.layers.Flatten(), keras.layers.Dense(2)])
        >>> [type(l).__name__ for l in lora_candidates(net, "all", unfreeze=1)]
        ['Dense']
    """
    layers = weight_layers(backbone_model, train_bn)
    if unfreeze != "all":
        layers = layers[max(0, len(layers) - int(unfreeze)) :]
    if kinds == "auto" and targets:
        inside = {id(layer) for top in layers for layer in [top, *_sublayers(top)]}
        chosen = [layer for layer in targets if id(layer) in inside]
    else:
        types = _kind_types("all" if kinds == "auto" else kinds)
        chosen = [layer for layer in layers if isinstance(layer, types)]
    return [
        layer
        for layer in chosen
        if hasattr(layer, "enable_lora")
        and not getattr(layer, "kernel_constraint", None)
        and not getattr(layer, "embeddings_constraint", None)
        and not getattr(layer, "quantization_mode", None)
    ]


def check_lora_targets(
    backbone_model: keras.Model,
    kinds: str | Sequence[str],
    unfreeze: int | str,
    train_bn: bool,
    targets: Sequence[Any] | None = None,
) -> list[Any]:
    """Returns :func:`lora_candidates`; raises when there is none or LoRA is already on.

    Raises:
        TrainerError: nothing to adapt, or the backbone already has LoRA layers
            (e.g. ``Backbone.from_preset(..., lora_rank=...)`` and
            ``Trainer(lora_rank=...)`` together).

    Examples:
        >>> import keras
        >>> net = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        >>> len(check_lora_targets(net, "dense", "all", False))
        1
    """
    if lora_layers(backbone_model):
        raise TrainerError(
            format_error(
                "The backbone already has LoRA adapters, and Trainer(lora_rank=...) would add more",
                expected="LoRA set in one place: the Trainer or the Backbone",
                received={"backbone": backbone_model.name},
                fix="Drop lora_rank from Backbone.from_preset(...) or from the Trainer",
            )
        )
    found = lora_candidates(backbone_model, kinds, unfreeze, train_bn, targets)
    if not found:
        where = "the backbone" if unfreeze == "all" else f"the top {unfreeze} layers"
        raise TrainerError(
            format_error(
                f"LoRA has no layer to adapt in {where}",
                expected=f"Conv1D/2D/3D, Dense, EinsumDense or Embedding layers of kinds {kinds!r} "
                "(depthwise / separable / transposed convolutions are not supported)",
                received={"lora_layers": kinds, "unfreeze": unfreeze},
                fix="Pass lora_layers='all', a larger unfreeze, or lora_rank=None to fine-tune "
                "the weights themselves",
            )
        )
    return found


def apply_lora(
    backbone_model: keras.Model,
    rank: int,
    alpha: float | None = None,
    kinds: str | Sequence[str] = "auto",
    unfreeze: int | str = "all",
    train_bn: bool = False,
    targets: Sequence[Any] | None = None,
) -> dict[str, Any]:
    """Enables LoRA (``layer.enable_lora``) on the backbone's matching layers.

    Call on a built model before it is compiled (the adapters are new variables).

    Returns:
        ``{"rank", "alpha", "kinds", "layers", "params"}``: the number of adapted
        layers and of adapter parameters.

    Examples:
        >>> import keras
        >>> net = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3)])
        >>> apply_lora(net, rank=2)["params"]  # 2 * (3 * 3 * 3 + 4)
        62
    """
    layers = check_lora_targets(backbone_model, kinds, unfreeze, train_bn, targets)
    for layer in layers:
        try:
            layer.enable_lora(rank, lora_alpha=alpha)
        except Exception as exc:  # pragma: no cover - filtered by lora_candidates
            raise TrainerError(
                format_error(
                    f"Keras could not enable LoRA on layer {layer.name!r} ({str(exc)[:200]})",
                    expected="layers Keras' enable_lora supports",
                    received={"lora_layers": kinds},
                    fix="Pass lora_layers with fewer kinds, or lora_rank=None",
                )
            ) from exc
    if kinds == "auto" and targets:
        described = sorted({layer.name for layer in layers})
    elif kinds in ("all", "auto"):
        described = list(LORA_KINDS)
    else:
        described = list(kinds)
    return {
        "rank": int(rank),
        "alpha": float(alpha if alpha is not None else rank),
        "kinds": described,
        "layers": len(layers),
        "params": lora_param_count(backbone_model),
    }


def _adapters(layer: Any) -> tuple[Any, Any, Any]:
    """``(base variable, A, B)`` of a LoRA-enabled layer."""
    return _compat.lora_base_variables(layer)


def lora_param_count(model: keras.Model) -> int:
    """The number of LoRA adapter parameters in ``model`` (0 without LoRA).

    Examples:
        >>> import keras
        >>> layer = keras.layers.Dense(3)
        >>> net = keras.Sequential([keras.Input((5,)), layer])
        >>> layer.enable_lora(2)
        >>> lora_param_count(net)  # 2 * (5 + 3)
        16
    """
    total = 0
    for layer in lora_layers(model):
        _, a, b = _adapters(layer)
        total += int(np.prod(a.shape)) + int(np.prod(b.shape))
    return total


def _merged_value(layer: Any) -> Any:
    """``W + (alpha / r) * A @ B`` in the base variable's dtype, as Keras computes it."""
    base, a, b = _adapters(layer)
    delta = (layer.lora_alpha / layer.lora_rank) * ops.matmul(a, b)
    return ops.cast(ops.add(ops.cast(base, "float32"), delta), base.dtype)


def _contains_lora(layer: Any) -> bool:
    if getattr(layer, "lora_enabled", False):
        return True
    return bool(lora_layers(layer)) if isinstance(layer, keras.layers.Layer) else False


def _without_lora(layer: Any) -> Any:
    """``clone_model`` hook: rebuilds layers holding adapters without them; shares the rest."""
    if not _contains_lora(layer):
        return layer
    config = layer.get_config()
    config.pop("lora_rank", None)
    config.pop("lora_alpha", None)
    return layer.__class__.from_config(config)


def merge_lora(model: keras.Model) -> keras.Model:
    """Returns an equivalent model with the LoRA adapters folded into the kernels.

    Each adapted layer's kernel becomes ``W + (alpha / r) * A @ B`` (exactly
    what the layer computes with) in a copy of the layer without LoRA; the
    result has no ``lora_*`` variable and saves, loads and exports as a plain
    Keras model. Layers without adapters are shared with ``model``, not
    copied: use the merged model for inference and export, and keep training
    ``model``. A model without LoRA is returned as it is.

    Args:
        model: a functional or Sequential model, possibly with nested models.

    Returns:
        The merged ``keras.Model``.

    Raises:
        TrainerError: when the model cannot be rebuilt without LoRA (e.g. a
            subclassed model with a LoRA layer inside).

    Examples:
        >>> import keras, numpy as np
        >>> dense = keras.layers.Dense(3)
        >>> net = keras.Sequential([keras.Input((5,)), dense])
        >>> dense.enable_lora(2)
        >>> _ = dense.lora_kernel_b.assign(np.ones((2, 3)))
        >>> merged = merge_lora(net)
        >>> x = np.ones((1, 5), "float32")
        >>> bool(np.allclose(merged(x), net(x), atol=1e-5))
        True
        >>> [v.name for v in merged.weights]
        ['kernel', 'bias']
    """
    adapted = lora_layers(model)
    if not adapted:
        return model
    merged = {id(_adapters(layer)[0]): _merged_value(layer) for layer in adapted}
    skip = {id(v) for layer in adapted for v in _adapters(layer)[1:]}
    try:
        clone = keras.models.clone_model(model, clone_function=_without_lora, recursive=True)
    except Exception as exc:
        raise TrainerError(
            format_error(
                f"The model could not be rebuilt without its LoRA adapters ({str(exc)[:200]})",
                expected="a functional or Sequential model whose layers serialise "
                "(get_config / from_config)",
                received={"model": model.name},
                fix="Merge by hand: for each LoRA layer, kernel + alpha / rank * A @ B",
            )
        ) from exc
    source = [v for v in model.variables if id(v) not in skip]
    target = list(clone.variables)
    if len(source) != len(target) or any(
        tuple(s.shape) != tuple(t.shape) for s, t in zip(source, target, strict=False)
    ):
        raise TrainerError(
            format_error(
                "The model rebuilt without LoRA does not match the original's variables "
                f"({len(target)} vs {len(source)})",
                expected="a model whose layers rebuild identically from their config",
                received={"model": model.name},
                fix="Merge by hand: for each LoRA layer, kernel + alpha / rank * A @ B",
            )
        )
    for s, t in zip(source, target, strict=True):
        if s is not t:
            t.assign(merged.get(id(s), s))
    return clone


def merged_result(result: Any) -> Any:
    """``result`` with its model merged by :func:`merge_lora` (itself without LoRA).

    Examples:
        >>> merged_result(result).model  # doctest: +SKIP
    """
    import dataclasses

    if not lora_layers(result.model):
        return result
    return dataclasses.replace(result, model=merge_lora(result.model))
