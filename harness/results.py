"""Result rows on disk: ``results.jsonl``, appended and flushed a cell at a time
(:class:`ResultsWriter`), read back by :func:`read` (the one reader of results, also
``harness.load_results``; tolerant of torn lines and of files of earlier versions), and exported
as ``results.csv`` / ``.json`` / ``.parquet`` (:func:`export`). What a row is, its schema and
the helpers for its values: :mod:`harness.rows`."""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import rows as _rows
from .errors import DataError, HarnessWarning
from .fsutil import atomic_write
from .rows import (
    COLUMNS,
    KEY,
    REQUIRED_KEYS,
    TEXT_COLUMNS,
    arrow_table,
    as_cell,
    as_float,
    as_json,
    cell_label,
    frame,
    is_null,
    moved_names,
)

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["COLUMNS", "REQUIRED_KEYS", "RESULTS_FILE", "ResultsWriter", "export", "incomplete_cells", "write_unit",
           "load_results", "parse_line", "read", "read_rows", "resolve"]

RESULTS_FILE = "results.jsonl"


#: names that moved to harness.rows (deprecated here; removed in the next release)
__getattr__ = moved_names(__name__, {"as_bool": ("harness.rows.as_bool", lambda: _rows.as_bool),
                                     "iter_rows": ("harness.rows.metric_columns", lambda: _iter_rows)})


