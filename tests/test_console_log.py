"""network.core.console_log: a script's console output saved as the terminal finally shows it."""

import io
import sys

import pytest

from network.core import console_log
from network.core.console_log import TerminalText, log_path, logged
from network.core.console_log import console_log as log_to
from network.core.errors import LabError


def shown(*writes):
    screen = TerminalText()
    for text in writes:
        screen.feed(text)
    return screen.text()


def test_carriage_returns_and_backspaces_keep_the_last_state():
    assert shown("10%\r20%\r100%\n") == "100%\n"
    assert shown("abc\b\bXY\n") == "aXY\n"
    # A shorter redraw leaves the longer line's tail, as a terminal does; spaces clear it.
    assert shown("loss: 4.5123\rloss: 4.4\n") == "loss: 4.4123\n"
    assert shown("loss: 4.5123\rloss: 4.4   \n") == "loss: 4.4\n"
    assert shown("\x1b[1mbold\x1b[0m and \x1b[32mgreen\x1b[0m\n") == "bold and green\n"
    assert shown("no newline at the end") == "no newline at the end\n"
    assert shown("a\n", "b", "c\n") == "a\nbc\n"


def test_keras_progress_bar_collapses_to_one_line_per_epoch(tmp_path, monkeypatch):
    """Keras redraws its bar in place on a terminal: the log keeps each epoch's last line."""
    import keras

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    with log_to(tmp_path, "train_model", ["--epochs", "2"]) as path:
        for epoch in (1, 2):
            print(f"Epoch {epoch}/2")
            bar = keras.utils.Progbar(50, interval=0)
            for step in range(1, 51):
                bar.update(step, values=[("loss", 5.0 / step)])
    assert "\r" in terminal.getvalue() or "\b" in terminal.getvalue()  # it did redraw
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "$ python -m network.train_model --epochs 2"
    assert [line for line in lines if line.startswith("Epoch")] == ["Epoch 1/2", "Epoch 2/2"]
    bars = [line for line in lines if line.startswith("50/50")]
    assert len(bars) == 2 and all("loss" in line for line in bars)
    assert len(lines) == 5
    assert not any("\x1b" in line or "\r" in line or "\b" in line for line in lines)


def test_tees_stdout_and_stderr_and_restores_them(tmp_path, capsys):
    before = sys.stdout, sys.stderr
    with log_to(tmp_path, "evaluate_model", ["--subset", "10"]) as path:
        print("to the screen and the log")
        print("a warning", file=sys.stderr)
        assert sys.stdout.isatty() == before[0].isatty()  # Keras asks the real stream
    assert (sys.stdout, sys.stderr) == before
    out, err = capsys.readouterr()
    assert out == "to the screen and the log\n" and err == "a warning\n"
    assert path == log_path(tmp_path, "evaluate_model") == tmp_path / "logs" / "evaluate_model.log"
    assert path.read_text(encoding="utf-8") == (
        "$ python -m network.evaluate_model --subset 10\nto the screen and the log\na warning\n")


def test_a_failure_ends_the_log_with_its_reason(tmp_path, capsys):
    with pytest.raises(LabError), log_to(tmp_path, "test_model", []) as path:
        print("Top 5 classes of 1 image(s):")
        raise LabError("none of the 1 image(s) could be read")
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[-1] == "test_model: error: none of the 1 image(s) could be read"
    with pytest.raises(KeyboardInterrupt), log_to(tmp_path, "test_model", []):
        raise KeyboardInterrupt
    assert path.read_text(encoding="utf-8").splitlines()[-1] == "test_model: interrupted"
    assert [p.name for p in path.parent.iterdir()] == ["test_model.log"]  # no partial file


def test_a_long_run_saves_its_log_while_it_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(console_log, "SAVE_EVERY_S", 0.0)
    with log_to(tmp_path, "train_model", []) as path:
        print("Epoch 1/100")
        assert path.read_text(encoding="utf-8").endswith("Epoch 1/100\n")
        print("Epoch 2/100")
        assert path.read_text(encoding="utf-8").endswith("Epoch 2/100\n")


def test_logged_decorator_finds_the_folder_from_the_options(tmp_path, capsys):
    import argparse

    def parse_args(argv=None):
        parser = argparse.ArgumentParser()
        parser.add_argument("--output-dir", type=type(tmp_path))
        return parser.parse_args(argv)

    @logged("make_report", parse_args)
    def main(argv=None, extra=0):
        """The script's main."""
        print(f"working in {parse_args(argv).output_dir.name}, extra {extra}")
        return 7

    assert main(["--output-dir", str(tmp_path / "out")], extra=3) == 7
    assert main.__name__ == "main" and main.__doc__ == "The script's main."
    log = (tmp_path / "out" / "logs" / "make_report.log").read_text(encoding="utf-8")
    assert log.endswith("working in out, extra 3\n")
    assert log.startswith("$ python -m network.make_report --output-dir ")
    with pytest.raises(SystemExit):
        main(["--no-such-option"])   # answered by argparse, before any log is opened
    assert capsys.readouterr().err
