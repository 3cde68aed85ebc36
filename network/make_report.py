"""Write the whole lab report as one HTML page.

Gathers the latest training run (``history.csv``, ``train_summary.json``,
``training_curves.png``), the evaluation (``metrics.json``,
``classification_report.csv``, ``confusion_matrix.png``, ``test_samples.png``,
``test_predictions.csv``) and the recognition of your own images
(``predictions/``) from the output folder into ``report.html``. The evaluation
and the image recognition are run first when their outputs are missing or
older than the model (``--refresh`` runs them again anyway). The per-image
test predictions give a 20 x 20 superclass confusion matrix and the ten most
confused class pairs.

The page is self-contained: figures are embedded and the styling is inline,
so it opens in any browser and can be handed in as one file.

Usage:

    python -m network.make_report
    python -m network.make_report --images my_photos/ --refresh
"""

import argparse
import base64
import html
import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: python network/make_report.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from network import PROJECT_ROOT, cli
from network.cli import LabError

REPORT_NAME = "report.html"
TRAINING_FILES = ("history.csv", "train_summary.json")
EVALUATION_FILES = ("metrics.json", "classification_report.csv", "confusion_matrix.png",
                    "test_samples.png", "test_predictions.csv")
PREDICTIONS_DIR = "predictions"       # where test_model writes inside the output folder
TOP_PAIRS = 10
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# (anchor, heading) of every section, in page order.
SECTIONS = (
    ("summary", "Summary"),
    ("settings", "Run settings and hardware"),
    ("history", "Training history per epoch"),
    ("curves", "Training curves"),
    ("metrics", "Test metrics"),
    ("per-class", "Per-class precision, recall and F1"),
    ("confusion", "Confusion matrix"),
    ("superclass", "Superclass confusion matrix"),
    ("pairs", "Most confused class pairs"),
    ("samples", "Random test images"),
    ("own-images", "Own images"),
)


def parse_args(argv=None):
    # The shared options state their defaults in their help already.
    parser = argparse.ArgumentParser(prog="make_report", description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", nargs="+", type=Path, default=[PROJECT_ROOT / "img"],
                        help="own image files or folders to recognise (default: img/)")
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


# --- Gathering the outputs -----------------------------------------------------------

def load_training_run(out):
    """history.csv and train_summary.json of the latest run; ``LabError`` when absent."""
    import pandas as pd

    from network.reporting import load_history

    missing = [name for name in TRAINING_FILES if not (out / name).is_file()]
    if missing:
        raise LabError(f"no training run in {out} ({', '.join(missing)} missing): train "
                       f"first with python -m network.train_model --output-dir {out}, "
                       "or point --output-dir at the folder that holds the run")
    try:
        history = load_history(out / "history.csv")
        if "epoch" not in history or history.empty:
            raise ValueError("no epochs")
    except (ValueError, KeyError, pd.errors.ParserError) as err:
        raise LabError(f"{out / 'history.csv'} is damaged ({err}): train again") from None
    summary = read_json(out / "train_summary.json", "train again")
    if not (out / "training_curves.png").is_file():  # redraw what training would have saved
        from network.reporting import plot_history

        plot_history(history.reset_index(drop=True), out / "training_curves.png")
    return history.reset_index(drop=True), summary


def read_json(path, remedy):
    try:
        payload = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise LabError(f"{path} cannot be read ({err}): {remedy}") from None
    if not isinstance(payload, dict):
        raise LabError(f"{path} is damaged: {remedy}")
    return payload


def is_stale(path, model_path):
    """An output is stale when it is missing or older than the model it describes."""
    if not path.is_file():
        return True
    return model_path.is_file() and path.stat().st_mtime < model_path.stat().st_mtime


