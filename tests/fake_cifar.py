"""Write small synthetic CIFAR-100 files in the official pickle format.

Each class gets its own colour and stripe pattern, so even a tiny network can
learn something in one epoch.
"""

import pickle
from pathlib import Path

import numpy as np

FINE_NAMES = [f"fine_{i:02d}" for i in range(100)]
COARSE_NAMES = [f"coarse_{i:02d}" for i in range(20)]
FINE_TO_COARSE = np.arange(100) % 20  # 5 fine classes per superclass, like the real set


def make_split(n, seed):
    rng = np.random.default_rng(seed)
    fine = np.arange(n) % 100
    rng.shuffle(fine)
    palette = np.random.default_rng(0).integers(0, 256, size=(100, 3))
    images = np.empty((n, 32, 32, 3), dtype=np.uint8)
    rows = np.arange(32)
    for i, label in enumerate(fine):
        stripes = ((rows // (1 + label % 7)) % 2)[:, None, None] * 60
        noise = rng.integers(0, 40, size=(32, 32, 3))
        images[i] = np.clip(palette[label] * 0.7 + stripes + noise, 0, 255)
    flat = images.transpose(0, 3, 1, 2).reshape(n, 3072)  # CIFAR stores channel-first rows
    return {
        "filenames": [f"img_{i}.png" for i in range(n)],
        "batch_label": "synthetic",
        "fine_labels": fine.tolist(),
        "coarse_labels": FINE_TO_COARSE[fine].tolist(),
        "data": flat,
    }


def write_fake_cifar(folder, n_train=300, n_test=200, seed=0):
    """Write meta/train/test into ``folder`` and return the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"fine_label_names": FINE_NAMES, "coarse_label_names": COARSE_NAMES}
    for name, payload in (("meta", meta), ("train", make_split(n_train, seed)),
                          ("test", make_split(n_test, seed + 1))):
        with open(folder / name, "wb") as f:
            pickle.dump(payload, f, protocol=2)
    return folder
