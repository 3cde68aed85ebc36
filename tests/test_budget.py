"""The time budget follows the clock: on a fake clock, a machine that keeps its speed,
speeds up or slows down trains for its whole budget and no longer, the learning rate
ends at zero, a resumed run continues the clock, and a budget too small is refused."""

import contextlib
import dataclasses
import json

import keras
import numpy as np
import pytest

from network.core.errors import LabError
from network.training.budget import Clock, learning_rate_at, plan_run
from network.training.callbacks import BudgetClock
from network.training.recipes import RECIPES, Run

PEAK = 0.01
STEPS = 10  # steps per epoch: 80 images in batches of 8


class FakeTime:
    """A clock that only moves when the fake machine says so."""

    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


class Machine(keras.callbacks.Callback):
    """Advances the fake time as a machine would: ``step_s(n)`` seconds for step n, and
    ``tail_s`` for each epoch's closing work (the hold-out, the checkpoint)."""

    def __init__(self, time, step_s, tail_s=2.0):
        super().__init__()
        self.time, self.step_s, self.tail_s, self.steps = time, step_s, tail_s, 0

    def on_train_batch_end(self, batch, logs=None):
        self.time.t += self.step_s(self.steps)
        self.steps += 1

    def on_epoch_end(self, epoch, logs=None):
        self.time.t += self.tail_s


class Rates(keras.callbacks.Callback):
    """The learning rate each step ran at."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def on_train_batch_begin(self, batch, logs=None):
        self.seen.append(float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))


def train_on_fake_clock(step_s, budget_s=100.0, spent=0.0, warmup=0.1, peak=PEAK):
    """Train a tiny model until the budget's callback stops it; returns (time, clock
    callback, machine, rates)."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer=keras.optimizers.AdamW(PEAK / 10), loss="categorical_crossentropy")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(80, 4)), keras.utils.to_categorical(rng.integers(0, 3, 80), 3)
    time = FakeTime()
    clock = Clock(budget_s, spent=spent, now=time)
    machine, budget, rates = Machine(time, step_s), BudgetClock(clock, peak, warmup), Rates()
    # The machine first (it moves the time as a step ends), the budget last: in
    # train_model it closes the list, after the checkpoint and the backup.
    model.fit(x, y, batch_size=8, epochs=1000, verbose=0, callbacks=[machine, budget, rates])
    return time, budget, machine, rates


def assert_spends_its_budget(time, budget, budget_s=100.0):
    assert 0.97 * budget_s <= time.t <= 1.02 * budget_s
    summary = budget.summary()
    assert summary["final_learning_rate"] == pytest.approx(0.0, abs=PEAK * 1e-3)
    assert summary["share_spent"] == pytest.approx(time.t / budget_s, abs=1e-3)


def test_a_steady_machine_trains_for_its_whole_budget_and_the_rate_ends_at_zero():
    time, budget, machine, rates = train_on_fake_clock(lambda n: 1.0)
    assert_spends_its_budget(time, budget)
    # 10 s of steps and 2 s of closing work an epoch: about 8 epochs in 100 s
    assert 7.5 <= budget.summary()["epochs"] <= 8.5
    assert rates.seen[0] == pytest.approx(PEAK / 10)          # the warm-up starts low,
    assert max(rates.seen) == pytest.approx(PEAK, rel=0.05)   # reaches the peak,
    top = int(np.argmax(rates.seen))
    assert np.all(np.diff(rates.seen[top:]) <= 1e-12)         # then only decays


@pytest.mark.parametrize("change", ["speeds up", "slows down"])
def test_a_machine_whose_speed_changes_still_spends_exactly_its_budget(change):
    """Planned from its first steps, such a run would stop far too early or too late;
    following the clock, the epochs change instead of the run's length."""
    fast, slow = 0.5, 2.0
    first, then = (slow, fast) if change == "speeds up" else (fast, slow)
    time, budget, machine, _ = train_on_fake_clock(lambda n: first if n < 20 else then)
    assert_spends_its_budget(time, budget)
    planned_from_first_steps = 100.0 / (STEPS * first + 2.0)
    trained = budget.summary()["epochs"]
    if change == "speeds up":
        assert trained > 1.5 * planned_from_first_steps
    else:
        assert trained < 0.6 * planned_from_first_steps


def test_the_lab_recipe_stops_at_its_budget_too_with_its_constant_rate():
    """Adam at the manual's constant rate (no peak to schedule): the clock only stops it,
    mid-epoch where the budget ends there."""
    time, budget, machine, rates = train_on_fake_clock(lambda n: 7.0, peak=None)
    assert 0.97 * 100 <= time.t <= 1.02 * 100
    assert rates.seen == [pytest.approx(PEAK / 10)] * len(rates.seen)  # as compiled
    assert machine.steps % STEPS != 0  # the last epoch ended early: 100 s is not whole epochs
    assert budget.summary()["final_learning_rate"] is None


def test_a_resumed_run_continues_the_clock_from_the_time_spent():
    """60 s were spent before the interruption: 40 s are left, and the rate goes on
    from where 60 % of the budget puts it, not from a new warm-up."""
    time, budget, machine, rates = train_on_fake_clock(lambda n: 1.0, spent=60.0)
    assert 0.97 * 40 <= time.t <= 1.02 * 40
    assert budget.summary()["spent_s"] == pytest.approx(60 + time.t, abs=0.1)
    assert rates.seen[0] < learning_rate_at(0.55, PEAK, 0.1)
    assert rates.seen[0] > learning_rate_at(0.70, PEAK, 0.1)


