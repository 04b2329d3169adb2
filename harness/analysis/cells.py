"""Result rows -> cells: the one reading of a tidy results table that the gate, the report and
its exports share.

A results table has one row per (cell, metric) plus, for a failed or skipped cell, one row with
no metric. :func:`cells_of` groups them into :class:`CellResult` objects keyed by
``(model, task, compression)``; of a cell written by several runs (a resumed or repeated run
appended to the same file) only the rows of the last ``run_id`` count.

:func:`metric_kind` tells the measurements the core makes itself (latency, throughput, size,
memory, timings) from the metrics a task returns (everything else).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import DataError, HarnessError
from ..rows import KEY, CellKey, as_bool, as_float, as_text, cell_key, is_null, moved_names

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["KEY", "CellKey", "CellResult", "cells_of", "every_ok_has", "higher_is_better",
           "main_metric", "metric_kind", "read_table"]

#: Columns a table must have to be read as results (``KEY``, the columns that name a cell, and
#: ``CellKey``, their values, come from :mod:`harness.rows`).
REQUIRED = (*KEY, "status", "metric", "value")

#: Measurements of the core checked as latency (noise band + significance in the gate).
_LATENCY_RE = re.compile(r"^(latency_|throughput_)")
_LATENCY_NAMES = {"cold_start_ms", "compression_time_s", "train_time_s", "eval_time_s"}
#: Measurements of the core checked as size (relative increase, no noise).
_SIZE_NAMES = {
    "size_bytes", "parameters", "nonzero_parameters", "bits_per_weight",
    "peak_rss_mb", "peak_gpu_mem_mb", "peak_gpu_reserved_mb",
}


def metric_kind(metric: str) -> str:
    """``"latency"`` or ``"size"`` for a measurement of the core; ``"accuracy"`` for every
    other name: a metric the task returned (a quality metric)."""
    if _LATENCY_RE.match(metric) or metric in _LATENCY_NAMES:
        return "latency"
    if metric in _SIZE_NAMES:
        return "size"
    return "accuracy"


__getattr__ = moved_names(__name__, {"text": ("harness.rows.as_text", lambda: as_text)})


@dataclass
class CellResult:
    """One (model, task, compression) of a run: its status and its rows by metric name."""

    model: str
    task: str
    compression: str
    status: str  #: ok / failed / skipped
    error: str = ""  #: the error or skip reason ("" when none was recorded)
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)  #: metric -> its row
    info: dict[str, Any] = field(default_factory=dict)  #: the cell's last row (cell columns)

    @property
    def key(self) -> CellKey:
        return (self.model, self.task, self.compression)

    def value(self, metric: str | None) -> float | None:
        """The metric's value as a finite float, or None (absent, null, not a number)."""
        if metric is None or metric not in self.metrics:
            return None
        return as_float(self.metrics[metric].get("value"))

    def column(self, metric: str | None, column: str) -> Any:
        """Another column of the metric's row (None when the metric is absent)."""
        if metric is None or metric not in self.metrics:
            return None
        return self.metrics[metric].get(column)


def _check(df: Any, name: str) -> None:
    if df is None or not hasattr(df, "columns") or len(df) == 0:
        raise DataError(f"{name}: no result rows")
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise DataError(f"{name}: not a harness results table (missing columns: {', '.join(missing)})")


def cells_of(df: pd.DataFrame, name: str = "results") -> dict[CellKey, CellResult]:
    """The cells of a results table, in the order they first appear.

    Raises :class:`~harness.errors.DataError` naming ``name`` for an empty table or one that
    lacks the standard columns. An ``ok`` cell without any metric row counts as failed.
    """
    _check(df, name)
    by_cell: dict[CellKey, list[dict[str, Any]]] = {}
    records: list[dict[str, Any]] = df.to_dict(orient="records")  # type: ignore[assignment]
    for rec in records:
        by_cell.setdefault(cell_key(rec), []).append(rec)
    out: dict[CellKey, CellResult] = {}
    for key, recs in by_cell.items():
        last_run = recs[-1].get("run_id")
        if not is_null(last_run):
            recs = [r for r in recs if r.get("run_id") == last_run]
        cell = CellResult(*key, status=as_text(recs[-1].get("status")) or "ok", info=dict(recs[-1]))
        for r in recs:
            if is_null(r.get("metric")):
                if as_text(r.get("status")) not in ("", "ok"):
                    cell.status, cell.error = as_text(r.get("status")), as_text(r.get("error"))
                continue
            cell.metrics[str(r["metric"])] = dict(r)
        if cell.status == "ok" and not cell.metrics:
            cell.status, cell.error = "failed", cell.error or "no metric recorded"
        out[key] = cell
    return out


def main_metric(cells: Iterable[CellResult]) -> str | None:
    """The headline metric of a group of cells (a task's): the metric their rows mark as
    ``main_metric`` (the most cells' vote), else the first undotted task metric."""
    cells = list(cells)
    votes: dict[str, int] = {}
    for c in cells:
        for m, r in c.metrics.items():
            if as_bool(r.get("main_metric")):
                votes[m] = votes.get(m, 0) + 1
    if votes:
        return max(votes, key=lambda m: (votes[m], m))
    return next((m for c in cells for m in c.metrics
                 if metric_kind(m) == "accuracy" and "." not in m), None)


def every_ok_has(cells: Iterable[CellResult], metric: str | None) -> bool:
    """Whether the cells include an ok one and every ok one records ``metric``."""
    ok = [c for c in cells if c.status == "ok"]
    return bool(ok) and all(c.value(metric) is not None for c in ok)


def higher_is_better(cells: Iterable[CellResult], metric: str | None, default: bool) -> bool:
    """Whether higher values of ``metric`` are better, from the first row that says."""
    for c in cells:
        b = as_bool(c.column(metric, "higher_is_better"))
        if b is not None:
            return b
    return default


def read_table(source: Any, name: str) -> pd.DataFrame:
    """A results table from a run folder, a results file or a DataFrame, through the one reader
    (:func:`harness.results.read`; a DataFrame keeps every run's rows: :func:`cells_of` takes
    each cell's last); an unreadable one is a :class:`~harness.errors.DataError` naming
    ``name`` and the path."""
    import pandas as pd

    from ..results import read

    if isinstance(source, pd.DataFrame):
        _check(source, name)  # before conforming adds the standard columns it may lack
        return read(source, latest=False)
    try:
        return read(source)
    except HarnessError:
        raise
    except (OSError, ValueError) as e:
        raise DataError(f"{name} {source}: cannot read results: {e}") from e
