"""The one-command lab report: network.make_report writes one self-contained HTML page."""

import argparse
import base64
import contextlib
import io
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from conftest import assert_clean_error, run_cli, sample_photos
from network import PROJECT_ROOT, make_report
from network.analysis import metrics
from network.core import cli
from network.core.errors import LabError
from network.report import gather, refresh

# The tests that run the scripts share one report (one worker) and are slow; the pure
# unit tests below them are not.
pytestmark = pytest.mark.xdist_group("make_report")

# The manual's report requirements, in its order: procedure, training (log, results, curves),
# evaluation (accuracy and loss, per class, 16 random images; then further analyses), own
# images, conclusions.
HEADINGS = ["1. Procedure", "2. Training the network", "3. Evaluating the network",
            "4. Testing the network on own images", "5. Conclusions"]
SUBHEADINGS = ["1.1 Initial data: settings and hardware", "2.1 Training log",
               "2.2 Training results", "2.3 Training curves", "3.1 Overall accuracy and loss",
               "3.2 Accuracy per class", "3.3 16 random test images",
               "3.4 Further: confusion matrix", "3.5 Further: superclass confusion matrix",
               "3.6 Further: most confused class pairs", "3.7 Further: most confident mistakes",
               "3.8 Further: can the probabilities be trusted?"]
ANCHORS = ["procedure", "settings", "training", "log", "history", "curves", "evaluation",
           "metrics", "per-class", "samples", "confusion", "superclass", "pairs", "mistakes",
           "calibration", "own-images", "conclusions"]
# After the conclusions: the model's summary and the whole training log.
APPENDICES = ["Appendix A. The network's layers", "Appendix B. The whole training log"]
APPENDIX_ANCHORS = ["model-summary", "full-log"]
EVALUATION_OUTPUTS = ["metrics.json", "classification_report.csv", "confusion_matrix.png",
                      "test_samples.png", "confident_mistakes.png", "reliability_diagram.png"]
VOID_TAGS = {"meta", "img", "br", "hr", "link", "input"}


# --- A small HTML tree, enough to query the report ------------------------------------

class Node:
    def __init__(self, tag, attrs):
        self.tag, self.attrs, self.children, self.text = tag, dict(attrs), [], ""

    def find_all(self, tag, **attrs):
        found = []
        for child in self.children:
            if child.tag == tag and all(attrs[k] in child.attrs.get(k, "").split()
                                        for k in attrs):
                found.append(child)
            found.extend(child.find_all(tag, **attrs))
        return found

    def find(self, tag, **attrs):
        found = self.find_all(tag, **attrs)
        assert found, f"no <{tag} {attrs}> in the report"
        return found[0]

    def all_text(self):
        return self.text + "".join(child.all_text() for child in self.children)


class TreeBuilder(HTMLParser):
    """Builds a Node tree and checks that every opened tag is closed in order."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = Node("root", [])
        self.stack = [self.root]

    def handle_starttag(self, tag, attrs):
        node = Node(tag, attrs)
        self.stack[-1].children.append(node)
        if tag not in VOID_TAGS:
            self.stack.append(node)

    def handle_endtag(self, tag):
        assert self.stack[-1].tag == tag, f"</{tag}> closes <{self.stack[-1].tag}>"
        self.stack.pop()

    def handle_data(self, data):
        self.stack[-1].text += data


def parse(text):
    builder = TreeBuilder()
    builder.feed(text)
    builder.close()
    assert builder.stack == [builder.root], "unclosed tags in the report"
    return builder.root


def body_rows(table):
    return table.find("tbody").find_all("tr")


# --- Fixtures --------------------------------------------------------------------------

def write_images(folder):
    """Two readable photos (one with HTML-like characters in its name) and a broken one."""
    from PIL import Image

    folder.mkdir()
    gradient = np.linspace(0, 255, 64 * 64 * 3).reshape(64, 64, 3).astype(np.uint8)
    Image.fromarray(gradient).save(folder / "rocket_1.png")
    Image.fromarray(gradient[::-1]).save(folder / "a&b <x>.jpg", quality=90)
    (folder / "broken.jpg").write_bytes(b"not an image at all")
    return folder


def copy_training_run(trained, folder):
    """The shared training outputs, without anything an evaluation or recognition wrote."""
    shutil.copytree(trained["reports"], folder)
    for name in EVALUATION_OUTPUTS:
        (folder / name).unlink(missing_ok=True)
    shutil.rmtree(folder / "predictions", ignore_errors=True)
    return folder


def report_args(out, images, model_path, data_dir, *extra):
    return ["--output-dir", str(out), "--images", str(images), "--model-path", str(model_path),
            "--data-dir", str(data_dir), "--allow-md5-mismatch", *extra]


@pytest.fixture(scope="module")
def report(tmp_path_factory, trained, fake_data):
    """make_report run once on a copy of the training run, with no evaluation yet."""
    base = tmp_path_factory.mktemp("report")
    out = copy_training_run(trained, base / "reports")
    images = write_images(base / "img")
    assert not (out / "metrics.json").exists()
    with contextlib.redirect_stdout(io.StringIO()) as stdout:
        code = make_report.main(report_args(out, images, trained["model_path"], fake_data))
    text = (out / "report.html").read_text(encoding="utf-8")
    return {"out": out, "images": images, "code": code, "html": text, "tree": parse(text),
            "metrics": json.loads((out / "metrics.json").read_text()),
            "stdout": stdout.getvalue()}


def report_copy(report, tmp_path):
    """A copy of the report's output folder (file times kept, so nothing looks stale)."""
    out = tmp_path / "reports"
    shutil.copytree(report["out"], out)
    return out


