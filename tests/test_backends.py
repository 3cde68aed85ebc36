"""Every Keras backend: the quick pipeline runs, and models move between backends.

TensorFlow is the default backend (covered by the other tests); JAX and
PyTorch are tested when installed. A model saved as .h5 on one backend must
load on every other and give the same predictions to float tolerance.
"""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, run_cli

OTHER_BACKENDS = [b for b in ("jax", "torch") if importlib.util.find_spec(b) is not None]
ALL_BACKENDS = ["tensorflow", *OTHER_BACKENDS]

pytestmark = pytest.mark.slow

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


@pytest.fixture(scope="module")
def models_by_backend(tmp_path_factory, fake_data):
    """A tiny fast-recipe model trained on each backend: {backend: (model_path, reports)}."""
    models = {}
    for backend in ALL_BACKENDS:
        out = tmp_path_factory.mktemp(f"train-{backend}")
        model_path = out / "models" / "best_model.h5"
        result = run_cli("train_model", "--recipe", "fast", "--width", "0.0625",
                         "--subset", 200, "--epochs", 1, "--batch-size", 50,
                         "--data-dir", fake_data, "--allow-md5-mismatch",
                         "--model-path", model_path, "--output-dir", out / "reports",
                         env={"KERAS_BACKEND": backend})
        assert result.returncode == 0, f"{backend}: {result.stderr[-3000:]}"
        models[backend] = (model_path, out / "reports")
    return models


@pytest.mark.parametrize("backend", OTHER_BACKENDS)
def test_quick_pipeline_on_backend(backend, models_by_backend, fake_data, tmp_path):
    model_path, reports = models_by_backend[backend]
    summary = json.loads((reports / "train_summary.json").read_text())
    assert summary["hardware"]["backend"] == backend
    assert summary["hardware"]["devices"]  # every backend lists its devices (PyTorch too)
    assert summary["epochs_run"] == 1

    env = {"KERAS_BACKEND": backend}
    result = run_cli("evaluate_model", "--model-path", model_path, "--data-dir", fake_data,
                     "--allow-md5-mismatch", "--subset", 100, "--output-dir", tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["images"] == 100
    assert 0 <= metrics["accuracy"] <= metrics["top5_accuracy"] <= 1

    result = run_cli("test_model", ROOT / "img", "--model-path", model_path,
                     "--output-dir", tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(list((tmp_path / "predictions").glob("*_top5.png"))) >= 6


def test_models_load_on_every_backend(models_by_backend, tmp_path):
    """Each backend's checkpoint gives the same predictions on every backend."""
    if len(ALL_BACKENDS) < 2:
        pytest.skip("only one Keras backend installed")
    x = np.random.default_rng(0).random((8, 32, 32, 3), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    paths = [str(path) for path, _ in models_by_backend.values()]
    predictions = {}
    for backend in ALL_BACKENDS:
        out = tmp_path / f"pred-{backend}.json"
        env = {**os.environ, "KERAS_BACKEND": backend}
        result = subprocess.run([sys.executable, "-c", PREDICT, str(tmp_path / "x.npy"),
                                 str(out), *paths], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"{backend}: {result.stderr[-3000:]}"
        predictions[backend] = {k: np.array(v) for k, v in json.loads(out.read_text()).items()}

    for saved_on, (path, _) in models_by_backend.items():
        reference = predictions[saved_on][str(path)]
        assert reference.shape == (8, 100)
        np.testing.assert_allclose(reference.sum(axis=1), 1.0, atol=1e-4)
        for loaded_on in ALL_BACKENDS:
            np.testing.assert_allclose(
                predictions[loaded_on][str(path)], reference, atol=1e-5,
                err_msg=f"model saved on {saved_on}, loaded on {loaded_on}")
