"""Result rows: append-only JSON lines, flushed per row; tolerant reading; exports."""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .errors import DataError

RESULTS_FILE = "results.jsonl"


# -- reading values of rows that went through CSV / JSON / pandas -----------------------------
def is_null(v: Any) -> bool:
    """None, NaN, pandas NA/NaT."""
    if v is None:
        return True
    if isinstance(v, float):
        return math.isnan(v)
    return type(v).__name__ in ("NAType", "NaTType")


def as_float(v: Any) -> float | None:
    """A finite float, or None for null, non-numeric, boolean and infinite values."""
    if is_null(v) or isinstance(v, bool):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def as_bool(v: Any) -> bool | None:
    """True/False from a bool, a number or "true"/"false"/"1"/"0"/"yes"/"no"; else None."""
    if is_null(v):
        return None
    if isinstance(v, str):
        s = v.strip().lower()
        return True if s in ("true", "1", "yes") else False if s in ("false", "0", "no") else None
    return bool(v)

#: Columns every row has, in this order (extra columns follow).
COLUMNS = [
    "run_id", "cell_id", "suite", "suite_hash",
    "model", "model_plugin", "model_params",
    "task", "task_plugin", "task_params",
    "compression", "compression_plugin", "compression_params",
    "status", "error", "phase",
    "metric", "value", "ci_low", "ci_high", "metric_description", "higher_is_better",
    "main_metric", "unit", "samples",
    "runtime", "device", "device_name", "precision", "latency_batch_size",
    "throughput_batch_size", "seq_len", "latency_inputs", "latency_passes", "threads", "jobs", "cached",
    "harness_version", "plugin_versions", "python_version", "torch_version",
    "transformers_version", "platform", "cpu", "git_commit", "seed", "timestamp", "hostname",
]


def _clean(value: Any) -> Any:
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    return value


class ResultsWriter:
    """Appends rows to ``results.jsonl``; each row is flushed and fsynced before the next."""

    def __init__(self, out_dir: Path) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        self.path = out_dir / RESULTS_FILE
        self._repair_tail()
        self._fh = open(self.path, "a", encoding="utf-8")

    def _repair_tail(self) -> None:
        """A torn last line (killed mid-write) gets a newline so later rows stay parseable."""
        if self.path.exists() and self.path.stat().st_size:
            with open(self.path, "rb+") as f:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    f.write(b"\n")

    def write(self, row: dict[str, Any]) -> None:
        line = json.dumps({k: _clean(v) for k, v in row.items()}, default=str)
        self._fh.write(line + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSON-lines file. Unparseable lines (a torn write) are dropped with a warning."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                warnings.warn(
                    f"{path}:{lineno}: dropping a torn or corrupt result line; its cell will be re-run",
                    stacklevel=2,
                )
                continue
            if isinstance(row, dict):
                rows.append(row)
    return rows


def resolve(path: str | Path) -> Path:
    p = Path(path)
    if p.is_dir():
        for name in (RESULTS_FILE, "results.parquet", "results.csv", "results.json"):
            if (p / name).exists():
                return p / name
        raise DataError(f"{p}: no results file here (looked for {RESULTS_FILE}, results.csv, ...)")
    if not p.exists():
        raise DataError(f"{p}: no such results file or folder")
    return p


def load_results(path: str | Path, *, latest: bool = True):
    """A results file or run folder as a pandas DataFrame with the standard columns first.

    :param latest: keep, for each cell, only the rows of the last run that wrote it (a cell
        that failed and then passed on a re-run shows as passed). ``False`` keeps every row.
    """
    import pandas as pd

    p = resolve(path)
    if p.suffix == ".jsonl":
        df = pd.DataFrame(read_rows(p))
    elif p.suffix == ".csv":
        df = pd.read_csv(p)
    elif p.suffix == ".json":
        df = pd.read_json(p, orient="records")
    elif p.suffix == ".parquet":
        df = pd.read_parquet(p)
    else:
        raise DataError(f"{p}: unknown results format (use .jsonl, .csv, .json or .parquet)")
    for col in COLUMNS:
        if col not in df.columns:
            df[col] = None
    extra = [c for c in df.columns if c not in COLUMNS]
    df = df[COLUMNS + extra]
    if latest and len(df) and df["cell_id"].notna().any():
        last_run = df.groupby("cell_id", sort=False)["run_id"].last()
        keep = df["run_id"].eq(df["cell_id"].map(last_run)) | df["cell_id"].isna()
        df = df[keep].reset_index(drop=True)
    return df


def export(df, out_dir: Path, formats: Iterable[str] = ("csv", "json", "parquet")) -> list[Path]:
    """Write ``df`` beside the JSON lines as results.csv / results.json / results.parquet."""
    written = []
    for fmt in formats:
        target = out_dir / f"results.{fmt}"
        if fmt == "csv":
            df.to_csv(target, index=False)
        elif fmt == "json":
            df.to_json(target, orient="records", indent=1)
        elif fmt == "parquet":
            flat = df.copy()
            for col in flat.columns:  # parquet needs one type per column
                if flat[col].dtype == object:
                    flat[col] = flat[col].map(lambda v: None if v is None else
                                              (json.dumps(v) if isinstance(v, (list, dict)) else str(v)))
            flat.to_parquet(target, index=False)
        written.append(target)
    return written
