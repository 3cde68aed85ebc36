"""Keras callbacks that make training safe to interrupt and resume, and keep its time.

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
- ``Progress`` (an ``EpochTimer``) prints how training goes at least once a
  minute in a log file; ``BudgetClock`` trains until a time budget is spent,
  the learning rate following the clock (``budget.py`` says why).

Why not Keras's own ``BackupAndRestore`` and ``ModelCheckpoint``? The first
writes its backup in place, so a kill during the write leaves nothing usable,
and neither keeps early stopping's counters or the best score across a
restart; ``ModelCheckpoint`` also overwrites the best model in place. The
resume logic: ``recipes.start_or_resume`` decides between a fresh and a resumed
run (it needs no Keras, so it runs before the slow import), ``StateWriter``
backs up, ``restore_backup`` restores.

None of these callbacks has a per-batch *end* hook (``Progress`` and
``BudgetClock`` read the clock as a step begins). Keras runs a training loop
asynchronously only while no callback overrides a batch-end hook without
being marked ``async_safe``; one that does (such as ``TerminateOnNaN``) makes
it wait for each step's results on the host, a device sync per batch.
"""

import time
from pathlib import Path

import keras
import numpy as np

from network.core.cli import duration, plural
from network.core.errors import LabError
from network.core.files import atomic_path, write_json_atomic
from network.training.budget import learning_rate_at
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

    def __init__(self, path, checkpoint, early_stop=None, clock=None):
        super().__init__()
        self.path = Path(path)
        self.resume_dir = self.path.parent
        self.checkpoint = checkpoint
        self.early_stop = early_stop
        self.clock = clock  # a time budget's: --resume continues it from the time spent

    def on_epoch_end(self, epoch, logs=None):
        weights = f"epoch-{epoch + 1}.weights.h5"
        with atomic_path(self.resume_dir / weights) as tmp:
            self.model.save_weights(tmp)
        state = {"epoch": epoch + 1, "weights": weights,
                 "checkpoint_best": _finite(self.checkpoint.best)}
        if self.clock is not None:
            state["budget_spent_s"] = round(self.clock.spent(), 3)
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


class BudgetClock(keras.callbacks.Callback):
    """Train until a time budget is spent, the learning rate following the clock.

    Before each step the clock (``budget.Clock``) is read: the rate is set for the
    share of the budget spent (``budget.learning_rate_at``; AdamW recipes only, Adam
    keeps its constant rate), and when one more step and the epoch's closing work
    (the hold-out's evaluation, the checkpoint, measured after each epoch) would
    overrun the budget, this step is the last: the epoch ends early, evaluated and
    saved as any other. Only the batch *begin* hook is used, so Keras still runs
    the steps asynchronously.
    """

    async_safe = True   # it reads the clock, never a step's results
    RATE_EVERY_S = 1.0  # seconds between changes of the rate (JAX syncs its state for one)
    LEAST_EPOCH = 0.1   # a last epoch shorter than this share of one is not started

    def __init__(self, clock, peak=None, warmup=0.0, tail_s=0.0):
        super().__init__()
        self.clock, self.peak, self.warmup = clock, peak, warmup
        self.tail_s = tail_s     # seconds from an epoch's last step to its end
        self.step_s = None       # seconds per step, a running mean
        self.rate = None         # the rate last set
        self.epochs = 0.0        # epochs trained, the last partial one as a fraction
        self._last = self._rate_at = None

    def training_fraction(self, spent):
        """The share of the time for training steps spent (the budget less the closing
        work), where the rate reaches zero at 1."""
        return min(1.0, spent / max(1e-9, self.clock.budget_s - self.tail_s))

    def set_rate(self, spent):
        if self.peak is None:
            return
        sync = getattr(self.model, "jax_state_sync", None)
        if sync is not None:  # JAX keeps the variables in a state of its own during fit
            sync()
        self.rate = learning_rate_at(self.training_fraction(spent), self.peak, self.warmup)
        self.model.optimizer.learning_rate = self.rate
        self._rate_at = spent

    def on_train_begin(self, logs=None):
        self.set_rate(self.clock.spent())

    def on_epoch_begin(self, epoch, logs=None):
        self._last, self._batches = None, 0

    def on_train_batch_begin(self, batch, logs=None):
        spent = self.clock.spent()
        if self._last is not None:  # steps within an epoch: no validation between them
            step = spent - self._last
            self.step_s = step if self.step_s is None else 0.8 * self.step_s + 0.2 * step
        self._last, self._batches = spent, self._batches + 1
        last_step = spent + (self.step_s or 0.0) + self.tail_s >= self.clock.budget_s
        if last_step:
            self.model.stop_training = True
        if last_step or spent - (self._rate_at or 0.0) >= self.RATE_EVERY_S:
            self.set_rate(spent + (self.step_s or 0.0) if last_step else spent)

    def on_epoch_end(self, epoch, logs=None):
        steps = self.params.get("steps") or self._batches
        if self._last is not None:  # the closing work: what followed the last step
            self.tail_s = max(0.0, self.clock.spent() - self._last - (self.step_s or 0.0))
        self.epochs += self._batches / max(1, steps)
        # Not worth another epoch's closing work: what is left would train a sliver of one.
        steps_left = (self.clock.left() - self.tail_s) / max(1e-9, self.step_s or 0.0)
        if self.step_s and steps_left < self.LEAST_EPOCH * steps:
            self.model.stop_training = True

    def summary(self):
        """The budget's use, for train_summary.json."""
        spent = self.clock.spent()
        return {"seconds": round(self.clock.budget_s, 1), "spent_s": round(spent, 1),
                "share_spent": round(spent / self.clock.budget_s, 4),
                "epochs": round(self.epochs, 2), "peak_learning_rate": self.peak,
                "final_learning_rate": self.rate}


