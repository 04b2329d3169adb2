"""History of a benchmark across runs: one self-contained HTML page (``harness history``).

For each task, one inline-SVG line chart per measure (the headline metric with its CI, size,
batch-1 p50 latency, throughput) with one series per cell (model / compression) across the runs
in the order given, and a table of the same numbers. Each run is labelled from its provenance
columns (``git_describe`` or ``git_commit``, ``harness_version``, the date of its rows). Changes
the regression gate would flag are marked: :func:`harness.gate.compare` runs on each consecutive
pair with the default thresholds, and each regression it finds is ringed on the chart and
highlighted in the table.

Cells come from :func:`harness.analysis.cells.cells_of`; axes from :func:`harness.report.charts.axis`;
the page escapes every value (jinja2 autoescape) and loads nothing from the network.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import DataError
from ..fsutil import atomic_write_text
from ..gate import Thresholds, compare
from ..report.charts import axis
from ..report.format import num
from ..report.view import PALETTE
from ..rows import CellKey, as_float, as_text
from .cells import CellResult, cells_of, main_metric, read_table

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["MEASURES", "build_history", "render_history", "run_label"]

#: (key, title, metric or None for the headline, scale)
MEASURES = (("main", "", None, 1.0), ("size", "size (MB)", "size_bytes", 1e-6),
            ("p50", "batch-1 latency p50 (ms)", "latency_b1_p50_ms", 1.0),
            ("throughput", "throughput (samples/s)", "throughput_samples_s", 1.0))
W, H, M_L, M_R, M_T, M_B = 560, 300, 70, 20, 14, 64
#: line styles after the palette's colours run out (the 11th cell of a task is dashed)
_DASHES = ("", "6 3", "2 2", "8 3 2 3")


@dataclass
class _Run:
    name: str
    label: str
    cells: dict[CellKey, CellResult]


def _first(df: pd.DataFrame, col: str) -> str:
    if col not in df.columns:
        return ""
    return next((as_text(v) for v in df[col].tolist() if as_text(v)), "")


def run_label(df: pd.DataFrame, name: str) -> str:
    """``<git describe or commit> · harness <version> · <date>`` from a run's rows (the run's
    folder name when none of them is recorded)."""
    rev = _first(df, "git_describe") or _first(df, "git_commit")[:12]
    ver = _first(df, "harness_version")
    stamps = sorted(as_text(v) for v in df["timestamp"].tolist() if as_text(v)) \
        if "timestamp" in df.columns else []
    parts = [rev, f"harness {ver}" if ver else "", stamps[0][:10] if stamps else ""]
    return " · ".join(p for p in parts if p) or name


def _flags(runs: Sequence[_Run], tables: Sequence[pd.DataFrame]) -> tuple[
        dict[tuple[int, CellKey, str], str], list[str]]:
    """(run index, cell, measure or "cell") -> the gate's message, from consecutive pairs."""
    flags: dict[tuple[int, CellKey, str], str] = {}
    notes: list[str] = []
    for i in range(1, len(runs)):
        try:
            res = compare(tables[i - 1], tables[i], Thresholds(), baseline_name=runs[i - 1].name,
                          current_name=runs[i].name)
        except DataError as e:
            notes.append(f"#{i} -> #{i + 1}: not compared ({e})")
            continue
        notes += [f"#{i} -> #{i + 1}: {n}" for n in res.notes]  # e.g. machines differ
        for f in res.regressions:
            measure = "main" if f.kind == "accuracy" else next(
                (m for m, _, metric, _ in MEASURES if metric and f.metric == metric), "cell")
            flags[(i, (f.model, f.task, f.compression), measure)] = f"{f.kind}: {f.message}"
    return flags, notes


def _value(c: CellResult | None, metric: str | None, scale: float) -> float | None:
    if c is None or c.status != "ok":
        return None
    v = c.value(metric)
    return v * scale if v is not None else None


def _ci(c: CellResult | None, metric: str | None, measure: str) -> tuple[float | None, float | None]:
    if measure != "main" or c is None or c.status != "ok":
        return None, None
    return as_float(c.column(metric, "ci_low")), as_float(c.column(metric, "ci_high"))


