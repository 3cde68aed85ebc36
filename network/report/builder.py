"""The lab report's sections, in the order of the manual's report requirements.

1. The procedure (the commands run) and the initial data (settings, hardware);
2. training: the log, the results per epoch, the curves;
3. evaluation: overall accuracy and loss, accuracy per class, 16 random test
   images, then further analyses (confusion, calibration, confident mistakes);
4. recognition of your own images: the program's output and each image's chart;
5. conclusions: a draft written from the measured figures, to be edited;
appendices: the model's summary and the whole training log (section 2.1 shows
an excerpt: its start and its first and last epochs).

``build_report(run, words, names)`` turns what make_report read from the
output folder (``run``, a dict) into a ``document.Report``; every sentence
comes from the catalogue (``words``) and every number from the files.

Usage:

    from network.report.builder import build_report
    report = build_report(run, Words("uk"), ClassNames("uk"))
"""

from network.report.conclusions import conclusions
from network.report.document import (
    Cards,
    Cell,
    Details,
    Figure,
    Group,
    Items,
    Para,
    Pre,
    Report,
    Row,
    Section,
    Table,
    runs,
)

TOP_CLASSES = 10            # the best and worst classes highlighted in the per-class table
CLASS_COLUMNS = 3           # the per-class table's classes side by side, to fit one page
MIN_OWN, MAX_OWN = 5, 10    # the manual asks for 5-10 own images of different classes
EXCERPT_EPOCHS = 2          # epochs shown at each end of the training log's excerpt
SUMMARY_START, SUMMARY_END = 'Model: "', " Non-trainable params"   # Keras's model.summary()
EPOCH_LINE = "Epoch "
# Settings that apply to one network or optimizer only, and internal timings.
ONLY_FOR = {"width": ("network", "resnet9"), "crop_padding": ("network", "resnet9"),
            "stem_stride": ("network", "resnet9"), "bn_momentum": ("network", "resnet9"),
            "whiten": ("network", "resnet9"), "warmup_epochs": ("optimizer", "adamw"),
            "weight_decay": ("optimizer", "adamw")}
# Settings shown only when the one named is on (not 0): progressive resizing's share.
ONLY_WITH = {"low_res_share": "low_res"}
HIDDEN_SETTINGS = {"seconds_before_fit", "precision", "mixed_precision", "planned_epoch_s",
                   "model_path", "output_dir", "rungs"}
# history.csv's known columns in display order; any others follow.
HISTORY_COLUMNS = ("epoch", "loss", "accuracy", "top5", "val_loss", "val_accuracy", "val_top5",
                   "learning_rate", "epoch_time_s")


def build_report(run, w, names):
    sections = [procedure(run, w), training(run, w), evaluation(run, w, names),
                own_images(run, w, names), conclusions_section(run, w, names),
                *appendices(run, w)]
    number_captions(sections, w)
    return Report(lang=w.lang, title=w("report.title"), title_block=title_block(run, w),
                  contents_label=w("report.contents"),
                  meta=w("report.meta", folder=run["out_shown"]), sections=sections)


def number_captions(sections, w):
    """Number the figures and the captioned tables in reading order ("Figure 3. ...")."""
    counts = {"figure": 0, "table": 0}

    def walk(blocks):
        for block in blocks:
            if block.kind in counts and block.caption:
                counts[block.kind] += 1
                block.caption = w(f"caption.{block.kind}", number=counts[block.kind],
                                  caption=block.caption)
            elif block.kind == "group":
                walk(block.blocks)

    def visit(section):
        walk(section.blocks)
        for child in section.children:
            visit(child)

    for section in sections:
        visit(section)


def title_block(run, w):
    """The title page: the university and department, the manual's title, topic, who did
    it, who checks it, the aim, and the city and year at the foot. Names not given stay
    blank lines to fill in by hand; the year is the training run's (else this one)."""
    blank = "_" * 24
    student = " ".join(filter(None, [run["group"] and w("title.group", group=run["group"]),
                                     run["student"]])) or blank
    return {"institution": [run["university"] or blank, run["department"] or blank],
            "heading": w("title.lab_work"),
            "topic": w("title.topic", topic=run["topic"] or w("title.default_topic")),
            "rows": [(w("title.done_by"), student),
                     (w("title.checked_by"), run["teacher"] or blank)],
            "aim_label": w("title.aim"), "aim": run["aim"] or w("title.default_aim"),
            "place": " \u2013 ".join(filter(None, [run["city"], str(run["year"])]))}


