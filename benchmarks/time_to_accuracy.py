"""Time to accuracy of a training recipe, measured through ``train_model`` itself.

Runs ``python -m network.train_model --recipe RECIPE [options]`` in this
process, exactly as a user would, with one extra callback: after each epoch
it scores the model on the official 10,000 test images (measurement only: the
test set plays no part in training, and its evaluation time is not counted
as training time). Writes a JSON file with the machine (CPU model, cores,
flags), the settings, the per-epoch curve (training seconds so far, test
top-1/top-5) and the process's peak memory, a CSV of the curve and a figure
of it (test accuracy against training time) beside it.

CPUs differ fourfold and more, so a CPU's budget is best stated against the
lab's own recipe on the same machine: ``--lab-epochs K`` first times the
manual's CNN (batch 64, float32, steady steps after compiling), turns that
into T_lab, the seconds of one lab epoch of 40,000 images, and then trains
with a budget of K x T_lab (``--minutes K * T_lab / 60``). The figure marks
the budget and the manual's 57.54 %.

A run longer than a sitting can be done in parts, as a student with a slow
laptop does: with ``--keep DIR`` the curve so far is kept in DIR after every
epoch, and after Ctrl-C ``--keep DIR --resume`` continues the run (its
settings, T_lab and curve; the budget's clock carries over, so the time
between the parts is not counted).

Usage:

    CIFAR100_DIR=/path/to/cifar-100-python \\
        python benchmarks/time_to_accuracy.py --recipe cpu --lab-epochs 1 --seed 1
    python benchmarks/time_to_accuracy.py --recipe cpu --seed 2 --out benchmarks/results \\
        -- --epochs 10            # options after -- go to train_model
    python benchmarks/time_to_accuracy.py --lab-epochs 3 --keep runs/3lab   # Ctrl-C, then:
    python benchmarks/time_to_accuracy.py --keep runs/3lab --resume
"""

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

STARTED = time.perf_counter()

if __package__ in (None, ""):  # run as a file: python benchmarks/time_to_accuracy.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import cpu_flags, cpu_model, epoch_curve
from network.core import cli, runtime
from network.core.errors import LabError
from network.core.files import write_json_atomic, write_text_atomic
from network.training.recipes import RECIPES

LAB_EPOCH_IMAGES = 40_000  # the lab recipe trains on 80 % of the 50,000 training images
LAB_TIMED_STEPS = 10       # steady steps of the lab's CNN timed for T_lab
MANUAL_ACCURACY = 0.5754   # the lab manual's reported test accuracy
KEPT = "curve.json"        # in --keep DIR: the curve so far, and the settings to resume with
RESUMED_WITH = ("recipe", "seed", "tag", "lab_epochs", "train_options")  # from KEPT


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="time_to_accuracy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="cpu")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--data-dir", type=Path, default=cli.default_data_dir())
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"),
                        help="folder for <recipe>-seed<N>[-<K>lab][-tag].json, .csv and .png")
    parser.add_argument("--tag", default="", help="added to the file names (e.g. 30min)")
    parser.add_argument("--lab-epochs", type=cli.positive_float, metavar="K",
                        help="time the lab recipe here first and train for K lab epochs' "
                             "time (sets train_model's --minutes)")
    parser.add_argument("--lab-seconds", type=cli.positive_float, metavar="S",
                        help="with --lab-epochs: T_lab as measured before (seconds), instead "
                             "of timing it again; runs that are compared share one T_lab")
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="keep the trained model and training reports in DIR/models and "
                             "DIR/reports, and the curve so far in DIR/curve.json (default: a "
                             "temporary folder, removed)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run interrupted in --keep DIR with its settings, "
                             "T_lab and curve (the budget's clock carries over)")
    parser.add_argument("train_options", nargs="*", help="more train_model options, after --")
    args = parser.parse_args(argv)
    if args.lab_seconds and not args.lab_epochs:
        parser.error("--lab-seconds needs --lab-epochs")
    if args.resume and not args.keep:
        parser.error("--resume needs --keep DIR, the folder the interrupted run was kept in")
    return args


