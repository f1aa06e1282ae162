"""Scale out: the same recipe under tf.distribute (docs/distributed.md).

In-process tests check strategy names and their errors, the config, and that
finetunekit's loop for MultiWorkerMirroredStrategy gives what ``model.fit``
gives (history, callbacks). The rest run tiny recipes in subprocesses, since
TensorFlow fixes its devices and cluster when it starts:

* two logical CPU devices: ``strategy="mirrored"`` lands in the accuracy band
  of the one-device run, and with plain SGD (whose step is proportional to the
  gradient, unlike Adam's) takes the one-device steps;
* two workers on 127.0.0.1 ports, each with its own ``TF_CONFIG``: they train
  as one device does (Adam and plain SGD); one worker is killed with SIGKILL in
  epoch 2, the chief blocks, both are started again, resume from the chief's
  checkpoint and finish with the history of a run never killed; the chief
  saves a model ``ftk.load`` restores with the chief's in-memory predictions,
  the other worker writes nothing; workers that resumed at different epochs
  all raise.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf
from _events import Recorder

import finetunekit as ftk
from finetunekit.training import distribute, fit_loop
from finetunekit.training.checkpoint import STATE_NAME, CheckpointStore

EPOCHS, FINE_TUNE_EPOCHS = 2, 1  # the multi-worker recipe: both phases
TIMEOUT = 240  # seconds for one subprocess run (a loaded CI machine is slow)
SGD_ATOL = 1e-5  # plain SGD, 2 replicas vs 1 device: losses, weights (measured: 0 and 6e-8)

SCRIPT = r'''
import json, os, sys, time

spec = json.loads(sys.argv[1])
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
if spec.get("tf_config"):
    os.environ["TF_CONFIG"] = json.dumps(spec["tf_config"])
import tensorflow as tf

if spec["mode"] == "mirrored":  # before TensorFlow initialises its devices
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
import numpy as np
import finetunekit as ftk
from finetunekit.training import distribute


def images(n, seed):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = rng.integers(0, 100, (n, 16, 16, 3)).astype("uint8")
    x[y == 1] += 155  # dark or bright
    return x, y


class Events(keras.callbacks.Callback):
    """Logs the epochs it sees; the non-chief worker can stall at one (to be killed there)."""

    def on_epoch_begin(self, epoch, logs=None):
        with open(spec["events"], "a") as f:
            f.write(json.dumps({"epoch": epoch}) + "\n")
        if epoch == spec.get("stall_at") and not distribute.is_chief():
            open(spec["marker"], "w").close()
            time.sleep(600)

    def on_epoch_end(self, epoch, logs=None):
        with open(spec["events"], "a") as f:
            f.write(json.dumps({"end": epoch, "keys": sorted(logs)}) + "\n")


x, y = images(64, 0)
x_test, y_test = images(32, 1)


def recipe(entry, ckpt, callbacks):
    """The recipe of one entry: "<strategy>" or "<strategy>+<variant>"; only strategy= varies."""
    name, _, variant = entry.partition("+")
    extra = {
        "": {},  # Adam at 0.1
        # Keras SGD: momentum 0, the step is -rate * gradient, so it moves with the gradient's
        # size (Adam's step barely does). Unshuffled: Keras' fit under MirroredStrategy draws one
        # extra iterator of the data before training (to build), so a shuffled mirrored run sees
        # the next permutation each epoch; without a shuffle all strategies see the same batches.
        "sgd": {"optimizer": "sgd", "shuffle": False},
        # discriminative rates and gradual unfreezing on top
        "methods": {
            "fine_tune_learning_rate": (0.01, 0.1),
            "gradual_unfreeze": 1,
            "layer_groups": 2,
        },
    }[variant]
    trainer = ftk.Trainer(
        epochs=spec["epochs"],
        fine_tune_epochs=spec["fine_tune_epochs"],
        batch_size=16,  # 48 training examples: 3 full batches, 8 per replica on 2 replicas
        learning_rate=0.1,
        seed=0,
        verbose=spec["verbose"],
        strategy=name,
        checkpoint_dir=ckpt,
        cache_features=False if name == "default" else "auto",  # one code path to compare
        callbacks=callbacks,
        **extra,
    )
    return (
        ftk.FineTuner()
        .with_data(ftk.DatasetAdapter.from_arrays(x, y), validation=0.25)
        .with_backbone(ftk.Backbone.from_file(spec["backbone"]))
        .with_head(ftk.HeadReplacer(hidden_units=(), dropout=0.0))
        .with_trainer(trainer)
    )


out = {}
for entry in spec["strategies"]:
    first = entry == spec["strategies"][0]
    callbacks = [Events()] if spec.get("events") and first else None
    start = time.perf_counter()
    result = recipe(entry, spec.get("ckpt"), callbacks).fit()
    seconds = time.perf_counter() - start
    out[entry] = {
        "seconds": seconds,
        "accuracy": result.evaluate((x_test, y_test)).to_dict()["metrics"]["accuracy"],
        "history": result.history,
        "info": {k: result.info.get(k) for k in ("strategy", "feature_cache", "resumed_from")},
        "pred": result.predict(x_test).tolist(),
        "weights": [w.ravel().tolist() for w in result.model.get_weights()],
        "chief": distribute.is_chief(),
    }
    if spec.get("save") and first:
        result.save(spec["save"])  # every worker calls it; only the chief writes the file
if spec.get("guard_ckpt"):
    # the first recipe again, each worker with its own checkpoint_dir: the chief's holds the
    # finished run, the other worker's is empty (a disk only the chief sees)
    try:
        recipe(spec["strategies"][0], spec["guard_ckpt"], None).fit()
        out["guard"] = {"error": None}
    except Exception as exc:  # the test says which error it expects
        out["guard"] = {"error": type(exc).__name__, "message": str(exc)}
with open(spec["out"] + ".tmp", "w") as f:
    json.dump(out, f)
os.replace(spec["out"] + ".tmp", spec["out"])
sys.stdout.flush()
os._exit(0)  # skip the slow teardown of the cluster's servers
'''


# ---------------------------------------------------------------------------- in process
def test_strategy_names_are_checked_when_the_trainer_is_made() -> None:
    assert ftk.Trainer().strategy == "default"
    assert ftk.Trainer(strategy="Multi-Worker").strategy == "multi_worker"
    with pytest.raises(ftk.TrainerError, match="mirrored") as info:
        ftk.Trainer(strategy="mirored")
    assert "Received: strategy='mirored'" in str(info.value)
    with pytest.raises(ftk.TrainerError, match="Unknown strategy"):
        ftk.Trainer(strategy=2)


def test_a_parameter_server_strategy_is_refused() -> None:
    """finetunekit trains synchronously: Trainer(strategy=ParameterServerStrategy) raises."""
    # a real instance of TensorFlow's class; its __init__ would connect to a running cluster
    # of workers and parameter servers, which the check never needs
    strategy_cls = tf.distribute.experimental.ParameterServerStrategy
    parameter_server = object.__new__(strategy_cls)
    assert isinstance(parameter_server, tf.distribute.Strategy)
    with pytest.raises(ftk.TrainerError, match="ParameterServerStrategy is not supported") as info:
        ftk.Trainer(strategy=parameter_server)
    assert f"Received: strategy='{strategy_cls.__name__}'" in str(info.value)
    assert "strategy='multi_worker'" in str(info.value)


def test_get_config_stores_the_name_or_the_kind_of_an_instance() -> None:
    one = tf.distribute.OneDeviceStrategy("/cpu:0")
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0"])
    assert ftk.Trainer(strategy="tpu").get_config()["strategy"] == "tpu"
    assert ftk.Trainer(strategy=mirrored).get_config()["strategy"] == "mirrored"
    assert ftk.Trainer(strategy=one).get_config()["strategy"] == "default"
    config = ftk.Trainer(strategy=mirrored).get_config()
    assert json.loads(json.dumps(config)) == config
    assert ftk.Trainer.from_config(config).strategy == "mirrored"
    assert ftk.Trainer(strategy=mirrored).resolved_strategy() is mirrored


def test_tpu_without_a_tpu_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TPU_NAME", "COLAB_TPU_ADDR"):
        monkeypatch.delenv(name, raising=False)
    trainer = ftk.Trainer(strategy="tpu")  # resolved only when training starts
    with pytest.raises(ftk.TrainerError, match="no TPU") as info:
        trainer.resolved_strategy()
    assert "strategy='mirrored'" in str(info.value)


def test_multi_worker_without_tf_config_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ftk.TrainerError, match="TF_CONFIG") as info:
        ftk.Trainer(strategy="multi_worker").resolved_strategy()
    assert "docs/distributed.md" in str(info.value)
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ftk.TrainerError, match="not valid JSON"):
        distribute.resolve_strategy("multi_worker")
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["a:1"]}}')
    with pytest.raises(ftk.TrainerError, match="'task'"):
        distribute.resolve_strategy("multi_worker")


def test_multi_worker_after_tensorflow_started_says_to_create_it_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tf.constant(1.0)  # this process has long started TensorFlow
    config = {
        "cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]},
        "task": {"type": "worker", "index": 1},
    }
    monkeypatch.setenv("TF_CONFIG", json.dumps(config))
    with pytest.raises(ftk.TrainerError, match="before TensorFlow runs anything") as info:
        distribute.resolve_strategy("multi_worker")
    assert "resolve_strategy('multi_worker')" in str(info.value)


def test_one_process_is_the_chief_and_writes_where_asked(tmp_path: Path) -> None:
    strategy = distribute.resolve_strategy("default")
    assert distribute.is_chief() and distribute.is_chief(strategy)
    assert distribute.num_workers(strategy) == 1
    with distribute.worker_scratch(str(tmp_path / "m.keras")) as where:
        assert where == str(tmp_path / "m.keras")


def test_a_reading_checkpoint_store_writes_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "ckpt"
    store = CheckpointStore(folder, writer=False)
    state: dict[str, Any] = {"early_stopping": {}, "best": {}}
    store.commit(state, {"v0": np.zeros(3)})
    assert not folder.exists()
    assert state["latest"] == "ckpt-000001.npz" and state["seq"] == 1  # same bookkeeping


def test_data_is_sharded_by_data_and_record_files_by_file(tmp_path: Path) -> None:
    policy = tf.data.experimental.AutoShardPolicy
    arrays = ftk.DatasetAdapter.from_arrays(np.zeros((8, 4), "uint8"), np.arange(8) % 2)
    assert distribute.shard_policy(arrays.as_dataset(4, shuffle=True, seed=0)) == policy.DATA
    path = str(tmp_path / "a.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        writer.write(b"x")
    records = tf.data.TFRecordDataset([path]).batch(2)
    assert distribute.shard_policy(records) == policy.AUTO  # FILE, or DATA with too few files
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = policy.OFF
    assert distribute.shard_policy(records.with_options(options)) == policy.OFF  # the user's


def _fit_both_ways(class_weight: dict[int, float] | None = None) -> list[tuple[Any, Any]]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 6)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    train = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    val = tf.data.Dataset.from_tensor_slices((x[:12], y[:12])).batch(16)
    runs = []
    for use_loop in (False, True):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(2, activation="softmax")])
        model.compile(
            keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy", metrics=["accuracy"]
        )
        recorder = Recorder()
        kwargs = {
            "validation_data": val,
            "initial_epoch": 1,
            "epochs": 3,
            "callbacks": [recorder],
            "verbose": 0,
            "class_weight": class_weight,
        }
        if use_loop:
            strategy = tf.distribute.get_strategy()
            history = distribute._StrategyLoop(model, strategy).fit(  # noqa: SLF001
                train
                if class_weight is None
                else train.map(fit_loop.class_weight_fn(class_weight)),
                validation_freq=1,
                **{k: v for k, v in kwargs.items() if k != "class_weight"},
            )
        else:
            history = distribute.fit(model, None, train, shuffle=False, **kwargs)
        runs.append((history, recorder.events))
    return runs


def test_the_multi_worker_loop_gives_what_model_fit_gives() -> None:
    (fit_history, fit_events), (loop_history, loop_events) = _fit_both_ways()
    assert loop_history.epoch == fit_history.epoch == [1, 2]
    assert loop_history.history.keys() == fit_history.history.keys()
    for key, values in fit_history.history.items():
        np.testing.assert_allclose(loop_history.history[key], values, rtol=1e-5, err_msg=key)
    assert loop_history.params == fit_history.params
    assert loop_events == fit_events  # callbacks see the same calls with the same log keys


def test_the_loop_applies_class_weight_as_model_fit_does() -> None:
    (fit_history, _), (loop_history, _) = _fit_both_ways(class_weight={0: 1.0, 1: 3.0})
    np.testing.assert_allclose(loop_history.history["loss"], fit_history.history["loss"], rtol=1e-5)


# ---------------------------------------------------------------------------- subprocesses
@pytest.fixture(scope="module")
def backbone_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny pretrained-looking network, saved: every process loads the same weights."""
    keras.utils.set_random_seed(1)
    inputs = keras.Input((16, 16, 3))
    h = keras.layers.Rescaling(1 / 127.5, offset=-1, name="scale")(inputs)
    h = keras.layers.Conv2D(8, 3, activation="tanh", name="c1")(h)
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    net = keras.Model(inputs, keras.layers.Dense(3, name="old_head")(h), name="tiny")
    path = str(tmp_path_factory.mktemp("backbone") / "tiny.keras")
    net.save(path)
    return path


