"""float32 against mixed bfloat16 on this machine, side by side (issue 18's measurements).

Prints the CPU's bfloat16-related flags, the FLOP/s of a square matmul in
float32 and in bfloat16, and for each model the seconds of one training
epoch (plain Keras ``fit``, the model built from random weights, a softmax
``Dense`` head kept in float32) under the ``"float32"`` and
``"mixed_bfloat16"`` policies, alternating, with the median and the ratio.
ResNet50 runs twice: with BatchNorm training (as a script that unfreezes
everything) and with BatchNorm frozen (``trainable=False``, inference mode,
as finetunekit's phase 2 runs it; oneDNN then folds the normalisation into
the convolutions)::

    .venv/bin/python benchmarks/bench_precision.py            # MobileNetV3Small and ResNet50, 96x96
    .venv/bin/python benchmarks/bench_precision.py --quick    # a small matmul and a tiny CNN

What ``Trainer(precision="auto")`` should decide depends on these ratios, not
on the flags alone: on a CPU with ``avx512_bf16`` but no AMX the matmul is
faster in bfloat16 while whole training steps are not (docs/performance.md).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

POLICIES = ("float32", "mixed_bfloat16")


def cpu_flags() -> list[str]:
    """The CPU flags that matter for bfloat16 (``amx_*``, ``avx512_bf16``), from /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo") as handle:
            words = set(handle.read().split())
    except OSError:
        return []
    return sorted(w for w in words if w.startswith("amx") or w == "avx512_bf16")


def matmul_gflops(n: int, dtype: str, repeats: int = 5) -> float:
    """Median GFLOP/s of an ``n x n`` matmul in ``dtype`` (the result summed in float32)."""
    a = tf.cast(tf.random.normal((n, n), seed=1), dtype)
    b = tf.cast(tf.random.normal((n, n), seed=2), dtype)
    step = tf.function(lambda a, b: tf.reduce_sum(tf.cast(tf.matmul(a, b), "float32")))
    step(a, b).numpy()  # trace
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        step(a, b).numpy()
        seconds.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(seconds) / 1e9


FROZEN_BN = " (BatchNorm frozen)"


def _model(name: str, size: int, policy: str) -> keras.Model:
    freeze_bn = name.endswith(FROZEN_BN)
    name = name.removesuffix(FROZEN_BN)
    keras.mixed_precision.set_global_policy(policy)
    try:
        if name == "tiny_cnn":
            from keras_baseline import tiny_cnn

            base = tiny_cnn(input_shape=(size, size, 3))
            features = keras.layers.GlobalAveragePooling2D()(base.output)
            inputs = base.input
        else:
            base = getattr(keras.applications, name)(
                include_top=False, weights=None, input_shape=(size, size, 3), pooling="avg"
            )
            inputs, features = base.input, base.output
        if freeze_bn:
            for layer in base.layers:
                if isinstance(layer, keras.layers.BatchNormalization):
                    layer.trainable = False
        outputs = keras.layers.Dense(10, activation="softmax", dtype="float32")(features)
        model = keras.Model(inputs, outputs)
        model.compile("adam", "sparse_categorical_crossentropy", jit_compile=False)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    return model


def epoch_seconds(name: str, size: int, images: int, repeats: int) -> dict[str, Any]:
    """Seconds of one epoch per policy (alternating, after a tracing epoch), medians and ratio."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(images, size, size, 3)).astype("float32")
    y = np.arange(images) % 10
    models = {}
    for policy in POLICIES:
        models[policy] = _model(name, size, policy)
        models[policy].fit(x[:64], y[:64], batch_size=32, epochs=1, verbose=0)  # traces
    runs: dict[str, list[float]] = {policy: [] for policy in POLICIES}
    for _ in range(repeats):
        for policy, model in models.items():
            start = time.perf_counter()
            model.fit(x, y, batch_size=32, epochs=1, verbose=0)
            runs[policy].append(time.perf_counter() - start)
    medians = {policy: statistics.median(values) for policy, values in runs.items()}
    return {
        "model": name,
        "runs": runs,
        "median": medians,
        "bf16_speedup": medians["float32"] / medians["mixed_bfloat16"],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Runs the measurements; prints and returns them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small matmul, tiny CNN, 1 repeat")
    args = parser.parse_args(argv)
    n, models, size, images, repeats = (
        (256, ["tiny_cnn"], 32, 64, 1)
        if args.quick
        else (2048, ["MobileNetV3Small", "ResNet50", "ResNet50" + FROZEN_BN], 96, 256, 3)
    )
    flags = cpu_flags()
    print(f"CPU flags: {', '.join(flags) or 'no amx / avx512_bf16'}", flush=True)
    gflops = {dtype: matmul_gflops(n, dtype) for dtype in ("float32", "bfloat16")}
    print(
        f"matmul {n}x{n}: float32 {gflops['float32']:.0f} GFLOP/s, bfloat16 "
        f"{gflops['bfloat16']:.0f} GFLOP/s ({gflops['bfloat16'] / gflops['float32']:.2f}x)",
        flush=True,
    )
    rows = []
    for name in models:
        row = epoch_seconds(name, size, images, repeats)
        rows.append(row)
        print(
            f"{name} {size}x{size}, {images} images: float32 {row['median']['float32']:.2f} s, "
            f"mixed_bfloat16 {row['median']['mixed_bfloat16']:.2f} s per epoch "
            f"-> bfloat16 {row['bf16_speedup']:.2f}x",
            flush=True,
        )
    return {"cpu_flags": flags, "matmul_gflops": gflops, "models": rows}


if __name__ == "__main__":
    main()