def read_kept(keep):
    """The record an interrupted run kept in ``keep``: its settings, T_lab, budget and
    curve so far (see :func:`curve_keeper`)."""
    path = keep / KEPT
    try:
        kept = json.loads(path.read_text())
        settings = {name: kept["settings"][name] for name in RESUMED_WITH}
    except FileNotFoundError:
        raise LabError(f"no run to resume in {keep}: it has no {KEPT} (no epoch was "
                       "finished there)") from None
    except (ValueError, KeyError, TypeError):
        raise LabError(f"{path} is damaged: start the run afresh without --resume") from None
    if not kept.get("budget"):
        raise LabError(f"the run kept in {keep} has no time budget (--lab-epochs): only a "
                       "budget's clock can carry over, so start it afresh")
    return kept, settings


def curve_keeper(path, record):
    """A Keras callback that writes ``record`` (its "rows" the curve, growing) to ``path``
    after every epoch, with the process's peak memory and run time so far, so that an
    interrupted run can continue its curve (--resume)."""
    import keras

    earlier_s = record.get("process_s", 0.0)

    class KeepCurve(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            record.update(usage(record, earlier_s))
            write_json_atomic(path, record)

    return KeepCurve()


def usage(record, earlier_s):
    """Peak memory (MiB) and run time (s) so far, over this process and the earlier
    parts of a resumed run (``record``'s peak, and their ``earlier_s`` seconds)."""
    peak = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"peak_rss_mib": max(peak, record.get("peak_rss_mib", 0)),
            "process_s": round(earlier_s + time.perf_counter() - STARTED, 1)}


def lab_epoch_seconds(steps=LAB_TIMED_STEPS):
    """T_lab: the seconds one epoch of the lab recipe (40,000 images, batch 64, float32)
    takes on this machine, from steady training steps after the one that compiles."""
    import keras
    import numpy as np

    from network.model_utils import build_for_recipe, compile_for_recipe, model_images
    from network.training.budget import time_steps

    lab = RECIPES["lab"]
    keras.mixed_precision.set_global_policy("float32")
    model = compile_for_recipe(build_for_recipe(lab, 100, seed=0), lab, steps_per_epoch=625)
    rng = np.random.default_rng(0)  # the speed does not depend on what the pixels show
    images = rng.integers(0, 256, ((steps + 1) * lab.batch_size, 32, 32, 3), dtype=np.uint8)
    step_s, compile_s = time_steps(model, model_images(model, images),
                                   rng.integers(0, 100, len(images)), lab.batch_size, steps)
    keras.backend.clear_session()
    seconds = LAB_EPOCH_IMAGES / lab.batch_size * step_s
    print(f"The lab recipe here: {lab.batch_size / step_s:.1f} images/s, so one lab epoch "
          f"(T_lab) takes {seconds:.0f} s ({compile_s:.0f} s compiling, not counted)", flush=True)
    return {"seconds": round(seconds, 1), "images_per_s": round(lab.batch_size / step_s, 2),
            "timed_steps": steps, "compile_s": round(compile_s, 1)}


