"""The lab's networks: the manual's 9-layer CNN and the fast ResNet-9 recipe.

Both return class probabilities for 32x32x3 images. The lab CNN takes them as
float32 scaled to [0, 1], as the manual has it; the ResNet-9 takes the uint8
pixels (0-255) and normalises them inside. ``model_images`` gives any model its
form, so the evaluation and recognition scripts treat both alike.

Usage:

    from network.model_utils import build_model, model_images
    model = build_model((32, 32, 3), 100, summary=True)   # 13,870,484 parameters
    probs = model.predict(model_images(model, uint8_images))
"""

import json
import os
import platform
from pathlib import Path

import keras
import numpy as np
from keras import layers, ops

from network.core import cli, runtime
from network.core.errors import LabError
from network.core.files import write_json_atomic
from network.data_utils import scale_images

# Per-channel statistics of the CIFAR-100 training images (for the fast recipe).
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)


def build_model(input_shape=(32, 32, 3), num_class=100, summary=False):
    """The lab manual's network: 3 stacks of 2 x Conv-ReLU + MaxPool + Dropout,
    then Dense 1000, Dense 1000 and a softmax output (13,870,484 parameters)."""
    model = keras.Sequential(name="lab_cnn")
    model.add(keras.Input(shape=input_shape))
    for filters, dropout in ((128, 0.2), (256, 0.5), (512, 0.5)):
        model.add(layers.Conv2D(filters, 3, padding="same", activation="relu"))
        model.add(layers.Conv2D(filters, 3, padding="same", activation="relu"))
        model.add(layers.MaxPool2D(pool_size=2, strides=2))
        model.add(layers.Dropout(dropout))
    model.add(layers.Flatten())
    for _ in range(2):
        model.add(layers.Dense(1000, activation="relu"))
        model.add(layers.Dropout(0.5))
    model.add(layers.Dense(num_class, activation="softmax", dtype="float32"))
    if summary:
        model.summary()
    return model


# --- The fast recipe -----------------------------------------------------------------

@keras.saving.register_keras_serializable(package="cifar100_lab")
class RandomCropFlip(layers.Layer):
    """Per-image random crop (after zero padding) and horizontal flip.

    Written with ``keras.ops`` only, so the training step stays XLA-compilable
    (Keras's RandomCrop/RandomTranslation switch jit off for the whole model,
    and RandomCrop crops a whole batch at one place). The crop is two batched
    matrix products with one-hot selection matrices; the flip is folded into
    the column selection. At inference the layer passes images through.
    """

    def __init__(self, padding=4, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.padding = padding
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_jit = True

    def _selection(self, offsets, size, flip=None):
        # rows[b, i] = offset[b] + i (or reversed when flipped): the padded index
        # that output index i reads from; one-hot gives a (B, size, size + 2p) matrix.
        index = ops.arange(size, dtype="int32")[None, :]
        if flip is not None:
            index = ops.where(flip[:, None], size - 1 - index, index)
        rows = offsets[:, None] + index
        return ops.one_hot(rows, size + 2 * self.padding, dtype=self.compute_dtype)

    def call(self, images, training=None):
        if not training or self.padding == 0:
            return images
        # Static sizes where the input has them; tensors where it leaves them open
        # (progressive resizing on TensorFlow; XLA still compiles one program per size).
        batch, height, width = ops.shape(images)[:3]
        p = self.padding
        padded = ops.pad(images, ((0, 0), (p, p), (p, p), (0, 0)))
        offsets = keras.random.randint((2, batch), 0, 2 * p + 1, dtype="int32",
                                       seed=self.seed_generator)
        flip = keras.random.uniform((batch,), seed=self.seed_generator) < 0.5
        rows = self._selection(offsets[0], height)
        cols = self._selection(offsets[1], width, flip)
        out = ops.einsum("bih,bhwc->biwc", rows, padded)
        return ops.einsum("bjw,biwc->bijc", cols, out)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "padding": self.padding, "seed": self.seed}


def _conv_bn(x, filters, name, pool=False, strides=1, momentum=0.9):
    x = layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False,
                      name=f"{name}_conv")(x)
    x = layers.BatchNormalization(momentum=momentum, name=f"{name}_bn")(x)
    x = layers.ReLU(name=f"{name}_relu")(x)
    if pool:
        x = layers.MaxPool2D(2, name=f"{name}_pool")(x)
    return x


def _residual(x, filters, name, momentum=0.9):
    y = _conv_bn(x, filters, f"{name}a", momentum=momentum)
    y = _conv_bn(y, filters, f"{name}b", momentum=momentum)
    return layers.Add(name=f"{name}_add")([x, y])