# --- The page -------------------------------------------------------------------------

@pytest.mark.slow
def test_runs_missing_evaluation_and_recognition(report):
    out = report["out"]
    assert report["code"] == 0
    for name in EVALUATION_OUTPUTS:
        assert (out / name).is_file(), name
    assert (out / "predictions" / "predictions.csv").is_file()
    assert (out / "predictions" / "rocket_1_top5.png").is_file()
    assert not list(out.glob(".*partial*")), "temporary file left behind"


@pytest.mark.slow
def test_every_section_heading(report):
    headings = [h.all_text() for h in report["tree"].find_all("h2")]
    assert headings == HEADINGS + APPENDICES
    assert [s.attrs["id"] for s in report["tree"].find_all("section")] == (ANCHORS
                                                                           + APPENDIX_ANCHORS)
    # Sub-sections are h3 headings of sections; an own image's title is an h3 of its block.
    subsections = [s for s in report["tree"].find_all("section") if "level-3" in s.attrs["class"]]
    assert [s.find("h3").all_text() for s in subsections] == SUBHEADINGS
    links = [a.all_text() for a in report["tree"].find("nav").find_all("a")]
    assert links == (HEADINGS[:1] + SUBHEADINGS[:1] + HEADINGS[1:2] + SUBHEADINGS[1:4]
                     + HEADINGS[2:3] + SUBHEADINGS[4:] + HEADINGS[3:] + APPENDICES)


@pytest.mark.slow
def test_figures_are_embedded_pngs(report):
    from PIL import Image

    images = report["tree"].find_all("img")
    # Training curves, confusion matrix, 16 test images, and the two readable own images.
    assert len(images) >= 5
    for img in images:
        prefix = "data:image/png;base64,"
        assert img.attrs["src"].startswith(prefix)
        data = base64.b64decode(img.attrs["src"][len(prefix):], validate=True)
        with Image.open(io.BytesIO(data)) as png:
            assert png.format == "PNG" and min(png.size) > 50


@pytest.mark.slow
def test_self_contained(report):
    text = report["html"]
    assert "http://" not in text and "https://" not in text
    assert not re.search(r"<(script|link|iframe)\b", text)
    assert "<style>" in text
    hrefs = [a.attrs.get("href", "") for a in report["tree"].find_all("a")]
    assert hrefs and all(h.startswith("#") for h in hrefs)


@pytest.mark.slow
def test_per_epoch_table(report, trained):
    import pandas as pd

    history = pd.read_csv(trained["reports"] / "history.csv")
    table = report["tree"].find("table", **{"class": "history"})
    rows = body_rows(table)
    assert len(rows) == len(history)
    cells = [td.all_text() for td in rows[0].find_all("td")]
    assert cells[0] == "1"                       # epochs are counted from 1
    headers = [th.all_text() for th in table.find_all("th")]
    assert {"Loss", "Accuracy", "Val. loss", "Val. accuracy"} <= set(headers)


@pytest.mark.slow
def test_per_class_table_worst_first(report):
    rows = body_rows(report["tree"].find("table", **{"class": "per-class"}))
    assert len(rows) == 100
    names = [row.find_all("td")[1].all_text() for row in rows]
    assert sorted(names) == [f"fine_{i:02d}" for i in range(100)]
    f1 = [float(row.find_all("td")[5].all_text()) for row in rows]
    assert f1 == sorted(f1)
    assert sum(int(row.find_all("td")[6].all_text()) for row in rows) == 200


@pytest.mark.slow
def test_superclass_matrix(report):
    rows = body_rows(report["tree"].find("table", id="superclass-matrix"))
    assert len(rows) == 20
    counts = np.array([[int(td.all_text() or 0) for td in row.find_all("td", **{"class": "cell"})]
                       for row in rows])
    assert counts.shape == (20, 20)
    assert counts.sum() == report["metrics"]["images"] == 200
    # The diagonal is the superclass accuracy that the evaluation measured.
    assert np.trace(counts) / counts.sum() == pytest.approx(
        report["metrics"]["superclass_accuracy"])


@pytest.mark.slow
def test_ten_confused_pairs(report):
    rows = body_rows(report["tree"].find("table", **{"class": "pairs"}))
    assert len(rows) == 10
    totals = []
    for row in rows:
        cells = [td.all_text() for td in row.find_all("td")]
        assert "\u2194" in cells[1]
        assert int(cells[2]) + int(cells[3]) == int(cells[4])
        assert int(cells[2]) >= int(cells[3])       # A -> B is the larger direction
        totals.append(int(cells[4]))
    assert totals == sorted(totals, reverse=True) and totals[0] > 0