def _start(spec: dict[str, Any], log: Path) -> subprocess.Popen[bytes]:
    script = Path(spec["out"]).with_name("worker.py")
    script.write_text(SCRIPT)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}
    env["CUDA_VISIBLE_DEVICES"] = ""  # CPU only, also on a machine with GPUs
    env.pop("TF_CONFIG", None)
    with open(log, "wb") as handle:  # a file, not a pipe: two chatty workers never block
        return subprocess.Popen(
            [sys.executable, str(script), json.dumps(spec)],
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )


def _wait(procs: list[subprocess.Popen[bytes]], logs: list[Path]) -> None:
    deadline = time.monotonic() + TIMEOUT
    for proc, log in zip(procs, logs, strict=True):
        try:
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for other in procs:
                other.kill()
            pytest.fail(f"timed out:\n{log.read_text(errors='replace')[-3000:]}")
        assert proc.returncode == 0, log.read_text(errors="replace")[-3000:]


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@pytest.fixture(scope="module")
def device_runs(tmp_path_factory: pytest.TempPathFactory, backbone_file: str) -> dict[str, Any]:
    """The recipe on one device, then with strategy="mirrored" over two logical CPUs (Adam,
    Adam with the fine-tuning methods, plain SGD)."""
    root = tmp_path_factory.mktemp("devices")
    spec = {
        "mode": "mirrored",
        "strategies": [
            "default",
            "mirrored",
            "default+methods",
            "mirrored+methods",
            "default+sgd",
            "mirrored+sgd",
        ],
        "backbone": backbone_file,
        "epochs": EPOCHS,
        "fine_tune_epochs": FINE_TUNE_EPOCHS,
        "verbose": 0,
        "out": str(root / "out.json"),
    }
    log = root / "log.txt"
    _wait([_start(spec, log)], [log])
    runs: dict[str, Any] = json.loads(Path(spec["out"]).read_text())
    return runs


