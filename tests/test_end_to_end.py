"""The whole lab on CPU: train (the shared `trained` fixture), evaluate, recognise images.

Also the fast recipe: a tiny ResNet-9 trains, saves, and evaluate_model reads its
checkpoint unchanged.
"""

import csv
import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT
from fake_cifar import COARSE_NAMES, FINE_NAMES, FINE_TO_COARSE
from helpers import call_main, run_cli, run_main

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("end_to_end")]  # one evaluation

METRICS = ("accuracy", "loss", "top5_accuracy", "superclass_accuracy")


def assert_png(path, min_side=300, max_side=6000):
    """A complete, decodable PNG of a sensible size."""
    from PIL import Image

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    with Image.open(path) as image:
        image.load()  # decodes every row: a truncated file fails here
        width, height = image.size
    assert min_side <= width <= max_side and min_side <= height <= max_side, (path, image.size)


def assert_sane_metrics(metrics):
    for key in METRICS:
        assert key in metrics, key
    for key in ("accuracy", "top5_accuracy", "superclass_accuracy"):
        assert 0 <= metrics[key] <= 1, (key, metrics[key])
    assert metrics["top5_accuracy"] >= metrics["accuracy"]
    assert metrics["superclass_accuracy"] >= metrics["accuracy"]  # a right class has the
    assert 0 < metrics["loss"] < 20                                # right superclass too


def images_in(folder):
    from network.test_model import IMAGE_EXTENSIONS

    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)


@pytest.fixture(scope="module")
def evaluated(trained, fake_data, tmp_path_factory):
    """evaluate_model --tta in this process (its command line runs in test_backends)."""
    from network.evaluate_model import main

    out = tmp_path_factory.mktemp("evaluation")
    code, stdout, stderr = call_main(main, ["--model-path", trained["model_path"],
                                            "--data-dir", fake_data, "--allow-md5-mismatch",
                                            "--output-dir", out, "--tta", "--no-show"])
    assert code == 0, stderr[-3000:]
    return out, SimpleNamespace(stdout=stdout, stderr=stderr)


@pytest.fixture(scope="module")
def recognised(tiny_model, tmp_path_factory):
    """test_model run as a file (python network/test_model.py), as from an IDE, on img/,
    from another working folder. The model is conftest's tiny one: an occlusion map per
    photo costs the lab's network seconds each (it recognises a photo in
    test_the_trained_model_recognises_a_photo)."""
    out = tmp_path_factory.mktemp("recognition")
    result = run_cli("test_model", "--model-path", tiny_model, "--output-dir", out,
                     file_mode=True, cwd=out)  # another working directory: img/ is still found
    assert result.returncode == 0, result.stderr[-3000:]
    return out / "predictions", result


def check_photo_predictions(table, photo, stdout):
    """Five ranked classes of the synthetic data for ``photo``, and its chart."""
    rows = table[table["file"] == str(photo)]
    assert rows["rank"].tolist() == [1, 2, 3, 4, 5], photo
    assert set(rows["class"]) <= set(FINE_NAMES) and rows["class"].is_unique
    probs = rows["probability"].to_numpy()
    assert (np.diff(probs) <= 0).all() and 0 < probs.sum() <= 1 + 1e-5
    assert f"{photo.name}:" in stdout


# --- Training ----------------------------------------------------------------------------

def test_training_saves_the_model_and_class_names(trained):
    from network.model_utils import load_model

    model = load_model(trained["model_path"])
    assert model.count_params() == 13_870_484
    # Like the manual, training shows the network (Keras's summary) before it starts.
    assert "Total params: 13,870,484" in trained["stdout"]
    names = json.loads((trained["model_path"].parent / "class_names.json").read_text())
    assert names["fine_label_names"] == FINE_NAMES
    assert names["coarse_label_names"] == COARSE_NAMES
    assert names["fine_to_coarse"] == FINE_TO_COARSE.tolist()


