"""A compression that plants a known slowdown, for the gate's re-timing tests and the
false-alarm study (docs/regression-gate.md): ``slowed`` runs the model as ``none`` does (eager
fp32 torch), then busy-waits ``factor`` times the call's own duration, so every call takes
``1 + factor`` times as long. Load it with ``-p slowed`` and ``tests/plugins`` on PYTHONPATH."""

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
        until = time.perf_counter() + self.factor * (time.perf_counter() - t0)
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
