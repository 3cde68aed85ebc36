"""Fit a training run into a time budget on the machine at hand.

``--minutes M`` (the cpu recipe: 15 by default) asks for as much training as
fits in M minutes. The speed of a network differs fourfold and more from one
CPU to another, so it is measured, not assumed: a few training steps are
timed after a first one that compiles. From the recipe's sizes (its *rungs*,
smallest first) the planner keeps the largest that still gets its
``min_epochs`` in; a fast CPU thus trains a bigger network, a slow one a
smaller one. The optimizer is then set up afresh with a learning-rate
schedule for exactly the planned epochs.

Usage:

    from network.training.budget import plan_run
    run, model = plan_run(run, train, scope, started)   # run: a network.training.recipes.Run
"""

import dataclasses
import math
import time

from network.data_utils import NUM_CLASSES, one_hot

PROBE_STEPS = 6      # timed training steps per size (after one that compiles)
EPOCH_MARGIN = 1.3   # a whole epoch's time over PROBE_STEPS' (see epoch_seconds)


def time_steps(model, images, labels, batch_size, steps=PROBE_STEPS):
    """Seconds per training step of ``model`` (compiled), and the seconds its first
    step spent compiling. The timed steps run at the warm-up's starting rate, so
    they do the model no harm."""
    full = min(steps + 1, len(images) // batch_size) * batch_size  # whole batches: one shape
    x, y = images[:max(full, batch_size)], one_hot(labels[:max(full, batch_size)], NUM_CLASSES)
    first = time.perf_counter()
    model.fit(x[:batch_size], y[:batch_size], batch_size=batch_size, epochs=1, verbose=0)
    timed = time.perf_counter()
    if full < 2 * batch_size:  # too few images to time apart from compiling: an overestimate
        return timed - first, 0.0
    model.fit(x[batch_size:], y[batch_size:], batch_size=batch_size, epochs=1, verbose=0)
    step_s = (time.perf_counter() - timed) / (full // batch_size - 1)
    return step_s, max(0.0, timed - first - step_s)


def epoch_seconds(step_s, images, batch_size):
    """A whole epoch's expected time from the timed steps.

    Whole epochs run slower than a few steps straight after compiling (on a
    2-core VM by 26 %: the clock settles, the data are shuffled, the hold-out is
    evaluated and the checkpoint saved), hence the margin.
    """
    return math.ceil(images / batch_size) * step_s * EPOCH_MARGIN


def candidate_recipes(recipe):
    """(recipe at that size, rung) for each size the budget may choose, smallest first;
    a recipe without rungs is its own only candidate."""
    if not recipe.rungs:
        return [(recipe, None)]
    return [(dataclasses.replace(recipe, width=rung.width, stem_stride=rung.stem_stride), rung)
            for rung in recipe.rungs]


def plan_run(run, train, scope, started, seed=None):
    """The run with its size and epochs chosen for the budget, and its model compiled
    for them. ``started``: when the budget's clock started (``time.perf_counter()``)."""
    from network.model_utils import build_for_recipe, compile_for_recipe, model_images

    recipe, batch = run.recipe, run.recipe.batch_size
    steps = math.ceil(len(train[0]) / batch)
    choice = None
    for candidate, rung in candidate_recipes(recipe):
        if choice is not None and choice[2] < rung.min_epochs:
            break  # a bigger network runs slower still: no need to time it
        with scope:  # MirroredStrategy needs the model and optimizer built in its scope
            model = compile_for_recipe(build_for_recipe(candidate, NUM_CLASSES, seed=seed),
                                       candidate, steps)
        probe = model_images(model, train[0][:(PROBE_STEPS + 1) * batch])
        step_s, compile_s = time_steps(model, probe, train[1], batch)
        epoch_s = epoch_seconds(step_s, len(train[0]), batch)
        left = recipe.minutes * 60 - (time.perf_counter() - started) - compile_s
        epochs = max(1, min(recipe.epochs, int(left // epoch_s)))
        if choice is not None and epochs < rung.min_epochs:
            break  # a bigger network would get too few epochs in
        choice = (candidate, model, epochs, epoch_s)
    candidate, model, epochs, epoch_s = choice
    planned = dataclasses.replace(candidate, epochs=epochs, minutes=None, rungs=())
    with scope:
        compile_for_recipe(model, planned, steps)
    print(f"Time budget {recipe.minutes:g} min: {describe_network(planned)}, "
          f"{epochs} epoch{'s' * (epochs > 1)} of ~{epoch_s:.0f} s (schedule set for them)")
    return dataclasses.replace(run, recipe=planned, planned_epoch_s=round(epoch_s, 1)), model


def describe_network(recipe):
    """The network in a few words, e.g. "ResNet-9 ×0.5, stride-2 stem"."""
    if recipe.network != "resnet9":
        return "the lab's CNN"
    stem = ", stride-2 stem" if recipe.stem_stride == 2 else ""
    return f"ResNet-9 ×{recipe.width:g}{stem}"
