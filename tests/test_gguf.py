"""GGUF files -> KerasHub Gemma 3 backbones (finetunekit.backbones.gguf).

A tiny random Gemma3Backbone is written to a .gguf the way llama.cpp's
``convert_hf_to_gguf.py`` writes Gemma 3 (Hugging Face tensor layout and
names, ``+1`` folded into every RMSNorm weight, its metadata keys), read back
with :func:`load_gguf`, and its outputs compared with the original's. The
Hugging Face layout the writer produces is itself checked against KerasHub's
own Hugging Face Gemma 3 converter.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gguf
import keras
import keras_hub
import numpy as np
import pytest
from keras_hub.src.utils.transformers import convert_gemma3

from finetunekit.backbones.gguf import SUPPORTED_ARCHITECTURES, GGUFModel, load_gguf
from finetunekit.errors import BackboneError, WeightsError

CONFIG: dict[str, Any] = {
    "vocabulary_size": 64,
    "image_size": None,
    "num_layers": 2,
    "num_query_heads": 2,
    "num_key_value_heads": 1,
    "hidden_dim": 32,
    "intermediate_dim": 64,
    "head_dim": 16,
    "query_head_dim_normalize": True,
    "use_query_key_norm": True,
    "use_post_ffw_norm": True,
    "use_post_attention_norm": True,
    "attention_logit_soft_cap": None,
    "final_logit_soft_cap": None,
    "use_sliding_window_attention": True,
    "sliding_window_size": 4,
    "local_rope_scaling_factor": 1.0,
    "global_rope_scaling_factor": 1.0,
    "layer_norm_epsilon": 1e-6,
    "vision_encoder": None,
}
# 5 specials, the SentencePiece space, 26 letters, then merged pieces.
MERGES = ["th", "he", "\u2581t", "\u2581th", "\u2581the", "at", "\u2581c", "\u2581cat"]
TOKENS = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "\u2581"]
TOKENS += [chr(c) for c in range(ord("a"), ord("z") + 1)] + MERGES
TOKENS += [f"<unused{i}>" for i in range(CONFIG["vocabulary_size"] - len(TOKENS))]
# as llama.cpp writes Gemma 3: <unk> (id 3) typed "control" (3), not "unknown" (2)
TYPES = [3, 3, 3, 3, 3] + [1] * (len(TOKENS) - 5)
SCORES = [0.0] * 5 + [-1000.0] * 27 + [-float(i) for i in range(len(MERGES))]
SCORES += [-1e9] * (len(TOKENS) - len(SCORES))


def _random_backbone(seed: int = 0) -> Any:
    keras.utils.set_random_seed(seed)
    backbone = keras_hub.models.Gemma3Backbone(**CONFIG)
    rng = np.random.default_rng(seed)
    for variable in backbone.weights:  # norms too, so that the +1 shift matters
        variable.assign(rng.normal(0.0, 0.3, variable.shape).astype("float32"))
    return backbone


def _hf_tensors(backbone: Any) -> dict[str, np.ndarray]:
    """The backbone's weights in Hugging Face Gemma 3 names and layouts ([out, in])."""
    out = {"model.embed_tokens.weight": np.asarray(backbone.token_embedding.embeddings)}
    out["model.norm.weight"] = np.asarray(backbone.get_layer("final_normalization").scale)
    for i in range(CONFIG["num_layers"]):
        block = backbone.get_layer(f"decoder_block_{i}")
        att = block.attention
        p = f"model.layers.{i}."
        for hf, var in [
            ("input_layernorm", block.pre_attention_norm),
            ("post_attention_layernorm", block.post_attention_norm),
            ("pre_feedforward_layernorm", block.pre_ffw_norm),
            ("post_feedforward_layernorm", block.post_ffw_norm),
            ("self_attn.q_norm", att.query_norm),
            ("self_attn.k_norm", att.key_norm),
        ]:
            out[p + hf + ".weight"] = np.asarray(var.scale)
        for hf, var in [
            ("q_proj", att.query_dense),
            ("k_proj", att.key_dense),
            ("v_proj", att.value_dense),
        ]:
            kernel = np.asarray(
                var.kernel
            )  # [heads, hidden, head_dim] -> [heads * head_dim, hidden]
            out[p + f"self_attn.{hf}.weight"] = kernel.transpose(0, 2, 1).reshape(
                -1, kernel.shape[1]
            )
        kernel = np.asarray(
            att.output_dense.kernel
        )  # [heads, head_dim, hidden] -> [hidden, heads*head_dim]
        out[p + "self_attn.o_proj.weight"] = kernel.transpose(2, 0, 1).reshape(kernel.shape[2], -1)
        out[p + "mlp.gate_proj.weight"] = np.asarray(block.gating_ffw.kernel).T
        out[p + "mlp.up_proj.weight"] = np.asarray(block.gating_ffw_2.kernel).T
        out[p + "mlp.down_proj.weight"] = np.asarray(block.ffw_linear.kernel).T
    return out


