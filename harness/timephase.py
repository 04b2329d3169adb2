"""The timing phase of ``harness run``: once the cells are done, the ok cells of each (model,
task) group are timed again in rotation (:mod:`harness.rotation`), each variant alone in a
process of its own, in ``settings.timing_rounds`` rounds, on the inputs their cells were timed
on. Nothing else runs meanwhile (the cells are finished). A group's rows land together (one
write) and are cached under ``<cache_dir>/timing/`` by the group's membership and the timing
settings: a re-run with the same variants reuses them, a changed group is timed again.

Each timed cell gains four metrics: ``latency_b1_rotation_p50_ms`` and
``throughput_rotation_samples_s`` (medians over the rounds: comparable across models and
cells), and, when the group has its reference entry (``settings.timing_reference``),
``latency_b1_ratio`` and ``throughput_ratio`` (the median of the per-round ratios to the
reference, with a bootstrap CI). The cell's own timing stays as the raw figure.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
import uuid
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .api import MetricValue
from .cell import CellSpec
from .errors import HarnessWarning
from .fsutil import atomic_write_text
from .rotation import (
    RotationError,
    RoundBudget,
    Timed,
    Variant,
    ratio,
    rotate,
    start_all,
    timing_threads,
)
from .rows import as_text, build, cell_label, metric_columns

__all__ = ["ROTATION_METRICS", "group_rows", "time_groups"]

#: the method's version: part of a group's cache key (a changed method times again)
TIMING_VERSION = 2
#: the metrics the phase adds, with (description, unit, higher is better)
ROTATION_METRICS: dict[str, tuple[str, str, bool]] = {
    "latency_b1_rotation_p50_ms": (
        "batch-1 latency p50, timed alone in its own process in rotation with the other "
        "variants of its model and task; median over the rounds", "ms", False),
    "throughput_rotation_samples_s": (
        "samples per second at the throughput batch size, timed in rotation; median over "
        "the rounds", "samples/s", True),
    "latency_b1_ratio": (
        "batch-1 latency p50 / the reference variant's, taken in the same round; median of "
        "the per-round ratios, 95% bootstrap CI", "x", False),
    "throughput_ratio": (
        "throughput / the reference variant's, taken in the same round; median of the "
        "per-round ratios, 95% bootstrap CI", "x", True),
}
#: columns of a cell's row that belong to one metric (not copied onto the timing rows)
_METRIC_COLUMNS = ("metric", "value", "ci_low", "ci_high", "metric_description",
                   "higher_is_better", "main_metric", "unit", "metric_group", "samples",
                   "cell_rows")


def _metric(name: str, value: float, samples: Sequence[float],
            ci: tuple[float, float] | None = None) -> dict[str, Any]:
    doc, unit, hib = ROTATION_METRICS[name]
    m = MetricValue(name, value, ci[0] if ci else None, ci[1] if ci else None,
                    metric_description=doc, higher_is_better=hib, unit=unit)
    return metric_columns(m, samples=samples, measured_by_core=True)


def group_rows(timed: Mapping[str, list[Timed]], reference: str | None,
               seed: int = 0) -> dict[str, list[dict[str, Any]]]:
    """The metric parts of each variant (by name) from its turns; ratios only with a
    ``reference`` among ``timed``."""
    import statistics

    out: dict[str, list[dict[str, Any]]] = {}
    ref = timed.get(reference) if reference else None
    for name, turns in timed.items():
        p50s = [t.p50_ms for t in turns]
        thr = [t.throughput_samples_s for t in turns]
        parts = [_metric("latency_b1_rotation_p50_ms", statistics.median(p50s), p50s),
                 _metric("throughput_rotation_samples_s", statistics.median(thr), thr)]
        if ref is not None:
            med, lo, hi, per = ratio(p50s, [t.p50_ms for t in ref], seed)
            parts.append(_metric("latency_b1_ratio", med, per, (lo, hi)))
            med, lo, hi, per = ratio(thr, [t.throughput_samples_s for t in ref], seed)
            parts.append(_metric("throughput_ratio", med, per, (lo, hi)))
        out[name] = parts
    return out


def _group_key(members: Sequence[CellSpec], s: Any, budget: RoundBudget) -> str:
    doc = [TIMING_VERSION, sorted(m.cell_id for m in members), s.timing_rounds, s.timing_reference,
           s.timing_processes, budget.warmup, budget.latency_s, budget.throughput_s]
    return "t-" + hashlib.sha256(json.dumps(doc).encode()).hexdigest()[:16]


def _budget(s: Any) -> RoundBudget:
    """A round's share of the suite's timing budget (at least one whole pass each)."""
    per_round = max(0.1, s.min_duration_s / max(1, s.timing_rounds))
    return RoundBudget(warmup=s.warmup, latency_s=per_round, throughput_s=min(per_round, 1.0))


def _chunks(members: list[CellSpec], ref: CellSpec | None, size: int) -> list[list[CellSpec]]:
    """Groups of at most ``size`` processes alive at once, each with the reference."""
    others = [m for m in members if m is not ref]
    step = max(1, size - (ref is not None))
    return [([ref] if ref else []) + others[i:i + step] for i in range(0, len(others), step)]


def _rounds(say: Any, where: str) -> Any:
    """The progress callback of a chunk's rounds: ``chunk 2/4 (8 processes), round 3/5``."""
    return lambda done, total: say(f"{where}round {done}/{total}")


