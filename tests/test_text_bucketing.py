"""Dynamic padding and length-grouped batches for text: same outputs, less padding.

The reference for every output is the same encoder run on fully padded
batches (``padding="fixed"``, plain KerasHub); the reference for the cut
lengths and for the grouping is a numpy computation on the padding masks /
text lengths.
"""

from __future__ import annotations

import importlib.util
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import finetunekit as ftk
from finetunekit.backbones.padding import PAD_MULTIPLE, padded_length, trim_padding
from finetunekit.backbones.text import TextBackbone, TextPreprocessor
from finetunekit.data.text import (
    GROUP_RESOLUTION,
    TextSource,
    check_texts,
    length_grouped_batches,
    text_lengths,
)
from finetunekit.errors import BackboneError, ConfigError

WORDS = "rain sun wind snow ball game goal team the a is today".split()
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
SEQUENCE_LENGTH = 40
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Largest difference measured between the dynamic and the fixed model's outputs on the
# tiny BERT: 0.0. A cut that rounds down (drops real tokens) changed them by 5e-4
# (pairs, "cls") to 1.5 ("mean"): the tolerance sits well between.
ATOL = 1e-5


def _texts(n: int, low: int, high: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, int(rng.integers(low, high + 1)))) for _ in range(n)]


@pytest.fixture(scope="module")
def preset(tmp_path_factory: pytest.TempPathFactory, tiny_bert) -> str:
    folder = str(tmp_path_factory.mktemp("tiny_bert_padding"))
    return tiny_bert(folder, VOCAB, sequence_length=64, num_layers=2)


def _models(preset: str, pooling: str, pairs: bool = False) -> tuple[keras.Model, ...]:
    """The same encoder behind a fixed and a dynamic preprocessor, plus the dynamic one alone."""
    backbone = TextBackbone(preset, sequence_length=SEQUENCE_LENGTH, pooling=pooling)
    encoder, preprocessor = backbone._load()
    pooled = backbone._wrap(encoder)
    shape = (2,) if pairs else ()
    models = []
    for padding in ("fixed", "dynamic"):
        inputs = keras.Input(shape=shape, dtype="string")
        pre = TextPreprocessor(preprocessor, pairs=pairs, padding=padding)
        models.append(keras.Model(inputs, pooled(pre(inputs))))
    return models[0], models[1], pre


# --------------------------------------------------------------------------- the cut


def _reference_keep(mask: np.ndarray, multiple: int, cap: int) -> int:
    last = max((np.flatnonzero(row).max() + 1 if row.any() else 0) for row in mask)
    return min(cap, int(np.ceil(max(last, 1) / multiple)) * multiple)


@pytest.mark.parametrize("multiple", [1, 4, 8])
def test_trim_keeps_every_real_token_and_only_rounds_up(multiple: int) -> None:
    rng = np.random.default_rng(multiple)
    cap = 24
    for _ in range(20):
        lengths = rng.integers(0, cap + 1, size=int(rng.integers(1, 6)))
        mask = np.arange(cap)[None, :] < lengths[:, None]
        if rng.random() < 0.3:  # a hole: padding inside a row is never trusted as the end
            mask[0, rng.integers(cap)] = False
        ids = rng.integers(5, 100, size=mask.shape).astype("int32") * mask
        out = trim_padding({"padding_mask": mask, "token_ids": ids}, multiple=multiple, cap=cap)
        keep = _reference_keep(mask, multiple, cap)
        assert out["token_ids"].shape == (len(lengths), keep)
        np.testing.assert_array_equal(out["token_ids"].numpy(), ids[:, :keep])
        np.testing.assert_array_equal(out["padding_mask"].numpy(), mask[:, :keep])
        assert out["padding_mask"].numpy().sum() == mask.sum()  # no real token dropped


def test_padded_length_by_hand() -> None:
    assert [padded_length(n, 8, 64) for n in (0, 1, 8, 9, 57, 64, 80)] == [8, 8, 8, 16, 64, 64, 64]
    assert padded_length(5, 8, 6) == 6  # never past sequence_length


