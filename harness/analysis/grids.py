"""Choosing among a grid's variants: the best of each ``grid:`` (``harness.grid``) on the
validation split, with the chosen variant's evaluation-split (test) figure reported once.

A grid on a task entry (``{plugin: ner, grid: {epochs: [3, 5], lr: [5e-5, 1e-4]}}``: a teacher
search) or on a compression entry gives cells whose task or compression names are
``<entry>@<point>``. :func:`choose` groups the ok and failed cells of a run by model and by the
task and compression names with their points removed; every group with more than one variant
is a choice. Its variants are compared on ``validation_<main metric>`` (the rows of a run with
``validation_split``, :mod:`harness.validation`) and the best is chosen (higher or lower per the
rows' ``higher_is_better``; ties: the first in the run). Without a validation figure on every ok
variant nothing is chosen and the choice says why: a grid is never chosen on the test split.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from ..grid import NAME_SEP
from ..rows import as_json, as_text
from ..textfmt import num, table
from ..validation import PREFIX
from .cells import CellResult, cells_of, every_ok_has, higher_is_better, main_metric

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["GridChoice", "GridVariant", "choose", "to_json", "to_table"]


@dataclass
class GridVariant:
    """One variant of a grid: its task and compression names, status and figures."""

    task: str
    compression: str
    status: str
    validation: float | None  #: the main metric on the validation split
    test: float | None  #: the main metric on the evaluation split (the one reported)
    train_time_s: float | None = None  #: the fine-tuning it cost (cached: the first run's)
    validation_split: str = ""  #: the splits' names, as the rows give them
    test_split: str = ""


@dataclass
class GridChoice:
    """The choice among one grid's variants of one model."""

    model: str
    task: str  #: the task entry's name (without a grid point)
    compression: str  #: the compression entry's name (without a grid point)
    metric: str | None
    chosen_on: str | None  #: ``validation_<metric>``; None when nothing could be chosen
    chosen: GridVariant | None
    variants: list[GridVariant] = field(default_factory=list)
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["chosen"] = asdict(self.chosen) if self.chosen else None
        return as_json(d)


def base_name(name: str) -> str:
    """An entry's name without its grid point: ``prune@sparsity=0.5`` -> ``prune``."""
    return name.split(NAME_SEP, 1)[0]


def _variant(c: CellResult, metric: str | None) -> GridVariant:
    val = f"{PREFIX}{metric}" if metric else None
    return GridVariant(c.task, c.compression, c.status, c.value(val), c.value(metric),
                       c.value("train_time_s"), as_text(c.column(val, "split")),
                       as_text(c.column(metric, "split")))


def _with_split(value: float | None, split: str) -> str:
    return f"{num(value)} ({split})" if value is not None and split else num(value)


def _choose_one(model: str, task: str, compression: str, group: list[CellResult]) -> GridChoice:
    metric = main_metric(group)
    variants = [_variant(c, metric) for c in group]
    choice = GridChoice(model, task, compression, metric, None, None, variants)
    ok = [v for v in variants if v.status == "ok"]
    if not ok:
        choice.note = "no variant finished"
    elif not every_ok_has(group, f"{PREFIX}{metric}"):
        choice.note = (f"no {PREFIX}{metric} on every finished variant: set the run setting "
                       "validation_split (or the task's) to choose; never chosen on the test split")
    else:
        sign = -1.0 if higher_is_better(group, metric, True) else 1.0
        choice.chosen_on = f"{PREFIX}{metric}"
        choice.chosen = min(ok, key=lambda v: sign * (v.validation or 0.0))
    return choice


def choose(results: pd.DataFrame, name: str = "results") -> list[GridChoice]:
    """One :class:`GridChoice` per grid (and model) of ``results``, in the order first seen;
    ``[]`` when no task or compression name carries a grid point."""
    groups: dict[tuple[str, str, str], list[CellResult]] = {}
    for c in cells_of(results, name).values():
        if c.status == "skipped" or NAME_SEP not in c.task + c.compression:
            continue
        groups.setdefault((c.model, base_name(c.task), base_name(c.compression)), []).append(c)
    return [_choose_one(*key, group) for key, group in groups.items() if len(group) > 1]


def to_json(choices: list[GridChoice]) -> str:
    return json.dumps({"grids": [c.to_dict() for c in choices]}, indent=1, allow_nan=False) + "\n"


_HEAD = ("MODEL", "TASK", "COMPRESSION", "CHOSEN", "CHOSEN ON", "REPORTED", "TRAIN_S")


def to_table(choices: list[GridChoice]) -> str:
    """One line per variant: its validation figure (CHOSEN ON) and evaluation-split figure
    (REPORTED), each with its split's name; the chosen one's CHOSEN is ``*``; a grid without a
    choice gets a line with its reason."""
    rows = []
    for c in choices:
        for v in c.variants:
            mark = "*" if v is c.chosen else ""
            status = "" if v.status == "ok" else f" ({v.status})"
            rows.append([c.model, v.task + status, v.compression, mark,
                         _with_split(v.validation, v.validation_split),
                         _with_split(v.test, v.test_split), num(v.train_time_s)])
        if c.chosen is None:
            rows.append([c.model, c.task, c.compression, f"(none: {c.note})", "", "", ""])
    if not rows:
        return "no grid variants in these results (entries named <name>@<point>)\n"
    return table(_HEAD, rows)
