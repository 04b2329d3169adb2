"""A suite entry (one model, task or compression, or a chain step) and the checks of its plugin
name and parameters: what ``harness.suite`` and ``harness.chain`` both read entries with."""

from __future__ import annotations

import copy
import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import SuiteError

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

    def spec(self) -> dict[str, Any]:
        return {"plugin": self.plugin, "name": self.name, "params": self.params}


def check_params(cls: Any, entry: Entry, path: Path | None) -> None:
    accepted = cls.parameters()  # base classes' too where ``**params`` passes them on
    has_var_kw = bool(getattr(cls, "accepts_any_params", False))
    for key, value in entry.params.items():
        where = f"{entry.where}.params.{key}"
        if key not in accepted:
            if has_var_kw:
                continue
            msg = f"unknown parameter {key!r} for {entry.kind} plugin {entry.plugin!r}."
            close = difflib.get_close_matches(key, accepted, n=3)
            if close:
                msg += f" Did you mean: {', '.join(close)}?"
            msg += f" Accepted: {', '.join(accepted) or '(none)'}"
            raise SuiteError(msg, path=path, key=where)
        expected = _simple_type(accepted[key].annotation)
        if expected and value is not None and not _type_ok(value, expected):
            raise SuiteError(
                f"parameter {key!r} of {entry.kind} plugin {entry.plugin!r} must be "
                f"{'/'.join(t.__name__ for t in expected)}, got {type(value).__name__} {value!r}",
                path=path, key=where,
            )
    missing = [
        n for n, p in accepted.items()
        if p.default is p.empty and n not in entry.params
    ]
    if missing:
        raise SuiteError(
            f"{entry.kind} plugin {entry.plugin!r} needs parameter(s): {', '.join(missing)}",
            path=path, key=f"{entry.where}.params",
        )


_TYPE_NAMES = {"int": (int,), "float": (float, int), "str": (str,), "bool": (bool,),
               "dict": (dict,), "list": (list,)}


def _simple_type(annotation: Any) -> tuple[type, ...] | None:
    """Map annotations like ``float``, ``'int | None'`` to accepted runtime types."""
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    if not text:
        return None
    parts = [p.strip() for p in text.split("|")]
    types: list[type] = []
    for p in parts:
        if p == "None":
            continue
        base = p.split("[")[0]
        if base not in _TYPE_NAMES:
            return None  # unknown annotation: do not check
        types.extend(_TYPE_NAMES[base])
    return tuple(types) or None


def _type_ok(value: Any, expected: tuple[type, ...]) -> bool:
    if isinstance(value, bool) and bool not in expected:
        return False
    return isinstance(value, expected)


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