# --------------------------------------------------------------------------- same outputs


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_dynamic_outputs_equal_fixed_outputs(preset: str, pooling: str) -> None:
    fixed, dynamic, pre = _models(preset, pooling)
    short = _texts(6, 1, 4, seed=1)  # 3-6 tokens with [CLS] / [SEP]
    mixed = _texts(6, 1, 60, seed=2)  # some longer than sequence_length (truncated)
    for batch in (short, mixed, short[:1], short + mixed):
        x = tf.constant(batch)
        kept = pre(x)["token_ids"].shape[1]
        full = pre.preprocessor(x)["padding_mask"].numpy()
        assert kept == _reference_keep(full, PAD_MULTIPLE, SEQUENCE_LENGTH)
        np.testing.assert_allclose(dynamic(x).numpy(), fixed(x).numpy(), atol=ATOL)
    # the short batch really ran on fewer positions than sequence_length
    assert pre(tf.constant(short))["token_ids"].shape[1] == PAD_MULTIPLE < SEQUENCE_LENGTH
    # one text gives the same features alone and inside a batch of long texts
    alone = dynamic(tf.constant(short[:1])).numpy()
    inside = dynamic(tf.constant(short[:1] + mixed)).numpy()[:1]
    np.testing.assert_allclose(alone, inside, atol=ATOL)


def test_dynamic_outputs_equal_fixed_for_sentence_pairs(preset: str) -> None:
    fixed, dynamic, pre = _models(preset, "cls", pairs=True)
    x = tf.constant(np.stack([_texts(5, 1, 6, seed=3), _texts(5, 1, 9, seed=4)], axis=1))
    assert pre(x)["segment_ids"].shape[1] < SEQUENCE_LENGTH
    np.testing.assert_allclose(dynamic(x).numpy(), fixed(x).numpy(), atol=ATOL)


@pytest.mark.slow
def test_pipeline_dynamic_default_info_save_load_and_fixed_twin(preset: str, tmp_path) -> None:
    texts = _texts(32, 1, 12, seed=5)
    labels = ["long" if len(t.split()) > 6 else "short" for t in texts]
    data = ftk.DatasetAdapter.from_texts(texts, labels)
    results = {}
    for padding in ("fixed", None):  # None: the default; the fixed twin only needs its weights
        kwargs = {} if padding is None else {"padding": padding}
        bb = ftk.Backbone.from_preset(preset, sequence_length=SEQUENCE_LENGTH, **kwargs)
        trainer = ftk.Trainer(
            epochs=1, fine_tune_epochs=0 if padding else 1, batch_size=8, verbose=0, seed=0
        )
        results[padding or "dynamic"] = (
            ftk.FineTuner().with_data(data).with_backbone(bb).with_trainer(trainer).fit()
        )
    dyn, fix = results["dynamic"], results["fixed"]
    assert (dyn.info["padding"], dyn.info["pad_multiple"]) == ("dynamic", PAD_MULTIPLE)
    assert (fix.info["padding"], fix.info["pad_multiple"]) == ("fixed", None)
    assert dyn.model.get_layer("input_text").padding == "dynamic"
    probe = _texts(10, 1, 50, seed=6)
    # the same weights behind fixed padding give the same predictions
    fix.model.set_weights(dyn.model.get_weights())
    np.testing.assert_allclose(dyn.predict(probe), fix.predict(probe), atol=ATOL)
    again = ftk.load(dyn.save(tmp_path / "dynamic.keras"))
    assert again.model.get_layer("input_text").padding == "dynamic"
    np.testing.assert_allclose(again.predict(probe), dyn.predict(probe), atol=1e-6)
    np.testing.assert_allclose(again.predict(probe[:1]), dyn.predict(probe)[:1], atol=ATOL)


# --------------------------------------------------------------------------- settings


def test_padding_setting_config_repr_and_errors(preset: str) -> None:
    bb = ftk.Backbone.from_preset(preset, sequence_length=16, padding="fixed")
    assert bb.get_config()["padding"] == "fixed" and "padding='fixed'" in repr(bb)
    assert TextBackbone.from_config(bb.get_config()).padding == "fixed"
    old = {k: v for k, v in bb.get_config().items() if k != "padding"}  # before the setting
    assert TextBackbone.from_config(old).padding == "dynamic"
    for bad in ("none", "Dynamic", None, True):
        with pytest.raises(BackboneError, match=r"padding.*dynamic.*Received: padding="):
            ftk.Backbone.from_preset(preset, padding=bad)
    with pytest.raises(ConfigError, match="pad"):
        TextBackbone.from_config({**bb.get_config(), "pad": 8})


