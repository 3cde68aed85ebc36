"""Shared command-line plumbing for the lab's scripts.

Every script turns expected failures (missing data, a bad model file, an
unreadable image) into ``LabError``; ``run_main`` prints those as one line on
stderr and exits non-zero, so users never see a traceback for them.

Quick runs (``--quick``, or ``LAB_QUICK=1`` as the notebook's quick mode sets
it) keep to folders of their own, ``models/quick/`` and ``reports/quick/``, so
that trying the scripts out never replaces a student's real model or report:

    python -m network.train_model --quick       # 2,000 images, 2 epochs
    python -m network.evaluate_model --quick    # evaluates models/quick/best_model.h5
"""

import argparse
import os
import sys
import warnings
from pathlib import Path

from network import PROJECT_ROOT
from network.core.errors import LabError

DEFAULT_DATA_DIR = PROJECT_ROOT / "data"
DEFAULT_MODEL_PATH = PROJECT_ROOT / "models" / "best_model.h5"
DEFAULT_OUTPUT_DIR = PROJECT_ROOT / "reports"
# Where quick runs go: a quick try never replaces the real model or report.
QUICK_MODEL_PATH = PROJECT_ROOT / "models" / "quick" / "best_model.h5"
QUICK_OUTPUT_DIR = PROJECT_ROOT / "reports" / "quick"
TRAIN = "python -m network.train_model"


def run_main(main, argv=None):
    """Run ``main(argv)`` and turn expected failures into a one-line error."""
    module = main.__module__.rsplit(".", 1)[-1]  # "__main__" when run as a script
    prog = Path(sys.argv[0]).stem if module == "__main__" else module
    try:
        code = main(argv)
    except LabError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        code = 130
    sys.exit(code or 0)


def default_data_dir():
    """The data folder: $CIFAR100_DIR when set, else ``data/`` in the project."""
    return Path(os.environ.get("CIFAR100_DIR") or DEFAULT_DATA_DIR)


def display_path(path):
    """A path as shown to the user: relative to the working folder when inside it."""
    try:
        relative = os.path.relpath(os.path.abspath(path))
    except ValueError:  # Windows: another drive
        return str(path)
    return str(path) if relative.startswith("..") else relative


def plural(count, word):
    """"1 epoch", "3 epochs": a count with its noun (English; the report has its own)."""
    return f"{count:,} {word}{'' if count == 1 else 's'}"


