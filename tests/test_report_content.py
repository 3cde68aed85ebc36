"""What the report says, checked without running a script: the drafted conclusions
against the figures, every class's accuracy, copies among the own photos, the
title page's settings file, paths and dates from the run itself."""

import datetime

import numpy as np
import pandas as pd
import pytest

from network import PROJECT_ROOT, make_report
from network.core.errors import LabError
from network.report import builder, conclusions, gather, settings
from network.report.document import Report, Section
from network.report.text import ClassNames, Words

EN, UK = Words("en"), Words("uk")
NAMES = ClassNames("en")


# --- The drafted conclusions hold up -------------------------------------------------------

def training_run(val_loss, val_accuracy=None, loss=None, accuracy=None, early_stopping=False):
    n = len(val_loss)
    history = pd.DataFrame({
        "epoch": np.arange(1, n + 1), "val_loss": val_loss,
        "loss": loss or list(np.linspace(4.0, 3.0, n)),
        "accuracy": accuracy or [0.30] * n, "val_accuracy": val_accuracy or [0.28] * n})
    return {"history": history, "best": int(history["val_loss"].idxmin()),
            "early_stopping": early_stopping}


def test_a_rise_of_0_0007_over_one_epoch_is_not_overfitting():
    run = training_run([2.9, 2.7, 2.6765, 2.6773], val_accuracy=[0.30, 0.31, 0.32, 0.32])
    for w in (EN, UK):
        text = conclusions.fitting(run, w)
        assert "began to overfit" not in text and "почала перенавчатися" not in text, text
    text = conclusions.fitting(run, EN)
    assert "2.6765" in text and "2.6773" in text and "too small and too short" in text
    assert "still falling" not in text and "levelled off" not in text


def test_overfitting_needs_a_rise_of_2_percent_for_3_epochs():
    rising = training_run([3.0, 2.6, 2.70, 2.72, 2.75])       # 3.8 %, 4.6 %, 5.8 % above
    text = conclusions.fitting(rising, EN)
    assert "began to overfit" in text and "in 3 of the 3 following epochs" in text
    assert "while training loss kept falling" in text
    two = training_run([3.0, 2.6, 2.70, 2.72, 2.61])         # only 2 epochs above 2 %
    assert "began to overfit" not in conclusions.fitting(two, EN)
    small = training_run([3.0, 2.6, 2.63, 2.64, 2.65])       # within 2 % of the minimum
    assert "began to overfit" not in conclusions.fitting(small, EN)
    assert conclusions.OVERFIT_RISE == 0.02 and conclusions.OVERFIT_EPOCHS == 3


def test_a_trend_or_a_plateau_only_where_the_loss_moved_that_much():
    falling = conclusions.fitting(training_run([4.0, 3.5, 3.2, 3.0]), EN)
    assert "still falling" in falling and "undertrained" in falling
    assert "over the last 3 epochs (4.0000 → 3.0000)" in falling
    flat = conclusions.fitting(training_run([4.0, 3.02, 3.01, 3.005, 3.0]), EN)
    assert "levelled off" in flat and "still falling" not in flat and "undertrained" not in flat


def test_the_accuracy_gap_is_stated_not_read_as_overfitting():
    run = training_run([4.0, 3.5, 3.2], accuracy=[0.3, 0.5, 0.6], val_accuracy=[0.2, 0.3, 0.35])
    text = conclusions.fitting(run, EN)
    assert "a gap of 25.0 percentage points" in text and "began to overfit" not in text


def test_ukrainian_numbers_agree_with_their_nouns():
    assert EN("conclusions.manual_below", points="1", manual="57.54%").endswith("its network.")
    assert "наведених у методичці" in UK("conclusions.manual_below", points="1", manual="57,54 %")
    assert UK("own.too_few_photos", count=2) == "Надано лише 2 окремі фото."
    assert UK("own.too_few_photos", count=5) == "Надано лише 5 окремих фото."
    assert UK("log.epochs_left_out", count=21).startswith("[... ще 21 епоха")
    assert UK("conclusions.chance", count=100, chance="1 %", classes=100).count("100 класів")


# --- Every class, compactly ----------------------------------------------------------------

def per_class_rows(count=100):
    rng = np.random.default_rng(0)
    return [{"name": f"class_{i:02d}", "superclass": "s", "precision": p, "recall": r,
             "f1": r, "support": 100} for i, (p, r) in enumerate(rng.random((count, 2)))]


def test_every_class_in_the_html_and_word_tables(tmp_path):
    from docx import Document

    from network.report.html import render
    from network.report.word import write_docx

    rows = per_class_rows()
    table = builder.accuracy_table(rows, EN, NAMES)
    shown = [(c.text, c.cls) for row in table.rows for c in row.cells]
    names = [text for text, cls in shown if text.startswith("class_")]
    assert sorted(names) == sorted(r["name"] for r in rows)
    best = sorted(rows, key=lambda r: -r["recall"])
    assert table.rows[0].cells[1].text == best[0]["name"]       # read down the columns
    assert table.rows[1].cells[1].text == best[1]["name"]
    marked = [text for text, cls in shown if "top" in cls.split() and text.startswith("class")]
    assert marked == [r["name"] for r in best[:10]]
    report = Report("en", "t", {"institution": ["U", "D"], "heading": "h", "topic": "t",
                                "rows": [], "aim_label": "a", "aim": "a", "place": "2025"},
                    "c", "m", [Section("per-class", "Per class", [table])])
    assert all(name in render(report) for name in names)
    write_docx(report, tmp_path / "r.docx")
    cells = {cell.text for t in Document(str(tmp_path / "r.docx")).tables for row in t.rows
             for cell in row.cells}
    assert set(names) <= cells


