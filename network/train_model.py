"""Train a CIFAR-100 classifier.

The default is the lab manual's recipe: its 9-layer CNN, Adam 1e-4, batch 64,
up to 100 epochs with early stopping (patience 10) on a 20 % validation split
held out from the training images. ``--recipe cpu`` trains a ResNet-9 sized
to the machine for a time budget (15 minutes unless ``--minutes`` says
otherwise: a fast CPU gets a bigger network); ``--recipe fast`` a
double-width one for a GPU. All recipes are in ``network/training/recipes.py``; the
README's results table says what each reaches on which machine.

Saves the best model to ``models/best_model.h5`` (class names beside it in
``class_names.json``) and, in ``reports/``: ``training_curves.png``,
``history.csv`` and ``train_summary.json`` (settings, hardware, timings and
the final test-set score, which plays no part in training). A model already
there is not lost: it moves aside first, with its files, into
``models/previous/`` (``network/training/previous.py``). ``--quick`` runs, and
``--subset`` runs, keep to ``models/quick/`` and ``reports/quick/`` instead.

Usage:

    python -m network.train_model                       # the lab's recipe
    python -m network.train_model --quick               # a quick try: models/quick/
    python -m network.train_model --recipe cpu --minutes 30   # 30 minutes on a CPU
    python -m network.train_model --recipe fast         # ResNet-9 x2, best on a GPU
    python -m network.train_model --resume              # continue an interrupted run
"""

import argparse
import contextlib
import datetime
import math
import shutil
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: python network/train_model.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from network.core import cli, runtime
from network.core.cli import duration, plural
from network.core.console_log import logged
from network.core.errors import LabError
from network.data_utils import NUM_CLASSES, load_cifar100, one_hot
from network.training.distribute import even_split_for
from network.training.recipes import (
    STATE_FILE,
    Run,
    add_recipe_arguments,
    recipe_overrides,
    save_run,
    start_or_resume,
)

RESUME_DIR = "resume"          # inside --output-dir while a run is unfinished
TRAIN_SIZE = 50_000
QUICK_SUBSET, QUICK_EPOCHS = 2000, 2  # --quick: a small run, unless the options say otherwise
PROGRESS_S = 60                # a log file gets a progress line at least this often (s)
LONG_RUN_S = 3600              # a CPU run longer than this gets the faster ways named


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="train_model", description=__doc__.split("\n\n")[0])
    add_recipe_arguments(parser)
    parser.add_argument("--subset", type=cli.positive_int,
                        help="train on only the first N training images (quick runs)")
    parser.add_argument("--precision", choices=["auto", "float32", "mixed_bfloat16",
                                                "mixed_float16"], default="auto",
                        help="auto: for the fast recipe on a GPU mixed_bfloat16 (compute "
                             "capability 8.0 on) or mixed_float16 (7.x), else float32")
    parser.add_argument("--distribute", action="store_true",
                        help="data-parallel training on all local devices (JAX: "
                             "keras.distribution.DataParallel; TensorFlow: MirroredStrategy)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the interrupted run saved in OUTPUT_DIR/resume")
    parser.add_argument("--restart", action="store_true",
                        help="discard an interrupted run and start afresh")
    cli.add_common_arguments(parser, quick=True)
    args = parser.parse_args(argv)
    # A --subset run is a quick try too: the quick folders, unless given others.
    filled = cli.apply_quick(args, implied=args.subset is not None)
    why = ("Quick run" if args.quick else
           "A --subset run is a quick try (--no-quick: the real folders)")
    args.quick_note = cli.quick_note(args, filled, why)
    if args.quick and not args.resume:  # a resumed run keeps its own settings
        args.subset = args.subset or QUICK_SUBSET
        if args.epochs is None and args.minutes is None:
            args.epochs = QUICK_EPOCHS

    if args.resume and args.restart:
        parser.error("--resume and --restart exclude each other")
    if args.subset is not None and args.subset > TRAIN_SIZE:
        parser.error(f"--subset {args.subset} is larger than the {TRAIN_SIZE} training images")
    if args.model_path.suffix not in (".h5", ".keras"):
        parser.error(f"--model-path must end in .h5 or .keras, got {args.model_path.name}")
    cli.ensure_writable_dir(parser, args.output_dir, "output folder")
    cli.ensure_writable_dir(parser, args.model_path.parent, "model folder")
    return args


