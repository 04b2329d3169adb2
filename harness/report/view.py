"""The template's context: every value of the page already formatted, nothing marked safe.

:func:`build_view` reads the results through :func:`harness.analysis.cells.cells_of` (the reading the
gate uses too) and builds one section per task: leaderboard rows, the records behind
``leaderboard.csv``, chart tooltips, the charts and the tables of the task's other metrics.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..analysis.cells import CellResult, cells_of
from ..analysis.select import Selection
from ..rows import CellKey, as_float, as_json, as_text, cell_key, is_null
from .charts import SHAPES, chart, pareto_front, shape_path, tied_with_front
from .columns import Col, TaskLayout, columns, delta, layout, values
from .format import count, count_unit, num, short_label
from .glossary import metric_docs, provenance, unique
from .matrix import all_skipped, matrix
from .rotation import cell_title, latency_axis, ratio_cell, record, same_source, tip_note
from .summary import MAX_DROP, selections, summary

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["build_view"]

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b",
           "#e377c2", "#7f7f7f", "#bcbd22"]
#: colours of models when a task has several: distinguishable up to 12 models, then repeated
MODEL_PALETTE = [*PALETTE, "#393b79", "#8c6d31"]
_ORDER = {"ok": 0, "failed": 1, "skipped": 2}


def _runtime(c: CellResult) -> str:
    return as_text(c.info.get("runtime")) or "unknown"


def _shapes(runtimes: list[str]) -> dict[str, str]:
    """A marker shape per runtime (given once per ok cell): the most common one a circle, the
    others the next shapes in order of their cell count, then name (repeating after the last
    shape). No runtime is known by name: runtimes are plugins."""
    n = {r: runtimes.count(r) for r in set(runtimes)}
    order = sorted(n, key=lambda r: (-n[r], r))
    return {r: SHAPES[i % len(SHAPES)] for i, r in enumerate(order)}


@dataclass
class _Task:
    """One task's cells and what is derived from them once."""

    index: int
    name: str
    cells: list[CellResult]
    base: Mapping[CellKey, CellResult] | None
    lay: TaskLayout = field(init=False)
    cols: list[Col] = field(init=False)
    ranked: list[CellResult] = field(init=False)
    colour: dict[str, str] = field(init=False)
    badges: dict[CellKey, list[str]] = field(init=False)
    tied: dict[CellKey, list[str]] = field(init=False)  #: "size"/"latency": tied with that front
    models: list[str] = field(init=False)  #: the models with an ok cell, in name order
    multi: bool = field(init=False)  #: several models: colour by model, shape by runtime
    model_colour: dict[str, str] = field(init=False)
    shape: dict[str, str] = field(init=False)  #: runtime -> marker shape
    units: dict[str, str] = field(init=False)  #: metric -> the first unit a row records

    def __post_init__(self) -> None:
        self.lay = layout(self.cells)
        self.units = {}
        for c in self.cells:
            for m, r in c.metrics.items():
                if not self.units.get(m):
                    self.units[m] = as_text(r.get("unit"))
        self.cols = columns(self.lay, self.cells)
        sign = -1 if self.lay.main_hib else 1

        def rank(c: CellResult) -> tuple[int, float, str, str]:
            m = c.value(self.lay.main)
            return (_ORDER.get(c.status, 3), sign * (m if m is not None else -sign * 1e300),
                    c.model, c.compression)

        self.ranked = sorted(self.cells, key=rank)
        comps = sorted({c.compression for c in self.cells})
        self.colour = {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(comps)}
        # several models: colour = model, shape = runtime; one model: colour = compression
        self.models = sorted({c.model for c in self.cells if c.status == "ok"},
                             key=lambda m: (m.lower(), m))
        self.multi = len(self.models) > 1
        self.model_colour = {m: MODEL_PALETTE[i % len(MODEL_PALETTE)]
                             for i, m in enumerate(self.models)}
        self.shape = _shapes([_runtime(c) for c in self.cells if c.status == "ok"])
        self.badges = {c.key: [] for c in self.cells}
        self.tied = {c.key: [] for c in self.cells}
        for xkey, badge in (("size_mb", "size"), ("p50", "latency")):
            front, tied = self._front(xkey)
            for c in front:
                self.badges[c.key].append(badge)
            for c in tied:
                self.tied[c.key].append(badge)

    def values(self, c: CellResult) -> dict[str, Any]:
        return values(c, self.lay)

    def colour_of(self, c: CellResult) -> str:
        """The cell's colour: its model's when the task has several, else its compression's."""
        if self.multi and c.model in self.model_colour:
            return self.model_colour[c.model]
        return self.colour[c.compression]

    def shape_of(self, c: CellResult) -> str:
        return self.shape.get(_runtime(c), "circle") if self.multi else "circle"

    def legend(self) -> dict[str, Any]:
        """What colour and shape mean on this task's charts; beyond the palette's models, the
        model entries grouped by plugin (``groups``), as colours repeat."""
        comps = [{"name": n, "colour": col} for n, col in self.colour.items()]
        if not self.multi:
            return {"by": "compression", "entries": comps, "compressions": comps, "shapes": [],
                    "repeats": False, "palette": len(PALETTE), "groups": []}
        entries = [{"name": m, "colour": self.model_colour[m]} for m in self.models]
        repeats = len(self.models) > len(MODEL_PALETTE)
        plugin = {c.model: as_text(c.info.get("model_plugin")) or "?" for c in self.cells}
        groups = [{"name": p, "entries": [e for e in entries if plugin[e["name"]] == p]}
                  for p in sorted({plugin[m] for m in self.models})] if repeats else []
        return {"by": "model", "entries": entries, "compressions": comps, "groups": groups,
                "shapes": [{"name": r, "shape": s, "d": shape_path(s, 7, 7, 5)}
                           for r, s in sorted(self.shape.items(), key=lambda kv: (
                               SHAPES.index(kv[1]), kv[0]))],
                "repeats": repeats, "palette": len(MODEL_PALETTE)}

    def text(self, metric: str, v: float | None, digits: int = 4) -> tuple[str, Any]:
        """A task metric's value as shown and as sorted: a whole number of a count unit
        (entities, sentences, bytes, ...) as an integer, anything else through :func:`num`."""
        if v is not None and count_unit(self.units.get(metric)) and float(v).is_integer():
            return (f"{v:,.0f}" if abs(v) >= 1e5 else f"{v:.0f}"), int(v)
        return num(v, digits), v

    def base_of(self, c: CellResult) -> CellResult | None:
        return self.base.get(c.key) if self.base is not None else None

    def base_values(self, c: CellResult) -> dict[str, Any] | None:
        bc = self.base_of(c)
        return self.values(bc) if bc is not None and bc.status == "ok" else None

    def _front(self, xkey: str) -> tuple[list[CellResult], list[CellResult]]:
        """The ok cells on the Pareto front of the main metric against ``xkey``, and those
        tied with it (accuracy CI overlapping a front point's that is as small/fast)."""
        pts = [(c, self.values(c)) for c in self.cells if c.status == "ok"]
        pts = [(c, v) for c, v in pts if v[xkey] is not None and v["main"] is not None]
        front = pareto_front([(v[xkey], v["main"]) for _, v in pts], maximize_y=self.lay.main_hib)
        tied = tied_with_front([(v[xkey], *_ci(c, self.lay.main)) for c, v in pts], front)
        return [pts[i][0] for i in front], [pts[i][0] for i in tied]


