"""Write the whole lab report as one HTML page.

Gathers the latest training run (``history.csv``, ``train_summary.json``), the
evaluation (``metrics.json``, ``test_predictions.csv``, ``confusion_matrix.png``,
``test_samples.png``) and the recognition of your own images (the last
``test_model`` run, in ``predictions/``) from the output folder into
``report.html``. Steps whose outputs are missing or older than the model run
first (``--refresh`` runs them anyway). Your own images are those of the last
``test_model`` run; ``img/`` is recognised only when there is none, and
``--images`` recognises other photos instead.

The page is rendered from ``templates/report.html.j2`` (with ``report.css``
inlined and the figures embedded), so it opens in any browser and can be
handed in as one file.

Usage:

    python -m network.make_report
    python -m network.make_report --images my_photos/ --refresh
"""

import argparse
import base64
import contextlib
import io
import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: python network/make_report.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from network import PROJECT_ROOT, cli, runtime
from network.errors import LabError

REPORT_NAME = "report.html"
TEMPLATES = Path(__file__).resolve().parent / "templates"
TRAINING_FILES = ("history.csv", "train_summary.json")
EVALUATION_FILES = ("metrics.json", "test_predictions.csv", "confusion_matrix.png",
                    "test_samples.png", "confident_mistakes.png", "reliability_diagram.png")
PREDICTIONS = Path("predictions", "predictions.csv")  # test_model's table in the output folder
DEFAULT_IMAGES = PROJECT_ROOT / "img"


def parse_args(argv=None):
    # The shared options state their defaults in their help already.
    parser = argparse.ArgumentParser(prog="make_report", description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", nargs="+", type=Path,
                        help="recognise these image files or folders for the report "
                             "(default: the images of the last test_model run, or img/ "
                             "when there is none)")
    parser.add_argument("--refresh", action="store_true",
                        help="run the evaluation and the image recognition again even "
                             "when their outputs exist")
    parser.add_argument("--tta", action="store_true",
                        help="when the evaluation runs, also report flip test-time "
                             "augmentation")
    cli.add_common_arguments(parser)
    # A report is written, not looked at: figures of the steps it runs show only when asked.
    parser.set_defaults(show=False)
    for action in parser._actions:
        if action.dest == "show":
            action.help = ("show the figures of the evaluation and recognition it runs "
                           "(default: no); the report never needs a display")
    args = parser.parse_args(argv)
    cli.ensure_writable_dir(parser, args.output_dir, "output folder")
    return args


# --- Running the steps whose outputs are missing or stale ------------------------------

def is_stale(path, model_path):
    """An output is stale when it is missing or older than the model it describes."""
    if not path.is_file():
        return True
    return model_path.is_file() and path.stat().st_mtime < model_path.stat().st_mtime


def evaluation_needed(args):
    """Why the evaluation must run (a short reason), or None when its outputs are usable."""
    out = args.output_dir
    for name in EVALUATION_FILES:
        if is_stale(out / name, args.model_path):
            return f"{name} is missing or older than {args.model_path.name}"
    try:
        metrics = json.loads((out / "metrics.json").read_text())
        evaluated = Path(metrics["model_path"])
        float(metrics["accuracy"]), int(metrics["images"])
    except (OSError, ValueError, KeyError, TypeError):
        return "metrics.json is damaged"
    if evaluated.resolve() != args.model_path.resolve():
        return f"metrics.json describes another model ({evaluated})"
    return None


def recognition_needed(args, evaluated):
    """(images, message) when the own images must be recognised, else (None, None).

    The images are those given with --images, else those of the last test_model
    run (predictions.csv), else img/. predictions.csv does not name its model,
    so a model evaluated anew is recognised anew.
    """
    csv = args.output_dir / PREDICTIONS
    recorded = read_predictions(csv)
    if args.images:
        images, what = args.images, "the images given with --images"
    elif recorded:
        images, what = [Path(file) for file in recorded], "the images of the last test_model run"
    else:
        images, what = [DEFAULT_IMAGES], "the images in img/"
    if recorded is None:
        why = f"{csv} {'cannot be read' if csv.exists() else 'does not exist yet'}"
    elif args.images and ({p.resolve() for p in readable_images(images)[0]}
                          != {Path(file).resolve() for file in recorded}):
        why = "the last test_model run had other images"
    elif evaluated:
        why = "the model was evaluated anew"
    elif any(is_stale(path, args.model_path)
             for path in [csv, *(r["chart"] for r in recorded.values())]):
        why = "its results are missing or older than the model"
    else:
        return None, None
    return images, f"Recognising {what} ({why})"


