"""Resumable training: Trainer(checkpoint_dir=...) survives SIGKILL at any instant.

The kill tests run tiny recipes in child processes (this file run as a script,
see ``_child``). Each scenario's process SIGKILLs itself at a chosen point: in
the middle of an epoch of either phase, half-way through writing a checkpoint
file or ``state.json``, with early-stopping patience partly used, after the
best epoch of a ``keep_best`` run. Then one fresh process resumes every
scenario, and each resumed run must be bit-identical (history, every weight,
predictions) to its recipe run uninterrupted, without a checkpoint folder, in
another fresh process. Processes are few (TensorFlow's import dominates their
cost): one for the references, one per kill, one for all the restarts.

In-process tests check the run fingerprint (a checkpoint of other trainer
settings, data, loss or model is refused), the removal of stray temporary
files, and a write that fails with an exception.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import traceback
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
from _crash import Crash, CrashAt  # tests/ is on sys.path under pytest and in a child script

import finetunekit as ftk
from finetunekit.training.checkpoint import STATE_NAME, CheckpointStore

LR, FT_LR = 1e-2, 1e-3
#: The main recipe: 2 frozen epochs, then 2 with the top conv unfrozen.
MAIN: dict[str, Any] = {"epochs": 2, "fine_tune_epochs": 2}
#: Phase 2 plateaus (val_loss measured without early stopping: 2.0029 1.5009 1.2708 |
#: 1.0909 1.1085 1.1011 1.0992): epoch 3 is the phase's best, 4 and 5 are worse, so
#: patience 2 stops it after epoch 5.
EARLY: dict[str, Any] = {
    "epochs": 3,
    "fine_tune_epochs": 4,
    "fine_tune_learning_rate": 1e-2,
    "early_stopping": 2,
}
#: Phase 2's rate is far too high (measured val_loss: 1.3299 1.1888 1.0911 | 1.9879 2.1130
#: 2.0823), so the best epoch of the run is epoch 2, the last of phase 1. The patience of 3
#: never stops a phase; it makes the folder hold three files at once (latest, phase-best,
#: run-best).
BEST: dict[str, Any] = {
    "learning_rate": 0.03,
    "epochs": 3,
    "fine_tune_epochs": 3,
    "fine_tune_learning_rate": 3.0,
    "early_stopping": 3,
    "keep_best": True,
}


# ---------------------------------------------------------------------- the recipe


def _net() -> keras.Model:
    keras.utils.set_random_seed(1)
    inputs = keras.Input((16, 16, 1))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="c1")(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.Conv2D(4, 3, activation="relu", name="c2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(3, activation="softmax", name="old_head")(x)
    return keras.Model(inputs, outputs, name="tiny")


def _data(n: int = 64, size: int = 16) -> ftk.DatasetAdapter:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (n, size, size)).astype("uint8")
    return ftk.DatasetAdapter.from_arrays(x, np.arange(n) % 3)


def _new_images() -> np.ndarray:
    return np.random.default_rng(5).integers(0, 255, (8, 16, 16)).astype("uint8")


def _tuner(
    ckpt: str | Path | None,
    callbacks: list[keras.callbacks.Callback] | None = None,
    *,
    data: ftk.DatasetAdapter | None = None,
    validation: float = 0.25,
    head: ftk.HeadReplacer | None = None,
    **trainer: Any,
) -> ftk.FineTuner:
    """The recipe of every test; ``trainer`` overrides the Trainer settings."""
    settings: dict[str, Any] = {
        "learning_rate": LR,
        "fine_tune_learning_rate": FT_LR,
        "unfreeze": 1,
        "batch_size": 8,
        "seed": 0,
        "verbose": 0,
        "checkpoint_dir": None if ckpt is None else str(ckpt),
        "callbacks": list(callbacks or []),
        **MAIN,
        **trainer,
    }
    return (
        ftk.FineTuner()
        .with_data(data or _data(), validation=validation)
        .with_backbone(ftk.Backbone.from_model(_net()))
        .with_head(head or ftk.HeadReplacer(hidden_units=(8,), dropout=0.2))
        .with_trainer(ftk.Trainer(**settings))
    )


# ---------------------------------------------------------------------- the child processes


class _Probe(keras.callbacks.Callback):
    """Logs each epoch's trainable backbone layers and rate; SIGKILLs at batch 1 of ``kill_epoch``."""

    def __init__(self, log: str, kill_epoch: int | None) -> None:
        super().__init__()
        self.log, self.kill_epoch, self.epoch = log, kill_epoch, -1

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        self.epoch = epoch
        layers = {layer.name: layer for layer in self.model.layers}
        backbone = layers.get("backbone")  # absent when phase 1 trains on cached features
        row = {
            "pid": os.getpid(),
            "epoch": epoch,
            "trainable": None
            if backbone is None
            else sorted(lay.name for lay in backbone.layers if lay.trainable and lay.weights),
            "lr": float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)),
        }
        with open(self.log, "a") as handle:
            handle.write(json.dumps(row) + "\n")

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        if self.epoch == self.kill_epoch and batch == 1:  # two batches of the epoch done
            os.kill(os.getpid(), signal.SIGKILL)