def duration(seconds):
    """Seconds as a student reads them: "45 s", "12 min", "3.5 h"."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _number(text, parse, accept, rule):
    """argparse type helper: ``parse(text)`` when ``accept`` takes it, else a usage error
    that says ``rule``."""
    try:
        value = parse(text)
    except ValueError:
        noun = "a whole number" if parse is int else "a number"
        raise argparse.ArgumentTypeError(f"expected {noun}, got {text!r}") from None
    if not accept(value):
        raise argparse.ArgumentTypeError(f"{rule}, got {text}")
    return value


def positive_int(text):
    """argparse type: an integer >= 1."""
    return _number(text, int, lambda value: value >= 1, "must be at least 1")


def positive_float(text):
    """argparse type: a float > 0."""
    return _number(text, float, lambda value: 0 < value < float("inf"),
                   "must be a positive number")


def fraction(text):
    """argparse type: a number in [0, 1)."""
    return _number(text, float, lambda value: 0 <= value < 1, "must lie in [0, 1)")


def add_common_arguments(parser, *, data=True, model=True, output=True, seed=True, show=True,
                         downloads=True, quick=False):
    """Options every script shares, with the same names and defaults.

    ``show=False`` leaves out --show (a script that draws no figures);
    ``downloads=False`` is for a script that never downloads the data set:
    --data-dir's help then does not promise it. ``quick=True`` adds
    --quick/--no-quick; --model-path and --output-dir are then left ``None``
    when not given, for :func:`apply_quick` to fill in.
    """
    if data:
        fetched = "; downloaded there when missing" if downloads else ""
        parser.add_argument(
            "--data-dir", type=Path, default=default_data_dir(),
            help="folder with CIFAR-100 'meta', 'train', 'test' "
                 f"(default: $CIFAR100_DIR or data/{fetched})")
        parser.add_argument(
            "--allow-md5-mismatch", action="store_true",
            help="accept data files whose MD5 differs from the official ones "
                 "(your own copy in the same format)")
    if quick:
        parser.add_argument(
            "--quick", action=argparse.BooleanOptionalAction, default=None,
            help="a quick try: models/quick/ and reports/quick/ are the default folders, so "
                 "the real model and report stay as they are (default: on when LAB_QUICK=1)")
    quick_model = " or, with --quick, models/quick/best_model.h5" if quick else ""
    quick_output = " or, with --quick, reports/quick/" if quick else ""
    if model:
        parser.add_argument("--model-path", type=Path,
                            default=None if quick else DEFAULT_MODEL_PATH,
                            help=f"model file (default: models/best_model.h5{quick_model})")
    if output:
        parser.add_argument("--output-dir", type=Path,
                            default=None if quick else DEFAULT_OUTPUT_DIR,
                            help=f"where figures and tables go (default: reports/{quick_output})")
    if seed:
        parser.add_argument("--seed", type=int, default=42, help="random seed (default: 42)")
    if show:
        parser.add_argument(
            "--show", action=argparse.BooleanOptionalAction, default=None,
            help="show figures in a window (default: only when a display is available); "
                 "figures are always saved as PNG")


def quick_from_env():
    """Whether ``LAB_QUICK`` asks for quick runs (the notebook's quick mode sets it)."""
    return os.environ.get("LAB_QUICK", "").strip().lower() in ("1", "true", "yes", "on")


def default_paths(quick):
    """(model file, output folder) by default: the quick folders for a quick run."""
    if quick:
        return QUICK_MODEL_PATH, QUICK_OUTPUT_DIR
    return DEFAULT_MODEL_PATH, DEFAULT_OUTPUT_DIR


def apply_quick(args, implied=False):
    """Settle ``args.quick`` (--quick/--no-quick, else ``LAB_QUICK``) and fill in the
    --model-path and --output-dir not given from :func:`default_paths`.

    The quick folders are the defaults of a quick run, and of an ``implied`` one
    (train_model --subset) unless --no-quick says otherwise. Returns the options
    that took a quick folder (empty for a run on the real folders), for the
    script to say so.
    """
    said = args.quick
    args.quick = quick_from_env() if said is None else said
    quick_folders = args.quick or (implied and said is None)
    model_path, output_dir = default_paths(quick_folders)
    filled = []
    if getattr(args, "model_path", "absent") is None:
        args.model_path = model_path
        filled.append("--model-path")
    if getattr(args, "output_dir", "absent") is None:
        args.output_dir = output_dir
        filled.append("--output-dir")
    return filled if quick_folders else []


def quick_note(args, filled, why="Quick run"):
    """One line saying where a run on the quick folders writes; None for other runs.
    ``filled``: what :func:`apply_quick` returned."""
    if not filled:
        return None
    return (f"{why}: the model goes to {display_path(args.model_path)} and the outputs to "
            f"{display_path(args.output_dir)}; the real ones in models/ and reports/ stay "
            "as they are")


def train_command(quick=False, gpu=None):
    """The training command that fits this machine: the quick try, and without a GPU the
    cpu recipe (minutes) rather than the lab recipe (hours on a CPU).

    ``gpu`` defaults to whether an NVIDIA driver is present: a cheap check that
    needs no Keras, so a missing model is answered at once.
    """
    from network.core import runtime

    gpu = runtime.nvidia_driver_present() if gpu is None else gpu
    return f"{TRAIN}{' --quick' if quick else ''}{'' if gpu else ' --recipe cpu'}"


def ensure_writable_dir(parser, path, what):
    """Create ``path`` or stop with an argparse error before any work starts."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        parser.error(f"cannot create {what} {path}: {err.strerror}")
    if not os.access(path, os.W_OK | os.X_OK):
        parser.error(f"{what} {path} is not writable")


def require_model_file(path):
    """Stop with a ``LabError`` when ``path`` is not a model file to load.

    Checked before Keras is imported, so a mistyped path is answered at once.
    The message differs for the default paths (nothing trained yet: it names the
    training command that fits the machine) and a path the user gave with
    --model-path.
    """
    path = Path(path)
    if path.is_dir():
        raise LabError(f"{path} is a folder, not a model file: pass the .h5 or .keras file "
                       "with --model-path")
    if path.is_file():
        return
    if path.resolve() == QUICK_MODEL_PATH.resolve():
        raise LabError(f"no quick model yet ({display_path(path)} does not exist): train one "
                       f"first with {train_command(quick=True)} (a minute or two), or pass "
                       "--model-path")
    if path.resolve() == DEFAULT_MODEL_PATH.resolve():
        raise LabError(f"no trained model yet ({display_path(path)} does not exist): train one "
                       f"first with {train_command()} (or, to try the scripts in a minute or "
                       f"two, {train_command(quick=True)}, then add --quick here), or pass "
                       "--model-path")
    raise LabError(f"the model file {path} does not exist: check the path given with "
                   "--model-path")


def setup_matplotlib(show):
    """Pick a non-interactive backend unless figures are to be shown.

    Returns whether figures will be shown on screen.
    """
    import matplotlib

    has_display = bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
                       or sys.platform in ("win32", "darwin"))
    show = has_display if show is None else show
    if not show:
        matplotlib.use("Agg")
    return show


def quiet_keras_warnings():
    """Hide Keras's HDF5 'legacy format' notice: .h5 is the lab's format on purpose."""
    warnings.filterwarnings("ignore", message=".*HDF5 file via `model.save.*")
    import absl.logging

    absl.logging.set_verbosity(absl.logging.ERROR)
