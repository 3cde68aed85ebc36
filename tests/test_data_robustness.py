"""Bad data files give one clear LabError naming the file, never a crash."""

import os
import pickle

import numpy as np
import pytest

from conftest import assert_clean_error, run_cli, run_steps, script_step
from fake_cifar import COARSE_NAMES, FINE_NAMES, write_fake_cifar
from network import data_utils
from network.core.errors import LabError
from network.data_utils import get_raw_data_set, load_cifar100


@pytest.fixture
def data(tmp_path):
    """A fresh, writable folder of small synthetic meta/train/test files."""
    return write_fake_cifar(tmp_path / "data", n_train=100, n_test=100)


def load(folder, **kwargs):
    return load_cifar100(folder, download=False, allow_md5_mismatch=True, **kwargs)


def rewrite(path, **changes):
    """Re-pickle one data file with some entries replaced (None deletes)."""
    raw = get_raw_data_set(path)
    for key, value in changes.items():
        if value is None:
            raw.pop(key)
        else:
            raw[key] = value
    with open(path, "wb") as f:
        pickle.dump(raw, f, protocol=2)


def expect_error(folder, name, *fragments, **kwargs):
    """load_cifar100 fails with a one-line LabError naming ``folder/name``."""
    with pytest.raises(LabError) as err:
        load(folder, **kwargs)
    message = str(err.value)
    assert str(folder / name) in message and "\n" not in message
    for fragment in fragments:
        assert fragment in message
    return message


# --- Missing folder or files ----------------------------------------------------------

def test_missing_folder_without_download(tmp_path):
    expect_error(tmp_path / "nope", "meta", "not found", "'meta', 'train', 'test'")


def test_missing_file_without_download(data):
    (data / "test").unlink()
    expect_error(data, "test", "not found", str(data))


# --- Damaged files --------------------------------------------------------------------

