"""Load and prepare CIFAR-100 (the official "python version").

The data folder holds the official files ``meta``, ``train`` and ``test``
(the lab manual's layout). When they are missing, the official archive is
downloaded, checked and unpacked there.

Usage:

    from network.data_utils import load_cifar100, preprocess_data
    data = load_cifar100("data")               # uint8 NHWC images + labels + names
    x, y = preprocess_data(get_raw_data_set("data/train"), 100)   # the lab's API
"""

import codecs
import contextlib
import hashlib
import importlib
import io
import json
import os
import pickle
import shutil
import socket
import tarfile
import tempfile
import types
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from network.core.errors import LabError
from network.core.files import atomic_path, cache_dir, file_digest, write_json_atomic

NUM_CLASSES = 100
NUM_SUPERCLASSES = 20
IMAGE_SHAPE = (32, 32, 3)

ARCHIVE_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
ARCHIVE_MD5 = "eb9058c3a382ffc7106e4002c42a8d85"
FILE_MD5 = {
    "meta": "7973b15100ade9c7d40fb424638fde48",
    "train": "16019d7e3df5f24257cddd939b257f8d",
    "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
}


# --- Reading the pickles safely -------------------------------------------------

def _numpy_function(module, name):
    """A NumPy-internal function by its NumPy 2 name (``numpy._core``), also on NumPy 1."""
    try:
        return getattr(importlib.import_module(f"numpy._core.{module}"), name)
    except (ImportError, AttributeError):
        return getattr(importlib.import_module(f"numpy.core.{module}"), name)


_TEXT_CODECS = {"latin1", "latin-1", "iso-8859-1", "utf-8", "utf8", "ascii"}


def _encode_text(text, encoding="utf-8", errors="strict"):
    """``_codecs.encode`` as protocol-2 pickles use it for bytes, text codecs only."""
    if not isinstance(text, str) or str(encoding).lower() not in _TEXT_CODECS:
        raise pickle.UnpicklingError(f"refusing to decode bytes with codec {encoding!r}")
    return codecs.encode(text, encoding, errors)


def _fresh(func):
    """A new wrapper for each use: a pickle can set attributes on a Python function
    it names (opcode BUILD), and must not alter the shared one for later loads."""

    def call(*args, **kwargs):
        return func(*args, **kwargs)

    return call


# The only globals the official files (and NumPy re-pickles of them, protocols
# 0 to 5) refer to. Everything else a pickle may name (os.system, eval, ...) is
# refused before it is looked up, so a crafted file cannot run code.
_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_function("multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"): _numpy_function("multiarray", "scalar"),
    ("numpy._core.numeric", "_frombuffer"): _numpy_function("numeric", "_frombuffer"),
    ("_codecs", "encode"): _encode_text,  # bytes in protocol-2 pickles
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "bytearray"): bytearray,
    ("builtins", "complex"): complex,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that admits only plain data, NumPy arrays and dtypes."""

    def find_class(self, module, name):
        # Python 2 and NumPy 1 spell some modules differently; same objects.
        module = "builtins" if module == "__builtin__" else module
        module = module.replace("numpy.core.", "numpy._core.", 1)
        found = _ALLOWED_GLOBALS.get((module, name))
        if found is None:
            raise pickle.UnpicklingError(f"refusing to load '{module}.{name}'")
        return _fresh(found) if isinstance(found, types.FunctionType) else found


def get_raw_data_set(file_name):
    """Load one CIFAR-100 pickle (``meta``, ``train`` or ``test``) as a dict.

    Only plain data and NumPy arrays are admitted: anything else in the file
    is refused with ``LabError`` and never executed.
    """
    path = Path(file_name)
    if not path.is_file():
        raise LabError(f"{path} not found: put the CIFAR-100 files 'meta', 'train', 'test' "
                       f"in {path.parent} (see README.md)")
    try:
        with open(path, "rb") as f:
            raw = _RestrictedUnpickler(f, encoding="latin1").load()
    except pickle.UnpicklingError as err:
        if "refusing" in str(err):
            raise LabError(f"{path} is not a CIFAR-100 data file ({err}); "
                           "nothing from it was run. Replace it with the official file") from None
        raise LabError(f"{path} is truncated or corrupted ({err}): delete it and copy or "
                       "download the official file again") from None
    except OSError as err:
        raise LabError(f"cannot read {path} ({err.strerror or err})") from None
    except Exception as err:
        # Damaged bytes make the unpickler fail in many ways (EOFError,
        # ValueError, KeyError, MemoryError, ...): all mean the same to the user.
        raise LabError(f"{path} is truncated or corrupted ({type(err).__name__}): delete it "
                       "and copy or download the official file again") from None
    if not isinstance(raw, dict):
        raise LabError(f"{path} does not hold a CIFAR-100 dictionary: replace it with the "
                       "official file")
    return raw


# --- The lab's preprocessing -----------------------------------------------------

def to_images(flat):
    """(N, 3072) rows in CIFAR's channel-first order -> (N, 32, 32, 3) NHWC uint8."""
    return np.ascontiguousarray(flat.reshape(len(flat), 3, 32, 32).transpose(0, 2, 3, 1))


