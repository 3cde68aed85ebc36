"""Calibration: temperature fitting, ECE, the reliability diagram, calibration.json."""

import json

import numpy as np
import pytest

from network.analysis.calibration import (
    apply_temperature,
    bin_statistics,
    calibrate,
    calibration_path,
    calibration_summary,
    cross_fitted,
    expected_calibration_error,
    fit_temperature,
    load_temperature,
    reliability_diagram,
    save_temperature,
    temperature_fit,
)
from network.analysis.metrics import cross_entropy, evaluate_probabilities
from network.core.errors import LabError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def synthetic(n=20000, classes=10, scale=2.0, seed=0):
    """Logits, and labels drawn from softmax(logits): softmax(logits) is calibrated."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, scale, size=(n, classes))
    cumulative = softmax(logits).cumsum(axis=1)
    labels = (cumulative < rng.random(n)[:, None]).sum(axis=1).clip(0, classes - 1)
    return logits, labels


@pytest.mark.parametrize("true_temperature", [3.0, 0.4])
def test_fit_temperature_recovers_a_known_temperature(true_temperature):
    # softmax(z * T) is over-confident for T > 1 and under-confident for T < 1;
    # dividing its logits by T restores the calibrated softmax(z).
    logits, labels = synthetic()
    probs = softmax(logits * true_temperature).astype(np.float32)
    assert fit_temperature(probs, labels) == pytest.approx(true_temperature, rel=0.05)


def test_fit_temperature_stays_in_range_and_says_why_at_a_bound():
    # Always right: sharper is always better, up to the lower bound.
    probs = np.array([[0.9, 0.1], [0.2, 0.8]])
    assert fit_temperature(probs, [0, 1]) == 0.05
    fit = temperature_fit(probs, [0, 1])
    assert fit.bound == "lower" and fit.accuracy == 1.0
    assert "lower bound of its range (0.05)" in fit.reason and "too few" in fit.reason
    # A model at chance: its confidence says nothing, so the flattest fits best.
    rng = np.random.default_rng(0)
    chance = rng.dirichlet(np.ones(100), size=500).astype(np.float32)
    fit = temperature_fit(chance, rng.integers(0, 100, 500))
    assert fit.temperature == 20.0 and fit.bound == "upper"
    assert "upper bound of its range (20)" in fit.reason and "chance 1%" in fit.reason
    # Inside the range: no bound, no reason.
    logits, labels = synthetic(n=2000)
    fit = temperature_fit(softmax(logits * 2), labels)
    assert fit.bound is None and fit.reason is None and 1.5 < fit.temperature < 2.5


def test_apply_temperature_is_stable_and_keeps_the_prediction():
    probs = np.array([[1.0, 0.0, 0.0], [0.5, 0.3, 0.2], [1e-30, 1 - 1e-30, 0.0]],
                     dtype=np.float32)
    for temperature in (0.05, 1.0, 20.0):
        out = apply_temperature(probs, temperature)
        assert out.dtype == np.float32
        assert np.isfinite(out).all()
        np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-6)
        np.testing.assert_array_equal(out.argmax(axis=1), probs.argmax(axis=1))
    np.testing.assert_allclose(apply_temperature(probs[1:2], 1.0), probs[1:2], rtol=1e-6)
    softer = apply_temperature(probs[1:2], 2.0)[0]
    assert softer[0] < 0.5 and softer[2] > 0.2  # T > 1 moves toward uniform
    with pytest.raises(LabError, match="positive"):
        apply_temperature(probs, 0.0)


def test_ece_by_hand():
    # Two images in the 0.8-0.867 bin, one right: |0.5 - 0.85| = 0.35 for half the
    # images; two in the top bin, both right: |1 - 0.95| = 0.05 for the other half.
    probs = np.array([[0.84, 0.16], [0.14, 0.86], [0.95, 0.05], [0.05, 0.95]])
    labels = np.array([0, 0, 0, 1])
    assert expected_calibration_error(probs, labels) == pytest.approx((0.35 + 0.05) / 2)
    counts, accuracy, confidence = bin_statistics(probs, labels)
    assert counts.sum() == 4 and counts[12] == 2 and counts[14] == 2
    assert accuracy[12] == pytest.approx(0.5) and confidence[14] == pytest.approx(0.95)
    assert np.isnan(accuracy[0])  # empty bin
    # Only the top probability and whether it was right count: the first image
    # wrong instead of the second gives the same bins.
    assert expected_calibration_error(probs, [1, 1, 0, 1]) == pytest.approx(0.2)


def test_ece_small_when_calibrated_large_when_over_confident_and_fixed_by_temperature():
    logits, labels = synthetic()
    assert expected_calibration_error(softmax(logits), labels) < 0.02
    over = softmax(logits * 3)
    before = expected_calibration_error(over, labels)
    assert before > 0.15
    calibrated = apply_temperature(over, fit_temperature(over, labels))
    assert expected_calibration_error(calibrated, labels) < 0.02
    assert cross_entropy(calibrated, labels) < cross_entropy(over, labels)
    np.testing.assert_array_equal(calibrated.argmax(axis=1), over.argmax(axis=1))


def test_cross_fitted_calibration_on_unseen_halves():
    logits, labels = synthetic(n=6000)
    under = softmax(logits / 2.5)  # like the label-smoothed ResNet: too unsure
    calibrated, temperatures = cross_fitted(under, labels, folds=2, seed=1)
    assert len(temperatures) == 2
    assert all(t == pytest.approx(0.4, rel=0.1) for t in temperatures)
    assert expected_calibration_error(calibrated, labels) < 0.03
    assert expected_calibration_error(under, labels) > 0.1


def test_calibration_summary_for_an_evaluation(tmp_path):
    logits, labels = synthetic(n=4000)
    over = softmax(logits * 2).astype(np.float32)
    path = tmp_path / "reliability.png"
    summary = calibration_summary(over, labels, path)
    assert path.read_bytes().startswith(PNG_MAGIC)
    assert summary["images"] == 4000 and summary["bins"] == 15
    assert summary["temperature"] == pytest.approx(2.0, rel=0.1)
    assert len(summary["fold_temperatures"]) == 2
    assert summary["ece_calibrated"] < 0.03 < 0.1 < summary["ece"]
    assert summary["nll_calibrated"] < summary["nll"]
    json.dumps(summary)  # goes into metrics.json as it is


def test_the_test_loss_and_the_calibration_nll_are_one_number():
    """metrics.json reports both; a true class given almost nothing (float32 can hold
    1e-30) must cost the same in each: the floor of Keras's own loss, 1e-7."""
    probs = np.array([[0.7, 0.2, 0.1, 0, 0, 0], [1e-30, 0.5, 0.5, 0, 0, 0],
                      [0.1, 0.8, 0.1, 0, 0, 0], [0.2, 0.2, 0.4, 0.1, 0.1, 0]], dtype=np.float32)
    labels = np.array([0, 0, 1, 2])
    expected = -(np.log(0.7) + np.log(1e-7) + np.log(0.8) + np.log(0.4)) / 4
    loss = evaluate_probabilities(probs, labels, labels, np.arange(6))["loss"]
    nll = calibration_summary(probs, labels)["nll"]
    assert loss == nll == pytest.approx(expected, rel=1e-6)


