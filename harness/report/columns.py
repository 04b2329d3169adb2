"""Where each metric of a task goes on the page, decided from the result rows alone.

* the task's main metric (``main_metric``) is the third leaderboard column, with its CI;
* the core's own measurements (size, parameters, latency, throughput, memory) have fixed columns;
* every other metric the task returned goes where its ``metric_group`` says
  (:attr:`harness.api.MetricValue.group`): ``""`` is a leaderboard column of its own, except that
  a dotted name ``x.y`` joins a table ``x`` with a column ``y``; a group name makes a table of
  its own, titled with it, gathering the metrics that share it. Rows written before the column
  existed have no group and get the ``""`` placement.

Batch-1 p50 latency and throughput are the rotation-timed figures where a cell has them
(:mod:`harness.report.rotation`), else the cell's own; the ratios to the group's reference
variant that rotation timing records get two columns of their own, only in a task that has them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..analysis.cells import CellResult, higher_is_better, main_metric, metric_kind
from ..rows import as_text
from ..validation import PREFIX as VALIDATION
from .format import num
from .rotation import P50 as ROTATION_P50
from .rotation import RATIO_HELP, RATIOS, THROUGHPUT, Rotation, pick, rotation_of, source_help

__all__ = ["Col", "Group", "TaskLayout", "columns", "delta", "layout", "values"]

DELTA_NEUTRAL_LATENCY = 0.05  # measurement noise: latency/throughput/RSS changes within 5% are grey
DELTA_NEUTRAL_ABS = 0.0005
GROUP_COLUMN = "metric_group"


@dataclass
class Col:
    """A leaderboard column."""

    key: str
    label: str
    numeric: bool
    help: str = ""
    hib: bool | None = None  # for colouring deltas (None: no delta)
    relative: bool = True  # delta as % (else absolute)
    neutral: float = 0.01  # |relative change| below this is shown grey
    metric: str | None = None  # the task metric shown (extra columns, ratio columns)
    ci: bool = False  # the value's CI (``metric``'s ci_low/ci_high) shown in brackets


@dataclass
class Group:
    """A table of task metrics beside the leaderboard (per-label scores and the like)."""

    title: str
    metrics: list[str] = field(default_factory=list)

    @property
    def prefix(self) -> str:
        """``x`` when every metric is named ``x.<label>``, else ""."""
        heads = {m.split(".", 1)[0] for m in self.metrics}
        return heads.pop() if len(heads) == 1 and all("." in m for m in self.metrics) else ""

    def labels(self) -> list[str]:
        p = self.prefix
        return [m[len(p) + 1:] if p else m for m in self.metrics]


@dataclass
class TaskLayout:
    """What a task's section shows, from its cells' rows."""

    main: str | None
    main_hib: bool
    main_desc: str
    p50: str | None
    p90: str | None
    has_gpu: bool
    extra: list[str]  #: task metrics with a leaderboard column of their own
    groups: list[Group]  #: task metrics in tables of their own, in the order first recorded
    rot: Rotation = field(default_factory=Rotation)  #: the rotation metrics the cells have
    #: the split the main metric was scored on (rows' ``split``), when a validation column is
    #: shown beside it ("" otherwise)
    main_split: str = ""


def _latency_metric(cells: Sequence[CellResult], q: int) -> str | None:
    names = {m for c in cells for m in c.metrics}
    if f"latency_b1_p{q}_ms" in names:
        return f"latency_b1_p{q}_ms"
    found = sorted((int(m.group(1)), m.group(0)) for n in names
                   if (m := re.fullmatch(rf"latency_b(\d+)_p{q}_ms", n)))
    return found[0][1] if found else None


def layout(cells: Sequence[CellResult]) -> TaskLayout:
    """The layout of one task's section (``cells``: all of the task's cells)."""
    ok = [c for c in cells if c.status == "ok"]
    main = main_metric(cells)
    main_desc = next((as_text(c.column(main, "metric_description")) for c in ok
                      if as_text(c.column(main, "metric_description"))), "")
    extra: list[str] = []
    groups: dict[str, Group] = {}
    for c in ok:
        for name, row in c.metrics.items():
            if name == main or metric_kind(name) != "accuracy" or name in extra:
                continue
            title = as_text(row.get(GROUP_COLUMN))
            if not title and "." in name:
                title = f"{name.split('.', 1)[0]} by label"
            if not title:
                extra.append(name)
                continue
            g = groups.setdefault(title, Group(title))
            if name not in g.metrics:
                g.metrics.append(name)
    main_split = next((as_text(c.column(main, "split")) for c in ok if as_text(c.column(main, "split"))), "")
    return TaskLayout(main, higher_is_better(cells, main, True), main_desc,
                      _latency_metric(cells, 50), _latency_metric(cells, 90),
                      any(c.value("peak_gpu_mem_mb") is not None for c in ok), extra,
                      list(groups.values()), rotation_of(ok),
                      (main_split or "evaluation") if any(m.startswith(VALIDATION) for m in extra) else "")


def columns(lay: TaskLayout, cells: Sequence[CellResult]) -> list[Col]:
    """The leaderboard's columns: model, compression, main metric, the task's other metrics,
    then the core's measurements and the status."""
    lat_label = (lay.p50 or "latency_b1_p50_ms").replace("latency_", "").replace("_ms", "")
    cols = [
        Col("model", "Model", False, "model label from the suite"),
        Col("compression", "Compression", False, "compression label from the suite"),
        Col("main", f"{lay.main or 'main metric'}" + (f" ({lay.main_split})" if lay.main_split else ""), True,
            (lay.main_desc or "the task's main metric") + "; 95% bootstrap CI in brackets",
            hib=lay.main_hib, relative=False),
    ]
    for name in lay.extra:
        desc = next((as_text(c.column(name, "metric_description")) for c in cells
                     if as_text(c.column(name, "metric_description"))), "")
        label = f"{name[len(VALIDATION):]} (validation)" if name.startswith(VALIDATION) else name
        cols.append(Col(f"metric:{name}", label, True, desc or "a metric the task returned",
                        hib=higher_is_better(cells, name, True), relative=False, metric=name))
    cols += [
        Col("size_mb", "Size MB", True, "serialized model, 10^6 bytes", hib=False),
        Col("parameters", "Params", True, "parameters (nonzero in brackets when different)"),
        Col("p50", f"{lat_label} ms", True,
            source_help("batch-1 latency, median", lay.rot.p50, lay.rot.ok), hib=False,
            neutral=DELTA_NEUTRAL_LATENCY),
        Col("p90", f"{lat_label.replace('p50', 'p90')} ms", True,
            "batch-1 latency, 90th percentile", hib=False, neutral=DELTA_NEUTRAL_LATENCY),
        Col("throughput", "Throughput /s", True,
            source_help("samples per second at the throughput batch size", lay.rot.throughput,
                        lay.rot.ok), hib=True, neutral=DELTA_NEUTRAL_LATENCY),
        *_ratio_columns(lay.rot),
        Col("rss", "Peak RSS MB", True, "peak resident memory", hib=False,
            neutral=DELTA_NEUTRAL_LATENCY),
    ]
    if lay.has_gpu:
        cols.append(Col("gpu", "GPU MB", True, "peak GPU memory", hib=False))
    cols.append(Col("status", "Status", False, "ok, failed or skipped (hover for the reason)"))
    return cols


