"""Rotation timing in the report: the rotation-timed p50 and throughput replace the cell's own
where a cell has them, the ratios to the group's reference variant get columns only in a task that
has them, and a task without any rotation metric is shown exactly as before."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from report_fixtures import make_results

from harness.report import build_view, render_report
from harness.report.format import num
from harness.report.glossary import metric_docs

ROT = "conll2003"  # the task given rotation metrics (task-0 on the page); sst2 (task-1) has none
UNTIMED = ("minilm-l6", ROT, "prune-50")  # an ok cell of ROT left without rotation metrics
ROT_NAMES = ("latency_b1_rotation_p50_ms", "throughput_rotation_samples_s", "latency_b1_ratio",
             "throughput_ratio")


def _own(df: pd.DataFrame, cell: tuple[str, str, str], metric: str) -> float:
    m, t, c = cell
    sel = df[(df.model == m) & (df.task == t) & (df.compression == c) & (df.metric == metric)]
    return float(sel.value.iloc[0])


def _rot_p50(df: pd.DataFrame, cell: tuple[str, str, str]) -> float:
    return 1.5 * _own(df, cell, "latency_b1_p50_ms")  # unlike the cell's own on purpose


def _rot_tp(df: pd.DataFrame, cell: tuple[str, str, str]) -> float:
    return 0.9 * _own(df, cell, "throughput_samples_s")


def with_rotation(df: pd.DataFrame, *, ratios: bool = True, skip: tuple[Any, ...] = (UNTIMED,),
                  task: str = ROT) -> pd.DataFrame:
    """``df`` plus rotation rows for the ok cells of ``task`` (but ``skip``); ratios against
    each model's ``none`` variant."""
    extra = []
    ok = df[(df.task == task) & (df.status == "ok") & (df.metric == "latency_b1_p50_ms")]
    for rec in ok.to_dict(orient="records"):
        cell = (rec["model"], task, rec["compression"])
        if cell in skip:
            continue
        ref = (rec["model"], task, "none")
        vals: dict[str, tuple[float, bool, str]] = {
            "latency_b1_rotation_p50_ms": (_rot_p50(df, cell), False, "ms"),
            "throughput_rotation_samples_s": (_rot_tp(df, cell), True, "samples/s")}
        if ratios:
            vals["latency_b1_ratio"] = (_rot_p50(df, cell) / _rot_p50(df, ref), False, "ratio")
            vals["throughput_ratio"] = (_rot_tp(df, cell) / _rot_tp(df, ref), True, "ratio")
        for name, (v, hib, unit) in vals.items():
            ci = (v * 0.95, v * 1.05) if name.endswith("ratio") else (None, None)
            extra.append({**rec, "metric": name, "value": v, "higher_is_better": hib,
                          "unit": unit, "metric_description": f"{name} (rotation timing)",
                          "samples": None, "ci_low": ci[0], "ci_high": ci[1]})
    return pd.concat([df, pd.DataFrame(extra)], ignore_index=True)


@pytest.fixture(scope="module")
def plain() -> pd.DataFrame:
    return make_results()


@pytest.fixture(scope="module")
def rotated(plain: pd.DataFrame) -> pd.DataFrame:
    return with_rotation(plain)


def _task(view: dict[str, Any], name: str) -> dict[str, Any]:
    return next(t for t in view["tasks"] if t["name"] == name)


def _column(task: dict[str, Any], key: str) -> tuple[Any, dict[tuple[str, str], dict[str, Any]]]:
    """The column with ``key`` and each row's cell of it by (model, compression)."""
    keys = [c.key for c in task["columns"]]
    i = keys.index(key)
    return task["columns"][i], {(r["model"], r["compression"]): r["cells"][i]
                                for r in task["rows"] if r["status"] == "ok"}


