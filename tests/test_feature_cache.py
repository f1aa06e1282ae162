"""Feature caching of the frozen phase: same model as without it, bounded memory, off when unsafe."""

from __future__ import annotations

import os
import tempfile
import threading
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

import finetunekit as ftk
from finetunekit.errors import TrainerError
from finetunekit.training import feature_cache
from finetunekit.training.feature_cache import FeatureStore, split_frozen

# Examples the backbone has processed (a spy: _CountExamples adds each batch's size).
_SEEN = tf.Variable(0, dtype=tf.int64, trainable=False)


class _CountExamples(keras.layers.Layer):
    """Identity layer that adds its batch size to ``_SEEN`` every time it runs."""

    def call(self, inputs):
        _SEEN.assign_add(tf.cast(tf.shape(inputs)[0], tf.int64))
        return inputs


def _tiny_backbone() -> keras.Model:
    """A 16x16x3 conv backbone with BatchNorm and spatial output (pooled by the head);
    it counts the examples it runs on in ``_SEEN``."""
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, strides=2)(_CountExamples()(inputs))
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    return keras.Model(inputs, x, name="tiny")


def _data(n: int = 48, classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = np.arange(n) % classes
    x = rng.integers(0, 120, (n, 16, 16)).astype("uint8")  # grayscale: input adaptation runs
    x += (y * 40).astype("uint8")[:, None, None]
    return x, y


_NET = None


def _fit(data, validation=0.25, **trainer_kwargs):
    global _NET
    if _NET is None:
        _NET = _tiny_backbone()
    settings = {"epochs": 3, "batch_size": 8, "seed": 0, "verbose": 0}
    settings.update(trainer_kwargs)
    return (
        ftk.FineTuner()
        .with_data(data, validation=validation)
        .with_backbone(ftk.Backbone.from_model(_NET))
        .with_head(ftk.HeadReplacer(hidden_units=(8,), dropout=0.0))
        .with_trainer(ftk.Trainer(**settings))
        .fit()
    )


@pytest.fixture(scope="module")
def runs():
    """The same recipe (both phases, keep_best) without and with the cache, and spies:
    ``seen`` (examples through the backbone during each fit) and ``build_seconds`` (each
    feature pass, timed by wrapping FeatureCache.build), keyed by ``cache_features``."""
    x, y = _data()
    data = ftk.DatasetAdapter.from_arrays(x, y)
    common = {"fine_tune_epochs": 2, "keep_best": True}
    build_seconds: list[float] = []
    real_build = feature_cache.FeatureCache.build

    def timed_build(self):
        start = time.perf_counter()
        real_build(self)
        build_seconds.append(time.perf_counter() - start)

    results, spy = {}, {"seen": {}, "build_seconds": {}}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(feature_cache.FeatureCache, "build", timed_build)
        for cache in (False, True):
            _SEEN.assign(0)
            results[cache] = _fit(data, cache_features=cache, **common)
            spy["seen"][cache] = int(_SEEN.numpy())
            spy["build_seconds"][cache] = list(build_seconds)
            build_seconds.clear()
    return x, results[False], results[True], common, spy


def test_cached_run_matches_uncached_run(runs):
    x, plain, cached, *_ = runs
    assert cached.info["feature_cache"]["used"] is True
    assert plain.info["feature_cache"]["used"] is False
    np.testing.assert_allclose(cached.predict(x), plain.predict(x), rtol=1e-4, atol=1e-5)
    assert sorted(cached.history) == sorted(plain.history)  # same metric names
    for key, values in plain.history.items():
        np.testing.assert_allclose(cached.history[key], values, rtol=1e-4, atol=1e-5)
    assert cached.history["phase"] == [1, 1, 1, 2, 2]


def test_result_info_reports_the_cache(runs):
    _, plain, cached, _, spy = runs
    info = cached.info["feature_cache"]
    assert set(info) == {"used", "reason", "bytes", "spilled", "head_loop"}
    assert info["head_loop"] == "finetunekit"  # no callbacks, no log_dir: the lean loop
    # 36 train + 12 validation examples of 4 pooled float32 features
    assert info["bytes"] == 48 * 4 * 4 and info["spilled"] is False
    assert "cache_features=False" in plain.info["feature_cache"]["reason"]
    # the reported cache time covers the feature pass, timed independently around it
    assert spy["build_seconds"][False] == [] and len(spy["build_seconds"][True]) == 1
    measured = spy["build_seconds"][True][0]
    assert measured <= cached.timings["feature_cache"] <= cached.timings["phase1"]
    assert "feature_cache" not in plain.timings


def test_keras_fit_trains_the_head_as_the_head_loop_does(runs):
    """With a user callback the cached head trains through Keras' fit (callbacks may want
    every batch); without one, through finetunekit's head loop: the same model either way."""
    x, _, cached, common, _ = runs
    seen = []
    callback = keras.callbacks.LambdaCallback(on_train_batch_end=lambda b, logs: seen.append(b))
    keras_way = _fit(
        ftk.DatasetAdapter.from_arrays(*_data()),
        cache_features=True,
        callbacks=[callback],
        **common,
    )
    assert keras_way.info["feature_cache"]["head_loop"].startswith("keras fit: callbacks")
    assert seen[:6] == [0, 1, 2, 3, 4, 0]  # every batch: 36 training examples, batches of 8
    np.testing.assert_allclose(keras_way.predict(x), cached.predict(x), rtol=1e-4, atol=1e-5)
    for key, values in cached.history.items():
        np.testing.assert_allclose(keras_way.history[key], values, rtol=1e-4, atol=1e-5)


def test_the_backbone_runs_once_per_example_in_the_cached_phase(runs):
    """48 examples (36 train + 12 validation), 3 frozen epochs then 2 unfrozen: without
    the cache the backbone sees every example in every epoch (5 x 48); with it, phase 1
    costs one pass (48) and phase 2 is unchanged (2 x 48)."""
    spy = runs[-1]
    assert spy["seen"][False] == (3 + 2) * 48
    assert spy["seen"][True] == (1 + 2) * 48


def test_head_is_shared_with_the_full_model():
    net = _tiny_backbone()
    inputs = keras.Input((16, 16, 3))
    features = net(inputs, training=False)
    pooled = keras.layers.GlobalAveragePooling2D(name="head_pool")(features)
    outputs = keras.layers.Dense(2, name="head_output")(pooled)
    model = keras.Model(inputs, outputs)
    split = split_frozen(model, net)
    assert split.head_model.get_layer("head_output") is model.get_layer("head_output")
    assert tuple(split.feature_model.outputs[0].shape) == (None, 4)  # cut after the pooling


def test_spill_to_disk_gives_the_same_model_and_leaves_no_file(runs, monkeypatch, tmp_path):
    x, plain, _, common, _ = runs
    made = []
    real_mkdtemp = tempfile.mkdtemp

    def mkdtemp(*args, **kwargs):
        made.append(real_mkdtemp(*args, dir=str(tmp_path), **kwargs))
        return made[-1]

    monkeypatch.setattr(feature_cache.tempfile, "mkdtemp", mkdtemp)
    data = ftk.DatasetAdapter.from_arrays(*_data())
    spilled = _fit(data, cache_features=True, cache_memory_mb=0, **common)
    info = spilled.info["feature_cache"]
    assert info["used"] is True and info["spilled"] is True
    assert len(made) == 2  # training and validation features, each in a temp folder
    assert list(tmp_path.iterdir()) == []
    np.testing.assert_allclose(spilled.predict(x), plain.predict(x), rtol=1e-4, atol=1e-5)


def test_feature_store_budget_and_cleanup():
    store = FeatureStore(3, (2,), "float32", memory_bytes=24)
    assert not store.spilled and store.nbytes == 24
    store.fill(lambda b: b, tf.data.Dataset.from_tensor_slices(np.ones((3, 2), "float32")).batch(2))
    assert store.gather(tf.constant([2, 0])).shape == (2, 2)
    store.close()
    disk = FeatureStore(3, (2,), "float32", memory_bytes=23)
    folder = disk.folder
    assert disk.spilled and folder is not None
    disk.fill(
        lambda b: b * 2, tf.data.Dataset.from_tensor_slices(np.ones((3, 2), "float32")).batch(2)
    )
    np.testing.assert_array_equal(disk.gather(tf.constant([1])).numpy(), [[2.0, 2.0]])
    disk.close()
    assert not os.path.exists(folder)


def test_augmentation_before_the_backbone_switches_caching_off():
    x, y = _data(24)
    data = ftk.DatasetAdapter.from_arrays(x, y)
    net = _tiny_backbone()
    inputs = keras.Input((16, 16), dtype="uint8")
    h = keras.layers.Reshape((16, 16, 1))(keras.ops.cast(inputs, "float32"))
    h = keras.layers.Concatenate()([h, h, h])
    h = keras.layers.RandomFlip(name="augment_flip")(h)
    h = keras.layers.GlobalAveragePooling2D(name="head_pool")(net(h, training=False))
    outputs = keras.layers.Dense(3, activation="softmax", name="head_output")(h)
    model = keras.Model(inputs, outputs)
    trainer = ftk.Trainer(epochs=2, batch_size=8, verbose=0, seed=0, cache_features=True)
    with pytest.warns(UserWarning, match="augment_flip"):
        run = trainer.train(
            model,
            net,
            data.as_dataset(8, shuffle=True, seed=0),
            loss="categorical_crossentropy",
            metrics=["accuracy"],
            train_data=data,
        )
    info = run.info["feature_cache"]
    assert info["used"] is False and "random layers" in info["reason"]
    assert len(run.history["loss"]) == 2


def test_random_tf_data_pipeline_switches_caching_off():
    x, y = _data(24)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).map(
        lambda a, b: (a + tf.cast(tf.random.uniform((), 0, 2, "int32"), "uint8"), b)
    )
    data = ftk.DatasetAdapter.from_tf_dataset(ds)
    assert "random" in data.replay_problem()
    result = _fit(data, validation=None, epochs=2)
    info = result.info["feature_cache"]
    assert info["used"] is False and "random" in info["reason"]


