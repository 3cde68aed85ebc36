"""Writing files so that a reader never sees half of one: a temporary file, then a rename.

An interrupted run (Ctrl-C, a crash, a full disk) leaves the previous version
of a file, or none, never a truncated one.
"""

import json
import os
from pathlib import Path


def write_text_atomic(path, text):
    """Write ``text`` via a temporary file and a rename: readers never see half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_json_atomic(path, payload):
    """``payload`` as indented JSON, written atomically."""
    write_text_atomic(path, json.dumps(payload, indent=1))


def save_figure(fig, path, show=False):
    """Save ``fig`` as PNG (atomically), show it if asked, then free it."""
    import matplotlib.pyplot as plt

    tmp = path.with_name(f".{path.stem}.partial.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    os.replace(tmp, path)
    if show:
        plt.show()
    plt.close(fig)
