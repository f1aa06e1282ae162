"""Generative text (the ``generative`` task): data, packing and loss, training, results, evaluation.

The model is a tiny randomly initialised Gemma 3 written to a GGUF file the
way llama.cpp writes one (``tests/test_gguf.py``'s writer), so every test also
goes through ``Backbone.from_gguf`` / ``from_preset("x.gguf")``; one test
loads a tiny GPT-2 KerasHub preset folder. Nothing is downloaded.

References: the packing against KerasHub's own ``Gemma3CausalLMPreprocessor``
(``{"prompts", "responses"}``), the loss, token accuracy and perplexity
against numpy computations from the model's logits and next tokens worked
out by hand, chrF / BLEU against ``sacrebleu`` itself.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf
from test_gguf import _random_backbone, _write_gguf

import finetunekit as ftk
from finetunekit.data.prompts import render_chat, token_lengths
from finetunekit.evaluation.generative import text_scores, token_scores
from finetunekit.tasks.generative import (
    DEFAULT_LORA_RANK,
    Generative,
    Packing,
    ResponseLoss,
    ResponseTokenAccuracy,
)
from finetunekit.training.freezing import lora_layers

WORDS = ["cat", "the", "hat", "bat"]
PROMPTS = [f"swap {a} {b}" for a in WORDS for b in WORDS]
RESPONSES = [f"{b} {a}" for a in WORDS for b in WORDS]


@pytest.fixture(scope="module")
def gguf_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("gen") / "tiny.gguf"
    return str(_write_gguf(path, _random_backbone(seed=3)))


@pytest.fixture(scope="module")
def data() -> Any:
    return ftk.DatasetAdapter.from_prompts(PROMPTS * 2, RESPONSES * 2)


def _trainer(**kwargs: Any) -> ftk.Trainer:
    settings: dict[str, Any] = {
        "epochs": 0,
        "fine_tune_epochs": 2,
        "fine_tune_learning_rate": 1e-2,
        "batch_size": 8,
        "seed": 0,
        "verbose": 0,
    }
    settings.update(kwargs)
    return ftk.Trainer(**settings)


def _tuner(gguf_file: str, data: Any, trainer: ftk.Trainer | None = None) -> ftk.FineTuner:
    return (
        ftk.FineTuner()
        .with_data(data)
        .with_backbone(ftk.Backbone.from_gguf(gguf_file, sequence_length=16))
        .with_trainer(trainer or _trainer())
    )


@pytest.fixture(scope="module")
def result(gguf_file: str, data: Any) -> Any:
    return _tuner(gguf_file, data).fit()


# --------------------------------------------------------------------------- data


def test_from_prompts_lists_split_and_len() -> None:
    data = ftk.DatasetAdapter.from_prompts(PROMPTS, RESPONSES)
    assert (data.task, len(data), data.input_shape, data.input_dtype) == (
        "generative",
        16,
        (2,),
        "string",
    )
    train, test = data.split(0.25, seed=0)
    assert (len(train), len(test)) == (12, 4)
    pairs = np.concatenate([train.sample_inputs(16), test.sample_inputs(16)])
    assert sorted(map(tuple, pairs.tolist())) == sorted(zip(PROMPTS, RESPONSES, strict=True))


def test_from_prompts_files(tmp_path: Path) -> None:
    rows = [{"q": p, "a": r, "id": i} for i, (p, r) in enumerate(zip(PROMPTS, RESPONSES))]
    jsonl = tmp_path / "pairs.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    data = ftk.DatasetAdapter.from_prompts(jsonl, prompt_column="q", response_column="a")
    assert data.sample_inputs(2).tolist() == [
        [PROMPTS[0], RESPONSES[0]],
        [PROMPTS[1], RESPONSES[1]],
    ]
    csv_path = tmp_path / "pairs.csv"
    csv_path.write_text(
        "prompt,response\n" + "".join(f"{p},{r}\n" for p, r in zip(PROMPTS, RESPONSES)),
        encoding="utf-8",
    )
    assert len(ftk.DatasetAdapter.from_prompts(str(csv_path))) == 16
    with pytest.raises(ftk.DataError, match=r"'prompt'.*\['a', 'id', 'q'\]"):
        ftk.DatasetAdapter.from_prompts(jsonl)
    with pytest.raises(ftk.DataError, match="does not exist"):
        ftk.DatasetAdapter.from_prompts(tmp_path / "missing.jsonl")


def test_chat_conversations_need_a_template() -> None:
    chats = [
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
        ],
    ]
    data = ftk.DatasetAdapter.from_prompts(chats, chat_template="gemma")
    prompt, response = data.sample_inputs(1)[0]
    assert prompt == ("<start_of_turn>user\nBe brief.\n\nhi<end_of_turn>\n<start_of_turn>model\n")
    assert response == "hello"
    assert render_chat([{"role": "user", "content": "x"}], "gemma").endswith("model\n")
    with pytest.raises(ftk.DataError, match="chat template"):
        ftk.DatasetAdapter.from_prompts(chats)
    with pytest.raises(ftk.DataError, match="ending with the answer"):
        ftk.DatasetAdapter.from_prompts([chats[0][:2]], chat_template="gemma")


@pytest.mark.parametrize(
    ("prompts", "responses", "error", "match"),
    [
        ([], [], ftk.DataError, "empty"),
        (["a", None], ["b", "c"], ftk.DataError, "not strings"),
        (["a", 3], ["b", "c"], ftk.DataError, "not strings"),
        (["a", "  "], ["b", "c"], ftk.DataError, "empty string"),
        (["a", "b"], ["c"], ftk.DataError, "different lengths"),
        ("a prompt", ["b"], ftk.ArgumentTypeError, "single string"),
        (["a"], None, ftk.ArgumentTypeError, "needs the responses"),
    ],
)
def test_bad_prompts_raise_first(prompts: Any, responses: Any, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        ftk.DatasetAdapter.from_prompts(prompts, responses)


def test_other_tasks_refused() -> None:
    with pytest.raises(ftk.LabelError, match="generative"):
        ftk.DatasetAdapter.from_prompts(["a"], ["b"], task="multiclass")
    with pytest.raises(ftk.LabelError, match="from_prompts"):
        ftk.DatasetAdapter.from_arrays(np.zeros((2, 3)), [0, 1], task="generative")


def test_token_length_stats_count_tokens(gguf_file: str) -> None:
    backbone = ftk.Backbone.from_gguf(gguf_file)
    tokenizer = backbone.tokenizer()
    data = ftk.DatasetAdapter.from_prompts(["the cat", "swap the hat bat"], ["hat", "cat the"])
    stats = data.token_length_stats(backbone)
    p = [len(np.asarray(tokenizer(t))) for t in ["the cat", "swap the hat bat"]]
    r = [len(np.asarray(tokenizer(t))) for t in ["hat", "cat the"]]
    assert stats["prompt"]["max"] == max(p) and stats["response"]["min"] == min(r)
    assert stats["total"]["max"] == max(a + b + 2 for a, b in zip(p, r))


# --------------------------------------------------------------------------- packing and loss


def test_packing_matches_keras_hubs_prompt_masking(gguf_file: str) -> None:
    """Same inputs and the same labelled positions as Gemma3CausalLMPreprocessor."""
    tokenizer = ftk.Backbone.from_gguf(gguf_file).tokenizer()
    reference = keras_hub.models.Gemma3CausalLMPreprocessor(tokenizer, sequence_length=32)
    prompts, responses = ["the cat", "swap hat bat", "bat"], ["hat", "bat hat", "the cat hat"]
    x_ref, y_ref, weight = reference({"prompts": prompts, "responses": responses})
    x, y = Packing.of(reference)(tf.constant(prompts), tf.constant(responses))
    width = int(x["token_ids"].shape[1])
    assert width % 8 == 0 and width < 32  # cut after the longest example, a multiple of 8
    mask = np.asarray(x["padding_mask"]).astype(bool)
    ids_ref = np.asarray(x_ref["token_ids"])[:, :width]
    assert np.array_equal(np.asarray(x["token_ids"])[mask], ids_ref[mask])
    expected = np.where(np.asarray(weight), np.asarray(y_ref), -1)[:, :width]
    assert np.array_equal(np.asarray(y), expected)
    assert not np.asarray(weight)[:, width:].any()


def test_packing_keeps_the_prompt_end_and_the_whole_response(gguf_file: str) -> None:
    tokenizer = ftk.Backbone.from_gguf(gguf_file).tokenizer()
    packing = Packing(tokenizer, sequence_length=8, start_id=2, end_id=1, pad_id=0)
    prompt = "a b c d e f"  # 11 tokens: only its last ones fit
    x, y = packing(tf.constant([prompt]), tf.constant(["cat"]))
    ids = np.asarray(x["token_ids"])[0]
    p_ids = list(np.asarray(tokenizer(prompt)))
    r_ids = list(np.asarray(tokenizer("cat")))
    keep = 8 + 1 - 2 - len(r_ids)
    assert ids.tolist() == [2, *p_ids[-keep:], *r_ids]
    assert np.asarray(y)[0].tolist() == [-1] * keep + [*r_ids, 1]


def test_response_loss_is_the_masked_cross_entropy_by_hand() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 5, 7)).astype("float32")
    labels = np.array([[-1, -1, 3, 4, -1], [-1, 0, 6, -1, -1]])
    p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    picked = [
        -np.log(p[b, t, labels[b, t]]) for b in range(2) for t in range(5) if labels[b, t] >= 0
    ]
    assert float(ResponseLoss()(labels, logits)) == pytest.approx(np.mean(picked), rel=1e-5)
    metric = ResponseTokenAccuracy()
    metric.update_state(labels, logits)
    hits = [
        logits[b, t].argmax() == labels[b, t]
        for b in range(2)
        for t in range(5)
        if labels[b, t] >= 0
    ]
    assert float(metric.result()) == pytest.approx(np.mean(hits))


def test_training_loss_counts_only_next_response_tokens(result: Any, gguf_file: str) -> None:
    """The model's loss on a batch equals -log p(next response token) averaged by hand.

    Catches an unmasked prompt (prompt tokens counted) and an off-by-one shift
    (labels not the NEXT token): the reference is built from the token ids
    alone, independently of Packing.
    """
    model = result.model
    tokenizer = model.preprocessor.tokenizer
    prompts, responses = ["swap the cat", "swap hat bat"], ["cat the", "bat hat"]
    x, y = Packing.of(model.preprocessor)(tf.constant(prompts), tf.constant(responses))
    logits = np.asarray(model(x, training=False), np.float64)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    terms = []
    for b, (prompt, response) in enumerate(zip(prompts, responses)):
        p_ids = list(np.asarray(tokenizer(prompt)))
        seq = [2, *p_ids, *np.asarray(tokenizer(response)).tolist(), 1]
        for t in range(len(p_ids), len(seq) - 1):  # position t predicts seq[t + 1]
            terms.append(-logp[b, t, seq[t + 1]])
    loss = float(ResponseLoss()(np.asarray(y), logits.astype("float32")))
    assert loss == pytest.approx(np.mean(terms), rel=1e-4)


# --------------------------------------------------------------------------- training


def test_fit_trains_lora_adapters_only(result: Any, gguf_file: str) -> None:
    lora = result.info["lora"]
    assert lora["rank"] == DEFAULT_LORA_RANK and lora["kinds"] == ["query", "value"]
    assert result.params["trainable_phase2"] == lora["params"] > 0
    assert result.history["phase"] == [2, 2] and len(result.history["loss"]) == 2
    base = ftk.Backbone.from_gguf(gguf_file, sequence_length=16).causal_lm()
    trained = {v.path: np.asarray(v) for v in result.model.backbone.weights}
    for variable in base.backbone.weights:  # the base weights did not move
        if "lora" not in variable.path:
            assert np.array_equal(trained[variable.path], np.asarray(variable)), variable.path
    assert any(
        np.abs(np.asarray(v)).sum() > 0 for v in result.model.weights if "lora_kernel_b" in v.path
    )


@pytest.mark.slow
def test_loss_falls_and_full_fine_tuning(gguf_file: str, data: Any) -> None:
    full = ftk.DatasetAdapter.from_prompts(PROMPTS, RESPONSES, task=Generative(lora=False))
    res = _tuner(gguf_file, full, _trainer(fine_tune_epochs=4, fine_tune_learning_rate=3e-2)).fit()
    assert "lora" not in res.info and not lora_layers(res.model)
    assert res.params["trainable_phase2"] == res.params["total"]
    assert res.history["loss"][-1] < res.history["loss"][0] - 0.5


def test_trainer_lora_settings_apply(gguf_file: str, data: Any) -> None:
    res = _tuner(gguf_file, data, _trainer(fine_tune_epochs=1, lora_rank=2, lora_alpha=4.0)).fit()
    assert (res.info["lora"]["rank"], res.info["lora"]["alpha"]) == (2, 4.0)
    assert {layer.lora_rank for layer in lora_layers(res.model)} == {2}


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        ({"trainer": _trainer(epochs=2)}, ftk.TrainerError, "epochs=0"),
        ({"head": ftk.HeadReplacer(num_classes=3)}, ftk.HeadError, "keeps its own"),
        (
            {"trainer": _trainer(lora_rank=4), "task": Generative(lora=False)},
            ftk.TrainerError,
            "lora",
        ),
        ({"trainer": _trainer(label_smoothing=0.1)}, ftk.TrainerError, "label_smoothing"),
        ({"backbone": "length"}, ftk.DataError, "response"),
    ],
)
def test_recipe_errors_before_training(
    gguf_file: str, change: dict[str, Any], error: type, match: str
) -> None:
    responses = ["cat " * 20] if change.get("backbone") == "length" else ["cat"]
    data = ftk.DatasetAdapter.from_prompts(["the"], responses, task=change.get("task"))
    tuner = _tuner(gguf_file, data, change.get("trainer"))
    if "head" in change:
        tuner = tuner.with_head(change["head"])
    with pytest.raises(error, match=match):
        tuner.fit()


def test_default_trainer_is_the_tasks_own(gguf_file: str, data: Any) -> None:
    backbone = ftk.Backbone.from_gguf(gguf_file, sequence_length=16)
    tuner = ftk.FineTuner().with_data(data).with_backbone(backbone)  # no with_trainer
    trainer = tuner.prepare().trainer  # (Trainer() alone would raise: epochs=10)
    assert (trainer.epochs, trainer.fine_tune_epochs) == (0, 3)
    assert trainer.phases(Generative()) == [(2, 1e-3, 0, 3)]
    assert tuner.get_config()["trainer"]["fine_tune_epochs"] == 3
    # a Trainer the user gives is never replaced; an explicit rate wins over the task's
    with pytest.raises(ftk.TrainerError, match="epochs=0"):
        tuner.with_trainer(ftk.Trainer()).prepare()
    assert ftk.Trainer(fine_tune_epochs=1).resolved_fine_tune_rate(Generative()) == 1e-3
    assert ftk.Trainer(learning_rate=0.5).resolved_fine_tune_rate(Generative()) == 0.005
    assert ftk.Trainer(fine_tune_learning_rate=5e-4).resolved_fine_tune_rate(Generative()) == 5e-4
    other = ftk.FineTuner().with_data((np.zeros((4, 3)), [0, 1, 0, 1]))
    assert other.get_config()["trainer"] == ftk.Trainer().get_config()  # other tasks: Trainer()


def test_backbone_without_causal_lm_refused(data: Any) -> None:
    net = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)], name="dense")
    backbone = ftk.Backbone.from_model(net)
    with pytest.raises(ftk.FineTuneError):  # prepare: strings do not fit this network
        ftk.FineTuner().with_data(data).with_backbone(backbone).with_trainer(_trainer()).fit()
    with pytest.raises(ftk.BackboneError, match="causal language model"):
        Generative().build_model(backbone, data, head=None, trainer=_trainer(), units=0)


@pytest.mark.slow
def test_resume_equals_uninterrupted(gguf_file: str, data: Any, tmp_path: Path) -> None:
    # length-grouped batches (the default): the resumed run must see the same order
    assert data.length_grouping

    class Stop(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            if epoch == 1:
                raise KeyboardInterrupt

    trainer = _trainer(fine_tune_epochs=2, checkpoint_dir=str(tmp_path / "ckpt"))
    with pytest.raises(KeyboardInterrupt):
        _tuner(gguf_file, data, trainer.replace(callbacks=[Stop()])).fit()
    resumed = _tuner(gguf_file, data, trainer).fit()
    assert resumed.info["resumed_from"]["epochs_done"] == 1
    straight = _tuner(gguf_file, data, _trainer(fine_tune_epochs=2)).fit()
    for a, b in zip(resumed.model.weights, straight.model.weights, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, err_msg=a.path)
    assert resumed.history["loss"] == pytest.approx(straight.history["loss"], rel=1e-5)


# --------------------------------------------------------------------------- results


def test_generate_and_predict_return_strings(result: Any) -> None:
    greedy = result.generate(PROMPTS[:3], max_length=12)
    assert isinstance(greedy, list) and all(isinstance(t, str) for t in greedy)
    assert result.generate(PROMPTS[:3], max_length=12) == greedy  # greedy: deterministic
    assert result.generate(PROMPTS[0], max_length=12) == greedy[:1]
    assert list(result.predict(PROMPTS[:3])) == result.generate(PROMPTS[:3])
    assert len(result.generate(PROMPTS[:2], sampler="top_k", max_length=12)) == 2
    with pytest.raises(ftk.EvaluationError, match="Unknown sampler"):
        result.generate(PROMPTS[:1], sampler="nucleus")
    with pytest.raises(ftk.EvaluationError, match="no room"):
        result.generate(["swap the cat hat bat the cat"], max_length=4)


def test_save_merges_lora_and_load_generates_the_same(result: Any, tmp_path: Path) -> None:
    merged = result.merge_lora()
    assert lora_layers(result.model) and not lora_layers(merged.model)
    x, _ = Packing.of(result.model.preprocessor)(
        tf.constant(PROMPTS[:4]), tf.constant(RESPONSES[:4])
    )
    np.testing.assert_allclose(merged.model(x), result.model(x), atol=1e-5)
    path = result.save(tmp_path / "lm.keras")
    again = ftk.load(path)
    assert again.task == "generative" and not lora_layers(again.model)
    np.testing.assert_allclose(again.model(x), result.model(x), atol=1e-5)
    assert again.generate(PROMPTS[:4], max_length=12) == result.generate(PROMPTS[:4], max_length=12)


def test_export_transformers_folder_holds_the_merged_weights(
    result: Any, gguf_file: str, tmp_path: Path
) -> None:
    from safetensors.numpy import load_file

    from finetunekit.training.lora import _adapters

    report = result.export(tmp_path / "hf", format="transformers", sample=PROMPTS[:4])
    assert report.ok and report.max_abs_diff < 1e-4 and report.top1_agreement == 1.0
    files = {p.name for p in (tmp_path / "hf").iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.model", "finetunekit.json"} <= files
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["num_hidden_layers"] == result.model.backbone.num_layers
    # reference by hand: the first query projection, W + alpha / r * A @ B, as HF lays it out
    layer = next(x for x in lora_layers(result.model) if "query" in x.path)
    kernel, a, b = (np.asarray(keras.ops.convert_to_numpy(v)) for v in _adapters(layer)[:3])
    scale = result.info["lora"]["alpha"] / result.info["lora"]["rank"]
    delta = scale * np.tensordot(a, b, axes=([-1], [0]))  # A (..., r) @ B (r, out)
    merged = kernel + delta
    assert np.abs(delta).max() > 1e-4  # the adapters moved: an unmerged export would differ
    weights = load_file(str(tmp_path / "hf" / "model.safetensors"))
    block = int(layer.path.split("/")[0].rsplit("_", 1)[1])  # decoder_block_<i>/attention/query
    hf = weights[f"model.layers.{block}.self_attn.q_proj.weight"]
    heads, hidden, head_dim = merged.shape  # KerasHub "btd,ndh->btnh"; HF rows: head by head
    want = merged.transpose(0, 2, 1).reshape(heads * head_dim, hidden)
    np.testing.assert_allclose(hf, want, atol=1e-6)
    # finetunekit reads the folder back as a preset (KerasHub's Hugging Face converter)
    again = ftk.Backbone.from_preset(str(tmp_path / "hf"), sequence_length=16).causal_lm()
    want = result.model.generate(PROMPTS[:2], max_length=12)  # KerasHub's generate, both sides
    assert again.generate(PROMPTS[:2], max_length=12) == want


def test_export_refuses_other_formats(result: Any, tmp_path: Path) -> None:
    with pytest.raises(ftk.ExportError, match="Hugging Face folder or a .keras"):
        result.export(tmp_path / "sm", format="saved_model")
    with pytest.raises(ftk.ExportError, match="list of non-empty strings"):
        result.export(tmp_path / "hf", format="transformers", sample=[1, 2])
    report = result.export(tmp_path / "lm.keras", format="keras", sample=PROMPTS[:2])
    assert report.ok and report.max_abs_diff < 1e-4


def test_adapters_alone_round_trip(result: Any, gguf_file: str, tmp_path: Path) -> None:
    path = result.save_adapters(tmp_path / "adapters.npz")
    assert Path(path).stat().st_size < 64_000
    again = ftk.load_adapters(path)
    assert again.generate(PROMPTS[:4], max_length=12) == result.generate(PROMPTS[:4], max_length=12)
    other = tmp_path / "other.gguf"
    _write_gguf(other, _random_backbone(seed=7))
    with pytest.raises(ftk.LoadError, match="differ"):
        ftk.load_adapters(path, backbone=ftk.Backbone.from_gguf(other))
    with pytest.raises(ftk.LoadError, match=".npz"):
        result.save_adapters(tmp_path / "adapters.h5")


# --------------------------------------------------------------------------- evaluation


def test_evaluate_against_hand_computation(result: Any) -> None:
    test = ftk.DatasetAdapter.from_prompts(PROMPTS[:6], RESPONSES[:6])
    report = result.evaluate(test)
    model = result.model
    tokenizer = model.preprocessor.tokenizer
    nll, hits, count = 0.0, 0, 0
    for prompt, response in zip(PROMPTS[:6], RESPONSES[:6]):
        p_ids = np.asarray(tokenizer(prompt)).tolist()
        seq = [2, *p_ids, *np.asarray(tokenizer(response)).tolist(), 1]
        ids = np.asarray([seq[:-1]], "int32")
        logits = np.asarray(
            model({"token_ids": ids, "padding_mask": np.ones_like(ids)}), np.float64
        )[0]
        logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        for t in range(len(p_ids), len(seq) - 1):
            nll -= logp[t, seq[t + 1]]
            hits += int(logits[t].argmax() == seq[t + 1])
            count += 1
    assert report.metrics["perplexity"] == pytest.approx(np.exp(nll / count), rel=1e-4)
    assert report.metrics["token_accuracy"] == pytest.approx(hits / count)
    generated = result.generate(PROMPTS[:6], max_length=int(report.metrics["response_tokens"]) + 20)
    exact = np.mean([g.strip() == r for g, r in zip(generated, RESPONSES[:6])])
    assert report.metrics["exact_match"] == pytest.approx(exact)
    worst = report.examples[0]
    assert set(worst) >= {"prompt", "expected", "generated"} and worst["prompt"] in PROMPTS
    assert "Worst" in str(report) and json.dumps(report.to_dict())


def test_text_scores_are_sacrebleus() -> None:
    sacrebleu = pytest.importorskip("sacrebleu")
    expected, generated = ["the cat sat", "a hat"], ["the cat sat", "the hat"]
    scores, notes = text_scores(expected, generated)
    assert scores["exact_match"] == 0.5 and not notes
    assert scores["chrf"] == pytest.approx(sacrebleu.corpus_chrf(generated, [expected]).score)
    assert scores["bleu"] == pytest.approx(sacrebleu.corpus_bleu(generated, [expected]).score)


def test_token_scores_count_every_response_token(result: Any) -> None:
    pairs = np.asarray([[p, r] for p, r in zip(PROMPTS[:3], RESPONSES[:3])])
    scores = token_scores(result.model, pairs, Packing.of(result.model.preprocessor))
    tokenizer = result.model.preprocessor.tokenizer
    expected = token_lengths(tokenizer, pairs[:, 1]) + 1  # + the end token
    assert scores["count"].tolist() == expected.tolist()


# --------------------------------------------------------------------------- presets


@pytest.mark.slow
def test_gpt2_preset_folder(tmp_path: Path) -> None:
    """A KerasHub preset folder (tiny GPT-2, byte-level BPE) trains and generates."""
    keras.utils.set_random_seed(0)
    vocab = {"<|endoftext|>": 0}
    for c in _byte_chars():
        vocab[c] = len(vocab)
    vocab["Ġt"] = len(vocab)
    tokenizer = keras_hub.models.GPT2Tokenizer(vocabulary=vocab, merges=["Ġ t"])
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=len(vocab),
        num_layers=1,
        num_heads=2,
        hidden_dim=16,
        intermediate_dim=32,
        max_sequence_length=32,
    )
    pre = keras_hub.models.GPT2CausalLMPreprocessor(tokenizer, sequence_length=16)
    keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=pre).save_to_preset(tmp_path)
    data = ftk.DatasetAdapter.from_prompts(["ab:", "cd:"], ["ba", "dc"])
    res = (
        ftk.FineTuner()
        .with_data(data)
        .with_backbone(ftk.Backbone.from_preset(str(tmp_path), sequence_length=12))
        .with_trainer(_trainer(fine_tune_epochs=1))
        .fit()
    )
    assert res.info["causal_lm"] == "GPT2CausalLM" and res.info["lora"]["layers"] == 2
    assert all(isinstance(t, str) for t in res.generate(["ab:"], max_length=8))
    with pytest.raises(ftk.InputShapeError, match="sequence_length"):
        ftk.Backbone.from_preset(str(tmp_path), sequence_length=64).causal_lm()


def test_gguf_path_checks(tmp_path: Path) -> None:
    with pytest.raises(ftk.WeightsError, match="does not exist"):
        ftk.Backbone.from_preset(str(tmp_path / "missing.gguf"))
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"not a gguf")
    with pytest.raises(ftk.WeightsError, match="not a GGUF"):
        ftk.Backbone.from_gguf(fake)
    with pytest.raises(ftk.WeightsError, match=".gguf"):
        ftk.Backbone.from_gguf(tmp_path / "model.bin")


def _byte_chars() -> list[str]:
    """GPT-2's byte-level alphabet: printable bytes as themselves, the rest shifted past 255."""
    kept = [*range(33, 127), *range(161, 173), *range(174, 256)]
    shifted = [b for b in range(256) if b not in kept]
    return [chr(b) for b in kept] + [chr(256 + i) for i in range(len(shifted))]