@pytest.mark.slow
def test_own_images_escaped_and_unreadable_listed(report):
    text = report["html"]
    titles = [h.all_text() for h in report["tree"].find("section", id="own-images")
              .find_all("h3")]
    assert titles == ["a&b <x>.jpg", "rocket_1.png"]
    assert "a&amp;b &lt;x&gt;.jpg" in text and "<x>" not in text
    section = report["tree"].find("section", id="own-images")
    assert len(section.find_all("img")) == 2
    assert len(section.find_all("table")) == 2
    note = section.find("div", **{"class": "note"}).all_text()
    assert "broken.jpg" in note


@pytest.mark.slow
def test_summary_states_the_numbers(report):
    metrics = report["metrics"]
    summary = report["tree"].find("div", **{"class": "summary"}).all_text()
    assert f"recognises {metrics['accuracy']:.1%} of the 200 test images" in summary
    assert f"{metrics['top5_accuracy']:.1%}" in summary
    assert "most confused pair is" in summary
    assert "own images" in summary


@pytest.mark.slow
def test_terminal_shows_headline_not_tables(report):
    # The start-up line (backend, devices, precision) is printed once per process.
    lines = [line for line in report["stdout"].splitlines() if not line.startswith("Running on ")]
    assert lines[0].startswith("Evaluating ") and "metrics.json is missing" in lines[0]
    assert lines[1].startswith("Recognising the images given with --images")
    assert f"Test accuracy {report['metrics']['accuracy']:.1%}" in lines[2]
    assert lines[3].startswith("Report written to")
    assert len(lines) == 4   # no 100-row classification report, no top-5 lists
    assert "precision" not in report["stdout"] and "fine_" not in report["stdout"]


@pytest.mark.slow
def test_template_escapes_class_names(report, trained, fake_data, tmp_path, monkeypatch):
    from network import model_utils

    def names_with_markup(model_path, num_class=None):
        classes = json.loads(model_utils.class_names_path(model_path).read_text())
        classes["fine_label_names"][3] = "<script>alert(1)</script>"
        return classes

    monkeypatch.setattr(model_utils, "load_class_names", names_with_markup)
    out = report_copy(report, tmp_path)
    make_report.main(report_args(out, report["images"], trained["model_path"], fake_data))
    text = (out / "report.html").read_text(encoding="utf-8")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "<script" not in text


@pytest.mark.slow
def test_numbers_and_their_headers_align_alike(report):
    table = report["tree"].find("table", **{"class": "per-class"})
    headers = table.find("thead").find_all("th")
    cells = body_rows(table)[0].find_all("td")
    for th, td in zip(headers, cells, strict=True):
        assert ("text" in th.attrs.get("class", "")) == ("text" in td.attrs.get("class", "")), \
            th.all_text()
    assert cells[5].attrs["class"] == "bar"     # F1: a number, right-aligned like its header
    bar_rule = re.search(r"td\.bar\s*\{([^}]*)\}", report["html"]).group(1)
    assert "text-align" not in bar_rule


@pytest.mark.slow
def test_last_test_model_run_kept_without_images(report, trained, fake_data, tmp_path, capsys):
    """After test_model some/folder, the report shows that folder's images, not img/'s."""
    from network import test_model

    out = report_copy(report, tmp_path)
    folder = tmp_path / "some" / "folder"
    folder.mkdir(parents=True)
    shutil.copy2(report["images"] / "rocket_1.png", folder / "fine_03_photo.png")
    test_model.main(["--model-path", str(trained["model_path"]), "--output-dir", str(out),
                     "--no-show", str(folder)])
    before = (out / "predictions" / "predictions.csv").stat().st_mtime_ns
    capsys.readouterr()
    make_report.main(["--output-dir", str(out), "--model-path", str(trained["model_path"]),
                      "--data-dir", str(fake_data), "--allow-md5-mismatch"])
    printed = capsys.readouterr().out
    assert "Recognising" not in printed and "other images" not in printed
    assert (out / "predictions" / "predictions.csv").stat().st_mtime_ns == before
    tree = parse((out / "report.html").read_text(encoding="utf-8"))
    section = tree.find("section", id="own-images")
    assert [h.all_text() for h in section.find_all("h3")] == ["fine_03_photo.png"]
    summary = " ".join(tree.find("div", **{"class": "summary"}).all_text().split())
    assert "fine_03_photo.png is named after a class (fine_03), which the model" in summary


@pytest.mark.slow
def test_img_recognised_when_test_model_never_ran(report, trained, fake_data, tmp_path, capsys,
                                                 monkeypatch):
    """With no test_model run, the report recognises img/ (here two of its photos: each
    costs the lab CNN 170 forward passes for its heat map)."""
    from network.test_model import collect_images

    assert refresh.DEFAULT_IMAGES == PROJECT_ROOT / "img"
    photos = sample_photos(tmp_path / "img", "raccoon.jpg", "rocket.jpg")
    monkeypatch.setattr(refresh, "DEFAULT_IMAGES", photos)
    out = report_copy(report, tmp_path)
    shutil.rmtree(out / "predictions")
    make_report.main(["--output-dir", str(out), "--model-path", str(trained["model_path"]),
                      "--data-dir", str(fake_data), "--allow-md5-mismatch"])
    printed = capsys.readouterr().out
    assert "Recognising the images in img/" in printed and "does not exist yet" in printed
    tree = parse((out / "report.html").read_text(encoding="utf-8"))
    titles = [h.all_text() for h in tree.find("section", id="own-images").find_all("h3")]
    assert titles == [p.name for p in collect_images([photos])[0]] == ["raccoon.jpg", "rocket.jpg"]


