"""Seconds per epoch of one network fed two ways: arrays, or ``ShuffledBatches``.

``model.fit(images, labels)`` makes Keras build a new input pipeline each epoch (on
TensorFlow a ``tf.data`` one, autotuned); ``train_model`` feeds ``ShuffledBatches``
instead (``network/training/batches.py`` says why). This trains the cpu recipe's
network (ResNet-9, ``--width``, ``--stem-stride``) on the first ``--images`` training
images (or random ones with ``--synthetic``), ``--epochs`` epochs per feed, the two feeds
taking turns ``--rounds`` times on one compiled model, and prints each epoch's seconds.
The first epoch of each fit is the one without a previous epoch's pipeline to delete.

Usage:

    CIFAR100_DIR=/path/to/cifar-100-python python benchmarks/batch_feeding.py
    python benchmarks/batch_feeding.py --synthetic --images 2048 --epochs 2 --rounds 1
"""

import argparse
import statistics
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: python benchmarks/batch_feeding.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from benchmarks.common import cpu_model, print_table, require_data_files, write_json
from network.core import cli, runtime

FEEDS = ("arrays", "batches")
BATCH_SIZE = 128  # the cpu recipe's


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="batch_feeding", description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=8192, help="training images per epoch")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per fit")
    parser.add_argument("--rounds", type=int, default=2, help="fits per feed, taking turns")
    parser.add_argument("--width", type=float, default=0.375)
    parser.add_argument("--stem-stride", type=int, choices=[1, 2], default=1)
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="CIFAR-100 folder (default: $CIFAR100_DIR, else data/)")
    parser.add_argument("--synthetic", action="store_true", help="random images instead")
    parser.add_argument("--json", type=Path, default=None, help="write every figure here")
    args = parser.parse_args(argv)
    for name in ("images", "epochs", "rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    return args


def training_images(args):
    """uint8 images and one-hot labels: real ones (never downloaded here) or random."""
    from network.data_utils import load_cifar100, one_hot

    if args.synthetic:
        rng = np.random.default_rng(0)
        images = rng.integers(0, 256, (args.images, 32, 32, 3), dtype=np.uint8)
        return images, one_hot(rng.integers(0, 100, args.images), 100)
    data_dir = args.data_dir or cli.default_data_dir()
    require_data_files(data_dir, hint=", or use --synthetic")
    data = load_cifar100(data_dir, download=False)
    return data.x_train[:args.images], one_hot(data.y_train[:args.images], 100)


def epoch_seconds(args):
    """{feed: [[seconds of each epoch] for each round]} on one compiled model."""
    import keras

    from network.model_utils import build_resnet9, model_images
    from network.training.batches import ShuffledBatches
    from network.training.callbacks import EpochTimer

    images, labels = training_images(args)
    keras.utils.set_random_seed(1)
    model = build_resnet9(width=args.width, stem_stride=args.stem_stride, padding=2)
    model.compile(keras.optimizers.AdamW(1e-3), "categorical_crossentropy")
    images = model_images(model, images)
    model.fit(images[:BATCH_SIZE * 2], labels[:BATCH_SIZE * 2], batch_size=BATCH_SIZE,
              verbose=0)  # compiles the step: not timed

    class EpochTimes(EpochTimer):  # every epoch's seconds, not only the last
        def on_train_begin(self, logs=None):
            self.seconds = []

        def on_epoch_end(self, epoch, logs=None):
            super().on_epoch_end(epoch, logs)
            self.seconds.append(round(self.last, 2))

    times = {feed: [] for feed in FEEDS}
    for round_ in range(args.rounds):
        for feed in FEEDS:
            timer = EpochTimes()
            if feed == "arrays":
                model.fit(images, labels, batch_size=BATCH_SIZE, epochs=args.epochs,
                          verbose=0, callbacks=[timer])
            else:
                model.fit(ShuffledBatches(images, labels, BATCH_SIZE, seed=round_),
                          epochs=args.epochs, verbose=0, callbacks=[timer])
            times[feed].append(timer.seconds)
            print(f"{feed:8} round {round_ + 1}: {timer.seconds} s", flush=True)
    return times


def main(argv=None):
    runtime.setup_backend_env()  # quiet start-up
    args = parse_args(argv)
    import keras

    times = epoch_seconds(args)
    rows = []
    for feed in FEEDS:
        seconds = [s for fit in times[feed] for s in fit]
        later = [s for fit in times[feed] for s in fit[1:]]  # after an epoch's pipeline
        rows.append((f"{feed}: mean epoch", f"{statistics.mean(seconds):.2f} s"))
        if later:
            rows.append((f"{feed}: mean epoch after the first of a fit",
                         f"{statistics.mean(later):.2f} s"))
    print_table(f"{args.images} images per epoch, ResNet-9 x{args.width:g} stride "
                f"{args.stem_stride}, batch {BATCH_SIZE}, {keras.backend.backend()}", rows)
    if args.json is not None:
        write_json(args.json, {"mode": "batch_feeding", "backend": keras.backend.backend(),
                               "cpu_model": cpu_model(), "settings": vars(args) | {
                                   "data_dir": None, "json": None},
                               "epoch_seconds": times})
    return 0


if __name__ == "__main__":
    cli.run_main(main)