def test_training_reports(trained):
    reports = trained["reports"]
    history = pd.read_csv(reports / "history.csv")
    assert len(history) == 1
    assert {"epoch", "loss", "accuracy", "val_loss", "val_accuracy", "epoch_time_s"} <= set(
        history.columns)
    row = history.iloc[0]
    assert row["epoch"] == 1  # counted from 1, as on the console and in the report
    # No GPU here: training says so and points the lab recipe to the CPU recipe.
    assert "No GPU found" in trained["stdout"] and "--recipe cpu" in trained["stdout"]
    assert np.isfinite(row[["loss", "accuracy", "val_loss", "val_accuracy"]]).all()
    assert row["epoch_time_s"] > 0
    assert_png(reports / "training_curves.png")
    assert not (reports / "resume").exists()  # a finished run leaves no backup

    summary = json.loads((reports / "train_summary.json").read_text())
    settings = summary["settings"]
    assert (settings["recipe"], settings["epochs"], settings["batch_size"]) == ("lab", 1, 50)
    assert (settings["learning_rate"], settings["val_split"]) == (1e-4, 0.2)
    assert settings["subset"] == 250 and settings["patience"] == 10
    assert summary["epochs_run"] == 1
    assert (summary["train_images"], summary["val_images"]) == (200, 50)
    assert summary["parameters"] == 13_870_484
    assert len(summary["epoch_seconds"]) == 1 and summary["train_seconds"] > 0
    assert summary["test"]["images"] == 200  # the test file, not held-out training images
    assert_sane_metrics(summary["test"])
    assert summary["hardware"]["backend"] in ("tensorflow", "jax", "torch")
    assert "Test accuracy" in trained["stdout"]


# --- Evaluation ----------------------------------------------------------------------------