@pytest.mark.slow
def test_chart_column_and_no_hits_in_words(report, trained, fake_data, tmp_path):
    """predictions.csv's chart column names each chart's data in charts.npz, from which
    the report draws its own copy; zero hits read as words."""
    import pandas as pd

    out = report_copy(report, tmp_path)
    folder = out / "predictions"
    stored = dict(np.load(folder / "charts.npz"))
    charts = {"fine_00_cat.png": "first chart.png", "fine_01_dog.png": "second chart.png"}
    rows, data = [], {}
    for (image, chart), source in zip(charts.items(), ["rocket_1_top5.png", "a&b <x>_top5.png"]):
        shutil.copy2(folder / source, folder / chart)
        for part in ("image", "heat"):
            data[f"{chart}.{part}"] = stored[f"{source}.{part}"]
        rows += [{"file": str(tmp_path / image), "rank": rank, "class": f"fine_{9 + rank}",
                  "probability": 0.2, "chart": chart} for rank in range(1, 6)]
    np.savez(folder / "charts.npz", **data)
    pd.DataFrame(rows).to_csv(folder / "predictions.csv", index=False)
    make_report.main(["--output-dir", str(out), "--model-path", str(trained["model_path"]),
                      "--data-dir", str(fake_data), "--allow-md5-mismatch"])
    tree = parse((out / "report.html").read_text(encoding="utf-8"))
    section = tree.find("section", id="own-images")
    assert [h.all_text() for h in section.find_all("h3")] == list(charts)
    assert len(section.find_all("img")) == 2
    summary = " ".join(tree.find("div", **{"class": "summary"}).all_text().split())
    assert ("Both own images are named after a class, but for none of them is that class "
            "among the model\u2019s top five.") in summary
    assert not re.search(r"\bfor 0\b", summary)


@pytest.mark.slow
def test_history_counted_from_1_without_validation(report, trained, fake_data, tmp_path):
    """A history.csv that counts from 1 and has no validation columns."""
    import pandas as pd

    out = report_copy(report, tmp_path)
    history = pd.read_csv(out / "history.csv")
    history = history.drop(columns=[c for c in history if c.startswith("val_")])
    assert history["epoch"].iloc[0] == 1  # training counts epochs from 1
    history.to_csv(out / "history.csv", index=False)
    make_report.main(report_args(out, report["images"], trained["model_path"], fake_data))
    tree = parse((out / "report.html").read_text(encoding="utf-8"))
    rows = body_rows(tree.find("table", **{"class": "history"}))
    assert [row.find_all("td")[0].all_text() for row in rows] == ["1"]
    assert not tree.find("section", id="history").find_all("tr", **{"class": "best"})
    caption = tree.find("section", id="curves").find("figcaption").all_text()
    assert "training images" in caption and "no validation" in caption
    assert "training and" not in caption
    assert "validation loss" not in tree.find("div", **{"class": "summary"}).all_text()


@pytest.mark.slow
def test_every_class_in_one_table_best_first_with_the_full_scores_collapsed(report):
    section = report["tree"].find("section", id="per-class")
    table = section.find("table", **{"class": "accuracy"})
    cells = [td for row in body_rows(table) for td in row.find_all("td")]
    entries = [(int(cells[i].all_text()), cells[i + 1].all_text(), cells[i + 2].all_text())
               for i in range(0, len(cells), 3) if cells[i].all_text()]
    assert sorted(rank for rank, _, _ in entries) == list(range(1, 101))
    assert sorted(name for _, name, _ in entries) == [f"fine_{i:02d}" for i in range(100)]
    by_rank = [float(share.rstrip("%")) for _, _, share in sorted(entries)]
    assert by_rank == sorted(by_rank, reverse=True)
    assert len([td for td in cells if "top" in td.attrs.get("class", "").split()]) == 3 * 10
    assert len([td for td in cells if "bottom" in td.attrs.get("class", "").split()]) == 3 * 10
    full = section.find("details").find("table", **{"class": "per-class"})
    assert len(body_rows(full)) == 100
    assert "CSV" not in section.all_text()


@pytest.mark.slow
def test_title_block_invents_nothing(report):
    title = report["tree"].find("header", **{"class": "title-page"})
    text = " ".join(title.all_text().split())
    assert "Lab work" in text and "CIFAR-100 image recognition with a convolutional" in text
    assert "Aim:" in text and "to write a Python program" in text
    cells = [td.all_text() for td in title.find("table").find_all("td")]
    assert cells and all(set(cell) == {"_"} for cell in cells)  # blanks to fill in by hand


