"""evaluate_model: the metrics, the per-class report, the sample grid, bad options."""

import json
import math

import numpy as np
import pytest

from fake_cifar import FINE_NAMES
from helpers import run_main
from network.analysis.metrics import evaluate_probabilities

# Six classes in three superclasses: {0, 1}, {2, 3}, {4, 5}.
FINE_TO_COARSE = np.array([0, 0, 1, 1, 2, 2])
PROBS = np.array([
    [0.50, 0.10, 0.10, 0.10, 0.10, 0.10],  # true 0: right
    [0.60, 0.20, 0.05, 0.05, 0.05, 0.05],  # true 1: wrong, same superclass, in the top 5
    [0.30, 0.25, 0.05, 0.20, 0.10, 0.10],  # true 2: wrong superclass, last of 6
    [0.00, 0.00, 0.00, 0.00, 0.00, 1.00],  # true 5: right, certain
], dtype=np.float32)
Y_TRUE = np.array([0, 1, 2, 5])


def test_evaluate_probabilities_exact_values():
    metrics = evaluate_probabilities(PROBS, Y_TRUE, FINE_TO_COARSE[Y_TRUE], FINE_TO_COARSE)
    assert metrics["images"] == 4
    assert metrics["accuracy"] == pytest.approx(2 / 4)
    assert metrics["top5_accuracy"] == pytest.approx(3 / 4)
    assert metrics["superclass_accuracy"] == pytest.approx(3 / 4)
    expected_loss = -(math.log(0.5) + math.log(0.2) + math.log(0.05) + math.log(1.0)) / 4
    assert metrics["loss"] == pytest.approx(expected_loss, rel=1e-5)


def test_zero_probability_gives_a_finite_loss():
    probs = np.array([[0.0, 1.0, 0, 0, 0, 0]], dtype=np.float32)
    metrics = evaluate_probabilities(probs, [0], FINE_TO_COARSE[[0]], FINE_TO_COARSE)
    assert metrics["loss"] == pytest.approx(-math.log(1e-7), rel=1e-4)
    assert metrics["accuracy"] == 0.0
    assert metrics["superclass_accuracy"] == 1.0  # class 1 shares class 0's superclass


def test_classification_report_uses_the_class_names():
    from network.evaluate_model import classification_tables

    names = ["apple", "aquarium_fish", "baby", "bear", "beaver", "bed"]
    text, table = classification_tables(Y_TRUE, PROBS.argmax(axis=1), names)
    for name in names:
        assert name in text
    assert "Category" not in text
    assert list(table.index[:6]) == names
    assert {"accuracy", "macro avg", "weighted avg"} <= set(table.index)
    assert table.loc["apple", "recall"] == 1.0      # its one image is right
    assert table.loc["aquarium_fish", "recall"] == 0.0
    assert table.loc["bed", "support"] == 1
    assert table.loc["bear", "support"] == 0        # absent classes are still listed


@pytest.mark.parametrize("count", [200, 16, 5])
def test_pick_samples_draws_distinct_images(count):
    from network.evaluate_model import pick_samples

    chosen = pick_samples(count, seed=3)
    assert len(chosen) == min(16, count)
    assert len(set(chosen.tolist())) == len(chosen)
    assert chosen.min() >= 0 and chosen.max() < count
    np.testing.assert_array_equal(chosen, pick_samples(count, seed=3))  # seeded


@pytest.mark.slow
def test_evaluate_grid_shows_16_distinct_test_images(tiny_model, fake_data, tmp_path, capsys,
                                                     monkeypatch):
    """The images handed to the grid are 16 different test images, with their true names."""
    from network.analysis import metrics as analysis_metrics
    from network.data_utils import load_cifar100
    from network.evaluate_model import main

    drawn = {}

    def fake_plot(images, true_names, pred_names, path, show=False):
        drawn.update(images=images, true=true_names, pred=pred_names)
        path.write_bytes(b"")

    monkeypatch.setattr(analysis_metrics, "plot_test_samples", fake_plot)
    code, out, err = run_main(main, ["--model-path", tiny_model, "--data-dir", fake_data,
                                     "--allow-md5-mismatch", "--output-dir", tmp_path,
                                     "--no-show"], capsys)
    assert code == 0, err
    data = load_cifar100(fake_data, download=False, allow_md5_mismatch=True)
    flat = data.x_test.reshape(len(data.x_test), -1)
    indices = [int(np.flatnonzero((flat == image.reshape(-1)).all(axis=1))[0])
               for image in drawn["images"]]
    assert len(indices) == 16 and len(set(indices)) == 16
    assert drawn["true"] == [FINE_NAMES[data.y_test[i]] for i in indices]
    assert set(drawn["pred"]) <= set(FINE_NAMES)

    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["images"] == 200
    assert "tta" not in metrics  # only with --tta
    assert "Superclass accuracy" in out


