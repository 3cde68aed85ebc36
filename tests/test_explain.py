"""Occlusion heat maps (on every backend), overlays, and the most confident mistakes."""

import numpy as np
import pytest

from fake_cifar import FINE_NAMES, FINE_TO_COARSE
from network.analysis.explain import (
    confident_mistakes,
    mistakes_summary,
    occlusion_map,
    occlusion_masks,
    overlay_heatmap,
    plot_confident_mistakes,
    plot_explained_top5,
)
from network.core.errors import LabError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

def png_size(path):
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC)
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


class CountingModel:
    """Wraps a model's predict to record the size of every batch it is given."""

    def __init__(self, model):
        self.model, self.batches = model, []

    def predict(self, x, **kwargs):
        self.batches.append(len(x))
        return self.model.predict(x, **kwargs)


@pytest.fixture(scope="module")
def tiny_model():
    """An untrained 32x32x3 -> 100 classifier: every pixel matters a little."""
    import keras

    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Flatten(),
                             keras.layers.Dense(100, activation="softmax")])


def test_masks_cover_every_pixel():
    masks = occlusion_masks(32, 32, patch=8, stride=2)
    assert masks.shape == (169, 32, 32)
    assert (masks.sum(axis=(1, 2)) == 64).all()
    assert masks.any(axis=0).all()
    # A stride that does not divide the image still reaches the last row and column.
    assert occlusion_masks(32, 32, patch=8, stride=5).any(axis=0).all()
    with pytest.raises(LabError, match="does not fit"):
        occlusion_masks(32, 32, patch=40)


def test_heat_map_is_one_cheap_batch_of_the_input_size(tiny_model):
    image = np.random.default_rng(1).random((32, 32, 3), dtype=np.float32)
    counting = CountingModel(tiny_model)
    heat = occlusion_map(counting, image, class_index=7)
    assert counting.batches == [170]  # 169 occluded copies + the original, one call
    assert heat.shape == (32, 32) and heat.dtype == np.float32
    assert heat.min() >= 0 and heat.max() == pytest.approx(1.0)
    assert heat.std() > 0.05  # not constant
    raw = occlusion_map(tiny_model, image, class_index=7, normalize=False)
    np.testing.assert_allclose(raw / raw.max(), heat, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["tensorflow", "jax", "torch"])
def test_heat_map_points_where_the_model_looks(backend, backend_check):
    """conftest's QUADRANT_MODEL sees only the top-right quadrant of the image; its map,
    computed on each backend (a step of ``backend_checks``), must light up there."""
    result = backend_check["heat"]
    assert result.returncode == 0, result.stderr[-3000:]
    payload = backend_check["heat_map"]
    assert payload["backend"] == backend
    heat = np.array(payload["heat"])
    assert heat.shape == (32, 32)
    row, col = np.unravel_index(heat.argmax(), heat.shape)
    assert row < 16 <= col  # the hottest pixel is in the seen quadrant
    assert heat[:16, 16:].sum() / heat.sum() > 0.8
    # Patches that cannot touch the quadrant change nothing.
    assert heat[24:, :].max() < 1e-3 and heat[:, :8].max() < 1e-3


def test_overlay_has_the_photo_size_and_marks_the_hot_region():
    photo = np.full((50, 80, 3), 128, dtype=np.uint8)
    heat = np.zeros((32, 32), dtype=np.float32)
    heat[:16, :16] = 1.0
    overlay = overlay_heatmap(photo, heat)
    assert overlay.shape == photo.shape and overlay.dtype == np.uint8
    hot, cold = overlay[5, 5], overlay[45, 75]
    assert hot[0] > cold[0] + 40 and cold[2] > hot[2] + 40  # red where hot, blue where cold
    with pytest.raises(LabError, match="RGB"):
        overlay_heatmap(photo[:, :, 0], heat)


def test_explained_top5_figure(tmp_path):
    photo = np.random.default_rng(2).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    heat = np.random.default_rng(3).random((32, 32)).astype(np.float32)
    path = tmp_path / "photo_top5.png"
    plot_explained_top5(photo, heat, ["apple", "pear", "orange", "sweet_pepper", "bowl"],
                        np.array([0.6, 0.2, 0.1, 0.05, 0.01]), path, title="photo.jpg")
    width, height = png_size(path)
    assert 1100 < width < 1600 and 300 < height < 550  # one row, the report's width


# Six images: 0, 3 and 5 are right; the wrong ones with confidence 0.7, 0.9, 0.9.
Y_TRUE = np.array([0, 1, 2, 3, 4, 5])
Y_PRED = np.array([0, 21, 7, 3, 45, 5])
CONFIDENCE = np.array([0.99, 0.7, 0.9, 0.95, 0.9, 0.5])


def test_confident_mistakes_lists_only_wrong_answers_most_confident_first():
    worst = confident_mistakes(Y_TRUE, Y_PRED, CONFIDENCE, k=16)
    np.testing.assert_array_equal(worst, [2, 4, 1])  # ties keep the images' order
    assert (Y_TRUE[worst] != Y_PRED[worst]).all()
    np.testing.assert_array_equal(confident_mistakes(Y_TRUE, Y_PRED, CONFIDENCE, k=2), [2, 4])
    assert len(confident_mistakes(Y_TRUE, Y_TRUE, CONFIDENCE)) == 0
    with pytest.raises(LabError, match="do not match"):
        confident_mistakes(Y_TRUE, Y_PRED, CONFIDENCE[:3])


def test_confident_mistakes_on_many_images():
    rng = np.random.default_rng(4)
    y_true, y_pred = rng.integers(0, 100, 5000), rng.integers(0, 100, 5000)
    confidence = rng.random(5000)
    worst = confident_mistakes(y_true, y_pred, confidence, k=16)
    assert len(worst) == 16 and (y_true[worst] != y_pred[worst]).all()
    assert (np.diff(confidence[worst]) <= 0).all()
    wrong = confidence[y_true != y_pred]
    assert confidence[worst[-1]] == np.sort(wrong)[-16]  # exactly the top 16


def test_mistakes_summary_counts_superclass_slips():
    # FINE_TO_COARSE is i % 20: 21 shares class 1's superclass, 7 and 45 do not share 2's and 4's.
    summary = mistakes_summary(Y_TRUE, Y_PRED, [2, 4, 1], FINE_TO_COARSE)
    assert summary["mistakes"] == 3 and summary["same_superclass"] == 1
    assert summary["same_superclass_share"] == pytest.approx(1 / 3)
    assert summary["chance_share"] == pytest.approx(4 / 99)
    empty = mistakes_summary(Y_TRUE, Y_PRED, [], FINE_TO_COARSE)
    assert empty["mistakes"] == 0 and empty["same_superclass_share"] == 0.0


def test_confident_mistakes_grid(tmp_path):
    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, (200, 32, 32, 3), dtype=np.uint8)
    y_true, y_pred = rng.integers(0, 100, 200), rng.integers(0, 100, 200)
    confidence = rng.random(200)
    worst = confident_mistakes(y_true, y_pred, confidence)
    path = tmp_path / "confident_mistakes.png"
    plot_confident_mistakes(images, worst, y_true, y_pred, confidence, FINE_NAMES, path)
    width, height = png_size(path)
    assert height > width > 1000  # four rows of four
    plot_confident_mistakes(images, [], y_true, y_pred, confidence, FINE_NAMES, path)
    assert png_size(path)[1] < height  # no mistakes: one row with a note
