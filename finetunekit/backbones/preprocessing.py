"""Declared preprocessing: what a model the user brings expects as input.

``Backbone.from_model(net, preprocessing=...)`` and ``Backbone.from_file``
say what range or normalisation the MODEL was trained on; ``input_range``
says what the RAW data is. Inside the fine-tuned model the raw inputs are
first mapped to 0-255 (``ImageInputAdapter``, from ``input_range``), then to
what the model expects (``ImagePreprocess`` or the user's layer, from
``preprocessing``):

* ``"0-1"``, ``"-1-1"``, ``"0-255"``: a value range;
* ``"caffe"``, ``"tf"``, ``"torch"``, or the name of a ``keras.applications``
  family or model (``"mobilenet_v2"``, ``"resnet50"``, ``"efficientnet"``):
  that application's own ``preprocess_input``;
* a Keras layer (given 0-255 float images; it must serialise and load in
  Keras' safe mode, e.g. ``keras.layers.Rescaling(1 / 127.5, offset=-1)``);
* ``"none"``: the values go in as they are, and no warning;
* ``None`` (nothing declared): as ``"none"``, but :func:`missing_warning`
  warns when raw integer images feed a model without a rescaling or
  normalisation layer of its own near its input.
"""

from __future__ import annotations

import difflib
import json
import re
import zipfile
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from finetunekit.backbones import registry
from finetunekit.errors import ArgumentTypeError, BackboneError, format_error

__all__ = [
    "MODES",
    "RANGES",
    "ModelFacts",
    "check_preprocessing",
    "copy_weights",
    "describe",
    "facts_of_file",
    "facts_of_model",
    "from_config_value",
    "make_layer",
    "missing_warning",
    "mode_of",
    "near_input",
]

RANGES = ("0-1", "-1-1", "0-255")
MODES = ("caffe", "tf", "torch")
_NEAR_INPUT = 8  # layers looked at before the first one that learns
_RESCALER_CLASSES = ("Rescaling", "Normalization", "ImagePreprocess")
_NOT_RESCALERS = (  # normalise activations, not the input's scale
    "BatchNormalization",
    "SyncBatchNormalization",
    "LayerNormalization",
    "GroupNormalization",
    "SpectralNormalization",
)
# by name (a layer called "scale", "rescaling", "preprocess", "standardize", ...) or a
# Lambda / TFOpLambda near the input: its computation cannot be read, so it may rescale
_RESCALER_NAME = re.compile(r"preprocess|scal|normali[sz]|standardi[sz]", re.IGNORECASE)
_OPAQUE_CLASS = re.compile(r"Lambda", re.IGNORECASE)
_MAPS_CLASS = re.compile(r"Conv|Dense|Embedding|LSTM|GRU|RNN|Attention", re.IGNORECASE)
_LEARNS_CLASS = re.compile(
    r"Conv|Dense|Embedding|Normalization|LSTM|GRU|RNN|Attention|PReLU", re.IGNORECASE
)
_MODELS = ("Functional", "Model", "Sequential")


def _families() -> dict[str, tuple[str, str]]:
    """Normalised family / model name -> (canonical name, application's preprocessing)."""
    names: dict[str, tuple[str, str]] = {}
    for spec in registry.REGISTRY.values():
        names.setdefault(registry.normalise_name(spec.module), (spec.module, spec.preprocessing))
    for key, spec in registry.REGISTRY.items():
        names.setdefault(key, (spec.name, spec.preprocessing))
    return names


def check_preprocessing(value: Any, owner: str = "Backbone") -> str | keras.layers.Layer | None:
    """Validates a declared ``preprocessing``; returns its canonical form.

    Raises:
        ArgumentTypeError: neither a string, a Keras layer nor ``None``.
        BackboneError: an unknown name (the closest ones suggested), or a
            layer that does not serialise and load back in Keras' safe mode.

    Examples:
        >>> check_preprocessing("MobileNetV2"), check_preprocessing("-1-1")
        ('mobilenet_v2', '-1-1')
    """
    if value is None:
        return None
    if isinstance(value, keras.layers.Layer):
        _check_layer(value, owner)
        return value
    if not isinstance(value, str):
        raise ArgumentTypeError(
            format_error(
                f"{owner} preprocessing must be a name, a Keras layer or None",
                expected="'0-1', '-1-1', '0-255', 'caffe', 'tf', 'torch', a keras.applications "
                "family such as 'mobilenet_v2', a keras.layers.Layer, 'none' or None",
                received={"preprocessing": value},
                fix="Pass preprocessing='0-1' when the model was trained on values in [0, 1]",
            )
        )
    text = value.strip().lower()
    if text in (*RANGES, *MODES, "none"):
        return text
    family = _families().get(registry.normalise_name(text))
    if family is not None:
        return family[0]
    options = [*RANGES, *MODES, "none", *sorted({f[0] for f in _families().values()})]
    close = difflib.get_close_matches(text, options, n=3, cutoff=0.5)
    hint = f"Did you mean {', '.join(repr(c) for c in close)}? " if close else ""
    raise BackboneError(
        format_error(
            f"Unknown preprocessing {value!r}",
            expected="a value range the model expects ('0-1', '-1-1', '0-255'), 'caffe', "
            "'tf', 'torch', a keras.applications family or model name, a Keras layer or 'none'",
            received={"preprocessing": value},
            fix=f"{hint}A model trained on pixels divided by 255 takes preprocessing='0-1'",
        )
    )


