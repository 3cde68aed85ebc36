"""Training's callbacks never force a host-device sync per batch.

Keras dispatches training steps asynchronously only while every callback's
per-batch hooks are left alone or marked ``async_safe``; one that is not (such
as Keras's ``TerminateOnNaN``) makes the loop wait for each step's results. The
check below reads the hooks off each callback's class (what a callback overrides is
public), on every backend alike.
"""

import keras
import pytest

from network.training.recipes import RECIPES

# Every per-batch hook of keras.callbacks.Callback (Keras itself looks at the *_end ones).
BATCH_HOOKS = ("on_batch_begin", "on_batch_end", "on_train_batch_begin", "on_train_batch_end",
               "on_test_batch_begin", "on_test_batch_end", "on_predict_batch_begin",
               "on_predict_batch_end")


def per_batch_hooks(callback):
    """The batch hooks ``callback`` overrides, unless it declares itself async-safe."""
    if getattr(callback, "async_safe", False):
        return []
    return [name for name in BATCH_HOOKS
            if getattr(type(callback), name) is not getattr(keras.callbacks.Callback, name)]


@pytest.mark.parametrize("recipe", sorted(RECIPES))
@pytest.mark.parametrize("has_val", [True, False])
@pytest.mark.parametrize("budgeted", [True, False])
def test_no_callback_of_train_model_works_per_batch(recipe, has_val, budgeted, tmp_path):
    """make_callbacks' callbacks, a time budget's clock among them when there is one."""
    from network.train_model import parse_args
    from network.training.budget import Clock
    from network.training.callbacks import make_callbacks
    from network.training.recipes import Run

    args = parse_args(["--recipe", recipe, "--epochs", "3", "--output-dir",
                       str(tmp_path / "out"), "--model-path",
                       str(tmp_path / "m" / "best_model.h5")])
    (tmp_path / "out" / "resume").mkdir(parents=True)
    run = Run.from_args(args)
    clock = Clock(60.0) if budgeted else None
    callbacks, _, budget = make_callbacks(run, {}, tmp_path / "out" / "resume", has_val,
                                          clock, progress_every_s=60, cpu=True)
    names = {type(c).__name__ for c in callbacks}
    assert {"AtomicCheckpoint", "StateWriter", "HistoryLogger", "Progress"} <= names
    assert ("BudgetClock" in names) == budgeted == (budget is not None)
    assert ("ResumableEarlyStopping" in names) == (has_val and recipe == "lab")
    assert {type(c).__name__: per_batch_hooks(c) for c in callbacks} == {
        type(c).__name__: [] for c in callbacks}
