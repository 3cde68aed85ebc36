"""Shared fixtures: synthetic CIFAR-100 files, a tiny trained model, a CLI runner."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fake_cifar import write_fake_cifar

ROOT = Path(__file__).resolve().parent.parent
REAL_DATA = os.environ.get("CIFAR100_DIR")


@pytest.fixture(scope="session", autouse=True)
def array_cache(tmp_path_factory):
    """Decoded data sets are cached in a folder of the test session, never in ~/.cache
    (child processes inherit the variable)."""
    folder = tmp_path_factory.mktemp("array-cache")
    previous = os.environ.get("CIFAR100_CACHE_DIR")
    os.environ["CIFAR100_CACHE_DIR"] = str(folder)
    yield folder
    if previous is None:
        os.environ.pop("CIFAR100_CACHE_DIR", None)
    else:
        os.environ["CIFAR100_CACHE_DIR"] = previous


@pytest.fixture(scope="session")
def fake_data(tmp_path_factory):
    """A folder with small synthetic meta/train/test files (300 train, 200 test)."""
    return write_fake_cifar(tmp_path_factory.mktemp("cifar"), n_train=300, n_test=200)


@pytest.fixture(scope="session")
def trained(tmp_path_factory, fake_data):
    """A lab model trained for one epoch on the synthetic data (shared, read-only).

    Returns a dict with the model path and the training output folder.
    """
    out = tmp_path_factory.mktemp("trained")
    model_path = out / "models" / "best_model.h5"
    result = run_cli("train_model", "--data-dir", fake_data, "--allow-md5-mismatch",
                     "--subset", 250, "--epochs", 1, "--batch-size", 50,
                     "--model-path", model_path, "--output-dir", out / "reports")
    assert result.returncode == 0, result.stderr[-3000:]
    return {"model_path": model_path, "reports": out / "reports", "stdout": result.stdout}


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """An untrained 32x32x3 -> 100 classifier saved with its class names (no training):
    enough to evaluate and recognise."""
    import json

    import keras

    from fake_cifar import COARSE_NAMES, FINE_NAMES, FINE_TO_COARSE

    folder = tmp_path_factory.mktemp("tiny-model")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Flatten(),
                              keras.layers.Dense(100, activation="softmax")])
    model.save(folder / "best_model.h5")
    (folder / "class_names.json").write_text(json.dumps({
        "fine_label_names": FINE_NAMES, "coarse_label_names": COARSE_NAMES,
        "fine_to_coarse": FINE_TO_COARSE.tolist()}))
    return folder / "best_model.h5"


def run_cli(script, *args, env=None, cwd=ROOT, timeout=600, file_mode=False):
    """Run ``python -m network.<script> args`` (or ``python network/<script>.py``).

    Returns the CompletedProcess with text stdout/stderr. The child never
    sees the real data folder unless a test passes it explicitly.
    """
    child_env = {**os.environ, "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg"}
    child_env.pop("CIFAR100_DIR", None)
    child_env.pop("DISPLAY", None)
    child_env.update(env or {})
    target = [str(ROOT / "network" / f"{script}.py")] if file_mode else ["-m", f"network.{script}"]
    command = [sys.executable, *target, *map(str, args)]
    return subprocess.run(command, cwd=cwd, env=child_env, capture_output=True, text=True,
                          timeout=timeout)


def run_main(main, argv, capsys):
    """Run a script's main in this process as its command line does (``cli.run_main``);
    return (exit code, stdout, stderr)."""
    from network import cli

    with pytest.raises(SystemExit) as exit_info:
        cli.run_main(main, [str(a) for a in argv])
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def assert_clean_error(result, *fragments):
    """An expected failure: non-zero exit, one-line message, no traceback."""
    assert result.returncode != 0, result.stdout[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr[-3000:]