def evaluation_needed(args):
    """Why the evaluation must run (a short reason), or None when its outputs are usable."""
    out = args.output_dir
    for name in EVALUATION_FILES:
        if not (out / name).is_file():
            return f"{name} is missing"
        if is_stale(out / name, args.model_path):
            return f"{name} is older than {args.model_path.name}"
    try:
        metrics = json.loads((out / "metrics.json").read_text())
        evaluated = Path(metrics["model_path"])
        float(metrics["accuracy"])
        int(metrics["images"])
    except (OSError, ValueError, KeyError, TypeError):
        return "metrics.json is damaged"
    if evaluated.resolve() != args.model_path.resolve():
        return f"metrics.json describes another model ({evaluated})"
    return None


def common_options(args):
    options = ["--model-path", str(args.model_path), "--output-dir", str(args.output_dir)]
    return options + (["--show"] if args.show else ["--no-show"])


def run_evaluation(args, reason):
    from network import evaluate_model

    print(f"Running the evaluation ({reason})")
    options = common_options(args) + ["--data-dir", str(args.data_dir), "--seed", str(args.seed)]
    options += ["--allow-md5-mismatch"] * args.allow_md5_mismatch + ["--tta"] * args.tta
    evaluate_model.main(options)


def requested_images(args):
    """(readable image files, [(name, why it was left out)]) among ``--images``."""
    from network.test_model import collect_images, read_image

    files, problems = collect_images(args.images)
    readable, skipped = [], [tuple(problem.rsplit(": ", 1)) for problem in problems]
    for path in files:
        try:
            read_image(path)
            readable.append(path)
        except LabError as err:
            skipped.append((str(path), str(err)))
    return readable, skipped


def chart_names(files):
    """The ``*_top5.png`` names test_model gives these files, in the same order."""
    from network.test_model import output_name

    used = set()
    return [output_name(Path(f), used) for f in files]


def read_predictions(folder):
    """predictions.csv as {file: [(class, probability), ...]} in file order, or None."""
    import pandas as pd

    try:
        table = pd.read_csv(folder / "predictions.csv")
        table = table.sort_values(["rank"], kind="stable")
        files = list(dict.fromkeys(table["file"]))
        top = {f: [] for f in files}
        for file, name, prob in zip(table["file"], table["class"], table["probability"]):
            top[file].append((str(name), float(prob)))
        return top
    except (OSError, ValueError, KeyError, pd.errors.ParserError):
        return None


def recognition_needed(args, readable):
    """Why the recognition must run, or None when predictions/ matches ``--images``."""
    folder = args.output_dir / PREDICTIONS_DIR
    if is_stale(folder / "predictions.csv", args.model_path):
        return "predictions.csv is missing or older than the model"
    top = read_predictions(folder)
    if top is None:
        return "predictions.csv is damaged"
    done = {Path(f).resolve() for f in top}
    if done != {p.resolve() for p in readable}:
        return "predictions.csv covers other images than --images"
    for name in chart_names(top):
        if is_stale(folder / name, args.model_path):
            return f"{name} is missing or older than the model"
    return None


def run_recognition(args, reason):
    from network import test_model

    print(f"Recognising your own images ({reason})")
    try:
        test_model.main(common_options(args) + ["--", *map(str, args.images)])
    except LabError as err:
        raise LabError(f"recognising your own images failed: {err} (give photos with "
                       "--images)") from None


def own_image_results(args, names):
    """One dict per recognised image: name, chart PNG, top-5 rows, class its name suggests."""
    folder = args.output_dir / PREDICTIONS_DIR
    top = read_predictions(folder)
    if top is None:
        raise LabError(f"{folder / 'predictions.csv'} cannot be read: run again with --refresh")
    return [{"name": Path(file).name, "chart": read_png(folder / chart), "top": top[file],
             "expected": guess_class(Path(file).stem, names)}
            for file, chart in zip(top, chart_names(top))]


def guess_class(stem, names):
    """The class a file name starts with (``maple_tree_2.jpg`` -> maple_tree), if any."""
    stem = stem.lower()
    hits = [n for n in names if stem == n.lower()
            or (stem.startswith(n.lower()) and not stem[len(n)].isalpha())]
    return max(hits, key=len) if hits else None


