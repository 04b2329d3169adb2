"""The HTML leaderboard without a browser: files, escaping, charts, deltas, CLI."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from report_fixtures import (
    FAILED,
    SKIPPED,
    XSS,
    make_results,
    ok_cells,
    write_jsonl,
)

from harness.cli import report_command
from harness.errors import DataError
from harness.report import build_view, pareto_front, render_report

BASE_CELL = ("minilm-l6", "conll2003", "none")


class _Tags(HTMLParser):
    """Collects start tags with their attributes and which <svg> they are in."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str], str | None]] = []
        self.svg: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "svg":
            self.svg = a.get("id")
        self.tags.append((tag, a, self.svg))

    def handle_endtag(self, tag: str) -> None:
        if tag == "svg":
            self.svg = None


def _parse(html: str) -> _Tags:
    p = _Tags()
    p.feed(html)
    return p


@pytest.fixture(scope="module")
def runs() -> tuple[pd.DataFrame, pd.DataFrame]:
    baseline = make_results(seed=1, run_id="base")
    current = make_results(
        seed=2, run_id="cur",
        accuracy_delta={BASE_CELL: -0.03},
        latency_factor={("bert-base-cased", "sst2", "none"): 0.5},
        drop=[("bert-base-cased", "sst2", "prune-50")],
    )
    return baseline, current


@pytest.fixture(scope="module")
def page(runs, tmp_path_factory) -> tuple[Path, str]:
    baseline, current = runs
    out = tmp_path_factory.mktemp("report")
    path = render_report(current, out, baseline=baseline, title="Nightly <b>vs</b> base")
    return path, path.read_text(encoding="utf-8")


def test_writes_page_and_data_files(runs, page):
    _, current = runs
    path, _ = page
    assert path.name == "index.html"
    out = path.parent
    for name in ("results.csv", "results.json", "leaderboard.csv", "leaderboard.json"):
        assert (out / name).stat().st_size > 0, name
    csv = pd.read_csv(out / "results.csv")
    js = pd.read_json(out / "results.json", orient="records")
    assert len(csv) == len(js) == len(current)
    assert list(csv.columns) == list(current.columns)
    ok = current["value"].notna()
    assert csv.loc[ok, "value"].tolist() == pytest.approx(current.loc[ok, "value"].tolist())
    assert js.loc[ok, "value"].tolist() == pytest.approx(current.loc[ok, "value"].tolist())
    board = json.loads((out / "leaderboard.json").read_text())
    assert len(board) == current.groupby(["model", "task", "compression"]).ngroups


def test_page_is_self_contained(page):
    _, html = page
    assert "http://" not in html and "https://" not in html and "//cdn" not in html
    assert not re.search(r"<(script|img|iframe|link)[^>]+\bsrc=", html)
    assert not re.search(r"<link[^>]+stylesheet", html)
    assert "@import" not in html and "url(" not in html
    assert "Content-Security-Policy" in html and "default-src 'none'" in html
    tags = _parse(html).tags
    links = [a.get("href", "") for t, a, _ in tags if t in ("a", "link")]
    assert all(h.startswith(("#", "data:")) or re.fullmatch(r"[\w.]+\.(csv|json)", h) for h in links)
    assert "<style>" in html and "<svg" in html


def test_every_string_is_escaped(page):
    _, html = page
    assert XSS not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<b>out of memory</b>" not in html and "&lt;b&gt;out of memory&lt;/b&gt;" in html
    assert "Nightly <b>vs</b>" not in html and "Nightly &lt;b&gt;vs&lt;/b&gt; base" in html
    assert "<fake>" not in html
    scripts = re.findall(r"<script[^>]*>", html)
    assert scripts == ['<script type="application/json" id="report-data">', "<script>"]
    # The embedded JSON has no "</" or "<!--" and round-trips to the raw strings.
    m = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', html, re.DOTALL)
    assert m and "<" not in m.group(1) and ">" not in m.group(1)
    data = json.loads(m.group(1))
    models = {r["model"] for rows in data["tasks"].values() for r in rows}
    assert XSS in models


