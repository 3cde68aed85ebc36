"""Recognise your own photos with a trained model.

Every image file given, or found in the given folders and their sub-folders
(default ``img/``), is resized to 32x32 RGB and classified. Each image's five
most likely classes are printed on one line, and ``reports/predictions/``
gets, for this run only (charts of earlier runs are removed):

- ``<image name>_top5.png``: the image, a heat map over it of the regions the
  network needs to name its first class (occlusion sensitivity), and a bar
  chart of its top 5 (calibrated probabilities);
  inputs that share a name (``a/rose.jpg`` and ``b/rose.jpg``, or
  ``rose.jpg`` and ``rose.png``) get ``rose_1_top5.png``, ``rose_2_top5.png``;
- ``predictions.csv``: file, rank, class, probability and chart, 5 rows per image.

What it prints is also saved in ``reports/logs/test_model.log`` (for the lab report).

Only the model folder is needed: class names are read from
``class_names.json`` beside the model. Unreadable files get one line each
saying why; the others are still classified, and the exit status is 1 when
any input failed.

Usage:

    python -m network.test_model                    # every image in img/
    python -m network.test_model photo.jpg more_photos/
    python -m network.test_model --quick            # with the quick try's model
"""

import argparse
import os
import re
import sys
import warnings
from collections import Counter
from pathlib import Path

if __package__ in (None, ""):  # run as a file: python network/test_model.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from network import PROJECT_ROOT
from network.core import cli, runtime
from network.core.console_log import logged
from network.core.errors import LabError
from network.core.files import write_text_atomic
from network.data_utils import NUM_CLASSES

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff",
                    ".ppm", ".pgm", ".pbm", ".jfif"}
MAX_PIXELS = 80_000_000       # refuse larger images: decoding them could exhaust memory
TOP_K = 5
CHART_SUFFIX = "_top5.png"
COLUMNS = ["file", "rank", "class", "probability", "chart"]

# Why an image cannot be used, by the exception reading it raised: the first row that
# matches explains it (so subclasses, e.g. FileNotFoundError, come before OSError).
READ_FAILURES = (
    (LabError, "{err}"),  # our own checks: empty file, pixel limit
    (UnidentifiedImageError, "not an image file (or a format Pillow cannot read)"),
    (Image.DecompressionBombError, "image is too large ({pixels}limit {limit:,}): "
                                   "shrink it first"),  # Pillow's own limit, on opening
    (FileNotFoundError, "no such file"),
    ((IsADirectoryError, PermissionError), "{strerror}"),
    ((OSError, SyntaxError, ValueError, EOFError), "truncated or damaged image ({err})"),
    (MemoryError, "not enough memory to decode this image: shrink it first"),
    (Exception, "cannot decode this image ({kind}: {err})"),  # a decoder's surprise
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="test_model", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", type=Path, default=[PROJECT_ROOT / "img"],
                        help="image files or folders of images (default: img/)")
    cli.add_common_arguments(parser, data=False, seed=False, quick=True)
    args = parser.parse_args(argv)
    cli.apply_quick(args)  # --quick: the quick run's model, and its outputs apart
    args.output_dir = args.output_dir / "predictions"
    cli.ensure_writable_dir(parser, args.output_dir, "output folder")
    return args


def collect_images(paths, exclude=()):
    """Expand folders (sub-folders too) to the image files inside; return (files, problems).

    In folders, other files (README.txt, ...), hidden files and folders (macOS's
    ``._photo.jpg``, ``.git/``) and the folders in ``exclude`` (the charts'
    own folder) are skipped silently; files named explicitly are all tried.
    """
    skip = {Path(p).resolve() for p in exclude}
    files, problems = [], []
    for path in paths:
        if path.is_dir():
            found = images_in_folder(path, skip)
            if not found:
                problems.append(f"{path}: no image files in this folder")
            files.extend(found)
        elif path.exists():
            files.append(path)
        else:
            problems.append(f"{path}: no such file or folder")
    return files, problems


def images_in_folder(folder, skip=frozenset()):
    """The image files in ``folder`` and its sub-folders, sorted by path."""
    found = []
    for root, dirs, names in os.walk(folder):  # does not follow links to folders: no loops
        root = Path(root)
        dirs[:] = [d for d in dirs
                   if not d.startswith(".") and (root / d).resolve() not in skip]
        found += [root / name for name in names
                  if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_EXTENSIONS]
    return sorted(found)


