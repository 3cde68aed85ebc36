"""Nothing a student trained is lost: the previous model moves aside before a new run
replaces it, and quick runs keep to folders of their own."""

import errno
import json
import os
import time

import pytest

from helpers import run_main

# A tiny ResNet-9 on the synthetic data: seconds per run on a CPU.
FAST = ("--recipe", "fast", "--width", "0.0625", "--batch-size", "64", "--epochs", "1",
        "--allow-md5-mismatch", "--no-show")
RUN_FILES = ("train_summary.json", "history.csv", "training_curves.png")


def old_run(models, reports, accuracy=0.575, recipe="cpu", model_path=None):
    """A fake earlier run: a model with its side files, and its run's files."""
    models.mkdir(parents=True, exist_ok=True)
    reports.mkdir(parents=True, exist_ok=True)
    model = models / "best_model.h5"
    model.write_bytes(b"old model")
    (models / "class_names.json").write_text("{}")
    (models / "calibration.json").write_text('{"temperature": 1.5}')
    for name in RUN_FILES[1:]:
        (reports / name).write_text(f"old {name}")
    (reports / "train_summary.json").write_text(json.dumps({
        "settings": {"recipe": recipe, "model_path": str(model_path or model)},
        "test": {"accuracy": accuracy}, "finished_at": "2025-05-03T14:22:10+02:00"}))
    return model


def contents(folder):
    """Every file below ``folder`` (its bytes), less the console logs runs add."""
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file() and "logs" not in p.parts}


# --- The move itself ---------------------------------------------------------------------

def test_the_previous_model_moves_aside_with_its_files(tmp_path, capsys):
    from network.training.previous import keep_previous

    models, reports = tmp_path / "models", tmp_path / "reports"
    model = old_run(models, reports)
    before = {**contents(models), **contents(reports)}
    target = keep_previous(model, reports)

    assert target == models / "previous" / "2025-05-03_14-22-10-cpu-57.5pct"
    moved = contents(target)
    assert moved == before  # every file, unchanged
    assert not model.exists() and not (models / "class_names.json").exists()
    assert not any((reports / name).exists() for name in RUN_FILES)
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith("Kept the previous model (recipe cpu, test accuracy 57.5%) in ")
    assert "2025-05-03_14-22-10-cpu-57.5pct with class_names.json, calibration.json, " \
           "train_summary.json" in line


def test_a_summary_of_another_model_stays_and_the_name_says_unknown(tmp_path, capsys):
    """Run files that describe another model file are not its: they stay, and the folder
    is named after the model file's time."""
    from network.training.previous import keep_previous

    models, reports = tmp_path / "models", tmp_path / "reports"
    model = old_run(models, reports, model_path=tmp_path / "elsewhere.h5")
    stamp = time.mktime((2024, 1, 2, 3, 4, 5, 0, 0, -1))
    os.utime(model, (stamp, stamp))
    target = keep_previous(model, reports)
    assert target.name == "2024-01-02_03-04-05-unknown-unknown"
    assert sorted(contents(target)) == ["best_model.h5", "calibration.json", "class_names.json"]
    assert all((reports / name).is_file() for name in RUN_FILES)
    assert "no run summary found for it" in capsys.readouterr().out


def test_nothing_to_keep_or_a_resumed_run(tmp_path, capsys):
    from network.training.previous import keep_previous

    assert keep_previous(tmp_path / "models" / "best_model.h5", tmp_path) is None
    model = old_run(tmp_path / "models", tmp_path / "reports")
    assert keep_previous(model, tmp_path / "reports", resuming=True) is None  # its checkpoint
    assert model.is_file() and not (tmp_path / "models" / "previous").exists()
    assert capsys.readouterr().out == ""


def test_only_the_newest_are_kept_and_a_dropped_one_is_named(tmp_path, capsys):
    from network.training.previous import keep_previous

    models, reports = tmp_path / "models", tmp_path / "reports"
    targets = []
    for run in range(4):
        model = old_run(models, reports, accuracy=run / 10)
        targets.append(keep_previous(model, reports, keep=3))
        stamp = time.time() - 100 + run  # in the order they were kept
        os.utime(targets[-1], (stamp, stamp))
    assert sorted(p.name for p in (models / "previous").iterdir()) == sorted(
        t.name for t in targets[1:])
    printed = capsys.readouterr().out
    assert printed.count("Dropped the oldest kept model") == 1
    assert targets[0].name in printed and "only the 3 newest are kept" in printed


