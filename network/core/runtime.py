"""What the scripts run on: backend set-up, a quiet start and a one-line summary.

Every script starts in this order, and so with one line saying what it runs on:

    runtime.setup_backend_env()   # first thing: environment for the backend
    ...                           # options, paths and data are checked without Keras
    runtime.start()               # imports Keras quietly, prints the line below

    Running on TensorFlow, CPU (2 cores), float32
    Running on JAX, GPU: Tesla T4 (1), mixed_float16

train_model does ``start()``'s two halves itself, so that the line names the
precision it chose: it imports Keras, sets the precision (``precision_for`` the
GPU), then calls ``announce(precision, training=True)``.

Importing ``network`` itself changes nothing in the process: the environment
is only prepared when a script runs. In a notebook, call
``setup_backend_env()`` before importing Keras to get the same quiet start.
"""

import contextlib
import importlib.machinery
import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from network.core.files import cache_dir

BACKEND_NAMES = {"tensorflow": "TensorFlow", "jax": "JAX", "torch": "PyTorch"}

# How to get each backend onto an NVIDIA GPU (README.md, "Training on a GPU").
GPU_INSTALL = {
    "tensorflow": 'pip install "tensorflow[and-cuda]"',
    "jax": 'pip install "jax[cuda12]"',
    "torch": "pip install torch --index-url https://download.pytorch.org/whl/cu128",
}

# Lines that native libraries (TensorFlow's CUDA stubs, XLA) log through absl before
# Python can configure anything, e.g.
#   I0000 00:00:1795859843.205337    4839 cudart_stub.cc:31] Could not find cuda drivers ...
NATIVE_LOG_LINE = re.compile(
    r"^(?:[IWE]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ \S+:\d+\] "
    r"|WARNING: All log messages before absl::InitializeLog\(\) is called)")

_announced = None  # the last start-up line printed, so nested scripts print it once


def configured_backend():
    """The Keras backend a Keras import would pick, found without importing it.

    Same rules as Keras: ``$KERAS_BACKEND``, else ``keras.json`` in ``$KERAS_HOME``
    (default ``~/.keras``), else TensorFlow.
    """
    if "keras" in sys.modules:
        return sys.modules["keras"].backend.backend()
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"]
    home = os.environ.get("KERAS_HOME") or Path.home() / ".keras"
    try:
        return json.loads((Path(home) / "keras.json").read_text()).get("backend", "tensorflow")
    except (OSError, ValueError, AttributeError):
        return "tensorflow"


def nvidia_driver_present():
    """Whether this machine has an NVIDIA driver, whatever the backend can use."""
    return Path("/proc/driver/nvidia/version").exists() or shutil.which("nvidia-smi") is not None


def setup_backend_env():
    """Prepare the process for the Keras backend; call before Keras is imported.

    Only fills in what the user has not set:

    - ``TF_CPP_MIN_LOG_LEVEL``: 3 on machines without an NVIDIA driver (TensorFlow
      would report failing CUDA calls as errors there), else 2 so that GPU errors show;
    - JAX keeps compiled XLA programs in ``~/.cache/cifar100-lab/jax``, so a second
      run does not recompile (about 40 s on a GPU); ``JAX_COMPILATION_CACHE_DIR=""``
      switches that off;
    - on TensorFlow, its import (by whichever module comes first) runs with the
      native libraries' start-up log lines dropped (see ``QuietTensorFlowImport``),
      unless ``TF_CPP_MIN_LOG_LEVEL=0`` asks for every message;
    - on JAX and PyTorch, TensorFlow is kept out of the process: Keras would
      otherwise import all of it (seconds, and its log lines) only to check
      whether a saved model holds TensorFlow objects.

    Does nothing once Keras is imported (too late then, and the process is the
    caller's, e.g. a notebook's). Returns the backend's name.
    """
    backend = configured_backend()
    if "keras" in sys.modules:
        return backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2" if nvidia_driver_present() else "3")
    if backend == "jax":
        os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(cache_dir("jax")))
        os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
        os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
    hooked = any(isinstance(f, (QuietTensorFlowImport, TensorFlowKeptOut))
                 for f in sys.meta_path)
    if "tensorflow" in sys.modules or hooked:
        return backend
    if backend != "tensorflow":
        sys.meta_path.insert(0, TensorFlowKeptOut(backend))
    elif os.environ["TF_CPP_MIN_LOG_LEVEL"] != "0":
        sys.meta_path.insert(0, QuietTensorFlowImport())
    return backend