def resume_note(args, run, state):
    """Say that a run resumes, and which options given it ignores (it keeps its own)."""
    if not state:
        return
    print(f"Resuming the interrupted run after epoch {state['epoch']} with its original "
          f"settings (recipe {run.recipe.name})")
    ignored = [f"--{n.replace('_', '-')}" for n in [*recipe_overrides(args), "subset"]
               if getattr(args, n) is not None]
    if ignored:
        print(f"Note: {', '.join(ignored)} ignored: a resumed run keeps its settings")


# --- Data -----------------------------------------------------------------------------

def split_train_val(x, y, val_split, seed):
    """A seeded random hold-out of ``val_split`` of the training images."""
    order = np.random.default_rng(seed).permutation(len(x))
    n_val = int(round(len(x) * val_split))
    val, train = order[:n_val], order[n_val:]
    return (x[train], y[train]), (x[val], y[val])


def load_data(run):
    """The data set, checked before the slow Keras import: a missing or damaged file, or
    a --subset too large, is answered at once."""
    data = load_cifar100(run.data_dir, allow_md5_mismatch=run.allow_md5_mismatch)
    if run.subset is not None and run.subset > len(data.x_train):
        raise LabError(f"--subset {run.subset} is larger than the {len(data.x_train)} "
                       "training images")
    return data


def split_data(run, data):
    """The training and hold-out images (uint8) with labels."""
    x_all, y_all = data.x_train[:run.subset], data.y_train[:run.subset]
    train, val = split_train_val(x_all, y_all, run.recipe.val_split, run.seed)
    if len(train[0]) == 0:
        raise LabError("no training images left after the validation split")
    print(f"Training on {cli.plural(len(train[0]), 'image')}, validating on {len(val[0]):,} "
          f"(test set of {len(data.x_test):,} kept apart)")
    return train, val


# --- Model ------------------------------------------------------------------------------

def distribution(run):
    """(scope, replicas): the distribution scope to build in, and its device count."""
    from network.training.distribute import setup_distribution

    if not run.distribute:
        return contextlib.nullcontext(), 1
    scope, replicas = setup_distribution()
    print(f"Data-parallel training on {cli.plural(replicas, 'device')}")
    return scope, replicas


def budget_clock(run, state):
    """The time budget's clock (a ``budget.Clock``), or None for a run without one. A
    resumed run continues the clock from the time the interrupted run had spent."""
    from network.training.budget import Clock

    seconds = run.recipe.minutes * 60 if run.recipe.minutes else run.budget_s
    return Clock(seconds, spent=state.get("budget_spent_s", 0.0)) if seconds else None


def build_model_for(run, train, val, scope, clock):
    """The run (planned, when it has a fresh time budget) and its compiled network."""
    from network.model_utils import build_for_recipe, compile_for_recipe
    from network.training.budget import plan_run

    if run.recipe.minutes:  # may refuse a budget too small for this machine
        run, model = plan_run(run, train, scope, clock, seed=run.seed, val_images=len(val[0]))
        model.summary()
        return run, model
    with scope:  # MirroredStrategy needs the model and optimizer built in its scope
        model = build_for_recipe(run.recipe, NUM_CLASSES, seed=run.seed, summary=True)
        compile_for_recipe(model, run.recipe, steps_per_epoch(run, train),
                           budgeted=run.budget_s is not None)
    return run, model


def steps_per_epoch(run, train):
    return math.ceil(len(train[0]) / run.recipe.batch_size)


# --- The truth about time, before the first epoch ---------------------------------------

def estimate_time(model, run, train, val, initial_epoch):
    """Time a few steps and say how long an epoch and the whole run take here; on a CPU
    where that is more than an hour, name the two faster ways. Returns the expected
    seconds per epoch, or None when an epoch is hardly longer than the timing itself."""
    from network.training.budget import PROBE_STEPS, timed_epoch_seconds

    if steps_per_epoch(run, train) <= 2 * (PROBE_STEPS + 1):
        return None
    epoch_s = timed_epoch_seconds(model, train, run.recipe.batch_size, len(val[0]))
    epochs = run.recipe.epochs - initial_epoch
    whole = epoch_s * epochs
    caveat = ("; early stopping usually ends the lab recipe sooner"
              if run.recipe.patience is not None else "")
    print(f"Timed {PROBE_STEPS} steps: one epoch takes about {duration(epoch_s)} here, the "
          f"whole run ({plural(epochs, 'epoch')}) up to {duration(whole)}{caveat}.", flush=True)
    if whole > LONG_RUN_S and not runtime.nvidia_driver_present():
        lab = f"{math.ceil(epoch_s / 60)}" if run.recipe.name == "lab" else "M"
        print(f"Faster on this CPU: --recipe cpu --minutes {lab} (a ResNet-9 sized to this "
              "machine, about the manual's accuracy in one lab epoch's time), or --minutes M "
              "to train this network for M minutes.", flush=True)
    return epoch_s