# --- 1. Procedure ------------------------------------------------------------------------

def procedure(run, w):
    steps = []
    for script, key in (("train_model", "procedure.train"),
                        ("evaluate_model", "procedure.evaluate"),
                        ("test_model", "procedure.recognise"),
                        ("make_report", "procedure.report")):
        command = run["commands"].get(script) or f"python -m network.{script}"
        steps.append(runs(w(key) + " ", (command, "code")))
    data = [w("procedure.data", test=w.int(run["metrics"]["images"]))]
    if run["training"]:
        summary = run["training"]["summary"]
        data.append(w("procedure.data_train", train=w.int(summary.get("train_images", 0)),
                      val=w.int(summary.get("val_images", 0))))
    blocks = [Para.of(w("procedure.intro")), Items([runs(" ".join(data))] + steps, ordered=True)]
    return Section("procedure", w("procedure.title"), blocks, [initial_data(run, w)])


def initial_data(run, w):
    if not run["training"]:
        return Section("settings", w("settings.title"), [missing_training(run, w)])
    summary = run["training"]["summary"]
    finished = run["training"]["finished_at"]
    facts = [("run.trained", local_time(finished) if finished else w("run.trained_unknown")),
             ("run.network", run["training"]["settings"].get("network")),
             ("run.parameters", summary.get("parameters")),
             ("run.epochs", summary.get("epochs_run")),
             ("run.train_images", summary.get("train_images")),
             ("run.val_images", summary.get("val_images")),
             ("run.time", w.duration(summary["train_seconds"])
              if "train_seconds" in summary else None),
             ("run.model", run["model_shown"])]
    hardware = [(f"hardware.{k}", v) for k, v in summary.get("hardware", {}).items()]
    settings = [(f"setting.{k}", v) for k, v in applicable_settings(summary)]
    blocks = [key_values(facts + hardware, w, "run"), key_values(settings, w, "settings")]
    if run["other_model"]:
        blocks.insert(0, Para.of(w("settings.other_model", trained=run["other_model"],
                                   evaluated=run["model_shown"]), style="note"))
    return Section("settings", w("settings.title"), [Para.of(w("settings.intro"))] + blocks)


def local_time(moment):
    """``2025-03-14 16:05 (UTC+02:00)``: the time where training ran, with its offset."""
    offset = moment.strftime("%z")
    return f"{moment:%Y-%m-%d %H:%M} (UTC{offset[:3]}:{offset[3:5]})"


def flatten_settings(settings):
    """train_summary.json's settings as one flat dict: a nested recipe's fields join the
    run's, its name as "recipe"."""
    flat = {}
    for key, value in (settings or {}).items():
        if isinstance(value, dict):
            flat.update({key if k == "name" else k: v for k, v in value.items()})
        else:
            flat[key] = value
    return flat


def applicable_settings(summary):
    """The settings that apply to this run: no ResNet fields for the lab CNN, no AdamW
    fields for Adam, nothing empty, off, internal or nested."""
    settings = flatten_settings(summary.get("settings"))
    shown = []
    for key, value in settings.items():
        needs = ONLY_FOR.get(key)
        if (value is None or value is False or value in ("", []) or key in HIDDEN_SETTINGS
                or isinstance(value, dict) or (isinstance(value, (list, tuple))
                                               and any(isinstance(v, dict) for v in value))
                or (needs and settings.get(needs[0]) != needs[1])
                or (key in ("label_smoothing", "low_res") and not value)
                or (key in ONLY_WITH and not settings.get(ONLY_WITH[key]))
                or (key == "replicas" and value == 1)):
            continue
        shown.append((key, value))
    return shown


