"""Latency and throughput loops: whole passes over the inputs, so every predictor of a task is
timed on the same inputs however fast it is."""

from __future__ import annotations

import time
from collections import Counter

import torch

from harness.api import Predictor
from harness.timing import measure_latency, measure_throughput


class Recorder(Predictor):
    """Sleeps ``delay`` seconds per call and records the sequence length it was given."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.seen: list[int] = []

    def __call__(self, batch):
        self.seen.append(int(batch["input_ids"].shape[-1]))
        if self.delay:
            time.sleep(self.delay)
        return torch.zeros(1, 2)

    def save(self, directory):  # not measured here
        raise NotImplementedError

    def parameter_counts(self):
        return (0, 0)


def batches(n: int, size: int = 1) -> list[dict]:
    """``n`` batches whose sequence lengths 1..n identify them."""
    return [{"input_ids": torch.ones(size, i + 1, dtype=torch.long),
             "attention_mask": torch.ones(size, i + 1, dtype=torch.long)} for i in range(n)]


def test_slow_and_fast_predictors_are_timed_on_the_same_inputs():
    inputs = batches(8)
    fast, slow = Recorder(0.0), Recorder(0.004)
    settings = {"warmup": 0, "min_iterations": 3, "min_duration_s": 0.01}
    lat_fast = measure_latency(fast, inputs, **settings)
    lat_slow = measure_latency(slow, inputs, **settings)
    # the slow one stops after its first pass; the fast one after some whole number of passes
    for lat in (lat_fast, lat_slow):
        counts = Counter(lat.seq_lens)
        assert set(counts) == set(range(1, 9)), counts
        assert len(set(counts.values())) == 1, counts  # every input timed equally often
        assert lat.inputs == 8 and lat.passes * 8 == len(lat.samples_ms)
    assert lat_slow.passes == 1  # one pass (8 x 4 ms) already exceeds 3 iterations and 0.01 s
    assert lat_fast.passes > 1  # 0.01 s of near-zero calls takes many passes


def test_min_iterations_rounds_up_to_a_whole_pass():
    lat = measure_latency(Recorder(0.0), batches(64), warmup=0, min_iterations=65, min_duration_s=0)
    assert len(lat.samples_ms) == 128 and lat.passes == 2


def test_max_iterations_caps_whole_passes():
    lat = measure_latency(Recorder(0.0), batches(10), warmup=0, min_iterations=10**6,
                          min_duration_s=0, max_iterations=35)
    assert len(lat.samples_ms) == 30 and lat.passes == 3


def test_throughput_runs_whole_passes_over_the_batches():
    rec = Recorder(0.0)
    out = measure_throughput(rec, batches(5, size=4), warmup=0, min_duration_s=0, min_batches=6)
    counts = Counter(rec.seen)
    assert sum(counts.values()) == 10 and set(counts.values()) == {2}
    assert out["throughput_samples_s"] > 0 and out["throughput_tokens_s"] > out["throughput_samples_s"]


def test_peak_memory_pauses_its_sampler_but_keeps_the_peak():
    import threading

    from harness.timing import PeakMemory

    def samplers() -> int:
        return sum(t.is_alive() and t.daemon and t.name.startswith("Thread") for t in threading.enumerate())

    before = samplers()
    with PeakMemory("cpu", interval=0.001) as mem:
        assert samplers() == before + 1
        with mem.paused():
            assert samplers() == before  # no sampling thread while timing
            blob = bytearray(64 * 2**20)  # 64 MiB touched inside the pause
            blob[:: 4096] = b"x" * len(blob[:: 4096])
            inside = mem.peak_rss
        assert samplers() == before + 1 and mem.peak_rss >= inside + 60 * 2**20  # read on exit
        del blob
    assert samplers() == before
    assert mem.result()["peak_rss_mb"] * 2**20 == mem.peak_rss