WHITEN_EPS = 5e-4        # added to the patch covariance's eigenvalues (as airbench)
WHITEN_IMAGES = 5000     # training images whose 2x2 patches the whitening is fitted on


def whitening_kernel(images, stride=2):
    """The frozen first layer's kernel (2, 2, 3, 12): it projects each 2x2 patch of
    normalised pixels on the eigenvectors of the patches' covariance, scaled to unit
    variance (PCA whitening). With all 12 components it loses nothing; the next
    layer starts from decorrelated inputs, which speeds up early training
    (Jordan, "94% on CIFAR-10 in 3.29 seconds on a single GPU", 2024).
    ``images``: uint8 training images (N, H, W, 3); the first WHITEN_IMAGES are used.
    """
    x = (images[:WHITEN_IMAGES].astype("float32") / 255 - CIFAR100_MEAN) / CIFAR100_STD
    n, h, w, c = x.shape
    # Every patch the layer sees: (kh, kw, c) flattened in the kernel's order.
    patches = np.stack([x[:, i:h - 1 + i:stride, j:w - 1 + j:stride]
                        for i in range(2) for j in range(2)], axis=3).reshape(-1, 4 * c)
    eigenvalues, eigenvectors = np.linalg.eigh(np.cov(patches, rowvar=False))
    kernel = eigenvectors[:, ::-1] / np.sqrt(eigenvalues[::-1] + WHITEN_EPS)
    return kernel.reshape(2, 2, c, 4 * c).astype("float32")


def fit_whitening(model, images):
    """Set ``model``'s whitening layer (if it has one) from the training ``images``."""
    layer = next((layer for layer in model.layers if layer.name == "whiten"), None)
    if layer is not None:
        layer.set_weights([whitening_kernel(images, layer.strides[0])])


def build_resnet9(input_shape=(32, 32, 3), num_class=100, width=1.0, padding=4, stem_stride=1,
                  augment=True, seed=None, summary=False, bn_momentum=0.9, whiten=False):
    """A ResNet-9 (8 convolutions + 1 dense, BatchNorm, two residual blocks).

    ``width`` scales the classic 64-128-256-512 channels. It takes uint8
    images (0-255) and normalises them inside, so the data stay uint8 until the
    batch: a quarter of the memory, and of the host-to-GPU traffic, of float32.
    Augmentation (random crop after ``padding`` pixels + flip) is part of the
    model and active only while training. ``stem_stride=2`` makes the first
    convolution halve the resolution: every later layer then costs a quarter
    of the arithmetic, which is what a CPU needs most. ``whiten``: the first
    layer is a frozen 2x2 convolution that whitens patches (``fit_whitening``
    sets it from the training images); it takes over the stem's stride.
    ``input_shape`` may leave height and width open, ``(None, None, 3)``, for
    training at a lower resolution first (progressive resizing).
    """
    c1, c2, c3, c4 = (max(1, round(w * width)) for w in (64, 128, 256, 512))
    inputs = keras.Input(shape=input_shape, dtype="uint8", name="image")
    x = layers.Normalization(mean=[255 * m for m in CIFAR100_MEAN],
                             variance=[(255 * s) ** 2 for s in CIFAR100_STD], name="normalize")(
        inputs)
    # Padding after normalising pads with the mean colour.
    x = RandomCropFlip(padding=padding, seed=seed, name="augment")(x) if augment else x
    if whiten:
        x = layers.Conv2D(4 * input_shape[-1], 2, strides=stem_stride, use_bias=False,
                          padding="valid" if stem_stride == 2 else "same", trainable=False,
                          name="whiten")(x)
        stem_stride = 1
    x = _conv_bn(x, c1, "prep", strides=stem_stride, momentum=bn_momentum)
    x = _conv_bn(x, c2, "layer1", pool=True, momentum=bn_momentum)
    x = _residual(x, c2, "res1", momentum=bn_momentum)
    x = _conv_bn(x, c3, "layer2", pool=True, momentum=bn_momentum)
    x = _conv_bn(x, c4, "layer3", pool=True, momentum=bn_momentum)
    x = _residual(x, c4, "res3", momentum=bn_momentum)
    x = layers.GlobalMaxPooling2D(name="pool")(x)
    x = layers.Dense(num_class, use_bias=False, name="classifier")(x)
    # A small logit scale keeps the initial logits (and the loss) sane.
    x = layers.Rescaling(0.125, name="logit_scale")(x)
    outputs = layers.Activation("softmax", dtype="float32", name="probabilities")(x)
    model = keras.Model(inputs, outputs, name="resnet9")
    if summary:
        model.summary()
    return model


# --- Training recipes ----------------------------------------------------------------

