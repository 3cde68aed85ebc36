"""The report's figures as they stand on a printed page: legible text, honest scales."""

import matplotlib
import numpy as np
import pandas as pd
import pytest

from fake_cifar import COARSE_NAMES, FINE_NAMES, FINE_TO_COARSE
from network.analysis import explain, metrics
from network.report.gather import PRINT_WIDTH_CM

matplotlib.use("Agg")
PRINTED_IN = PRINT_WIDTH_CM / 2.54
MIN_PT = 9


@pytest.fixture
def drawn(monkeypatch):
    """The figures the plot functions save (still saved as PNG files)."""
    figures = []

    def keep(save):
        def saving(fig, path, show=False):
            figures.append(fig)
            save(fig, path, show)
        return saving

    monkeypatch.setattr(metrics, "save_figure", keep(metrics.save_figure))
    monkeypatch.setattr(explain, "save_figure", keep(explain.save_figure))
    return figures


def renderer_of(fig):
    """A renderer for a saved (and closed) figure."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer()


def smallest_printed_pt(fig):
    """The smallest text of ``fig`` in points once it is shrunk to the printed page."""
    renderer = renderer_of(fig)
    width_in = fig.get_tightbbox(renderer).width      # as saved (bbox_inches="tight")
    scale = min(1.0, PRINTED_IN / width_in)
    return min(t.get_fontsize() for t in drawn_texts(fig)) * scale


def drawn_texts(fig):
    """The texts a figure shows (not the tick labels of axes switched off)."""
    texts = list(fig.texts) + ([fig._suptitle] if fig._suptitle else [])
    for ax in fig.axes:
        texts += [ax.title, *ax.texts]
        if ax.axison:
            texts += [ax.xaxis.label, ax.yaxis.label, *ax.get_xticklabels(),
                      *ax.get_yticklabels()]
        if ax.get_legend():
            texts += ax.get_legend().get_texts()
    return [t for t in texts if t.get_visible() and t.get_text()]


def test_training_curves_fit_the_page(drawn, tmp_path):
    history = pd.DataFrame({"epoch": [1, 2], "loss": [4.6, 4.5], "accuracy": [0.01, 0.03],
                            "val_loss": [4.6, 4.55], "val_accuracy": [0.01, 0.02]})
    metrics.plot_history(history, tmp_path / "curves.png")
    fig = drawn[0]
    assert smallest_printed_pt(fig) >= MIN_PT
    assert fig.get_size_inches()[1] < 4  # a strip, not a page, for two epochs


def test_one_epoch_has_one_tick(drawn, tmp_path):
    history = pd.DataFrame({"epoch": [1], "loss": [4.6], "accuracy": [0.01]})
    metrics.plot_history(history, tmp_path / "curves.png")
    for ax in drawn[0].axes:
        assert [t.get_text() for t in ax.get_xticklabels()] == ["1"]


def test_test_samples_and_confident_mistakes_are_legible(drawn, tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
    longest = ["aquarium_fish", "sweet_pepper"] * 8
    metrics.plot_test_samples(images, longest, longest[::-1], tmp_path / "s.png")
    labels, predicted = np.arange(16) % 2, (np.arange(16) + 1) % 2
    explain.plot_confident_mistakes(images, np.arange(16), labels, predicted,
                                    np.linspace(0.99, 0.5, 16), longest, tmp_path / "m.png")
    for fig in drawn:
        assert smallest_printed_pt(fig) >= MIN_PT
        renderer = renderer_of(fig)
        titles = [ax.title.get_window_extent(renderer) for ax in fig.axes if ax.get_title()]
        # Neighbouring titles never overlap, even with the longest class names.
        for left, right in zip(titles, titles[1:]):
            if abs(left.y0 - right.y0) < 1:
                assert left.x1 <= right.x0


def test_confusion_matrix_parts_are_legible(drawn, tmp_path):
    rng = np.random.default_rng(1)
    y_true = rng.integers(0, 100, 2000)
    cm = np.zeros((100, 100), dtype=int)
    np.add.at(cm, (y_true, np.where(rng.random(2000) < 0.5, y_true, 7)), 1)
    local = np.where(FINE_TO_COARSE < 9, FINE_TO_COARSE, -1)
    metrics.plot_confusion_matrix(cm, FINE_NAMES, COARSE_NAMES[:9], local, tmp_path / "c.png",
                                    cols=3, block=(2.2, 2.2), title_size=None)
    fig = drawn[0]
    assert smallest_printed_pt(fig) >= MIN_PT
    assert len([ax for ax in fig.axes if ax.get_title()]) == 9
    assert not fig.get_suptitle()


def test_own_photo_chart(drawn, tmp_path):
    photo = np.random.default_rng(2).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    heat = np.zeros((32, 32), dtype=np.float32)
    heat[:16, :16] = 0.45                       # hiding the top left costs 45 points
    probs = np.array([0.6, 0.2, 0.1, 0.05, 0.01])
    names = ["apple", "pear", "orange", "sweet_pepper", "bowl"]
    explain.plot_explained_top5(photo, heat, names, probs, tmp_path / "p.png", title="cat.jpg")
    fig = drawn[0]
    assert smallest_printed_pt(fig) >= MIN_PT
    titles = [ax.get_title() for ax in fig.axes]
    assert "cat.jpg" in titles and not any("/" in t for t in titles)
    chart = next(ax for ax in fig.axes if ax.get_title() == "Top-5 prediction")
    assert chart.get_xlim() == (0, 100) and "%" in chart.get_xlabel()
    assert [round(b.get_width(), 6) for b in chart.patches] == [60, 20, 10, 5, 1]
    scale = next(ax for ax in fig.axes if "drop" in ax.get_xlabel().lower())
    assert scale.get_xlim() == pytest.approx((0, 60))  # up to the first class's probability
    assert not any("Nothing to show" in t.get_text() for ax in fig.axes for t in ax.texts)


def test_a_model_at_chance_has_nothing_to_show(drawn, tmp_path):
    """Every class about 1 %: the tiny drops are not stretched into strong colours."""
    photo = np.full((64, 64, 3), 128, dtype=np.uint8)
    heat = np.random.default_rng(3).random((32, 32)).astype(np.float32) * 0.002
    probs = np.array([0.012, 0.011, 0.011, 0.0105, 0.0101])
    explain.plot_explained_top5(photo, heat, ["a", "b", "c", "d", "e"], probs,
                                tmp_path / "p.png", title="chance.png")
    texts = [t.get_text() for ax in drawn[0].axes for t in ax.texts]
    assert any(t.startswith("Nothing to show") for t in texts)


def test_heat_overlay_is_scaled_to_its_maximum():
    photo = np.full((20, 20, 3), 128, dtype=np.uint8)
    small = np.full((32, 32), 0.05, dtype=np.float32)
    # A 5-point drop on a 0-60 scale stays cool; the same drop as the scale's top is hot.
    cool = explain.overlay_heatmap(photo, small, vmax=0.6)[10, 10]
    hot = explain.overlay_heatmap(photo, small, vmax=0.05)[10, 10]
    assert cool[2] > cool[0] and hot[0] > hot[2]