@pytest.mark.slow
def test_two_cpu_devices_mirrored_match_one_device(device_runs: dict[str, Any]) -> None:
    one, two = device_runs["default"], device_runs["mirrored"]
    assert one["info"]["strategy"]["replicas"] == 1
    assert two["info"]["strategy"] == {
        "name": "mirrored",
        "class": "MirroredStrategy",
        "replicas": 2,
        "workers": 1,
        "chief": True,
    }
    assert two["history"]["phase"] == [1] * EPOCHS + [2] * FINE_TUNE_EPOCHS
    assert one["accuracy"] >= 0.8 and two["accuracy"] >= 0.8, (one["accuracy"], two["accuracy"])
    assert abs(one["accuracy"] - two["accuracy"]) <= 0.1
    # the global batch is split, the gradients averaged: the same training, but Keras' fit under
    # MirroredStrategy draws one extra iterator of the shuffled data before training, so each
    # epoch sees the next permutation (measured: loss within 0.003, also with the methods;
    # unshuffled, the SGD test below matches to 6e-8)
    np.testing.assert_allclose(two["history"]["loss"], one["history"]["loss"], atol=0.01)
    # discriminative rates (one Keras optimizer per layer group) and gradual unfreezing
    # train the same under the strategy
    one_m, two_m = device_runs["default+methods"], device_runs["mirrored+methods"]
    assert two_m["history"]["unfrozen_groups"] == [0] * EPOCHS + [1, 2][:FINE_TUNE_EPOCHS]
    np.testing.assert_allclose(two_m["history"]["loss"], one_m["history"]["loss"], atol=0.01)
    assert two_m["history"]["loss"] != two["history"]["loss"]  # the methods changed training
    print(
        f"\none device: accuracy {one['accuracy']:.3f}, fit {one['seconds']:.1f} s; "
        f"two devices: accuracy {two['accuracy']:.3f}, fit {two['seconds']:.1f} s"
    )


