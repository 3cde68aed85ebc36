"""The cache of decoded arrays: first load, cached load, changed file, read-only data."""

import os
import pickle
import shutil
import stat

import numpy as np
import pytest

from fake_cifar import write_fake_cifar
from network.core.errors import LabError
from network.data_utils import load_cifar100


@pytest.fixture
def data_dir(tmp_path):
    return write_fake_cifar(tmp_path / "cifar", n_train=60, n_test=40)


def load(data_dir, cache):
    return load_cifar100(data_dir, download=False, allow_md5_mismatch=True, cache_dir=cache)


def test_first_load_fills_the_cache_and_the_second_reads_it(data_dir, tmp_path):
    cache = tmp_path / "cache"
    first = load(data_dir, cache)
    folders = list(cache.iterdir())
    assert len(folders) == 1 and (folders[0] / "stamp.json").is_file()
    second = load(data_dir, cache)
    assert isinstance(second.x_train, np.memmap)  # read from the cache, not the pickles
    for name in ("x_train", "y_train", "coarse_train", "x_test", "y_test", "coarse_test"):
        np.testing.assert_array_equal(getattr(first, name), getattr(second, name))
    assert second.fine_names == first.fine_names and second.coarse_names == first.coarse_names
    np.testing.assert_array_equal(second.fine_to_coarse, first.fine_to_coarse)


def test_a_changed_file_is_checked_and_decoded_again(data_dir, tmp_path):
    cache = tmp_path / "cache"
    load(data_dir, cache)
    # Replace the data with other images: the cache must not serve the old ones.
    other = write_fake_cifar(tmp_path / "other", n_train=80, n_test=40, seed=7)
    shutil.copy(other / "train", data_dir / "train")
    reloaded = load(data_dir, cache)
    assert not isinstance(reloaded.x_train, np.memmap)
    assert len(reloaded.x_train) == 80
    assert isinstance(load(data_dir, cache).x_train, np.memmap)  # cached anew


def test_a_file_of_the_same_size_and_modification_time_is_decoded_again(data_dir, tmp_path):
    # cp -p, rsync -a or a restored backup: other images, same size, the old mtime.
    cache = tmp_path / "cache"
    first = load(data_dir, cache)
    train = data_dir / "train"
    before = train.stat()
    with open(train, "rb") as f:
        raw = pickle.load(f, encoding="latin1")
    for key in ("data", "fine_labels", "coarse_labels", "filenames"):
        raw[key] = raw[key][::-1]  # the same images in reverse order: the same size
    with open(train, "wb") as f:  # written in place: the same inode
        pickle.dump(raw, f, protocol=2)
    os.utime(train, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (train.stat().st_size, train.stat().st_mtime_ns) == (before.st_size,
                                                                before.st_mtime_ns)
    reloaded = load(data_dir, cache)
    assert not isinstance(reloaded.x_train, np.memmap)  # not served from the cache
    np.testing.assert_array_equal(reloaded.x_train, first.x_train[::-1])


def test_a_damaged_file_is_refused_even_after_caching(data_dir, tmp_path):
    cache = tmp_path / "cache"
    load(data_dir, cache)
    (data_dir / "test").write_bytes(b"not a pickle")
    with pytest.raises(LabError, match="test"):
        load(data_dir, cache)


def test_md5_override_is_not_carried_over_by_the_cache(data_dir, tmp_path):
    cache = tmp_path / "cache"
    load(data_dir, cache)  # fake files: accepted only with allow_md5_mismatch
    with pytest.raises(LabError, match="MD5"):
        load_cifar100(data_dir, download=False, cache_dir=cache)


def test_a_damaged_cache_is_rebuilt(data_dir, tmp_path):
    cache = tmp_path / "cache"
    first = load(data_dir, cache)
    (folder,) = cache.iterdir()
    (folder / "x_train.npy").write_bytes(b"garbage")
    again = load(data_dir, cache)
    np.testing.assert_array_equal(again.x_train, first.x_train)
    assert isinstance(load(data_dir, cache).x_train, np.memmap)


def test_read_only_data_folder_is_never_written(data_dir, tmp_path):
    before = sorted(p.name for p in data_dir.iterdir())
    mode = data_dir.stat().st_mode
    os.chmod(data_dir, stat.S_IRUSR | stat.S_IXUSR)
    try:
        load(data_dir, tmp_path / "cache")
        assert isinstance(load(data_dir, tmp_path / "cache").x_train, np.memmap)
    finally:
        os.chmod(data_dir, mode)
    assert sorted(p.name for p in data_dir.iterdir()) == before


def test_unwritable_cache_folder_still_loads(data_dir, tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the cache folder would go")
    data = load(data_dir, blocker / "cache")
    assert len(data.x_train) == 60 and not isinstance(data.x_train, np.memmap)


def test_empty_variable_switches_the_cache_off(data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("CIFAR100_CACHE_DIR", "")
    load_cifar100(data_dir, download=False, allow_md5_mismatch=True)
    assert not isinstance(load_cifar100(data_dir, download=False, allow_md5_mismatch=True)
                          .x_train, np.memmap)


def test_the_cache_lives_in_the_labs_one_cache_folder(tmp_path, monkeypatch):
    """Decoded arrays and JAX's compiled programs both go under cifar100-lab in the user's
    cache folder; $CIFAR100_CACHE_DIR moves the arrays, and empty switches them off."""
    from network.core.files import cache_dir
    from network.data_utils import default_cache_dir

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("CIFAR100_CACHE_DIR", raising=False)
    assert default_cache_dir() == cache_dir("arrays") == tmp_path / "cifar100-lab" / "arrays"
    monkeypatch.setenv("CIFAR100_CACHE_DIR", str(tmp_path / "elsewhere"))
    assert default_cache_dir() == tmp_path / "elsewhere"
    monkeypatch.setenv("CIFAR100_CACHE_DIR", "")
    assert default_cache_dir() is None
