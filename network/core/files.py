"""Writing files so that a reader never sees half of one: a temporary file, then a rename.

An interrupted run (Ctrl-C, a crash, a full disk) leaves the previous version
of a file, or none, never a truncated one. Every writer in the lab goes through
``atomic_path``:

    with atomic_path(path) as tmp:
        model.save(tmp)          # or np.save, fig.savefig, ...
"""

import contextlib
import json
import os
from pathlib import Path


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
