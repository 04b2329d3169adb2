"""The report's Pareto charts as data for the SVG template: axes with ticks (log scale when the
values span 8x or more), one marker per cell (a circle, or a shape given by the point's
``shape``), the Pareto frontier as a staircase, each model's own front as a thin staircase when
the points carry several ``model`` names, and labels placed so that they overlap neither each
other nor the markers nor the frontier (only the front points are labelled when there are more
than :data:`LABEL_ALL_UP_TO` points; the others are named by their hover title)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..analysis.pareto import pareto_front, tied_with_front

__all__ = ["LABEL_ALL_UP_TO", "SHAPES", "axis", "chart", "pareto_front", "shape_path",
           "tied_with_front"]


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


def axis(values: Sequence[float], start: float, end: float, *, allow_log: bool = False,
         zero: bool = False) -> _Axis:
    """An axis over ``values`` from pixel ``start`` to ``end``, with ``px(v)`` and ``ticks()``
    (for other inline-SVG charts, e.g. the history page)."""
    return _axis(values, start, end, allow_log=allow_log, zero=zero)


#: marker shapes, in the order they are given out (``circle`` is today's marker)
SHAPES = ("circle", "square", "triangle", "diamond", "triangle-down", "cross")
#: a chart with more points than this labels only its front points
LABEL_ALL_UP_TO = 20


def shape_path(shape: str, x: float, y: float, r: float) -> str:
    """SVG path data of a marker ``shape`` centred on (x, y), about as large as a circle of
    radius ``r`` (empty for ``circle``, which is drawn as a circle)."""
    def pts(*xy: tuple[float, float]) -> str:
        return "M" + "L".join(f"{round(x + dx, 1)},{round(y + dy, 1)}" for dx, dy in xy) + "Z"

    a = r * 0.9
    if shape == "square":
        return pts((-a, -a), (a, -a), (a, a), (-a, a))
    if shape == "triangle":
        return pts((0, -r * 1.25), (r * 1.15, r * 0.8), (-r * 1.15, r * 0.8))
    if shape == "triangle-down":
        return pts((0, r * 1.25), (r * 1.15, -r * 0.8), (-r * 1.15, -r * 0.8))
    if shape == "diamond":
        return pts((0, -r * 1.3), (r * 1.3, 0), (0, r * 1.3), (-r * 1.3, 0))
    if shape == "cross":
        b, c = r * 0.45, r * 1.2
        return pts((-b, -c), (b, -c), (b, -b), (c, -b), (c, b), (b, b), (b, c), (-b, c), (-b, b),
                   (-c, b), (-c, -b), (-b, -b))
    return ""


def _staircase(fp: Sequence[dict[str, Any]], end: float | None) -> tuple[str, list[tuple[float, float, float, float]]]:
    """Path data of the staircase through front points ``fp`` (sorted by x), on to x=``end``,
    and its segments as boxes (x0, y0, x1, y1)."""
    if not fp:
        return "", []
    seg = [f"M{fp[0]['cx']},{fp[0]['cy']}"]
    segments: list[tuple[float, float, float, float]] = []
    for a, b in itertools.pairwise(fp):
        seg.append(f"H{b['cx']}V{b['cy']}")
        segments.append((a["cx"], a["cy"], b["cx"], a["cy"]))
        segments.append((b["cx"], min(a["cy"], b["cy"]), b["cx"], max(a["cy"], b["cy"])))
    if end is not None:
        seg.append(f"H{end}")
        segments.append((fp[-1]["cx"], fp[-1]["cy"], end, fp[-1]["cy"]))
    return "".join(seg), segments


W, H = 760, 430
M_L, M_R, M_T, M_B = 74, 24, 16, 52
CHAR_W, LABEL_H = 6.1, 12.0


def _free(b: tuple[float, float, float, float], placed: Sequence[tuple[float, float, float, float]],
          dots: Sequence[tuple[float, float]],
          segments: Sequence[tuple[float, float, float, float]]) -> bool:
    """Whether label box ``b`` stays inside the plot, off the labels ``placed``, the markers
    ``dots`` and the frontier ``segments``."""
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


def _place_labels(points: list[dict[str, Any]],
                  segments: Sequence[tuple[float, float, float, float]],
                  dots: Sequence[tuple[float, float]]) -> list[tuple[str, str]]:
    """Greedy label placement: the first of a few spots around the point that overlaps no label
    placed before (points sorted top to bottom) and stays inside the plot. Where a crowded
    point has no free spot for its name, it gets a number instead (placed the same way) and
    the chart's key below it says which cell the number is; returns that key,
    ``[(number, name)]``. No two labels overlap unless even a number finds no free spot.
    Labels keep off the markers ``dots`` (all the chart's, labelled or not)."""
    placed: list[tuple[float, float, float, float]] = []

    def box(x: float, y: float, w: float, anchor: str) -> tuple[float, float, float, float]:
        x0 = x - w if anchor == "end" else x
        return (x0, y - LABEL_H + 3, x0 + w, y + 3)

    def free(b: tuple[float, float, float, float]) -> bool:
        return _free(b, placed, dots, segments)

    def spot(x: float, y: float, w: float, far: bool = False) -> tuple[float, float, str, tuple] | None:
        candidates = [(x + 8, y + 4, "start"), (x - 8, y + 4, "end"), (x + 6, y - 8, "start"),
                      (x + 6, y + 16, "start"), (x - 6, y - 8, "end"), (x - 6, y + 16, "end"),
                      (x + 8, y - 20, "start"), (x + 8, y + 28, "start"), (x - 8, y - 20, "end"),
                      (x - 8, y + 28, "end")]
        if far:  # a number may sit further out: a ring of spots up to 36 px away
            candidates += [(x + dx, y + dy, "start" if dx >= 0 else "end")
                           for r in (20, 28, 36) for dx, dy in
                           ((r, 4), (-r, 4), (0, -r + 4), (0, r + 4), (r, -r), (-r, -r),
                            (r, r), (-r, r))]
        for cx, cy, anchor in candidates:
            b = box(cx, cy, w, anchor)
            if free(b):
                return cx, cy, anchor, b
        return None

    key: list[tuple[str, str]] = []
    for p in sorted(points, key=lambda p: (p["cy"], p["cx"])):
        x, y = p["cx"], p["cy"]
        chosen = spot(x, y, len(p["label"]) * CHAR_W)
        if chosen is None:  # crowded: a number here, the name in the key below the chart
            number = str(len(key) + 1)
            key.append((number, p["label"]))
            p["label"], p["keyed"] = number, True
            w = len(number) * CHAR_W
            chosen = spot(x, y, w, far=True)
            if chosen is None:  # not even a number fits: beside the point, inside the plot
                anchor = "end" if x + 8 + w > W - 4 else "start"
                cx = x - 8 if anchor == "end" else x + 8
                chosen = (cx, y + 4, anchor, box(cx, y + 4, w, anchor))
        p["lx"], p["ly"], p["anchor"] = round(chosen[0], 1), round(chosen[1], 1), chosen[2]
        placed.append(chosen[3])
    return key


def chart(chart_id: str, title: str, x_label: str, y_label: str,
           pts: list[dict[str, Any]], ghosts: list[dict[str, Any]], maximize_y: bool,
           *, x_zero: bool, label_all: bool | None = None) -> dict[str, Any]:
    """An SVG-ready chart: axes with ticks, one marker per point, the Pareto frontier, and,
    where the points name several models (``model``, with its ``colour``), each model's own
    front. Every point is labelled when ``label_all`` (default: at most
    :data:`LABEL_ALL_UP_TO` points), else only the front points (``labelled`` says which)."""
    xs = [p["x"] for p in pts] + [g["x"] for g in ghosts]
    ys = [p["y"] for p in pts] + [g["y"] for g in ghosts]
    xa = _axis(xs, M_L, W - M_R, allow_log=True, zero=x_zero)
    ya = _axis(ys, H - M_B, M_T, allow_log=False)
    front = set(pareto_front([(p["x"], p["y"]) for p in pts], maximize_y=maximize_y))
    if label_all is None:
        label_all = len(pts) <= LABEL_ALL_UP_TO
    points = []
    for i, p in enumerate(pts):
        cx, cy = xa.px(p["x"]), ya.px(p["y"])
        points.append({**p, "cx": cx, "cy": cy, "front": i in front,
                       "labelled": label_all or i in front,
                       "d": shape_path(p.get("shape", "circle"), cx, cy, 6 if i in front else 5)})
    # Frontier as a staircase: from each front point across to the next x, then up/down.
    fp = sorted((p for p in points if p["front"]), key=lambda p: (p["cx"], -p["cy"]))
    path, segments = _staircase(fp, W - M_R)
    model_fronts = []
    models = list(dict.fromkeys(p["model"] for p in points if p.get("model") is not None))
    if len(models) > 1:
        for m in models:
            mine = [p for p in points if p.get("model") == m]
            mf = pareto_front([(p["x"], p["y"]) for p in mine], maximize_y=maximize_y)
            mfp = sorted((mine[i] for i in mf), key=lambda p: (p["cx"], -p["cy"]))
            d, _ = _staircase(mfp, None)
            if len(mfp) > 1:
                model_fronts.append({"model": m, "colour": mine[0]["colour"], "d": d,
                                     "n": len(mfp)})
    labelled = [p for p in points if p["labelled"]]
    key = _place_labels(labelled, segments, dots=[(p["cx"], p["cy"]) for p in points])
    for p in points:
        if not p["labelled"]:
            p["lx"] = p["ly"] = None
            p["anchor"] = "start"
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
        "points": points, "ghosts": gh, "frontier": path, "n_front": len(fp), "key": key,
        "model_fronts": model_fronts, "n_labelled": len(labelled),
        "better": "up and to the left" if maximize_y else "down and to the left",
    }
