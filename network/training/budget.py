"""Fit a training run into a time budget on the machine at hand, following the clock.

``--minutes M`` (the cpu recipe: 15 by default) asks for as much training as
fits in M minutes, planning included. The budget, not the epoch count, is the
schedule's unit (Li, Yumer & Ramanan, "Budgeted Training", ICLR 2020):

1. Plan. The speed of a network differs fourfold and more from one CPU to
   another, so it is measured: a few training steps of each of the recipe's
   sizes (its *rungs*, smallest first) are timed after a first one that
   compiles, and the largest size that still gets its ``min_epochs`` in is
   kept. A fast CPU thus trains a bigger network, a slow one a smaller one. The
   probes' time is charged to the budget. A budget too small for one epoch of
   the smallest size is refused with the least ``--minutes`` that works here.
2. Train. ``callbacks.BudgetClock`` looks at the clock before every step: the
   learning rate is a function of the share of the budget spent (warm-up, then
   cosine decay to zero exactly at the budget, :func:`learning_rate_at`), and
   training stops when the budget is spent, mid-epoch if need be (the last
   partial epoch still ends with the hold-out evaluation and a saved model).
   A machine that speeds up or slows down within the run changes the number
   of epochs, which is an outcome, not the length of the run.

``--resume`` continues the clock from the time the interrupted run had spent.

Usage:

    from network.training.budget import plan_run
    run, model = plan_run(run, train, scope, clock)   # run: a network.training.recipes.Run
"""

import dataclasses
import math
import time

from network.core.errors import LabError
from network.data_utils import NUM_CLASSES, one_hot

PROBE_STEPS = 6      # timed training steps per size (after one that compiles)
EPOCH_MARGIN = 1.3   # a whole epoch's time over PROBE_STEPS' (see epoch_seconds)
MAX_EPOCHS = 10_000  # fit's epochs for a budgeted run: the clock ends it long before
EVAL_COST = 1 / 3    # seconds to evaluate an image, over those to train on it (forward only)


class Clock:
    """The budget's clock: seconds spent, counting from ``spent`` at the clock's start.

    ``now`` is the time source (``time.perf_counter``; tests pass a fake one).
    Seconds that measurement callbacks declare (their ``uncounted_s``, e.g. a
    benchmark scoring the test set after each epoch) are left out.
    """

    def __init__(self, budget_s, spent=0.0, now=time.perf_counter):
        self.budget_s, self.now = float(budget_s), now
        self.started, self.spent_before = now(), float(spent)
        self.uncounted = []  # callbacks whose uncounted_s the budget does not count

    def spent(self):
        left_out = sum(getattr(c, "uncounted_s", 0.0) for c in self.uncounted)
        return self.spent_before + self.now() - self.started - left_out

    def left(self):
        return self.budget_s - self.spent()


def learning_rate_at(fraction, peak, warmup):
    """The learning rate once ``fraction`` of the budget is spent: a linear warm-up from
    peak/10 over the first ``warmup`` of the budget, then a cosine decay to 0 at 1."""
    if fraction < warmup:
        return peak / 10 + (peak - peak / 10) * fraction / warmup
    decay = min(1.0, (fraction - warmup) / max(1e-9, 1 - warmup))
    return peak * 0.5 * (1 + math.cos(math.pi * decay))


