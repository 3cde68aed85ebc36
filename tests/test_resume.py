"""Resuming an interrupted training run: a real kill, and the state carried across."""

import csv
import json
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from helpers import ROOT, child_env, run_main
from network.core.errors import LabError

EPOCHS = 6
# A tiny ResNet-9 with a validation split (so the checkpoint keeps the best val_loss):
# about 0.3 s per epoch after a compilation of some seconds, so the kill lands mid-run.
TRAIN = ("--recipe", "fast", "--width", "0.0625", "--epochs", str(EPOCHS), "--subset", "200",
         "--batch-size", "20", "--val-split", "0.2", "--allow-md5-mismatch", "--no-show")


def history_epochs(path):
    with open(path, newline="") as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


def start_and_kill(argv, out, log):
    """Start training, SIGKILL it once two epochs are logged and backed up; return the
    epoch its backup reached."""
    with open(log, "w") as sink:
        process = subprocess.Popen([sys.executable, "-m", "network.train_model", *map(str, argv)],
                                   cwd=ROOT, env=child_env(), stdout=sink,
                                   stderr=subprocess.STDOUT)
    state_path = out / "resume" / "state.json"
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and process.poll() is None:
            history = out / "history.csv"
            if (state_path.is_file() and history.is_file()
                    and len(history.read_text().splitlines()) >= 3):
                break
            time.sleep(0.02)
        assert process.poll() is None, f"training ended before the kill:\n{log.read_text()}"
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == -signal.SIGKILL
    return json.loads(state_path.read_text())["epoch"]


@pytest.mark.slow
def test_killed_run_resumes_from_its_last_finished_epoch(fake_data, tmp_path, capsys):
    """A run killed mid-way (its own process), then resumed in this one."""
    from network.model_utils import load_model
    from network.train_model import main

    out, model_path = tmp_path / "reports", tmp_path / "models" / "best_model.h5"
    paths = ["--data-dir", fake_data, "--output-dir", out, "--model-path", model_path]
    finished = start_and_kill([*TRAIN, *paths], out, tmp_path / "killed.log")
    assert 1 <= finished < EPOCHS
    assert model_path.is_file()  # the best model of the finished epochs

    # Starting again without a choice is refused, saying what to do.
    code, _, err = run_main(main, [*TRAIN, *paths], capsys)
    assert code == 1
    assert "interrupted run" in err and "--resume" in err and "--restart" in err
    assert (out / "resume" / "state.json").is_file()  # nothing was thrown away

    # --resume needs no other option: the run's settings were saved.
    code, stdout, err = run_main(main, ["--resume", "--output-dir", out, "--model-path",
                                        model_path, "--no-show"], capsys)
    assert code == 0, stdout[-3000:] + err[-3000:]
    assert f"Resuming the interrupted run after epoch {finished} " in stdout
    epochs_run = [int(n) for n in re.findall(rf"^Epoch (\d+)/{EPOCHS}$", stdout, flags=re.M)]
    assert epochs_run == list(range(finished + 1, EPOCHS + 1))

    assert history_epochs(out / "history.csv") == list(range(1, EPOCHS + 1))  # each once
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["epochs_run"] == EPOCHS
    assert summary["resumed_after_epoch"] == finished
    assert f"{EPOCHS - finished} epochs in" in stdout
    assert summary["settings"]["recipe"] == "fast" and summary["settings"]["subset"] == 200
    assert not (out / "resume").exists()  # the finished run leaves no backup
    model = load_model(model_path)
    assert model.name == "resnet9"


@pytest.mark.slow
def test_ctrl_c_keeps_the_run_and_says_how_to_resume(fake_data, tmp_path, capsys, monkeypatch):
    """Ctrl-C after a finished epoch: exit status 130, the backup stays, and the message
    names --resume."""
    import keras

    from network import train_model
    from network.training import callbacks as train_callbacks

    class CtrlC(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt

    make_callbacks = train_callbacks.make_callbacks

    def interrupted(*args, **kwargs):
        callbacks, checkpoint, budget = make_callbacks(*args, **kwargs)
        return [*callbacks, CtrlC()], checkpoint, budget

    monkeypatch.setattr(train_callbacks, "make_callbacks", interrupted)
    out = tmp_path / "reports"
    code, _, err = run_main(train_model.main, [
        "--recipe", "fast", "--width", "0.0625", "--epochs", 3, "--subset", 64,
        "--allow-md5-mismatch", "--no-show", "--data-dir", fake_data, "--output-dir", out,
        "--model-path", tmp_path / "models" / "best_model.h5"], capsys)
    assert code == 130
    assert "interrupted" in err and "--resume" in err and "Traceback" not in err
    assert json.loads((out / "resume" / "state.json").read_text())["epoch"] == 1


# --- The pieces, without a subprocess ------------------------------------------------------

def compiled_model():
    import keras

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="categorical_crossentropy")
    return model