def cpu_advice(run):
    """Without a GPU: say so, in a way that fits the run. Returns whether there is none."""
    budgeted = bool(run.recipe.minutes) or run.budget_s is not None
    note = ("it trains for the time budget (--minutes)" if budgeted
            else "the time it takes is measured below")
    if run.recipe.name == "lab" and not budgeted:  # the manual's network is meant for a GPU
        note += " (--recipe cpu trains a ResNet-9 sized to this CPU for a time budget instead)"
    hint = runtime.no_gpu_hint(cpu_note=note)
    if hint is not None:
        print(hint)
    return hint is not None


# --- Training and its summary -------------------------------------------------------

def fit(model, run, train, val, callbacks, initial_epoch, resume_dir, clock):
    """``model.fit`` on the prepared images."""
    import keras

    from network.model_utils import model_images

    val_data = (model_images(model, val[0]), one_hot(val[1], NUM_CLASSES)) if len(val[0]) else None
    # A live progress bar on a terminal; one line per epoch in a log file. A time
    # budget prints its own lines (Progress): Keras's "Epoch 3/10000" would mislead.
    verbose = 0 if clock is not None else 1 if sys.stdout.isatty() else 2
    x, y = model_images(model, train[0]), one_hot(train[1], NUM_CLASSES)
    batch_size = run.recipe.batch_size
    if run.recipe.low_res:  # progressive resizing: batches whose size follows the run
        from network.training.resizing import ProgressiveImages

        x = ProgressiveImages(x, y, batch_size, run.recipe.low_res, run.recipe.low_res_share,
                              clock, run.recipe.epochs, initial_epoch, run.seed)
        y = batch_size = None  # the batches carry their labels and size
    elif keras.backend.backend() == "tensorflow":  # no tf.data pipeline rebuilt per epoch
        from network.training.batches import ShuffledBatches

        x = ShuffledBatches(x, y, batch_size, seed=run.seed)
        y = batch_size = None
    try:
        model.fit(x, y, batch_size=batch_size, epochs=run.recipe.epochs,
                  initial_epoch=initial_epoch, validation_data=val_data, callbacks=callbacks,
                  verbose=verbose)
    except KeyboardInterrupt:
        if (resume_dir / STATE_FILE).is_file():
            print(f"\nThe run is kept in {resume_dir}: continue it with --resume "
                  f"(--output-dir {run.output_dir})", file=sys.stderr)
        raise


def run_training(run, model, clock, state, train, val, cpu, callbacks=()):
    """Restore an interrupted run, say how long it takes, fit.

    Returns (checkpoint, initial epoch, the budget's use or None).
    """
    from network.training.budget import closing_seconds
    from network.training.callbacks import make_callbacks, restore_backup

    resume_dir = Path(run.output_dir) / RESUME_DIR
    if not state:  # a fresh run, as planned: a resumed run keeps this size and budget
        save_run(run, resume_dir)
    if clock is None:  # a budget's plan has said it already
        estimate_time(model, run, train, val, int(state.get("epoch", 0)))
    every_s = None if sys.stdout.isatty() and clock is None else PROGRESS_S
    closing_s = closing_seconds(run.planned_epoch_s or 0.0, len(train[0]), len(val[0]))
    own, checkpoint, budget = make_callbacks(run, state, resume_dir, len(val[0]) > 0,
                                             clock, every_s, cpu, closing_s)
    if clock is not None:
        clock.uncounted = list(callbacks)  # a benchmark's measurements are not training
        for callback in callbacks:  # ... and those that ask read the budget's own clock
            if hasattr(callback, "clock"):
                callback.clock = clock
    history_path = Path(run.output_dir) / "history.csv"
    initial_epoch = restore_backup(model, resume_dir, state, history_path) if state else 0
    fit(model, run, train, val, [*own, *callbacks], initial_epoch, resume_dir, clock)
    shutil.rmtree(resume_dir, ignore_errors=True)  # the run is complete
    return checkpoint, initial_epoch, budget.summary() if budget else None


