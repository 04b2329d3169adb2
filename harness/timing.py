"""Latency, throughput and memory of a predictor.

Method (see docs/methodology.md): the first call after load is the cold start, timed alone;
then ``warmup`` iterations are discarded; then batch-1 inputs drawn from the task's evaluation
split at their real lengths are timed one call per iteration, in whole passes over the inputs,
until *both* ``min_iterations`` and ``min_duration_s`` are reached (so every predictor of a task
is timed on the same inputs, each the same number of times). On CUDA each iteration is
bracketed by CUDA events and the device is synchronised before reading them; on CPU
``time.perf_counter`` brackets a call that returns only when the logits are computed. Peak RSS
is sampled by a thread while evaluating and measuring throughput, and read before and after the
batch-1 loop (the thread is paused there: it would compete for the GIL).
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from .api import Predictor


@dataclass
class LatencyResult:
    samples_ms: list[float]
    cold_start_ms: float
    warmup: int
    seq_lens: list[int] = field(default_factory=list)
    inputs: int = 0  #: distinct inputs, each timed ``passes`` times

    @property
    def passes(self) -> int:
        return len(self.samples_ms) // self.inputs if self.inputs else 0

    def percentile(self, q: float) -> float:
        """Linear-interpolated percentile (numpy's default method) of the samples."""
        from .stats import percentiles

        return percentiles(self.samples_ms, [q])[0]

    def stats(self) -> dict[str, float]:
        from .stats import percentiles

        mean = statistics.fmean(self.samples_ms)
        std = statistics.stdev(self.samples_ms) if len(self.samples_ms) > 1 else 0.0
        p50, p90, p99 = percentiles(self.samples_ms, (50, 90, 99))
        return {
            "latency_b1_p50_ms": p50,
            "latency_b1_p90_ms": p90,
            "latency_b1_p99_ms": p99,
            "latency_b1_mean_ms": mean,
            "latency_b1_std_ms": std,
            "latency_b1_cv": std / mean if mean else 0.0,
            "cold_start_ms": self.cold_start_ms,
        }


class PeakMemory:
    """Samples this process's RSS every ``interval`` s in a thread; GPU peaks from torch.

    ``paused()`` stops the sampling thread (one reading before and after) around a batch-1
    latency loop: on a GPU that loop is bound by Python and kernel launches, and the thread's
    wake-ups, which take the GIL, added 1-3% to its p50 on an H100 (docs/gpu.md)."""

    def __init__(self, device: str, interval: float = 0.01) -> None:
        self.device, self.interval = device, interval
        self.peak_rss = 0
        self._proc: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        self.peak_rss = max(self.peak_rss, self._proc.memory_info().rss)

    def _start(self) -> None:
        stop = self._stop = threading.Event()

        def loop() -> None:
            while not stop.wait(self.interval):
                self._sample()

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()

    def _halt(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> PeakMemory:
        import psutil

        self._proc = psutil.Process()
        self._sample()
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.reset_peak_memory_stats(self.device)
        self._start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._halt()
        self._sample()

    @contextmanager
    def paused(self) -> Iterator[None]:
        """No sampling thread inside the block; RSS is read on entry and on exit."""
        self._halt()
        self._sample()
        try:
            yield
        finally:
            self._sample()
            self._start()

    def result(self) -> dict[str, float]:
        out = {"peak_rss_mb": self.peak_rss / 2**20}
        if self.device.startswith("cuda"):
            import torch

            out["peak_gpu_mem_mb"] = torch.cuda.max_memory_allocated(self.device) / 2**20
            out["peak_gpu_reserved_mb"] = torch.cuda.max_memory_reserved(self.device) / 2**20
        return out


def is_raw(batch: Mapping[str, Any]) -> bool:
    """Whether ``batch`` holds raw examples (``harness.examples``: ``examples``/``lengths`` in
    words) rather than token ids."""
    return "input_ids" not in batch


def _seq_len(batch: dict[str, Any]) -> int:
    """Padded length in tokens, or for a batch of raw examples (``harness.examples``) its
    longest input in words."""
    if is_raw(batch):
        return max(batch["lengths"], default=0)
    return int(batch["input_ids"].shape[-1])


def _counts(batch: dict[str, Any]) -> tuple[int, int]:
    """(samples, non-padding tokens) of a batch; words for raw examples."""
    if is_raw(batch):
        return len(batch["examples"]), int(sum(batch["lengths"]))
    return int(batch["input_ids"].shape[0]), int(batch["attention_mask"].sum())


def measure_latency(
    predictor: Predictor,
    batches: Sequence[dict[str, Any]],
    *,
    warmup: int = 10,
    min_iterations: int = 50,
    min_duration_s: float = 2.0,
    max_iterations: int = 100_000,
) -> LatencyResult:
    """Time one call per iteration over ``batches`` (batch-1 real inputs) in whole passes: the
    loop stops at the end of the first pass after which both ``min_iterations`` and
    ``min_duration_s`` are reached, so every predictor of a task is timed on the same multiset
    of inputs (each input the same number of times), however fast it is. ``max_iterations``
    bounds the run (rounded down to whole passes, at least one)."""
    if not batches:
        raise ValueError("no inputs to time")
    n = len(batches)
    cap = max(n, max_iterations - max_iterations % n)
    cuda = predictor.device.startswith("cuda")
    t0 = time.perf_counter()
    predictor(batches[0])
    predictor.synchronize()
    cold = (time.perf_counter() - t0) * 1000
    for i in range(warmup):
        predictor(batches[i % n])
    predictor.synchronize()

    def more(i: int, start: float) -> bool:
        if i % n:  # finish the pass
            return True
        return i < cap and (i < min_iterations or time.perf_counter() - start < min_duration_s)

    samples: list[float] = []
    lens: list[int] = []
    start = time.perf_counter()
    i = 0
    if cuda:
        import torch

        events = []
        while more(i, start):
            b = batches[i % n]
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            predictor(b)
            e.record()
            events.append((s, e))
            lens.append(_seq_len(b))
            i += 1
            if i % 64 == 0:  # bound the queue so wall-clock duration is meaningful
                torch.cuda.synchronize(predictor.device)
        torch.cuda.synchronize(predictor.device)
        samples = [s.elapsed_time(e) for s, e in events]
    else:
        while more(i, start):
            b = batches[i % n]
            t = time.perf_counter()
            predictor(b)
            samples.append((time.perf_counter() - t) * 1000)
            lens.append(_seq_len(b))
            i += 1
    return LatencyResult(samples, cold, warmup, lens, inputs=n)


def measure_throughput(
    predictor: Predictor,
    batches: Sequence[dict[str, Any]],
    *,
    warmup: int = 2,
    min_duration_s: float = 2.0,
    min_batches: int = 3,
    max_batches: int = 10_000,
) -> dict[str, float]:
    """Samples/s and tokens/s (non-padding tokens) over real batches of the throughput size,
    in whole passes over ``batches`` (the same inputs for every predictor)."""
    if not batches:
        raise ValueError("no inputs to time")
    for i in range(min(warmup, len(batches))):
        predictor(batches[i])
    predictor.synchronize()
    n = samples = tokens = 0
    start = time.perf_counter()
    while n % len(batches) or (
            n < max_batches and (n < min_batches or time.perf_counter() - start < min_duration_s)):
        b = batches[n % len(batches)]
        predictor(b)
        done, toks = _counts(b)
        samples += done
        tokens += toks
        n += 1
    predictor.synchronize()
    elapsed = time.perf_counter() - start
    return {"throughput_samples_s": samples / elapsed, "throughput_tokens_s": tokens / elapsed}


def fixed_length(batches: Sequence[dict[str, Any]], length: int) -> list[dict[str, Any]]:
    """The same real inputs at exactly ``length`` tokens: longer ones cut, shorter ones repeated
    along the sequence (so every position is a real token and attends), attention all ones.
    For timing at a stated fixed length (``settings.latency_seq_len``); not for accuracy."""
    out = []
    for batch in batches:
        n = _seq_len(batch)
        fixed: dict[str, Any] = {}
        for key, t in batch.items():
            if getattr(t, "ndim", 0) != 2 or t.shape[1] != n:
                fixed[key] = t
            elif key == "attention_mask":
                fixed[key] = t.new_ones((t.shape[0], length))
            else:
                fixed[key] = t[:, :length] if n >= length else t.repeat(1, -(-length // n))[:, :length]
        out.append(fixed)
    return out


def describe_lengths(lens: Sequence[int], fixed: int = 0, unit: str = "tokens") -> str:
    """The ``seq_len`` column: the timed inputs' lengths (``unit``: tokens, or words for a model
    that takes raw examples)."""
    if fixed:
        return f"fixed length: {fixed} {unit} (real inputs cut or repeated)"
    if not lens:
        return ""
    xs = sorted(lens)
    return f"real lengths: p50 {xs[len(xs) // 2]} / max {xs[-1]} {unit}"
