"""One change at a time against the cpu recipe, at the same time budget, on this CPU.

Times the lab recipe once here (T_lab, see time_to_accuracy.py), then trains the
cpu recipe with each change in turn for K x T_lab, every run a whole
``time_to_accuracy.py`` process (its test-set curve, JSON, CSV and figure in
OUT), seed by seed so that a machine's drift falls on every change alike.
Then it writes the table (change, seed, test top-1/top-5, top-1 with test-time
flip averaging apart, images/s, epochs, share of the budget used) to
OUT/ablation.md and prints it. ``--width`` pins the network's size: the runs
are then replicates of one network, not of whatever size the budget's timing
chose.

Usage:

    CIFAR100_DIR=/path/to/cifar-100-python \\
        python benchmarks/cpu_ablation.py --lab-epochs 0.2 --width 0.25 --seeds 1 2
    python benchmarks/cpu_ablation.py --lab-epochs 1 --changes recipe whiten --seeds 1
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: python benchmarks/cpu_ablation.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import cpu_flags, cpu_model
from benchmarks.time_to_accuracy import lab_epoch_seconds, result_stem
from network.core import cli, runtime
from network.core.files import write_text_atomic

# Each change: its train_model options (the cpu recipe's defaults for the rest).
CHANGES = {
    "recipe": [],                                      # the cpu recipe as it is
    "whiten": ["--whiten"],                            # frozen 2x2 patch-whitening first layer
    "low-res": ["--low-res", "24"],                    # first half of the budget at 24 px
    "bn-0.6": ["--bn-momentum", "0.6"],                # BatchNorm statistics over fewer steps
    "smooth-0.1": ["--label-smoothing", "0.1"],        # half the recipe's label smoothing
    "batch-256": ["--batch-size", "256"],              # half the steps (the recipe's batch before)
    "lr-4e-3": ["--learning-rate", "0.004"],           # twice the peak rate
    "pad-4": ["--crop-padding", "4"],                  # random crop over shifts of up to 4 px
    "stride-1": ["--stem-stride", "1"],                # full resolution: ~4x the arithmetic
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="cpu_ablation", description=__doc__.split("\n\n")[0])
    parser.add_argument("--lab-epochs", type=cli.positive_float, default=1.0, metavar="K",
                        help="the time budget of every run, in T_lab (default: 1)")
    parser.add_argument("--lab-seconds", type=cli.positive_float, metavar="S",
                        help="T_lab as measured before, instead of timing it here")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--changes", nargs="+", choices=list(CHANGES), default=list(CHANGES))
    parser.add_argument("--width", type=cli.positive_float,
                        help="pin the network's size (default: the budget chooses)")
    parser.add_argument("--data-dir", type=Path, default=cli.default_data_dir())
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/ablation"))
    parser.add_argument("--table-only", action="store_true",
                        help="train nothing: the table of the runs already in OUT")
    return parser.parse_args(argv)


def result_of(change, seed, args):
    """A run's result JSON in OUT, or None."""
    path = args.out / f"{result_stem('cpu', seed, args.lab_epochs, change)}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def train(change, seed, args, lab_seconds):
    """One run, as its own process; its result's JSON (None if it failed)."""
    options = [*(["--width", str(args.width)] if args.width else []), *CHANGES[change]]
    command = [sys.executable, str(Path(__file__).with_name("time_to_accuracy.py")),
               "--recipe", "cpu", "--seed", str(seed), "--data-dir", str(args.data_dir),
               "--lab-epochs", str(args.lab_epochs), "--lab-seconds", str(lab_seconds),
               "--out", str(args.out), "--tag", change, "--", *options]
    print(f"\n=== {change}, seed {seed}: {' '.join(command[1:])}", flush=True)
    subprocess.run(command, check=False)
    return result_of(change, seed, args)


def table_row(change, seed, result):
    if result is None:
        return f"| {change} | {seed} | failed | | | | | |"
    budget, test = result["budget"], result["test"]
    images_s = result["train_images"] * budget["epochs"] / budget["spent_s"]
    tta = result.get("test_flip_averaged")
    flipped = f"{tta['accuracy']:.2%}" if tta else "n/a"
    return (f"| {change} | {seed} | {test['accuracy']:.2%} | {test['top5_accuracy']:.2%} | "
            f"{flipped} | {images_s:.0f} | "
            f"{budget['epochs']:.1f} | {budget['share_spent']:.1%} |")


def main(argv=None):
    runtime.setup_backend_env()
    args = parse_args(argv)
    if args.table_only:
        results = {(change, seed): result_of(change, seed, args)
                   for seed in args.seeds for change in args.changes}
        found = [r for r in results.values() if r]
        args.lab_seconds = found[0]["lab_epoch"]["seconds"] if found else 0.0
    else:
        if args.lab_seconds is None:
            args.lab_seconds = lab_epoch_seconds()["seconds"]
        results = {(change, seed): train(change, seed, args, args.lab_seconds)
                   for seed in args.seeds for change in args.changes}
    width = f"×{args.width:g} (pinned)" if args.width else "chosen by the budget"
    lines = [f"{cpu_model()} ({', '.join(cpu_flags() or [])}), T_lab {args.lab_seconds:.0f} s, "
             f"budget {args.lab_epochs:g} × T_lab, ResNet-9 {width}", "",
             "| change | seed | test top-1 | top-5 | top-1, flip-averaged | images/s | epochs "
             "| budget used |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    lines += [table_row(change, seed, results[change, seed])
              for change in args.changes for seed in args.seeds]
    write_text_atomic(args.out / "ablation.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if all(results.values()) else 1


if __name__ == "__main__":
    cli.run_main(main)
