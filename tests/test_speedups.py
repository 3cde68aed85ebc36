"""The cpu recipe's optional speed-ups: patch whitening, progressive resizing, and the
BatchNorm momentum, as options of train_model."""

import json

import cv2
import numpy as np
import pytest

from helpers import run_main


def smooth_images(n=200, seed=0):
    """uint8 images whose neighbouring pixels are correlated, as photographs' are."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
    images = np.stack([cv2.resize(image, (32, 32), interpolation=cv2.INTER_LINEAR)
                       for image in coarse])
    return np.clip(images + rng.integers(-32, 33, images.shape), 0, 255).astype(np.uint8)


# --- Patch whitening ------------------------------------------------------------------------

def test_whitening_layer_decorrelates_the_patches_it_sees():
    """After fit_whitening, the frozen layer's 12 outputs over the training images have
    (nearly) the identity covariance, though the raw 2x2 patches are strongly correlated;
    the layer halves the resolution in place of the stem's stride."""
    import keras

    from network.model_utils import build_resnet9, fit_whitening

    images = smooth_images()
    model = build_resnet9(width=0.125, stem_stride=2, whiten=True, augment=False)
    fit_whitening(model, images)
    layer = model.get_layer("whiten")
    assert not layer.trainable and layer.strides == (2, 2)
    assert model.get_layer("prep_conv").strides == (1, 1)
    out = keras.Model(model.inputs, layer.output).predict(images, verbose=0)
    assert out.shape == (len(images), 16, 16, 12)
    covariance = np.cov(out.reshape(-1, 12), rowvar=False)
    np.testing.assert_allclose(covariance, np.eye(12), atol=0.05)
    raw = images[:, :2, :2].reshape(len(images), -1).astype(float)
    assert np.corrcoef(raw, rowvar=False)[0, 3] > 0.5  # what it had to undo


def test_model_without_whitening_is_left_as_it_is():
    from network.model_utils import build_resnet9, fit_whitening

    model = build_resnet9(width=0.125, stem_stride=2, augment=False)
    before = [w.copy() for w in model.get_weights()]
    fit_whitening(model, smooth_images(20))
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))


# --- Progressive resizing ------------------------------------------------------------------

class FakeClock:
    def __init__(self, budget_s):
        self.budget_s, self.now = budget_s, 0.0

    def spent(self):
        return self.now

    def left(self):
        return self.budget_s - self.now


def test_batches_are_small_for_the_first_share_of_the_budget_then_full_size():
    from network.training.resizing import ProgressiveImages

    images = smooth_images(50)
    labels = np.arange(50)
    clock = FakeClock(100.0)
    batches = ProgressiveImages(images, labels, 16, low_res=24, share=0.4, clock=clock, seed=1)
    assert len(batches) == 4
    first, _ = batches[0]  # Keras's first look fixes nothing: full size
    assert first.shape[1:] == (32, 32, 3)
    x, y = batches[1]
    assert x.shape == (16, 24, 24, 3) and x.dtype == np.uint8
    # Each image travels with its own label: the batch is the resized rows of those labels.
    expected = np.stack([cv2.resize(images[i], (24, 24), interpolation=cv2.INTER_AREA)
                         for i in y])
    np.testing.assert_array_equal(x, expected)
    clock.now = 40.0  # 40 % of the budget spent: full size from here on
    x, y = batches[3]
    assert x.shape == (2, 32, 32, 3)
    np.testing.assert_array_equal(x, images[y])
    seen = np.concatenate([batches[i][1] for i in range(4)])
    assert sorted(seen) == list(range(50))  # an epoch is every image once


def test_without_a_clock_the_share_counts_epochs_from_a_resumed_one():
    from network.training.resizing import ProgressiveImages

    batches = ProgressiveImages(smooth_images(8), np.arange(8), 4, low_res=16, share=0.5,
                                epochs=4, initial_epoch=1)
    batches[0]
    assert batches[1][0].shape[1] == 16      # epoch 2 of 4: the first half
    batches.on_epoch_end()
    assert batches[1][0].shape[1] == 32      # epoch 3 of 4


def test_first_epoch_note_expects_a_low_resolution_epoch_to_cost_less(capsys):
    """The plan timed full-size steps: a 24-pixel first epoch that takes 56 % of the
    planned time is on plan, and one far off counts the full-size epochs after the
    low-resolution share as dearer."""
    from network.training.callbacks import Progress
    from network.training.resizing import relative_cost

    assert relative_cost(24) == pytest.approx(0.5625)
    clock = FakeClock(1000.0)
    clock.now = 60.0
    progress = Progress(None, clock, planned_epoch_s=100.0, low_res=(0.5625, 0.5))
    progress.on_epoch_begin(0)
    progress.last = 56.0
    progress.first_epoch_note(0)
    assert capsys.readouterr().out == ""
    progress.last = 30.0  # 440 s at 24 px: 14.7 epochs; then 500 s of 53 s ones: 9.4
    progress.first_epoch_note(0)
    out = capsys.readouterr().out
    assert "not the ~56 s" in out and "about 24 more epochs fit" in out
    clock.now = 700.0  # past the share (a resumed run): a full-size epoch, as planned
    progress.on_epoch_begin(1)
    progress.last = 30.0
    progress.first_epoch_note(1)
    out = capsys.readouterr().out
    assert "not the ~2 min" in out and "about 10 more epochs fit" in out


@pytest.mark.slow
def test_cpu_recipe_with_every_speed_up_trains_and_its_model_loads(fake_data, tmp_path, capsys):
    """--whiten --low-res 16 --bn-momentum 0.6 --label-smoothing 0.1 --crop-padding 3: trains,
    records the settings, and saves a model that takes 32-pixel images (its size is left
    open) and loads with the lab's checks."""
    from network.data_utils import load_cifar100
    from network.model_utils import load_model, whitening_kernel
    from network.train_model import main, split_train_val

    out, model_path = tmp_path / "reports", tmp_path / "models" / "best_model.h5"
    code, stdout, err = run_main(main, [
        "--recipe", "cpu", "--epochs", 2, "--width", 0.125, "--subset", 300,
        "--batch-size", 64, "--whiten", "--low-res", 16, "--low-res-share", 0.5,
        "--bn-momentum", 0.6, "--label-smoothing", 0.1, "--crop-padding", 3,
        "--allow-md5-mismatch", "--no-show",
        "--data-dir", fake_data, "--output-dir", out, "--model-path", model_path], capsys)
    assert code == 0, err[-3000:]
    settings = json.loads((out / "train_summary.json").read_text())["settings"]
    assert (settings["whiten"], settings["low_res"], settings["low_res_share"],
            settings["bn_momentum"], settings["label_smoothing"],
            settings["crop_padding"]) == (True, 16, 0.5, 0.6, 0.1, 3)
    model = load_model(model_path)
    assert model.get_layer("prep_bn").momentum == 0.6
    assert model.get_layer("augment").padding == 3
    data = load_cifar100(fake_data, allow_md5_mismatch=True)  # the run's training images
    (train, _), _ = split_train_val(data.x_train[:300], data.y_train[:300], 0.02, 42)
    np.testing.assert_allclose(model.get_layer("whiten").get_weights()[0],
                               whitening_kernel(train), rtol=1e-4, atol=1e-4)  # fitted, saved
    images = np.zeros((2, 32, 32, 3), dtype=np.uint8)
    assert model.predict(images, verbose=0).shape == (2, 100)
