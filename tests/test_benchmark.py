"""The benchmark scripts: FLOP counting (flops), training speed (training_speed), feeding
the batches (batch_feeding) and data loading on the CPU (data_loading)."""

import json

import pytest

from benchmarks import batch_feeding, flops, training_speed
from helpers import assert_clean_error, run_cli

# --- FLOPs -----------------------------------------------------------------------------------

def test_count_flops_matches_hand_computation():
    import keras
    from keras import layers

    inner = keras.Sequential([keras.Input((3, 3, 4)),
                              layers.Conv2D(5, 3, strides=2, padding="valid")], name="inner")
    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(4, 3, padding="same")(inputs)      # 8x8 out, 3x3x3 -> 4
    x = layers.MaxPool2D(2)(x)                            # 4x4: no FLOPs counted
    x = layers.Conv2D(4, 2, padding="valid")(x)          # 3x3 out, 2x2x4 -> 4
    x = inner(x)                                          # 1x1 out, 3x3x4 -> 5 (nested model)
    x = layers.Flatten()(x)
    outputs = layers.Dense(7)(x)                          # 5 -> 7
    model = keras.Model(inputs, outputs)

    expected = [2 * 8 * 8 * (3 * 3 * 3) * 4,
                2 * 3 * 3 * (2 * 2 * 4) * 4,
                2 * 1 * 1 * (3 * 3 * 4) * 5,
                2 * 5 * 7]
    assert [f for _, f in flops.flops_by_layer(model)] == expected
    assert flops.count_flops(model) == sum(expected) == 15_406


def test_reference_networks_flops():
    def conv(size, c_in, c_out):
        return 2 * size * size * 9 * c_in * c_out

    lab = (conv(32, 3, 128) + conv(32, 128, 128) + conv(16, 128, 256) + conv(16, 256, 256)
           + conv(8, 256, 512) + conv(8, 512, 512) + 2 * (4 * 4 * 512 * 1000 + 1000 * 1000
                                                         + 1000 * 100))
    resnet9 = (conv(32, 3, 64) + conv(32, 64, 128) + 2 * conv(16, 128, 128)
               + conv(16, 128, 256) + conv(8, 256, 512) + 2 * conv(4, 512, 512) + 2 * 512 * 100)
    ref = flops.reference_gflops()
    assert ref["lab_cnn"] == pytest.approx(lab / 1e9)
    assert ref["resnet9_width1"] == pytest.approx(resnet9 / 1e9)
    assert 1.2 < ref["lab_cnn"] < 1.3 and 0.75 < ref["resnet9_width1"] < 0.77


