"""Helpers for the reliability tests (issue 17): run an engine command in a child process and read its peak
memory from the kernel (a memory figure, not a timing)."""

from __future__ import annotations

import dataclasses
import pathlib
import subprocess
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[1]


@dataclasses.dataclass
class Child:
    returncode: int
    stdout: str
    stderr: str
    peak_mb: float  # the child's peak resident memory (ru_maxrss), MiB


# Runs argv[2:] and writes "exit-status peak-KiB" to argv[1]. It is a small process of its own: a child
# forked straight from the test process would count the test process's memory (pages shared until exec).
_MEASURE = (
    "import os, sys\n"
    "pid = os.fork()\n"
    "if pid == 0:\n"
    "    os.execv(sys.argv[2], sys.argv[2:])\n"
    "_, status, usage = os.wait4(pid, 0)\n"
    "open(sys.argv[1], 'w').write(f'{os.waitstatus_to_exitcode(status)} {usage.ru_maxrss}')\n"
)


def run_measured(argv: list[str], *, stdin=None, cwd=REPO, env=None) -> Child:
    """Runs `argv` to completion; returns its exit status, output and peak resident memory (ru_maxrss of
    exactly that process, from os.wait4 in a small intermediate process)."""
    with tempfile.TemporaryDirectory() as tmp:
        report = pathlib.Path(tmp) / "rusage"
        with open(pathlib.Path(tmp) / "out", "w+b") as out, open(pathlib.Path(tmp) / "err", "w+b") as err:
            subprocess.run([sys.executable, "-S", "-c", _MEASURE, str(report), *map(str, argv)],
                           stdin=stdin if stdin is not None else subprocess.DEVNULL, stdout=out, stderr=err,
                           cwd=cwd, env=env, check=True)
            out.seek(0)
            err.seek(0)
            code, peak_kib = report.read_text().split()
            return Child(int(code), out.read().decode("utf-8", "replace"), err.read().decode("utf-8", "replace"),
                         int(peak_kib) / 1024.0)


def engine(*args: str) -> list[str]:
    """argv of `python -m engine ARGS` with this interpreter."""
    return [sys.executable, "-m", "engine", *map(str, args)]


def deflate_bomb_npz(path, key: str, shape: tuple, dtype, others: dict | None = None, chunk: int = 1 << 20) -> None:
    """An .npz whose member `key` is a real deflate stream of zeros of `shape` (e.g. 1 GiB in 1 MB on disk),
    beside ordinary members `others`. Written in chunks: the test itself never holds the big array."""
    import zipfile

    import numpy as np

    dtype = np.dtype(dtype)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for name, value in (others or {}).items():
            if name == key:
                continue
            with zf.open(f"{name}.npy", "w") as fh:
                np.lib.format.write_array(fh, np.asarray(value), allow_pickle=False)
        with zf.open(f"{key}.npy", "w", force_zip64=True) as fh:
            header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": tuple(shape)}
            np.lib.format.write_array_header_1_0(fh, header)
            left = int(np.prod(shape, dtype=object)) * dtype.itemsize
            zeros = bytes(chunk)
            while left > 0:
                n = min(left, chunk)
                fh.write(zeros if n == chunk else bytes(n))
                left -= n
