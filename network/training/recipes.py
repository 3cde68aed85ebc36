"""Training recipes, and a run: a recipe with the options of one training run.

A :class:`Recipe` is everything that distinguishes one way of training from
another; a :class:`Run` is one recipe plus how this run uses it (data, seed,
files). Both are frozen: the command line builds a ``Run`` once, the time
budget replaces it with the planned one, and the same object is saved for
``--resume`` (``run.json``, see :func:`start_or_resume`) and in
``train_summary.json``. The command-line options that override a recipe are
declared once, on the ``Recipe`` fields below (``help`` in their metadata).
This module imports no Keras, so ``--help``, option errors and a run that
cannot be resumed are answered at once.

Usage:

    from network.training.recipes import recipe_with
    recipe = recipe_with("cpu", epochs=12)        # RECIPES["cpu"] with 12 epochs
"""

import argparse
import dataclasses
import json
import shutil
from dataclasses import dataclass, field

from network.core import cli
from network.core.errors import LabError
from network.core.files import write_json_atomic


def option(help_text, default=dataclasses.MISSING, kind="positive", choices=None):
    """A ``Recipe`` field that a command-line option overrides (``--field-name``);
    ``kind`` is what the option accepts: "positive" (> 0), "fraction" ([0, 1)) or
    "switch" (``--name`` / ``--no-name``); ``choices`` narrows a positive one to a
    few values."""
    return field(default=default, metadata={"help": help_text, "kind": kind,
                                            "choices": choices})


@dataclass(frozen=True)
class Rung:
    """One size of the cpu recipe's ResNet-9 that a time budget can choose."""
    width: float                  # channels: 64-128-256-512 x width
    stem_stride: int              # 2: the first convolution halves the resolution
    min_epochs: int               # chosen only when at least this many epochs fit


@dataclass(frozen=True)
class Recipe:
    name: str
    network: str                  # "lab_cnn" (the manual's CNN) or "resnet9"
    epochs: int = option("(maximum) epochs")  # lab: early stopping may end sooner
    batch_size: int = option("images per step")
    learning_rate: float = option("(peak) learning rate")  # Adam's rate, or AdamW's peak
    val_split: float = option("fraction of the training images held out for validation",
                              kind="fraction")
    patience: int | None = None   # early stopping on val_loss, in epochs (None: fixed schedule)
    optimizer: str = "adam"       # "adam": constant rate; "adamw": warm-up + cosine decay
    warmup_epochs: float = 0.0    # linear warm-up from lr/10 to the peak, in epochs
    weight_decay: float = 0.0     # AdamW's decoupled weight decay
    label_smoothing: float = option("label smoothing of the training targets", default=0.0,
                                    kind="fraction")
    width: float = option("ResNet-9 recipes: channel width multiplier (1.0 = 64-128-256-512); "
                          "for the cpu recipe it fixes the size the time budget would choose",
                          default=1.0)
    crop_padding: int = option("ResNet-9 augmentation: pixels of zero padding before the "
                               "random crop", default=4)
    stem_stride: int = option("ResNet-9: the first convolution's stride (2 halves the "
                              "resolution: a quarter of the arithmetic in every later layer)",
                              default=1, choices=(1, 2))
    bn_momentum: float = option("ResNet-9: BatchNormalization's momentum for its running "
                                "statistics", default=0.9, kind="fraction")
    whiten: bool = option("ResNet-9: a frozen first layer that whitens 2x2 patches (PCA of the "
                          "training images' patches)", default=False, kind="switch")
    low_res: int = option("progressive resizing: train at this many pixels (e.g. 24) for the "
                          "first --low-res-share of the run, then at 32", default=0)
    low_res_share: float = option("the share of the run (of its budget, or its epochs) "
                                  "trained at --low-res pixels", default=0.5, kind="fraction")
    mixed_precision: bool = False  # 16-bit on a GPU: bf16 or fp16 (runtime.precision_for)
    minutes: float | None = option(
        "train for as many epochs as fit in this many minutes on this machine; "
        "--epochs sets a fixed number instead", default=None)  # None: ``epochs``
    rungs: tuple[Rung, ...] = ()  # sizes a time budget chooses from, smallest first

    def __post_init__(self):  # a Recipe read back from JSON has its rungs as lists
        object.__setattr__(self, "rungs", tuple(
            r if isinstance(r, Rung) else Rung(*r) if isinstance(r, list | tuple) else Rung(**r)
            for r in self.rungs))


def overridable_fields():
    """The ``Recipe`` fields that command-line options override, in declaration order."""
    return [f for f in dataclasses.fields(Recipe) if "help" in f.metadata]