def test_one_point_per_ok_cell_and_labels(runs, page):
    _, current = runs
    _, html = page
    tags = _parse(html).tags
    charts = [a["id"] for t, a, _ in tags if t == "svg" and "chart" in a.get("class", "")]
    assert len(charts) == 4  # 2 tasks x (size, latency)
    view = build_view(current)
    for t in view["tasks"]:
        expected = ok_cells(current, t["name"])
        for ch in t["charts"]:
            points = [a for tag, a, svg in tags if tag == "circle" and svg == ch["id"]
                      and "point" in a.get("class", "").split()]
            labels = [a for tag, a, svg in tags if tag == "text" and svg == ch["id"]
                      and "label" in a.get("class", "").split()]
            assert len(points) == len(expected) == len(labels), ch["id"]
            assert {(p["full"].split(" / ")[0], p["full"].split(" / ")[1]) for p in ch["points"]} \
                == expected
        assert t["counts"]["failed"] + t["counts"]["skipped"] == sum(
            1 for c in list(FAILED) + list(SKIPPED) if c[1] == t["name"])


def test_pareto_front():
    pts = [(1.0, 0.5), (2.0, 0.9), (3.0, 0.8), (2.0, 0.7), (0.5, 0.1), (4.0, 0.95), (4.0, 0.95)]
    assert pareto_front(pts) == [0, 1, 4, 5, 6]  # identical points do not dominate each other
    # Lower-is-better y (e.g. a loss): (0.5, 0.1) dominates everything to its right.
    assert pareto_front(pts, maximize_y=False) == [4]
    assert pareto_front([]) == []


def test_chart_front_matches_brute_force(runs):
    _, current = runs
    view = build_view(current)
    for t in view["tasks"]:
        for ch in t["charts"]:
            pts = ch["points"]
            for p in pts:
                dominated = any(q["x"] <= p["x"] and q["y"] >= p["y"] and
                                (q["x"] < p["x"] or q["y"] > p["y"]) for q in pts)
                assert p["front"] is (not dominated)
            assert ch["frontier"].startswith("M") and ch["n_front"] >= 1


def test_leaderboard_values(runs, page):
    _, current = runs
    path, html = page
    board = pd.DataFrame(json.loads((path.parent / "leaderboard.json").read_text()))
    row = board[(board.task == "conll2003") & (board.model == "bert-base-cased")
                & (board.compression == "none")].iloc[0]
    src = current[(current.task == "conll2003") & (current.model == "bert-base-cased")
                  & (current.compression == "none")].set_index("metric")
    assert row.main_metric == "entity_f1"
    assert row.main == pytest.approx(src.loc["entity_f1", "value"])
    assert row.ci_low == pytest.approx(src.loc["entity_f1", "ci_low"])
    assert row.size_mb == pytest.approx(src.loc["size_bytes", "value"] / 1e6)
    assert row.latency_p50_ms == pytest.approx(src.loc["latency_b1_p50_ms", "value"])
    assert row.latency_p90_ms == pytest.approx(src.loc["latency_b1_p90_ms", "value"])
    assert row.throughput_samples_s == pytest.approx(src.loc["throughput_samples_s", "value"])
    assert row.peak_rss_mb == pytest.approx(src.loc["peak_rss_mb", "value"])
    failed = board[(board.model == "bert-base-cased") & (board.compression == "ov-int8")
                   & (board.task == "conll2003")].iloc[0]
    assert failed.status == "failed" and "out of memory" in failed.error
    # Table headers: every column is sortable.
    heads = re.findall(r'<th scope="col" data-key="(\w+)"', html)
    assert heads[:11] == ["model", "compression", "main", "size_mb", "parameters", "p50", "p90",
                          "throughput", "rss", "status", "model"]


def test_breakdown_failures_metrics_provenance(page):
    _, html = page
    assert "Per-entity-type F1" in html and "Per-class F1" in html
    for label in ("PER", "ORG", "LOC", "MISC"):
        assert f">{label}</th>" in html
    assert "Failed and skipped cells" in html
    assert "dynamic-int8 unsupported on this CPU" in html
    assert "prune-50 needs a fine-tuned head; &lt;none&gt; here" in html
    assert "not token accuracy" in html and "seqeval default (conlleval-compatible)" in html
    assert "What the metrics mean" in html
    for value in ("0123456789abcdef", "2.4.0+cpu", "4.44.0", "3.11.2", "nightly", "Linux-6.1-x86_64",
                  "real lengths, p50 23 / max 124 tokens"):
        assert value in html, value