def test_early_stopping_state_survives_a_restart(tmp_path):
    """wait, best and best epoch written by StateWriter come back in a new process's
    ResumableEarlyStopping, with the best weights from the checkpoint, and patience
    counts on from there."""
    from network.training.callbacks import AtomicCheckpoint, ResumableEarlyStopping, StateWriter

    model_path, state_path = tmp_path / "best_model.h5", tmp_path / "resume" / "state.json"
    state_path.parent.mkdir()
    model = compiled_model()
    model.optimizer.build(model.trainable_variables)
    checkpoint = AtomicCheckpoint(model_path, verbose=0)
    early_stop = ResumableEarlyStopping(monitor="val_loss", patience=3, restore_best_weights=True)
    writer = StateWriter(state_path, checkpoint, early_stop)
    callbacks = [checkpoint, early_stop, writer]
    for callback in callbacks:
        callback.set_model(model)
        callback.on_train_begin()
    best_weights = None
    for epoch, val_loss in enumerate([1.0, 0.8, 0.9, 0.95]):
        model.set_weights([w + 0.1 for w in model.get_weights()])
        if epoch == 1:
            best_weights = [w.copy() for w in model.get_weights()]
        for callback in callbacks:
            callback.on_epoch_end(epoch, {"val_loss": val_loss})

    state = json.loads(state_path.read_text())
    assert state["epoch"] == 4 and state["checkpoint_best"] == pytest.approx(0.8)
    assert (state["es_wait"], state["es_best"], state["es_best_epoch"]) == (2, 0.8, 1)

    # A new run (fresh objects) picks the counters up.
    resumed = ResumableEarlyStopping(state=state, best_model_path=model_path, monitor="val_loss",
                                     patience=3, restore_best_weights=True, verbose=0)
    resumed.set_model(compiled_model())
    resumed.on_train_begin()
    assert (resumed.wait, resumed.best, resumed.best_epoch) == (2, 0.8, 1)
    for got, want in zip(resumed.best_weights, best_weights):
        np.testing.assert_allclose(got, want)
    resumed.on_epoch_end(4, {"val_loss": 0.85})  # the third epoch without improvement
    assert resumed.model.stop_training
    assert resumed.stopped_epoch == 4


def test_early_stopping_without_state_starts_afresh():
    from network.training.callbacks import ResumableEarlyStopping

    early_stop = ResumableEarlyStopping(state={"epoch": 3, "es_best": None},
                                        monitor="val_loss", patience=2)
    early_stop.set_model(compiled_model())
    early_stop.on_train_begin()
    assert (early_stop.wait, early_stop.best) == (0, None)


