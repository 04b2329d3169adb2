"""Lifecycle hooks that break a run on purpose (issue 24's faults), steered by environment
variables so a test can load them into a ``harness run`` subprocess with ``-p sabotage``:

* ``HARNESS_TEST_FILL_DISK=FOLDER``: once the first cell's rows are recorded, fill FOLDER's
  file system (a small tmpfs in the test) with one big file, so the next write finds no space;
* ``HARNESS_TEST_KILL_AT=COMPRESSION``: SIGKILL the driver when the first row of that
  compression's cell has been recorded (before the fix, its other rows were not written yet).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import harness

_FILLED: list[bool] = []


def _fill(folder: Path) -> None:
    chunk = b"\0" * (1 << 16)
    with open(folder / "filler.bin", "wb", buffering=0) as f:
        try:
            while True:
                f.write(chunk)
        except OSError:
            pass


@harness.hookimpl
def result_recorded(row):
    fill = os.environ.get("HARNESS_TEST_FILL_DISK")
    if fill and not _FILLED:
        _FILLED.append(True)
        _fill(Path(fill))
    if row.get("compression") == os.environ.get("HARNESS_TEST_KILL_AT"):
        os.kill(os.getpid(), signal.SIGKILL)
