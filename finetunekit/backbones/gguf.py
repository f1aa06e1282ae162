"""Reads GGUF files (llama.cpp's format) into KerasHub backbones.

:func:`load_gguf` opens a ``.gguf`` file with the ``gguf`` package (numpy
only), turns its metadata into the config of the KerasHub backbone of that
architecture, checks that every tensor the backbone needs is there with the
right shape (before any weight is dequantised), and keeps the vocabulary
stored in the file. :meth:`GGUFModel.backbone` then dequantises each tensor to
float32 (``F32``, ``F16``, ``BF16``, ``Q8_0``, ``Q4_K``, ``Q6_K``, ... -- every
type ``gguf.quants.dequantize`` knows) and sets it on a new backbone.

Supported architectures: :data:`SUPPORTED_ARCHITECTURES` (Gemma 3, text only).

llama.cpp's conventions for Gemma 3, which this module undoes:

* tensors are stored in Hugging Face's ``[out_features, in_features]`` layout
  (GGUF lists the dimensions the other way round; the ``gguf`` reader already
  gives numpy arrays in ``[out, in]`` order), so projections are transposed
  and split into heads here;
* every RMSNorm weight is stored with ``+1`` folded in (Gemma multiplies by
  ``1 + w``; llama.cpp by ``w``); KerasHub's Gemma RMSNorm applies ``1 + w``
  itself, so ``1`` is subtracted when loading;
* query/key projections are *not* permuted for rotary embeddings (llama.cpp
  only does that for the Llama family).

Both ``gguf`` and ``keras-hub`` are optional dependencies, imported only when
used: ``pip install 'finetunekit[generative]'``.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from finetunekit.errors import BackboneError, WeightsError, format_error

__all__ = [
    "GGUFModel",
    "GGUFVocabulary",
    "SUPPORTED_ARCHITECTURES",
    "load_gguf",
]

SUPPORTED_ARCHITECTURES = ("gemma3",)
INSTALL_HINT = "pip install 'finetunekit[generative]'  (or: pip install gguf keras-hub)"
_GGUF_MAGIC = b"GGUF"
# KerasHub's Gemma3Backbone hard-codes these (global / sliding-window layers).
_GEMMA3_GLOBAL_ROPE_BASE = 1_000_000.0
_GEMMA3_LOCAL_ROPE_BASE = 10_000.0
_GEMMA3_SLIDING_PATTERN = 6  # 5 sliding-window layers, then 1 global layer
# llama.cpp scales queries by 1/sqrt(hidden/heads) instead of 1/sqrt(head_dim)
# for Gemma 3 27B, recognised by its 62 blocks (nothing in the file says so).
_GEMMA3_27B_BLOCKS = 62
_NORM_SHIFT = 1.0


def _require(module: str, purpose: str) -> Any:
    """Imports the optional dependency ``module``, or raises a ``BackboneError`` naming it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise BackboneError(
            format_error(
                f"{purpose} needs the `{module}` package, which is not installed",
                expected=f"the optional dependency `{module}`",
                received={module: None},
                fix=f"Install it: {INSTALL_HINT}",
            )
        ) from error


def _require_gguf() -> Any:
    return _require("gguf", "Reading GGUF files")


def _require_keras_hub() -> Any:
    return _require("keras_hub", "Building a backbone from a GGUF file")