# The networks a recipe can name (network/training/recipes.py holds the recipes themselves).
NETWORKS = {
    "lab_cnn": lambda recipe, num_class, seed, summary: build_model(
        (32, 32, 3), num_class, summary=summary),
    # Progressive resizing trains at two sizes: height and width are left open.
    "resnet9": lambda recipe, num_class, seed, summary: build_resnet9(
        (None, None, 3) if recipe.low_res else (32, 32, 3), num_class, width=recipe.width,
        padding=recipe.crop_padding, stem_stride=recipe.stem_stride, seed=seed,
        summary=summary, bn_momentum=recipe.bn_momentum, whiten=recipe.whiten),
}


def build_for_recipe(recipe, num_class=100, seed=None, summary=False):
    """The network a recipe trains (uncompiled)."""
    return NETWORKS[recipe.network](recipe, num_class, seed, summary)


def learning_rate_schedule(recipe, steps_per_epoch, epochs):
    """AdamW's schedule: linear warm-up from lr/10 to the peak, then cosine decay to 0."""
    total = max(1, steps_per_epoch * epochs)
    warmup = min(total - 1, int(recipe.warmup_epochs * steps_per_epoch))
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=recipe.learning_rate / 10, decay_steps=max(1, total - warmup),
        alpha=0.0, warmup_target=recipe.learning_rate, warmup_steps=warmup)


def compile_for_recipe(model, recipe, steps_per_epoch, budgeted=False):
    """Attach the recipe's optimizer, loss and metrics to ``model``.

    ``budgeted``: the rate follows a time budget's clock (``callbacks.BudgetClock``
    sets it before each step), so AdamW starts at the warm-up's first rate instead
    of a schedule over a fixed number of steps. Adam keeps the recipe's constant rate.
    """
    if recipe.optimizer == "adam":
        optimizer = keras.optimizers.Adam(learning_rate=recipe.learning_rate)
    else:
        rate = (recipe.learning_rate / 10 if budgeted
                else learning_rate_schedule(recipe, steps_per_epoch, recipe.epochs))
        optimizer = keras.optimizers.AdamW(learning_rate=rate, weight_decay=recipe.weight_decay)
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=recipe.label_smoothing),
        metrics=["accuracy", keras.metrics.TopKCategoricalAccuracy(k=5, name="top5")],
    )
    return model


def model_images(model, images):
    """uint8 images in the form ``model`` takes: as they are when its input is
    uint8 (the ResNet-9 scales them inside), else float32 in [0, 1] (the lab CNN)."""
    if model.inputs[0].dtype == "uint8":
        return images
    return scale_images(images)


def gpu_available():
    """Whether the active Keras backend computes on a GPU (Apple's MPS left out: the
    lab keeps it on float32)."""
    return any(kind == "GPU" and name != runtime.APPLE_MPS
               for kind, name in runtime.compute_devices(keras.backend.backend()))


def local_devices():
    """The active backend's devices as strings ("gpu:0", "gpu:1", ..., or "cpu:0")."""
    devices = runtime.compute_devices(keras.backend.backend())
    return [f"{kind.lower()}:{i}" for i, (kind, _) in enumerate(devices)]


def auto_precision(recipe, devices=None):
    """What ``--precision auto`` means for ``recipe`` on ``devices`` (by default the
    backend's accelerators): float32 unless the recipe trains in mixed precision, else
    ``runtime.precision_for`` the devices (bf16, fp16 or float32 by the GPU)."""
    if not recipe.mixed_precision:
        return "float32"
    if devices is None:
        devices = runtime.accelerator_devices(keras.backend.backend())
    return runtime.precision_for(devices)


def set_precision(precision, recipe):
    """Set Keras's global dtype policy (``auto``: :func:`auto_precision`); returns its
    name. Under mixed_float16, ``compile`` adds the loss scaling float16 needs."""
    if precision == "auto":
        precision = auto_precision(recipe)
    keras.mixed_precision.set_global_policy(precision)
    return precision


def hardware_info():
    """The backend, Keras version, devices and machine, for a run's summary."""
    return {"backend": keras.backend.backend(), "keras": keras.__version__,
            "devices": local_devices(), "python": platform.python_version(),
            "machine": platform.machine(), "processor": platform.processor() or None,
            "cpu_count": os.cpu_count()}


# --- Loading saved models ------------------------------------------------------------

def class_names_path(model_path):
    """Class names travel beside the model: ``<model folder>/class_names.json``."""
    return Path(model_path).with_name("class_names.json")


def save_class_names(model_path, fine_names, coarse_names, fine_to_coarse):
    payload = {"fine_label_names": list(fine_names), "coarse_label_names": list(coarse_names),
               "fine_to_coarse": [int(c) for c in fine_to_coarse]}
    write_json_atomic(class_names_path(model_path), payload)