class TensorFlowKeptOut:
    """Import hook: importing TensorFlow fails, as if it were not installed.

    Keras then answers its "is TensorFlow available?" checks with no. (Putting
    None in ``sys.modules`` would not do: Keras takes the mere key as "imported".)
    """

    def __init__(self, backend):
        self.backend = backend

    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            return importlib.machinery.ModuleSpec(name, self)
        return None

    def create_module(self, spec):
        raise ModuleNotFoundError(f"{spec.name} is not used with the {self.backend} backend",
                                  name=spec.name)

    def exec_module(self, module):
        pass


class QuietTensorFlowImport:
    """Import hook: TensorFlow's own import runs inside ``native_log_lines_dropped``.

    A hook rather than a wrapper around one ``import keras``: Keras may be imported
    first from any module. It removes itself once TensorFlow is imported.
    """

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader, self)
        return spec


class _QuietLoader:
    """Delegates to TensorFlow's loader, running the import with its log lines dropped."""

    def __init__(self, loader, hook):
        self.loader, self.hook = loader, hook

    def __getattr__(self, name):  # everything else (resources, is_package, ...) as before
        if name in ("loader", "hook"):  # not set yet (e.g. while copying): no recursion
            raise AttributeError(name)
        return getattr(self.loader, name)

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        try:
            with native_log_lines_dropped():
                self.loader.exec_module(module)
        finally:
            with contextlib.suppress(ValueError):
                sys.meta_path.remove(self.hook)


@contextlib.contextmanager
def native_log_lines_dropped():
    """Pass on what is written to stderr (fd 2) inside the block as it comes, less the
    native libraries' absl log lines.

    Environment variables cannot silence those lines: they are printed while the
    libraries load, before TensorFlow reads ``TF_CPP_MIN_LOG_LEVEL``. Nothing is held
    back until the block ends, because the block may never end: TensorFlow aborts the
    whole process on a CPU without the instructions it was built for, and its message
    saying so must reach the terminal. The lines therefore pass through a pipe to a
    small filter process, which outlives such an abort. (A thread would not: the import
    holds the interpreter's lock while the library writes and aborts.)
    """
    if sys.stderr is not None:
        sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no real stderr (some IDE consoles): nothing to filter
        yield
        return
    try:
        line_filter, write_end = _start_line_filter(saved)
    except (OSError, ValueError):  # no Python to start (a frozen app): lines pass as they are
        os.close(saved)
        yield
        return
    os.dup2(write_end, 2)
    os.close(write_end)
    try:
        yield
    finally:
        if sys.stderr is not None:
            sys.stderr.flush()
        os.dup2(saved, 2)  # closes the pipe's last write end here: the filter's input ends
        os.close(saved)
        # What the filter still holds comes before anything written after the block. A
        # process the import started may keep the pipe open: it is not waited for.
        with contextlib.suppress(subprocess.TimeoutExpired):
            line_filter.wait(timeout=FILTER_WAIT_S)


FILTER_WAIT_S = 2
# The filter process: each line from stdin to stdout at once, unless it is native log
# noise. It leaves Ctrl-C to the process it filters for, and keeps reading when its output
# fails, so that a writer never blocks on a full pipe.
_LINE_FILTER = """
import re, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
noise, out = re.compile(sys.argv[1].encode()), sys.stdout.buffer
for line in sys.stdin.buffer:
    if not noise.match(line):
        try:
            out.write(line)
            out.flush()
        except OSError:
            pass
"""


def _start_line_filter(target):
    """Start the filter writing to the file descriptor ``target``; returns (process, the
    pipe's write end). ``-I -S``: no site packages or environment, so it starts in
    milliseconds and nothing of the project's runs in it."""
    read_end, write_end = os.pipe()
    try:
        process = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _LINE_FILTER, NATIVE_LOG_LINE.pattern],
            stdin=read_end, stdout=target, stderr=target)
    except BaseException:
        os.close(write_end)
        raise
    finally:
        os.close(read_end)
    return process, write_end


def import_backend():
    """Import Keras and its backend without their start-up log lines; returns ``keras``."""
    if "keras" not in sys.modules:
        setup_backend_env()
    import keras

    from network.core import cli

    cli.quiet_keras_warnings()
    return keras


