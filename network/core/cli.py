"""Shared command-line plumbing for the lab's scripts.

Every script turns expected failures (missing data, a bad model file, an
unreadable image) into ``LabError``; ``run_main`` prints those as one line on
stderr and exits non-zero, so users never see a traceback for them.
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


def positive_int(text):
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_float(text):
    """argparse type: a float > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def fraction(text):
    """argparse type: a number in [0, 1)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must lie in [0, 1), got {text}")
    return value


def add_common_arguments(parser, *, data=True, model=True, output=True, seed=True, show=True,
                         downloads=True):
    """Options every script shares, with the same names and defaults.

    ``show=False`` leaves out --show (a script that draws no figures);
    ``downloads=False`` is for a script that never downloads the data set:
    --data-dir's help then does not promise it.
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
    if model:
        parser.add_argument("--model-path", type=Path, default=DEFAULT_MODEL_PATH,
                            help="model file (default: models/best_model.h5)")
    if output:
        parser.add_argument("--output-dir", type=Path, default=DEFAULT_OUTPUT_DIR,
                            help="where figures and tables go (default: reports/)")
    if seed:
        parser.add_argument("--seed", type=int, default=42, help="random seed (default: 42)")
    if show:
        parser.add_argument(
            "--show", action=argparse.BooleanOptionalAction, default=None,
            help="show figures in a window (default: only when a display is available); "
                 "figures are always saved as PNG")


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
    The message differs for the default path (nothing trained yet) and a path
    the user gave with --model-path.
    """
    path = Path(path)
    if path.is_dir():
        raise LabError(f"{path} is a folder, not a model file: pass the .h5 or .keras file "
                       "with --model-path")
    if path.is_file():
        return
    if path.resolve() == DEFAULT_MODEL_PATH.resolve():
        raise LabError(f"no trained model yet ({path} does not exist): train one first with "
                       "python -m network.train_model, or pass --model-path")
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
