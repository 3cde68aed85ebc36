"""Bad model files: every one is a clear LabError, never a traceback, never runs code."""

import shutil

import keras
import pytest
from keras import layers

from helpers import assert_clean_error, run_steps, script_step
from network import PROJECT_ROOT, model_utils, test_model
from network.core.errors import LabError
from network.model_utils import load_class_names, load_model


def small_model(input_shape=(32, 32, 3), num_class=100):
    return keras.Sequential([keras.Input(input_shape), layers.Flatten(),
                             layers.Dense(num_class, activation="softmax")])


@pytest.fixture(scope="module")
def good_h5(tmp_path_factory):
    path = tmp_path_factory.mktemp("good") / "model.h5"
    small_model().save(path)
    return path


@pytest.fixture()
def not_a_model(tmp_path):
    path = tmp_path / "model.h5"
    path.write_text("these are not the weights you are looking for\n")
    return path


def test_a_good_model_loads(good_h5):
    model = load_model(good_h5)
    assert model.output_shape == (None, 100)


def test_missing_model_file(tmp_path):
    with pytest.raises(LabError, match=r"nothing.h5 does not exist: check the path"):
        load_model(tmp_path / "nothing.h5")


def test_a_folder_is_not_a_model(tmp_path):
    with pytest.raises(LabError, match="is a folder"):
        load_model(tmp_path)


def test_text_file_renamed_h5(not_a_model):
    with pytest.raises(LabError, match="model.h5 is not an HDF5 file"):
        load_model(not_a_model)


def test_text_file_renamed_keras(tmp_path):
    path = tmp_path / "model.keras"
    path.write_text("not a zip archive")
    with pytest.raises(LabError, match=r"model.keras is not a \.keras archive"):
        load_model(path)


def test_empty_model_file(tmp_path):
    path = tmp_path / "model.h5"
    path.touch()
    with pytest.raises(LabError, match="is empty"):
        load_model(path)


def test_unsupported_extension(tmp_path, good_h5):
    path = tmp_path / "model.pt"
    shutil.copy(good_h5, path)
    with pytest.raises(LabError, match=r"unsupported model file type '\.pt'"):
        load_model(path)