def read_image(path, max_pixels=MAX_PIXELS):
    """Decode any common image format to an RGB uint8 array (first frame).

    Memory stays bounded: JPEGs are decoded at reduced resolution, and the
    size (after that reduction) is checked from the header before decoding.
    Raises ``LabError`` with the reason (``READ_FAILURES``) when the file cannot be used.
    """
    try:
        return _decode(path, max_pixels)
    except Exception as err:
        raise LabError(why_unreadable(err, max_pixels)) from None


def why_unreadable(err, max_pixels=MAX_PIXELS):
    """The one-line reason ``READ_FAILURES`` gives for ``err``."""
    size = re.search(r"\((\d+) pixels\)", str(err))
    fields = {"err": err, "kind": type(err).__name__, "limit": max_pixels,
              "strerror": str(getattr(err, "strerror", None) or err).lower(),
              "pixels": f"{int(size.group(1)):,} pixels, " if size else ""}
    template = next(text for kinds, text in READ_FAILURES if isinstance(err, kinds))
    return template.format(**fields)


def _decode(path, max_pixels):
    if Path(path).stat().st_size == 0:
        raise LabError("empty file (0 bytes)")
    with warnings.catch_warnings():
        # Our own limit below replaces Pillow's warning, which would add a
        # second line without the file's name.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(path) as img:
            img.seek(0)                    # animated images: the first frame
            img.draft("RGB", (256, 256))   # JPEG: decode at 1/2..1/8 scale
            width, height = img.size
            if width * height > max_pixels:
                raise LabError(f"image is too large ({width}x{height} pixels, limit "
                               f"{max_pixels:,}): shrink it first")
            img.load()
            return _to_rgb(ImageOps.exif_transpose(img))


