"""Recognising one's own images: every format, every kind of bad file, the outputs.

Two command-line runs (a folder of good and bad files, and the default img/
folder, one after the other in one process) with a tiny untrained model; the rest
calls main, read_image and friends directly.
"""

import json
import re
import struct
import zlib

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import ROOT
from fake_cifar import FINE_NAMES
from helpers import run_steps, script_step
from network import test_model
from network.core.errors import LabError
from network.test_model import (
    READ_FAILURES,
    chart_names,
    collect_images,
    read_image,
    resize_for_model,
)

RED, BLUE = (255, 0, 0), (0, 0, 255)


def gradient(width=48, height=40):
    """A colourful RGB test picture."""
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 // width, y * 255 // height, (x + y) * 255 // (width + height)], -1)
    return Image.fromarray(rgb.astype(np.uint8))


def png_header_only(path, width, height):
    """A tiny PNG that claims ``width`` x ``height`` pixels (no memory needed to write)."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    return path


def animated_gif(path):
    frames = [Image.new("RGB", (16, 16), RED), Image.new("RGB", (16, 16), BLUE)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    return path


def palette_image(transparent):
    img = Image.new("P", (16, 16), 0)
    img.putpalette([*RED, *BLUE] + [0] * 762)
    img.paste(1, (0, 0, 8, 16))  # left half blue, right half red (index 0)
    return img, ({"transparency": 0} if transparent else {})


def truncated_jpeg(path):
    noise = np.random.default_rng(0).integers(0, 256, (200, 200, 3), dtype=np.uint8)
    full = path.with_suffix(".full")
    Image.fromarray(noise).save(full, format="JPEG", quality=90)
    data = full.read_bytes()
    full.unlink()
    path.write_bytes(data[:len(data) // 2])
    return path


# Readable images in the mixed folder, and the unreadable ones with their reason.
READABLE = ["photo.jpg", "drawing.png", "bitmap.bmp", "web.webp", "gray.png", "rgba.png",
            "palette.png", "palette_alpha.png", "gray16.png", "anim.gif"]
UNREADABLE = {"not_an_image.jpg": "not an image file", "empty.png": "empty file",
              "truncated.jpg": "truncated", "huge.png": "too large (10000x9000",
              "giant.png": "too large", "missing.jpg": "no such file"}
SKIPPED_SILENTLY = ["README.txt", "._photo.jpg"]


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mixed")
    picture = gradient()
    picture.save(folder / "photo.jpg", quality=90)
    picture.save(folder / "drawing.png")
    picture.save(folder / "bitmap.bmp")
    picture.save(folder / "web.webp")
    picture.convert("L").save(folder / "gray.png")
    rgba = picture.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(picture.size))
    rgba.save(folder / "rgba.png")
    for name, transparent in (("palette.png", False), ("palette_alpha.png", True)):
        img, options = palette_image(transparent)
        img.save(folder / name, **options)
    gray16 = (np.arange(40 * 48).reshape(40, 48) * 34).astype(np.uint16)
    Image.fromarray(gray16).save(folder / "gray16.png")
    animated_gif(folder / "anim.gif")
    (folder / "not_an_image.jpg").write_text("Dear diary, today I trained a CNN.\n")
    (folder / "empty.png").touch()
    truncated_jpeg(folder / "truncated.jpg")
    png_header_only(folder / "huge.png", 10_000, 9_000)     # over the lab's 80 M pixel limit
    png_header_only(folder / "giant.png", 40_000, 40_000)   # over Pillow's own limit too
    (folder / "README.txt").write_text("Not an image: skipped without a word.\n")
    (folder / "._photo.jpg").write_bytes(b"\0\5\26\7 macOS resource fork")
    return folder


# The tests of the command-line runs share one worker, so cli_runs runs once (pytest-xdist).
SHARES_CLI_RUNS = pytest.mark.xdist_group("test_model_cli")


@pytest.fixture(scope="module")
def cli_runs(mixed_folder, tiny_model, tmp_path_factory):
    """The two command-line runs, one after the other in one process (``run_steps``):
    the mixed folder (and a missing file), then the default img/ folder. Returns
    {"mixed": (StepResult, predictions folder), "default": (StepResult, predictions folder)}.
    """
    mixed, default = tmp_path_factory.mktemp("mixed_out"), tmp_path_factory.mktemp("img_out")
    done = run_steps([
        script_step("test_model", mixed_folder, mixed_folder / "missing.jpg",
                    "--model-path", tiny_model, "--output-dir", mixed),
        script_step("test_model", "--model-path", tiny_model, "--output-dir", default),
    ])
    return {"mixed": (done[0], mixed / "predictions"),
            "default": (done[1], default / "predictions")}


@pytest.fixture(scope="module")
def mixed_run(cli_runs):
    return cli_runs["mixed"]


def check_predictions(folder, expected_files):
    """predictions.csv: 5 ranked rows per image, probabilities descending, real names,
    and each image's chart beside it; no other chart in the folder."""
    table = pd.read_csv(folder / "predictions.csv")
    assert list(table.columns) == ["file", "rank", "class", "probability", "chart",
                                   "copy_of"]
    names = [f.replace("\\", "/").rsplit("/", 1)[-1] for f in table["file"].unique()]
    assert sorted(names) == sorted(expected_files)
    for name, rows in table.groupby("file"):
        assert list(rows["rank"]) == [1, 2, 3, 4, 5], name
        probs = rows["probability"].to_numpy()
        assert np.all(np.diff(probs) <= 0), name
        assert np.all(probs >= 0) and probs.sum() <= 1 + 1e-5, name
        assert set(rows["class"]) <= set(FINE_NAMES) and rows["class"].nunique() == 5, name
        assert rows["chart"].nunique() == 1, name
    charts = table.groupby("file", sort=False)["chart"].first()
    assert charts.is_unique
    assert sorted(p.name for p in folder.glob("*_top5.png")) == sorted(charts)
    for chart in charts:
        assert (folder / chart).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", chart
    return table