def test_p50_is_the_rotation_value_when_present_and_the_cells_own_when_absent(rotated):
    task = _task(build_view(rotated), ROT)
    col, cells = _column(task, "p50")
    assert "rotation-timed" in col.help and "mixed sources" in col.help
    assert UNTIMED[::2] in cells and len(cells) > 2
    for (m, comp), cell in cells.items():
        key = (m, ROT, comp)
        if key == UNTIMED:
            assert cell["text"] == num(_own(rotated, key, "latency_b1_p50_ms"), 2)
            assert cell["title"] == "timed within the cell's own run"
        else:
            assert cell["text"] == num(_rot_p50(rotated, key), 2)
            assert cell["title"] == "rotation-timed"
    records = {(r["model"], r["compression"]): r for r in task["records"]}
    assert records[UNTIMED[::2]]["latency_p50_ms"] == _own(rotated, UNTIMED, "latency_b1_p50_ms")
    assert records[UNTIMED[::2]]["latency_rotation_timed"] is False
    assert records[("minilm-l6", "none")]["latency_rotation_timed"] is True


def test_throughput_is_the_rotation_value_when_present(rotated):
    task = _task(build_view(rotated), ROT)
    col, cells = _column(task, "throughput")
    assert "rotation-timed" in col.help
    assert cells[("minilm-l6", "none")]["text"] == num(_rot_tp(rotated, ("minilm-l6", ROT, "none")), 2)
    assert cells[UNTIMED[::2]]["text"] == num(_own(rotated, UNTIMED, "throughput_samples_s"), 2)


def test_p90_stays_the_cells_own(rotated):
    _, cells = _column(_task(build_view(rotated), ROT), "p90")
    key = ("minilm-l6", ROT, "none")
    assert cells[key[::2]]["text"] == num(_own(rotated, key, "latency_b1_p90_ms"), 2)


def test_all_cells_rotation_timed_is_not_called_mixed(plain):
    col, _ = _column(_task(build_view(with_rotation(plain, skip=())), ROT), "p50")
    assert "rotation-timed" in col.help and "mixed" not in col.help


def test_ratio_columns_with_their_ci_only_when_present(plain, rotated):
    task = _task(build_view(rotated), ROT)
    for key, metric in (("ratio_latency", "latency_b1_ratio"),
                        ("ratio_throughput", "throughput_ratio")):
        col, cells = _column(task, key)
        assert col.label.startswith("× ref ")
        assert "reference variant" in col.help and "median of per-round ratios" in col.help
        assert "95% bootstrap CI" in col.help
        cell = cells[("bert-base-cased", "prune-50")]
        v = _own(rotated, ("bert-base-cased", ROT, "prune-50"), metric)
        assert cell["text"] == f"{v:.3f}×" and cell["ci"] == f"[{v * 0.95:.3f}, {v * 1.05:.3f}]"
        assert cells[UNTIMED[::2]]["text"] == "–"
    no_ratios = _task(build_view(with_rotation(plain, ratios=False)), ROT)
    keys = [c.key for c in no_ratios["columns"]]
    assert "ratio_latency" not in keys and "ratio_throughput" not in keys
    assert "× ref latency" not in section_html(rotated, "task-1")
    assert "× ref latency" in section_html(rotated, "task-0")


_HTML: dict[int, str] = {}


def section_html(df: pd.DataFrame, section: str) -> str:
    """The HTML of one task's ``<section>`` of ``df``'s page (rendered once per frame)."""
    if id(df) not in _HTML:
        with tempfile.TemporaryDirectory() as d:
            _HTML[id(df)] = render_report(df, Path(d)).read_text(encoding="utf-8")
    html = _HTML[id(df)]
    start = html.index(f'<section class="task" id="{section}"')
    return html[start:html.index("</section>", start)]


def test_a_task_without_rotation_metrics_is_shown_as_before(plain, rotated):
    before, after = _task(build_view(plain), "sst2"), _task(build_view(rotated), "sst2")
    assert after == before
    assert [c.key for c in after["columns"]] == [
        "model", "compression", "main", "size_mb", "parameters", "p50", "p90", "throughput",
        "rss", "status"]
    assert "rotation" not in str(after["columns"])
    assert not any("rotation" in k or "ratio" in k for r in after["records"] for k in r)


