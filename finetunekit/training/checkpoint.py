"""Resumable two-phase training: per-epoch checkpoints, early stopping, best weights.

Keras' ``BackupAndRestore`` knows one ``fit`` call; fine-tuning is two calls
(frozen backbone, then unfrozen) with a recompile in between. This module
keeps the whole run's bookkeeping in one :class:`TrainingSession`:

* the history of every completed epoch (both phases),
* early stopping per phase (patience, best value, best weights restored at the
  end of the phase, as ``keras.callbacks.EarlyStopping(restore_best_weights=True)``),
* the best weights over the whole run (``Trainer(keep_best=True)``),
* and, with a :class:`CheckpointStore`, a checkpoint after every completed
  epoch and at the end of every phase.

A checkpoint folder holds ``state.json`` and one to three ``ckpt-<n>.npz``
files. Every file is written to a temporary file in the same folder, flushed
to disk and moved into place with ``os.replace``; ``state.json`` is written
last and is the commit point: a process killed at any instant leaves either
the previous checkpoint or the new one, never a mix. Files ``state.json`` no
longer references are deleted after it is replaced.

``ckpt-<n>.npz`` holds ``v<i>``: every ``model.variables`` value (weights,
BatchNorm statistics and the dropout seed-generator states), and ``o<i>``:
the optimizer's variables (its step counter, learning rate and slots) when
the checkpoint is taken in the middle of a phase. Files are read with
``allow_pickle=False``: nothing is unpickled.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import math
import os
import re
import time
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from finetunekit.errors import CheckpointError, format_error
from finetunekit.files import atomic_write

__all__ = [
    "STATE_NAME",
    "CheckpointStore",
    "TrainingSession",
    "atomic_write",
    "monitor_mode",
]

STATE_NAME = "state.json"
_FORMAT = "finetunekit.checkpoint"
_VERSION = 1
_CKPT_RE = re.compile(r"^ckpt-(\d+)\.npz$")
_MIN_METRICS = {
    "mae",
    "mse",
    "rmse",
    "mape",
    "msle",
    "logcosh",
    "huber",
    "mean_absolute_error",
    "mean_squared_error",
    "root_mean_squared_error",
    "mean_absolute_percentage_error",
    "mean_squared_logarithmic_error",
}


def monitor_mode(monitor: str) -> str:
    """Returns ``"min"`` when smaller values of ``monitor`` are better, else ``"max"``.

    Losses and error metrics are minimised; accuracies, AUC and the rest are
    maximised.

    Examples:
        >>> monitor_mode("val_loss"), monitor_mode("val_accuracy"), monitor_mode("mae")
        ('min', 'max', 'min')
    """
    name = monitor[4:] if monitor.startswith("val_") else monitor
    if name.endswith("loss") or name in _MIN_METRICS or "error" in name:
        return "min"
    return "max"


def snapshot(model: keras.Model) -> list[np.ndarray]:
    """Returns copies of every ``model.variables`` value (weights, BN statistics, seeds)."""
    return [np.array(v.numpy()) for v in model.variables]


def _assign(variables: Sequence[Any], arrays: Sequence[np.ndarray], what: str, where: str) -> None:
    shapes = [tuple(v.shape) for v in variables]
    if len(arrays) != len(variables) or any(
        tuple(a.shape) != s for a, s in zip(arrays, shapes, strict=False)
    ):
        raise CheckpointError(
            format_error(
                f"The checkpoint's {what} do not fit the model ({len(arrays)} saved arrays, "
                f"{len(variables)} variables)",
                expected="a checkpoint written by the same recipe",
                received={"checkpoint_dir": where},
                fix="Delete the folder or pass another checkpoint_dir to start afresh",
            )
        )
    for variable, value in zip(variables, arrays, strict=True):
        variable.assign(value)


class CheckpointStore:
    """The files of one checkpoint folder (see the module docstring for the layout).

    Args:
        directory: the folder; created when missing.
        writer: whether this process writes checkpoints. Under a multi-worker
            strategy only the chief does; the other workers read the folder
            on restart, and their ``commit`` writes nothing (they take the
            same snapshots, so every worker runs the same code).

    Examples:
        >>> import tempfile
        >>> store = CheckpointStore(tempfile.mkdtemp())
        >>> store.read_state() is None
        True
    """

    def __init__(self, directory: str | os.PathLike[str], *, writer: bool = True) -> None:
        self.directory = os.path.abspath(os.fspath(directory))
        self.writer = writer
        if not writer:  # never touch the chief's files (its temporary files included)
            return
        try:
            os.makedirs(self.directory, exist_ok=True)
        except OSError as exc:
            raise CheckpointError(
                format_error(
                    f"The checkpoint folder cannot be created ({exc})",
                    expected="a writable folder",
                    received={"checkpoint_dir": self.directory},
                    fix="Pass a checkpoint_dir on a writable disk",
                )
            ) from exc
        for stale in glob.glob(os.path.join(self.directory, ".tmp-*")):
            with contextlib.suppress(OSError):
                os.remove(stale)

    @property
    def state_path(self) -> str:
        """Path of ``state.json``."""
        return os.path.join(self.directory, STATE_NAME)

    def _broken(self, why: str) -> CheckpointError:
        return CheckpointError(
            format_error(
                f"The checkpoint in the folder cannot be read ({why})",
                expected=f"a folder written by finetunekit Trainer(checkpoint_dir=...) "
                f"({STATE_NAME} and ckpt-<n>.npz files)",
                received={"checkpoint_dir": self.directory},
                fix="Delete the folder (or pass another checkpoint_dir) to start afresh",
            )
        )

    def read_state(self) -> dict[str, Any] | None:
        """Returns the committed state, or ``None`` when the folder holds no checkpoint."""
        if not os.path.exists(self.state_path):
            return None
        try:
            with open(self.state_path, encoding="utf-8") as handle:
                state = json.load(handle)
        except (OSError, ValueError) as exc:
            raise self._broken(f"{STATE_NAME}: {exc}") from exc
        if not isinstance(state, dict) or state.get("format") != _FORMAT:
            raise self._broken(f"{STATE_NAME} is not a finetunekit checkpoint")
        if state.get("version") != _VERSION:
            raise self._broken(f"unsupported checkpoint version {state.get('version')!r}")
        return state

    def read_arrays(self, name: str, prefix: str) -> list[np.ndarray]:
        """Returns the arrays ``<prefix>0, <prefix>1, ...`` of ``ckpt`` file ``name``."""
        path = os.path.join(self.directory, name)
        try:
            with np.load(path, allow_pickle=False) as data:
                count = sum(1 for key in data.files if re.fullmatch(f"{prefix}\\d+", key))
                return [data[f"{prefix}{i}"] for i in range(count)]
        except (OSError, ValueError, KeyError) as exc:
            raise self._broken(f"{name}: {exc}") from exc

    def next_name(self, state: dict[str, Any]) -> str:
        """Returns the file name the next ``commit`` with arrays writes."""
        return f"ckpt-{int(state.get('seq', 0)) + 1:06d}.npz"

    def commit(self, state: dict[str, Any], arrays: dict[str, np.ndarray] | None) -> None:
        """Writes ``arrays`` (to ``next_name``) and then ``state``, both atomically.

        ``state["latest"]`` is set to the new file when ``arrays`` is given.
        Afterwards, ``ckpt`` files the state no longer references are deleted.
        A store that is not the ``writer`` only updates ``state``.
        """
        if arrays is not None:
            name = self.next_name(state)
            if self.writer:
                atomic_write(
                    os.path.join(self.directory, name),
                    lambda handle: np.savez(handle, **arrays),  # type: ignore[arg-type]
                )
            state["seq"] = int(state.get("seq", 0)) + 1
            state["latest"] = name
        state["format"], state["version"] = _FORMAT, _VERSION
        if not self.writer:
            return
        text = json.dumps(state, allow_nan=False).encode("utf-8")
        atomic_write(self.state_path, lambda handle: _write_bytes(handle, text))
        keep = {state.get("latest"), state["early_stopping"].get("file"), state["best"].get("file")}
        for entry in os.listdir(self.directory):
            if _CKPT_RE.match(entry) and entry not in keep:
                with contextlib.suppress(OSError):
                    os.remove(os.path.join(self.directory, entry))


#: Trainer settings that do not change what is trained (a resumed run may differ in them).
_UNTRACKED_SETTINGS = (
    "strategy",  # batch_size is global: a run may resume on another number of devices
    "verbose",
    "checkpoint_dir",
    "jit_compile",
    "log_dir",
    "cache_features",
    "cache_memory_mb",
)


def fingerprint(
    trainer_config: dict[str, Any],
    model: keras.Model,
    train_ds: Any,
    validation_ds: Any,
    loss: Any,
) -> dict[str, Any]:
    """Describes a training run, to tell whether a checkpoint belongs to it.

    Holds the trainer settings that change training, a hash of the model's
    weight shapes, the structure and batch count of the datasets, and the
    loss with its settings.
    """
    shapes = ";".join(f"{tuple(w.shape)}:{w.dtype}" for w in model.weights)

    def describe(ds: Any) -> str | None:
        if ds is None:
            return None
        spec = getattr(ds, "element_spec", None)
        try:
            batches = int(ds.cardinality())
        except Exception:  # not a tf.data.Dataset
            batches = -1
        return f"{spec!r} batches={batches}" if spec is not None else type(ds).__name__

    settings = {k: v for k, v in trainer_config.items() if k not in _UNTRACKED_SETTINGS}
    return {
        "trainer": json.loads(json.dumps(settings, default=str)),
        "model": hashlib.sha256(shapes.encode()).hexdigest()[:16],
        "data": describe(train_ds),
        "validation": describe(validation_ds),
        "loss": _describe_loss(loss),
    }


def _describe_loss(loss: Any) -> Any:
    """The loss as JSON: its class or function name and its settings (``label_smoothing``...).

    Two losses of one class with other settings, or two loss functions, differ.

    Examples:
        >>> _describe_loss(keras.losses.get("mae"))["config"]
        'mean_absolute_error'
        >>> _describe_loss(keras.losses.CategoricalCrossentropy(label_smoothing=0.1))[
        ...     "config"
        ... ]["label_smoothing"]
        0.1
    """
    if isinstance(loss, str):
        return loss
    try:
        described = keras.saving.serialize_keras_object(loss)
        return json.loads(json.dumps(described, default=str, sort_keys=True))
    except Exception:  # not serialisable (a lambda without source): its name only
        return getattr(loss, "__name__", None) or type(loss).__name__


def _fingerprint_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    diff = []
    for key in sorted(set(old) | set(new)):
        if key == "trainer" and isinstance(old.get(key), dict) and isinstance(new.get(key), dict):
            a, b = old[key], new[key]
            diff += [f"trainer.{k}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        elif old.get(key) != new.get(key):
            diff.append(key)
    return diff


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


class _Tracker:
    """Best value of ``monitor`` and the variables at that epoch (in memory and on disk)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.reset()

    def reset(self) -> None:
        self.best: float | None = None
        self.epoch: int | None = None
        self.wait = 0
        self.values: list[np.ndarray] | None = None
        self.file: str | None = None

    def improved(self, value: float) -> bool:
        if self.best is None:
            return True
        return value < self.best if self.mode == "min" else value > self.best

    def to_json(self) -> dict[str, Any]:
        return {
            "best": _finite(self.best),
            "epoch": self.epoch,
            "wait": self.wait,
            "file": self.file,
        }

    def load(self, data: dict[str, Any], store: CheckpointStore) -> None:
        self.best = data.get("best")
        self.epoch = data.get("epoch")
        self.wait = int(data.get("wait", 0))
        self.file = data.get("file")
        self.values = store.read_arrays(self.file, "v") if self.file else None


