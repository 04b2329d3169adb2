"""Which pending cell a free worker takes: never one that would build what a cell in flight is
building right now.

Cells share cached work: every compression of a (model, task) starts from the same fine-tuned
checkpoint, and a chain starts from the cached output of its first steps (``distill`` alone and
``distill -> ort-int8`` train the same student). With several workers and a cold cache, two cells
that need the same checkpoint would both build it at once (a teacher fine-tuned twice, each copy
at half the cores). So a cell waits while another worker is in the phase that builds something
it needs (``load`` / ``fine-tune``: the checkpoint; ``compress``: a chain prefix), and a free
worker takes the first pending cell that does not. When that phase ends the work is in the cache
(:func:`built`), the held cells run from it and it holds no cell back again (later cells of the
same checkpoint start at once). Keys are plugin names and parameters, never entry names: the
compression ``distill-3`` and a chain's first step ``distill`` with the same parameters share.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence, Set

from .cell import CellSpec
from .entries import Entry

#: the worker phases that build the (model, task) checkpoint; ``compress`` builds chain prefixes
FIT_PHASES = frozenset({"setup", "load", "fine-tune"})


def _ident(entry: Entry) -> str:
    return json.dumps([entry.plugin, entry.params], sort_keys=True, default=str)


def _base(spec: CellSpec) -> str:
    return f"{_ident(spec.model)}|{_ident(spec.task)}"


def _prefixes(spec: CellSpec) -> set[str]:
    """Keys of the compression's step prefixes: (step 1), (step 1, step 2), ..."""
    steps = spec.compression.steps or (spec.compression,)
    out, acc = set(), _base(spec)
    for step in steps:
        acc = f"{acc}|{_ident(step)}"
        out.add(acc)
    return out


def needs(spec: CellSpec) -> set[str]:
    """Everything cached that the cell reads or builds: its checkpoint and its step prefixes."""
    return {_base(spec)} | _prefixes(spec)


def building(spec: CellSpec, phase: str) -> set[str]:
    """What a cell in flight is building in ``phase`` (nothing once it evaluates)."""
    if phase in FIT_PHASES:
        return {_base(spec)}
    return _prefixes(spec) if phase == "compress" else set()


def built(spec: CellSpec, phase: str) -> set[str]:
    """What is in the cache once a cell announces ``phase``: its checkpoint after the fit
    phases, its step prefixes too after ``compress``."""
    if phase in FIT_PHASES:
        return set()
    return {_base(spec)} | (set() if phase == "compress" else _prefixes(spec))


def next_ready(pending: Sequence[CellSpec], in_flight: Iterable[tuple[CellSpec, str]],
               done: Set[str] = frozenset()) -> CellSpec | None:
    """The first pending cell that needs nothing a cell in flight (spec, phase) is building and
    is not ``done`` (built earlier in the run, :func:`built`); None when every pending cell waits
    (the caller tries again as phases change)."""
    busy: set[str] = set()
    for spec, phase in in_flight:
        busy |= building(spec, phase)
    busy -= done
    return next((c for c in pending if not needs(c) & busy), None)
