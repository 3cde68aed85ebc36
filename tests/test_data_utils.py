"""Unit tests for network/data_utils.py: the lab's API, the loader, the safe unpickler."""

import builtins
import codecs
import os
import pickle
import subprocess

import numpy as np
import pytest

from fake_cifar import COARSE_NAMES, FINE_NAMES, FINE_TO_COARSE, make_split, write_fake_cifar
from network import data_utils
from network.core.errors import LabError
from network.data_utils import get_raw_data_set, load_cifar100, preprocess_data


def dump(path, payload, protocol=2):
    with open(path, "wb") as f:
        pickle.dump(payload, f, protocol=protocol)
    return path


# --- The lab's API: get_raw_data_set + preprocess_data ------------------------------

def test_preprocess_data_keeps_the_lab_meaning(fake_data):
    raw = get_raw_data_set(fake_data / "train")
    x, y = preprocess_data(raw, 100)
    assert x.shape == (300, 32, 32, 3) and x.dtype == np.float32
    assert x.min() >= 0.0 and x.max() <= 1.0 and x.max() > 0.5
    assert y.shape == (300, 100) and y.dtype == np.float32
    np.testing.assert_array_equal(y.sum(axis=1), 1.0)
    assert set(np.unique(y)) == {0.0, 1.0}
    np.testing.assert_array_equal(y.argmax(axis=1), raw["fine_labels"])


def test_preprocess_data_matches_the_loader(fake_data):
    x, _ = preprocess_data(get_raw_data_set(fake_data / "test"), 100)
    data = load_cifar100(fake_data, download=False, allow_md5_mismatch=True)
    np.testing.assert_array_equal(x, data.x_test.astype(np.float32) / 255)


def test_pixel_order_channel_first_rows_become_nhwc(tmp_path):
    # CIFAR rows hold 1024 red, then 1024 green, then 1024 blue values, row by row.
    flat = np.zeros((2, 3072), dtype=np.uint8)
    channel, row, col = 1, 5, 7  # green pixel at row 5, column 7 of image 1
    flat[1, channel * 1024 + row * 32 + col] = 255
    flat[0, 2 * 1024 + 31 * 32 + 0] = 51  # blue, bottom-left of image 0
    dump(tmp_path / "train", {"data": flat, "fine_labels": [3, 4], "coarse_labels": [3, 4]})
    x, _ = preprocess_data(get_raw_data_set(tmp_path / "train"), 100)
    assert x[1, row, col, channel] == 1.0
    assert x[0, 31, 0, 2] == pytest.approx(0.2)
    assert np.count_nonzero(x) == 2


def test_pixel_order_round_trips_an_image():
    images = np.random.default_rng(1).integers(0, 256, size=(4, 32, 32, 3), dtype=np.uint8)
    flat = images.transpose(0, 3, 1, 2).reshape(4, 3072)  # how CIFAR stores them
    np.testing.assert_array_equal(data_utils.to_images(flat), images)


def test_scale_and_one_hot_are_float32():
    scaled = data_utils.scale_images(np.array([[0, 255, 51]], dtype=np.uint8))
    assert scaled.dtype == np.float32
    np.testing.assert_allclose(scaled, [[0.0, 1.0, 0.2]], rtol=1e-6)
    hot = data_utils.one_hot([2, 0], 3)
    assert hot.dtype == np.float32
    np.testing.assert_array_equal(hot, [[0, 0, 1], [1, 0, 0]])


# --- load_cifar100 ---------------------------------------------------------------------

def test_load_cifar100_types_shapes_and_names(fake_data):
    data = load_cifar100(fake_data, download=False, allow_md5_mismatch=True)
    assert data.x_train.shape == (300, 32, 32, 3) and data.x_train.dtype == np.uint8
    assert data.x_test.shape == (200, 32, 32, 3) and data.x_test.dtype == np.uint8
    for labels, n in ((data.y_train, 300), (data.coarse_train, 300),
                      (data.y_test, 200), (data.coarse_test, 200)):
        assert labels.shape == (n,) and np.issubdtype(labels.dtype, np.integer)
    assert data.fine_names == FINE_NAMES and data.coarse_names == COARSE_NAMES
    raw = get_raw_data_set(fake_data / "train")
    np.testing.assert_array_equal(data.y_train, raw["fine_labels"])
    np.testing.assert_array_equal(data.coarse_train, raw["coarse_labels"])


def test_class_names_keep_file_order(tmp_path):
    write_fake_cifar(tmp_path, n_train=100, n_test=100)
    fine, coarse = FINE_NAMES[::-1], [f"super_{i}" for i in (7, 3, *range(18))]
    dump(tmp_path / "meta", {"fine_label_names": fine, "coarse_label_names": coarse})
    data = load_cifar100(tmp_path, download=False, allow_md5_mismatch=True)
    assert data.fine_names == fine and data.coarse_names == coarse


def test_fine_to_coarse_mapping(fake_data):
    data = load_cifar100(fake_data, download=False, allow_md5_mismatch=True)
    mapping = data.fine_to_coarse
    assert mapping.shape == (100,)
    np.testing.assert_array_equal(mapping, FINE_TO_COARSE)
    np.testing.assert_array_equal(mapping[data.y_train], data.coarse_train)
    np.testing.assert_array_equal(mapping[data.y_test], data.coarse_test)
    np.testing.assert_array_equal(np.bincount(mapping, minlength=20), 5)