def _chart(cid: str, title: str, runs: Sequence[_Run], keys: Sequence[CellKey],
           metric: str | None, scale: float, measure: str,
           flags: dict[tuple[int, CellKey, str], str]) -> dict[str, Any]:
    """A line chart of one measure: x = the runs in order, one series per cell."""
    n = len(runs)
    xs = [M_L + 20 + (W - M_L - M_R - 40) * (i / (n - 1) if n > 1 else 0.5) for i in range(n)]
    vals = [v for k in keys for r in runs
            for v in (_value(r.cells.get(k), metric, scale), *_ci(r.cells.get(k), metric, measure))
            if v is not None]
    ya = axis(vals or [0.0, 1.0], H - M_B, M_T)
    series = []
    for si, k in enumerate(keys):
        pts, path, pen = [], [], "M"
        for i, r in enumerate(runs):
            c = r.cells.get(k)
            v = _value(c, metric, scale)
            if v is None:
                pen = "M"
                continue
            cy = ya.px(v)
            path.append(f"{pen}{round(xs[i], 1)},{cy}")
            pen = "L"
            lo, hi = _ci(c, metric, measure)
            flag = flags.get((i, k, measure), "")
            pts.append({"cx": round(xs[i], 1), "cy": cy, "flag": flag,
                        "lo": ya.px(lo) if lo is not None else None,
                        "hi": ya.px(hi) if hi is not None else None,
                        "tip": f"{k[0]} / {k[2]} @ {r.label}: {num(v)}"
                               + (f" [{num(lo)}, {num(hi)}]" if lo is not None else "")
                               + (f"\ngate flags: {flag}" if flag else "")})
        series.append({"key": f"{k[0]} / {k[2]}", "colour": PALETTE[si % len(PALETTE)],
                       "dash": _DASHES[(si // len(PALETTE)) % len(_DASHES)],
                       "path": "".join(path), "points": pts})
    return {"id": cid, "title": title, "width": W, "height": H, "left": M_L, "right": W - M_R,
            "top": M_T, "bottom": H - M_B, "y_ticks": ya.ticks(),
            "x_ticks": [(round(x, 1), f"#{i + 1}") for i, x in enumerate(xs)], "series": series}


def _table(runs: Sequence[_Run], keys: Sequence[CellKey], main: str | None,
           flags: dict[tuple[int, CellKey, str], str]) -> list[dict[str, Any]]:
    rows = []
    for si, k in enumerate(keys):
        cells = []
        for i, r in enumerate(runs):
            c = r.cells.get(k)
            parts = []
            for measure, _, metric, scale in MEASURES:
                m = metric or main
                v = _value(c, m, scale)
                flag = flags.get((i, k, measure), "")
                parts.append({"text": num(v, 4 if measure == "main" else 2), "flag": flag,
                              "name": m if measure != "size" else "size MB"})
            cells.append({"status": c.status if c else "absent", "values": parts,
                          "flag": flags.get((i, k, "cell"), ""), "error": c.error if c else ""})
        rows.append({"key": f"{k[0]} / {k[2]}", "colour": PALETTE[si % len(PALETTE)],
                     "dash": _DASHES[(si // len(PALETTE)) % len(_DASHES)], "runs": cells})
    return rows


def build_history(tables: Sequence[pd.DataFrame], names: Sequence[str]) -> dict[str, Any]:
    """The history page's context for the runs ``tables`` (named ``names``), oldest first."""
    if not tables:
        raise DataError("history needs at least one run")
    runs = [_Run(n, run_label(df, n), cells_of(df, n)) for df, n in zip(tables, names)]
    flags, notes = _flags(runs, tables)
    tasks = sorted({k[1] for r in runs for k in r.cells})
    views = []
    for ti, task in enumerate(tasks):
        keys = list(dict.fromkeys(k for r in runs for k in r.cells if k[1] == task))
        main = main_metric(c for r in runs for k, c in r.cells.items() if k[1] == task)
        charts = [_chart(f"hist-t{ti}-{measure}", title or f"{main or 'main metric'} (95% CI)",
                         runs, keys, metric or main, scale, measure, flags)
                  for measure, title, metric, scale in MEASURES]
        views.append({"name": task, "index": ti, "main": main, "charts": charts,
                      "rows": _table(runs, keys, main, flags),
                      "flagged": sum(1 for (i, k, _) in flags if k[1] == task)})
    return {"runs": [{"n": i + 1, "name": r.name, "label": r.label} for i, r in enumerate(runs)],
            "tasks": views, "notes": notes, "flag_count": len(flags),
            "thresholds": Thresholds().to_dict()}


def render_history(paths: Sequence[Path], out_dir: Path, *, title: str | None = None) -> Path:
    """Write ``out_dir/history.html`` for the runs at ``paths`` (folders or results files, in
    this order); return its path. Bad input raises :class:`~harness.errors.DataError`."""
    from ..report.html import _env

    tables = [read_table(p, f"run {p}") for p in paths]
    view = build_history(tables, [str(p) for p in paths])
    html = _env().get_template("history.html.j2").render(
        title=title or f"History of {len(paths)} runs", **view)
    try:
        return atomic_write_text(Path(out_dir) / "history.html", html)
    except OSError as e:
        raise DataError(f"history folder {out_dir}: cannot write: {e.strerror or e}") from e
