"""Data-parallel training on every local device (``train_model --distribute``).

On JAX, Keras's own distribution API (``keras.distribution.DataParallel``)
replicates the model and splits each batch across the devices. On
TensorFlow, ``tf.distribute.MirroredStrategy`` is the established engine:
the model is built and compiled inside its scope. Either way the global batch
size stays what ``--batch-size`` says, so results match single-device runs.

Try it on a CPU with two virtual devices:

    XLA_FLAGS=--xla_force_host_platform_device_count=2 KERAS_BACKEND=jax \\
        python -m network.train_model --distribute --subset 2000 --epochs 1
"""

import contextlib

from network.core.errors import LabError


def setup_distribution():
    """Spread training over all local devices of the active backend.

    Returns ``(scope, replicas)``: build and compile the model inside
    ``scope``; batch sizes must be multiples of ``replicas``.
    """
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        devices = keras.distribution.list_devices()
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
        return contextlib.nullcontext(), len(devices)
    if backend == "tensorflow":
        import tensorflow as tf

        strategy = tf.distribute.MirroredStrategy()
        return strategy.scope(), strategy.num_replicas_in_sync
    raise LabError(f"--distribute needs the JAX or TensorFlow backend, not {backend} "
                   "(set KERAS_BACKEND=jax or tensorflow)")


def even_split_for(replicas, batch_size, *splits):
    """Trim each (x, y) split so that every batch divides evenly over the devices."""
    if batch_size % replicas:
        raise LabError(f"--batch-size {batch_size} must be a multiple of the {replicas} "
                       "devices for --distribute")
    return [(x[:len(x) - len(x) % replicas], y[:len(y) - len(y) % replicas]) for x, y in splits]


def devices_in_use(model):
    """How many devices hold the model's weights (1 unless training is distributed)."""
    import keras

    variable = model.trainable_variables[0]
    if keras.backend.backend() == "jax":
        return len(variable.value.sharding.device_set)
    values = getattr(variable.value, "values", None)  # a TF MirroredVariable's replicas
    return len(values) if isinstance(values, (tuple, list)) else 1
