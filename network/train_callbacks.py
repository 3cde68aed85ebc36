"""Keras callbacks that make training safe to interrupt and to resume.

- ``AtomicCheckpoint`` writes the best model to a temporary file and renames it
  into place, so a crash mid-save never leaves a half-written ``best_model.h5``.
- ``ResumableEarlyStopping`` and ``StateWriter`` carry early stopping's
  counters across a resumed run (``BackupAndRestore`` restores the weights,
  the optimizer and the epoch).
- ``EpochTimer`` adds each epoch's wall time to the logs (and so to history.csv).
"""

import json
import os
import time
from pathlib import Path

import keras
import numpy as np


def atomic_save(model, path):
    """Save ``model`` to ``path`` via a temporary file and an atomic rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.partial{path.suffix}")
    try:
        model.save(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class AtomicCheckpoint(keras.callbacks.Callback):
    """Keep the model with the lowest ``monitor`` (or, without one, the latest)."""

    def __init__(self, path, monitor="val_loss", best=None, verbose=1):
        super().__init__()
        self.path = Path(path)
        self.monitor = monitor
        self.best = np.inf if best is None else best
        self.verbose = verbose

    def on_epoch_end(self, epoch, logs=None):
        if self.monitor is None:
            atomic_save(self.model, self.path)
            return
        current = (logs or {}).get(self.monitor)
        if current is None or not np.isfinite(current) or current >= self.best:
            if self.verbose:
                print(f"\nEpoch {epoch + 1}: {self.monitor} did not improve from {self.best:.5f}")
            return
        if self.verbose:
            print(f"\nEpoch {epoch + 1}: {self.monitor} improved from {self.best:.5f} to "
                  f"{current:.5f}, saving model to {self.path}")
        self.best = float(current)
        atomic_save(self.model, self.path)


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """EarlyStopping that can start from a saved state (wait, best, best epoch).

    The best weights come back from the best checkpoint on disk.
    """

    def __init__(self, state=None, best_model_path=None, **kwargs):
        super().__init__(**kwargs)
        self.resume_state = state or {}
        self.best_model_path = best_model_path

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        state = self.resume_state
        if "es_best" not in state or state["es_best"] is None:
            return
        self.wait = state["es_wait"]
        self.best = state["es_best"]
        self.best_epoch = state["es_best_epoch"]
        if self.restore_best_weights and Path(self.best_model_path).is_file():
            best = keras.saving.load_model(self.best_model_path, compile=False)
            self.best_weights = best.get_weights()


class StateWriter(keras.callbacks.Callback):
    """After each epoch, write what a resumed run needs beyond the backup."""

    def __init__(self, path, checkpoint, early_stop=None):
        super().__init__()
        self.path = Path(path)
        self.checkpoint = checkpoint
        self.early_stop = early_stop

    def on_epoch_end(self, epoch, logs=None):
        state = {"epoch": epoch + 1, "checkpoint_best": _finite(self.checkpoint.best)}
        if self.early_stop is not None:
            state.update(es_wait=self.early_stop.wait,
                         es_best=_finite(self.early_stop.best),
                         es_best_epoch=self.early_stop.best_epoch)
        tmp = self.path.with_name(f".{self.path.name}.partial")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self.path)


class EpochTimer(keras.callbacks.Callback):
    """Record each epoch's wall time as ``epoch_time_s`` in the logs."""

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["epoch_time_s"] = time.perf_counter() - self._start


def _finite(value):
    return None if value is None or not np.isfinite(value) else float(value)