@pytest.mark.slow
def test_settings_list_only_what_applies(report):
    """The lab CNN with Adam: no ResNet or AdamW fields, nothing empty or internal."""
    section = report["tree"].find("section", id="settings")
    labels = [th.all_text() for th in section.find_all("th")]
    assert {"Batch size", "Learning rate", "Early stopping patience (epochs)",
            "Network", "Parameters", "Keras version"} <= set(labels)
    for absent in ("Width multiplier", "Random crop padding (pixels)", "First layer stride",
                   "Warm-up epochs", "Weight decay", "Label smoothing", "Processor",
                   "Seconds before fit", "Precision", "Time budget (minutes)"):
        assert absent not in labels, absent
    assert "\u2014" not in section.all_text()  # no dashes standing for missing values


@pytest.mark.slow
def test_console_logs_shown_as_terminal_text(report, trained, fake_data, tmp_path):
    out = report_copy(report, tmp_path)
    tree = report["tree"]
    for section, script in (("metrics", "evaluate_model"), ("own-images", "test_model")):
        pre = tree.find("section", id=section).find("pre").all_text()
        assert pre.startswith(f"$ python -m network.{script} --model-path ")
        assert (out / "logs" / f"{script}.log").is_file()
    assert "Accuracy:" in tree.find("section", id="metrics").find("pre").all_text()
    # Training's own log, as console_log saves it; without one, the report says how to get it.
    log = out / "logs" / "train_model.log"
    log.unlink(missing_ok=True)
    make_report.main(report_args(out, report["images"], trained["model_path"], fake_data))
    section = parse((out / "report.html").read_text(encoding="utf-8")).find("section", id="log")
    assert not section.find_all("pre") and "logs/train_model.log" in section.all_text()
    log.write_text("$ python -m network.train_model --epochs 1\nEpoch 1/1\n"
                   "5/5 - 1s - 90ms/step - accuracy: 0.0100 - loss: 4.6052\n", encoding="utf-8")
    make_report.main(report_args(out, report["images"], trained["model_path"], fake_data))
    tree = parse((out / "report.html").read_text(encoding="utf-8"))
    assert tree.find("section", id="log").find("pre").all_text().splitlines()[1] == "Epoch 1/1"
    steps = [li.all_text() for li in tree.find("section", id="procedure").find("ol")
             .find_all("li")]
    assert any(step.endswith("python -m network.train_model --epochs 1") for step in steps)


def docx_contents(path):
    """(headings, number of pictures, tables as lists of cell texts) of a Word file."""
    import docx

    document = docx.Document(str(path))
    headings = [(p.style.name, p.text) for p in document.paragraphs
                if p.style.name.startswith("Heading")]
    tables = [[[cell.text for cell in row.cells] for row in table.rows]
              for table in document.tables]
    return headings, len(document.inline_shapes), tables


@pytest.mark.slow
@pytest.mark.parametrize("lang", ["en", "uk"])
def test_report_in_each_language_as_html_and_word(report, trained, fake_data, tmp_path, lang):
    from network.report.text import Words

    w = Words(lang)
    out = report_copy(report, tmp_path)
    make_report.main(report_args(out, report["images"], trained["model_path"], fake_data,
                                 "--lang", lang, "--docx", "--student", "Іван Петренко",
                                 "--group", "КН-24", "--teacher", "О. К. Коваль"))
    html = (out / "report.html").read_text(encoding="utf-8")
    tree = parse(html)
    assert f'<html lang="{lang}">' in html
    titles = [w(f"{key}.title") for key in ("procedure", "training", "evaluation", "own",
                                            "conclusions", "appendix_a",
                                            "appendix_b")]
    assert [h.all_text() for h in tree.find_all("h2")] == titles
    title = " ".join(tree.find("header").all_text().split())
    assert "Іван Петренко" in title and "КН-24" in title and "О. К. Коваль" in title
    assert w("conclusions.draft") in tree.find("section", id="conclusions").all_text()

    headings, pictures, tables = docx_contents(out / "report.docx")
    assert [text for style, text in headings if style == "Heading 1"] == titles
    h3 = [h.all_text() for h in tree.find_all("h3")]  # sub-sections and own images
    assert [text for style, text in headings if style == "Heading 2"] == h3
    # The same figures (the collapsed per-class table aside, nothing is left out).
    assert pictures == len(tree.find_all("img"))
    history = next(t for t in tables if t[0][0] == w("history.epoch"))
    html_rows = body_rows(tree.find("table", **{"class": "history"}))
    assert history[1] == [td.all_text() for td in html_rows[0].find_all("td")]
    assert any(row[0] == w("title.done_by") and "Іван Петренко" in row[1] for t in tables
               for row in t)


def test_report_options_are_checked_at_once(tmp_path, capsys):
    for option in (["--lang", "fr"], ["--class-names", "de"]):
        with pytest.raises(SystemExit) as exit_info:
            make_report.parse_args(["--output-dir", str(tmp_path), *option])
        assert exit_info.value.code == 2
        assert "invalid choice" in capsys.readouterr().err
    args = make_report.parse_args(["--output-dir", str(tmp_path), "--lang", "uk"])
    assert args.class_names == "uk" and args.show is False and not args.docx
    assert make_report.parse_args(["--output-dir", str(tmp_path), "--show"]).show is True