def test_results_without_any_rotation_metric_render_as_before(plain):
    view = build_view(plain)
    for task in view["tasks"]:
        assert not any(c.key.startswith("ratio_") for c in task["columns"])
        assert all("rotation" not in c.help for c in task["columns"])
        assert all("rotation" not in ch["x_label"] for ch in task["charts"])
    assert "rotation" not in section_html(plain, "task-0")


def test_latency_chart_plots_the_rotation_p50(rotated):
    task = _task(build_view(rotated), ROT)
    ch = next(c for c in task["charts"] if c["id"].endswith("-latency"))
    assert ch["x_label"] == "batch-1 latency b1_p50, rotation-timed where measured (ms)"
    xs = {p["key"]: p["x"] for p in ch["points"]}
    key = ("bert-base-cased", ROT, "dynamic-int8")
    assert xs[key[::2]] == pytest.approx(_rot_p50(rotated, key))
    assert xs[UNTIMED[::2]] == pytest.approx(_own(rotated, UNTIMED, "latency_b1_p50_ms"))
    tip = task["tips"][next(r["id"] for r in task["rows"] if (r["model"], r["compression"])
                           == key[::2])]
    assert any("rotation-timed" in line for line in tip["lines"])
    assert any(line.startswith("ref latency:") for line in tip["lines"])


def _matrix_cell(task: dict[str, Any], model: str, comp: str) -> dict[str, Any]:
    row = next(r for r in task["matrix"]["rows"] if r["model"] == model)
    return next(c for c in row["cells"] if c["compression"] == comp)


def test_matrix_latency_is_the_rotation_p50(rotated):
    task = _task(build_view(rotated), ROT)
    none = _matrix_cell(task, "bert-base-cased", "none")
    key = ("bert-base-cased", ROT, "none")
    assert f"latency {num(_rot_p50(rotated, key), 2)} ms" in none["lines"]
    assert "(rotation-timed)" in none["title"]
    int8 = _matrix_cell(task, "bert-base-cased", "dynamic-int8")
    r = _rot_p50(rotated, ("bert-base-cased", ROT, "dynamic-int8")) / _rot_p50(rotated, key)
    assert f"latency {r:.2f}×" in int8["lines"]
    # a variant without rotation timing is compared with its reference's own timing
    untimed = _matrix_cell(task, "minilm-l6", "prune-50")
    own = _own(rotated, UNTIMED, "latency_b1_p50_ms") / _own(
        rotated, ("minilm-l6", ROT, "none"), "latency_b1_p50_ms")
    assert f"latency {own:.2f}×" in untimed["lines"]
    assert "(rotation-timed)" not in untimed["title"]


def test_glossary_explains_the_rotation_metrics(rotated):
    docs = {d["name"]: d for d in metric_docs(rotated, set())}
    for name in ROT_NAMES:
        assert docs[name]["explain"], name
    assert "reference variant" in docs["latency_b1_ratio"]["explain"]


def test_no_latency_delta_between_rotation_and_cell_timing(plain, rotated):
    """Against a baseline without rotation timing, a rotation-timed p50 gets no delta (the two
    timings differ); the same source on both sides keeps it."""
    task = _task(build_view(rotated, baseline=plain), ROT)
    _, p50 = _column(task, "p50")
    _, main = _column(task, "main")
    assert p50[("minilm-l6", "none")]["delta"] is None
    assert p50[UNTIMED[::2]]["delta"] is not None
    assert main[("minilm-l6", "none")]["delta"] is not None
    same = _task(build_view(rotated, baseline=rotated), ROT)
    assert _column(same, "p50")[1][("minilm-l6", "none")]["delta"] is not None
