"""The truth about time, up front: before the first epoch train_model says how long an
epoch and the whole run take here and, on a CPU where that is hours, the faster ways;
a log file gets a progress line at least once a minute."""

import dataclasses

import keras
import numpy as np
import pytest

from network.training.recipes import RECIPES, Run


def tiny_lab_shaped_run(recipe="lab"):
    """A recipe's run on 400 images in batches of 16 (20 steps an epoch, 25 with the
    hold-out), with a small ResNet-9 standing in for the network to keep it quick."""
    base = RECIPES[recipe]
    shown = dataclasses.replace(base, batch_size=16)
    rng = np.random.default_rng(0)
    train = (rng.integers(0, 256, (320, 32, 32, 3), dtype=np.uint8), rng.integers(0, 100, 320))
    val = (train[0][:80], train[1][:80])
    return Run(shown, data_dir="d", model_path="m.h5", output_dir="o"), train, val


def stand_in_model():
    from network.model_utils import build_for_recipe, compile_for_recipe

    small = dataclasses.replace(RECIPES["cpu"], width=0.0625, batch_size=16)
    return compile_for_recipe(build_for_recipe(small, 100, seed=0), small, 20)


@pytest.fixture
def eight_seconds_a_step(monkeypatch):
    from network.training import budget

    monkeypatch.setattr(budget, "time_steps", lambda *args, **kwargs: (8.0, 0.0))


@pytest.mark.parametrize("gpu", [False, True])
def test_the_lab_recipe_says_its_epoch_and_whole_run_time_before_training(
        gpu, eight_seconds_a_step, monkeypatch, capsys):
    """8 s a step: an epoch of 20 steps and 80 hold-out images (5 steps at a third of
    the cost) takes 20 x 8 x 1.3 + ... s; 100 epochs are hours, with early stopping's
    caveat. Without a GPU the faster ways follow, with the lab epoch's minutes."""
    from network import train_model
    from network.core import runtime
    from network.training.budget import epoch_seconds

    monkeypatch.setattr(runtime, "nvidia_driver_present", lambda: gpu)
    run, train, val = tiny_lab_shaped_run()
    epoch_s = train_model.estimate_time(stand_in_model(), run, train, val,
                                        initial_epoch=0)
    assert epoch_s == pytest.approx(epoch_seconds(8.0, 320, 16, 80))
    lines = capsys.readouterr().out.splitlines()
    minutes = round(epoch_s / 60)
    assert lines[0].startswith(f"Timed 6 steps: one epoch takes about {minutes} min here, "
                               "the whole run (100 epochs) up to ")
    assert lines[0].endswith("early stopping usually ends the lab recipe sooner.")
    assert f"{epoch_s * 100 / 3600:.1f} h" in lines[0]
    if gpu:
        assert len(lines) == 1
    else:
        assert lines[1].startswith(f"Faster on this CPU: --recipe cpu --minutes "
                                   f"{int(np.ceil(epoch_s / 60))} ")
        assert "--minutes M to train this network" in lines[1]


def test_a_resumed_run_counts_only_the_epochs_it_has_left(eight_seconds_a_step, capsys):
    from network import train_model

    run, train, val = tiny_lab_shaped_run("cpu")
    run = dataclasses.replace(run, recipe=dataclasses.replace(run.recipe, epochs=10))
    train_model.estimate_time(stand_in_model(), run, train, val, initial_epoch=9)
    out = capsys.readouterr().out
    assert "the whole run (1 epoch) up to" in out and "early stopping" not in out


def test_an_epoch_about_as_short_as_the_timing_is_not_timed(capsys):
    from network import train_model

    run, train, val = tiny_lab_shaped_run()
    few = (train[0][:64], train[1][:64])  # 4 steps: the first epoch says it soon enough
    assert train_model.estimate_time(None, run, few, val, 0) is None
    assert capsys.readouterr().out == ""


def test_a_log_file_gets_progress_lines_within_an_epoch(capsys):
    """Keras prints nothing inside an epoch when the output is not a terminal; Progress
    does (here every step, where train_model asks for once a minute)."""
    from network.training.callbacks import Progress

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    x, y = np.zeros((40, 4)), keras.utils.to_categorical(np.zeros(40), 3)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[Progress(every_s=0.0)])
    out = capsys.readouterr().out
    assert "epoch 1: step 2/5, " in out and "epoch 1: step 5/5, " in out


def test_a_cpu_run_without_a_budget_says_how_long_the_rest_takes_after_epoch_one(capsys):
    from network.training.callbacks import Progress

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    x, y = np.zeros((16, 4)), keras.utils.to_categorical(np.zeros(16), 3)
    model.fit(x, y, batch_size=8, epochs=3, verbose=0, callbacks=[Progress(None, cpu=True)])
    out = capsys.readouterr().out
    assert "On this CPU an epoch takes " in out and "for the remaining 2 epochs" in out
    assert out.count("On this CPU") == 1