def summarise(model, run, checkpoint, data, val, show):
    """Curves, calibration and the final test score; returns train_summary.json's content.

    The saved model (with early stopping: the best epoch's) is the one calibrated
    and scored. The test set played no part in training.
    """
    from network.analysis.calibration import calibrate
    from network.analysis.metrics import evaluate_probabilities, load_history, plot_history, predict
    from network.model_utils import hardware_info, load_model, model_images
    from network.training.callbacks import check_finite
    from network.training.distribute import devices_in_use

    output_dir = Path(run.output_dir)
    history = load_history(output_dir / "history.csv")
    history.to_csv(output_dir / "history.csv", index=False)  # one clean row per epoch
    plot_history(history, output_dir / "training_curves.png", show=show)
    check_finite(history, checkpoint, run.model_path)
    if checkpoint.monitor is not None:
        model = load_model(run.model_path, num_class=NUM_CLASSES)
    temperature = calibrate(model, val, run.model_path)
    probs = predict(model, model_images(model, data.x_test))
    test = evaluate_probabilities(probs, data.y_test, data.fine_to_coarse[data.y_test],
                                  data.fine_to_coarse)
    return {
        "settings": run.as_dict(),
        "epochs_run": len(history),
        "epoch_seconds": [round(t, 3) for t in history.get("epoch_time_s", [])],
        "test": test,
        "temperature": temperature,
        "hardware": hardware_info(),
        "parameters": model.count_params(),
        "devices_used": devices_in_use(model),
    }


def report(summary, run, initial_epoch, seconds):
    """The run's last lines: its test score and where its files are."""
    test = summary["test"]
    resumed = f" (resumed after epoch {initial_epoch})" if initial_epoch else ""
    print(f"Test accuracy {test['accuracy']:.2%} (top-5 {test['top5_accuracy']:.2%}), "
          f"{plural(summary['epochs_run'] - initial_epoch, 'epoch')} in {seconds:.1f} s{resumed}")
    budget = summary.get("budget")
    if budget:
        print(f"Time budget: {duration(budget['spent_s'])} of {duration(budget['seconds'])} "
              f"spent ({budget['share_spent']:.0%}, planning included), "
              f"{budget['epochs']:g} epochs trained")
    print(f"Model: {run.model_path}; curves and history in {run.output_dir}")


@logged("train_model", parse_args)  # what it prints also goes to logs/train_model.log
def main(argv=None, extra_callbacks=()):
    runtime.setup_backend_env()
    args = parse_args(argv)
    show = cli.setup_matplotlib(args.show)
    run, state = start_or_resume(Run.from_args(args), args.output_dir / RESUME_DIR,
                                 args.resume, args.restart)
    data = load_data(run)  # mistakes in the data are answered before the slow import
    import keras

    from network.analysis.calibration import calibration_path
    from network.core.files import write_json_atomic
    from network.model_utils import fit_whitening, save_class_names, set_precision
    from network.training.previous import keep_previous

    cli.quiet_keras_warnings()
    precision = set_precision(run.precision, run.recipe)
    runtime.announce(precision, training=True)  # the first line, as in every script
    resume_note(args, run, state)
    if args.quick_note:  # where a quick run writes, so the real results stay as they are
        print(args.quick_note)
    cpu = cpu_advice(run)
    train, val = split_data(run, data)
    keras.utils.set_random_seed(run.seed)
    scope, replicas = distribution(run)
    if replicas > 1:
        train, val = even_split_for(replicas, run.recipe.batch_size, train, val)

    started = time.perf_counter()
    clock = budget_clock(run, state)  # a time budget counts its planning too
    run, model = build_model_for(run, train, val, scope, clock)
    if not state:  # a resumed run gets its whitening back with its weights
        fit_whitening(model, train[0])
    before_fit = time.perf_counter() - started
    # Only now, with the run planned: a refused budget leaves the old model's files alone.
    keep_previous(run.model_path, run.output_dir, resuming=bool(state))  # never lost silently
    save_class_names(run.model_path, data.fine_names, data.coarse_names, data.fine_to_coarse)
    calibration_path(run.model_path).unlink(missing_ok=True)  # it belongs to the old model
    checkpoint, initial_epoch, budget = run_training(run, model, clock, state, train, val,
                                                     cpu, extra_callbacks)
    seconds = time.perf_counter() - started
    summary = summarise(model, run, checkpoint, data, val, show)
    summary["settings"].update(precision_used=precision, replicas=replicas,
                               seconds_before_fit=round(before_fit, 2))
    summary.update(resumed_after_epoch=initial_epoch or None, train_images=len(train[0]),
                   val_images=len(val[0]), train_seconds=round(seconds, 2), budget=budget,
                   # When the run ended, in local time with its offset (ISO 8601): the
                   # report's "trained on" date, whatever later copies do to the file's.
                   finished_at=datetime.datetime.now().astimezone().isoformat(timespec="seconds"))
    write_json_atomic(Path(run.output_dir) / "train_summary.json", summary)
    report(summary, run, initial_epoch, seconds)
    return 0


if __name__ == "__main__":
    cli.run_main(main)