@dataclass(frozen=True)
class GGUFVocabulary:
    """The tokenizer vocabulary stored in a GGUF file.

    Attributes:
        model: The tokenizer kind (``tokenizer.ggml.model``; ``"llama"`` is
            SentencePiece).
        tokens: The token strings, indexed by token id.
        scores: One float per token (SentencePiece scores), or ``None``.
        token_types: One int per token in SentencePiece's numbering
            (1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused,
            6 byte), or ``None``.
        special_ids: ``"bos"``, ``"eos"``, ``"unk"``, ``"pad"``, ... mapped to
            token ids, for the ones the file names.
        add_bos: Whether the model expects a BOS token first.
        add_eos: Whether the model expects an EOS token last.
        add_space_prefix: Whether SentencePiece adds a space before the text.

    Examples:
        >>> vocab = GGUFVocabulary(model="llama", tokens=("<pad>", "a"))
        >>> len(vocab), vocab.tokens[1]
        (2, 'a')
    """

    model: str
    tokens: tuple[str, ...]
    scores: np.ndarray | None = None
    token_types: np.ndarray | None = None
    special_ids: Mapping[str, int] = field(default_factory=dict)
    add_bos: bool = False
    add_eos: bool = False
    add_space_prefix: bool = False

    def __len__(self) -> int:
        return len(self.tokens)

    def decode(self, ids: Any) -> str:
        """Turns token ids back into text (SentencePiece pieces, byte tokens joined).

        Control tokens (BOS, EOS, padding, ...) are left out.

        Args:
            ids: A sequence of token ids.

        Returns:
            The text.

        Examples:
            >>> vocab = GGUFVocabulary(
            ...     model="llama",
            ...     tokens=("<bos>", "\\u2581Hello", "<0x21>"),
            ...     token_types=np.array([3, 1, 6]),
            ... )
            >>> vocab.decode([0, 1, 2])
            ' Hello!'
        """
        pieces = bytearray()
        for raw in np.asarray(ids).reshape(-1).tolist():
            index = int(raw)
            if not 0 <= index < len(self.tokens):
                raise WeightsError(
                    format_error(
                        "A token id is outside the vocabulary",
                        expected=f"ids in [0, {len(self.tokens)})",
                        received={"id": index},
                        fix="Decode ids the model of this file produced.",
                    )
                )
            kind = int(self.token_types[index]) if self.token_types is not None else 1
            token = self.tokens[index]
            if kind == 3:  # control
                continue
            if kind == 6 and token.startswith("<0x") and token.endswith(">"):
                pieces.append(int(token[3:-1], 16))
            else:
                pieces.extend(token.replace("\u2581", " ").encode("utf-8"))
        return pieces.decode("utf-8", errors="replace")


@dataclass(frozen=True)
class _Spec:
    """One backbone weight: its GGUF tensor, expected numpy shape, conversion."""

    gguf_name: str
    shape: tuple[int, ...]
    convert: Callable[[np.ndarray], np.ndarray]
    layer: str
    attribute: str

    def variable(self, model: Any) -> Any:
        """The backbone variable this weight goes to."""
        target = model.get_layer(self.layer)
        for name in self.attribute.split("."):
            target = getattr(target, name)
        return target