def test_bad_inputs_are_lab_errors():
    with pytest.raises(LabError, match="labels"):
        fit_temperature(np.full((3, 2), 0.5), [0, 1])
    with pytest.raises(LabError, match="0..1"):
        expected_calibration_error(np.full((2, 2), 0.5), [0, 2])
    with pytest.raises(LabError, match="shape"):
        expected_calibration_error(np.zeros((0, 5)), [])


def test_reliability_diagram_writes_a_png(tmp_path):
    logits, labels = synthetic(n=2000)
    over = softmax(logits * 3)
    path = tmp_path / "reliability.png"
    reliability_diagram(over, apply_temperature(over, 3.0), labels, path, temperature=3.0)
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC)
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert 500 < width < 1200 and 500 < height < 1200  # fits the report at full size
    assert not list(tmp_path.glob(".*partial*"))


def test_temperature_round_trip_beside_the_model(tmp_path):
    model = tmp_path / "models" / "best_model.h5"
    model.parent.mkdir()
    assert load_temperature(model) == 1.0  # no calibration.json: probabilities unchanged
    model.write_bytes(b"weights")
    save_temperature(model, np.float32(0.62), fitted_on="validation", images=500)
    payload = json.loads(calibration_path(model).read_text())
    assert calibration_path(model) == model.parent / "calibration.json"
    assert payload["fitted_on"] == "validation" and payload["images"] == 500
    assert payload["model_file"] == "best_model.h5"
    assert load_temperature(model) == pytest.approx(0.62)


