"""train_model: impossible options, NaN loss, and a checkpoint that is never half-written."""

import numpy as np
import pytest

from helpers import assert_clean_error, run_cli, run_main

# A tiny ResNet-9 on the synthetic data: seconds per run on a CPU.
FAST = ("--recipe", "fast", "--width", "0.0625", "--batch-size", "64", "--allow-md5-mismatch",
        "--no-show")


# --- Impossible options -----------------------------------------------------------------

def test_cli_refuses_zero_epochs_before_any_work(fake_data, tmp_path):
    """Through the real command line: argparse's exit status 2 and usage line, no traceback."""
    out = tmp_path / "reports"
    result = run_cli("train_model", "--epochs", 0, "--data-dir", fake_data,
                     "--output-dir", out, "--model-path", tmp_path / "m" / "best_model.h5")
    assert result.returncode == 2
    assert_clean_error(result, "usage: train_model", "--epochs: must be at least 1, got 0")
    assert not out.exists()


def test_help_runs_as_a_file():
    """python network/train_model.py, as an IDE runs it, finds the package."""
    result = run_cli("train_model", "--help", file_mode=True)
    assert result.returncode == 0
    assert "--recipe" in result.stdout


def test_every_recipe_is_a_choice_and_builds_its_network():
    from network.model_utils import NETWORKS
    from network.train_model import parse_args
    from network.training.recipes import RECIPES

    for name, recipe in RECIPES.items():
        assert parse_args(["--recipe", name]).recipe == name
        assert recipe.network in NETWORKS and recipe.optimizer in ("adam", "adamw")


def test_options_override_the_recipe_and_the_rest_stays():
    from network.train_model import parse_args
    from network.training.recipes import RECIPES, Run

    run = Run.from_args(parse_args(["--recipe", "cpu", "--epochs", "9", "--width", "0.5"]))
    assert (run.recipe.epochs, run.recipe.width) == (9, 0.5)
    assert run.recipe.learning_rate == RECIPES["cpu"].learning_rate
    assert run.recipe.name == "cpu" and run.subset is None
    assert run.recipe.rungs == ()  # --width fixes the size: the budget chooses none


def test_stem_stride_reaches_every_size_the_budget_may_choose():
    """--stem-stride 1 (full resolution) applies to each size the cpu recipe's budget may
    time and choose, and with --width to the one fixed size, down to the built network."""
    from network.model_utils import build_for_recipe
    from network.train_model import parse_args
    from network.training.budget import candidate_recipes
    from network.training.recipes import RECIPES, Run

    assert {rung.stem_stride for rung in RECIPES["cpu"].rungs} == {2}  # the recipe's own
    run = Run.from_args(parse_args(["--recipe", "cpu", "--stem-stride", "1"]))
    assert [r.width for r in run.recipe.rungs] == [r.width for r in RECIPES["cpu"].rungs]
    assert [c.stem_stride for c, _ in candidate_recipes(run.recipe)] == [1] * len(
        RECIPES["cpu"].rungs)
    assert run.recipe.minutes == RECIPES["cpu"].minutes  # still a time budget
    fixed = Run.from_args(parse_args(["--recipe", "cpu", "--width", "0.125",
                                      "--stem-stride", "1"]))
    assert (fixed.recipe.stem_stride, fixed.recipe.rungs) == (1, ())
    assert build_for_recipe(fixed.recipe).get_layer("prep_conv").strides == (1, 1)
    assert build_for_recipe(RECIPES["cpu"]).get_layer("prep_conv").strides == (2, 2)


def test_fixed_epochs_replace_the_time_budget_and_survive_a_resume():
    """--epochs without --minutes means exactly that many epochs: no time budget, in the
    run and in what is saved for --resume."""
    from network.train_model import parse_args
    from network.training.recipes import RECIPES, Run

    run = Run.from_args(parse_args(["--recipe", "cpu", "--epochs", "12"]))
    assert run.recipe.epochs == 12 and run.recipe.minutes is None
    assert RECIPES["cpu"].minutes is not None  # the recipe's own budget was there to drop
    assert Run.from_dict(run.as_dict()) == run
    both = Run.from_args(parse_args(["--recipe", "cpu", "--epochs", "12", "--minutes", "5"]))
    assert (both.recipe.epochs, both.recipe.minutes) == (12, 5)  # a budget, at most 12


