"""Shared fixtures: synthetic CIFAR-100 files, tiny models, and runs on every backend.

The helpers that run the scripts live in helpers.py; they are importable from here too.

The suite runs in parallel (pytest-xdist, ``-n`` in pyproject.toml). Tests that share an
expensive fixture of a module, or the runs on every backend, are kept on one worker with
an ``xdist_group`` mark, so that each such fixture is computed once; the lab model that
many modules share (``trained``) is trained once by whichever worker needs it first.
"""

import importlib.util
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from fake_cifar import write_fake_cifar
from helpers import (  # noqa: F401  (re-exported for the test modules)
    ROOT,
    assert_clean_error,
    call_main,
    code_step,
    run_cli,
    run_main,
    run_steps,
    sample_photos,
    script_step,
)

REAL_DATA = os.environ.get("CIFAR100_DIR")
BACKENDS = [b for b in ("tensorflow", "jax", "torch") if importlib.util.find_spec(b) is not None]
# The fixtures of the runs on every backend: their tests share one worker (xdist_group).
BACKEND_FIXTURES = {"backend_training", "backend_checks", "backend_check"}


def pytest_xdist_auto_num_workers(config):
    """``-n auto``: one worker per core, at most 4 (each imports a Keras backend, about a
    gigabyte of memory, and the slowest tests are single runs that more workers do not
    split)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cores or 1, 4))


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(items):
    for item in items:
        if BACKEND_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.xdist_group("backends"))


def session_folder(tmp_path_factory):
    """The test session's folder, the same for all its pytest-xdist workers (each worker's
    own base folder lies inside it)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if "PYTEST_XDIST_WORKER" in os.environ else base


def computed_once(tmp_path_factory, name, make):
    """``make()``, computed once per test session, also when pytest-xdist runs the tests in
    several processes: the first worker to ask makes it (the others wait on a lock) and
    leaves it pickled in the folder that the session's workers share."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        return make()
    from filelock import FileLock

    saved = session_folder(tmp_path_factory) / f"{name}.pickle"
    with FileLock(f"{saved}.lock"):
        if saved.is_file():
            return pickle.loads(saved.read_bytes())
        value = make()
        saved.write_bytes(pickle.dumps(value))
        return value


@pytest.fixture(scope="session", autouse=True)
def array_cache(tmp_path_factory):
    """Decoded data sets are cached in a folder of the test session (shared by its
    workers), never in ~/.cache; child processes inherit the variable."""
    folder = session_folder(tmp_path_factory) / "array-cache"
    folder.mkdir(exist_ok=True)
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
    """A lab model trained for one epoch on the synthetic data (shared, read-only), in
    this process as its command line would (the command line itself runs in
    ``backend_training``).

    Returns a dict with the model path, the training output folder and what it printed.
    """
    def train():
        from network.train_model import main

        out = tmp_path_factory.mktemp("trained")
        model_path = out / "models" / "best_model.h5"
        code, stdout, stderr = call_main(main, [
            "--data-dir", fake_data, "--allow-md5-mismatch", "--subset", 250, "--epochs", 1,
            "--batch-size", 50, "--model-path", model_path, "--output-dir", out / "reports",
            "--no-show"])
        assert code == 0, stderr[-3000:]
        return {"model_path": model_path, "reports": out / "reports", "stdout": stdout}

    return computed_once(tmp_path_factory, "trained", train)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """An untrained 32x32x3 -> 100 classifier saved with its class names (no training):
    enough to evaluate and recognise."""
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


# --- Every backend ---------------------------------------------------------------------------
# A process that imports a backend costs seconds, so each installed backend gets two: one
# that trains (its start is the training run's start), and one that recognises img/ (its
# start is the recognition's) and then runs the other per-backend checks in turn.

# The fast recipe's ResNet-9 at 1/16 width: seconds to train one epoch on a CPU. The
# --distribute tests train the same way, so these runs are their single-device reference.
TINY_TRAINING = ("--recipe", "fast", "--width", "0.0625", "--subset", "300", "--epochs", "1",
                 "--batch-size", "50", "--allow-md5-mismatch")

# Predictions of every saved model (argv[3:]) on the images in argv[1], as JSON in argv[2].
PREDICT = """
import json, sys
import numpy as np
from network.model_utils import load_model
x = np.load(sys.argv[1])
out = {}
for path in sys.argv[3:]:
    out[path] = np.asarray(load_model(path).predict(x, verbose=0)).tolist()
json.dump(out, open(sys.argv[2], "w"))
"""

# A model that sees only the top-right quadrant (rows 0-15, columns 16-31) of the image:
# its occlusion map must light up there (test_explain). Writes the map as JSON to argv[1].
QUADRANT_MODEL = """
import json, sys
import numpy as np
import keras
from network.analysis.explain import occlusion_map