def key_values(pairs, w, cls):
    def label(key):
        return w(key) if w.has(key) else key.split(".", 1)[1].replace("_", " ").capitalize()

    rows = [Row([Cell(w.value(value), "text")], head=label(key))
            for key, value in pairs if value not in (None, [], "")]
    return Table(None, rows, cls=f"kv {cls}")


def missing_training(run, w):
    return Para.of(w("training.missing", folder=run["out_shown"],
                     files=", ".join(run["training_missing"])), style="note")


# --- 2. Training -------------------------------------------------------------------------

def training(run, w):
    blocks = [Para.of(w("training.intro"))]
    if not run["training"]:
        return Section("training", w("training.title"), blocks + [missing_training(run, w)])
    children = [Section("log", w("log.title"), [training_log_excerpt(run, w)]),
                Section("history", w("history.title"), history_blocks(run["training"], w)),
                Section("curves", w("curves.title"), [curves_figure(run, w)])]
    return Section("training", w("training.title"), blocks, children)


def console(run, w, script):
    """A script's saved console output, or how to get it."""
    text = run["logs"].get(script)
    if text is None:
        return Para.of(w("log.missing", script=script, log=f"logs/{script}.log"), style="note")
    return Pre(text, w("log.caption", log=f"logs/{script}.log"))


def split_training_log(text):
    """(model summary or None, the log with the summary left out, epoch blocks' line ranges)
    of train_model's console output."""
    lines = text.split("\n")
    start = next((i for i, line in enumerate(lines) if line.startswith(SUMMARY_START)), None)
    end = next((i for i, line in enumerate(lines) if line.startswith(SUMMARY_END)), None)
    summary = None
    if start is not None and end is not None and end >= start:
        summary = "\n".join(lines[start:end + 1])
        lines = lines[:start] + [None] + lines[end + 1:]    # None: where the summary was
    epochs = [i for i, line in enumerate(lines) if line and line.startswith(EPOCH_LINE)]
    return summary, lines, epochs


def training_log_excerpt(run, w):
    """The training log's start and its first and last epochs; the whole log and the
    model summary are in the appendices."""
    text = run["logs"].get("train_model")
    if text is None:
        return console(run, w, "train_model")
    _, lines, epochs = split_training_log(text)
    marks = {None: w("log.summary_moved")}
    if len(epochs) > 2 * EXCERPT_EPOCHS:
        first_cut, last_kept = epochs[EXCERPT_EPOCHS], epochs[-EXCERPT_EPOCHS]
        skipped = len(epochs) - 2 * EXCERPT_EPOCHS
        lines = (lines[:first_cut] + [w("log.epochs_left_out", count=skipped)]
                 + lines[last_kept:])
    shown = "\n".join(marks.get(line, line) for line in lines)
    return Pre(shown, w("log.excerpt_caption", log="logs/train_model.log"))


def appendices(run, w):
    """The model's summary and the whole training log, at the end where they do not
    interrupt the report."""
    text = run["logs"].get("train_model") if run["training"] else None
    if text is None:
        return []
    summary, lines, _ = split_training_log(text)
    full = "\n".join(w("log.summary_moved") if line is None else line for line in lines)
    sections = []
    if summary:
        sections.append(Section("model-summary", w("appendix_a.title"),
                                [Para.of(w("appendix_a.intro")), Pre(summary)]))
    sections.append(Section("full-log", w("appendix_b.title"),
                            [Pre(full, w("log.caption", log="logs/train_model.log"))]))
    return sections


def history_blocks(training, w):
    history, summary, settings = training["history"], training["summary"], training["settings"]
    epochs = summary.get("epochs_run", len(history))
    limit = settings.get("epochs")
    words = [w("history.ran", count=epochs, recipe=settings.get("recipe", "?"),
               images=w.int(summary.get("train_images", 0)))]
    if limit and epochs < limit:
        words.append(w("history.stopped_early", limit=limit))
    if "train_seconds" in summary:
        words.append(w("history.time", time=w.duration(summary["train_seconds"])))
    best = training["best"]
    if best is not None:
        row = history.loc[best]
        words.append(w("history.lowest", epoch=int(row["epoch"]),
                       loss=w.num(row["val_loss"], 4)))
    note = "history.saved_best" if training["early_stopping"] and best is not None \
        else "history.saved_last"
    return [Para.of(" ".join(words)), Para.of(w(note)), history_table(training, w)]


