"""Object detection end to end, offline: train a RetinaNet on generated scenes, score it.

The scenes (``examples/detection_data.py``) are shapes (squares, discs,
triangles) or MNIST digits pasted on textured canvases, with exact boxes. No
pretrained detector installs from PyPI, so the backbone starts from random
weights and is trained whole (``epochs=0``: no frozen phase); with a
pretrained backbone (``Backbone("mobilenet_v3_small", weights="imagenet")``)
use the default two phases instead.

Run:
    python examples/detection.py                 # shapes, 600 + 150 images, ~minutes on 2 cores
    python examples/detection.py --scenes digits # the issue's digit scenes (96x96)
    python examples/detection.py --quick         # a smoke run (seconds)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from detection_data import digit_scenes, shape_scenes  # noqa: E402

import finetunekit as ftk  # noqa: E402


def scenes(kind: str, n: int, seed: int, subset: str = "all") -> ftk.DatasetAdapter:
    """Generated detection data as a ``DatasetAdapter``."""
    if kind == "digits":
        images, boxes, labels, names = digit_scenes(n, size=96, seed=seed, subset=subset)
    else:
        images, boxes, labels, names = shape_scenes(n, size=64, seed=seed)
    return ftk.DatasetAdapter.from_detection(images, boxes, labels, class_names=names)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", choices=["shapes", "digits"], default="shapes")
    parser.add_argument("--train", type=int, default=600)
    parser.add_argument("--test", type=int, default=150)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--backbone", default="mobilenet_v3_small")
    parser.add_argument("--save", default=None, help="save the detector to this .keras file")
    parser.add_argument("--plot", default=None, help="write a grid of detections (PNG)")
    parser.add_argument("--quick", action="store_true", help="tiny smoke run")
    args = parser.parse_args(argv)
    if args.quick:
        args.train, args.test, args.epochs = 48, 16, 1

    train = scenes(args.scenes, args.train, seed=0, subset="train")
    test = scenes(args.scenes, args.test, seed=1, subset="test")
    tuner = (
        ftk.FineTuner()
        .with_data(train)
        .with_backbone(ftk.Backbone(args.backbone, weights=None))
        .with_trainer(
            ftk.Trainer(
                epochs=0,  # random weights: nothing to keep frozen, train everything
                fine_tune_epochs=args.epochs,
                fine_tune_learning_rate=args.learning_rate,
                batch_size=args.batch_size,
                augment={"flip": "horizontal"},
                seed=0,
                verbose=0,
            )
        )
    )
    start = time.perf_counter()
    result = tuner.fit()
    seconds = time.perf_counter() - start
    report = result.evaluate(test)
    figures = {
        "map": round(report.metrics["map"], 4),
        "map_50": round(report.metrics["map_50"], 4),
        "map_75": round(report.metrics["map_75"], 4),
        "train_seconds": round(seconds, 1),
        "images_per_second": round(args.train * args.epochs / seconds, 1),
    }
    print(report)
    print("anchors:", result.info["detection"]["anchors_reason"])
    print(json.dumps(figures))
    if args.save:
        result.save(args.save)
    if args.plot:
        from finetunekit.plots import plot_detections

        plot_detections(result, test, path=args.plot, max_images=9)
    return figures


if __name__ == "__main__":
    main()
