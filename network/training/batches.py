"""Training batches for ``model.fit``, shuffled afresh each epoch and cut by worker threads.

Why not ``model.fit(images, labels)``? On TensorFlow, Keras builds a new ``tf.data``
pipeline from the arrays every epoch, with tf.data's autotuning on, and deleting the
last epoch's pipeline waits for its autotuning thread: on a 2-core CPU up to a minute
before an epoch's first step, in about one epoch of three (benchmarks/README.md,
"Three T_lab on the AVX-512 machine"). A ``keras.utils.PyDataset`` with more than one
worker is prefetched by Keras itself, which turns tf.data's autotuning off for it.

Usage:

    batches = ShuffledBatches(images, one_hot_labels, batch_size=128, seed=1)
    model.fit(batches, epochs=...)
"""

import math

import keras
import numpy as np

WORKERS = 2  # threads that cut batches; more than one makes Keras prefetch them itself


class ShuffledBatches(keras.utils.PyDataset):
    """``(images, labels)`` batches of ``batch_size`` in a new random order each epoch
    (the last batch may be smaller), the order drawn from ``seed``."""

    def __init__(self, images, labels, batch_size, seed=None):
        super().__init__(workers=WORKERS)
        self.images, self.labels, self.batch_size = images, labels, batch_size
        self.rng = np.random.default_rng(seed)
        self.order = self.rng.permutation(len(images))

    def __len__(self):
        return math.ceil(len(self.images) / self.batch_size)

    def rows(self, index):
        """The images of batch ``index`` in this epoch's order."""
        return self.order[index * self.batch_size:(index + 1) * self.batch_size]

    def __getitem__(self, index):
        rows = self.rows(index)
        return self.images[rows], self.labels[rows]

    def on_epoch_end(self):
        self.order = self.rng.permutation(len(self.images))