# --------------------------------------------------------------------------- the example


@pytest.mark.slow
def test_example_script_runs_end_to_end(gguf_file: str, tmp_path: Path) -> None:
    """examples/generative.py on the tiny GGUF model; its data file is make_dates()' output."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "examples" / "generative.py"
    spec = importlib.util.spec_from_file_location("ftk_example_generative", path)
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    rows = [json.loads(line) for line in Path(example.DATA).read_text().splitlines()]
    assert rows == example.make_dates()
    argv = ["--model", gguf_file, "--train", "16", "--test", "8", "--epochs", "1"]
    figures = example.main([*argv, "--export", str(tmp_path / "hf")])
    assert (figures["train"], figures["test"]) == (16, 8)
    assert figures["export"]["ok"] and (tmp_path / "hf" / "model.safetensors").exists()
    assert figures["trained_weights"] == figures["result"].info["lora"]["params"] > 0
    assert 0.0 <= figures["exact_match"] <= 1.0 and figures["tokens_per_second"] > 0


def test_benchmark_sides_train_the_same_weights_on_the_same_tokens(gguf_file: str) -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import bench_generative

    args = bench_generative.parse(
        ["--model", gguf_file, "--train", "16", "--epochs", "2", "--sequence-length", "16"]
    )
    hand = bench_generative.run_side("hand", args)
    ours = bench_generative.run_side("finetunekit", args)
    assert hand["tokens_per_epoch"] == ours["tokens_per_epoch"] > 16 * 8  # no padding counted
    assert hand["trained_weights"] == ours["trained_weights"] > 0  # LoRA alone, both sides
    assert len(hand["epoch_seconds"]) == len(ours["epoch_seconds"]) == 2