@pytest.mark.parametrize("options, message", [
    (["--epochs", "0"], "--epochs: must be at least 1"),
    (["--epochs", "-1"], "--epochs: must be at least 1, got -1"),
    (["--epochs", "two"], "--epochs: expected a whole number"),
    (["--batch-size", "0"], "--batch-size: must be at least 1"),
    (["--subset", "50001"], "--subset 50001 is larger than the 50000 training images"),
    (["--subset", "0"], "--subset: must be at least 1"),
    (["--recipe", "turbo"], "--recipe: invalid choice: 'turbo'"),
    (["--val-split", "1.5"], "--val-split: must lie in [0, 1), got 1.5"),
    (["--val-split", "-0.1"], "--val-split: must lie in [0, 1)"),
    (["--val-split", "nan"], "--val-split: must lie in [0, 1)"),
    (["--learning-rate", "0"], "--learning-rate: must be a positive number"),
    (["--learning-rate", "inf"], "--learning-rate: must be a positive number"),
    (["--width", "-2"], "--width: must be a positive number"),
    (["--stem-stride", "3"], "--stem-stride: invalid choice: 3"),
    (["--resume", "--restart"], "--resume and --restart exclude each other"),
])
def test_impossible_options_are_refused(options, message, fake_data, tmp_path, capsys):
    from network.train_model import main

    out = tmp_path / "reports"
    code, stdout, err = run_main(main, [*options, "--data-dir", fake_data, "--output-dir", out,
                                        "--model-path", tmp_path / "m" / "best_model.h5"], capsys)
    assert code == 2
    assert err.startswith("usage: train_model")
    assert message in err
    assert not out.exists() and not (tmp_path / "m").exists()  # nothing was done
    assert "Training on" not in stdout


@pytest.mark.parametrize("option", ["--output-dir", "--model-path"])
def test_unwritable_folder_is_refused(option, fake_data, tmp_path, capsys):
    """A folder that cannot be created (its parent is a regular file). Tests run as
    root, for whom permission bits do not block writing, so a file is the obstacle."""
    from network.train_model import main

    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    target = blocker / "sub" / ("best_model.h5" if option == "--model-path" else "reports")
    argv = ["--data-dir", fake_data, "--output-dir", tmp_path / "reports",
            "--model-path", tmp_path / "models" / "best_model.h5", option, target]
    code, _, err = run_main(main, argv, capsys)
    assert code == 2
    assert err.startswith("usage: train_model")
    assert "cannot create" in err and str(blocker) in err
    assert blocker.read_text() == "not a folder"


def test_model_path_needs_a_keras_suffix(fake_data, tmp_path, capsys):
    from network.train_model import main

    code, _, err = run_main(main, ["--data-dir", fake_data, "--output-dir", tmp_path / "r",
                                   "--model-path", tmp_path / "m" / "model.pt"], capsys)
    assert code == 2
    assert "--model-path must end in .h5 or .keras" in err
    assert not (tmp_path / "m").exists()


def test_subset_larger_than_the_data_files(fake_data, tmp_path, capsys):
    """The synthetic train file has 300 images: 301 is refused once the data is read."""
    from network.train_model import main

    code, _, err = run_main(main, [*FAST, "--subset", 301, "--data-dir", fake_data,
                                   "--output-dir", tmp_path / "r",
                                   "--model-path", tmp_path / "m" / "best_model.h5"], capsys)
    assert code == 1
    assert "--subset 301 is larger than the 300 training images" in err
    assert not (tmp_path / "m" / "best_model.h5").exists()


