"""Text backbones from KerasHub presets: BERT-family encoders and others KerasHub loads.

``Backbone.from_preset(name_or_dir)`` returns a :class:`TextBackbone`. When the
pipeline builds the model, the preset's own preprocessor (tokenizer, packing
into ``[CLS] ... [SEP]``, padding to ``sequence_length``) becomes the layer
``input_text`` of the fine-tuned model, so that model takes raw strings. The
encoder plus a pooling layer (``"cls"`` token or ``"mean"`` over the real
tokens) is the nested model ``"backbone"``.

KerasHub (``keras-hub``) is an optional dependency, imported only here and
only when a text backbone is used: ``pip install 'finetunekit[text]'``.
"""

from __future__ import annotations

import difflib
import os
import warnings
from typing import Any

import keras
from keras import ops

from finetunekit import _compat
from finetunekit.backbones.backbone import Backbone, BuiltBackbone
from finetunekit.backbones.padding import PAD_MULTIPLE, check_padding, trim_padding
from finetunekit.errors import (
    ArgumentTypeError,
    BackboneError,
    DataError,
    InputShapeError,
    UnknownBackboneError,
    WeightsError,
    check_config_keys,
    format_error,
)

__all__ = [
    "TextBackbone",
    "TextPreprocessor",
    "TokenPooling",
    "TEXT_POOLINGS",
    "require_keras_hub",
    "is_gguf",
]

TEXT_POOLINGS = ("cls", "mean")
INSTALL_HINT = "pip install 'finetunekit[text]'  (or: pip install keras-hub)"
_HANDLE_PREFIXES = ("kaggle://", "hf://", "gs://", "modelscope://", "file://")
_GENERIC_DIR_NAMES = {"model", "models", "checkpoint", "checkpoints", "preset", "weights"}


def require_keras_hub() -> Any:
    """Imports and returns ``keras_hub``, or raises a clear error with the install hint.

    Raises:
        BackboneError: KerasHub is not installed.

    Examples:
        >>> require_keras_hub().__name__  # doctest: +SKIP
        'keras_hub'
    """
    try:
        import keras_hub
    except ImportError as exc:
        raise BackboneError(
            format_error(
                f"Text backbones need KerasHub, which is not installed ({exc})",
                expected="the optional dependency keras-hub",
                received={"keras_hub": None},
                fix=f"Install it: {INSTALL_HINT}",
            )
        ) from exc
    return keras_hub


# --------------------------------------------------------------------------- layers