#: The job the child process is running (read by the hooks of :func:`_install_hooks`).
_JOB: dict[str, Any] = {}


def _die_half_written(handle: Any, data: bytes) -> None:
    """Writes half of ``data`` to the open temporary file, makes it durable, SIGKILLs itself."""
    handle.write(data[: len(data) // 2])
    handle.flush()
    os.fsync(handle.fileno())
    os.kill(os.getpid(), signal.SIGKILL)


def _install_hooks() -> Callable[..., None]:
    """Wraps the checkpoint writers (to die half-way through a write, to log every commit).

    ``_JOB["kill"]`` ``{"at": "npz" | "state", "commit": k}`` SIGKILLs the process
    half-way through writing the ``ckpt-<n>.npz`` file / ``state.json`` of the
    job's ``k``-th checkpoint. After every checkpoint the folder's files and the
    committed state go to ``_JOB["commits"]``. Returns the real ``np.savez``.
    """
    from finetunekit.training import checkpoint

    real_savez, real_write, real_commit = np.savez, checkpoint._write_bytes, CheckpointStore.commit

    def kills_now(kind: str) -> bool:
        _JOB[kind] = _JOB.get(kind, 0) + 1
        kill = _JOB.get("kill") or {}
        return kill.get("at") == kind and _JOB[kind] == kill["commit"]

    def savez(file: Any, *args: Any, **arrays: Any) -> None:
        if kills_now("npz"):
            buffer = io.BytesIO()
            real_savez(buffer, *args, **arrays)
            _die_half_written(file, buffer.getvalue())
        real_savez(file, *args, **arrays)

    def write_bytes(handle: Any, data: bytes) -> None:
        if kills_now("state"):
            _die_half_written(handle, data)
        real_write(handle, data)

    def commit(store: CheckpointStore, state: dict[str, Any], arrays: Any) -> None:
        real_commit(store, state, arrays)
        row = {"files": sorted(os.listdir(store.directory)), "state": store.read_state()}
        with open(_JOB["commits"], "a") as handle:
            handle.write(json.dumps(row) + "\n")

    np.savez = savez  # the checkpoint writer's np.savez
    checkpoint._write_bytes = write_bytes  # writes state.json
    CheckpointStore.commit = commit  # type: ignore[method-assign]
    return real_savez


def _child(jobs: list[dict[str, Any]]) -> None:
    """Runs each job's recipe in turn; writes its result, or the error it raised."""
    savez = _install_hooks()
    for job in jobs:
        _JOB.clear()
        _JOB.update(job)
        kill = job.get("kill") or {}
        probe = _Probe(job["probe"], kill.get("epoch") if kill.get("at") == "batch" else None)
        try:
            result = _tuner(job["ckpt"], [probe], **job["recipe"]).fit()
            backbone = result.model.get_layer("backbone")
            weights = {f"w{i}": w for i, w in enumerate(result.model.get_weights())}
            savez(job["arrays"], predictions=result.predict(_new_images()), **weights)
            out = {
                "history": result.history,
                "resumed_from": result.info.get("resumed_from"),
                "trainable": sorted(
                    lay.name for lay in backbone.layers if lay.trainable and lay.weights
                ),
            }
        except Exception:
            out = {"error": traceback.format_exc()}
        with open(job["out"], "w") as handle:
            json.dump(out, handle)
        keras.backend.clear_session()


# ---------------------------------------------------------------------- the parent


def _start(jobs: list[dict[str, Any]]) -> subprocess.CompletedProcess[str]:
    """Runs ``jobs`` in one fresh Python process (this file as a script)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, __file__, json.dumps(jobs)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


@dataclass
class Outcome:
    """What one job left: its result, weights and predictions, or its error."""

    result: dict[str, Any] | None = None
    arrays: dict[str, np.ndarray] | None = None
    error: str | None = None


@dataclass
class Experiment:
    """One recipe in one folder: the jobs run on it and what they logged."""

    root: Path
    recipe: dict[str, Any]
    ckpt: Path | None
    jobs: int = 0

    def job(self, kill: dict[str, Any] | None = None, probe: str = "probe") -> dict[str, Any]:
        """A job running the recipe (until it SIGKILLs itself as ``kill`` says)."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.jobs += 1
        return {
            "ckpt": None if self.ckpt is None else str(self.ckpt),
            "recipe": self.recipe,
            "kill": kill,
            "probe": str(self.root / f"{probe}.jsonl"),
            "commits": str(self.root / "commits.jsonl"),
            "out": str(self.root / f"out{self.jobs}.json"),
            "arrays": str(self.root / f"arrays{self.jobs}.npz"),
        }

    @staticmethod
    def outcome(job: dict[str, Any], output: str) -> Outcome:
        out = Path(job["out"])
        if not out.exists():
            return Outcome(error=f"the job left no result; the process wrote:\n{output}")
        result = json.loads(out.read_text())
        if "error" in result:
            return Outcome(error=result["error"])
        with np.load(job["arrays"]) as saved:
            return Outcome(result, {key: saved[key] for key in saved.files})

    def probes(self, probe: str = "probe") -> list[dict[str, Any]]:
        path = self.root / f"{probe}.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def commit_log(self) -> list[dict[str, Any]]:
        lines = (self.root / "commits.jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines]

    def files(self) -> list[str]:
        assert self.ckpt is not None
        return sorted(os.listdir(self.ckpt))


#: The uninterrupted recipes; the kill scenarios: (recipe, where the process kills itself).
RECIPES = {"main": MAIN, "early": EARLY, "best": BEST}
SCENARIOS: dict[str, tuple[str, dict[str, Any]]] = {
    "phase1": ("main", {"at": "batch", "epoch": 1}),
    "phase2": ("main", {"at": "batch", "epoch": 3}),
    "npz": ("main", {"at": "npz", "commit": 2}),  # epoch 1's checkpoint file
    "state": ("main", {"at": "state", "commit": 3}),  # the end-of-phase-1 state.json
    "early": ("early", {"at": "batch", "epoch": 5}),
    "best": ("best", {"at": "batch", "epoch": 5}),
}


@dataclass
class Interrupted:
    """A run killed once in its own process, then resumed in a fresh one."""

    experiment: Experiment
    state_at_kill: dict[str, Any]
    files_at_kill: list[str]
    cut_short: dict[str, bool]  # temporary files left by the kill: non-empty and unreadable?
    killed_pid: int
    resumed: Outcome
    again: Outcome | None = None  # phase2 only: the finished run started once more

    def resumed_epochs(self) -> list[int]:
        return [row["epoch"] for row in self.experiment.probes() if row["pid"] != self.killed_pid]


def _is_cut_short(path: Path) -> bool:
    if path.stat().st_size == 0:
        return False
    if path.name.endswith(".npz"):
        return not zipfile.is_zipfile(path)
    try:
        json.loads(path.read_text())
    except ValueError:
        return True
    return False


def _add_stray_temporary_files(folder: Path) -> None:
    (folder / ".tmp-stray1-ckpt-000099.npz").write_bytes(b"PK\x03\x04 cut short")
    (folder / ".tmp-stray2-state.json").write_text('{"format": ')


@pytest.fixture(scope="module")
def references(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    """Each recipe uninterrupted, without a checkpoint folder, in a fresh process.

    Phase 1 does not train on cached features either, as ``checkpoint_dir``
    switches the feature cache off: cached and uncached runs agree only within
    float tolerance (docs/performance.md; measured with the BEST recipe: one of
    the 32 head-kernel values 2.98e-08 apart after phase 1).
    """
    root = tmp_path_factory.mktemp("references")
    jobs = {
        name: Experiment(root / name, {**recipe, "cache_features": False}, None).job()
        for name, recipe in RECIPES.items()
    }
    proc = _start(list(jobs.values()))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return {name: Experiment.outcome(job, proc.stderr) for name, job in jobs.items()}


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Interrupted]:
    """Every scenario killed in its own process, then all resumed in one fresh process.

    Before the restart, stray temporary files are added to the ``best`` folder;
    after it, the finished ``phase2`` run is started once more.
    """
    root = tmp_path_factory.mktemp("interrupted")
    experiments, at_kill = {}, {}
    for name, (recipe, kill) in SCENARIOS.items():
        experiment = Experiment(root / name, RECIPES[recipe], root / name / "ckpt")
        proc = _start([experiment.job(kill)])
        assert proc.returncode == -signal.SIGKILL, (name, proc.stdout + proc.stderr)
        assert experiment.ckpt is not None
        temporary = [p for p in experiment.ckpt.iterdir() if p.name.startswith(".tmp-")]
        at_kill[name] = (
            json.loads((experiment.ckpt / STATE_NAME).read_text()),
            experiment.files(),
            {p.name: _is_cut_short(p) for p in temporary},
            experiment.probes()[-1]["pid"],
        )
        experiments[name] = experiment
    assert experiments["best"].ckpt is not None
    _add_stray_temporary_files(experiments["best"].ckpt)
    jobs = {name: experiment.job() for name, experiment in experiments.items()}
    again = experiments["phase2"].job(probe="probe-again")
    proc = _start([*jobs.values(), again])
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    runs = {
        name: Interrupted(experiments[name], *at_kill[name], Experiment.outcome(job, output))
        for name, job in jobs.items()
    }
    runs["phase2"].again = Experiment.outcome(again, output)
    return runs


def _assert_same_run(got: Outcome, want: Outcome) -> None:
    """Bit-identical: the same history floats, every weight and every prediction."""
    assert got.error is None, got.error
    assert want.error is None, want.error
    assert got.result is not None and want.result is not None
    assert got.arrays is not None and want.arrays is not None
    assert got.result["history"] == want.result["history"]
    assert sorted(got.arrays) == sorted(want.arrays)
    for key, value in want.arrays.items():
        np.testing.assert_array_equal(got.arrays[key], value, err_msg=key)


def _resumed_from(run: Interrupted) -> dict[str, Any]:
    assert run.resumed.error is None, run.resumed.error
    assert run.resumed.result is not None
    return run.resumed.result["resumed_from"]


def _no_temporary_files(folder: Path | None) -> bool:
    assert folder is not None
    return not [name for name in os.listdir(folder) if name.startswith(".tmp-")]


# ---------------------------------------------------------------------- SIGKILL mid-epoch


def _check_phases(probes: list[dict[str, Any]], epochs: int = 2) -> None:
    for row in probes:
        if row["epoch"] < epochs:
            assert row["trainable"] == [], row  # phase 1: frozen backbone
            assert row["lr"] == pytest.approx(LR), row
        else:
            assert row["trainable"] == ["c2"], row  # phase 2: top layer only
            assert row["lr"] == pytest.approx(FT_LR), row


@pytest.mark.slow
def test_sigkill_mid_epoch_in_phase_1_resumes_bit_identical(
    interrupted: dict[str, Interrupted], references: dict[str, Outcome]
) -> None:
    """Killed in epoch 1: resumes after epoch 0 and ends equal to the uninterrupted run."""
    run = interrupted["phase1"]
    assert [row["epoch"] for row in run.state_at_kill["rows"]] == [0]
    assert run.state_at_kill["current"]["phase"] == 1 and run.state_at_kill["completed"] == []
    assert _resumed_from(run) == {"phase": 1, "epoch": 0, "epochs_done": 1}
    assert run.resumed_epochs() == [1, 2, 3]  # continues after epoch 0
    _check_phases(run.experiment.probes())
    assert run.resumed.result is not None
    assert run.resumed.result["trainable"] == ["c2"]  # unfreeze=1: BatchNorm stays frozen
    _assert_same_run(run.resumed, references["main"])


@pytest.mark.slow
def test_sigkill_mid_epoch_in_phase_2_resumes_bit_identical(
    interrupted: dict[str, Interrupted], references: dict[str, Outcome]
) -> None:
    """Killed in epoch 3: phase 1 is not run again; the end equals the uninterrupted run."""
    run = interrupted["phase2"]
    assert [row["epoch"] for row in run.state_at_kill["rows"]] == [0, 1, 2]
    assert run.state_at_kill["completed"] == [1] and run.state_at_kill["current"]["phase"] == 2
    assert _resumed_from(run) == {"phase": 2, "epoch": 2, "epochs_done": 3}
    assert run.resumed_epochs() == [3]
    _check_phases(run.experiment.probes())
    _assert_same_run(run.resumed, references["main"])


@pytest.mark.slow
def test_finished_run_returns_at_once_with_the_same_result(
    interrupted: dict[str, Interrupted], references: dict[str, Outcome]
) -> None:
    """Started again on a finished run's folder, nothing is trained and the result is the same."""
    run = interrupted["phase2"]
    assert run.again is not None and run.again.error is None, run.again
    assert run.experiment.probes("probe-again") == []  # no epoch began
    assert run.again.result is not None
    assert run.again.result["resumed_from"] == {"phase": 2, "epoch": 3, "epochs_done": 4}
    _assert_same_run(run.again, references["main"])


# ---------------------------------------------------------------------- SIGKILL while writing


@pytest.mark.slow
def test_sigkill_while_writing_a_checkpoint_file_resumes_from_the_previous_one(
    interrupted: dict[str, Interrupted], references: dict[str, Outcome]
) -> None:
    """Killed half-way through epoch 1's ``ckpt`` file: epoch 0's checkpoint is used."""
    run = interrupted["npz"]
    assert [row["epoch"] for row in run.state_at_kill["rows"]] == [0]
    assert run.state_at_kill["latest"] == "ckpt-000001.npz"
    [(partial, cut_short)] = run.cut_short.items()  # the one temporary file
    assert partial.endswith("-ckpt-000002.npz") and cut_short, run.files_at_kill
    assert "ckpt-000002.npz" not in run.files_at_kill
    assert _resumed_from(run) == {"phase": 1, "epoch": 0, "epochs_done": 1}
    assert run.resumed_epochs() == [1, 2, 3]
    assert _no_temporary_files(run.experiment.ckpt)  # removed on the restart
    _assert_same_run(run.resumed, references["main"])


@pytest.mark.slow
def test_sigkill_while_writing_state_json_resumes_from_the_previous_state(
    interrupted: dict[str, Interrupted], references: dict[str, Outcome]
) -> None:
    """Killed half-way through the end-of-phase-1 ``state.json``: the new file is ignored."""
    run = interrupted["state"]
    assert [row["epoch"] for row in run.state_at_kill["rows"]] == [0, 1]
    assert run.state_at_kill["completed"] == [] and run.state_at_kill["latest"] == "ckpt-000002.npz"
    # the new checkpoint file was complete, but state.json (the commit point) was not replaced
    assert "ckpt-000003.npz" in run.files_at_kill
    [(partial, cut_short)] = run.cut_short.items()
    assert partial.endswith("-state.json") and cut_short, run.files_at_kill
    assert _resumed_from(run) == {"phase": 1, "epoch": 1, "epochs_done": 2}
    assert run.resumed_epochs() == [2, 3]
    assert _no_temporary_files(run.experiment.ckpt)
    _assert_same_run(run.resumed, references["main"])


# ---------------------------------------------------------------------- early stopping, keep_best


def _waits(history: dict[str, list[Any]], monitor: str = "val_loss") -> list[int]:
    """Epochs without improvement after each epoch, per phase (computed from the history)."""
    waits, best, phase, wait = [], None, None, 0
    for p, value in zip(history["phase"], history[monitor], strict=True):
        if p != phase:
            phase, best, wait = p, None, 0
        if best is None or value < best:
            best, wait = value, 0
        else:
            wait += 1
        waits.append(wait)
    return waits


@pytest.mark.slow
def test_sigkill_with_early_stopping_patience_partly_used(
    interrupted: dict[str, Interrupted], references: dict[str, Outcome]
) -> None:
    """Killed in epoch 5 after one epoch without improvement: stops after 5 like the reference."""
    reference = references["early"]
    assert reference.result is not None, reference.error
    history = reference.result["history"]
    # the premise, from the reference's own history: phase 2 stops early after epoch 5,
    # and when epoch 5 starts one of the two epochs of patience is used
    assert history["epoch"] == [0, 1, 2, 3, 4, 5], history
    assert _waits(history) == [0, 0, 0, 0, 1, 2], history["val_loss"]

    run = interrupted["early"]
    assert run.state_at_kill["early_stopping"]["wait"] == 1
    assert run.state_at_kill["early_stopping"]["epoch"] == 3  # the phase's best so far
    assert _resumed_from(run) == {"phase": 2, "epoch": 4, "epochs_done": 5}
    assert run.resumed_epochs() == [5]  # and not 6: patience ran out as in the reference
    _assert_same_run(run.resumed, reference)  # also the best weights of epoch 3 restored


@pytest.mark.slow
def test_keep_best_survives_sigkill(
    interrupted: dict[str, Interrupted], references: dict[str, Outcome]
) -> None:
    """Killed after the best epoch: the resumed run restores the same best weights."""
    reference = references["best"]
    assert reference.result is not None, reference.error
    history = reference.result["history"]
    # the premise: the best epoch (2) is before the kill, and no later epoch beats it
    assert history["epoch"] == [0, 1, 2, 3, 4, 5], history
    assert int(np.argmin(history["val_loss"])) == 2, history["val_loss"]

    run = interrupted["best"]
    assert run.state_at_kill["best"]["epoch"] == 2
    assert _resumed_from(run) == {"phase": 2, "epoch": 4, "epochs_done": 5}
    assert run.resumed_epochs() == [5]
    _assert_same_run(run.resumed, reference)


@pytest.mark.slow
def test_checkpoint_folder_holds_only_the_referenced_files(
    interrupted: dict[str, Interrupted],
) -> None:
    """After every commit: ``state.json`` plus the one to three files it names, nothing else."""
    run = interrupted["best"]
    log = run.experiment.commit_log()
    assert len(log) == 6 + 2  # 5 + 1 epochs (the killed and the resumed process), 2 phase ends
    named_counts = []
    for row in log:
        state = row["state"]
        named = {state["latest"], state["early_stopping"]["file"], state["best"]["file"]}
        named.discard(None)
        assert row["files"] == sorted({STATE_NAME, *named}), row
        named_counts.append(len(named))
    assert max(named_counts) == 3 and min(named_counts) >= 1, named_counts  # the bound is reached
    # the stray temporary files added before the restart are gone
    assert run.experiment.files() == log[-1]["files"]


def test_stray_temporary_files_are_removed_by_the_writer_only(tmp_path: Path) -> None:
    """A writing store removes ``.tmp-*`` files on start; a reading worker leaves them."""
    _add_stray_temporary_files(tmp_path)
    (tmp_path / "notes.txt").write_text("the user's")
    CheckpointStore(tmp_path, writer=False)
    assert len([name for name in os.listdir(tmp_path) if name.startswith(".tmp-")]) == 2
    CheckpointStore(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["notes.txt"]


# ---------------------------------------------------------------------- fingerprint


def _head(**kwargs: Any) -> ftk.HeadReplacer:
    return ftk.HeadReplacer(hidden_units=kwargs.pop("hidden_units", (8,)), dropout=0.2, **kwargs)


def _smoothing_head() -> ftk.HeadReplacer:
    with pytest.warns(DeprecationWarning, match="label_smoothing"):
        return _head(label_smoothing=0.1)


#: The recipes whose finished folders the fingerprint tests start from (head settings).
BASES: dict[str, dict[str, Any]] = {
    "default": {},
    "loss_function": {"loss": "categorical_crossentropy"},
}


@pytest.fixture(scope="module")
def finished_folder(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """The folder of a finished one-epoch run of a base recipe (each made once)."""
    folders: dict[str, Path] = {}

    def get(base: str) -> Path:
        if base not in folders:
            folders[base] = tmp_path_factory.mktemp(f"finished_{base}")
            _tuner(folders[base], head=_head(**BASES[base]), epochs=1, fine_tune_epochs=0).fit()
            keras.backend.clear_session()
        return folders[base]

    return get


def _copy(folder: Path, tmp_path: Path) -> Path:
    target = tmp_path / "ckpt"
    shutil.copytree(folder, target)
    return target


@pytest.mark.parametrize("base", sorted(BASES))
def test_same_recipe_resumes_from_a_finished_folder(
    finished_folder: Callable[[str], Path], tmp_path: Path, base: str
) -> None:
    """The control of the refusals below: the unchanged recipe is accepted, nothing trained."""
    folder = _copy(finished_folder(base), tmp_path)
    probe = CrashAt(0)  # would raise if any epoch were trained
    result = _tuner(folder, [probe], head=_head(**BASES[base]), epochs=1, fine_tune_epochs=0).fit()
    assert result.info["resumed_from"] == {"phase": 1, "epoch": 0, "epochs_done": 1}


CHANGES: dict[str, tuple[str, Callable[[], dict[str, Any]], set[str]]] = {
    # name: (base recipe, what changes in it, what the error must name)
    "fine_tune_epochs": ("default", lambda: {"fine_tune_epochs": 1}, {"trainer.fine_tune_epochs"}),
    "trainer_label_smoothing": (
        "default",
        lambda: {"label_smoothing": 0.1},
        {"trainer.label_smoothing", "loss"},  # the setting, and the loss it smooths
    ),
    "more_examples": ("default", lambda: {"data": _data(n=80)}, {"data", "validation"}),
    "other_image_size": ("default", lambda: {"data": _data(size=20)}, {"data", "validation"}),
    "validation_fraction": ("default", lambda: {"validation": 0.5}, {"data", "validation"}),
    # the head's (deprecated) label smoothing moves onto the Trainer: both differ
    "head_label_smoothing": (
        "default",
        lambda: {"head": _smoothing_head()},
        {"trainer.label_smoothing", "loss"},
    ),
    # two loss functions (not Loss objects)
    "head_loss": (
        "loss_function",
        lambda: {"head": _head(loss="categorical_focal_crossentropy")},
        {"loss"},
    ),
    "head_width": ("default", lambda: {"head": _head(hidden_units=(16,))}, {"model"}),
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_checkpoint_of_another_run_is_refused(
    finished_folder: Callable[[str], Path], tmp_path: Path, change: str
) -> None:
    """Other trainer settings, data, loss or model: ``CheckpointError`` naming exactly what."""
    base, make, differs = CHANGES[change]
    kwargs = {"epochs": 1, "fine_tune_epochs": 0, "head": _head(**BASES[base]), **make()}
    with pytest.raises(ftk.CheckpointError) as info:
        _tuner(_copy(finished_folder(base), tmp_path), [CrashAt(0)], **kwargs).fit()
    message = str(info.value)
    named = re.search(r"it differs in ([^)]*)\)", message)
    assert named is not None, message
    assert set(named.group(1).split(", ")) == differs, message
    assert "checkpoint_dir=" in message and "Received" in message and "delete the folder" in message


def test_unreadable_checkpoint_is_refused(tmp_path: Path) -> None:
    (tmp_path / STATE_NAME).write_text("{not json")
    with pytest.raises(ftk.CheckpointError) as info:
        _tuner(tmp_path).fit()
    assert "checkpoint_dir=" in str(info.value)


# ---------------------------------------------------------------------- a failed write


def _state(rows: int) -> dict[str, Any]:
    return {
        "rows": list(range(rows)),
        "early_stopping": {"file": None},
        "best": {"file": None},
    }


def test_a_write_that_raises_keeps_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Disk full half-way through a file: the previous checkpoint stays, no temporary file."""
    store = CheckpointStore(tmp_path)
    store.commit(_state(1), {"v0": np.arange(4.0)})
    real_savez = np.savez

    def full_disk(file: Any, **arrays: Any) -> None:
        file.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", full_disk)
    with pytest.raises(OSError, match="disk full"):
        store.commit({**_state(2), "seq": 1}, {"v0": np.arange(5.0)})
    monkeypatch.setattr(np, "savez", real_savez)
    assert sorted(os.listdir(tmp_path)) == ["ckpt-000001.npz", STATE_NAME]
    state = CheckpointStore(tmp_path).read_state()
    assert state is not None and state["rows"] == [0] and state["latest"] == "ckpt-000001.npz"
    np.testing.assert_array_equal(store.read_arrays("ckpt-000001.npz", "v")[0], np.arange(4.0))


# ---------------------------------------------------------------------- Trainer alone


def test_trainer_alone_resumes_with_keras_models(tmp_path: Path) -> None:
    import tensorflow as tf

    def build() -> tuple[keras.Model, keras.Model]:
        keras.utils.set_random_seed(3)
        backbone = keras.Sequential(
            [keras.Input((4,)), keras.layers.Dense(8, name="d1"), keras.layers.Dense(8, name="d2")],
            name="backbone",
        )
        inputs = keras.Input((4,))
        out = keras.layers.Dense(2, activation="softmax")(backbone(inputs, training=False))
        return keras.Model(inputs, out), backbone

    rng = np.random.default_rng(1)
    x = rng.normal(size=(32, 4)).astype("float32")
    y = keras.utils.to_categorical(np.arange(32) % 2, 2)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)

    def trainer(cb: keras.callbacks.Callback) -> ftk.Trainer:
        return ftk.Trainer(
            "sgd",
            0.1,
            epochs=2,
            fine_tune_epochs=2,
            verbose=0,
            checkpoint_dir=tmp_path,
            callbacks=[cb],
        )

    model, backbone = build()
    with pytest.raises(Crash):
        trainer(CrashAt(2)).train(model, backbone, ds, loss="categorical_crossentropy")
    model, backbone = build()
    run = trainer(CrashAt(None)).train(model, backbone, ds, loss="categorical_crossentropy")
    assert run.history["epoch"] == [0, 1, 2, 3] and run.resumed_from["epochs_done"] == 2
    assert all(layer.trainable for layer in backbone.layers)


if __name__ == "__main__":  # a child process of the kill tests
    _child(json.loads(sys.argv[1]))
