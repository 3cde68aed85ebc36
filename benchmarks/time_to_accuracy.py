"""Time to accuracy of a training recipe, measured through ``train_model`` itself.

Runs ``python -m network.train_model --recipe RECIPE [options]`` in this
process, exactly as a user would, with one extra callback: after each epoch
it scores the model on the official 10,000 test images (measurement only: the
test set plays no part in training, and its evaluation time is not counted
as training time). Writes a JSON file with the machine, the settings, the
per-epoch curve (training seconds so far, test top-1/top-5) and the process's
peak memory, and a CSV of the curve beside it.

Usage:

    CIFAR100_DIR=/path/to/cifar-100-python \\
        python benchmarks/time_to_accuracy.py --recipe cpu --seed 1 --out benchmarks/results
    python benchmarks/time_to_accuracy.py --recipe cpu --seed 2 --out benchmarks/results \\
        -- --epochs 10            # options after -- go to train_model
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

from benchmarks.common import cpu_model
from network import cli, runtime
from network.recipes import RECIPES


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="time_to_accuracy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="cpu")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--data-dir", type=Path, default=cli.default_data_dir())
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"),
                        help="folder for <recipe>-seed<N>[-tag].json and .csv")
    parser.add_argument("--tag", default="", help="added to the file names (e.g. 30min)")
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="keep the trained model and training reports in DIR/models and "
                             "DIR/reports (default: a temporary folder, removed)")
    parser.add_argument("train_options", nargs="*", help="more train_model options, after --")
    return parser.parse_args(argv)


def test_curve_callback(data, rows):
    """A callback appending (epoch, training seconds so far, test top-1/top-5) to ``rows``.

    Seconds count from the start of ``fit``; ``main`` adds the time training
    spent before it (planning a time budget)."""
    import keras

    from network.model_utils import model_images
    from network.reporting import evaluate_probabilities, predict

    class TestCurve(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.start, self.eval_seconds = time.perf_counter(), 0.0

        def on_epoch_end(self, epoch, logs=None):
            reached = time.perf_counter()
            probs = predict(self.model, model_images(self.model, data.x_test), batch_size=500)
            test = evaluate_probabilities(probs, data.y_test, data.coarse_test,
                                          data.fine_to_coarse)
            rows.append({
                "epoch": epoch + 1,
                "train_s": round(reached - self.start - self.eval_seconds, 1),
                "test_accuracy": round(test["accuracy"], 4),
                "test_top5": round(test["top5_accuracy"], 4),
            })
            self.eval_seconds += time.perf_counter() - reached
            print(f"  test after epoch {epoch + 1}: {rows[-1]['test_accuracy']:.2%} "
                  f"at {rows[-1]['train_s']:.0f} s of training", flush=True)

    return TestCurve()


def main(argv=None):
    runtime.setup_backend_env()  # quiet start-up, as train_model's
    args = parse_args(argv)
    from network import train_model
    from network.data_utils import load_cifar100

    data = load_cifar100(args.data_dir, download=False,
                         allow_md5_mismatch="--allow-md5-mismatch" in args.train_options)
    rows = []
    callback = test_curve_callback(data, rows)
    del data  # train_model loads its own copy, as a user's run does
    with tempfile.TemporaryDirectory() as tmp:
        keep = args.keep or Path(tmp)
        train_model.main(["--recipe", args.recipe, "--seed", str(args.seed), "--data-dir",
                          str(args.data_dir), "--output-dir", str(keep / "reports"),
                          "--model-path", str(keep / "models" / "best_model.h5"), "--no-show",
                          *args.train_options], extra_callbacks=[callback])
        summary = json.loads((keep / "reports" / "train_summary.json").read_text())
    for row in rows:
        row["train_s"] = round(row["train_s"] + summary["settings"]["seconds_before_fit"], 1)

    result = {
        "command": "python -m network.train_model --recipe "
                   f"{args.recipe} --seed {args.seed} {' '.join(args.train_options)}".strip(),
        "machine": {"cpu_model": cpu_model(), "cpu_count": os.cpu_count(),
                    **summary["hardware"]},
        "settings": summary["settings"],
        "train_images": summary["train_images"],
        "val_images": summary["val_images"],
        "train_seconds": rows[-1]["train_s"],
        "test": summary["test"],
        "epochs": rows,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "process_s": round(time.perf_counter() - STARTED, 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"{args.recipe}-seed{args.seed}{'-' + args.tag if args.tag else ''}"
    cli.write_json_atomic(args.out / f"{stem}.json", result)
    lines = ["epoch,train_s,test_accuracy,test_top5"] + [
        f"{r['epoch']},{r['train_s']},{r['test_accuracy']},{r['test_top5']}" for r in rows]
    cli.write_text_atomic(args.out / f"{stem}.csv", "\n".join(lines) + "\n")
    print(f"{stem}: test {result['test']['accuracy']:.2%} after {result['train_seconds']:.0f} s "
          f"of training; peak memory {result['peak_rss_mib']} MiB -> {args.out / stem}.json")
    return 0


if __name__ == "__main__":
    cli.run_main(main)