def test_same_second_gets_a_second_folder(tmp_path):
    from network.training.previous import keep_previous

    models, reports = tmp_path / "models", tmp_path / "reports"
    first = keep_previous(old_run(models, reports), reports)
    second = keep_previous(old_run(models, reports), reports)
    assert second == first.with_name(f"{first.name}-2")


def test_a_failed_move_changes_nothing_and_is_one_line(tmp_path, monkeypatch):
    from network.core.errors import LabError
    from network.training import previous

    models, reports = tmp_path / "models", tmp_path / "reports"
    model = old_run(models, reports)
    before = {**contents(models), **contents(reports)}
    real_replace, calls = os.replace, []

    def failing(source, destination):
        calls.append(source)
        if len(calls) == 3:  # after the model and its class names
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(source, destination)

    monkeypatch.setattr(previous.os, "replace", failing)
    with pytest.raises(LabError, match=r"cannot move the previous model .* aside .*No space "
                                       r"left on device.*nothing was changed"):
        previous.keep_previous(model, reports)
    monkeypatch.undo()
    assert {**contents(models), **contents(reports)} == before
    assert list((models / "previous").iterdir()) == []  # no half-filled folder


def test_run_files_on_another_drive_are_copied(tmp_path, monkeypatch):
    from network.training import previous

    models, reports = tmp_path / "models", tmp_path / "reports"
    model = old_run(models, reports)
    real_replace = os.replace

    def across(source, destination):
        if reports in source.parents:
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return real_replace(source, destination)

    monkeypatch.setattr(previous.os, "replace", across)
    target = previous.keep_previous(model, reports)
    assert (target / "train_summary.json").is_file() and not model.exists()
    assert (reports / "train_summary.json").is_file()  # the new run replaces it


# --- In train_model --------------------------------------------------------------------------

@pytest.mark.slow
def test_training_over_a_model_keeps_the_old_one(fake_data, tiny_model, tmp_path, capsys):
    """A run over an existing model moves it aside, with its files, and says so in one
    line; a run that fails on its data first moves nothing."""
    from network.train_model import main

    models, reports = tmp_path / "models", tmp_path / "reports"
    model = old_run(models, reports)
    model.write_bytes(tiny_model.read_bytes())
    before = {**contents(models), **contents(reports)}
    paths = ["--model-path", model, "--output-dir", reports]

    code, _, err = run_main(main, [*FAST, *paths, "--subset", 301, "--data-dir", fake_data],
                            capsys)
    assert code == 1 and "larger than the 300 training images" in err
    assert {**contents(models), **contents(reports)} == before  # nothing moved

    code, out, err = run_main(main, [*FAST, *paths, "--subset", 200, "--data-dir", fake_data],
                              capsys)
    assert code == 0, err[-3000:]
    (line,) = [line for line in out.splitlines() if line.startswith("Kept the previous")]
    kept = models / "previous" / "2025-05-03_14-22-10-cpu-57.5pct"
    assert str(kept.name) in line
    assert {name: data for name, data in contents(kept).items()} == before
    assert model.is_file() and model.read_bytes() != tiny_model.read_bytes()  # the new one
    summary = json.loads((reports / "train_summary.json").read_text())
    assert summary["settings"]["subset"] == 200
    assert "1 epoch in" in out and "1 epochs" not in out


@pytest.mark.slow
def test_quick_and_subset_runs_leave_the_real_results_alone(fake_data, tmp_path, monkeypatch,
                                                            capsys):
    """--subset without paths, and --quick, write to the quick folders and say so; the
    real model and reports stay byte-identical."""
    from network.core import cli
    from network.train_model import main

    real_model, real_reports = tmp_path / "models" / "best_model.h5", tmp_path / "reports"
    quick_model, quick_reports = tmp_path / "models" / "quick" / "best_model.h5", \
        tmp_path / "reports" / "quick"
    monkeypatch.setattr(cli, "DEFAULT_MODEL_PATH", real_model)
    monkeypatch.setattr(cli, "DEFAULT_OUTPUT_DIR", real_reports)
    monkeypatch.setattr(cli, "QUICK_MODEL_PATH", quick_model)
    monkeypatch.setattr(cli, "QUICK_OUTPUT_DIR", quick_reports)
    old_run(real_model.parent, real_reports)
    before = contents(tmp_path)

    code, out, err = run_main(main, [*FAST, "--subset", 200, "--data-dir", fake_data], capsys)
    assert code == 0, err[-3000:]
    assert "A --subset run is a quick try" in out and cli.display_path(quick_model) in out
    assert quick_model.is_file() and (quick_reports / "train_summary.json").is_file()

    code, out, err = run_main(main, [*FAST, "--quick", "--subset", 150, "--data-dir",
                                     fake_data], capsys)
    assert code == 0, err[-3000:]
    assert "Quick run: the model goes to" in out
    assert json.loads((quick_reports / "train_summary.json").read_text())[
        "settings"]["subset"] == 150
    assert (quick_model.parent / "previous").is_dir()  # the first quick model, kept
    after = contents(tmp_path)
    assert {k: v for k, v in after.items() if k.split("/")[1:2] != ["quick"]} == before