class Progress(EpochTimer):
    """Say how training goes, at least once a minute when the output is not a terminal.

    - Mid-epoch, every ``every_s`` seconds: the step and the time (and, with a
      budget, the time left); Keras prints nothing inside an epoch in a log file.
    - With a budget (``clock``), one line per epoch in place of Keras's (its
      "Epoch 3/10000" would mislead: the clock, not a count, ends the run).
    - After the first epoch: with a budget, a line when it took far longer or
      shorter than planned; without one, on a CPU, how long the remaining
      epochs take.
    """

    async_safe = True  # it reads the clock, never a step's results
    FAR_OFF = 0.3      # the first epoch this much off the plan is worth a line

    def __init__(self, every_s=60.0, clock=None, planned_epoch_s=None, cpu=False,
                 low_res=None):
        """``low_res``: (cost, share) with progressive resizing: an epoch at the low
        resolution costs ``cost`` of a full-size one, for the first ``share`` of the
        budget (the plan timed full-size steps)."""
        super().__init__()
        self.every_s, self.clock = every_s, clock
        self.planned_epoch_s, self.cpu, self.low_res = planned_epoch_s, cpu, low_res
        self._first_done = self._low = False

    def on_epoch_begin(self, epoch, logs=None):
        super().on_epoch_begin(epoch, logs)
        self._epoch, self._said = epoch, self._start
        self._low = (self.low_res is not None and self.clock is not None
                     and self.clock.spent() < self.low_res[1] * self.clock.budget_s)

    def on_train_batch_begin(self, batch, logs=None):
        now = time.perf_counter()
        if self.every_s is None or now - self._said < self.every_s:
            return
        self._said = now
        left = f"; {duration(self.clock.left())} of the budget left" if self.clock else ""
        print(f"  epoch {self._epoch + 1}: step {batch + 1}/{self.params.get('steps') or '?'}, "
              f"{duration(now - self._start)} into it{left}", flush=True)

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        if self.clock is not None:
            shown = " - ".join(f"{k}: {v:.4f}" for k, v in (logs or {}).items()
                               if k != "learning_rate")
            print(f"Epoch {epoch + 1} ({duration(self.last)}): {shown}; "
                  f"{duration(max(0.0, self.clock.left()))} of the budget left", flush=True)
        if not self._first_done:  # the first epoch of this process, resumed or not
            self._first_done = True
            self.first_epoch_note(epoch)

    def epochs_that_fit(self):
        """How many more epochs fit in the budget at the last epoch's speed: those at
        the low resolution first, while its share lasts, then full-size ones."""
        cost, share = self.low_res if self._low else (1.0, 0.0)
        left = max(0.0, self.clock.left())
        low_s = min(left, max(0.0, share * self.clock.budget_s - self.clock.spent()))
        return round(low_s / self.last + (left - low_s) * cost / self.last)

    def first_epoch_note(self, epoch):
        planned = self.planned_epoch_s
        if self.clock is not None:
            if planned and self._low:  # the plan timed full-size steps
                planned *= self.low_res[0]
            if planned and abs(self.last / planned - 1) > self.FAR_OFF and self.clock.left() > 0:
                more = self.epochs_that_fit()
                print(f"The first epoch took {duration(self.last)}, not the ~{duration(planned)} "
                      "the timed steps suggested: the schedule follows the clock, so about "
                      f"{plural(more, 'more epoch')} fit.",
                      flush=True)
            return
        remaining = self.params["epochs"] - epoch - 1
        if self.cpu and remaining > 0:
            print(f"\nOn this CPU an epoch takes {duration(self.last)}: up to "
                  f"{duration(self.last * remaining)} for the remaining "
                  f"{plural(remaining, 'epoch')} (Ctrl-C stops; --resume continues later).",
                  flush=True)


