"""Gather what the lab's scripts left in the output folder into one dict for the report.

The latest training run (``history.csv``, ``train_summary.json``), the evaluation
(``metrics.json``, ``test_predictions.csv``, ``figure_data.npz``), the recognition of
your own images (``predictions/predictions.csv``, ``charts.npz``) and every script's
saved console log. The figures are the report's own copies, drawn in its language
(``report.figures``). Paths are shown relative to the project, or by file name when
they lie outside it: the report never shows another machine's folders. A file that
cannot be read is a one-line ``LabError`` naming its remedy.

Usage:

    from network.report.gather import gather, load_training_run
    training, missing = load_training_run(Path("reports"))
    run = gather(args, argv, training, missing, checked)   # for report.builder
"""

import contextlib
import datetime
import io
import json
import os
import re
import zipfile
from pathlib import Path

import numpy as np

from network import PROJECT_ROOT
from network.core.console_log import LOG_DIR, command_line
from network.core.errors import LabError
from network.report import figures
from network.report.style import PRINT_WIDTH_CM
from network.training.previous import finished

TRAINING_FILES = ("history.csv", "train_summary.json")
PREDICTIONS = Path("predictions", "predictions.csv")  # test_model's table in the output folder
CHART_DATA = Path("predictions", "charts.npz")        # the charts' photos and heat maps
FIGURE_DATA = "figure_data.npz"                       # the evaluation's grids' images
MANUAL = {"accuracy": 0.5754, "loss": 1.63}  # the manual's published test result, for comparison
CONFUSION_PART = 9             # superclasses per printed part of the confusion matrix (3 x 3)
PARTS_DIR = figures.FOLDER     # the drawn figures, kept for the next report of the same run
LOGGED = ("train_model", "evaluate_model", "test_model")
LOG_LINES = 400                # longer logs keep their start and end
TITLE_FIELDS = ("student", "group", "teacher", "topic", "aim", "university", "department",
                "city")
# An absolute path in a command or log: after a space, "=" or a quote, never inside a URL.
ABSOLUTE_PATH = re.compile(r"""(?<![\w.:/~])(?:/|[A-Za-z]:\\)[^\s"',;]+""")


@contextlib.contextmanager
def reading(path, remedy):
    """Turn a file that cannot be read or parsed into a one-line ``LabError``."""
    try:
        yield
    # pandas' ParserError is a ValueError; a damaged .npz is a BadZipFile.
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as err:
        raise LabError(f"{path} cannot be used ({err}): {remedy}") from None


def shown_path(path):
    """A path as the report shows it: relative to the project when inside it, else its
    file name (another machine's folders mean nothing to the reader)."""
    path = Path(path)
    try:
        return Path(os.path.abspath(path)).relative_to(PROJECT_ROOT).as_posix() or "."
    except ValueError:
        return path.name or str(path)


def shown_paths(text):
    """``text`` with every absolute path in it as ``shown_path`` shows it."""
    return ABSOLUTE_PATH.sub(lambda match: shown_path(match.group(0)), text)


def finished_at(summary):
    """When training finished (train_summary.json's ``finished_at``, ISO 8601 with its
    time-zone offset), or None for a summary written before it had one."""
    moment = finished(summary)
    return moment if moment and moment.tzinfo else None


def load_training_run(out):
    """The latest training run (history, summary, the saved epoch), or None with the
    names of the files that are missing: the report then says how to add it."""
    from network.analysis.metrics import epoch_numbers, has_validation, load_history
    from network.report.builder import flatten_settings

    missing = [name for name in TRAINING_FILES if not (out / name).is_file()]
    if missing:
        return None, missing
    with reading(out / "history.csv", "train again"):
        history = load_history(out / "history.csv")
        if history.empty:
            raise ValueError("no epochs")
    summary = read_json(out / "train_summary.json", "train again")
    settings = flatten_settings(summary.get("settings"))
    history = history.assign(epoch=epoch_numbers(history))
    best = history["val_loss"].idxmin() if has_validation(history) else None
    # Early stopping keeps the epoch of lowest validation loss; a fixed schedule its last.
    early_stopping = settings.get("patience") is not None
    return {"history": history, "summary": summary, "settings": settings, "best": best,
            "saved": best if early_stopping else len(history) - 1,
            "early_stopping": early_stopping, "finished_at": finished_at(summary)}, []


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


