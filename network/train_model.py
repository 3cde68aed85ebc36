"""Train a CIFAR-100 classifier.

The default is the lab manual's recipe: its 9-layer CNN, Adam 1e-4, batch 64,
up to 100 epochs with early stopping (patience 10) on a 20 % validation split
held out from the training images. ``--recipe fast`` trains a ResNet-9 with
augmentation and a one-cycle style schedule instead.

Saves the best model to ``models/best_model.h5`` (class names beside it in
``class_names.json``) and, in ``reports/``: ``training_curves.png``,
``history.csv`` and ``train_summary.json`` (settings, hardware, timings and
the final test-set score, which plays no part in training).

Usage:

    python -m network.train_model                       # the lab's recipe
    python -m network.train_model --subset 2000 --epochs 2   # a quick CPU run
    python -m network.train_model --recipe fast         # ResNet-9, best on a GPU
    python -m network.train_model --resume              # continue an interrupted run
"""

import argparse
import contextlib
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: python network/train_model.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from network import cli
from network.cli import LabError
from network.data_utils import NUM_CLASSES, load_cifar100, one_hot, scale_images
from network.distribute import trim_to_multiple

RESUME_DIR = "resume"          # inside --output-dir while a run is unfinished
RUN_FILE = "run.json"          # the run's settings, kept for --resume
STATE_FILE = "state.json"      # the last finished epoch: its weights file, checkpoint
                               # and early-stopping state (see StateWriter)
TRAIN_SIZE = 50_000
# The recipes in model_utils.RECIPES, named here so that option errors come back at
# once, without importing Keras (a test keeps the two in step).
RECIPE_NAMES = ("fast", "lab")
# Options that change a run's settings (a resumed run keeps the original ones).
SETTING_OPTIONS = ("epochs", "batch_size", "learning_rate", "subset", "val_split", "width")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="train_model", description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", choices=RECIPE_NAMES, default="lab",
                        help="training recipe (default: lab)")
    parser.add_argument("--epochs", type=cli.positive_int,
                        help="maximum epochs (lab: 100, fast: 30)")
    parser.add_argument("--batch-size", type=cli.positive_int, help="lab: 64, fast: 512")
    parser.add_argument("--learning-rate", type=cli.positive_float,
                        help="(peak) learning rate (lab: 1e-4, fast: 2e-3)")
    parser.add_argument("--subset", type=cli.positive_int,
                        help="train on only the first N training images (quick runs)")
    parser.add_argument("--val-split", type=float,
                        help="fraction held out for validation (lab: 0.2, fast: 0)")
    parser.add_argument("--width", type=cli.positive_float,
                        help="fast recipe: channel width multiplier (default 2.0)")
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


