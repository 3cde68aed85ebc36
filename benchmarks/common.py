"""What the benchmark scripts share: the CPU's name, the data files check, the test-set
curve during training, tables, JSON.

Usage:

    from benchmarks.common import epoch_curve
    rows = []
    model.fit(x, y, epochs=3, callbacks=[epoch_curve(rows, (x_test, y_test))])
    rows[-1]   # {"epoch": 3, "seconds": ..., "train_s": ..., "test_accuracy": ..., ...}
"""

import platform
import time
from pathlib import Path

from network.core.errors import LabError
from network.core.files import write_json_atomic


def cpu_model():
    """The CPU's model name from /proc/cpuinfo (Linux), else platform's guess."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


# CPU features that decide how fast a network trains (vector width, bf16 units).
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def cpu_flags():
    """Which of ``CPU_FLAGS`` this CPU lists in /proc/cpuinfo (Linux; else None)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                listed = set(line.split(":", 1)[1].split())
                return [flag for flag in CPU_FLAGS if flag in listed]
    except OSError:
        pass
    return None


def require_data_files(data_dir, hint=""):
    """Stop early, with a hint, when the data files are missing.

    ``hint`` ends the message (e.g. ", or use --synthetic N ...").
    """
    from network.data_utils import missing_files

    missing = missing_files(data_dir)
    if missing:
        raise LabError(f"{', '.join(missing)} not found in {data_dir}: put the CIFAR-100 files "
                       "'meta', 'train', 'test' there (python -m network.train_model downloads "
                       f"them){hint}")


def scores_on_test(model, images, labels, batch_size=500):
    """Top-1 and top-5 accuracy of ``model`` on uint8 ``images`` with integer ``labels``,
    and the seconds that took (measurement only: never used to train)."""
    import numpy as np
    from sklearn.metrics import top_k_accuracy_score

    from network.analysis.metrics import predict
    from network.model_utils import model_images

    start = time.perf_counter()
    probs = predict(model, model_images(model, images), batch_size=batch_size)
    return {"test_accuracy": float(np.mean(probs.argmax(axis=1) == labels)),
            "test_top5": float(top_k_accuracy_score(labels, probs, k=5,
                                                    labels=np.arange(probs.shape[1]))),
            "eval_seconds": time.perf_counter() - start}


def epoch_curve(rows, test=None, batch_size=500):
    """A Keras callback that times each epoch and then, outside the timing, scores the
    model on ``test`` (uint8 images, integer labels; None: timing only), appending a
    row per epoch to ``rows``: epoch, seconds (the epoch's own), train_s (training
    seconds since ``fit`` began, scoring left out), loss, train_accuracy and, with
    ``test``, the :func:`scores_on_test`.

    Its ``uncounted_s`` is the seconds spent scoring: a time budget does not count
    them as training. A time budget's ``clock`` (``train_model`` sets it) adds
    clock_s to each row: the budget's seconds spent, planning included, and a
    resumed run's earlier parts too.
    """
    import keras

    class EpochCurve(keras.callbacks.Callback):
        clock = None  # a budget.Clock, set by train_model for a budgeted run

        def on_train_begin(self, logs=None):
            self.started, self.uncounted_s = time.perf_counter(), 0.0

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch_started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            # Reading the loss waits for the epoch's last step to finish, so
            # asynchronous dispatch (JAX, GPUs) cannot hide work from the clock.
            loss = float(logs["loss"])
            reached = time.perf_counter()
            row = {"epoch": epoch + 1, "seconds": reached - self.epoch_started,
                   "train_s": reached - self.started - self.uncounted_s, "loss": loss,
                   "train_accuracy": float(logs.get("accuracy", float("nan")))}
            if self.clock is not None:
                row["clock_s"] = self.clock.spent()
            line = f"epoch {epoch + 1}: {row['seconds']:.2f} s, loss {loss:.4f}"
            if test is not None:
                row.update(scores_on_test(self.model, *test, batch_size=batch_size))
                self.uncounted_s += time.perf_counter() - reached
                line += (f", test top-1 {row['test_accuracy']:.2%} ({row['eval_seconds']:.1f} s"
                         f"; {row['train_s']:.0f} s of training so far)")
            rows.append(row)
            print(line, flush=True)

    return EpochCurve()


def fmt(value, unit="", digits=3):
    """A figure for a table: 'n/a' for None, ``digits`` significant digits for floats."""
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}g}{unit}" if abs(value) < 1000 else f"{value:,.0f}{unit}"
    return f"{value:,}{unit}" if isinstance(value, int) else f"{value}{unit}"


def print_table(title, rows):
    """Print (label, value) rows as a two-column table."""
    width = max(len(label) for label, _ in rows)
    print(f"\n{title}\n{'-' * len(title)}")
    for label, value in rows:
        print(f"{label:<{width}}  {value}")


def write_json(path, result):
    """Write every figure to ``path`` (atomically) and say so."""
    write_json_atomic(path, result)
    print(f"\nFigures written to {path}")