def read_png(path):
    data = path.read_bytes()
    if not data.startswith(PNG_MAGIC):
        raise LabError(f"{path} is not a PNG image: run again with --refresh")
    return data


# --- Test-set predictions: superclasses and confused pairs -----------------------------

def read_test_predictions(out, count, num_class):
    """True and predicted fine labels of the evaluated test images (test_predictions.csv)."""
    import pandas as pd

    path = out / "test_predictions.csv"
    try:
        table = pd.read_csv(path)
        y_true, y_pred = table["true"].to_numpy(), table["predicted"].to_numpy()
    except (OSError, ValueError, KeyError, pd.errors.ParserError):
        raise LabError(f"{path} is damaged: run again with --refresh") from None
    labels = np.concatenate([y_true, y_pred])
    if len(table) != count or labels.min(initial=0) < 0 or labels.max(initial=0) >= num_class:
        raise LabError(f"{path} does not match metrics.json: run again with --refresh")
    return y_true, y_pred


def confusion_counts(y_true, y_pred, n):
    """n x n counts: rows are true classes, columns predicted ones."""
    cm = np.zeros((n, n), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return cm


def superclass_matrix(y_true, y_pred, fine_to_coarse, num_superclasses):
    """The 20 x 20 confusion matrix of the true and predicted classes' superclasses."""
    mapping = np.asarray(fine_to_coarse)
    return confusion_counts(mapping[y_true], mapping[y_pred], num_superclasses)


def most_confused_pairs(cm, k=TOP_PAIRS):
    """The ``k`` unordered class pairs with the most mistakes, both directions summed.

    Returns (a, b, a predicted as b, b predicted as a) tuples, most mistakes
    first, each turned so that a -> b is the more frequent direction; pairs
    never confused are left out.
    """
    both = np.triu(cm + cm.T, k=1)
    a, b = np.nonzero(both)
    order = np.lexsort((b, a, -both[a, b]))[:k]  # most first, then by class index
    pairs = []
    for i, j in zip(a[order].tolist(), b[order].tolist()):
        if cm[j, i] > cm[i, j]:
            i, j = j, i
        pairs.append((i, j, int(cm[i, j]), int(cm[j, i])))
    return pairs


def per_class_rows(csv_path, names, fine_to_coarse, coarse_names):
    """Per-class rows from classification_report.csv, worst F1 first."""
    import pandas as pd

    try:
        table = pd.read_csv(csv_path, index_col="class")
        table = table.loc[names, ["precision", "recall", "f1-score", "support"]]
    except (OSError, ValueError, KeyError, pd.errors.ParserError) as err:
        raise LabError(f"{csv_path} does not hold the {len(names)} classes ({err}): run "
                       "again with --refresh") from None
    rows = [{"name": name, "superclass": coarse_names[fine_to_coarse[i]],
             "precision": float(r["precision"]), "recall": float(r["recall"]),
             "f1": float(r["f1-score"]), "support": int(r["support"])}
            for i, (name, r) in enumerate(table.iterrows())]
    return sorted(rows, key=lambda r: (r["f1"], r["recall"], r["name"]))


# --- Words -------------------------------------------------------------------------

def pct(value):
    return f"{value:.1%}"


def duration(seconds):
    seconds = round(float(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


def summary_sentences(ctx):
    """A few plain sentences that say what the numbers mean."""
    m, run, history = ctx["metrics"], ctx["summary"], ctx["history"]
    settings = run.get("settings", {})
    sentences = [
        f"The model recognises {pct(m['accuracy'])} of the {m['images']:,} test images; the "
        f"right class is among its top five for {pct(m['top5_accuracy'])}, and its guess lies "
        f"in the right superclass for {pct(m['superclass_accuracy'])} "
        f"(test loss {m['loss']:.3f})."]
    if "tta" in m:
        sentences.append(f"Averaging each image with its mirror image (TTA) gives "
                         f"{pct(m['tta']['accuracy'])} top-1 and "
                         f"{pct(m['tta']['top5_accuracy'])} top-5.")
    epochs, limit = run.get("epochs_run", len(history)), settings.get("epochs")
    text = (f"Training ({settings.get('recipe', '?')} recipe, "
            f"{fmt(run.get('train_images'))} training images) ran {epochs} epoch"
            f"{'s' if epochs != 1 else ''}")
    if limit and epochs < limit:
        text += f" of at most {limit} (early stopping ended it)"
    if "train_seconds" in run:
        text += f" in {duration(run['train_seconds'])}"
    sentences.append(text + ".")
    if "val_loss" in history and history["val_loss"].notna().any():
        best = history.loc[history["val_loss"].idxmin()]
        last = history.iloc[-1]
        text = f"The validation loss was lowest after epoch {int(best['epoch']) + 1}"
        if "val_accuracy" in history:
            text += f" (validation accuracy {pct(best['val_accuracy'])})"
        if {"accuracy", "val_accuracy"} <= set(history):
            gap = last["accuracy"] - last["val_accuracy"]
            text += (f"; in the last epoch the training accuracy was {pct(last['accuracy'])} "
                     f"against {pct(last['val_accuracy'])} on validation images"
                     + (f", a gap of {gap * 100:.1f} points that suggests overfitting"
                        if gap > 0.1 else ""))
        sentences.append(text + ".")
    sentences.append(class_sentence(ctx["per_class"]))
    if ctx["pairs"]:
        a, b, ab, ba = ctx["pairs"][0]
        names = ctx["names"]
        sentences.append(f"The most confused pair is {names[a]} \u2194 {names[b]} "
                         f"({ab + ba} mistakes: {ab} {names[a]} images taken for "
                         f"{names[b]}, {ba} the other way).")
    sentences.append(own_images_sentence(ctx["own"]))
    return [s for s in sentences if s]


def class_sentence(rows):
    rows = [r for r in rows if r["support"] > 0]
    if not rows:
        return ""
    best, worst = rows[-1], rows[0]
    ties = sum(r["f1"] == worst["f1"] for r in rows)
    worst_text = (f"the worst is {worst['name']} (F1 {worst['f1']:.2f})" if ties == 1 else
                  f"{ties} classes share the worst F1 of {worst['f1']:.2f}, "
                  f"e.g. {worst['name']}")
    return f"The best recognised class is {best['name']} (F1 {best['f1']:.2f}); {worst_text}."


def own_images_sentence(own):
    if not own:
        return ""
    named = [r for r in own if r["expected"]]
    text = f"Of the {len(own)} own image{'s' if len(own) != 1 else ''}"
    if not named:
        return text + ", the model's first guesses are: " + ", ".join(
            f"{r['name']} \u2192 {r['top'][0][0]}" for r in own) + "."
    top1 = sum(r["top"][0][0] == r["expected"] for r in named)
    top5 = sum(r["expected"] in [c for c, _ in r["top"]] for r in named)
    return (text + f", {len(named)} are named after a class: the model names that class "
            f"first for {top1} and among its top five for {top5}.")


# --- HTML ----------------------------------------------------------------------------

CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: #1d2330; background: #f4f5f7; margin: 0; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 32px 48px; background: #fff; }
h1 { margin: 0 0 4px; font-size: 28px; }
h2 { margin: 36px 0 12px; padding-bottom: 4px; border-bottom: 2px solid #d8dde6;
     font-size: 21px; }
h3 { margin: 18px 0 6px; font-size: 16px; }
.meta { color: #5a6375; margin: 0 0 12px; }
nav ol { columns: 3; margin: 8px 0 0; padding-left: 22px; }
nav a { color: #1f5fa8; text-decoration: none; }
.summary p { margin: 6px 0; }
.summary { background: #eef4fb; border-left: 4px solid #1f77b4; padding: 10px 16px; }
.note { background: #fff5e0; border-left: 4px solid #e8a33d; padding: 8px 14px; }
table { border-collapse: collapse; margin: 8px 0; font-size: 13.5px; }
th, td { padding: 4px 9px; border-bottom: 1px solid #e3e6eb; text-align: right; }
th { background: #f0f2f5; font-weight: 600; }
td.text, th.text { text-align: left; }
tbody tr:nth-child(even) { background: #fafbfc; }
.kv th { text-align: left; width: 190px; }
.kv td { text-align: left; }
.columns { display: flex; gap: 28px; flex-wrap: wrap; align-items: flex-start; }
.metric-cards { display: flex; gap: 14px; flex-wrap: wrap; margin: 8px 0; }
.card { border: 1px solid #d8dde6; border-radius: 8px; padding: 10px 18px; min-width: 150px; }
.card .value { font-size: 26px; font-weight: 650; }
.card .label { color: #5a6375; font-size: 13px; }
figure { margin: 10px 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #e3e6eb; }
figcaption { color: #5a6375; font-size: 13px; }
td.bar { position: relative; width: 130px; text-align: left; }
.bar span { position: absolute; left: 0; top: 3px; bottom: 3px; background: #cfe0f3;
            z-index: 0; }
.bar b { position: relative; z-index: 1; font-weight: normal; }
.best { font-weight: 650; background: #e6f4e6 !important; }
.matrix td { text-align: center; min-width: 26px; padding: 3px 4px; font-size: 12px; }
.matrix th.col { writing-mode: vertical-rl; transform: rotate(180deg); text-align: left;
                 font-weight: 500; font-size: 12px; padding: 6px 2px; }
.matrix td.diag { outline: 2px solid #1d2330; outline-offset: -2px; }
.own { border-top: 1px solid #e3e6eb; padding-top: 6px; }
.own-body { display: grid; grid-template-columns: minmax(0, 1fr) auto; gap: 24px;
            align-items: start; }
.own figure { margin: 0; }
.ok { color: #217a21; } .bad { color: #b3261e; }
@media (max-width: 700px) { .own-body { grid-template-columns: 1fr; } nav ol { columns: 1; } }
@media print { main { padding: 0; } figure, table, .own { break-inside: avoid; } }
"""


def esc(value):
    return html.escape(str(value), quote=True)


def table(headers, rows, cls="", column_classes=None, row_classes=None):
    """An HTML table; cells are escaped unless given as ``Raw``.

    ``column_classes`` maps a column index to a CSS class ("text": left-aligned).
    """
    column_classes = column_classes or {}

    def attr(i):
        return f' class="{column_classes[i]}"' if i in column_classes else ""

    head = "".join(f"<th{attr(i)}>{esc(h)}</th>" for i, h in enumerate(headers))
    body = []
    for r, row in enumerate(rows):
        cells = "".join(f"<td{attr(i)}>{cell_html(c)}</td>" for i, c in enumerate(row))
        row_class = f' class="{row_classes[r]}"' if row_classes and row_classes[r] else ""
        body.append(f"<tr{row_class}>{cells}</tr>")
    return (f'<table class="{cls}"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table>')


class Raw(str):
    """HTML that is already safe (built from escaped parts)."""


def cell_html(value):
    return value if isinstance(value, Raw) else esc(value)


def key_values(pairs):
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{cell_html(v)}</td></tr>" for k, v in pairs)
    return f'<table class="kv"><tbody>{rows}</tbody></table>'


def figure(png, alt, caption=""):
    data = base64.b64encode(png).decode("ascii")
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="data:image/png;base64,{data}" alt="{esc(alt)}">{cap}</figure>'


def fmt(value):
    """A setting for display: lists joined, floats short, None as a dash."""
    if value is None:
        return "\u2014"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value)) or "\u2014"
    return str(value)


LABELS = {"val_split": "Validation split", "allow_md5_mismatch": "Allow MD5 mismatch",
          "cpu_count": "CPU cores", "keras": "Keras version", "python": "Python version",
          "precision_used": "Precision used", "subset": "Training subset",
          "data_dir": "Data folder", "model_path": "Model saved to",
          "epochs": "Maximum epochs", "width": "Width multiplier"}


def label(key):
    return LABELS.get(key, key.replace("_", " ").capitalize())


def settings_section(ctx):
    run = ctx["summary"]
    settings = run.get("settings", {})
    facts = [("Trained", ctx["trained_at"]),
             ("Epochs run", fmt(run.get("epochs_run"))),
             ("Training images", fmt(run.get("train_images"))),
             ("Validation images", fmt(run.get("val_images"))),
             ("Training time", duration(run["train_seconds"]) if "train_seconds" in run
              else "\u2014"),
             ("Parameters", fmt(run.get("parameters"))),
             ("Evaluated model", str(ctx["model_path"]))]
    hardware = [(label(k), fmt(v)) for k, v in run.get("hardware", {}).items()]
    notes = ""
    trained_model = settings.get("model_path")
    if trained_model and Path(trained_model).resolve() != ctx["model_path"].resolve():
        notes = (f'<p class="note">This training run saved {esc(trained_model)}, but the '
                 f"evaluation is of {esc(ctx['model_path'])}.</p>")
    return (notes + '<div class="columns"><div><h3>Run</h3>' + key_values(facts)
            + "<h3>Hardware</h3>" + key_values(hardware) + "</div><div><h3>Settings</h3>"
            + key_values([(label(k), fmt(v)) for k, v in settings.items()]) + "</div></div>")


# Known history.csv columns in display order; any others follow.
HISTORY_LABELS = {"epoch": "Epoch", "loss": "Loss", "accuracy": "Accuracy",
                  "top5": "Top-5", "val_loss": "Val. loss", "val_accuracy": "Val. accuracy",
                  "val_top5": "Val. top-5", "learning_rate": "Learning rate",
                  "epoch_time_s": "Time (s)"}


def history_section(history):
    known = [c for c in HISTORY_LABELS if c in history]
    columns = known + [c for c in history.columns if c not in known]
    best = (history["val_loss"].idxmin() if "val_loss" in history
            and history["val_loss"].notna().any() else None)
    rows = []
    for _, row in history.iterrows():
        cells = []
        for column in columns:
            value = row[column]
            if column == "epoch":
                cells.append(int(value) + 1)
            elif "accuracy" in column or "top5" in column:
                cells.append(pct(value))
            elif column == "epoch_time_s":
                cells.append(f"{value:.1f}")
            else:
                cells.append(f"{value:.4g}")
        rows.append(cells)
    classes = ["best" if i == best else "" for i in range(len(rows))]
    note = ("<p>The highlighted epoch has the lowest validation loss (the saved model).</p>"
            if best is not None else "")
    return note + table([HISTORY_LABELS.get(c, c) for c in columns], rows, cls="history",
                        row_classes=classes)


def metrics_section(m):
    cards = [("Top-1 accuracy", pct(m["accuracy"])), ("Top-5 accuracy", pct(m["top5_accuracy"])),
             ("Superclass accuracy", pct(m["superclass_accuracy"])),
             ("Test loss", f"{m['loss']:.4f}"), ("Test images", f"{m['images']:,}")]
    html_cards = "".join(f'<div class="card"><div class="value">{esc(v)}</div>'
                         f'<div class="label">{esc(k)}</div></div>' for k, v in cards)
    body = f'<div class="metric-cards">{html_cards}</div>'
    if "tta" in m:
        tta = m["tta"]
        body += "<h3>With test-time augmentation (average with the mirrored image)</h3>"
        body += table(["Top-1", "Top-5", "Superclass", "Loss"],
                      [[pct(tta["accuracy"]), pct(tta["top5_accuracy"]),
                        pct(tta["superclass_accuracy"]), f"{tta['loss']:.4f}"]])
    return body + ("<p>Superclass accuracy counts a prediction as right when its class lies "
                   "in the true image's superclass (e.g. any of the five flowers for a "
                   "tulip).</p>")


def per_class_section(rows):
    cells = []
    for rank, r in enumerate(rows, 1):
        bar = Raw(f'<span style="width:{r["f1"] * 100:.1f}%"></span><b>{r["f1"]:.3f}</b>')
        cells.append([rank, r["name"], r["superclass"], f"{r['precision']:.3f}",
                      f"{r['recall']:.3f}", bar, r["support"]])
    return ("<p>All classes, worst F1 first. Precision: of the images predicted as the "
            "class, the share that are; recall: of the class's images, the share found.</p>"
            + table(["#", "Class", "Superclass", "Precision", "Recall", "F1", "Test images"],
                    cells, cls="per-class", column_classes={1: "text", 2: "text", 5: "bar"}))


def superclass_section(cm, coarse_names):
    n = len(coarse_names)
    head = ('<th class="text">True \\ predicted</th>'
            + "".join(f'<th class="col">{esc(name)}</th>' for name in coarse_names)
            + '<th class="col">Recall</th>')
    body = []
    for i in range(n):
        total = cm[i].sum()
        cells = []
        for j in range(n):
            share = cm[i, j] / total if total else 0.0
            color = "#fff" if share > 0.55 else "#1d2330"
            diag = " diag" if i == j else ""
            cells.append(f'<td class="cell{diag}" title="{esc(coarse_names[i])} \u2192 '
                         f'{esc(coarse_names[j])}: {cm[i, j]}" style="background:'
                         f'rgba(31,119,180,{share:.3f});color:{color}">{cm[i, j] or ""}</td>')
        recall = pct(cm[i, i] / total) if total else "\u2014"
        body.append(f'<tr><th class="text">{esc(coarse_names[i])}</th>{"".join(cells)}'
                    f"<td>{recall}</td></tr>")
    return ("<p>Rows: the true superclass; columns: the superclass of the predicted class. "
            "The shade is the share of the row.</p>"
            f'<table class="matrix" id="superclass-matrix"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table>')


def pairs_section(pairs, names, fine_to_coarse):
    if not pairs:
        return "<p>No test image was confused with another class.</p>"
    rows = [[rank, f"{names[a]} \u2194 {names[b]}", ab, ba, ab + ba,
             "yes" if fine_to_coarse[a] == fine_to_coarse[b] else "no"]
            for rank, (a, b, ab, ba) in enumerate(pairs, 1)]
    return ("<p>Mistakes between two classes, both directions summed: \u201cA \u2192 B\u201d "
            "counts test images of A predicted as B.</p>"
            + table(["#", "Pair (A \u2194 B)", "A \u2192 B", "B \u2192 A", "Total",
                     "Same superclass"], rows, cls="pairs", column_classes={1: "text"}))


def own_images_section(own, skipped):
    parts, left = [], {1: "text"}
    for r in own:
        rows = [[rank, cls, pct(p)] for rank, (cls, p) in enumerate(r["top"], 1)]
        verdict = ""
        if r["expected"]:
            classes = [c for c, _ in r["top"]]
            hit = ("first" if classes[0] == r["expected"] else "in the top five"
                   if r["expected"] in classes else "not in the top five")
            mark = "bad" if hit == "not in the top five" else "ok"
            verdict = (f'<p>The file name suggests <b>{esc(r["expected"])}</b>: '
                       f'<span class="{mark}">{esc(hit)}</span>.</p>')
        parts.append(f'<div class="own"><h3>{esc(r["name"])}</h3>{verdict}'
                     f'<div class="own-body">{figure(r["chart"], r["name"] + " top-5")}'
                     f'<div>{table(["Rank", "Class", "Probability"], rows, column_classes=left)}'
                     "</div></div></div>")
    if skipped:
        items = "".join(f"<li>{esc(name)}: {esc(why)}</li>" for name, why in skipped)
        parts.append(f'<div class="note">Not recognised:<ul>{items}</ul></div>')
    return "".join(parts) or "<p>No own images were given.</p>"


def render(ctx):
    """The whole page as a string."""
    body = {
        "summary": '<div class="summary">' + "".join(
            f"<p>{esc(s)}</p>" for s in summary_sentences(ctx)) + "</div>",
        "settings": settings_section(ctx),
        "history": history_section(ctx["history"]),
        "curves": figure(ctx["figures"]["training_curves.png"], "training curves",
                         "Loss and accuracy per epoch, training and validation."),
        "metrics": metrics_section(ctx["metrics"]),
        "per-class": per_class_section(ctx["per_class"]),
        "confusion": figure(ctx["figures"]["confusion_matrix.png"], "confusion matrix",
                            "Rows: true class; columns: predicted class."),
        "superclass": superclass_section(ctx["superclass"], ctx["coarse_names"]),
        "pairs": pairs_section(ctx["pairs"], ctx["names"], ctx["fine_to_coarse"]),
        "samples": figure(ctx["figures"]["test_samples.png"], "random test images",
                          "Random test images: green titles are right, red ones wrong."),
        "own-images": own_images_section(ctx["own"], ctx["skipped"]),
    }
    toc = "".join(f'<li><a href="#{anchor}">{esc(title)}</a></li>'
                  for anchor, title in SECTIONS)
    sections = "".join(f'<section id="{anchor}"><h2>{esc(title)}</h2>{body[anchor]}</section>'
                       for anchor, title in SECTIONS)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>CIFAR-100 lab report</title><style>{CSS}</style></head><body><main>"
            "<h1>CIFAR-100 image recognition: lab report</h1>"
            f'<p class="meta">Generated {esc(ctx["generated_at"])} from {esc(ctx["out"])}</p>'
            f"<nav><ol>{toc}</ol></nav>{sections}</main></body></html>\n")


def local_time(timestamp):
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(timestamp))


def main(argv=None):
    from network.model_utils import load_class_names

    args = parse_args(argv)
    cli.setup_matplotlib(args.show)
    out = args.output_dir
    history, summary = load_training_run(out)

    evaluate = "--refresh" if args.refresh else evaluation_needed(args)
    if evaluate:
        run_evaluation(args, evaluate)
    readable, skipped = requested_images(args)
    # predictions.csv does not name its model: a model evaluated anew is recognised anew.
    recognise = evaluate or recognition_needed(args, readable)
    if recognise:
        run_recognition(args, recognise)

    metrics = read_json(out / "metrics.json", "run again with --refresh")
    classes = load_class_names(args.model_path)
    names = classes["fine_label_names"]
    coarse_names, fine_to_coarse = classes.get("coarse_label_names"), classes.get("fine_to_coarse")
    if not isinstance(coarse_names, list) or not isinstance(fine_to_coarse, list):
        raise LabError(f"the class names beside {args.model_path} lack the superclasses: "
                       "train again")
    fine_to_coarse = np.asarray(fine_to_coarse)
    y_true, y_pred = read_test_predictions(out, int(metrics["images"]), len(names))
    own = own_image_results(args, names)
    ctx = {
        "out": out, "model_path": args.model_path, "history": history, "summary": summary,
        "metrics": metrics, "names": names, "coarse_names": coarse_names,
        "fine_to_coarse": fine_to_coarse,
        "per_class": per_class_rows(out / "classification_report.csv", names,
                                    fine_to_coarse, coarse_names),
        "superclass": superclass_matrix(y_true, y_pred, fine_to_coarse, len(coarse_names)),
        "pairs": most_confused_pairs(confusion_counts(y_true, y_pred, len(names))),
        "figures": {name: read_png(out / name) for name in
                    ("training_curves.png", "confusion_matrix.png", "test_samples.png")},
        "own": own, "skipped": skipped,
        "trained_at": local_time((out / "train_summary.json").stat().st_mtime),
        "generated_at": local_time(time.time()),
    }
    path = out / REPORT_NAME
    cli.write_text_atomic(path, render(ctx))
    print(f"Report written to {path} (open it in any browser)")
    return 0


if __name__ == "__main__":
    cli.run_main(main)