def _assert_same_sgd_training(run: dict[str, Any], one_device: dict[str, Any]) -> None:
    """Plain SGD (step = -rate * gradient): losses and final weights as on one device.

    A gradient off by the replica count changes every step's size, which Adam would hide.
    """
    assert run["history"]["phase"] == one_device["history"]["phase"]
    for key in ("loss", "val_loss"):
        np.testing.assert_allclose(
            run["history"][key], one_device["history"][key], rtol=0, atol=SGD_ATOL, err_msg=key
        )
    assert len(run["weights"]) == len(one_device["weights"])
    for i, (got, want) in enumerate(zip(run["weights"], one_device["weights"], strict=True)):
        np.testing.assert_allclose(got, want, rtol=0, atol=SGD_ATOL, err_msg=f"weight {i}")


@pytest.mark.slow
def test_sgd_on_two_cpu_devices_takes_the_steps_of_one_device(device_runs: dict[str, Any]) -> None:
    """Mirrored over two devices: every SGD step is the one-device step (loss averaged over
    the global batch, gradients summed over the replicas), to rounding."""
    one, two = device_runs["default+sgd"], device_runs["mirrored+sgd"]
    assert two["info"]["strategy"]["replicas"] == 2
    assert one["history"]["loss"][-1] < one["history"]["loss"][0] - 0.1  # it trained
    _assert_same_sgd_training(two, one)