# --- The options ------------------------------------------------------------------------------

@pytest.fixture
def project(tmp_path, monkeypatch):
    """The default folders, moved into a temporary project."""
    from network.core import cli

    monkeypatch.delenv("LAB_QUICK", raising=False)
    for name, path in (("DEFAULT_MODEL_PATH", "models/best_model.h5"),
                       ("DEFAULT_OUTPUT_DIR", "reports"),
                       ("QUICK_MODEL_PATH", "models/quick/best_model.h5"),
                       ("QUICK_OUTPUT_DIR", "reports/quick")):
        monkeypatch.setattr(cli, name, tmp_path / path)
    return tmp_path


@pytest.mark.parametrize("script", ["train_model", "evaluate_model", "test_model",
                                    "make_report"])
def test_quick_folders_are_the_defaults_of_a_quick_run(script, project, monkeypatch):
    import importlib

    parse_args = importlib.import_module(f"network.{script}").parse_args
    predictions = "/predictions" if script == "test_model" else ""
    for argv, env, quick in ((["--quick"], "", True), ([], "1", True),
                             (["--no-quick"], "1", False), ([], "", False)):
        monkeypatch.setenv("LAB_QUICK", env)
        args = parse_args(argv)
        folder = "quick/" if quick else ""
        assert args.model_path == project / f"models/{folder}best_model.h5", (argv, env)
        assert args.output_dir.as_posix() == (project / f"reports/{folder}").as_posix().rstrip(
            "/") + predictions, (argv, env)
    given = parse_args(["--quick", "--model-path", str(project / "m.h5")])
    assert given.model_path == project / "m.h5"


def test_quick_training_is_small_unless_told_otherwise(project):
    from network.train_model import QUICK_EPOCHS, QUICK_SUBSET, parse_args

    args = parse_args(["--quick"])
    assert (args.subset, args.epochs) == (QUICK_SUBSET, QUICK_EPOCHS)
    assert "Quick run: the model goes to" in args.quick_note
    args = parse_args(["--quick", "--subset", "500", "--epochs", "5"])
    assert (args.subset, args.epochs) == (500, 5)
    args = parse_args(["--subset", "500"])  # quick folders, but the epochs it asked for
    assert args.epochs is None and args.model_path == project / "models/quick/best_model.h5"
    assert args.quick_note.startswith("A --subset run is a quick try")
    args = parse_args(["--subset", "500", "--model-path", str(project / "m.h5"),
                       "--output-dir", str(project / "out")])
    assert args.quick_note is None
    assert parse_args([]).quick_note is None and parse_args([]).subset is None


# --- Messages that fit the machine -----------------------------------------------------------

@pytest.mark.parametrize("gpu", [True, False])
def test_no_model_yet_names_the_command_for_this_machine(gpu, project, monkeypatch):
    from network.core import cli, runtime

    monkeypatch.setattr(runtime, "nvidia_driver_present", lambda: gpu)
    cpu = "" if gpu else " --recipe cpu"
    with pytest.raises(cli.LabError) as real:
        cli.require_model_file(project / "models" / "best_model.h5")
    message = str(real.value)
    assert message.startswith("no trained model yet")
    assert f"python -m network.train_model{cpu} (or" in message
    assert f"python -m network.train_model --quick{cpu}, then add --quick here" in message
    with pytest.raises(cli.LabError) as quick:
        cli.require_model_file(project / "models" / "quick" / "best_model.h5")
    assert str(quick.value).startswith("no quick model yet")
    assert f"python -m network.train_model --quick{cpu} (a minute or two)" in str(quick.value)


def test_make_report_without_a_quick_model_says_how_to_train_one(project, capsys, monkeypatch):
    from network import make_report
    from network.core import runtime

    monkeypatch.setattr(runtime, "nvidia_driver_present", lambda: False)
    code, _, err = run_main(make_report.main, ["--quick"], capsys)
    assert code == 1
    assert "no quick model yet" in err and "train_model --quick --recipe cpu" in err
    assert not (project / "reports" / "report.html").exists()


def test_counts_have_their_plural():
    from network.core.cli import plural

    assert [plural(n, "epoch") for n in (0, 1, 2, 12_000)] == [
        "0 epochs", "1 epoch", "2 epochs", "12,000 epochs"]
