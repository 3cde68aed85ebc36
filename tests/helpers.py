"""Running the lab's scripts as a user would, and checking how they fail (no fixtures here:
those are in conftest.py).

One runner for every child process: :func:`run_cli` starts ``python -m network.<script>``
(or a benchmark, or a script file) once; :func:`run_steps` starts one Python process and
runs several scripts or programs in it one after another, keeping each one's exit status,
stdout, stderr (file descriptors 1 and 2, so native libraries' lines count too) and the
backend modules imported by then apart. A backend costs seconds to import, so the
slow tests share a process per backend where a fresh process is not what they check.
"""

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BACKEND_MODULES = ("tensorflow", "jax", "torch", "keras")
# Never inherited by a child: the real data folder (a test passes it explicitly when it
# wants it), a display, TensorFlow's log level (the scripts must set their own), and the
# quick switch (it would move a script's default folders).
NOT_INHERITED = ("CIFAR100_DIR", "DISPLAY", "TF_CPP_MIN_LOG_LEVEL", "LAB_QUICK")


def child_env(env=None):
    """This process's environment for a child, less NOT_INHERITED, plus ``env``."""
    child = {**os.environ, "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg"}
    for name in NOT_INHERITED:
        child.pop(name, None)
    child.update(env or {})
    return child


def module_of(script):
    """``"train_model"`` -> ``"network.train_model"``; a dotted name stays as it is
    (``"benchmarks.flops"``)."""
    return script if "." in script else f"network.{script}"


def run_cli(script, *args, env=None, cwd=ROOT, timeout=600, file_mode=False):
    """Run ``python -m network.<script> args`` (``script`` may also be a dotted module such
    as ``benchmarks.flops``), or with ``file_mode`` the file itself (``python
    network/<script>.py``, as from an IDE).

    Returns the CompletedProcess with text stdout/stderr.
    """
    module = module_of(script)
    target = [str(ROOT / (module.replace(".", "/") + ".py"))] if file_mode else ["-m", module]
    return subprocess.run([sys.executable, *target, *map(str, args)], cwd=cwd,
                          env=child_env(env), capture_output=True, text=True, timeout=timeout)



def sample_photos(folder, *names):
    """A new ``folder`` holding copies of these photos of img/ (a run over all seven costs
    a heat map and a chart each)."""
    folder.mkdir()
    for name in names:
        shutil.copy2(ROOT / "img" / name, folder)
    return folder

# --- Several runs in one process ----------------------------------------------------------

@dataclass
class Step:
    """One run inside a :func:`run_steps` process: a script's ``__main__`` (as ``python -m``
    runs it) or a Python program, with its command-line arguments."""
    module: str | None = None
    code: str | None = None
    argv: list = field(default_factory=list)


def script_step(script, *args):
    """``python -m network.<script> args`` (or a dotted module), as a step."""
    return Step(module=module_of(script), argv=[str(a) for a in args])


def code_step(code, *args):
    """``python -c code args``, as a step."""
    return Step(code=code, argv=[str(a) for a in args])


@dataclass
class StepResult:
    """What one step left: like a CompletedProcess, plus the backend modules imported in
    the process once the step had run (``backends``) and how long it ran."""
    returncode: int
    stdout: str
    stderr: str
    backends: set
    seconds: float


@dataclass
class Steps:
    """A :func:`run_steps` process: its steps' results in order, and the process itself
    (``process.stderr`` holds what was printed outside the steps, e.g. at exit)."""
    results: list
    process: subprocess.CompletedProcess

    def __getitem__(self, index):
        return self.results[index]


# The child: runs each step with fds 1 and 2 sent to files of its own, then reports.
STEP_RUNNER = r"""
import json, os, runpy, sys, tempfile, time, traceback

steps, report, modules = json.loads(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
results = []
for step in steps:
    streams = [tempfile.TemporaryFile() for _ in range(2)]
    sys.stdout.flush(); sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    os.dup2(streams[0].fileno(), 1); os.dup2(streams[1].fileno(), 2)
    code, started = 0, time.perf_counter()
    try:
        if step["module"]:
            sys.argv = [step["module"], *step["argv"]]
            runpy.run_module(step["module"], run_name="__main__", alter_sys=True)
        else:
            sys.argv = ["-c", *step["argv"]]
            exec(compile(step["code"], "<string>", "exec"), {"__name__": "__main__"})
    except SystemExit as done:
        if isinstance(done.code, str):
            print(done.code, file=sys.stderr)
        code = done.code if isinstance(done.code, int) else int(done.code is not None)
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush(); sys.stderr.flush()
        os.dup2(saved[0], 1); os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)
    out, err = [(s.seek(0), s.read().decode(errors="replace"))[1] for s in streams]
    results.append({"returncode": code, "stdout": out, "stderr": err,
                    "backends": sorted(m for m in modules if sys.modules.get(m)),
                    "seconds": round(time.perf_counter() - started, 2)})
    with open(report, "w") as f:  # after each step: a crash still leaves the earlier ones
        json.dump(results, f)
"""


def run_steps(steps, env=None, cwd=ROOT, timeout=600):
    """Run ``steps`` (from :func:`script_step`, :func:`code_step`) in turn in one fresh
    Python process; returns :class:`Steps`. The first step sees the process's start as a
    user's run would; later ones find what the earlier ones imported."""
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "steps.json"
        process = subprocess.run(
            [sys.executable, "-c", STEP_RUNNER,
             json.dumps([{"module": s.module, "code": s.code, "argv": s.argv} for s in steps]),
             str(report), json.dumps(BACKEND_MODULES)],
            cwd=cwd, env=child_env(env), capture_output=True, text=True, timeout=timeout)
        done = json.loads(report.read_text()) if report.is_file() else []
    assert process.returncode == 0 and len(done) == len(steps), (
        f"the step runner stopped after {len(done)} of {len(steps)} steps:\n"
        f"{process.stderr[-3000:]}\n{done[-1]['stderr'][-3000:] if done else ''}")
    results = [StepResult(r["returncode"], r["stdout"], r["stderr"], set(r["backends"]),
                          r["seconds"]) for r in done]
    return Steps(results, process)


# --- In this process, and how failures look ------------------------------------------------

def run_main(main, argv, capsys):
    """Run a script's main in this process as its command line does (``cli.run_main``);
    return (exit code, stdout, stderr)."""
    from network.core import cli

    with pytest.raises(SystemExit) as exit_info:
        cli.run_main(main, [str(a) for a in argv])
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def call_main(main, argv):
    """Like :func:`run_main` where no ``capsys`` is at hand (a fixture of wider scope):
    Python's stdout and stderr are caught while it runs. Returns (exit code, stdout,
    stderr)."""
    from network.core import cli

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
            pytest.raises(SystemExit) as exit_info:
        cli.run_main(main, [str(a) for a in argv])
    return exit_info.value.code, out.getvalue(), err.getvalue()


def assert_clean_error(result, *fragments):
    """An expected failure: non-zero exit, one-line message, no traceback."""
    assert result.returncode != 0, result.stdout[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr[-3000:]
