"""Progressive resizing: train at a lower resolution first, then at 32 pixels.

A convolution's cost grows with the image's area, so the first part of a run
at 24 pixels costs (24/32)^2 = 56 % of the same steps at 32: more steps fit in
the time, while the network learns the coarse shapes that a low resolution
still shows. The rest of the run, at 32 pixels, tunes it to the size it is
tested at (Fast.ai's DAWNBench entries; crisostomi/cifar100-speedrun trains its
first half at 24 pixels).

The recipe's ``low_res`` (pixels, 0: off) and ``low_res_share`` (of the time
budget, or of the epochs) set it; the network then takes images of any size.

Usage:

    batches = ProgressiveImages(images, one_hot_labels, 256, low_res=24, share=0.5,
                                clock=clock)     # or epochs=30: the share of 30 epochs
    model.fit(batches, epochs=...)
"""

import cv2
import numpy as np

from network.data_utils import IMAGE_SHAPE
from network.training.batches import ShuffledBatches


def relative_cost(low_res):
    """An epoch's cost at ``low_res`` pixels over one at full size: a convolution's
    cost grows with the image's area."""
    return (low_res / IMAGE_SHAPE[0]) ** 2


def resize_all(images, size):
    """uint8 images (N, H, W, 3) -> (N, size, size, 3), area-averaged."""
    out = np.empty((len(images), size, size, images.shape[-1]), dtype=images.dtype)
    for i, image in enumerate(images):
        out[i] = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    return out


class ProgressiveImages(ShuffledBatches):
    """Shuffled training batches: at ``low_res`` pixels for the first ``share`` of the
    run, at full size after. The run's progress is the share of the time budget
    its ``clock`` (a ``budget.Clock``) has spent or, without one, the share of its
    ``epochs`` done (counting from ``initial_epoch``, for a resumed run)."""

    def __init__(self, images, labels, batch_size, low_res, share, clock=None, epochs=None,
                 initial_epoch=0, seed=None):
        super().__init__(images, labels, batch_size, seed=seed)
        self.low = resize_all(images, low_res)
        self.share, self.clock, self.epochs, self.epoch = share, clock, epochs, initial_epoch
        self.drawn = 0

    def progress(self):
        if self.clock is not None:
            return self.clock.spent() / self.clock.budget_s
        return self.epoch / self.epochs

    def __getitem__(self, index):
        rows = self.rows(index)
        # Keras fixes the batches' shape from the first two it draws (TensorFlow only:
        # they are not trained on): showing it both sizes leaves height and width open.
        self.drawn += 1
        low = self.progress() < self.share if self.drawn > 1 else False
        return (self.low if low else self.images)[rows], self.labels[rows]

    def on_epoch_end(self):
        self.epoch += 1
        super().on_epoch_end()
