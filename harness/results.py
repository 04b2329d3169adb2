"""Result rows: append-only JSON lines, flushed per row; tolerant reading; exports."""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .errors import DataError, HarnessWarning
from .fsutil import atomic_write

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
    "main_metric", "unit", "metric_group", "samples",
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
    """Appends rows to ``results.jsonl``; each row is flushed and fsynced before the next.

    Opening it repairs the file once: torn or corrupt lines (a write cut by a kill, a bad
    byte) are moved to ``results.jsonl.bad`` with one warning, so later reads are clean."""

    def __init__(self, out_dir: Path) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        self.path = out_dir / RESULTS_FILE
        self._repair()
        self._fh = open(self.path, "a", encoding="utf-8")

    def _repair(self) -> None:
        if not self.path.exists() or not self.path.stat().st_size:
            return
        data = self.path.read_bytes()
        good: list[bytes] = []
        bad: list[tuple[int, bytes]] = []
        for lineno, raw in enumerate(data.split(b"\n"), 1):
            if not raw.strip():
                continue
            if _parse_line(raw)[1] is None:
                good.append(raw)
            else:
                bad.append((lineno, raw))
        if not bad:
            if not data.endswith(b"\n"):  # a complete last row that lost its newline
                with open(self.path, "ab") as f:
                    f.write(b"\n")
            return
        aside = self.path.with_name(self.path.name + ".bad")
        with open(aside, "ab") as f:
            f.writelines(raw + b"\n" for _, raw in bad)
        # atomic: a kill now leaves the old file or the new one
        atomic_write(self.path, b"".join(raw + b"\n" for raw in good))
        warnings.warn(
            f"{self.path}: moved {_count_lines([n for n, _ in bad])} torn or corrupt result "
            f"line(s) to {aside}; their cells will be re-run", HarnessWarning, stacklevel=3)

    def write(self, row: dict[str, Any]) -> None:
        line = json.dumps({k: _clean(v) for k, v in row.items()}, default=str)
        self._fh.write(line + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()


#: columns whose type the readers rely on (a row with another type there is corrupt)
_TYPES: dict[str, tuple[type, ...]] = {
    **{c: (str,) for c in ("run_id", "cell_id", "model", "task", "compression", "status",
                           "metric", "suite")},
    **{c: (int, float) for c in ("value", "ci_low", "ci_high")},
    "cell_rows": (int,),
}


def _parse_line(raw: bytes) -> tuple[dict[str, Any] | None, str | None]:
    """(row, None) for a valid result line, else (None, what is wrong with it)."""
    try:
        row = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        return None, f"not UTF-8 ({exc.reason} at byte {exc.start})"
    except json.JSONDecodeError:
        return None, "not JSON (torn write?)"
    if not isinstance(row, dict):
        return None, f"a JSON {type(row).__name__}, not an object"
    for col, types in _TYPES.items():
        v = row.get(col)
        if v is not None and (isinstance(v, bool) or not isinstance(v, types)):
            return None, f"{col} is {type(v).__name__} {v!r}"
    return row, None


def _count_lines(numbers: list[int], show: int = 10) -> str:
    more = f" and {len(numbers) - show} more" if len(numbers) > show else ""
    return f"{len(numbers)} (line {', '.join(map(str, numbers[:show]))}{more})"


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSON-lines file. Torn or corrupt lines (bad bytes, not JSON, a wrong type in a
    standard column) are skipped with one warning per file naming their line numbers."""
    rows = []
    bad: list[int] = []
    problems: list[str] = []
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            row, problem = _parse_line(raw)
            if row is None:
                bad.append(lineno)
                problems.append(str(problem))
            else:
                rows.append(row)
    if bad:
        warnings.warn(f"{path}: skipped {_count_lines(bad)} torn or corrupt result line(s) "
                      f"(first: {problems[0]}); their cells count as not run",
                      HarnessWarning, stacklevel=2)
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

    :param latest: keep, for each cell (model/task/compression), only the rows of the last run
        that wrote it (a cell that failed and then passed on a re-run shows as passed; a cell
        re-run with changed parameters shows its new rows only). ``False`` keeps every row.
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
        # per (model, task, compression): the rows of the last run that wrote it, under the cell
        # id it had then (a changed parameter gives a new id; the superseded rows drop out)
        named = df["model"].notna() & df["task"].notna() & df["compression"].notna()
        label = (df["model"].astype(str) + "/" + df["task"].astype(str) + "/"
                 + df["compression"].astype(str)).where(named, "id:" + df["cell_id"].astype(str))
        last = (df["cell_id"].astype(str) + "@" + df["run_id"].astype(str)).groupby(label, sort=False).last()
        keep = (df["cell_id"].astype(str) + "@" + df["run_id"].astype(str)).eq(label.map(last))
        df = df[keep | df["cell_id"].isna()].reset_index(drop=True)
    return df


def _as_text(v: Any) -> Any:
    """Lists, dicts and arrays as JSON text, so CSV, JSON and Parquet hold the same values."""
    if isinstance(v, (list, dict, tuple)):
        return json.dumps(list(v) if isinstance(v, tuple) else v, default=str)
    if hasattr(v, "tolist") and not isinstance(v, (str, bytes)) and int(getattr(v, "ndim", 0) or 0) > 0:
        return json.dumps(v.tolist(), default=str)
    return v


def export(df, out_dir: Path, formats: Iterable[str] = ("csv", "json", "parquet")) -> list[Path]:
    """Write ``df`` beside the JSON lines as results.csv / results.json / results.parquet.

    The one writer of these files (``harness run`` and ``harness report`` both call it), so
    they always hold the same rows; list values such as ``samples`` are JSON text."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    flat = df.copy()
    for col in flat.columns:
        if flat[col].dtype == object:
            flat[col] = flat[col].map(_as_text)
    written = []
    for fmt in formats:
        target = out_dir / f"results.{fmt}"
        if fmt == "csv":
            flat.to_csv(target, index=False)
        elif fmt == "json":
            flat.to_json(target, orient="records", indent=1, force_ascii=False)
        elif fmt == "parquet":
            typed = flat.copy()
            for col in typed.columns:  # parquet needs one type per column
                if typed[col].dtype == object:
                    typed[col] = typed[col].map(lambda v: None if is_null(v) else str(v))
            typed.to_parquet(target, index=False)
        else:
            raise ValueError(f"unknown results format {fmt!r} (csv, json or parquet)")
        written.append(target)
    return written