def scale_images(images):
    """uint8 images -> float32 in [0, 1] (half the memory of the manual's float64)."""
    return images.astype(np.float32) / np.float32(255)


def one_hot(labels, num_class):
    """Integer labels -> float32 one-hot rows (a vectorised ``to_categorical``)."""
    return np.eye(num_class, dtype=np.float32)[np.asarray(labels, dtype=np.int64)]


def preprocess_data(raw_data, num_class):
    """The lab's preprocessing: NHWC images in [0, 1] and one-hot fine labels.

    ``raw_data`` is the dict returned by :func:`get_raw_data_set`.
    """
    x_data = to_images(np.asarray(raw_data["data"]))
    y_data = one_hot(raw_data["fine_labels"], num_class)
    return scale_images(x_data), y_data


# --- The whole data set ------------------------------------------------------------

@dataclass
class Cifar100:
    """CIFAR-100 as uint8 NHWC images, integer labels and class names."""

    x_train: np.ndarray
    y_train: np.ndarray          # fine labels, int64
    coarse_train: np.ndarray     # superclass labels, int64
    x_test: np.ndarray
    y_test: np.ndarray
    coarse_test: np.ndarray
    fine_names: list
    coarse_names: list

    @property
    def fine_to_coarse(self):
        """Array of length 100: the superclass of each fine class."""
        mapping = np.zeros(len(self.fine_names), dtype=np.int64)
        mapping[self.y_test] = self.coarse_test
        mapping[self.y_train] = self.coarse_train
        return mapping


def check_md5(path, allow_mismatch=False):
    """Compare an official file's MD5; a mismatch is an error unless allowed."""
    expected = FILE_MD5[path.name]
    try:
        actual = file_digest(path, "md5")
    except OSError as err:
        raise LabError(f"cannot read {path} ({err.strerror or err})") from None
    if actual != expected and not allow_mismatch:
        raise LabError(
            f"{path} has MD5 {actual}, not the official {expected}: the file is damaged or "
            "not the official one. Delete it to download it again, or pass "
            "--allow-md5-mismatch if it is your own copy in the same format")
    return actual == expected


def _check_labels(raw, key, path, count, limit):
    """One label list as int64, checked for type, length and range."""
    try:
        values = np.asarray(raw[key])
    except (ValueError, TypeError):  # ragged nested lists
        raise LabError(f"{path}: '{key}' must be a flat list of integers") from None
    if values.size == 0:
        values = values.astype(np.int64)
    if values.dtype.kind not in "iu":  # floats, strings or objects: not labels
        raise LabError(f"{path}: '{key}' must be a list of integers, got {values.dtype} values")
    if values.shape != (count,):
        raise LabError(f"{path}: {count} images but {key} of shape {values.shape}")
    if values.size and (values.min() < 0 or values.max() >= limit):
        raise LabError(f"{path}: {key} must lie in 0..{limit - 1}, found "
                       f"{values.min()}..{values.max()}")
    return values.astype(np.int64)


