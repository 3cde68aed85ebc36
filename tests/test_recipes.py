"""Recipes: overrides, the AdamW schedule, precision choice and time-budget planning."""

import dataclasses
import subprocess
import sys

import keras
import numpy as np
import pytest

from network.training.recipes import RECIPES, recipe_with


def test_recipes_import_no_keras():
    code = ("import sys, network.training.recipes, network.train_model; "
            "print([m for m in ('keras', 'tensorflow', 'jax', 'torch') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_recipe_with_replaces_only_given_fields():
    recipe = recipe_with("fast", epochs=3, width=None)
    assert recipe.epochs == 3 and recipe.width == RECIPES["fast"].width
    with pytest.raises(TypeError):
        recipe_with("fast", colour="red")


def test_schedule_warms_up_to_the_peak_and_decays_to_zero():
    from network.model_utils import learning_rate_schedule

    recipe = dataclasses.replace(RECIPES["fast"], learning_rate=2e-3, warmup_epochs=2)
    schedule = learning_rate_schedule(recipe, steps_per_epoch=10, epochs=6)
    lr = [float(schedule(step)) for step in range(61)]
    assert lr[0] == pytest.approx(2e-4)            # lr / 10 at the start
    assert max(lr) == pytest.approx(2e-3) and int(np.argmax(lr)) == 20  # peak after warm-up
    assert all(a <= b for a, b in zip(lr[:20], lr[1:21]))  # rising, then falling
    assert all(a >= b for a, b in zip(lr[20:60], lr[21:61]))
    assert lr[60] == pytest.approx(0.0, abs=1e-9)  # nothing left at the end


def test_lab_recipe_keeps_adams_constant_rate():
    from network.model_utils import compile_for_recipe

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(100, activation="softmax")])
    compile_for_recipe(model, RECIPES["lab"], steps_per_epoch=10)
    assert type(model.optimizer).__name__ == "Adam"
    assert float(model.optimizer.learning_rate) == pytest.approx(1e-4)


@pytest.fixture
def restore_policy():
    yield
    keras.mixed_precision.set_global_policy("float32")


def test_auto_precision_follows_the_recipe_and_the_gpu(restore_policy, monkeypatch):
    """The fast recipe trains in the precision runtime.precision_for gives the GPU; the
    other recipes, and a machine without a GPU, in float32; an explicit choice wins."""
    from network.core import runtime
    from network.model_utils import auto_precision, set_precision

    t4, a100 = (runtime.Device("jax", "GPU", name, capability)
                for name, capability in (("Tesla T4", (7, 5)), ("NVIDIA A100", (8, 0))))
    assert auto_precision(RECIPES["fast"], [t4]) == "mixed_float16"
    assert auto_precision(RECIPES["fast"], [a100]) == "mixed_bfloat16"
    assert auto_precision(RECIPES["fast"], []) == "float32"
    assert auto_precision(RECIPES["cpu"], [a100]) == auto_precision(RECIPES["lab"], [t4]) == (
        "float32")
    monkeypatch.setattr(runtime, "accelerator_devices", lambda backend: [t4])
    assert set_precision("auto", RECIPES["fast"]) == "mixed_float16"
    assert keras.mixed_precision.global_policy().name == "mixed_float16"
    assert set_precision("float32", RECIPES["fast"]) == "float32"


@pytest.mark.parametrize("policy, scaled", [("mixed_float16", True),
                                             ("mixed_bfloat16", False)])  # float32's range
def test_float16_training_scales_its_loss(policy, scaled, restore_policy):
    """Under mixed_float16, compile_for_recipe's optimizers (AdamW, and the lab's Adam) are
    wrapped in Keras's LossScaleOptimizer, so small gradients do not underflow to 0."""
    from network.model_utils import build_for_recipe, compile_for_recipe

    keras.mixed_precision.set_global_policy(policy)
    for recipe in ("fast", "lab"):
        model = build_for_recipe(recipe_with("fast", width=0.0625), 100)
        compile_for_recipe(model, RECIPES[recipe], steps_per_epoch=10)
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer) == scaled


def test_the_cpu_recipes_sizes_grow_and_start_with_one_that_always_fits():
    rungs = RECIPES["cpu"].rungs
    assert rungs[0].min_epochs == 1  # the smallest is trained whatever the budget
    assert [r.width for r in rungs] == sorted(r.width for r in rungs) and len(rungs) > 1