def _measure(members: list[CellSpec], ref: CellSpec | None, s: Any, budget: RoundBudget,
             rows: Mapping[str, Mapping[str, Any]], opts: Any,
             say: Any) -> dict[str, list[dict[str, Any]]]:
    """Time the group chunk by chunk; the metric parts by cell id."""
    parts: dict[str, list[dict[str, Any]]] = {}
    chunks = _chunks(members, ref, max(2, s.timing_processes))
    for i, chunk in enumerate(chunks, 1):
        where = f"chunk {i}/{len(chunks)} ({len(chunk)} processes), " if len(chunks) > 1 else ""
        variants = [Variant(m.cell_id, m, expect_sha256=as_text(rows[m.cell_id].get("artifact_sha256")) or None,
                            disabled=opts.disabled_plugins, extra=opts.extra_plugins)
                    for m in chunk]
        try:
            ready, failed = start_all(variants)
            for name, why in failed.items():
                _warn(f"rotation timing left out {cell_label(rows[name])}: {why}")
            if len(ready) < 2:
                continue
            timed = rotate(ready, s.timing_rounds, budget, progress=_rounds(say, where))
        finally:
            for v in variants:
                v.close()
        # the reference is in every chunk: its figures are those of the first
        for cell_id, p in group_rows(timed, ref.cell_id if ref else None, s.seed).items():
            parts.setdefault(cell_id, p)
    return parts


def time_groups(run: Any, cells: Sequence[CellSpec], writer: Any) -> None:
    """Time every group of ``cells`` whose ok cells are in ``run.out_dir``'s results and do not
    carry this group's timing rows yet; write each group's rows in one write."""
    s = run.suite.settings
    if s.timing_rounds <= 0:
        return
    from .results import read

    df = read(run.out_dir)
    latest: dict[str, dict[str, Any]] = {}
    for rec in df.to_dict(orient="records"):
        if rec.get("status") == "ok":
            latest[str(rec["cell_id"])] = rec  # type: ignore[assignment]
    groups: dict[tuple[str, str], list[CellSpec]] = {}
    for spec in cells:
        if spec.cell_id in latest:
            groups.setdefault((spec.model.name, spec.task.name), []).append(spec)
    budget = _budget(s)
    for (model, task), members in groups.items():
        if len(members) < 2:  # nothing to rotate with: its cell timing was alone already
            continue
        key = _group_key(members, s, budget)
        if not run.opts.force and all(latest[m.cell_id].get("timing_group") == key for m in members):
            continue
        _time_one(run, members, key, budget, latest, writer, f"{model}/{task}")


def _time_one(run: Any, members: list[CellSpec], key: str, budget: RoundBudget,
              latest: Mapping[str, Mapping[str, Any]], writer: Any, label: str) -> None:
    s = run.suite.settings
    cache = Path(s.cache_dir) / "timing" / f"{key}.json"
    parts = None if run.opts.force else _read_cache(cache)  # --force: timed again
    cached, t0 = True, time.perf_counter()
    if parts is None:
        cached = False
        ref = next((m for m in members if m.compression.name == s.timing_reference), None)

        def say(text: str) -> None:
            if run.opts.show_progress:
                print(f"timing {label} in rotation ({len(members)} variants): {text}",
                      file=sys.stderr, flush=True)

        try:
            parts = _measure(members, ref, s, budget, latest, run.opts, say)
        except RotationError as exc:
            _warn(f"rotation timing of {label} failed, its cells keep their own timing: {exc}")
            return
        if not parts:
            return
        _write_cache(cache, parts)
    wall = round(time.perf_counter() - t0, 3)
    block = uuid.uuid4().hex[:12]
    n = sum(len(p) for p in parts.values())
    rows = []
    for cell_id, metric_parts in parts.items():
        base = {k: v for k, v in latest[cell_id].items() if k not in _METRIC_COLUMNS}
        threads = timing_threads(str(base.get("device") or "cpu"))
        if threads is not None:  # the rotation's, not the cell worker's (--jobs 2: 1 each)
            base["threads"] = threads
        extra = {"timing_group": key, "timing_block": block, "timing_rows": n,
                 "timing_rounds": s.timing_rounds, "timing_reference": s.timing_reference,
                 "timing_wall_s": wall, "cached": cached}
        rows += [build(base, extra, m) for m in metric_parts]
    writer.write_cell(rows)


def _read_cache(path: Path) -> dict[str, list[dict[str, Any]]] | None:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    ok = isinstance(doc, dict) and all(isinstance(v, list) for v in doc.values())
    return doc if ok else None


def _write_cache(path: Path, parts: Mapping[str, Any]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(parts, default=str))
    except OSError as exc:
        _warn(f"cannot cache the rotation timing in {path} ({exc}); it is in the results")


def _warn(message: str) -> None:
    warnings.warn(message, HarnessWarning, stacklevel=3)
