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


def iter_rows(metrics: Iterable[Any]) -> Iterable[dict[str, Any]]:
    """``harness.api.MetricValue`` objects as flat dicts (the metric part of a result row)."""
    for m in metrics:
        yield {
            "metric": m.name,
            "value": m.value,
            "ci_low": m.ci_low,
            "ci_high": m.ci_high,
            "metric_description": m.description,
            "higher_is_better": m.higher_is_better,
            "main_metric": m.main,
            "unit": m.unit,
            "metric_group": m.group,
        }


def _clean(value: Any) -> Any:
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    return value


class ResultsWriter:
    """Appends rows to ``results.jsonl``, a cell's rows together, fsynced before the next.
    The caller holds the folder's lock (:class:`harness.fsutil.FolderLock`): only one writer
    appends, and only it repairs.

    Opening it repairs the file once: torn or corrupt lines (a write cut by a kill, a bad
    byte) and the rows of a cell cut short (:func:`incomplete_cells`) are moved to
    ``results.jsonl.bad`` with one warning, so later reads are clean."""

    def __init__(self, out_dir: Path) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        self.path = out_dir / RESULTS_FILE
        self._repair()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)

    def _repair(self) -> None:
        if not self.path.exists() or not self.path.stat().st_size:
            return
        data = self.path.read_bytes()
        good: list[bytes] = []
        bad: list[tuple[int, bytes]] = []
        rows: list[tuple[int, bytes, dict[str, Any]]] = []
        for lineno, raw in enumerate(data.split(b"\n"), 1):
            if not raw.strip():
                continue
            row = _parse_line(raw)[0]
            if row is None:
                bad.append((lineno, raw))
            else:
                rows.append((lineno, raw, row))
        short = incomplete_cells(row for _, _, row in rows)  # cut short: not run
        for lineno, raw, row in rows:
            if (row.get("cell_id"), row.get("run_id")) in short:
                bad.append((lineno, raw))
            else:
                good.append(raw)
        if not bad:
            if not data.endswith(b"\n"):  # a complete last row that lost its newline
                with open(self.path, "ab") as f:
                    f.write(b"\n")
            return
        bad.sort()
        aside = self.path.with_name(self.path.name + ".bad")
        with open(aside, "ab") as f:
            f.writelines(raw + b"\n" for _, raw in bad)
        # atomic: a kill now leaves the old file or the new one
        atomic_write(self.path, b"".join(raw + b"\n" for raw in good))
        warnings.warn(
            f"{self.path}: moved {_count_lines([n for n, _ in bad])} torn or corrupt result "
            f"line(s) (or rows of a cell cut short) to {aside}; their cells will be re-run",
            HarnessWarning, stacklevel=3)

    def write(self, row: dict[str, Any]) -> None:
        """One row (a cell's rows go through :meth:`write_cell`)."""
        self.write_cell([row])

    def write_cell(self, rows: list[dict[str, Any]]) -> None:
        """The rows of one cell (or any group that belongs together) in one ``write`` call, then
        fsynced: a signal lands before or after them, never between two of them. A write the
        kernel cuts short (a full disk, a kill) leaves a torn last line, which readers and the
        next run's repair set aside, and an incomplete cell, which readers ignore."""
        data = "".join(json.dumps({k: _clean(v) for k, v in row.items()}, default=str) + "\n"
                       for row in rows).encode("utf-8")
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


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


