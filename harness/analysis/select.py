"""Release selection: per (model, task), the best compressed variant within an accuracy bound.

:func:`select` reads a run through :func:`harness.analysis.cells.cells_of` and, for each model and task,
compares every variant (compression) with the baseline variant (``none`` by default) of the same
model and task: the drop of the headline metric (the rows' ``main_metric``) must be at most
``max_drop`` (absolute); among the variants within the bound, the best by the measurement ``by``
(lower is better for latency and size, higher for throughput: from the rows'
``higher_is_better``) is chosen. The Pareto-optimal set (headline metric against ``by``) is
listed beside it. A failed or skipped variant, or one without both numbers, is never chosen.

The cell's own batch-1 p50 and throughput are timed minutes apart and carry the machine's drift
between them; where rotation timing (``harness.timephase``) timed **every** ok variant of a
(model, task), ``by`` = ``latency_b1_p50_ms`` / ``throughput_samples_s`` compares their rotation
figures instead (:data:`ROTATED`; the selection's ``by`` names the metric used). A group with
some variants not rotation-timed keeps the cell figures, so no comparison mixes the two.

Where every ok variant of a (model, task), the baseline included, also scored the validation
split (the run setting ``validation_split``; rows ``validation_<metric>``), the bound and the
choice use those figures (the selection's ``chosen_on``), and each variant's evaluation-split
(test) figure is reported beside them (``test_value``, ``test_delta``; the table's TEST column):
the choice is never tuned on the test split.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import DataError
from ..rows import as_json
from ..textfmt import num, table
from ..validation import PREFIX
from .cells import CellResult, cells_of, every_ok_has, higher_is_better, main_metric, metric_kind
from .pareto import pareto_front

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["ROTATED", "Selection", "Variant", "select", "to_json", "to_table"]

_EPS = 1e-12


@dataclass
class Variant:
    """One compression of a (model, task): its headline metric, change and ``by`` value."""

    compression: str
    status: str
    value: float | None
    delta: float | None  #: headline metric minus the baseline's (None without both)
    by_value: float | None
    within: bool  #: ok, both numbers known, and the drop is within the bound
    #: the headline metric on the evaluation split and its change (= value / delta unless the
    #: choice was made on the validation split)
    test_value: float | None = None
    test_delta: float | None = None


@dataclass
class Selection:
    """The outcome for one (model, task)."""

    model: str
    task: str
    metric: str | None
    by: str
    baseline: float | None
    chosen: Variant | None
    pareto: list[str] = field(default_factory=list)  #: compressions on the front
    variants: list[Variant] = field(default_factory=list)
    note: str = ""
    #: the metric the bound and the choice used: ``validation_<metric>`` where every ok variant
    #: has it (:mod:`harness.validation`), else ``metric``
    chosen_on: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["chosen"] = self.chosen.compression if self.chosen else None
        d["delta"] = self.chosen.delta if self.chosen else None
        d["by_value"] = self.chosen.by_value if self.chosen else None
        d["test_value"] = self.chosen.test_value if self.chosen else None
        d["test_delta"] = self.chosen.test_delta if self.chosen else None
        return as_json(d)


def _by_hib(cells: list[CellResult], by: str) -> bool:
    return higher_is_better(cells, by, by.startswith("throughput_"))


def _changes(group: list[CellResult], base: CellResult | None,
             metric: str | None) -> list[tuple[float | None, float | None]]:
    """Each cell's ``metric`` and its change against the ok baseline's (None without both)."""
    bval = base.value(metric) if base is not None and base.status == "ok" else None
    values = [c.value(metric) for c in group]
    return [(v, v - bval if v is not None and bval is not None else None) for v in values]


def _pick(group: list[CellResult], base: CellResult | None, metric: str | None, by: str,
          hib: bool, by_hib: bool, max_drop: float) -> tuple[list[Variant], Variant | None]:
    out: list[Variant] = []
    for c, (v, delta) in zip(group, _changes(group, base, metric), strict=True):
        b = c.value(by)
        drop = None if delta is None else (-delta if hib else delta)
        ok = c.status == "ok" and b is not None and drop is not None and drop <= max_drop + _EPS
        out.append(Variant(c.compression, c.status, v, delta, b, ok))
    within = [v for v in out if v.within]
    sign = -1.0 if by_hib else 1.0
    best = min(within, key=lambda v: (sign * (v.by_value or 0.0), -(v.delta or 0.0),
                                      v.compression), default=None)
    return out, best


#: a cell timing metric -> its rotation-timed counterpart, preferred where a whole group has it
ROTATED = {"latency_b1_p50_ms": "latency_b1_rotation_p50_ms",
           "throughput_samples_s": "throughput_rotation_samples_s"}


def _effective_by(group: list[CellResult], by: str) -> str:
    """``by``'s rotation-timed counterpart when every ok cell of the group has it, else ``by``."""
    rotated = ROTATED.get(by)
    return rotated if rotated and every_ok_has(group, rotated) else by


