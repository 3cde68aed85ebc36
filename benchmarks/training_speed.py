"""Benchmark the speed and time-to-accuracy of the lab's training recipes.

Trains a recipe (``lab``, ``cpu`` or ``fast``) for a fixed number of epochs and prints
compile time, steady-state epoch time, training images/s, achieved TFLOP/s
(from the network's counted FLOPs), time-to-accuracy and the final test
top-1/top-5. (``benchmarks/data_loading.py`` compares the data paths on the
CPU, ``benchmarks/flops.py`` prints the counted FLOPs per layer.)

Usage:

    python benchmarks/training_speed.py --recipe fast --eval-every-epoch --target 0.76
    python benchmarks/training_speed.py --recipe fast --width 0.25 --subset 2000 --epochs 2
    python benchmarks/training_speed.py --synthetic 512 --epochs 2   # no data set needed
    python -m benchmarks.training_speed --recipe lab --epochs 40 --target 0.575 --json lab.json

The test set is only measured here, never used for any training decision
(training runs a fixed number of epochs: no early stopping, no model choice).
"""

import argparse
import math
import os
import statistics
import sys
import time
from pathlib import Path

STARTED = time.perf_counter()  # for the whole process's wall time

if __package__ in (None, ""):  # run as a file: python benchmarks/training_speed.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from benchmarks.common import (
    cpu_model,
    epoch_curve,
    fmt,
    print_table,
    require_data_files,
    scores_on_test,
    write_json,
)
from benchmarks.flops import TRAIN_FLOPS_FACTOR, count_flops, reference_gflops
from network.core import cli, runtime
from network.core.errors import LabError
from network.data_utils import NUM_CLASSES
from network.training.recipes import RECIPES, add_recipe_arguments, recipe_overrides, recipe_with

SYNTHETIC_HINT = ", or use --synthetic N for a training smoke run"  # ends a missing-data error


# --- Command line -------------------------------------------------------------------------

def accuracy_target(text):
    """argparse type: an accuracy as a fraction (0.76) or a percentage (76)."""
    value = cli.positive_float(text)
    if 1 < value <= 100:
        value /= 100
    if value > 1:
        raise argparse.ArgumentTypeError(f"an accuracy lies in (0, 1] or (0, 100], got {text}")
    return value


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="training_speed", description=__doc__.split("\n\n")[0])
    # --recipe and its overrides as train_model has them (a fixed schedule of --epochs here)
    add_recipe_arguments(parser, default="fast", exclude=("val_split", "minutes"))
    parser.add_argument("--precision", default="auto",
                        choices=["auto", "float32", "mixed_bfloat16", "mixed_float16"],
                        help="auto (the default), as train_model: for the fast recipe on a "
                             "GPU mixed_bfloat16 (compute capability 8.0 on) or "
                             "mixed_float16 (7.x), else float32")
    parser.add_argument("--subset", type=cli.positive_int,
                        help="train on only the first N training images")
    parser.add_argument("--test-subset", type=cli.positive_int,
                        help="evaluate on only the first N test images (quick CPU runs)")
    parser.add_argument("--synthetic", type=cli.positive_int, metavar="N",
                        help="train on N random images (and test on N) instead of CIFAR-100: "
                             "a smoke run that needs no data set")
    parser.add_argument("--eval-every-epoch", action="store_true",
                        help="measure test accuracy after every epoch (outside the timed "
                             "epochs) for time-to-accuracy; implied by --target")
    parser.add_argument("--target", type=accuracy_target,
                        help="test top-1 accuracy whose first arrival is timed, e.g. 0.76")
    # --data-dir, --allow-md5-mismatch and --seed, as the lab's other scripts have them
    cli.add_common_arguments(parser, model=False, output=False, show=False, downloads=False)
    parser.add_argument("--no-compile-cache", action="store_true",
                        help="JAX: switch the persistent compilation cache off (a cold start)")
    parser.add_argument("--verbose", action="store_true", help="show Keras's progress bar")
    parser.add_argument("--json", type=Path, metavar="PATH",
                        help="also write every figure and the hardware to this JSON file")
    args = parser.parse_args(argv)

    if args.width is not None and RECIPES[args.recipe].network != "resnet9":
        parser.error(f"--width applies to the ResNet-9 recipes only, not {args.recipe}")
    if args.synthetic is not None and args.subset is not None:
        parser.error("--synthetic N sets the number of images: leave out --subset")
    if args.target is not None:
        args.eval_every_epoch = True
    if args.json is not None:
        cli.ensure_writable_dir(parser, args.json.resolve().parent, "folder for --json")
    return args


# --- Training run -------------------------------------------------------------------------

