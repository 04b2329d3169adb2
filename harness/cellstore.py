"""Where a finished cell goes: its rows (built here, with the run's provenance), its
per-example outputs (``<run>/predictions/``) and the cell cache (``<cache_dir>/cells/``, one
JSON file of rows per cell id plus its predictions), and how a later run finds it again."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path
from typing import Any

from .cell import CellOutcome, CellSpec
from .errors import HarnessWarning
from .fsutil import atomic_write_text
from .plugins import PluginManager
from .provenance import now
from .results import incomplete_cells, read_rows, write_unit
from .rows import build, cell_key, is_null

__all__ = ["cache_cell", "cell_rows", "complete_cells", "keep_recipe", "predictions_path", "read_cache",
           "restore_predictions", "save_predictions"]


def complete_cells(path: Path) -> set[str]:
    """cell_ids that a run wrote in full (every row its ``cell_rows`` announces) and that did
    not fail: a resumed run reuses them."""
    if not path.exists():
        return set()
    rows = read_rows(path)
    short = incomplete_cells(rows)
    return {r["cell_id"] for r in rows if r.get("cell_id") and r.get("status") != "failed"
            and is_null(r.get("timing_block")) and write_unit(r) not in short}


def cache_cell(cache: Path, spec: CellSpec, outcome: CellOutcome, rows: list[dict[str, Any]],
               out_dir: Path) -> bool:
    """Write a finished cell to the cell cache; False (after one warning) when it cannot be."""
    try:
        if outcome.predictions is not None:  # first: a cell cache entry is complete or absent
            save_predictions(spec, outcome, cache / f"{spec.cell_id}.predictions.parquet")
        _write_cache(cache, spec.cell_id, rows)
        keep_recipe(cache, spec, rows)
    except OSError as exc:
        warnings.warn(f"cannot write to the cell cache folder {cache} ({exc}); the results "
                      f"are kept in {out_dir}, the cache is not updated in this run",
                      HarnessWarning, stacklevel=4)
        return False
    return True


def keep_recipe(cache: Path, spec: CellSpec, rows: list[dict[str, Any]]) -> None:
    """How to rebuild an ok cell's artifact (:mod:`harness.replay`), beside the cell cache
    (``<cache_dir>/artifacts/<cell_id>.json``) unless it is there already."""
    from .replay import recipe_path, write_recipe

    if not rows or rows[0].get("status") != "ok" or recipe_path(cache.parent, spec.cell_id).exists():
        return
    write_recipe(cache.parent, spec, rows[0].get("artifact_sha256"))


def read_cache(cache: Path, cell_id: str) -> list[dict[str, Any]] | None:
    """A cached cell's rows, or None (absent, or not a readable list of rows: run it again)."""
    f = cache / f"{cell_id}.json"
    if not f.exists():
        return None
    try:
        rows = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # unreadable, not UTF-8, not JSON: run the cell again
        return None
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
        return None
    return rows


def _write_cache(cache: Path, cell_id: str, rows: list[dict[str, Any]]) -> None:
    # atomic: a kill leaves old or new, not half
    atomic_write_text(cache / f"{cell_id}.json", json.dumps(rows, default=str))


def predictions_path(spec: CellSpec) -> str:
    """Where a cell's per-example outputs go, relative to the run folder."""
    from .predictions import PREDICTIONS_DIR, file_name

    return f"{PREDICTIONS_DIR}/{file_name(*cell_key(spec))}"


def save_predictions(spec: CellSpec, outcome: CellOutcome, path: Path) -> None:
    """Write the cell's per-example outputs to ``path`` (the run's predictions/, the cell cache)."""
    from .predictions import write_predictions

    assert outcome.predictions is not None
    meta = {**outcome.predictions["meta"], "model": spec.model.name,
            "compression": spec.compression.name, "cell_id": spec.cell_id}
    write_predictions(path, outcome.predictions["table"], meta)


def restore_predictions(cache: Path, spec: CellSpec, out_dir: Path) -> None:
    """A cached cell's predictions file back into the run folder (when the cache has one)."""
    src = cache / f"{spec.cell_id}.predictions.parquet"
    if src.is_file() and spec.settings.save_predictions:
        dst = out_dir / predictions_path(spec)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)


def cell_rows(spec: CellSpec, outcome: CellOutcome, base: dict[str, Any], pm: PluginManager,
              registries) -> list[dict[str, Any]]:
    """The result rows of a finished cell (:func:`harness.rows.build`): the run's columns
    (``base``), the cell's identity and outcome, what the cell measured about itself
    (``outcome.info``: runtime, ``describe()``), then each metric part of ``outcome.rows`` (one
    row without a metric for a cell that has none)."""
    versions = {}
    for entry in (spec.model, spec.task, spec.compression):
        reg = registries.by_kind(entry.kind)
        if entry.plugin in reg:
            src = reg.sources[entry.plugin]
            dist = pm.distributions.get(src)
            versions[entry.kind] = {"plugin": entry.plugin, "version": reg.classes[entry.plugin].version,
                                    "distribution": f"{dist[0]} {dist[1]}" if dist else src}
    ident = {"cell_id": spec.cell_id, "status": outcome.status, "error": outcome.error,
             "phase": outcome.phase, "plugin_versions": json.dumps(versions, sort_keys=True),
             "timestamp": now(), "cached": False}
    for entry in (spec.model, spec.task, spec.compression):
        ident.update({entry.kind: entry.name, f"{entry.kind}_plugin": entry.plugin,
                      f"{entry.kind}_params": json.dumps(entry.params, sort_keys=True, default=str)})
    info = {"device_name": base["cpu"], **outcome.info}
    metric_rows = outcome.rows or [{"metric": None, "value": None}]
    n = {"cell_rows": len(metric_rows)}
    return [build(base, ident, info, m, n) for m in metric_rows]