def _ci(c: CellResult, metric: str | None) -> tuple[float | None, float | None]:
    return as_float(c.column(metric, "ci_low")), as_float(c.column(metric, "ci_high"))


def _cell(t: _Task, c: CellResult, col: Col, v: dict[str, Any],
          bv: dict[str, Any] | None) -> dict[str, Any]:
    """One table cell of the leaderboard."""
    if col.key in ("model", "compression"):
        name = c.model if col.key == "model" else c.compression
        out: dict[str, Any] = {"text": name, "sort": name.lower(), "swatch": t.colour_of(c)}
        if col.key == "model":
            out["badges"] = t.badges[c.key]
            out["tied"] = t.tied[c.key]
        return out
    if col.key == "status":
        return {"text": c.status, "sort": c.status, "title": c.error, "status": c.status,
                "reason": c.error}
    x = v[col.key]
    if col.key == "main":
        lo, hi = _ci(c, t.lay.main)
        out = {"text": num(x), "ci": f"[{num(lo)}, {num(hi)}]" if lo is not None and hi is not None
               else ""}
    elif col.ci:
        out = ratio_cell(c, col.metric)
    elif col.key == "parameters":
        nz = c.value("nonzero_parameters")
        out = {"text": count(x), "ci": f"{count(nz)} nonzero" if nz is not None and x is not None
               and nz < 0.99 * x else "", "sort": int(x) if x is not None and x.is_integer() else x}
    elif col.metric:
        text, sort = t.text(col.metric, x)
        out = {"text": text, "sort": sort}
    else:
        out = {"text": num(x, 2), "title": cell_title(c, col.key, t.lay.rot)}
    out.setdefault("sort", x)
    same = bv is not None and same_source(c, t.base_of(c), col.key)
    out["delta"] = delta(x, bv[col.key], col) if bv is not None and same else None
    return out