def test_saved_preprocessors_without_the_setting_stay_fixed(preset: str) -> None:
    _, dynamic, pre = _models(preset, "mean")
    config = pre.get_config()
    assert (config["padding"], config["pad_multiple"]) == ("dynamic", PAD_MULTIPLE)
    del config["padding"], config["pad_multiple"]  # a model saved before the setting existed
    config["preprocessor"] = pre.preprocessor  # (a saved model brings its vocabulary as an asset)
    old = TextPreprocessor.from_config(config)
    assert old.padding == "fixed"
    assert old(tf.constant(["rain"]))["token_ids"].shape == (1, SEQUENCE_LENGTH)
    for bad in (0, 2.0, True):
        with pytest.raises((TypeError, ValueError), match="pad_multiple"):
            TextPreprocessor(pre.preprocessor, padding="dynamic", pad_multiple=bad)


# --------------------------------------------------------------------------- grouped batches


def _epochs(ds: tf.data.Dataset, n: int) -> list[list[np.ndarray]]:
    return [[b.numpy() for b in ds] for _ in range(n)]


def test_grouped_batches_keep_every_example_once_and_group_by_length() -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 500, size=203)
    grouped_ds = length_grouped_batches(lengths, 8, seed=3)
    assert int(grouped_ds.cardinality()) == 26  # known, as Keras needs to end epochs cleanly
    epochs = _epochs(grouped_ds, 3)
    for batches in epochs:
        np.testing.assert_array_equal(np.sort(np.concatenate(batches)), np.arange(203))
        assert max(len(b) for b in batches) == 8
    flat = [np.concatenate(b) for b in epochs]
    assert not np.array_equal(flat[0], flat[1])  # a new order every epoch
    # which examples share a batch changes too
    assert {tuple(sorted(b)) for b in epochs[0]} != {tuple(sorted(b)) for b in epochs[1]}
    # what dynamic padding pays: the mean over batches of the longest example
    grouped = np.mean([lengths[b].max() for b in epochs[0]])
    random = np.mean([lengths[b].max() for b in np.array_split(rng.permutation(203), 26)])
    assert grouped < 0.75 * random, (grouped, random)
    # equal keys keep their random order: even one window for the whole set regroups
    small = np.repeat([40, 200], 16)  # 2 keys, 32 texts, 4 batches of 8: one window
    two = _epochs(length_grouped_batches(small, 8, seed=0), 2)
    assert {tuple(sorted(b)) for b in two[0]} != {tuple(sorted(b)) for b in two[1]}
    assert all(np.ptp(small[b]) == 0 for b in two[0])  # still grouped
    # the same seed, the same sequence of epochs
    again = _epochs(length_grouped_batches(lengths, 8, seed=3), 3)
    for a, b in zip(epochs, again, strict=True):
        np.testing.assert_array_equal(np.concatenate(a), np.concatenate(b))


def test_text_adapter_groups_shuffled_batches_only() -> None:
    texts = _texts(40, 1, 30, seed=7)
    data = ftk.DatasetAdapter.from_texts(texts, [i % 2 for i in range(40)])
    sub, _ = data.split(0.25, seed=0)
    inputs = np.concatenate([b.numpy() for b in sub.inputs_dataset(64)])
    # unshuffled (validation, predict): the example order
    ordered = np.concatenate([x.numpy() for x, _ in sub.as_dataset(8)])
    np.testing.assert_array_equal(ordered, inputs)
    idx = np.concatenate([i.numpy() for i, _ in sub.index_dataset(8)])
    np.testing.assert_array_equal(idx, np.arange(len(sub)))
    # shuffled: as_dataset and index_dataset batch the same examples (cached-feature training)
    keras.utils.set_random_seed(1)
    xs = [x.numpy() for x, _ in sub.as_dataset(8, shuffle=True, seed=5)]
    keras.utils.set_random_seed(1)
    ids = [i.numpy() for i, _ in sub.index_dataset(8, shuffle=True, seed=5)]
    for x, i in zip(xs, ids, strict=True):
        np.testing.assert_array_equal(x, inputs[i])
    assert sorted(np.concatenate(ids).tolist()) == list(range(len(sub)))
    # and grouped: each batch is a run of its window sorted by length // GROUP_RESOLUTION
    keys = text_lengths(np.array([t.decode() for t in inputs])) // GROUP_RESOLUTION
    assert all(np.all(np.diff(keys[i]) >= 0) for i in ids)
    assert len(set(keys.tolist())) > 2  # (the check above means something)