def _check_split(raw, path, num_fine, num_coarse):
    """Validate one train/test dict and return (images, fine, coarse)."""
    for key in ("data", "fine_labels", "coarse_labels"):
        if key not in raw:
            raise LabError(f"{path} has no '{key}' entry: it is not a CIFAR-100 train/test file")
    data = raw["data"]
    if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3072:
        shape = getattr(data, "shape", type(data).__name__)
        raise LabError(f"{path}: 'data' must be an array of shape (N, 3072), got {shape}")
    if data.dtype != np.uint8:
        raise LabError(f"{path}: 'data' must hold uint8 pixels, got {data.dtype}")
    fine = _check_labels(raw, "fine_labels", path, len(data), num_fine)
    coarse = _check_labels(raw, "coarse_labels", path, len(data), num_coarse)
    return to_images(data), fine, coarse


def _check_meta(raw, path):
    """The fine and coarse class names from the ``meta`` dict, in file order."""
    names = []
    for key, count in (("fine_label_names", NUM_CLASSES), ("coarse_label_names", NUM_SUPERCLASSES)):
        value = raw.get(key)
        if not isinstance(value, list) or not all(isinstance(n, str) for n in value):
            raise LabError(f"{path} has no '{key}' list: it is not the CIFAR-100 meta file")
        if len(value) != count:
            raise LabError(f"{path}: '{key}' has {len(value)} names, expected {count}")
        names.append(list(value))
    return names


def _check_superclasses(splits, paths):
    """Each fine class must belong to exactly one superclass, in train and test alike.

    Superclass accuracy is meaningless otherwise, so a file that breaks this
    is refused, naming the first fine class with two superclasses.
    """
    seen = {}
    for (_, fine, coarse), path in zip(splits, paths):
        for f, c in np.unique(np.stack([fine, coarse], axis=1), axis=0):
            if seen.setdefault(int(f), int(c)) != c:
                raise LabError(f"{path}: fine class {f} is in superclass {c} here but in "
                               f"{seen[int(f)]} elsewhere; each class needs one superclass")


def load_cifar100(data_dir, download=True, allow_md5_mismatch=False, origin=None,
                  cache_dir=None):
    """Load CIFAR-100 from ``data_dir``, downloading it first when missing.

    Returns a :class:`Cifar100`. The first load checks every file (MD5,
    structure, shapes, label ranges; a problem raises ``LabError`` naming the
    file) and keeps the decoded arrays in a cache folder (see
    :func:`default_cache_dir`); later loads memory-map them, as long as each
    file is still the one checked (same size, times and inode).
    """
    data_dir = Path(data_dir)
    if download:
        ensure_dataset(data_dir, origin=origin)
    for name in FILE_MD5:
        path = data_dir / name
        if not path.is_file():
            raise LabError(f"{path} not found: put the CIFAR-100 files 'meta', 'train', "
                           f"'test' in {data_dir} (from {ARCHIVE_URL})")
    cache = _cache_folder(data_dir, cache_dir)
    data = _read_cache(cache, data_dir, allow_md5_mismatch) if cache else None
    if data is None:
        official = all([check_md5(data_dir / name, allow_md5_mismatch) for name in FILE_MD5])
        data = _decode_files(data_dir)
        if cache:
            _write_cache(cache, data_dir, data, official)
    return data


def _decode_files(data_dir):
    """Unpickle and check ``meta``, ``train`` and ``test``."""
    fine_names, coarse_names = _check_meta(get_raw_data_set(data_dir / "meta"), data_dir / "meta")
    paths = [data_dir / "train", data_dir / "test"]
    splits = [_check_split(get_raw_data_set(path), path, len(fine_names), len(coarse_names))
              for path in paths]
    _check_superclasses(splits, paths)
    (x_train, y_train, c_train), (x_test, y_test, c_test) = splits
    return Cifar100(x_train, y_train, c_train, x_test, y_test, c_test, fine_names, coarse_names)