def _check_layer(layer: keras.layers.Layer, owner: str) -> None:
    try:
        copy = keras.saving.deserialize_keras_object(
            keras.saving.serialize_keras_object(layer), safe_mode=True
        )
        ok, reason = isinstance(copy, keras.layers.Layer), f"it loads as {type(copy).__name__}"
    except Exception as exc:  # Lambda in safe mode, unregistered classes, bad get_config
        ok, reason = False, f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
    if not ok:
        raise BackboneError(
            format_error(
                f"The preprocessing layer {layer.name!r} ({type(layer).__name__}) of {owner} "
                f"cannot be saved with the model and loaded in Keras' safe mode ({reason})",
                expected="a Keras layer rebuilt from its get_config(): a built-in one such as "
                "keras.layers.Rescaling, or a class registered with "
                "keras.saving.register_keras_serializable (never a Lambda)",
                received={"preprocessing": layer},
                fix="Use keras.layers.Rescaling(scale, offset) or "
                "keras.layers.Normalization(mean=..., variance=...), or a name such as '-1-1'",
            )
        )


def mode_of(declared: str | keras.layers.Layer | None) -> str:
    """The ``ImagePreprocess`` mode of a declared preprocessing (``"layer"`` for a layer).

    ``"none"`` means the model takes the 0-255 values as they are.

    Examples:
        >>> mode_of("mobilenet_v2"), mode_of("0-255"), mode_of("-1-1"), mode_of(None)
        ('tf', 'none', '-1-1', 'none')
    """
    if declared is None or declared in ("none", "0-255"):
        return "none"
    if isinstance(declared, keras.layers.Layer):
        return "layer"
    if declared in RANGES or declared in MODES:
        return str(declared)
    return _families()[registry.normalise_name(declared)][1]


def describe(declared: str | keras.layers.Layer | None) -> Any:
    """The JSON form of a declared preprocessing: its name, or a layer's Keras serialisation."""
    if isinstance(declared, keras.layers.Layer):
        return keras.saving.serialize_keras_object(declared)
    return declared


def from_config_value(value: Any, owner: str = "Backbone") -> str | keras.layers.Layer | None:
    """Inverse of :func:`describe`: a layer's serialisation is loaded in safe mode."""
    if isinstance(value, dict):
        try:
            value = keras.saving.deserialize_keras_object(value, safe_mode=True)
        except Exception as exc:
            raise BackboneError(
                format_error(
                    f"The preprocessing layer in the config cannot be loaded ({exc!s:.200})",
                    expected="the Keras serialisation of a layer that loads in safe mode",
                    received={"preprocessing": value},
                    fix="Register the layer class with keras.saving.register_keras_serializable",
                )
            ) from exc
    return check_preprocessing(value, owner)


def make_layer(declared: keras.layers.Layer) -> keras.layers.Layer:
    """A fresh, frozen copy of the user's preprocessing layer named ``input_preprocess``.

    The copy is rebuilt from its serialisation, so the fine-tuned model never
    shares a layer with the user's object; weights (a ``Normalization``
    adapted to data) are copied over by :func:`copy_weights` once it is built.
    """
    config = keras.saving.serialize_keras_object(declared)
    config["config"] = {**config["config"], "name": "input_preprocess", "trainable": False}
    layer = keras.saving.deserialize_keras_object(config, safe_mode=True)
    assert isinstance(layer, keras.layers.Layer)
    return layer


def copy_weights(source: keras.layers.Layer, target: keras.layers.Layer) -> None:
    """Copies ``source``'s weights into the built ``target`` when it has any."""
    values = source.get_weights()
    if values and len(values) == len(target.weights):
        target.set_weights(values)


# ---------------------------------------------------------------------- the warning
@dataclass(frozen=True)
class _Entry:
    """One layer near the input: from a live model or from a saved model's config."""

    class_name: str
    name: str
    learns: bool
    children: tuple[_Entry, ...] = ()


@dataclass(frozen=True)
class ModelFacts:
    """What the warning needs to know about the model: input and first layers."""

    input_dtype: str | None
    input_rank: int | None
    layers: tuple[_Entry, ...]


def facts_of_model(model: keras.Model) -> ModelFacts:
    """The facts of a live Keras model."""
    first = model.inputs[0]
    return ModelFacts(str(first.dtype), len(first.shape) - 1, _live_entries(model))