def synthetic_data(n, seed):
    """Random uint8 images and labels: ``n`` for training and ``n`` for testing."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(2 * n, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, NUM_CLASSES, size=2 * n)
    return images[:n], labels[:n], images[n:], labels[n:]


def load_data(args):
    """(x_train, y_train, x_test, y_test) as uint8 images and integer labels."""
    from network.data_utils import load_cifar100

    if args.synthetic:
        return synthetic_data(args.synthetic, args.seed)
    data = load_cifar100(args.data_dir, download=False,
                         allow_md5_mismatch=args.allow_md5_mismatch)
    for option, limit, available in (("--subset", args.subset, len(data.x_train)),
                                     ("--test-subset", args.test_subset, len(data.x_test))):
        if limit is not None and limit > available:
            raise LabError(f"{option} {limit} is larger than the {available} images in "
                           f"{args.data_dir}")
    n, m = args.subset, args.test_subset
    return data.x_train[:n], data.y_train[:n], data.x_test[:m], data.y_test[:m]


def timing_figures(epoch_seconds, train_images, forward_flops):
    """Compile time, steady epoch time, images/s and TFLOP/s from epoch times."""
    if len(epoch_seconds) < 2:  # one epoch cannot separate compilation from work
        return {"first_epoch_s": epoch_seconds[0], "steady_epoch_s": None, "compile_s": None,
                "images_per_s": None, "tflops": None}
    steady = statistics.median(epoch_seconds[1:])
    train_flops = TRAIN_FLOPS_FACTOR * forward_flops * train_images
    return {
        "first_epoch_s": epoch_seconds[0],
        "steady_epoch_s": steady,
        "compile_s": max(0.0, epoch_seconds[0] - steady),
        "images_per_s": train_images / steady,
        "tflops": train_flops / steady / 1e12,
    }


def time_to_accuracy(epochs, target, steady_epoch_s):
    """When test top-1 first reached ``target`` (None when it never did)."""
    elapsed = 0.0
    for row in epochs:
        elapsed += row["seconds"]
        if row.get("test_accuracy", -1) >= target:
            return {"target": target, "epoch": row["epoch"], "train_s": elapsed,
                    "steady_train_s": (row["epoch"] * steady_epoch_s
                                       if steady_epoch_s is not None else None),
                    "test_accuracy": row["test_accuracy"]}
    return {"target": target, "epoch": None, "train_s": None, "steady_train_s": None,
            "test_accuracy": max((r.get("test_accuracy", 0.0) for r in epochs), default=None)}


def train_benchmark(args):
    """Train the recipe for a fixed number of epochs and gather every figure."""
    import keras

    cli.quiet_keras_warnings()
    recipe = recipe_with(args.recipe, **recipe_overrides(args))
    model, precision, (x_train, y_train, x_test, y_test) = build_and_load(args, recipe)
    forward_flops = count_flops(model)
    print(f"Benchmark: recipe {recipe.name}, backend {keras.backend.backend()}, "
          f"{len(x_train)} training images, {recipe.epochs} epochs, batch {recipe.batch_size}, "
          f"{precision}", flush=True)
    test, batch = (x_test, y_test), max(recipe.batch_size, 256)
    epochs, fit_seconds = timed_fit(model, recipe, x_train, y_train,
                                    test if args.eval_every_epoch else None, batch, args.verbose)
    final = ({k: epochs[-1][k] for k in ("test_accuracy", "test_top5", "eval_seconds")}
             if args.eval_every_epoch else scores_on_test(model, *test, batch_size=batch))
    timing = timing_figures([row["seconds"] for row in epochs], len(x_train), forward_flops)
    return {
        "mode": "train",
        "settings": run_settings(args, recipe, precision),
        "hardware": hardware(),
        "model": {"name": model.name, "parameters": model.count_params(),
                  "forward_gflops_per_image": forward_flops / 1e9,
                  "train_gflops_per_image": TRAIN_FLOPS_FACTOR * forward_flops / 1e9},
        "reference_forward_gflops_per_image": reference_gflops(),
        "train_images": len(x_train),
        "test_images": len(x_test),
        "timing": {**timing, "fit_s": fit_seconds, "train_s": sum(r["seconds"] for r in epochs),
                   "final_eval_s": final["eval_seconds"],
                   "process_s": time.perf_counter() - STARTED},
        "epochs": epochs,
        "time_to_accuracy": (time_to_accuracy(epochs, args.target, timing["steady_epoch_s"])
                             if args.target is not None else None),
        "test": {"accuracy": final["test_accuracy"], "top5_accuracy": final["test_top5"]},
    }


def build_and_load(args, recipe):
    """The recipe's network, built and compiled in the chosen precision, and the data:
    the training images in the form it takes with one-hot labels, the test images as
    uint8 with integer labels. Returns (model, precision, (x_train, y_train, x_test,
    y_test))."""
    import keras

    from network.data_utils import one_hot
    from network.model_utils import (
        build_for_recipe,
        compile_for_recipe,
        model_images,
        set_precision,
    )

    x_train, y_train, x_test, y_test = load_data(args)
    keras.utils.set_random_seed(args.seed)
    precision = set_precision(args.precision, recipe)
    model = build_for_recipe(recipe, NUM_CLASSES, seed=args.seed)
    compile_for_recipe(model, recipe, math.ceil(len(x_train) / recipe.batch_size))
    data = (model_images(model, x_train), one_hot(y_train, NUM_CLASSES), x_test, y_test)
    return model, precision, data


def timed_fit(model, recipe, x_train, y_train, test=None, batch_size=256, verbose=False):
    """Train for the recipe's epochs, timing each (and scoring ``test`` after each,
    outside the timing). Returns (per-epoch rows, fit seconds)."""
    epochs = []
    start = time.perf_counter()
    model.fit(x_train, y_train, batch_size=recipe.batch_size, epochs=recipe.epochs,
              callbacks=[epoch_curve(epochs, test, batch_size)], verbose=1 if verbose else 0)
    return epochs, time.perf_counter() - start


def run_settings(args, recipe, precision):
    """What was run, for the JSON file."""
    import keras

    return {
        "recipe": recipe.name,
        "backend": keras.backend.backend(),
        "batch_size": recipe.batch_size,
        "width": recipe.width if recipe.network == "resnet9" else None,  # the lab CNN has none
        "epochs": recipe.epochs,
        "learning_rate": recipe.learning_rate,
        "precision": precision,
        "subset": args.subset,
        "test_subset": args.test_subset,
        "synthetic": args.synthetic,
        "data_dir": None if args.synthetic else str(args.data_dir),
        "seed": args.seed,
    }


def hardware():
    """The backend, devices and machine, with the accelerator's and the CPU's names."""
    from network.model_utils import hardware_info

    accelerators = runtime.accelerators()
    return {**hardware_info(), "device_kind": accelerators[0][1] if accelerators else None,
            "cpu_model": cpu_model(),
            "jax_compilation_cache": os.environ.get("JAX_COMPILATION_CACHE_DIR") or None}


def print_train_report(result):
    s, t, hw = result["settings"], result["timing"], result["hardware"]
    ref = result["reference_forward_gflops_per_image"]
    rows = [
        ("recipe", s["recipe"] + (f" (width {s['width']:g})" if s["width"] else "")),
        ("backend", s["backend"]),
        ("device", hw["device_kind"] or f"CPU: {hw['cpu_model']} ({hw['cpu_count']} cores)"),
        ("keras", hw["keras"]),
        ("precision", s["precision"]),
        ("batch size", s["batch_size"]),
        ("epochs", s["epochs"]),
        ("training images", fmt(result["train_images"])),
        ("test images", fmt(result["test_images"])
         + (" (synthetic)" if s["synthetic"] else "")),
        ("parameters", fmt(result["model"]["parameters"])),
        ("forward GFLOPs/image", fmt(result["model"]["forward_gflops_per_image"], digits=4)),
        ("  lab CNN / ResNet-9 (x1)", f"{ref['lab_cnn']:.4g} / {ref['resnet9_width1']:.4g}"),
        ("first epoch", fmt(t["first_epoch_s"], " s")),
        ("compile time", fmt(t["compile_s"], " s") + "  (first epoch - steady epoch)"),
        ("steady epoch", fmt(t["steady_epoch_s"], " s") + "  (median of epochs 2..)"),
        ("training images/s", fmt(t["images_per_s"])),
        ("achieved TFLOP/s", fmt(t["tflops"]) + "  (3 x forward FLOPs)"),
        ("training time", fmt(t["train_s"], " s") + "  (all epochs, evaluation excluded)"),
    ]
    tta = result["time_to_accuracy"]
    if tta is not None:
        if tta["epoch"] is None:
            best = tta["test_accuracy"]
            reached = f"not reached (best {best:.2%})" if best is not None else "not reached"
        else:
            reached = (f"epoch {tta['epoch']}: {fmt(tta['train_s'], ' s')} of training, "
                       f"{fmt(tta['steady_train_s'], ' s')} steady-state")
        rows.append((f"time to {tta['target']:.2%} top-1", reached))
    rows += [
        ("test top-1", f"{result['test']['accuracy']:.2%}"),
        ("test top-5", f"{result['test']['top5_accuracy']:.2%}"),
        ("process wall time", fmt(t["process_s"], " s")),
    ]
    print_table("Training benchmark", rows)


# --- Entry point --------------------------------------------------------------------------

def main(argv=None):
    runtime.setup_backend_env()  # quiet start-up, and the JAX compilation cache
    args = parse_args(argv)
    if args.no_compile_cache:  # read by JAX when it is first imported (below)
        os.environ["JAX_COMPILATION_CACHE_DIR"] = ""
    if not args.synthetic:  # before the slow Keras import
        require_data_files(args.data_dir, SYNTHETIC_HINT)
    result = train_benchmark(args)
    print_train_report(result)
    if args.json is not None:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    cli.run_main(main)