# --- Reusing, refreshing and failing ---------------------------------------------------

def mtimes(out):
    return {name: (out / name).stat().st_mtime_ns
            for name in ["metrics.json", "predictions/predictions.csv"]}


@pytest.mark.slow
def test_reuses_outputs_and_reruns_stale_ones(report, trained, fake_data, tmp_path):
    out = tmp_path / "reports"
    shutil.copytree(report["out"], out)
    args = report_args(out, report["images"], trained["model_path"], fake_data)
    first = mtimes(out)
    (out / "report.html").unlink()
    make_report.main(args)          # everything current: nothing runs again
    assert mtimes(out) == first
    assert (out / "report.html").is_file()

    other_images = tmp_path / "img"
    other_images.mkdir()
    shutil.copy2(report["images"] / "rocket_1.png", other_images)
    make_report.main(report_args(out, other_images, trained["model_path"], fake_data))
    second = mtimes(out)            # other images: only the recognition runs again
    assert second["metrics.json"] == first["metrics.json"]
    assert second["predictions/predictions.csv"] != first["predictions/predictions.csv"]
    assert "rocket_1.png" in (out / "report.html").read_text(encoding="utf-8")
    assert "a&amp;b" not in (out / "report.html").read_text(encoding="utf-8")

    os.utime(out / "metrics.json", (0, 0))   # older than the model, as after retraining
    make_report.main(report_args(out, other_images, trained["model_path"], fake_data, "--tta"))
    assert all(mtimes(out)[k] != second[k] for k in second)
    tta = json.loads((out / "metrics.json").read_text())["tta"]
    metrics = parse((out / "report.html").read_text(encoding="utf-8")).find("section", id="metrics")
    assert "test-time augmentation" in metrics.all_text()
    assert f"{tta['top5_accuracy']:.1%}" in metrics.find("table").all_text()


@pytest.mark.slow
def test_evaluation_of_another_model_is_not_reused(report, tmp_path):
    out = tmp_path / "reports"
    shutil.copytree(report["out"], out)
    metrics = json.loads((out / "metrics.json").read_text())
    args = argparse.Namespace(output_dir=out, model_path=Path(metrics["model_path"]))
    assert refresh.evaluation_needed(args) is None
    other = tmp_path / "other.h5"
    other.write_bytes(b"")
    os.utime(other, (0, 0))
    assert "another model" in refresh.evaluation_needed(
        argparse.Namespace(output_dir=out, model_path=other))
    (out / "test_samples.png").unlink()
    assert "test_samples.png" in refresh.evaluation_needed(args)


@pytest.mark.slow
def test_without_a_training_run_the_report_says_what_is_missing(report, tmp_path, trained,
                                                                 fake_data, capsys):
    """A model trained elsewhere: the report shows the rest and says how to add training.
    (The evaluation and recognition are the report fixture's: running them is checked there.)"""
    out = report_copy(report, tmp_path)
    for name in [*gather.TRAINING_FILES, "training_curves.png", "logs/train_model.log"]:
        (out / name).unlink(missing_ok=True)
    (out / "report.html").unlink()
    make_report.main(report_args(out, report["images"], trained["model_path"], fake_data))
    printed = capsys.readouterr().out
    assert "No training run in" in printed and "history.csv, train_summary.json" in printed
    assert f"{cli.train_command()} --output-dir {out} adds one" in printed  # for this machine
    tree = parse((out / "report.html").read_text(encoding="utf-8"))
    assert [h.all_text() for h in tree.find_all("h2")] == HEADINGS
    training = " ".join(tree.find("section", id="training").all_text().split())
    assert "No training run in" in training and "history.csv, train_summary.json" in training
    assert "python -m network.train_model --output-dir reports" in training  # no tmp path
    assert not tree.find("section", id="training").find_all("img")
    assert tree.find("section", id="metrics").find_all("div", **{"class": "card"})
    assert len(tree.find("section", id="own-images").find_all("img")) == 2
    conclusions = tree.find("div", **{"class": "summary"}).all_text()
    assert "recognises" in conclusions and "Without the training run" in conclusions


@pytest.mark.slow
def test_no_model_yet_is_a_clean_error(tmp_path, fake_data):
    args = report_args(tmp_path / "out", tmp_path, tmp_path / "models" / "best_model.h5",
                       fake_data)
    with pytest.raises(LabError, match="does not exist"):
        make_report.main(args)
    result = run_cli("make_report", *args)
    assert_clean_error(result, "does not exist", "--model-path")
    assert not (tmp_path / "out" / "report.html").exists()


@pytest.mark.slow
def test_no_own_images_is_a_clean_error(report, trained, fake_data, tmp_path):
    out = tmp_path / "reports"
    shutil.copytree(report["out"], out)
    (tmp_path / "none").mkdir()
    with pytest.raises(LabError, match="--images"):
        make_report.main(report_args(out, tmp_path / "none", trained["model_path"], fake_data))


