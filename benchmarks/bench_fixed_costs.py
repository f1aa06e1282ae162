"""Two fixed costs of the cached frozen phase, each timed with and without finetunekit's fix.

1. **tf.data's autotuning.** finetunekit switches it off on every dataset it
   builds (``finetunekit/data/options.py``): with it on, deleting an iterator
   that has lived a second or more sometimes waits about a second.
2. **Tracing the head while the backbone runs.** ``FeatureCache`` computes the
   features in a worker thread while the engine compiles the head and traces
   its loop (``fit_loop.trace_head``), instead of one after the other.

Each case runs its two modes alternately, in this process, and the script prints
the medians and their ratio (the slower way over finetunekit's way)::

    .venv/bin/python benchmarks/bench_fixed_costs.py             # 10 repeats, about 8 minutes
    .venv/bin/python benchmarks/bench_fixed_costs.py --quick     # smoke run (the tests run it)
    .venv/bin/python benchmarks/bench_fixed_costs.py --cases phase,overlap --repeats 12

The cases (modes: ``autotune`` / ``off`` unless said otherwise):

* ``cached phase``: finetunekit's whole frozen phase on cached features,
  MobileNetV3Small (``weights=None``) at 96x96, 1,024 training and 256
  validation images, 10 epochs, timed as ``bench_finetune.py --curve`` times
  it (``result.timings``: all but building). The "autotune" side leaves
  autotuning on in finetunekit's datasets for that run.
* ``overlap`` (modes ``sequential`` / ``overlapped``): the same phase; the
  "sequential" side runs the feature pass and then the head's compile and
  trace, as before the overlap.
* ``feature pass``: the cached phase's feature pass. MobileNetV3Small
  (``weights=None``) at 96x96 runs on the 1,280 images of
  ``DatasetAdapter.inputs_dataset`` in batches of 151, traced afresh in each
  run as the cached phase does. The case times the pass and, apart, the
  deletion of its iterator. Waits longer than 0.5 s are counted.
* ``fit``: Keras' ``fit``, 6 epochs of about a second each, on
  ``DatasetAdapter.as_dataset`` (a dense network on 1,024 examples of 576
  floats). Keras deletes two iterators per epoch.
* ``parallel map``: 64 elements through ``map(num_parallel_calls=AUTOTUNE)``,
  each call sleeping 50 ms. This shows that parallelism stays at the number
  of cores.
* ``decode``: 2,048 JPEGs (256x256) decoded and resized to 160x160 in a
  parallel map, batched by 32 and prefetched.

In the other cases, the "autotune" side is the same dataset with
``autotune.enabled`` set back to True.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

TEARDOWN = ("autotune", "off")  # each case's modes: the slower way first
OVERLAP = ("sequential", "overlapped")
SIZES: dict[str, dict[str, int]] = {
    "full": {"repeats": 10, "phase_images": 1024, "images": 1280, "size": 96,
             "fit_examples": 1024, "width": 2048, "epochs": 6, "sleepers": 64, "jpegs": 2048},
    "quick": {"repeats": 2, "phase_images": 64, "images": 64, "size": 32,
              "fit_examples": 64, "width": 16, "epochs": 2, "sleepers": 8, "jpegs": 32},
}  # fmt: skip
CASES = {
    "phase": "cached phase",
    "overlap": "overlap",
    "feature": "feature pass",
    "fit": "fit",
    "parallel": "parallel map",
    "decode": "decode",
}
SLOW_DELETE_S = 0.5  # a deletion this slow waited for the autotuning thread


def with_mode(ds: tf.data.Dataset, mode: str) -> tf.data.Dataset:
    """``ds`` (autotuning off, as finetunekit builds it) with autotuning back on for ``"autotune"``.

    Example:
        >>> from finetunekit.data.options import without_autotune
        >>> ds = without_autotune(tf.data.Dataset.range(2))
        >>> with_mode(ds, "autotune").options().autotune.enabled
        True
    """
    if mode == "off":
        return ds
    options = tf.data.Options()
    options.autotune.enabled = True
    return ds.with_options(options)


def feature_pass(cfg: dict[str, int], quick: bool) -> Callable[[str], dict[str, float]]:
    """The feature pass of the cached phase, once per call: its seconds and the deletion's."""
    import keras

    import finetunekit as ftk

    size = cfg["size"]
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (cfg["images"], size, size, 3), dtype=np.uint8)
    data = ftk.DatasetAdapter.from_arrays(x, rng.integers(0, 10, cfg["images"]))
    if quick:
        model = keras.Sequential([keras.Input((size, size, 3)), keras.layers.Conv2D(4, 3),
                                  keras.layers.GlobalAveragePooling2D()])  # fmt: skip
    else:
        model = keras.applications.MobileNetV3Small(
            weights=None, include_top=False, input_shape=(size, size, 3), pooling="avg"
        )
    batch = 256 if quick else 151  # what the cached phase picks for MobileNetV3Small at 96x96

    def run(mode: str) -> dict[str, float]:
        # traced afresh, as in the cached phase: the first batch waits for the trace
        compute = tf.function(lambda v: model(tf.cast(v, "float32"), training=False))
        start = time.perf_counter()
        iterator = iter(with_mode(data.inputs_dataset(batch), mode))
        for images in iterator:
            np.asarray(compute(images))
        passed = time.perf_counter()
        del iterator
        deleted = time.perf_counter()
        gc.collect()
        return {"seconds": passed - start, "delete": deleted - passed}

    return run


