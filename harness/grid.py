"""Parameter grids: a suite entry's ``grid:`` expanded into named variants.

::

    compressions:
      - plugin: prune
        params: {method: unstructured}
        grid: {sparsity: [0.3, 0.5, 0.7]}

is three entries, ``prune@sparsity=0.3``, ``prune@sparsity=0.5`` and ``prune@sparsity=0.7``,
each an ordinary entry whose ``params`` are the entry's ``params`` deep-merged with its point of
the grid. The variants are the cartesian product of the listed values, in the order given (the
first key varies slowest). Only the explicit ``grid:`` key expands: a list inside ``params`` (distill's
``layers: [0, 2, 5]``) stays a list, and a grid value that is a list of lists gives each variant
a list (``grid: {layers: [[0, 5], [0, 2, 5]]}``). A grid key may be a dotted path into ``params``
(``recipe.lr``). On a chain, a grid goes on a step; the chain expands into one chain per
combination of all its steps' grids.

A variant's name is the entry's name (or the name the suite would give it) + ``@`` + its point,
``key=value`` joined by ``,`` (:func:`variant_name`); its ``Entry`` records the unexpanded
entry's name (``grid_of``) and the point (``grid_point``), which nothing that identifies a cell
reads: a variant is the same cell as a hand-written entry of the same name and parameters.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .entries import Entry, deep_merge
from .errors import SuiteError

__all__ = ["GRID", "MAX_VARIANTS", "split_grid", "value_text", "variant", "variant_name"]

#: the entry key of a grid
GRID = "grid"
#: the most variants one entry (or one chain) may expand into
MAX_VARIANTS = 64
#: between an entry's name and its point, and between the point's ``key=value`` pairs
NAME_SEP, PAIR_SEP = "@", ","
#: characters of a string value kept as they are in a name; any run of others becomes ``_``
_ODD = re.compile(r"[^A-Za-z0-9._+:~-]+")

Item = dict[str, Any]


@dataclass(frozen=True)
class _Axis:
    """One grid key: its label (in names and ``grid_point``), its chain step (None: not a chain),
    where its value goes in the step's or entry's ``params`` and the values it takes."""

    label: str
    step: int | None
    path: tuple[str, ...]
    values: list[Any]


# ---------------------------------------------------------------------------------------------
# Names


def value_text(value: Any) -> str:
    """A grid value as a name writes it: numbers as Python writes them (``0.5``, ``1e-05``),
    ``true`` / ``false`` / ``null``, lists joined by ``-`` (``0-2-5``), mappings as
    ``key:value`` joined by ``+``, and strings with any character but letters, digits and
    ``. _ + : ~ -`` replaced by ``_`` (no ``/`` or glob characters, so ``--only`` patterns and
    ``model/task/compression`` labels keep working)."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, (int, float)):
        return repr(value) if math.isfinite(value) else str(value)
    if isinstance(value, list):
        return "-".join(value_text(v) for v in value)
    if isinstance(value, dict):
        return "+".join(f"{_ODD.sub('_', str(k))}:{value_text(v)}" for k, v in value.items())
    return _ODD.sub("_", str(value))


def variant_name(base: str, point: dict[str, Any]) -> str:
    """``prune`` + ``{sparsity: 0.5, method: heads}`` -> ``prune@sparsity=0.5,method=heads``."""
    pairs = PAIR_SEP.join(f"{_ODD.sub('_', k)}={value_text(v)}" for k, v in point.items())
    return f"{base}{NAME_SEP}{pairs}"


def variant(entry: Entry, point: dict[str, Any]) -> Entry:
    """``entry`` (built from one combination's item) named and marked as that grid variant; the
    entry itself when ``point`` is empty (no grid). Its ``where`` (and its steps') name the
    variant, so a parameter error says which one: ``compressions[2]<prune@sparsity=1.5>``."""
    if not point:
        return entry
    name = variant_name(entry.name, point)
    where = f"{entry.where}<{name}>"
    steps = tuple(replace(s, where=where + s.where[len(entry.where):]) for s in entry.steps)
    return replace(entry, name=name, where=where, steps=steps, grid_of=entry.name,
                   grid_point=copy.deepcopy(point))


# ---------------------------------------------------------------------------------------------
# Expansion


def split_grid(item: Item, where: str, path: Path | None, *,
               chains: bool = True) -> list[tuple[Item, dict[str, Any]]]:
    """The items one suite entry stands for, each without ``grid`` and with its point:
    ``[(item, {})]`` when there is no grid, else one ``(item, point)`` per combination, in order.
    ``chains``: whether a ``chain:`` item is a chain (compressions) whose steps may have grids."""
    if chains and "chain" in item:
        return _split_chain(item, where, path)
    if GRID not in item:
        return [(item, {})]
    base = {k: v for k, v in item.items() if k != GRID}
    params = item.get("params") or {}
    if not isinstance(params, dict):
        return [(base, {})]  # the entry's own check names its bad params
    axes = _axes(item[GRID], None, params, f"{where}.{GRID}", path)
    return [({**base, "params": deep_merge(params, _nested(axes, combo, None))}, _point(axes, combo))
            for combo in _product(axes, f"{where}.{GRID}", path)]