def test_baseline_deltas_are_coloured(runs):
    baseline, current = runs
    view = build_view(current, baseline)
    conll = next(t for t in view["tasks"] if t["name"] == "conll2003")
    sst2 = next(t for t in view["tasks"] if t["name"] == "sst2")
    keys = [c.key for c in conll["columns"]]

    def cell(task, model, comp, key):
        for r in task["rows"]:
            if r["cells"][0]["text"] == model and r["cells"][1]["text"] == comp:
                return r["cells"][keys.index(key)]
        raise AssertionError((model, comp))

    d = cell(conll, "minilm-l6", "none", "main")["delta"]
    assert d["cls"] == "worse" and d["text"] == "-0.0300"
    assert cell(conll, "bert-base-cased", "none", "main")["delta"]["cls"] == "same"
    d = cell(sst2, "bert-base-cased", "none", "p50")["delta"]
    assert d["cls"] == "better" and d["text"].startswith("-")
    assert cell(sst2, "bert-base-cased", "none", "throughput")["delta"]["cls"] == "better"
    assert sst2["missing_now"] == ["bert-base-cased / prune-50 (ok in baseline)"]
    assert view["baseline"]["missing"] == 1
    # Without a baseline: no deltas at all.
    plain = build_view(current)
    assert all(c["delta"] is None for t in plain["tasks"] for r in t["rows"] for c in r["cells"])
    assert plain["baseline"] is None


def test_rerun_rows_supersede_earlier_ones():
    first = make_results(seed=1, run_id="r1")
    again = make_results(seed=1, run_id="r2", accuracy_delta={BASE_CELL: 0.05},
                         models=["minilm-l6"])
    view = build_view(pd.concat([first, again], ignore_index=True))
    conll = next(t for t in view["tasks"] if t["name"] == "conll2003")
    rec = next(r for r in conll["records"] if (r["model"], r["compression"]) == ("minilm-l6", "none"))
    base = first[(first.model == "minilm-l6") & (first.task == "conll2003")
                 & (first.compression == "none") & (first.metric == "entity_f1")]["value"].iloc[0]
    assert rec["main"] == pytest.approx(base + 0.05)
    assert len(conll["records"]) == 12


def test_renders_from_its_own_csv_and_list_samples(tmp_path):
    df = make_results(samples_as_list=True)
    page = render_report(df, tmp_path / "a")
    again = pd.read_csv(tmp_path / "a" / "results.csv")
    assert json.loads(again["samples"].dropna().iloc[0])  # lists written as JSON text
    render_report(again, tmp_path / "b")
    a = json.loads((tmp_path / "a" / "leaderboard.json").read_text())
    b = json.loads((tmp_path / "b" / "leaderboard.json").read_text())
    assert a == b
    assert page.exists()


def test_bad_input():
    with pytest.raises(DataError, match="no result rows"):
        build_view(pd.DataFrame())
    with pytest.raises(DataError, match="missing columns: .*metric"):
        build_view(pd.DataFrame([{"model": "m", "task": "t", "compression": "c", "status": "ok"}]))


def test_only_failed_cells_still_render(tmp_path):
    df = make_results()
    df = df[df.status != "ok"]
    html = render_report(df, tmp_path).read_text()
    assert "nothing to plot" in html and "RuntimeError" in html


@pytest.mark.slow
def test_cli_report(tmp_path, monkeypatch):
    cur = write_jsonl(make_results(seed=2, run_id="cur"), tmp_path / "runs" / "cur")
    base = write_jsonl(make_results(seed=1, run_id="base"), tmp_path / "runs" / "base")
    runner = CliRunner()
    res = runner.invoke(report_command, [str(cur), "-o", str(tmp_path / "out"), "--baseline",
                                         str(base), "--title", "T"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "out" / "index.html").exists() and "leaderboard:" in res.output
    assert "<title>T</title>" in (tmp_path / "out" / "index.html").read_text()
    # Default output folder: reports/<run folder name>
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(report_command, [str(cur)])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "reports" / "cur" / "index.html").exists()
    res = runner.invoke(report_command, [str(tmp_path / "nope"), "-o", str(tmp_path / "x")])
    assert res.exit_code == 2 and "nope" in res.output
    (tmp_path / "a-file").write_text("")
    res = runner.invoke(report_command, [str(cur), "-o", str(tmp_path / "a-file")])
    assert res.exit_code == 2 and "a-file: cannot write" in res.output
    assert "Traceback" not in res.output
    help_text = runner.invoke(report_command, ["--help"]).output
    assert "Example" in help_text and "--baseline" in help_text and "-o, --out" in help_text


# --------------------------------------------------------------------------- every task metric


def _table(html: str, table_id: str) -> str:
    m = re.search(rf'<table[^>]+id="{re.escape(table_id)}".*?</table>', html, re.DOTALL)
    assert m, table_id
    return m.group(0)


def _section(html: str, task: str) -> str:
    m = re.search(rf'<section class="task" id="task-\d+" data-task="{task}">.*?</section>', html,
                  re.DOTALL)
    assert m, task
    return m.group(0)