class GGUFModel:
    """A GGUF file opened by :func:`load_gguf`: its config, vocabulary and weights.

    Attributes:
        path: The file.
        architecture: ``general.architecture`` (for instance ``"gemma3"``).
        config: The keyword arguments of the KerasHub backbone of that
            architecture (``keras_hub.models.Gemma3Backbone(**config)``).
        vocabulary: The :class:`GGUFVocabulary` stored in the file.
        metadata: Every scalar and short-list metadata entry of the file
            (the long tokenizer arrays are in :attr:`vocabulary`).
        tensor_types: GGUF tensor name -> its storage type (``"Q4_K"``, ...).

    Examples:
        >>> model = load_gguf("gemma-3-270m-q4_k_m.gguf")  # doctest: +SKIP
        >>> model.config["num_layers"], len(model.vocabulary)  # doctest: +SKIP
        (18, 262144)
        >>> backbone = model.backbone()  # doctest: +SKIP
    """

    def __init__(
        self,
        path: str,
        architecture: str,
        config: dict[str, Any],
        vocabulary: GGUFVocabulary,
        metadata: dict[str, Any],
        reader: Any,
    ) -> None:
        self.path = path
        self.architecture = architecture
        self.config = config
        self.vocabulary = vocabulary
        self.metadata = metadata
        self._tensors = {tensor.name: tensor for tensor in reader.tensors}
        self.tensor_types = {name: t.tensor_type.name for name, t in self._tensors.items()}
        self._specs = _gemma3_specs(config)
        self._check_tensors()

    def __repr__(self) -> str:
        return (
            f"GGUFModel(path={self.path!r}, architecture={self.architecture!r}, "
            f"num_layers={self.config['num_layers']}, vocabulary_size={len(self.vocabulary)})"
        )

    def _check_tensors(self) -> None:
        for spec in self._specs:
            tensor = self._tensors.get(spec.gguf_name)
            if tensor is None:
                raise WeightsError(
                    format_error(
                        f"The GGUF file has no tensor {spec.gguf_name!r}, which the "
                        f"{self.architecture} backbone needs",
                        expected=f"a tensor {spec.gguf_name!r} of shape {spec.shape}",
                        received={"path": self.path},
                        fix="The file is incomplete or was written by an unknown converter; "
                        "convert the checkpoint again with llama.cpp's convert_hf_to_gguf.py.",
                    )
                )
            shape = _numpy_shape(tensor)
            if shape != spec.shape:
                raise WeightsError(
                    format_error(
                        f"The GGUF tensor {spec.gguf_name!r} has the wrong shape for the "
                        "config in the file's metadata",
                        expected=f"shape {spec.shape}",
                        received={"shape": shape, "path": self.path},
                        fix="The metadata and tensors disagree; convert the checkpoint again.",
                    )
                )
        output = self._tensors.get("output.weight")
        if output is not None and _numpy_shape(output) != self._specs[0].shape:
            raise WeightsError(
                format_error(
                    "The GGUF file has an output projection of another shape than the "
                    "token embedding; KerasHub's Gemma 3 ties the two",
                    expected=f"no 'output.weight', or one of shape {self._specs[0].shape}",
                    received={"shape": _numpy_shape(output), "path": self.path},
                    fix="Use a file whose output projection is the token embedding.",
                )
            )

    def weights(self) -> dict[str, np.ndarray]:
        """Dequantises every tensor to float32, in the KerasHub backbone's layout.

        Returns:
            GGUF tensor name -> float32 array, shaped like the backbone
            variable it goes to (norms already shifted by ``-1``).

        Examples:
            >>> load_gguf("model.gguf").weights()["output_norm.weight"].shape  # doctest: +SKIP
            (640,)
        """
        return {
            spec.gguf_name: spec.convert(self._dequantize(spec.gguf_name)) for spec in self._specs
        }

    def _dequantize(self, name: str) -> np.ndarray:
        gguf = _require_gguf()
        tensor = self._tensors[name]
        try:
            values = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
        except NotImplementedError as error:
            raise WeightsError(
                format_error(
                    f"The GGUF tensor {name!r} is stored in a type the gguf package cannot "
                    "dequantise",
                    expected="a type gguf.quants.dequantize supports (F32, F16, BF16, Q8_0, "
                    "Q4_K, Q6_K, ...)",
                    received={"type": tensor.tensor_type.name},
                    fix="Update the gguf package, or use a file quantised differently.",
                )
            ) from error
        return np.asarray(values, dtype=np.float32).reshape(_numpy_shape(tensor))

    def backbone(self, dtype: str | None = None) -> Any:
        """Builds the KerasHub backbone and sets the file's weights on it.

        Args:
            dtype: The backbone's dtype policy (``None``: Keras' default,
                float32). The weights are dequantised to float32 first.

        Returns:
            A ``keras_hub.models.Gemma3Backbone`` with the weights set.

        Raises:
            BackboneError: ``gguf`` or ``keras-hub`` is not installed.
            WeightsError: a tensor cannot be dequantised, or the output
                projection differs from the token embedding.

        Examples:
            >>> backbone = load_gguf("gemma-3-270m-q4_k_m.gguf").backbone()  # doctest: +SKIP
            >>> backbone.count_params()  # doctest: +SKIP
            268098176
        """
        keras_hub = _require_keras_hub()
        model = keras_hub.models.Gemma3Backbone(**self.config, dtype=dtype)
        for spec in self._specs:
            values = spec.convert(self._dequantize(spec.gguf_name))
            variable = spec.variable(model)
            if tuple(variable.shape) != values.shape:  # the specs and KerasHub disagree
                raise WeightsError(
                    format_error(
                        f"The GGUF tensor {spec.gguf_name!r} does not fit the KerasHub "
                        f"variable {variable.path!r}",
                        expected=f"shape {tuple(variable.shape)}",
                        received={"shape": values.shape},
                        fix="This KerasHub version lays out Gemma 3 differently; report it.",
                    )
                )
            variable.assign(values)
        if "output.weight" in self._tensors:
            output = self._dequantize("output.weight")
            embedding = np.asarray(model.token_embedding.embeddings)
            # both may be quantised, differently: allow 5% of the largest weight
            if np.abs(output - embedding).max() > 0.05 * np.abs(embedding).max():
                raise WeightsError(
                    format_error(
                        "The GGUF file's output projection differs from its token "
                        "embedding; KerasHub's Gemma 3 ties the two",
                        expected="no 'output.weight', or one equal to 'token_embd.weight'",
                        received={"path": self.path},
                        fix="Use a file whose output projection is the token embedding.",
                    )
                )
        return model

    def sentencepiece_proto(self) -> bytes:
        """Rebuilds a serialized SentencePiece model from the file's vocabulary.

        The pieces, scores and types come from the file; the model is BPE,
        with byte fallback when the vocabulary has ``<0x..>`` byte tokens, and
        the whitespace handling the file's ``add_space_prefix`` says.

        Returns:
            The ``ModelProto`` bytes (what a ``tokenizer.model`` file holds).

        Raises:
            BackboneError: the vocabulary is not a SentencePiece one
                (``tokenizer.ggml.model`` other than ``"llama"``), or
                ``sentencepiece`` is not installed.

        Examples:
            >>> proto = load_gguf("model.gguf").sentencepiece_proto()  # doctest: +SKIP
        """
        vocab = self.vocabulary
        if vocab.model != "llama":
            raise BackboneError(
                format_error(
                    f"The GGUF vocabulary is of the kind {vocab.model!r}, which cannot be "
                    "rebuilt as a SentencePiece tokenizer",
                    expected="tokenizer.ggml.model = 'llama' (SentencePiece)",
                    received={"tokenizer.ggml.model": vocab.model, "path": self.path},
                    fix="Use the model's own tokenizer files.",
                )
            )
        try:
            from sentencepiece import sentencepiece_model_pb2
        except ImportError as error:
            raise BackboneError(
                format_error(
                    "Rebuilding the tokenizer needs the `sentencepiece` package",
                    expected="sentencepiece installed (keras-hub installs it)",
                    received={"sentencepiece": None},
                    fix=f"Install it: {INSTALL_HINT}",
                )
            ) from error
        proto = sentencepiece_model_pb2.ModelProto()  # type: ignore[attr-defined]
        types = (
            vocab.token_types if vocab.token_types is not None else np.ones(len(vocab), np.int32)
        )
        scores = vocab.scores if vocab.scores is not None else np.zeros(len(vocab), np.float32)
        trainer = proto.trainer_spec
        trainer.model_type = sentencepiece_model_pb2.TrainerSpec.BPE  # type: ignore[attr-defined]
        trainer.vocab_size = len(vocab)
        trainer.byte_fallback = bool(np.any(types == 6))
        trainer.allow_whitespace_only_pieces = True
        for spec in (proto.normalizer_spec, proto.denormalizer_spec):
            spec.name = "identity"
            spec.add_dummy_prefix = vocab.add_space_prefix
            spec.remove_extra_whitespaces = False
            spec.escape_whitespaces = True
        for key, attr in (
            ("unk", "unk_id"),
            ("bos", "bos_id"),
            ("eos", "eos_id"),
            ("pad", "pad_id"),
        ):
            setattr(trainer, attr, int(vocab.special_ids.get(key, -1)))
        types = types.copy()
        unk = vocab.special_ids.get("unk")
        if unk is not None and 0 <= unk < len(types):
            # llama.cpp may type Gemma's <unk> as a control token; SentencePiece needs it "unknown"
            types[unk] = 2
        if not np.any(types == 2):
            raise BackboneError(
                format_error(
                    "The GGUF vocabulary has no unknown token, which SentencePiece needs",
                    expected="tokenizer.ggml.unknown_token_id, or a token of type 2 (unknown)",
                    received={"path": self.path},
                    fix="Use the model's own tokenizer files.",
                )
            )
        for token, score, kind in zip(vocab.tokens, scores.tolist(), types.tolist(), strict=True):
            piece = proto.pieces.add()
            piece.piece = token
            piece.score = float(score)
            piece.type = int(kind)
        return bytes(proto.SerializeToString())

    def tokenizer(self) -> Any:
        """The KerasHub tokenizer of this architecture, rebuilt from the file's vocabulary.

        Returns:
            A ``keras_hub.models.Gemma3Tokenizer``.

        Raises:
            BackboneError: the vocabulary cannot be rebuilt (see
                :meth:`sentencepiece_proto`) or KerasHub is missing.

        Examples:
            >>> tokenizer = load_gguf("gemma-3-270m-q4_k_m.gguf").tokenizer()  # doctest: +SKIP
            >>> tokenizer.detokenize(tokenizer("Hello world"))  # doctest: +SKIP
            'Hello world'
        """
        keras_hub = _require_keras_hub()
        proto = self.sentencepiece_proto()
        tokens = set(self.vocabulary.tokens)
        has_vision = {"<img>", "<start_of_image>", "<end_of_image>"} <= tokens
        return keras_hub.models.Gemma3Tokenizer(proto=proto, has_vision_tokens=has_vision)