def _to_rgb(img):
    """Convert any Pillow mode to 8-bit RGB; transparency becomes white.

    16-bit grayscale (modes ``I;16*`` and ``I``, from 16-bit PNG and TIFF) is
    scaled from 0..65535 to 0..255, so a dark image stays dark; float images
    (mode ``F``) are taken as 0..1, or 0..255 when their values exceed 1.
    """
    if img.mode.startswith("I;16") or img.mode == "I":
        wide = np.clip(np.asarray(img), 0, 65535).astype(np.uint32)
        gray = ((wide * 255 + 32767) // 65535).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if img.mode == "F":
        array = np.nan_to_num(np.asarray(img, dtype=np.float32))
        scale = 255.0 if array.max(initial=0) <= 1.0 else 1.0
        gray = np.clip(array * scale, 0, 255).round().astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def resize_for_model(image):
    """Shrink (or grow) an RGB image to the network's 32x32 input."""
    import cv2

    shrinking = image.shape[0] > 32 or image.shape[1] > 32
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC
    return cv2.resize(image, (32, 32), interpolation=interpolation)


def thumbnail(image, longest=512):
    """A copy at most ``longest`` pixels wide or high, for the chart."""
    import cv2

    scale = longest / max(image.shape[:2])
    if scale >= 1:
        return image
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def chart_names(files):
    """The chart file name of each input, in order: ``<stem>_top5.png``.

    Inputs that share a stem are numbered in input order (``rose_1_top5.png``,
    ``rose_2_top5.png``), so no chart overwrites another. Names are compared
    ignoring case, as the file systems of Windows and macOS do.
    """
    stems = Counter(path.stem.lower() for path in files)
    # The plain names of unique stems are taken; numbered names step around them.
    taken = {f"{path.stem}{CHART_SUFFIX}".lower() for path in files
             if stems[path.stem.lower()] == 1}
    numbers, names = Counter(), []
    for path in files:
        stem = path.stem
        if stems[stem.lower()] == 1:
            names.append(f"{stem}{CHART_SUFFIX}")
            continue
        name = None
        while name is None or name.lower() in taken:
            numbers[stem.lower()] += 1
            name = f"{stem}_{numbers[stem.lower()]}{CHART_SUFFIX}"
        taken.add(name.lower())
        names.append(name)
    return names


def remove_old_charts(folder, keep):
    """Delete the charts of earlier runs, so the folder shows this run's images only."""
    keep = {name.lower() for name in keep}
    for chart in folder.glob(f"*{CHART_SUFFIX}"):
        if chart.name.lower() not in keep:
            chart.unlink(missing_ok=True)


def read_inputs(files, problems):
    """(readable files, chart previews, 32x32 inputs); unreadable files join ``problems``.

    Only a preview and the network's input of each image are kept, so memory stays small.
    """
    readable, previews, inputs = [], [], []
    for path in files:
        try:
            image = read_image(path)
        except LabError as err:
            problems.append(f"{path}: {err}")
            print(f"skipped {path}: {err}", file=sys.stderr)
            continue
        readable.append(path)
        previews.append(thumbnail(image))
        inputs.append(resize_for_model(image))
    return readable, previews, inputs


def report_top5(model, names, readable, charts, previews, inputs, probs, args, show):
    """Print each image's top 5 on one line and draw its chart; return predictions.csv's rows."""
    from network.analysis.explain import occlusion_map, plot_explained_top5

    labels = [cli.display_path(p) for p in readable]
    width = max(len(label) for label in labels) + 1
    print(f"Top {TOP_K} classes of {cli.plural(len(readable), 'image')}:")
    rows = []
    for path, label, chart, image, pixels, p in zip(readable, labels, charts, previews, inputs,
                                                    probs):
        top = np.argsort(p)[::-1][:TOP_K]
        print(f"  {label + ':':<{width}}  " + ", ".join(f"{names[k]} {p[k]:.1%}" for k in top))
        rows += [{"file": str(path), "rank": rank, "class": names[k],
                  "probability": round(float(p[k]), 6), "chart": chart}
                 for rank, k in enumerate(top, 1)]
        # Where the network finds its first class: one batch of occluded copies. The drops
        # stay in probability units, so the chart's colour scale says how much each region counts.
        heat = occlusion_map(model, pixels, int(top[0]), normalize=False)
        plot_explained_top5(image, heat, [names[k] for k in top], p[top],
                            args.output_dir / chart, title=path.name, show=show)
    return rows


# The console output goes to the report's folder (logs/test_model.log), not predictions/.
@logged("test_model", parse_args, folder=lambda args: args.output_dir.parent)
def main(argv=None):
    runtime.setup_backend_env()
    args = parse_args(argv)
    # Paths first, before the slow Keras import: a typo is answered at once.
    cli.require_model_file(args.model_path)
    files, problems = collect_images(args.paths, exclude=[args.output_dir])
    for problem in problems:
        print(f"skipped {problem}", file=sys.stderr)
    if not files:
        raise LabError("no images to classify")
    show = cli.setup_matplotlib(args.show)
    runtime.start()

    import pandas as pd

    from network.analysis.calibration import apply_temperature, load_temperature
    from network.model_utils import load_class_names, load_model, model_images

    model = load_model(args.model_path, num_class=NUM_CLASSES)
    names = load_class_names(args.model_path, num_class=NUM_CLASSES)["fine_label_names"]
    readable, previews, inputs = read_inputs(files, problems)
    if not readable:
        raise LabError("the image could not be read" if len(files) == 1 else
                       f"none of the {len(files):,} images could be read")
    batch = model_images(model, np.stack(inputs))  # in the form the model takes
    # Calibrated probabilities (the temperature saved beside the model; 1 without one).
    probs = apply_temperature(np.asarray(model.predict(batch, verbose=0), dtype=np.float32),
                              load_temperature(args.model_path))

    charts = chart_names(readable)
    rows = report_top5(model, names, readable, charts, previews, inputs, probs, args, show)
    table = pd.DataFrame(rows, columns=COLUMNS)
    write_text_atomic(args.output_dir / "predictions.csv", table.to_csv(index=False))
    remove_old_charts(args.output_dir, charts)
    print(f"Classified {cli.plural(len(readable), 'image')}; charts and predictions.csv in "
          f"{cli.display_path(args.output_dir)}")
    if problems:  # missing paths, empty folders and unreadable images
        print(f"{cli.plural(len(problems), 'input')} could not be classified", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    cli.run_main(main)