# --- What a run trains ----------------------------------------------------------------------

@pytest.mark.slow
def test_cpu_recipe_with_fixed_epochs_and_width_trains_exactly_those(fake_data, tmp_path,
                                                                      capsys):
    """--recipe cpu --epochs 2 --width 0.125: two epochs, with no time budget planned or
    left for a resume, of the ResNet-9 at that width (the recipe's default is 0.25) with
    the recipe's stride-2 stem."""
    import json

    from network.model_utils import build_resnet9, load_model
    from network.train_model import main
    from network.training.recipes import RECIPES

    out, model_path = tmp_path / "reports", tmp_path / "models" / "best_model.h5"
    code, stdout, err = run_main(main, [
        "--recipe", "cpu", "--epochs", 2, "--width", 0.125, "--subset", 300,
        "--batch-size", 64, "--allow-md5-mismatch", "--no-show", "--data-dir", fake_data,
        "--output-dir", out, "--model-path", model_path], capsys)
    assert code == 0, err[-3000:]
    assert RECIPES["cpu"].width != 0.125 and RECIPES["cpu"].minutes  # both really overridden
    assert "Time budget" not in stdout  # nothing was planned

    summary = json.loads((out / "train_summary.json").read_text())
    settings = summary["settings"]
    assert (settings["recipe"], settings["epochs"], settings["width"]) == ("cpu", 2, 0.125)
    assert settings["minutes"] is None and settings.get("planned_epoch_s") is None
    assert summary["epochs_run"] == 2
    assert [int(line.split(",")[0]) for line in
            (out / "history.csv").read_text().splitlines()[1:]] == [1, 2]

    expected = build_resnet9(width=0.125, stem_stride=2).count_params()
    assert expected != build_resnet9(width=RECIPES["cpu"].width, stem_stride=2).count_params()
    assert summary["parameters"] == expected
    stem = load_model(model_path).get_layer("prep_conv")
    assert (stem.filters, stem.strides) == (8, (2, 2))  # 64 x 0.125, the cpu recipe's stem


# --- NaN loss ------------------------------------------------------------------------------

@pytest.mark.slow
def test_nan_loss_stops_training_with_a_clear_message(fake_data, tmp_path, capsys):
    """A learning rate of 1e12 makes the loss NaN within the first epoch."""
    from network.train_model import main

    out, model_path = tmp_path / "reports", tmp_path / "models" / "best_model.h5"
    code, _, err = run_main(main, [*FAST, "--learning-rate", "1e12", "--epochs", 3,
                                   "--subset", 300, "--data-dir", fake_data, "--output-dir", out,
                                   "--model-path", model_path], capsys)
    assert code == 1
    assert "loss became NaN" in err and "--learning-rate" in err
    assert "before any model was saved" in err
    assert not model_path.exists()  # a NaN model is never saved
    history = (out / "history.csv").read_text().splitlines()
    assert len(history) == 2  # header + the one epoch that diverged: training stopped
    assert not (out / "resume").exists()


@pytest.mark.slow
def test_nan_after_a_good_epoch_keeps_the_saved_model(fake_data, tmp_path, capsys, monkeypatch):
    """Epoch 1 trains normally and is saved; then the weights are poisoned with NaN.
    Training stops, the message says where the model is, and that model still loads.
    (Without a validation split the checkpoint keeps the latest model: the NaN one
    must not replace it. The val_loss mode is covered by the unit tests below.)"""
    import keras

    from network import train_model
    from network.model_utils import load_model
    from network.training import callbacks as train_callbacks

    class PoisonWeights(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                weights = self.model.get_weights()
                self.model.set_weights([np.full_like(w, np.nan) for w in weights])

    make_callbacks = train_callbacks.make_callbacks

    def poisoned(*args, **kwargs):
        callbacks, checkpoint, budget = make_callbacks(*args, **kwargs)
        return [PoisonWeights(), *callbacks], checkpoint, budget

    monkeypatch.setattr(train_callbacks, "make_callbacks", poisoned)
    out, model_path = tmp_path / "reports", tmp_path / "models" / "best_model.h5"
    code, _, err = run_main(train_model.main, [
        *FAST, "--epochs", 3, "--subset", 160, "--data-dir", fake_data,
        "--output-dir", out, "--model-path", model_path], capsys)
    assert code == 1
    assert "loss became NaN (epoch 2)" in err
    assert f"best model so far is kept in {model_path}" in err
    model = load_model(model_path)
    assert all(np.isfinite(w).all() for w in model.get_weights())
    probs = model.predict(np.zeros((2, 32, 32, 3), np.uint8), verbose=0)
    assert np.isfinite(probs).all()


# --- The checkpoint ---------------------------------------------------------------------

def tiny_model():
    import keras

    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])