#: keys every result row has (a row without one was edited by hand or by another tool)
REQUIRED_KEYS = ("cell_id", "model", "task", "compression", "status", "metric", "value")


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSON-lines file. Torn or corrupt lines (bad bytes, not JSON, a wrong type in a
    standard column) and rows missing a required key (:data:`REQUIRED_KEYS`) are skipped with
    one warning per file naming their line numbers."""
    rows = []
    bad: list[int] = []
    problems: list[str] = []
    incomplete: list[int] = []
    missing: set[str] = set()
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            row, problem = _parse_line(raw)
            if row is None:
                bad.append(lineno)
                problems.append(str(problem))
            elif any(k not in row for k in REQUIRED_KEYS):
                incomplete.append(lineno)
                missing.update(k for k in REQUIRED_KEYS if k not in row)
            else:
                rows.append(row)
    if bad:
        warnings.warn(f"{path}: skipped {_count_lines(bad)} torn or corrupt result line(s) "
                      f"(first: {problems[0]}); their cells count as not run",
                      HarnessWarning, stacklevel=2)
    if incomplete:
        warnings.warn(f"{path}: skipped {_count_lines(incomplete)} result row(s) without the "
                      f"required key(s) {', '.join(sorted(missing))} (edited by hand?)",
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
    df = _whole_cells(_without_duplicates(df[COLUMNS + extra], p), p)
    if latest and len(df) and df["cell_id"].notna().any():
        # per (model, task, compression): the rows of the last run that wrote it, under the cell
        # id it had then (a changed parameter gives a new id; the superseded rows drop out)
        named = df["model"].notna() & df["task"].notna() & df["compression"].notna()
        label = (df["model"].astype(str) + "/" + df["task"].astype(str) + "/"
                 + df["compression"].astype(str)).where(named, "id:" + df["cell_id"].astype(str))
        last = _run_of_cell(df).groupby(label, sort=False).last()
        keep = _run_of_cell(df).eq(label.map(last))
        df = df[keep | df["cell_id"].isna()].reset_index(drop=True)
    return df


def _without_duplicates(df, where: Path):
    """``df`` less rows that repeat an earlier row exactly (one warning naming the file)."""
    if not len(df):
        return df
    dup = df.map(lambda v: json.dumps(_as_text(v), default=str)).duplicated()
    if dup.any():
        warnings.warn(f"{where}: dropped {int(dup.sum())} exact duplicate result row(s)",
                      HarnessWarning, stacklevel=3)
        df = df[~dup].reset_index(drop=True)
    return df


def incomplete_cells(rows: Iterable[dict[str, Any]]) -> set[tuple[Any, Any]]:
    """``(cell_id, run_id)`` of every cell whose run wrote fewer rows (distinct metrics) than
    its ``cell_rows`` announces: a write cut short. Such a cell counts as not run."""
    have: dict[tuple[Any, Any], set[Any]] = {}
    need: dict[tuple[Any, Any], float] = {}
    for row in rows:
        key = (row.get("cell_id"), row.get("run_id"))
        have.setdefault(key, set()).add(None if is_null(row.get("metric")) else row.get("metric"))
        n = as_float(row.get("cell_rows"))
        if n is not None:
            need[key] = n
    return {key for key, n in need.items() if len(have[key]) < n}


def _whole_cells(df, where: Path):
    """``df`` less the rows of :func:`incomplete_cells` (one warning naming them)."""
    if not len(df) or "cell_rows" not in df.columns:
        return df
    short = incomplete_cells(df.to_dict(orient="records"))
    if not short:
        return df
    drop = _run_of_cell(df).isin({f"{c}@{r}" for c, r in short})
    cells = sorted(set(df.loc[drop, "model"].astype(str) + "/" + df.loc[drop, "task"].astype(str)
                       + "/" + df.loc[drop, "compression"].astype(str)))
    warnings.warn(f"{where}: ignored {len(cells)} incomplete cell(s) (fewer rows than they "
                  f"announce; a write cut short): {', '.join(cells[:5])}"
                  f"{' ...' if len(cells) > 5 else ''}", HarnessWarning, stacklevel=3)
    return df[~drop].reset_index(drop=True)


def _run_of_cell(df):
    """``cell_id@run_id`` of each row of ``df`` (a Series)."""
    return df["cell_id"].astype(str) + "@" + df["run_id"].astype(str)


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
        # each file written whole to a temporary name, then renamed: a full disk or a kill
        # leaves the previous file, never a truncated one
        written.append(atomic_write(out_dir / f"results.{fmt}", _encode(flat, fmt)))
    return written


def _encode(flat, fmt: str) -> bytes:
    """The bytes of ``flat`` as results.``fmt``."""
    if fmt == "csv":
        return flat.to_csv(index=False).encode("utf-8")
    if fmt == "json":
        return flat.to_json(orient="records", indent=1, force_ascii=False).encode("utf-8")
    if fmt == "parquet":
        import io

        typed = flat.copy()
        for col in typed.columns:  # parquet needs one type per column
            if typed[col].dtype == object:
                typed[col] = typed[col].map(lambda v: None if is_null(v) else str(v))
        buf = io.BytesIO()
        typed.to_parquet(buf, index=False)
        return buf.getvalue()
    raise ValueError(f"unknown results format {fmt!r} (csv, json or parquet)")
