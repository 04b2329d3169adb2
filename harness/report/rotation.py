"""Rotation timing in the report: which figures of a cell come from it, and the words for them.

Rotation timing times every variant of a (model, task) alone in its own process, in rounds of
rotated order, and records for each ok cell it timed :data:`P50` and :data:`THROUGHPUT` (medians
over rounds, comparable across models) and :data:`RATIO_P50` and :data:`RATIO_THROUGHPUT`
(per-round ratios to the group's reference variant, their median with a bootstrap CI). Where a
cell has them the report shows them instead of the cell's own timing; a cell without them
(old results, a single-variant group, ``timing_rounds: 0``) is shown as it always was.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..analysis.cells import CellResult
from ..rows import as_float

__all__ = ["P50", "RATIOS", "RATIO_HELP", "RATIO_P50", "RATIO_THROUGHPUT", "ROTATED_KEYS",
           "ROTATION", "THROUGHPUT", "Rotation", "cell_title", "ci_of", "latency_axis", "pick",
           "ratio_cell", "record", "rotation_of", "same_source", "source_help", "tip_note"]

P50 = "latency_b1_rotation_p50_ms"
THROUGHPUT = "throughput_rotation_samples_s"
RATIO_P50 = "latency_b1_ratio"
RATIO_THROUGHPUT = "throughput_ratio"
#: how rotation timing works, said once wherever its figures are shown
ROTATION = ("rotation-timed: each variant of the (model, task) timed alone in its own process, "
            "in rounds of rotated order; median over rounds")
RATIO_HELP = ("ratio to the group's reference variant, timed in alternation in separate "
              "processes: median of per-round ratios, 95% bootstrap CI in brackets")
#: ratio metric -> (column key, label, higher is better, what it divides)
RATIOS = {RATIO_P50: ("ratio_latency", "× ref latency", False, "batch-1 latency p50"),
          RATIO_THROUGHPUT: ("ratio_throughput", "× ref throughput", True, "throughput")}
#: leaderboard column key -> the rotation metric shown in it when the cell has it
ROTATED_KEYS = {"p50": P50, "throughput": THROUGHPUT}


@dataclass(frozen=True)
class Rotation:
    """How many of a task's ok cells have each rotation metric."""

    ok: int = 0
    p50: int = 0
    throughput: int = 0
    ratios: tuple[str, ...] = ()  #: the ratio metrics some ok cell has, in :data:`RATIOS` order


def rotation_of(cells: Iterable[CellResult]) -> Rotation:
    """The rotation metrics among ``cells`` (a task's; only ok cells count)."""
    ok = [c for c in cells if c.status == "ok"]
    return Rotation(len(ok), sum(c.value(P50) is not None for c in ok),
                    sum(c.value(THROUGHPUT) is not None for c in ok),
                    tuple(m for m in RATIOS if any(c.value(m) is not None for c in ok)))


def pick(c: CellResult, rotated: str, own: str | None) -> float | None:
    """The rotation figure when the cell has it, else its own."""
    v = c.value(rotated)
    return v if v is not None else c.value(own)


def source_help(base: str, n: int, ok: int) -> str:
    """A column's description given that ``n`` of ``ok`` cells are rotation-timed."""
    if n == 0:
        return base
    if n >= ok:
        return f"{base}; {ROTATION}"
    return (f"{base}; mixed sources: {n} of {ok} cells {ROTATION} (hover a value for its "
            "source), the others timed within their own cell run")


def cell_title(c: CellResult, key: str, rot: Rotation) -> str:
    """A leaderboard value's hover title for the p50 and throughput columns of a task that has
    rotation timing ("" otherwise)."""
    metric = ROTATED_KEYS.get(key)
    if metric is None or not (rot.p50 if key == "p50" else rot.throughput):
        return ""
    return "rotation-timed" if c.value(metric) is not None else "timed within the cell's own run"


def same_source(c: CellResult, base: CellResult | None, key: str) -> bool:
    """Whether the cell's and its baseline cell's figures in column ``key`` come from the same
    timing (both rotation-timed or neither): a delta between the two sources would mislead."""
    metric = ROTATED_KEYS.get(key)
    if metric is None or base is None:
        return True
    return (c.value(metric) is None) == (base.value(metric) is None)


def latency_axis(label: str, rot: Rotation) -> str:
    """The latency chart's axis label."""
    if rot.p50 == 0:
        return f"batch-1 latency {label} (ms)"
    where = "" if rot.p50 >= rot.ok else " where measured"
    return f"batch-1 latency {label}, rotation-timed{where} (ms)"


def tip_note(c: CellResult) -> list[str]:
    """Tooltip lines of a cell's rotation figures (none without them)."""
    lines = []
    if c.value(P50) is not None:
        lines.append("latency p50: rotation-timed (p90: the cell's own timing)")
    for metric, (_, label, _, _) in RATIOS.items():
        v = c.value(metric)
        if v is not None:
            lo, hi = ci_of(c, metric)
            ci = f" [{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None else ""
            lines.append(f"{label.removeprefix('× ')}: {v:.3f}×{ci}")
    return lines


def ci_of(c: CellResult, metric: str) -> tuple[float | None, float | None]:
    """The metric's bootstrap CI (None, None without one)."""
    return as_float(c.column(metric, "ci_low")), as_float(c.column(metric, "ci_high"))


def ratio_cell(c: CellResult, metric: str | None) -> dict[str, Any]:
    """A ratio column's leaderboard value: ``0.612×`` with its CI in brackets."""
    v = c.value(metric)
    lo, hi = ci_of(c, metric) if metric else (None, None)
    return {"text": "–" if v is None else f"{v:.3f}×", "sort": v,
            "ci": f"[{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None else ""}


def record(c: CellResult, rot: Rotation) -> dict[str, Any]:
    """The rotation fields of a cell's ``leaderboard.csv`` row (none for a task without)."""
    out: dict[str, Any] = {}
    if rot.p50 or rot.throughput:
        out["latency_rotation_timed"] = c.value(P50) is not None
        out["throughput_rotation_timed"] = c.value(THROUGHPUT) is not None
    for metric in rot.ratios:
        lo, hi = ci_of(c, metric)
        out.update({metric: c.value(metric), f"{metric}_ci_low": lo, f"{metric}_ci_high": hi})
    return out
