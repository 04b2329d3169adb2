"""The models x compressions view of a task (issue 30, part 1): one row per model, one column
per compression, each cell the main metric with its change against the same model's own
uncompressed variant, and its size and batch-1 latency as ratios to that variant.

The uncompressed variant is ``harness select``'s baseline variant (its default ``baseline``,
the one the per-model summary states too). Failed and skipped cells show their status with the
reason as a hover title; the latency is the rotation-timed p50 where the cell has it
(:mod:`harness.report.rotation`; a ratio only between two figures of the same timing); the
best ok cell of each row (by the main metric, in its direction; ties by compression name) is
marked. A task with a single model gets no matrix: the
leaderboard table already says it all. Everything here is plain text; the template escapes it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..analysis.cells import CellResult
from ..analysis.select import BASELINE as SELECT_BASELINE
from .columns import DELTA_NEUTRAL_ABS, TaskLayout, values
from .format import num
from .rotation import P50 as ROTATION_P50

__all__ = ["BASELINE", "best_of", "matrix", "ratio"]

#: The uncompressed variant every cell is compared with: ``harness select``'s default baseline.
BASELINE = SELECT_BASELINE


@dataclass(frozen=True)
class _Ref:
    """A model's uncompressed variant's numbers (None where it has none that succeeded)."""

    main: float | None
    size_mb: float | None
    p50: float | None
    note: str  #: why there is nothing to compare with ("" when there is)
    p50_own: float | None = None  #: its p50 timed within its own cell run
    rotated: bool = False  #: ``p50`` is rotation-timed


def ratio(value: float | None, ref: float | None) -> float | None:
    """``value / ref``; None without both or with a zero reference."""
    if value is None or ref is None or ref == 0:
        return None
    return value / ref


def best_of(scores: Sequence[tuple[str, float | None]], higher_is_better: bool) -> str | None:
    """The name with the best score (highest, or lowest when lower is better); ties go to the
    name that sorts first. None when no score is known."""
    known = [(n, s) for n, s in scores if s is not None]
    if not known:
        return None
    sign = -1.0 if higher_is_better else 1.0
    return min(known, key=lambda ns: (sign * (ns[1] or 0.0), ns[0]))[0]


def _ref(model: str, base: CellResult | None, lay: TaskLayout) -> _Ref:
    """The reference numbers of ``model`` from its ``BASELINE`` cell."""
    if base is None:
        return _Ref(None, None, None, f"{model} has no {BASELINE!r} variant to compare with")
    if base.status != "ok":
        return _Ref(None, None, None,
                    f"{model}'s {BASELINE!r} variant {base.status}: nothing to compare with")
    v = values(base, lay)
    note = "" if v["main"] is not None else f"{model}'s {BASELINE!r} variant has no {lay.main}"
    return _Ref(v["main"], v["size_mb"], v["p50"], note, base.value(lay.p50),
                base.value(ROTATION_P50) is not None)


def _latencies(c: CellResult, p50: float | None, lay: TaskLayout,
               ref: _Ref) -> tuple[float | None, float | None]:
    """The cell's and its reference's p50 from the same timing: rotation where both have it
    (or the reference has none), else both their own."""
    if ref.p50 is None or (c.value(ROTATION_P50) is not None) == ref.rotated:
        return p50, ref.p50
    return c.value(lay.p50), ref.p50_own


def _change(main: float | None, ref: _Ref, hib: bool) -> dict[str, str]:
    """The change of the main metric against the model's own uncompressed variant."""
    if main is None or ref.main is None:
        return {"text": "", "cls": "", "title": ref.note}
    d = main - ref.main
    cls = "same" if abs(d) < DELTA_NEUTRAL_ABS else ("better" if (d > 0) == hib else "worse")
    return {"text": f"{d:+.4f}", "cls": cls,
            "title": f"{num(main)} against {num(ref.main)} uncompressed ({BASELINE}): {d:+.4f}"}


def _ratio_line(label: str, value: float | None, ref: float | None, unit: str) -> str:
    r = ratio(value, ref)
    if r is None:
        return f"{label} –" if value is None else f"{label} {num(value, 2)} {unit}"
    return f"{label} {r:.2f}×"


