"""Regression gate: compare a CURRENT run against a BASELINE run, cell by cell.

Cells are matched by (model, task, compression); inside a cell, metrics by name. What is checked
and how much worsening is allowed comes from a :class:`Thresholds` built by
:func:`gate_thresholds` out of a suite's ``gate:`` mapping and/or ``--threshold KEY=VALUE``
options. See docs/regression-gate.md for the keys and their meaning.

Kinds of check (``Finding.kind``):

* ``accuracy``: a quality metric (the task's main metric by default) got worse by more than
  an absolute (``accuracy_drop``) or relative (``accuracy_drop_relative``) amount;
* ``latency``: a latency/throughput metric got worse by more than ``latency_increase`` *and*
  more than the noise band ``latency_noise`` *and* the per-iteration samples say so with a
  one-sided Mann-Whitney U test at ``significance`` (without samples: the band only, and the
  finding says so);
* ``size``: the artifact (``size_bytes``) grew by more than ``size_increase`` (relative);
* ``missing``: a cell (or a gated metric) of the baseline is absent from the current run, or
  the cell is now skipped;
* ``failed``: a cell that was ok in the baseline failed.

The package by concern: :mod:`.thresholds` (settings and their validation), :mod:`.compare`
(the checks), :mod:`.findings` (what was found), :mod:`.render` (table, Markdown, JUnit, JSON).
This module re-exports the public names and holds :func:`run_gate`.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from ..analysis.cells import metric_kind, read_table
from ..errors import DataError
from ..fsutil import atomic_write_text
from .compare import compare, mann_whitney_p, parse_samples
from .findings import Finding, GateResult
from .retime import RetimeOptions, retime_tables
from .thresholds import MetricRule, Thresholds, gate_thresholds, set_dotted

__all__ = [
    "Finding",
    "GateResult",
    "MetricRule",
    "RetimeOptions",
    "Thresholds",
    "compare",
    "gate_thresholds",
    "mann_whitney_p",
    "metric_kind",
    "parse_samples",
    "run_gate",
    "set_dotted",
    "suite_gate",
]


def _write(path: Path | None, text: str, what: str) -> None:
    if path is None:
        return
    try:
        atomic_write_text(Path(path), text)
    except OSError as e:
        raise DataError(f"{what} {path}: cannot write: {e.strerror or e}") from e


def run_gate(baseline: Any, current: Any, thresholds: Mapping[str, Any] | Thresholds | None = None,
             *, markdown: Path | None = None, junit: Path | None = None,
             json_path: Path | None = None, out_dir: Path | None = None,
             suite_path: Path | None = None, out: IO[str] | None = None,
             baseline_name: str | None = None, current_name: str | None = None,
             noise_runs: Any = (), retime: RetimeOptions | None = None) -> int:
    """Compare, write the requested reports, print the table to ``out`` (stdout); return the
    exit status: 0 pass, 1 regression. Bad input (unreadable results, bad thresholds, no cell
    in common, an unwritable report path) raises :class:`~harness.errors.HarnessError`, which
    the command line turns into exit status 2.

    ``baseline``/``current``: a results folder or file, or a DataFrame. ``harness run SUITE
    --baseline DIR`` calls this with the fresh run's rows and the suite's ``gate:`` mapping.
    ``out_dir``: also write ``gate.md``, ``gate.junit.xml`` and ``gate.json`` there (for the
    paths not given explicitly). ``suite_path`` names the suite in threshold errors.
    ``noise_runs``: repeated runs of the baseline (folders, files or DataFrames) for
    ``noise_band: runs``. ``retime``: re-time the latency checks here and now
    (:mod:`harness.gate.retime`) instead of reading the recorded figures.
    """
    out = out or sys.stdout
    if out_dir is not None:
        out_dir = Path(out_dir)
        markdown = markdown or out_dir / "gate.md"
        junit = junit or out_dir / "gate.junit.xml"
        json_path = json_path or out_dir / "gate.json"
        current_name = current_name or str(out_dir)
    bname = baseline_name or (str(baseline) if not hasattr(baseline, "columns") else "baseline")
    cname = current_name or (str(current) if not hasattr(current, "columns") else "current")
    th = gate_thresholds(thresholds, path=suite_path)
    runs = (_run_folder(baseline), _run_folder(current) or out_dir)
    bdf, cdf = read_table(baseline, "baseline"), read_table(current, "current")
    retimed, notes = retime_tables(bdf, cdf, th.latency_metrics, retime) if (
        retime and th.latency_increase is not None) else ({}, [])
    result = compare(bdf, cdf, th, baseline_name=bname, current_name=cname, runs=runs,
                     noise_runs=[read_table(r, "noise run") for r in noise_runs], retimed=retimed)
    result.notes += notes
    _write(markdown, result.to_markdown(), "Markdown report")
    _write(junit, result.to_junit_xml(), "JUnit report")
    _write(json_path, result.to_json(), "JSON report")
    out.write(result.to_table())
    out.flush()
    return result.exit_code


def _run_folder(source: Any) -> Path | None:
    """The run folder of a results source (where its per-example outputs are), if it is one."""
    if hasattr(source, "columns"):
        return None
    p = Path(source)
    return p if p.is_dir() else p.parent


def suite_gate(path: Path) -> dict[str, Any]:
    """The ``gate:`` mapping of a suite file (empty when it has none)."""
    from ..suite import load_suite

    return dict(load_suite(path).gate or {})
