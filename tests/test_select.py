"""harness select: the best variant within an accuracy bound, per model and task."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from click.testing import CliRunner
from report_fixtures import make_results, write_jsonl

from harness.analysis.select import select
from harness.cli import select_command
from harness.errors import DataError


def _by(sels, model: str, task: str):
    return next(s for s in sels if s.model == model and s.task == task)


def _values(df: pd.DataFrame, model: str, task: str, metric: str) -> dict[str, float]:
    sub = df[(df.model == model) & (df.task == task) & (df.metric == metric)]
    return dict(zip(sub.compression, sub.value))


def test_chosen_is_the_fastest_variant_within_the_bound():
    df = make_results()
    for s in select(df, 0.01):
        lat = _values(df, s.model, s.task, "latency_b1_p50_ms")
        main = _values(df, s.model, s.task, s.metric)
        base = main["none"]
        allowed = {c: v for c, v in lat.items() if base - main[c] <= 0.01 + 1e-12}
        assert s.chosen is not None
        assert s.chosen.compression == min(allowed, key=allowed.get)
        assert s.chosen.delta == pytest.approx(main[s.chosen.compression] - base)
        assert s.chosen.by_value == pytest.approx(lat[s.chosen.compression])


def test_tighter_bound_keeps_the_baseline_and_prune_is_never_within_1pt():
    df = make_results()
    sels = select(df, 0.0)
    assert {s.chosen.compression for s in sels if s.chosen} == {"none"}
    loose = select(df, 0.01)
    assert all(s.chosen.compression != "prune-50" for s in loose if s.chosen)
    # with a 5-point bound prune-50 (-0.03) is allowed, but ov-int8 is faster still
    assert all(any(v.compression == "prune-50" and v.within for v in s.variants)
               for s in select(df, 0.05) if "prune-50" in {v.compression for v in s.variants
                                                             if v.status == "ok"})


def test_by_throughput_maximises_and_by_size_minimises():
    df = make_results()
    for by in ("throughput_samples_s", "size_bytes"):
        for s in select(df, 0.01, by):
            vals = _values(df, s.model, s.task, by)
            within = [v.compression for v in s.variants if v.within]
            pick = max if by.startswith("throughput") else min
            assert s.chosen.compression == pick(within, key=lambda c: vals[c])


def test_failed_or_skipped_variant_is_never_chosen():
    cell = ("minilm-l6", "sst2", "ov-int8")  # the fastest within the bound when ok
    assert _by(select(make_results(), 0.01), "minilm-l6", "sst2").chosen.compression == "ov-int8"
    df = make_results(fail={cell: "RuntimeError: boom"})
    s = _by(select(df, 0.01), "minilm-l6", "sst2")
    assert s.chosen.compression != "ov-int8"
    assert "ov-int8" not in s.pareto
    skipped = _by(select(df, 1.0), "minilm-l6", "sst2")
    assert skipped.chosen.compression not in ("prune-50", "ov-int8")  # prune-50 is skipped


def test_pareto_set_is_non_dominated():
    df = make_results()
    for s in select(df, 0.01):
        lat = _values(df, s.model, s.task, "latency_b1_p50_ms")
        main = _values(df, s.model, s.task, s.metric)
        for c in s.pareto:
            assert not any(lat[o] <= lat[c] and main[o] >= main[c] and (lat[o], main[o]) !=
                           (lat[c], main[c]) for o in lat if o in main)
        assert "none" in s.pareto or any(main[c] >= main["none"] for c in s.pareto)


def test_no_variant_within_the_bound_says_so():
    cells = [("minilm-l6", "sst2", c) for c in ("dynamic-int8", "ov-int8")]
    df = make_results(accuracy_delta={c: -0.2 for c in cells})
    s = _by(select(df, 0.01), "minilm-l6", "sst2")
    assert s.chosen.compression == "none"  # the baseline itself is always within the bound
    df = make_results(drop=[("minilm-l6", "sst2", "none")])
    s = _by(select(df, 0.01), "minilm-l6", "sst2")
    assert s.chosen is None and "'none'" in s.note
    s = _by(select(df, 0.01, baseline="dynamic-int8"), "minilm-l6", "sst2")
    assert s.chosen is not None and not s.note
    df = make_results(fail={("minilm-l6", "sst2", "none"): "boom"})
    s = _by(select(df, 0.01), "minilm-l6", "sst2")
    assert s.chosen is None and "failed" in s.note


def test_unknown_by_and_negative_bound_are_bad_input():
    with pytest.raises(DataError, match="latency_b8_p50_ms.*size_bytes"):
        select(make_results(), 0.01, "latency_b8_p50_ms")
    with pytest.raises(DataError, match="max-drop"):
        select(make_results(), -0.1)


def test_cli_table_and_json(tmp_path):
    write_jsonl(make_results(), tmp_path / "run")
    runner = CliRunner()
    res = runner.invoke(select_command, [str(tmp_path / "run"), "--max-drop", "0.01"])
    assert res.exit_code == 0, res.output
    assert res.output.splitlines()[0].split()[:5] == ["MODEL", "TASK", "METRIC", "BASELINE",
                                                      "CHOSEN"]
    assert len(res.output.splitlines()) == 1 + 6
    res = runner.invoke(select_command, [str(tmp_path / "run"), "--max-drop", "0.01", "--json",
                                         "--by", "size_bytes"])
    doc = json.loads(res.output)
    assert doc["by"] == "size_bytes" and len(doc["selections"]) == 6
    assert all(d["chosen"] in d["pareto"] for d in doc["selections"])  # the best is never dominated
    assert {d["chosen"] for d in doc["selections"]} <= {"none", "dynamic-int8", "ov-int8"}
    res = runner.invoke(select_command, [str(tmp_path / "run"), "--max-drop", "0.01",
                                         "--by", "nope"])
    assert res.exit_code == 2 and "nope" in res.output and "Traceback" not in res.output
    res = runner.invoke(select_command, [str(tmp_path / "missing"), "--max-drop", "0.01"])
    assert res.exit_code == 2 and "missing" in res.output


def _with_rotation(df: pd.DataFrame, p50: dict[str, float], model: str, task: str) -> pd.DataFrame:
    """``df`` plus a ``latency_b1_rotation_p50_ms`` row for each compression of ``p50``."""
    rows = df[(df.model == model) & (df.task == task) & (df.metric == "latency_b1_p50_ms")
              & df.compression.isin(p50)].copy()
    rows["metric"] = "latency_b1_rotation_p50_ms"
    rows["value"] = rows["compression"].map(p50)
    return pd.concat([df, rows], ignore_index=True)


def test_latency_is_rotation_timed_where_the_whole_group_is():
    df = make_results()
    s0 = _by(select(df, 0.05), "minilm-l6", "conll2003")
    ok = [v.compression for v in s0.variants if v.status == "ok"]
    cell_pick = s0.chosen.compression
    other = next(c for c in ok if c != cell_pick and any(v.within for v in s0.variants
                                                         if v.compression == c))
    # rotation timing reverses the order: the variant the cell timing put last is fastest now
    rot = {c: (1.0 if c == other else 5.0 + i) for i, c in enumerate(ok)}
    s = _by(select(_with_rotation(df, rot, "minilm-l6", "conll2003"), 0.05), "minilm-l6", "conll2003")
    assert s.by == "latency_b1_rotation_p50_ms" and s.chosen.compression == other
    assert s.chosen.by_value == 1.0
    assert _by(select(_with_rotation(df, rot, "minilm-l6", "conll2003"), 0.05), "minilm-l6",
               "sst2").by == "latency_b1_p50_ms"  # a group without rotation keeps the cell's
    # one ok variant without a rotation figure: the whole group keeps the cell figures
    partial = {c: v for c, v in rot.items() if c != cell_pick}
    s = _by(select(_with_rotation(df, partial, "minilm-l6", "conll2003"), 0.05), "minilm-l6",
            "conll2003")
    assert s.by == "latency_b1_p50_ms" and s.chosen.compression == cell_pick