def test_crash_during_save_keeps_the_previous_model(tmp_path, monkeypatch):
    """A save that dies half-way (garbage written, then an error) leaves the previous
    best_model.h5 intact and loadable, and no partial file behind."""
    import keras

    from network.training.callbacks import AtomicCheckpoint

    path = tmp_path / "best_model.h5"
    model = tiny_model()
    checkpoint = AtomicCheckpoint(path, verbose=0)
    checkpoint.set_model(model)
    checkpoint.on_epoch_end(0, {"val_loss": 1.0})
    saved = [w.copy() for w in model.get_weights()]
    before = path.read_bytes()

    model.set_weights([w + 1 for w in saved])

    def crashing_save(filepath, *args, **kwargs):
        with open(filepath, "wb") as f:
            f.write(b"\x89HDF\r\n half a model")
        raise OSError("disk full")

    monkeypatch.setattr(model, "save", crashing_save)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.on_epoch_end(1, {"val_loss": 0.5})

    assert path.read_bytes() == before
    reloaded = keras.saving.load_model(path, compile=False)
    for got, want in zip(reloaded.get_weights(), saved):
        np.testing.assert_array_equal(got, want)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best_model.h5"]
    assert checkpoint.best == 1.0  # the failed save does not count as the new best


def test_checkpoint_keeps_the_best_and_skips_nan(tmp_path):
    from network.training.callbacks import AtomicCheckpoint

    path = tmp_path / "best_model.h5"
    model = tiny_model()
    checkpoint = AtomicCheckpoint(path, verbose=0)
    checkpoint.set_model(model)
    assert not checkpoint.saved
    checkpoint.on_epoch_end(0, {"val_loss": 2.0})
    first = path.stat().st_mtime_ns, path.read_bytes()
    for epoch, val_loss in enumerate([3.0, float("nan"), float("inf")], start=1):
        model.set_weights([w + 1 for w in model.get_weights()])
        checkpoint.on_epoch_end(epoch, {"val_loss": val_loss})
        assert (path.stat().st_mtime_ns, path.read_bytes()) == first
    checkpoint.on_epoch_end(4, {"val_loss": 1.5})
    assert checkpoint.best == 1.5 and checkpoint.saved
    assert path.read_bytes() != first[1]


def test_checkpoint_without_validation_saves_the_latest_finite_model(tmp_path):
    from network.training.callbacks import AtomicCheckpoint

    path = tmp_path / "best_model.h5"
    model = tiny_model()
    checkpoint = AtomicCheckpoint(path, monitor=None, verbose=0)
    checkpoint.set_model(model)
    checkpoint.on_epoch_end(0, {"loss": 4.0})
    first = path.read_bytes()
    model.set_weights([w + 1 for w in model.get_weights()])
    checkpoint.on_epoch_end(1, {"loss": 4.5})  # worse, but the latest: saved
    second = path.read_bytes()
    assert second != first
    model.set_weights([np.full_like(w, np.nan) for w in model.get_weights()])
    checkpoint.on_epoch_end(2, {"loss": float("nan")})  # a diverged model: not saved
    assert path.read_bytes() == second

