"""CIFAR-100 image recognition lab (Keras 3).

Modules: ``data_utils`` (load and prepare CIFAR-100), ``model_utils`` (the lab's
9-layer CNN and the fast ResNet-9 recipe), ``runtime`` (backend set-up and the
start-up line), and the scripts ``train_model``, ``evaluate_model``,
``test_model`` and ``make_report``.

Importing the package changes nothing in the process (no environment
variables, no Keras import); the scripts prepare the backend when they run.
"""

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
