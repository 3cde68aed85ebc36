"""--distribute: data-parallel training over two virtual CPU devices.

XLA_FLAGS=--xla_force_host_platform_device_count=2 gives JAX two CPU devices,
and two logical CPUs give TensorFlow's MirroredStrategy two replicas, so the
multi-device paths run without GPUs.
"""

import importlib.util
import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from conftest import ROOT, assert_clean_error, run_cli

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="JAX not installed"),
]
TWO_DEVICES = {"KERAS_BACKEND": "jax", "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}


def train(fake_data, out, *extra, env=TWO_DEVICES):
    return run_cli("train_model", "--recipe", "fast", "--width", "0.0625", "--subset", 300,
                   "--epochs", 1, "--batch-size", 50, "--data-dir", fake_data,
                   "--allow-md5-mismatch", "--output-dir", out, "--model-path", out / "m.h5",
                   *extra, env=env)


def test_distributed_matches_single_device(fake_data, tmp_path):
    single, multi = tmp_path / "single", tmp_path / "multi"
    result = train(fake_data, single)
    assert result.returncode == 0, result.stderr[-3000:]
    result = train(fake_data, multi, "--distribute")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Data-parallel training on 2 device(s)" in result.stdout

    summary = json.loads((multi / "train_summary.json").read_text())
    assert summary["settings"]["replicas"] == 2
    assert summary["devices_used"] == 2  # the weights live on both devices
    assert json.loads((single / "train_summary.json").read_text())["devices_used"] == 1

    loss_single = pd.read_csv(single / "history.csv")["loss"].iloc[0]
    loss_multi = pd.read_csv(multi / "history.csv")["loss"].iloc[0]
    assert loss_multi == pytest.approx(loss_single, rel=1e-4)


def test_batch_must_split_over_devices(fake_data, tmp_path):
    result = train(fake_data, tmp_path, "--distribute", "--batch-size", 51)
    assert_clean_error(result, "multiple of the 2 devices")
    assert not (tmp_path / "m.h5").exists()


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="PyTorch not installed")
def test_torch_backend_refuses_distribute(fake_data, tmp_path):
    result = train(fake_data, tmp_path, "--distribute", env={"KERAS_BACKEND": "torch"})
    assert_clean_error(result, "--distribute needs the JAX or TensorFlow backend")


TF_TWO_REPLICAS = """
import sys
import tensorflow as tf

# Two logical CPUs, so MirroredStrategy has two replicas to mirror over.
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from network.train_model import main
sys.exit(main(sys.argv[1:]))
"""


def test_tensorflow_mirrored_strategy_on_two_replicas(fake_data, tmp_path):
    single = tmp_path / "single"
    result = train(fake_data, single, env={"KERAS_BACKEND": "tensorflow"})
    assert result.returncode == 0, result.stderr[-3000:]

    multi = tmp_path / "multi"
    args = ["--recipe", "fast", "--width", "0.0625", "--subset", "300", "--epochs", "1",
            "--batch-size", "50", "--data-dir", str(fake_data), "--allow-md5-mismatch",
            "--output-dir", str(multi), "--model-path", str(multi / "m.h5"), "--distribute"]
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "MPLBACKEND": "Agg"}
    env.pop("CIFAR100_DIR", None)
    result = subprocess.run([sys.executable, "-c", TF_TWO_REPLICAS, *args], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Data-parallel training on 2 device(s)" in result.stdout

    summary = json.loads((multi / "train_summary.json").read_text())
    assert summary["settings"]["replicas"] == 2
    assert summary["devices_used"] == 2  # mirrored variables: one copy per replica
    # BatchNorm statistics are per replica under MirroredStrategy, so the loss is close
    # to the single-device run rather than equal to it.
    loss_single = pd.read_csv(single / "history.csv")["loss"].iloc[0]
    loss_multi = pd.read_csv(multi / "history.csv")["loss"].iloc[0]
    assert loss_multi == pytest.approx(loss_single, rel=0.02)
