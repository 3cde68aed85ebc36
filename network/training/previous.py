"""Keep the previous model when a new training run replaces it.

A new run writes its model over the old one, so before it starts, the old
model moves aside, with what belongs to it, into a folder beside it:

    models/previous/2025-05-03_14-22-10-cpu-57.5pct/
        best_model.h5, class_names.json, calibration.json      (the model folder's)
        train_summary.json, history.csv, training_curves.png   (its run's, when known)

The folder is named after when the old run finished, its recipe and its test
accuracy (read from its ``train_summary.json``; the file's time and
"unknown" when there is none). The run's files come along only when that
summary names this model file and is newer than it; otherwise they were
another run's and stay where they are. The 5 newest folders are kept; an
older one is dropped, and the line says so.

The files are moved, not copied: a rename within the folder cannot
half-succeed. They go into a hidden folder first, which is renamed once all
are in; a failure puts back what was moved and stops the run before training
starts, with one line saying why. (Only run files on another drive than the
model are copied: the new run replaces the originals.)

Usage:

    from network.training.previous import keep_previous
    keep_previous(run.model_path, run.output_dir)   # prints one line when it kept one
"""

import datetime
import errno
import json
import os
import re
import shutil
from pathlib import Path

from network.core.cli import display_path
from network.core.errors import LabError

FOLDER = "previous"   # beside the model: <model folder>/previous/
KEEP = 5              # the newest folders kept there
RUN_FILES = ("train_summary.json", "history.csv", "training_curves.png")  # in --output-dir
MTIME_SLACK_S = 2     # file systems that store times to the second (or two: FAT)
KEPT_NAME = re.compile(r"^\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d-")


def keep_previous(model_path, output_dir, resuming=False, keep=KEEP):
    """Move an existing model at ``model_path`` and its files aside (see the module's
    docstring) and say so in one line; returns the folder, or None when there was no
    model to keep or the run resumes (its model is its own checkpoint)."""
    model_path = Path(model_path)
    if resuming or not model_path.is_file():
        return None
    summary = run_summary(model_path, output_dir)
    files = [model_path, *side_files(model_path)]
    run_files = [Path(output_dir) / name for name in RUN_FILES] if summary else []
    run_files = [path for path in run_files if path.is_file()]
    parent = model_path.parent / FOLDER
    target = free_name(parent / folder_name(model_path, summary))
    move_together(files, run_files, target)
    kept = ", ".join(path.name for path in [*files[1:], *run_files])
    print(f"Kept the previous model ({describe(summary)}) in {display_path(target)}"
          + (f" with {kept}" if kept else ""))
    drop_oldest(parent, keep, newest=target)
    return target


def side_files(model_path):
    """The files beside the model that belong to it: its class names and temperature."""
    from network.analysis.calibration import calibration_path
    from network.model_utils import class_names_path

    return [path for path in (class_names_path(model_path), calibration_path(model_path))
            if path.is_file()]


def run_summary(model_path, output_dir):
    """The output folder's ``train_summary.json`` when it describes this model file
    (it names the file and was written after it); None otherwise."""
    path = Path(output_dir) / "train_summary.json"
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
        named = Path(summary["settings"]["model_path"])
        newer = path.stat().st_mtime >= model_path.stat().st_mtime - MTIME_SLACK_S
    except (OSError, ValueError, KeyError, TypeError):  # none, damaged, or another layout
        return None
    same = named.resolve() == model_path.resolve()
    return summary if same and newer and isinstance(summary, dict) else None


def folder_name(model_path, summary):
    """``<when>-<recipe>-<accuracy>``, e.g. ``2025-05-03_14-22-10-cpu-57.5pct``."""
    when = finished(summary) or datetime.datetime.fromtimestamp(model_path.stat().st_mtime)
    recipe, accuracy = run_facts(summary)
    accuracy = "unknown" if accuracy is None else f"{accuracy:.1%}".replace("%", "pct")
    return f"{when:%Y-%m-%d_%H-%M-%S}-{recipe}-{accuracy}"


def finished(summary):
    """When the summarised run finished, in its own local time; None when unknown."""
    try:
        return datetime.datetime.fromisoformat(summary["finished_at"])
    except (KeyError, TypeError, ValueError):
        return None


def run_facts(summary):
    """(recipe, test accuracy) from a summary: ("unknown", None) when it lacks them.
    The recipe keeps only characters that are safe in a folder name."""
    try:
        recipe = re.sub(r"[^A-Za-z0-9_.]", "", str(summary["settings"]["recipe"])) or "unknown"
    except (KeyError, TypeError):
        recipe = "unknown"
    try:
        accuracy = float(summary["test"]["accuracy"])
    except (KeyError, TypeError, ValueError):
        accuracy = None
    return recipe, accuracy


def describe(summary):
    """The kept model in a few words, for the line that says where it went."""
    recipe, accuracy = run_facts(summary)
    if accuracy is None:
        return "no run summary found for it"
    return f"recipe {recipe}, test accuracy {accuracy:.1%}"


def free_name(path):
    """``path``, or ``path-2``, ``path-3``, ... when it is taken (two runs in one second)."""
    candidate, number = path, 1
    while candidate.exists() or candidate.with_name(f".partial-{candidate.name}").exists():
        number += 1
        candidate = path.with_name(f"{path.name}-{number}")
    return candidate


def move_together(files, run_files, target):
    """Move ``files`` (and ``run_files``) into the new folder ``target``, all or none.

    They are gathered in a hidden folder beside ``target``, renamed to it at the
    end. On any failure what was moved goes back, and an ``OSError`` becomes a
    ``LabError``: the new run must not start over a model it could not keep.
    """
    staging = target.with_name(f".partial-{target.name}")
    moved = []
    try:
        staging.mkdir(parents=True)
        for path in files:
            os.replace(path, staging / path.name)
            moved.append(path)
        for path in run_files:
            if move_or_copy(path, staging / path.name):
                moved.append(path)
        os.replace(staging, target)
    except BaseException as err:
        put_back(moved, staging)
        if isinstance(err, OSError):
            raise LabError(f"cannot move the previous model {display_path(files[0])} aside to "
                           f"{display_path(target)} ({err.strerror or err}); nothing was "
                           "changed and training did not start") from None
        raise


def move_or_copy(source, destination):
    """Move a run file; one on another drive is copied (the new run replaces it).
    Returns whether it was moved."""
    try:
        os.replace(source, destination)
        return True
    except OSError as err:
        if err.errno != errno.EXDEV:
            raise
    shutil.copy2(source, destination)
    return False


def put_back(moved, staging):
    """Undo :func:`move_together`'s moves so far, and remove its hidden folder."""
    for path in reversed(moved):
        try:
            os.replace(staging / path.name, path)
        except OSError:  # left in the hidden folder, not lost: it is not removed then
            return
    shutil.rmtree(staging, ignore_errors=True)


def drop_oldest(parent, keep, newest):
    """Remove all but the ``keep`` newest kept folders in ``parent`` (by when they were
    moved there), saying so for each; ``newest`` is never removed."""
    kept = [path for path in parent.iterdir() if path.is_dir() and KEPT_NAME.match(path.name)]
    kept.sort(key=lambda path: (path == newest, path.stat().st_mtime, path.name), reverse=True)
    for old in kept[keep:]:
        shutil.rmtree(old, ignore_errors=True)
        print(f"Dropped the oldest kept model, {display_path(old)} (only the {keep} newest "
              f"are kept in {display_path(parent)})")