def load_class_names(model_path, num_class=None):
    """Read the names saved by training; ``LabError`` when absent or damaged.

    With ``num_class``, the file must name exactly that many fine classes.
    """
    path = class_names_path(model_path)
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LabError(f"{path} not found: it is written by training next to the model; "
                       "train again or copy it beside the model file") from None
    except OSError as err:
        raise LabError(f"cannot read {path}: {err.strerror or err}") from None
    except ValueError:  # not JSON (UnicodeDecodeError is a ValueError too)
        raise LabError(f"{path} is damaged (not JSON): train again or restore it") from None
    names = payload.get("fine_label_names") if isinstance(payload, dict) else None
    if not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)):
        raise LabError(f"{path} is damaged (no list of class names): train again or restore it")
    if num_class is not None and len(names) != num_class:
        raise LabError(f"{path} names {len(names)} classes but the model predicts {num_class}: "
                       "it belongs to another model; copy the right one beside the model")
    return payload


def _check_model_format(path):
    """Refuse, with a clear reason, a file Keras would fail on with a cryptic one (that
    it exists at all is ``cli.require_model_file``'s check, which the scripts make first)."""
    import zipfile

    import h5py

    suffix = path.suffix.lower()
    if path.stat().st_size == 0:
        raise LabError(f"{path} is empty (an interrupted save?): train again or restore it")
    if suffix in (".h5", ".hdf5") and not h5py.is_hdf5(path):
        raise LabError(f"{path} is not an HDF5 file (damaged, or another kind of file "
                       "renamed .h5): train again or restore it")
    if suffix == ".keras" and not zipfile.is_zipfile(path):
        raise LabError(f"{path} is not a .keras archive (damaged, truncated, or another kind "
                       "of file renamed .keras): train again or restore it")
    if suffix not in (".h5", ".hdf5", ".keras"):
        raise LabError(f"{path}: unsupported model file type {suffix or '(no extension)'!r}; "
                       "Keras 3 loads .keras and .h5 files")


def _refuse_lambda_layers(path):
    """Refuse Lambda layers before Keras reads the model: they carry Python code.

    Keras's safe mode refuses them too, but older Keras 3 releases ignored
    ``safe_mode`` for .h5 files (CVE-2025-9905, fixed in 3.11.3) and could be
    talked out of it by a crafted .keras config (CVE-2025-9906).
    """
    import zipfile

    import h5py

    try:
        if path.suffix.lower() == ".keras":
            with zipfile.ZipFile(path) as archive:
                config = archive.read("config.json")
        else:
            with h5py.File(path, "r") as f:
                config = f.attrs.get("model_config")
        if isinstance(config, bytes):
            config = config.decode("utf-8")
        config = json.loads(config) if config else None
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return  # damaged: Keras's own error below says why
    if _has_lambda(config):
        raise LabError(f"{path} contains Python code (a Lambda layer), which is never "
                       "loaded because it could run anything on this machine; rebuild the "
                       "model without Lambda layers")


def _has_lambda(config):
    if isinstance(config, dict):
        return config.get("class_name") == "Lambda" or any(map(_has_lambda, config.values()))
    if isinstance(config, list):
        return any(map(_has_lambda, config))
    return False


def load_model(model_path, num_class=100, input_shape=(32, 32, 3)):
    """Load a saved Keras model in safe mode and check it fits the task.

    Safe mode refuses code embedded in a model file (e.g. Lambda layers).
    Every failure is a ``LabError`` naming the file and the reason.
    """
    path = Path(model_path)
    cli.require_model_file(path)
    _check_model_format(path)
    _refuse_lambda_layers(path)
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as err:  # Keras raises many types for a foreign/damaged file
        message = str(err).strip()
        if "arbitrary code" in message or "safe_mode" in message:
            raise LabError(f"{path} asks to run Python code while loading, which safe mode "
                           "refuses: load only models you built yourself") from None
        reason = message.splitlines()[0][:200] if message else type(err).__name__
        raise LabError(f"{path} is not a loadable Keras model (damaged or truncated?): "
                       f"{reason}") from None
    if not isinstance(model, keras.Model) or len(model.inputs) != 1 or len(model.outputs) != 1:
        raise LabError(f"{path} does not hold a one-input, one-output Keras model")
    inputs, outputs = tuple(model.inputs[0].shape[1:]), tuple(model.outputs[0].shape[1:])
    fits = len(inputs) == len(input_shape) and all(  # None: any size (progressive resizing)
        size in (None, wanted) for size, wanted in zip(inputs, input_shape, strict=True))
    if not fits or outputs != (num_class,):
        raise LabError(f"{path} maps {inputs} -> {outputs}, but this lab needs "
                       f"{tuple(input_shape)} images -> {num_class} classes")
    return model