def cpu_cores():
    """CPU cores this process may use (fewer than the machine's under a CPU limit)."""
    with contextlib.suppress(AttributeError, OSError):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


APPLE_MPS = "Apple (MPS)"  # PyTorch's GPU on Apple silicon


def compute_devices(backend=None):
    """The devices the backend computes on, as ``(kind, name)`` pairs: its GPUs or
    TPUs, e.g. ``("GPU", "NVIDIA H100 80GB HBM3")``, or its CPU device(s),
    ``("CPU", "CPU")``, when it has none. ``backend`` defaults to the configured one.

    The lab's one device probe. Keras lists devices but not their names, so each
    backend's own library is asked (Keras itself is not imported); TensorFlow's
    physical devices are listed, which leaves its runtime uninitialised.
    """
    return [(kind, name) for kind, name, _ in _listed_devices(backend)] or [("CPU", "CPU")]


def _listed_devices(backend=None):
    """(kind, name, compute capability as the library gives it) for each device the
    backend computes on; empty when it lists none (or fails to)."""
    try:
        return _backend_devices(backend or configured_backend())
    except Exception:  # a library that cannot list its devices leaves only the CPU
        return []


def _backend_devices(backend):
    if backend == "tensorflow":
        import tensorflow as tf

        details = [tf.config.experimental.get_device_details(d)
                   for d in tf.config.list_physical_devices("GPU")]
        return [("GPU", d.get("device_name", "GPU"), d.get("compute_capability"))
                for d in details]
    if backend == "jax":
        import jax

        return [(d.platform.upper(), "CPU" if d.platform == "cpu" else d.device_kind,
                 getattr(d, "compute_capability", None))  # "8.6" on CUDA devices only
                for d in jax.devices()]  # the accelerators, or else the CPU devices
    if backend == "torch":
        import torch

        if torch.cuda.is_available():
            return [("GPU", torch.cuda.get_device_name(i), torch.cuda.get_device_capability(i))
                    for i in range(torch.cuda.device_count())]
        if torch.backends.mps.is_available():
            return [("GPU", APPLE_MPS, None)]
    return []


def accelerators(backend=None):
    """The GPUs (or TPUs) among :func:`compute_devices`; empty on a CPU."""
    return [device for device in compute_devices(backend) if device[0] != "CPU"]


# --- The precision to train in ------------------------------------------------------------

@dataclass(frozen=True)
class Device:
    """What the training precision depends on: the backend, the kind of device ("GPU",
    "TPU" or "CPU"), its name, and an NVIDIA GPU's CUDA compute capability, e.g. (7, 5)
    for a T4 (None when unknown)."""

    backend: str
    kind: str
    name: str = ""
    capability: tuple | None = None


BFLOAT16_FROM = (8, 0)  # Ampere (A100, RTX 30xx) on: tensor cores with bfloat16
FLOAT16_FROM = (7, 0)   # Volta and Turing (V100, T4, RTX 20xx): tensor cores, float16 only
POLICIES = ("float32", "mixed_float16", "mixed_bfloat16")  # from the least demanding up


def precision_for(devices):
    """The Keras dtype policy for mixed-precision training on ``devices`` (:class:`Device`
    descriptions), the one decision of the scripts and the notebook on every backend:

    - ``mixed_bfloat16`` on an NVIDIA GPU of compute capability 8.0 or more, and on a
      TPU: float32's range, so no loss scaling;
    - ``mixed_float16`` on capability 7.x (Colab's T4, a V100), whose tensor cores have
      no bfloat16 (emulated, it is slower than float32); Keras's ``compile`` then wraps
      the optimizer in a ``LossScaleOptimizer``, so small gradients do not underflow.
      Also for a GPU whose capability is unknown: every CUDA GPU computes in float16;
    - ``float32`` on a CPU, on Apple's GPU (MPS), and below capability 7.0 (the
      manual's GTX 1060 is 6.1): 16 bits gain nothing there.

    Several devices train in the policy that suits every one of them.
    """
    chosen = [_device_precision(device) for device in devices]
    return min(chosen, key=POLICIES.index) if chosen else "float32"


def _device_precision(device):
    if device.kind == "TPU":
        return "mixed_bfloat16"
    if device.kind != "GPU" or device.name == APPLE_MPS:
        return "float32"
    if device.capability is None:
        return "mixed_float16"
    if tuple(device.capability) >= BFLOAT16_FROM:
        return "mixed_bfloat16"
    return "mixed_float16" if tuple(device.capability) >= FLOAT16_FROM else "float32"


