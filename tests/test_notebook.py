"""The lab as a notebook (notebooks/lab.ipynb): saved without outputs, finds the project from
wherever Jupyter starts, and runs top to bottom (quick run) on the synthetic or real files."""

import io
import json
import re
import shutil
import sys
import types
import zipfile
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from conftest import REAL_DATA, ROOT, sample_photos
from fake_cifar import write_fake_cifar

NOTEBOOK = ROOT / "notebooks" / "lab.ipynb"
# What a quick run leaves, relative to the output folder (LAB_OUTPUT_DIR).
OUTPUTS = ("training_curves.png", "history.csv", "train_summary.json", "metrics.json",
           "classification_report.csv", "confusion_matrix.png", "test_samples.png",
           "confident_mistakes.png", "predictions/predictions.csv", "report.html")
ANSI_COLOUR = r"\x1b\[[0-9;]*m"


def read_notebook(path=NOTEBOOK):
    return nbformat.read(path, as_version=4)


def cell_source(cell_id):
    """The source of the notebook's cell with this id."""
    return next(cell.source for cell in read_notebook().cells if cell.get("id") == cell_id)


def test_saved_without_outputs():
    """Outputs stay out of git: every code cell is saved unrun, so diffs show code only."""
    notebook = read_notebook()
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code
    for number, cell in enumerate(code, 1):
        assert cell.outputs == [], f"code cell {number} ({cell.get('id')}) has outputs"
        assert cell.execution_count is None, f"code cell {number} ({cell.get('id')}) was run"
    assert "widgets" not in notebook.metadata  # no saved widget state either
    assert notebook.metadata.kernelspec.name == "python3"


@pytest.mark.parametrize("start", [".", "notebooks", "network"])
def test_first_cell_finds_the_project(start, monkeypatch):
    """Started in notebooks/ (Jupyter's default), in the project or below it, the first cell
    works from the project folder and imports its package."""
    monkeypatch.chdir(ROOT / start)
    monkeypatch.setattr(sys, "path", list(sys.path))
    namespace = {}
    exec(compile(cell_source("find-project"), "find-project", "exec"), namespace)
    assert namespace["ROOT"] == ROOT
    assert Path.cwd() == ROOT
    assert sys.path[0] == str(ROOT)


def test_first_cell_outside_the_project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    with pytest.raises(RuntimeError, match="start Jupyter inside the project"):
        exec(compile(cell_source("find-project"), "find-project", "exec"), {})


def test_settings_follow_the_environment(tmp_path, monkeypatch):
    """The settings cell reads the quick switch, the data, output and model paths from the
    environment, and passes the MD5 option on to the scripts."""
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("LAB_QUICK", "1")
    monkeypatch.setenv("CIFAR100_DIR", str(tmp_path / "cifar"))
    monkeypatch.setenv("LAB_ALLOW_MD5_MISMATCH", "1")
    monkeypatch.setenv("LAB_OUTPUT_DIR", str(tmp_path / "out"))
    monkeypatch.setenv("LAB_MODEL_PATH", str(tmp_path / "m" / "model.h5"))
    namespace = {}
    for cell_id in ("find-project", "settings"):
        exec(compile(cell_source(cell_id), cell_id, "exec"), namespace)
    assert namespace["QUICK"] is True
    assert namespace["DATA_OPTIONS"] == ["--data-dir", str(tmp_path / "cifar"),
                                         "--allow-md5-mismatch"]
    assert namespace["FILE_OPTIONS"][:4] == ["--model-path", str(tmp_path / "m" / "model.h5"),
                                             "--output-dir", str(tmp_path / "out")]


def run_cell(cell_id, namespace):
    exec(compile(cell_source(cell_id), cell_id, "exec"), namespace)
    return namespace


@pytest.mark.parametrize("gpu, recipe, precision", [
    (None, "cpu", "float32"),
    (("Tesla T4", (7, 5)), "fast", "mixed_float16"),   # Colab's free GPU: no bfloat16 units
    (("NVIDIA A100-SXM4-40GB", (8, 0)), "fast", "mixed_bfloat16"),
], ids=["no-gpu", "t4", "a100"])
def test_the_recipe_cell_chooses_the_scripts_precision(gpu, recipe, precision, monkeypatch):
    """The notebook's precision is model_utils.auto_precision's, whatever the backend."""
    from network import model_utils
    from network.core import runtime

    devices = [runtime.Device("jax", "GPU", *gpu)] if gpu else []
    monkeypatch.setattr(runtime, "accelerator_devices", lambda backend=None: devices)
    monkeypatch.setattr(model_utils, "gpu_available", lambda: bool(devices))
    namespace = run_cell("recipe", {"RECIPE": None, "QUICK": False})
    assert (namespace["recipe_name"], namespace["PRECISION"]) == (recipe, precision)