def test_extra_task_metrics_are_rendered_in_their_task(tmp_path):
    """A metric the task returned beyond the main one shows in the task's section: an
    ungrouped one as a leaderboard column (sortable, with baseline deltas), a grouped one in a
    table titled with its group; the other task's section does not get them."""
    extra = {"ece": (0.031, ""), "nll": (0.412, "Calibration"), "brier": (0.07, "Calibration")}
    df = make_results(extra_metrics=extra)
    base = make_results(seed=1, run_id="base", extra_metrics=extra)
    html = render_report(df, tmp_path, baseline=base).read_text()
    view = build_view(df, base)
    for t in view["tasks"]:
        section = _section(html, t["name"])
        board = _table(section, f"{t['id']}-table")
        heads = re.findall(r'<th scope="col" data-key="([^"]+)"', board)
        assert heads[:4] == ["model", "compression", "main", "metric:ece"]
        ok = [r for r in t["rows"] if r["status"] == "ok"]
        ece = [r["cells"][3] for r in ok]
        src = df[(df.task == t["name"]) & (df.metric == "ece")]
        assert sorted(c["sort"] for c in ece) == pytest.approx(sorted(src["value"]))
        assert all(c["delta"] is not None and c["delta"]["cls"] == "same" for c in ece)
        calib = next(b for b in t["breakdowns"] if b["title"] == "Calibration")
        assert calib["labels"] == ["nll", "brier"] and len(calib["rows"]) == len(ok)
        table = _table(section, calib["id"])
        assert ">nll</th>" in table and ">brier</th>" in table
        assert "<h3>Calibration</h3>" in section
        rec = next(r for r in t["records"] if r["status"] == "ok")
        assert rec["ece"] is not None
    board = pd.DataFrame(json.loads((tmp_path / "leaderboard.json").read_text()))
    assert board.loc[board.status == "ok", "ece"].notna().all()
    # Only the task that returned the metric gets it.
    sst2 = df[~((df.task == "sst2") & (df.metric.isin(["ece", "nll", "brier"])))]
    html = render_report(sst2, tmp_path / "one").read_text()
    assert 'data-key="metric:ece"' in _section(html, "conll2003")
    assert 'data-key="metric:ece"' not in _section(html, "sst2")
    assert "Calibration" not in _section(html, "sst2")


def test_old_results_without_metric_group_still_render(tmp_path):
    """Rows written before ``metric_group`` existed: dotted metrics form a table per prefix,
    the others are leaderboard columns."""
    df = make_results(extra_metrics={"ece": (0.03, "")}).drop(columns=["metric_group"])
    view = build_view(df)
    conll = next(t for t in view["tasks"] if t["name"] == "conll2003")
    assert [c.key for c in conll["columns"]][3] == "metric:ece"
    (table,) = conll["breakdowns"]
    assert table["title"] == "entity_f1 by label" and table["metric"] == "entity_f1"
    assert table["labels"] == ["PER", "ORG", "LOC", "MISC"]
    html = render_report(df, tmp_path).read_text()
    assert "<code>entity_f1.&lt;label&gt;</code>" in html
    # A task whose rows do not say which metric is main: the first undotted one it returned.
    no_main = df.assign(main_metric=None)
    assert {t["main"] for t in build_view(no_main)["tasks"]} == {"entity_f1", "accuracy"}


def test_metric_values_reach_the_report_through_rows():
    """The api's MetricValue -> result row (harness.rows) -> report path, with a custom metric
    and a group; a measurement of the core goes the same way."""
    from harness.api import MetricValue
    from harness.rows import build, metric_columns

    metrics = [MetricValue("score", 0.8, 0.75, 0.85, metric_description="a score", main_metric=True),
               MetricValue("ece", 0.05, higher_is_better=False),
               MetricValue("f1.a", 0.7, metric_group="Per-label F1"),
               MetricValue("f1.b", 0.6, metric_group="Per-label F1")]
    cell = {"model": "m", "task": "t", "compression": "none", "status": "ok", "run_id": "r"}
    rows = [build(cell, metric_columns(m)) for m in metrics]
    rows.append(build(cell, metric_columns(MetricValue("size_bytes", 1e6), measured_by_core=True)))
    view = build_view(pd.DataFrame(rows))
    (t,) = view["tasks"]
    assert t["main"] == "score"
    col = next(c for c in t["columns"] if c.key == "metric:ece")
    assert col.hib is False and t["rows"][0]["cells"][3]["text"] == "0.0500"
    (table,) = t["breakdowns"]
    assert table["title"] == "Per-label F1" and table["labels"] == ["a", "b"]
    assert "size_bytes" not in [c.metric for c in t["columns"]]  # the core's own: fixed column
