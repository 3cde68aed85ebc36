"""What the benchmark scripts share: the CPU's name, the data files check, tables, JSON."""

import platform
from pathlib import Path

from network.core.errors import LabError
from network.core.files import write_json_atomic


def cpu_model():
    """The CPU's model name from /proc/cpuinfo (Linux), else platform's guess."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


# CPU features that decide how fast a network trains (vector width, bf16 units).
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def cpu_flags():
    """Which of ``CPU_FLAGS`` this CPU lists in /proc/cpuinfo (Linux; else None)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                listed = set(line.split(":", 1)[1].split())
                return [flag for flag in CPU_FLAGS if flag in listed]
    except OSError:
        pass
    return None


def require_data_files(data_dir, hint=""):
    """Stop early, with a hint, when the data files are missing.

    ``hint`` ends the message (e.g. ", or use --synthetic N ...").
    """
    from network.data_utils import missing_files

    missing = missing_files(data_dir)
    if missing:
        raise LabError(f"{', '.join(missing)} not found in {data_dir}: put the CIFAR-100 files "
                       "'meta', 'train', 'test' there (python -m network.train_model downloads "
                       f"them){hint}")


def fmt(value, unit="", digits=3):
    """A figure for a table: 'n/a' for None, ``digits`` significant digits for floats."""
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}g}{unit}" if abs(value) < 1000 else f"{value:,.0f}{unit}"
    return f"{value:,}{unit}" if isinstance(value, int) else f"{value}{unit}"


def print_table(title, rows):
    """Print (label, value) rows as a two-column table."""
    width = max(len(label) for label, _ in rows)
    print(f"\n{title}\n{'-' * len(title)}")
    for label, value in rows:
        print(f"{label:<{width}}  {value}")


def write_json(path, result):
    """Write every figure to ``path`` (atomically) and say so."""
    write_json_atomic(path, result)
    print(f"\nFigures written to {path}")
