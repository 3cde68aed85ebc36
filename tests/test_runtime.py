"""The scripts' start: quick answers without Keras, no log noise, one line on the hardware.

Subprocess tests run each script as a user would and look at which backends
the process imported (``helpers.run_steps`` records them) and at its stderr.
"""

import os
import re
import signal
import subprocess
import sys

import pytest

from conftest import ROOT
from helpers import BACKEND_MODULES, run_steps, script_step
from network.core import runtime

SCRIPTS = ["train_model", "evaluate_model", "test_model", "make_report"]
MISSING_MODEL_SCRIPTS = ["evaluate_model", "test_model", "make_report"]
BACKENDS = ["tensorflow", "jax", "torch"]
# What TensorFlow, XLA and absl print when nobody silences them.
NOISE = re.compile(r"^[IWEF]\d{4} |All log messages before absl|oneDNN|cuInit|cuda_",
                   re.MULTILINE)


# --- Answers before Keras ---------------------------------------------------------------
# Each answer is one run of a script in a process shared by all of them (``helpers.run_steps``
# records the backend modules imported after each): none may import a backend, so none
# finds one imported by an earlier run.

@pytest.fixture(scope="module")
def answers(tmp_path_factory, tiny_model, fake_data):
    """{name: StepResult} for the runs below, and "missing" -> the missing model's path."""
    folder = tmp_path_factory.mktemp("answers")
    missing = folder / "no_such_model.h5"
    data = ["--model-path", tiny_model, "--data-dir", fake_data, "--output-dir", folder]
    steps = {
        **{f"help {script}": script_step(script, "--help") for script in SCRIPTS},
        **{f"missing {script}": script_step(script, "--model-path", missing,
                                            "--output-dir", folder)
           for script in MISSING_MODEL_SCRIPTS},
        # the fake files are not the official ones
        "not official": script_step("evaluate_model", *data),
        "subset too large": script_step("evaluate_model", *data, "--allow-md5-mismatch",
                                        "--subset", 201),
        "bad model path": script_step("train_model", "--model-path", folder / "model.txt",
                                      "--output-dir", folder),
    }
    done = run_steps(list(steps.values()))
    return {**dict(zip(steps, done.results)), "missing": missing}


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_imports_no_backend(script, answers):
    result = answers[f"help {script}"]
    assert result.returncode == 0, result.stderr[-3000:]
    assert "usage:" in result.stdout
    assert result.backends == set(), result.backends


@pytest.mark.parametrize("script", MISSING_MODEL_SCRIPTS)
def test_missing_model_file_is_answered_without_a_backend(script, answers):
    result, missing = answers[f"missing {script}"], answers["missing"]
    assert result.returncode == 1
    assert result.backends == set(), result.backends
    message = [line for line in result.stderr.splitlines() if "error:" in line]
    assert message == [f"{script}: error: the model file {missing} does not exist: "
                       "check the path given with --model-path"], result.stderr
    assert "Traceback" not in result.stderr


def test_data_mistakes_are_answered_without_a_backend(answers):
    result = answers["not official"]
    assert result.returncode == 1 and result.backends == set(), result.backends
    assert "not the official" in result.stderr and "--allow-md5-mismatch" in result.stderr
    result = answers["subset too large"]
    assert result.returncode == 1 and result.backends == set(), result.backends
    assert "--subset 201 is larger than the 200 test images" in result.stderr


def test_bad_model_path_for_training_is_answered_without_a_backend(answers):
    result = answers["bad model path"]
    assert result.returncode == 2
    assert "--model-path must end in .h5 or .keras" in result.stderr
    assert result.backends == set(), result.backends


def test_default_model_path_missing_says_to_train_first(tmp_path, monkeypatch):
    from network.core import cli

    monkeypatch.setattr(cli, "DEFAULT_MODEL_PATH", tmp_path / "best_model.h5")
    with pytest.raises(cli.LabError, match=r"no trained model yet .*network\.train_model"):
        cli.require_model_file(tmp_path / "best_model.h5")
    with pytest.raises(cli.LabError, match="is a folder, not a model file"):
        cli.require_model_file(tmp_path)


def test_importing_the_package_changes_nothing():
    code = ("import os, sys; before = dict(os.environ); "
            "import network, network.core.cli, network.core.runtime, network.test_model, "
            "network.evaluate_model, network.train_model, network.make_report; "
            "print(dict(os.environ) == before, "
            f"sorted(m for m in {BACKEND_MODULES!r} if m in sys.modules))")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("JAX_", "TF_CPP")) and k != "KERAS_BACKEND"}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.stdout.split() == ["True", "[]"], result.stderr[-3000:]


# --- A quiet start on every backend -----------------------------------------------------
# The first run in a fresh process on each backend: recognition in conftest's
# ``backend_checks``, training in ``backend_training``.