def _split_chain(item: Item, where: str, path: Path | None) -> list[tuple[Item, dict[str, Any]]]:
    if GRID in item:
        raise SuiteError(
            "a chain entry has no grid of its own; put the grid on the step it varies, e.g. "
            "chain: [{plugin: prune, grid: {sparsity: [0.3, 0.5]}}, finetune]",
            path=path, key=f"{where}.{GRID}")
    steps = item["chain"]
    if not isinstance(steps, list):
        return [(item, {})]  # the chain's own check names it
    axes: list[_Axis] = []
    for j, step in enumerate(steps):
        if isinstance(step, dict) and GRID in step and isinstance(step.get("params") or {}, dict):
            axes += _axes(step[GRID], j, step.get("params") or {}, f"{where}.chain[{j}].{GRID}", path)
    if not axes:
        return [({**item, "chain": [_without_grid(s) for s in steps]}, {})]
    axes = _chain_labels(axes, steps)
    out = []
    for combo in _product(axes, f"{where}.chain", path):
        chain = [_step_item(s, j, axes, combo) for j, s in enumerate(steps)]
        out.append(({**item, "chain": chain}, _point(axes, combo)))
    return out


def _without_grid(step: Any) -> Any:
    return {k: v for k, v in step.items() if k != GRID} if isinstance(step, dict) else step


def _step_item(step: Any, j: int, axes: list[_Axis], combo: tuple[Any, ...]) -> Any:
    """Chain step ``j`` of one combination: its grid removed, its point merged into params."""
    base = _without_grid(step)
    params = step.get("params") or {} if isinstance(step, dict) else None
    if not isinstance(params, dict) or GRID not in step:
        return base  # no grid here, or bad params that the chain's own check names
    return {**base, "params": deep_merge(params, _nested(axes, combo, j))}


def _chain_labels(axes: list[_Axis], steps: list[Any]) -> list[_Axis]:
    """A key gridded on one step is labelled by itself (``sparsity``); one gridded on several
    steps by its step's plugin too (``prune.sparsity``), or by the step's number where the
    same plugin varies it twice (``step1.sparsity``)."""
    def plugin(a: _Axis) -> str:
        step = steps[a.step] if a.step is not None else None
        return str(step.get("plugin")) if isinstance(step, dict) else "step"

    keys = [a.label for a in axes]
    qualified = [f"{plugin(a)}.{a.label}" for a in axes]
    out = []
    for a, q in zip(axes, qualified):
        if keys.count(a.label) > 1:
            a = replace(a, label=q if qualified.count(q) == 1 else f"step{(a.step or 0) + 1}.{a.label}")
        out.append(a)
    return out


def _axes(grid: Any, step: int | None, params: dict[str, Any], at: str,
          path: Path | None) -> list[_Axis]:
    """The checked axes of one ``grid:`` mapping (``at``: its key path)."""
    if not isinstance(grid, dict) or not grid:
        raise SuiteError("must be a non-empty mapping of parameter -> list of values, e.g. "
                         "{sparsity: [0.3, 0.5, 0.7]}", path=path, key=at)
    axes = [_axis(str(k), v, step, params, f"{at}.{k}", path) for k, v in grid.items()]
    for a, b in itertools.permutations(axes, 2):
        if a.path[:len(b.path)] == b.path:
            raise SuiteError(f"overlaps the grid key {b.label!r}; vary a parameter in one key only",
                             path=path, key=f"{at}.{a.label}")
    return axes


def _axis(key: str, values: Any, step: int | None, params: dict[str, Any], at: str,
          path: Path | None) -> _Axis:
    parts = tuple(key.split("."))
    if not all(parts):
        raise SuiteError("must be a parameter name, or a dotted path into params such as recipe.lr",
                         path=path, key=at)
    if not isinstance(values, list) or not values:
        got = "an empty list" if isinstance(values, list) else f"{type(values).__name__} {values!r}"
        raise SuiteError(f"must be a non-empty list of values, got {got} (a list-valued parameter "
                         "takes a list of lists, e.g. [[0, 5], [0, 2, 5]])", path=path, key=at)
    if _given(params, parts):
        raise SuiteError(f"{key!r} is given both in params and in grid (ambiguous); give it in one "
                         "place", path=path, key=at)
    return _Axis(key, step, parts, values)


def _given(params: dict[str, Any], parts: tuple[str, ...]) -> bool:
    """Whether ``params`` sets the dotted path ``parts`` (or a non-mapping above it)."""
    node: Any = params
    for p in parts:
        if not isinstance(node, dict):
            return True
        if p not in node:
            return False
        node = node[p]
    return True


def _product(axes: list[_Axis], at: str, path: Path | None) -> Iterator[tuple[Any, ...]]:
    n = math.prod(len(a.values) for a in axes)
    if n > MAX_VARIANTS:
        sizes = " x ".join(f"{len(a.values)} ({a.label})" for a in axes)
        raise SuiteError(f"the grid gives {n} variants ({sizes}); at most {MAX_VARIANTS} from one "
                         "entry: split it into several entries", path=path, key=at)
    return itertools.product(*(a.values for a in axes))


def _nested(axes: list[_Axis], combo: tuple[Any, ...], step: int | None) -> dict[str, Any]:
    """The params one combination sets on ``step`` (None: the entry), as nested mappings."""
    out: dict[str, Any] = {}
    for axis, value in zip(axes, combo):
        if axis.step != step:
            continue
        node = out
        for p in axis.path[:-1]:
            node = node.setdefault(p, {})
        node[axis.path[-1]] = value
    return out


def _point(axes: list[_Axis], combo: tuple[Any, ...]) -> dict[str, Any]:
    return {a.label: v for a, v in zip(axes, combo)}
