"""What one head step costs: Keras' ``fit`` against leaner compiled loops on cached features.

Issue 18 asks the cached frozen phase for 8x against recomputing the backbone
at 1,024 images. After the feature pass, what is left is training the head
(Dropout + Dense) on the cached features; this script asks whether Keras'
``fit`` machinery or TensorFlow's per-step cost is what that takes. Each mode
trains the same head on the same random features (10 epochs of 256 batches
of 32 by default, Adam) in a **fresh process** (tracing included, as in a
real fit), the modes in rotating order, and prints the median seconds::

    .venv/bin/python benchmarks/bench_head_steps.py            # 3 repeats, 2,560 steps
    .venv/bin/python benchmarks/bench_head_steps.py --quick    # smoke run (the tests run it)

Modes:

* ``fit``: ``model.fit`` with ``steps_per_execution`` the largest divisor of
  the epoch's steps up to 64 (what finetunekit's cached phase runs).
* ``train_step``: Keras' own ``model.train_step`` (loss, metrics, optimizer)
  in one ``tf.function`` per epoch, no ``fit``.
* ``bare``: a ``GradientTape`` and ``optimizer.apply`` per batch in one
  ``tf.function`` per epoch: no metrics, nothing of Keras' loop.
* ``bare_xla``: ``bare`` with the step compiled by XLA.
* ``fit_head``: finetunekit's head loop (``finetunekit.training.fit_loop.fit_head``,
  what the cached phase runs now): Keras' ``train_step`` and ``test_step``, an
  epoch per ``tf.function`` call, the callback protocol of ``fit``.

``--validation N`` adds N validation examples, evaluated after every epoch
(``fit``'s ``validation_data``; ``test_step`` or a bare forward pass in the
other modes), as the cached phase does; ``--examples 1024 --validation 256``
is the issue's 1,024-image case, where fixed costs dominate::

    .venv/bin/python benchmarks/bench_head_steps.py --examples 1024 --validation 256 --repeats 5
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

MODES = ("fit", "fit_head", "train_step", "bare", "bare_xla")


def child(
    mode: str, examples: int, epochs: int, features: int, validation: int = 0
) -> dict[str, Any]:
    """Trains the head once in ``mode``; returns its seconds and optimizer steps."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = rng.normal(size=(examples + validation, features)).astype("float32")
    y = rng.integers(0, 10, examples + validation)
    x, y, x_val, y_val = x[:examples], y[:examples], x[examples:], y[examples:]
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((features,)),
            keras.layers.Dropout(0.2),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    val = tf.data.Dataset.from_tensor_slices((x_val, y_val)).batch(32) if validation else None
    steps = int(ds.cardinality())
    # as finetunekit's cached phase: the largest divisor of the epoch's steps up to 64
    # (a call runs its steps whole, so a non-divisor would run past the epoch's end)
    per_call = max(d for d in range(1, min(64, steps) + 1) if steps % d == 0)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        steps_per_execution=per_call,
    )
    loss_fn = keras.losses.SparseCategoricalCrossentropy()
    opt = model.optimizer

    def step(xb: tf.Tensor, yb: tf.Tensor) -> None:
        with tf.GradientTape() as tape:
            loss = loss_fn(yb, model(xb, training=True))
        opt.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)

    start = time.perf_counter()
    if mode == "fit":
        model.fit(ds.repeat(), steps_per_epoch=steps, epochs=epochs, validation_data=val, verbose=0)
    elif mode == "fit_head":
        from finetunekit.training import fit_loop

        fit_loop.fit_head(model, ds.repeat(), steps, validation=val, epochs=epochs, verbose=0)
    else:
        opt.build(model.trainable_variables)
        inner: Any = {
            "train_step": lambda xb, yb: model.train_step((xb, yb)),
            "bare": step,
            "bare_xla": tf.function(step, jit_compile=True),
        }[mode]
        check: Any = {
            "train_step": lambda xb, yb: model.test_step((xb, yb)),
            "bare": lambda xb, yb: loss_fn(yb, model(xb, training=False)),
            "bare_xla": lambda xb, yb: loss_fn(yb, model(xb, training=False)),
        }[mode]

        @tf.function
        def epoch(data: tf.data.Dataset) -> None:
            for xb, yb in data:
                inner(xb, yb)

        @tf.function
        def evaluate(data: tf.data.Dataset) -> None:
            for xb, yb in data:
                check(xb, yb)

        for _ in range(epochs):
            model.reset_metrics()
            epoch(ds)
            if val is not None:
                model.reset_metrics()
                evaluate(val)
    seconds = time.perf_counter() - start
    return {"mode": mode, "seconds": seconds, "steps": int(opt.iterations.numpy())}


def run_child(
    mode: str, examples: int, epochs: int, features: int, validation: int = 0
) -> dict[str, Any]:
    """:func:`child` in a fresh Python process (its own tracing and memory)."""
    args = [sys.executable, os.path.abspath(__file__), "--child", mode]
    args += ["--examples", str(examples), "--epochs", str(epochs), "--features", str(features)]
    args += ["--validation", str(validation)]
    out = subprocess.run(args, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{mode} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Runs every mode ``--repeats`` times in rotating order; prints and returns the medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 256 examples, 2 epochs")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--examples", type=int, default=8192)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--features", type=int, default=576, help="MobileNetV3Small's 576")
    parser.add_argument("--validation", type=int, default=0, help="validation examples")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(
            json.dumps(
                child(args.child, args.examples, args.epochs, args.features, args.validation)
            )
        )
        return {}
    if args.quick:
        args.examples, args.epochs, args.repeats = 256, 2, 1
    modes = args.modes.split(",")
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
    for r in range(args.repeats):
        for mode in modes[r % len(modes) :] + modes[: r % len(modes)]:
            out = run_child(mode, args.examples, args.epochs, args.features, args.validation)
            runs[mode].append(out)
            print(f"repeat {r + 1} {mode:<10} {out['seconds']:6.2f} s  {out['steps']} steps")
    steps = -(-args.examples // 32) * args.epochs
    medians = {mode: statistics.median(o["seconds"] for o in runs[mode]) for mode in modes}
    print(
        f"\n{steps} head steps (batch 32, {args.features} features, {args.validation} "
        f"validation examples), medians of {args.repeats}:"
    )
    print("| mode | seconds | ms per step | vs fit |")
    print("|---|---|---|---|")
    for mode in modes:
        ratio = medians["fit"] / medians[mode] if "fit" in medians else float("nan")
        print(
            f"| {mode} | {medians[mode]:.2f} | {1000 * medians[mode] / steps:.2f} | {ratio:.2f}x |"
        )
    return {"steps": steps, "medians": medians, "runs": runs}


if __name__ == "__main__":
    main()