_GGUF_NAMES = {
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "post_attention_norm",
    "pre_feedforward_layernorm": "ffn_norm",
    "post_feedforward_layernorm": "post_ffw_norm",
    "self_attn.q_norm": "attn_q_norm",
    "self_attn.k_norm": "attn_k_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


def _gguf_name(hf_name: str) -> str:
    if hf_name == "model.embed_tokens.weight":
        return "token_embd.weight"
    if hf_name == "model.norm.weight":
        return "output_norm.weight"
    _, _, index, rest = hf_name.split(".", 3)
    return f"blk.{index}.{_GGUF_NAMES[rest.removesuffix('.weight')]}.weight"


def _write_gguf(
    path: Path,
    backbone: Any,
    *,
    qtype: gguf.GGMLQuantizationType = gguf.GGMLQuantizationType.F32,
    arch: str = "gemma3",
    drop: tuple[str, ...] = (),
    replace: dict[str, np.ndarray] | None = None,
    extra: dict[str, np.ndarray] | None = None,
    rope_base: float = 1e6,
    metadata: Callable[[gguf.GGUFWriter], None] | None = None,
) -> Path:
    """Writes the backbone as convert_hf_to_gguf.py writes Gemma 3 (norms + 1)."""
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_context_length(128)
    writer.add_embedding_length(CONFIG["hidden_dim"])
    writer.add_block_count(CONFIG["num_layers"])
    writer.add_feed_forward_length(CONFIG["intermediate_dim"])
    writer.add_head_count(CONFIG["num_query_heads"])
    writer.add_layer_norm_rms_eps(CONFIG["layer_norm_epsilon"])
    writer.add_key_length(CONFIG["head_dim"])
    writer.add_value_length(CONFIG["head_dim"])
    writer.add_rope_freq_base(rope_base)
    writer.add_sliding_window(CONFIG["sliding_window_size"])
    writer.add_head_count_kv(CONFIG["num_key_value_heads"])
    if metadata is not None:
        metadata(writer)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(TOKENS)
    writer.add_token_scores(SCORES)
    writer.add_token_types(TYPES)
    writer.add_bos_token_id(2)
    writer.add_eos_token_id(1)
    writer.add_unk_token_id(3)
    writer.add_pad_token_id(0)
    writer.add_add_bos_token(True)
    writer.add_add_space_prefix(False)
    for hf_name, values in _hf_tensors(backbone).items():
        name = _gguf_name(hf_name)
        if name in drop:
            continue
        if hf_name.endswith("norm.weight"):
            values = values + 1.0  # llama.cpp's Gemma convention
        values = (replace or {}).get(name, values).astype(np.float32)
        if values.ndim == 2 and qtype != gguf.GGMLQuantizationType.F32:
            writer.add_tensor(name, gguf.quants.quantize(values, qtype), raw_dtype=qtype)
        else:
            writer.add_tensor(name, values)
    for name, values in (extra or {}).items():
        writer.add_tensor(name, values.astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _outputs(backbone: Any) -> np.ndarray:
    ids = np.random.default_rng(1).integers(0, CONFIG["vocabulary_size"], (2, 9)).astype("int32")
    mask = np.ones_like(ids)
    mask[1, 6:] = 0
    return np.asarray(backbone({"token_ids": ids, "padding_mask": mask}))


@pytest.fixture(scope="module")
def source() -> Any:
    return _random_backbone()


@pytest.fixture(scope="module")
def f32_file(source: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf", source)


def test_writer_layout_is_keras_hubs_hugging_face_layout(source: Any) -> None:
    """The HF tensors the test writer starts from load back through KerasHub's own converter."""
    tensors = _hf_tensors(source)

    class Loader:
        def get_tensor(self, key: str) -> np.ndarray:
            return tensors[key]

        def port_weight(self, keras_variable: Any, hf_weight_key: str, hook_fn: Any = None) -> None:
            value = tensors[hf_weight_key]
            if hook_fn is not None:
                value = hook_fn(value, list(keras_variable.shape))
            keras_variable.assign(value)

    target = keras_hub.models.Gemma3Backbone(**CONFIG)
    convert_gemma3.convert_weights(target, Loader(), {"model_type": "gemma3_text"})
    for ours, theirs in zip(source.weights, target.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs), err_msg=ours.path)


def test_f32_file_gives_the_same_backbone(source: Any, f32_file: Path) -> None:
    model = load_gguf(f32_file)
    assert model.architecture == "gemma3"
    assert model.config == CONFIG
    assert set(model.tensor_types.values()) == {"F32"}
    loaded = model.backbone()
    for ours, theirs in zip(source.weights, loaded.weights, strict=True):
        np.testing.assert_allclose(
            np.asarray(theirs), np.asarray(ours), atol=1e-6, err_msg=ours.path
        )
    weights = model.weights()
    np.testing.assert_allclose(
        weights["output_norm.weight"],
        np.asarray(source.get_layer("final_normalization").scale),
        atol=1e-6,
    )
    assert weights["blk.1.attn_output.weight"].shape == (2, 16, 32)  # (heads, head_dim, hidden)
    expected = _outputs(source)
    # measured: max |difference| 0.0 (1 + ((1 + w) - 1) == 1 + w exactly in float32)
    np.testing.assert_allclose(_outputs(loaded), expected, atol=1e-5)


# type -> (largest weight error as a fraction of the tensor's largest |weight|: the format's
# rounding step, tolerance on the outputs: measured max |difference| on outputs up to 4.7,
# F16 0.0017, BF16 0.020, Q8_0 0.045, Q4_0 0.89, times about 2)
QUANTISED = {
    "F16": (2.0**-11, 0.005),
    "BF16": (2.0**-8, 0.05),
    "Q8_0": (1 / 127, 0.1),
    "Q4_0": (1 / 8, 2.0),
}


@pytest.mark.parametrize("qtype", list(QUANTISED))
def test_quantised_file_is_close(source: Any, tmp_path: Path, qtype: str) -> None:
    step, tolerance = QUANTISED[qtype]
    path = _write_gguf(tmp_path / "q.gguf", source, qtype=gguf.GGMLQuantizationType[qtype])
    model = load_gguf(path)
    assert model.tensor_types["blk.0.attn_q.weight"] == qtype
    assert model.tensor_types["blk.0.attn_norm.weight"] == "F32"
    loaded = model.backbone()
    for ours, theirs in zip(source.weights, loaded.weights, strict=True):
        original = np.asarray(ours)
        error = np.abs(np.asarray(theirs) - original).max()
        assert error <= step * np.abs(original).max() + 1e-6, (ours.path, error)
    error = np.abs(_outputs(loaded) - _outputs(source)).max()
    assert 1e-5 < error < tolerance, error  # not 0: the weights really went through qtype


def test_vocabulary_is_read(f32_file: Path) -> None:
    vocab = load_gguf(f32_file).vocabulary
    assert vocab.tokens == tuple(TOKENS)
    np.testing.assert_array_equal(vocab.token_types, TYPES)
    np.testing.assert_allclose(vocab.scores, SCORES)
    assert dict(vocab.special_ids) == {"bos": 2, "eos": 1, "unk": 3, "pad": 0}
    assert vocab.add_bos and not vocab.add_eos and not vocab.add_space_prefix
    ids = [2, TOKENS.index("\u2581the"), TOKENS.index("\u2581cat"), 1]
    assert vocab.decode(ids) == " the cat"


def test_tokenizer_is_rebuilt_from_the_vocabulary(f32_file: Path) -> None:
    tokenizer = load_gguf(f32_file).tokenizer()
    assert isinstance(tokenizer, keras_hub.models.Gemma3Tokenizer)
    ids = np.asarray(tokenizer("the cat")).tolist()
    # BPE by score, by hand: "the" -> t h e -> "th" (score 0) beats "he" (-1) -> th e, and no
    # "the" piece; " cat" (no dummy prefix) -> ▁ c a t -> "at" (-5) -> ▁ c at -> "▁c" (-6)
    # -> ▁c at -> "▁cat" (-7)
    assert ids == [TOKENS.index("th"), TOKENS.index("e"), TOKENS.index("\u2581cat")]
    assert tokenizer.detokenize(ids) == "the cat"
    assert (tokenizer.start_token_id, tokenizer.end_token_id, tokenizer.pad_token_id) == (2, 1, 0)


# --- errors -------------------------------------------------------------------------------------


def test_not_a_gguf_file(tmp_path: Path) -> None:
    path = tmp_path / "model.gguf"
    path.write_text("not a gguf file")
    with pytest.raises(WeightsError, match="not a GGUF file"):
        load_gguf(path)
    with pytest.raises(WeightsError, match="does not exist"):
        load_gguf(tmp_path / "missing.gguf")


def test_unsupported_architecture_is_named(source: Any, tmp_path: Path) -> None:
    path = _write_gguf(tmp_path / "llama.gguf", source, arch="llama")
    with pytest.raises(BackboneError, match="'llama' are not supported") as info:
        load_gguf(path)
    for name in SUPPORTED_ARCHITECTURES:
        assert name in str(info.value)


def test_missing_tensor(source: Any, tmp_path: Path) -> None:
    path = _write_gguf(tmp_path / "m.gguf", source, drop=("blk.1.ffn_up.weight",))
    with pytest.raises(WeightsError, match="no tensor 'blk.1.ffn_up.weight'"):
        load_gguf(path)


def test_shape_mismatch(source: Any, tmp_path: Path) -> None:
    wrong = {"blk.0.attn_k.weight": np.zeros((32, 32), np.float32)}
    path = _write_gguf(tmp_path / "s.gguf", source, replace=wrong)
    with pytest.raises(WeightsError, match="'blk.0.attn_k.weight' has the wrong shape"):
        load_gguf(path)


def test_configuration_keras_hub_cannot_represent(source: Any, tmp_path: Path) -> None:
    path = _write_gguf(tmp_path / "r.gguf", source, rope_base=10_000.0)
    with pytest.raises(BackboneError, match="rope.freq_base"):
        load_gguf(path)


def test_rope_scaling_and_sliding_pattern_metadata(source: Any, tmp_path: Path) -> None:
    def scaled(writer: gguf.GGUFWriter) -> None:
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(8.0)
        writer.add_sliding_window_pattern(6)

    config = load_gguf(_write_gguf(tmp_path / "a.gguf", source, metadata=scaled)).config
    assert config["global_rope_scaling_factor"] == 8.0
    assert config["local_rope_scaling_factor"] == 1.0
    # per-layer flags (True: sliding window) as llama.cpp may store them: both layers slide
    flags = _write_gguf(
        tmp_path / "b.gguf", source, metadata=lambda w: w.add_sliding_window_pattern([True, True])
    )
    assert load_gguf(flags).config["use_sliding_window_attention"]
    every_other = _write_gguf(
        tmp_path / "c.gguf", source, metadata=lambda w: w.add_sliding_window_pattern(2)
    )
    with pytest.raises(BackboneError, match="sliding_window_pattern"):
        load_gguf(every_other)

    def yarn(writer: gguf.GGUFWriter) -> None:
        writer.add_rope_scaling_type(gguf.RopeScalingType.YARN)

    with pytest.raises(BackboneError, match="rope.scaling.type"):
        load_gguf(_write_gguf(tmp_path / "d.gguf", source, metadata=yarn))


def test_output_projection_must_be_the_tied_embedding(source: Any, tmp_path: Path) -> None:
    embedding = np.asarray(source.token_embedding.embeddings)
    tied = _write_gguf(tmp_path / "tied.gguf", source, extra={"output.weight": embedding})
    np.testing.assert_allclose(_outputs(load_gguf(tied).backbone()), _outputs(source), atol=1e-5)
    untied = _write_gguf(tmp_path / "untied.gguf", source, extra={"output.weight": embedding + 1.0})
    with pytest.raises(WeightsError, match="output projection differs"):
        load_gguf(untied).backbone()
    wrong = _write_gguf(tmp_path / "wrong.gguf", source, extra={"output.weight": embedding[:10]})
    with pytest.raises(WeightsError, match="output projection of another shape"):
        load_gguf(wrong)


def test_tokenizer_of_another_kind_is_refused(f32_file: Path) -> None:
    model = load_gguf(f32_file)
    model.vocabulary = dataclasses.replace(model.vocabulary, model="gpt2")
    with pytest.raises(BackboneError, match="'gpt2'"):
        model.tokenizer()


def test_repr(f32_file: Path) -> None:
    model = load_gguf(f32_file)
    assert isinstance(model, GGUFModel)
    assert "num_layers=2" in repr(model) and "vocabulary_size=64" in repr(model)
