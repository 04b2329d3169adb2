"""Per-example outputs of a cell: what a task predicted on its evaluation split.

A task records them from ``evaluate`` with ``ctx.record_predictions(table, kind=..., metric=...,
scorer=...)``; the runner writes one Parquet file per cell to ``<run>/predictions/`` (setting
``save_predictions: false`` turns it off) and :func:`load_predictions` reads it back. The file's
metadata says which paired test the rows support (``kind``), which of the task's metrics that
test scores (``metric``), the task's data hash and, for ``sequence-labels``, the importable
``module:function`` scorer the gate uses for the paired bootstrap. See docs/results.md.

Kinds (the columns a table must have):

* ``per-example-label``: ``example`` (index in the split), ``gold``, ``pred`` (scalars),
  optional ``prob``; the metric is the fraction with ``pred == gold`` (exact McNemar);
* ``sequence-labels``: ``example``, ``gold``, ``pred`` (lists per example); the metric is
  computed by the task's scorer (paired bootstrap over examples).
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import DataError, PluginError
from .fsutil import atomic_write, safe_name

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["KINDS", "PREDICTIONS_DIR", "check_table", "file_name", "load_predictions",
           "read_predictions", "write_predictions"]

PREDICTIONS_DIR = "predictions"
KINDS = {"per-example-label": ("example", "gold", "pred"),
         "sequence-labels": ("example", "gold", "pred")}
_META_KEY = b"harness"


def check_table(table: Any, kind: str, metric: str, scorer: str | None) -> pd.DataFrame:
    """Validate what a task recorded; a :class:`PluginError` names what is wrong."""
    import pandas as pd

    if kind not in KINDS:
        raise PluginError(f"record_predictions: unknown kind {kind!r}; known: {', '.join(KINDS)}")
    if not isinstance(table, pd.DataFrame):
        raise PluginError(f"record_predictions: table must be a pandas DataFrame, got {type(table).__name__}")
    missing = [c for c in KINDS[kind] if c not in table.columns]
    if missing:
        raise PluginError(f"record_predictions: kind {kind!r} needs column(s) {', '.join(missing)}")
    if not metric or not isinstance(metric, str):
        raise PluginError("record_predictions: metric must name the task's metric the rows score")
    if kind == "sequence-labels" and (not scorer or ":" not in scorer):
        raise PluginError("record_predictions: kind 'sequence-labels' needs scorer='module:function'")
    return table.reset_index(drop=True)


def file_name(model: str, task: str, compression: str) -> str:
    """The file name of a cell's predictions: ``<model>__<task>__<compression>.parquet``, each
    name through :func:`harness.fsutil.safe_name` (a short safe name as it is; a long or unsafe
    one a readable prefix plus a hash of the full name), so it is always a valid file name
    inside the predictions folder, at most 204 bytes."""
    return "__".join(safe_name(p) for p in (model, task, compression)) + ".parquet"


def _legacy_file_name(model: str, task: str, compression: str) -> str:
    """The name the file had before names were bounded (unsafe characters replaced, no hash,
    no length limit): run folders written then are still read."""
    return "__".join(re.sub(r"[^A-Za-z0-9._-]+", "_", p) for p in (model, task, compression)) + ".parquet"


def _written_for(path: Path, model: str, compression: str) -> bool:
    """Whether the predictions file ``path`` says it belongs to ``model`` and ``compression``
    (an old name can be shared by two cells whose names differ only in unsafe characters)."""
    import pyarrow.parquet as pq

    try:
        meta = json.loads((pq.read_schema(path).metadata or {}).get(_META_KEY, b"{}"))
    except (OSError, ValueError):
        return False
    return meta.get("model", model) == model and meta.get("compression", compression) == compression


def write_predictions(path: Path, table: pd.DataFrame, meta: dict[str, Any]) -> Path:
    """Write ``table`` with ``meta`` (JSON in the Parquet schema metadata), atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    t = pa.Table.from_pandas(table, preserve_index=False)
    t = t.replace_schema_metadata({**(t.schema.metadata or {}),
                                   _META_KEY: json.dumps(meta, default=str).encode()})
    buf = io.BytesIO()
    pq.write_table(t, buf, compression="zstd")
    return atomic_write(path, buf.getvalue())


def read_predictions(path: Path) -> pd.DataFrame:
    """A predictions file as a DataFrame; its metadata in ``df.attrs``."""
    import pyarrow.parquet as pq

    try:
        t = pq.read_table(path)
        meta = json.loads((t.schema.metadata or {}).get(_META_KEY, b"{}"))
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read predictions: {e}") from e
    df = t.to_pandas()
    for col in ("gold", "pred"):
        if col in df and len(df) and not isinstance(df[col].iloc[0], (str, int, float, bool)) \
                and hasattr(df[col].iloc[0], "tolist"):
            df[col] = [v.tolist() for v in df[col]]
    df.attrs.update(meta)
    return df


def find(run: Any, model: str, task: str, compression: str) -> Path | None:
    """The predictions file of a cell in a run folder (or next to a results file), if any."""
    run = Path(run)
    folder = run if run.is_dir() else run.parent
    f = folder / PREDICTIONS_DIR / file_name(model, task, compression)
    if f.is_file():
        return f
    try:  # a run folder written before names were bounded
        old = folder / PREDICTIONS_DIR / _legacy_file_name(model, task, compression)
        if old != f and old.is_file() and _written_for(old, model, compression):
            return old
    except OSError:  # e.g. the old name is too long for this file system
        pass
    return None


def load_predictions(run: Any, cell: str | tuple[str, str, str]) -> pd.DataFrame:
    """The per-example outputs of ``cell`` ("model/task/compression", or the three names as a
    tuple when a name has a ``/``) in the run folder ``run``; metadata (kind, metric, data_hash,
    split, scorer, ...) in ``df.attrs``."""
    parts = list(cell) if isinstance(cell, (tuple, list)) else str(cell).split("/")
    if len(parts) != 3 or not all(parts):
        raise DataError(f"cell {cell!r}: expected 'model/task/compression'")
    f = find(run, *parts)
    if f is None:
        raise DataError(f"{run}: no predictions for cell {cell!r} (looked for "
                        f"{Path(run) / PREDICTIONS_DIR / file_name(*parts)}; the run may have "
                        "save_predictions: false, or the task records none)")
    return read_predictions(f)
