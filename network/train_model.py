"""Train a CIFAR-100 classifier.

The default is the lab manual's recipe: its 9-layer CNN, Adam 1e-4, batch 64,
up to 100 epochs with early stopping (patience 10) on a 20 % validation split
held out from the training images. ``--recipe cpu`` trains a half-width
ResNet-9 that beats the manual's result in about a quarter of an hour on a
laptop CPU; ``--recipe fast`` a double-width one for a GPU (all recipes are
in ``network/recipes.py``).

Saves the best model to ``models/best_model.h5`` (class names beside it in
``class_names.json``) and, in ``reports/``: ``training_curves.png``,
``history.csv`` and ``train_summary.json`` (settings, hardware, timings and
the final test-set score, which plays no part in training).

Usage:

    python -m network.train_model                       # the lab's recipe
    python -m network.train_model --subset 2000 --epochs 2   # a quick CPU run
    python -m network.train_model --recipe cpu          # ~57 % in ~15 min on a CPU
    python -m network.train_model --recipe fast         # ResNet-9 x2, best on a GPU
    python -m network.train_model --resume              # continue an interrupted run
"""

import argparse
import contextlib
import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: python network/train_model.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from network import cli, runtime
from network.data_utils import NUM_CLASSES, load_cifar100, one_hot
from network.distribute import trim_to_multiple
from network.errors import LabError
from network.recipes import RECIPES, Recipe, recipe_with

RESUME_DIR = "resume"          # inside --output-dir while a run is unfinished
RUN_FILE = "run.json"          # the run's settings, kept for --resume
STATE_FILE = "state.json"      # the last finished epoch: its weights file, checkpoint
                               # and early-stopping state (see StateWriter)
TRAIN_SIZE = 50_000
# Options that change a recipe (a resumed run keeps the original ones).
RECIPE_OPTIONS = ("epochs", "batch_size", "learning_rate", "val_split", "width", "minutes")
PROBE_STEPS = 6                # timed training steps that plan a time-budgeted run
EPOCH_MARGIN = 1.3             # a whole epoch's time over PROBE_STEPS' (see plan_epochs)
# Options that describe the run itself; saved beside the recipe's fields.
RUN_OPTIONS = ("subset", "seed", "precision", "distribute", "data_dir", "allow_md5_mismatch",
               "model_path")


def parse_args(argv=None):
    def default(field):
        return ", ".join(f"{name}: {getattr(r, field):g}" for name, r in RECIPES.items())

    parser = argparse.ArgumentParser(
        prog="train_model", description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="lab",
                        help="training recipe (default: lab)")
    parser.add_argument("--epochs", type=cli.positive_int,
                        help=f"(maximum) epochs ({default('epochs')})")
    parser.add_argument("--batch-size", type=cli.positive_int,
                        help=f"images per step ({default('batch_size')})")
    parser.add_argument("--learning-rate", type=cli.positive_float,
                        help=f"(peak) learning rate ({default('learning_rate')})")
    parser.add_argument("--subset", type=cli.positive_int,
                        help="train on only the first N training images (quick runs)")
    parser.add_argument("--val-split", type=float,
                        help=f"fraction held out for validation ({default('val_split')})")
    parser.add_argument("--width", type=cli.positive_float,
                        help="ResNet-9 recipes: channel width multiplier "
                             "(1.0 = 64-128-256-512; cpu: 0.5, fast: 2)")
    parser.add_argument("--minutes", type=cli.positive_float,
                        help="train for as many epochs as fit in this many minutes on this "
                             "machine (cpu: 15); --epochs sets a fixed number instead")
    parser.add_argument("--precision", choices=["auto", "float32", "mixed_bfloat16",
                                                "mixed_float16"], default="auto",
                        help="auto: mixed_bfloat16 for the fast recipe on a GPU, else float32")
    parser.add_argument("--distribute", action="store_true",
                        help="data-parallel training on all local devices (JAX: "
                             "keras.distribution.DataParallel; TensorFlow: MirroredStrategy)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the interrupted run saved in OUTPUT_DIR/resume")
    parser.add_argument("--restart", action="store_true",
                        help="discard an interrupted run and start afresh")
    cli.add_common_arguments(parser)
    args = parser.parse_args(argv)

    if args.resume and args.restart:
        parser.error("--resume and --restart exclude each other")
    if args.subset is not None and args.subset > TRAIN_SIZE:
        parser.error(f"--subset {args.subset} is larger than the {TRAIN_SIZE} training images")
    if args.val_split is not None and not 0 <= args.val_split < 1:
        parser.error(f"--val-split must lie in [0, 1), got {args.val_split}")
    if args.model_path.suffix not in (".h5", ".keras"):
        parser.error(f"--model-path must end in .h5 or .keras, got {args.model_path.name}")
    cli.ensure_writable_dir(parser, args.output_dir, "output folder")
    cli.ensure_writable_dir(parser, args.model_path.parent, "model folder")
    return args


