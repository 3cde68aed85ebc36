"""--distribute: data-parallel training over two virtual CPU devices.

XLA_FLAGS=--xla_force_host_platform_device_count=2 gives JAX two CPU devices,
and two logical CPUs give TensorFlow's MirroredStrategy two replicas, so the
multi-device paths run without GPUs.
"""

import importlib.util

import pandas as pd
import pytest

from conftest import TINY_TRAINING, summary_of
from helpers import assert_clean_error, code_step, run_steps, script_step

# With the backend runs' tests on one worker: its reference is backend_training's run.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("backends")]
TWO_DEVICES = {"KERAS_BACKEND": "jax", "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}


def train_args(fake_data, out, *extra):
    """TINY_TRAINING into ``out``: conftest's ``backend_training`` trained the same way on
    one device, the reference for the runs below."""
    return [*TINY_TRAINING, "--data-dir", fake_data, "--output-dir", out,
            "--model-path", out / "m.h5", *extra]


def first_loss(reports):
    return pd.read_csv(reports / "history.csv")["loss"].iloc[0]


@pytest.fixture(scope="module")
def jax_two_devices(tmp_path_factory, fake_data):
    """One JAX process with two CPU devices: a data-parallel run, then one whose batch does
    not split over them. Returns (folder, [StepResult, StepResult])."""
    if importlib.util.find_spec("jax") is None:
        pytest.skip("JAX not installed")
    folder = tmp_path_factory.mktemp("jax-two-devices")
    done = run_steps([
        script_step("train_model", *train_args(fake_data, folder / "multi", "--distribute")),
        script_step("train_model", *train_args(fake_data, folder / "odd", "--distribute",
                                               "--batch-size", 51)),
    ], env=TWO_DEVICES)
    return folder, done.results


def test_distributed_matches_single_device(jax_two_devices, backend_training):
    folder, (result, _) = jax_two_devices
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Data-parallel training on 2 devices" in result.stdout

    summary = summary_of(folder / "multi")
    assert summary["settings"]["replicas"] == 2
    assert summary["devices_used"] == 2  # the weights live on both devices
    single = backend_training["jax"]["reports"]
    assert summary_of(single)["devices_used"] == 1
    assert first_loss(folder / "multi") == pytest.approx(first_loss(single), rel=1e-4)


def test_batch_must_split_over_devices(jax_two_devices):
    folder, (_, result) = jax_two_devices
    assert_clean_error(result, "multiple of the 2 devices")
    assert not (folder / "odd" / "m.h5").exists()


def test_torch_backend_refuses_distribute(backend_checks):
    """A step of conftest's ``backend_checks`` on PyTorch."""
    if "torch" not in backend_checks:
        pytest.skip("PyTorch not installed")
    assert_clean_error(backend_checks["torch"]["distribute"],
                       "--distribute needs the JAX or TensorFlow backend")


TF_TWO_REPLICAS = """
import sys
import tensorflow as tf

# Two logical CPUs, so MirroredStrategy has two replicas to mirror over.
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from network.train_model import main
sys.exit(main(sys.argv[1:]))
"""


def test_tensorflow_mirrored_strategy_on_two_replicas(fake_data, tmp_path, backend_training):
    multi = tmp_path / "multi"
    result = run_steps([code_step(TF_TWO_REPLICAS, *train_args(fake_data, multi,
                                                               "--distribute"))],
                       env={"KERAS_BACKEND": "tensorflow"})[0]
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Data-parallel training on 2 devices" in result.stdout

    summary = summary_of(multi)
    assert summary["settings"]["replicas"] == 2
    assert summary["devices_used"] == 2  # mirrored variables: one copy per replica
    # BatchNorm statistics are per replica under MirroredStrategy, so the loss is close
    # to the single-device run rather than equal to it.
    single = backend_training["tensorflow"]["reports"]
    assert first_loss(multi) == pytest.approx(first_loss(single), rel=0.02)
