"""Training recipes: everything that distinguishes one way of training from another.

A run's settings are one :class:`Recipe`: the named recipe with the command
line's overrides applied (``dataclasses.replace``). The same object is saved
for ``--resume`` and in ``train_summary.json``. This module imports no Keras,
so ``--help`` and option errors are answered at once.

Usage:

    from network.recipes import recipe_with
    recipe = recipe_with("cpu", epochs=12)        # RECIPES["cpu"] with 12 epochs
"""

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class Recipe:
    name: str
    network: str                  # "lab_cnn" (the manual's CNN) or "resnet9"
    epochs: int                   # maximum epochs (lab: early stopping may end sooner)
    batch_size: int               # images per step
    learning_rate: float          # Adam's rate (lab), or AdamW's peak rate
    val_split: float              # fraction of the training images held out
    patience: int | None = None   # early stopping on val_loss, in epochs (None: fixed schedule)
    optimizer: str = "adam"       # "adam": constant rate; "adamw": warm-up + cosine decay
    warmup_epochs: float = 0.0    # linear warm-up from lr/10 to the peak, in epochs
    weight_decay: float = 0.0     # AdamW's decoupled weight decay
    label_smoothing: float = 0.0
    width: float = 1.0            # ResNet-9 channels: 64-128-256-512 x width
    crop_padding: int = 4         # ResNet-9 augmentation: random crop after padding (pixels)
    stem_stride: int = 1          # ResNet-9: 2 halves the resolution at the first layer
    mixed_precision: bool = False  # bf16 when a GPU is present
    minutes: float | None = None  # training time budget: the epochs that fit in it are
                                  # worked out from the measured speed (None: ``epochs``)


RECIPES = {
    # The lab manual: its 9-layer CNN, Adam 1e-4, batch 64, up to 100 epochs,
    # early stopping (patience 10) on a 20 % validation hold-out.
    "lab": Recipe("lab", "lab_cnn", epochs=100, batch_size=64, learning_rate=1e-4,
                  val_split=0.2, patience=10),
    # ResNet-9 at twice the classic width for a GPU: crop + flip augmentation,
    # AdamW with warm-up and cosine decay, label smoothing, bf16, a fixed
    # schedule. 2 % of the training images are held out to calibrate the
    # probabilities and to show a validation curve (they play no other part).
    "fast": Recipe("fast", "resnet9", epochs=30, batch_size=512, learning_rate=2e-3,
                   val_split=0.02, optimizer="adamw", warmup_epochs=3, weight_decay=0.05,
                   label_smoothing=0.2, width=2.0, mixed_precision=True),
    # ResNet-9 for a laptop CPU: a quarter of the classic width, and a first
    # convolution of stride 2 so every later layer costs a quarter of the
    # arithmetic (measured: 3 epochs in 5 minutes on 2 cores reach 33 % test
    # accuracy where the same network at full resolution manages 1 epoch, 20 %).
    # It trains for as many epochs as fit in 15 minutes on the machine at hand,
    # so a faster CPU gets further in the same time. Few epochs: a short
    # warm-up and light augmentation; float32, which CPUs run fastest.
    "cpu": Recipe("cpu", "resnet9", epochs=30, batch_size=256, learning_rate=2e-3,
                  val_split=0.02, optimizer="adamw", warmup_epochs=0.25, weight_decay=0.05,
                  label_smoothing=0.2, width=0.25, crop_padding=2, stem_stride=2, minutes=15),
}


def recipe_with(name, **overrides):
    """``RECIPES[name]`` with the given fields replaced (``None`` values ignored)."""
    return dataclasses.replace(RECIPES[name],
                               **{k: v for k, v in overrides.items() if v is not None})


def as_dict(recipe):
    return dataclasses.asdict(recipe)


def from_dict(fields):
    """The inverse of :func:`as_dict`: a saved recipe back as a ``Recipe``."""
    return Recipe(**fields)
