"""Recognise your own photos with a trained model.

Every image file given, or found in the given folders (default ``img/``), is
resized to 32x32 RGB and classified. For each image the top-5 classes are
printed and ``<image name>_top5.png`` (the image beside a bar chart) is saved
in ``reports/predictions/``, with all results in ``predictions.csv``
(file, rank, class, probability). Only the model folder is needed: class
names are read from ``class_names.json`` beside the model.

Unreadable files get one line each saying why; the others are still
classified, and the exit status is 1 when any input failed.

Usage:

    python -m network.test_model                    # every image in img/
    python -m network.test_model photo.jpg more_photos/
"""

import argparse
import re
import sys
import warnings
from pathlib import Path

if __package__ in (None, ""):  # run as a file: python network/test_model.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from network import PROJECT_ROOT, cli
from network.cli import LabError

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff",
                    ".ppm", ".pgm", ".pbm", ".jfif"}
MAX_PIXELS = 80_000_000       # refuse larger images: decoding them could exhaust memory
NUM_CLASSES = 100
TOP_K = 5


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="test_model", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", type=Path, default=[PROJECT_ROOT / "img"],
                        help="image files or folders of images (default: img/)")
    cli.add_common_arguments(parser, data=False, seed=False)
    args = parser.parse_args(argv)
    args.output_dir = args.output_dir / "predictions"
    cli.ensure_writable_dir(parser, args.output_dir, "output folder")
    return args


def collect_images(paths):
    """Expand folders to the image files inside; return (files, problems).

    In folders, other files (README.txt, ...) and hidden ones (macOS's
    ``._photo.jpg``) are skipped silently; files named explicitly are all tried.
    """
    files, problems = [], []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.iterdir()
                           if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                           and not p.name.startswith("."))
            if not found:
                problems.append(f"{path}: no image files in this folder")
            files.extend(found)
        elif path.exists():
            files.append(path)
        else:
            problems.append(f"{path}: no such file or folder")
    return files, problems


def read_image(path, max_pixels=MAX_PIXELS):
    """Decode any common image format to an RGB uint8 array (first frame).

    Memory stays bounded: JPEGs are decoded at reduced resolution, and the
    size (after that reduction) is checked from the header before decoding.
    Raises ``LabError`` with the reason when the file cannot be used.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
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
                img = ImageOps.exif_transpose(img)
                return _to_rgb(img)
    except LabError:
        raise
    except UnidentifiedImageError:
        raise LabError("not an image file (or a format Pillow cannot read)") from None
    except Image.DecompressionBombError as err:  # Pillow's own limit, checked on opening
        size = re.search(r"\((\d+) pixels\)", str(err))
        pixels = f"{int(size.group(1)):,} pixels, " if size else ""
        raise LabError(f"image is too large ({pixels}limit {max_pixels:,}): "
                       "shrink it first") from None
    except FileNotFoundError:
        raise LabError("no such file") from None
    except (IsADirectoryError, PermissionError) as err:
        raise LabError(err.strerror.lower()) from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise LabError(f"truncated or damaged image ({err})") from None
    except MemoryError:
        raise LabError("not enough memory to decode this image: shrink it first") from None
    except Exception as err:  # a decoder's unforeseen complaint: still one line, no crash
        raise LabError(f"cannot decode this image ({type(err).__name__}: {err})") from None


def _to_rgb(img):
    """Convert any Pillow mode to 8-bit RGB; transparency becomes white.

    16-bit grayscale (modes ``I;16*`` and ``I``, from 16-bit PNG and TIFF) is
    scaled from 0..65535 to 0..255, so a dark image stays dark; float images
    (mode ``F``) are taken as 0..1, or 0..255 when their values exceed 1.
    """
    import PIL.Image

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
        background = PIL.Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = PIL.Image.alpha_composite(background, rgba)
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


def output_name(path, used):
    """``<image name>_top5.png``, made unique when two inputs share a name."""
    name = f"{path.stem}_top5.png"
    if name in used:
        name = f"{path.stem}_{path.suffix.lstrip('.')}_{len(used)}_top5.png"
    used.add(name)
    return name


def main(argv=None):
    args = parse_args(argv)
    show = cli.setup_matplotlib(args.show)
    files, problems = collect_images(args.paths)
    for problem in problems:
        print(f"skipped {problem}", file=sys.stderr)
    if not files:
        raise LabError("no images to classify")

    import pandas as pd

    from network.model_utils import load_class_names, load_model
    from network.reporting import plot_top5

    cli.quiet_keras_warnings()
    # The model first: a missing or wrong model is the more useful message.
    model = load_model(args.model_path, num_class=NUM_CLASSES)
    names = load_class_names(args.model_path, num_class=NUM_CLASSES)["fine_label_names"]

    # Keep only a preview and the 32x32 input of each image, so memory stays small.
    previews, inputs, readable = [], [], []
    for path in files:
        try:
            image = read_image(path)
            previews.append(thumbnail(image))
            inputs.append(resize_for_model(image))
            readable.append(path)
        except LabError as err:
            problems.append(f"{path}: {err}")
            print(f"skipped {path}: {err}", file=sys.stderr)
    rows, used = [], set()
    if not readable:
        raise LabError(f"none of the {len(files)} image(s) could be read")
    batch = np.stack(inputs).astype(np.float32) / 255
    probs = np.asarray(model.predict(batch, verbose=0), dtype=np.float32)
    for path, image, p in zip(readable, previews, probs):
        top = np.argsort(p)[::-1][:TOP_K]
        print(f"\n{path.name}:")
        for rank, k in enumerate(top, 1):
            print(f"  {rank}. {names[k]:<16} {p[k]:7.2%}")
            rows.append({"file": str(path), "rank": rank, "class": names[k],
                         "probability": round(float(p[k]), 6)})
        plot_top5(image, [names[k] for k in top], p[top],
                  args.output_dir / output_name(path, used), title=path.name, show=show)
    table = pd.DataFrame(rows, columns=["file", "rank", "class", "probability"])
    table.to_csv(args.output_dir / "predictions.csv", index=False)
    print(f"\nClassified {len(readable)} image(s); charts and predictions.csv in "
          f"{args.output_dir}")
    if problems:  # missing paths, empty folders and unreadable images
        print(f"{len(problems)} input(s) could not be classified", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    cli.run_main(main)