def plot_curve(result, path):
    """Test accuracy against training time, with the budget and the manual's result."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from network.core.files import save_figure

    minutes = [row["train_s"] / 60 for row in result["epochs"]]
    fig, ax = plt.subplots(figsize=(6.4, 4))
    ax.plot(minutes, [100 * row["test_accuracy"] for row in result["epochs"]], "o-",
            label=f"{result['settings']['recipe']} recipe, seed {result['settings']['seed']}")
    ax.axhline(100 * MANUAL_ACCURACY, color="grey", ls="--",
               label=f"the manual's result, {MANUAL_ACCURACY:.2%}")
    lab, k = result.get("lab_epoch"), result.get("budget_lab_epochs")
    if lab:  # the budget, and T_lab itself when the budget is several lab epochs
        ax.axvline(k * lab["seconds"] / 60, color="tab:red", ls=":",
                   label=f"budget: {k:g} × T_lab (one lab epoch here: {lab['seconds']:.0f} s)")
        if k > 1:
            ax.axvline(lab["seconds"] / 60, color="tab:red", ls="-.", alpha=0.5, label="T_lab")
    ax.set(xlabel="training time (min)", ylabel="test accuracy (%)", ylim=(0, 100), xlim=(0, None),
           title=f"{result['machine']['cpu_model']}, {result['machine']['cpu_count']} cores")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    save_figure(fig, path)


def train(args, budget, record):
    """Run train_model with the test-curve callback (continuing ``record``'s curve when
    it resumes); returns (its summary, the curve)."""
    from network import train_model
    from network.data_utils import load_cifar100

    data = load_cifar100(args.data_dir, download=False,
                         allow_md5_mismatch="--allow-md5-mismatch" in args.train_options)
    test = (data.x_test, data.y_test, data.coarse_test, data.fine_to_coarse)
    curve = record["rows"]  # its scoring is left out of the training time, and of a budget
    callbacks = [epoch_curve(curve, test[:2])]
    del data  # train_model loads its own copy, as a user's run does
    with tempfile.TemporaryDirectory() as tmp:
        keep = args.keep or Path(tmp)
        if args.keep:
            callbacks.append(curve_keeper(keep / KEPT, record))
        model_path = keep / "models" / "best_model.h5"
        paths = ["--data-dir", str(args.data_dir), "--output-dir", str(keep / "reports"),
                 "--model-path", str(model_path), "--no-show"]
        # A resumed run keeps its saved settings and budget: the paths are enough.
        options = ["--resume"] if args.resume else [
            "--recipe", args.recipe, "--seed", str(args.seed), *budget, *args.train_options]
        train_model.main([*options, *paths], extra_callbacks=callbacks)
        summary = json.loads((keep / "reports" / "train_summary.json").read_text())
        summary["test_tta"] = flip_averaged_scores(model_path, *test)
        summary["settings"] = named_folders(summary["settings"], {
            args.data_dir: data_dir_name(args.data_dir),
            keep: "KEEP_DIR" if args.keep else "TEMP_DIR"})
    # Training time counts planning too: a budget's clock says so itself (and carries
    # over a resumed run's earlier parts); without one, the time before fit is added.
    before_fit = summary["settings"]["seconds_before_fit"]
    rows = [{"epoch": row["epoch"],
             "train_s": round(row.get("clock_s", row["train_s"] + before_fit), 1),
             "test_accuracy": round(row["test_accuracy"], 4),
             "test_top5": round(row["test_top5"], 4)} for row in curve]
    return summary, rows


def data_dir_name(data_dir):
    """How a result names the data folder: by the variable that gave it, where one did."""
    given = os.environ.get("CIFAR100_DIR")
    same = given and Path(given).resolve() == Path(data_dir).resolve()
    return "$CIFAR100_DIR" if same else "DATA_DIR"


def named_folders(settings, names):
    """``settings`` with each folder in ``names`` ({path: name}) written as its name: a
    result is shared, and this machine's folders mean nothing on another."""
    folders = {str(Path(path).resolve()): name for path, name in names.items()}

    def named(value):
        if not (isinstance(value, str) and os.sep in value):  # not a path
            return value
        full = str(Path(value).resolve())
        for folder, name in folders.items():
            if full == folder or full.startswith(folder + os.sep):
                return name + full[len(folder):]
        return value
    return {key: named(value) for key, value in settings.items()}


