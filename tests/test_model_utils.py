"""The networks: the lab's CNN exactly as the manual builds it, and the fast ResNet-9."""

import itertools

import keras
import numpy as np
import pytest
from keras import layers

from network.model_utils import RandomCropFlip, build_model, build_resnet9, load_model

# The manual's network, layer by layer: (type, filters/units/rate, activation).
LAB_LAYERS = [
    ("Conv2D", 128, "relu"), ("Conv2D", 128, "relu"), ("MaxPooling2D", None, None),
    ("Dropout", 0.2, None),
    ("Conv2D", 256, "relu"), ("Conv2D", 256, "relu"), ("MaxPooling2D", None, None),
    ("Dropout", 0.5, None),
    ("Conv2D", 512, "relu"), ("Conv2D", 512, "relu"), ("MaxPooling2D", None, None),
    ("Dropout", 0.5, None),
    ("Flatten", None, None),
    ("Dense", 1000, "relu"), ("Dropout", 0.5, None),
    ("Dense", 1000, "relu"), ("Dropout", 0.5, None),
    ("Dense", 100, "softmax"),
]


def describe(layer):
    """(type, size, activation) of one layer, in the form of LAB_LAYERS."""
    kind = type(layer).__name__
    size = getattr(layer, "filters", None) or getattr(layer, "units", None)
    if isinstance(layer, layers.Dropout):
        size = layer.rate
    activation = getattr(layer, "activation", None)
    return kind, size, activation.__name__ if activation else None


@pytest.fixture(scope="module")
def lab_model():
    return build_model((32, 32, 3), 100)


def test_lab_model_has_the_manuals_parameter_count(lab_model):
    assert lab_model.count_params() == 13_870_484


def test_lab_model_layers_match_the_manual(lab_model):
    assert [describe(layer) for layer in lab_model.layers] == LAB_LAYERS
    for layer in lab_model.layers:
        if isinstance(layer, layers.Conv2D):
            assert layer.kernel_size == (3, 3) and layer.padding == "same"
        if isinstance(layer, layers.MaxPooling2D):
            assert layer.pool_size == (2, 2) and layer.strides == (2, 2)
    assert lab_model.input_shape == (None, 32, 32, 3)
    assert lab_model.output_shape == (None, 100)


def test_lab_model_outputs_probabilities(lab_model):
    probs = np.asarray(lab_model.predict(np.zeros((2, 32, 32, 3), "float32"), verbose=0))
    assert probs.shape == (2, 100)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_build_model_prints_summary_only_when_asked(capsys):
    build_model((32, 32, 3), 10)
    assert capsys.readouterr().out == ""
    build_model((32, 32, 3), 100, summary=True)
    out = capsys.readouterr().out
    assert "13,870,484" in out and "Total params" in out


# --- ResNet-9 ------------------------------------------------------------------------

def conv_filters(model):
    return [layer.filters for layer in model.layers if isinstance(layer, layers.Conv2D)]


def test_resnet9_has_eight_convolutions_and_one_dense():
    model = build_resnet9(width=0.125)
    weighted = [type(layer).__name__ for layer in model.layers
                if isinstance(layer, (layers.Conv2D, layers.Dense))]
    assert weighted == ["Conv2D"] * 8 + ["Dense"]
    assert model.input_shape == (None, 32, 32, 3) and model.output_shape == (None, 100)


@pytest.mark.parametrize("width", [0.0625, 0.5, 1.0, 2.0])
def test_resnet9_width_scales_every_convolution(width):
    c1, c2, c3, c4 = (round(w * width) for w in (64, 128, 256, 512))
    model = build_resnet9(width=width, augment=False)
    assert conv_filters(model) == [c1, c2, c2, c2, c3, c4, c4, c4]
    assert model.get_layer("classifier").kernel.shape == (c4, 100)


def crops_of(image, padding=4):
    """Every crop (and its mirror) of ``image`` after zero padding, keyed by (dy, dx, flip)."""
    h, w = image.shape[:2]
    padded = np.pad(image, ((padding, padding), (padding, padding), (0, 0)))
    for dy, dx, flip in itertools.product(range(2 * padding + 1), range(2 * padding + 1),
                                          (False, True)):
        crop = padded[dy:dy + h, dx:dx + w]
        yield (dy, dx, flip), crop[:, ::-1] if flip else crop


def which_crop(output, image):
    matches = [key for key, crop in crops_of(image) if np.allclose(output, crop, atol=1e-6)]
    assert matches, "output is not a padded crop (or its mirror) of the input"
    return matches[0]