def time_steps(model, images, labels, batch_size, steps=PROBE_STEPS):
    """Seconds per training step of ``model`` (compiled), and the seconds its first
    step spent compiling. The weights are put back after, and the optimizer's state
    (its step count and moments) set back to zero, so the timed steps leave no trace;
    the model stays compiled (compiling again would trace the training step again)."""
    import keras

    full = min(steps + 1, len(images) // batch_size) * batch_size  # whole batches: one shape
    x, y = images[:max(full, batch_size)], one_hot(labels[:max(full, batch_size)], NUM_CLASSES)
    weights = model.get_weights()
    first = time.perf_counter()
    model.fit(x[:batch_size], y[:batch_size], batch_size=batch_size, epochs=1, verbose=0)
    timed = time.perf_counter()
    if full < 2 * batch_size:  # too few images to time apart from compiling: an overestimate
        step_s, compile_s = timed - first, 0.0
    else:
        model.fit(x[batch_size:], y[batch_size:], batch_size=batch_size, epochs=1, verbose=0)
        step_s = (time.perf_counter() - timed) / (full // batch_size - 1)
        compile_s = max(0.0, timed - first - step_s)
    model.set_weights(weights)
    for variable in model.optimizer.variables:
        if variable.name != "learning_rate":  # a budget's rate is set by its clock
            variable.assign(keras.ops.zeros_like(variable))
    return step_s, compile_s


def timed_epoch_seconds(model, train, batch_size, val_images=0):
    """An epoch's expected time for ``model`` (compiled) on ``train`` (uint8 images,
    labels), from a few timed steps that leave no trace in the model."""
    from network.model_utils import model_images

    probe = model_images(model, train[0][:(PROBE_STEPS + 1) * batch_size])
    step_s, _ = time_steps(model, probe, train[1], batch_size)
    return epoch_seconds(step_s, len(train[0]), batch_size, val_images)


def epoch_seconds(step_s, images, batch_size, val_images=0):
    """A whole epoch's expected time from the timed steps, the hold-out's evaluation
    included.

    Whole epochs run slower than a few steps straight after compiling (on a
    2-core VM by 26 %: the clock settles, the data are shuffled, the checkpoint
    is saved), hence the margin. It only sizes the network: the schedule itself
    follows the clock.
    """
    steps = math.ceil(images / batch_size) + EVAL_COST * math.ceil(val_images / batch_size)
    return steps * step_s * EPOCH_MARGIN


def closing_seconds(epoch_s, images, val_images):
    """The share of an expected epoch spent after its last step (the hold-out's
    evaluation): the budget's first guess, until a whole epoch has been measured."""
    evaluated = EVAL_COST * val_images
    return epoch_s * evaluated / max(1.0, images + evaluated)


def candidate_recipes(recipe):
    """(recipe at that size, rung) for each size the budget may choose, smallest first;
    a recipe without rungs is its own only candidate."""
    if not recipe.rungs:
        return [(recipe, None)]
    return [(dataclasses.replace(recipe, width=rung.width, stem_stride=rung.stem_stride), rung)
            for rung in recipe.rungs]


def too_small(clock, epoch_s, recipe):
    """The one-line answer for a budget that cannot fit one epoch of the smallest size."""
    least = math.ceil((clock.spent() + epoch_s) / 60 * 10) / 10
    hint = " (or --recipe cpu, sized to this machine)" if recipe.network == "lab_cnn" else ""
    return LabError(
        f"--minutes {clock.budget_s / 60:g} is too short on this machine: planning took "
        f"{clock.spent():.0f} s and one epoch of {describe_network(recipe)} takes about "
        f"{epoch_s:.0f} s here; give --minutes {least:g} or more{hint}")


def plan_run(run, train, scope, clock, seed=None, val_images=0):
    """The run with its size chosen for the budget, and its model compiled for it.

    ``clock``: the budget's :class:`Clock` (started before the data were split).
    The returned run trains until the clock says the budget is spent (its
    ``budget_s``); its ``recipe.epochs`` is only a cap.
    """
    from network.core.cli import plural
    from network.model_utils import build_for_recipe, compile_for_recipe

    recipe, batch = run.recipe, run.recipe.batch_size
    steps = math.ceil(len(train[0]) / batch)
    choice = None
    for candidate, rung in candidate_recipes(recipe):
        if choice is not None and choice[2] < rung.min_epochs:
            break  # a bigger network runs slower still: no need to time it
        with scope:  # MirroredStrategy needs the model and optimizer built in its scope
            model = compile_for_recipe(build_for_recipe(candidate, NUM_CLASSES, seed=seed),
                                       candidate, steps, budgeted=True)
        epoch_s = timed_epoch_seconds(model, train, batch, val_images)
        epochs = clock.left() / epoch_s
        if choice is None and epochs < 1:
            raise too_small(clock, epoch_s, candidate)
        if choice is not None and epochs < rung.min_epochs:
            break  # a bigger network would get too few epochs in
        choice = (candidate, model, epochs, epoch_s)
    candidate, model, epochs, epoch_s = choice
    warmup = min(0.5, candidate.warmup_epochs / max(1.0, epochs))
    planned = dataclasses.replace(candidate, epochs=MAX_EPOCHS, minutes=None, rungs=())
    print(f"Time budget {clock.budget_s / 60:g} min: {describe_network(planned)}, about "
          f"{plural(round(epochs), 'epoch')} of ~{epoch_s:.0f} s; the schedule follows the "
          f"clock ({clock.spent():.0f} s spent planning)")
    return dataclasses.replace(run, recipe=planned, planned_epoch_s=round(epoch_s, 1),
                               budget_s=clock.budget_s, warmup_fraction=round(warmup, 4)), model


def describe_network(recipe):
    """The network in a few words, e.g. "ResNet-9 ×0.5, stride-2 stem"."""
    if recipe.network != "resnet9":
        return "the lab's CNN"
    stem = ", stride-2 stem" if recipe.stem_stride == 2 else ""
    return f"ResNet-9 ×{recipe.width:g}{stem}"
