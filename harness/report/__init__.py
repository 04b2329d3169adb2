"""HTML leaderboard: one self-contained page per run (inline CSS, JS and SVG; no network).

:func:`render_report` turns the tidy result rows into ``index.html`` (from the jinja2 templates in
``harness/templates``) plus the same data as ``results.csv`` / ``results.json`` (every row) and
``leaderboard.csv`` / ``leaderboard.json`` (one row per cell, as in the tables). Per task the page
has a per-model summary (each model's best variant within an accuracy bound, by
:func:`harness.analysis.select.select`, see :mod:`.summary`), a sortable, filterable
leaderboard, Pareto charts of the main metric against size and against batch-1 latency
(frontier drawn, every point labelled, details on hover), every other metric the task returned
(as leaderboard columns or tables of their own, see :mod:`.columns`), failed and skipped cells
with their reasons, what each metric means, and a provenance panel. With a baseline it shows
coloured deltas against it. Counts (a unit such as ``entities`` or ``bytes``) show as integers;
a part with nothing in it is left out.

Every string from a suite, a plugin or an error goes through jinja2 autoescaping; the data for the
page's script is JSON in a ``<script type="application/json">`` with ``<``, ``>`` and ``&``
written as ``\\u003c`` etc., read with ``textContent`` and shown with ``textContent``.

The package by concern: :mod:`.view` (the template's context), :mod:`.columns` (where each
metric goes), :mod:`.charts` (Pareto charts), :mod:`.glossary` (metric meanings, provenance),
:mod:`.format` (numbers, safe JSON), :mod:`.summary` (the per-model summary), :mod:`.html`
(writing the files).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..analysis.cells import read_table
from .charts import pareto_front
from .html import render_report
from .view import build_view

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["build_view", "load_results_for_report", "pareto_front", "render_report"]


def load_results_for_report(path: Path, name: str) -> pd.DataFrame:
    """Results (a run folder or file) as a DataFrame; an unreadable one is a ``DataError``
    naming ``name`` ("results", "baseline") and the path."""
    return read_table(path, name)
