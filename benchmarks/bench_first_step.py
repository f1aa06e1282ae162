"""The first step of Keras' ``fit``: traced twice as Keras leaves it, once when built first.

Keras 3 ``fit`` on a model made outside a distribution strategy creates the
optimizer and metric variables during the first trace of its training step,
and TensorFlow then traces the step again. finetunekit builds them before
every ``fit`` it calls (``finetunekit.training.fit_loop.build_before_fit``).
This script times plain Keras either way on the same model and data, each
run in a **fresh process** (nothing traced before), the two modes
alternating, and prints the median seconds to the end of the first step,
the number of traces and the ratio::

    .venv/bin/python benchmarks/bench_first_step.py                        # MobileNetV3Small
    .venv/bin/python benchmarks/bench_first_step.py --backbone resnet50
    .venv/bin/python benchmarks/bench_first_step.py --quick               # smoke run (tests)

Modes: ``fit`` (Keras as it is) and ``built`` (``build_before_fit`` first;
its own seconds are counted). The model is the backbone (``weights=None``,
96x96) with a ``Dense`` head, Adam, accuracy, 64 random images, batch 16,
one epoch. ``--quick`` runs a tiny CNN at 32x32 in this process.
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

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from keras_baseline import BASES  # noqa: E402

MODES = ("fit", "built")


def run_once(mode: str, backbone: str, size: int) -> dict[str, Any]:
    """One run in this process: ``{"traces", "first_step", "fit"}`` (seconds)."""
    import keras
    import numpy as np
    import tensorflow as tf

    from finetunekit.training import fit_loop

    traces: list[int] = []

    class Counting(keras.Model):
        def train_step(self, data: Any) -> Any:
            traces.append(1)  # runs once per trace
            return super().train_step(data)

    keras.utils.set_random_seed(0)
    base = BASES[backbone](input_shape=(size, size, 3), include_top=False, weights=None)
    features = keras.layers.GlobalAveragePooling2D()
    inputs = keras.Input((size, size, 3))
    outputs = keras.layers.Dense(2, activation="softmax")(features(base(inputs)))
    model = Counting(inputs, outputs)
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (64, size, size, 3)).astype("float32")
    data = tf.data.Dataset.from_tensor_slices((x, np.arange(64) % 2)).batch(16)

    class FirstStep(keras.callbacks.Callback):
        end = 0.0

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            if batch == 0:
                self.end = time.perf_counter()

    timer = FirstStep()
    start = time.perf_counter()
    if mode == "built" and not fit_loop.build_before_fit(model, data):
        raise RuntimeError("build_before_fit did not build the model")
    model.fit(data, epochs=1, verbose=0, callbacks=[timer])
    return {
        "traces": len(traces),
        "first_step": timer.end - start,
        "fit": time.perf_counter() - start,
    }


def run_child(mode: str, backbone: str, size: int) -> dict[str, Any]:
    """``run_once`` in a fresh Python process."""
    proc = subprocess.run(
        [sys.executable, __file__, "--child", mode, "--backbone", backbone, "--size", str(size)],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"child {mode} failed:\n{proc.stderr[-3000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="mobilenet_v3_small", choices=sorted(BASES))
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="tiny CNN, in this process")
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(run_once(args.child, args.backbone, args.size)))
        return {}
    if args.quick:
        args.backbone, args.size, args.repeats = "tiny_cnn", 32, 1
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    for repeat in range(args.repeats):
        order = MODES if repeat % 2 == 0 else MODES[::-1]
        for mode in order:
            if args.quick:
                import keras

                keras.backend.clear_session()
                run = run_once(mode, args.backbone, args.size)
            else:
                run = run_child(mode, args.backbone, args.size)
            runs[mode].append(run)
            print(f"  {mode:<6} traces {run['traces']}  first step {run['first_step']:.2f} s")
    medians = {mode: statistics.median(r["first_step"] for r in rs) for mode, rs in runs.items()}
    traces = {mode: sorted({r["traces"] for r in rs}) for mode, rs in runs.items()}
    ratio = medians["fit"] / medians["built"]
    print(f"\n{args.backbone} at {args.size}x{args.size}, medians of {args.repeats}:\n")
    print("| mode | traces | seconds to the end of the first step |")
    print("| --- | --- | --- |")
    for mode in MODES:
        seconds = ", ".join(f"{r['first_step']:.2f}" for r in runs[mode])
        print(f"| {mode} | {traces[mode]} | {medians[mode]:.2f} ({seconds}) |")
    print(f"\nfit / built: {ratio:.2f}x")
    return {"runs": runs, "medians": medians, "traces": traces, "ratio": ratio}


if __name__ == "__main__":
    main()