def printed_width_cm(png):
    """The width a figure is printed at: its own size (from the PNG's resolution),
    at most the page's. Figures are drawn so that their text is >= 9 pt at this width."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        dpi = float(image.info.get("dpi", (110, 110))[0]) or 110.0
        return min(image.size[0] / dpi * 2.54, PRINT_WIDTH_CM)


def figure_entry(png):
    return {"png": png, "width_cm": printed_width_cm(png)}


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
            copy_of = rows["copy_of"].iloc[0] if "copy_of" in rows else None
            results[file] = {"chart": csv.parent / str(chart),
                             "copy_of": copy_of if isinstance(copy_of, str) and copy_of else None,
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


def read_logs(out):
    """Each script's saved console output (None when absent), longest ones shortened."""
    logs = {}
    for script in LOGGED:
        path = out / LOG_DIR / f"{script}.log"
        try:
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            logs[script] = None
            continue
        if len(lines) > LOG_LINES:
            head, tail = LOG_LINES // 4, LOG_LINES - LOG_LINES // 4
            cut = len(lines) - head - tail
            lines = lines[:head] + [f"[... {cut} lines: see {LOG_DIR}/{script}.log ...]"] \
                + lines[-tail:]
        logs[script] = shown_paths("\n".join(lines))
    return logs


def commands_from(logs):
    """The command each script was run with: the first line of its log."""
    return {script: text.splitlines()[0][2:] for script, text in logs.items()
            if text and text.startswith("$ ")}


# --- Own images ------------------------------------------------------------------------

def guess_class(stem, names):
    """The class a file name starts with (``maple_tree_2.jpg`` -> maple_tree), if any."""
    stem = stem.lower()
    hits = [n for n in names if stem == n.lower()
            or (stem.startswith(n.lower()) and not stem[len(n)].isalpha())]
    return max(hits, key=len) if hits else None


def own_image_results(out, names, cache):
    """One dict per image of the last test_model run: name, chart (the report's copy),
    top-5, named class, rank, and the other files holding the same photo (``copies``).
    A copy of an earlier photo is left out: it is shown once, with its other names."""
    csv = out / PREDICTIONS
    recorded = read_predictions(csv)
    if recorded is None:
        raise LabError(f"{csv} cannot be read: run again with --refresh")
    charts = read_npz(out / CHART_DATA)
    results, by_file = [], {}
    for file, r in recorded.items():
        if r["copy_of"] in by_file:
            by_file[r["copy_of"]]["copies"].append(shown_path(file))
            continue
        expected = guess_class(Path(file).stem, names)
        classes = [c for c, _ in r["top"]]
        rank = classes.index(expected) + 1 if expected in classes else None
        key = r["chart"].name
        with reading(out / CHART_DATA, "run again with --refresh"):
            chart = figures.own_chart(cache, Path(file).name, charts[f"{key}.image"],
                                      charts[f"{key}.heat"], r["top"])
        by_file[file] = {"name": Path(file).name, "chart": chart, "top": r["top"],
                         "expected": expected, "rank": rank, "copies": [],
                         "width_cm": printed_width_cm(chart)}
        results.append(by_file[file])
    return results


# --- Gathering the run -------------------------------------------------------------------

def confusion_parts(cm, names, coarse_names, fine_to_coarse, cache):
    """The confusion matrix in parts of a few superclasses, each one fitting a printed page
    with its text at 9 pt or more (drawn once per evaluation and language: ``cache``)."""
    mapping = np.asarray(fine_to_coarse)
    parts = []
    for start in range(0, len(coarse_names), CONFUSION_PART):
        chosen = range(start, min(start + CONFUSION_PART, len(coarse_names)))
        # The other superclasses' classes get -1: they count only as "elsewhere".
        local = np.full_like(mapping, -1)
        for i, coarse in enumerate(chosen):
            local[mapping == coarse] = i
        png = figures.confusion_part(cache, cm, names, [coarse_names[c] for c in chosen],
                                     local, start)
        parts.append(figure_entry(png))
    return parts