# --- The cache of decoded arrays ------------------------------------------------------
# Unpickling and checking the files takes seconds and twice their size in memory;
# the decoded uint8 arrays, memory-mapped from .npy files, load in milliseconds
# and only the pages used are read. The cache never lives in the data folder
# (it may be read-only or shared): it goes to a user cache folder, one
# sub-folder per data folder, and is rebuilt whenever a file changes.

CACHE_VERSION = 1
ARRAYS = ("x_train", "y_train", "coarse_train", "x_test", "y_test", "coarse_test")


def default_cache_dir():
    """$CIFAR100_CACHE_DIR, else ``~/.cache/cifar100-lab/arrays``; None when the
    variable is set but empty (caching off)."""
    value = os.environ.get("CIFAR100_CACHE_DIR")
    if value is not None:
        return Path(value) if value else None
    return cache_dir("arrays")


def _cache_folder(data_dir, cache_dir):
    root = default_cache_dir() if cache_dir is None else Path(cache_dir)
    if root is None:
        return None
    key = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:16]
    return root / key


def _file_stamps(data_dir):
    """What says each file is still the one checked, for free from the file system.

    Size and modification time alone are not enough: ``cp -p``, ``rsync -a``
    or a restored backup put another file of the same size in place with the
    old modification time. The inode number changes when a file is replaced
    by a new one, and the status-change time (ctime) on every write, rename or
    ``utime``, and no tool can set it back. (On Windows ``st_ctime`` is the
    creation time: there a file overwritten in place with its old modification
    time can still pass.)
    """
    stamps = {}
    for name in FILE_MD5:
        stat = (data_dir / name).stat()
        stamps[name] = [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino]
    return stamps


def _read_cache(cache, data_dir, allow_md5_mismatch):
    """The cached data set, or None when absent, stale or damaged."""
    try:
        stamp = json.loads((cache / "stamp.json").read_text())
        if (stamp["version"] != CACHE_VERSION or stamp["files"] != _file_stamps(data_dir)
                or not (stamp["official"] or allow_md5_mismatch)):
            return None
        arrays = {name: np.load(cache / f"{name}.npy", mmap_mode="r") for name in ARRAYS}
        if arrays["x_train"].shape[1:] != IMAGE_SHAPE or arrays["x_test"].shape[1:] != IMAGE_SHAPE:
            return None
        return Cifar100(**arrays, fine_names=stamp["fine_names"],
                        coarse_names=stamp["coarse_names"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_cache(cache, data_dir, data, official):
    """Save the decoded arrays; the stamp goes last, so a half-written cache is never used."""
    try:
        cache.mkdir(parents=True, exist_ok=True)
        (cache / "stamp.json").unlink(missing_ok=True)
        for name in ARRAYS:
            with atomic_path(cache / f"{name}.npy") as tmp:
                np.save(tmp, getattr(data, name))
        stamp = {"version": CACHE_VERSION, "files": _file_stamps(data_dir),
                 "official": official, "fine_names": data.fine_names,
                 "coarse_names": data.coarse_names}
        write_json_atomic(cache / "stamp.json", stamp)
    except OSError:
        pass  # no writable cache folder: every load checks the files again


# --- Download ------------------------------------------------------------------------
# keras.utils.get_file fetches the archive (progress bar, MD5 check, partial
# download removed on failure) and unpacks it (skipping members that would land
# outside its folder). What it cannot do is written here, each piece with why.

ARCHIVE_NAME = "cifar-100-python.tar.gz"
DOWNLOAD_TIMEOUT_S = 60  # a stalled connection fails instead of hanging forever


def missing_files(data_dir):
    """The names among meta/train/test that are not in ``data_dir``."""
    return [name for name in FILE_MD5 if not (Path(data_dir) / name).is_file()]


def ensure_dataset(data_dir, origin=None):
    """Download and unpack the official archive when any data file is missing.

    The archive goes to a temporary folder inside ``data_dir``; the missing
    files are moved into place only once the archive's MD5 matched the official
    one and it unpacked whole, so a failed or interrupted download never leaves a
    partial ``train`` or ``test`` behind, and files already there are never
    touched. (Loading then checks each file's own MD5 as for any copy.) The origin
    defaults to the official URL ($CIFAR100_URL overrides it).
    """
    data_dir = Path(data_dir)
    missing = missing_files(data_dir)
    if not missing:
        return
    origin = origin or os.environ.get("CIFAR100_URL") or ARCHIVE_URL
    if data_dir.exists() and not data_dir.is_dir():
        raise LabError(f"the data folder {data_dir} is a file, not a folder; "
                       "choose another with --data-dir")
    created = [d for d in (data_dir, *data_dir.parents) if not d.exists()]
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".download-", dir=data_dir))
    except OSError as err:
        raise LabError(f"cannot write to the data folder {data_dir} ({err.strerror or err}): "
                       "put the files 'meta', 'train', 'test' there yourself or choose "
                       "another folder with --data-dir") from None
    done = False
    try:
        print(f"CIFAR-100 files missing in {data_dir} ({', '.join(missing)}): "
              f"downloading {origin}")
        _download(origin, staging, data_dir)
        unpacked = _unpack(origin, staging)
        # The archive's MD5 matched the official one, so its files are the official
        # ones (get_file unpacked nothing outside its folder): moved in here together.
        for name in missing:
            os.replace(unpacked / name, data_dir / name)
        done = True
        print(f"CIFAR-100 ready in {data_dir}")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if not done:  # leave no empty folders behind (the path may be a typo)
            with contextlib.suppress(OSError):
                for folder in created:
                    folder.rmdir()


