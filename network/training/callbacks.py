"""Keras callbacks that make training safe to interrupt and to resume.

- ``AtomicCheckpoint`` writes the best model to a temporary file and renames it
  into place, so a crash mid-save never leaves a half-written ``best_model.h5``,
  and a NaN epoch never replaces a good model.
- ``StateWriter`` backs up, after each epoch, everything a resumed run needs:
  the weights with the optimizer's state, the epoch, the checkpoint's best
  score and early stopping's counters. ``ResumableEarlyStopping`` starts from
  those counters, and ``restore_backup`` puts the weights back.
- ``EpochTimer`` measures each epoch's wall time; ``HistoryLogger`` writes it to
  ``history.csv`` beside the metrics (not into the logs, where the progress bar
  would show it as if it were a metric), counting epochs from 1.
- ``StopOnNaN`` ends training after an epoch whose loss is NaN.

Why not Keras's own ``BackupAndRestore`` and ``ModelCheckpoint``? The first
writes its backup in place, so a kill during the write leaves nothing usable,
and neither keeps early stopping's counters or the best score across a
restart; ``ModelCheckpoint`` also overwrites the best model in place. The
resume logic: ``recipes.start_or_resume`` decides between a fresh and a resumed
run (it needs no Keras, so it runs before the slow import), ``StateWriter``
backs up, ``restore_backup`` restores.

None of these callbacks has a per-batch hook. Keras runs a training loop
asynchronously only while every callback's batch hooks are marked
``async_safe``; one that is not (such as ``TerminateOnNaN``) makes it wait
for each step's results on the host, a device sync per batch.
"""

import math
import time
from pathlib import Path

import keras
import numpy as np

from network.core.errors import LabError
from network.core.files import atomic_path, write_json_atomic
from network.training.recipes import STATE_FILE


def atomic_save(model, path):
    """Save ``model`` to ``path`` via a temporary file and an atomic rename."""
    with atomic_path(path) as tmp:
        model.save(tmp)


class AtomicCheckpoint(keras.callbacks.Callback):
    """Keep the model with the lowest ``monitor`` (or, without one, the latest).

    ``best`` is the score to beat (a resumed run passes its saved best).
    Epochs whose score, or loss when there is no monitor, is NaN or infinite
    are never saved, so a diverging run keeps its last good model.
    """

    def __init__(self, path, monitor="val_loss", best=None, verbose=1):
        super().__init__()
        self.path = Path(path)
        self.monitor = monitor
        self.best = np.inf if best is None else best
        self.verbose = verbose
        self.saved = best is not None  # whether this run (or the one it resumes) saved

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        current = logs.get(self.monitor or "loss")
        if current is None or not np.isfinite(current):
            if self.verbose:
                print(f"\nEpoch {epoch + 1}: {self.monitor or 'loss'} is {current}, "
                      f"model not saved")
            return
        if self.monitor is None:
            atomic_save(self.model, self.path)
            self.saved = True
            return
        if current >= self.best:
            if self.verbose:
                print(f"\nEpoch {epoch + 1}: {self.monitor} did not improve from {self.best:.5f}")
            return
        if self.verbose:
            print(f"\nEpoch {epoch + 1}: {self.monitor} improved from {self.best:.5f} to "
                  f"{current:.5f}, saving model to {self.path}")
        atomic_save(self.model, self.path)
        self.best = float(current)
        self.saved = True


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
        if state.get("es_best") is None:
            return
        self.wait = state["es_wait"]
        self.best = state["es_best"]
        self.best_epoch = state["es_best_epoch"]
        if (self.restore_best_weights and self.best_model_path
                and Path(self.best_model_path).is_file()):
            best = keras.saving.load_model(self.best_model_path, compile=False)
            self.best_weights = best.get_weights()


class StateWriter(keras.callbacks.Callback):
    """After each epoch, back up what a resumed run needs, in a crash-safe order.

    The weights (with the optimizer's state) go to ``epoch-<n>.weights.h5``
    first; the state file (``path``), which names it, is replaced last. So at
    any moment the state file describes a complete backup, whatever kills the
    process and when. Put this callback after the checkpoint and early
    stopping, so it records their state at the end of the epoch.
    """

    def __init__(self, path, checkpoint, early_stop=None):
        super().__init__()
        self.path = Path(path)
        self.resume_dir = self.path.parent
        self.checkpoint = checkpoint
        self.early_stop = early_stop

    def on_epoch_end(self, epoch, logs=None):
        weights = f"epoch-{epoch + 1}.weights.h5"
        with atomic_path(self.resume_dir / weights) as tmp:
            self.model.save_weights(tmp)
        state = {"epoch": epoch + 1, "weights": weights,
                 "checkpoint_best": _finite(self.checkpoint.best)}
        if self.early_stop is not None:
            state.update(es_wait=self.early_stop.wait,
                         es_best=_finite(self.early_stop.best),
                         es_best_epoch=self.early_stop.best_epoch)
        write_json_atomic(self.path, state)
        for old in self.resume_dir.glob("epoch-*.weights.h5"):  # earlier backups
            if old.name != weights:
                old.unlink(missing_ok=True)