def _numpy_shape(tensor: Any) -> tuple[int, ...]:
    # GGUF lists dimensions fastest-first (ggml's ne0, ne1, ...): reverse for numpy.
    return tuple(int(d) for d in reversed(tensor.shape.tolist()))


def _gemma3_specs(config: Mapping[str, Any]) -> list[_Spec]:
    hidden = int(config["hidden_dim"])
    heads = int(config["num_query_heads"])
    kv_heads = int(config["num_key_value_heads"])
    head_dim = int(config["head_dim"])
    inner = int(config["intermediate_dim"])

    def norm(values: np.ndarray) -> np.ndarray:
        return values - np.float32(_NORM_SHIFT)

    def heads_in(count: int) -> Callable[[np.ndarray], np.ndarray]:
        # [count * head_dim, hidden] -> [count, hidden, head_dim]
        return lambda w: w.reshape(count, head_dim, hidden).transpose(0, 2, 1)

    def heads_out(w: np.ndarray) -> np.ndarray:
        # [hidden, heads * head_dim] -> [heads, head_dim, hidden]
        return w.reshape(hidden, heads, head_dim).transpose(1, 2, 0)

    def transpose(w: np.ndarray) -> np.ndarray:
        return w.T

    def same(w: np.ndarray) -> np.ndarray:
        return w

    specs = [
        _Spec(
            "token_embd.weight",
            (int(config["vocabulary_size"]), hidden),
            same,
            "token_embedding",
            "embeddings",
        ),
        _Spec(
            "output_norm.weight",
            (hidden,),
            norm,
            "final_normalization",
            "scale",
        ),
    ]
    for i in range(int(config["num_layers"])):
        block = f"decoder_block_{i}"
        p = f"blk.{i}."
        specs += [
            _Spec(
                p + "attn_norm.weight",
                (hidden,),
                norm,
                block,
                "pre_attention_norm.scale",
            ),
            _Spec(
                p + "post_attention_norm.weight",
                (hidden,),
                norm,
                block,
                "post_attention_norm.scale",
            ),
            _Spec(p + "ffn_norm.weight", (hidden,), norm, block, "pre_ffw_norm.scale"),
            _Spec(
                p + "post_ffw_norm.weight",
                (hidden,),
                norm,
                block,
                "post_ffw_norm.scale",
            ),
            _Spec(
                p + "attn_q.weight",
                (heads * head_dim, hidden),
                heads_in(heads),
                block,
                "attention.query_dense.kernel",
            ),
            _Spec(
                p + "attn_k.weight",
                (kv_heads * head_dim, hidden),
                heads_in(kv_heads),
                block,
                "attention.key_dense.kernel",
            ),
            _Spec(
                p + "attn_v.weight",
                (kv_heads * head_dim, hidden),
                heads_in(kv_heads),
                block,
                "attention.value_dense.kernel",
            ),
            _Spec(
                p + "attn_output.weight",
                (hidden, heads * head_dim),
                heads_out,
                block,
                "attention.output_dense.kernel",
            ),
            _Spec(
                p + "attn_q_norm.weight",
                (head_dim,),
                norm,
                block,
                "attention.query_norm.scale",
            ),
            _Spec(
                p + "attn_k_norm.weight",
                (head_dim,),
                norm,
                block,
                "attention.key_norm.scale",
            ),
            _Spec(
                p + "ffn_gate.weight",
                (inner, hidden),
                transpose,
                block,
                "gating_ffw.kernel",
            ),
            _Spec(
                p + "ffn_up.weight",
                (inner, hidden),
                transpose,
                block,
                "gating_ffw_2.kernel",
            ),
            _Spec(
                p + "ffn_down.weight",
                (hidden, inner),
                transpose,
                block,
                "ffw_linear.kernel",
            ),
        ]
    return specs


