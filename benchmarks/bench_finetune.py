"""finetunekit against hand-written Keras (``keras_baseline.py``), side by side.

One command, all sides in one process, in rotating order, several repeats;
prints the medians, their ratios and the ratio of every repeat, for:

1. frozen phase: wall time of ``frozen_epochs`` (10) head-training epochs on a
   frozen backbone, with validation. finetunekit caches the frozen features.
   It is compared with two hand-written Keras scripts:

   a. the guide's fine-tuning recipe, which runs the frozen backbone again
      in every epoch (``keras_baseline.run``);
   b. the guide's feature extraction, the fair anchor: ``predict`` the
      backbone once, then ``fit`` the head on the stored features
      (``keras_baseline.run_feature_extraction``), timed from ``predict`` on.

2. full fine-tuning: steady-state training throughput with the backbone
   unfrozen (images/s, epochs after the first, which includes tracing),
   against the guide's recipe twice:

   a. with the same trainable weights as finetunekit (BatchNorm's gamma and
      beta frozen on both sides): the like-for-like ratio;
   b. as the guide writes it (``base_model.trainable = True`` also trains
      BatchNorm's gamma and beta), against finetunekit's default
      (``train_bn=False``): defaults against defaults.

   Every side's trainable parameter count is printed, so a reader sees what
   each one trained.
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

    .venv/bin/python benchmarks/bench_finetune.py            # 37 min on 2 busy CPU cores
    .venv/bin/python benchmarks/bench_finetune.py --json figures.json
    .venv/bin/python benchmarks/bench_finetune.py --quick    # smoke run, tiny backbone
    .venv/bin/python benchmarks/bench_finetune.py --curve    # figure 1 at 256..8,192 images
    .venv/bin/python benchmarks/bench_finetune.py --curve --sizes 256,1024 --repeats 3
    .venv/bin/python benchmarks/bench_finetune.py --full --backbone resnet50 --full-train 256
    make benchmark

``--full`` runs figure 2 alone; ``--backbone`` swaps the backbone of every
figure (``resnet50``: the conv net where bfloat16 can pay, issue 18), and
``--full-train`` / ``--full-epochs`` size figure 2. The table then also says
which precision finetunekit's ``precision="auto"`` chose for phase 2.

Same backbone (MobileNetV3Small, 96x96, ``weights=None`` so nothing is
downloaded), data (synthetic uint8 images), batch size, epochs, optimizer
(Adam 1e-3, then 1e-4), head (average pooling, dropout 0.2, ``Dense``) and
seed on every side. ``--quick`` swaps in a tiny 3-block CNN
(``keras_baseline.tiny_cnn``) at 32x32 and small data so every code path runs
quickly (the test suite runs it: 60 s on 2 cores shared with other work, load
average 3; about half of it is the memory figure's child process, which
imports TensorFlow afresh); its ratios mean nothing.
The last thing printed is a Markdown table of the figures for
``docs/performance.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
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
        "learning_rate": 1e-3,
        "frozen_train": 2560,
        "frozen_val": 640,
        "frozen_epochs": 10,
        "full_train": 640,
        "full_epochs": 3,
        "memory_images": 60_000,
        "matmul_n": 2048,
        "curve_sizes": [256, 512, 1024, 2048, 4096, 8192],
    },
    "quick": {  # a smoke run: every code path, tiny backbone, ratios meaningless
        "repeats": 1,
        "backbone": "tiny_cnn",
        "size": 32,
        "classes": 4,
        "batch_size": 32,
        "learning_rate": 3e-2,  # the tiny head learns the toy data in 10 short epochs
        "frozen_train": 256,
        "frozen_val": 128,
        "frozen_epochs": 10,
        "full_train": 128,
        "full_epochs": 2,
        "memory_images": 256,
        "matmul_n": 512,
        "curve_sizes": [64, 128],
    },
}
SEED = 0
MNIST_UPFRONT_BYTES = 60_000 * 224 * 224 * 3 * 4  # float32, resized up front: ~36 GB

# The sides of each figure: the key in the figures, and how the table names it.
FROZEN_SIDES = {
    "keras_recompute": "Keras, backbone recomputed every epoch (guide's fine-tuning recipe)",
    "keras_features": "Keras, features by hand (guide's feature extraction: predict once)",
    "finetunekit": "finetunekit (cached features)",
}
FULL_SIDES = {
    "keras_same": "Keras, same trainable weights (BatchNorm gamma/beta frozen)",
    "keras_default": "Keras as the guide writes it (trains BatchNorm gamma/beta)",
    "finetunekit": "finetunekit default (train_bn=False)",
}


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


def make_backbone(cfg: dict[str, Any]) -> ftk.Backbone:
    """finetunekit's backbone for ``cfg``: the same constructor as the baseline's."""
    size = cfg["size"]
    if cfg["backbone"] == "tiny_cnn":
        keras.utils.set_random_seed(SEED)
        model = keras_baseline.tiny_cnn(input_shape=(size, size, 3))
        return ftk.Backbone.from_model(model)  # takes 0-255 itself, like MobileNetV3
    return ftk.Backbone(cfg["backbone"], weights=None, input_shape=(size, size, 3))


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
    return (
        ftk.FineTuner()
        .with_data(train, validation=val)
        .with_backbone(make_backbone(cfg))
        .with_head(ftk.HeadReplacer(dropout=0.2))
        .with_trainer(
            ftk.Trainer(
                "adam",
                cfg["learning_rate"],
                epochs,
                cfg["batch_size"],
                fine_tune_epochs=fine_tune_epochs,
                fine_tune_learning_rate=cfg["learning_rate"] / 10,  # as keras_baseline
                seed=SEED,
                verbose=0,
                callbacks=callbacks,
            )
        )
        .fit()
    )


def rotations(sides: list[str], repeats: int) -> list[list[str]]:
    """The order of the sides in each repeat: rotated by one every repeat.

    Example:
        >>> rotations(["a", "b", "c"], 4)
        [['a', 'b', 'c'], ['b', 'c', 'a'], ['c', 'a', 'b'], ['a', 'b', 'c']]
    """
    return [sides[r % len(sides) :] + sides[: r % len(sides)] for r in range(repeats)]


def _medians(runs: dict[str, list[float]]) -> dict[str, float]:
    return {side: statistics.median(values) for side, values in runs.items()}


def medians_and_ratios(
    runs: dict[str, list[float]], ratios: dict[str, tuple[str, str]]
) -> dict[str, Any]:
    """Medians of every side's runs, and each ratio ``name: (numerator, denominator)``.

    A figure's ratio is the ratio of the two medians; ``paired`` holds the
    ratio within each repeat, to show the spread.

    Example:
        >>> out = medians_and_ratios({"a": [4.0, 9.0, 6.0], "b": [2.0, 1.0, 3.0]},
        ...                          {"a_over_b": ("a", "b")})
        >>> out["medians"], out["a_over_b"], out["paired"]["a_over_b"]
        ({'a': 6.0, 'b': 2.0}, 3.0, [2.0, 9.0, 2.0])
    """
    medians = _medians(runs)
    out: dict[str, Any] = {"medians": medians, "paired": {}}
    for name, (top, bottom) in ratios.items():
        out[name] = medians[top] / medians[bottom]
        out["paired"][name] = [a / b for a, b in zip(runs[top], runs[bottom])]
    return out


def bench_frozen(cfg: dict[str, Any], log: Callable[[str], None]) -> dict[str, Any]:
    """Figure 1: wall time of the frozen phase (``frozen_epochs`` epochs, with validation).

    Every side is timed from the built model to the trained one: compile and
    ``fit`` for the guide's recipe; both ``predict`` calls, compile and ``fit``
    for feature extraction; for finetunekit everything ``fit()`` does after
    building (datasets, computing the cached features, training the head).
    Accuracy is the last epoch's validation accuracy.
    """
    n, m = cfg["frozen_train"], cfg["frozen_val"]
    x, y = synthetic_images(n + m, cfg["size"], cfg["classes"], SEED)
    common = {
        "epochs": cfg["frozen_epochs"],
        "batch_size": cfg["batch_size"],
        "learning_rate": cfg["learning_rate"],
        "seed": SEED,
    }
    times: dict[str, list[float]] = {side: [] for side in FROZEN_SIDES}
    accuracy: dict[str, list[float]] = {side: [] for side in FROZEN_SIDES}
    trainable: dict[str, int] = {}
    cache_info: dict[str, Any] = {}
    for order in rotations(list(FROZEN_SIDES), cfg["repeats"]):
        for side in order:
            keras.backend.clear_session()
            if side == "finetunekit":
                result = finetunekit_run(
                    cfg, x[:n], y[:n], x[n:], y[n:], epochs=cfg["frozen_epochs"], fine_tune_epochs=0
                )
                seconds = result.timings["total"] - result.timings["build"]  # all but building
                acc = result.history["val_accuracy"][-1]
                trainable[side] = keras_baseline.trainable_count(result.model)
                cache_info = result.info.get("feature_cache", {})
            else:
                baseline = (
                    keras_baseline.run
                    if side == "keras_recompute"
                    else keras_baseline.run_feature_extraction
                )
                out = baseline(x[:n], y[:n], x[n:], y[n:], backbone=cfg["backbone"], **common)
                seconds = out["timings"]["phase1"]
                acc = out["history"][0]["val_accuracy"][-1]
                trainable[side] = out["trainable"]["phase1"]
            times[side].append(seconds)
            accuracy[side].append(float(acc))
            log(
                f"  frozen phase  {side:<16} {seconds:7.2f} s  val accuracy {acc:.3f}  "
                f"trainable {trainable[side]:,}"
            )
    figures = medians_and_ratios(
        times,
        {
            "speedup_vs_recompute": ("keras_recompute", "finetunekit"),
            "speedup_vs_features": ("keras_features", "finetunekit"),
        },
    )
    return {
        "seconds": figures.pop("medians"),
        **figures,
        "runs": times,
        "accuracy": _medians(accuracy),
        "accuracy_runs": accuracy,
        "trainable": trainable,
        "feature_cache": cache_info,
    }


def bench_curve(
    cfg: dict[str, Any], sizes: list[int], log: Callable[[str], None]
) -> list[dict[str, Any]]:
    """The frozen-phase figure (1) at each number of training images in ``sizes``.

    Each size runs :func:`bench_frozen` (``frozen_epochs`` epochs, validation
    a quarter of the training images, the three sides in rotating order,
    ``repeats`` times), so both ratios (against recomputing the backbone and
    against features by hand) are ratios of medians at that size.
    """
    rows = []
    for n in sizes:
        log(f"curve: {n} training images")
        sized = {**cfg, "frozen_train": int(n), "frozen_val": max(cfg["batch_size"], int(n) // 4)}
        figures = bench_frozen(sized, log)
        rows.append({"images": int(n), **figures})
        log(
            f"curve {n:>6} images: finetunekit {figures['seconds']['finetunekit']:.2f} s, "
            f"{figures['speedup_vs_recompute']:.2f}x vs recomputing, "
            f"{figures['speedup_vs_features']:.2f}x vs features by hand"
        )
    return rows


def curve_table(rows: list[dict[str, Any]]) -> str:
    """The curve as a Markdown table: seconds (medians) and both ratios per size.

    Example:
        >>> row = {"images": 256, "seconds": {"keras_recompute": 8.0, "keras_features": 3.0,
        ...        "finetunekit": 2.0}, "speedup_vs_recompute": 4.0, "speedup_vs_features": 1.5,
        ...        "paired": {"speedup_vs_recompute": [4.0], "speedup_vs_features": [1.5]}}
        >>> print(curve_table([row]).splitlines()[2])
        | 256 | 8.00 | 3.00 | 2.00 | 4.00x (4.00) | 1.50x (1.50) |
    """
    lines = [
        "| training images | Keras recompute (s) | Keras features by hand (s) "
        "| finetunekit (s) | vs recompute | vs features by hand |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        sec, paired = row["seconds"], row["paired"]
        lines.append(
            f"| {row['images']} | {sec['keras_recompute']:.2f} | {sec['keras_features']:.2f} "
            f"| {sec['finetunekit']:.2f} | {row['speedup_vs_recompute']:.2f}x "
            f"({_list(paired['speedup_vs_recompute'])}) | {row['speedup_vs_features']:.2f}x "
            f"({_list(paired['speedup_vs_features'])}) |"
        )
    return "\n".join(lines)


def bench_full(cfg: dict[str, Any], log: Callable[[str], None]) -> dict[str, Any]:
    """Figure 2: steady-state throughput with the backbone unfrozen (no validation).

    ``phase_seconds`` holds the whole phase's wall time (every epoch, the
    first one's tracing included) per side, and its ratios (side / finetunekit);
    ``call_seconds`` the wall time of the whole call (building the model,
    finetunekit's ``precision="auto"`` measurement, compiling and every
    epoch), what a user waits for from the call to its return.

    Accuracy is the last epoch's training accuracy; ``bn_gamma_beta`` is the
    number of BatchNorm gamma and beta parameters of the backbone, the only
    difference between the guide's trainable set and finetunekit's default.
    """
    n = cfg["full_train"]
    x, y = synthetic_images(n, cfg["size"], cfg["classes"], SEED + 1)
    rates: dict[str, list[float]] = {side: [] for side in FULL_SIDES}
    accuracy: dict[str, list[float]] = {side: [] for side in FULL_SIDES}
    epoch_seconds: dict[str, list[list[float]]] = {side: [] for side in FULL_SIDES}
    call_seconds: dict[str, list[float]] = {side: [] for side in FULL_SIDES}
    trainable: dict[str, int] = {}
    bn_gamma_beta = 0
    model = None
    precision: dict[str, Any] = {}
    for order in rotations(list(FULL_SIDES), cfg["repeats"]):
        for side in order:
            keras.backend.clear_session()
            timer = EpochTimer()
            called = time.perf_counter()
            if side == "finetunekit":
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
                call_seconds[side].append(time.perf_counter() - called)
                model = result.model
                precision = result.info.get("precision", {}).get("phase2", {})
                acc = result.history["accuracy"][-1]
                trainable[side] = keras_baseline.trainable_count(model)
            else:
                out = keras_baseline.run(
                    x,
                    y,
                    backbone=cfg["backbone"],
                    epochs=0,
                    fine_tune_epochs=cfg["full_epochs"],
                    batch_size=cfg["batch_size"],
                    learning_rate=cfg["learning_rate"],
                    seed=SEED,
                    train_bn=side == "keras_default",
                    callbacks=[timer],
                )
                call_seconds[side].append(time.perf_counter() - called)
                acc = out["history"][-1]["accuracy"][-1]
                trainable[side] = out["trainable"]["phase2"]
                bn_gamma_beta = keras_baseline.bn_gamma_beta_count(out["model"])
            steady = timer.seconds[1:] or timer.seconds  # the first epoch traces the step
            rate = n / statistics.median(steady)
            rates[side].append(rate)
            accuracy[side].append(float(acc))
            epoch_seconds[side].append(timer.seconds)
            log(
                f"  full fine-tune {side:<14} {rate:7.1f} images/s  trainable {trainable[side]:,} "
                "(epochs: " + ", ".join(f"{s:.2f}" for s in timer.seconds) + " s)"
            )
    figures = medians_and_ratios(
        rates,
        {
            "ratio_same": ("finetunekit", "keras_same"),
            "ratio_default": ("finetunekit", "keras_default"),
        },
    )
    # the whole phase as a user waits for it: every epoch, the first one's tracing included
    waited = {  # seconds a user waits: side / finetunekit
        "ratio_same": ("keras_same", "finetunekit"),
        "ratio_default": ("keras_default", "finetunekit"),
    }
    phase = medians_and_ratios(
        {side: [sum(run) for run in runs] for side, runs in epoch_seconds.items()}, waited
    )
    call = {**medians_and_ratios(call_seconds, waited), "runs": call_seconds}
    return {
        "images_per_s": figures.pop("medians"),
        **figures,
        "phase_seconds": phase,
        "call_seconds": call,
        "runs": rates,
        "epoch_seconds": epoch_seconds,
        "accuracy": _medians(accuracy),
        "trainable": trainable,
        "bn_gamma_beta": bn_gamma_beta,
        "precision": precision,
        "model": model,
    }


def _ratio_cell(figures: dict[str, Any], side: str) -> str:
    """``"1.20x (1.20, ...)"``: a Keras side's ratio and its repeats; empty for finetunekit."""
    key = {"keras_same": "ratio_same", "keras_default": "ratio_default"}.get(side)
    if key is None:
        return ""
    return f"{figures[key]:.2f}x ({_list(figures['paired'][key])})"


