"""harness history: each cell across runs, with the changes the gate would flag."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from report_fixtures import XSS, make_results, write_jsonl

from harness.analysis.history import build_history, render_history, run_label
from harness.cli import history_command
from harness.errors import DataError
from harness.gate import compare

ACC = ("minilm-l6", "sst2", "none")
LAT = ("minilm-l6", "sst2", "ov-int8")


def _runs():
    return [make_results(seed=i, run_id=f"r{i}", accuracy_delta={ACC: -0.03 * i},
                         latency_factor={LAT: 1 + 0.3 * i}) for i in range(3)]


def test_one_series_per_cell_per_chart_in_run_order():
    runs = _runs()
    view = build_history(runs, ["a", "b", "c"])
    assert [r["name"] for r in view["runs"]] == ["a", "b", "c"]
    for t in view["tasks"]:
        n_cells = len({(m, c) for m, tk, c in zip(runs[0].model, runs[0].task, runs[0].compression)
                       if tk == t["name"]})
        assert len(t["charts"]) == 4
        for ch in t["charts"]:
            assert len(ch["series"]) == n_cells
            assert len({s["key"] for s in ch["series"]}) == n_cells
            for s in ch["series"]:  # x increases with the run index
                xs = [p["cx"] for p in s["points"]]
                assert xs == sorted(xs)
        assert len(t["rows"]) == n_cells


def test_flags_are_what_the_gate_finds_between_consecutive_runs():
    runs = _runs()
    view = build_history(runs, ["a", "b", "c"])
    expected = sum(len(compare(runs[i - 1], runs[i]).regressions) for i in (1, 2))
    assert view["flag_count"] == expected == 4
    sst2 = next(t for t in view["tasks"] if t["name"] == "sst2")
    main = next(c for c in sst2["charts"] if c["id"].endswith("-main"))
    acc = next(s for s in main["series"] if s["key"] == "minilm-l6 / none")
    assert [bool(p["flag"]) for p in acc["points"]] == [False, True, True]
    assert "accuracy" in acc["points"][1]["flag"]
    p50 = next(c for c in sst2["charts"] if c["id"].endswith("-p50"))
    lat = next(s for s in p50["series"] if s["key"] == "minilm-l6 / ov-int8")
    assert [bool(p["flag"]) for p in lat["points"]] == [False, True, True]
    conll = next(t for t in view["tasks"] if t["name"] == "conll2003")
    assert conll["flagged"] == 0
    assert not any(p["flag"] for ch in conll["charts"] for s in ch["series"] for p in s["points"])


def test_headline_points_carry_their_ci():
    view = build_history(_runs(), ["a", "b", "c"])
    for t in view["tasks"]:
        main = t["charts"][0]
        pts = [p for s in main["series"] for p in s["points"]]
        assert pts and all(p["lo"] is not None and p["hi"] <= p["cy"] <= p["lo"]
                           for p in pts)  # svg y grows down: the upper bound is above
        assert all(p["lo"] is None for ch in t["charts"][1:] for s in ch["series"]
                   for p in s["points"])


def test_labels_from_provenance():
    df = make_results()
    assert run_label(df, "x") == "0123456789ab · harness 0.1.0 · 2024-06-01"
    df["git_describe"] = "v1.2-3-g0123456"
    assert run_label(df, "x").startswith("v1.2-3-g0123456 · ")
    bare = df.drop(columns=["git_commit", "git_describe", "harness_version", "timestamp"])
    assert run_label(bare, "runs/old") == "runs/old"


def test_failed_cell_and_runs_without_common_cells(tmp_path):
    a = make_results(run_id="a")
    b = make_results(run_id="b", fail={ACC: "RuntimeError: <oom>"})
    view = build_history([a, b], ["a", "b"])
    sst2 = next(t for t in view["tasks"] if t["name"] == "sst2")
    row = next(r for r in sst2["rows"] if r["key"] == "minilm-l6 / none")
    assert row["runs"][1]["status"] == "failed" and "newly failed" in row["runs"][1]["flag"]
    other = make_results(run_id="c", models=["other"])
    view = build_history([a, other], ["a", "c"])
    assert view["flag_count"] == 0 and view["notes"][0].startswith("#1 -> #2: not compared")
    moved = make_results(run_id="d")
    moved["cpu"] = "another CPU"
    view = build_history([a, moved], ["a", "d"])
    assert any(n.startswith("#1 -> #2: cpu differs") and "not be like for like" in n
               for n in view["notes"])


def test_page_is_self_contained_and_escaped(tmp_path):
    page = render_history_from(tmp_path)
    html = page.read_text(encoding="utf-8")
    assert XSS not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)
    assert "Content-Security-Policy" in html
    assert html.count('class="flag"') == 4


def render_history_from(tmp_path: Path) -> Path:
    paths = [write_jsonl(df, tmp_path / f"r{i}") for i, df in enumerate(_runs())]
    return render_history(paths, tmp_path / "out")


def test_cli(tmp_path):
    render_history_from(tmp_path)
    runner = CliRunner()
    res = runner.invoke(history_command, [str(tmp_path / f"r{i}") for i in range(3)]
                        + ["-o", str(tmp_path / "cli")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "cli" / "history.html").is_file()
    res = runner.invoke(history_command, [str(tmp_path / "r0"), str(tmp_path / "nope"),
                                          "-o", str(tmp_path / "x")])
    assert res.exit_code == 2 and "nope" in res.output and "Traceback" not in res.output
    with pytest.raises(DataError):
        build_history([], [])


def test_every_series_of_a_task_is_told_apart_beyond_the_palette():
    models = ["m1", "m2", "m3", "m4"]  # 16 cells per task, more than the 10 palette colours
    view = build_history([make_results(models=models), make_results(seed=1, models=models)],
                         ["a", "b"])
    for t in view["tasks"]:
        styles = [(s["colour"], s["dash"]) for s in t["charts"][0]["series"]]
        assert len(styles) == 16 and len(set(styles)) == 16
        assert [(r["colour"], r["dash"]) for r in t["rows"]] == styles