def _worker_specs(root: Path, run: str, backbone: str, **settings: Any) -> list[dict[str, Any]]:
    """The specs of two workers on fresh 127.0.0.1 ports, each with its own TF_CONFIG."""
    cluster = {"worker": [f"127.0.0.1:{p}" for p in _free_ports(2)]}
    return [
        {
            "mode": "worker",
            "tf_config": {"cluster": cluster, "task": {"type": "worker", "index": i}},
            "strategies": ["multi_worker"],
            "backbone": backbone,
            "epochs": EPOCHS,
            "fine_tune_epochs": FINE_TUNE_EPOCHS,
            "verbose": 2,
            "events": str(root / f"events-{run}-{i}.jsonl"),
            "marker": str(root / f"stalled-{run}"),
            "out": str(root / f"out-{run}-{i}.json"),
            **settings,
        }
        for i in range(2)
    ]


def _run_workers(specs: list[dict[str, Any]], root: Path, run: str) -> dict[str, Any]:
    logs = [root / f"log-{run}-{i}.txt" for i in range(len(specs))]
    start = time.perf_counter()
    _wait([_start(spec, log) for spec, log in zip(specs, logs, strict=True)], logs)
    outputs = [json.loads(Path(s["out"]).read_text()) for s in specs]
    return {
        "results": [out["multi_worker"] for out in outputs],  # the first (Adam) recipe
        "outputs": outputs,  # every recipe the workers ran, and the guard's outcome
        "events": [
            [json.loads(line) for line in Path(s["events"]).read_text().splitlines()] for s in specs
        ],
        "chief_log": logs[0].read_text(errors="replace"),
        "seconds": time.perf_counter() - start,
    }


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory: pytest.TempPathFactory, backbone_file: str) -> dict[str, Any]:
    """Two workers train the recipe (both phases; every worker calls result.save), then the
    plain-SGD recipe, in the same processes."""
    root = tmp_path_factory.mktemp("two_workers")
    save = str(root / "model" / "final.keras")
    specs = _worker_specs(
        root, "clean", backbone_file, save=save, strategies=["multi_worker", "multi_worker+sgd"]
    )
    run = _run_workers(specs, root, "clean")
    return {**run, "model": save}