def full_table(cfg: dict[str, Any], full: dict[str, Any]) -> str:
    """Figure 2 alone as a table: images/s per side, the ratios and the precision used.

    Example:
        >>> full = {"images_per_s": {"keras_same": 10.0, "keras_default": 8.0, "finetunekit": 12.0},
        ...         "ratio_same": 1.2, "ratio_default": 1.5,
        ...         "paired": {"ratio_same": [1.2], "ratio_default": [1.5]},
        ...         "trainable": {"keras_same": 5, "keras_default": 7, "finetunekit": 5},
        ...         "precision": "float32"}
        >>> print(full_table({}, full).splitlines()[2])
        | keras_same | 10.0 | 1.20x (1.20) | 5 |
    """
    lines = [
        "| side | images/s | finetunekit / side (repeats) | trainable |",
        "| --- | --- | --- | --- |",
    ]
    for side, rate in full["images_per_s"].items():
        lines.append(
            f"| {side} | {rate:.1f} | {_ratio_cell(full, side)} | {full['trainable'][side]:,} |"
        )
    for key, what, header in (
        ("phase_seconds", "whole phase", "every epoch, the first one's tracing too"),
        ("call_seconds", "whole call", "the whole call: build, measure, compile, every epoch"),
    ):
        seconds_table = full.get(key)
        if not seconds_table:
            continue
        lines += ["", f"| side | seconds ({header}) | side / finetunekit |", "| --- | --- | --- |"]
        for side, seconds in seconds_table["medians"].items():
            cell = _ratio_cell(seconds_table, side)
            lines.append(f"| {side}, {what} | {seconds:.2f} | {cell} |")
    if full.get("precision"):
        lines.append(f"\nfinetunekit's phase-2 precision: {full['precision']}")
    return "\n".join(lines)


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

    Runs in its own process (``--memory-child``) so its peak is its own.
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