@pytest.mark.slow
def test_backup_restores_weights_and_optimizer(tmp_path):
    """StateWriter's backup brings back the weights and the optimizer's step count and
    moments, and keeps only the latest backup."""
    from network.training.callbacks import AtomicCheckpoint, StateWriter, restore_backup

    state_path = tmp_path / "state.json"
    model = compiled_model()
    checkpoint = AtomicCheckpoint(tmp_path / "best_model.h5", monitor=None, verbose=0)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(32, 4)), np.eye(3)[rng.integers(0, 3, 32)]
    model.fit(x, y, epochs=3, batch_size=8, verbose=0,
              callbacks=[checkpoint, StateWriter(state_path, checkpoint)])
    state = json.loads(state_path.read_text())
    assert state["epoch"] == 3 and state["weights"] == "epoch-3.weights.h5"
    assert sorted(p.name for p in tmp_path.glob("*.h5")) == ["best_model.h5",
                                                            "epoch-3.weights.h5"]
    assert not list(tmp_path.glob(".*"))  # no partial files

    fresh = compiled_model()
    assert restore_backup(fresh, tmp_path, state) == 3
    for got, want in zip(fresh.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(got, want)
    assert int(fresh.optimizer.iterations) == int(model.optimizer.iterations) == 12
    for got, want in zip(fresh.optimizer.variables, model.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_resume_trims_history_to_the_backed_up_epochs(tmp_path):
    """Rows logged after the last backup (or half-written by the kill) are dropped."""
    from network.training.callbacks import AtomicCheckpoint, StateWriter, restore_backup

    model = compiled_model()
    model.optimizer.build(model.trainable_variables)
    checkpoint = AtomicCheckpoint(tmp_path / "best_model.h5", monitor=None, verbose=0)
    writer = StateWriter(tmp_path / "state.json", checkpoint)
    writer.set_model(model)
    writer.on_epoch_end(1, {})  # two epochs backed up
    history = tmp_path / "history.csv"
    history.write_text("epoch,loss\n1,4.1\n2,3.9\n3,3.7\n4,3.")  # epoch 3 logged, 4 half-written
    state = json.loads((tmp_path / "state.json").read_text())
    assert restore_backup(compiled_model(), tmp_path, state, history) == 2
    assert history.read_text() == "epoch,loss\n1,4.1\n2,3.9\n"


def test_damaged_backup_says_restart(tmp_path):
    from network.training.callbacks import restore_backup

    with pytest.raises(LabError, match="--restart"):
        restore_backup(compiled_model(), tmp_path, {"epoch": 2, "weights": "missing.weights.h5"},
                       tmp_path / "history.csv")


@pytest.mark.parametrize("content", ["{not json", "[]", '{"no_epoch": 1}'])
def test_damaged_state_file_says_restart(content, tmp_path, capsys):
    from network.train_model import main

    resume = tmp_path / "reports" / "resume"
    resume.mkdir(parents=True)
    (resume / "run.json").write_text('{"recipe": "lab"}')
    (resume / "state.json").write_text(content)
    code, _, err = run_main(main, ["--resume", "--output-dir", tmp_path / "reports",
                                   "--model-path", tmp_path / "m" / "best_model.h5"], capsys)
    assert code == 1
    assert "is damaged" in err and "--restart" in err


def test_resume_without_an_interrupted_run(tmp_path, capsys):
    from network.train_model import main

    code, _, err = run_main(main, ["--resume", "--output-dir", tmp_path / "reports",
                                   "--model-path", tmp_path / "m" / "best_model.h5"], capsys)
    assert code == 1
    assert "no interrupted run to resume" in err


def test_resume_keeps_the_runs_settings_and_says_which_options_it_ignores(tmp_path, capsys):
    from network.train_model import parse_args, resume_note
    from network.training.recipes import Run, start_or_resume

    resume = tmp_path / "reports" / "resume"
    resume.mkdir(parents=True)
    (resume / "run.json").write_text('{"recipe": "lab", "epochs": 7}')
    (resume / "state.json").write_text('{"epoch": 3}')
    args = parse_args(["--resume", "--epochs", "50", "--batch-size", "8", "--output-dir",
                       str(tmp_path / "reports"), "--model-path", str(tmp_path / "m" / "m.h5")])
    run, state = start_or_resume(Run.from_args(args), resume, resume=True)
    assert run.recipe.epochs == 7 and run.recipe.batch_size == 64 and state["epoch"] == 3
    resume_note(args, run, state)
    out = capsys.readouterr().out
    assert "Resuming the interrupted run after epoch 3" in out
    assert "--epochs, --batch-size ignored" in out


def test_restart_that_fails_on_its_data_keeps_the_interrupted_run(tmp_path, fake_data, capsys):
    """--restart discards the interrupted run only once the new one starts training."""
    from network.train_model import main

    resume = tmp_path / "reports" / "resume"
    resume.mkdir(parents=True)
    (resume / "run.json").write_text('{"recipe": "lab"}')
    (resume / "state.json").write_text('{"epoch": 3}')
    code, _, err = run_main(main, ["--restart", "--data-dir", fake_data, "--output-dir",
                                   tmp_path / "reports", "--model-path",
                                   tmp_path / "m" / "best_model.h5"], capsys)
    assert code == 1 and "MD5" in err  # the synthetic files are not the official ones
    assert sorted(p.name for p in resume.iterdir()) == ["run.json", "state.json"]