def test_fine_to_coarse_covers_classes_only_in_test(tmp_path):
    write_fake_cifar(tmp_path, n_train=100, n_test=100)
    train = get_raw_data_set(tmp_path / "train")
    keep = [i for i, label in enumerate(train["fine_labels"]) if label != 42]
    train.update(data=train["data"][keep], fine_labels=[train["fine_labels"][i] for i in keep],
                 coarse_labels=[train["coarse_labels"][i] for i in keep])
    dump(tmp_path / "train", train)
    data = load_cifar100(tmp_path, download=False, allow_md5_mismatch=True)
    assert 42 not in data.y_train
    assert data.fine_to_coarse[42] == FINE_TO_COARSE[42] != 0


# --- The restricted unpickler ---------------------------------------------------------

class Reduce:
    """Pickles as ``func(*args)``: what a malicious file would run on load."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def payloads(marker):
    return {
        "os.system": Reduce(os.system, f"touch {marker}"),
        "builtins.open": Reduce(builtins.open, str(marker), "w"),
        "subprocess": Reduce(subprocess.call, ["touch", str(marker)]),
        "eval": Reduce(eval, f"open({str(marker)!r}, 'w')"),
        "numpy.save": Reduce(np.save, str(marker), np.zeros(1)),
        "codecs rot13": Reduce(codecs.encode, "text", "rot13"),
    }


def test_payload_is_live_without_the_restriction(tmp_path):
    # Proves the crafted pickles really create a file when loaded naively.
    marker = tmp_path / "pwned"
    pickle.loads(pickle.dumps(payloads(marker)["builtins.open"]))
    assert marker.exists()


@pytest.mark.parametrize("kind", list(payloads("x")))
@pytest.mark.parametrize("nested", [False, True])
def test_crafted_pickle_is_refused_and_not_run(tmp_path, kind, nested):
    marker = tmp_path / "pwned"
    payload = payloads(marker)[kind]
    if nested:  # hidden inside an otherwise official-looking train file
        payload = {**make_split(10, 0), "batch_label": payload}
    path = dump(tmp_path / "train", payload)
    with pytest.raises(LabError, match="not a CIFAR-100 data file") as err:
        get_raw_data_set(path)
    assert str(path) in str(err.value) and "nothing from it was run" in str(err.value)
    assert not marker.exists()


def test_handwritten_protocol0_payload_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "meta"
    path.write_bytes(b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR.")
    with pytest.raises(LabError, match="refusing to load 'os.system'"):
        get_raw_data_set(path)
    assert not marker.exists()


def test_crafted_pickle_is_refused_by_load_cifar100(tmp_path):
    write_fake_cifar(tmp_path, n_train=100, n_test=100)
    marker = tmp_path / "pwned"
    dump(tmp_path / "test", payloads(marker)["builtins.open"])
    with pytest.raises(LabError, match="test is not a CIFAR-100 data file"):
        load_cifar100(tmp_path, download=False, allow_md5_mismatch=True)
    assert not marker.exists()


def test_pickle_cannot_alter_shared_functions(tmp_path):
    # BUILD on an admitted Python function would set its attributes for every
    # later load; the unpickler hands out a fresh wrapper instead.
    name = b"__defaults__"
    crafted = (b"\x80\x02cnumpy._core.numeric\n_frombuffer\nN}X" + len(name).to_bytes(4, "little")
               + name + b"K\x01\x85s\x86b.")
    real = data_utils._ALLOWED_GLOBALS[("numpy._core.numeric", "_frombuffer")]
    before = real.__defaults__
    try:
        with pytest.raises(LabError, match="does not hold a CIFAR-100 dictionary"):
            get_raw_data_set(dump_bytes(tmp_path / "meta", crafted))
        assert real.__defaults__ == before
    finally:
        real.__defaults__ = before


def dump_bytes(path, content):
    path.write_bytes(content)
    return path


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_official_like_files_load_with_any_protocol(tmp_path, protocol):
    write_fake_cifar(tmp_path, n_train=100, n_test=100)
    expected = load_cifar100(tmp_path, download=False, allow_md5_mismatch=True)
    for name in ("meta", "train", "test"):  # re-pickle with today's NumPy
        dump(tmp_path / name, get_raw_data_set(tmp_path / name), protocol=protocol)
    data = load_cifar100(tmp_path, download=False, allow_md5_mismatch=True)
    np.testing.assert_array_equal(data.x_train, expected.x_train)
    np.testing.assert_array_equal(data.y_test, expected.y_test)
    assert data.fine_names == FINE_NAMES


@pytest.mark.parametrize("protocol", [2, 5])
def test_admits_numpy_scalars_arrays_and_builtin_containers(tmp_path, protocol):
    payload = {"ints": np.arange(5, dtype=np.int32), "label": np.int64(7), "f": np.float32(0.5),
               "names": np.array(["a", "bc"]), "objects": np.array([1, "x"], dtype=object),
               "fortran": np.asfortranarray(np.ones((2, 3))), "set": {1, 2},
               "frozen": frozenset("ab"), "blob": b"\x00\xff", "buf": bytearray(b"ab"),
               "z": 1 + 2j, "dtype": np.dtype("<f8"), "tuple": (1, None, True, 2.5)}
    loaded = get_raw_data_set(dump(tmp_path / "meta", payload, protocol=protocol))
    assert loaded.keys() == payload.keys()
    for key, value in payload.items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(loaded[key], value)
            assert loaded[key].dtype == value.dtype
        else:
            assert loaded[key] == value


def test_numpy1_module_names_are_admitted(tmp_path):
    # NumPy 1 pickles name numpy.core.multiarray; same objects as numpy._core.
    data = pickle.dumps({"data": np.arange(6, dtype=np.uint8)}, protocol=2)
    assert b"numpy._core" in data
    path = dump_bytes(tmp_path / "train", data.replace(b"numpy._core", b"numpy.core"))
    np.testing.assert_array_equal(get_raw_data_set(path)["data"], np.arange(6))