@pytest.mark.slow
def test_runs_as_a_file(report, trained, fake_data, tmp_path):
    out = tmp_path / "reports"
    shutil.copytree(report["out"], out)
    (out / "report.html").unlink()
    result = run_cli("make_report", *report_args(out, report["images"], trained["model_path"],
                                                 fake_data), file_mode=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert "Report written to" in result.stdout
    assert parse((out / "report.html").read_text(encoding="utf-8")).find_all("h2")


# --- Pieces ---------------------------------------------------------------------------

def test_confusion_parts_are_drawn_once_per_evaluation_and_language(tmp_path, monkeypatch):
    """A report made again from the same evaluation reuses the drawn parts; another
    evaluation's matrix, or another language, gets its own, and the old ones go."""
    from network.report.figures import FigureCache
    from network.report.text import ClassNames, Words

    drawn = []
    real = metrics.plot_confusion_matrix
    monkeypatch.setattr(metrics, "plot_confusion_matrix",
                        lambda *args, **kwargs: drawn.append(args[4]) or real(*args, **kwargs))
    names, coarse, mapping = ["apple", "bowl", "cup", "pear"], ["fruit", "food"], [0, 0, 1, 1]
    cm = np.array([[3, 1, 0, 0], [0, 4, 0, 0], [0, 0, 2, 2], [1, 0, 0, 3]])

    def parts(lang):
        cache = FigureCache(tmp_path, Words(lang), ClassNames(lang))
        shown = gather.confusion_parts(cm, names, coarse, mapping, cache)
        cache.prune()
        return shown

    first = parts("en")
    assert len(drawn) == 1 and parts("en") == first
    assert first[0]["png"] == drawn[0].read_bytes()
    ukrainian = parts("uk")
    assert len(drawn) == 2 and ukrainian != first
    cm[0] = [4, 0, 0, 0]
    other = parts("uk")
    assert len(drawn) == 3 and other != ukrainian
    assert list((tmp_path / gather.PARTS_DIR).iterdir()) == [drawn[2]]


def test_most_confused_pairs_sum_both_directions():
    cm = np.array([[5, 1, 3],
                   [4, 6, 0],
                   [1, 2, 7]])
    pairs = metrics.most_confused_pairs(cm, k=2)
    # 0<->1: 5 mistakes, turned so the larger direction (1 -> 0: 4) comes first; then 0<->2.
    assert pairs == [(1, 0, 4, 1), (0, 2, 3, 1)]
    assert metrics.most_confused_pairs(np.diag([3, 4])) == []


def test_superclass_matrix_maps_fine_labels():
    fine_to_coarse = np.array([0, 0, 1, 1])
    cm = metrics.superclass_matrix([0, 1, 2, 3], [1, 2, 3, 3], fine_to_coarse, 2)
    assert cm.tolist() == [[1, 1], [0, 2]]


def test_guess_class_from_file_name():
    names = ["man", "woman", "maple_tree", "tree", "cup"]
    assert gather.guess_class("woman_astronaut", names) == "woman"
    assert gather.guess_class("man_camera", names) == "man"
    assert gather.guess_class("maple_tree_2", names) == "maple_tree"
    assert gather.guess_class("cup", names) == "cup"
    assert gather.guess_class("cupboard", names) is None


# --- Figures --------------------------------------------------------------------------

@pytest.mark.parametrize("first_epoch", [0, 1])
def test_training_curves_in_percent_from_epoch_1(drawn, tmp_path, first_epoch):
    import pandas as pd

    history = pd.DataFrame({"epoch": [first_epoch, first_epoch + 1, first_epoch + 2],
                            "loss": [4.6, 4.5, 4.4], "accuracy": [0.01, 0.03, 0.06],
                            "val_loss": [4.6, 4.55, 4.5], "val_accuracy": [0.01, 0.02, 0.04]})
    metrics.plot_history(history, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes().startswith(b"\x89PNG")
    accuracy = drawn[0].axes[1]
    assert "%" in accuracy.get_ylabel()
    train, val = accuracy.get_lines()
    assert list(train.get_xdata()) == [1, 2, 3]
    np.testing.assert_allclose(train.get_ydata(), [1, 3, 6])
    np.testing.assert_allclose(val.get_ydata(), [1, 2, 4])
    assert accuracy.get_ylim()[0] == 0


def test_training_curves_without_validation(drawn, tmp_path):
    import pandas as pd

    history = pd.DataFrame({"epoch": [1, 2], "loss": [4.6, 4.5], "accuracy": [0.01, 0.03]})
    metrics.plot_history(history, tmp_path / "curves.png")
    for ax in drawn[0].axes:
        assert [t.get_text() for t in ax.get_legend().get_texts()][0].startswith("Training")
        assert len(ax.get_lines()) == 1
    assert "no validation" in drawn[0].get_suptitle()


def test_confusion_matrix_names_every_class_legibly(drawn, tmp_path):
    from sklearn.metrics import confusion_matrix

    from fake_cifar import COARSE_NAMES, FINE_NAMES, FINE_TO_COARSE

    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 100, 2000)
    y_pred = np.where(rng.random(2000) < 0.5, y_true, rng.integers(0, 100, 2000))
    cm = confusion_matrix(y_true, y_pred, labels=np.arange(100))
    path = tmp_path / "confusion_matrix.png"
    metrics.plot_confusion_matrix(cm, FINE_NAMES, COARSE_NAMES, FINE_TO_COARSE, path)
    assert path.read_bytes().startswith(b"\x89PNG")
    fig = drawn[0]
    blocks = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in blocks] == [n.replace("_", " ") for n in COARSE_NAMES]
    labels = [t for ax in blocks for t in ax.get_yticklabels()]
    assert sorted(t.get_text() for t in labels) == FINE_NAMES
    assert min(t.get_fontsize() for t in labels) >= 10
    # Each block's numbers add up to its classes' test images (nothing dropped).
    counted = sum(int(t.get_text()) for ax in blocks for t in ax.texts)
    assert counted == cm.sum()
    colorbar = [ax for ax in fig.axes if ax not in blocks and ax.get_xlabel()]
    assert colorbar and "share" in colorbar[0].get_xlabel().lower()