def history_table(training, w):
    history = training["history"]
    columns = [c for c in HISTORY_COLUMNS if c in history.columns]
    columns += [c for c in history.columns if c not in columns]

    def cell(column, value):
        if column == "epoch":
            return w.int(value)
        if "accuracy" in column or "top5" in column:
            return w.pct(value)
        if column == "epoch_time_s":
            return w.num(value, 1)
        return w.value(float(f"{value:.4g}"))

    head = [Cell(w(f"history.{c}") if w.has(f"history.{c}") else c) for c in columns]
    rows = [Row([Cell(cell(c, record[c])) for c in columns],
                "best" if i == training["saved"] else "")
            for i, record in enumerate(history.to_dict("records"))]
    return Table(head, rows, cls="history")


def curves_figure(run, w):
    figure = run["figures"]["training_curves"]
    caption = w("curves.caption" if run["training"]["best"] is not None
                else "curves.caption_no_validation")
    return Figure(figure["png"], w("curves.alt"), caption, figure["width_cm"])


# --- 3. Evaluation -----------------------------------------------------------------------

def evaluation(run, w, names):
    children = [Section("metrics", w("metrics.title"), metrics_blocks(run, w)),
                Section("per-class", w("per_class.title"), per_class_blocks(run, w, names)),
                Section("samples", w("samples.title"), [
                    figure(run, "test_samples", w("samples.alt"), w("samples.caption"))]),
                Section("confusion", w("confusion.title"), confusion_blocks(run, w)),
                Section("superclass", w("superclass.title"),
                        [Para.of(w("superclass.intro")), superclass_table(run, w, names)]),
                Section("pairs", w("pairs.title"), pairs_blocks(run, w, names)),
                Section("mistakes", w("mistakes.title"), [
                    Para.of(mistakes_sentence(run["metrics"]["confident_mistakes"], w)),
                    figure(run, "confident_mistakes", w("mistakes.alt"), w("mistakes.caption"))]),
                Section("calibration", w("calibration.title"), calibration_blocks(run, w))]
    return Section("evaluation", w("evaluation.title"), [Para.of(w("evaluation.intro"))],
                   children)


def figure(run, name, alt, caption):
    shown = run["figures"][name]
    return Figure(shown["png"], alt, caption, shown["width_cm"])


def metrics_blocks(run, w):
    m = run["metrics"]
    cards = Cards([(w.pct(m["accuracy"]), w("metrics.accuracy")),
                   (w.num(m["loss"], 4), w("metrics.loss")),
                   (w.pct(m["top5_accuracy"]), w("metrics.top5")),
                   (w.pct(m["superclass_accuracy"]), w("metrics.superclass")),
                   (w.int(m["images"]), w("metrics.images"))])
    blocks = [cards, Para.of(w("metrics.manual", accuracy=w.pct(run["manual"]["accuracy"], 2),
                                loss=w.num(run["manual"]["loss"], 2))),
              Para.of(w("metrics.superclass_note"))]
    if "tta" in m:
        tta = m["tta"]
        head = [Cell(w(k)) for k in ("metrics.top1", "metrics.top5", "metrics.superclass",
                                     "metrics.loss")]
        row = Row([Cell(w.pct(tta["accuracy"])), Cell(w.pct(tta["top5_accuracy"])),
                   Cell(w.pct(tta["superclass_accuracy"])), Cell(w.num(tta["loss"], 4))])
        blocks.append(Table(head, [row], cls="tta", caption=w("metrics.tta")))
    return blocks + [console(run, w, "evaluate_model")]


def per_class_blocks(run, w, names):
    """Every class's accuracy (its share of test images recognised) in one compact
    table, best first, the best and worst TOP_CLASSES highlighted; precision, recall
    and F1 of each class on request (collapsed on the page)."""
    rows = run["per_class"]            # worst F1 first
    return [Para.of(w("per_class.intro", count=len(rows), top=TOP_CLASSES)),
            accuracy_table(rows, w, names),
            Details(w("per_class.details", count=len(rows)),
                    [class_table(rows, w, names, "per-class", "")])]