def test_a_temperature_of_another_model_is_refused(tmp_path):
    model = tmp_path / "best_model.h5"
    model.write_bytes(b"weights")
    save_temperature(model, 2.0)
    model.write_bytes(b"retrained weights")
    with pytest.raises(LabError, match="another model"):
        load_temperature(model)


@pytest.mark.parametrize("content", ["{not json", "[1.5]", '{"temperature": -1}',
                                     '{"temperature": "2"}', '{"temperature": NaN}',
                                     '{"temperature": true}', '{"T": 2.0}'])
def test_damaged_calibration_file_is_a_lab_error(tmp_path, content):
    model = tmp_path / "best_model.h5"
    calibration_path(model).write_text(content)
    with pytest.raises(LabError, match="damaged"):
        load_temperature(model)


def test_save_refuses_a_meaningless_temperature(tmp_path):
    for bad in (0, -1.0, float("inf"), float("nan"), "warm"):
        with pytest.raises(LabError, match="positive"):
            save_temperature(tmp_path / "best_model.h5", bad)
    assert not calibration_path(tmp_path / "best_model.h5").exists()


def logit_model():
    """A Keras model that turns its input into probabilities with a softmax alone: fed
    logits x 255 (the lab CNN's input is scaled by 1/255), it outputs softmax(logits)."""
    import keras

    return keras.Sequential([keras.Input((10,)), keras.layers.Activation("softmax")])


def test_calibrate_fits_and_saves_beside_the_model(tmp_path, capsys):
    logits, labels = synthetic(n=3000)
    model_path = tmp_path / "best_model.h5"
    temperature = calibrate(logit_model(), (logits * 3 * 255, labels), model_path)
    assert temperature == pytest.approx(3.0, rel=0.05) and temperature == round(temperature, 4)
    assert load_temperature(model_path) == pytest.approx(temperature, abs=1e-4)
    saved = json.loads(calibration_path(model_path).read_text())
    assert saved["fitted_on"] == "validation" and saved["images"] == 3000
    printed = capsys.readouterr().out
    assert printed == f"Calibrated on 3000 held-out images: temperature {temperature:.3f}\n"


def test_calibrate_without_a_hold_out_or_at_chance(tmp_path, capsys):
    model_path = tmp_path / "best_model.h5"
    assert calibrate(logit_model(), (np.zeros((0, 10)), np.zeros(0, int)), model_path) is None
    assert not calibration_path(model_path).exists() and capsys.readouterr().out == ""
    # Logits unrelated to the labels: a model at chance.
    rng = np.random.default_rng(1)
    images, labels = rng.normal(0, 255, size=(400, 10)), rng.integers(0, 10, 400)
    assert calibrate(logit_model(), (images, labels), model_path) == 20.0
    assert load_temperature(model_path) == 20.0  # saved all the same
    # One plain sentence, no temperature or bound that would only puzzle.
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith("The model is hardly better than chance (")
    assert "right on 400 held-out images, chance 10%): train longer" in line
    assert "temperature" not in line and "bound" not in line


def test_a_model_near_chance_is_told_so_in_one_sentence():
    """Below 3x chance the sentence replaces the calibration details; above, they stay."""
    from network.analysis.calibration import chance_sentence, near_chance

    assert near_chance(0.029, 100) and not near_chance(0.03, 100)
    assert chance_sentence(0.012, 100) == (
        "The model is hardly better than chance (1.2% right, chance 1%): train longer "
        "(more epochs, or all the training images) before its confidence means anything.")


def test_evaluation_near_chance_prints_no_ece(capsys, tmp_path):
    from network.evaluate_model import print_summary

    metrics = {"accuracy": 0.012, "loss": 4.6, "top5_accuracy": 0.05,
               "superclass_accuracy": 0.06,
               "calibration": {"ece": 0.0, "ece_calibrated": 0.0, "temperature": 20.0,
                               "fitted_on": "held-out training images"}}
    print_summary(metrics, tmp_path)
    printed = capsys.readouterr().out
    assert "hardly better than chance (1.2% right, chance 1%)" in printed
    assert "ECE" not in printed and "temperature" not in printed
    print_summary({**metrics, "accuracy": 0.4}, tmp_path)
    assert "Calibration error (ECE): 0.0% as trained" in capsys.readouterr().out