# --- The run's settings: a recipe plus how to run it ----------------------------------

def settings_from_args(args):
    """The recipe with the command line's overrides, and the run's own options,
    as one flat dict (what run.json and train_summary.json hold)."""
    recipe = recipe_with(args.recipe, **{k: getattr(args, k) for k in RECIPE_OPTIONS})
    if args.epochs is not None and args.minutes is None:
        recipe = dataclasses.replace(recipe, minutes=None)  # a fixed number of epochs asked
    run = {k: getattr(args, k) for k in RUN_OPTIONS}
    run.update(data_dir=str(args.data_dir), model_path=str(args.model_path))
    return {"recipe": recipe.name, **_recipe_fields(recipe), **run}


def _recipe_fields(recipe):
    return {k: v for k, v in vars(recipe).items() if k != "name"}


def recipe_from_settings(settings):
    """The ``Recipe`` saved in ``settings`` (fields it lacks keep the recipe's defaults)."""
    fields = {k: settings[k] for k in Recipe.__dataclass_fields__ if k in settings}
    fields.pop("name", None)
    return recipe_with(settings["recipe"], **fields)


def prepare_resume(args, resume_dir):
    """Decide between a fresh run and a resumed one; return (settings, state)."""
    run_file, state_file = resume_dir / RUN_FILE, resume_dir / STATE_FILE
    # A run is resumable once it has finished at least one epoch.
    interrupted = run_file.is_file() and state_file.is_file()
    if args.resume:
        if not interrupted:
            raise LabError(f"no interrupted run to resume in {resume_dir} "
                           "(no finished epoch was saved there)")
        try:
            saved = json.loads(run_file.read_text())
            state = json.loads(state_file.read_text())
            # Fields a saved run lacks keep its recipe's (or the defaults') values.
            recipe = recipe_from_settings(saved)
            settings = {**settings_from_args(args), **_recipe_fields(recipe), **saved}
            print(f"Resuming the interrupted run after epoch {state['epoch']} "
                  f"with its original settings (recipe {settings['recipe']})")
        except (ValueError, KeyError, TypeError):
            raise LabError(f"the interrupted run in {resume_dir} is damaged: pass --restart "
                           "to discard it and start afresh") from None
        ignored = [f"--{name.replace('_', '-')}" for name in (*RECIPE_OPTIONS, "subset")
                   if getattr(args, name) is not None]
        if ignored:
            print(f"Note: {', '.join(ignored)} ignored: a resumed run keeps its settings")
        return settings, state
    if interrupted and not args.restart:
        raise LabError(f"an interrupted run was found in {resume_dir}: pass --resume to "
                       "continue it, or --restart to discard it")
    shutil.rmtree(resume_dir, ignore_errors=True)
    settings = settings_from_args(args)
    resume_dir.mkdir(parents=True)
    run_file.write_text(json.dumps(settings, indent=1))
    return settings, {}


# --- Data -----------------------------------------------------------------------------

def split_train_val(x, y, val_split, seed):
    """A seeded random hold-out of ``val_split`` of the training images."""
    order = np.random.default_rng(seed).permutation(len(x))
    n_val = int(round(len(x) * val_split))
    val, train = order[:n_val], order[n_val:]
    return (x[train], y[train]), (x[val], y[val])


def load_splits(settings, recipe):
    """The data set, and the training and hold-out images (uint8) with labels."""
    data = load_cifar100(settings["data_dir"], allow_md5_mismatch=settings["allow_md5_mismatch"])
    subset = settings["subset"]
    if subset is not None and subset > len(data.x_train):
        raise LabError(f"--subset {subset} is larger than the {len(data.x_train)} "
                       "training images")
    x_all = data.x_train[:subset] if subset else data.x_train
    y_all = data.y_train[:subset] if subset else data.y_train
    train, val = split_train_val(x_all, y_all, recipe.val_split, settings["seed"])
    if len(train[0]) == 0:
        raise LabError("no training images left after the validation split")
    print(f"Training on {len(train[0])} images, validating on {len(val[0])} "
          f"(test set of {len(data.x_test)} kept apart)")
    return data, train, val