@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_recognition_starts_quietly_and_names_the_backend(backend, backend_check):
    result = backend_check["recognise"]
    assert result.returncode == 0, result.stderr[-3000:]
    assert not NOISE.search(result.stderr), result.stderr[-3000:]
    assert result.stderr.strip() == "", result.stderr[-3000:]  # nothing at all
    process = backend_check["process"]
    assert not NOISE.search(process.stderr), process.stderr[-3000:]  # nor at exit
    first = result.stdout.splitlines()[0]
    name = runtime.BACKEND_NAMES[backend]
    assert re.fullmatch(rf"Running on {name}, CPU \(\d+ cores?\), float32", first), first
    if backend != "tensorflow":
        # Keras would import all of it to read a .h5 file
        assert "tensorflow" not in result.backends, result.backends


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_training_starts_quietly_and_says_when_there_is_no_gpu(backend, backend_training):
    if backend not in backend_training:
        pytest.skip(f"{backend} is not installed")
    result, process = backend_training[backend]["run"], backend_training[backend]["process"]
    assert result.returncode == 0, result.stderr[-3000:]
    assert not NOISE.search(result.stderr), result.stderr[-3000:]
    assert not NOISE.search(process.stderr), process.stderr[-3000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith("Running on"))
    name = runtime.BACKEND_NAMES[backend]
    assert re.fullmatch(rf"Running on {name}, (CPU \(\d+ cores?; no GPU found\), float32"
                        r"|GPU: .+, mixed_b?float16)", line), line
    if backend != "tensorflow":
        assert "tensorflow" not in result.backends  # saving .h5 checkpoints needs none of it


# --- The precision to train in -----------------------------------------------------------
# One decision for every backend, from what the backend says of its devices.

# (kind, name, compute capability) as a backend describes a device
H100, A100 = ("GPU", "NVIDIA H100 80GB HBM3", (9, 0)), ("GPU", "NVIDIA A100-SXM4-40GB", (8, 0))
T4, V100 = ("GPU", "Tesla T4", (7, 5)), ("GPU", "Tesla V100-SXM2-16GB", (7, 0))
GTX_1060 = ("GPU", "NVIDIA GeForce GTX 1060 6GB", (6, 1))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("devices, policy", [
    ([], "float32"),                                     # a CPU: nothing listed
    ([("CPU", "CPU", None)], "float32"),                 # JAX lists its CPU device
    ([H100], "mixed_bfloat16"), ([A100], "mixed_bfloat16"),
    ([T4], "mixed_float16"), ([V100], "mixed_float16"),  # tensor cores without bf16
    ([GTX_1060], "float32"),                             # no tensor cores: 16 bits gain nothing
    ([("GPU", runtime.APPLE_MPS, None)], "float32"),
    ([("GPU", "a GPU that reports no capability", None)], "mixed_float16"),
    ([("TPU", "TPU v4", None)], "mixed_bfloat16"),
    ([A100, T4], "mixed_float16"), ([H100, GTX_1060], "float32"),  # what suits them all
], ids=["cpu", "jax-cpu", "h100", "a100", "t4", "v100", "gtx1060", "apple", "unknown", "tpu",
        "a100+t4", "h100+gtx1060"])
def test_precision_for_each_device(backend, devices, policy):
    assert runtime.precision_for([runtime.Device(backend, *d) for d in devices]) == policy


@pytest.mark.parametrize("backend, reported", [
    ("tensorflow", (7, 5)),   # tf.config.experimental.get_device_details
    ("jax", "7.5"),           # jax Device.compute_capability
    ("torch", (7, 5)),        # torch.cuda.get_device_capability
])
def test_each_backends_capability_is_read_alike(backend, reported, monkeypatch):
    monkeypatch.setattr(runtime, "_backend_devices", lambda b: [("GPU", "Tesla T4", reported)])
    monkeypatch.setattr(runtime, "nvidia_smi_capability", lambda: pytest.fail("not needed"))
    assert runtime.accelerator_devices(backend) == [runtime.Device(backend, *T4)]
    assert runtime.precision_for(runtime.accelerator_devices(backend)) == "mixed_float16"


