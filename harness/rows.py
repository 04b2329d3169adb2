"""One result row: its columns and their types (one pyarrow schema), the one place a row is
built, the cell key, and the one set of helpers that normalise the values of a row.

A results table has one row per (cell, metric); a ``failed`` or ``skipped`` cell has one row with
no metric. Its columns come in two parts:

* **Fixed columns** (:data:`FIELDS`, as a pyarrow schema :func:`schema`): the run and cell
  (``run_id``, ``cell_id``, ``suite``, ``suite_hash``), the entries (``model``, ``task``,
  ``compression``, each with ``*_plugin`` and ``*_params`` as JSON text), the outcome
  (``status``, ``error``, ``phase``), the metric (the fields of :class:`harness.api.MetricValue`
  under the same names, plus ``samples``, and ``split``: the data split a task metric was scored
  on, null for the core's measurements), how and where it ran, and provenance. Every row has
  every fixed column (null where it does not apply), in this order, with this type.
* **Extra columns**, the open-ended part: every key of a predictor's ``describe()`` whose value is
  a scalar, the core's optional provenance (``openvino_version``, ``cpu_isa``, the GPU columns),
  ``predictions`` and ``cell_rows``. Typed extra columns were chosen over one map or JSON column:
  each key is a flat column after the fixed ones (in the order first written), holding scalars
  (str, int, float, bool or null; :func:`build` drops a dict or list value). Its type is
  inferred from its values (Parquet: pyarrow's inference; a column of mixed types is text). Files
  keep the columns earlier versions wrote, and an extra filters like any other column
  (``df[df.quantized_engine == "x86"]``).

A row is built by :func:`build` (the runner and the cell cache), its metric part by
:func:`metric_columns` (a task's metrics and the core's own measurements alike). Rows are read
back by one function, :func:`harness.results.read` (``harness.load_results``): a run folder,
``results.jsonl`` / ``.csv`` / ``.json`` / ``.parquet`` (of this version or an earlier one), a
DataFrame or a list of dicts, through :func:`frame` into a DataFrame with the fixed columns first,
conformed to their types (pandas picks the dtype: text for text, object for booleans next to a
null and for ``samples`` lists, float64 for floats and for integers next to a null). Parquet
files follow the schema (:func:`arrow_table`); CSV and JSON hold ``samples`` as JSON text.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa


__all__ = ["COLUMNS", "FIELDS", "KEY", "REQUIRED_KEYS", "CellKey", "arrow_table", "as_bool",
           "as_cell", "as_float", "as_int", "as_json", "as_samples", "as_text", "build", "cell_key",
           "cell_label", "conform", "frame", "is_null", "metric_columns", "moved_names", "schema", "MetricValue"]

#: MetricValue's field names of earlier versions -> now (the row's column names): deprecated
_RENAMED = {"name": "metric", "description": "metric_description", "main": "main_metric",
            "group": "metric_group"}


def _deprecated(old: str, new: str) -> None:
    import warnings

    warnings.warn(f"{old} is deprecated: use {new}", DeprecationWarning, stacklevel=3)


@dataclass(init=False)
class MetricValue:
    """One measured number of a cell; becomes one result row, each field the row's column of the
    same name (below). The names of earlier versions (``name``, ``description``,
    ``main``, ``group``) still work as keywords and attributes, with a ``DeprecationWarning``."""

    metric: str  #: e.g. "entity_f1", "entity_f1.PER", "accuracy"
    value: float
    ci_low: float | None = None
    ci_high: float | None = None
    #: what the number is, shown in reports: "entity-level micro F1 (seqeval, conlleval mode)"
    metric_description: str = ""
    higher_is_better: bool = True
    main_metric: bool = False  #: the task's headline metric (one per task)
    unit: str = ""
    #: where reports show it: "" a leaderboard column of its own (a dotted name "x.y": column
    #: "y" of a table "x"); a title such as "Per-class F1": a table of the metrics sharing it
    metric_group: str = ""

    def __init__(self, metric: str | None = None, value: float | None = None, ci_low: float | None = None,
                 ci_high: float | None = None, metric_description: str = "", higher_is_better: bool = True,
                 main_metric: bool = False, unit: str = "", metric_group: str = "", **old: Any) -> None:
        self.__dict__.update(metric=metric, value=value, ci_low=ci_low, ci_high=ci_high,
                             metric_description=metric_description, higher_is_better=higher_is_better,
                             main_metric=main_metric, unit=unit, metric_group=metric_group)
        for k, v in old.items():
            if k not in _RENAMED:
                raise TypeError(f"MetricValue() got an unexpected keyword argument {k!r}")
            _deprecated(f"MetricValue({k}=...)", f"{_RENAMED[k]}=...")
            self.__dict__[_RENAMED[k]] = v
        if self.metric is None or self.value is None:
            raise TypeError("MetricValue() needs a metric name and a value")

    def __getattr__(self, old: str) -> Any:  # only called for a name that is not a field
        if old not in _RENAMED:
            raise AttributeError(f"'MetricValue' object has no attribute {old!r}")
        _deprecated(f"MetricValue.{old}", _RENAMED[old])
        return getattr(self, _RENAMED[old])



def moved_names(module: str, moved: dict[str, tuple[str, Any]]) -> Any:
    """A module's ``__getattr__`` serving names that moved elsewhere, with a
    ``DeprecationWarning`` (removed in the next release): ``{old: (new dotted name, getter)}``."""

    def __getattr__(name: str) -> Any:
        if name not in moved:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        new, get = moved[name]
        _deprecated(f"{module}.{name}", new)
        return get()

    return __getattr__


_S, _F, _B, _I, _L = "string", "float64", "bool", "int64", "list<float64>"
#: The fixed columns and their types, in file order.
FIELDS: tuple[tuple[str, str], ...] = (
    ("run_id", _S), ("cell_id", _S), ("suite", _S), ("suite_hash", _S),
    ("model", _S), ("model_plugin", _S), ("model_params", _S),
    ("task", _S), ("task_plugin", _S), ("task_params", _S),
    ("compression", _S), ("compression_plugin", _S), ("compression_params", _S),
    ("status", _S), ("error", _S), ("phase", _S),
    ("metric", _S), ("value", _F), ("ci_low", _F), ("ci_high", _F), ("metric_description", _S),
    ("higher_is_better", _B), ("main_metric", _B), ("unit", _S), ("metric_group", _S), ("split", _S),
    ("samples", _L),
    ("runtime", _S), ("device", _S), ("device_name", _S), ("precision", _S),
    ("latency_batch_size", _I), ("throughput_batch_size", _I), ("seq_len", _S),
    ("latency_inputs", _I), ("latency_passes", _I), ("threads", _I), ("jobs", _I), ("cached", _B),
    ("harness_version", _S), ("plugin_versions", _S), ("python_version", _S),
    ("torch_version", _S), ("transformers_version", _S), ("platform", _S), ("cpu", _S),
    ("git_commit", _S), ("seed", _I), ("timestamp", _S), ("hostname", _S),
)
COLUMNS = [name for name, _ in FIELDS]
#: The columns that name a cell, and its key: their values as text.
KEY = ("model", "task", "compression")
CellKey = tuple[str, str, str]
#: keys every result row has (a row without one was edited by hand or by another tool)
REQUIRED_KEYS = ("cell_id", "model", "task", "compression", "status", "metric", "value")
#: text columns (a CSV reader keeps them text: "0123" stays "0123") and float columns
TEXT_COLUMNS = [name for name, kind in FIELDS if kind == _S]
FLOAT_COLUMNS = [name for name, kind in FIELDS if kind == _F]


def schema() -> pa.Schema:
    """The fixed columns as a pyarrow schema (imports pyarrow: not at module import)."""
    import pyarrow as pa

    types = {_S: pa.string(), _F: pa.float64(), _B: pa.bool_(), _I: pa.int64(),
             _L: pa.list_(pa.float64())}
    return pa.schema([pa.field(name, types[kind]) for name, kind in FIELDS])


# -- values: the one set of helpers for values that went through JSON, CSV, Parquet or pandas ---
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


def as_int(v: Any) -> int | None:
    """An integer (an int, or a float or numeric text with an integral value), else None."""
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    f = as_float(v)
    return int(f) if f is not None and f.is_integer() else None


def as_bool(v: Any) -> bool | None:
    """True/False from a bool, a number or "true"/"false"/"1"/"0"/"yes"/"no"; else None."""
    if is_null(v):
        return None
    if isinstance(v, str):
        s = v.strip().lower()
        return True if s in ("true", "1", "yes") else False if s in ("false", "0", "no") else None
    return bool(v)


def _listlike(v: Any) -> bool:
    return isinstance(v, (list, tuple, dict)) or (
        hasattr(v, "tolist") and not isinstance(v, (str, bytes)) and int(getattr(v, "ndim", 0) or 0) > 0)


def as_text(v: Any) -> str:
    """A value as text: "" for null, JSON for lists, dicts and arrays."""
    if is_null(v):
        return ""
    if _listlike(v):
        return json.dumps(v.tolist() if hasattr(v, "tolist") else v, sort_keys=True, default=str)
    return str(v)


def as_cell(v: Any) -> Any:
    """A value for a flat file (CSV, JSON, Parquet text): lists, dicts and arrays as JSON text."""
    return as_text(v) if _listlike(v) else v


def as_samples(v: Any) -> list[float] | None:
    """Per-iteration samples: from a list, an array or JSON text; NaN and nulls left out; None
    when there are none."""
    if isinstance(v, str):
        try:
            v = json.loads(v) if v.strip() else None
        except json.JSONDecodeError:
            return None
    if not _listlike(v) or isinstance(v, dict):
        return None
    try:
        out = [float(x) for x in v if not is_null(x)]
    except (TypeError, ValueError):
        return None
    return [x for x in out if not math.isnan(x)] or None


def as_json(v: Any) -> Any:
    """``v`` made JSON-safe: NaN, infinities and nulls as None, tuples as lists, numpy
    scalars as Python numbers, dict keys as text (inside lists and dicts too)."""
    if isinstance(v, dict):
        return {str(k): as_json(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [as_json(x) for x in v]
    if is_null(v) or (isinstance(v, float) and not math.isfinite(v)):
        return None
    if hasattr(v, "item") and getattr(v, "ndim", None) == 0:  # a numpy scalar
        return as_json(v.item())
    return v


def _as_str(v: Any) -> str | None:
    return None if is_null(v) else v if isinstance(v, str) else as_text(v)


_CONFORM = {_S: _as_str, _F: as_float, _B: as_bool, _I: as_int, _L: as_samples}
_CONVERT = {name: _CONFORM[kind] for name, kind in FIELDS}
_FIXED = list(_CONVERT.items())


def conform(name: str, v: Any) -> Any:
    """``v`` as the type of the fixed column ``name`` (None where it does not fit); the value
    unchanged for an extra column."""
    conv = _CONVERT.get(name)
    return conv(v) if conv else v


# -- the cell key -------------------------------------------------------------------------------
def cell_key(cell: Any) -> CellKey:
    """(model, task, compression) as text, of a row (a mapping), a cell spec (entries with a
    ``name``), a :class:`~harness.analysis.cells.CellResult` or a tuple of the three."""
    if isinstance(cell, Mapping):
        parts = [cell.get(k) for k in KEY]
    elif isinstance(cell, (tuple, list)):
        parts = list(cell)
    else:
        parts = [getattr(cell, k) for k in KEY]
    m, t, c = (as_text(p if isinstance(p, str) else getattr(p, "name", p)) for p in parts)
    return (m, t, c)


def cell_label(cell: Any) -> str:
    """``model/task/compression``: how a cell is named in messages, ``--only`` patterns and the
    report (see :func:`cell_key` for what ``cell`` may be)."""
    return "/".join(cell_key(cell))


# -- building -----------------------------------------------------------------------------------
def metric_columns(m: MetricValue, *, samples: Iterable[float] | None = None,
                   measured_by_core: bool = False) -> dict[str, Any]:
    """The metric part of a row, from a :class:`~harness.api.MetricValue` (a task's metric, or
    one of the core's measurements with ``measured_by_core``: those have no ``metric_group``,
    and batch-1 latency has its per-iteration ``samples``)."""
    return {
        "metric": m.metric, "value": m.value, "ci_low": m.ci_low, "ci_high": m.ci_high,
        "metric_description": m.metric_description, "higher_is_better": m.higher_is_better,
        "main_metric": m.main_metric, "unit": m.unit,
        "metric_group": None if measured_by_core else m.metric_group,
        "samples": None if samples is None else list(samples),
    }


def build(*parts: Mapping[str, Any]) -> dict[str, Any]:
    """One result row from its parts (a later part wins a key): every fixed column in order,
    conformed to its type (null when no part has it), then the extra columns in the order first
    given, JSON-safe; an extra whose value is a dict or a list is dropped."""
    merged: dict[str, Any] = {}
    for part in parts:
        merged.update(part)
    row = {name: conv(merged.get(name)) for name, conv in _FIXED}
    for k, v in merged.items():
        if k not in row and not isinstance(v, (dict, list, tuple)):
            row[k] = as_json(v)
    return row



def frame(records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Rows as a DataFrame: every fixed column first (null where a row lacks it), conformed to
    its type, then the extra columns in the order first seen, as they are."""
    import pandas as pd

    out = []
    for rec in records:
        row = {name: conv(rec.get(name)) for name, conv in _FIXED}
        row.update((k, v) for k, v in rec.items() if k not in row)
        out.append(row)
    df = pd.DataFrame(out) if out else pd.DataFrame(columns=COLUMNS)
    for name in FLOAT_COLUMNS:  # float64 even when every value is null
        df[name] = df[name].astype("float64")
    return df


def arrow_table(df: pd.DataFrame) -> pa.Table:
    """``df`` as a pyarrow table: the fixed columns with the schema's types, each extra column
    with the type pyarrow infers from its values (text where they mix types)."""
    import pyarrow as pa

    fixed = {f.name: f.type for f in schema()}
    arrays = {}
    for col in df.columns:
        if col in fixed:
            conv = _CONVERT[col]
            arrays[col] = pa.array([conv(v) for v in df[col].tolist()], type=fixed[col])
            continue
        values = [None if is_null(v) else as_cell(v) for v in df[col].tolist()]
        try:
            arrays[col] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            arrays[col] = pa.array([None if v is None else str(v) for v in values], type=pa.string())
    return pa.table(arrays)