def even_split_for(replicas, batch_size, *splits):
    """Trim each (x, y) split so every batch divides evenly over the devices."""
    if batch_size % replicas:
        raise LabError(f"--batch-size {batch_size} must be a multiple of the {replicas} "
                       "devices for --distribute")
    return [(x[:trim_to_multiple(len(x), replicas)], y[:trim_to_multiple(len(y), replicas)])
            for x, y in splits]


# --- Model ------------------------------------------------------------------------------

def build_compiled(settings, recipe, steps_per_epoch):
    """The recipe's network, compiled (inside the distribution scope when asked)."""
    from network.distribute import setup_distribution
    from network.model_utils import build_for_recipe, compile_for_recipe

    scope, replicas = contextlib.nullcontext(), 1
    if settings.get("distribute"):
        scope, replicas = setup_distribution()
        print(f"Data-parallel training on {replicas} device(s)")
    with scope:  # MirroredStrategy needs the model and optimizer built in its scope
        model = build_for_recipe(recipe, NUM_CLASSES, seed=settings["seed"], summary=True)
        compile_for_recipe(model, recipe, steps_per_epoch)
    return model, replicas, scope


def plan_epochs(model, recipe, settings, train, scope, started):
    """How many epochs fit in the recipe's time budget on this machine.

    Times a few training steps (after a first one that compiles), leaves room
    for each epoch's validation and checkpoint, then sets the optimizer up
    afresh with a schedule for exactly those epochs. The timed steps run at
    the warm-up's starting rate, so they do no harm to the model.
    """
    from network.model_utils import compile_for_recipe, model_images

    batch = settings["batch_size"]
    full = min(PROBE_STEPS + 1, len(train[0]) // batch) * batch  # whole batches: one shape
    x = model_images(model, train[0][:max(full, batch)])
    y = one_hot(train[1][:len(x)], NUM_CLASSES)
    first = time.perf_counter()
    model.fit(x[:batch], y[:batch], batch_size=batch, epochs=1, verbose=0)  # compiles
    timed = time.perf_counter()
    if full >= 2 * batch:
        model.fit(x[batch:], y[batch:], batch_size=batch, epochs=1, verbose=0)
        step_s = (time.perf_counter() - timed) / (full // batch - 1)
    else:  # too few images to time apart from compiling: an overestimate
        step_s = timed - first
    compile_s = max(0.0, timed - first - step_s)  # the new schedule compiles once more
    steps = -(-len(train[0]) // batch)
    # Whole epochs run slower than a few steps straight after compiling (on a 2-core
    # VM here by 26 %: the clock settles, the data pipeline shuffles 50,000 images,
    # the hold-out is evaluated and the checkpoint saved), hence the margin.
    epoch_s = steps * step_s * EPOCH_MARGIN
    left = recipe.minutes * 60 - (time.perf_counter() - started) - compile_s
    epochs = max(1, min(recipe.epochs, int(left // epoch_s)))
    with scope:
        compile_for_recipe(model, dataclasses.replace(recipe, epochs=epochs), steps)
    print(f"Time budget {recipe.minutes:g} min: one epoch takes about {epoch_s:.0f} s here, "
          f"so {epochs} epoch{'s' * (epochs > 1)} (schedule set for them)")
    return epochs, round(epoch_s, 1)


def make_callbacks(settings, state, model_path, output_dir, resume_dir, has_val):
    """Checkpointing, early stopping, logging and resumability.

    None of them works per batch: on JAX (and on GPUs generally) a per-batch
    hook makes Keras wait for every step to finish before queuing the next.
    """
    from network.train_callbacks import (
        AtomicCheckpoint,
        EpochTimer,
        HistoryLogger,
        ResumableEarlyStopping,
        StateWriter,
        StopOnNaN,
    )

    # With early stopping the best model on the hold-out is kept; a fixed
    # schedule keeps its last epoch (its hold-out is only for calibration/curves).
    early = has_val and settings["patience"] is not None
    checkpoint = AtomicCheckpoint(model_path, monitor="val_loss" if early else None,
                                  best=state.get("checkpoint_best"))
    timer = EpochTimer()
    # Order matters: StateWriter runs last to record the checkpoint's and early
    # stopping's state after they have seen the epoch.
    callbacks = [timer, StopOnNaN(), checkpoint]
    early_stop = None
    if early:
        early_stop = ResumableEarlyStopping(
            monitor="val_loss", mode="min", patience=settings["patience"],
            restore_best_weights=True, verbose=1, state=state, best_model_path=model_path)
        callbacks.append(early_stop)
    callbacks += [
        HistoryLogger(output_dir / "history.csv", timer, append=bool(state)),
        StateWriter(resume_dir / STATE_FILE, checkpoint, early_stop),
    ]
    return callbacks, checkpoint


def fit(model, settings, train, val, callbacks, initial_epoch, resume_dir, output_dir):
    """``model.fit`` on the prepared images."""
    from network.model_utils import model_images

    val_data = (model_images(model, val[0]), one_hot(val[1], NUM_CLASSES)) if len(val[0]) else None
    try:
        model.fit(model_images(model, train[0]), one_hot(train[1], NUM_CLASSES),
                  batch_size=settings["batch_size"], epochs=settings["epochs"],
                  initial_epoch=initial_epoch, validation_data=val_data, callbacks=callbacks,
                  # A live progress bar on a terminal; one line per epoch in a log file.
                  verbose=1 if sys.stdout.isatty() else 2)
    except KeyboardInterrupt:
        if (resume_dir / STATE_FILE).is_file():
            print(f"\nThe run is kept in {resume_dir}: continue it with --resume "
                  f"(--output-dir {output_dir})", file=sys.stderr)
        raise


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


def cpu_advice(recipe, planned):
    """Without a GPU: say so, and (lab recipe) point to the CPU recipe. Returns a
    callback that tells, once the first epoch is done, how long the whole run takes
    here; None with a GPU or when a time budget planned the epochs already."""
    from network.train_callbacks import EpochTimer

    hint = runtime.no_gpu_hint()
    if hint is None:
        return None
    if recipe.name == "lab":
        hint += (" On a CPU, --recipe cpu trains a ResNet-9 for 15 minutes instead "
                 "(see the README's results).")
    print(hint)
    if planned:
        return None

    class FirstEpochNote(EpochTimer):
        def on_epoch_end(self, epoch, logs=None):
            super().on_epoch_end(epoch, logs)
            if self.params["epochs"] - epoch > 1 and not getattr(self, "said", False):
                self.said = True
                left = self.last * (self.params["epochs"] - epoch - 1)
                print(f"\nOn this CPU an epoch takes {self.last:.0f} s: up to "
                      f"{left / 3600:.1f} h for the remaining epochs (Ctrl-C stops; "
                      "--resume continues later).")

    return FirstEpochNote()


def calibrate(model, val, model_path):
    """Fit the temperature that makes the saved model's probabilities honest on the
    hold-out images, and save it beside the model; None without a hold-out."""
    from network.calibration import fit_temperature, save_temperature
    from network.model_utils import model_images
    from network.reporting import predict

    if len(val[0]) < 2:
        return None
    temperature = fit_temperature(predict(model, model_images(model, val[0])), val[1])
    save_temperature(model_path, temperature, fitted_on="validation", images=len(val[0]))
    print(f"Calibrated on {len(val[0])} held-out images: temperature {temperature:.3f}")
    return round(temperature, 4)


def run_training(model, recipe, settings, state, train, val, scope, paths, callbacks=()):
    """Plan a time budget, restore an interrupted run, fit. Returns (checkpoint,
    initial epoch, training seconds); ``paths`` are the model path, output and resume
    folders."""
    from network.train_callbacks import restore_backup

    model_path, output_dir, resume_dir = paths
    started = time.perf_counter()
    if recipe.minutes and not state:  # a resumed run keeps the epochs planned at its start
        settings["epochs"], settings["planned_epoch_s"] = plan_epochs(
            model, recipe, settings, train, scope, started)
        settings["minutes"] = None  # planned: a resumed run keeps these epochs
        (resume_dir / RUN_FILE).write_text(json.dumps(settings, indent=1))
    settings["seconds_before_fit"] = round(time.perf_counter() - started, 2)
    own, checkpoint = make_callbacks(settings, state, model_path, output_dir, resume_dir,
                                     has_val=len(val[0]) > 0)
    initial_epoch = restore_backup(model, resume_dir, state, output_dir / "history.csv") \
        if state else 0
    fit(model, settings, train, val, [*own, *callbacks], initial_epoch, resume_dir, output_dir)
    shutil.rmtree(resume_dir, ignore_errors=True)  # the run is complete
    return checkpoint, initial_epoch, time.perf_counter() - started


def summarise(model, checkpoint, data, val, settings, output_dir, show):
    """Curves, calibration and the final test score; returns train_summary.json's content.

    The saved model (with early stopping: the best epoch's) is the one calibrated
    and scored. The test set played no part in training.
    """
    from network.distribute import devices_in_use
    from network.model_utils import hardware_info, load_model, model_images
    from network.reporting import evaluate_probabilities, load_history, plot_history, predict

    model_path = Path(settings["model_path"])
    history = load_history(output_dir / "history.csv")
    history.to_csv(output_dir / "history.csv", index=False)  # one clean row per epoch
    plot_history(history, output_dir / "training_curves.png", show=show)
    check_finite(history, checkpoint, model_path)
    if checkpoint.monitor is not None:
        model = load_model(model_path, num_class=NUM_CLASSES)
    temperature = calibrate(model, val, model_path)
    probs = predict(model, model_images(model, data.x_test))
    test = evaluate_probabilities(probs, data.y_test, data.fine_to_coarse[data.y_test],
                                  data.fine_to_coarse)
    return {
        "settings": settings,
        "epochs_run": len(history),
        "epoch_seconds": [round(t, 3) for t in history.get("epoch_time_s", [])],
        "test": test,
        "temperature": temperature,
        "hardware": hardware_info(),
        "parameters": model.count_params(),
        "devices_used": devices_in_use(model),
    }


def main(argv=None, extra_callbacks=()):
    runtime.setup_backend_env()
    args = parse_args(argv)
    show = cli.setup_matplotlib(args.show)
    paths = (args.model_path, args.output_dir, args.output_dir / RESUME_DIR)
    settings, state = prepare_resume(args, paths[2])
    recipe = recipe_from_settings(settings)
    paths = (Path(settings["model_path"]), *paths[1:])  # a resumed run keeps its model path

    import keras

    from network.calibration import calibration_path
    from network.model_utils import save_class_names, set_precision

    cli.quiet_keras_warnings()
    data, train, val = load_splits(settings, recipe)
    keras.utils.set_random_seed(settings["seed"])
    settings["precision_used"] = set_precision(settings["precision"], recipe)
    runtime.announce(settings["precision_used"], training=True)
    note = cpu_advice(recipe, planned=bool(recipe.minutes) or "planned_epoch_s" in settings)
    model, settings["replicas"], scope = build_compiled(
        settings, recipe, -(-len(train[0]) // settings["batch_size"]))
    if settings["replicas"] > 1:
        train, val = even_split_for(settings["replicas"], settings["batch_size"], train, val)
    save_class_names(paths[0], data.fine_names, data.coarse_names, data.fine_to_coarse)
    calibration_path(paths[0]).unlink(missing_ok=True)  # it belongs to the old model

    checkpoint, initial_epoch, seconds = run_training(
        model, recipe, settings, state, train, val, scope, paths,
        [c for c in (note, *extra_callbacks) if c is not None])
    summary = summarise(model, checkpoint, data, val, settings, paths[1], show)
    summary.update(resumed_after_epoch=initial_epoch or None, train_images=len(train[0]),
                   val_images=len(val[0]), train_seconds=round(seconds, 2))
    cli.write_json_atomic(paths[1] / "train_summary.json", summary)
    test, resumed = summary["test"], (f" (resumed after epoch {initial_epoch})"
                                      if initial_epoch else "")
    print(f"Test accuracy {test['accuracy']:.2%} (top-5 {test['top5_accuracy']:.2%}), "
          f"{summary['epochs_run'] - initial_epoch} epochs in {seconds:.1f} s{resumed}")
    print(f"Model: {paths[0]}; curves and history in {paths[1]}")
    return 0


if __name__ == "__main__":
    cli.run_main(main)