@pytest.mark.slow
def test_evaluate_subset_larger_than_test_set(tiny_model, fake_data, tmp_path, capsys):
    from network.evaluate_model import main

    code, _, err = run_main(main, ["--model-path", tiny_model, "--data-dir", fake_data,
                                   "--allow-md5-mismatch", "--output-dir", tmp_path,
                                   "--subset", 201, "--no-show"], capsys)
    assert code == 1
    assert "--subset 201 is larger than the 200 test images" in err
    assert not (tmp_path / "metrics.json").exists()


def test_evaluate_subset_zero_is_an_argparse_error(tmp_path, capsys):
    from network.evaluate_model import main

    code, _, err = run_main(main, ["--subset", 0, "--output-dir", tmp_path], capsys)
    assert code == 2
    assert "usage:" in err and "--subset" in err


@pytest.mark.slow
def test_terminal_shows_headline_figures_and_files_not_the_report(tiny_model, fake_data,
                                                                    tmp_path, capsys):
    from network.evaluate_model import OUTPUTS, main

    options = ["--model-path", tiny_model, "--data-dir", fake_data, "--allow-md5-mismatch",
               "--output-dir", tmp_path, "--subset", 50, "--no-show"]
    code, out, err = run_main(main, options, capsys)
    assert code == 0, err
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert f"Accuracy: {metrics['accuracy']:.2%}" in out
    assert "fine_42" not in out and "macro avg" not in out   # 100 rows go to the files
    assert "fine_42" in (tmp_path / "classification_report.txt").read_text()
    for name, _ in OUTPUTS:
        assert f"\n  {name}  " in out, name
    # An untrained model also gets the one "hardly better than chance" sentence, or not,
    # as its few random right answers fall: that line is the model's, not the report's.
    headline = [line for line in out.splitlines() if "hardly better than chance" not in line]
    assert len(headline) <= 12, out

    code, out, err = run_main(main, [*options, "--print-report"], capsys)
    assert code == 0, err
    assert "fine_42" in out and "macro avg" in out


def test_a_mistyped_model_path_is_named(tmp_path, capsys):
    from network.evaluate_model import main

    code, _, err = run_main(main, ["--model-path", tmp_path / "best_modle.h5",
                                   "--output-dir", tmp_path], capsys)
    assert code == 1
    assert err == (f"evaluate_model: error: the model file {tmp_path / 'best_modle.h5'} does "
                   "not exist: check the path given with --model-path\n")
    assert not (tmp_path / "metrics.json").exists()


@pytest.mark.slow
def test_a_model_taking_uint8_images_gets_them_unscaled(fake_data, tmp_path, capsys):
    # ResNet-9 models take 0-255 images and scale them inside; the lab CNN takes 0-1.
    import keras

    from network.data_utils import load_cifar100
    from network.evaluate_model import main

    keras.utils.set_random_seed(1)
    inputs = keras.Input((32, 32, 3), dtype="uint8")
    x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(100, activation="softmax")(x))
    model.save(tmp_path / "uint8.h5")
    code, _, err = run_main(main, ["--model-path", tmp_path / "uint8.h5", "--data-dir", fake_data,
                                   "--allow-md5-mismatch", "--output-dir", tmp_path,
                                   "--subset", 40, "--no-show"], capsys)
    assert code == 0, err
    data = load_cifar100(fake_data, download=False, allow_md5_mismatch=True)
    probs = model.predict(data.x_test[:40], verbose=0)
    expected = evaluate_probabilities(probs, data.y_test[:40], data.coarse_test[:40],
                                      data.fine_to_coarse)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["loss"] == pytest.approx(expected["loss"], rel=1e-5)
    assert metrics["accuracy"] == expected["accuracy"]