def accuracy_table(rows, w, names):
    """The classes by accuracy, read down CLASS_COLUMNS side-by-side columns."""
    scored = sorted((r for r in rows if r["support"]), key=lambda r: (-r["recall"], r["name"]))
    marked = {id(r): "top" for r in scored[:TOP_CLASSES]}
    marked.update({id(r): "bottom" for r in scored[-TOP_CLASSES:]}
                  if len(scored) > 2 * TOP_CLASSES else {})
    height = -(-len(scored) // CLASS_COLUMNS)
    head = [Cell("#"), Cell(w("per_class.class"), "text"), Cell(w("per_class.accuracy"))]
    body = []
    for line in range(height):
        cells = []
        for column in range(CLASS_COLUMNS):
            i = column * height + line
            if i >= len(scored):
                cells += [Cell(""), Cell("", "text"), Cell("")]
                continue
            r, mark = scored[i], marked.get(id(scored[i]), "")
            cells += [Cell(str(i + 1), mark), Cell(names.show(r["name"]), f"text {mark}".strip()),
                      Cell(w.pct(r["recall"], 0), mark)]
        body.append(Row(cells))
    return Table(head * CLASS_COLUMNS, body, cls="accuracy",
                 caption=w("per_class.caption", count=len(scored)))


def class_table(rows, w, names, cls, caption):
    head = [Cell("#"), Cell(w("per_class.class"), "text"), Cell(w("per_class.superclass"), "text"),
            Cell(w("per_class.precision")), Cell(w("per_class.recall")), Cell("F1"),
            Cell(w("per_class.images"))]
    body = [Row([Cell(str(i)), Cell(names.with_official(r["name"]), "text"),
                 Cell(names.show(r["superclass"]), "text"), Cell(w.num(r["precision"], 3)),
                 Cell(w.num(r["recall"], 3)), Cell(w.num(r["f1"], 3), "bar", bar=r["f1"]),
                 Cell(str(r["support"]))])
            for i, r in enumerate(rows, 1)]
    return Table(head, body, cls=cls, caption=caption)


def confusion_blocks(run, w):
    parts = run["figures"]["confusion_parts"]
    blocks = [Para.of(w("confusion.intro"))]
    for i, part in enumerate(parts, 1):
        caption = w("confusion.caption", part=i, parts=len(parts))
        blocks.append(Figure(part["png"], w("confusion.alt"), caption, part["width_cm"]))
    return blocks


def superclass_table(run, w, names):
    coarse = [names.show(c) for c in run["coarse_names"]]
    head = ([Cell(w("superclass.corner"), "text")] + [Cell(c, "col") for c in coarse]
            + [Cell(w("superclass.recall"), "col")])
    rows = []
    for i, row in enumerate(run["superclass"]):
        total = row.sum()
        cells = [Cell(str(count or ""), "cell diag" if j == i else "cell",
                      shade=count / total if total else 0.0,
                      title=f"{coarse[i]} \u2192 {coarse[j]}: {count}")
                 for j, count in enumerate(row)]
        cells.append(Cell(w.pct(row[i] / total) if total else "\u2014"))
        rows.append(Row(cells, head=coarse[i]))
    return Table(head, rows, cls="matrix", id="superclass-matrix")


def pairs_blocks(run, w, names):
    if not run["pairs"]:
        return [Para.of(w("pairs.none"))]
    head = [Cell("#"), Cell(w("pairs.pair"), "text"), Cell(w("pairs.a_to_b")),
            Cell(w("pairs.b_to_a")), Cell(w("pairs.total")), Cell(w("pairs.same"), "text")]
    rows = [Row([Cell(str(i)), Cell(f"{names.with_official(a)} \u2194 {names.with_official(b)}",
                                    "text"),
                 Cell(str(ab)), Cell(str(ba)), Cell(str(ab + ba)),
                 Cell(w("word.yes" if same else "word.no"), "text")])
            for i, (a, b, ab, ba, same) in enumerate(run["pairs"], 1)]
    return [Para.of(w("pairs.intro")), Table(head, rows, cls="pairs")]


def mistakes_sentence(summary, w):
    if not summary["mistakes"]:
        return w("mistakes.none")
    return w("mistakes.sentence", same=summary["same_superclass"], count=summary["mistakes"],
             share=w.pct(summary["same_superclass_share"], 0),
             chance=w.pct(summary["chance_share"], 0))


def calibration_blocks(run, w):
    cal = run["metrics"]["calibration"]
    fitted = w("calibration.fitted_held_out") if "held-out" in str(cal.get("fitted_on")) \
        else w("calibration.fitted_test")
    text = w("calibration.text", before=w.pct(cal["ece"]), after=w.pct(cal["ece_calibrated"]),
             temperature=w.num(cal["temperature"], 2), fitted=fitted)
    return [Para.of(text), figure(run, "reliability_diagram", w("calibration.alt"),
                                  w("calibration.caption"))]


# --- 4. Own images -----------------------------------------------------------------------

def own_images(run, w, names):
    own = run["own"]                   # distinct photos; each names its copies
    copies = sum(len(r["copies"]) for r in own)
    classes = len({r["top"][0][0] for r in own})
    words = [w("own.intro", count=len(own))]
    if copies:
        words.append(w("own.copies", count=copies))
    words.append(w("own.manual", low=MIN_OWN, high=MAX_OWN))
    shortfalls = ([w("own.too_few_photos", count=len(own))] if len(own) < MIN_OWN else []) + \
        ([w("own.too_few_classes", count=classes)] if own and classes < MIN_OWN else [])
    if len(own) > MAX_OWN:
        shortfalls.append(w("own.too_many", count=len(own)))
    blocks = [Para.of(" ".join(words))]
    if shortfalls:
        blocks.append(Para.of(" ".join(shortfalls) + " " + w("own.advice"), style="note"))
    if own:
        blocks.append(Para.of(w("own.explained")))
    if run["skipped"]:
        skipped = Items([runs(f"{name}: {why}") for name, why in run["skipped"]])
        blocks.append(Group(w("own.skipped"), [skipped], cls="note", heading=False))
    blocks.append(console(run, w, "test_model"))
    for r in own:
        blocks.append(Group(r["name"], own_image_blocks(r, w, names), cls="own"))
    if not own:
        blocks.append(Para.of(w("own.none")))
    return Section("own-images", w("own.title"), blocks)


def own_image_blocks(r, w, names):
    blocks = []
    if r["copies"]:
        blocks.append(Para.of(w("own.same_photo", count=len(r["copies"]),
                                files=", ".join(r["copies"]))))
    if r["expected"]:
        verdict = (("own.first", "ok") if r["rank"] == 1 else ("own.ranked", "ok") if r["rank"]
                   else ("own.missed", "bad"))
        blocks.append(Para(runs(w("own.file_suggests") + " ", (names.show(r["expected"]), "b"),
                                ": ", (w(verdict[0], rank=r["rank"]), verdict[1]))))
    blocks.append(Figure(r["chart"], w("own.alt", name=r["name"]),
                         w("own.caption", name=r["name"]), r["width_cm"]))
    # Across the page, one column per rank: five classes in three short rows.
    head = [Cell(w("own.rank"), "text")] + [Cell(str(i), "text") for i in range(1, 6)]
    rows = [Row([Cell(names.with_official(name), "text") for name, _ in r["top"]],
                head=w("per_class.class")),
            Row([Cell(w.pct(p), "text") for _, p in r["top"]], head=w("own.probability"))]
    blocks.append(Table(head[:len(r["top"]) + 1], rows, cls="top5"))
    return blocks


# --- 5. Conclusions ----------------------------------------------------------------------

def conclusions_section(run, w, names):
    paragraphs = [Para.of(text) for text in conclusions(run, w, names)]
    return Section("conclusions", w("conclusions.title"),
                   [Para.of(w("conclusions.draft"), style="draft"),
                    Group("", paragraphs, cls="summary", heading=False)])

