"""Step 2: ``Backbone``, the pretrained network to start from."""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import keras

from finetunekit.backbones import preprocessing as declared_preprocessing
from finetunekit.backbones import registry
from finetunekit.backbones.channels import adapt_first_conv, check_adapt_channels, first_conv
from finetunekit.backbones.cut import find_cut
from finetunekit.backbones.layers import ImageInputAdapter, ImagePreprocess
from finetunekit.backbones.pyramid import pyramid_taps
from finetunekit.errors import (
    ArgumentTypeError,
    BackboneError,
    ConfigError,
    DataError,
    InputShapeError,
    UnknownBackboneError,
    WeightsError,
    check_config_keys,
    format_error,
)

__all__ = ["Backbone", "BuiltBackbone", "INPUT_RANGES"]

INPUT_RANGES = ("auto", "0-255", "0-1", "-1-1", "none")
_RANGE_TO_AFFINE = {  # maps a raw range to 0-255: x * scale + offset
    "0-255": (1.0, 0.0),
    "0-1": (255.0, 0.0),
    "-1-1": (127.5, 127.5),
    "none": (1.0, 0.0),
}
_WEIGHT_SUFFIXES = (".h5", ".keras", ".weights.h5", ".hdf5")


@dataclass
class BuiltBackbone:
    """What :meth:`Backbone.build` returns (internal to the pipeline).

    Attributes:
        features: the symbolic feature tensor (backbone output).
        model: the backbone as a nested ``keras.Model`` named ``"backbone"``.
        info: facts about the adaptation (input size, range, preprocessing).
        lora_targets: the layers LoRA adapts by default (``Trainer(lora_layers=
            "auto")``), or ``None``: every supported layer kind.
    """

    features: Any
    model: keras.Model
    info: dict[str, Any] = field(default_factory=dict)
    lora_targets: list[Any] | None = None


def keras_cache_dir() -> str:
    """Returns the folder where Keras caches downloaded application weights."""
    base = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return os.path.join(base, "models")


