from __future__ import annotations

import json
import warnings

import pytest

import harness
from harness.errors import DataError
from harness.results import COLUMNS, ResultsWriter, export, read_rows


def rows(run, cell, status="ok", metrics=("accuracy", "size_bytes")):
    return [{"run_id": run, "cell_id": cell, "model": "m", "task": "t", "compression": cell,
             "status": status, "metric": m, "value": 1.0, "samples": [1.0, 2.0]} for m in metrics]


def test_writer_appends_and_reader_drops_torn_line(tmp_path):
    w = ResultsWriter(tmp_path)
    for r in rows("r1", "a"):
        w.write(r)
    w.close()
    with open(tmp_path / "results.jsonl", "a") as f:
        f.write('{"run_id": "r1", "cell_id": "b", "met')  # killed mid-write
    with pytest.warns(UserWarning, match=r"results.jsonl: skipped 1 \(line 3\) torn"):
        assert len(read_rows(tmp_path / "results.jsonl")) == 2
    with pytest.warns(UserWarning, match=r"moved 1 \(line 3\) torn or corrupt"):
        w = ResultsWriter(tmp_path)  # moves the torn line aside, once
    w.write(rows("r2", "b")[0])
    w.close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = read_rows(tmp_path / "results.jsonl")
    assert [r["cell_id"] for r in got] == ["a", "a", "b"]
    assert (tmp_path / "results.jsonl.bad").read_text().startswith('{"run_id": "r1", "cell_id": "b"')


def test_load_results_keeps_latest_run_per_cell(tmp_path):
    w = ResultsWriter(tmp_path)
    for r in rows("r1", "a", "failed", (None,)) + rows("r1", "b") + rows("r2", "a"):
        w.write(r)
    w.close()
    df = harness.load_results(tmp_path)
    assert list(df.columns[: len(COLUMNS)]) == COLUMNS
    assert set(zip(df.cell_id, df.run_id)) == {("a", "r2"), ("b", "r1")}
    assert len(harness.load_results(tmp_path, latest=False)) == 5


def test_exports_round_trip(tmp_path):
    w = ResultsWriter(tmp_path)
    for r in rows("r1", "a"):
        w.write(r)
    w.close()
    df = harness.load_results(tmp_path)
    export(df, tmp_path)
    for name in ("results.csv", "results.json", "results.parquet"):
        back = harness.load_results(tmp_path / name)
        assert len(back) == 2 and set(back.metric) == {"accuracy", "size_bytes"}
    assert json.loads((tmp_path / "results.json").read_text())[0]["cell_id"] == "a"


def test_missing_results_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="no results file here"):
        harness.load_results(tmp_path)
    with pytest.raises(DataError, match="no such results file"):
        harness.load_results(tmp_path / "x.jsonl")


def test_latest_keeps_one_row_set_per_cell_label_even_when_its_id_changed(tmp_path):
    """A cell re-run with a changed parameter has a new cell id; the superseded rows drop out."""
    import json

    from harness.results import load_results

    def row(cell_id, run_id, value):
        return {"model": "m", "task": "t", "compression": "c", "metric": "acc", "value": value,
                "cell_id": cell_id, "run_id": run_id, "status": "ok"}

    rows = [row("old", "r1", 0.5), row("new", "r2", 0.7),
            {**row("x", "r1", 0.1), "compression": "other"}]
    path = tmp_path / "results.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    df = load_results(path)
    assert sorted(zip(df.compression, df.value)) == [("c", 0.7), ("other", 0.1)]
    assert len(load_results(path, latest=False)) == 3