def _field_value(reader_field: Any) -> Any:
    value = reader_field.contents()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _read_metadata(reader: Any) -> dict[str, Any]:
    long_arrays = {"tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type"}
    return {
        name: _field_value(reader_field)
        for name, reader_field in reader.fields.items()
        if name not in long_arrays and name != "tokenizer.ggml.merges"
    }


def _read_vocabulary(reader: Any, path: str) -> GGUFVocabulary:
    fields = reader.fields
    if "tokenizer.ggml.tokens" not in fields:
        raise WeightsError(
            format_error(
                "The GGUF file has no vocabulary (no 'tokenizer.ggml.tokens')",
                expected="a GGUF file with its tokenizer, as llama.cpp writes them",
                received={"path": path},
                fix="Convert the checkpoint again with its tokenizer.",
            )
        )
    tokens = tuple(fields["tokenizer.ggml.tokens"].contents())
    scores = (
        np.asarray(fields["tokenizer.ggml.scores"].contents(), dtype=np.float32)
        if "tokenizer.ggml.scores" in fields
        else None
    )
    types = (
        np.asarray(fields["tokenizer.ggml.token_type"].contents(), dtype=np.int32)
        if "tokenizer.ggml.token_type" in fields
        else None
    )
    special = {}
    for key in ("bos", "eos", "unknown", "padding", "sep", "cls", "mask", "eot"):
        name = f"tokenizer.ggml.{key}_token_id"
        if name in fields:
            special[{"unknown": "unk", "padding": "pad"}.get(key, key)] = int(
                _field_value(fields[name])
            )

    def flag(name: str, default: bool) -> bool:
        key = f"tokenizer.ggml.{name}"
        return bool(_field_value(fields[key])) if key in fields else default

    model = (
        str(_field_value(fields["tokenizer.ggml.model"]))
        if "tokenizer.ggml.model" in fields
        else ""
    )
    return GGUFVocabulary(
        model=model,
        tokens=tokens,
        scores=scores,
        token_types=types,
        special_ids=special,
        add_bos=flag("add_bos_token", False),
        add_eos=flag("add_eos_token", False),
        add_space_prefix=flag("add_space_prefix", False),
    )