def run_step(main, args, options):
    """Run another script on this report's model and folder, keeping its terminal output
    (the 100-class table, every top-5 list) out of the way: the report holds it."""
    common = ["--model-path", str(args.model_path), "--output-dir", str(args.output_dir),
              "--show" if args.show else "--no-show"]
    with contextlib.redirect_stdout(io.StringIO()):
        main(common + options)


def refresh_outputs(args):
    """Run the evaluation and the recognition where needed; return the images checked."""
    from network import evaluate_model, test_model

    evaluate = "--refresh" if args.refresh else evaluation_needed(args)
    if evaluate:
        print(f"Evaluating {args.model_path} on the test images ({evaluate})")
        options = ["--data-dir", str(args.data_dir), "--seed", str(args.seed)]
        options += ["--allow-md5-mismatch"] * args.allow_md5_mismatch + ["--tta"] * args.tta
        run_step(evaluate_model.main, args, options)
    images, message = recognition_needed(args, evaluate)
    if images:
        print(message)
        try:
            run_step(test_model.main, args, ["--", *map(str, images)])
        except LabError as err:
            raise LabError(f"recognising your own images failed: {err} (give photos with "
                           "--images)") from None
    return images or args.images


# --- Reading the outputs ---------------------------------------------------------------

@contextlib.contextmanager
def reading(path, remedy):
    """Turn a file that cannot be read or parsed into a one-line ``LabError``."""
    try:
        yield
    except (OSError, ValueError, KeyError, TypeError) as err:  # pandas' ParserError included
        raise LabError(f"{path} cannot be used ({err}): {remedy}") from None


def load_training_run(out):
    """history.csv and train_summary.json of the latest run; ``LabError`` when absent."""
    from network.reporting import load_history, plot_history

    missing = [name for name in TRAINING_FILES if not (out / name).is_file()]
    if missing:
        raise LabError(f"no training run in {out} ({', '.join(missing)} missing): train "
                       f"first with python -m network.train_model --output-dir {out}, "
                       "or point --output-dir at the folder that holds the run")
    with reading(out / "history.csv", "train again"):
        history = load_history(out / "history.csv")
        if history.empty:
            raise ValueError("no epochs")
    # Drawn from history.csv each time, so the figure always matches the table beside it.
    plot_history(history, out / "training_curves.png")
    return history, read_json(out / "train_summary.json", "train again")


def read_json(path, remedy):
    with reading(path, remedy):
        payload = json.loads(path.read_text())
        if not isinstance(payload, dict):
            raise ValueError("not a JSON object")
    return payload


def read_png(path):
    with reading(path, "run again with --refresh"):
        data = path.read_bytes()
        if not data.startswith(b"\x89PNG\r\n\x1a\n"):
            raise ValueError("not a PNG image")
    return data


def readable_images(paths):
    """(readable image files, [(name, why it was left out)]) among ``paths``."""
    from network.test_model import collect_images, read_image

    files, problems = collect_images(paths)
    readable, skipped = [], [tuple(problem.rsplit(": ", 1)) for problem in problems]
    for path in files:
        try:
            read_image(path)
            readable.append(path)
        except LabError as err:
            skipped.append((str(path), str(err)))
    return readable, skipped


def read_predictions(csv):
    """The last test_model run as {file: {"chart": path, "top": [(class, p), ...]}}, or None.

    The chart's name comes from the ``chart`` column, or else (a table written
    before it had one) is ``<image name>_top5.png``; a missing chart makes the
    recognition run again.
    """
    import pandas as pd

    from network.test_model import CHART_SUFFIX

    try:
        table = pd.read_csv(csv)
        results = {}
        for file, rows in table.groupby("file", sort=False):
            rows = rows.sort_values("rank")
            chart = rows["chart"].iloc[0] if "chart" in rows else Path(file).stem + CHART_SUFFIX
            results[file] = {"chart": csv.parent / str(chart),
                             "top": list(zip(rows["class"].astype(str),
                                             rows["probability"].astype(float)))}
        return results
    except (OSError, ValueError, KeyError):  # pandas' ParserError is a ValueError
        return None


def read_test_predictions(out, count, num_class):
    """True and predicted fine labels of the evaluated test images (test_predictions.csv)."""
    import pandas as pd

    with reading(out / "test_predictions.csv", "run again with --refresh"):
        table = pd.read_csv(out / "test_predictions.csv")
        y_true, y_pred = table["true"].to_numpy(), table["predicted"].to_numpy()
        labels = np.concatenate([y_true, y_pred])
        if len(table) != count or labels.min(initial=0) < 0 or labels.max(initial=0) >= num_class:
            raise ValueError("it does not match metrics.json")
    return y_true, y_pred


# --- Own images ------------------------------------------------------------------------