# The cpu recipe's sizes, smallest first: a time budget trains the largest one
# that still gets ``min_epochs`` epochs in on the speed measured at the start
# (benchmarks/README.md has the measurements behind these numbers).
CPU_RUNGS = (
    Rung(width=0.25, stem_stride=2, min_epochs=1),
    Rung(width=0.375, stem_stride=2, min_epochs=14),
    Rung(width=0.5, stem_stride=2, min_epochs=14),
    Rung(width=0.75, stem_stride=2, min_epochs=14),
)

RECIPES = {
    # The lab manual: its 9-layer CNN, Adam 1e-4, batch 64, up to 100 epochs,
    # early stopping (patience 10) on a 20 % validation hold-out.
    "lab": Recipe("lab", "lab_cnn", epochs=100, batch_size=64, learning_rate=1e-4,
                  val_split=0.2, patience=10),
    # ResNet-9 at twice the classic width for a GPU: crop + flip augmentation,
    # AdamW with warm-up and cosine decay, label smoothing, 16-bit mixed
    # precision (bf16, or fp16 on a GPU older than Ampere), a fixed schedule.
    # 2 % of the training images are held out to calibrate the probabilities
    # and to show a validation curve (they play no other part).
    "fast": Recipe("fast", "resnet9", epochs=30, batch_size=512, learning_rate=2e-3,
                   val_split=0.02, optimizer="adamw", warmup_epochs=3, weight_decay=0.05,
                   label_smoothing=0.2, width=2.0, mixed_precision=True),
    # ResNet-9 for a CPU, sized to the machine: a first convolution of stride 2
    # (every later layer then costs a quarter of the arithmetic) and the widest
    # of CPU_RUNGS that gets enough epochs in the time budget (15 minutes unless
    # --minutes says otherwise) at the speed measured at the start. A faster CPU
    # trains a bigger network. Few epochs: a short warm-up and light
    # augmentation; float32, which CPUs run fastest. Batch 128: twice the steps
    # of 256 at no cost per image, which scored higher at every budget measured.
    "cpu": Recipe("cpu", "resnet9", epochs=40, batch_size=128, learning_rate=2e-3,
                  val_split=0.02, optimizer="adamw", warmup_epochs=0.25, weight_decay=0.05,
                  label_smoothing=0.2, width=0.25, crop_padding=2, stem_stride=2, minutes=15,
                  rungs=CPU_RUNGS),
}


def recipe_with(name, **overrides):
    """``RECIPES[name]`` with the given fields replaced (``None`` values ignored)."""
    return dataclasses.replace(RECIPES[name],
                               **{k: v for k, v in overrides.items() if v is not None})


# --- The command line's recipe options ----------------------------------------------

def add_recipe_arguments(parser, default="lab", exclude=()):
    """``--recipe`` and an option for each ``Recipe`` field that the command line may
    override (declared once, on ``Recipe`` above), less the fields in ``exclude``;
    their help gives each recipe's value. Options left out are ``None``: the recipe's
    own value stands (``recipe_overrides`` collects the others)."""
    parser.add_argument("--recipe", choices=sorted(RECIPES), default=default,
                        help=f"training recipe, in network/training/recipes.py "
                             f"(default: {default})")
    for declared in overridable_fields():
        if declared.name in exclude:
            continue
        values = ", ".join(_recipe_value(name, recipe, declared) for name, recipe in RECIPES.items()
                           if getattr(recipe, declared.name) not in (None, declared.default))
        flag = f"--{declared.name.replace('_', '-')}"
        text = f"{declared.metadata['help']} ({values or f'default: {declared.default}'})"
        if declared.metadata["kind"] == "switch":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, help=text)
            continue
        parse = {"fraction": cli.fraction,
                 "positive": cli.positive_int if declared.type is int else cli.positive_float}
        parser.add_argument(flag, type=parse[declared.metadata["kind"]],
                            choices=declared.metadata["choices"], help=text)


def recipe_overrides(args):
    """The recipe fields the command line set (``add_recipe_arguments``'s options)."""
    return {f.name: getattr(args, f.name) for f in overridable_fields()
            if getattr(args, f.name, None) is not None}


def _recipe_value(name, recipe, field):
    if field.name == "width" and recipe.rungs:  # the time budget picks one of the rungs
        return f"{name}: {recipe.rungs[0].width:g} to {recipe.rungs[-1].width:g} by the budget"
    return f"{name}: {getattr(recipe, field.name):g}"