class TrainingSession:
    """The bookkeeping of one training run across its phases (and across restarts).

    The :class:`~finetunekit.training.Trainer` creates one per ``train`` call,
    asks :meth:`resume` to load a checkpoint, and for every phase calls
    :meth:`phase_done` / :meth:`begin_phase`, trains with :meth:`callback`,
    then :meth:`end_phase`; finally :meth:`finish` and :meth:`history`.

    Args:
        monitor: the quantity early stopping and ``keep_best`` watch (already
            resolved: ``val_`` dropped without validation data).
        early_stopping: patience in epochs, or ``None``.
        keep_best: restore the best weights of the whole run at the end.
        store: where checkpoints go, or ``None`` for none.
        run_fingerprint: from :func:`fingerprint`; a checkpoint of another run
            raises :class:`~finetunekit.errors.CheckpointError`.
        verbose: print a line when resuming.

    Examples:
        >>> session = TrainingSession(monitor="loss", early_stopping=None, keep_best=False)
        >>> session.history()
        {'phase': [], 'epoch': []}
    """

    def __init__(
        self,
        *,
        monitor: str,
        early_stopping: int | None,
        keep_best: bool,
        store: CheckpointStore | None = None,
        run_fingerprint: dict[str, Any] | None = None,
        verbose: Any = 0,
    ) -> None:
        self.monitor = monitor
        self.patience = early_stopping
        self.keep_best = keep_best
        self.store = store
        self.run_fingerprint = run_fingerprint or {}
        self.verbose = verbose
        self.rows: list[dict[str, Any]] = []
        self.timings: dict[str, float] = {}
        self.completed: list[int] = []
        self.current: dict[str, Any] | None = None  # {"phase", "next_epoch", "stopped"}
        self.resumed_from: dict[str, Any] | None = None
        self.early = _Tracker(monitor_mode(monitor))
        self.best = _Tracker(monitor_mode(monitor))
        self._optimizer_values: list[np.ndarray] | None = None
        self._seq_state: dict[str, Any] = {}
        self._warned_missing = False

    # ------------------------------------------------------------------ restart
    def resume(self, model: keras.Model) -> bool:
        """Loads the committed checkpoint into ``model`` and the session, if there is one.

        Returns:
            Whether a checkpoint was loaded.

        Raises:
            CheckpointError: the checkpoint belongs to another recipe or is unreadable.
        """
        if self.store is None:
            return False
        state = self.store.read_state()
        if state is None:
            return False
        diff = _fingerprint_diff(state.get("fingerprint", {}), self.run_fingerprint)
        if diff:
            raise CheckpointError(
                format_error(
                    "checkpoint_dir holds a checkpoint of a different training run "
                    f"(it differs in {', '.join(diff)})",
                    expected="the same recipe (trainer settings, model, data, loss) as the run "
                    "that wrote the checkpoint",
                    received={"checkpoint_dir": self.store.directory},
                    fix="Run the same recipe on the same data to resume; to start afresh, "
                    "delete the folder or pass another checkpoint_dir",
                )
            )
        self._seq_state = {"seq": state.get("seq", 0)}
        latest = state.get("latest")
        if latest:
            _assign(
                model.variables,
                self.store.read_arrays(latest, "v"),
                "weights",
                self.store.directory,
            )
            optimizer = self.store.read_arrays(latest, "o")
            self._optimizer_values = optimizer or None
        self.rows = list(state.get("rows", []))
        self.timings = {k: float(v) for k, v in state.get("timings", {}).items()}
        self.completed = [int(p) for p in state.get("completed", [])]
        self.current = state.get("current")
        self.early.load(state.get("early_stopping", {}), self.store)
        self.best.load(state.get("best", {}), self.store)
        last = self.rows[-1] if self.rows else None
        self.resumed_from = {
            "phase": int(last["phase"]) if last else None,
            "epoch": int(last["epoch"]) if last else None,
            "epochs_done": len(self.rows),
        }
        if self.verbose:
            where = (
                f"after epoch {int(last['epoch']) + 1} (phase {int(last['phase'])})"
                if last
                else "before the first epoch"
            )
            print(f"finetunekit: resuming from the checkpoint in {self.store.directory} {where}")
        return True

    # ------------------------------------------------------------------ phases
    def phase_done(self, phase: int) -> bool:
        """Whether ``phase`` was completed (in this process or before a restart)."""
        return phase in self.completed

    def begin_phase(self, phase: int, first: int, model: keras.Model) -> int:
        """Returns the epoch to start ``phase`` at; restores the optimizer mid-phase.

        Call after ``model.compile``. A fresh phase starts at ``first`` with a
        fresh early-stopping state; a phase interrupted by a restart continues
        after its last completed epoch, with the optimizer state it had then.
        """
        if self.current and int(self.current["phase"]) == phase:
            if self._optimizer_values is not None:
                optimizer = model.optimizer
                if not optimizer.built:  # gradual unfreezing builds it on the whole phase
                    optimizer.build(model.trainable_variables)
                _assign(
                    optimizer.variables,
                    self._optimizer_values,
                    "optimizer variables",
                    self.store.directory if self.store else "",
                )
                self._optimizer_values = None
            return int(self.current["next_epoch"])
        self.early.reset()
        self.current = {"phase": phase, "next_epoch": first, "stopped": False}
        return first

    def should_train(self, last: int) -> bool:
        """Whether the current phase still has epochs to run before ``last``."""
        assert self.current is not None
        return not self.current["stopped"] and int(self.current["next_epoch"]) < last

    def callback(self, phase: int) -> keras.callbacks.Callback:
        """The Keras callback that records, early-stops and checkpoints ``phase``."""
        return _SessionCallback(self, phase)

    def end_phase(self, phase: int, model: keras.Model) -> None:
        """Ends ``phase``: restores its best weights (early stopping) and checkpoints."""
        if self.patience and self.early.values is not None:
            _assign(model.variables, self.early.values, "weights", "")
        self.early.reset()
        self.completed.append(phase)
        self.current = None
        self._save(model, optimizer=False)

    def finish(self, model: keras.Model) -> None:
        """Ends the run: restores the best weights of the whole run with ``keep_best``."""
        if self.keep_best and self.best.values is not None:
            _assign(model.variables, self.best.values, "weights", "")

    def history(self) -> dict[str, list[Any]]:
        """The Keras-style history of every completed epoch, both phases, NaN-padded."""
        columns: dict[str, list[Any]] = {"phase": [], "epoch": []}
        for row in self.rows:
            for key in row:
                columns.setdefault(key, [])
        for row in self.rows:
            for key, column in columns.items():
                value = row.get(key)
                if key in ("phase", "epoch"):
                    column.append(int(value if value is not None else -1))
                else:
                    column.append(float("nan") if value is None else float(value))
        return columns

    # ------------------------------------------------------------------ per epoch
    def epoch_end(
        self, phase: int, epoch: int, logs: dict[str, Any], model: keras.Model, phase_seconds: float
    ) -> None:
        """Records a completed epoch, updates early stopping / best weights, checkpoints."""
        row: dict[str, Any] = {"phase": phase, "epoch": epoch}
        for key, value in (logs or {}).items():
            try:
                number = float(np.asarray(value))
            except (TypeError, ValueError):
                continue
            row[key] = number if math.isfinite(number) else None
        self.rows.append(row)
        self.timings[f"phase{phase}"] = phase_seconds
        current = row.get(self.monitor)
        values: list[np.ndarray] | None = None
        if current is None and self.monitor not in row and (self.patience or self.keep_best):
            if not self._warned_missing:
                import warnings

                warnings.warn(
                    f"Trainer monitor={self.monitor!r} is not among the logged metrics "
                    f"{sorted(k for k in row if k not in ('phase', 'epoch'))}; early stopping "
                    "and keep_best are skipped",
                    UserWarning,
                    stacklevel=2,
                )
                self._warned_missing = True
        elif current is not None:
            if self.patience:  # as keras.callbacks.EarlyStopping(restore_best_weights=True)
                early = self.early
                if early.values is None:
                    values = values or snapshot(model)
                    early.values, early.epoch, early.file = values, epoch, "<new>"
                early.wait += 1
                if early.improved(current):
                    early.best, early.epoch, early.wait = current, epoch, 0
                    values = values or snapshot(model)
                    early.values, early.file = values, "<new>"
                elif early.wait >= self.patience and epoch > 0:
                    model.stop_training = True
            if self.keep_best and self.best.improved(current):
                self.best.best, self.best.epoch = current, epoch
                values = values or snapshot(model)
                self.best.values = values
                self.best.file = "<new>"
        self.current = {
            "phase": phase,
            "next_epoch": epoch + 1,
            "stopped": bool(getattr(model, "stop_training", False)),
        }
        self._save(model, optimizer=True, values=values)

    def _save(
        self, model: keras.Model, *, optimizer: bool, values: list[np.ndarray] | None = None
    ) -> None:
        if self.store is None:
            for tracker in (self.early, self.best):
                tracker.file = None if tracker.file == "<new>" else tracker.file
            return
        if values is None:
            values = snapshot(model)
        arrays = {f"v{i}": a for i, a in enumerate(values)}
        if optimizer and getattr(model, "optimizer", None) is not None:
            for i, v in enumerate(model.optimizer.variables):
                arrays[f"o{i}"] = np.array(v.numpy())
        name = self.store.next_name(self._seq_state)
        for tracker in (self.early, self.best):
            if tracker.file == "<new>":
                tracker.file = name
        state = {
            "seq": self._seq_state.get("seq", 0),
            "fingerprint": self.run_fingerprint,
            "rows": self.rows,
            "timings": self.timings,
            "completed": self.completed,
            "current": self.current,
            "early_stopping": self.early.to_json(),
            "best": self.best.to_json(),
            "saved_at": time.time(),
        }
        self.store.commit(state, arrays)
        self._seq_state["seq"] = state["seq"]


class _SessionCallback(keras.callbacks.Callback):
    """Forwards each completed epoch of one phase to its :class:`TrainingSession`."""

    def __init__(self, session: TrainingSession, phase: int) -> None:
        super().__init__()
        self.session = session
        self.phase = phase
        self._start = 0.0
        self._base = session.timings.get(f"phase{phase}", 0.0)

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        seconds = self._base + time.perf_counter() - self._start
        self.session.epoch_end(self.phase, epoch, dict(logs or {}), self.model, seconds)


def _write_bytes(handle: Any, data: bytes) -> None:
    handle.write(data)
