"""CIFAR-100 image recognition lab (Keras 3).

At the top, as in the lab manual: ``data_utils`` (load and prepare CIFAR-100),
``model_utils`` (the lab's 9-layer CNN and the ResNet-9 recipes), and the scripts
``train_model``, ``evaluate_model``, ``test_model`` and ``make_report``. What they
share lives in four sub-packages:

- ``core``: the command line, the backend's start-up line, console logs, files, errors;
- ``training``: recipes, the time budget, callbacks, data-parallel training;
- ``analysis``: metrics and figures, calibration, explanations;
- ``report``: gathering the outputs into the lab report, its HTML and Word writers.

Importing the package changes nothing in the process (no environment
variables, no Keras import); the scripts prepare the backend when they run.
"""

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