inputs = keras.Input((32, 32, 3))
x = keras.layers.Cropping2D(((0, 16), (16, 0)))(inputs)
x = keras.layers.GlobalAveragePooling2D()(x)
outputs = keras.layers.Dense(2, activation="softmax")(x)
model = keras.Model(inputs, outputs)
# Class 0 grows with the quadrant's brightness; weights small enough not to saturate.
model.layers[-1].set_weights([np.array([[0.5, -0.5]] * 3, "float32"), np.zeros(2, "float32")])
image = np.random.default_rng(0).uniform(0.7, 1.0, (32, 32, 3)).astype("float32")
heat = occlusion_map(model, image, class_index=0)
json.dump({"backend": keras.backend.backend(), "heat": heat.tolist()}, open(sys.argv[1], "w"))
"""

PREDICT_IMAGES = np.random.default_rng(0).random((8, 32, 32, 3), dtype=np.float32)
CHECKED_PHOTOS = ("clock_motion_blur.png", "cup_coffee.jpg")  # recognised on every backend


@pytest.fixture(scope="session")
def backend_training(tmp_path_factory, fake_data):
    """TINY_TRAINING on every installed backend, each in a fresh process:
    {backend: {"model_path", "reports", "run" (a helpers.StepResult), "process"}}."""
    runs = {}
    for backend in BACKENDS:
        out = tmp_path_factory.mktemp(f"train-{backend}")
        model_path = out / "models" / "best_model.h5"
        done = run_steps([script_step("train_model", *TINY_TRAINING, "--data-dir", fake_data,
                                      "--model-path", model_path, "--output-dir",
                                      out / "reports")],
                         env={"KERAS_BACKEND": backend})
        assert done[0].returncode == 0, f"{backend}: {done[0].stderr[-3000:]}"
        runs[backend] = {"model_path": model_path, "reports": out / "reports", "run": done[0],
                         "process": done.process}
    return runs


@pytest.fixture(scope="session")
def backend_checks(tmp_path_factory, fake_data, backend_training):
    """One process per installed backend that runs, in turn (each step's results apart):

    - ``recognise``: test_model on two of img/'s photos (a PNG and a JPEG) with the
      backend's own model (the process's start);
    - ``predict``: every backend's model on PREDICT_IMAGES (``predictions``: {path: array});
    - ``heat``: QUADRANT_MODEL's occlusion map (``heat_map``: the JSON it wrote);
    - ``evaluate`` (all but TensorFlow, the default, which the other tests evaluate with):
      evaluate_model on 100 test images with the backend's model;
    - ``distribute`` (PyTorch only): train_model --distribute, which it cannot do.

    Returns {backend: {"folder": output folder, step name: StepResult, ...}}.
    """
    folder = tmp_path_factory.mktemp("backend-checks")
    np.save(folder / "x.npy", PREDICT_IMAGES)
    photos = sample_photos(folder / "photos", *CHECKED_PHOTOS)
    paths = [str(run["model_path"]) for run in backend_training.values()]
    checks = {}
    for backend in BACKENDS:
        out = folder / backend
        model_path = backend_training[backend]["model_path"]
        steps = {
            "recognise": script_step("test_model", photos, "--model-path", model_path,
                                     "--output-dir", out / "recognition"),
            "predict": code_step(PREDICT, folder / "x.npy", out / "predictions.json", *paths),
            "heat": code_step(QUADRANT_MODEL, out / "heat.json"),
        }
        if backend != "tensorflow":
            steps["evaluate"] = script_step("evaluate_model", "--model-path", model_path,
                                            "--data-dir", fake_data, "--allow-md5-mismatch",
                                            "--subset", 100, "--output-dir", out / "evaluation")
        if backend == "torch":
            steps["distribute"] = script_step("train_model", *TINY_TRAINING, "--distribute",
                                              "--data-dir", fake_data, "--output-dir",
                                              out / "distribute", "--model-path",
                                              out / "distribute" / "m.h5")
        done = run_steps(list(steps.values()), env={"KERAS_BACKEND": backend})
        results = dict(zip(steps, done.results))
        checks[backend] = {"folder": out, "process": done.process, **results}
        if results["predict"].returncode == 0:
            checks[backend]["predictions"] = {
                k: np.array(v)
                for k, v in json.loads((out / "predictions.json").read_text()).items()}
        if results["heat"].returncode == 0:
            checks[backend]["heat_map"] = json.loads((out / "heat.json").read_text())
    return checks


@pytest.fixture
def backend_check(backend, backend_checks):
    """``backend_checks[backend]``, skipped when the backend is not installed (for tests
    parametrised over every backend)."""
    if backend not in backend_checks:
        pytest.skip(f"{backend} is not installed")
    return backend_checks[backend]


@pytest.fixture
def drawn(monkeypatch):
    """The figures the plot functions save (still saved as PNG files), to inspect their
    texts and sizes."""
    from network.analysis import calibration, explain, metrics

    figures = []

    def keep(save):
        def saving(fig, path, show=False):
            figures.append(fig)
            save(fig, path, show)
        return saving

    for module in (metrics, explain, calibration):
        monkeypatch.setattr(module, "save_figure", keep(module.save_figure))
    return figures


def figure_texts(fig):
    """Every text a figure shows: titles, labels, tick labels, legends, texts, colour bars."""
    texts = list(fig.texts) + ([fig._suptitle] if fig._suptitle else [])
    for ax in fig.axes:
        texts += [ax.title, *ax.texts, ax.xaxis.label, ax.yaxis.label, *ax.get_xticklabels(),
                  *ax.get_yticklabels(), *(ax.get_legend().get_texts() if ax.get_legend() else [])]
        texts += [child for child in ax.get_children()
                  if type(child).__name__ == "Annotation"]   # bar labels
    return [t.get_text() for t in texts if t.get_visible() and t.get_text()]


def summary_of(reports):
    """A training run's train_summary.json."""
    return json.loads((Path(reports) / "train_summary.json").read_text())