@keras.saving.register_keras_serializable(package="finetunekit")
class TextPreprocessor(keras.layers.Layer):
    """Raw strings -> the encoder's inputs, with the preset's own preprocessor.

    Wraps a KerasHub ``TextClassifierPreprocessor`` (tokenizer + packer).
    Single texts come as a ``(B,)`` string tensor, sentence pairs as
    ``(B, 2)`` (both segments are packed into one sequence). The output is the
    encoder's input dict, e.g. ``token_ids``, ``padding_mask``, ``segment_ids``
    of shape ``(B, sequence_length)``; with ``padding="dynamic"`` of shape
    ``(B, K)``, ``K`` the batch's longest text rounded up to a multiple of
    ``pad_multiple`` (see :mod:`finetunekit.backbones.padding`: the encoder's
    outputs for each text are unchanged). The tokenizer's vocabulary is saved
    with the model as an asset, so a saved model loads (in safe mode) and
    predicts on raw strings.

    Args:
        preprocessor: the KerasHub preprocessor (or its serialised config).
        pairs: whether inputs are sentence pairs ``(B, 2)``.
        output_dtypes: ``{input name: dtype}`` of the output dict; computed
            from the preprocessor when ``None``.
        padding: ``"fixed"`` (every batch ``sequence_length`` long; what models
            saved before this setting existed do) or ``"dynamic"`` (cut the
            padding after each batch's longest text).
        pad_multiple: with ``"dynamic"``, kept lengths are multiples of it.

    Examples:
        >>> layer = TextPreprocessor(preprocessor)  # doctest: +SKIP
        >>> layer(tf.constant(["a short text"]))["token_ids"].shape  # doctest: +SKIP
        TensorShape([1, 128])
    """

    def __init__(
        self,
        preprocessor: Any,
        pairs: bool = False,
        output_dtypes: dict[str, str] | None = None,
        padding: str = "fixed",
        pad_multiple: int = PAD_MULTIPLE,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.padding = check_padding(padding)
        if isinstance(pad_multiple, bool) or not isinstance(pad_multiple, int):
            raise ArgumentTypeError(
                format_error(
                    "pad_multiple must be an int",
                    expected=f"an int >= 1, e.g. {PAD_MULTIPLE}",
                    received={"pad_multiple": pad_multiple},
                    fix=f"Pass pad_multiple={PAD_MULTIPLE}",
                )
            )
        if pad_multiple < 1:
            raise BackboneError(
                format_error(
                    "pad_multiple must be positive",
                    expected=f"an int >= 1, e.g. {PAD_MULTIPLE}",
                    received={"pad_multiple": pad_multiple},
                    fix=f"Pass pad_multiple={PAD_MULTIPLE}",
                )
            )
        self.pad_multiple = pad_multiple
        if isinstance(preprocessor, dict):
            require_keras_hub()
            preprocessor = keras.saving.deserialize_keras_object(preprocessor)
        self.preprocessor = preprocessor
        self.pairs = bool(pairs)
        self.sequence_length = int(preprocessor.sequence_length)
        if output_dtypes is None:
            import tensorflow as tf

            sample = tf.constant([["a", "b"]]) if self.pairs else tf.constant(["a"])
            output_dtypes = {k: v.dtype.name for k, v in self._run(sample).items()}
        self.output_dtypes = dict(output_dtypes)
        if self.padding == "dynamic" and "padding_mask" not in self.output_dtypes:
            raise BackboneError(
                format_error(
                    "padding='dynamic' needs a preprocessor that outputs a padding_mask",
                    expected="a KerasHub text preprocessor with a 'padding_mask' output",
                    received={"outputs": sorted(self.output_dtypes)},
                    fix="Pass padding='fixed'",
                )
            )

    def build(self, input_shape: Any) -> None:
        # The inner preprocessor is built on first use: when a saved model is
        # loaded, its vocabulary (an asset) arrives after the graph is rebuilt.
        self.built = True

    def _run(self, x: Any) -> dict[str, Any]:
        if not self.preprocessor.built:
            self.preprocessor.build(None)
        segments = (x[:, 0], x[:, 1]) if self.pairs else x
        out = self.preprocessor.call(segments)
        return dict(out)

    def call(self, inputs: Any) -> dict[str, Any]:
        out = self._run(inputs)
        if self.padding == "dynamic":
            out = trim_padding(out, multiple=self.pad_multiple, cap=self.sequence_length)
        return out

    def compute_output_spec(self, inputs: Any) -> dict[str, Any]:
        batch = inputs.shape[0]
        length = None if self.padding == "dynamic" else self.sequence_length
        return {
            name: keras.KerasTensor((batch, length), dtype=dtype, name=name)
            for name, dtype in self.output_dtypes.items()
        }

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "preprocessor": keras.saving.serialize_keras_object(self.preprocessor),
            "pairs": self.pairs,
            "output_dtypes": dict(self.output_dtypes),
            "padding": self.padding,
            "pad_multiple": self.pad_multiple,
        }


@keras.saving.register_keras_serializable(package="finetunekit")
class TokenPooling(keras.layers.Layer):
    """Pools token features ``(B, L, H)`` into one vector ``(B, H)`` per text.

    Args:
        mode: ``"cls"`` (the first token, ``[CLS]`` in BERT) or ``"mean"``
            (average over the real tokens, padding excluded by the mask).

    Examples:
        >>> import numpy as np
        >>> seq = np.arange(12, dtype="float32").reshape(1, 3, 4)
        >>> mask = np.array([[True, True, False]])
        >>> TokenPooling("mean")([seq, mask]).numpy().tolist()
        [[2.0, 3.0, 4.0, 5.0]]
    """

    def __init__(self, mode: str = "mean", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if mode not in TEXT_POOLINGS:
            raise ValueError(f"mode must be one of {TEXT_POOLINGS}. Received: mode={mode!r}")
        self.mode = mode

    def call(self, inputs: Any) -> Any:
        if isinstance(inputs, (list, tuple)):
            seq, mask = inputs
        else:
            seq, mask = inputs, None
        if self.mode == "cls":
            return seq[:, 0, :]
        if mask is None:
            return ops.mean(seq, axis=1)
        weights = ops.expand_dims(ops.cast(mask, seq.dtype), -1)
        total = ops.sum(seq * weights, axis=1)
        return total / ops.maximum(ops.sum(weights, axis=1), 1.0)

    def compute_output_shape(self, input_shape: Any) -> tuple[Any, ...]:
        shape = (
            input_shape[0]
            if isinstance(input_shape, (list, tuple)) and isinstance(input_shape[0], (list, tuple))
            else input_shape
        )
        return (shape[0], shape[-1])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "mode": self.mode}