class Backbone:
    """A pretrained network whose features the new head is trained on.

    The constructor only validates and stores its arguments; the network (and
    its weights) is created when the pipeline builds the model in ``fit``.

    Args:
        name: a ``keras.applications`` model name, case- and
            underscore-insensitive (``"vgg16"``, ``"ResNet50"``,
            ``"mobilenet_v3_small"``). See :meth:`available`.
        weights: ``"imagenet"`` (Keras cache or download), ``None`` (random
            initialisation) or the path of a local weights file for the
            model without its top (``include_top=False``).
        input_shape: the backbone's input ``(height, width, 3)``; raw inputs
            of any size are resized to it inside the model. Defaults to the
            application's default size (e.g. 224x224).
        input_range: value range of the raw inputs: ``"auto"`` (integers are
            taken as 0-255; floats within [0, 1] as 0-1, within [-1, 1] as
            -1-1, else 0-255), ``"0-255"``, ``"0-1"`` or ``"-1-1"``.
        adapt_channels: how images that are not RGB feed the network:
            ``"convert"`` (default: grayscale repeated to 3 channels, RGBA ->
            RGB, inside the model) or ``"first_conv"`` (the network is built
            for the input's own channel count, any number, and its first
            convolution's pretrained kernel adapted: summed over RGB for one
            channel, repeated cyclically and scaled by 3/C for C channels).
            See ``finetunekit.backbones.channels``.

    Examples:
        >>> import finetunekit as ftk
        >>> bb = ftk.Backbone("mobilenet_v3_small", weights=None, input_shape=(32, 32, 3))
        >>> bb.name
        'mobilenet_v3_small'
    """

    _declared: str | keras.layers.Layer | None = None  # from_model / from_file preprocessing

    def __init__(
        self,
        name: str,
        weights: str | None = "imagenet",
        input_shape: tuple[int, int, int] | None = None,
        *,
        input_range: str = "auto",
        adapt_channels: str = "convert",
    ) -> None:
        if not isinstance(name, str):
            raise ArgumentTypeError(
                format_error(
                    "Backbone name must be a string",
                    expected="a keras.applications model name such as 'vgg16'",
                    received={"name": name},
                    fix="Use Backbone.from_model(model) for a Keras model object",
                )
            )
        spec = registry.lookup(name)
        if spec is None:
            close = registry.suggest(name)
            hint = f"Did you mean {', '.join(repr(c) for c in close)}? " if close else ""
            raise UnknownBackboneError(
                format_error(
                    f"Unknown backbone {name!r}",
                    expected="one of finetunekit.Backbone.available()",
                    received={"name": name},
                    fix=f"{hint}See Backbone.available() for all {len(registry.available())} names",
                )
            )
        self._spec: registry.BackboneSpec | None = spec
        self._kind = "application"
        self.name = spec.name
        self.weights = _check_weights(weights)
        self.input_shape = _check_input_shape(input_shape, spec, self.weights)
        self.input_range = _check_range(input_range)
        self.adapt_channels = check_adapt_channels(adapt_channels)
        self.feature_layer: str | None = None
        self._declared: str | keras.layers.Layer | None = None
        self._model: keras.Model | None = None
        self._path: str | None = None

    # ------------------------------------------------------------------ other sources
    @classmethod
    def from_model(
        cls,
        model: keras.Model,
        *,
        feature_layer: str | None = None,
        preprocessing: str | keras.layers.Layer | None = None,
        input_range: str = "auto",
        adapt_channels: str = "convert",
    ) -> Backbone:
        """Uses a Keras model the user pretrained as the backbone.

        Its features are the output of ``feature_layer``; by default the
        representation below the model's classifier, however that is built (a
        final ``Dense`` or a stack of them, a small convolution to the class
        count followed by global pooling, trailing activation and dropout
        layers; see ``finetunekit.backbones.cut``), otherwise the model's
        output. ``result.info["feature_layer"]`` and ``["cut_reason"]`` say
        which layer and why. The model
        is cloned when the pipeline builds, so re-running ``fit`` always starts
        from the weights given here and ``model`` itself is never trained. A
        layer with weights that Keras cannot rebuild from its ``get_config``
        (a subclassed layer or model without one) raises ``BackboneError``
        then; weightless ones (a ``Lambda``) are reused as they are.

        Args:
            model: a built Keras model (functional or Sequential with an Input).
            feature_layer: name of the layer whose output are the features.
            preprocessing: what the MODEL expects as input: a value range
                (``"0-1"``, ``"-1-1"``, ``"0-255"``), a ``keras.applications``
                family or model name whose ``preprocess_input`` it was
                trained with (``"mobilenet_v2"``, ``"resnet50"``; or
                ``"caffe"``, ``"tf"``, ``"torch"``), a Keras layer that loads
                in safe mode (it is given float images in 0-255), or
                ``"none"``: the values go in as they are. Raw inputs of any
                range (``input_range``) are mapped to it inside the model.
                ``None`` (default) declares nothing: values go in as they
                are, with a warning when they are raw integer images and the
                model has no rescaling or normalisation layer near its input.
            input_range: range of the RAW data when ``preprocessing`` is
                declared: ``"auto"`` (default: integers are 0-255, floats
                judged on a sample as for :class:`Backbone`), ``"0-255"``,
                ``"0-1"``, ``"-1-1"`` or ``"none"`` (no rescaling: raw
                values are taken as 0-255). With nothing declared,
                ``"auto"`` feeds inputs as they are, only cast to float32.
            adapt_channels: ``"convert"`` or ``"first_conv"``, as in
                :class:`Backbone`; ``"first_conv"`` rebuilds the model for the
                input's channel count (its first layer with weights must be a
                convolution).

        Examples:
            >>> import keras, finetunekit as ftk
            >>> net = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4),
            ...                         keras.layers.Dense(2, activation="softmax")])
            >>> ftk.Backbone.from_model(net).feature_layer is None
            True
            >>> ftk.Backbone.from_model(net, preprocessing="MobileNetV2").preprocessing
            'mobilenet_v2'
        """
        if not isinstance(model, keras.Model):
            raise ArgumentTypeError(
                format_error(
                    "Backbone.from_model needs a keras.Model",
                    expected="a built keras.Model",
                    received={"model": model},
                    fix="Pass a Keras model, or a name such as Backbone('resnet50')",
                )
            )
        try:
            model.inputs  # noqa: B018 - raises for unbuilt models
            ok = bool(model.inputs)
        except (AttributeError, ValueError):
            ok = False
        if not ok:
            raise BackboneError(
                format_error(
                    "The model passed to Backbone.from_model has no defined input",
                    expected="a model built with keras.Input(shape)",
                    received={"model": model.name},
                    fix="Start the model with keras.Input(shape=...) or call it once on data",
                )
            )
        self = cls.__new__(cls)
        self._spec = None
        self._kind = "model"
        self.name = model.name
        self.weights = None
        self.input_shape = tuple(model.inputs[0].shape[1:])
        self.input_range = _check_range(input_range)
        self._declared = declared_preprocessing.check_preprocessing(
            preprocessing, "Backbone.from_model"
        )
        self.adapt_channels = check_adapt_channels(adapt_channels)
        self._model = model
        self._path = None
        self.feature_layer = _check_feature_layer(model, feature_layer)
        if self.adapt_channels == "first_conv":
            first_conv(model, self.name)  # raises now when the model cannot be adapted
        return self

    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike[str],
        *,
        feature_layer: str | None = None,
        preprocessing: str | keras.layers.Layer | None = None,
        input_range: str = "auto",
        adapt_channels: str = "convert",
    ) -> Backbone:
        """Uses a saved ``.keras`` (or ``.h5``) model file as the backbone.

        The file is checked now and loaded (in Keras' safe mode) when the
        pipeline builds. Features are chosen as in :meth:`from_model`.

        Args:
            path: the saved model file.
            feature_layer: name of the layer whose output are the features.
            preprocessing: what the model expects, as in :meth:`from_model`
                (a layer is written to the recipe as its Keras serialisation).
            input_range: raw range, as in :meth:`from_model`.
            adapt_channels: ``"convert"`` or ``"first_conv"``, as in :meth:`from_model`.

        Examples:
            >>> import finetunekit as ftk
            >>> ftk.Backbone.from_file("emotion_model.hdf5", preprocessing="-1-1")  # doctest: +SKIP
        """
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise WeightsError(
                format_error(
                    "The backbone file does not exist",
                    expected="the path of a saved .keras model",
                    received={"path": path},
                    fix="Check the path, or save your model with model.save('encoder.keras')",
                )
            )
        if not path.endswith((".keras", ".h5", ".hdf5")):
            raise WeightsError(
                format_error(
                    "The backbone file is not a Keras model file",
                    expected="a file ending in .keras or .h5",
                    received={"path": path},
                    fix="Save the model with model.save('encoder.keras')",
                )
            )
        _check_model_file(path)
        self = cls.__new__(cls)
        self._spec = None
        self._kind = "file"
        self.name = os.path.splitext(os.path.basename(path))[0]
        self.weights = None
        self.input_shape = None
        self.input_range = _check_range(input_range)
        self._declared = declared_preprocessing.check_preprocessing(
            preprocessing, "Backbone.from_file"
        )
        self.adapt_channels = check_adapt_channels(adapt_channels)
        self._model = None
        self._path = path
        self.feature_layer = feature_layer
        return self

    @classmethod
    def from_preset(
        cls,
        preset: str | os.PathLike[str],
        *,
        sequence_length: int = 128,
        pooling: str = "mean",
        lora_rank: int | None = None,
        load_weights: bool = True,
        padding: str = "dynamic",
    ) -> Backbone:
        """A pretrained text encoder from KerasHub; the model will take raw strings.

        Needs the optional extra ``pip install 'finetunekit[text]'`` (KerasHub),
        imported only here. The preset's tokenizer / preprocessor becomes a
        layer of the fine-tuned model. See ``docs/text.md`` and
        :class:`finetunekit.backbones.text.TextBackbone` for the arguments.

        Args:
            preset: a KerasHub preset name (downloaded and cached by KerasHub
                where a network exists), a ``kaggle://`` / ``hf://`` handle, or
                a local folder (a KerasHub preset or a Hugging Face checkpoint).
            sequence_length: tokens per text (pairs: both segments together).
            pooling: ``"mean"`` over the real tokens or ``"cls"`` (first token).
            lora_rank: LoRA rank on the attention query/value layers, or None.
            load_weights: ``False`` builds the same architecture with random weights.
            padding: ``"dynamic"`` cuts each batch after its longest text (same
                outputs, less work); ``"fixed"`` always pads to ``sequence_length``.

        Examples:
            >>> import finetunekit as ftk
            >>> bb = ftk.Backbone.from_preset("models/all-MiniLM-L6-v2", sequence_length=64)  # doctest: +SKIP
        """
        from finetunekit.backbones.text import TextBackbone

        return TextBackbone(
            preset,
            sequence_length=sequence_length,
            pooling=pooling,
            lora_rank=lora_rank,
            load_weights=load_weights,
            padding=padding,
        )

    @classmethod
    def from_gguf(
        cls,
        path: str | os.PathLike[str],
        *,
        sequence_length: int = 128,
        load_weights: bool = True,
    ) -> Backbone:
        """A causal language model from a GGUF file (llama.cpp's format), for generative text.

        The same as ``Backbone.from_preset("model.gguf")``: the file is read
        with the ``gguf`` package when the model is built, its weights
        dequantised to float32 onto the KerasHub backbone of its architecture
        (Gemma 3; see :mod:`finetunekit.backbones.gguf`) and its tokenizer
        rebuilt from the vocabulary in the file. Needs ``pip install
        'finetunekit[generative]'``. See ``docs/generative.md``.

        Args:
            path: the ``.gguf`` file (checked now: it must exist and be GGUF).
            sequence_length: tokens per training example (prompt + response).
            load_weights: ``False`` builds the same architecture randomly initialised.

        Examples:
            >>> import finetunekit as ftk
            >>> bb = ftk.Backbone.from_gguf("gemma-3-270m-q4_k_m.gguf", sequence_length=96)  # doctest: +SKIP
        """
        from finetunekit.backbones.text import TextBackbone, is_gguf

        shown = os.fspath(path) if isinstance(path, (str, os.PathLike)) else path
        if not isinstance(shown, str) or not is_gguf(shown):
            raise WeightsError(
                format_error(
                    "Backbone.from_gguf needs the path of a .gguf file",
                    expected="a path ending in .gguf",
                    received={"path": path},
                    fix="Pass the GGUF file; other checkpoints go through Backbone.from_preset",
                )
            )
        return TextBackbone(shown, sequence_length=sequence_length, load_weights=load_weights)

    @staticmethod
    def available() -> list[str]:
        """Lists the names of every ``keras.applications`` backbone.

        Examples:
            >>> import finetunekit as ftk
            >>> "vgg16" in ftk.Backbone.available()
            True
        """
        return registry.available()

    # ------------------------------------------------------------------ properties
    @property
    def preprocessing(self) -> str | keras.layers.Layer | None:
        """What the network expects as input.

        For a named application, its normalisation mode (``"caffe"``,
        ``"tf"``, ``"torch"`` or ``"none"``: it normalises inside itself). For
        :meth:`from_model` / :meth:`from_file`, the declared
        ``preprocessing`` (a name or a layer), or ``None`` when nothing was
        declared.
        """
        return self._spec.preprocessing if self._spec else self._declared

    def _mode(self) -> str:
        """The ``ImagePreprocess`` mode to add (``"layer"``: the user's layer; ``"none"``: nothing)."""
        if self._spec is not None:
            return self._spec.preprocessing
        return declared_preprocessing.mode_of(self._declared)

    @property
    def source(self) -> str:
        """Where the network comes from: ``"application"``, ``"model"`` or ``"file"``."""
        return self._kind

    # ------------------------------------------------------------------ building
    def known_model(self) -> keras.Model | None:
        """The feature network when it is known without building anything, else ``None``.

        For :meth:`from_model` backbones: a functional view of the user's
        model up to the feature layer, sharing its layers (no weights are
        created or copied), so the pipeline can check ``Trainer(unfreeze=...)``
        before building. Named and file backbones return ``None``.

        Examples:
            >>> import keras, finetunekit as ftk
            >>> net = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4),
            ...                         keras.layers.Dense(2, activation="softmax")])
            >>> ftk.Backbone.from_model(net).known_model().output.shape
            (None, 4)
        """
        if self._kind != "model" or self._model is None:
            return None
        source = self._model
        cut = find_cut(source, self.feature_layer)
        return keras.Model(source.inputs, cut.tensor, name=f"{source.name}_features")

    def check_input(
        self, raw_shape: tuple[int | None, ...], input_dtype: str | None = None
    ) -> None:
        """Raises before any model is built when raw inputs cannot feed this backbone.

        Clips ``(T, H, W, C)`` for an image backbone are checked frame by frame.
        ``FineTuner.prepare`` calls it, so it also warns (``UserWarning``)
        when a model the user brings declares no ``preprocessing`` while raw
        integer images feed it and it has no rescaling layer near its input
        (see :meth:`preprocessing_warning`).
        """
        self._check_shapes(raw_shape, input_dtype)
        message = self.preprocessing_warning(input_dtype)
        if message is not None:
            warnings.warn(message, UserWarning, stacklevel=3)

    def preprocessing_warning(self, input_dtype: str | None) -> str | None:
        """Why raw inputs of ``input_dtype`` probably do not match the model, or ``None``.

        Only for :meth:`from_model` / :meth:`from_file` backbones with no
        declared ``preprocessing`` (``"none"`` opts out), raw integer images
        and a float-input model with no ``Rescaling`` / ``Normalization`` /
        ``Lambda`` layer, nor one named like ``scale`` or ``preprocess``,
        before its first layer that learns. Nothing is
        built: a file's layers are read from its saved config.

        Examples:
            >>> import keras, finetunekit as ftk
            >>> net = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(2, 3)])
            >>> "preprocessing='0-1'" in ftk.Backbone.from_model(net).preprocessing_warning("uint8")
            True
            >>> ftk.Backbone.from_model(net, preprocessing="none").preprocessing_warning("uint8")
        """
        if self._kind not in ("model", "file") or self._declared is not None:
            return None
        facts: declared_preprocessing.ModelFacts | None
        if self._kind == "model":
            assert self._model is not None
            facts = declared_preprocessing.facts_of_model(self._model)
        else:
            facts = declared_preprocessing.facts_of_file(self._path or "")
        return declared_preprocessing.missing_warning(
            facts,
            input_dtype,
            what=f"Backbone.from_{self._kind}({self.name!r})",
            fix_call=f"Backbone.from_{self._kind}",
        )

    def _check_shapes(
        self, raw_shape: tuple[int | None, ...], input_dtype: str | None = None
    ) -> None:
        if input_dtype == "string":
            raise DataError(
                format_error(
                    f"The inputs are texts, but backbone {self.name!r} takes arrays",
                    expected="a text backbone for texts",
                    received={"input_dtype": input_dtype, "backbone": self.name},
                    fix="Use Backbone.from_preset('<KerasHub preset or checkpoint folder>')",
                )
            )
        raw_shape = self._frame_shape(tuple(raw_shape))
        if self._kind == "model" and self.input_shape is not None:
            target = tuple(self.input_shape)
            if self.adapt_channels == "first_conv" and len(target) == 3:  # any channel count
                target = (*target[:2], _channels(raw_shape))
            if len(target) == 3 or None not in target:
                _adaptation(tuple(raw_shape), target, self.name)
            return
        if self._kind != "application":
            return
        if len(raw_shape) not in (2, 3):
            raise DataError(
                format_error(
                    f"Backbone {self.name!r} takes images, but the inputs have "
                    f"{len(raw_shape)} dimensions per example",
                    expected="images of shape (H, W) or (H, W, C)",
                    received={"input_shape": tuple(raw_shape)},
                    fix="Reshape the inputs to (N, H, W, C) images",
                )
            )
        channels = 1 if len(raw_shape) == 2 else raw_shape[-1]
        if channels not in (1, 3, 4) and self.adapt_channels != "first_conv":
            raise DataError(
                format_error(
                    f"Backbone {self.name!r} takes RGB images; inputs with {channels} "
                    "channels cannot be converted",
                    expected="1 (grayscale), 3 (RGB) or 4 (RGBA) channels",
                    received={"input_shape": tuple(raw_shape)},
                    fix="Convert the images to RGB or grayscale, or pass "
                    "Backbone(..., adapt_channels='first_conv')",
                )
            )

    def _frame_shape(self, raw_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        """The per-frame shape of clips ``(T, H, W, C)`` fed to an image backbone, else ``raw_shape``."""
        from finetunekit.backbones.video import is_framewise

        if self._kind == "application":
            target: tuple[Any, ...] = (None, None, 3)
        elif self.input_shape is not None:
            target = tuple(self.input_shape)
        else:
            return raw_shape
        return tuple(raw_shape[1:]) if is_framewise(raw_shape, target) else raw_shape

    def resolve_range(self, input_dtype: str, value_range: tuple[float, float] | None) -> str:
        """Returns the concrete input range for ``"auto"`` from the data's dtype and values."""
        if self.input_range != "auto":
            return self.input_range
        if self._kind != "application" and self._declared in (None, "none"):
            return "none"  # nothing declared: the values go in as they are
        if not input_dtype.startswith("float") or value_range is None:
            return "0-255"
        low, high = value_range
        if low >= 0.0 and high <= 1.0:
            return "0-1"
        if low >= -1.0 and high <= 1.0:
            return "-1-1"
        return "0-255"

    def create_adapted_model(
        self, channels: int, *, explain: dict[str, Any] | None = None
    ) -> keras.Model:
        """The backbone network built for ``channels`` input channels (``adapt_channels="first_conv"``).

        Pretrained weights are loaded into the RGB network and copied, the
        first convolution's kernel adapted (see ``finetunekit.backbones.channels``);
        without pretrained weights the application is simply built for ``channels``.

        Examples:
            >>> import keras, finetunekit as ftk
            >>> net = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(2, 3)])
            >>> bb = ftk.Backbone.from_model(net, adapt_channels="first_conv")
            >>> bb.create_adapted_model(1).inputs[0].shape
            (None, 8, 8, 1)
        """
        if self._kind == "application" and self.weights is None:  # nothing to adapt
            return self._create_application(channels)
        model = self.create_model(**({} if explain is None else {"explain": explain}))
        if int(model.inputs[0].shape[-1] or 0) != channels:
            bgr = self._mode() == "caffe"
            model = adapt_first_conv(model, channels, what=self.name, bgr=bgr)
        return model

    def create_model(self, *, explain: dict[str, Any] | None = None) -> keras.Model:
        """Creates the backbone network (loading weights) as a model named ``"backbone"``.

        Args:
            explain: a dict to receive, for :meth:`from_model` / :meth:`from_file`
                backbones, the layer the features come from and why
                (``"feature_layer"``, ``"cut_reason"``).

        Examples:
            >>> import keras, finetunekit as ftk
            >>> net = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4, name="embed"),
            ...                         keras.layers.Dense(2, activation="softmax")])
            >>> why = {}
            >>> ftk.Backbone.from_model(net).create_model(explain=why).output.shape
            (None, 4)
            >>> why["feature_layer"]
            'embed'
        """
        if self._kind == "application":
            return self._create_application()
        feature_layer = self.feature_layer
        if self._kind == "file":  # the recipe object is never modified: checks stay local
            source = _load_model_file(self._path or "")
            feature_layer = _check_feature_layer(source, feature_layer)
        else:
            assert self._model is not None
            source = _clone(self._model)
        cut = find_cut(source, feature_layer)
        if explain is not None:
            explain.update(feature_layer=cut.layer, cut_reason=cut.reason)
        return keras.Model(source.inputs, cut.tensor, name="backbone")

    def _create_application(
        self, channels: int = 3, size: tuple[int, int] | None = None
    ) -> keras.Model:
        spec = self._spec
        assert spec is not None
        ctor = getattr(keras.applications, spec.constructor)
        shape = tuple(self.input_shape or (spec.default_size, spec.default_size, 3))
        shape = (*(size or shape[:2]), channels)
        kwargs: dict[str, Any] = {"include_top": False, "input_shape": shape}
        if spec.module in ("mobilenet_v3", "efficientnet_v2", "convnext"):
            kwargs["include_preprocessing"] = True
        weights = self.weights
        try:
            model = ctor(weights=weights, **kwargs)
        except Exception as exc:  # keras raises bare Exception / ValueError / OSError
            raise _weights_error(self.name, weights, spec, exc) from exc
        # A fresh functional copy with a stable name; shares the layers (and weights).
        return keras.Model(model.inputs, model.outputs[0], name="backbone")

    def build(
        self,
        inputs: Any,
        *,
        input_dtype: str,
        value_range: tuple[float, float] | None = None,
        augment: Any = None,
    ) -> BuiltBackbone:
        """Adds input adaptation and the backbone to the symbolic ``inputs``.

        Args:
            inputs: the raw ``keras.Input`` of the final model.
            input_dtype: the raw inputs' dtype name.
            value_range: ``(min, max)`` of a sample of raw inputs, for ``"auto"``.
            augment: ``Trainer(augment=...)``: a block of Keras random layers
                goes right after the input adaptation (backbone-sized float
                images in their raw range) and before the backbone's own
                normalisation (see ``finetunekit.backbones.augmentation``).

        Returns:
            A :class:`BuiltBackbone` with the feature tensor and the nested model.
        """
        from finetunekit.backbones.video import BatchToFrames, FramesToBatch, is_framewise

        raw_shape = tuple(inputs.shape[1:])
        self._check_shapes(raw_shape, input_dtype)  # prepare() has warned already
        own = self.adapt_channels == "first_conv"  # built for the raw images' channel count
        cut: dict[str, Any] = {}
        mine = {} if self._kind == "application" else {"explain": cut}
        model = (
            self.create_adapted_model(_channels(self._frame_shape(raw_shape)), **mine)
            if own
            else self.create_model(**mine)
        )
        target = tuple(model.inputs[0].shape[1:])
        rng = self.resolve_range(input_dtype, value_range)
        x = inputs
        clips = is_framewise(raw_shape, target)
        if clips:  # (T, H, W, C) clips: the backbone sees frames, weights shared
            x = FramesToBatch(name="input_frames")(x)
            raw_shape = raw_shape[1:]
        x = self._adapt(x, raw_shape, target, input_dtype, rng)
        if augment is not None:  # active only in training (Keras random layers)
            from finetunekit.backbones.augmentation import apply_augmentation

            x = apply_augmentation(
                x,
                augment,
                input_range=rng,
                value_range=value_range,
                clips=inputs if clips else None,
            )
        x = self._preprocess(x)
        features = model(x, training=False)
        if clips:
            features = BatchToFrames(name="frame_features")([features, inputs])
        info = self._info(inputs, target, rng, input_dtype, framewise=clips, cut=cut)
        return BuiltBackbone(features=features, model=model, info=info)

    def build_pyramid(
        self,
        inputs: Any,
        *,
        input_dtype: str,
        levels: Sequence[int],
        value_range: tuple[float, float] | None = None,
        partial: bool = False,
    ) -> BuiltBackbone:
        """Adds input adaptation and the backbone's feature maps at several strides.

        For a detector: ``inputs`` are square images of the size the network
        is built for (``keras.applications`` backbones are created at that
        size; a model with a fixed input size must match it). Each level
        ``l`` is the output of the LAST layer whose feature map is ``2**l``
        times smaller than the input (see :func:`pyramid_taps`).

        Args:
            inputs: the symbolic ``(S, S, C)`` images, in the raw value range.
            input_dtype: the raw images' dtype name (decides the value range).
            levels: the pyramid levels wanted, e.g. ``[3, 4, 5]``.
            value_range: ``(min, max)`` of a sample of raw inputs, for ``"auto"``.
            partial: keep the consecutive levels the network has, from the
                first of ``levels`` it has (see :func:`pyramid_taps`).

        Returns:
            A :class:`BuiltBackbone` whose ``features`` is ``{"P3": ..., ...}``.

        Raises:
            BackboneError: the network has no feature map at a wanted stride.

        Examples:
            >>> import keras, finetunekit as ftk
            >>> bb = ftk.Backbone("mobilenet_v3_small", weights=None)
            >>> built = bb.build_pyramid(keras.Input((64, 64, 3)), input_dtype="uint8",
            ...                          levels=[3, 4, 5])
            >>> {k: tuple(v.shape[1:3]) for k, v in built.features.items()}
            {'P3': (8, 8), 'P4': (4, 4), 'P5': (2, 2)}
        """
        raw_shape = tuple(inputs.shape[1:])
        size = (int(raw_shape[0]), int(raw_shape[1]))
        own = self.adapt_channels == "first_conv"
        cut: dict[str, Any] = {}
        if self._kind == "application":
            model = self._create_application(
                _channels(raw_shape) if own and self.weights is None else 3, size=size
            )
            if own and self.weights is not None and _channels(raw_shape) != 3:
                model = adapt_first_conv(
                    model, _channels(raw_shape), what=self.name, bgr=self._mode() == "caffe"
                )
        elif own:
            model = self.create_adapted_model(_channels(raw_shape), explain=cut)
        else:
            model = self.create_model(explain=cut)
        target = tuple(model.inputs[0].shape[1:])
        if len(target) != 3 or (target[0] is not None and tuple(target[:2]) != size):
            raise BackboneError(
                format_error(
                    f"Backbone {self.name!r} cannot take the detector's {size[0]}x{size[1]} images",
                    expected=f"a network taking images of any size or of {size[0]}x{size[1]}",
                    received={"backbone input shape": target},
                    fix="Use a backbone built with input_shape=(None, None, 3), or give the "
                    "detector that image size",
                )
            )
        taps = pyramid_taps(model, size, levels, what=self.name, partial=partial)
        pyramid = keras.Model(model.inputs, taps, name="backbone")
        rng = self.resolve_range(input_dtype, value_range)
        x = self._adapt(inputs, raw_shape, (*size, target[-1]), input_dtype, rng)
        x = self._preprocess(x)
        features = pyramid(x, training=False)
        info = self._info(inputs, (*size, target[-1]), rng, input_dtype, framewise=False, cut=cut)
        info["pyramid"] = {name: list(t.shape[1:]) for name, t in taps.items()}
        return BuiltBackbone(features=features, model=pyramid, info=info)

    def _adapt(
        self,
        x: Any,
        raw_shape: tuple[int | None, ...],
        target: tuple[int | None, ...],
        input_dtype: str,
        rng: str,
    ) -> Any:
        """Resizing, channel conversion and the value range -> backbone-sized 0-255 floats."""
        scale, offset = _RANGE_TO_AFFINE[rng]
        adapt = _adaptation(raw_shape, target, self.name)
        if adapt is not None or scale != 1.0 or offset != 0.0 or input_dtype != "float32":
            channels = int(target[-1] or 3)
            add_axis, in_ch, out_ch, size = adapt or (False, channels, channels, None)
            x = ImageInputAdapter(
                size, in_ch, out_ch, add_axis, scale, offset, name="input_adapter"
            )(x)
        return x

    def _preprocess(self, x: Any) -> Any:
        """The network's own normalisation of 0-255 images."""
        mode = self._mode()  # 0-255 -> what the network expects
        if mode == "layer":
            assert isinstance(self._declared, keras.layers.Layer)
            layer = declared_preprocessing.make_layer(self._declared)
            x = layer(x)
            declared_preprocessing.copy_weights(self._declared, layer)
        elif mode != "none":
            x = ImagePreprocess(mode, name="input_preprocess")(x)
        return x

    def _info(
        self,
        inputs: Any,
        target: tuple[int | None, ...],
        rng: str,
        input_dtype: str,
        *,
        framewise: bool,
        cut: dict[str, Any],
    ) -> dict[str, Any]:
        info = {
            "backbone": self.name,
            "source": self._kind,
            "input_size": list(target),
            "raw_input_shape": list(inputs.shape[1:]),
            "framewise": framewise,
            "input_range": rng,
            "preprocessing": (
                self.preprocessing
                if self._kind == "application"
                else declared_preprocessing.describe(self._declared)
            ),
            "weights": self.weights,
            "adapt_channels": self.adapt_channels,
            **cut,  # from_model / from_file: "feature_layer", "cut_reason"
        }
        warning = self.preprocessing_warning(input_dtype)
        if warning is not None:
            info["preprocessing_warning"] = warning
        return info

    # ------------------------------------------------------------------ config
    def get_config(self) -> dict[str, Any]:
        """Returns a JSON-serialisable description (no weights).

        Raises:
            ConfigError: for :meth:`from_model` backbones, which hold a live model.
        """
        if self._kind == "model":
            raise ConfigError(
                format_error(
                    "A Backbone.from_model backbone holds a live Keras model and cannot "
                    "be written to a JSON recipe",
                    expected="a named or file backbone",
                    received={"backbone": self.name},
                    fix="Save the model with model.save('encoder.keras') and use "
                    "Backbone.from_file('encoder.keras')",
                )
            )
        if self._kind == "file":
            return {
                "file": self._path,
                "feature_layer": self.feature_layer,
                "preprocessing": declared_preprocessing.describe(self._declared),
                "input_range": self.input_range,
                "adapt_channels": self.adapt_channels,
            }
        return {
            "name": self.name,
            "weights": self.weights,
            "input_shape": list(self.input_shape) if self.input_shape else None,
            "input_range": self.input_range,
            "adapt_channels": self.adapt_channels,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Backbone:
        """Rebuilds a backbone from :meth:`get_config` output."""
        config = dict(config)
        if "preset" in config:
            from finetunekit.backbones.text import TextBackbone

            return TextBackbone.from_config(config)
        if "file" in config:
            _check_keys(
                config, {"file", "feature_layer", "preprocessing", "input_range", "adapt_channels"}
            )
            return cls.from_file(
                config["file"],
                feature_layer=config.get("feature_layer"),
                preprocessing=declared_preprocessing.from_config_value(
                    config.get("preprocessing"), "Backbone.from_file"
                ),
                input_range=config.get("input_range", "auto"),
                adapt_channels=config.get("adapt_channels", "convert"),
            )
        _check_keys(config, {"name", "weights", "input_shape", "input_range", "adapt_channels"})
        shape = config.get("input_shape")
        return cls(
            config["name"],
            weights=config.get("weights", "imagenet"),
            input_shape=tuple(shape) if shape else None,
            input_range=config.get("input_range", "auto"),
            adapt_channels=config.get("adapt_channels", "convert"),
        )

    def __repr__(self) -> str:
        if self._kind == "application":
            return (
                f"Backbone({self.name!r}, weights={self.weights!r}, "
                f"input_shape={self.input_shape!r})"
            )
        declared = self._declared
        if isinstance(declared, keras.layers.Layer):
            declared = f"<{type(declared).__name__} {declared.name!r}>"
        extra = f", preprocessing={declared!r}" if declared is not None else ""
        return (
            f"Backbone.from_{self._kind}({self.name!r}, "
            f"feature_layer={self.feature_layer!r}{extra})"
        )


# ---------------------------------------------------------------------- helpers
def _channels(raw_shape: tuple[int | None, ...]) -> int:
    """The channel count of raw images ``(H, W)`` (1) or ``(H, W, C)``."""
    return 1 if len(raw_shape) == 2 else int(raw_shape[-1] or 3)


def _check_keys(config: dict[str, Any], valid: set[str]) -> None:
    check_config_keys("Backbone", config, valid)


def _check_weights(weights: Any) -> str | None:
    if weights is None or weights == "imagenet":
        return weights
    if not isinstance(weights, (str, os.PathLike)):
        raise ArgumentTypeError(
            format_error(
                "weights must be 'imagenet', None or a file path",
                expected="'imagenet', None or the path of a .h5 weights file",
                received={"weights": weights},
                fix="Pass weights=None for random initialisation",
            )
        )
    path = os.fspath(weights)
    if not os.path.isfile(path):
        raise WeightsError(
            format_error(
                "The weights file does not exist",
                expected="'imagenet', None or the path of an existing weights file",
                received={"weights": path},
                fix="Check the path; download the '..._notop.h5' file of this model "
                f"elsewhere and copy it here, or into {keras_cache_dir()}",
            )
        )
    if not path.endswith(_WEIGHT_SUFFIXES):
        raise WeightsError(
            format_error(
                "The weights file has an unexpected extension",
                expected=f"a file ending in one of {_WEIGHT_SUFFIXES}",
                received={"weights": path},
                fix="Pass the Keras '..._notop.h5' weights file of this model",
            )
        )
    problem = _file_problem(path)
    if problem:
        raise WeightsError(
            format_error(
                f"The weights file {os.path.basename(path)!r} is corrupt or truncated ({problem})",
                expected="an intact HDF5 (.h5) or .keras weights file",
                received={"weights": path},
                fix="Download or copy the file again (compare its size with the original), "
                "or pass weights=None to start from random weights",
            )
        )
    return path


_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _file_problem(path: str) -> str | None:
    """Returns why a weights / model file is unreadable, or ``None`` when it looks intact.

    Cheap: reads the HDF5 superblock (which records the file's full length, so a
    truncated file is caught) or the zip directory at the end of a ``.keras``
    archive; nothing is deserialised and no model is built.
    """
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
    except OSError as exc:
        return str(exc)
    if path.endswith(".keras"):
        import zipfile

        if not zipfile.is_zipfile(path):
            return "not a zip archive, as .keras files are"
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError) as exc:
            return str(exc)
        if not any(n.endswith(".h5") for n in names) and "config.json" not in names:
            return f"the archive holds no Keras model or weights: {names[:5]}"
        return None
    try:
        import h5py
    except ImportError:  # pragma: no cover - h5py comes with Keras
        return None if head == _HDF5_SIGNATURE else "no HDF5 signature at the start"
    try:
        with h5py.File(path, "r"):
            pass
    except (OSError, ValueError) as exc:
        reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        return f"not a readable HDF5 file: {reason}"
    return None


def _check_model_file(path: str) -> None:
    problem = _file_problem(path)
    if problem:
        raise WeightsError(
            format_error(
                f"The backbone file {os.path.basename(path)!r} is corrupt or truncated ({problem})",
                expected="an intact Keras model file saved with model.save()",
                received={"path": path},
                fix="Save the model again with model.save('encoder.keras')",
            )
        )


def _check_range(value: Any) -> str:
    if value not in INPUT_RANGES:
        raise ArgumentTypeError(
            format_error(
                "Unknown input_range",
                expected=f"one of {INPUT_RANGES}",
                received={"input_range": value},
                fix="Use 'auto' to detect it from the data",
            )
        )
    return str(value)


def _check_input_shape(
    shape: Any, spec: registry.BackboneSpec, weights: str | None
) -> tuple[int, int, int] | None:
    if shape is None:
        return None
    try:
        shape = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        shape = None
    if shape is None or len(shape) != 3:
        raise InputShapeError(
            format_error(
                "input_shape must be (height, width, channels)",
                expected="a tuple of three ints, e.g. (224, 224, 3)",
                received={"input_shape": shape},
                fix=f"Pass input_shape=({spec.default_size}, {spec.default_size}, 3)",
            )
        )
    h, w, c = shape
    if h < spec.min_size or w < spec.min_size:
        raise InputShapeError(
            format_error(
                f"input_shape is below the minimum size of {spec.name!r}",
                expected=f"height and width >= {spec.min_size}",
                received={"input_shape": shape},
                fix=f"Pass input_shape=({max(h, spec.min_size)}, {max(w, spec.min_size)}, {c}); "
                "smaller raw images are resized inside the model",
            )
        )
    if c != 3 and weights is not None:
        raise InputShapeError(
            format_error(
                "Pretrained weights need 3 input channels",
                expected="input_shape with 3 channels",
                received={"input_shape": shape},
                fix="Keep 3 channels: grayscale inputs are converted inside the model",
            )
        )
    return shape


def _weights_error(
    name: str, weights: str | None, spec: registry.BackboneSpec, exc: Exception
) -> BackboneError:
    text = str(exc)
    url = re.search(r"https?://\S+?\.(?:h5|keras)", text)
    if weights == "imagenet" and (url or "fetch" in text.lower() or "URL" in text):
        fname = url.group(0).rsplit("/", 1)[-1] if url else f"{spec.module}_weights_notop.h5"
        return WeightsError(
            format_error(
                f"The ImageNet weights of {name!r} could not be downloaded ({text[:300]})",
                expected=f"the file {fname!r} in the Keras cache {keras_cache_dir()} "
                "or a reachable download",
                received={"weights": weights},
                fix=f"Copy {fname} (from {url.group(0) if url else 'the Keras weights store'}) "
                f"into {keras_cache_dir()}, or pass weights='/path/to/{fname}', "
                "or weights=None to start from random weights",
            )
        )
    if weights not in (None, "imagenet"):
        return WeightsError(
            format_error(
                f"The weights file could not be loaded into {name!r} ({text[:200]})",
                expected=f"the Keras include_top=False weights of {name!r} in an intact file",
                received={"weights": weights},
                fix="Check that the file is complete and belongs to this model without its top",
            )
        )
    return InputShapeError(
        format_error(
            f"Keras could not build {name!r} ({text[:300]})",
            expected="arguments the keras.applications model accepts",
            received={"backbone": name, "weights": weights},
            fix="Check input_shape against the model's documented input sizes",
        )
    )


def _load_model_file(path: str) -> keras.Model:
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:
        raise WeightsError(
            format_error(
                f"The backbone file could not be loaded ({str(exc)[:200]})",
                expected="an intact Keras model file saved with model.save()",
                received={"path": path},
                fix="Save the model again with model.save('encoder.keras'); files with "
                "Lambda layers need finetunekit.Backbone.from_model on a model you rebuild",
            )
        ) from exc


class _UncopyableLayer(Exception):
    """A layer holding weights that Keras cannot rebuild from its config."""

    def __init__(self, layer: keras.layers.Layer) -> None:
        super().__init__(layer.name)
        self.layer = layer


def _copy_layer(layer: keras.layers.Layer) -> keras.layers.Layer:
    """``clone_model`` hook: a layer rebuilt from its config (reused when it has no weights and fails)."""
    try:
        return layer.__class__.from_config(layer.get_config())
    except Exception as exc:
        if layer.weights:
            raise _UncopyableLayer(layer) from exc
        return layer  # e.g. a Lambda holding a Python lambda: no state to train or keep apart


def _clone(model: keras.Model) -> keras.Model:
    """A copy of the user's model with its own weights, so ``fit`` never trains the original.

    Layers are rebuilt from their configs (``keras.models.clone_model``). When
    that fails, nested models are cloned layer by layer and layers without
    weights that cannot be rebuilt (a ``Lambda`` holding a Python lambda,
    which Keras rebuilds only outside safe mode) are reused: they hold nothing
    that training changes. A layer with weights that cannot be rebuilt (a
    subclassed layer or model without ``get_config``) raises: sharing it
    would train the user's model in place, and a second ``fit`` would start
    from the weights the first one trained.
    """
    try:
        clone = keras.models.clone_model(model)
        clone.set_weights(model.get_weights())
        return clone
    except Exception:  # retried below, layer by layer
        pass
    try:
        clone = keras.models.clone_model(model, clone_function=_copy_layer, recursive=True)
        clone.set_weights(model.get_weights())
        return clone
    except Exception as exc:
        layer = exc.layer if isinstance(exc, _UncopyableLayer) else None
        cause = exc.__cause__ if layer is not None else exc
        text = str(cause).strip()
        reason = f"{type(cause).__name__}: {text.splitlines()[0][:160] if text else ''}"
        what = f"{type(layer).__name__} {layer.name!r} of model" if layer else "model"
        owner = type(layer).__name__ if layer else "your own layer and model classes"
        raise BackboneError(
            format_error(
                f"Backbone.from_model cannot copy {what} {model.name!r} ({reason}); fit() "
                "trains a copy so that every fit() starts from the weights you gave, and "
                "never trains your model in place",
                expected="layers and models that Keras rebuilds with from_config(get_config())",
                received={"model": model.name, "layer": layer.name if layer else None},
                fix=f"Implement get_config() on {owner} returning the arguments of "
                "__init__ (and from_config() when they are not plain values); see "
                "https://keras.io/guides/serialization_and_saving/",
            )
        ) from exc


def _check_feature_layer(model: keras.Model, feature_layer: str | None) -> str | None:
    if feature_layer is None:
        return None
    names = [layer.name for layer in model.layers]
    if feature_layer not in names:
        raise BackboneError(
            format_error(
                f"Layer {feature_layer!r} is not in model {model.name!r}",
                expected=f"one of {names[-8:]} (last layers shown)",
                received={"feature_layer": feature_layer},
                fix="Pick a layer name from model.summary()",
            )
        )
    return feature_layer


def _adaptation(
    raw: tuple[int | None, ...], target: tuple[int | None, ...], name: str
) -> tuple[bool, int, int, tuple[int, int] | None] | None:
    """Returns (add_channel_axis, in_channels, out_channels, resize_to) or None if identity."""
    if len(target) != 3:  # not an image backbone: inputs must already match
        if tuple(raw) != tuple(target):
            raise DataError(
                format_error(
                    f"The inputs do not match the input of backbone {name!r}",
                    expected=f"examples of shape {tuple(target)}",
                    received={"input_shape": tuple(raw)},
                    fix="Reshape the data to the backbone's input shape",
                )
            )
        return None
    if len(raw) not in (2, 3):
        raise DataError(
            format_error(
                f"Backbone {name!r} takes images, but the inputs are not images",
                expected="examples of shape (H, W) or (H, W, C)",
                received={"input_shape": tuple(raw)},
                fix="Reshape the data to (N, H, W, C)",
            )
        )
    add_axis = len(raw) == 2
    in_ch = 1 if add_axis else int(raw[-1] or 0)
    out_ch = int(target[-1] or 3)
    if in_ch != out_ch and not (in_ch == 1 or (in_ch == 4 and out_ch == 3) or out_ch == 1):
        raise DataError(
            format_error(
                f"Inputs with {in_ch} channels cannot feed backbone {name!r}",
                expected=f"{out_ch} channels (or 1 / 4 channels, converted automatically)",
                received={"input_shape": tuple(raw)},
                fix="Convert the images before passing them",
            )
        )
    size = (int(target[0]), int(target[1])) if target[0] and target[1] else None
    if size is not None and tuple(raw[:2]) == size:
        size = None
    if not add_axis and in_ch == out_ch and size is None:
        return None
    return add_axis, in_ch, out_ch, size
