"""HTML leaderboard: one self-contained page per run (inline CSS, JS and SVG; no network).

:func:`render_report` turns the tidy result rows into ``index.html`` (from the jinja2 templates in
``harness/templates``) plus the same data as ``results.csv`` / ``results.json`` (every row) and
``leaderboard.csv`` / ``leaderboard.json`` (one row per cell, as in the tables). Per task the page
has a sortable, filterable leaderboard, Pareto charts of the main metric against size and against
batch-1 latency (frontier drawn, every point labelled, details on hover), per-entity-type (or
per-class) F1, failed and skipped cells with their reasons, what each metric means, and a
provenance panel. With a baseline it shows coloured deltas against it.

Every string from a suite, a plugin or an error goes through jinja2 autoescaping; the data for the
page's script is JSON in a ``<script type="application/json">`` with ``<``, ``>`` and ``&``
written as ``\\u003c`` etc., read with ``textContent`` and shown with ``textContent``.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from .errors import DataError, HarnessError
from .results import as_bool, as_float, is_null

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["load_results_for_report", "pareto_front", "render_report"]

_KEY = ("model", "task", "compression")
_REQUIRED = ("model", "task", "compression", "status", "metric", "value")
PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b",
           "#e377c2", "#7f7f7f", "#bcbd22"]

#: What well-known metrics mean, shown beside the description the run recorded.
EXPLAIN = {
    "entity_f1": "Entity-level micro F1 (seqeval, conlleval-compatible): a predicted entity counts "
                 "only when its whole span and its type match a gold entity. This is not token "
                 "accuracy, which is much higher because most tokens are 'O'.",
    "entity_f1_strict": "Entity-level micro F1 in seqeval's strict IOB2 mode: an entity whose "
                        "tags break the scheme (e.g. starts with I-) does not count.",
    "token_accuracy": "Share of tokens with the right tag. Shown for reference only: it is "
                      "dominated by the 'O' tag and is not the headline metric.",
    "gold_entities": "Number of gold entities in the evaluation data.",
    "entity_precision.*": "Entity-level precision of one entity type.",
    "entity_recall.*": "Entity-level recall of one entity type.",
    "entity_f1.*": "Entity-level F1 of one entity type (same matching rule as entity_f1).",
    "entity_precision": "Entity-level micro precision: share of predicted entities that match a "
                        "gold entity exactly (span and type).",
    "entity_recall": "Entity-level micro recall: share of gold entities found exactly.",
    "accuracy": "Share of examples whose predicted label equals the gold label.",
    "macro_f1": "Unweighted mean of the per-class F1 scores.",
    "f1.*": "F1 of one class, one-vs-rest.",
    "latency_b1_p50_ms": "Median wall-clock time of one prediction at batch size 1, over the "
                         "timed iterations after warm-up.",
    "latency_b1_p90_ms": "90th percentile of batch-1 latency: 1 prediction in 10 is slower.",
    "latency_b1_p99_ms": "99th percentile of batch-1 latency.",
    "latency_b1_mean_ms": "Mean batch-1 latency.",
    "latency_b1_std_ms": "Standard deviation of batch-1 latency across iterations.",
    "latency_b1_cv": "Coefficient of variation (std / mean) of batch-1 latency: the noise.",
    "cold_start_ms": "Time from loading the model to its first prediction.",
    "throughput_samples_s": "Examples per second at the throughput batch size.",
    "throughput_tokens_s": "Tokens per second at the throughput batch size.",
    "peak_rss_mb": "Peak resident memory of the process while predicting.",
    "peak_gpu_mem_mb": "Peak GPU memory allocated while predicting.",
    "size_bytes": "Bytes of the serialized model artifact on disk (shown in MB = 10^6 bytes).",
    "parameters": "Number of parameters of the model.",
    "nonzero_parameters": "Parameters that are not zero (pruning shows here).",
    "bits_per_weight": "Storage bits per weight (32 for fp32, 8 for int8).",
    "compression_time_s": "Wall time spent compressing the model.",
    "train_time_s": "Wall time spent fine-tuning.",
    "eval_time_s": "Wall time spent evaluating.",
}

_PROVENANCE = [
    ("suite", "Suite"), ("suite_hash", "Suite hash"), ("run_id", "Run"),
    ("git_commit", "Git commit"), ("harness_version", "harness"),
    ("plugin_versions", "Plugin versions"), ("python_version", "Python"),
    ("torch_version", "torch"), ("transformers_version", "transformers"),
    ("openvino_version", "OpenVINO"), ("nncf_version", "NNCF"),
    ("platform", "Platform"), ("cpu", "CPU"), ("cpu_isa", "CPU ISA"), ("hostname", "Host"),
    ("device", "Device"),
    ("device_name", "Device name"), ("runtime", "Runtimes"), ("precision", "Precisions"),
    ("threads", "Threads"), ("jobs", "Jobs"), ("latency_batch_size", "Latency batch size"),
    ("throughput_batch_size", "Throughput batch size"), ("seq_len", "Sequence lengths"),
    ("seed", "Seed"),
]


# --------------------------------------------------------------------------- small helpers


def _text(v: Any) -> str:
    if is_null(v):
        return ""
    if isinstance(v, (dict, list)):
        return json.dumps(v, sort_keys=True)
    return str(v)


def _num(v: float | None, digits: int = 4) -> str:
    if v is None:
        return "–"
    a = abs(v)
    if a >= 1e5:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.1f}"
    if a >= 10:
        return f"{v:.2f}"
    return f"{v:.{digits}f}" if a < 1 else f"{v:.{max(2, digits - 1)}f}"


def _count(v: float | None) -> str:
    if v is None:
        return "–"
    for div, suf in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.1f} {suf}"
    return f"{v:.0f}"


def _json_for_script(data: Any) -> str:
    """JSON safe inside ``<script type="application/json">`` (no ``</script>``, no ``<!--``)."""
    text = json.dumps(data, ensure_ascii=False, allow_nan=False, sort_keys=True)
    for a, b in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e"),
                 ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(a, b)
    return text


def _clean_json(v: Any) -> Any:
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {str(k): _clean_json(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean_json(x) for x in v]
    return v


# --------------------------------------------------------------------------- data preparation


def _prepare(df: pd.DataFrame, name: str) -> pd.DataFrame:
    """Check the columns, drop superseded re-runs (per cell the last run_id counts)."""
    import pandas as pd

    if df is None or not isinstance(df, pd.DataFrame) or len(df) == 0:
        raise DataError(f"{name}: no result rows to report")
    missing = [c for c in _REQUIRED if c not in df.columns]
    if missing:
        raise DataError(f"{name}: not a harness results table (missing columns: {', '.join(missing)})")
    df = df.reset_index(drop=True).copy()
    for col in _KEY:
        df[col] = df[col].map(_text)
    df["status"] = df["status"].map(lambda s: _text(s) or "ok")
    if "run_id" in df.columns:
        last = df.groupby(list(_KEY), sort=False)["run_id"].transform(
            lambda s: s.iloc[-1] if len(s) else None)
        keep = (df["run_id"] == last) | last.isna()
        df = df[keep].reset_index(drop=True)
    return df


@dataclass
class _Cell:
    model: str
    task: str
    compression: str
    status: str
    error: str
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def value(self, metric: str | None) -> float | None:
        if metric is None or metric not in self.metrics:
            return None
        return as_float(self.metrics[metric].get("value"))


def _cells(df: pd.DataFrame) -> dict[tuple[str, str, str], _Cell]:
    cells: dict[tuple[str, str, str], _Cell] = {}
    for rec in df.to_dict(orient="records"):
        key = (rec["model"], rec["task"], rec["compression"])
        cell = cells.get(key)
        if cell is None:
            cell = cells[key] = _Cell(*key, status="ok", error="", info=cast("dict[str, Any]", rec))
        if is_null(rec.get("metric")):
            if rec["status"] != "ok":
                cell.status = rec["status"]
                cell.error = _text(rec.get("error"))
            continue
        cell.metrics[str(rec["metric"])] = cast("dict[str, Any]", rec)
    for cell in cells.values():
        if cell.status == "ok" and not cell.metrics:
            cell.status, cell.error = "failed", cell.error or "no metric recorded"
    return cells


def _main_metric(cells: Sequence[_Cell]) -> str | None:
    votes: dict[str, int] = {}
    for c in cells:
        for m, r in c.metrics.items():
            if as_bool(r.get("main_metric")):
                votes[m] = votes.get(m, 0) + 1
    if votes:
        return max(votes, key=lambda m: (votes[m], m))
    for m in ("entity_f1", "accuracy", "f1", "macro_f1"):
        if any(m in c.metrics for c in cells):
            return m
    return None


def _latency_metric(cells: Sequence[_Cell], q: int) -> str | None:
    names = {m for c in cells for m in c.metrics}
    if f"latency_b1_p{q}_ms" in names:
        return f"latency_b1_p{q}_ms"
    found = sorted((int(m.group(1)), m.group(0)) for n in names
                   if (m := re.fullmatch(rf"latency_b(\d+)_p{q}_ms", n)))
    return found[0][1] if found else None


def _higher_is_better(cells: Sequence[_Cell], metric: str | None, default: bool) -> bool:
    for c in cells:
        if metric in c.metrics:
            b = as_bool(c.metrics[metric].get("higher_is_better"))
            if b is not None:
                return b
    return default


def pareto_front(points: Sequence[tuple[float, float]], *, maximize_y: bool = True) -> list[int]:
    """Indices of the non-dominated points: no other point has x <= and y >= (or <= when
    ``maximize_y`` is False) with at least one strict. x is always minimised (size, latency)."""
    sign = 1.0 if maximize_y else -1.0
    front = []
    for i, (xi, yi) in enumerate(points):
        dominated = False
        for j, (xj, yj) in enumerate(points):
            if j == i:
                continue
            if xj <= xi and sign * yj >= sign * yi and (xj < xi or sign * yj > sign * yi):
                dominated = True
                break
        if not dominated:
            front.append(i)
    return front


# --------------------------------------------------------------------------- charts


def _nice_step(span: float, n: int = 5) -> float:
    raw = span / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def _tick_label(v: float, step: float | None = None) -> str:
    """A tick value with as many decimals as the tick spacing needs (none beyond)."""
    if v == 0:
        return "0"
    if step is not None and step > 0:
        decimals = max(0, -math.floor(math.log10(step) + 1e-9))
        if step * 10**decimals % 1 > 1e-6:  # 2.5 x 10^k steps need one more
            decimals += 1
        return f"{v:,.{decimals}f}"
    a = abs(v)
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 1:
        return f"{v:g}"
    return f"{v:.3g}"


@dataclass
class _Axis:
    lo: float
    hi: float
    log: bool
    start: float  # pixel of lo
    end: float  # pixel of hi

    def px(self, v: float) -> float:
        if self.log:
            t = (math.log10(v) - math.log10(self.lo)) / (math.log10(self.hi) - math.log10(self.lo))
        else:
            t = (v - self.lo) / (self.hi - self.lo)
        return round(self.start + t * (self.end - self.start), 1)

    def ticks(self) -> list[tuple[float, str]]:
        if self.log:
            vals = []
            for k in range(math.floor(math.log10(self.lo)), math.ceil(math.log10(self.hi)) + 1):
                for m in (1, 2, 5):
                    v = m * 10.0**k
                    if self.lo <= v <= self.hi:
                        vals.append(v)
            if len(vals) > 9:
                vals = [v for v in vals if f"{v:e}".startswith("1")]
            if len(vals) < 2:
                vals = [self.lo, self.hi]
        else:
            step = _nice_step(self.hi - self.lo)
            v = math.ceil(self.lo / step - 1e-9) * step
            vals = []
            while v <= self.hi + 1e-9 * step:
                vals.append(round(v, 12))
                v += step
            return [(self.px(v), _tick_label(v, step)) for v in vals]
        return [(self.px(v), _tick_label(v)) for v in vals]


def _axis(values: Sequence[float], start: float, end: float, *, allow_log: bool,
          zero: bool = False) -> _Axis:
    lo, hi = min(values), max(values)
    if allow_log and lo > 0 and hi / lo >= 8:
        return _Axis(lo / 1.25, hi * 1.25, True, start, end)
    span = hi - lo
    pad = span * 0.08 if span > 0 else (abs(hi) * 0.05 or 0.01)
    lo2 = 0.0 if zero and lo >= 0 else lo - pad
    return _Axis(lo2, hi + pad, False, start, end)


W, H = 760, 430
M_L, M_R, M_T, M_B = 74, 24, 16, 52
CHAR_W, LABEL_H = 6.1, 12.0


def _place_labels(points: list[dict[str, Any]],
                  segments: Sequence[tuple[float, float, float, float]] = ()) -> None:
    """Greedy label placement: the first of a few spots around the point that overlaps no label
    placed before (points sorted top to bottom) and stays inside the plot."""
    placed: list[tuple[float, float, float, float]] = []
    dots = [(p["cx"], p["cy"]) for p in points]

    def box(x: float, y: float, w: float, anchor: str) -> tuple[float, float, float, float]:
        x0 = x - w if anchor == "end" else x
        return (x0, y - LABEL_H + 3, x0 + w, y + 3)

    def free(b: tuple[float, float, float, float]) -> bool:
        if b[0] < M_L or b[2] > W - 4 or b[1] < 2 or b[3] > H - M_B:
            return False
        for q in placed:
            if b[0] < q[2] and b[2] > q[0] and b[1] < q[3] and b[3] > q[1]:
                return False
        for dx, dy in dots:  # keep labels off other markers
            if b[0] - 4 < dx < b[2] + 4 and b[1] - 4 < dy < b[3] + 4:
                return False
        for x0, y0, x1, y1 in segments:  # and off the frontier line
            if b[0] < x1 and b[2] > x0 and b[1] - 1 < y1 and b[3] + 1 > y0:
                return False
        return True

    for p in sorted(points, key=lambda p: (p["cy"], p["cx"])):
        w = len(p["label"]) * CHAR_W
        x, y = p["cx"], p["cy"]
        candidates = [(x + 8, y + 4, "start"), (x - 8, y + 4, "end"), (x + 6, y - 8, "start"),
                      (x + 6, y + 16, "start"), (x - 6, y - 8, "end"), (x - 6, y + 16, "end"),
                      (x + 8, y - 20, "start"), (x + 8, y + 28, "start"), (x - 8, y - 20, "end"),
                      (x - 8, y + 28, "end")]
        chosen = None
        for cx, cy, anchor in candidates:
            b = box(cx, cy, w, anchor)
            if free(b):
                chosen = (cx, cy, anchor, b)
                break
        if chosen is None:  # crowded: keep it readable inside the plot, even if it overlaps
            anchor = "end" if x + 8 + w > W - 4 else "start"
            cx = x - 8 if anchor == "end" else x + 8
            chosen = (cx, y + 4, anchor, box(cx, y + 4, w, anchor))
        p["lx"], p["ly"], p["anchor"] = round(chosen[0], 1), round(chosen[1], 1), chosen[2]
        placed.append(chosen[3])


def _chart(chart_id: str, title: str, x_label: str, y_label: str,
           pts: list[dict[str, Any]], ghosts: list[dict[str, Any]], maximize_y: bool,
           *, x_zero: bool) -> dict[str, Any]:
    """An SVG-ready chart: axes with ticks, one marker per point, the Pareto frontier."""
    xs = [p["x"] for p in pts] + [g["x"] for g in ghosts]
    ys = [p["y"] for p in pts] + [g["y"] for g in ghosts]
    xa = _axis(xs, M_L, W - M_R, allow_log=True, zero=x_zero)
    ya = _axis(ys, H - M_B, M_T, allow_log=False)
    front = set(pareto_front([(p["x"], p["y"]) for p in pts], maximize_y=maximize_y))
    points = []
    for i, p in enumerate(pts):
        points.append({**p, "cx": xa.px(p["x"]), "cy": ya.px(p["y"]), "front": i in front})
    # Frontier as a staircase: from each front point across to the next x, then up/down.
    fp = sorted((p for p in points if p["front"]), key=lambda p: (p["cx"], -p["cy"]))
    path = ""
    segments: list[tuple[float, float, float, float]] = []
    if fp:
        seg = [f"M{fp[0]['cx']},{fp[0]['cy']}"]
        for a, b in itertools.pairwise(fp):
            seg.append(f"H{b['cx']}V{b['cy']}")
            segments.append((a["cx"], a["cy"], b["cx"], a["cy"]))
            segments.append((b["cx"], min(a["cy"], b["cy"]), b["cx"], max(a["cy"], b["cy"])))
        seg.append(f"H{W - M_R}")
        segments.append((fp[-1]["cx"], fp[-1]["cy"], W - M_R, fp[-1]["cy"]))
        path = "".join(seg)
    _place_labels(points, segments)
    gh = []
    by_key = {p["key"]: p for p in points}
    for g in ghosts:
        cur = by_key.get(g["key"])
        gx, gy = xa.px(g["x"]), ya.px(g["y"])
        if cur and abs(cur["cx"] - gx) < 1.5 and abs(cur["cy"] - gy) < 1.5:
            continue  # unchanged: the ghost would hide behind the point
        gh.append({**g, "cx": gx, "cy": gy, "to": (cur["cx"], cur["cy"]) if cur else None})
    return {
        "id": chart_id, "title": title, "x_label": x_label, "y_label": y_label,
        "width": W, "height": H, "left": M_L, "right": W - M_R, "top": M_T, "bottom": H - M_B,
        "x_ticks": xa.ticks(), "y_ticks": ya.ticks(), "log_x": xa.log,
        "points": points, "ghosts": gh, "frontier": path, "n_front": len(fp),
        "better": "up and to the left" if maximize_y else "down and to the left",
    }


# --------------------------------------------------------------------------- view model

_DELTA_NEUTRAL_LATENCY = 0.05  # measurement noise: latency/throughput/RSS changes within 5% are grey
_DELTA_NEUTRAL_ABS = 0.0005


@dataclass
class _Col:
    key: str
    label: str
    numeric: bool
    help: str = ""
    hib: bool | None = None  # for colouring deltas (None: no delta)
    relative: bool = True  # delta as % (else absolute)
    neutral: float = 0.01  # |relative change| below this is shown grey


def _delta(cur: float | None, base: float | None, col: _Col) -> dict[str, str] | None:
    if cur is None or base is None or col.hib is None:
        return None
    d = cur - base
    if col.relative:
        if base == 0:
            return None
        rel = d / abs(base)
        text, neutral = f"{rel:+.1%}", abs(rel) < col.neutral
        title = f"baseline {_num(base)}, change {d:+.4g} ({rel:+.2%})"
    else:
        text, neutral = f"{d:+.4f}", abs(d) < _DELTA_NEUTRAL_ABS
        title = f"baseline {_num(base)}, change {d:+.4f}"
    cls = "same" if neutral else ("better" if (d > 0) == col.hib else "worse")
    return {"text": text, "cls": cls, "title": title}


def _task_view(ti: int, task: str, cells: list[_Cell], base_cells: dict[tuple[str, str, str], _Cell]
               | None) -> dict[str, Any]:
    main = _main_metric(cells)
    main_hib = _higher_is_better(cells, main, True)
    p50, p90 = _latency_metric(cells, 50), _latency_metric(cells, 90)
    ok = [c for c in cells if c.status == "ok"]
    has_gpu = any(c.value("peak_gpu_mem_mb") is not None for c in ok)
    main_desc = ""
    for c in ok:
        if main in c.metrics and not is_null(c.metrics[main].get("metric_description")):
            main_desc = str(c.metrics[main]["metric_description"])
            break
    plugin = _text(cells[0].info.get("task_plugin"))
    is_ner = (main or "").startswith("entity") or plugin == "ner"
    lat_label = (p50 or "latency_b1_p50_ms").replace("latency_", "").replace("_ms", "")
    cols = [
        _Col("model", "Model", False, "model label from the suite"),
        _Col("compression", "Compression", False, "compression label from the suite"),
        _Col("main", f"{main or 'main metric'}", True,
             (main_desc or "the task's main metric") + "; 95% bootstrap CI in brackets",
             hib=main_hib, relative=False),
        _Col("size_mb", "Size MB", True, "serialized model, 10^6 bytes", hib=False),
        _Col("parameters", "Params", True, "parameters (nonzero in brackets when different)"),
        _Col("p50", f"{lat_label} ms", True, "batch-1 latency, median", hib=False,
             neutral=_DELTA_NEUTRAL_LATENCY),
        _Col("p90", f"{lat_label.replace('p50', 'p90')} ms", True,
             "batch-1 latency, 90th percentile", hib=False, neutral=_DELTA_NEUTRAL_LATENCY),
        _Col("throughput", "Throughput /s", True, "samples per second at the throughput batch size",
             hib=True, neutral=_DELTA_NEUTRAL_LATENCY),
        _Col("rss", "Peak RSS MB", True, "peak resident memory", hib=False,
             neutral=_DELTA_NEUTRAL_LATENCY),
    ]
    if has_gpu:
        cols.append(_Col("gpu", "GPU MB", True, "peak GPU memory", hib=False))
    cols.append(_Col("status", "Status", False, "ok, failed or skipped (hover for the reason)"))

    def values(c: _Cell) -> dict[str, Any]:
        size = c.value("size_bytes")
        return {
            "main": c.value(main), "size_mb": size / 1e6 if size is not None else None,
            "parameters": c.value("parameters"), "p50": c.value(p50), "p90": c.value(p90),
            "throughput": c.value("throughput_samples_s"), "rss": c.value("peak_rss_mb"),
            "gpu": c.value("peak_gpu_mem_mb"),
        }

    # Pareto membership, computed on the ok cells that have both coordinates.
    def front_of(xkey: str) -> set[int]:
        idx = [i for i, c in enumerate(ok) if values(c)[xkey] is not None and values(c)["main"] is not None]
        pts = [(values(ok[i])[xkey], values(ok[i])["main"]) for i in idx]
        return {idx[j] for j in pareto_front(pts, maximize_y=main_hib)}  # type: ignore[arg-type]

    front_size, front_lat = front_of("size_mb"), front_of("p50")
    order = {"ok": 0, "failed": 1, "skipped": 2}
    sign = -1 if main_hib else 1
    def rank(c: _Cell) -> tuple[int, float, str, str]:
        m = c.value(main)
        return (order.get(c.status, 3), sign * (m if m is not None else -sign * 1e300),
                c.model, c.compression)

    ranked = sorted(cells, key=rank)
    compressions = sorted({c.compression for c in cells})
    colour = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(compressions)}
    rows: list[dict[str, Any]] = []
    records: list[dict[str, Any]] = []
    tips: dict[str, dict[str, Any]] = {}
    for c in ranked:
        v = values(c)
        rid = f"t{ti}-{len(rows)}"
        bc = base_cells.get((c.model, c.task, c.compression)) if base_cells is not None else None
        bv = values(bc) if bc is not None and bc.status == "ok" else None
        oki = ok.index(c) if c in ok else -1
        badges = []
        if oki in front_size:
            badges.append("size")
        if oki in front_lat:
            badges.append("latency")
        cells_out: list[dict[str, Any]] = []
        for col in cols:
            if col.key == "model":
                cells_out.append({"text": c.model, "sort": c.model.lower(), "title": "",
                                  "badges": badges, "swatch": colour[c.compression]})
                continue
            if col.key == "compression":
                cells_out.append({"text": c.compression, "sort": c.compression.lower(), "title": "",
                                  "swatch": colour[c.compression]})
                continue
            if col.key == "status":
                cells_out.append({"text": c.status, "sort": c.status, "title": c.error,
                                  "status": c.status, "reason": c.error})
                continue
            x = v[col.key]
            if col.key == "main":
                text = _num(x)
                lo = as_float(c.metrics.get(main or "", {}).get("ci_low"))
                hi = as_float(c.metrics.get(main or "", {}).get("ci_high"))
                ci = f"[{_num(lo)}, {_num(hi)}]" if lo is not None and hi is not None else ""
                cell: dict[str, Any] = {"text": text, "ci": ci}
            elif col.key == "parameters":
                nz = c.value("nonzero_parameters")
                extra = (f"{_count(nz)} nonzero" if nz is not None and x is not None
                         and nz < 0.99 * x else "")
                cell = {"text": _count(x), "ci": extra}
            else:
                cell = {"text": _num(x, 2)}
            cell["sort"] = x
            cell["delta"] = _delta(x, bv[col.key], col) if bv is not None else None
            cells_out.append(cell)
        cells_out = [{"title": "", "badges": [], "swatch": "", "ci": "", "delta": None,
                      "status": "", "reason": "", **x} for x in cells_out]
        search = f"{c.model} {c.compression} {c.status} {c.error}".lower()
        row: dict[str, Any] = {"id": rid, "status": c.status, "cells": cells_out, "search": search,
               "new": base_cells is not None and bc is None}
        rows.append(row)
        rec = {"task": task, "model": c.model, "compression": c.compression, "status": c.status,
               "error": c.error or None, "main_metric": main, "main": v["main"],
               "ci_low": as_float(c.metrics.get(main or "", {}).get("ci_low")),
               "ci_high": as_float(c.metrics.get(main or "", {}).get("ci_high")),
               "size_mb": v["size_mb"], "parameters": v["parameters"],
               "nonzero_parameters": c.value("nonzero_parameters"),
               "bits_per_weight": c.value("bits_per_weight"),
               "latency_p50_ms": v["p50"], "latency_p90_ms": v["p90"],
               "throughput_samples_s": v["throughput"], "peak_rss_mb": v["rss"],
               "peak_gpu_mem_mb": v["gpu"], "pareto_size": "size" in badges,
               "pareto_latency": "latency" in badges,
               "runtime": _text(c.info.get("runtime")) or None,
               "precision": _text(c.info.get("precision")) or None}
        if bv is not None:
            rec.update({f"baseline_{k}": bv[k] for k in ("main", "size_mb", "p50", "p90",
                                                          "throughput")})
        records.append(rec)
        lines = [f"{main or 'main'}: {_num(v['main'])} {cells_out[2].get('ci', '')}".rstrip(),
                 f"size: {_num(v['size_mb'], 2)} MB", f"params: {_count(v['parameters'])}",
                 f"latency p50 / p90: {_num(v['p50'], 2)} / {_num(v['p90'], 2)} ms",
                 f"throughput: {_num(v['throughput'], 2)} /s",
                 f"runtime: {_text(c.info.get('runtime'))} {_text(c.info.get('precision'))}".rstrip()]
        if badges:
            lines.append("Pareto-optimal for " + " and ".join(badges))
        if bv is not None:
            d = _delta(v["main"], bv["main"], cols[2])
            if d:
                lines.append(f"vs baseline: {d['text']} {main}")
        tips[rid] = {"title": f"{c.model} / {c.compression}", "lines": lines}

    # Charts: one point per ok cell with both coordinates.
    charts, unplotted = [], []
    for xkey, ckey, title, xlabel in (("size_mb", "size", "size", "size (MB, 10^6 bytes)"),
                                      ("p50", "latency", "latency",
                                       f"batch-1 latency {lat_label} (ms)")):
        pts, ghosts = [], []
        for row, c in zip(rows, ranked):
            if c.status != "ok":
                continue
            v = values(c)
            if v[xkey] is None or v["main"] is None or (v[xkey] <= 0):
                unplotted.append(f"{c.model} / {c.compression} (no {xkey.replace('_mb', '')})")
                continue
            label = f"{c.model} / {c.compression}"
            pts.append({"x": v[xkey], "y": v["main"], "key": (c.model, c.compression),
                        "row": row["id"], "label": _short_label(c.model, c.compression),
                        "full": label, "colour": colour[c.compression],
                        "tip": "\n".join([label] + tips[row["id"]]["lines"])})
            bc = base_cells.get((c.model, c.task, c.compression)) if base_cells else None
            if bc is not None and bc.status == "ok":
                bvv = values(bc)
                if bvv[xkey] is not None and bvv["main"] is not None and bvv[xkey] > 0:
                    ghosts.append({"x": bvv[xkey], "y": bvv["main"], "key": (c.model, c.compression),
                                   "tip": f"baseline: {label}"})
        if pts:
            charts.append(_chart(f"chart-t{ti}-{ckey}", f"{main} vs {title}", xlabel,
                                 main or "main metric", pts, ghosts, main_hib, x_zero=False))
    # Breakdown (per entity type / per class).
    prefixes = [p for p in ((main or "") + ".", "entity_f1.", "f1.") if p != "."]
    bd_names: list[str] = []
    for c in ok:
        for m in c.metrics:
            if any(m.startswith(p) for p in prefixes) and m not in bd_names:
                bd_names.append(m)
    prefix = next((p for p in prefixes if any(n.startswith(p) for n in bd_names)), "")
    bd_names = [n for n in bd_names if n.startswith(prefix)] if prefix else []
    breakdown = None
    if bd_names:
        labels = [n[len(prefix):] for n in bd_names]
        brows = []
        for c in [c for c in ranked if c.status == "ok"]:
            vals = [c.value(n) for n in bd_names]
            brows.append({"model": c.model, "compression": c.compression,
                          "cells": [{"text": _num(x), "sort": x} for x in vals]})
        breakdown = {"title": ("Per-entity-type F1" if is_ner else "Per-class F1"),
                     "metric": prefix.rstrip("."), "labels": labels, "rows": brows,
                     "id": f"breakdown-t{ti}"}
    problems = [{"model": c.model, "compression": c.compression, "status": c.status,
                 "reason": c.error or "(no reason recorded)"} for c in ranked if c.status != "ok"]
    missing_now = []
    if base_cells is not None:
        present = {(c.model, c.compression) for c in cells}
        missing_now = sorted(f"{m} / {comp} ({bc.status} in baseline)"
                             for (m, t, comp), bc in base_cells.items()
                             if t == task and (m, comp) not in present)
    seq = sorted({_text(c.info.get("seq_len")) for c in cells} - {""})
    return {
        "index": ti, "name": task, "id": f"task-{ti}", "plugin": plugin, "main": main,
        "main_desc": main_desc, "main_hib": main_hib, "is_ner": is_ner, "columns": cols,
        "rows": rows, "charts": charts, "unplotted": sorted(set(unplotted)),
        "breakdown": breakdown, "problems": problems, "missing_now": missing_now,
        "counts": {s: sum(1 for c in cells if c.status == s) for s in ("ok", "failed", "skipped")},
        "seq_len": seq, "records": records, "tips": tips,
        "legend": [{"name": n, "colour": colour[n]} for n in compressions],
    }


def _short_label(model: str, compression: str, limit: int = 36) -> str:
    """``model / compression`` in at most ``limit`` characters, shortening the model first."""
    full = f"{model} / {compression}"
    if len(full) <= limit:
        return full
    comp = compression if len(compression) <= limit // 2 else compression[: limit // 2 - 1] + "…"
    room = max(6, limit - len(comp) - 4)
    return f"{model[:room]}… / {comp}"


def _unique(df: pd.DataFrame, col: str, limit: int = 6) -> str:
    if col not in df.columns:
        return ""
    vals = []
    for v in df[col].tolist():
        t = _text(v)
        if t and t not in vals:
            vals.append(t)
    if len(vals) > limit:
        return ", ".join(vals[:limit]) + f" and {len(vals) - limit} more"
    return ", ".join(vals)


def _provenance(df: pd.DataFrame) -> list[dict[str, str]]:
    out = []
    for col, label in _PROVENANCE:
        v = _unique(df, col)
        if v:
            out.append({"label": label, "value": v})
    if "timestamp" in df.columns:
        ts = sorted(t for t in (_text(x) for x in df["timestamp"].tolist()) if t)
        if ts:
            out.append({"label": "Time", "value": ts[0] if ts[0] == ts[-1] else f"{ts[0]} – {ts[-1]}"})
    return out


def _metric_docs(df: pd.DataFrame, mains: set[str]) -> list[dict[str, Any]]:
    seen: dict[str, dict[str, Any]] = {}
    ok = df[df["metric"].map(lambda m: not is_null(m))]
    for rec in ok.to_dict(orient="records"):
        name = str(rec["metric"])
        group = name.split(".", 1)[0] + ".*" if "." in name else name
        if group in seen:
            member = name.split(".", 1)[1] if "." in name else ""
            if member and member not in seen[group]["members"]:
                seen[group]["members"].append(member)
            continue
        hib = as_bool(rec.get("higher_is_better"))
        seen[group] = {
            "name": group, "main": name in mains, "unit": _text(rec.get("unit")),
            "better": "higher" if hib else "lower" if hib is False else "",
            "description": _text(rec.get("metric_description")),
            "explain": EXPLAIN.get(group, ""),
            "members": [name.split(".", 1)[1]] if "." in name else [],
        }
    for d in seen.values():
        if d["members"]:
            d["description"] = re.sub(re.escape(d["members"][0]) + r"\b", "<type>", d["description"]) \
                if d["description"] else ""
    return sorted(seen.values(), key=lambda d: (not d["main"], d["name"]))


def _env() -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("harness", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["script_json"] = lambda data: jinja2.utils.markupsafe.Markup(_json_for_script(data))
    return env


def build_view(results: pd.DataFrame, baseline: pd.DataFrame | None = None,
               title: str | None = None) -> dict[str, Any]:
    """The template's context: everything already formatted, nothing marked safe."""
    from . import __version__

    df = _prepare(results, "results")
    bdf = _prepare(baseline, "baseline") if baseline is not None else None
    cells = _cells(df)
    bcells = _cells(bdf) if bdf is not None else None
    tasks = sorted({c.task for c in cells.values()})
    views = [_task_view(i, t, [c for c in cells.values() if c.task == t], bcells)
             for i, t in enumerate(tasks)]
    suites = _unique(df, "suite")
    n = len(cells)
    counts = {s: sum(1 for c in cells.values() if c.status == s) for s in ("ok", "failed", "skipped")}
    data = {
        "tasks": {v["name"]: v["records"] for v in views},
        "tips": {k: t for v in views for k, t in v["tips"].items()},
    }
    baseline_info = None
    if bdf is not None:
        baseline_info = {
            "run": _unique(bdf, "run_id") or "?", "commit": _unique(bdf, "git_commit"),
            "suite": _unique(bdf, "suite"), "provenance": _provenance(bdf),
            "missing": sum(len(v["missing_now"]) for v in views),
            "new": sum(1 for v in views for r in v["rows"] if r["new"]),
        }
    return {
        "title": title or f"Leaderboard: {suites or 'harness results'}",
        "suite": suites, "run": _unique(df, "run_id"), "cells": n, "counts": counts,
        "tasks": views, "provenance": _provenance(df),
        "metric_docs": _metric_docs(df, {v["main"] for v in views if v["main"]}),
        "baseline": baseline_info, "data": _clean_json(data), "harness_version": __version__,
        "generated_with": _unique(df, "harness_version") or __version__,
    }