def _live_entries(model: Any) -> tuple[_Entry, ...]:
    entries = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        children = _live_entries(layer) if isinstance(layer, keras.Model) else ()
        entries.append(_Entry(type(layer).__name__, layer.name, bool(layer.weights), children))
    return tuple(entries)


def facts_of_file(path: str) -> ModelFacts | None:
    """The facts of a saved ``.keras`` / ``.h5`` model, read from its config (nothing is built).

    ``None`` when the config cannot be read.
    """
    try:
        if path.endswith(".keras"):
            with zipfile.ZipFile(path) as archive:
                config = json.loads(archive.read("config.json"))
        else:
            import h5py

            with h5py.File(path, "r") as handle:
                raw = handle.attrs.get("model_config")
            if raw is None:
                return None
            config = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
    except Exception:  # unreadable: the load at build time says why
        return None
    layers = _config_layers(config)
    dtype, rank = None, None
    for entry in layers:
        if entry.get("class_name") == "InputLayer":
            inner = entry.get("config", {})
            shape = inner.get("batch_shape") or inner.get("batch_input_shape")
            rank = len(shape) - 1 if shape else None
            dtype = inner.get("dtype") if isinstance(inner.get("dtype"), str) else None
            break
    return ModelFacts(dtype, rank, _config_entries(layers))


def _config_layers(config: dict[str, Any]) -> list[dict[str, Any]]:
    inner = config.get("config", {})
    layers = inner.get("layers", []) if isinstance(inner, dict) else inner
    return [entry for entry in layers if isinstance(entry, dict)]


def _config_entries(layers: list[dict[str, Any]]) -> tuple[_Entry, ...]:
    entries = []
    for entry in layers:
        class_name = str(entry.get("class_name", ""))
        if class_name == "InputLayer":
            continue
        name = str(entry.get("name") or entry.get("config", {}).get("name", ""))
        children = _config_entries(_config_layers(entry)) if class_name in _MODELS else ()
        learns = bool(_LEARNS_CLASS.search(class_name)) and not _rescaler(class_name, name)
        entries.append(_Entry(class_name, name, learns, children))
    return tuple(entries)


def _rescaler(class_name: str, name: str) -> bool:
    if class_name in _NOT_RESCALERS:
        return False
    if class_name in _RESCALER_CLASSES or _OPAQUE_CLASS.search(class_name):
        return True
    if _MAPS_CLASS.search(class_name):  # a conv named "upscale" is no rescaling
        return False
    return bool(_RESCALER_NAME.search(class_name) or _RESCALER_NAME.search(name))


def _flatten(entries: tuple[_Entry, ...]) -> list[_Entry]:
    flat: list[_Entry] = []
    for entry in entries:
        flat.extend(_flatten(entry.children) if entry.children else [entry])
    return flat


def near_input(facts: ModelFacts) -> tuple[str | None, list[str]]:
    """The rescaling / normalisation layer near the model's input, if any, and the layers seen.

    Looks at the layers before the first one that learns (at most 8), nested
    models included.
    """
    seen: list[str] = []
    for entry in _flatten(facts.layers)[:_NEAR_INPUT]:
        seen.append(entry.name)
        if _rescaler(entry.class_name, entry.name):
            return entry.name, seen
        if entry.learns:
            break
    return None, seen


def missing_warning(
    facts: ModelFacts | None, raw_dtype: str | None, *, what: str, fix_call: str
) -> str | None:
    """Why the raw inputs probably do not match the model, or ``None``.

    Only for raw integer images (``uint8`` pixels and the like) feeding a
    model that takes floats and has no rescaling or normalisation layer of
    its own near its input; the caller checks that nothing was declared.
    """
    if facts is None or raw_dtype is None:
        return None
    try:
        integer = np.issubdtype(np.dtype(raw_dtype), np.integer)
    except TypeError:
        return None
    if not integer:
        return None
    if facts.input_dtype is not None and not facts.input_dtype.startswith(("float", "bfloat")):
        return None  # the model itself takes integers (token ids, uint8 pixels)
    if facts.input_rank is not None and facts.input_rank not in (2, 3):
        return None  # not images
    found, seen = near_input(facts)
    if found is not None:
        return None
    return (
        f"{what} gets raw {raw_dtype} inputs (0-255 for pixels) and nothing says what it "
        "expects: it has no rescaling or normalisation layer near its input (first layers: "
        f"{', '.join(seen[:4]) or 'none'}), so the values go in unscaled. A network trained "
        "on values in [0, 1] or [-1, 1] then gives features hundreds of times too large. "
        f"Declare what it was trained on: {fix_call}(..., preprocessing='0-1') (or '-1-1', "
        "'0-255', a keras.applications family such as 'mobilenet_v2', or a Keras layer); "
        "preprocessing='none' feeds the values as they are without this warning"
    )