def _ratio_columns(rot: Rotation) -> list[Col]:
    """The ratio columns of a task with rotation timing (none without)."""
    return [Col(RATIOS[m][0], RATIOS[m][1], True, f"{RATIOS[m][3]} {RATIO_HELP}",
                hib=RATIOS[m][2], neutral=DELTA_NEUTRAL_LATENCY, metric=m, ci=True)
            for m in rot.ratios]


def values(c: CellResult, lay: TaskLayout) -> dict[str, Any]:
    """A cell's number for each numeric column key (p50 and throughput: rotation-timed where
    the cell has it)."""
    size = c.value("size_bytes")
    out = {
        "main": c.value(lay.main), "size_mb": size / 1e6 if size is not None else None,
        "parameters": c.value("parameters"), "p50": pick(c, ROTATION_P50, lay.p50),
        "p90": c.value(lay.p90), "throughput": pick(c, THROUGHPUT, "throughput_samples_s"),
        "rss": c.value("peak_rss_mb"), "gpu": c.value("peak_gpu_mem_mb"),
    }
    out.update({f"metric:{name}": c.value(name) for name in lay.extra})
    out.update({RATIOS[m][0]: c.value(m) for m in lay.rot.ratios})
    return out


def delta(cur: float | None, base: float | None, col: Col) -> dict[str, str] | None:
    """The change against the baseline, coloured by the column's direction."""
    if cur is None or base is None or col.hib is None:
        return None
    d = cur - base
    if col.relative:
        if base == 0:
            return None
        rel = d / abs(base)
        shown, neutral = f"{rel:+.1%}", abs(rel) < col.neutral
        title = f"baseline {num(base)}, change {d:+.4g} ({rel:+.2%})"
    else:
        shown, neutral = f"{d:+.4f}", abs(d) < DELTA_NEUTRAL_ABS
        title = f"baseline {num(base)}, change {d:+.4f}"
    cls = "same" if neutral else ("better" if (d > 0) == col.hib else "worse")
    return {"text": shown, "cls": cls, "title": title}
