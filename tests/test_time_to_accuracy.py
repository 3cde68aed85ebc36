"""benchmarks/time_to_accuracy.py: T_lab from the lab recipe's speed, a budget of K lab
epochs, and the JSON, CSV and figure it writes."""

import csv
import json

import pytest

from benchmarks import time_to_accuracy
from network.core.errors import LabError


def test_t_lab_is_one_lab_epoch_of_40000_images_at_the_timed_speed(monkeypatch):
    """0.5 s per step of 64 images: 625 steps, 312.5 s; compiling is not counted."""
    from network.training import budget

    timed = {}

    def fake_time_steps(model, images, labels, batch_size, steps):
        timed.update(network=model.name, batch_size=batch_size, dtype=str(images.dtype))
        return 0.5, 7.0

    monkeypatch.setattr(budget, "time_steps", fake_time_steps)
    lab = time_to_accuracy.lab_epoch_seconds(steps=2)
    assert lab["seconds"] == pytest.approx(312.5) and lab["compile_s"] == 7.0
    assert lab["images_per_s"] == pytest.approx(128)
    # the manual's CNN at its batch size, fed float32 as training feeds it
    assert timed == {"network": "lab_cnn", "batch_size": 64, "dtype": "float32"}


def test_a_result_names_folders_not_this_machines_paths(tmp_path, monkeypatch):
    data, keep = tmp_path / "cifar-100-python", tmp_path / "runs" / "3lab"
    settings = {"data_dir": str(data), "model_path": str(keep / "models" / "best_model.h5"),
                "output_dir": str(keep / "reports"), "recipe": "cpu", "seed": 1,
                "elsewhere": str(tmp_path / "img")}
    monkeypatch.setenv("CIFAR100_DIR", str(data))
    names = {data: time_to_accuracy.data_dir_name(data), keep: "KEEP_DIR"}
    assert time_to_accuracy.named_folders(settings, names) == {
        **settings, "data_dir": "$CIFAR100_DIR",
        "model_path": "KEEP_DIR/models/best_model.h5", "output_dir": "KEEP_DIR/reports"}
    monkeypatch.delenv("CIFAR100_DIR")  # the default folder, or one given by --data-dir
    assert time_to_accuracy.data_dir_name(data) == "DATA_DIR"


@pytest.mark.slow
def test_a_budget_of_lab_epochs_trains_the_cpu_recipe_and_writes_its_curve(
        fake_data, tmp_path, monkeypatch):
    monkeypatch.setattr(time_to_accuracy, "lab_epoch_seconds",
                        lambda: {"seconds": 60.0, "images_per_s": 1000.0, "timed_steps": 1,
                                 "compile_s": 1.0})
    out = tmp_path / "results"
    code = time_to_accuracy.main([
        "--recipe", "cpu", "--seed", "3", "--lab-epochs", "0.5", "--data-dir", str(fake_data),
        "--out", str(out), "--", "--allow-md5-mismatch", "--subset", "200",
        "--batch-size", "50", "--width", "0.25"])  # one size to time: a short plan
    assert code == 0
    stem = "cpu-seed3-0.5lab"
    result = json.loads((out / f"{stem}.json").read_text())
    assert result["lab_epoch"]["seconds"] == 60.0 and result["budget_lab_epochs"] == 0.5
    assert "--minutes 0.500 " in result["command"]  # 0.5 x 60 s
    assert result["settings"]["minutes"] is None  # planned: the size fixed, the clock runs
    assert result["settings"]["planned_epoch_s"] > 0 and result["settings"]["seed"] == 3
    # Trained until the clock said the budget was spent: the rate reached 0. How exactly
    # a budget is spent is test_budget.py's (a fake clock, 97-102 %); here, on a busy
    # 2-core runner, a budget of 30 s is mostly compiling, so no overrun is bounded.
    budget = result["budget"]
    assert budget["seconds"] == 30.0 and budget["share_spent"] >= 0.9
    assert budget["final_learning_rate"] < 0.01 * budget["peak_learning_rate"]
    assert isinstance(result["machine"]["cpu_flags"], list)
    # no folder of this machine: the data by name, the removed temporary folder as such
    assert result["settings"]["data_dir"] == "DATA_DIR"
    assert result["settings"]["model_path"] == "TEMP_DIR/models/best_model.h5"
    rows = list(csv.DictReader((out / f"{stem}.csv").open()))
    assert len(rows) == len(result["epochs"]) >= 1
    assert [float(r["train_s"]) for r in rows] == sorted(float(r["train_s"]) for r in rows)
    assert (out / f"{stem}.png").stat().st_size > 10_000
    # Test-time flip averaging, apart from the model's own score, on the same test images
    flipped = result["test_flip_averaged"]
    assert set(flipped) == {"accuracy", "top5_accuracy"} and 0 <= flipped["accuracy"] <= 1
    assert flipped["top5_accuracy"] >= flipped["accuracy"]