@pytest.fixture(scope="module")
def resumed_workers(tmp_path_factory: pytest.TempPathFactory, backbone_file: str) -> dict[str, Any]:
    """Two workers train; the non-chief is SIGKILLed in epoch 2; both restart and finish.

    Then, in the same processes, both run the recipe again with their own checkpoint_dir: the
    chief's holds the finished run, the other worker's is empty (a disk only the chief sees).
    """
    root = tmp_path_factory.mktemp("resumed_workers")
    ckpt = root / "ckpt"
    first = _worker_specs(root, "first", backbone_file, ckpt=str(ckpt), stall_at=1)
    logs = [root / f"log-first-{i}.txt" for i in range(2)]
    procs = [_start(spec, log) for spec, log in zip(first, logs, strict=True)]
    deadline = time.monotonic() + TIMEOUT
    state_path = ckpt / STATE_NAME
    while True:  # until the non-chief stalls in epoch 2 and the chief has saved epoch 1
        done = state_path.exists() and len(json.loads(state_path.read_text())["rows"]) >= 1
        if done and Path(first[1]["marker"]).exists():
            break
        if any(p.poll() is not None for p in procs) or time.monotonic() > deadline:
            for p in procs:
                p.kill()
            pytest.fail("the first run did not reach epoch 2:\n" + logs[0].read_text()[-3000:])
        time.sleep(0.1)
    procs[1].send_signal(signal.SIGKILL)  # one worker dies during training
    procs[1].wait(timeout=30)
    time.sleep(1.0)
    # what the chief did alone in that second: blocked in the next all-reduce, it should have
    # neither exited nor failed nor saved another epoch (measured: TensorFlow aborts the
    # all-reduce with UnavailableError 6 s after the kill, and the chief exits 6 s later)
    chief_alive = procs[0].poll() is None
    chief_failed = "Traceback" in logs[0].read_text(errors="replace")
    epochs_saved = len(json.loads(state_path.read_text())["rows"])
    chief_wrote_results = Path(first[0]["out"]).exists()
    procs[0].kill()
    procs[0].wait(timeout=30)
    second = _worker_specs(root, "second", backbone_file, ckpt=str(ckpt))
    second[0]["guard_ckpt"] = str(ckpt)  # the finished run
    second[1]["guard_ckpt"] = str(root / "only-on-worker-1")  # nothing there
    return {
        **_run_workers(second, root, "second"),
        "chief_alive_after_kill": chief_alive,
        "chief_failed_after_kill": chief_failed,
        "epochs_saved_after_kill": epochs_saved,
        "chief_wrote_results_alone": chief_wrote_results,
    }


@pytest.mark.slow
def test_two_workers_finish_and_only_the_chief_saves_the_model(
    two_workers: dict[str, Any], device_runs: dict[str, Any]
) -> None:
    chief, other = two_workers["results"]
    assert chief["chief"] and not other["chief"]
    assert chief["info"]["strategy"]["replicas"] == 2 and chief["info"]["strategy"]["workers"] == 2
    assert chief["info"]["feature_cache"]["used"] is False
    assert "strategy" in chief["info"]["feature_cache"]["reason"]
    assert chief["history"] == other["history"]  # the same global metrics on both
    one_device = device_runs["default"]["history"]  # the batches are split, the sums equal
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        np.testing.assert_allclose(chief["history"][key], one_device[key], atol=1e-5, err_msg=key)
    np.testing.assert_allclose(other["pred"], chief["pred"], atol=1e-6)  # identical weights
    assert chief["accuracy"] >= 0.8, chief["accuracy"]
    # plain SGD, in the same processes: every step is the one-device step
    chief_sgd, other_sgd = (out["multi_worker+sgd"] for out in two_workers["outputs"])
    assert chief_sgd["info"]["strategy"]["workers"] == 2
    assert chief_sgd["history"] == other_sgd["history"]
    _assert_same_sgd_training(chief_sgd, device_runs["default+sgd"])
    folder = Path(two_workers["model"]).parent
    assert sorted(os.listdir(folder)) == ["final.keras"]  # the other worker wrote nothing here
    loaded = ftk.load(two_workers["model"])
    x_test = np.random.default_rng(1).integers(0, 100, (32, 16, 16, 3)).astype("uint8")
    x_test[np.arange(32) % 2 == 1] += 155  # the script's test images
    np.testing.assert_allclose(loaded.predict(x_test), chief["pred"], atol=1e-5)
    log = two_workers["chief_log"]  # the Keras progress bar, as on one machine
    assert f"Epoch {EPOCHS + FINE_TUNE_EPOCHS}/{EPOCHS + FINE_TUNE_EPOCHS}" in log
    assert "val_loss" in log
    print(
        f"\ntwo workers: accuracy {chief['accuracy']:.3f}, fit {chief['seconds']:.1f} s, "
        f"processes {two_workers['seconds']:.1f} s"
    )


