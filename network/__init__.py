"""CIFAR-100 image recognition lab (Keras 3).

Modules: ``data_utils`` (load and prepare CIFAR-100), ``model_utils`` (the lab's
9-layer CNN and the fast ResNet-9 recipe), and the scripts ``train_model``,
``evaluate_model``, ``test_model`` and ``make_report``.
"""

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# Quiet TensorFlow's C++ start-up chatter (users can still override it).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# JAX: keep compiled XLA programs on disk so a second run does not recompile
# (~40 s saved per run on a GPU). Set JAX_COMPILATION_CACHE_DIR="" to switch off.
_cache_home = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(_cache_home / "cifar100-lab" / "jax"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
