"""Gradient caching (``Embedding(chunk_size=...)``) against the whole batch: memory and time.

One pair-data recipe (an MLP encoder with wide activations, InfoNCE, plain
SGD, unshuffled) trained through ``FineTuner`` with ``chunk_size=None`` and
with each ``--chunks`` size, each in a FRESH subprocess (peak memory is per
process). Per setting it prints how far the process's peak resident memory
rises during training: Linux's ``VmHWM`` reset through
``/proc/self/clear_refs`` when ``fit`` begins (model and data built) and
read when it ends, minus the resident memory at the reset -- the memory of
a training step (activations, gradients, the allocator's slack) plus the
traced step functions, which are alike for every setting; the median
seconds per optimizer step after the first epoch (which traces); and the
final loss, which must equal the whole-batch run's (the same steps).

Usage:

    .venv/bin/python benchmarks/bench_gradient_cache.py              # the figures in docs
    .venv/bin/python benchmarks/bench_gradient_cache.py --quick      # a smoke run
    .venv/bin/python benchmarks/bench_gradient_cache.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any


def _status_mb(field: str) -> float:
    """``VmRSS`` (resident now) or ``VmHWM`` (peak resident) of this process, in MiB."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak() -> None:
    """Resets ``VmHWM`` to the current resident memory (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def run_one(
    chunk_size: int | None, pairs: int, batch: int, width: int, epochs: int
) -> dict[str, Any]:
    """Trains once in this process; returns memory, step time and losses."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import numpy as np

    import finetunekit as ftk

    rng = np.random.default_rng(0)
    centers = rng.normal(size=(pairs, 64))
    anchors = (centers + 0.5 * rng.normal(size=centers.shape)).astype("float32")
    positives = (centers + 0.5 * rng.normal(size=centers.shape)).astype("float32")
    keras.utils.set_random_seed(0)
    inputs = keras.Input((64,))
    h = keras.layers.Dense(width, name="up")(inputs)
    for i in range(4):  # wide, cheap layers: the activations dominate the memory
        h = keras.layers.LayerNormalization(name=f"norm{i}")(h)
        h = keras.layers.Activation("gelu", name=f"gelu{i}")(h)
    h = keras.layers.Dense(128, name="features")(h)
    encoder = keras.Model(inputs, keras.layers.Dense(3, name="old_head")(h))

    class StepTimes(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.times: list[float] = []
            self.epoch = 0

        def on_train_begin(self, logs: Any = None) -> None:
            _reset_peak()  # the model and data are built: from here on, training's memory
            self.rss = _status_mb("VmRSS")

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.epoch = epoch

        def on_train_end(self, logs: Any = None) -> None:
            self.peak = _status_mb("VmHWM")

        def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
            self.start = time.perf_counter()

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            if self.epoch > 0:  # the first epoch traces
                self.times.append(time.perf_counter() - self.start)

    timer = StepTimes()
    task = ftk.tasks.Embedding(chunk_size=chunk_size)
    tuner = (
        ftk.FineTuner()
        .with_data(ftk.DatasetAdapter.from_pairs(anchors, positives, task=task))
        .with_backbone(ftk.Backbone.from_model(encoder, feature_layer="features"))
        .with_head(ftk.HeadReplacer(hidden_units=(), dropout=0.0))
        .with_trainer(
            ftk.Trainer(
                "sgd",
                0.1,
                epochs=0,
                fine_tune_epochs=epochs,
                fine_tune_learning_rate=0.1,
                batch_size=batch,
                shuffle=False,
                seed=0,
                verbose=0,
                callbacks=[timer],
            )
        )
    )
    result = tuner.fit()
    return {
        "chunk_size": chunk_size,
        "peak_growth_mb": round(timer.peak - timer.rss, 1),
        "step_seconds": round(statistics.median(timer.times), 4),
        "loss": result.history["loss"],
    }


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=1024, help="pairs per batch")
    parser.add_argument("--width", type=int, default=4096, help="width of the wide layers")
    parser.add_argument("--chunks", type=int, nargs="+", default=[256, 64])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run)")
    parser.add_argument("--json", help="write the figures to this file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.pairs, args.batch, args.width, args.chunks, args.epochs = 64, 32, 64, [8], 2
    if args.child is not None:  # one setting, in this fresh process
        chunk = None if args.child == "none" else int(args.child)
        figures = run_one(chunk, args.pairs, args.batch, args.width, args.epochs)
        print("RESULT " + json.dumps(figures))
        return [figures]
    out = []
    for chunk in [None, *args.chunks]:
        command = [
            sys.executable,
            os.path.abspath(__file__),
            "--child",
            "none" if chunk is None else str(chunk),
            *("--pairs", str(args.pairs), "--batch", str(args.batch)),
            *("--width", str(args.width), "--epochs", str(args.epochs)),
        ]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
        figures = json.loads(line[len("RESULT ") :])
        out.append(figures)
        print(
            f"chunk_size={str(chunk):>5}: peak memory +{figures['peak_growth_mb']:7.1f} MiB, "
            f"{figures['step_seconds']:.3f} s/step, final loss {figures['loss'][-1]:.6f}",
            flush=True,
        )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(out, handle, indent=2)
    return out


if __name__ == "__main__":
    main()