def top5_line(stdout, name):
    """The one line that gives ``name``'s five classes with their probabilities."""
    entry = r"fine_\d\d \d+\.\d%"
    lines = re.findall(rf"^  \S*{re.escape(name)}: +(?:{entry}, ){{4}}{entry}$", stdout,
                       re.MULTILINE)
    assert len(lines) == 1, (name, stdout)
    return lines[0]


@pytest.mark.slow
@SHARES_CLI_RUNS
def test_mixed_folder_exit_status_and_no_traceback(mixed_run):
    result, _ = mixed_run
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert "DecompressionBombWarning" not in result.stderr
    assert f"{len(UNREADABLE)} inputs could not be classified" in result.stderr


@pytest.mark.slow
@SHARES_CLI_RUNS
def test_mixed_folder_classifies_every_readable_image(mixed_run):
    result, out = mixed_run
    for name in READABLE:
        assert (out / f"{name.rsplit('.', 1)[0]}_top5.png").is_file(), name
        top5_line(result.stdout, name)
    check_predictions(out, READABLE)
    assert f"Classified {len(READABLE)} images" in result.stdout
    assert re.match(r"Running on (TensorFlow|JAX|PyTorch), ", result.stdout), result.stdout


@pytest.mark.slow
@SHARES_CLI_RUNS
def test_mixed_folder_one_line_per_unreadable_input(mixed_run):
    result, out = mixed_run
    lines = result.stderr.splitlines()
    for name, reason in UNREADABLE.items():
        mentions = [line for line in lines if name in line]
        assert len(mentions) == 1, (name, mentions)
        assert reason in mentions[0], mentions[0]
        assert mentions[0].startswith("skipped "), mentions[0]
        assert not list(out.glob(f"{name.rsplit('.', 1)[0]}_*.png"))
    for name in SKIPPED_SILENTLY:
        assert name not in result.stderr and name not in result.stdout


