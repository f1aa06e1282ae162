"""The same recipe on two worker processes (MultiWorkerMirroredStrategy), on one machine.

Without arguments this script is the launcher: it picks two free ports on
127.0.0.1, starts itself twice as ``--worker`` with a ``TF_CONFIG`` each
(worker 0 is the chief), waits for both, then loads the model the chief
saved with ``ftk.load`` and checks its predictions against the chief's.
On a real cluster, run ``python examples/multi_worker.py --worker`` on every
host with that host's ``TF_CONFIG`` (see docs/distributed.md).

The data is scikit-learn's 8x8 handwritten digits (real, installed with
scikit-learn); the backbone a small CNN given with ``Backbone.from_model``.
The only change from a one-machine recipe is ``Trainer(strategy="multi_worker")``
(plus ``resolve_strategy`` first, because this script builds a Keras model
itself before ``fit``).

Run: python examples/multi_worker.py [--epochs 6] [--out folder]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def worker(out: str, epochs: int) -> None:
    """One worker: fine-tunes under ``strategy="multi_worker"``; the chief saves."""
    import numpy as np
    from sklearn.datasets import load_digits

    import finetunekit as ftk
    from finetunekit.training.distribute import is_chief, resolve_strategy

    resolve_strategy("multi_worker")  # before any Keras model exists in this process
    import keras

    digits = load_digits()
    x = (digits.images * (255.0 / 16.0)).astype("uint8")  # (1797, 8, 8) grayscale
    data = ftk.DatasetAdapter.from_arrays(x, digits.target)
    train, test = data.split(0.25, seed=0)
    keras.utils.set_random_seed(0)
    cnn = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Rescaling(1 / 255),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
            keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.Flatten(),
        ]
    )
    trainer = ftk.Trainer(  # the CNN starts from random weights: a short head phase, then all
        epochs=1,
        fine_tune_epochs=epochs,
        learning_rate=1e-2,
        fine_tune_learning_rate=3e-3,
        batch_size=64,  # the GLOBAL batch: 32 per worker here
        seed=0,
        verbose=2 if is_chief() else 0,
        strategy="multi_worker",  # the one change for several hosts
    )
    start = time.perf_counter()
    result = (
        ftk.FineTuner()
        .with_data(train)
        .with_backbone(ftk.Backbone.from_model(cnn))
        .with_trainer(trainer)
        .fit()
    )
    seconds = time.perf_counter() - start
    path = os.path.join(out, "model.keras")
    result.save(path)  # the chief writes it; the other worker writes a temporary copy
    if is_chief():
        report = result.evaluate(test)
        sample = np.asarray(test.sample_inputs(32))
        figures = {
            "accuracy": float(report.metrics["accuracy"]),
            "seconds": seconds,
            "strategy": result.info["strategy"],
            "predictions": result.predict(sample).tolist(),
            "epochs": result.history["epoch"],
        }
        np.save(os.path.join(out, "sample.npy"), sample)
        with open(os.path.join(out, "chief.json"), "w", encoding="utf-8") as handle:
            json.dump(figures, handle)


def free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports on 127.0.0.1."""
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def launch(out: str, epochs: int, timeout: float = 300) -> dict[str, Any]:
    """Starts two local workers, waits, and checks the chief's saved model."""
    import numpy as np

    hosts = [f"127.0.0.1:{port}" for port in free_ports(2)]
    procs = []
    for index in range(2):
        env = dict(os.environ)
        env["TF_CONFIG"] = json.dumps(
            {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}}
        )
        env["CUDA_VISIBLE_DEVICES"] = ""  # CPU workers on one machine
        procs.append(
            subprocess.Popen(
                [sys.executable, __file__, "--worker", "--out", out, "--epochs", str(epochs)],
                env=env,
            )
        )
    start = time.perf_counter()
    try:
        codes = [p.wait(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    wall = time.perf_counter() - start
    if any(codes):
        raise SystemExit(f"a worker failed: exit codes {codes}")
    with open(os.path.join(out, "chief.json"), encoding="utf-8") as handle:
        figures: dict[str, Any] = json.load(handle)

    import finetunekit as ftk

    again = ftk.load(os.path.join(out, "model.keras"))
    sample = np.load(os.path.join(out, "sample.npy"))
    gap = float(np.max(np.abs(again.predict(sample) - np.asarray(figures["predictions"]))))
    figures.update(wall_seconds=wall, reload_max_difference=gap)
    print(
        f"2 workers ({figures['strategy']['replicas']} replicas): test accuracy "
        f"{figures['accuracy']:.4f}; fit {figures['seconds']:.1f} s on the chief, "
        f"{wall:.1f} s both processes start to exit; saved model reloads with "
        f"max prediction difference {gap:.1e}"
    )
    return figures


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", action="store_true", help="run as one worker (TF_CONFIG)")
    parser.add_argument("--epochs", type=int, default=6, help="phase-2 epochs (all layers)")
    parser.add_argument("--out", default=None, help="folder for the chief's model")
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.out or ".", args.epochs)
        return None
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        return launch(args.out, args.epochs)
    with tempfile.TemporaryDirectory() as out:
        return launch(out, args.epochs)


if __name__ == "__main__":
    main()
