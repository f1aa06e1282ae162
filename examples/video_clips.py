"""Video clips: an image backbone frame by frame, then a temporal head.

Synthetic clips of a bright square moving left or right. Every frame of a
"left" clip also appears in some "right" clip (the same path, reversed), so a
head that averages frame features is at chance by construction; a temporal
head (a 1-D convolution or a GRU over the frame features) sees the order of
the frames and solves it. The backbone is a tiny Keras CNN given with
``Backbone.from_model`` (any image backbone works: ``Backbone("mobilenet_v3_small")``
runs per frame the same way, weights shared across frames).

Also shown: clips streamed from .npy files with ``DatasetAdapter.from_generator``
(for clips that do not fit in memory), and a saved model predicting raw clips.

Run: python examples/video_clips.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import finetunekit as ftk  # noqa: E402


def make_motion_clips(
    n: int, *, frames: int = 6, size: int = 16, square: int = 3, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Returns ``(clips, labels)``: uint8 clips (N, T, size, size, 1) and "left" / "right".

    The square moves one pixel per frame along a random row; its path is the
    same set of positions for both directions, in opposite orders.

    Example:
        >>> x, y = make_motion_clips(4)
        >>> x.shape, sorted(set(y))
        ((4, 6, 16, 16, 1), ['left', 'right'])
    """
    rng = np.random.default_rng(seed)
    clips = rng.integers(0, 40, (n, frames, size, size, 1)).astype("uint8")
    right = np.arange(n) % 2 == 1
    rng.shuffle(right)
    span = frames - 1
    for i in range(n):
        start = int(rng.integers(0, size - square - span + 1))
        row = int(rng.integers(0, size - square + 1))
        for t in range(frames):
            col = start + (t if right[i] else span - t)
            clips[i, t, row : row + square, col : col + square, 0] = 255
    return clips, np.where(right, "right", "left")


def tiny_cnn(size: int = 16, seed: int = 0) -> keras.Model:
    """A small convolutional image encoder standing in for a pretrained one."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((size, size, 1))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(x)
    return keras.Model(inputs, x, name="tiny_cnn")


def fit_clips(
    train: ftk.DatasetAdapter, temporal: str, *, epochs: int = 15, verbose: int = 0
) -> ftk.FineTuneResult:
    """Fine-tunes the frame-wise CNN with a temporal head (``"average"``, ``"conv1d"``, ``"gru"``).

    ``pooling="flatten"`` keeps where the square is in each frame (average
    pooling would keep only *that* there is a square).
    """
    head = ftk.HeadReplacer(temporal=temporal, temporal_units=32, pooling="flatten", dropout=0.0)
    trainer = ftk.Trainer(epochs=epochs, learning_rate=3e-3, batch_size=32, verbose=verbose, seed=0)
    return (
        ftk.FineTuner()
        .with_data(train)
        .with_backbone(ftk.Backbone.from_model(tiny_cnn()))
        .with_head(head)
        .with_trainer(trainer)
        .fit()
    )


def clips_from_files(folder: str, clips: np.ndarray, labels: np.ndarray) -> ftk.DatasetAdapter:
    """Writes one .npy file per clip and returns an adapter that streams them back."""
    paths = []
    for i, clip in enumerate(clips):
        path = os.path.join(folder, f"clip_{i:04d}.npy")
        np.save(path, clip)
        paths.append(path)

    def read_clips() -> Any:
        for path, label in zip(paths, labels):
            yield np.load(path), label

    return ftk.DatasetAdapter.from_generator(read_clips)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer clips and epochs (tests)")
    parser.add_argument("--verbose", type=int, default=0)
    args = parser.parse_args(argv)
    n_train, n_test, epochs = (320, 120, 12) if args.quick else (640, 200, 20)
    x_train, y_train = make_motion_clips(n_train, seed=0)
    x_test, y_test = make_motion_clips(n_test, seed=1)
    train = ftk.DatasetAdapter.from_arrays(x_train, y_train)
    print(
        f"clips: {len(train)} train / {n_test} test of shape {train.input_shape}, {x_train.dtype}"
    )

    accuracies: dict[str, float] = {}
    results = {}
    for temporal in ("average", "conv1d", "gru"):
        start = time.perf_counter()
        result = fit_clips(train, temporal, epochs=epochs, verbose=args.verbose)
        accuracies[temporal] = result.evaluate((x_test, y_test)).metrics["accuracy"]
        results[temporal] = result
        print(
            f"temporal={temporal!r:<10} test accuracy {accuracies[temporal]:.3f}   "
            f"({time.perf_counter() - start:.1f} s)"
        )

    with tempfile.TemporaryDirectory() as folder:
        streamed = clips_from_files(folder, x_test[:32], y_test[:32])
        report = results["gru"].evaluate(streamed)
        print(
            f"gru on 32 clips streamed from .npy files: accuracy {report.metrics['accuracy']:.3f}"
        )
        path = results["gru"].save(os.path.join(folder, "motion.keras"))
        again = ftk.load(path)
        same = np.allclose(again.predict(x_test[:8]), results["gru"].predict(x_test[:8]), atol=1e-5)
        print(f"saved and loaded: predictions on raw clips identical: {same}")
        print(f"predicted: {again.predict_classes(x_test[:4])}, true: {y_test[:4].tolist()}")
    accuracies["reloaded_identical"] = float(same)
    return accuracies


if __name__ == "__main__":
    main()