def render_report(results: pd.DataFrame, out_dir: Path, *, baseline: pd.DataFrame | None = None,
                  title: str | None = None, write_rows: bool = True) -> Path:
    """Write ``index.html`` (self-contained leaderboard), ``results.csv``/``results.json`` (the
    rows given, through :func:`harness.results.export`; ``write_rows=False`` when they are
    already there) and ``leaderboard.csv``/``leaderboard.json`` (one row per cell) into
    ``out_dir``; return the path of ``index.html``. Raises
    :class:`~harness.errors.DataError` on bad input."""
    import pandas as pd

    from .results import export

    view = build_view(results, baseline, title)
    html = _env().get_template("report.html.j2").render(**view)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    page = out_dir / "index.html"
    page.write_text(html, encoding="utf-8")
    if write_rows:
        export(results, out_dir, ("csv", "json"))
    board = pd.DataFrame([r for t in view["tasks"] for r in t["records"]])
    board.to_csv(out_dir / "leaderboard.csv", index=False)
    (out_dir / "leaderboard.json").write_text(
        json.dumps(_clean_json(board.to_dict(orient="records")), indent=1, ensure_ascii=False)
        + "\n", encoding="utf-8")
    return page


# --------------------------------------------------------------------------- loading


def load_results_for_report(path: Path, name: str) -> pd.DataFrame:
    """Results (a run folder or file) as a DataFrame; an unreadable one is a ``DataError``
    naming ``name`` ("results", "baseline") and the path."""
    from . import load_results

    try:
        return load_results(path)
    except HarnessError:
        raise
    except (OSError, ValueError) as e:
        raise DataError(f"{name} {path}: cannot read results: {e}") from e
