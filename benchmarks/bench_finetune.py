"""finetunekit against hand-written Keras (``keras_baseline.py``), side by side.

One command, both sides in one process, alternating, several repeats; prints
medians and ratios of four figures:

1. frozen phase: wall time of ``epochs`` (10) head-training epochs on a frozen
   backbone, with validation (finetunekit caches the frozen features);
2. full fine-tuning: steady-state training throughput with the backbone
   unfrozen (images/s, epochs after the first, which includes tracing);
3. memory: peak resident memory of a child process that streams the classic
   MNIST input side (60,000 28x28 grayscale uint8 images, synthesised) for one
   epoch through finetunekit's pipeline into a 224x224x3 backbone input
   (a tiny backbone, so the input side dominates), against the ~36 GB that
   resizing everything up front in float32 would take;
4. efficiency: achieved FLOP/s of finetunekit's full fine-tuning step (FLOPs
   counted by the TensorFlow profiler on the step's graph, forward and
   backward) as a fraction of the dense float32 matmul FLOP/s measured in the
   same run.

Usage:

    .venv/bin/python benchmarks/bench_finetune.py            # ~6 min on 2 idle CPU cores
    .venv/bin/python benchmarks/bench_finetune.py --quick    # ~2-3 min, smaller
    make benchmark

Same backbone (MobileNetV3Small, 96x96, ``weights=None`` so nothing is
downloaded), data (synthetic uint8 images), batch size, epochs, optimizer
(Adam 1e-3, then 1e-4) and seed on both sides.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
import keras_baseline  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import finetunekit as ftk  # noqa: E402

CONFIGS: dict[str, dict[str, Any]] = {
    "full": {
        "repeats": 3,
        "backbone": "mobilenet_v3_small",
        "size": 96,
        "classes": 10,
        "batch_size": 32,
        "frozen_train": 2560,
        "frozen_val": 640,
        "frozen_epochs": 10,
        "full_train": 640,
        "full_epochs": 3,
        "memory_images": 60_000,
    },
    "quick": {
        "repeats": 2,
        "backbone": "mobilenet_v3_small",
        "size": 96,
        "classes": 10,
        "batch_size": 32,
        "frozen_train": 256,
        "frozen_val": 64,
        "frozen_epochs": 10,
        "full_train": 128,
        "full_epochs": 3,
        "memory_images": 10_000,
    },
}
SEED = 0
MNIST_UPFRONT_BYTES = 60_000 * 224 * 224 * 3 * 4  # float32, resized up front: ~36 GB


def synthetic_images(n: int, size: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Learnable uint8 RGB images: noise plus a class-dependent colour shift.

    Example:
        >>> x, y = synthetic_images(8, 16, 2, seed=0)
        >>> x.shape, x.dtype.name, sorted(set(y.tolist()))
        ((8, 16, 16, 3), 'uint8', [0, 1])
    """
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    rng.shuffle(y)
    x = rng.integers(0, 160, (n, size, size, 3), dtype=np.uint8)
    shift = (y * (90 // max(1, classes - 1))).astype(np.uint8)
    x[np.arange(n), :, :, y % 3] += shift[:, None, None]
    return x, y


class EpochTimer(keras.callbacks.Callback):
    """Records the wall seconds of every epoch.

    Example:
        >>> EpochTimer().seconds
        []
    """

    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []
        self._start = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.seconds.append(time.perf_counter() - self._start)


def finetunekit_run(
    cfg: dict[str, Any],
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray | None,
    y_val: np.ndarray | None,
    *,
    epochs: int,
    fine_tune_epochs: int,
    callbacks: list[keras.callbacks.Callback] | None = None,
) -> Any:
    """The same job written with finetunekit; returns the ``FineTuneResult``."""
    train = ftk.DatasetAdapter.from_arrays(x_train, y_train)
    val = ftk.DatasetAdapter.from_arrays(x_val, y_val) if x_val is not None else None
    size = cfg["size"]
    return (
        ftk.FineTuner()
        .with_data(train, validation=val)
        .with_backbone(ftk.Backbone(cfg["backbone"], weights=None, input_shape=(size, size, 3)))
        .with_head(ftk.HeadReplacer(dropout=0.2))
        .with_trainer(
            ftk.Trainer(
                "adam",
                1e-3,
                epochs,
                cfg["batch_size"],
                fine_tune_epochs=fine_tune_epochs,
                seed=SEED,
                verbose=0,
                callbacks=callbacks,
            )
        )
        .fit()
    )


def _alternating(repeats: int) -> list[tuple[str, str]]:
    return [
        ("keras", "finetunekit") if r % 2 == 0 else ("finetunekit", "keras") for r in range(repeats)
    ]


def bench_frozen(cfg: dict[str, Any], log: Any) -> dict[str, Any]:
    """Figure 1: wall time of the frozen phase (``frozen_epochs`` epochs, with validation).

    Both sides are timed from the built model to the trained one: compile and
    ``fit`` for Keras; for finetunekit everything ``fit()`` does after building
    (datasets, computing the cached features, training the head).
    """
    n, m = cfg["frozen_train"], cfg["frozen_val"]
    x, y = synthetic_images(n + m, cfg["size"], cfg["classes"], SEED)
    times: dict[str, list[float]] = {"keras": [], "finetunekit": []}
    cache_info: dict[str, Any] = {}
    for order in _alternating(cfg["repeats"]):
        for side in order:
            keras.backend.clear_session()
            if side == "keras":
                out = keras_baseline.run(
                    x[:n],
                    y[:n],
                    x[n:],
                    y[n:],
                    backbone=cfg["backbone"],
                    epochs=cfg["frozen_epochs"],
                    batch_size=cfg["batch_size"],
                    seed=SEED,
                )
                seconds = out["timings"]["phase1"]
            else:
                result = finetunekit_run(
                    cfg, x[:n], y[:n], x[n:], y[n:], epochs=cfg["frozen_epochs"], fine_tune_epochs=0
                )
                seconds = result.timings["total"] - result.timings["build"]  # all but building
                cache_info = result.info.get("feature_cache", {})
            times[side].append(seconds)
            log(f"  frozen phase  {side:<11} {seconds:7.1f} s")
    k, f = statistics.median(times["keras"]), statistics.median(times["finetunekit"])
    return {
        "keras_s": k,
        "finetunekit_s": f,
        "speedup": k / f,
        "paired_speedups": [a / b for a, b in zip(times["keras"], times["finetunekit"])],
        "runs": times,
        "feature_cache": cache_info,
    }


def bench_full(cfg: dict[str, Any], log: Any) -> dict[str, Any]:
    """Figure 2: steady-state throughput with the backbone unfrozen (no validation)."""
    n = cfg["full_train"]
    x, y = synthetic_images(n, cfg["size"], cfg["classes"], SEED + 1)
    rates: dict[str, list[float]] = {"keras": [], "finetunekit": []}
    model = None
    for order in _alternating(cfg["repeats"]):
        for side in order:
            keras.backend.clear_session()
            timer = EpochTimer()
            if side == "keras":
                keras_baseline.run(
                    x,
                    y,
                    backbone=cfg["backbone"],
                    epochs=0,
                    fine_tune_epochs=cfg["full_epochs"],
                    batch_size=cfg["batch_size"],
                    seed=SEED,
                    callbacks=[timer],
                )
            else:
                result = finetunekit_run(
                    cfg,
                    x,
                    y,
                    None,
                    None,
                    epochs=0,
                    fine_tune_epochs=cfg["full_epochs"],
                    callbacks=[timer],
                )
                model = result.model
            steady = timer.seconds[1:] or timer.seconds  # the first epoch traces the step
            rate = n / statistics.median(steady)
            rates[side].append(rate)
            log(
                f"  full fine-tune {side:<11} {rate:7.1f} images/s (epochs: "
                + ", ".join(f"{s:.1f}" for s in timer.seconds)
                + " s)"
            )
    k, f = statistics.median(rates["keras"]), statistics.median(rates["finetunekit"])
    return {
        "keras_ips": k,
        "finetunekit_ips": f,
        "ratio": f / k,
        "paired_ratios": [b / a for a, b in zip(rates["keras"], rates["finetunekit"])],
        "runs": rates,
        "model": model,
    }


def step_flops_per_example(model: keras.Model, batch_size: int, classes: int) -> float:
    """FLOPs of one training step (forward + backward) per example, from the TF profiler.

    The graph is that of the loss and its gradient with respect to the
    model's trainable weights (the phase-2 state: backbone unfrozen,
    BatchNorm frozen); the optimizer update is not counted.
    """
    from tensorflow.python.profiler import model_analyzer, option_builder

    loss_fn = keras.losses.CategoricalCrossentropy()

    @tf.function
    def step(x: tf.Tensor, y: tf.Tensor) -> list[tf.Tensor]:
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        return tape.gradient(loss, model.trainable_variables)

    shape = (batch_size, *model.inputs[0].shape[1:])
    graph = step.get_concrete_function(
        tf.TensorSpec(shape, model.inputs[0].dtype), tf.TensorSpec((batch_size, classes))
    ).graph
    options = (
        option_builder.ProfileOptionBuilder(option_builder.ProfileOptionBuilder.float_operation())
        .with_empty_output()
        .build()
    )
    return model_analyzer.profile(graph, options=options).total_float_ops / batch_size


def matmul_flops_per_second(n: int = 2048, repeats: int = 5, inner: int = 8) -> float:
    """Median dense float32 matmul FLOP/s (``n x n`` times ``n x n``) on this machine."""
    a = tf.random.normal((n, n))
    b = tf.random.normal((n, n))

    @tf.function
    def chain(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
        c = a
        for _ in range(inner):
            c = tf.matmul(c, b) * 1e-3
        return c

    chain(a, b).numpy()  # trace and warm up
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        chain(a, b).numpy()
        rates.append(2.0 * n**3 * inner / (time.perf_counter() - start))
    return statistics.median(rates)


def memory_child(n: int) -> dict[str, Any]:
    """Streams ``n`` MNIST-sized images through finetunekit's pipeline for one epoch.

    Runs in its own process (``--memory-child``) so ``ru_maxrss`` is its own peak.
    """
    rng = np.random.default_rng(SEED)
    x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)  # MNIST's shape and dtype
    y = rng.integers(0, 10, n)
    tiny = keras.Sequential(
        [
            keras.Input((224, 224, 3)),
            keras.layers.AveragePooling2D(8),
            keras.layers.Conv2D(8, 3, strides=2, activation="relu"),
        ],
        name="tiny_224",
    )
    before = _rss_bytes()
    start = time.perf_counter()
    result = (
        ftk.FineTuner()
        .with_data(ftk.DatasetAdapter.from_arrays(x, y))
        .with_backbone(ftk.Backbone.from_model(tiny, input_range="0-255"))
        .with_head(10)
        .with_trainer(ftk.Trainer(epochs=1, batch_size=64, verbose=0, seed=SEED))
        .fit()
    )
    seconds = time.perf_counter() - start
    return {
        "images": n,
        "input_size": result.info.get("input_size"),
        "seconds": seconds,
        "rss_before_gb": before / 1e9,
        "peak_rss_gb": _peak_rss_bytes() / 1e9,
        "upfront_gb": n * 224 * 224 * 3 * 4 / 1e9,
    }


def _status_bytes(field: str) -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _rss_bytes() -> int:
    """Current resident memory of this process."""
    return _status_bytes("VmRSS") or 0


def _peak_rss_bytes() -> int:
    """Peak resident memory of this process since it started (exec).

    Linux's ``VmHWM``; ``getrusage().ru_maxrss`` is the fallback, but on Linux
    it carries the parent's peak over ``fork`` + ``exec``, so a child started
    from a big benchmark process would report its parent's memory.
    """
    hwm = _status_bytes("VmHWM")
    if hwm is not None:
        return hwm
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def bench_memory(cfg: dict[str, Any], log: Any) -> dict[str, Any]:
    """Figure 3: runs :func:`memory_child` in a fresh process; returns its report."""
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--memory-child", str(cfg["memory_images"])],
        check=True,
        capture_output=True,
        text=True,
    )
    report = json.loads(out.stdout.strip().splitlines()[-1])
    log(f"  memory child: {report}")
    return report


def _ratios(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Runs the benchmark and prints the four figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller data, fewer repeats")
    parser.add_argument("--repeats", type=int, default=None, help="override the repeats")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    parser.add_argument("--memory-child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child is not None:
        print(json.dumps(memory_child(args.memory_child)))
        return {}
    cfg = dict(CONFIGS["quick" if args.quick else "full"])
    if args.repeats:
        cfg["repeats"] = args.repeats

    def log(line: str) -> None:
        print(line, flush=True)

    started = time.perf_counter()
    log(
        f"finetunekit {ftk.__version__} vs hand-written Keras {keras.__version__} "
        f"(TensorFlow {tf.__version__}); {os.cpu_count()} CPUs; "
        f"GPUs: {len(tf.config.list_physical_devices('GPU'))}; config: {cfg}"
    )
    log("frozen phase")
    frozen = bench_frozen(cfg, log)
    log("full fine-tuning")
    full = bench_full(cfg, log)
    log("efficiency")
    flops = step_flops_per_example(full.pop("model"), cfg["batch_size"], cfg["classes"])
    matmul = matmul_flops_per_second()
    achieved = flops * full["finetunekit_ips"]
    log("memory")
    memory = bench_memory(cfg, log)
    figures: dict[str, Any] = {
        "config": cfg,
        "frozen": frozen,
        "full": full,
        "memory": memory,
        "efficiency": {
            "step_mflop_per_example": flops / 1e6,
            "achieved_gflops": achieved / 1e9,
            "matmul_gflops": matmul / 1e9,
            "fraction": achieved / matmul,
        },
        "seconds": time.perf_counter() - started,
    }
    e = figures["efficiency"]
    log("")
    log(
        f"RESULTS (medians of {cfg['repeats']} alternating repeats; {cfg['backbone']} "
        f"{cfg['size']}x{cfg['size']}, batch {cfg['batch_size']})"
    )
    log(
        f"1. frozen phase, {cfg['frozen_epochs']} epochs ({cfg['frozen_train']} train + "
        f"{cfg['frozen_val']} val): keras {frozen['keras_s']:.1f} s, finetunekit "
        f"{frozen['finetunekit_s']:.1f} s -> {frozen['speedup']:.1f}x faster (goal >= 6x; "
        f"per repeat {_ratios(frozen['paired_speedups'])}); cache {frozen['feature_cache']}"
    )
    log(
        f"2. full fine-tuning throughput: keras {full['keras_ips']:.1f} images/s, finetunekit "
        f"{full['finetunekit_ips']:.1f} images/s -> ratio {full['ratio']:.2f} (goal >= 1.0; "
        f"per repeat {_ratios(full['paired_ratios'])})"
    )
    log(
        f"3. memory: {memory['images']} 28x28 uint8 images -> {memory['input_size']} for one "
        f"epoch in {memory['seconds']:.0f} s: peak RSS {memory['peak_rss_gb']:.2f} GB "
        f"(before streaming {memory['rss_before_gb']:.2f} GB; goal < 2 GB) vs "
        f"{MNIST_UPFRONT_BYTES / 1e9:.1f} GB to resize 60,000 images up front"
    )
    log(
        f"4. efficiency: {e['step_mflop_per_example']:.1f} MFLOP per example per step x "
        f"{full['finetunekit_ips']:.1f} images/s = {e['achieved_gflops']:.2f} GFLOP/s of "
        f"{e['matmul_gflops']:.1f} GFLOP/s dense matmul -> {100 * e['fraction']:.1f}%"
    )
    log(f"total {figures['seconds']:.0f} s")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(figures, fh, indent=2, default=str)
    return figures


if __name__ == "__main__":
    main()