def _iter_rows(metrics: Iterable[Any]) -> Iterable[dict[str, Any]]:
    from .rows import metric_columns

    return (metric_columns(m) for m in metrics)


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
            row = parse_line(raw)[0]
            if row is None:
                bad.append((lineno, raw))
            else:
                rows.append((lineno, raw, row))
        short = incomplete_cells(row for _, _, row in rows)  # cut short: not run
        for lineno, raw, row in rows:
            if write_unit(row) in short:
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
        data = "".join(json.dumps(as_json(row), default=str) + "\n"
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


def parse_line(raw: bytes) -> tuple[dict[str, Any] | None, str | None]:
    """(row, None) for a valid line of ``results.jsonl``, else (None, what is wrong with it)."""
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
    """Rows of a JSON-lines file as written. Torn or corrupt lines (bad bytes, not JSON, a wrong
    type in a standard column) and rows missing a required key (:data:`REQUIRED_KEYS`) are
    skipped with one warning per file naming their line numbers."""
    rows = []
    bad: list[int] = []
    problems: list[str] = []
    incomplete: list[int] = []
    missing: set[str] = set()
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            row, problem = parse_line(raw)
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
    """The results file of a run folder (or ``path`` itself, a file)."""
    p = Path(path)
    if p.is_dir():
        for name in (RESULTS_FILE, "results.parquet", "results.csv", "results.json"):
            if (p / name).exists():
                return p / name
        raise DataError(f"{p}: no results file here (looked for {RESULTS_FILE}, results.csv, ...)")
    if not p.exists():
        raise DataError(f"{p}: no such results file or folder")
    return p


def _records_of_file(p: Path) -> list[dict[str, Any]]:
    import pandas as pd

    if p.suffix == ".jsonl":
        return read_rows(p)
    if p.suffix == ".json":
        records = json.loads(p.read_text(encoding="utf-8"))
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise ValueError("not a JSON list of rows")
        return records
    if p.suffix == ".csv":
        return pd.read_csv(p, dtype=dict.fromkeys(TEXT_COLUMNS, "str")).to_dict(orient="records")  # type: ignore[return-value]
    if p.suffix == ".parquet":
        return pd.read_parquet(p).to_dict(orient="records")  # type: ignore[return-value]
    raise DataError(f"{p}: unknown results format (use .jsonl, .csv, .json or .parquet)")


def read(source: Any, *, latest: bool = True) -> pd.DataFrame:
    """Rows as a DataFrame conforming to the schema: the one reader of results (the report,
    ``harness compare`` and the gate, ``harness select``, the history and the runner use it).

    ``source`` is a run folder, a results file (``.jsonl``, ``.csv``, ``.json`` or ``.parquet``,
    as this or an earlier version wrote it), a DataFrame or an iterable of row dicts. Exact
    duplicate rows and the rows of a cell cut short (:func:`incomplete_cells`) are left out, one
    warning each.

    :param latest: keep, for each cell (model/task/compression), only the rows of the last run
        that wrote it (a cell that failed and then passed on a re-run shows as passed; a cell
        re-run with changed parameters shows its new rows only). ``False`` keeps every row.
    """
    import pandas as pd

    if isinstance(source, (str, Path)):
        where: Any = resolve(source)
        records: Iterable[Mapping[str, Any]] = _records_of_file(where)
    elif isinstance(source, pd.DataFrame):
        where, records = "results", source.to_dict(orient="records")  # type: ignore[assignment]
    else:
        where, records = "results", source
    df = _whole_cells(_without_duplicates(frame(records), where), where)
    return _last_timing(_latest(df)) if latest and len(df) and df["cell_id"].notna().any() else df


def _last_timing(df: pd.DataFrame) -> pd.DataFrame:
    """Of a cell's rotation-timing rows (:mod:`harness.timephase`), only its last block: a
    re-timing (``--force``, a group whose membership changed on a resume) supersedes them."""
    if "timing_block" not in df.columns or not df["timing_block"].notna().any():
        return df
    timed = df["timing_block"].notna()
    run = _run_of_cell(df)
    last = df["timing_block"][timed].groupby(run[timed], sort=False).last()
    keep = ~timed | df["timing_block"].eq(run.map(last))
    return df[keep].reset_index(drop=True)


def _labels(df: pd.DataFrame) -> list[str]:
    return [cell_label(t) for t in df[list(KEY)].itertuples(index=False)]


def _run_of_cell(df: pd.DataFrame) -> pd.Series:
    """``cell_id@run_id`` of each row of ``df``."""
    return df["cell_id"].astype(str) + "@" + df["run_id"].astype(str)


def _latest(df: pd.DataFrame) -> pd.DataFrame:
    """Per cell label, the rows of the last run that wrote it, under the cell id it had then
    (a changed parameter gives a new id; the superseded rows drop out)."""
    import pandas as pd

    named = df["model"].notna() & df["task"].notna() & df["compression"].notna()
    label = pd.Series(_labels(df), index=df.index).where(named, "id:" + df["cell_id"].astype(str))
    run = _run_of_cell(df)
    last = run.groupby(label, sort=False).last()
    keep = run.eq(label.map(last))
    return df[keep | df["cell_id"].isna()].reset_index(drop=True)


def _without_duplicates(df: pd.DataFrame, where: Any) -> pd.DataFrame:
    """``df`` less rows that repeat an earlier row exactly (one warning naming the file)."""
    if not len(df):
        return df
    key = df.copy()
    for col in key.columns:  # lists (samples) as text: hashable
        if key[col].dtype == object:
            key[col] = key[col].map(lambda v: json.dumps(as_cell(v), default=str))
    dup = key.duplicated()
    if dup.any():
        warnings.warn(f"{where}: dropped {int(dup.sum())} exact duplicate result row(s)",
                      HarnessWarning, stacklevel=3)
        df = df[~dup].reset_index(drop=True)
    return df


def write_unit(row: Mapping[str, Any]) -> tuple[Any, Any]:
    """What a row was written with: ``(cell_id, run_id)`` for a cell's rows, ``("timing",
    block)`` for the rows of a rotation-timing block (:mod:`harness.timephase`)."""
    block = row.get("timing_block")
    return ("timing", block) if not is_null(block) else (row.get("cell_id"), row.get("run_id"))


def incomplete_cells(rows: Iterable[Mapping[str, Any]]) -> set[tuple[Any, Any]]:
    """The :func:`write_unit` of every cell whose run wrote fewer rows (distinct metrics) than
    its ``cell_rows`` announces, and of every timing block with fewer rows than its
    ``timing_rows``: a write cut short. Such a cell counts as not run (such a block as not
    timed)."""
    have: dict[tuple[Any, Any], set[Any]] = {}
    need: dict[tuple[Any, Any], float] = {}
    for row in rows:
        key = write_unit(row)
        metric = None if is_null(row.get("metric")) else row.get("metric")
        have.setdefault(key, set()).add(metric if key[0] != "timing" else (row.get("cell_id"), metric))
        n = as_float(row.get("timing_rows" if key[0] == "timing" else "cell_rows"))
        if n is not None:
            need[key] = n
    return {key for key, n in need.items() if len(have[key]) < n}


def _whole_cells(df: pd.DataFrame, where: Any) -> pd.DataFrame:
    """``df`` less the rows of :func:`incomplete_cells` (one warning naming them)."""
    if not len(df) or "cell_rows" not in df.columns:
        return df
    cols = [c for c in ("cell_id", "run_id", "metric", "cell_rows", "timing_block", "timing_rows")
            if c in df.columns]
    records = df[cols].to_dict(orient="records")
    short = incomplete_cells(records)  # type: ignore[arg-type]
    if not short:
        return df
    import pandas as pd

    flags: list[bool] = [write_unit(r) in short for r in records]  # type: ignore[arg-type]
    drop = pd.Series(flags, index=df.index)
    cells = sorted(set(_labels(df[drop])))
    warnings.warn(f"{where}: ignored {len(cells)} incomplete cell(s) (fewer rows than they "
                  f"announce; a write cut short): {', '.join(cells[:5])}"
                  f"{' ...' if len(cells) > 5 else ''}", HarnessWarning, stacklevel=3)
    return df[~drop].reset_index(drop=True)


#: ``harness.load_results`` and the older name of :func:`read`
load_results = read


def export(df: pd.DataFrame, out_dir: Path, formats: Iterable[str] = ("csv", "json", "parquet")) -> list[Path]:
    """Write ``df`` beside the JSON lines as results.csv / results.json / results.parquet.

    The one writer of these files (``harness run`` and ``harness report`` both call it), so
    they always hold the same rows. In CSV and JSON, list values such as ``samples`` are JSON
    text; Parquet has the schema's types (:func:`harness.rows.arrow_table`)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    flat = df.copy()
    for col in flat.columns:
        if flat[col].dtype == object:
            flat[col] = flat[col].map(as_cell)
    written = []
    for fmt in formats:
        # each file written whole to a temporary name, then renamed: a full disk or a kill
        # leaves the previous file, never a truncated one
        written.append(atomic_write(out_dir / f"results.{fmt}", _encode(df, flat, fmt)))
    return written


def _encode(df: pd.DataFrame, flat: pd.DataFrame, fmt: str) -> bytes:
    """The bytes of the rows as results.``fmt``."""
    if fmt == "csv":
        return flat.to_csv(index=False).encode("utf-8")
    if fmt == "json":
        return flat.to_json(orient="records", indent=1, force_ascii=False).encode("utf-8")
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        buf = pa.BufferOutputStream()
        pq.write_table(arrow_table(df), buf)
        return bytes(buf.getvalue())
    raise ValueError(f"unknown results format {fmt!r} (csv, json or parquet)")