def test_test_samples_marked_beyond_colour(drawn, tmp_path):
    images = np.zeros((2, 32, 32, 3), dtype=np.uint8)
    metrics.plot_test_samples(images, ["cat", "dog"], ["cat", "cow"], tmp_path / "s.png")
    right, wrong = drawn[0].axes[:2]
    assert right.get_title().startswith("\u2713 right")
    assert wrong.get_title().startswith("\u2717 wrong")
    assert (right.spines["left"].get_linestyle() != wrong.spines["left"].get_linestyle())


# --- A real browser -------------------------------------------------------------------

def find_browser():
    return next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome")
                 if shutil.which(name)), None)


@pytest.mark.slow
@pytest.mark.skipif(find_browser() is None, reason="no chromium / google-chrome installed")
def test_renders_in_headless_browser(report, tmp_path):
    from PIL import Image

    shot = tmp_path / "report.png"
    command = [find_browser(), "--headless", "--no-sandbox", "--disable-gpu",
               "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--no-first-run", "--hide-scrollbars",
               f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
               "--window-size=1280,4000", (report["out"] / "report.html").as_uri()]
    result = subprocess.run(command, capture_output=True, text=True, timeout=180,
                            env={**os.environ, "HOME": str(tmp_path)})
    assert shot.is_file(), result.stderr[-3000:]
    with Image.open(shot) as png:
        pixels = np.asarray(png.convert("RGB"), dtype=np.float32)
    assert pixels.shape[:2] == (4000, 1280)
    assert pixels.std() > 10                     # not a blank page
    # The page's blue accents and the embedded figures, not a grey error page.
    saturation = pixels.max(axis=2) - pixels.min(axis=2)
    assert (saturation > 60).sum() > 5000


PRINT_TOOLS = ("pdfimages", "pdftotext")


@pytest.mark.skipif(find_browser() is None or not all(map(shutil.which, PRINT_TOOLS)),
                    reason="needs chromium and poppler-utils (pdfimages, pdftotext)")
@pytest.mark.slow
def test_prints_on_a4_without_shrinking_or_stranded_headings(report, tmp_path):
    """Printed to PDF: A4, figures at their own size or the page's (never shrunk, so their
    text stays >= 9 pt), every part on a new page, no heading left at the foot of a page."""
    pdf = tmp_path / "report.pdf"
    subprocess.run([find_browser(), "--headless", "--no-sandbox", "--disable-gpu",
                    "--no-pdf-header-footer", f"--user-data-dir={tmp_path / 'profile'}",
                    f"--print-to-pdf={pdf}", (report["out"] / "report.html").as_uri()],
                   capture_output=True, timeout=180, env={**os.environ, "HOME": str(tmp_path)})
    assert pdf.is_file()
    bbox = subprocess.run(["pdftotext", "-bbox", str(pdf), "-"], capture_output=True,
                          text=True).stdout
    width, height = map(float, re.search(r'<page width="([\d.]+)" height="([\d.]+)"',
                                         bbox).groups())
    assert (round(width / 72 * 25.4), round(height / 72 * 25.4)) == (210, 297)
    listing = subprocess.run(["pdfimages", "-list", str(pdf)], capture_output=True,
                             text=True).stdout.splitlines()[2:]
    assert len(listing) == len(report["tree"].find_all("img"))
    for line in listing:
        fields = line.split()
        pixels, ppi = int(fields[3]), float(fields[12])
        printed_cm = pixels / ppi * 2.54
        assert printed_cm == pytest.approx(min(pixels / 110 * 2.54, 17.0), rel=0.03), line
    pages = [[line.strip() for line in page.splitlines() if line.strip()]
             for page in subprocess.run(["pdftotext", "-layout", str(pdf), "-"],
                                        capture_output=True, text=True).stdout.split("\f")]
    pages = [page for page in pages if page]
    firsts = [page[0] for page in pages]
    assert all(title in firsts for title in HEADINGS)
    headings = set(HEADINGS + SUBHEADINGS)
    assert not [page[-1] for page in pages if page[-1] in headings]