# --- The callbacks of a training run -----------------------------------------------------

def make_callbacks(run, state, resume_dir, has_val, clock=None, progress_every_s=None,
                   cpu=False, closing_s=0.0):
    """The callbacks of a training run (a ``Run``): checkpointing, early stopping,
    logging, progress, resumability and, with a time budget's ``clock``, the budget
    (``closing_s``: its first guess of the seconds an epoch takes after its last step).

    Returns (callbacks, checkpoint, budget clock callback or None). None of them
    waits on a step's results: on JAX (and on GPUs generally) a per-batch *end* hook
    makes Keras wait for every step to finish before queuing the next.
    """
    # With early stopping the best model on the hold-out is kept; a fixed
    # schedule keeps its last epoch (its hold-out is only for calibration/curves).
    early = has_val and run.recipe.patience is not None
    checkpoint = AtomicCheckpoint(run.model_path, monitor="val_loss" if early else None,
                                  best=state.get("checkpoint_best"))
    low_res = None
    if run.recipe.low_res:  # progressive resizing: its low-resolution epochs cost less
        from network.training.resizing import relative_cost

        low_res = (relative_cost(run.recipe.low_res), run.recipe.low_res_share)
    progress = Progress(progress_every_s, clock, run.planned_epoch_s, cpu,  # times each epoch
                        low_res)
    # Order matters: StateWriter records the checkpoint's and early stopping's state
    # after they have seen the epoch; the budget clock comes last, so the closing
    # work it measures includes their saving.
    callbacks = [progress, StopOnNaN(), checkpoint]
    early_stop = None
    if early:
        early_stop = ResumableEarlyStopping(
            monitor="val_loss", mode="min", patience=run.recipe.patience,
            restore_best_weights=True, verbose=1, state=state, best_model_path=run.model_path)
        callbacks.append(early_stop)
    callbacks += [
        HistoryLogger(Path(run.output_dir) / "history.csv", progress, append=bool(state)),
        StateWriter(resume_dir / STATE_FILE, checkpoint, early_stop, clock),
    ]
    budget = None
    if clock is not None:
        peak = run.recipe.learning_rate if run.recipe.optimizer == "adamw" else None
        budget = BudgetClock(clock, peak, run.warmup_fraction, closing_s)
        callbacks.append(budget)
    return callbacks, checkpoint, budget


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