def test_tf_data_source_replays_its_shuffled_order():
    x, y = _data(40)
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    train, val = ftk.DatasetAdapter.from_tf_dataset(ds).split(0.25, seed=0)
    plain = _fit(train, validation=val, epochs=2, cache_features=False)
    cached = _fit(train, validation=val, epochs=2, cache_features=True)
    assert cached.info["feature_cache"]["used"] is True
    np.testing.assert_allclose(cached.predict(x), plain.predict(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [({"epochs": 1}, "one frozen epoch"), ({"epochs": 0, "fine_tune_epochs": 1}, "epochs=0")],
)
def test_auto_skips_caching_when_it_cannot_pay_off(kwargs, reason):
    data = ftk.DatasetAdapter.from_arrays(*_data(24))
    result = _fit(data, validation=None, **kwargs)
    info = result.info["feature_cache"]
    assert info["used"] is False and reason in info["reason"]


def test_checkpointing_switches_caching_off(tmp_path):
    data = ftk.DatasetAdapter.from_arrays(*_data(24))
    result = _fit(data, validation=None, epochs=2, checkpoint_dir=str(tmp_path / "ckpt"))
    info = result.info["feature_cache"]
    assert info["used"] is False and "checkpoint_dir" in info["reason"]


@pytest.mark.parametrize("kind", ["ModelCheckpoint", "BackupAndRestore"])
def test_saving_callbacks_switch_caching_off(tmp_path, kind):
    """With the cache, a ModelCheckpoint / BackupAndRestore callback would save the
    head-only model, so phase 1 trains the full model instead: result.info names the
    callback, and what ModelCheckpoint saved loads into the full model."""
    data = ftk.DatasetAdapter.from_arrays(*_data(24))
    path = tmp_path / "last.weights.h5"
    if kind == "ModelCheckpoint":
        callback = keras.callbacks.ModelCheckpoint(str(path), save_weights_only=True)
    else:
        callback = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    with pytest.warns(UserWarning, match=kind):
        result = _fit(data, validation=None, epochs=2, cache_features=True, callbacks=[callback])
    info = result.info["feature_cache"]
    assert info["used"] is False
    assert info["reason"] == f"callbacks ['{kind}'] would save the head-only model"
    assert len(result.history["loss"]) == 2
    if kind == "ModelCheckpoint":
        expected = [w.copy() for w in result.model.get_weights()]
        result.model.load_weights(str(path))  # the full model's weights after the last epoch
        for got, want in zip(result.model.get_weights(), expected, strict=True):
            np.testing.assert_array_equal(got, want)


def test_trainer_config_round_trip_and_validation():
    trainer = ftk.Trainer(cache_features=False, cache_memory_mb=64, precision="mixed_bfloat16")
    config = trainer.get_config()
    assert config["cache_features"] is False and config["cache_memory_mb"] == 64
    assert config["jit_compile"] == "auto" and config["precision"] == "mixed_bfloat16"
    again = ftk.Trainer.from_config(config)
    assert again.get_config() == config
    for bad in (
        {"cache_features": "yes"},
        {"cache_memory_mb": -1},
        {"precision": "float16"},
        {"jit_compile": "xla"},
    ):
        with pytest.raises(TrainerError):
            ftk.Trainer(**bad)


def _sources(tmp_path):
    """The same 12 labelled 8x8 RGB images as array, tf.data and directory adapters."""
    from PIL import Image

    rng = np.random.default_rng(1)
    x = rng.integers(0, 255, (12, 8, 8, 3)).astype("uint8")
    y = np.array(["a", "b", "c"] * 4)
    for i, (img, label) in enumerate(zip(x, y)):
        (tmp_path / label).mkdir(exist_ok=True)
        Image.fromarray(img).save(tmp_path / label / f"{i:02d}.png")
    return {
        "arrays": ftk.DatasetAdapter.from_arrays(x, y),
        "tf.data": ftk.DatasetAdapter.from_tf_dataset(tf.data.Dataset.from_tensor_slices((x, y))),
        "directory": ftk.DatasetAdapter.from_directory(tmp_path, image_size=(8, 8)),
    }


def test_index_dataset_replays_as_dataset_order_for_every_source(tmp_path):
    for kind, data in _sources(tmp_path).items():
        for part in (data, data.split(0.25, seed=0)[0]):
            inputs = np.concatenate([b.numpy() for b in part.inputs_dataset(5)])
            batches = part.as_dataset(4, shuffle=True, seed=3)
            indices = part.index_dataset(4, shuffle=True, seed=3)
            for _ in range(2):  # two epochs: both reshuffle the same way
                for (xb, yb), (ib, yb2) in zip(batches, indices, strict=True):
                    np.testing.assert_array_equal(xb.numpy(), inputs[ib.numpy()], err_msg=kind)
                    np.testing.assert_array_equal(yb.numpy(), yb2.numpy(), err_msg=kind)


class _RecordBatches(keras.Model):
    """Records the first feature of every example of every batch ``fit`` trains on."""

    def __init__(self) -> None:
        super().__init__()
        self.dense = keras.layers.Dense(1)
        self.batches: list[list[float]] = []

    def call(self, x):
        return self.dense(x)

    def train_step(self, data):
        x, _ = data
        self.batches.append(x.numpy()[:, 0].tolist())
        return {"seen": tf.constant(0.0)}


@pytest.mark.parametrize("shuffle", [True, False])
def test_one_iterator_for_all_epochs_gives_fit_the_batches_of_one_per_epoch(shuffle):
    """FeatureCache.train_epochs_dataset (one iterator, steps_per_epoch) hands Keras' fit,
    epoch by epoch, the very batches fit reads from train_dataset (new iterators every
    epoch): checked against Keras itself, recording what each training step receives."""
    n, batch, epochs = 11, 4, 4  # 3 batches per epoch, the last one short
    features = np.arange(n, dtype="float32")[:, None] * np.ones((1, 3), "float32")
    inputs = keras.Input((3,))
    net = keras.Model(inputs, keras.layers.Identity()(inputs), name="net")
    model = keras.Model(inputs, keras.layers.Dense(2)(net(inputs, training=False)))
    data = ftk.DatasetAdapter.from_arrays(features, np.arange(n) % 2)
    seen = {}
    for way in ("per_epoch", "one_iterator"):
        with feature_cache.FeatureCache(split_frozen(model, net), data, None, batch, 2**20) as c:
            assert c.train_steps == 3 and c.replays_epochs()
            recorder = _RecordBatches()
            recorder.compile("sgd", "mse", run_eagerly=True)
            if way == "per_epoch":
                recorder.fit(c.train_dataset(shuffle=shuffle, seed=5), epochs=epochs, verbose=0)
            else:
                ds = c.train_epochs_dataset(epochs, shuffle=shuffle, seed=5)
                recorder.fit(ds, steps_per_epoch=c.train_steps, epochs=epochs, verbose=0)
            seen[way] = recorder.batches
    assert len(seen["per_epoch"]) == epochs * 3
    assert seen["one_iterator"] == seen["per_epoch"]
    epoch_orders = [sum(seen["per_epoch"][e * 3 : e * 3 + 3], []) for e in range(epochs)]
    assert all(sorted(order) == list(range(n)) for order in epoch_orders)  # each example once
    assert (len({tuple(o) for o in epoch_orders}) > 1) is shuffle  # reshuffled every epoch


def test_head_loop_problem_names_why_keras_fit_trains_the_head():
    from finetunekit.training.engine import _head_loop_problem

    unknown = tf.data.Dataset.range(3).filter(lambda i: True).batch(2)  # cardinality unknown
    known = tf.data.Dataset.range(3).batch(2)
    assert _head_loop_problem(ftk.Trainer(), True, known) is None
    assert _head_loop_problem(ftk.Trainer(), True, unknown) == (
        "the number of validation batches is unknown"
    )
    assert _head_loop_problem(ftk.Trainer(), False, None) == (
        "the number of batches per epoch is unknown"
    )
    with_callback = ftk.Trainer(callbacks=[keras.callbacks.Callback()])
    assert _head_loop_problem(with_callback, True, None).startswith("callbacks are given")


def _cache_inputs(n: int = 11):
    """A model whose backbone doubles its 3 inputs, the adapter, and the expected features."""
    x = np.arange(3 * n, dtype="float32").reshape(n, 3)
    inputs = keras.Input((3,))
    net = keras.Model(inputs, keras.layers.Rescaling(2.0)(inputs), name="net")
    model = keras.Model(inputs, keras.layers.Dense(2)(net(inputs, training=False)))
    return split_frozen(model, net), ftk.DatasetAdapter.from_arrays(x, np.arange(n) % 2), 2 * x


def _features(cache, which: int) -> np.ndarray:
    ds = cache.train_dataset(shuffle=False, seed=None) if which == 0 else cache.validation_dataset()
    return np.concatenate([f.numpy() for f, _ in ds])


def test_the_feature_pass_runs_in_a_worker_while_meanwhile_runs_in_the_calling_thread():
    """With ``meanwhile``, the backbone runs in a worker thread, ``meanwhile`` in this one (its
    result kept), and the features are the same as without it: 2x the inputs, in order."""
    split, data, expected = _cache_inputs()
    val_split = data.split(0.25, seed=0)
    threads = {}
    real_fill = FeatureStore.fill

    def fill_spy(self, *args, **kwargs):
        threads.setdefault("pass", set()).add(threading.current_thread().name)
        return real_fill(self, *args, **kwargs)

    def meanwhile():
        threads["meanwhile"] = threading.current_thread().name
        return "traced"

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(FeatureStore, "fill", fill_spy)
        train, val = val_split
        with feature_cache.FeatureCache(split, train, val, 4, 2**20, meanwhile=meanwhile) as c:
            assert c.meanwhile_result == "traced"
            overlapped = [_features(c, 0), _features(c, 1)]
        assert threads["meanwhile"] == threading.current_thread().name
        (worker,) = threads.pop("pass")
        assert worker.startswith("finetunekit-features")
        with feature_cache.FeatureCache(split, train, val, 4, 2**20) as c:
            assert c.meanwhile_result is None
            inline = [_features(c, 0), _features(c, 1)]
        assert threads["pass"] == {threading.current_thread().name}
    for got, want, part in zip(overlapped, inline, (train, val), strict=True):
        np.testing.assert_array_equal(got, want)
        by_hand = 2.0 * np.concatenate([b.numpy() for b in part.inputs_dataset(100)])
        np.testing.assert_array_equal(got, by_hand)  # the backbone doubles its inputs
    assert sorted(np.concatenate(overlapped)[:, 0]) == sorted(expected[:, 0])  # every example


def test_an_error_in_meanwhile_stops_the_pass_and_deletes_the_cache():
    """``meanwhile`` failing: the error reaches the caller after the worker stopped (within a
    batch), and nothing is left behind (spilled features' folder deleted)."""
    split, data, _ = _cache_inputs(8 * 256)  # 8 batches: the pass uses batches of 256 here
    batches = []
    started = threading.Event()
    real_fill = FeatureStore.fill

    def fill_spy(self, compute, inputs, stop=None):
        def counting(batch):
            batches.append(len(batch))
            started.set()
            time.sleep(0.05)
            return compute(batch)

        return real_fill(self, counting, inputs, stop)

    def meanwhile():
        assert started.wait(10)  # the pass is under way
        raise RuntimeError("tracing the head failed")

    before = set(os.listdir(tempfile.gettempdir()))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(FeatureStore, "fill", fill_spy)
        cache = feature_cache.FeatureCache(split, data, None, 1, 0, meanwhile=meanwhile)
        with pytest.raises(RuntimeError, match="tracing the head failed"):
            with cache:
                pass
    assert batches and len(batches) < 8 and set(batches) == {256}  # stopped within a batch
    assert cache.stores and all(s.folder is None for s in cache.stores)  # spilled, then deleted
    assert set(os.listdir(tempfile.gettempdir())) - before == set()


def test_an_error_in_the_pass_reaches_the_caller_after_meanwhile():
    """The worker's error (here: the data changed under the cache) is raised in the calling
    thread once ``meanwhile`` has finished."""
    split, data, _ = _cache_inputs()
    done = []

    def broken(self, compute, inputs, stop=None):
        raise feature_cache.CacheUnavailable("the data yielded 3 examples instead of 11")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(FeatureStore, "fill", broken)
        cache = feature_cache.FeatureCache(
            split, data, None, 4, 2**20, meanwhile=lambda: done.append("meanwhile")
        )
        with pytest.raises(feature_cache.CacheUnavailable, match="3 examples instead of 11"):
            with cache:
                pass
    assert done == ["meanwhile"]


@pytest.mark.parametrize("class_weight", [None, "balanced"])
def test_the_cached_phase_runs_the_head_loop_traced_during_the_feature_pass(class_weight):
    """The engine traces the head's loop while the backbone computes the features
    (fit_loop.trace_head), and fit_head runs those traces: each traced once, never again."""
    from finetunekit.training import fit_loop

    traced = []
    real_trace = fit_loop.trace_head

    def trace_spy(*args, **kwargs):
        traced.append(real_trace(*args, **kwargs))
        return traced[-1]

    x, y = _data()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fit_loop, "trace_head", trace_spy)
        result = _fit(ftk.DatasetAdapter.from_arrays(x, y), class_weight=class_weight)
    assert result.info["feature_cache"]["head_loop"] == "finetunekit"
    (steps,) = traced
    assert steps.train.experimental_get_tracing_count() == 1
    assert steps.test.experimental_get_tracing_count() == 1
    assert len(result.history["loss"]) == 3
