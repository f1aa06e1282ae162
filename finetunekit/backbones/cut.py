"""Where a model the user brings is cut: the features below its old classifier.

:meth:`Backbone.from_model` and :meth:`Backbone.from_file` feed the new head
with the output of ``feature_layer`` when it is given. Otherwise
:func:`find_cut` walks down from the model's output over the layers that map
a representation to the original outputs, whatever their shape:

* a trailing stack of ``Dense`` layers (the last one alone, or VGG's
  ``fc1 -> fc2 -> predictions``), with the activations, dropout and
  normalisation layers between them;
* a small convolution (kernel up to 3x3) to the output width followed by
  global pooling, ``Flatten`` or ``Reshape``, in a model whose output is a
  softmax or sigmoid (mini-Xception, SqueezeNet, MobileNet v1/v3 tops); a
  headless network that ends in a convolution and global pooling (an
  ``include_top=False, pooling="avg"`` application) keeps its last
  convolution;
* trailing ``Activation`` / ``Softmax`` / ``Dropout`` layers.

The features are the input of the lowest of those classifier layers (below a
``Dropout`` there, its input: the same values at inference). A network that
is only a stack of ``Dense`` layers from its input keeps its last ``Dense``
as the classifier alone (the cut never hands the head the raw inputs); a
network without any classifier at its top is used whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import keras

from finetunekit import _compat

__all__ = ["Cut", "find_cut"]

_CONVS = (
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
    keras.layers.SeparableConv1D,
    keras.layers.SeparableConv2D,
)
_REDUCERS = (
    keras.layers.Flatten,
    keras.layers.Reshape,
    keras.layers.GlobalAveragePooling1D,
    keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalAveragePooling3D,
    keras.layers.GlobalMaxPooling1D,
    keras.layers.GlobalMaxPooling2D,
    keras.layers.GlobalMaxPooling3D,
)
_PASSIVE = (  # between classifier layers: no mapping of their own
    keras.layers.Activation,
    keras.layers.Softmax,
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.ELU,
    keras.layers.PReLU,
    keras.layers.BatchNormalization,
    keras.layers.LayerNormalization,
    keras.layers.GroupNormalization,
    keras.layers.Identity,
    keras.layers.ActivityRegularization,
)
_IDENTITY_AT_INFERENCE = (
    keras.layers.Dropout,
    keras.layers.SpatialDropout1D,
    keras.layers.SpatialDropout2D,
    keras.layers.SpatialDropout3D,
    keras.layers.GaussianDropout,
    keras.layers.GaussianNoise,
    keras.layers.AlphaDropout,
)
_MAX_CLASSIFIER_KERNEL = 3


@dataclass(frozen=True)
class Cut:
    """Where the features are taken.

    Attributes:
        tensor: the symbolic features tensor of the model.
        layer: the name of the layer that outputs it (``None`` for a model input).
        reason: why, in words (``result.info["cut_reason"]``).
    """

    tensor: Any
    layer: str | None
    reason: str


def find_cut(model: keras.Model, feature_layer: str | None = None) -> Cut:
    """The features of ``model``: ``feature_layer``'s output, else below its classifier.

    Args:
        model: a built functional or Sequential Keras model.
        feature_layer: a layer name given by the user (checked by the caller).

    Returns:
        A :class:`Cut`.

    Examples:
        >>> import keras
        >>> inputs = keras.Input((8, 8, 3))
        >>> x = keras.layers.Conv2D(4, 3, name="block")(inputs)
        >>> x = keras.layers.Conv2D(5, 1, name="to_classes")(x)
        >>> x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
        >>> net = keras.Model(inputs, keras.layers.Softmax(name="probs")(x))
        >>> cut = find_cut(net)
        >>> cut.layer
        'block'
        >>> cut.reason
        'below the classifier: to_classes (1x1 conv to 5 channels) -> gap (global average pooling) -> probs (softmax)'
    """
    if feature_layer is not None:
        layer = model.get_layer(feature_layer)
        return Cut(layer.output, feature_layer, f"given: feature_layer={feature_layer!r}")
    output = model.outputs[0]
    chain, reached_input = _classifier_chain(model, output)
    mappings = [i for i, (_, role, _) in enumerate(chain) if role == "map"]
    if not mappings:
        last = _describe(chain[0][0]) if chain else _layer_name(output)
        return Cut(
            output,
            _layer_name(output),
            "the model's output: no classifier at its top (a Dense layer, or a small "
            f"convolution to the output width followed by pooling); last layer: {last}",
        )
    lowest = mappings[-1]
    tensor = _below_identities(model, chain[lowest][2])
    if reached_input and not _learns_below(tensor):
        return _last_dense_only(model, chain, mappings, output)
    return Cut(
        tensor,
        _layer_name(tensor),
        "below the classifier: "
        + " -> ".join(_describe(layer) for layer, _, _ in chain[lowest::-1]),
    )


# ---------------------------------------------------------------------- the walk
def _classifier_chain(model: keras.Model, output: Any) -> tuple[list[tuple[Any, str, Any]], bool]:
    """Layers walked down from ``output``, top first: (layer, ``"map"`` or ``"pass"``, its input).

    The walk stops at the first layer that is not part of a classifier (a
    merge such as ``Add``, a large convolution, pooling that is not global,
    ...) or at the model's input; the bool says which.
    """
    inputs = {id(t) for t in model.inputs}
    width = output.shape[-1]
    chain: list[tuple[Any, str, Any]] = []
    reduced = mapped = probabilities = False
    tensor = output
    while id(tensor) not in inputs:
        source = _compat.tensor_source(tensor)
        if source is None or len(source[1]) != 1:
            return chain, False
        layer = source[0]
        probabilities = probabilities or _gives_probabilities(layer)
        if isinstance(layer, keras.layers.Dense) and not reduced:
            role = "map"  # a Dense stack on top of the features
        elif (
            isinstance(layer, _CONVS)
            and reduced
            and not mapped
            and probabilities  # a headless net ending in conv -> pooling keeps its last conv
            and layer.filters == width
            and max(layer.kernel_size) <= _MAX_CLASSIFIER_KERNEL
        ):
            role = "map"  # a small convolution to the class count, then global pooling
        elif isinstance(layer, _REDUCERS):
            role, reduced = "pass", True
        elif isinstance(layer, _PASSIVE + _IDENTITY_AT_INFERENCE):
            role = "pass"
        else:
            return chain, False
        mapped = mapped or role == "map"
        tensor = source[1][0]
        chain.append((layer, role, tensor))
    return chain, True


def _gives_probabilities(layer: Any) -> bool:
    """Whether ``layer`` ends in a softmax or sigmoid (a classifier's output)."""
    if isinstance(layer, keras.layers.Softmax):
        return True
    activation = getattr(layer, "activation", None)
    name = getattr(activation, "__name__", activation)
    return isinstance(name, str) and name in ("softmax", "sigmoid", "log_softmax")


def _below_identities(model: keras.Model, tensor: Any) -> Any:
    """Steps below dropout / noise layers, which pass values through unchanged at inference."""
    inputs = {id(t) for t in model.inputs}
    while id(tensor) not in inputs:
        source = _compat.tensor_source(tensor)
        if (
            source is None
            or len(source[1]) != 1
            or not isinstance(source[0], _IDENTITY_AT_INFERENCE)
        ):
            break
        tensor = source[1][0]
    return tensor


def _learns_below(tensor: Any) -> bool:
    """Whether any layer with weights computes ``tensor`` from the model's inputs."""
    return any(
        getattr(node.operation, "weights", None)
        for node in _compat.graph_nodes([tensor])
        if not isinstance(node.operation, keras.layers.InputLayer)
    )


def _last_dense_only(
    model: keras.Model, chain: list[tuple[Any, str, Any]], mappings: list[int], output: Any
) -> Cut:
    """A network that is a stack of Dense layers from its input: its last Dense is the classifier."""
    top = mappings[0]
    tensor = _below_identities(model, chain[top][2])
    name = chain[top][0].name
    if not _learns_below(tensor):
        return Cut(
            output,
            _layer_name(output),
            f"the model's output: below its classifier layer {name!r} there is no layer "
            "that learns, only the raw inputs",
        )
    return Cut(
        tensor,
        _layer_name(tensor),
        f"the input of the last Dense layer {name!r}: the network is a stack of Dense "
        "layers from its input, so only the last one is taken as the classifier",
    )


# ---------------------------------------------------------------------- words
def _layer_name(tensor: Any) -> str | None:
    source = _compat.tensor_source(tensor)
    if source is None or isinstance(source[0], keras.layers.InputLayer):
        return None
    return str(source[0].name)


def _describe(layer: Any) -> str:
    """``"name (what it does)"`` for the reason text."""
    if isinstance(layer, keras.layers.Dense):
        what = f"Dense to {layer.units}"
    elif isinstance(layer, _CONVS):
        what = f"{'x'.join(str(k) for k in layer.kernel_size)} conv to {layer.filters} channels"
    elif isinstance(layer, _REDUCERS) and type(layer).__name__.startswith("Global"):
        kind = "average" if "Average" in type(layer).__name__ else "max"
        what = f"global {kind} pooling"
    elif isinstance(layer, keras.layers.Activation):
        activation = layer.get_config().get("activation")
        what = activation if isinstance(activation, str) else type(layer).__name__.lower()
    elif isinstance(layer, _IDENTITY_AT_INFERENCE):
        what = "dropout"
    else:
        what = type(layer).__name__.lower()
    return f"{layer.name} ({what})"