@pytest.mark.slow
@SHARES_CLI_RUNS
def test_default_run_classifies_the_sample_photos(cli_runs):
    photos = sorted(p.name for p in (ROOT / "img").iterdir()
                    if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    assert len(photos) == 7
    result, out = cli_runs["default"]
    assert result.returncode == 0, result.stderr[-3000:]
    assert "skipped" not in result.stderr
    for photo in photos:
        assert (out / f"{photo.rsplit('.', 1)[0]}_top5.png").is_file(), photo
        top5_line(result.stdout, f"img/{photo}")  # named as from the working folder
    check_predictions(out, photos)


# --- Each run's outputs ----------------------------------------------------------------

def recognise(paths, model, out, capsys):
    """test_model.main in this process; returns (exit code, stdout, predictions folder)."""
    code = test_model.main([*map(str, paths), "--model-path", str(model),
                            "--output-dir", str(out), "--no-show"])
    return code, capsys.readouterr().out, out / "predictions"


def test_each_run_leaves_only_its_own_charts(tiny_model, tmp_path, capsys):
    first, second = tmp_path / "first", tmp_path / "second"
    for folder, names in ((first, ["cat.png", "dog.jpg", "rose.png"]), (second, ["bus.png"])):
        folder.mkdir()
        for name in names:
            gradient().save(folder / name)
    code, _, out = recognise([first], tiny_model, tmp_path / "out", capsys)
    assert code == 0
    check_predictions(out, ["cat.png", "dog.jpg", "rose.png"])
    (out / "notes.txt").write_text("mine")  # not a chart: left alone
    code, _, out = recognise([second], tiny_model, tmp_path / "out", capsys)
    assert code == 0
    check_predictions(out, ["bus.png"])
    assert sorted(p.name for p in out.iterdir()) == ["bus_top5.png", "charts.npz", "notes.txt",
                                                     "predictions.csv"]


def test_inputs_sharing_a_name_get_their_own_charts(tiny_model, tmp_path, capsys):
    photos = tmp_path / "photos"
    for name in ("a/flower.jpg", "b/flower.jpg", "flower.png", "b/deeper/tree.png"):
        (photos / name).parent.mkdir(parents=True, exist_ok=True)
        gradient().save(photos / name)
    (photos / ".cache").mkdir()
    gradient().save(photos / ".cache" / "hidden.png")  # hidden folders are skipped
    code, stdout, out = recognise([photos], tiny_model, tmp_path / "out", capsys)
    assert code == 0
    table = check_predictions(out, ["flower.jpg", "flower.jpg", "flower.png", "tree.png"])
    charts = dict(zip(table["file"], table["chart"]))
    assert charts == {str(photos / "a" / "flower.jpg"): "flower_1_top5.png",
                      str(photos / "b" / "deeper" / "tree.png"): "tree_top5.png",
                      str(photos / "b" / "flower.jpg"): "flower_2_top5.png",
                      str(photos / "flower.png"): "flower_3_top5.png"}
    for folder in ("a/", "b/"):  # the lines tell the two flower.jpg apart
        top5_line(stdout, f"{folder}flower.jpg")


def test_charts_folder_inside_the_input_folder_is_not_classified(tiny_model, tmp_path,
                                                                 capsys):
    gradient().save(tmp_path / "cat.png")
    for _ in range(2):  # the second run finds the first one's chart beside the photos
        code, _, out = recognise([tmp_path], tiny_model, tmp_path / "reports", capsys)
        assert code == 0
        check_predictions(out, ["cat.png"])


# --- read_image and friends, directly ------------------------------------------------

def save(img, path, **options):
    img.save(path, **options)
    return path


def test_colour_order_is_rgb(tmp_path):
    # OpenCV decodes to BGR; a pure red file must come out as [255, 0, 0].
    red = Image.new("RGB", (40, 30), RED)
    for name in ("red.png", "red.bmp", "red.webp"):
        image = read_image(save(red, tmp_path / name, **({"lossless": True}
                                                          if name.endswith("webp") else {})))
        assert image.shape == (30, 40, 3) and image.dtype == np.uint8
        assert (image == RED).all(), name
    jpeg = read_image(save(red, tmp_path / "red.jpg", quality=95)).reshape(-1, 3)
    assert (jpeg[:, 0] > 240).all() and (jpeg[:, 1:] < 15).all()
    small = resize_for_model(read_image(tmp_path / "red.png"))
    assert small.shape == (32, 32, 3) and (small == RED).all()


def test_grayscale_becomes_three_equal_channels(tmp_path):
    values = np.tile(np.arange(0, 256, 8, dtype=np.uint8), (4, 1))
    image = read_image(save(Image.fromarray(values, "L"), tmp_path / "gray.png"))
    assert image.shape == (4, 32, 3)
    for channel in range(3):
        np.testing.assert_array_equal(image[:, :, channel], values)


def test_transparency_becomes_white(tmp_path):
    rgba = Image.new("RGBA", (4, 2), (*RED, 255))
    rgba.putpixel((0, 0), (*BLUE, 0))          # fully transparent
    rgba.putpixel((1, 0), (0, 0, 0, 128))      # half-transparent black
    image = read_image(save(rgba, tmp_path / "rgba.png"))
    assert tuple(image[0, 0]) == (255, 255, 255)
    assert all(abs(int(v) - 127) <= 1 for v in image[0, 1])
    assert tuple(image[1, 3]) == RED
    la = Image.new("LA", (2, 1), (0, 0))
    assert (read_image(save(la, tmp_path / "la.png")) == 255).all()


@pytest.mark.parametrize("transparent", [False, True])
def test_palette_images(tmp_path, transparent):
    img, options = palette_image(transparent)
    image = read_image(save(img, tmp_path / "palette.png", **options))
    assert tuple(image[0, 0]) == BLUE                              # palette index 1
    assert tuple(image[0, 15]) == ((255, 255, 255) if transparent else RED)  # index 0


def test_sixteen_bit_grayscale_is_scaled_not_stretched(tmp_path):
    values = np.array([[0, 257, 128 * 257, 65535]], dtype=np.uint16)
    path = save(Image.fromarray(values), tmp_path / "gray16.png")
    assert Image.open(path).mode == "I;16"
    image = read_image(path)
    assert image.dtype == np.uint8 and image.shape == (1, 4, 3)
    np.testing.assert_array_equal(image[0, :, 0], [0, 1, 128, 255])
    # A dark 16-bit picture stays dark (not stretched to full brightness).
    dark = np.full((2, 2), 1000, dtype=np.uint16)
    assert (read_image(save(Image.fromarray(dark), tmp_path / "dark16.png")) == 4).all()


def test_exif_orientation_is_honoured(tmp_path):
    # Stored 40 wide x 20 high, left half red and right half blue; EXIF says
    # "rotate 90 degrees clockwise to display" (orientation 6), as phones write.
    stored = Image.new("RGB", (40, 20), RED)
    stored.paste(Image.new("RGB", (20, 20), BLUE), (20, 0))
    exif = Image.Exif()
    exif[0x0112] = 6
    image = read_image(save(stored, tmp_path / "phone.jpg", exif=exif, quality=95))
    assert image.shape == (40, 20, 3)           # displayed upright: 20 wide, 40 high
    top, bottom = image[5, 10].astype(int), image[35, 10].astype(int)
    assert top[0] > 200 and top[2] < 60         # the stored left (red) is now on top
    assert bottom[2] > 200 and bottom[0] < 60


def test_animated_gif_uses_the_first_frame(tmp_path):
    path = animated_gif(tmp_path / "anim.gif")
    assert Image.open(path).n_frames == 2
    assert (read_image(path) == RED).all()


def test_pixel_limit_refuses_before_decoding(tmp_path):
    with pytest.raises(LabError, match=r"too large \(10000x9000 pixels, limit 80,000,000\)"):
        read_image(png_header_only(tmp_path / "huge.png", 10_000, 9_000))
    with pytest.raises(LabError, match=r"too large \(1,600,000,000 pixels"):
        read_image(png_header_only(tmp_path / "giant.png", 40_000, 40_000))


def test_large_jpeg_is_decoded_at_reduced_size(tmp_path):
    picture = gradient(2000, 1500)
    jpeg = read_image(save(picture, tmp_path / "big.jpg"), max_pixels=1_000_000)
    assert jpeg.shape[0] * jpeg.shape[1] <= 1_000_000     # decoded at 1/4 scale
    assert jpeg.shape[1] / jpeg.shape[0] == pytest.approx(4 / 3, rel=0.01)
    with pytest.raises(LabError, match="too large"):       # PNG cannot be decoded reduced
        read_image(save(picture, tmp_path / "big.png"), max_pixels=1_000_000)


@pytest.mark.parametrize(("make", "reason"), [
    (lambda d: (d / "notes.jpg").write_text("hello") and d / "notes.jpg", "not an image"),
    (lambda d: (d / "empty.jpg").touch() or d / "empty.jpg", "empty file"),
    (lambda d: truncated_jpeg(d / "cut.jpg"), "truncated"),
    (lambda d: d / "nowhere.png", "no such file"),
    (lambda d: d, "directory"),
])
def test_unreadable_files_raise_lab_error(tmp_path, make, reason):
    with pytest.raises(LabError, match=reason):
        read_image(make(tmp_path))


def test_collect_images(tmp_path):
    for name in ("b.png", "a.JPG", "notes.txt", "._a.jpg", ".hidden.png", "sub/c.png",
                 "sub/deeper/d.gif", ".git/e.png", "out/f_top5.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).touch()
    (tmp_path / "none").mkdir()
    files, problems = collect_images([tmp_path, tmp_path / "none", tmp_path / "gone.png",
                                      tmp_path / "notes.txt"], exclude=[tmp_path / "out"])
    assert [f.relative_to(tmp_path).as_posix() for f in files] == [
        "a.JPG", "b.png", "sub/c.png", "sub/deeper/d.gif", "notes.txt"]
    assert problems == [f"{tmp_path / 'none'}: no image files in this folder",
                        f"{tmp_path / 'gone.png'}: no such file or folder"]


def test_chart_names_are_unique_and_follow_one_rule(tmp_path):
    files = [tmp_path / n for n in ("cat.jpg", "dog.png", "a/cat.jpg", "Cat.png", "cat_2.gif")]
    # Every "cat" is numbered, around the plain name cat_2.gif already has.
    assert chart_names(files) == ["cat_1_top5.png", "dog_top5.png", "cat_3_top5.png",
                                  "Cat_4_top5.png", "cat_2_top5.png"]
    assert chart_names(files[:2]) == ["cat_top5.png", "dog_top5.png"]
    assert chart_names(files) == chart_names(list(files))  # the same inputs, the same names


def test_every_read_failure_has_a_reason():
    # The decision table ends with a row for any exception: nothing escapes as a traceback.
    assert READ_FAILURES[-1][0] is Exception
    kinds = [kind for kinds, _ in READ_FAILURES
             for kind in (kinds if isinstance(kinds, tuple) else (kinds,))]
    for i, kind in enumerate(kinds):  # no row is hidden by an earlier, broader one
        assert not any(issubclass(kind, earlier) for earlier in kinds[:i]), kind


def test_a_model_taking_uint8_images_gets_them_unscaled(tmp_path, capsys):
    # ResNet-9 models take 0-255 images and scale them inside; the lab CNN takes 0-1.
    import keras

    keras.utils.set_random_seed(1)
    inputs = keras.Input((32, 32, 3), dtype="uint8")
    x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(100, activation="softmax")(x))
    model.save(tmp_path / "uint8.h5")
    (tmp_path / "class_names.json").write_text(json.dumps({"fine_label_names": FINE_NAMES}))
    gradient().save(tmp_path / "photo.png")
    code, _, out = recognise([tmp_path / "photo.png"], tmp_path / "uint8.h5", tmp_path, capsys)
    assert code == 0
    expected = model.predict(resize_for_model(read_image(tmp_path / "photo.png"))[None],
                             verbose=0)[0]
    table = pd.read_csv(out / "predictions.csv")
    top = np.argsort(expected)[::-1][:5]
    assert list(table["class"]) == [FINE_NAMES[k] for k in top]
    np.testing.assert_allclose(table["probability"], expected[top], atol=2e-6)


def test_copies_of_a_photo_are_found_across_formats_and_sizes(tmp_path):
    """The same photo saved as .jpg, .BMP and .webp, and shrunk, is one photo; the
    different photos of img/ are all different."""
    from network.test_model import find_copies, images_in_folder, photo_hash, read_image

    photo = Image.fromarray(read_image(ROOT / "img" / "raccoon.jpg"))
    photo.save(tmp_path / "raccoon.jpg", quality=85)
    photo.resize((photo.width // 3, photo.height // 3)).save(tmp_path / "RACCOON.BMP")
    photo.resize((photo.width // 2, photo.height // 2)).save(tmp_path / "copy.webp",
                                                             quality=60)
    others = images_in_folder(ROOT / "img")
    files = [*others, tmp_path / "raccoon.jpg", tmp_path / "RACCOON.BMP", tmp_path / "copy.webp"]
    copies = find_copies([photo_hash(read_image(path)) for path in files])
    original = [p.name for p in others].index("raccoon.jpg")
    assert copies == [None] * len(others) + [original] * 3


def test_copies_are_printed_and_recorded(tiny_model, tmp_path, capsys):
    from pathlib import Path

    folder = tmp_path / "photos"
    folder.mkdir()
    photo = gradient(64, 48)
    photo.save(folder / "a.png")
    photo.save(folder / "b.jpg", quality=80)
    photo.transpose(Image.Transpose.ROTATE_180).save(folder / "c.png")
    code, out, _ = recognise([folder], tiny_model, tmp_path / "out", capsys)
    assert code == 0
    assert re.search(r"b\.jpg is a copy of .*a\.png", out)
    table = pd.read_csv(tmp_path / "out" / "predictions" / "predictions.csv")
    copy_of = table.groupby("file")["copy_of"].first().fillna("")
    assert [Path(f).name for f in copy_of if f] == ["a.png"]
    assert copy_of[str(folder / "b.jpg")].endswith("a.png")
    charts = np.load(tmp_path / "out" / "predictions" / "charts.npz")
    assert sorted(charts.files) == sorted(f"{name}_top5.png.{part}" for name in "abc"
                                          for part in ("heat", "image"))