def test_nvidia_smi_answers_when_the_backend_does_not(tmp_path, monkeypatch):
    """Its lowest capability, which suits whichever GPU the backend uses."""
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\n[ \"$1\" = --query-gpu=compute_cap ] && printf '8.6\\n7.5\\n'\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert runtime.nvidia_smi_capability() == (7, 5)
    monkeypatch.setattr(runtime, "_backend_devices", lambda b: [("GPU", "Tesla T4", None),
                                                                ("GPU", runtime.APPLE_MPS, None)])
    assert [d.capability for d in runtime.accelerator_devices("jax")] == [(7, 5), None]
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    assert runtime.nvidia_smi_capability() is None


@pytest.mark.parametrize("value, parsed", [((8, 6), (8, 6)), ("8.6", (8, 6)), ("9.0\n", (9, 0)),
                                           ("gfx90a", None), (None, None), ("", None)])
def test_capabilities_as_the_libraries_give_them(value, parsed):
    assert runtime.parse_capability(value) == parsed


# --- The start-up line and the GPU hint ---------------------------------------------------

def test_description_of_gpus_and_cpus():
    gpus = [("GPU", "NVIDIA H100 80GB HBM3")] * 2
    assert (runtime.format_description("jax", gpus, 16, "mixed_bfloat16")
            == "Running on JAX, GPU: NVIDIA H100 80GB HBM3 (2), mixed_bfloat16")
    mixed = [("GPU", "NVIDIA A100"), ("GPU", "NVIDIA T4")]
    assert (runtime.format_description("torch", mixed, 8, "float32")
            == "Running on PyTorch, GPU: NVIDIA A100 (1), NVIDIA T4 (1), float32")
    assert (runtime.format_description("tensorflow", [], 2, "float32")
            == "Running on TensorFlow, CPU (2 cores), float32")
    assert (runtime.format_description("tensorflow", [], 1, "float32", training=True)
            == "Running on TensorFlow, CPU (1 core; no GPU found), float32")
    # A GPU run says nothing about missing GPUs, training or not.
    assert "no GPU" not in runtime.format_description("jax", gpus, 16, "float32", True)


def test_describe_this_machine():
    import keras

    line = runtime.describe()
    backend = runtime.BACKEND_NAMES[keras.backend.backend()]
    assert line.startswith(f"Running on {backend}, ")
    assert line.endswith(f", {keras.mixed_precision.global_policy().name}")
    assert runtime.describe("mixed_float16").endswith(", mixed_float16")


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_gpu_hint(backend, monkeypatch):
    assert runtime.no_gpu_hint(backend, [("GPU", "NVIDIA L4")]) is None
    monkeypatch.setattr(runtime, "nvidia_driver_present", lambda: True)
    hint = runtime.no_gpu_hint(backend, [])
    assert runtime.GPU_INSTALL[backend] in hint
    assert f"{runtime.BACKEND_NAMES[backend]} cannot use it" in hint
    monkeypatch.setattr(runtime, "nvidia_driver_present", lambda: False)
    hint = runtime.no_gpu_hint(backend, [])
    assert hint.startswith("No GPU found") and "Training on a GPU" in hint


# --- The environment, set by the scripts only -------------------------------------------

def test_configured_backend_follows_keras_rules(tmp_path, monkeypatch):
    monkeypatch.delitem(sys.modules, "keras", raising=False)  # as before Keras is imported
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    assert runtime.configured_backend() == "tensorflow"
    (tmp_path / "keras.json").write_text('{"backend": "jax"}')
    assert runtime.configured_backend() == "jax"
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    assert runtime.configured_backend() == "torch"


SETUP = """
import os
from network.core import runtime
print(runtime.setup_backend_env())
print(os.environ["JAX_COMPILATION_CACHE_DIR"])
try:
    import tensorflow
except ImportError:
    print("tensorflow kept out")
"""


def test_setup_on_jax_keeps_tensorflow_out_and_caches_compilation(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    env.update(KERAS_BACKEND="jax", XDG_CACHE_HOME=str(tmp_path))
    result = subprocess.run([sys.executable, "-c", SETUP], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.stdout.splitlines() == [
        "jax", str(tmp_path / "cifar100-lab" / "jax"), "tensorflow kept out"], result.stderr


def test_native_log_lines_are_dropped_and_the_rest_kept(capfd):
    with runtime.native_log_lines_dropped():
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are "
                    b"written to STDERR\n"
                    b"I0000 00:00:1795859843.205337    4839 cudart_stub.cc:31] Could not "
                    b"find cuda drivers on your machine, GPU will not be used.\n"
                    b"E1128 10:02:03.123456   4839 cuda_dnn.cc:8579] Unable to register "
                    b"cuDNN factory\n"
                    b"a real problem\n")
    assert capfd.readouterr().err == "a real problem\n"


NOISE_LINE = (b"I0000 00:00:1795859843.205337    4839 cudart_stub.cc:31] Could not find cuda "
              b"drivers on your machine, GPU will not be used.\n")
AVX_ABORT = (b"The TensorFlow library was compiled to use AVX instructions, but these aren't "
             b"available on your machine.\n")


@pytest.mark.parametrize("ending", ["os.abort()", "os._exit(3)"])
def test_a_hard_abort_while_tensorflow_imports_keeps_its_message(ending, tmp_path):
    """An old laptop's TensorFlow logs, says why it cannot run and aborts the process, all
    inside its import. The import hook of setup_backend_env passes the message on as it
    comes, so it reaches the terminal (here: the captured stderr), and still drops the log
    line. A stand-in "tensorflow" package does what the real one does there."""
    package = tmp_path / "tensorflow"
    package.mkdir()
    (package / "__init__.py").write_text(
        f"import os\nos.write(2, {NOISE_LINE!r})\nos.write(2, {AVX_ABORT!r})\n{ending}\n")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env.update(KERAS_BACKEND="tensorflow", PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT)]))
    code = ("from network.core import runtime\n"
            "runtime.setup_backend_env()\n"
            "import tensorflow\n"
            "print('never here')\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env,
                            capture_output=True, timeout=120)
    assert result.returncode == (-signal.SIGABRT if ending == "os.abort()" else 3), result
    assert result.stderr == AVX_ABORT and result.stdout == b""