def test_measurement_time_is_not_charged_to_the_budget():
    time = FakeTime()
    clock = Clock(100.0, now=time)

    class Scorer:
        uncounted_s = 30.0

    clock.uncounted = [Scorer()]
    time.t = 50.0
    assert clock.spent() == pytest.approx(20.0) and clock.left() == pytest.approx(80.0)


def test_the_schedule_warms_up_then_decays_to_zero_at_the_budget():
    assert learning_rate_at(0.0, PEAK, 0.1) == pytest.approx(PEAK / 10)
    assert learning_rate_at(0.1, PEAK, 0.1) == pytest.approx(PEAK)
    assert learning_rate_at(0.55, PEAK, 0.1) == pytest.approx(PEAK / 2)
    assert learning_rate_at(1.0, PEAK, 0.1) == pytest.approx(0.0, abs=1e-12)
    rates = [learning_rate_at(f, PEAK, 0.1) for f in np.linspace(0.1, 1, 50)]
    assert np.all(np.diff(rates) < 0)


# --- Planning ------------------------------------------------------------------------

def tiny_run(minutes, rungs=()):
    recipe = dataclasses.replace(RECIPES["cpu"], width=0.0625, minutes=minutes, batch_size=8,
                                 rungs=rungs)
    rng = np.random.default_rng(0)
    train = (rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8), rng.integers(0, 100, 40))
    return Run(recipe, data_dir="d", model_path="m.h5", output_dir="o"), train


@pytest.fixture
def one_second_a_step(monkeypatch):
    """Every size trains at 1 s a step (5 steps an epoch), whatever this machine's speed."""
    from network.training import budget

    monkeypatch.setattr(budget, "time_steps", lambda *args, **kwargs: (1.0, 0.0))


def test_a_budget_too_small_for_one_epoch_is_refused_with_the_least_that_works(
        one_second_a_step):
    run, train = tiny_run(minutes=0.05)  # 3 s, and one epoch takes 5 x 1 s x the margin
    clock = Clock(3.0, now=lambda: 0.0)
    with pytest.raises(LabError) as err:
        plan_run(run, train, contextlib.nullcontext(), clock, seed=0)
    message = str(err.value)
    assert "--minutes 0.05 is too short on this machine" in message and "\n" not in message
    least = float(message.split("give --minutes ")[1].split(" ")[0])
    assert least == 0.2  # one epoch (6.5 s) and nothing spent, in tenths of a minute up


def test_a_planned_run_keeps_its_budget_and_no_count_of_epochs(one_second_a_step):
    run, train = tiny_run(minutes=1.0)
    stopped = Clock(60.0, now=lambda: 0.0)  # building the model takes no budget here
    planned, model = plan_run(run, train, contextlib.nullcontext(), stopped, seed=0)
    assert planned.budget_s == 60.0 and planned.recipe.minutes is None
    assert planned.recipe.epochs >= 1000  # only a cap: the clock ends the run
    # the warm-up's share: the recipe's warm-up epochs over the epochs that fit (~9)
    assert planned.warmup_fraction == pytest.approx(0.25 / (60 / 6.5), rel=0.05)
    saved = Run.from_dict(json.loads(json.dumps(planned.as_dict())))
    assert saved.budget_s == 60.0 and saved.warmup_fraction == planned.warmup_fraction


@pytest.mark.parametrize("minutes, width", [(0.2, 0.0625), (100, 0.125)])
def test_the_budget_picks_the_largest_size_that_gets_its_epochs_in(minutes, width, capsys,
                                                                   one_second_a_step):
    """A generous budget trains the bigger rung; a tight one the smaller, and says so."""
    from network.training.recipes import Rung

    rungs = (Rung(0.0625, 2, min_epochs=1), Rung(0.125, 2, min_epochs=2))
    run, train = tiny_run(minutes, rungs=rungs)
    stopped = Clock(minutes * 60, now=lambda: 0.0)
    planned, model = plan_run(run, train, contextlib.nullcontext(), stopped, seed=0)
    assert planned.recipe.width == width and planned.recipe.rungs == ()
    assert model.get_layer("prep_conv").filters == round(64 * width)
    assert f"ResNet-9 ×{width:g}, stride-2 stem" in capsys.readouterr().out


@pytest.mark.slow
def test_cli_refuses_a_budget_too_small_and_replaces_nothing(fake_data, tmp_path, capsys):
    """The one-line answer, and the files of the model it would have replaced stay."""
    from helpers import run_main
    from network import train_model

    models = tmp_path / "models"
    models.mkdir()
    (models / "best_model.h5").write_bytes(b"the student's model")
    (models / "class_names.json").write_text("{}")
    code, out, err = run_main(train_model.main, [
        "--recipe", "cpu", "--minutes", "0.001", "--data-dir", fake_data,
        "--allow-md5-mismatch", "--model-path", models / "best_model.h5",
        "--output-dir", tmp_path / "reports", "--no-show"], capsys)
    assert code == 1
    assert "--minutes 0.001 is too short on this machine" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert (models / "best_model.h5").read_bytes() == b"the student's model"
    assert (models / "class_names.json").read_text() == "{}"