def accelerator_devices(backend=None):
    """The backend's GPUs (or TPUs) as :class:`Device` descriptions, with the compute
    capability the backend reports, else nvidia-smi's; empty on a CPU."""
    backend = backend or configured_backend()
    devices = [Device(backend, kind, name, parse_capability(capability))
               for kind, name, capability in _listed_devices(backend) if kind != "CPU"]
    if any(d.capability is None and d.kind == "GPU" and d.name != APPLE_MPS for d in devices):
        fallback = nvidia_smi_capability()
        devices = [Device(d.backend, d.kind, d.name, d.capability or fallback)
                   if d.kind == "GPU" and d.name != APPLE_MPS else d for d in devices]
    return devices


def parse_capability(value):
    """A compute capability as a tuple of ints, from (8, 6), "8.6" or "8.6\n"; None
    for anything else (a ROCm architecture name, a missing value)."""
    if value is None:
        return None
    parts = value.strip().split(".") if isinstance(value, str) else list(value)
    try:
        return tuple(int(part) for part in parts) or None
    except (TypeError, ValueError):
        return None


def nvidia_smi_capability():
    """The lowest compute capability among this machine's NVIDIA GPUs, as nvidia-smi
    reports it (drivers since 2021), so that it suits whichever of them the backend
    uses; None without nvidia-smi or an answer."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        listed = subprocess.run([smi, "--query-gpu=compute_cap", "--format=csv,noheader"],
                                capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    found = [c for c in map(parse_capability, listed.split()) if c is not None]
    return min(found) if found else None


def format_description(backend, devices, cores, precision, training=False):
    """The start-up line from its parts (see ``describe``)."""
    name = BACKEND_NAMES.get(backend, backend)
    if devices:  # "GPU: NVIDIA A100 (2)": each model with its count, grouped by kind
        kinds = {}
        for kind, model in devices:
            kinds.setdefault(kind, Counter())[model] += 1
        hardware = ", ".join(f"{kind}: " + ", ".join(f"{m} ({n})" for m, n in models.items())
                             for kind, models in kinds.items())
    else:
        plural = "s" if cores != 1 else ""
        hardware = f"CPU ({cores} core{plural}{'; no GPU found' if training else ''})"
    return f"Running on {name}, {hardware}, {precision}"


def describe(precision=None, training=False):
    """One line: backend, device(s) and precision, e.g.
    ``Running on TensorFlow, CPU (2 cores), float32``.

    ``precision`` defaults to Keras's global dtype policy. With ``training=True``
    a CPU-only line says plainly that no GPU was found.
    """
    keras = import_backend()
    backend = keras.backend.backend()
    precision = precision or keras.mixed_precision.global_policy().name
    return format_description(backend, accelerators(backend), cpu_cores(), precision,
                              training)


def no_gpu_hint(backend=None, devices=None,
                cpu_note="fine for quick --subset runs but hours for the full recipe"):
    """What to do about training without a GPU, in one sentence; None with a GPU.

    Tells apart a machine whose GPU the backend cannot use (a CPU-only build is
    installed) from one without an NVIDIA GPU. ``cpu_note`` says what training on
    the CPU means for the recipe at hand.
    """
    if backend is None:
        backend = import_backend().backend.backend()
    if devices is None:
        devices = accelerators(backend)
    if devices:
        return None
    name = BACKEND_NAMES.get(backend, backend)
    install = GPU_INSTALL.get(backend)
    where = 'see "Training on a GPU" in README.md'
    if nvidia_driver_present() and install:
        return (f"This machine has an NVIDIA GPU, but {name} cannot use it: install its "
                f"CUDA build ({install}); {where}.")
    return (f"No GPU found: training runs on the CPU, {cpu_note}; on a machine with an "
            f"NVIDIA GPU, {where}.")


def announce(precision=None, training=False):
    """Print the start-up line (once per process unless it changes); return it."""
    global _announced
    line = describe(precision, training)
    if line != _announced:
        print(line, flush=True)
        _announced = line
    return line


def start(precision=None, training=False):
    """Import Keras quietly and print what the script runs on; returns ``keras``."""
    keras = import_backend()
    announce(precision, training)
    return keras