def read_npz(path):
    """The arrays of a .npz file the scripts left for the report's figures."""
    with reading(path, "run again with --refresh"), np.load(path, allow_pickle=False) as stored:
        return {key: stored[key] for key in stored.files}


def evaluation_results(args, cache):
    """The evaluation's figures (the report's copies) and tables, from the output folder."""
    from sklearn.metrics import confusion_matrix

    from network.analysis.metrics import most_confused_pairs, per_class_scores, superclass_matrix
    from network.model_utils import load_class_names

    out = args.output_dir
    metrics = read_json(out / "metrics.json", "run again with --refresh")
    classes = load_class_names(args.model_path)
    names = classes["fine_label_names"]
    coarse_names, fine_to_coarse = classes.get("coarse_label_names"), classes.get("fine_to_coarse")
    if not isinstance(coarse_names, list) or not isinstance(fine_to_coarse, list):
        raise LabError(f"the class names beside {args.model_path} lack the superclasses: "
                       "train again")
    y_true, y_pred = read_test_predictions(out, int(metrics["images"]), len(names))
    cm = confusion_matrix(y_true, y_pred, labels=np.arange(len(names)))
    grids = read_npz(out / FIGURE_DATA)  # the images and labels of the two grids
    with reading(out / "metrics.json", "run again with --refresh"):
        drawn = {"test_samples": figures.test_samples(cache, grids, names),
                 "confident_mistakes": figures.confident_mistakes(cache, grids, names),
                 "reliability_diagram": figures.reliability(
                     cache, metrics["calibration"]["reliability"])}
    shown = {name: figure_entry(png) for name, png in drawn.items()}
    shown["confusion_parts"] = confusion_parts(cm, names, coarse_names, fine_to_coarse, cache)
    return {
        "metrics": metrics, "names": names, "coarse_names": coarse_names,
        "num_classes": len(names), "figures": shown,
        "per_class": per_class_scores(y_true, y_pred, names, fine_to_coarse,
                                                coarse_names),
        "superclass": superclass_matrix(y_true, y_pred, fine_to_coarse,
                                                  len(coarse_names)),
        "pairs": [(names[a], names[b], ab, ba, fine_to_coarse[a] == fine_to_coarse[b])
                  for a, b, ab, ba in most_confused_pairs(cm)],
    }


def gather(args, argv, training, missing, checked, w, names):
    """Everything the report shows, as one dict for report.builder; its figures are drawn
    in ``w``'s language with the class names as ``names`` shows them."""
    out = args.output_dir
    cache = figures.FigureCache(out, w, names)
    run = evaluation_results(args, cache)
    logs = read_logs(out)
    if training:
        run["figures"]["training_curves"] = figure_entry(
            figures.training_curves(cache, training["history"]))
    run["own"] = own_image_results(out, run["names"], cache)
    cache.prune()
    trained = training and training["settings"].get("model_path")
    today = datetime.datetime.now().astimezone()
    commands = {script: shown_paths(command) for script, command in commands_from(logs).items()}
    run.update(
        training=training, training_missing=missing, logs=logs, manual=MANUAL,
        commands={**commands, "make_report": shown_paths(command_line("make_report", argv))},
        skipped=[(shown_path(name), why) for name, why in readable_images(checked)[1]]
        if checked else [],
        other_model=shown_path(trained) if trained and Path(trained).resolve()
        != args.model_path.resolve() else None,
        model_shown=shown_path(args.model_path), out_shown=shown_path(out),
        year=((training and training["finished_at"]) or today).year,
        **{key: (getattr(args, key, None) or "").strip() or None for key in TITLE_FIELDS})
    return run