def test_a_given_t_lab_is_used_as_it_is_and_needs_a_budget(monkeypatch, capsys):
    def stop_with_budget(args, budget, record):
        raise SystemExit(" ".join(budget))

    monkeypatch.setattr(time_to_accuracy, "lab_epoch_seconds", lambda: pytest.fail("timed"))
    monkeypatch.setattr(time_to_accuracy, "train", stop_with_budget)
    with pytest.raises(SystemExit, match="--minutes 5.000"):
        time_to_accuracy.main(["--lab-epochs", "0.5", "--lab-seconds", "600"])
    with pytest.raises(SystemExit):
        time_to_accuracy.parse_args(["--lab-seconds", "600"])
    assert "--lab-seconds needs --lab-epochs" in capsys.readouterr().err


@pytest.mark.slow
def test_an_interrupted_run_resumes_with_its_curve_t_lab_and_clock(
        fake_data, tmp_path, monkeypatch):
    """A run in two parts, as on a slow laptop: Ctrl-C after the first epoch, then
    --resume. The curve goes on from the kept one, the budget's clock carries over,
    and the options given again are the kept ones, not the command line's."""
    monkeypatch.setattr(time_to_accuracy, "lab_epoch_seconds",
                        lambda: {"seconds": 60.0, "images_per_s": 1000.0, "timed_steps": 1,
                                 "compile_s": 1.0})
    keeper = time_to_accuracy.curve_keeper

    def interrupted_after_first_epoch(path, record):
        callback = keeper(path, record)
        kept = callback.on_epoch_end

        def on_epoch_end(epoch, logs=None):
            kept(epoch, logs)  # the epoch's row is kept, then the user presses Ctrl-C
            raise KeyboardInterrupt

        callback.on_epoch_end = on_epoch_end
        return callback

    monkeypatch.setattr(time_to_accuracy, "curve_keeper", interrupted_after_first_epoch)
    from network.training import budget

    started_at = []  # the seconds each part's clock starts from

    class SpiedClock(budget.Clock):
        def __init__(self, budget_s, spent=0.0, **kwargs):
            started_at.append(spent)
            super().__init__(budget_s, spent=spent, **kwargs)

    monkeypatch.setattr(budget, "Clock", SpiedClock)
    out, keep = tmp_path / "results", tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        time_to_accuracy.main([
            "--recipe", "cpu", "--seed", "4", "--lab-epochs", "0.5", "--data-dir",
            str(fake_data), "--out", str(out), "--keep", str(keep), "--tag", "parts", "--",
            "--allow-md5-mismatch", "--subset", "200", "--batch-size", "50", "--width", "0.25"])
    kept = json.loads((keep / "curve.json").read_text())
    assert [row["epoch"] for row in kept["rows"]] == [1] and kept["parts"] == 1
    assert not (out / "cpu-seed4-0.5lab-parts.json").exists()

    monkeypatch.setattr(time_to_accuracy, "curve_keeper", keeper)
    monkeypatch.setattr(time_to_accuracy, "lab_epoch_seconds", lambda: pytest.fail("timed"))
    assert time_to_accuracy.main(["--resume", "--keep", str(keep), "--data-dir", str(fake_data),
                                  "--out", str(out), "--seed", "9"]) == 0
    result = json.loads((out / "cpu-seed4-0.5lab-parts.json").read_text())
    assert result["parts"] == 2 and result["settings"]["seed"] == 4
    assert result["settings"]["output_dir"] == "KEEP_DIR/reports"
    assert result["lab_epoch"]["seconds"] == 60.0 and result["budget"]["seconds"] == 30.0
    epochs = [row["epoch"] for row in result["epochs"]]
    assert epochs == list(range(1, len(epochs) + 1)) and len(epochs) >= 2
    assert result["epochs"][0]["train_s"] == round(kept["rows"][0]["clock_s"], 1)
    seconds = [row["train_s"] for row in result["epochs"]]
    assert seconds == sorted(seconds)
    # The clock carried over: the second part started from the first part's seconds
    # (those of its kept epoch, saved a moment apart), and both trained to the budget's end.
    assert started_at[0] == 0.0 and started_at[1] > 0.5 * kept["rows"][0]["clock_s"] > 0
    assert result["budget"]["spent_s"] >= round(started_at[1], 1)
    assert result["budget"]["share_spent"] >= 0.9
    assert result["budget"]["final_learning_rate"] < 0.01 * result["budget"]["peak_learning_rate"]
    assert result["process_s"] > kept["process_s"]


def test_resume_needs_the_folder_of_a_kept_budgeted_run(tmp_path, capsys):
    with pytest.raises(SystemExit):
        time_to_accuracy.parse_args(["--resume"])
    assert "--resume needs --keep DIR" in capsys.readouterr().err
    with pytest.raises(LabError, match="no run to resume"):
        time_to_accuracy.main(["--resume", "--keep", str(tmp_path)])
    (tmp_path / "curve.json").write_text("{not json")
    with pytest.raises(LabError, match="damaged"):
        time_to_accuracy.main(["--resume", "--keep", str(tmp_path)])
    (tmp_path / "curve.json").write_text(json.dumps({
        "settings": {"recipe": "cpu", "seed": 1, "tag": "", "lab_epochs": None,
                     "train_options": []}, "lab_epoch": None, "budget": [], "rows": []}))
    with pytest.raises(LabError, match="no time budget"):
        time_to_accuracy.main(["--resume", "--keep", str(tmp_path)])
