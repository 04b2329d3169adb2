"""A compression that plants a known slowdown, for the gate's re-timing tests and the
false-alarm study (docs/regression-gate.md): ``slowed`` runs the model as ``none`` does (eager
fp32 torch) ``1 + int(factor)`` times per call, then busy-waits the fraction of ``factor`` times
one forward's duration, so every call takes ``1 + factor`` times as long. Whole factors repeat
the real forward (the same kernels and threads, so a shared machine's noise hits the slowed
model as it hits the plain one); a busy wait after a forward lets the framework's worker threads
go to sleep and pay their wake-up in the next call, which on a busy VM gave a planted 10x
per-round ratios of 8.7x-56x. Load it with ``-p slowed`` and ``tests/plugins`` on PYTHONPATH."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import harness
from harness.api import CellContext, Compression, LoadedModel, Predictor, Task
from harness.toolkit.predictor import TorchPredictor


class SlowedPredictor(TorchPredictor):
    def __init__(self, module: Any, device: str, factor: float) -> None:
        super().__init__(module, device=device)
        self.factor = factor

    def __call__(self, batch: Mapping[str, Any]) -> Any:
        t0 = time.perf_counter()
        out = super().__call__(batch)
        one = time.perf_counter() - t0
        for _ in range(int(self.factor)):  # whole factors: the real forward again
            out = super().__call__(batch)
        until = time.perf_counter() + (self.factor % 1) * one
        while time.perf_counter() < until:  # busy: a slower kernel, not an idle sleep
            pass
        return out

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "planted_slowdown": self.factor}


class Slowed(Compression):
    """fp32 torch, ``factor`` slower per call (busy-waiting)."""

    name = "slowed"

    class Params(harness.api.Params):
        factor: float = 0.15

    def apply(self, model: LoadedModel, task: Task, ctx: CellContext) -> Predictor:
        return SlowedPredictor(model.module, ctx.device, self.params.factor)


@harness.hookimpl
def register_compressions(register):
    register(Slowed)
