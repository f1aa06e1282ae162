"""A callback that crashes training at a chosen epoch (to test resuming)."""

from __future__ import annotations

from typing import Any

import keras


class Crash(Exception):
    """Raised by :class:`CrashAt`."""


class CrashAt(keras.callbacks.Callback):
    """Raises :class:`Crash` after the second batch of epoch ``epoch`` (``None``: never)."""

    def __init__(self, epoch: int | None) -> None:
        super().__init__()
        self.at, self.epoch = epoch, -1

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        self.epoch = epoch

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        if self.epoch == self.at and batch == 1:
            raise Crash(f"crash in epoch {self.epoch}")