@pytest.mark.slow
def test_a_killed_worker_resumes_from_the_last_checkpoint(
    resumed_workers: dict[str, Any], two_workers: dict[str, Any]
) -> None:
    total = EPOCHS + FINE_TUNE_EPOCHS
    # one worker dead: the chief is blocked (alive, no error), it cannot train on alone
    assert resumed_workers["chief_alive_after_kill"]
    assert not resumed_workers["chief_failed_after_kill"]
    assert resumed_workers["epochs_saved_after_kill"] == 1
    assert not resumed_workers["chief_wrote_results_alone"]
    chief, other = resumed_workers["results"]
    assert chief["history"] == other["history"]
    np.testing.assert_allclose(other["pred"], chief["pred"], atol=1e-6)
    assert chief["accuracy"] >= 0.8, chief["accuracy"]
    for result, events in zip(resumed_workers["results"], resumed_workers["events"], strict=True):
        clean = two_workers["results"][0]["history"]  # the run that was never killed
        assert result["history"].keys() == clean.keys()
        for key, values in clean.items():  # exactly the history: every metric of every epoch
            np.testing.assert_allclose(result["history"][key], values, atol=1e-6, err_msg=key)
        assert result["info"]["resumed_from"] == {"phase": 1, "epoch": 0, "epochs_done": 1}
        assert result["history"]["epoch"] == list(range(total))
        assert result["history"]["phase"] == [1] * EPOCHS + [2] * FINE_TUNE_EPOCHS
        assert all(np.isfinite(result["history"]["val_loss"]))
        begun = [e["epoch"] for e in events if "epoch" in e]
        assert begun == list(range(1, total))  # the user's callback: only the missing epochs
        ended = [e for e in events if "end" in e]
        assert all(e["keys"] == ["accuracy", "loss", "val_accuracy", "val_loss"] for e in ended)


@pytest.mark.slow
def test_workers_that_resumed_at_different_epochs_all_raise(
    resumed_workers: dict[str, Any],
) -> None:
    """A checkpoint_dir only the chief sees: the chief resumes the finished run, the other
    worker would start afresh; both raise a TrainerError instead of running different epochs."""
    for index, out in enumerate(resumed_workers["outputs"]):
        guard = out["guard"]
        assert guard["error"] == "TrainerError", (index, guard)
        message = guard["message"]
        assert "The workers disagree on the epochs done in checkpoint_dir" in message
        done = EPOCHS + FINE_TUNE_EPOCHS if index == 0 else 0  # what this worker read
        assert f"the epochs done in checkpoint_dir={done}" in message, message
        assert "storage every worker reads" in message


class _Replicas:
    """Stands in for a strategy: only the replica count matters to the batch check."""

    def __init__(self, n: int) -> None:
        self.num_replicas_in_sync = n


def test_a_batch_that_does_not_split_over_the_replicas_is_refused_before_building(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Measured: MirroredStrategy on 2 logical CPUs, batch 5, fails in TensorFlow's AddN."""
    distribute.check_batch_size(_Replicas(2), 4)
    distribute.check_batch_size(_Replicas(1), 5)
    with pytest.raises(ftk.TrainerError, match="split evenly") as info:
        distribute.check_batch_size(_Replicas(2), 5)
    assert "batch_size=4 or 6" in str(info.value) and "Received" in str(info.value)
    with pytest.raises(ftk.TrainerError, match="batch_size=8 or 16"):
        distribute.check_batch_size(_Replicas(8), 12)
    # the Trainer checks it when it resolves its strategy (fit, before building)
    monkeypatch.setattr(distribute, "resolve_strategy", lambda strategy: _Replicas(2))
    with pytest.raises(ftk.TrainerError, match="split evenly"):
        ftk.Trainer(batch_size=5).resolved_strategy()
    assert ftk.Trainer(batch_size=6).resolved_strategy().num_replicas_in_sync == 2
