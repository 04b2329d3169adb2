"""Compressions that misbehave in every way a real plugin can; used by the isolation tests."""

from __future__ import annotations

import os
import time

import harness
from harness.toolkit import TorchPredictor


class _Base(harness.Compression):
    def apply(self, model, task, ctx):
        self.misbehave()
        return TorchPredictor(model.module, device=ctx.device)


class Raises(_Base):
    name = "raises"

    def misbehave(self):
        raise RuntimeError("boom from a plugin")


class Exits(_Base):
    name = "exits"

    def misbehave(self):
        os._exit(3)


class OutOfMemory(_Base):
    name = "oom"

    def __init__(self, *, message: str = "cannot allocate 1 TiB", early: bool = False):
        self.message, self.early = message, early

    def unsupported_reason(self, ctx):  # early: before any model is loaded
        if self.early:
            self.misbehave()

    def misbehave(self):
        raise MemoryError(self.message) if self.message else MemoryError


class RaisesEarly(_Base):
    """A crash before any model is loaded (a fast failure that is not bad input)."""

    name = "raises-early"

    def unsupported_reason(self, ctx):
        raise RuntimeError("boom before any work")

    def misbehave(self):
        raise AssertionError("never applied")


class Hangs(_Base):
    name = "hangs"

    def unsupported_reason(self, ctx):  # hangs early, before any model is loaded
        time.sleep(600)

    def misbehave(self):
        raise AssertionError("never applied")


class Unsupported(_Base):
    name = "needs-tpu"

    def unsupported_reason(self, ctx):
        return f"needs a TPU; this cell runs on {ctx.device}"

    def misbehave(self):
        raise AssertionError("never applied")




class WhereAmI(_Base):
    """Skips itself, reporting the worker's pinned GPU, pid and device (scheduling tests)."""

    name = "where-am-i"

    def __init__(self, *, tag: int = 0):
        self.tag = tag

    def unsupported_reason(self, ctx):
        time.sleep(0.5)  # long enough that both workers take cells
        return (f"visible={os.environ.get('CUDA_VISIBLE_DEVICES')} pid={os.getpid()} "
                f"device={ctx.device}")


class Rendezvous(_Base):
    """Coordinates two cells through files in ``folder`` so a test controls when each worker
    acts: writes ``<role>.started`` (holding its pid), waits for ``go``, then the ``crash`` role
    exits at once and any other role reports a few phases and skips itself."""

    name = "rendezvous"

    def __init__(self, *, folder: str = "", role: str = "finish"):
        self.folder, self.role = folder, role

    def unsupported_reason(self, ctx):
        from pathlib import Path

        folder = Path(self.folder)
        (folder / f"{self.role}.started").write_text(str(os.getpid()))
        while not (folder / "go").exists():
            time.sleep(0.02)
        if self.role == "crash":
            os._exit(3)
        for i in range(5):
            ctx.progress("time", f"step {i}")
        return f"finished pid={os.getpid()}"


class Slow(_Base):
    """Skips itself after ``seconds`` (a cell that is still running when something happens)."""

    name = "slow"

    def __init__(self, *, seconds: float = 1.0):
        self.seconds = seconds

    def unsupported_reason(self, ctx):
        time.sleep(self.seconds)
        return f"slept {self.seconds} s"


class SpoilCache(_Base):
    """Makes the cell cache unwritable while its cell runs (the folder is moved to
    ``<folder>-saved`` and a file takes its place), then skips itself."""

    name = "spoil-cache"

    def __init__(self, *, folder: str = ""):
        self.folder = folder

    def unsupported_reason(self, ctx):
        os.rename(self.folder, self.folder + "-saved")
        with open(self.folder, "w") as f:
            f.write("not a folder")
        return "spoiled the cache"


@harness.hookimpl
def register_compressions(register):
    for cls in (Raises, RaisesEarly, Exits, OutOfMemory, Hangs, Unsupported, WhereAmI, Rendezvous, Slow,
                SpoilCache):
        register(cls)