def cached_phase(cfg: dict[str, int], quick: bool) -> Callable[[str], dict[str, float]]:
    """finetunekit's frozen phase on cached features (10 epochs, validation a quarter of the
    training images), as ``bench_finetune.py --curve`` times it: its seconds after building.

    The "autotune" side swaps ``without_autotune`` in ``finetunekit.data.adapter`` for a
    function that leaves the dataset as it is; the "sequential" side runs the
    ``FeatureCache``'s work for the calling thread after its feature pass. Each only for
    that run.
    """
    import keras

    import finetunekit as ftk
    from finetunekit.data import adapter
    from finetunekit.training import feature_cache

    overlapped_build = feature_cache.FeatureCache.build

    def sequential_build(cache: Any) -> None:
        meanwhile, cache.meanwhile = cache.meanwhile, None
        overlapped_build(cache)
        cache.meanwhile_result = meanwhile() if meanwhile is not None else None

    n, size = cfg["phase_images"], cfg["size"]
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (n + n // 4, size, size, 3), dtype=np.uint8)
    y = rng.integers(0, 10, n + n // 4)

    def run(mode: str) -> dict[str, float]:
        keras.backend.clear_session()
        if quick:
            keras.utils.set_random_seed(0)
            backbone = ftk.Backbone.from_model(
                keras.Sequential([keras.Input((size, size, 3)), keras.layers.Conv2D(4, 3)]),
                preprocessing="none",
            )
        else:
            backbone = ftk.Backbone("mobilenet_v3_small", weights=None, input_shape=(size, size, 3))
        kept = adapter.without_autotune
        if mode == "autotune":
            adapter.without_autotune = lambda ds: ds  # type: ignore[assignment]
        if mode == "sequential":
            feature_cache.FeatureCache.build = sequential_build  # type: ignore[method-assign]
        try:
            result = (
                ftk.FineTuner()
                .with_data(
                    ftk.DatasetAdapter.from_arrays(x[:n], y[:n]),
                    validation=ftk.DatasetAdapter.from_arrays(x[n:], y[n:]),
                )
                .with_backbone(backbone)
                .with_head(ftk.HeadReplacer(dropout=0.2))
                .with_trainer(ftk.Trainer("adam", 1e-3, 10, 32, seed=0, verbose=0))
                .fit()
            )
        finally:
            adapter.without_autotune = kept
            feature_cache.FeatureCache.build = overlapped_build  # type: ignore[method-assign]
        assert result.info["feature_cache"]["used"], result.info["feature_cache"]
        return {"seconds": result.timings["total"] - result.timings["build"]}

    return run


def fit_epochs(cfg: dict[str, int]) -> Callable[[str], dict[str, float]]:
    """Keras' ``fit`` for ``epochs`` epochs on ``DatasetAdapter.as_dataset``: its seconds."""
    import keras

    import finetunekit as ftk

    n, width = cfg["fit_examples"], cfg["width"]
    rng = np.random.default_rng(1)
    data = ftk.DatasetAdapter.from_arrays(
        rng.normal(size=(n, 576)).astype("float32"), rng.integers(0, 10, n)
    )

    def run(mode: str) -> dict[str, float]:
        keras.backend.clear_session()
        keras.utils.set_random_seed(0)
        model = keras.Sequential([
            keras.Input((576,)),
            keras.layers.Dense(width, activation="relu"),
            keras.layers.Dense(width, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ])  # fmt: skip
        model.compile("adam", "categorical_crossentropy")
        ds = with_mode(data.as_dataset(32, shuffle=True, seed=0), mode)
        start = time.perf_counter()
        model.fit(ds, epochs=cfg["epochs"], verbose=0, shuffle=False)
        return {"seconds": time.perf_counter() - start}

    return run


def parallel_map(cfg: dict[str, int]) -> Callable[[str], dict[str, float]]:
    """Elements through a parallel map whose calls sleep 50 ms: its seconds."""
    from finetunekit.data.options import without_autotune

    def sleep(i: Any) -> Any:
        time.sleep(0.05)
        return i

    def run(mode: str) -> dict[str, float]:
        ds = tf.data.Dataset.range(cfg["sleepers"]).map(
            lambda i: tf.py_function(sleep, [i], tf.int64), num_parallel_calls=tf.data.AUTOTUNE
        )
        ds = with_mode(without_autotune(ds.prefetch(tf.data.AUTOTUNE)), mode)
        start = time.perf_counter()
        count = sum(1 for _ in ds)
        assert count == cfg["sleepers"]
        return {"seconds": time.perf_counter() - start}

    return run


def decode(cfg: dict[str, int]) -> Callable[[str], dict[str, float]]:
    """JPEGs decoded and resized in a parallel map, batched and prefetched: its seconds."""
    from finetunekit.data.options import without_autotune

    rng = np.random.default_rng(2)
    jpegs = tf.stack([
        tf.io.encode_jpeg(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)) for _ in range(16)
    ])  # fmt: skip

    def load(i: tf.Tensor) -> tf.Tensor:
        return tf.image.resize(tf.io.decode_jpeg(tf.gather(jpegs, i % 16), channels=3), (160, 160))

    def run(mode: str) -> dict[str, float]:
        ds = tf.data.Dataset.range(cfg["jpegs"]).map(load, num_parallel_calls=tf.data.AUTOTUNE)
        ds = with_mode(without_autotune(ds.batch(32).prefetch(tf.data.AUTOTUNE)), mode)
        start = time.perf_counter()
        for _ in ds:
            pass
        return {"seconds": time.perf_counter() - start}

    return run


def measure(
    run: Callable[[str], dict[str, float]], repeats: int, modes: tuple[str, str] = TEARDOWN
) -> dict[str, Any]:
    """Runs both ``modes`` ``repeats`` times, alternating which goes first; medians and the
    ratio of the first mode's median over the second's.

    Example:
        >>> out = measure(lambda mode: {"seconds": 2.0 if mode == "autotune" else 1.0}, 2)
        >>> out["median"], out["ratio"]
        ({'autotune': 2.0, 'off': 1.0}, 2.0)
    """
    runs: dict[str, list[dict[str, float]]] = {mode: [] for mode in modes}
    for r in range(repeats):
        for mode in modes if r % 2 == 0 else modes[::-1]:
            runs[mode].append(run(mode))
    median = {m: statistics.median(v["seconds"] for v in runs[m]) for m in modes}
    out: dict[str, Any] = {"modes": list(modes), "runs": runs, "median": median}
    out["ratio"] = median[modes[0]] / median[modes[1]]
    if "delete" in runs[modes[1]][0]:
        out["delete_median"] = {m: statistics.median(v["delete"] for v in runs[m]) for m in modes}
        out["slow_deletes"] = {m: sum(v["delete"] > SLOW_DELETE_S for v in runs[m]) for m in modes}
    return out


def table(results: dict[str, dict[str, Any]]) -> str:
    """The figures as Markdown: each mode's median seconds and their ratio.

    Example:
        >>> row = {"modes": ["autotune", "off"], "median": {"autotune": 2.0, "off": 1.0},
        ...        "ratio": 2.0, "runs": {"off": [1]}}
        >>> print(table({"fit": row}).splitlines()[2])
        | fit | autotune / off | 2.000 | 1.000 | 2.00x |  |
    """
    lines = [
        "| case | modes | first, s | second, s | first / second | deleting the iterator |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        first, second = r["modes"]
        note = ""
        if "delete_median" in r:
            d, slow, n = r["delete_median"], r["slow_deletes"], len(r["runs"][second])
            note = (
                f"median {d[first]:.3f} s {first}, {d[second]:.3f} s {second}; over "
                f"{SLOW_DELETE_S} s: {slow[first]} of {n} {first}, {slow[second]} of {n} {second}"
            )
        med = r["median"]
        lines.append(
            f"| {name} | {first} / {second} | {med[first]:.3f} | {med[second]:.3f} | "
            f"{r['ratio']:.2f}x | {note} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (the tests run it)")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    parser.add_argument(
        "--cases", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)}"
    )
    args = parser.parse_args(argv)
    unknown = sorted(set(args.cases.split(",")) - set(CASES))
    if unknown:
        parser.error(f"--cases: unknown {unknown}; choose from {', '.join(CASES)}")
    import absl.logging

    absl.logging.set_verbosity("error")  # "Changing the value of option enabled" per "on" run
    tf.get_logger().setLevel("ERROR")  # the feature pass is traced afresh on purpose
    cfg = dict(SIZES["quick" if args.quick else "full"])
    repeats = args.repeats or cfg["repeats"]
    makers = {
        "cached phase": lambda: cached_phase(cfg, args.quick),
        "overlap": lambda: cached_phase(cfg, args.quick),
        "feature pass": lambda: feature_pass(cfg, args.quick),
        "fit": lambda: fit_epochs(cfg),
        "parallel map": lambda: parallel_map(cfg),
        "decode": lambda: decode(cfg),
    }
    chosen = [CASES[c] for c in args.cases.split(",")]
    results = {}
    for name in chosen:
        modes = OVERLAP if name == "overlap" else TEARDOWN
        results[name] = measure(makers[name](), repeats, modes)
        print(f"{name}: {results[name]['median']}", flush=True)
    out = {"config": cfg, "repeats": repeats, "cases": results, "table": table(results)}
    print(out["table"])
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return out


if __name__ == "__main__":
    main()