_BLANK: dict[str, Any] = {"title": "", "badges": [], "tied": [], "swatch": "", "ci": "", "delta": None, "status": "",
          "reason": ""}


def _record(t: _Task, c: CellResult, v: dict[str, Any], bv: dict[str, Any] | None) -> dict[str, Any]:
    """The cell's row of ``leaderboard.csv`` / ``.json``."""
    lo, hi = _ci(c, t.lay.main)
    badges = t.badges[c.key]
    rec = {"task": t.name, "model": c.model, "compression": c.compression, "status": c.status,
           "error": c.error or None, "main_metric": t.lay.main, "main": v["main"],
           "ci_low": lo, "ci_high": hi, "size_mb": v["size_mb"], "parameters": v["parameters"],
           "nonzero_parameters": c.value("nonzero_parameters"),
           "bits_per_weight": c.value("bits_per_weight"),
           "latency_p50_ms": v["p50"], "latency_p90_ms": v["p90"],
           "throughput_samples_s": v["throughput"], "peak_rss_mb": v["rss"],
           "peak_gpu_mem_mb": v["gpu"], "pareto_size": "size" in badges,
           "pareto_latency": "latency" in badges,
           "tied_size": "size" in t.tied[c.key], "tied_latency": "latency" in t.tied[c.key],
           "runtime": as_text(c.info.get("runtime")) or None,
           "precision": as_text(c.info.get("precision")) or None}
    for name in t.lay.extra:
        rec.setdefault(name, v[f"metric:{name}"])
    rec.update(record(c, t.lay.rot))
    if bv is not None:
        rec.update({f"baseline_{k}": bv[k] for k in ("main", "size_mb", "p50", "p90", "throughput")})
    return rec


def _tip(t: _Task, c: CellResult, v: dict[str, Any], ci: str,
         bv: dict[str, Any] | None) -> dict[str, Any]:
    main = t.lay.main
    lines = [f"{main or 'main'}: {num(v['main'])} {ci}".rstrip(),
             f"size: {num(v['size_mb'], 2)} MB", f"params: {count(v['parameters'])}",
             f"latency p50 / p90: {num(v['p50'], 2)} / {num(v['p90'], 2)} ms",
             f"throughput: {num(v['throughput'], 2)} /s",
             f"runtime: {as_text(c.info.get('runtime'))} {as_text(c.info.get('precision'))}".rstrip(),
             *tip_note(c)]
    if t.badges[c.key]:
        lines.append("Pareto-optimal for " + " and ".join(t.badges[c.key]))
    if t.tied[c.key]:
        lines.append("tied with the front (CI overlaps) for " + " and ".join(t.tied[c.key]))
    if bv is not None:
        d = delta(v["main"], bv["main"], t.cols[2])
        if d:
            lines.append(f"vs baseline: {d['text']} {main}")
    return {"title": f"{c.model} / {c.compression}", "lines": lines}