@pytest.mark.parametrize("name", ["meta", "train", "test"])
def test_truncated_file(data, name):
    content = (data / name).read_bytes()
    (data / name).write_bytes(content[: len(content) // 2])
    expect_error(data, name, "truncated or corrupted", "delete it")


def test_empty_file(data):
    (data / "meta").write_bytes(b"")
    expect_error(data, "meta", "truncated or corrupted")


def test_corrupted_bytes(data):
    content = bytearray((data / "train").read_bytes())
    content[:8] = b"\xde\xad\xbe\xef" * 2
    (data / "train").write_bytes(bytes(content))
    expect_error(data, "train", "corrupted")


def test_not_a_dictionary(data):
    with open(data / "meta", "wb") as f:
        pickle.dump(FINE_NAMES, f, protocol=2)
    expect_error(data, "meta", "does not hold a CIFAR-100 dictionary")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file(data):
    (data / "test").chmod(0)
    try:
        expect_error(data, "test", "cannot read")
    finally:
        (data / "test").chmod(0o644)


def test_read_error_is_reported(data, monkeypatch):
    # The same check as above, also under root: opening the file fails.
    def refuse(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(data_utils, "open", refuse, raising=False)
    expect_error(data, "meta", "cannot read", "Permission denied")


def test_random_damage_never_crashes(data):
    """Flipped bytes and cuts anywhere in the pickle structure: a LabError or a clean load."""
    rng = np.random.default_rng(0)
    originals = {name: (data / name).read_bytes() for name in ("meta", "train")}
    outcomes = {"error": 0, "loaded": 0}
    for trial in range(240):
        name = "meta" if trial % 2 else "train"
        content = bytearray(originals[name])
        # train: its opcodes and label lists sit in the first and last few kB.
        spots = np.r_[0:len(content)] if name == "meta" else np.r_[0:400, -4000:0]
        if trial % 5 == 0:
            content = content[: int(rng.choice(spots)) % len(content)]
        else:
            for spot in rng.choice(spots, size=rng.integers(1, 4)):
                content[spot] = rng.integers(0, 256)
        (data / name).write_bytes(bytes(content))
        try:
            load(data)
            outcomes["loaded"] += 1
        except LabError as err:
            assert str(data / name) in str(err)
            outcomes["error"] += 1
        (data / name).write_bytes(originals[name])
    assert outcomes["error"] > 100  # the damage really was found, not only survived


# --- MD5 --------------------------------------------------------------------------------

def test_wrong_md5_is_an_error_unless_allowed(data):
    with pytest.raises(LabError) as err:
        load_cifar100(data, download=False)
    message = str(err.value)
    assert str(data / "meta") in message and "MD5" in message
    assert "--allow-md5-mismatch" in message and "\n" not in message
    assert load(data).fine_names == FINE_NAMES  # the user's own copy, allowed


def test_md5_override_does_not_skip_other_checks(data):
    rewrite(data / "train", fine_labels=[100] * 100)
    expect_error(data, "train", "fine_labels")


# --- Wrong structure --------------------------------------------------------------------

@pytest.mark.parametrize("meta, fragment", [
    ({"coarse_label_names": COARSE_NAMES}, "no 'fine_label_names' list"),
    ({"fine_label_names": FINE_NAMES}, "no 'coarse_label_names' list"),
    ({"fine_label_names": list(range(100)), "coarse_label_names": COARSE_NAMES},
     "no 'fine_label_names' list"),
    ({"fine_label_names": FINE_NAMES[:99], "coarse_label_names": COARSE_NAMES}, "99 names"),
    ({"fine_label_names": FINE_NAMES, "coarse_label_names": COARSE_NAMES * 2}, "40 names"),
    ({"data": np.zeros((2, 3072), np.uint8)}, "not the CIFAR-100 meta file"),
])
def test_meta_without_name_lists(data, meta, fragment):
    with open(data / "meta", "wb") as f:
        pickle.dump(meta, f, protocol=2)
    expect_error(data, "meta", fragment)


@pytest.mark.parametrize("array, fragment", [
    (np.zeros((100, 1024), np.uint8), "shape (N, 3072), got (100, 1024)"),
    (np.zeros(100 * 3072, np.uint8), "shape (N, 3072)"),
    (np.zeros((100, 32, 32, 3), np.uint8), "shape (N, 3072)"),
    ([[0] * 3072] * 100, "got list"),
    (np.zeros((100, 3072), np.float64), "uint8 pixels, got float64"),
])
def test_data_array_of_wrong_shape_or_type(data, array, fragment):
    rewrite(data / "test", data=array)
    expect_error(data, "test", fragment)


def test_missing_entry(data):
    rewrite(data / "train", coarse_labels=None)
    expect_error(data, "train", "no 'coarse_labels' entry")


@pytest.mark.parametrize("key, bad, fragment", [
    ("fine_labels", 100, "fine_labels must lie in 0..99, found 0..100"),
    ("fine_labels", -1, "fine_labels must lie in 0..99, found -1..99"),
    ("coarse_labels", 20, "coarse_labels must lie in 0..19"),
])
def test_labels_out_of_range(data, key, bad, fragment):
    labels = get_raw_data_set(data / "test")[key]
    labels[17] = bad
    rewrite(data / "test", **{key: labels})
    expect_error(data, "test", fragment)


@pytest.mark.parametrize("key, change, fragment", [
    ("fine_labels", lambda labels: labels[:-1], "100 images but fine_labels of shape (99,)"),
    ("coarse_labels", lambda labels: labels + [0], "100 images but coarse_labels of shape (101,)"),
    ("fine_labels", lambda labels: [x + 0.5 for x in labels], "must be a list of integers"),
    ("fine_labels", lambda labels: [str(x) for x in labels], "must be a list of integers"),
    ("fine_labels", lambda labels: [[1, 2], *labels[1:]], "must be a flat list of integers"),
    ("coarse_labels", lambda labels: {"not": "a list"}, "must be a list of integers"),
])
def test_label_count_or_type_mismatch(data, key, change, fragment):
    rewrite(data / "train", **{key: change(get_raw_data_set(data / "train")[key])})
    expect_error(data, "train", fragment)


def test_fine_class_in_two_superclasses(data):
    raw = get_raw_data_set(data / "test")
    coarse = raw["coarse_labels"]
    coarse[0] = (coarse[0] + 1) % 20
    rewrite(data / "test", coarse_labels=coarse)
    expect_error(data, "test", f"fine class {raw['fine_labels'][0]} is in superclass")


# --- Through the command line: one line on stderr, no traceback ---------------------------

def error_line(result, prog):
    lines = [line for line in result.stderr.splitlines() if line.startswith(f"{prog}: error:")]
    assert len(lines) == 1, result.stderr[-3000:]
    return lines[0]


@pytest.mark.slow
def test_cli_missing_folder_offline(tmp_path):
    folder = tmp_path / "no" / "data"
    url = (tmp_path / "absent.tar.gz").as_uri()
    result = run_cli("train_model", "--data-dir", folder, "--output-dir", tmp_path / "out",
                     "--model-path", tmp_path / "models" / "m.h5", env={"CIFAR100_URL": url})
    assert_clean_error(result, "could not download CIFAR-100")
    line = error_line(result, "train_model")
    assert str(folder) in line and "'meta', 'train' and 'test'" in line
    assert not (tmp_path / "no").exists()
    assert not (tmp_path / "out" / "resume").exists()  # no backup of a run never started


def test_cli_data_mistake_answered_before_the_keras_import(tmp_path, fake_data):
    train = script_step("train_model", "--data-dir", fake_data, "--output-dir",
                        tmp_path / "out", "--model-path", tmp_path / "models" / "m.h5")
    result = run_steps([train])[0]
    assert_clean_error(result, "MD5")
    assert result.backends == set()  # neither Keras nor a backend was imported
    assert not (tmp_path / "out" / "resume").exists()


@pytest.mark.slow
def test_cli_wrong_md5(tmp_path, fake_data):
    # Run as a file, as from an IDE: files that are not the official ones are refused.
    result = run_cli("train_model", "--data-dir", fake_data, "--output-dir", tmp_path / "out",
                     "--model-path", tmp_path / "models" / "m.h5", file_mode=True)
    assert_clean_error(result, "MD5")
    line = error_line(result, "train_model")
    assert str(fake_data / "meta") in line and "--allow-md5-mismatch" in line
