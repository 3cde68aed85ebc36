"""Checks on the real CIFAR-100 files, run only when $CIFAR100_DIR names their folder.

The folder is only read, never written (it may be shared and read-only).
"""

import os
from pathlib import Path

import numpy as np
import pytest

from network import data_utils
from network.core.files import file_digest
from network.data_utils import get_raw_data_set, load_cifar100, preprocess_data

REAL_DATA = os.environ.get("CIFAR100_DIR")

pytestmark = [
    pytest.mark.realdata,
    pytest.mark.skipif(not REAL_DATA, reason="set CIFAR100_DIR to the real CIFAR-100 folder"),
]


@pytest.fixture(scope="module")
def folder():
    return Path(REAL_DATA)


@pytest.fixture(scope="module")
def data(folder):
    """The whole data set, loaded once for the module (about 2 s); no download."""
    return load_cifar100(folder, download=False)


@pytest.mark.parametrize("name", ["meta", "train", "test"])
def test_md5_is_official(folder, name):
    assert file_digest(folder / name, "md5") == data_utils.FILE_MD5[name]


def test_image_counts_shapes_and_types(data):
    assert data.x_train.shape == (50_000, 32, 32, 3) and data.x_train.dtype == np.uint8
    assert data.x_test.shape == (10_000, 32, 32, 3) and data.x_test.dtype == np.uint8
    assert data.y_train.shape == data.coarse_train.shape == (50_000,)
    assert data.y_test.shape == data.coarse_test.shape == (10_000,)


def test_images_per_class(data):
    np.testing.assert_array_equal(np.bincount(data.y_train, minlength=100), 500)
    np.testing.assert_array_equal(np.bincount(data.y_test, minlength=100), 100)
    np.testing.assert_array_equal(np.bincount(data.coarse_train, minlength=20), 2500)
    np.testing.assert_array_equal(np.bincount(data.coarse_test, minlength=20), 500)


def test_class_names(data):
    assert len(data.fine_names) == 100 and len(set(data.fine_names)) == 100
    assert len(data.coarse_names) == 20 and len(set(data.coarse_names)) == 20
    assert data.fine_names[0] == "apple" and data.fine_names[-1] == "worm"
    assert data.coarse_names[0] == "aquatic_mammals"
    assert data.coarse_names[-1] == "vehicles_2"


def test_fine_to_coarse_is_a_function_with_five_classes_each(data):
    pairs = np.unique(np.r_[np.c_[data.y_train, data.coarse_train],
                            np.c_[data.y_test, data.coarse_test]], axis=0)
    assert len(pairs) == 100  # each fine class pairs with exactly one superclass
    np.testing.assert_array_equal(pairs[:, 0], np.arange(100))
    mapping = data.fine_to_coarse
    np.testing.assert_array_equal(mapping, pairs[:, 1])
    np.testing.assert_array_equal(np.bincount(mapping, minlength=20), 5)
    names = dict(zip(data.fine_names, mapping))
    assert data.coarse_names[names["apple"]] == "fruit_and_vegetables"
    assert data.coarse_names[names["dolphin"]] == "aquatic_mammals"


def test_known_first_images(data):
    # The first train image is cattle (large omnivores and herbivores).
    assert data.y_train[:5].tolist() == [19, 29, 0, 11, 1]
    assert data.fine_names[data.y_train[0]] == "cattle"
    assert data.coarse_names[data.coarse_train[0]] == "large_omnivores_and_herbivores"


def test_pixel_order_gives_natural_images(data, folder):
    # Neighbouring pixels of a photo are alike; reading CIFAR's channel-first
    # rows as NHWC directly (the classic bug) scrambles them.
    right = data.x_test[:2000].astype(np.int16)
    wrong = get_raw_data_set(folder / "test")["data"][:2000].reshape(-1, 32, 32, 3)
    step = np.abs(np.diff(right, axis=2)).mean()
    assert step < 20 < np.abs(np.diff(wrong.astype(np.int16), axis=2)).mean()


def test_lab_preprocessing_on_the_test_file(data, folder):
    x, y = preprocess_data(get_raw_data_set(folder / "test"), 100)
    assert x.shape == (10_000, 32, 32, 3) and x.dtype == np.float32
    assert y.shape == (10_000, 100) and y.dtype == np.float32
    np.testing.assert_array_equal(x[:50], data.x_test[:50] / np.float32(255))
    np.testing.assert_array_equal(y.argmax(axis=1), data.y_test)