def test_text_source_length_estimates_and_switch() -> None:
    source = TextSource(check_texts(["a b c", "", "abcdef"]))
    np.testing.assert_array_equal(source.lengths(), [5, 0, 6])
    assert source.group_by_length and not source.grouped(False).group_by_length
    assert source.subset(np.array([2, 0])).lengths().tolist() == [6, 5]
    plain = source.grouped(False)._index_dataset(2, True, 0)
    assert sorted(np.concatenate([b.numpy() for b in plain]).tolist()) == [0, 1, 2]
    with pytest.raises(TypeError, match="group_by_length"):
        TextSource(check_texts(["a"]), group_by_length="yes")


# --------------------------------------------------------------------------- the benchmark


@pytest.mark.slow
def test_benchmark_quick_runs_and_its_ratios_add_up(capsys) -> None:
    spec = importlib.util.spec_from_file_location(
        "bench_text_padding", os.path.join(ROOT, "benchmarks", "bench_text_padding.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    figures = module.main(["--quick", "--cases", "sentences@128"])
    out = capsys.readouterr().out
    case = figures["cases"]["sentences@128"]
    assert case["tokens"]["max"] < 128 / 4  # short sentences, long sequence_length
    for what in ("finetune", "predict"):
        ratio = case["fixed"][f"{what}_s"] / case["dynamic"][f"{what}_s"]
        assert case[f"{what}_ratio"] == pytest.approx(ratio)  # one run: the ratio of the runs
        assert f"**{case[f'{what}_ratio']:.2f}x**" in out
    assert "| sentences@128 |" in out


def test_the_adapter_switches_length_grouping_off_and_on() -> None:
    """The public switch: plain shuffled batches (the other adapters' order) or grouped ones."""
    texts = [("w " * n).strip() for n in (1, 40, 2, 39, 3, 38, 4, 37)]
    data = ftk.DatasetAdapter.from_texts(texts, [0, 1] * 4)
    assert data.length_grouping is True
    plain = data.with_length_grouping(False)
    assert plain.length_grouping is False and data.length_grouping is True  # a new adapter
    assert plain.with_length_grouping().length_grouping is True
    assert plain.split(0.25, seed=0)[0].length_grouping is False  # kept by subsets

    def batches(adapter: ftk.DatasetAdapter) -> list[list[int]]:
        ds = adapter.index_dataset(2, shuffle=True, seed=0)
        return [sorted(b[0].numpy().tolist()) for b in ds]

    reference = ftk.DatasetAdapter.from_arrays(np.zeros((8, 2), "float32"), [0, 1] * 4)
    assert batches(plain) == batches(reference)  # exactly the plain shuffle
    spread = [max(len(texts[i]) for i in b) - min(len(texts[i]) for i in b) for b in batches(data)]
    assert max(spread) < 10  # short with short, long with long
    with pytest.raises(ftk.DataError, match="texts only"):
        reference.with_length_grouping(False)
    assert reference.length_grouping is None


def test_a_pass_only_created_advances_the_order_as_a_read_one_does():
    """A resumed run fast-forwards by creating iterators (engine._fast_forward): the grouped
    order must then continue as in the uninterrupted run. (Two chained reshuffling ops did not.)"""
    import numpy as np

    from finetunekit.data.text import length_grouped_batches

    lengths = np.random.default_rng(0).integers(1, 100, 40)

    def second_pass(read_first: bool) -> list[list[int]]:
        ds = length_grouped_batches(lengths, 4, seed=0)
        first = iter(ds)
        if read_first:
            list(first)
        del first
        return [b.numpy().tolist() for b in ds]

    fresh = [b.numpy().tolist() for b in length_grouped_batches(lengths, 4, seed=0)]
    assert second_pass(read_first=True) == second_pass(read_first=False) != fresh
