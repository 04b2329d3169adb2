"""Ties on the leaderboard: cells whose accuracy CI overlaps a dominating front cell's."""

from __future__ import annotations

import pandas as pd
from report_fixtures import make_results

from harness.analysis.pareto import tied_with_front
from harness.report import build_view, pareto_front, render_report


def test_tied_with_front_unit():
    # x (size), ci; front: 0 (small, 0.80-0.82) and 1 (bigger, 0.90-0.92)
    pts = [(1.0, 0.80, 0.82), (5.0, 0.90, 0.92), (2.0, 0.815, 0.83), (6.0, 0.70, 0.72),
           (0.5, 0.81, 0.83), (3.0, None, None)]
    front = [0, 1, 4]
    # 2: overlaps 0 (x 1 <= 2) -> tied; 3: overlaps nothing; 5: no CI; front points never
    assert tied_with_front(pts, front) == [2]
    # overlap with a front point that is *larger* (worse in x) does not count
    assert tied_with_front([(1.0, 0.5, 0.6), (0.5, 0.7, 0.8), (2.0, 0.55, 0.9)], [1, 2]) == []
    assert tied_with_front([(1.0, 0.5, 0.6), (2.0, 0.59, 0.9)], [0, 1]) == []


def _ci(df: pd.DataFrame, task: str) -> dict[tuple[str, str], tuple[float, float, float]]:
    sub = df[(df.task == task) & (df.main_metric == True)]  # noqa: E712
    return {(m, c): (v, lo, hi) for m, c, v, lo, hi in
            zip(sub.model, sub.compression, sub.value, sub.ci_low, sub.ci_high)}


def test_view_marks_ties_like_brute_force():
    df = make_results()
    view = build_view(df)
    n_tied = 0
    for t in view["tasks"]:
        ci = _ci(df, t["name"])
        sizes = {(m, c): v / 1e6 for m, c, v in zip(
            *(df[(df.task == t["name"]) & (df.metric == "size_bytes")][k]
              for k in ("model", "compression", "value")))}
        keys = sorted(set(ci) & set(sizes))
        front = [keys[i] for i in pareto_front([(sizes[k], ci[k][0]) for k in keys])]
        for r in t["records"]:
            k = (r["model"], r["compression"])
            expect = k in keys and k not in front and any(
                sizes[f] <= sizes[k] and ci[k][1] <= ci[f][2] and ci[f][1] <= ci[k][2]
                for f in front)
            assert r["tied_size"] == expect, k
            assert not (r["tied_size"] and r["pareto_size"])
            n_tied += expect
    assert n_tied >= 2  # the fixture has ties, so the test can fail


def test_no_ci_no_tie_marks(tmp_path):
    df = make_results()
    df.loc[df.main_metric == True, ["ci_low", "ci_high"]] = None  # noqa: E712
    view = build_view(df)
    assert not any(r["tied_size"] or r["tied_latency"] for t in view["tasks"] for r in t["records"])
    html = render_report(df, tmp_path).read_text(encoding="utf-8")
    assert "point tied" not in html and "≈ tied" not in html
    assert "tied with the front" in html  # the legend and glossary still explain it


def test_page_marks_tied_points_badges_and_legend(tmp_path):
    df = make_results()
    view = build_view(df)
    html = render_report(df, tmp_path).read_text(encoding="utf-8")
    tied = sum(r["tied_size"] + r["tied_latency"] for t in view["tasks"] for r in t["records"])
    assert html.count('class="point tied"') + html.count('class="point front tied"') == tied
    assert html.count('class="badge tied"') == tied
    assert html.count("legend-tied") == len(view["tasks"])
    assert (tmp_path / "leaderboard.csv").read_text().splitlines()[0].count("tied_") == 2