def flip_averaged_scores(model_path, images, labels, coarse, fine_to_coarse):
    """The saved model's test scores with test-time flip averaging (reported apart from
    the headline figure, which is the model's own)."""
    from network.analysis.metrics import evaluate_probabilities, predict_flip_averaged
    from network.model_utils import load_model, model_images

    model = load_model(model_path)
    probs = predict_flip_averaged(model, model_images(model, images))
    scores = evaluate_probabilities(probs, labels, coarse, fine_to_coarse)
    return {key: round(scores[key], 4) for key in ("accuracy", "top5_accuracy")}


def result_stem(recipe, seed, lab_epochs=None, tag=""):
    """The results' file name without its suffix: <recipe>-seed<N>[-<K>lab][-<tag>]."""
    return (f"{recipe}-seed{seed}{f'-{lab_epochs:g}lab' if lab_epochs else ''}"
            f"{'-' + tag if tag else ''}")


def write_results(result, out, stem):
    """``stem``.json, .csv (the curve) and .png (its figure) in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / f"{stem}.json", result)
    lines = ["epoch,train_s,test_accuracy,test_top5"] + [
        f"{r['epoch']},{r['train_s']},{r['test_accuracy']},{r['test_top5']}"
        for r in result["epochs"]]
    write_text_atomic(out / f"{stem}.csv", "\n".join(lines) + "\n")
    plot_curve(result, out / f"{stem}.png")


def main(argv=None):
    runtime.setup_backend_env()  # quiet start-up, as train_model's
    args = parse_args(argv)
    if args.resume:  # the kept run's settings, T_lab, budget and curve
        record, settings = read_kept(args.keep)
        vars(args).update(settings)
        lab_epoch, budget = record["lab_epoch"], record["budget"]
        record["parts"] = record.get("parts", 1) + 1
        print(f"Resuming {result_stem(args.recipe, args.seed, args.lab_epochs, args.tag)} "
              f"after {cli.plural(len(record['rows']), 'measured epoch')}", flush=True)
    else:
        lab_epoch, budget = None, []
        if args.lab_epochs:
            lab_epoch = ({"seconds": args.lab_seconds, "given": True} if args.lab_seconds
                         else lab_epoch_seconds())
            budget = ["--minutes", f"{args.lab_epochs * lab_epoch['seconds'] / 60:.3f}"]
        record = {"settings": {name: getattr(args, name) for name in RESUMED_WITH},
                  "lab_epoch": lab_epoch, "budget": budget, "rows": [], "parts": 1}
    earlier_s = record.get("process_s", 0.0)  # the earlier parts' run time
    summary, rows = train(args, budget, record)
    result = {
        "command": "python -m network.train_model --recipe "
                   f"{args.recipe} --seed {args.seed} "
                   f"{' '.join([*budget, *args.train_options])}".strip(),
        "parts": record["parts"],  # processes it ran in: more than one when resumed
        "machine": {"cpu_model": cpu_model(), "cpu_count": os.cpu_count(),
                    "cpu_flags": cpu_flags(), "load_average": os.getloadavg(),
                    **summary["hardware"]},
        "lab_epoch": lab_epoch,
        "budget_lab_epochs": args.lab_epochs,
        "settings": summary["settings"],
        "train_images": summary["train_images"],
        "val_images": summary["val_images"],
        "train_seconds": rows[-1]["train_s"],
        # planning included; with its share of the budget and the rate it ended at
        "budget": summary.get("budget"),
        "test": summary["test"],
        "test_flip_averaged": summary["test_tta"],  # apart: the headline is the model's own
        "epochs": rows,
        **usage(record, earlier_s),
    }
    stem = result_stem(args.recipe, args.seed, args.lab_epochs, args.tag)
    write_results(result, args.out, stem)
    print(f"{stem}: test {result['test']['accuracy']:.2%} after {result['train_seconds']:.0f} s "
          f"of training; peak memory {result['peak_rss_mib']} MiB -> {args.out / stem}.json")
    return 0


if __name__ == "__main__":
    cli.run_main(main)