# --------------------------------------------------------------------------- backbone


def _is_local(preset: str) -> bool:
    if preset.startswith(_HANDLE_PREFIXES) and not preset.startswith("file://"):
        return False
    return (
        os.path.isdir(preset)
        or preset.startswith(("/", ".", "~"))
        or os.sep in preset
        or preset.startswith("file://")
    )


def _preset_name(preset: str) -> str:
    if not _is_local(preset):
        return preset.split("://", 1)[-1].rstrip("/").replace("/", "_")
    path = os.path.abspath(os.path.expanduser(preset.removeprefix("file://"))).rstrip(os.sep)
    base = os.path.basename(path)
    if base.lower() in _GENERIC_DIR_NAMES:
        base = os.path.basename(os.path.dirname(path)) or base
    return base


class TextBackbone(Backbone):
    """A KerasHub text encoder; build it with :meth:`Backbone.from_preset`.

    The constructor checks its arguments at once (the preset name against
    KerasHub's list, a local folder for a ``config.json``); the encoder, its
    weights and its tokenizer are only loaded when the pipeline builds the
    model.

    Args:
        preset: a KerasHub preset name (``"bert_tiny_en_uncased"``; downloaded
            and cached by KerasHub where a network exists), a handle
            (``"kaggle://..."``, ``"hf://..."``), or a local folder: a KerasHub
            preset saved with ``save_to_preset`` or a Hugging Face checkpoint
            folder KerasHub converts (BERT family and others it supports).
        sequence_length: tokens per text (pairs: both segments together);
            longer texts are truncated, shorter ones padded.
        pooling: ``"cls"`` (the first token) or ``"mean"`` (average over real
            tokens; the usual choice for sentence-embedding checkpoints).
        lora_rank: deprecated: pass ``Trainer(lora_rank=...)``, which puts the
            adapters on this encoder's attention query / value projections by
            default. Still works: it becomes the Trainer's ``lora_rank`` when
            the Trainer has a fine-tuning phase.
        load_weights: ``True`` for the pretrained weights, ``False`` for the
            same architecture randomly initialised (training from scratch).
        padding: ``"dynamic"`` (default): each batch is cut after its longest
            text, rounded up to a multiple of 8 tokens, inside the model, so
            short texts do not pay for ``sequence_length``; outputs are the
            same as ``"fixed"`` (every batch padded to ``sequence_length``),
            which keeps one constant shape (see ``docs/text.md``).

    Examples:
        >>> import finetunekit as ftk
        >>> bb = ftk.Backbone.from_preset("/path/to/all-MiniLM-L6-v2", sequence_length=64)  # doctest: +SKIP
        >>> bb.pooling  # doctest: +SKIP
        'mean'
    """

    def __init__(
        self,
        preset: str | os.PathLike[str],
        *,
        sequence_length: int = 128,
        pooling: str = "mean",
        lora_rank: int | None = None,
        load_weights: bool = True,
        padding: str = "dynamic",
    ) -> None:
        if not isinstance(preset, (str, os.PathLike)):
            raise ArgumentTypeError(
                format_error(
                    "preset must be a KerasHub preset name or a folder path",
                    expected="a string such as 'bert_tiny_en_uncased' or '/models/minilm'",
                    received={"preset": preset},
                    fix="Pass the preset name or the path of a local checkpoint folder",
                )
            )
        preset = os.fspath(preset)
        if isinstance(sequence_length, bool) or not isinstance(sequence_length, int):
            raise ArgumentTypeError(
                format_error(
                    "sequence_length must be an int",
                    expected="an int >= 2, e.g. 128",
                    received={"sequence_length": sequence_length},
                    fix="Pass sequence_length=128",
                )
            )
        if sequence_length < 2:
            raise InputShapeError(
                format_error(
                    "sequence_length is too small",
                    expected="an int >= 2 (room for [CLS] and [SEP])",
                    received={"sequence_length": sequence_length},
                    fix="Pass sequence_length=128",
                )
            )
        if pooling not in TEXT_POOLINGS:
            raise BackboneError(
                format_error(
                    "Unknown text pooling",
                    expected=f"one of {TEXT_POOLINGS}",
                    received={"pooling": pooling},
                    fix="Use pooling='mean' (average over tokens) or 'cls' (the first token)",
                )
            )
        if lora_rank is not None and (
            isinstance(lora_rank, bool) or not isinstance(lora_rank, int) or lora_rank < 1
        ):
            raise BackboneError(
                format_error(
                    "lora_rank must be None or a positive int",
                    expected="None (no LoRA) or e.g. 4",
                    received={"lora_rank": lora_rank},
                    fix="Pass lora_rank=4, or None to fine-tune every weight",
                )
            )
        if lora_rank is not None:
            warnings.warn(
                "Backbone.from_preset(lora_rank=...) is deprecated: pass Trainer(lora_rank=...) "
                "(LoRA's settings live on the Trainer; a text encoder's attention query/value "
                "projections are its default targets)",
                DeprecationWarning,
                stacklevel=3,
            )
        if not isinstance(load_weights, bool):
            raise ArgumentTypeError(
                format_error(
                    "load_weights must be a bool",
                    expected="True (pretrained) or False (random initialisation)",
                    received={"load_weights": load_weights},
                )
            )
        padding = check_padding(padding)
        _check_preset(preset)
        self._spec = None
        self._kind = "preset"
        self._model = None
        self._path = None
        self.preset = preset
        self.name = _preset_name(preset)
        self.sequence_length = int(sequence_length)
        self.pooling = pooling
        self.lora_rank = lora_rank
        self.load_weights = load_weights
        self.padding = padding
        self.weights = "pretrained" if load_weights else None
        self.input_shape = None
        self.input_range = "none"
        self.feature_layer = None

    # ------------------------------------------------------------------ checks
    def check_input(
        self, raw_shape: tuple[int | None, ...], input_dtype: str | None = None
    ) -> None:
        """Raises unless the inputs are texts ``()`` or sentence pairs ``(2,)``."""
        if tuple(raw_shape) not in ((), (2,)) or (
            input_dtype is not None and input_dtype != "string"
        ):
            raise DataError(
                format_error(
                    f"Text backbone {self.name!r} takes raw strings, but the inputs are "
                    f"{input_dtype or 'arrays'} of shape {tuple(raw_shape)} per example",
                    expected="texts (DatasetAdapter.from_texts) or sentence pairs "
                    "(DatasetAdapter.from_text_pairs)",
                    received={"input_shape": tuple(raw_shape), "input_dtype": input_dtype},
                    fix="Build the data with DatasetAdapter.from_texts(texts, labels)",
                )
            )

    # ------------------------------------------------------------------ loading
    def _load(self) -> tuple[Any, Any]:
        """Loads the KerasHub encoder and preprocessor (weights only if ``load_weights``)."""
        keras_hub = require_keras_hub()
        local = _is_local(self.preset)
        source = os.path.expanduser(self.preset.removeprefix("file://")) if local else self.preset
        try:
            encoder = keras_hub.models.Backbone.from_preset(source, load_weights=self.load_weights)
            preprocessor = keras_hub.models.TextClassifierPreprocessor.from_preset(
                source, sequence_length=self.sequence_length
            )
        except Exception as exc:  # KerasHub raises ValueError, OSError, requests errors...
            raise _preset_error(self.preset, local, exc) from exc
        limit = getattr(encoder, "max_sequence_length", None)
        if limit is not None and self.sequence_length > int(limit):
            raise InputShapeError(
                format_error(
                    f"sequence_length exceeds what {self.name!r} can encode ({limit} tokens)",
                    expected=f"sequence_length <= {limit}",
                    received={"sequence_length": self.sequence_length},
                    fix=f"Pass sequence_length={min(int(limit), 128)}",
                )
            )
        return encoder, preprocessor

    def _wrap(self, encoder: Any) -> keras.Model:
        inputs = encoder.input
        outputs = encoder.output
        seq = outputs["sequence_output"] if isinstance(outputs, dict) else outputs
        mask = inputs.get("padding_mask") if isinstance(inputs, dict) else None
        pooled = TokenPooling(self.pooling, name="backbone_pool")(
            [seq, mask] if mask is not None else seq
        )
        # A functional view of the encoder's own layers, ending at the pooled
        # features (an unused BERT pooler would only collect no gradients).
        return keras.Model(inputs, pooled, name="backbone")

    def create_model(self, *, explain: dict[str, Any] | None = None) -> keras.Model:
        """Loads the encoder (and its weights) and returns it with pooling, named ``"backbone"``.

        ``explain`` is accepted for :class:`Backbone`'s signature and left empty:
        a text encoder is never cut below a classifier.
        """
        encoder, _ = self._load()
        return self._wrap(encoder)

    def build(
        self,
        inputs: Any,
        *,
        input_dtype: str,
        value_range: tuple[float, float] | None = None,
        augment: Any = None,
    ) -> BuiltBackbone:
        """Adds the preset's preprocessor and the encoder to the symbolic string ``inputs``.

        ``augment`` must be ``None``: texts are not augmented (the pipeline
        refuses ``Trainer(augment=...)`` for texts before building).
        """
        del value_range
        if augment is not None:
            from finetunekit.backbones.augmentation import check_augment_inputs

            check_augment_inputs(augment, tuple(inputs.shape[1:]), "string")
        raw_shape = tuple(inputs.shape[1:])
        self.check_input(raw_shape, input_dtype)
        encoder, preprocessor = self._load()
        model = self._wrap(encoder)
        pairs = raw_shape == (2,)
        x = TextPreprocessor(preprocessor, pairs=pairs, padding=self.padding, name="input_text")(
            inputs
        )
        missing = [n for n in model.input if n not in x] if isinstance(model.input, dict) else []
        if missing:
            raise BackboneError(
                format_error(
                    f"The preprocessor of {self.name!r} does not produce the encoder inputs "
                    f"{missing}",
                    expected="a preset whose TextClassifierPreprocessor matches its backbone",
                    received={"preset": self.preset},
                    fix="Use a complete KerasHub preset or Hugging Face checkpoint folder",
                )
            )
        if isinstance(model.input, dict):
            x = {name: x[name] for name in model.input}
        features = model(x, training=False)
        names = set(encoder.default_lora_layer_names())  # KerasHub's own LoRA targets
        sublayers: Any = _compat.flatten_layers(encoder) or []
        lora_targets = [layer for layer in sublayers if layer.name in names and layer.weights]
        info = {
            "backbone": self.name,
            "source": "preset",
            "preset": self.preset,
            "raw_input_shape": list(raw_shape),
            "input_dtype": "string",
            "text_pairs": pairs,
            "sequence_length": self.sequence_length,
            "padding": self.padding,
            "pad_multiple": PAD_MULTIPLE if self.padding == "dynamic" else None,
            "pooling": self.pooling,
            "lora_rank": self.lora_rank,
            "weights": "pretrained" if self.load_weights else "random",
            "feature_dim": int(features.shape[-1]),
        }
        return BuiltBackbone(features=features, model=model, info=info, lora_targets=lora_targets)

    # ------------------------------------------------------------------ causal LMs
    def causal_lm(self) -> Any:
        """Loads the preset's causal language model (``generative`` task), with its preprocessor.

        A KerasHub preset or Hugging Face folder gives its ``CausalLM``
        (``GPT2CausalLM``, ``Gemma3CausalLM``, ``Llama3CausalLM``, ...); a
        ``.gguf`` file gives a ``Gemma3CausalLM`` built by
        :func:`finetunekit.backbones.gguf.load_gguf` (weights dequantised to
        float32, tokenizer rebuilt from the file's vocabulary). The
        preprocessor's ``sequence_length`` is this backbone's.

        Raises:
            WeightsError: the preset cannot be loaded or has no causal LM.
            InputShapeError: ``sequence_length`` exceeds the model's limit.

        Examples:
            >>> lm = ftk.Backbone.from_preset("gemma3.gguf").causal_lm()  # doctest: +SKIP
            >>> lm.generate(["The capital of France is"], max_length=16)  # doctest: +SKIP
        """
        keras_hub = require_keras_hub()
        local = _is_local(self.preset)
        source = os.path.expanduser(self.preset.removeprefix("file://")) if local else self.preset
        if is_gguf(self.preset):
            from finetunekit.backbones.gguf import load_gguf

            opened = load_gguf(source)
            backbone = (
                opened.backbone()
                if self.load_weights
                else keras_hub.models.Gemma3Backbone(**opened.config)
            )
            preprocessor = keras_hub.models.Gemma3CausalLMPreprocessor(
                opened.tokenizer(), sequence_length=self.sequence_length
            )
            model = keras_hub.models.Gemma3CausalLM(backbone=backbone, preprocessor=preprocessor)
        else:
            try:
                model = keras_hub.models.CausalLM.from_preset(
                    source, load_weights=self.load_weights
                )
            except Exception as exc:  # KerasHub raises ValueError, OSError, ...
                if "causal" in str(exc).lower() or "class" in str(exc).lower():
                    raise WeightsError(
                        format_error(
                            f"The preset {self.name!r} has no causal language model "
                            f"({type(exc).__name__}: {' '.join(str(exc).split())[:200]})",
                            expected="a decoder preset: GPT-2, Gemma, Gemma 3, Llama, Mistral, "
                            "Qwen, ... (keras_hub.models.CausalLM.presets)",
                            received={"preset": self.preset},
                            fix="Use a decoder model; encoders such as BERT classify texts "
                            "(DatasetAdapter.from_texts)",
                        )
                    ) from exc
                raise _preset_error(self.preset, local, exc) from exc
            if model.preprocessor is None:
                raise WeightsError(
                    format_error(
                        f"The preset {self.name!r} has no tokenizer / preprocessor",
                        expected="a complete preset (tokenizer files included)",
                        received={"preset": self.preset},
                        fix="Save the preset with its preprocessor: causal_lm.save_to_preset(d)",
                    )
                )
            model.preprocessor.sequence_length = self.sequence_length
        limit = getattr(model.backbone, "max_sequence_length", None)
        if limit is not None and self.sequence_length > int(limit):
            raise InputShapeError(
                format_error(
                    f"sequence_length exceeds what {self.name!r} can attend to ({limit} tokens)",
                    expected=f"sequence_length <= {limit}",
                    received={"sequence_length": self.sequence_length},
                    fix=f"Pass sequence_length={int(limit)}",
                )
            )
        return model

    def tokenizer(self) -> Any:
        """The preset's tokenizer alone (a GGUF file's, rebuilt from its vocabulary).

        Examples:
            >>> ftk.Backbone.from_preset("gpt2_dir").tokenizer()("hello")  # doctest: +SKIP
        """
        keras_hub = require_keras_hub()
        local = _is_local(self.preset)
        source = os.path.expanduser(self.preset.removeprefix("file://")) if local else self.preset
        if is_gguf(self.preset):
            from finetunekit.backbones.gguf import load_gguf

            return load_gguf(source).tokenizer()
        try:
            return keras_hub.models.Tokenizer.from_preset(source)
        except Exception as exc:
            raise _preset_error(self.preset, local, exc) from exc

    # ------------------------------------------------------------------ config
    def get_config(self) -> dict[str, Any]:
        """Returns the JSON-serialisable arguments."""
        return {
            "preset": self.preset,
            "sequence_length": self.sequence_length,
            "pooling": self.pooling,
            "lora_rank": self.lora_rank,
            "load_weights": self.load_weights,
            "padding": self.padding,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> TextBackbone:
        """Rebuilds a text backbone from :meth:`get_config`; unknown keys raise ``ConfigError``."""
        valid = {"preset", "sequence_length", "pooling", "lora_rank", "load_weights", "padding"}
        check_config_keys("text Backbone", config, valid)
        config = dict(config)
        return cls(config.pop("preset"), **config)

    def __repr__(self) -> str:
        return (
            f"Backbone.from_preset({self.preset!r}, sequence_length={self.sequence_length}, "
            f"pooling={self.pooling!r}, lora_rank={self.lora_rank!r}, "
            f"load_weights={self.load_weights}, padding={self.padding!r})"
        )


# --------------------------------------------------------------------------- helpers


def _check_preset(preset: str) -> None:
    """Checks a local folder or a preset name now, before anything is loaded."""
    if _is_local(preset):
        path = os.path.expanduser(preset.removeprefix("file://"))
        if is_gguf(preset):
            _check_gguf_file(path, preset)
            return
        if not os.path.isdir(path):
            raise WeightsError(
                format_error(
                    "The preset folder does not exist",
                    expected="a folder holding a KerasHub preset (save_to_preset) or a "
                    "Hugging Face checkpoint (config.json, vocab / tokenizer files, weights)",
                    received={"preset": preset},
                    fix="Check the path",
                )
            )
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise WeightsError(
                format_error(
                    "The preset folder has no config.json",
                    expected="a KerasHub preset folder or a Hugging Face checkpoint folder",
                    received={"preset": preset, "files": sorted(os.listdir(path))[:8]},
                    fix="Point to the folder that holds config.json",
                )
            )
        return
    keras_hub = require_keras_hub()
    if preset.startswith(_HANDLE_PREFIXES):
        return
    known = sorted(keras_hub.models.Backbone.presets)
    if preset in known:
        return
    close = difflib.get_close_matches(preset, known, n=3, cutoff=0.6)
    hint = f"Did you mean {', '.join(repr(c) for c in close)}? " if close else ""
    raise UnknownBackboneError(
        format_error(
            f"Unknown KerasHub preset {preset!r}",
            expected="a KerasHub preset name (keras_hub.models.Backbone.presets), a "
            "'kaggle://' or 'hf://' handle, or a local folder",
            received={"preset": preset},
            fix=f"{hint}For a checkpoint on disk pass its folder path",
        )
    )


def is_gguf(preset: str) -> bool:
    """Whether ``preset`` names a GGUF file (by its ``.gguf`` suffix).

    Examples:
        >>> is_gguf("models/gemma-3-270m.gguf"), is_gguf("bert_tiny_en_uncased")
        (True, False)
    """
    return preset.lower().endswith(".gguf")


def _check_gguf_file(path: str, preset: str) -> None:
    """A cheap check of a GGUF path now: the file exists and starts with ``b"GGUF"``."""
    if not os.path.isfile(path):
        raise WeightsError(
            format_error(
                "The GGUF file does not exist",
                expected="the path of an existing .gguf file",
                received={"preset": preset},
                fix="Check the path",
            )
        )
    with open(path, "rb") as handle:
        magic = handle.read(4)
    if magic != b"GGUF":
        raise WeightsError(
            format_error(
                "The file is not a GGUF file (it does not start with b'GGUF')",
                expected="a .gguf file written by llama.cpp or the gguf package",
                received={"preset": preset, "first_bytes": magic},
                fix="Pass a GGUF file, a KerasHub preset or a Hugging Face checkpoint folder",
            )
        )


def _preset_error(preset: str, local: bool, exc: Exception) -> BackboneError:
    text = " ".join(str(exc).split())[:240]
    if local:
        return WeightsError(
            format_error(
                f"KerasHub could not load the preset folder ({type(exc).__name__}: {text})",
                expected="a complete KerasHub preset or a Hugging Face checkpoint KerasHub "
                "can convert (config.json, tokenizer / vocab files, weights)",
                received={"preset": preset},
                fix="Check that the folder is complete; Hugging Face folders also need the "
                "safetensors package (pip install 'finetunekit[text]')",
            )
        )
    return WeightsError(
        format_error(
            f"The KerasHub preset {preset!r} could not be loaded: it is not in the local "
            f"KerasHub cache and could not be downloaded ({type(exc).__name__}: {text})",
            expected="a network connection or a cached copy of the preset, or a local folder",
            received={"preset": preset},
            fix="Where a network exists, save it once: keras_hub.models.Backbone.from_preset("
            f"{preset!r}).save_to_preset(d) and keras_hub.models.TextClassifierPreprocessor"
            f".from_preset({preset!r}).save_to_preset(d); then pass "
            "Backbone.from_preset('/path/to/d') (a Hugging Face checkpoint folder works too)",
        )
    )