def _download(origin, staging, data_dir):
    """Fetch the archive into ``staging`` with get_file, which checks its MD5."""
    from keras.utils import get_file

    # get_file has no timeout: the socket default is the only way to give it one.
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        get_file(ARCHIVE_NAME, origin=origin, cache_dir=staging, cache_subdir=".",
                 file_hash=ARCHIVE_MD5, hash_algorithm="md5")
    except Exception as err:  # get_file raises bare Exception, OSError, ValueError
        archive = staging / ARCHIVE_NAME
        if isinstance(err, ValueError) and archive.is_file():
            # A failed transfer is removed; a file kept means its MD5 was wrong.
            # get_file's message does not give the MD5 found: it is named here.
            found = file_digest(archive, "md5")
            raise LabError(
                f"the archive downloaded from {origin} has MD5 {found}, not the "
                f"official {ARCHIVE_MD5}: it is incomplete or not CIFAR-100. Run again to "
                f"retry, or put the files 'meta', 'train', 'test' in {data_dir} "
                "yourself") from None
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise LabError(
            f"could not download CIFAR-100 ({reason}). Run again to retry; without internet, "
            f"download {ARCHIVE_URL} elsewhere, unpack it, and put the files 'meta', 'train' and "
            f"'test' in {data_dir} (or point --data-dir / $CIFAR100_DIR at them)") from None
    finally:
        socket.setdefaulttimeout(previous)


def _unpack(origin, staging):
    """Unpack the downloaded archive with get_file; returns the folder with its files."""
    from keras.utils import get_file

    failed = f"the archive from {origin} could not be unpacked"
    try:
        with warnings.catch_warnings():  # said below as a LabError instead
            warnings.filterwarnings("ignore", message="Could not extract archive")
            # Found in ``staging``, so not downloaded again; already checked.
            folder = Path(get_file(ARCHIVE_NAME, origin=origin, cache_dir=staging,
                                   cache_subdir=".", extract=True))
    except (tarfile.TarError, EOFError, OSError, zlib.error, io.UnsupportedOperation) as err:
        raise LabError(f"{failed} ({err}); run again to retry the download") from None
    if not folder.is_dir():
        raise LabError(f"{failed} (not a readable .tar.gz archive); run again to retry the "
                       "download")
    return folder / "cifar-100-python"