def test_flops_table(tmp_path, capsys):
    """The per-layer table of ``benchmarks/flops.py``, in this process."""
    out = tmp_path / "flops.json"
    assert flops.main(["--recipe", "fast", "--width", "0.0625", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Forward GFLOPs per image" in printed and "total: fast (width 0.0625)" in printed
    result = json.loads(out.read_text())
    assert result["width"] == 0.0625 and len(result["layers"]) == 9  # 8 convolutions + 1 dense
    assert result["forward_gflops_per_image"] == pytest.approx(
        sum(layer["gflops"] for layer in result["layers"]))


# --- Pure helpers ----------------------------------------------------------------------------

def test_timing_figures_separate_compilation():
    figures = training_speed.timing_figures([5.0, 1.0, 1.2, 1.1], 1000, 2e9)
    assert figures["steady_epoch_s"] == pytest.approx(1.1)
    assert figures["compile_s"] == pytest.approx(3.9)
    assert figures["images_per_s"] == pytest.approx(1000 / 1.1)
    assert figures["tflops"] == pytest.approx(3 * 2e9 * 1000 / 1.1 / 1e12)
    assert training_speed.timing_figures([5.0], 1000, 2e9)["steady_epoch_s"] is None


def test_time_to_accuracy_first_arrival():
    epochs = [{"epoch": 1, "seconds": 10.0, "test_accuracy": 0.3},
              {"epoch": 2, "seconds": 2.0, "test_accuracy": 0.61},
              {"epoch": 3, "seconds": 2.0, "test_accuracy": 0.65}]
    hit = training_speed.time_to_accuracy(epochs, 0.6, steady_epoch_s=2.0)
    assert (hit["epoch"], hit["train_s"], hit["steady_train_s"]) == (2, 12.0, 4.0)
    miss = training_speed.time_to_accuracy(epochs, 0.7, steady_epoch_s=2.0)
    assert miss["epoch"] is None and miss["test_accuracy"] == 0.65


def test_option_errors():
    for script in (training_speed, flops):
        with pytest.raises(SystemExit) as exit_info:
            script.parse_args(["--recipe", "lab", "--width", "2"])  # the lab CNN has no width
        assert exit_info.value.code == 2
        for recipe in ("cpu", "fast"):  # every ResNet-9 recipe takes one
            assert script.parse_args(["--recipe", recipe, "--width", "0.5"]).width == 0.5
    with pytest.raises(SystemExit):
        training_speed.parse_args(["--target", "150"])
    assert training_speed.parse_args(["--target", "76"]).target == pytest.approx(0.76)
    assert training_speed.parse_args(["--target", "0.5"]).eval_every_epoch


# --- Training speed --------------------------------------------------------------------------

@pytest.mark.slow
def test_training_speed_smoke(tmp_path, capsys):
    """Two epochs on random images, in this process (one Keras import for the module)."""
    out = tmp_path / "train.json"
    code = training_speed.main(["--synthetic", "256", "--recipe", "fast", "--width", "0.0625",
                                "--epochs", "2", "--batch-size", "128", "--precision", "float32",
                                "--eval-every-epoch", "--target", "0.001", "--json", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    for label in ("compile time", "steady epoch", "training images/s", "achieved TFLOP/s",
                  "time to 0.10% top-1", "test top-1", "test top-5", "forward GFLOPs/image"):
        assert label in printed, printed

    result = json.loads(out.read_text())
    timing = result["timing"]
    for key in ("first_epoch_s", "steady_epoch_s", "compile_s", "images_per_s", "tflops",
                "train_s", "process_s"):
        assert timing[key] is not None and timing[key] >= 0, key
    assert timing["steady_epoch_s"] > 0 and timing["images_per_s"] > 0 and timing["tflops"] > 0
    assert result["train_images"] == 256 and result["test_images"] == 256
    assert result["settings"]["width"] == 0.0625 and result["settings"]["epochs"] == 2
    assert [row["epoch"] for row in result["epochs"]] == [1, 2]
    assert all(0 <= row["test_accuracy"] <= 1 for row in result["epochs"])
    assert result["model"]["forward_gflops_per_image"] > 0
    reached = result["time_to_accuracy"]
    accuracies = [row["test_accuracy"] for row in result["epochs"]]
    first = next((i + 1 for i, a in enumerate(accuracies) if a >= 0.001), None)
    assert reached["epoch"] == first
    if first is not None:
        assert reached["train_s"] == pytest.approx(sum(r["seconds"] for r in
                                                       result["epochs"][:first]))
    assert 0 <= result["test"]["accuracy"] <= result["test"]["top5_accuracy"] <= 1
    hardware = result["hardware"]
    assert hardware["backend"] and hardware["keras"] and hardware["cpu_count"] >= 1
    assert hardware["devices"]


def test_batch_feeding_times_both_feeds_in_turn(tmp_path, capsys):
    out = tmp_path / "feeding.json"
    assert batch_feeding.main(["--synthetic", "--images", "200", "--epochs", "2", "--rounds",
                               "2", "--width", "0.125", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.index("arrays   round 1") < printed.index("batches  round 1") < printed.index(
        "arrays   round 2")
    assert "batches: mean epoch after the first of a fit" in printed
    times = json.loads(out.read_text())["epoch_seconds"]
    assert set(times) == {"arrays", "batches"}
    assert all(len(fit) == 2 and min(fit) > 0 for feed in times.values() for fit in feed)
    assert [len(feed) for feed in times.values()] == [2, 2]


def test_batch_feeding_without_data_is_a_clean_error(tmp_path):
    assert_clean_error(run_cli("benchmarks.batch_feeding", "--data-dir", str(tmp_path)),
                       "not found in")


# --- Data loading and the command line -------------------------------------------------------

@pytest.mark.slow
def test_data_loading_compares_both_paths(fake_data, tmp_path):
    out = tmp_path / "cpu.json"
    # The numpy backend keeps the lab path's `import keras` quick; to_categorical
    # on a list is plain NumPy on every backend.
    result = run_cli("benchmarks.data_loading", "--data-dir", fake_data, "--allow-md5-mismatch",
                     "--repeats", "1", "--json", out, env={"KERAS_BACKEND": "numpy"},
                     file_mode=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "lab manual (float64)" in result.stdout and "peak RSS" in result.stdout
    figures = json.loads(out.read_text())
    first, ours, lab = (figures["paths"][k] for k in ("ours-first", "ours", "lab"))
    for path in (first, ours, lab):
        for key in ("seconds", "load_s", "preprocess_s", "peak_rss_mib", "tracemalloc_peak_mib",
                    "result_mib"):
            assert path[key] > 0, key
    assert (ours["dtype"], lab["dtype"]) == ("uint8", "float64")  # images as training takes them
    assert lab["result_mib"] > 4 * ours["result_mib"]
    assert ours["load_s"] < first["load_s"]  # memory-mapped from the cache the first load filled
    assert lab["tracemalloc_peak_mib"] > ours["tracemalloc_peak_mib"]
    assert not figures["official_files"] and lab["unpickler"] == "restricted"


def test_data_loading_missing_data_is_a_clean_error(tmp_path):
    result = run_cli("benchmarks.data_loading", "--data-dir", tmp_path / "nowhere",
                     file_mode=True)
    assert_clean_error(result, "data_loading: error:", "not found")


@pytest.mark.parametrize("script, options", [
    ("training_speed", ("--synthetic", "--eval-every-epoch", "--target", "--json")),
    ("data_loading", ("--data-dir", "--allow-md5-mismatch", "--repeats", "--json")),
    ("flops", ("--recipe", "--width", "--json")),
    ("batch_feeding", ("--images", "--rounds", "--synthetic", "--json")),
])
def test_help_as_module(script, options):
    result = run_cli(f"benchmarks.{script}", "--help")
    assert result.returncode == 0, result.stderr[-3000:]
    for option in options:
        assert option in result.stdout
    assert "--child" not in result.stdout and "--show" not in result.stdout
