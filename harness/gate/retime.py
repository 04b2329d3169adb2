"""``harness compare BASE CUR --retime``: the latency checks re-measured here and now.

A latency figure recorded minutes or days apart carries the load of its machine at that time;
on a shared machine that drift is larger than the regressions worth catching (docs/
regression-gate.md). ``--retime`` rebuilds the baseline's and the current run's artifact of each
cell from this machine's cache (:mod:`harness.replay`: the recipe its cell left in
``<cache_dir>/artifacts/``, checked against the ``artifact_sha256`` its rows recorded), each in
a process of its own (:class:`harness.rotation.Variant`), and times them in alternation, A then
B, B then A, over ``rounds`` rounds, as asv's ``continuous`` and pyperf do. Each round gives the
log-ratio of the current's figure to the baseline's, taken seconds apart; the gate reads their
mean with a 95% Student-t confidence interval, and flags a slowdown only when the whole interval
lies above the allowed increase.

Both sides run with the installed harness and runtimes: a regression in runtime code (a new
onnxruntime) shows only when recorded runs are compared. A cell whose artifact is not in this
cache (or rebuilds differently) keeps its recorded figures, with a note saying so.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..rows import CellKey, as_text, cell_label

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["RETIMED_METRICS", "RetimeOptions", "Retimed", "paired_log_ratio", "retime", "retime_tables"]

#: recorded metric -> which retimed figure replaces it in the gate
RETIMED_METRICS = {"latency_b1_p50_ms": "p50", "latency_b1_rotation_p50_ms": "p50",
                   "throughput_samples_s": "throughput",
                   "throughput_rotation_samples_s": "throughput"}


@dataclass
class RetimeOptions:
    """How ``--retime`` re-times: ``rounds`` alternating rounds per cell, artifacts rebuilt from
    ``cache_dir`` with these plugins (disabled, extra modules)."""

    rounds: int = 10
    cache_dir: Path = Path(".harness-cache")
    disabled: Sequence[str] = ()
    extra: Sequence[str] = ()
    progress: Callable[[str], None] = lambda text: None

    @classmethod
    def given(cls, rounds: int, cache_dir: Any, disabled: Sequence[str], extra: Sequence[str],
              progress: Callable[[str], None]) -> RetimeOptions | None:
        """The options of ``--retime ROUNDS`` (None for 0: the recorded figures are used)."""
        return cls(rounds, Path(cache_dir or ".harness-cache"), disabled, extra, progress) if rounds else None


@dataclass
class Retimed:
    """The alternating rounds of one cell: per-round figures of each side."""

    rounds: int
    base: dict[str, list[float]] = field(default_factory=dict)  #: "p50"/"throughput" -> rounds
    cur: dict[str, list[float]] = field(default_factory=dict)

    def change(self, figure: str) -> tuple[float, float, float]:
        """(relative change, 95% CI low, high) of the current vs the baseline figure."""
        return paired_log_ratio(self.base[figure], self.cur[figure])


def paired_log_ratio(base: Sequence[float], cur: Sequence[float]) -> tuple[float, float, float]:
    """exp(mean log(cur/base)) - 1 and its 95% Student-t CI over the rounds."""
    from scipy.stats import t as student_t

    d = [math.log(c / b) for b, c in zip(base, cur, strict=True) if b > 0 and c > 0]
    if not d:
        raise ValueError("no rounds")
    mean = statistics.fmean(d)
    if len(d) < 2:
        return math.expm1(mean), -math.inf, math.inf
    half = float(student_t.ppf(0.975, len(d) - 1)) * statistics.stdev(d) / math.sqrt(len(d))
    return math.expm1(mean), math.expm1(mean - half), math.expm1(mean + half)


def _recipe(cache_dir: Path, row: Mapping[str, Any]) -> tuple[Any, str | None] | str:
    from ..replay import read_recipe

    cell_id = as_text(row.get("cell_id"))
    got = read_recipe(cache_dir, cell_id)
    if got is None:
        return f"artifact {cell_id} is not in this machine's cache ({cache_dir})"
    spec, sha = got
    return spec, as_text(row.get("artifact_sha256")) or sha


def _time_pair(a: Any, b: Any, rounds: int, budget: Any) -> Retimed:
    """``rounds`` rounds of :func:`harness.rotation.rotate` over the two sides: A then B, then
    B then A, and so on."""
    from ..rotation import rotate

    timed = rotate([a, b], rounds, budget)

    def figures(name: str) -> dict[str, list[float]]:
        return {"p50": [t.p50_ms for t in timed[name]],
                "throughput": [t.throughput_samples_s for t in timed[name]]}

    return Retimed(rounds, figures(a.name), figures(b.name))


def retime(pairs: Mapping[CellKey, tuple[Mapping[str, Any], Mapping[str, Any]]], cache_dir: Path, *,
           rounds: int = 10, disabled: Sequence[str] = (), extra: Sequence[str] = (),
           progress: Callable[[str], None] = lambda text: None, throughput: bool = True,
           ) -> tuple[dict[CellKey, Retimed], list[str]]:
    """Re-time each cell of ``pairs`` ({key: (baseline row, current row)}): the rounds by
    cell, and a note for each cell kept at its recorded figures. ``throughput``: time the
    throughput batches too (only when a throughput metric is gated: it doubles the time)."""
    from ..rotation import RotationError, RoundBudget, Variant

    done: dict[CellKey, Retimed] = {}
    notes: list[str] = []
    for key, (brow, crow) in pairs.items():
        label = cell_label(key)
        b, c = _recipe(Path(cache_dir), brow), _recipe(Path(cache_dir), crow)
        if isinstance(b, str) or isinstance(c, str):
            missing = "; ".join(x for x in (b, c) if isinstance(x, str))
            notes.append(f"{label}: not re-timed, recorded figures used ({missing})")
            continue
        (bspec, bsha), (cspec, csha) = b, c
        s = cspec.settings
        budget = RoundBudget(warmup=s.warmup, latency_s=max(0.2, s.min_duration_s / 4),
                             throughput_s=max(0.2, min(1.0, s.min_duration_s / 4)),
                             throughput=throughput)
        sides = [Variant(f"baseline {label}", bspec, expect_sha256=bsha, disabled=disabled, extra=extra),
                 Variant(f"current {label}", cspec, expect_sha256=csha, disabled=disabled, extra=extra)]
        try:
            for v in sides:
                v.ready()
            progress(f"re-timing {label}: {rounds} alternating rounds")
            done[key] = _time_pair(sides[0], sides[1], rounds, budget)
        except RotationError as exc:
            notes.append(f"{label}: not re-timed, recorded figures used ({exc})")
        finally:
            for v in sides:
                v.close()
    return done, notes


def retime_pairs(base: Mapping[CellKey, Any], cur: Mapping[CellKey, Any],
                 metrics: Sequence[str]) -> dict[CellKey, tuple[dict[str, Any], dict[str, Any]]]:
    """The cells ok in both runs that record one of ``metrics`` (the gated latency metrics
    that re-timing replaces): {key: (a baseline row, a current row)}."""
    wanted = [m for m in metrics if m in RETIMED_METRICS]
    out = {}
    for key, b in base.items():
        c = cur.get(key)
        if c is None or b.status != "ok" or c.status != "ok":
            continue
        if any(m in b.metrics and m in c.metrics for m in wanted):
            out[key] = (b.info, c.info)
    return out


def frame_pairs(baseline: pd.DataFrame, current: pd.DataFrame,
                metrics: Sequence[str]) -> dict[CellKey, tuple[dict[str, Any], dict[str, Any]]]:
    from ..analysis.cells import cells_of

    return retime_pairs(cells_of(baseline, "baseline"), cells_of(current, "current"), metrics)


def retime_tables(baseline: pd.DataFrame, current: pd.DataFrame, metrics: Sequence[str],
                  opts: RetimeOptions) -> tuple[dict[CellKey, Retimed], list[str]]:
    """:func:`retime` of the cells of two result tables that record a gated latency metric."""
    throughput = any(RETIMED_METRICS.get(m) == "throughput" for m in metrics)
    return retime(frame_pairs(baseline, current, metrics), opts.cache_dir, rounds=opts.rounds,
                  disabled=opts.disabled, extra=opts.extra, progress=opts.progress,
                  throughput=throughput)