def test_evaluation_metrics(evaluated):
    out, result = evaluated
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["images"] == 200
    assert_sane_metrics(metrics)
    assert_sane_metrics(metrics["tta"])  # --tta: flip averaging, reported apart
    assert metrics["tta"]["images"] == 200
    assert f"Accuracy: {metrics['accuracy']:.2%}" in result.stdout
    assert "With flip TTA" in result.stdout

    # Per-image predictions agree with the reported accuracy.
    with open(out / "test_predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(row["image"]) for row in rows] == list(range(200))
    right = sum(row["true"] == row["predicted"] for row in rows)
    assert right / 200 == pytest.approx(metrics["accuracy"])


def test_evaluation_report_and_figures(evaluated):
    out, result = evaluated
    with open(out / "classification_report.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [row["class"] for row in rows[:100]] == FINE_NAMES  # real names, in order
    assert {row["class"] for row in rows[100:]} == {"accuracy", "macro avg", "weighted avg"}
    assert sum(float(row["support"]) for row in rows[:100]) == 200
    text = (out / "classification_report.txt").read_text()
    assert "fine_00" in text and "fine_99" in text and "Category" not in text
    assert "fine_42" not in result.stdout  # the per-class report is in the files only
    assert_png(out / "confusion_matrix.png", min_side=1000)
    assert_png(out / "test_samples.png", min_side=700)  # drawn at an A4 page's width
    assert_png(out / "confident_mistakes.png", min_side=600)
    assert_png(out / "reliability_diagram.png", min_side=600)


def test_evaluation_calibration_and_confident_mistakes(evaluated, trained):
    """The lab run held out images, so training saved a temperature beside the model;
    evaluation applies it and reports the calibration error before and after."""
    out, result = evaluated
    saved = json.loads(trained["model_path"].with_name("calibration.json").read_text())
    assert saved["fitted_on"] == "validation" and saved["images"] == 50
    metrics = json.loads((out / "metrics.json").read_text())
    calibration = metrics["calibration"]
    assert calibration["temperature"] == pytest.approx(saved["temperature"])
    assert calibration["fitted_on"] == "held-out training images"
    assert 0 <= calibration["ece_calibrated"] <= 1 and 0 <= calibration["ece"] <= 1
    # A model this short-trained is near chance: one plain sentence, not the ECE figures.
    assert "hardly better than chance" in result.stdout
    assert "Calibration error (ECE)" not in result.stdout
    table = pd.read_csv(out / "test_predictions.csv")
    assert ((table["confidence"] > 0) & (table["confidence"] <= 1)).all()
    wrong = (table["true"] != table["predicted"]).sum()
    assert metrics["confident_mistakes"]["mistakes"] == min(16, wrong)


# --- Recognising photos ------------------------------------------------------------------------

def test_recognition_of_the_sample_photos(recognised):
    out, result = recognised
    photos = images_in(ROOT / "img")
    assert len(photos) >= 5
    table = pd.read_csv(out / "predictions.csv")
    assert list(table.columns) == ["file", "rank", "class", "probability", "chart", "copy_of"]
    assert table["copy_of"].isna().all()  # the sample photos are all different
    assert len(table) == 5 * len(photos)
    for photo in photos:
        check_photo_predictions(table, photo, result.stdout)
        assert_png(out / f"{photo.stem}_top5.png")


def test_the_trained_model_recognises_a_photo(trained, tmp_path, capsys):
    """The lab's network (it takes images scaled to 0-1) with the class names and the
    temperature its training saved beside it."""
    from network.analysis.calibration import apply_temperature, load_temperature
    from network.model_utils import load_model, model_images
    from network.test_model import main, read_image, resize_for_model

    photo = ROOT / "img" / "rocket.jpg"
    code, stdout, err = run_main(main, [photo, "--model-path", trained["model_path"],
                                        "--output-dir", tmp_path, "--no-show"], capsys)
    assert code == 0, err[-3000:]
    table = pd.read_csv(tmp_path / "predictions" / "predictions.csv")
    assert len(table) == 5
    check_photo_predictions(table, photo, stdout)
    assert_png(tmp_path / "predictions" / f"{photo.stem}_top5.png")

    model = load_model(trained["model_path"])
    probs = apply_temperature(
        np.asarray(model.predict(model_images(model, resize_for_model(read_image(photo))[None]),
                                 verbose=0), dtype=np.float32),
        load_temperature(trained["model_path"]))[0]
    top = np.argsort(probs)[::-1][:5]
    assert list(table["class"]) == [FINE_NAMES[k] for k in top]
    np.testing.assert_allclose(table["probability"], probs[top], atol=2e-6)


# --- The fast recipe -----------------------------------------------------------------------

def test_fast_recipe_trains_and_evaluate_model_reads_it(fake_data, tmp_path, capsys):
    """Both in this process (the scripts' command lines run in test_backends)."""
    from network.evaluate_model import main as evaluate
    from network.model_utils import load_model
    from network.train_model import main as train

    model_path, reports = tmp_path / "models" / "best_model.h5", tmp_path / "reports"
    code, _, err = run_main(train, [
        "--recipe", "fast", "--width", "0.0625", "--epochs", 2, "--batch-size", 64,
        "--subset", 300, "--val-split", 0, "--data-dir", fake_data, "--allow-md5-mismatch",
        "--model-path", model_path, "--output-dir", reports, "--no-show"], capsys)
    assert code == 0, err[-3000:]
    history = pd.read_csv(reports / "history.csv")
    assert history["epoch"].tolist() == [1, 2]
    assert not any(c.startswith("val_") for c in history.columns)  # no hold-out asked for
    summary = json.loads((reports / "train_summary.json").read_text())
    assert summary["settings"]["recipe"] == "fast" and summary["settings"]["width"] == 0.0625
    assert (summary["train_images"], summary["val_images"]) == (300, 0)
    assert load_model(model_path).name == "resnet9"

    code, _, err = run_main(evaluate, ["--model-path", model_path, "--data-dir", fake_data,
                                       "--allow-md5-mismatch", "--output-dir", tmp_path / "eval",
                                       "--subset", "100", "--no-show"], capsys)
    assert code == 0, err
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["images"] == 100
    assert_sane_metrics(metrics)
    assert_png(tmp_path / "eval" / "test_samples.png")
