"""Timing in rotation: each variant alone in a process of its own, timed in rounds.

ONNX Runtime's and OpenVINO's thread pools keep spinning after a call and take the cores from
whatever runs next in the same process (docs/methodology.md): one process per variant, then, in
which nothing else ever runs. Those processes are started once and kept alive across the rounds,
suspended (SIGSTOP) while the others are timed, so that no thread of theirs runs meanwhile (a
runtime's workers spin for a while after a call); each round times every variant once, in an order
rotated by one each round, so a slow minute of a shared machine falls on every variant, and the
ratio of two variants *within a round* cancels it. :class:`Variant` is such a process (it
rebuilds its predictor from the caches: :mod:`harness.replay`); :func:`rotate` runs the rounds;
:func:`ratio` summarises per-round ratios (median, bootstrap CI). The run's timing phase
(:mod:`harness.timephase`) and ``harness compare --retime`` (:mod:`harness.gate.retime`) are
built on them.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import signal
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from .cell import CellSpec
from .errors import HarnessError

__all__ = ["RotationError", "RoundBudget", "Timed", "Variant", "ratio", "rotate", "start_all"]

#: seconds a variant may take to rebuild its predictor, and to time one round
READY_TIMEOUT_S = 900.0
ROUND_TIMEOUT_S = 300.0
#: pause after a variant's turn where processes cannot be suspended, so its runtime's spinning
#: workers go idle before the next one
SETTLE_S = 0.05


class RotationError(HarnessError):
    """A timing process that could not rebuild its predictor, died or hung (the message says
    which and why)."""


@dataclass(frozen=True)
class RoundBudget:
    """What one turn of a variant measures: ``warmup`` calls, then batch-1 calls in whole
    passes over the inputs for at least ``latency_s``, then throughput batches (whole passes)
    for at least ``throughput_s``."""

    warmup: int = 10
    latency_s: float = 0.4
    throughput_s: float = 0.4
    throughput: bool = True  #: False: batch-1 latency only (throughput_samples_s is then 0)


@dataclass
class Timed:
    """One variant's turn in one round."""

    p50_ms: float
    samples_ms: list[float]
    throughput_samples_s: float


def _time_turn(rebuilt: Any, budget: RoundBudget) -> Timed:
    from .stats import percentiles
    from .timing import measure_latency, measure_throughput

    lat = measure_latency(rebuilt.predictor, rebuilt.b1, warmup=budget.warmup,
                          min_iterations=len(rebuilt.b1), min_duration_s=budget.latency_s)
    thr = measure_throughput(rebuilt.predictor, rebuilt.bn, warmup=1, min_batches=len(rebuilt.bn),
                             min_duration_s=budget.throughput_s) if budget.throughput else {}
    return Timed(percentiles(lat.samples_ms, [50])[0], lat.samples_ms,
                 thr.get("throughput_samples_s", 0.0))


def timing_threads(device: str) -> int | None:
    """Torch threads of a variant timed in rotation: every core on CPU, as a cell's worker has
    with ``--jobs 1`` (whatever ``--jobs`` the cells ran with: each variant runs alone); None on
    a GPU. Its rows record this in ``threads``."""
    return None if device.startswith("cuda") else (os.cpu_count() or 1)


