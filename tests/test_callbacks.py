"""Training's callbacks never force a host-device sync per batch.

Keras dispatches training steps asynchronously only while every callback's
per-batch hooks are left alone or marked ``async_safe``; one that is not (such
as Keras's ``TerminateOnNaN``) makes the loop wait for each step's results.
"""

import keras
import pytest

from network.recipes import RECIPES

BATCH_HOOKS = ("on_batch_begin", "on_batch_end", "on_train_batch_begin", "on_train_batch_end",
               "on_test_batch_begin", "on_test_batch_end")


def per_batch_hooks(callback):
    """The batch hooks ``callback`` overrides, unless it declares itself async-safe."""
    if getattr(callback, "async_safe", False):
        return []
    return [name for name in BATCH_HOOKS
            if getattr(type(callback), name) is not getattr(keras.callbacks.Callback, name)]


def test_the_check_catches_a_per_batch_callback():
    assert per_batch_hooks(keras.callbacks.TerminateOnNaN()) == ["on_batch_end"]
    assert per_batch_hooks(keras.callbacks.CSVLogger("x.csv")) == []


@pytest.mark.parametrize("recipe", sorted(RECIPES))
@pytest.mark.parametrize("has_val", [True, False])
def test_no_callback_of_train_model_works_per_batch(recipe, has_val, tmp_path):
    from network.recipes import Run
    from network.train_callbacks import make_callbacks
    from network.train_model import parse_args

    args = parse_args(["--recipe", recipe, "--output-dir", str(tmp_path / "out"),
                       "--model-path", str(tmp_path / "m" / "best_model.h5")])
    (tmp_path / "out" / "resume").mkdir(parents=True)
    callbacks, _ = make_callbacks(Run.from_args(args), {}, tmp_path / "out" / "resume", has_val)
    assert callbacks
    assert {type(c).__name__: per_batch_hooks(c) for c in callbacks} == {
        type(c).__name__: [] for c in callbacks}
    # Keras agrees: with these callbacks its loop may dispatch training asynchronously.
    callback_list = keras.callbacks.CallbackList(callbacks, add_history=True, add_progbar=True)
    if keras.src.backend.IS_THREAD_SAFE:
        assert callback_list._async_train