def guess_class(stem, names):
    """The class a file name starts with (``maple_tree_2.jpg`` -> maple_tree), if any."""
    stem = stem.lower()
    hits = [n for n in names if stem == n.lower()
            or (stem.startswith(n.lower()) and not stem[len(n)].isalpha())]
    return max(hits, key=len) if hits else None


def own_image_results(csv, names):
    """One dict per image of the last test_model run: name, chart, top-5, named class, rank."""
    recorded = read_predictions(csv)
    if recorded is None:
        raise LabError(f"{csv} cannot be read: run again with --refresh")
    results = []
    for file, r in recorded.items():
        expected = guess_class(Path(file).stem, names)
        classes = [c for c, _ in r["top"]]
        rank = classes.index(expected) + 1 if expected in classes else None
        results.append({"name": Path(file).name, "chart": read_png(r["chart"]), "top": r["top"],
                        "expected": expected, "rank": rank})
    return results


# --- The page --------------------------------------------------------------------------

def pct(value):
    return f"{value:.1%}"


def render(ctx):
    """The whole page as a string: templates/report.html.j2 with autoescaping."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True,
                             lstrip_blocks=True)
    env.filters.update(pct=pct,
                       data_uri=lambda png: "data:image/png;base64,"
                       + base64.b64encode(png).decode("ascii"))
    return env.get_template("report.html.j2").render(**ctx)


def main(argv=None):
    runtime.setup_backend_env()
    args = parse_args(argv)  # --help and wrong options answer before the slow imports below
    cli.require_model_file(args.model_path)
    cli.setup_matplotlib(args.show)
    out = args.output_dir
    history, summary = load_training_run(out)
    runtime.start()

    from sklearn.metrics import confusion_matrix

    from network import reporting
    from network.explain import mistakes_sentence
    from network.model_utils import load_class_names

    checked = refresh_outputs(args)

    metrics = read_json(out / "metrics.json", "run again with --refresh")
    classes = load_class_names(args.model_path)
    names = classes["fine_label_names"]
    coarse_names, fine_to_coarse = classes.get("coarse_label_names"), classes.get("fine_to_coarse")
    if not isinstance(coarse_names, list) or not isinstance(fine_to_coarse, list):
        raise LabError(f"the class names beside {args.model_path} lack the superclasses: "
                       "train again")
    y_true, y_pred = read_test_predictions(out, int(metrics["images"]), len(names))
    cm = confusion_matrix(y_true, y_pred, labels=np.arange(len(names)))
    trained_model = summary.get("settings", {}).get("model_path")
    history = history.assign(epoch=reporting.epoch_numbers(history))
    best = history["val_loss"].idxmin() if reporting.has_validation(history) else None
    # Early stopping keeps the epoch of lowest validation loss; a fixed schedule its last.
    early_stopping = summary.get("settings", {}).get("patience") is not None
    saved = best if early_stopping else len(history) - 1
    own = own_image_results(out / PREDICTIONS, names)
    ctx = {
        "out": out, "model_path": args.model_path, "summary": summary, "metrics": metrics,
        "settings": summary.get("settings", {}), "coarse_names": coarse_names,
        "other_model": trained_model if trained_model and Path(trained_model).resolve()
        != args.model_path.resolve() else None,
        "history": history, "best": best, "saved": saved, "early_stopping": early_stopping,
        "per_class": reporting.per_class_scores(y_true, y_pred, names, fine_to_coarse,
                                                coarse_names),
        "superclass": reporting.superclass_matrix(y_true, y_pred, fine_to_coarse,
                                                  len(coarse_names)),
        "pairs": [(names[a], names[b], ab, ba, fine_to_coarse[a] == fine_to_coarse[b])
                  for a, b, ab, ba in reporting.most_confused_pairs(cm)],
        "figures": {name.split(".")[0]: read_png(out / name) for name in
                    ("training_curves.png", "confusion_matrix.png", "test_samples.png",
                     "confident_mistakes.png", "reliability_diagram.png")},
        "calibration": metrics["calibration"],
        "mistakes": mistakes_sentence(metrics["confident_mistakes"]),
        "own": own,
        "skipped": readable_images(checked)[1] if checked else [],
        "trained_at": time.strftime("%Y-%m-%d %H:%M", time.localtime(
            (out / "train_summary.json").stat().st_mtime)),
        "generated_at": time.strftime("%Y-%m-%d %H:%M"),
    }
    path = out / REPORT_NAME
    cli.write_text_atomic(path, render(ctx))
    print(f"Test accuracy {pct(metrics['accuracy'])} (top-5 {pct(metrics['top5_accuracy'])}, "
          f"superclass {pct(metrics['superclass_accuracy'])}) on {metrics['images']:,} images; "
          f"{len(own)} own image(s) in the report")
    print(f"Report written to {path} (open it in any browser)")
    return 0


if __name__ == "__main__":
    cli.run_main(main)