# --- Own photos: copies and the manual's requirement ----------------------------------------

def own(name, first, copies=()):
    return {"name": name, "top": [(first, 0.5)], "copies": list(copies), "expected": None,
            "rank": None, "chart": b"", "width_cm": 10}


def own_section_text(photos, w=EN):
    run = {"own": photos, "skipped": [], "logs": {"test_model": None}}
    section = builder.own_images(run, w, NAMES)
    return " ".join(run_text for block in section.blocks if block.kind == "para"
                    for run_text, _ in block.content)


def test_copies_are_counted_once_and_too_few_photos_or_classes_are_said():
    photos = [own("a.jpg", "apple", ["a.BMP", "a.webp"]), own("b.jpg", "apple"),
              own("c.jpg", "bowl")]
    text = own_section_text(photos)
    assert "3 own images" in text and "2 more files are copies" in text
    assert "Only 3 distinct photos were given." in text
    assert "only 2 different classes" in text and "5–10" in text
    five = [own(f"{i}.jpg", f"class{i}") for i in range(5)]
    text = own_section_text(five)
    assert "Only" not in text and "only" not in text
    same = builder.own_image_blocks(photos[0], EN, NAMES)[0].content[0][0]
    assert same == "The same photo is also in a.BMP, a.webp."


# --- The title page's settings, paths and dates --------------------------------------------

def test_settings_file_fills_in_what_the_options_leave_out(tmp_path, monkeypatch):
    path = tmp_path / "report.toml"
    path.write_text('student = "Іван Петренко"\nuniversity = "Університет"\ncity = "Київ"\n',
                    encoding="utf-8")
    monkeypatch.setattr(make_report, "SETTINGS_PATH", path)
    args = make_report.parse_args(["--output-dir", str(tmp_path), "--city", "Львів"])
    assert (args.student, args.university, args.city) == ("Іван Петренко", "Університет",
                                                          "Львів")
    assert args.teacher is None


@pytest.mark.parametrize("text, message", [("student = ", "cannot be read"),
                                           ('school = "x"', "unknown setting school"),
                                           ("group = 24", "must be text")])
def test_a_bad_settings_file_is_one_line(tmp_path, text, message):
    path = tmp_path / "report.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(LabError, match=message) as error:
        settings.read_settings(path)
    assert "\n" not in str(error.value)
    assert settings.read_settings(tmp_path / "none.toml") == {}


def test_paths_are_shown_from_the_project_or_by_name():
    assert gather.shown_path(PROJECT_ROOT / "models" / "best_model.h5") == "models/best_model.h5"
    assert gather.shown_path("/home/someone/else/best_model.h5") == "best_model.h5"
    command = "$ python -m network.test_model --model-path /tmp/x/m.h5 img/a.jpg 20/20 ms/step"
    assert gather.shown_paths(command) == ("$ python -m network.test_model --model-path m.h5 "
                                           "img/a.jpg 20/20 ms/step")


def test_the_training_date_comes_from_the_summary_or_is_unknown():
    moment = gather.finished_at({"finished_at": "2025-03-14T16:05:09+02:00"})
    assert moment == datetime.datetime(2025, 3, 14, 16, 5, 9,
                                       tzinfo=datetime.timezone(datetime.timedelta(hours=2)))
    assert builder.local_time(moment) == "2025-03-14 16:05 (UTC+02:00)"
    assert gather.finished_at({}) is None and gather.finished_at({"finished_at": "?"}) is None


def test_the_training_log_excerpt_leaves_the_rest_to_the_appendix():
    log = "\n".join(["$ python -m network.train_model", 'Model: "lab"', "| layer |",
                     " Non-trainable params: 0 (0 B)"]
                    + [line for e in range(1, 9) for line in (f"Epoch {e}/8", f"loss {e}")]
                    + ["Test accuracy 9%"])
    run = {"logs": {"train_model": log}, "training": {"summary": {}}}
    excerpt = builder.training_log_excerpt(run, EN).text
    assert "Model:" not in excerpt and EN("log.summary_moved") in excerpt
    assert "Epoch 2/8" in excerpt and "Epoch 3/8" not in excerpt and "Epoch 7/8" in excerpt
    assert "4 more epochs" in excerpt and excerpt.endswith("Test accuracy 9%")
    summary, full = builder.appendices(run, EN)
    assert summary.blocks[1].text.startswith('Model: "lab"')
    assert "Epoch 3/8" in full.blocks[0].text and "Model:" not in full.blocks[0].text
