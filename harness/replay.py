"""A finished cell's predictor, built again from the caches: what the rotation timing
(:mod:`harness.rotation`) and ``harness compare --retime`` time, each in a process of its own.

When a cell finishes ``ok``, the runner writes its *recipe* to
``<cache_dir>/artifacts/<cell_id>.json``: the model, task and compression entries (a chain's
steps included), the run's settings and the sha256 of the artifact the cell saved (also the
``artifact_sha256`` column of its rows). The cell id is the artifact's key. Replaying a recipe
goes through the cell's own phases (setup, load, fine-tune, compress), which find their outputs
in the fine-tune, transform and compress caches, so it takes seconds; the rebuilt predictor is
saved and hashed again, and a different hash means that artifact cannot be rebuilt here (other
plugin code made it, or a cache entry is gone): :class:`NotRebuilt`, and the caller falls back
to the recorded figures. Recipes are JSON (plugin names and parameters), never code.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .api import CellContext
from .cell import CellSpec, PluginSet, _compress, _fit, _setup, timing_inputs
from .entries import Entry
from .errors import HarnessError
from .fsutil import atomic_write_text
from .suite import Settings
from .toolkit.artifacts import dir_sha256

__all__ = ["RECIPES", "NotRebuilt", "Rebuilt", "read_recipe", "rebuild", "recipe_path",
           "write_recipe"]

RECIPES = "artifacts"


class NotRebuilt(HarnessError):
    """A recipe whose artifact cannot be rebuilt here (the message says why)."""


def _entry_doc(e: Entry) -> dict[str, Any]:
    return {"kind": e.kind, "plugin": e.plugin, "name": e.name, "params": e.params,
            "where": e.where, "steps": [_entry_doc(s) for s in e.steps]}


def _entry(d: dict[str, Any]) -> Entry:
    return Entry(d["kind"], d["plugin"], d["name"], dict(d.get("params") or {}), d.get("where", ""),
                 tuple(_entry(s) for s in d.get("steps") or ()))


def recipe_path(cache_dir: Path | str, cell_id: str) -> Path:
    return Path(cache_dir) / RECIPES / f"{cell_id}.json"


def write_recipe(cache_dir: Path | str, spec: CellSpec, artifact_sha256: str | None) -> None:
    """Record how to rebuild ``spec``'s artifact (atomic; raises ``OSError`` when it cannot)."""
    doc = {"cell_id": spec.cell_id, "model": _entry_doc(spec.model), "task": _entry_doc(spec.task),
           "compression": _entry_doc(spec.compression),
           "settings": dataclasses.asdict(spec.settings), "artifact_sha256": artifact_sha256}
    path = recipe_path(cache_dir, spec.cell_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(doc, sort_keys=True, default=str))


def read_recipe(cache_dir: Path | str, cell_id: str) -> tuple[CellSpec, str | None] | None:
    """``(spec, artifact_sha256)`` of a recorded cell, or None when this cache has no readable
    recipe for it."""
    path = recipe_path(cache_dir, cell_id)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        known = {f.name for f in dataclasses.fields(Settings)}
        settings = Settings(**{k: v for k, v in doc["settings"].items() if k in known})
        spec = CellSpec(doc["cell_id"], _entry(doc["model"]), _entry(doc["task"]),
                        _entry(doc["compression"]), settings)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return spec, doc.get("artifact_sha256")


@dataclass
class Rebuilt:
    """A predictor built again, with the inputs its cell was timed on."""

    predictor: Any
    b1: list[Any]  #: batch-1 inputs
    bn: list[Any]  #: throughput batches
    artifact_sha256: str
    work: Path  #: the replay's working folder (the caller removes it when done)


def rebuild(spec: CellSpec, plugins: PluginSet, expect_sha256: str | None = None) -> Rebuilt:
    """Replay ``spec`` through the caches; :class:`NotRebuilt` when the cell would now be
    skipped or its artifact differs from ``expect_sha256``."""
    work = Path(tempfile.mkdtemp(prefix="harness-replay-"))
    s = spec.settings
    ctx = CellContext(device=spec.device, seed=s.seed, cache_dir=Path(s.cache_dir).absolute(),
                      work_dir=work, show_progress=False)

    def step(phase: str, entry: Entry | None) -> None:
        pass

    parts = _setup(spec, plugins, ctx, step)
    if isinstance(parts, str):
        raise NotRebuilt(f"the cell is skipped here: {parts}")
    _fit(spec, plugins, parts, ctx, step)
    _compress(spec, parts, ctx, step, {})
    predictor = parts.predictor
    tokenizer = getattr(predictor, "tokenizer", None)
    model = parts.loaded if tokenizer is None else replace(parts.loaded, tokenizer=tokenizer)
    b1, bn, _, _ = timing_inputs(parts.task, model, s)
    sha = dir_sha256(predictor.save(work / "artifact"))
    if expect_sha256 and sha != expect_sha256:
        raise NotRebuilt(f"the artifact rebuilt from the cache differs from the recorded one "
                         f"(sha256 {sha} != {expect_sha256}): other plugin code made it, or its "
                         f"cache entries are gone")
    return Rebuilt(predictor, b1, bn, sha, work)
