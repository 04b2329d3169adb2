"""Compressions that misbehave in every way a real plugin can; used by the isolation tests."""

from __future__ import annotations

import os
import time

import harness
from harness_plugins._torch import TorchPredictor


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

    def misbehave(self):
        raise MemoryError("cannot allocate 1 TiB")


class Hangs(_Base):
    name = "hangs"

    def misbehave(self):
        time.sleep(600)


class Unsupported(_Base):
    name = "needs-tpu"

    def unsupported_reason(self, ctx):
        return f"needs a TPU; this cell runs on {ctx.device}"

    def misbehave(self):
        raise AssertionError("never applied")


@harness.hookimpl
def register_compressions(register):
    for cls in (Raises, Exits, OutOfMemory, Hangs, Unsupported):
        register(cls)
