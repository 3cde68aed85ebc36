import pytest

from helpers import run_cli


@pytest.mark.slow
def test_trained_fixture_produces_model(trained):
    assert trained["model_path"].is_file()
    assert (trained["model_path"].parent / "class_names.json").is_file()
    for name in ("training_curves.png", "history.csv", "train_summary.json"):
        assert (trained["reports"] / name).is_file()


def test_help_runs_as_file():
    result = run_cli("train_model", "--help", file_mode=True)
    assert result.returncode == 0
    assert "--recipe" in result.stdout


@pytest.mark.slow
def test_training_prints_the_model_summary(trained):
    # Like the manual, training shows the network (Keras's summary) before it starts.
    assert "Total params: 13,870,484" in trained["stdout"]
