"""One result row (harness.rows): its schema, the one builder, the one reader, the value helpers,
the cell key; results files of earlier versions still load with their values."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from harness.analysis.cells import cells_of, read_table
from harness.api import MetricValue
from harness.results import ResultsWriter, export, read
from harness.rows import (
    COLUMNS,
    FIELDS,
    as_bool,
    as_cell,
    as_float,
    as_int,
    as_json,
    as_samples,
    as_text,
    build,
    cell_key,
    cell_label,
    frame,
    is_null,
    metric_columns,
    schema,
)

DATA = Path(__file__).parent / "data"
#: reports/full/results.json as commit b40d5e7 wrote it (2026-11-23): a whole ok cell (samples
#: as JSON text, no metric_group / latency_inputs / latency_passes / predictions yet) and a
#: skipped one
OLD_JSON = DATA / "results-2026-11-23.json"
#: results.jsonl lines of two real runs (2026-12-05): a cell that failed in compress (the
#: ort-static-int8 bug fixed in 35961d8) and a skipped cell; keys in the order the runner of the
#: time wrote them, a cell without metrics has no metric columns but metric and value
OLD_JSONL = DATA / "results-2026-12-05.jsonl"


def _same(raw, got) -> bool:
    """A value as the file holds it and as the reader gives it back."""
    if raw is None or (isinstance(raw, float) and math.isnan(raw)):
        return is_null(got)
    if isinstance(raw, str) and raw.startswith("["):  # samples: JSON text in the old exports
        return list(got) == json.loads(raw)
    return raw == got and type(raw) is type(got) or (
        isinstance(raw, (int, float)) and not isinstance(raw, bool) and float(raw) == got)


@pytest.mark.parametrize("path", [OLD_JSON, OLD_JSONL], ids=["json-2026-11", "jsonl-2026-12"])
def test_results_of_earlier_versions_load_with_the_same_values(path):
    raw = (json.loads(path.read_text()) if path.suffix == ".json"
           else [json.loads(line) for line in path.read_text().splitlines()])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        df = read(path, latest=False)
    assert len(df) == len(raw)
    assert list(df.columns[: len(COLUMNS)]) == COLUMNS  # every fixed column, in schema order
    extras = [k for k in raw[0] if k not in COLUMNS]
    assert list(df.columns[len(COLUMNS):]) == extras  # the extra columns, in file order
    for i, (rec, row) in enumerate(zip(raw, df.to_dict(orient="records"))):
        bad = {k: (v, row[k]) for k, v in rec.items() if not _same(v, row[k])}
        assert not bad, (i, bad)
        # the fixed columns a file of an earlier version lacks read as null
        assert all(is_null(row[c]) for c in COLUMNS if c not in rec)


def test_old_failed_and_skipped_cells_keep_their_status_and_reason():
    cells = cells_of(read_table(OLD_JSON, "baseline"))
    assert {k: c.status for k, c in cells.items()} == {
        ("minilm", "sst2", "none"): "ok", ("minilm", "sst2", "bf16"): "skipped"}
    ok = cells[("minilm", "sst2", "none")]
    assert ok.value("accuracy") == 0.8887614679 and ok.column("accuracy", "main_metric") is True
    assert len(ok.column("latency_b1_p50_ms", "samples")) > 100
    assert "avx512_bf16" in cells[("minilm", "sst2", "bf16")].error
    cells = cells_of(read_table(OLD_JSONL, "baseline"))
    assert {k[2]: c.status for k, c in cells.items()} == {"ort-static-int8": "failed",
                                                            "needs-tpu": "skipped"}
    assert "Invalid input name: token_type_ids" in cells[("distil", "conll", "ort-static-int8")].error


def test_old_results_export_and_read_back_the_same(tmp_path):
    df = read(OLD_JSON, latest=False)
    export(df, tmp_path)
    for fmt in ("csv", "json", "parquet"):
        back = read(tmp_path / f"results.{fmt}", latest=False)
        assert list(back.columns) == list(df.columns), fmt
        for a, b in zip(df.to_dict(orient="records"), back.to_dict(orient="records")):
            diff = {k: (a[k], b[k]) for k in a if as_cell(a[k]) != as_cell(b[k])
                    and not (is_null(a[k]) and is_null(b[k]))
                    and not (fmt == "csv" and as_text(a[k]) == as_text(b[k]))}  # CSV: "" is null
            assert not diff, (fmt, diff)


def test_the_parquet_export_has_the_schema_types(tmp_path):
    import pyarrow.parquet as pq

    export(read(OLD_JSONL), tmp_path, ("parquet",))
    got = pq.read_schema(tmp_path / "results.parquet")
    for field in schema():
        assert got.field(field.name).type == field.type, field.name
    assert got.names[: len(COLUMNS)] == COLUMNS


def test_every_metric_value_field_is_the_row_column_of_its_name():
    import dataclasses

    names = [f.name for f in dataclasses.fields(MetricValue)]
    assert set(names) <= set(COLUMNS)
    m = MetricValue("f1.a", 0.5, 0.4, 0.6, metric_description="d", higher_is_better=True,
                    main_metric=False, unit="", metric_group="Per-class F1")
    assert metric_columns(m) == {**dataclasses.asdict(m), "samples": None}
    core = metric_columns(MetricValue("latency_b1_p50_ms", 2.0, higher_is_better=False, unit="ms"),
                          samples=(1.0, 2.0), measured_by_core=True)
    assert core["metric_group"] is None and core["samples"] == [1.0, 2.0]  # as earlier versions


def test_metric_value_takes_its_old_names_with_a_deprecation_warning():
    with pytest.warns(DeprecationWarning, match=r"MetricValue\(name=\.\.\.\) is deprecated: use metric="):
        m = MetricValue(name="acc", value=0.9, description="d", main=True, group="G")
    assert (m.metric, m.metric_description, m.main_metric, m.metric_group) == ("acc", "d", True, "G")
    with pytest.warns(DeprecationWarning, match=r"MetricValue\.main is deprecated"):
        assert m.main is True
    with pytest.warns(DeprecationWarning):
        assert (m.name, m.description, m.group) == ("acc", "d", "G")
    with pytest.raises(TypeError, match="unexpected keyword argument 'nme'"):
        MetricValue(nme="x", value=1.0)
    with pytest.raises(TypeError, match="needs a metric name and a value"):
        MetricValue("x")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert MetricValue("acc", 0.9, main_metric=True) == MetricValue(metric="acc", value=0.9,
                                                                        main_metric=True)


def test_build_gives_every_fixed_column_typed_then_the_extras():
    row = build({"run_id": "r", "seed": "3", "cpu_isa": "avx2"},
                {"model": "m", "task": "t", "compression": "c", "status": "ok", "threads": 4.0},
                {"metric": "acc", "value": float("nan"), "higher_is_better": "true",
                 "samples": "[1.0, 2.5]", "note": float("inf"), "ranks": {"a": 1}, "cell_rows": 1})
    assert list(row)[: len(COLUMNS)] == COLUMNS and list(row)[len(COLUMNS):] == ["cpu_isa", "note",
                                                                                 "cell_rows"]
    assert row["seed"] == 3 and row["threads"] == 4 and row["value"] is None
    assert row["higher_is_better"] is True and row["samples"] == [1.0, 2.5]
    assert row["note"] is None and row["error"] is None  # JSON-safe; absent fixed column: null
    json.dumps(row, allow_nan=False)
    assert [name for name, _ in FIELDS] == schema().names == COLUMNS


def test_the_runner_writes_rows_the_reader_gives_back(tmp_path):
    spec = SimpleNamespace(model=SimpleNamespace(name="m"), task=SimpleNamespace(name="t"),
                           compression=SimpleNamespace(name="c"))
    rows = [build({"run_id": "r", "cell_id": "x"}, dict(zip(("model", "task", "compression"),
                                                            cell_key(spec))),
                  {"status": "ok", "cell_rows": 2}, metric_columns(m))
            for m in (MetricValue("acc", 0.5, main_metric=True), MetricValue("size_bytes", 9.0))]
    w = ResultsWriter(tmp_path)
    w.write_cell(rows)
    w.close()
    pd.testing.assert_frame_equal(read(tmp_path), frame(rows))


def test_one_cell_key_for_specs_rows_results_and_tuples():
    spec = SimpleNamespace(model=SimpleNamespace(name="m"), task=SimpleNamespace(name="ner/v2"),
                           compression=SimpleNamespace(name="int8"))
    row = {"model": "m", "task": "ner/v2", "compression": "int8", "metric": "x"}
    result = next(iter(cells_of(pd.DataFrame([{**row, "status": "ok", "value": 1.0}])).values()))
    assert cell_key(spec) == cell_key(row) == cell_key(result) == result.key == ("m", "ner/v2", "int8")
    assert cell_label(("m", "t", "c")) == "m/t/c" and cell_label(spec) == "m/ner/v2/int8"


def test_value_helpers():
    assert [as_float(v) for v in (1, "2.5", True, float("inf"), None, "x", pd.NA)] == [
        1.0, 2.5, None, None, None, None, None]
    assert [as_int(v) for v in (3, 3.0, "4", 3.5, None, True)] == [3, 3, 4, None, None, None]
    assert [as_bool(v) for v in (True, "false", "Yes", 0, None, "maybe")] == [
        True, False, True, False, None, None]
    assert [as_text(v) for v in (None, float("nan"), {"b": 1, "a": 2}, [1], 2)] == [
        "", "", '{"a": 2, "b": 1}', "[1]", "2"]
    assert as_cell([1.0, 2.0]) == "[1.0, 2.0]" and as_cell("x") == "x"
    assert as_samples("[1, null, NaN, 2]") == [1.0, 2.0] and as_samples("") is None
    assert as_samples(3.0) is None and as_samples("not json") is None
    import numpy as np

    assert as_json({1: (float("nan"), np.float32(0.5), [np.int64(2)])}) == {"1": [None, 0.5, [2]]}


@pytest.mark.parametrize("module, old, new", [
    ("harness.results", "as_bool", "as_bool"),
    ("harness.analysis.cells", "text", "as_text"),
    ("harness.report.format", "clean_json", "as_json"),
])
def test_names_that_moved_to_rows_still_work_with_a_warning(module, old, new):
    import importlib

    import harness.rows

    mod = importlib.import_module(module)
    with pytest.warns(DeprecationWarning, match=f"{module}.{old} is deprecated: use harness.rows.{new}"):
        assert getattr(mod, old) is getattr(harness.rows, new)
    with pytest.raises(AttributeError):
        mod.no_such_name  # noqa: B018