@pytest.fixture
def colab(monkeypatch):
    """A stand-in for ``google.colab``: ``files.upload`` returns what ``uploads`` holds,
    ``files.download`` records its paths in ``downloads``."""
    stand_in = types.ModuleType("google.colab")
    stand_in.uploads, stand_in.downloads = {}, []
    stand_in.files = types.SimpleNamespace(upload=lambda: dict(stand_in.uploads),
                                           download=stand_in.downloads.append)
    monkeypatch.setitem(sys.modules, "google.colab", stand_in)
    return stand_in


@pytest.mark.parametrize("keras_version", ["3.15.1", "3.8.0"])
def test_colab_installs_only_what_is_missing(keras_version, monkeypatch, capsys):
    """On Colab the install cell leaves what the image has alone (TensorFlow is never named)
    and upgrades Keras only when it is older than the lab needs."""
    import importlib.metadata

    real_version = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda name: keras_version
                        if name == "keras" else real_version(name))
    calls = []
    run_cell("colab-install", {"IN_COLAB": True, "sys": sys,
                               "subprocess": types.SimpleNamespace(
                                   run=lambda command, **kwargs: calls.append(command))})
    if keras_version == "3.15.1":  # every module the lab needs is installed for the tests
        assert calls == []
        assert "nothing" in capsys.readouterr().out
    else:
        assert calls == [[sys.executable, "-m", "pip", "install", "-q", "keras>=3.11.3"]]


def test_colab_upload_and_download(colab, tiny_model, tmp_path, monkeypatch):
    """On Colab, uploaded photos are recognised from their own folder, and the model folder
    (zipped) and the report are downloaded."""
    from PIL import Image as PILImage

    buffer = io.BytesIO()
    PILImage.new("RGB", (40, 30), (200, 120, 20)).save(buffer, format="PNG")
    colab.uploads = {"lion.png": buffer.getvalue()}
    monkeypatch.chdir(tmp_path)
    Path("lion.png").write_bytes(buffer.getvalue())  # Colab saves uploads in the working folder
    shown = []
    out = tmp_path / "out"
    namespace = run_cell("photos", {
        "UPLOAD": True, "ROOT": tmp_path, "PHOTOS": ROOT / "img", "MODEL_PATH": tiny_model,
        "OUTPUT_DIR": out, "Path": Path, "pd": pd,
        "display": shown.append, "Image": lambda filename: filename})
    assert namespace["photos"] == [tmp_path / "my_photos"]
    assert (tmp_path / "my_photos" / "lion.png").is_file()
    assert not Path("lion.png").exists()
    assert shown == [str(out / "predictions" / "lion_top5.png")]

    report = out / "report.html"
    report.write_text("<html></html>")
    run_cell("keep", {"IN_COLAB": True, "OUTPUT_DIR": out, "MODEL_PATH": tiny_model,
                      "REPORT": report})
    archive, downloaded_report = colab.downloads
    assert downloaded_report == str(report)
    with zipfile.ZipFile(archive) as zipped:
        assert {"best_model.h5", "class_names.json"} <= set(zipped.namelist())


def test_quick_mode_has_folders_of_its_own(tmp_path, monkeypatch):
    """Without LAB_OUTPUT_DIR and LAB_MODEL_PATH, the quick mode's model and outputs go to
    models/quick/ and reports/quick/, and the scripts are told it is a quick run."""
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "path", list(sys.path))
    for name in ("LAB_OUTPUT_DIR", "LAB_MODEL_PATH"):
        monkeypatch.delenv(name, raising=False)
    for quick, folder, option in (("1", "quick/", "--quick"), ("", "", "--no-quick")):
        monkeypatch.setenv("LAB_QUICK", quick)
        namespace = {}
        for cell_id in ("find-project", "settings"):
            exec(compile(cell_source(cell_id), cell_id, "exec"), namespace)
        assert namespace["MODEL_PATH"] == ROOT / f"models/{folder}best_model.h5"
        assert namespace["OUTPUT_DIR"] == ROOT / f"reports/{folder}".rstrip("/")
        assert namespace["FILE_OPTIONS"][-1] == option