@dataclass(frozen=True)
class Run:
    """One training run: the recipe (overrides applied) and the run's own options.

    A time budget's plan sets ``budget_s``, ``warmup_fraction`` and
    ``planned_epoch_s`` (the recipe then holds the chosen size and no ``minutes``,
    so a resumed run keeps the size and continues the same budget's clock).
    """
    recipe: Recipe
    data_dir: str
    model_path: str
    output_dir: str
    seed: int = 42
    subset: int | None = None
    precision: str = "auto"
    distribute: bool = False
    allow_md5_mismatch: bool = False
    planned_epoch_s: float | None = None
    budget_s: float | None = None     # a planned time budget: train until it is spent
    warmup_fraction: float = 0.0      # ... warming up over this share of it

    @classmethod
    def from_args(cls, args):
        """The run an argparse namespace asks for (options left out keep the recipe's).

        A fixed ``--epochs`` without ``--minutes`` replaces the time budget;
        ``--width`` fixes the size a time budget would otherwise choose;
        ``--stem-stride`` applies to every size it may choose.
        """
        recipe = recipe_with(args.recipe, **recipe_overrides(args))
        if args.epochs is not None and args.minutes is None:
            recipe = dataclasses.replace(recipe, minutes=None)
        if args.stem_stride is not None:
            recipe = dataclasses.replace(recipe, rungs=tuple(
                dataclasses.replace(rung, stem_stride=args.stem_stride) for rung in recipe.rungs))
        if args.width is not None:
            recipe = dataclasses.replace(recipe, rungs=())
        return cls(recipe, data_dir=str(args.data_dir), model_path=str(args.model_path),
                   output_dir=str(args.output_dir), seed=args.seed, subset=args.subset,
                   precision=args.precision, distribute=args.distribute,
                   allow_md5_mismatch=args.allow_md5_mismatch)

    def as_dict(self):
        """One flat dict, as run.json and train_summary.json's "settings" hold it."""
        fields = dataclasses.asdict(self)
        recipe = fields.pop("recipe")
        return {"recipe": recipe.pop("name"), **recipe, **fields}

    @classmethod
    def from_dict(cls, saved, defaults=None):
        """The inverse of :meth:`as_dict`. Fields it lacks keep the recipe's values, and
        the run's from ``defaults`` (a ``Run``); unknown ones are ignored.
        ``KeyError``/``TypeError`` when damaged."""
        recipe = dataclasses.replace(RECIPES[saved["recipe"]], **{
            f.name: saved[f.name] for f in dataclasses.fields(Recipe)
            if f.name != "name" and f.name in saved})
        run_fields = {f.name: saved[f.name] for f in dataclasses.fields(cls)
                      if f.name != "recipe" and f.name in saved}
        if defaults is not None:
            return dataclasses.replace(defaults, recipe=recipe, **run_fields)
        return cls(recipe, **run_fields)


# --- A run kept for --resume ------------------------------------------------------------

RUN_FILE = "run.json"          # the run's settings (a ``Run``), kept for --resume
STATE_FILE = "state.json"      # the last finished epoch (see ``callbacks.StateWriter``)


def start_or_resume(run, resume_dir, resume=False, restart=False):
    """Decide between a fresh run and a resumed one; return (run, state).

    A run is resumable once it has finished an epoch (``state.json`` exists).
    A resumed run keeps its saved ``Run`` (``state`` says where it stopped); a
    fresh one gets an empty state, and :func:`save_run` keeps it once it is
    planned and built (a run that fails before that leaves no backup behind, and
    discards no earlier one).
    """
    run_file, state_file = resume_dir / RUN_FILE, resume_dir / STATE_FILE
    interrupted = run_file.is_file() and state_file.is_file()
    if resume:
        if not interrupted:
            raise LabError(f"no interrupted run to resume in {resume_dir} "
                           "(no finished epoch was saved there)")
        try:
            saved = Run.from_dict(json.loads(run_file.read_text()), defaults=run)
            state = json.loads(state_file.read_text())
            int(state["epoch"])
        except (ValueError, KeyError, TypeError, AttributeError):
            raise LabError(f"the interrupted run in {resume_dir} is damaged: pass --restart "
                           "to discard it and start afresh") from None
        return saved, state
    if interrupted and not restart:
        raise LabError(f"an interrupted run was found in {resume_dir}: pass --resume to "
                       "continue it, or --restart to discard it")
    return run, {}


def save_run(run, resume_dir):
    """Keep a fresh ``run`` (a ``Run``) for --resume, atomically, in place of any earlier
    run's backup."""
    shutil.rmtree(resume_dir, ignore_errors=True)
    resume_dir.mkdir(parents=True)
    write_json_atomic(resume_dir / RUN_FILE, run.as_dict())