def _serve(conn: Any, spec: CellSpec, expect: str | None, disabled: list[str], extra: list[str],
           threads: int | None, parent: int | None = None) -> None:
    """A timing process: rebuild the predictor, say so, then time a turn per request. It ends
    with its parent (``kill -9`` of ``harness run`` leaves no timing process behind, suspended
    or not: the kernel's parent-death signal is SIGKILL)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C
    if parent is not None:
        from .executors import _exit_with_parent

        _exit_with_parent(parent)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from .cell import PluginSet
    from .replay import rebuild

    try:
        if threads:
            import torch

            torch.set_num_threads(threads)
        rebuilt = rebuild(spec, PluginSet.build(disabled, extra), expect)
    except BaseException as exc:  # noqa: BLE001 - reported by the parent
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", rebuilt.artifact_sha256))
    try:
        while (budget := conn.recv()) is not None:
            conn.send(("timed", _time_turn(rebuilt, budget)))
    except EOFError:  # the parent went away
        pass
    finally:
        shutil.rmtree(rebuilt.work, ignore_errors=True)


class Variant:
    """A process that rebuilds one cell's predictor (:func:`harness.replay.rebuild`) and times
    it on request; ``name`` labels it in results and errors."""

    def __init__(self, name: str, spec: CellSpec, *, expect_sha256: str | None = None,
                 disabled: Sequence[str] = (), extra: Sequence[str] = ()) -> None:
        from .executors import start_pinned

        self.name, self.spec = name, spec
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        device = spec.device
        # pinned to its GPU, where it is cuda:0; on CPU the threads a cell's worker has (--jobs 1)
        threads = timing_threads(device)
        if threads is None:
            spec = replace(spec, device="cuda:0")
        self.proc = ctx.Process(target=_serve, daemon=True, args=(
            child, spec, expect_sha256, list(disabled), list(extra), threads, os.getpid()))
        start_pinned(self.proc, device)
        child.close()
        self.artifact_sha256: str | None = None

    def _receive(self, timeout: float, doing: str) -> tuple[str, Any]:
        if not self.conn.poll(timeout):
            self.close()
            raise RotationError(f"{self.name}: no answer within {timeout:g} s while {doing}")
        try:
            return self.conn.recv()
        except EOFError:
            code = self.proc.exitcode if not self.proc.is_alive() else None
            raise RotationError(f"{self.name}: its timing process died while {doing}"
                                f" (exit code {code})") from None

    def ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Wait until the predictor is rebuilt; :class:`RotationError` with its reason if not.
        The ready process is suspended until its first turn."""
        kind, value = self._receive(timeout, "rebuilding its predictor")
        if kind == "error":
            self.close()
            raise RotationError(f"{self.name}: {value}")
        self.artifact_sha256 = value
        self._signal(resume=False)

    def time(self, budget: RoundBudget, timeout: float = ROUND_TIMEOUT_S) -> Timed:
        """One turn: the process is resumed for it and suspended again right after, so that
        none of its threads (a runtime's spinning workers) runs during another variant's turn."""
        self._signal(resume=True)
        try:
            self.conn.send(budget)
            return self._receive(timeout, "timing")[1]
        finally:
            self._signal(resume=False)

    def _signal(self, *, resume: bool) -> None:
        """SIGCONT / SIGSTOP the process (psutil; on a platform without them: a short pause
        after the turn instead)."""
        import psutil

        try:
            proc = psutil.Process(self.proc.pid)
            proc.resume() if resume else proc.suspend()
        except (psutil.Error, OSError, AttributeError):
            if not resume:
                time.sleep(SETTLE_S)

    def close(self) -> None:
        self._signal(resume=True)
        try:
            self.conn.send(None)
        except (OSError, ValueError):
            pass
        self.proc.join(5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)
        self.conn.close()


def start_all(variants: Sequence[Variant]) -> tuple[list[Variant], dict[str, str]]:
    """Wait for every started variant: (the ready ones, {name: why} of those that are not)."""
    ok, failed = [], {}
    for v in variants:
        try:
            v.ready()
            ok.append(v)
        except RotationError as exc:
            failed[v.name] = str(exc)
    return ok, failed


def rotate(variants: Sequence[Variant], rounds: int, budget: RoundBudget, *,
           progress: Callable[[int, int], None] = lambda done, total: None,
           ) -> dict[str, list[Timed]]:
    """``rounds`` rounds; round r times ``variants[r % n:] + variants[:r % n]``, one turn each.
    :class:`RotationError` when a process fails (no partial result)."""
    out: dict[str, list[Timed]] = {v.name: [] for v in variants}
    n = len(variants)
    for r in range(rounds):
        k = r % n
        for v in [*variants[k:], *variants[:k]]:
            out[v.name].append(v.time(budget))
        progress(r + 1, rounds)
    return out


def ratio(values: Sequence[float], reference: Sequence[float], seed: int = 0,
          resamples: int = 2000) -> tuple[float, float, float, list[float]]:
    """(median, 95% CI low, high, per-round ratios) of ``values[r] / reference[r]``; the CI is
    a percentile bootstrap of the median over rounds."""
    from .stats import bootstrap, percentile_interval

    ratios = [v / r for v, r in zip(values, reference, strict=True) if r > 0]
    if not ratios:
        raise ValueError("no rounds to compare")
    med = statistics.median(ratios)
    if len(ratios) < 2:
        return med, med, med, ratios
    import numpy as np

    boots = bootstrap(np.asarray(ratios), lambda s: np.median(s, axis=1), resamples, seed,
                      vectorized=True)
    lo, hi = percentile_interval(boots)
    return med, lo, hi, ratios
