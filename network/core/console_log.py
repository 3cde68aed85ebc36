"""Save what a script prints to ``<output folder>/logs/<script>.log``.

The lab report shows these logs as terminal text (the manual asks for the
training log). The console still shows everything as before; the log holds
what the terminal finally shows: Keras redraws its progress bar in place
with carriage returns and backspaces, and only the last state of each line
is kept, so a log has one line per epoch, not thousands of redraws. Colour
codes are dropped.

The file is replaced atomically (every few seconds while lines arrive, and
at the end, after an error or Ctrl-C too), so a reader never sees half of it.

Usage:

    from network.core.console_log import console_log, logged

    with console_log(args.output_dir, "evaluate_model", argv):
        ...                         # printed here also goes to reports/logs/evaluate_model.log

    @logged("train_model", parse_args)   # the same around a whole main(argv)
    def main(argv=None):
        ...
"""

import contextlib
import functools
import re
import shlex
import sys
import threading
import time
from pathlib import Path

from network.core.errors import LabError
from network.core.files import write_text_atomic

LOG_DIR = "logs"
SAVE_EVERY_S = 5.0              # a long training run's log can be watched while it grows
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
CONTROL = re.compile(r"([\r\n\b])")


def log_path(output_dir, name):
    return Path(output_dir) / LOG_DIR / f"{name}.log"


class TerminalText:
    """Text as a terminal shows it in the end: ``\\r`` returns to the line's start and
    ``\\b`` steps back one character; what is written then overwrites what was there."""

    def __init__(self):
        self.lines, self.line, self.column = [], [], 0

    def feed(self, text):
        for part in CONTROL.split(ANSI.sub("", text)):
            if part == "\n":
                self.lines.append("".join(self.line).rstrip())
                self.line, self.column = [], 0
            elif part == "\r":
                self.column = 0
            elif part == "\b":
                self.column = max(0, self.column - 1)
            elif part:
                end = self.column + len(part)
                self.line[self.column:end] = part
                self.column = end

    def text(self):
        last = "".join(self.line).rstrip()
        return "\n".join(self.lines + [last] if last else self.lines) + "\n"


class _Tee:
    """A stand-in for sys.stdout/sys.stderr that also feeds the log.

    Everything else (isatty, encoding, fileno) is the real stream's, so Keras
    draws its live progress bar on a terminal exactly as without the log.
    """

    def __init__(self, stream, log):
        self._stream, self._log = stream, log

    def write(self, text):
        written = self._stream.write(text)
        self._log.feed(text)
        return written

    def __getattr__(self, name):
        return getattr(self._stream, name)


class _Log:
    def __init__(self, path, header):
        self.path, self.screen = path, TerminalText()
        self.lock, self.saved = threading.Lock(), time.monotonic()
        self.screen.feed(header + "\n")

    def feed(self, text):
        with self.lock:
            self.screen.feed(text)
            if "\n" in text and time.monotonic() - self.saved > SAVE_EVERY_S:
                self.save()

    def save(self):
        write_text_atomic(self.path, self.screen.text())
        self.saved = time.monotonic()


def command_line(name, argv=None):
    """The command as typed: ``python -m network.<name> <options>``."""
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    return " ".join(["python", "-m", f"network.{name}", *map(shlex.quote, argv)])


@contextlib.contextmanager
def console_log(output_dir, name, argv=None):
    """Tee sys.stdout and sys.stderr into ``output_dir/logs/<name>.log``.

    The log starts with the command line (``$ python -m network.<name> ...``)
    and, when the block fails, ends with the reason, as the terminal shows it.
    """
    path = log_path(output_dir, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    log = _Log(path, f"$ {command_line(name, argv)}")
    streams = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _Tee(sys.stdout, log), _Tee(sys.stderr, log)
    try:
        yield path
    except LabError as err:
        log.feed(f"\n{name}: error: {err}\n")
        raise
    except KeyboardInterrupt:
        log.feed(f"\n{name}: interrupted\n")
        raise
    except Exception as err:
        log.feed(f"\n{name}: failed: {type(err).__name__}: {err}\n")
        raise
    finally:
        sys.stdout, sys.stderr = streams
        with log.lock:
            log.save()


def logged(name, parse_args, folder=lambda args: args.output_dir):
    """Decorate a script's ``main(argv=None, ...)`` to run inside :func:`console_log`.

    The options are parsed once here to find the output folder (wrong options
    are answered before any log is opened), then ``main`` parses them again
    as usual.
    """
    def decorate(main):
        @functools.wraps(main)
        def main_with_log(argv=None, *args, **kwargs):
            with console_log(folder(parse_args(argv)), name, argv):
                return main(argv, *args, **kwargs)
        return main_with_log
    return decorate