@pytest.mark.slow
def test_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
    """The quick run executes every cell in a copy of the project started from its notebooks/
    folder, recognises the photos the environment names, and leaves the model, the figures
    and the report in the quick folders (models/quick/, reports/quick/): a model and report
    of a real run stay byte for byte as they were, and nothing lands in data/."""
    import nbclient
    from nbclient.exceptions import CellExecutionError

    project = tmp_path / "project"
    for folder in ("network", "img", "notebooks"):
        shutil.copytree(ROOT / folder, project / folder,
                        ignore=shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints"))
    out = project  # the quick folders: models/quick/ and reports/quick/
    real = {"models/best_model.h5": b"a real model", "models/class_names.json": b"{}",
            "reports/train_summary.json": b"{}", "reports/report.html": b"<html></html>"}
    for name, content in real.items():
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_bytes(content)
    data = REAL_DATA or write_fake_cifar(tmp_path / "cifar", n_train=300, n_test=200)
    monkeypatch.setenv("LAB_QUICK", "1")
    monkeypatch.setenv("CIFAR100_DIR", str(data))
    monkeypatch.setenv("LAB_ALLOW_MD5_MISMATCH", "" if REAL_DATA else "1")
    monkeypatch.delenv("LAB_OUTPUT_DIR", raising=False)
    monkeypatch.delenv("LAB_MODEL_PATH", raising=False)
    monkeypatch.delenv("DISPLAY", raising=False)
    photos = sample_photos(tmp_path / "my photos", "cup_coffee.jpg", "man_camera.png")
    monkeypatch.setenv("LAB_PHOTOS_DIR", str(photos))

    notebook = read_notebook(project / "notebooks" / "lab.ipynb")
    client = nbclient.NotebookClient(
        notebook, timeout=600, kernel_name="python3",
        resources={"metadata": {"path": str(project / "notebooks")}})
    failure = None
    try:
        client.execute()
    except CellExecutionError as err:  # the failing cell's source and error, uncoloured
        failure = re.sub(ANSI_COLOUR, "", str(err))
    if failure:
        pytest.fail(f"a notebook cell failed:\n{failure}", pytrace=False)

    for name in ("best_model.h5", "class_names.json"):
        assert (out / "models" / "quick" / name).is_file(), name
    missing = [name for name in OUTPUTS if not (out / "reports" / "quick" / name).is_file()]
    assert not missing, f"not written: {missing}"
    assert {name: (project / name).read_bytes() for name in real} == real
    assert sorted(p.name for p in (project / "models").iterdir()) == [
        "best_model.h5", "class_names.json", "quick"]
    assert sorted(p.name for p in (project / "reports").iterdir()) == [
        "quick", "report.html", "train_summary.json"]
    assert not (project / "data").exists()

    summary = json.loads((out / "reports" / "quick" / "train_summary.json").read_text())
    assert summary["epochs_run"] == 1
    assert summary["settings"]["subset"] == min(2000, 300 if not REAL_DATA else 50_000)
    metrics = json.loads((out / "reports" / "quick" / "metrics.json").read_text())
    assert metrics["images"] == min(1000, 200 if not REAL_DATA else 10_000)

    outputs = [output for cell in notebook.cells if cell.cell_type == "code"
               for output in cell.outputs]
    text = "".join(output.get("text", "") for output in outputs)
    assert "Running on " in text                     # the one-line device report
    assert "Recipe: " in text
    assert "Report written to" in text
    assert "hours for the full recipe" not in text  # the cpu recipe takes minutes
    assert "1 epoch;" in text and "epoch(s)" not in text
    images = sum("image/png" in output.get("data", {}) for output in outputs)
    recognised = pd.read_csv(out / "reports" / "quick" / "predictions" / "predictions.csv")[
        "file"]
    assert sorted(Path(file).name for file in recognised.unique()) == sorted(
        p.name for p in photos.iterdir())  # the photos LAB_PHOTOS_DIR names
    # samples, curves, confusion matrix, 16 test images + mistakes, one chart per photo
    assert images == 1 + 1 + 1 + 2 + 2
