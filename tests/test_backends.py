"""Every Keras backend: the quick pipeline runs, and models move between backends.

TensorFlow is the default backend (covered by the other tests); JAX and
PyTorch are tested when installed. A model saved as .h5 on one backend must
load on every other and give the same predictions to float tolerance.

The runs are conftest's ``backend_training`` (one training process per backend) and
``backend_checks`` (one process per backend for recognition, evaluation and the
predictions of every backend's model).
"""

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import BACKENDS, CHECKED_PHOTOS, PREDICT_IMAGES, summary_of

OTHER_BACKENDS = [b for b in BACKENDS if b != "tensorflow"]

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("backend", OTHER_BACKENDS)
def test_quick_pipeline_on_backend(backend, backend_training, backend_checks):
    summary = summary_of(backend_training[backend]["reports"])
    assert summary["hardware"]["backend"] == backend
    assert summary["hardware"]["devices"]  # every backend lists its devices (PyTorch too)
    assert summary["epochs_run"] == 1

    checks = backend_checks[backend]
    result = checks["evaluate"]
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((checks["folder"] / "evaluation" / "metrics.json").read_text())
    assert metrics["images"] == 100
    assert 0 <= metrics["accuracy"] <= metrics["top5_accuracy"] <= 1

    result = checks["recognise"]
    assert result.returncode == 0, result.stderr[-3000:]
    charts = (checks["folder"] / "recognition" / "predictions").glob("*_top5.png")
    assert sorted(chart.stem for chart in charts) == [
        Path(name).stem + "_top5" for name in CHECKED_PHOTOS]


def test_models_load_on_every_backend(backend_training, backend_checks):
    """Each backend's checkpoint gives the same predictions on every backend."""
    if len(BACKENDS) < 2:
        pytest.skip("only one Keras backend installed")
    for backend in BACKENDS:
        result = backend_checks[backend]["predict"]
        assert result.returncode == 0, f"{backend}: {result.stderr[-3000:]}"
    predictions = {backend: backend_checks[backend]["predictions"] for backend in BACKENDS}

    for saved_on, run in backend_training.items():
        path = str(run["model_path"])
        reference = predictions[saved_on][path]
        assert reference.shape == (len(PREDICT_IMAGES), 100)
        np.testing.assert_allclose(reference.sum(axis=1), 1.0, atol=1e-4)
        for loaded_on in BACKENDS:
            np.testing.assert_allclose(
                predictions[loaded_on][path], reference, atol=1e-5,
                err_msg=f"model saved on {saved_on}, loaded on {loaded_on}")