def bench_memory(cfg: dict[str, Any], log: Callable[[str], None]) -> dict[str, Any]:
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


def machine() -> dict[str, Any]:
    """CPU model, core count, vector extensions, GPUs and load: what the figures depend on."""
    model, flags = platform.processor() or "unknown", set()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
    except OSError:
        pass
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "extensions": [flag for flag in wanted if flag in flags],
        "gpus": len(tf.config.list_physical_devices("GPU")),
        "load_average": _load(),
    }


def _load() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def _list(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


def summary_table(figures: dict[str, Any]) -> str:
    """The figures as a Markdown table, ready to paste into ``docs/performance.md``.

    Times and rates are medians over the repeats. Every speed-up is computed
    from the two medians of its row (> 1: finetunekit is faster; the speed-up
    within each repeat follows in brackets); the like-for-like rows (1b, 2a)
    are in bold.
    """
    cfg, frozen, full = figures["config"], figures["frozen"], figures["full"]
    memory, e = figures["memory"], figures["efficiency"]
    fz, fu = frozen["seconds"], full["images_per_s"]
    ft, ut = frozen["trainable"], full["trainable"]

    def row(
        label: str,
        base: str,
        ours: str,
        ratio: float,
        paired: list[float],
        bold: bool,
        trainable: tuple[int, int],
    ) -> str:
        value = f"**{ratio:.2f}x**" if bold else f"{ratio:.2f}x"
        return (
            f"| {label} | {base} | {ours} | {value} (repeats: {_list(paired)}) "
            f"| {trainable[0]:,} / {trainable[1]:,} |"
        )

    frozen_label = (
        f"frozen phase, {cfg['frozen_epochs']} epochs, {cfg['frozen_train']:,} + "
        f"{cfg['frozen_val']:,} images"
    )
    rows = [
        "| figure | Keras by hand | finetunekit | speed-up | trainable weights "
        "(Keras / finetunekit) |",
        "| --- | --- | --- | --- | --- |",
        row(
            f"1a. {frozen_label}, vs the guide's fine-tuning recipe (backbone recomputed "
            "every epoch)",
            f"{fz['keras_recompute']:.2f} s",
            f"{fz['finetunekit']:.2f} s",
            frozen["speedup_vs_recompute"],
            frozen["paired"]["speedup_vs_recompute"],
            False,
            (ft["keras_recompute"], ft["finetunekit"]),
        ),
        row(
            f"1b. {frozen_label}, vs feature extraction by hand (predict once, fit the head)",
            f"{fz['keras_features']:.2f} s",
            f"{fz['finetunekit']:.2f} s",
            frozen["speedup_vs_features"],
            frozen["paired"]["speedup_vs_features"],
            True,
            (ft["keras_features"], ft["finetunekit"]),
        ),
        row(
            f"2a. full fine-tuning throughput, {cfg['full_train']:,} images, same trainable "
            "weights (BatchNorm gamma/beta frozen on both sides)",
            f"{fu['keras_same']:.1f} images/s",
            f"{fu['finetunekit']:.1f} images/s",
            full["ratio_same"],
            full["paired"]["ratio_same"],
            True,
            (ut["keras_same"], ut["finetunekit"]),
        ),
        row(
            "2b. full fine-tuning throughput, defaults (the guide also trains BatchNorm "
            "gamma/beta, finetunekit does not)",
            f"{fu['keras_default']:.1f} images/s",
            f"{fu['finetunekit']:.1f} images/s",
            full["ratio_default"],
            full["paired"]["ratio_default"],
            False,
            (ut["keras_default"], ut["finetunekit"]),
        ),
        f"| 3. peak resident memory, {memory['images']:,} 28x28 images streamed into "
        f"{'x'.join(str(v) for v in memory['input_size'] or [])} "
        f"| {MNIST_UPFRONT_BYTES / 1e9:.1f} GB to resize 60,000 up front "
        f"| **{memory['peak_rss_gb']:.2f} GB** ({memory['rss_before_gb']:.2f} GB before "
        f"streaming; {memory['seconds']:.0f} s for the epoch) | | |",
        f"| 4. efficiency of the full fine-tuning step | "
        f"| {e['step_mflop_per_example']:.1f} MFLOP/image x {fu['finetunekit']:.1f} images/s "
        f"= {e['achieved_gflops']:.2f} GFLOP/s "
        f"| {100 * e['fraction']:.1f}% of {e['matmul_gflops']:.1f} GFLOP/s dense matmul | |",
    ]
    return "\n".join(rows)


def _finish(
    figures: dict[str, Any],
    title: str,
    started: float,
    json_path: str | None,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Ends a one-figure run: load and time in the title, the table, the JSON file."""
    host = figures["machine"]
    host["load_average_end"] = _load()
    figures["seconds"] = time.perf_counter() - started
    log("")
    log(
        f"{title}; {host['cores']} CPUs {host['cpu']}; load average {host['load_average']} at "
        f"the start, {host['load_average_end']} at the end; total {figures['seconds']:.0f} s"
    )
    log(figures["table"])
    if json_path:
        with open(json_path, "w") as fh:
            json.dump(figures, fh, indent=2, default=str)
    return figures


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Runs the benchmark, prints the figures and returns them."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny backbone and data")
    parser.add_argument("--repeats", type=int, default=None, help="override the repeats")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    parser.add_argument(
        "--curve",
        action="store_true",
        help="only the frozen-phase ratios against the number of training images",
    )
    parser.add_argument(
        "--sizes", default=None, help="the curve's training-image counts, e.g. 256,1024,4096"
    )
    parser.add_argument(
        "--full", action="store_true", help="only figure 2: full fine-tuning throughput"
    )
    parser.add_argument(
        "--backbone",
        default=None,
        choices=sorted(keras_baseline.BASES),
        help="the backbone of every figure (default mobilenet_v3_small; e.g. resnet50)",
    )
    parser.add_argument("--full-train", type=int, default=None, help="figure 2's images")
    parser.add_argument("--full-epochs", type=int, default=None, help="figure 2's epochs")
    parser.add_argument("--memory-child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child is not None:
        print(json.dumps(memory_child(args.memory_child)))
        return {}
    cfg = dict(CONFIGS["quick" if args.quick else "full"])
    if args.repeats:
        cfg["repeats"] = args.repeats
    if args.backbone:
        cfg["backbone"] = args.backbone
    if args.full_train:
        cfg["full_train"] = args.full_train
    if args.full_epochs:
        cfg["full_epochs"] = args.full_epochs

    def log(line: str) -> None:
        print(line, flush=True)

    started = time.perf_counter()
    host = machine()
    log(
        f"finetunekit {ftk.__version__} vs hand-written Keras {keras.__version__} "
        f"(TensorFlow {tf.__version__}, Python {platform.python_version()}); {host}; "
        f"config: {cfg}"
    )
    if args.curve:
        sizes = [int(v) for v in args.sizes.split(",")] if args.sizes else cfg["curve_sizes"]
        rows = bench_curve(cfg, sizes, log)
        curve = {"config": cfg, "machine": host, "curve": rows, "table": curve_table(rows)}
        title = (
            f"CURVE: frozen phase, {cfg['frozen_epochs']} epochs, medians of {cfg['repeats']} "
            f"repeats in rotating order; {cfg['backbone']} {cfg['size']}x{cfg['size']}, batch "
            f"{cfg['batch_size']}"
        )
        return _finish(curve, title, started, args.json, log)
    if args.full:
        full = bench_full(cfg, log)
        full.pop("model")
        only = {"config": cfg, "machine": host, "full": full, "table": full_table(cfg, full)}
        title = (
            f"FULL: steady-epoch throughput, medians of {cfg['repeats']} repeats in rotating "
            f"order; {cfg['backbone']} {cfg['size']}x{cfg['size']}, {cfg['full_train']} images, "
            f"{cfg['full_epochs']} epochs, batch {cfg['batch_size']}"
        )
        return _finish(only, title, started, args.json, log)
    log("frozen phase")
    frozen = bench_frozen(cfg, log)
    log("full fine-tuning")
    full = bench_full(cfg, log)
    log("efficiency")
    flops = step_flops_per_example(full.pop("model"), cfg["batch_size"], cfg["classes"])
    matmul = matmul_flops_per_second(cfg["matmul_n"])
    achieved = flops * full["images_per_s"]["finetunekit"]
    log("memory")
    memory = bench_memory(cfg, log)
    host["load_average_end"] = _load()
    figures: dict[str, Any] = {
        "config": cfg,
        "machine": host,
        "frozen": frozen,
        "full": full,
        "memory": memory,
        "efficiency": {
            "step_mflop_per_example": flops / 1e6,
            "achieved_gflops": achieved / 1e9,
            "matmul_gflops": matmul / 1e9,
            "fraction": achieved / matmul,
        },
    }
    figures["seconds"] = time.perf_counter() - started
    figures["summary"] = summary_table(figures)
    log("")
    log(
        f"RESULTS: medians of {cfg['repeats']} repeats in rotating order; {cfg['backbone']} "
        f"{cfg['size']}x{cfg['size']}, batch {cfg['batch_size']}; {host['cores']} CPUs "
        f"{host['cpu']} ({', '.join(host['extensions']) or 'no AVX2'}), {host['gpus']} GPUs; "
        f"load average {host['load_average']} at the start, {host['load_average_end']} at "
        f"the end; total {figures['seconds']:.0f} s"
    )
    log(f"frozen-phase feature cache: {frozen['feature_cache']}")
    log(
        "last-epoch accuracy (medians): frozen phase, validation "
        + ", ".join(f"{k} {v:.3f}" for k, v in frozen["accuracy"].items())
        + "; full fine-tuning, training "
        + ", ".join(f"{k} {v:.3f}" for k, v in full["accuracy"].items())
    )
    log(
        f"BatchNorm gamma/beta in the backbone: {full['bn_gamma_beta']:,} "
        f"(guide's default trains them, finetunekit's default and 'same' do not)"
    )
    log("")
    log(figures["summary"])
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(figures, fh, indent=2, default=str)
    return figures


if __name__ == "__main__":
    main()