def restore_backup(model, resume_dir, state, history_path=None):
    """Put back what ``StateWriter`` backed up: the weights with the optimizer's state,
    and (with ``history_path``) history.csv trimmed to the finished epochs.

    Returns the epoch to continue from (``fit``'s ``initial_epoch``). A history row
    the killed run wrote after its last backup (or half-wrote) is dropped, so every
    epoch appears once. A missing or damaged backup is a ``LabError``.
    """
    try:
        if not model.optimizer.built:  # the optimizer's variables must exist to be loaded
            model.optimizer.build(model.trainable_variables)
        model.load_weights(Path(resume_dir) / state["weights"])
    except Exception as err:  # missing or damaged backup: Keras raises many types
        raise LabError(f"the backup of the interrupted run in {resume_dir} cannot be loaded "
                       f"({type(err).__name__}): pass --restart to start afresh") from None
    epoch = int(state["epoch"])
    if history_path is not None:
        lines = history_path.read_text().splitlines() if history_path.is_file() else []
        kept = lines[:1] + [line for line in lines[1:] if line.split(",")[0].isdigit()
                            and int(line.split(",")[0]) <= epoch]  # epochs count from 1
        history_path.write_text("".join(f"{line}\n" for line in kept))
    return epoch


class EpochTimer(keras.callbacks.Callback):
    """Measure each epoch's wall time (``last`` seconds, validation included)."""

    last = None

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.last = time.perf_counter() - self._start


class HistoryLogger(keras.callbacks.CSVLogger):
    """``CSVLogger`` that counts epochs from 1, as the console and report do,
    and adds the epoch's wall time from ``timer`` as ``epoch_time_s``."""

    def __init__(self, filename, timer, append=False):
        super().__init__(str(filename), append=append)
        self.timer = timer

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch + 1, {**(logs or {}), "epoch_time_s": self.timer.last})


class StopOnNaN(keras.callbacks.Callback):
    """Stop after an epoch whose mean loss is NaN or infinite.

    Checking once per epoch costs nothing: a NaN in any step makes the epoch's
    running mean NaN. The checkpoint never saves such an epoch, so the last
    good model stays.
    """

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(loss):
            print(f"\nEpoch {epoch + 1}: the loss is {loss}; training stopped")
            self.model.stop_training = True


def _finite(value):
    return None if value is None or not np.isfinite(value) else float(value)


class RunLengthNote(EpochTimer):
    """After the first epoch, say how long the remaining epochs take on this machine
    (a run without a GPU and without a time budget can take hours)."""

    said = False

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        remaining = self.params["epochs"] - epoch - 1
        if remaining > 0 and not self.said:
            self.said = True
            left = self.last * remaining
            span = f"{left / 3600:.1f} h" if left >= 3600 else f"{math.ceil(left / 60)} min"
            print(f"\nOn this CPU an epoch takes {self.last:.0f} s: up to {span} for the "
                  "remaining epochs (Ctrl-C stops; --resume continues later).")


# --- The callbacks of a training run -----------------------------------------------------

def make_callbacks(run, state, resume_dir, has_val):
    """The callbacks of a training run (a ``Run``): checkpointing, early stopping,
    logging and resumability.

    None of them works per batch: on JAX (and on GPUs generally) a per-batch
    hook makes Keras wait for every step to finish before queuing the next.
    """
    # With early stopping the best model on the hold-out is kept; a fixed
    # schedule keeps its last epoch (its hold-out is only for calibration/curves).
    early = has_val and run.recipe.patience is not None
    checkpoint = AtomicCheckpoint(run.model_path, monitor="val_loss" if early else None,
                                  best=state.get("checkpoint_best"))
    timer = EpochTimer()
    # Order matters: StateWriter runs last to record the checkpoint's and early
    # stopping's state after they have seen the epoch.
    callbacks = [timer, StopOnNaN(), checkpoint]
    early_stop = None
    if early:
        early_stop = ResumableEarlyStopping(
            monitor="val_loss", mode="min", patience=run.recipe.patience,
            restore_best_weights=True, verbose=1, state=state, best_model_path=run.model_path)
        callbacks.append(early_stop)
    callbacks += [
        HistoryLogger(Path(run.output_dir) / "history.csv", timer, append=bool(state)),
        StateWriter(resume_dir / STATE_FILE, checkpoint, early_stop),
    ]
    return callbacks, checkpoint


def check_finite(history, checkpoint, model_path):
    """Stop with a clear message when the loss became NaN (the best model stays)."""
    nan_epoch = next((int(e) for e, loss in zip(history["epoch"], history["loss"])
                      if not np.isfinite(loss)), None)
    if nan_epoch is None:
        return
    if checkpoint.saved:
        raise LabError(f"training stopped: the loss became NaN (epoch {nan_epoch}); try a "
                       f"lower --learning-rate. The best model so far is kept in {model_path}")
    raise LabError("training stopped: the loss became NaN before any model was saved; "
                   "try a lower --learning-rate")
