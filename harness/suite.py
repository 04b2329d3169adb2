"""Suite files: YAML -> validated, typed ``Suite`` objects.

A suite lists models, tasks and compressions; the runner expands them to their product. Errors
name the file and the key path (``suites/x.yaml: tasks[0].params.lr: ...``).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .entries import Entry, check_params, deep_merge, plugin_and_params
from .errors import SuiteError
from .grid import split_grid, variant
from .registry import Registries, unknown_name_message

KINDS = ("models", "tasks", "compressions")
KIND_SINGULAR = {"models": "model", "tasks": "task", "compressions": "compression"}
TOP_KEYS = {"name", "description", "include", "settings", "defaults", *KINDS, "gate"}
ENTRY_KEYS = {"plugin", "name", "params", "grid"}


@dataclass(frozen=True)
class Settings:
    """Run settings; every field can be set under ``settings:`` or with ``--set settings.X=V``."""

    seed: int = 0
    #: batch-1 latency: warm-up iterations, then at least this many iterations *and* seconds
    warmup: int = 10
    min_iterations: int = 50
    min_duration_s: float = 2.0
    #: batch size for the throughput measurement
    throughput_batch_size: int = 32
    #: time inputs at this fixed length in tokens (real inputs cut or repeated); 0: real lengths
    latency_seq_len: int = 0
    #: per-cell timeout in seconds (0: none)
    timeout_s: float = 0.0
    #: persistent cache of fine-tuned checkpoints, compressed artifacts and finished cells
    cache_dir: str = ".harness-cache"
    #: save each cell's per-example predictions in <run>/predictions/ (paired tests in compare)
    save_predictions: bool = True
    #: rotation timing after the cells (docs/methodology.md): rounds (0: off), the compression
    #: whose cells are each group's reference for the ratios, processes alive at once per group
    timing_rounds: int = 5
    timing_reference: str = "none"
    timing_processes: int = 8
    #: a labelled split scored beside each task's evaluation split, for choices: rows
    #: ``validation_<main metric>``, on which ``harness select`` chooses ("": none; a task
    #: without that split, or whose evaluation split it is, records none)
    validation_split: str = ""

    @classmethod
    def keys(cls) -> list[str]:
        return list(cls.__dataclass_fields__)


@dataclass
class Suite:
    name: str
    path: Path | None
    models: list[Entry]
    tasks: list[Entry]
    compressions: list[Entry]
    settings: Settings = field(default_factory=Settings)
    gate: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    @property
    def hash(self) -> str:
        """Hash of everything that defines the results (not the file's formatting)."""
        doc = {
            "models": [e.spec() for e in self.models],
            "tasks": [e.spec() for e in self.tasks],
            "compressions": [e.spec() for e in self.compressions],
            "settings": vars(self.settings),
        }
        blob = json.dumps(doc, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def entries(self) -> list[Entry]:
        return [*self.models, *self.tasks, *self.compressions]

    def validate(self, registries: Registries) -> None:
        """Check plugin names and parameters against the registered classes."""
        for entry in self.entries():
            if entry.steps:
                from .chain import validate_chain

                validate_chain(entry, registries, self.path)
                continue
            reg = registries.by_kind(entry.kind)
            if entry.plugin not in reg:
                raise SuiteError(
                    unknown_name_message(entry.kind, entry.plugin, reg.classes),
                    path=self.path, key=f"{entry.where}.plugin",
                )
            check_params(reg.classes[entry.plugin], entry, self.path)


# ---------------------------------------------------------------------------------------------
# Loading


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SuiteError("suite file not found", path=path) from None
    except OSError as exc:
        raise SuiteError(f"cannot read suite file: {exc}", path=path) from None
    try:
        doc = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise SuiteError(f"malformed YAML: {line}{exc.problem or exc}", path=path) from None
    except yaml.YAMLError as exc:
        raise SuiteError(f"malformed YAML: {exc}", path=path) from None
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise SuiteError(f"a suite must be a mapping, got {type(doc).__name__}", path=path)
    return doc


def _load_with_includes(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    path = path.resolve()
    if path in seen:
        chain = " -> ".join(str(p) for p in (*seen, path))
        raise SuiteError(f"include cycle: {chain}", path=path, key="include")
    doc = _read_yaml(path)
    includes = doc.pop("include", None) or []
    if isinstance(includes, str):
        includes = [includes]
    if not isinstance(includes, list):
        raise SuiteError("must be a file name or a list of file names", path=path, key="include")
    merged: dict[str, Any] = {}
    for i, inc in enumerate(includes):
        if not isinstance(inc, str):
            raise SuiteError("must be a file name", path=path, key=f"include[{i}]")
        if not (path.parent / inc).is_file():
            raise SuiteError(f"included file not found: {path.parent / inc}", path=path,
                             key=f"include[{i}]")
        merged = deep_merge(merged, _load_with_includes(path.parent / inc, (*seen, path)))
    return deep_merge(merged, doc)


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand_vars(value: Any, path: Path | None, key: str) -> Any:
    """``${VAR}`` / ``${VAR:-default}`` in strings, from the environment."""
    if isinstance(value, str):
        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in os.environ:
                return os.environ[name]
            if default is not None:
                return default
            raise SuiteError(
                f"environment variable {name} is not set (use ${{{name}:-default}} for a default)",
                path=path, key=key,
            )

        return _VAR.sub(sub, value)
    if isinstance(value, dict):
        return {k: _expand_vars(v, path, f"{key}.{k}" if key else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_vars(v, path, f"{key}[{i}]") for i, v in enumerate(value)]
    return value


def parse_override(text: str, *, option: str = "--set",
                   example: str = "tasks.NAME.params.KEY=VALUE") -> tuple[list[str], Any]:
    """``tasks.conll2003.params.data_dir=/data`` -> (["tasks", "conll2003", ...], "/data").

    VALUE is parsed as YAML (``0.5``, ``null``, ``[a, b]``; an empty VALUE is ""). The one parser
    of dotted ``KEY=VALUE`` options: ``--set`` here, ``harness compare --threshold`` in the gate;
    errors name ``option``."""
    if "=" not in text:
        raise SuiteError(f"{option} {text!r}: expected KEY=VALUE, e.g. {example}")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise SuiteError(f"{option} {text!r}: empty key")
    return parts, value


def _apply_override(doc: dict[str, Any], parts: list[str], value: Any, path: Path | None) -> None:
    dotted = ".".join(parts)
    head = parts[0]
    if head in KINDS:
        if len(parts) < 3:
            raise SuiteError(
                f"--set {dotted}: use {head}.<name>.params.<key>=VALUE", path=path
            )
        entries = doc.get(head) or []
        matches = [
            e for e in entries
            if isinstance(e, dict) and parts[1] in (e.get("name"), e.get("plugin"))
        ]
        if not matches:
            names = [str(e.get("name") or e.get("plugin")) for e in entries if isinstance(e, dict)]
            raise SuiteError(
                f"--set {dotted}: no {KIND_SINGULAR[head]} named {parts[1]!r} in the suite "
                f"(have: {', '.join(names) or 'none'})", path=path,
            )
        for entry in matches:
            _set_path(entry, parts[2:], value)
    else:
        _set_path(doc, parts, value)


def _set_path(node: dict[str, Any], parts: list[str], value: Any) -> None:
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value


def load_suite(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Suite:
    """Read, merge (``include:``), override (``--set``), expand ``${VARS}`` and validate."""
    path = Path(path)
    doc = _load_with_includes(path)
    for text in overrides:
        parts, value = parse_override(text)
        _apply_override(doc, parts, value, path)
    doc = _expand_vars(doc, path, "")
    return suite_from_dict(doc, path)


def suite_from_dict(doc: dict[str, Any], path: Path | None = None) -> Suite:
    unknown = sorted(set(doc) - TOP_KEYS)
    if unknown:
        close = difflib.get_close_matches(unknown[0], TOP_KEYS, n=1)
        hint = f" Did you mean: {close[0]}?" if close else ""
        raise SuiteError(
            f"unknown key.{hint} Allowed: {', '.join(sorted(TOP_KEYS - {'include'}))}",
            path=path, key=unknown[0],
        )
    name = doc.get("name") or (path.stem if path else "suite")
    if not isinstance(name, str):
        raise SuiteError("must be a string", path=path, key="name")
    settings = _settings(doc.get("settings") or {}, path)
    defaults = doc.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise SuiteError("must be a mapping of kind -> plugin -> params", path=path, key="defaults")
    for k in defaults:
        if k not in KINDS:
            raise SuiteError(f"unknown kind; use one of {', '.join(KINDS)}", path=path, key=f"defaults.{k}")
    lists = {kind: _entries(kind, doc.get(kind), defaults.get(kind) or {}, path) for kind in KINDS}
    gate = doc.get("gate") or {}
    if not isinstance(gate, dict):
        raise SuiteError("must be a mapping", path=path, key="gate")
    return Suite(
        name=name, path=path, settings=settings, gate=gate,
        description=str(doc.get("description") or ""),
        models=lists["models"], tasks=lists["tasks"], compressions=lists["compressions"],
    )


def _entries(kind: str, raw: Any, defaults: dict[str, Any], path: Path | None) -> list[Entry]:
    """The entries of one list of a suite (models, tasks, compressions), each name once."""
    if kind == "compressions" and raw is None:
        # "none" (no compression) is the one built-in plugin name the core knows
        raw = [{"plugin": "none"}]
    if not raw:
        raise SuiteError(f"a suite needs at least one entry under {kind!r}", path=path, key=kind)
    if not isinstance(raw, list):
        raise SuiteError("must be a list", path=path, key=kind)
    entries = [e for i, item in enumerate(raw) for e in _entry(kind, i, item, defaults, path)]
    seen: dict[str, str] = {}
    for e in entries:
        if e.name in seen:
            raise SuiteError(
                f"duplicate name {e.name!r} (also at {seen[e.name]}); give each entry a "
                "distinct 'name'", path=path, key=f"{e.where}.name",
            )
        seen[e.name] = e.where
    return entries


def _settings(raw: Any, path: Path | None) -> Settings:
    if not isinstance(raw, dict):
        raise SuiteError("must be a mapping", path=path, key="settings")
    allowed = Settings.keys()
    for k, v in raw.items():
        if k not in allowed:
            close = difflib.get_close_matches(k, allowed, n=1)
            hint = f" Did you mean: {close[0]}?" if close else ""
            raise SuiteError(f"unknown setting.{hint} Allowed: {', '.join(allowed)}",
                             path=path, key=f"settings.{k}")
        default = getattr(Settings, k)
        ok = (int, float) if isinstance(default, float) else (type(default),)
        if not isinstance(v, ok) or isinstance(v, bool) != isinstance(default, bool):
            raise SuiteError(f"must be {'true or false' if isinstance(default, bool) else type(default).__name__}, got {v!r}",
                             path=path, key=f"settings.{k}")
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v < 0:
            raise SuiteError(f"must be >= 0, got {v!r}", path=path, key=f"settings.{k}")
    return Settings(**raw)


def _entry(kind: str, i: int, item: Any, defaults: dict[str, Any], path: Path | None) -> list[Entry]:
    """The entry of ``item``: one, or one per variant of its ``grid:`` (``harness.grid``)."""
    where = f"{kind}[{i}]"
    if isinstance(item, str):
        item = {"plugin": item}
    if not isinstance(item, dict):
        raise SuiteError("must be a plugin name or a mapping with 'plugin'", path=path, key=where)
    return [variant(_one_entry(kind, where, one, defaults, path), point)
            for one, point in split_grid(item, where, path, chains=kind == "compressions")]


def _one_entry(kind: str, where: str, item: dict[str, Any], defaults: dict[str, Any],
               path: Path | None) -> Entry:
    """The entry of one mapping without a grid."""
    if kind == "compressions" and "chain" in item:
        from .chain import chain_entry

        return chain_entry(where, item, defaults, path)
    plugin, params = plugin_and_params(item, ENTRY_KEYS, "an entry", where, path)
    if not isinstance(defaults, dict):
        raise SuiteError("must be a mapping of plugin -> params", path=path, key=f"defaults.{kind}")
    merged = deep_merge(defaults.get(plugin) or {}, params)
    name = item.get("name") or plugin
    if not isinstance(name, str):
        raise SuiteError("must be a string", path=path, key=f"{where}.name")
    return Entry(KIND_SINGULAR[kind], plugin, name, merged, where)
