"""Time loading and preprocessing CIFAR-100 on the CPU, this project's path against the manual's.

Two paths, each loading ``meta``, ``train`` and ``test`` and preparing the
train and test images and labels:

- ours: ``network.data_utils.load_cifar100`` (restricted unpickler, MD5 and
  structure checks, then memory-mapped from the array cache), uint8 NHWC
  images as training takes them, one-hot labels; timed both on a first load
  (which checks the files and fills the cache) and on a cached load;
- lab manual: ``pickle.load``, reshape/transpose, ``x / 255.`` (float64) and
  ``keras.utils.to_categorical``.

Each path runs in a fresh process: ``--repeats`` timed runs (median and best,
loading and preprocessing apart), then one run under ``tracemalloc``; memory
as peak RSS, RSS growth over the imports, the ``tracemalloc`` peak and the
size of the resulting arrays. The data set is never downloaded here.

Usage:

    python benchmarks/data_loading.py --data-dir /path/to/cifar-100-python
    python -m benchmarks.data_loading --repeats 5 --json cpu-data.json
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: python benchmarks/data_loading.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from benchmarks.common import cpu_model, fmt, print_table, require_data_files, write_json
from network.core import cli, runtime
from network.core.errors import LabError
from network.data_utils import NUM_CLASSES

CHILD_PATHS = ("ours-first", "ours", "lab")  # in this order: the first load fills the cache


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="data_loading", description=__doc__.split("\n\n")[0])
    cli.add_common_arguments(parser, model=False, output=False, seed=False, show=False,
                             downloads=False)
    parser.add_argument("--repeats", type=cli.positive_int, default=3,
                        help="timed runs per path; the median is reported (default: 3)")
    parser.add_argument("--json", type=Path, metavar="PATH",
                        help="also write every figure and the hardware to this JSON file")
    # How this script runs one path in a fresh process of its own (see run_child).
    parser.add_argument("--child", choices=CHILD_PATHS, help=argparse.SUPPRESS)
    parser.add_argument("--trusted-pickle", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.json is not None:
        cli.ensure_writable_dir(parser, args.json.resolve().parent, "folder for --json")
    return args


# --- The two paths ------------------------------------------------------------------------

def our_path(data_dir, allow_md5_mismatch):
    """This project's path: checked loading (memory-mapped from the array cache once a
    first load has checked and cached the files), uint8 NHWC images as training
    takes them, one-hot labels."""
    from network.data_utils import load_cifar100, one_hot

    start = time.perf_counter()
    data = load_cifar100(data_dir, download=False, allow_md5_mismatch=allow_md5_mismatch)
    loaded = time.perf_counter()
    arrays = (data.x_train, one_hot(data.y_train, NUM_CLASSES),
              data.x_test, one_hot(data.y_test, NUM_CLASSES))
    # Memory-mapped arrays are read only when used: touch every page, so the time
    # and memory figures count all of the data, as training will.
    for images in (data.x_train, data.x_test):
        int(images.reshape(-1)[::4096].sum())
    return arrays, loaded - start, time.perf_counter() - loaded


def lab_path(data_dir, trusted_pickle):
    """The lab manual's data_utils: pickle.load, reshape/transpose, x / 255. (float64)
    and keras.utils.to_categorical, for meta, train and test.

    ``pickle.load`` runs only on files whose MD5 matched the official ones (the
    parent checks): any other file goes through the project's restricted
    unpickler, the same C unpickler, so no data file can run code here.
    """
    import pickle

    import keras

    from network.data_utils import get_raw_data_set as safe_load

    def get_raw_data_set(file_name):
        if not trusted_pickle:
            return safe_load(file_name)
        with open(file_name, "rb") as f:
            return pickle.load(f, encoding="latin1")

    def preprocess_data(raw_data, num_class):
        x_data = raw_data["data"]
        x_data = x_data.reshape(len(x_data), 3, 32, 32).transpose(0, 2, 3, 1)
        x_data = x_data / 255.
        y_data = raw_data["fine_labels"]
        y_data = keras.utils.to_categorical(y_data, num_class)
        return x_data, y_data

    data_dir = Path(data_dir)
    start = time.perf_counter()
    raws = [get_raw_data_set(data_dir / name) for name in ("meta", "train", "test")]
    loaded = time.perf_counter()
    arrays = (*preprocess_data(raws[1], NUM_CLASSES), *preprocess_data(raws[2], NUM_CLASSES))
    return arrays, loaded - start, time.perf_counter() - loaded


def _rss_now_mib():
    """The process's current resident memory in MiB (Linux), else None."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mib():
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes vs KB


