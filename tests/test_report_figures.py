"""The report's figures as they stand on a printed page: legible text, honest scales."""

import matplotlib
import numpy as np
import pandas as pd
import pytest

from conftest import figure_texts
from fake_cifar import COARSE_NAMES, FINE_NAMES, FINE_TO_COARSE
from network.analysis import explain, metrics
from network.report.style import PRINT_WIDTH_CM
from network.report.text import ClassNames, Words, catalogue

matplotlib.use("Agg")
PRINTED_IN = PRINT_WIDTH_CM / 2.54
MIN_PT = 9


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


# --- In the report's language --------------------------------------------------------

UK, EN = Words("uk"), Words("en")
UK_NAMES = ClassNames("uk")


def english_words(texts):
    """The English figure words (of en.json) that appear in ``texts``."""
    words = {line.split(":")[0].strip() for key, text in catalogue("en").items()
             if key.startswith("figure.") and isinstance(text, str)
             for line in text.split("\n") if len(line.split(":")[0].strip()) > 3}
    words.discard("{verdict}")
    return sorted(w for w in words if "{" not in w and any(w in t for t in texts))


def test_ukrainian_figures_take_every_text_from_the_catalogue(drawn, tmp_path):
    """Each figure the report embeds, drawn in Ukrainian: its texts are uk.json's
    (with the Ukrainian class names given), never the English ones."""
    history = pd.DataFrame({"epoch": [1, 2], "loss": [4.6, 4.5], "accuracy": [0.01, 0.03],
                            "val_loss": [4.6, 4.55], "val_accuracy": [0.01, 0.02]})
    metrics.plot_history(history, tmp_path / "curves.png", w=UK)
    images = np.zeros((2, 32, 32, 3), dtype=np.uint8)
    shown = [UK_NAMES.show(n) for n in ("apple", "sweet_pepper")]
    metrics.plot_test_samples(images, shown, shown[::-1][:1] + shown[1:], tmp_path / "s.png",
                              w=UK)
    explain.plot_confident_mistakes(images, [0, 1], [0, 1], [1, 0], [0.9, 0.8],
                                    shown, tmp_path / "m.png", w=UK)
    photo = np.full((64, 64, 3), 128, dtype=np.uint8)
    explain.plot_explained_top5(photo, np.zeros((32, 32), np.float32), shown * 2 + shown[:1],
                                np.array([0.3, 0.2, 0.1, 0.05, 0.01]), tmp_path / "o.png",
                                title="фото.jpg", w=UK)
    local = np.where(FINE_TO_COARSE < 1, 0, -1)
    metrics.plot_confusion_matrix(np.eye(100, dtype=int), FINE_NAMES, COARSE_NAMES[:1], local,
                                  tmp_path / "c.png", cols=3, block=(2.2, 2.2),
                                  title_size=None, w=UK)
    from network.analysis.calibration import plot_reliability, reliability_bins
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(5), 50)
    plot_reliability(reliability_bins(probs, probs, rng.integers(0, 5, 50), temperature=1.5),
                     tmp_path / "r.png", w=UK)
    curves, samples, mistakes, own, confusion, reliability = map(figure_texts, drawn)
    for texts in (curves, samples, mistakes, own, confusion, reliability):
        assert not english_words(texts), english_words(texts)

    assert UK("figure.curves.title") in curves and UK("figure.curves.epoch") in curves
    assert UK("figure.curves.validation_loss") in curves
    verdicts = [t.split("\n")[0] for t in samples if "\n" in t]
    assert verdicts == [f"\u2717 {UK('figure.samples.wrong')}",     # apple as sweet pepper
                        f"\u2713 {UK('figure.samples.right')}"]
    assert any(f"Справжній: {shown[0]}" in t for t in samples)
    assert any(t.startswith("Справжній: яблуко\nПередбачено: солодкий") for t in mistakes)
    assert any("80,0\u00a0%" in t for t in mistakes)               # the report's number style
    assert UK("figure.top5.title") in own and UK("figure.top5.drop") in own
    assert UK("figure.top5.where", name=shown[0]) in own
    assert UK("figure.top5.nothing", count=1) in own
    assert "30,0\u00a0%" in own and "фото.jpg" in own
    assert UK("figure.confusion.elsewhere") in confusion
    assert UK("figure.confusion.scale") in confusion
    assert UK("figure.reliability.title") in reliability
    assert any(t.startswith("Після (T = 1,50): ECE") for t in reliability)


def test_english_figures_are_the_scripts_own(drawn, tmp_path):
    """Without a language the scripts draw English, from en.json."""
    images = np.zeros((1, 32, 32, 3), dtype=np.uint8)
    metrics.plot_test_samples(images, ["cat"], ["dog"], tmp_path / "s.png")
    texts = figure_texts(drawn[0])
    assert EN("figure.samples.title") in texts
    assert any(t.startswith("\u2717 wrong\nTrue: cat\nPredicted: dog") for t in texts)
