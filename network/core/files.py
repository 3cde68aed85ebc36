"""The lab's files: written whole or not at all, their digests, and the cache folder.

An interrupted run (Ctrl-C, a crash, a full disk) leaves the previous version
of a file, or none, never a truncated one: every writer in the lab goes through
``atomic_path`` (a temporary file, then a rename). ``file_digest`` is the one
hash of a file's bytes (the data files' MD5, the model's SHA-256 fingerprint),
and ``cache_dir`` the one place the lab keeps what it can compute again.

Usage:

    with atomic_path(path) as tmp:
        model.save(tmp)          # or np.save, fig.savefig, ...
    file_digest("data/train", "md5")      # '16019d7e3df5f24257cddd939b257f8d'
    cache_dir("jax")                      # ~/.cache/cifar100-lab/jax
"""

import contextlib
import hashlib
import json
import os
from pathlib import Path

CACHE_NAME = "cifar100-lab"  # the lab's folder in the user's cache folder


@contextlib.contextmanager
def atomic_path(path):
    """A temporary path beside ``path``, renamed to ``path`` when the block succeeds and
    removed when it fails (or is interrupted).

    The temporary file lies in the same folder, since a rename is atomic only
    within one file system. Its name ends with ``path``'s whole name, because
    Keras (``.h5``, ``.weights.h5``), Matplotlib and NumPy pick the format from
    it; the leading dot hides it, and the process id keeps two runs writing the
    same file from mixing their halves.
    """
    path = Path(path)
    tmp = path.with_name(f".partial-{os.getpid()}-{path.name}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path, text):
    """Write ``text`` (UTF-8) atomically: readers never see half a file."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path, payload):
    """``payload`` as indented JSON, written atomically."""
    write_text_atomic(path, json.dumps(payload, indent=1))


def save_figure(fig, path, show=False):
    """Save ``fig`` as PNG (atomically), show it if asked, then free it."""
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    if show:
        plt.show()
    plt.close(fig)


def file_digest(path, algorithm="sha256", chunk=1 << 20):
    """The hex digest of a file's bytes by any ``hashlib`` algorithm ("md5", "sha256"),
    read in chunks so a 150 MB data file never sits in memory whole."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def cache_dir(*parts):
    """The lab's cache folder (or ``parts`` inside it): ``$XDG_CACHE_HOME/cifar100-lab``,
    else ``~/.cache/cifar100-lab``. Only a path: nothing is created here."""
    home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return home.joinpath(CACHE_NAME, *parts)