def child_main(args):
    """Run one path ``--repeats`` times, then once under tracemalloc; print JSON."""
    import tracemalloc

    if args.child == "lab":
        import keras  # noqa: F401  (the manual imports it; keep the import out of the timing)

        def run():
            return lab_path(args.data_dir, args.trusted_pickle)
    else:
        def run():
            return our_path(args.data_dir, args.allow_md5_mismatch)

    baseline = _rss_now_mib()
    load_s, prep_s, result_bytes, dtype = [], [], 0, None
    for _ in range(1 if args.child == "ours-first" else args.repeats):
        arrays, load, prep = run()
        load_s.append(load)
        prep_s.append(prep)
        result_bytes = sum(a.nbytes for a in arrays)
        dtype = str(arrays[0].dtype)
        del arrays  # free before the next run, so the peak is one run's
    peak_rss = _peak_rss_mib()
    # Python-level allocation peak (NumPy reports its buffers to tracemalloc).
    tracemalloc.start()
    arrays = run()
    traced_peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    del arrays
    totals = [a + b for a, b in zip(load_s, prep_s)]
    print(json.dumps({
        "path": args.child, "repeats": args.repeats, "dtype": dtype,
        "seconds": statistics.median(totals), "seconds_min": min(totals),
        "load_s": statistics.median(load_s), "preprocess_s": statistics.median(prep_s),
        "tracemalloc_peak_mib": traced_peak, "peak_rss_mib": peak_rss,
        "baseline_rss_mib": baseline,
        "rss_growth_mib": peak_rss - baseline if baseline is not None else None,
        "result_mib": result_bytes / 2**20,
        "unpickler": ("pickle.load" if args.trusted_pickle else "restricted")
        if args.child == "lab" else "restricted",
    }))
    return 0


def check_data_files(data_dir, allow_md5_mismatch):
    """Whether every data file is the official one (a mismatch stops unless allowed).

    Hashing also reads every file once, so neither path pays for the first
    read from disk.
    """
    from network.data_utils import FILE_MD5, check_md5

    require_data_files(data_dir)
    return all([check_md5(Path(data_dir) / name, allow_md5_mismatch) for name in FILE_MD5])


def run_child(path_name, args, trusted, cache_dir):
    """Measure one path in a fresh Python process (this script with --child); return its figures.

    Why a fresh process for each path: peak RSS (``ru_maxrss``) only ever grows
    within a process, so a path measured after another would report the larger
    peak of the two. A fresh process also holds only its own imports (the lab
    path imports Keras, as the manual does) and nothing another path left in
    memory, so the cached load starts from the cache files alone.
    """
    command = [sys.executable, str(Path(__file__).resolve()), "--child", path_name,
               "--data-dir", str(args.data_dir), "--repeats", str(args.repeats)]
    if args.allow_md5_mismatch:
        command.append("--allow-md5-mismatch")
    if trusted:
        command.append("--trusted-pickle")
    env = {**os.environ, "CIFAR100_CACHE_DIR": str(cache_dir)}
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines()
        raise LabError(f"the {path_name} data path failed: "
                       f"{lines[-1] if lines else 'exit status ' + str(result.returncode)}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def cpu_data_benchmark(args):
    """Time and measure both data paths, each in a fresh process."""
    import tempfile
    from importlib.metadata import PackageNotFoundError, version

    trusted = check_data_files(args.data_dir, args.allow_md5_mismatch)
    # A fresh array cache: the first load checks, decodes and caches the files, the
    # later ones (each path in its own process) memory-map the cached arrays.
    with tempfile.TemporaryDirectory() as cache_dir:
        paths = {name: run_child(name, args, trusted, cache_dir) for name in CHILD_PATHS}
    try:
        keras_version = version("keras")
    except PackageNotFoundError:
        keras_version = None
    return {
        "mode": "cpu-data",
        "data_dir": str(args.data_dir),
        "official_files": trusted,
        "paths": paths,
        "speedup": paths["lab"]["seconds"] / paths["ours"]["seconds"],
        "memory_ratio": paths["ours"]["peak_rss_mib"] / paths["lab"]["peak_rss_mib"],
        "hardware": {"cpu_model": cpu_model(), "cpu_count": os.cpu_count(),
                     "machine": platform.machine(), "python": platform.python_version(),
                     "numpy": np.__version__, "keras": keras_version,
                     "backend": os.environ.get("KERAS_BACKEND", "tensorflow")},
    }


def print_cpu_report(result):
    first, ours, lab = (result["paths"][k] for k in ("ours-first", "ours", "lab"))
    hw = result["hardware"]
    rows = [("", f"{'ours, first load':>16}  {'ours, cached':>14}  {'lab manual (float64)':>20}")]
    figures = (("time, median", "seconds", " s"), ("time, best", "seconds_min", " s"),
               ("  loading", "load_s", " s"), ("  preprocessing", "preprocess_s", " s"),
               ("peak RSS", "peak_rss_mib", " MiB"), ("RSS growth", "rss_growth_mib", " MiB"),
               ("tracemalloc peak", "tracemalloc_peak_mib", " MiB"),
               ("result arrays", "result_mib", " MiB"))
    for label, key, unit in figures:
        rows.append((label, f"{fmt(first[key], unit):>16}  {fmt(ours[key], unit):>14}  "
                            f"{fmt(lab[key], unit):>20}"))
    rows += [("speed-up", f"{result['speedup']:.2f}x (lab time / our cached time)"),
             ("memory", f"{result['memory_ratio']:.2f}x the lab's peak RSS (cached load)"),
             ("runs", f"{ours['repeats']} per path, each path in a fresh process"),
             ("data", result["data_dir"] + ("" if result["official_files"] else
                                            " (not the official files)")),
             ("CPU", f"{hw['cpu_model']} ({hw['cpu_count']} cores), Python {hw['python']}, "
                     f"NumPy {hw['numpy']}")]
    print_table("CPU data loading + preprocessing (train + test)", rows)


# --- Entry point --------------------------------------------------------------------------

def main(argv=None):
    runtime.setup_backend_env()  # quiet start-up (the lab path imports Keras)
    args = parse_args(argv)
    if args.child:
        return child_main(args)
    result = cpu_data_benchmark(args)
    print_cpu_report(result)
    if args.json is not None:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    cli.run_main(main)
