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
- ``predictions.csv``: file, rank, class, probability and chart, 5 rows per image,
  and ``copy_of``: for a photo that is a near-identical copy of an earlier one
  (the same picture saved again as another format or size), that one's file;
- ``charts.npz``: each chart's photo and heat map, from which make_report draws
  its own copies of the charts in the report's language (the PNG files stay English).

Copies are told by a perceptual hash of the decoded photo (a difference hash:
whether each pixel of a 9x8 and an 8x9 greyscale copy is brighter than its
neighbour, 128 bits, plus its mean colour): re-encoding it as JPEG, BMP or
WEBP, or resizing it, changes a few of its bits at most, while two different
photos differ in about half of them. Each copy is named on the
terminal, since the manual asks for photos of different categories.

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
COLUMNS = ["file", "rank", "class", "probability", "chart", "copy_of"]
CHART_DATA = "charts.npz"
HASH_SIZE = 8                 # the difference hash compares 8x8 neighbouring pixels twice
COPY_BITS = 16                # hashes this close (of 128 bits) are one photo...
COPY_COLOUR = 12              # ...when their mean colours differ by this little (of 255)

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


def photo_hash(image):
    """A perceptual hash of an RGB photo: (128 booleans, mean colour).

    Each pixel of a 9x8 greyscale copy against its right neighbour, and of an
    8x9 copy against the one below: the photo's layout as the eye sees it, not
    its file's bytes or size. The mean colour tells apart plain photos, which
    have hardly any layout.
    """
    import cv2

    image = np.asarray(image, dtype=np.uint8)
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    across = cv2.resize(grey, (HASH_SIZE + 1, HASH_SIZE), interpolation=cv2.INTER_AREA)
    down = cv2.resize(grey, (HASH_SIZE, HASH_SIZE + 1), interpolation=cv2.INTER_AREA)
    bits = np.concatenate([(across[:, 1:] > across[:, :-1]).ravel(),
                           (down[1:] > down[:-1]).ravel()])
    return bits, image.reshape(-1, 3).mean(axis=0)


def find_copies(hashes):
    """For each photo, the index of the earlier photo it is a copy of, or None."""
    copies = []
    for i, (bits, colour) in enumerate(hashes):
        earlier = (j for j in range(i) if copies[j] is None
                   and np.count_nonzero(bits != hashes[j][0]) <= COPY_BITS
                   and np.abs(colour - hashes[j][1]).max() <= COPY_COLOUR)
        copies.append(next(earlier, None))
    return copies


def remove_old_charts(folder, keep):
    """Delete the charts of earlier runs, so the folder shows this run's images only."""
    keep = {name.lower() for name in keep}
    for chart in folder.glob(f"*{CHART_SUFFIX}"):
        if chart.name.lower() not in keep:
            chart.unlink(missing_ok=True)


def read_inputs(files, problems):
    """(readable files, chart previews, 32x32 inputs, perceptual hashes); unreadable files
    join ``problems``.

    Only a preview, the network's input and the hash of each image are kept, so memory
    stays small.
    """
    readable, previews, inputs, hashes = [], [], [], []
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
        hashes.append(photo_hash(image))
    return readable, previews, inputs, hashes


def report_copies(readable, copies):
    """Name each copy on the terminal; return predictions.csv's copy_of value per image."""
    copy_of = []
    for path, original in zip(readable, copies):
        if original is None:
            copy_of.append("")
            continue
        copy_of.append(str(readable[original]))
        print(f"{cli.display_path(path)} is a copy of {cli.display_path(readable[original])} "
              "(the same photo): the manual asks for photos of different categories")
    return copy_of


def report_top5(model, names, readable, charts, previews, inputs, probs, args, show):
    """Print each image's top 5 on one line and draw its chart; return predictions.csv's
    rows and the charts' data (each photo and heat map, for make_report)."""
    from network.analysis.explain import occlusion_map, plot_explained_top5

    labels = [cli.display_path(p) for p in readable]
    width = max(len(label) for label in labels) + 1
    print(f"Top {TOP_K} classes of {cli.plural(len(readable), 'image')}:")
    rows, data = [], {}
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
        data[f"{chart}.image"], data[f"{chart}.heat"] = image, heat
    return rows, data


def save_chart_data(path, data):
    """The photos and heat maps of the charts, compressed, written atomically."""
    from network.core.files import atomic_path

    with atomic_path(path) as tmp, open(tmp, "wb") as file:
        np.savez_compressed(file, **data)


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
    from network.analysis.explain import occlusion_batch_size, predict_fixed
    from network.model_utils import load_class_names, load_model, model_images

    model = load_model(args.model_path, num_class=NUM_CLASSES)
    names = load_class_names(args.model_path, num_class=NUM_CLASSES)["fine_label_names"]
    readable, previews, inputs, hashes = read_inputs(files, problems)
    if not readable:
        raise LabError("the image could not be read" if len(files) == 1 else
                       f"none of the {len(files):,} images could be read")
    copy_of = report_copies(readable, find_copies(hashes))
    batch = model_images(model, np.stack(inputs))  # in the form the model takes
    # Calibrated probabilities (the temperature saved beside the model; 1 without one),
    # in batches of the occlusion maps' shape, so that the model is traced once.
    probs = apply_temperature(predict_fixed(model, batch, occlusion_batch_size()),
                              load_temperature(args.model_path))

    charts = chart_names(readable)
    rows, data = report_top5(model, names, readable, charts, previews, inputs, probs, args,
                             show)
    for i, row in enumerate(rows):   # TOP_K rows to an image, in the images' order
        row["copy_of"] = copy_of[i // TOP_K]
    table = pd.DataFrame(rows, columns=COLUMNS)
    save_chart_data(args.output_dir / CHART_DATA, data)
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