def test_random_crop_flip_gives_each_image_a_padded_crop():
    rng = np.random.default_rng(0)
    images = rng.uniform(0.1, 1.0, size=(8, 32, 32, 3)).astype("float32")
    out = np.asarray(RandomCropFlip(padding=4, seed=1)(images, training=True))
    assert out.shape == images.shape
    for output, image in zip(out, images):
        which_crop(output, image)


def test_random_crop_flip_varies_between_images_of_a_batch():
    # One image repeated: identical crops for the whole batch would mean
    # batch-wide (not per-image) augmentation, as keras.layers.RandomCrop does.
    image = np.random.default_rng(1).uniform(0.1, 1.0, size=(32, 32, 3)).astype("float32")
    batch = np.repeat(image[None], 48, axis=0)
    out = np.asarray(RandomCropFlip(padding=4, seed=2)(batch, training=True))
    choices = [which_crop(o, image) for o in out]
    assert len(set(choices)) >= 10          # 162 possible crops: repeats are rare
    flips = sum(flip for _, _, flip in choices)
    assert 5 <= flips <= 43                 # about half are mirrored
    assert len({dy for dy, _, _ in choices}) >= 4 and len({dx for _, dx, _ in choices}) >= 4


def test_random_crop_flip_is_identity_at_inference():
    images = np.random.default_rng(2).uniform(size=(4, 32, 32, 3)).astype("float32")
    layer = RandomCropFlip(padding=4)
    np.testing.assert_array_equal(np.asarray(layer(images, training=False)), images)
    np.testing.assert_array_equal(np.asarray(layer(images)), images)
    model = build_resnet9(width=0.0625, seed=0)
    first, second = (model.predict(images, verbose=0) for _ in range(2))
    np.testing.assert_array_equal(first, second)


def test_random_crop_flip_and_resnet9_keep_xla_on():
    assert RandomCropFlip().supports_jit
    model = build_resnet9(width=0.0625, seed=0)
    assert all(layer.supports_jit for layer in model.layers)
    # compile() downgrades jit_compile=True to False when any layer cannot be
    # jit-compiled; "auto" is always False for TensorFlow on a CPU-only machine.
    model.compile(optimizer="adam", loss="categorical_crossentropy", jit_compile=True)
    assert model.jit_compile
    # The check can fail: Keras's own RandomCrop switches jit off for the model.
    control = keras.Sequential([keras.Input((32, 32, 3)), layers.RandomCrop(32, 32),
                                layers.GlobalAveragePooling2D(), layers.Dense(100)])
    with pytest.warns(UserWarning, match="jit_compile"):
        control.compile(optimizer="adam", loss="categorical_crossentropy", jit_compile=True)
    assert not control.jit_compile


@pytest.mark.skipif(keras.backend.backend() not in ("tensorflow", "jax"),
                    reason="XLA compiles on the TensorFlow and JAX backends")
@pytest.mark.slow
def test_random_crop_flip_trains_under_xla():
    # A tiny model so that XLA compiles quickly on a CPU.
    model = keras.Sequential([keras.Input((32, 32, 3)), RandomCropFlip(seed=0),
                              layers.Conv2D(4, 3), layers.GlobalAveragePooling2D(),
                              layers.Dense(10, activation="softmax")])
    model.compile(optimizer="sgd", loss="categorical_crossentropy", jit_compile=True)
    assert model.jit_compile
    x = np.random.default_rng(3).uniform(size=(8, 32, 32, 3)).astype("float32")
    loss = model.train_on_batch(x, np.eye(10)[np.arange(8)])
    assert np.isfinite(loss)


@pytest.mark.parametrize("suffix", [".h5", ".keras"])
def test_resnet9_round_trips_through_a_file(tmp_path, suffix):
    model = build_resnet9(width=0.0625, seed=0)
    rng = np.random.default_rng(4)
    # Non-default BatchNorm statistics, so that they too must survive the trip.
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            shape = layer.moving_mean.shape
            layer.moving_mean.assign(rng.normal(size=shape).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, size=shape).astype("float32"))
    path = tmp_path / f"resnet9{suffix}"
    model.save(path)
    loaded = load_model(path)  # safe mode: only the registered custom layer
    assert isinstance(loaded.get_layer("augment"), RandomCropFlip)
    assert loaded.get_layer("augment").padding == 4
    x = rng.uniform(size=(4, 32, 32, 3)).astype("float32")
    expected = np.asarray(model(x, training=False))
    np.testing.assert_allclose(np.asarray(loaded(x, training=False)), expected,
                               rtol=1e-5, atol=1e-6)