def _ok_cell(c: CellResult, lay: TaskLayout, ref: _Ref) -> dict[str, Any]:
    """An ok cell; the uncompressed variant's own cell shows absolute size and latency."""
    v = values(c, lay)
    if c.compression == BASELINE:
        ref = _Ref(None, None, None, "")
    change = _change(v["main"], ref, lay.main_hib)
    rotated = " (rotation-timed)" if c.value(ROTATION_P50) is not None else ""
    title = (f"{c.model} / {c.compression}: {lay.main or 'main metric'} {num(v['main'])}; "
             f"size {num(v['size_mb'], 2)} MB, batch-1 latency {num(v['p50'], 2)} ms{rotated}")
    return {"text": num(v["main"]), "sort": v["main"], "change": change,
            "lines": [_ratio_line("size", v["size_mb"], ref.size_mb, "MB"),
                      _ratio_line("latency", *_latencies(c, v["p50"], lay, ref), "ms")],
            "title": "; ".join(t for t in (title, ref.note) if t)}


def _cell(model: str, comp: str, c: CellResult | None, lay: TaskLayout, ref: _Ref,
          row_ids: Mapping[tuple[str, str], str]) -> dict[str, Any]:
    """One matrix cell (a dict the template reads; ``status`` "" when the cell was not run)."""
    out: dict[str, Any] = {"compression": comp, "status": "", "text": "–", "sort": None,
                           "change": None, "lines": [], "best": False,
                           "title": f"{model} / {comp}: not in these results",
                           "href": row_ids.get((model, comp), "")}
    if c is None:
        return out
    out["status"] = c.status
    if c.status == "ok":
        out.update(_ok_cell(c, lay, ref))
    else:
        out.update(text=c.status, title=f"{c.status}: {c.error or '(no reason recorded)'}")
    return out


def _columns(cells: Sequence[CellResult]) -> list[str]:
    """The compressions of the task: the uncompressed variant first, then by name."""
    names = {c.compression for c in cells}
    return sorted(names, key=lambda n: (n != BASELINE, n.lower(), n))


def _row(model: str, comps: list[str], by_comp: Mapping[str, CellResult], lay: TaskLayout,
         row_ids: Mapping[tuple[str, str], str]) -> dict[str, Any]:
    ref = _ref(model, by_comp.get(BASELINE), lay)
    cells = [_cell(model, comp, by_comp.get(comp), lay, ref, row_ids) for comp in comps]
    best = best_of([(x["compression"], x["sort"]) for x in cells if x["status"] == "ok"],
                   lay.main_hib)
    for x in cells:
        x["best"] = x["compression"] == best
    return {"model": model, "sort": model.lower(), "cells": cells, "best": best or "",
            "reference": num(ref.main)}


def all_skipped(cells: Sequence[CellResult]) -> set[str]:
    """The models skipped in every one of ``cells`` (one task's): they cannot serve the task (e.g.
    a text classifier on an NER task), so the summary and the matrix give them no row."""
    status: dict[str, set[str]] = {}
    for c in cells:
        status.setdefault(c.model, set()).add(c.status)
    return {m for m, seen in status.items() if seen == {"skipped"}}


def matrix(index: int, cells: Sequence[CellResult], lay: TaskLayout,
           row_ids: Mapping[tuple[str, str], str], skipped: set[str] | None = None) -> dict[str, Any] | None:
    """The models x compressions view of one task (``cells``: all of the task's cells;
    ``row_ids``: (model, compression) -> the leaderboard row id, to link each cell to its row;
    ``skipped``: :func:`all_skipped` of ``cells`` when the caller has it already).
    None when fewer than two models have a cell that was not skipped; a model skipped in every
    cell of the task is listed under ``hidden`` with the first reason instead of a row."""
    models: dict[str, dict[str, CellResult]] = {}
    for c in cells:
        models.setdefault(c.model, {})[c.compression] = c
    # a model skipped in every cell of the task (it cannot serve it) gets a note, not a row
    skipped = all_skipped(cells) if skipped is None else skipped
    hidden = {m: next(iter(models[m].values())).error or "" for m in skipped}
    shown = sorted((m for m in models if m not in hidden), key=lambda m: (m.lower(), m))
    if len(shown) < 2:
        return None
    comps = _columns([c for m in shown for c in models[m].values()])
    return {"id": f"task-{index}-matrix", "baseline": BASELINE, "main": lay.main or "main metric",
            "better": "higher" if lay.main_hib else "lower", "columns": comps,
            "rows": [_row(m, comps, models[m], lay, row_ids) for m in shown],
            "hidden": [{"model": m, "reason": hidden[m]} for m in sorted(hidden)]}
