"""A suite entry (one model, task or compression, or a chain step) and the checks of its plugin
name and parameters: what ``harness.suite`` and ``harness.chain`` both read entries with."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ParameterError, SuiteError
from .params import validate

__all__ = ["Entry", "check_params", "deep_merge", "plugin_and_params"]


@dataclass(frozen=True)
class Entry:
    """One model, task or compression of a suite."""

    kind: str  #: "model", "task" or "compression"
    plugin: str
    name: str  #: label used in result rows (defaults to the plugin name)
    params: dict[str, Any]
    where: str  #: key path in the suite file, e.g. "tasks[1]"
    #: a chain's steps (``harness.chain``), each an Entry of kind "compression"; () otherwise
    steps: tuple[Entry, ...] = ()
    #: a variant of a ``grid:`` entry (``harness.grid``): the unexpanded entry's name, and this
    #: variant's point of the grid ({grid key: value}, in the grid's order); None and {} otherwise.
    #: Not in ``spec()``: a variant is the same cell as a hand-written entry of its name and params
    grid_of: str | None = None
    grid_point: dict[str, Any] = field(default_factory=dict)

    def spec(self) -> dict[str, Any]:
        return {"plugin": self.plugin, "name": self.name, "params": self.params}


def check_params(cls: Any, entry: Entry, path: Path | None) -> None:
    """Validate ``entry.params`` against ``cls.Params`` (:mod:`harness.params`): a
    ``SuiteError`` naming the suite file and the key path (``compressions[2].params.rank``)."""
    try:
        validate(cls, entry.params, entry.kind)
    except ParameterError as exc:
        key = f"{entry.where}.params" + (f".{exc.key}" if exc.key else "")
        raise SuiteError(str(exc), path=path, key=key) from None


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` merged into a copy of ``base``, mappings key by key (suite defaults, includes)."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def plugin_and_params(item: dict[str, Any], keys: set[str], noun: str, where: str,
                      path: Path | None) -> tuple[str, dict[str, Any]]:
    """The checked ``plugin`` name and ``params`` mapping of an entry or a chain step."""
    for k in sorted(set(item) - keys):
        raise SuiteError(f"unknown key; {noun} has {', '.join(sorted(keys))}", path=path, key=f"{where}.{k}")
    plugin = item.get("plugin")
    if not isinstance(plugin, str) or not plugin:
        raise SuiteError("missing plugin name", path=path, key=f"{where}.plugin")
    params = item.get("params") or {}
    if not isinstance(params, dict):
        raise SuiteError("must be a mapping", path=path, key=f"{where}.params")
    return plugin, params