def _choice_metric(group: list[CellResult], base: CellResult | None, metric: str | None) -> str | None:
    """``validation_<metric>`` when the baseline and every ok variant have it, else ``metric``."""
    val = f"{PREFIX}{metric}" if metric else None
    base_ok = base is not None and base.status == "ok"
    return val if val and base_ok and every_ok_has(group, val) else metric


def _with_test(variants: list[Variant], group: list[CellResult], base: CellResult | None,
               metric: str | None) -> None:
    """Fill each variant's evaluation-split value and change."""
    for v, (value, delta) in zip(variants, _changes(group, base, metric), strict=True):
        v.test_value, v.test_delta = value, delta


#: the variant every other variant of a (model, task) is compared with, unless told otherwise
BASELINE = "none"


def select(results: pd.DataFrame, max_drop: float, by: str = "latency_b1_p50_ms", *,
           baseline: str = BASELINE, name: str = "results") -> list[Selection]:
    """One :class:`Selection` per (model, task) of ``results``, in the order first seen.

    Raises :class:`~harness.errors.DataError` for a negative ``max_drop`` or a ``by`` that no
    row records (the message lists the measurements that are there)."""
    if max_drop < 0:
        raise DataError(f"--max-drop must be >= 0, got {max_drop:g}")
    cells = cells_of(results, name)
    recorded = {m for c in cells.values() for m in c.metrics}
    if by not in recorded:
        there = sorted(m for m in recorded if metric_kind(m) != "accuracy")
        raise DataError(f"{name}: no row records --by {by!r}; measurements there: "
                        f"{', '.join(there) or 'none'}")
    groups: dict[tuple[str, str], list[CellResult]] = {}
    for c in cells.values():
        groups.setdefault((c.model, c.task), []).append(c)
    out = []
    for (model, task), group in groups.items():
        task_cells = [c for c in cells.values() if c.task == task]
        metric = main_metric(task_cells)
        hib = higher_is_better(task_cells, metric, True)
        by_hib = _by_hib(task_cells, by)
        base = next((c for c in group if c.compression == baseline), None)
        used, on = _effective_by(group, by), _choice_metric(group, base, metric)
        variants, best = _pick(group, base, on, used, hib, by_hib, max_drop)
        _with_test(variants, group, base, metric)
        sel = Selection(model, task, metric, used, base.value(on) if base else None, best,
                        variants=variants, chosen_on=on)
        pts = [v for v in variants if v.status == "ok" and v.value is not None
               and v.by_value is not None]
        front = pareto_front([((-1.0 if by_hib else 1.0) * (v.by_value or 0.0), v.value or 0.0)
                              for v in pts], maximize_y=hib)
        sel.pareto = [pts[i].compression for i in front]
        if base is None or base.status != "ok" or sel.baseline is None:
            sel.note = (f"no {baseline!r} variant with {metric or 'a headline metric'} to bound the "
                        f"drop against" + (f" ({base.status})" if base is not None else ""))
        elif best is None:
            sel.note = f"no variant within a drop of {max_drop:g} with a {used} value"
        out.append(sel)
    return out


def to_json(selections: list[Selection], max_drop: float, by: str) -> str:
    return json.dumps({"max_drop": max_drop, "by": by,
                       "selections": [s.to_dict() for s in selections]},
                      indent=1, allow_nan=False) + "\n"


_HEAD = ("MODEL", "TASK", "METRIC", "BASELINE", "CHOSEN", "DELTA", "BY", "TEST", "PARETO-OPTIMAL")


def to_table(selections: list[Selection]) -> str:
    rows = []
    for s in selections:
        c = s.chosen
        test = (f"{num(c.test_value)} ({c.test_delta:+.4f})" if c and c.test_delta is not None
                else num(c.test_value) if c else "-")
        rows.append([s.model, s.task, s.chosen_on or s.metric or "-", num(s.baseline),
                     c.compression if c else f"(none: {s.note})",
                     f"{c.delta:+.4f}" if c and c.delta is not None else "-",
                     f"{s.by}={num(c.by_value)}" if c else "-", test, ", ".join(s.pareto) or "-"])
    return table(_HEAD, rows)  # one line per row: control characters become spaces