def _charts(t: _Task, rows: list[dict[str, Any]],
            tips: dict[str, dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """The size and latency charts (one point per ok cell with both coordinates)."""
    charts, unplotted = [], []
    lat_label = t.cols[[c.key for c in t.cols].index("p50")].label.removesuffix(" ms")
    for xkey, ckey, xlabel in (("size_mb", "size", "size (MB, 10^6 bytes)"),
                               ("p50", "latency", latency_axis(lat_label, t.lay.rot))):
        pts, ghosts = [], []
        for row, c in zip(rows, t.ranked):
            if c.status != "ok":
                continue
            v = t.values(c)
            if v[xkey] is None or v["main"] is None or v[xkey] <= 0:
                unplotted.append(f"{c.model} / {c.compression} (no {xkey.replace('_mb', '')})")
                continue
            label = f"{c.model} / {c.compression}"
            pts.append({"x": v[xkey], "y": v["main"], "key": (c.model, c.compression),
                        "row": row["id"], "label": short_label(c.model, c.compression),
                        "full": label, "colour": t.colour_of(c), "shape": t.shape_of(c),
                        "model": c.model, "compression": c.compression,
                        "runtime": _runtime(c),
                        "tied": ckey in t.tied[c.key],
                        "tip": "\n".join([label] + tips[row["id"]]["lines"])})
            bv = t.base_values(c)
            if bv is not None and bv[xkey] is not None and bv["main"] is not None and bv[xkey] > 0:
                ghosts.append({"x": bv[xkey], "y": bv["main"], "key": (c.model, c.compression),
                               "tip": f"baseline: {label}"})
        if pts:
            charts.append(chart(f"chart-t{t.index}-{ckey}", f"{t.lay.main} vs {ckey}", xlabel,
                                t.lay.main or "main metric", pts, ghosts, t.lay.main_hib,
                                x_zero=False))
    return charts, sorted(set(unplotted))


def _tables(t: _Task) -> list[dict[str, Any]]:
    """A table per group of the task's other metrics; a row per ok cell (no table without
    rows)."""
    ok = [c for c in t.ranked if c.status == "ok"]
    out = []
    for j, g in enumerate(t.lay.groups):
        rows = [{"model": c.model, "compression": c.compression,
                 "cells": [dict(zip(("text", "sort"), t.text(m, c.value(m)))) for m in g.metrics]}
                for c in ok]
        if not rows:
            continue
        out.append({"title": g.title, "metric": g.prefix, "labels": g.labels(), "rows": rows,
                    "id": f"breakdown-t{t.index}-{j}"})
    return out


def _task_view(ti: int, task: str, cells: list[CellResult],
               base: Mapping[CellKey, CellResult] | None, sels: list[Selection],
               max_drop: float) -> dict[str, Any]:
    t = _Task(ti, task, cells, base)
    rows: list[dict[str, Any]] = []
    records: list[dict[str, Any]] = []
    tips: dict[str, dict[str, Any]] = {}
    for c in t.ranked:
        v, bv = t.values(c), t.base_values(c)
        rid = f"t{ti}-{len(rows)}"
        cells_out = [{**_BLANK, **_cell(t, c, col, v, bv)} for col in t.cols]
        rows.append({"id": rid, "status": c.status, "cells": cells_out,
                     "model": c.model, "compression": c.compression,
                     "search": f"{c.model} {c.compression} {c.status} {c.error}".lower(),
                     "new": base is not None and t.base_of(c) is None})
        records.append(_record(t, c, v, bv))
        tips[rid] = _tip(t, c, v, cells_out[2]["ci"], bv)
    charts, unplotted = _charts(t, rows, tips)
    row_ids = {(c.model, c.compression): r["id"] for c, r in zip(t.ranked, rows)}
    skipped = all_skipped(cells)  # models that cannot serve the task: no summary or matrix row
    missing_now = []
    if base is not None:
        present = {(c.model, c.compression) for c in cells}
        missing_now = sorted(f"{m} / {comp} ({bc.status} in baseline)"
                             for (m, tk, comp), bc in base.items()
                             if tk == task and (m, comp) not in present)
    return {
        "index": ti, "name": task, "id": f"task-{ti}", "plugin": as_text(cells[0].info.get("task_plugin")),
        "main": t.lay.main, "main_desc": t.lay.main_desc, "main_hib": t.lay.main_hib,
        "columns": t.cols, "rows": rows, "charts": charts, "unplotted": unplotted,
        "breakdowns": _tables(t), "missing_now": missing_now,
        "summary": summary([x for x in sels if x.model not in skipped], max_drop, row_ids),
        "matrix": matrix(ti, cells, t.lay, row_ids, skipped),
        "problems": [{"model": c.model, "compression": c.compression, "status": c.status,
                      "reason": c.error or "(no reason recorded)"} for c in t.ranked if c.status != "ok"],
        "counts": {s: sum(1 for c in cells if c.status == s) for s in ("ok", "failed", "skipped")},
        "seq_len": sorted({as_text(c.info.get("seq_len")) for c in cells} - {""}),
        "records": records, "tips": tips,
        "legend": t.legend(),
    }


def _latest(df: pd.DataFrame, cells: Mapping[CellKey, CellResult]) -> pd.DataFrame:
    """The rows that count (the last run of each cell), for the glossary and provenance."""
    if "run_id" not in df.columns:
        return df
    runs = {k: c.info.get("run_id") for k, c in cells.items()}

    def counts(r: Any) -> bool:
        last = runs.get(cell_key(r[:3]))
        return is_null(last) or r.run_id == last

    keep = [counts(r) for r in df[["model", "task", "compression", "run_id"]].itertuples(index=False)]
    return df[keep]


def build_view(results: pd.DataFrame, baseline: pd.DataFrame | None = None,
               title: str | None = None, max_drop: float = MAX_DROP) -> dict[str, Any]:
    """The template's context for ``results`` (and deltas against ``baseline``); each task's
    summary is ``harness select --max-drop max_drop``. Raises
    :class:`~harness.errors.DataError` for an empty table, one without the standard columns or
    a negative ``max_drop``."""
    from .. import __version__

    cells = cells_of(results, "results")
    bcells = cells_of(baseline, "baseline") if baseline is not None else None
    df = _latest(results, cells)
    tasks = sorted({c.task for c in cells.values()})
    sels = selections(results, max_drop)
    views = [_task_view(i, t, [c for c in cells.values() if c.task == t], bcells,
                        sels.get(t, []), max_drop) for i, t in enumerate(tasks)]
    suites = unique(df, "suite")
    data = {"tasks": {v["name"]: v["records"] for v in views},
            "tips": {k: tip for v in views for k, tip in v["tips"].items()}}
    baseline_info = None
    if baseline is not None:
        assert bcells is not None
        bdf = _latest(baseline, bcells)
        baseline_info = {
            "run": unique(bdf, "run_id") or "?", "commit": unique(bdf, "git_commit"),
            "suite": unique(bdf, "suite"), "provenance": provenance(bdf),
            "missing": sum(len(v["missing_now"]) for v in views),
            "new": sum(1 for v in views for r in v["rows"] if r["new"]),
        }
    return {
        "title": title or f"Leaderboard: {suites or 'harness results'}",
        "suite": suites, "run": unique(df, "run_id"), "cells": len(cells),
        "counts": {s: sum(1 for c in cells.values() if c.status == s)
                   for s in ("ok", "failed", "skipped")},
        "tasks": views, "provenance": provenance(df),
        "metric_docs": metric_docs(df, {v["main"] for v in views if v["main"]}),
        "baseline": baseline_info, "data": as_json(data), "harness_version": __version__,
        "generated_with": unique(df, "harness_version") or __version__,
    }