def _gemma3_config(metadata: Mapping[str, Any], reader: Any, path: str) -> dict[str, Any]:
    arch = "gemma3"

    def get(key: str, default: Any = None, *, required: bool = False) -> Any:
        full = f"{arch}.{key}"
        if full not in metadata:
            if required:
                raise WeightsError(
                    format_error(
                        f"The GGUF file lacks the metadata entry {full!r}",
                        expected=f"a {arch} GGUF file with the metadata llama.cpp writes",
                        received={"path": path},
                        fix="Convert the checkpoint again with llama.cpp's convert_hf_to_gguf.py.",
                    )
                )
            return default
        return metadata[full]

    def unsupported(what: str, value: Any, expected: str) -> BackboneError:
        return BackboneError(
            format_error(
                f"The GGUF file's {what} is not one KerasHub's Gemma3Backbone can represent",
                expected=expected,
                received={what: value, "path": path},
                fix="Use a Gemma 3 text model in the standard configuration.",
            )
        )

    heads = get("attention.head_count", required=True)
    if isinstance(heads, list):  # per-layer head counts
        if len(set(heads)) != 1:
            raise unsupported(
                "attention.head_count", heads, "the same number of heads in every layer"
            )
        heads = heads[0]
    hidden = int(get("embedding_length", required=True))
    num_layers = int(get("block_count", required=True))
    kv_heads = get("attention.head_count_kv", heads)
    if isinstance(kv_heads, list):
        if len(set(kv_heads)) != 1:
            raise unsupported("attention.head_count_kv", kv_heads, "the same in every layer")
        kv_heads = kv_heads[0]
    head_dim = int(get("attention.key_length", hidden // int(heads)))
    value_dim = int(get("attention.value_length", head_dim))
    if value_dim != head_dim:
        raise unsupported("attention.value_length", value_dim, f"equal to key_length ({head_dim})")

    rope_base = float(get("rope.freq_base", _GEMMA3_GLOBAL_ROPE_BASE))
    if rope_base != _GEMMA3_GLOBAL_ROPE_BASE:
        raise unsupported("rope.freq_base", rope_base, f"{_GEMMA3_GLOBAL_ROPE_BASE:g}")
    local_base = float(get("rope.freq_base_swa", _GEMMA3_LOCAL_ROPE_BASE))
    if local_base != _GEMMA3_LOCAL_ROPE_BASE:
        raise unsupported("rope.freq_base_swa", local_base, f"{_GEMMA3_LOCAL_ROPE_BASE:g}")
    scaling_type = str(get("rope.scaling.type", "none"))
    if scaling_type not in ("none", "linear"):
        raise unsupported("rope.scaling.type", scaling_type, "'none' or 'linear'")
    global_factor = float(get("rope.scaling.factor", 1.0)) if scaling_type == "linear" else 1.0

    sliding_window = int(get("attention.sliding_window", 0) or 0)
    pattern = get("attention.sliding_window_pattern", None)
    if pattern is not None and sliding_window:
        expected_flags = [
            i % _GEMMA3_SLIDING_PATTERN < _GEMMA3_SLIDING_PATTERN - 1 for i in range(num_layers)
        ]
        ok = (
            [bool(v) for v in pattern] == expected_flags
            if isinstance(pattern, list)
            else int(pattern) == _GEMMA3_SLIDING_PATTERN
        )
        if not ok:
            raise unsupported(
                "attention.sliding_window_pattern",
                pattern,
                f"{_GEMMA3_SLIDING_PATTERN} (five sliding-window layers, then one global)",
            )

    embedding = _tensor_shape(reader, "token_embd.weight", path)
    return {
        "vocabulary_size": embedding[0],
        "image_size": None,
        "num_layers": num_layers,
        "num_query_heads": int(heads),
        "num_key_value_heads": int(kv_heads),
        "hidden_dim": hidden,
        "intermediate_dim": int(get("feed_forward_length", required=True)),
        "head_dim": head_dim,
        "query_head_dim_normalize": num_layers != _GEMMA3_27B_BLOCKS,
        "use_query_key_norm": True,
        "use_post_ffw_norm": True,
        "use_post_attention_norm": True,
        "attention_logit_soft_cap": get("attn_logit_softcapping", None),
        "final_logit_soft_cap": get("final_logit_softcapping", None),
        "use_sliding_window_attention": sliding_window > 0,
        "sliding_window_size": sliding_window or 4096,
        "local_rope_scaling_factor": 1.0,
        "global_rope_scaling_factor": global_factor,
        # stored as float32: 1e-6 comes back as 9.99999997e-07; 7 digits is float32's precision
        "layer_norm_epsilon": float(f"{float(get('attention.layer_norm_rms_epsilon', 1e-6)):.7g}"),
        "vision_encoder": None,
    }


def _tensor_shape(reader: Any, name: str, path: str) -> tuple[int, ...]:
    for tensor in reader.tensors:
        if tensor.name == name:
            return _numpy_shape(tensor)
    raise WeightsError(
        format_error(
            f"The GGUF file has no tensor {name!r}",
            expected=f"a tensor {name!r}",
            received={"path": path},
            fix="The file is incomplete; convert the checkpoint again.",
        )
    )


_CONFIG_BUILDERS: dict[str, Callable[[Mapping[str, Any], Any, str], dict[str, Any]]] = {
    "gemma3": _gemma3_config,
}


def load_gguf(path: str | os.PathLike[str]) -> GGUFModel:
    """Opens a GGUF file: its architecture, backbone config, vocabulary and tensors.

    Only the header is read here (the tensors are memory-mapped); every tensor
    the backbone needs is checked for presence and shape now, and dequantised
    later by :meth:`GGUFModel.backbone`.

    Args:
        path: A ``.gguf`` file, as llama.cpp's ``convert_hf_to_gguf.py`` (and
            its quantiser) writes them.

    Returns:
        The opened :class:`GGUFModel`.

    Raises:
        WeightsError: the file does not exist, is not a GGUF file, or lacks
            metadata or tensors the backbone needs, or a tensor has the wrong
            shape.
        BackboneError: the architecture is not one of
            :data:`SUPPORTED_ARCHITECTURES`, its configuration is one KerasHub
            cannot represent, or the ``gguf`` package is not installed.

    Examples:
        >>> model = load_gguf("gemma-3-270m-q4_k_m.gguf")  # doctest: +SKIP
        >>> model.architecture, model.config["hidden_dim"]  # doctest: +SKIP
        ('gemma3', 640)
    """
    shown = os.fspath(path)
    if not os.path.isfile(shown):
        raise WeightsError(
            format_error(
                "The GGUF file does not exist",
                expected="the path of an existing .gguf file",
                received={"path": shown},
                fix="Check the path.",
            )
        )
    with open(shown, "rb") as handle:
        magic = handle.read(4)
    if magic != _GGUF_MAGIC:
        raise WeightsError(
            format_error(
                "The file is not a GGUF file (it does not start with b'GGUF')",
                expected="a .gguf file written by llama.cpp or the gguf package",
                received={"path": shown, "first_bytes": magic},
                fix="Pass a GGUF file; Hugging Face checkpoint folders and KerasHub presets "
                "go through Backbone.from_preset.",
            )
        )
    gguf = _require_gguf()
    try:
        reader = gguf.GGUFReader(shown)
    except (ValueError, OSError, IndexError) as error:
        raise WeightsError(
            format_error(
                f"The GGUF file cannot be read ({error})",
                expected="a complete, uncorrupted GGUF file",
                received={"path": shown},
                fix="Download or convert the file again.",
            )
        ) from error
    metadata = _read_metadata(reader)
    architecture = str(metadata.get("general.architecture", ""))
    if architecture not in _CONFIG_BUILDERS:
        raise BackboneError(
            format_error(
                f"GGUF files of the architecture {architecture!r} are not supported",
                expected=f"one of {list(SUPPORTED_ARCHITECTURES)}",
                received={"general.architecture": architecture, "path": shown},
                fix="Use a Gemma 3 GGUF file, or the model's KerasHub preset or Hugging Face "
                "checkpoint through Backbone.from_preset.",
            )
        )
    config = _CONFIG_BUILDERS[architecture](metadata, reader, shown)
    vocabulary = _read_vocabulary(reader, shown)
    return GGUFModel(shown, architecture, config, vocabulary, metadata, reader)