@pytest.mark.parametrize("suffix", [".h5", ".keras"])
def test_truncated_model_file(tmp_path, suffix):
    whole = tmp_path / f"whole{suffix}"
    small_model().save(whole)
    data = whole.read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(data[:len(data) // 2])
    with pytest.raises(LabError, match=rf"cut\{suffix} .*(truncated|damaged)"):
        load_model(cut)


@pytest.mark.parametrize(("input_shape", "num_class", "shown"), [
    ((28, 28, 1), 100, r"\(28, 28, 1\) -> \(100,\)"),
    ((32, 32, 3), 10, r"\(32, 32, 3\) -> \(10,\)"),
])
def test_model_of_the_wrong_shape(tmp_path, input_shape, num_class, shown):
    path = tmp_path / "other.keras"
    small_model(input_shape, num_class).save(path)
    with pytest.raises(LabError, match=rf"other.keras maps {shown}, but this lab needs "
                                       r"\(32, 32, 3\) images -> 100 classes"):
        load_model(path)


def test_two_input_model_is_refused(tmp_path):
    a, b = keras.Input((32, 32, 3)), keras.Input((32, 32, 3))
    out = layers.Dense(100, activation="softmax")(layers.Flatten()(layers.Add()([a, b])))
    path = tmp_path / "two.keras"
    keras.Model([a, b], out).save(path)
    with pytest.raises(LabError, match="one-input, one-output"):
        load_model(path)


# --- Safe mode -----------------------------------------------------------------------

def lambda_model(marker):
    """A model whose Lambda layer creates ``marker`` whenever its code runs.

    The path is a constant inside the lambda's bytecode, so the saved code is
    self-contained, like a malicious payload.
    """
    touch = eval(f"lambda t: (__import__('pathlib').Path({str(marker)!r}).touch(), t)[1]")
    inputs = keras.Input((32, 32, 3))
    x = layers.Lambda(touch)(inputs)
    outputs = layers.Dense(100, activation="softmax")(layers.Flatten()(x))
    return keras.Model(inputs, outputs)


@pytest.fixture(params=[".keras", ".h5"])
def lambda_file(request, tmp_path):
    """(model file with a Lambda payload, the marker file its code would create)."""
    marker = tmp_path / "code_ran"
    path = tmp_path / f"lambda{request.param}"
    lambda_model(marker).save(path)
    marker.unlink()  # building the model ran the lambda once
    return path, marker


def test_lambda_payload_runs_when_loaded_unsafely(lambda_file):
    # The control: the payload is real, so the refusals below mean something.
    path, marker = lambda_file
    keras.saving.load_model(path, compile=False, safe_mode=False)
    assert marker.exists()


@pytest.mark.parametrize("pre_check", [True, False], ids=["lab-check", "keras-safe-mode"])
def test_lambda_layer_is_refused_without_running_it(lambda_file, monkeypatch, pre_check):
    path, marker = lambda_file
    if not pre_check:  # Keras's own safe mode must refuse it too
        monkeypatch.setattr(model_utils, "_refuse_lambda_layers", lambda path: None)
    with pytest.raises(LabError, match=rf"{path.name} .*Python code"):
        load_model(path)
    assert not marker.exists(), "loading the model ran its code"


# --- Class names ----------------------------------------------------------------------

def test_class_names_missing(good_h5):
    with pytest.raises(LabError, match=r"class_names.json not found.*beside the model"):
        load_class_names(good_h5)


@pytest.mark.parametrize(("content", "message"), [
    ("{not json", "not JSON"),
    ('["a", "b"]', "no list of class names"),
    ('{"fine_label_names": []}', "no list of class names"),
    ('{"fine_label_names": ["a", 3]}', "no list of class names"),
])
def test_class_names_damaged(tmp_path, content, message):
    (tmp_path / "class_names.json").write_text(content)
    with pytest.raises(LabError, match=message):
        load_class_names(tmp_path / "model.h5")


def test_class_names_of_another_model(tmp_path):
    (tmp_path / "class_names.json").write_text('{"fine_label_names": ["a", "b"]}')
    assert load_class_names(tmp_path / "model.h5")["fine_label_names"] == ["a", "b"]
    with pytest.raises(LabError, match="names 2 classes but the model predicts 100"):
        load_class_names(tmp_path / "model.h5", num_class=100)


@pytest.mark.slow
def test_test_model_without_class_names(tmp_path, trained):
    lonely = tmp_path / "models" / "best_model.h5"
    lonely.parent.mkdir()
    shutil.copy(trained["model_path"], lonely)
    with pytest.raises(LabError, match=r"class_names.json not found"):
        test_model.main([str(PROJECT_ROOT / "img"), "--model-path", str(lonely),
                         "--output-dir", str(tmp_path / "out"), "--no-show"])


# --- Through the command line: one line on stderr, no traceback -----------------------

@pytest.fixture(scope="module")
def cli_errors(tmp_path_factory, fake_data):
    """evaluate_model with a text file for a model, then test_model with a model of the
    wrong shape, one after the other in one process (``run_steps``). Returns
    (folder, {"text file": StepResult, "wrong model": StepResult})."""
    folder = tmp_path_factory.mktemp("cli-errors")
    text = folder / "model.h5"
    text.write_text("these are not the weights you are looking for\n")
    mnist = folder / "mnist.h5"
    small_model((28, 28, 1), 10).save(mnist)
    done = run_steps([
        script_step("evaluate_model", "--model-path", text, "--data-dir", fake_data,
                    "--allow-md5-mismatch", "--output-dir", folder / "evaluation"),
        script_step("test_model", "img", "--model-path", mnist,
                    "--output-dir", folder / "recognition"),
    ])
    return folder, {"text file": done[0], "wrong model": done[1]}


@pytest.mark.slow
@pytest.mark.xdist_group("model_files_cli")  # with the next test: cli_errors runs once
def test_evaluate_model_cli_with_a_text_file(cli_errors):
    _, results = cli_errors
    result = results["text file"]
    assert_clean_error(result, "evaluate_model: error:", "model.h5 is not an HDF5 file")
    assert result.returncode == 1


@pytest.mark.slow
@pytest.mark.xdist_group("model_files_cli")
def test_test_model_cli_with_a_wrong_model(cli_errors):
    folder, results = cli_errors
    result = results["wrong model"]
    assert_clean_error(result, "test_model: error:",
                       "mnist.h5 maps (28, 28, 1) -> (10,), but this lab needs")
    assert result.returncode == 1
    assert not (folder / "recognition" / "predictions" / "predictions.csv").exists()