def settings_from_args(args):
    """The run's effective settings: recipe defaults overridden by options."""
    from network.model_utils import RECIPES

    recipe = RECIPES[args.recipe]

    def pick(value, default):
        return default if value is None else value

    return {
        "recipe": args.recipe,
        "epochs": pick(args.epochs, recipe.epochs),
        "batch_size": pick(args.batch_size, recipe.batch_size),
        "learning_rate": pick(args.learning_rate, recipe.learning_rate),
        "val_split": pick(args.val_split, recipe.val_split),
        "width": pick(args.width, recipe.width),
        "subset": args.subset,
        "seed": args.seed,
        "precision": args.precision,
        "distribute": args.distribute,
        "data_dir": str(args.data_dir),
        "allow_md5_mismatch": args.allow_md5_mismatch,
        "model_path": str(args.model_path),
    }


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
            settings = json.loads(run_file.read_text())
            state = json.loads(state_file.read_text())
            print(f"Resuming the interrupted run after epoch {state['epoch']} "
                  f"with its original settings (recipe {settings['recipe']})")
        except (ValueError, KeyError, TypeError):
            raise LabError(f"the interrupted run in {resume_dir} is damaged: pass --restart "
                           "to discard it and start afresh") from None
        ignored = [f"--{name.replace('_', '-')}" for name in SETTING_OPTIONS
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


def split_train_val(x, y, val_split, seed):
    """A seeded random hold-out of ``val_split`` of the training images."""
    order = np.random.default_rng(seed).permutation(len(x))
    n_val = int(round(len(x) * val_split))
    val, train = order[:n_val], order[n_val:]
    return (x[train], y[train]), (x[val], y[val])


def set_precision(precision, recipe):
    import keras

    from network.model_utils import gpu_available

    if precision == "auto":
        precision = "mixed_bfloat16" if recipe.mixed_precision and gpu_available() else "float32"
    keras.mixed_precision.set_global_policy(precision)
    return precision


def even_split_for(replicas, batch_size, *splits):
    """Trim each (x, y) split so every batch divides evenly over the devices."""
    if batch_size % replicas:
        raise LabError(f"--batch-size {batch_size} must be a multiple of the {replicas} "
                       "devices for --distribute")
    return [(x[:trim_to_multiple(len(x), replicas)], y[:trim_to_multiple(len(y), replicas)])
            for x, y in splits]


def make_callbacks(settings, state, model_path, output_dir, resume_dir, has_val):
    """Checkpointing, early stopping, logging and resumability."""
    import keras

    from network.train_callbacks import (
        AtomicCheckpoint,
        EpochTimer,
        ResumableEarlyStopping,
        StateWriter,
    )

    monitor = "val_loss" if has_val else None  # no hold-out: keep the latest model
    checkpoint = AtomicCheckpoint(model_path, monitor=monitor,
                                  best=state.get("checkpoint_best"))
    # Order matters: the timer adds epoch_time_s to the logs the others see, and
    # StateWriter runs last to record the checkpoint's and early stopping's state.
    callbacks = [EpochTimer(), keras.callbacks.TerminateOnNaN(), checkpoint]
    early_stop = None
    patience = settings["patience"]
    if has_val and patience is not None:
        early_stop = ResumableEarlyStopping(
            monitor="val_loss", mode="min", patience=patience, restore_best_weights=True,
            verbose=1, state=state, best_model_path=model_path)
        callbacks.append(early_stop)
    callbacks += [
        keras.callbacks.CSVLogger(str(output_dir / "history.csv"), append=bool(state)),
        StateWriter(resume_dir / STATE_FILE, checkpoint, early_stop),
    ]
    return callbacks, checkpoint


def resume_training(model, resume_dir, state, history_path):
    """Restore the backed-up weights and trim history.csv to the finished epochs.

    Returns the epoch to continue from. A row the killed run wrote after its
    last backup (or half-wrote) is dropped, so every epoch appears once.
    """
    from network.train_callbacks import restore_backup

    try:
        initial_epoch = restore_backup(model, resume_dir, state)
    except Exception as err:  # missing or damaged backup: Keras raises many types
        raise LabError(f"the backup of the interrupted run in {resume_dir} cannot be loaded "
                       f"({type(err).__name__}): pass --restart to start afresh") from None
    lines = history_path.read_text().splitlines() if history_path.is_file() else []
    kept = lines[:1] + [line for line in lines[1:]
                        if line.split(",")[0].isdigit() and int(line.split(",")[0]) < initial_epoch]
    history_path.write_text("".join(f"{line}\n" for line in kept))
    return initial_epoch


def main(argv=None):
    args = parse_args(argv)
    show = cli.setup_matplotlib(args.show)
    resume_dir = args.output_dir / RESUME_DIR
    settings, state = prepare_resume(args, resume_dir)
    output_dir = args.output_dir
    model_path = Path(settings["model_path"])

    import keras

    from network.distribute import devices_in_use, setup_distribution
    from network.model_utils import RECIPES, build_for_recipe, compile_for_recipe, save_class_names
    from network.reporting import evaluate_probabilities, load_history, plot_history, predict

    cli.quiet_keras_warnings()
    recipe = RECIPES[settings["recipe"]]
    data = load_cifar100(settings["data_dir"], allow_md5_mismatch=settings["allow_md5_mismatch"])
    subset = settings["subset"]
    if subset is not None and subset > len(data.x_train):
        raise LabError(f"--subset {subset} is larger than the {len(data.x_train)} "
                       "training images")
    x_all = data.x_train[:subset] if subset else data.x_train
    y_all = data.y_train[:subset] if subset else data.y_train
    (x_train, y_train), (x_val, y_val) = split_train_val(
        x_all, y_all, settings["val_split"], settings["seed"])
    if len(x_train) == 0:
        raise LabError("no training images left after the validation split")
    print(f"Training on {len(x_train)} images, validating on {len(x_val)} "
          f"(test set of {len(data.x_test)} kept apart)")

    keras.utils.set_random_seed(settings["seed"])
    settings["precision_used"] = set_precision(settings["precision"], recipe)
    recipe_settings = {**recipe.__dict__, "width": settings["width"]}
    recipe = type(recipe)(**recipe_settings)
    settings["patience"] = recipe.patience
    scope, replicas = contextlib.nullcontext(), 1
    if settings.get("distribute"):
        scope, replicas = setup_distribution()
        (x_train, y_train), (x_val, y_val) = even_split_for(replicas, settings["batch_size"],
                                                            (x_train, y_train), (x_val, y_val))
        print(f"Data-parallel training on {replicas} device(s)")
    settings["replicas"] = replicas
    with scope:  # MirroredStrategy needs the model and optimizer built in its scope
        model = build_for_recipe(recipe, NUM_CLASSES, seed=settings["seed"], summary=True)
        steps = -(-len(x_train) // settings["batch_size"])
        compile_for_recipe(model, recipe, steps, settings["epochs"], settings["learning_rate"])
    save_class_names(model_path, data.fine_names, data.coarse_names, data.fine_to_coarse)

    has_val = len(x_val) > 0
    val_data = (scale_images(x_val), one_hot(y_val, NUM_CLASSES)) if has_val else None
    callbacks, checkpoint = make_callbacks(settings, state, model_path, output_dir, resume_dir,
                                           has_val)
    initial_epoch = resume_training(model, resume_dir, state, output_dir / "history.csv") \
        if state else 0
    started = time.perf_counter()
    try:
        model.fit(scale_images(x_train), one_hot(y_train, NUM_CLASSES),
                  batch_size=settings["batch_size"], epochs=settings["epochs"],
                  initial_epoch=initial_epoch, validation_data=val_data, callbacks=callbacks,
                  verbose="auto")
    except KeyboardInterrupt:
        if (resume_dir / STATE_FILE).is_file():
            print(f"\nThe run is kept in {resume_dir}: continue it with --resume "
                  f"(--output-dir {output_dir})", file=sys.stderr)
        raise
    train_seconds = time.perf_counter() - started
    shutil.rmtree(resume_dir, ignore_errors=True)  # the run is complete

    history = load_history(output_dir / "history.csv")
    history.to_csv(output_dir / "history.csv", index=False)  # one clean row per epoch
    plot_history(history, output_dir / "training_curves.png", show=show)
    nan_epoch = next((int(e) + 1 for e, loss in zip(history["epoch"], history["loss"])
                      if not np.isfinite(loss)), None)
    if nan_epoch is not None:
        raise LabError(f"training stopped: the loss became NaN (epoch {nan_epoch}); try a "
                       f"lower --learning-rate. The best model so far is kept in {model_path}"
                       if checkpoint.saved else
                       "training stopped: the loss became NaN before any model was saved; "
                       "try a lower --learning-rate")

    # Report the final model on the test set (it played no part in training).
    probs = predict(model, scale_images(data.x_test))
    test = evaluate_probabilities(probs, data.y_test, data.fine_to_coarse[data.y_test],
                                  data.fine_to_coarse)
    summary = {
        "settings": settings,
        "epochs_run": len(history),
        "resumed_after_epoch": initial_epoch or None,
        "train_images": len(x_train),
        "val_images": len(x_val),
        "train_seconds": round(train_seconds, 2),
        "epoch_seconds": [round(t, 3) for t in history.get("epoch_time_s", [])],
        "test": test,
        "hardware": hardware_info(),
        "parameters": model.count_params(),
        "devices_used": devices_in_use(model),
    }
    cli.write_json_atomic(output_dir / "train_summary.json", summary)
    resumed = f" (resumed after epoch {initial_epoch})" if initial_epoch else ""
    print(f"Test accuracy {test['accuracy']:.2%} (top-5 {test['top5_accuracy']:.2%}), "
          f"{len(history) - initial_epoch} epochs in {train_seconds:.1f} s{resumed}")
    print(f"Model: {model_path}; curves and history in {output_dir}")
    return 0


def hardware_info():
    import keras

    from network.model_utils import local_devices

    return {"backend": keras.backend.backend(), "keras": keras.__version__,
            "devices": local_devices(), "python": platform.python_version(),
            "machine": platform.machine(), "processor": platform.processor() or None,
            "cpu_count": os.cpu_count()}


if __name__ == "__main__":
    cli.run_main(main)
