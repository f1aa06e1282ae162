"""A Keras callback that records every event it receives (tests of fit-like loops)."""

from __future__ import annotations

from typing import Any

import keras


class Recorder(keras.callbacks.Callback):
    """Every callback event with its batch / epoch and the log keys."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[str] = []

    def on_train_begin(self, logs: Any = None) -> None:
        self.events.append("train_begin")

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        self.events.append(f"epoch_begin {epoch}")

    def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
        self.events.append(f"batch_begin {batch}")

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        self.events.append(f"batch_end {batch} {sorted(logs)}")

    def on_test_begin(self, logs: Any = None) -> None:
        self.events.append("test_begin")

    def on_test_end(self, logs: Any = None) -> None:
        self.events.append(f"test_end {sorted(logs or {})}")

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        self.events.append(f"epoch_end {epoch} {sorted(logs)}")

    def on_train_end(self, logs: Any = None) -> None:
        self.events.append(f"train_end {sorted(logs or {})}")
