"""The regression gate: planted regressions are caught, noise passes, bad input exits 2."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from io import StringIO

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from report_fixtures import XSS, make_results, write_jsonl

from harness.cli import compare_command
from harness.errors import DataError, SuiteError
from harness.gate import (
    compare,
    gate_thresholds,
    mann_whitney_p,
    metric_kind,
    run_gate,
)

NER = ("minilm-l6", "conll2003", "none")
CLS = ("bert-base-cased", "sst2", "none")


@pytest.fixture(scope="module")
def baseline() -> pd.DataFrame:
    return make_results(seed=1, run_id="base")


def _kinds(result) -> list[tuple[str, str, str, str, str | None]]:
    return sorted((f.kind, f.model, f.task, f.compression, f.metric) for f in result.regressions)


def _edit(df: pd.DataFrame, cell, metric: str, fn) -> pd.DataFrame:
    df = df.copy()
    m = ((df.model == cell[0]) & (df.task == cell[1]) & (df.compression == cell[2])
         & (df.metric == metric))
    assert m.sum() == 1
    df.loc[m, "value"] = df.loc[m, "value"].map(fn)
    return df


# --------------------------------------------------------------------------- noise only


@pytest.mark.parametrize("seed", [2, 3, 4, 5, 6])
def test_two_runs_of_the_same_models_pass(baseline, seed):
    current = make_results(seed=seed, run_id=f"run{seed}")
    result = compare(baseline, current)
    assert result.passed, result.to_table()
    assert result.exit_code == 0
    kinds = {f.kind for f in result.findings if f.status == "pass"}
    assert kinds == {"accuracy", "latency", "size"}
    assert all(f.p_value is not None for f in result.findings if f.kind == "latency")


def test_noise_with_a_strict_gate_still_passes(baseline):
    # No allowed increase at all: only the 5% noise band and the significance test remain.
    current = make_results(seed=9, run_id="n")
    result = compare(baseline, current, {"latency_increase": 0.0, "accuracy_drop": 0.0,
                                         "latency_metrics": ["latency_b1_p50_ms",
                                                             "latency_b1_p90_ms"]})
    assert result.passed, result.to_table()


# --------------------------------------------------------------------------- planted regressions


def test_accuracy_drop_is_caught(baseline):
    current = make_results(seed=2, accuracy_delta={NER: -0.02, CLS: -0.005})
    result = compare(baseline, current)
    assert _kinds(result) == [("accuracy", *NER, "entity_f1")]
    f = result.regressions[0]
    assert f.delta == pytest.approx(-0.02) and "dropped 0.0200 > 0.01" in f.message
    assert "95% CI" in f.message
    # A stricter per-metric limit catches the small drop too.
    result = compare(baseline, current, {"metrics": {"accuracy": {"max_drop": 0.001}}})
    assert _kinds(result) == [("accuracy", *CLS, "accuracy"), ("accuracy", *NER, "entity_f1")]


def test_relative_accuracy_drop(baseline):
    current = make_results(seed=2, accuracy_delta={NER: -0.006})
    th = {"accuracy_drop": None, "accuracy_drop_relative": 0.005}
    assert _kinds(compare(baseline, current, th)) == [("accuracy", *NER, "entity_f1")]
    assert compare(baseline, current, {**th, "accuracy_drop_relative": 0.01}).passed
    # Both set: exceeding either fails.
    assert not compare(baseline, current, {"accuracy_drop": 0.001,
                                           "accuracy_drop_relative": 0.5}).passed


def test_breakdown_metrics_gated_only_when_asked(baseline):
    current = _edit(make_results(seed=2), NER, "entity_f1.PER", lambda v: v - 0.05)
    assert compare(baseline, current).passed
    assert _kinds(compare(baseline, current, {"accuracy_metrics": "all"})) == [
        ("accuracy", *NER, "entity_f1.PER")]
    assert _kinds(compare(baseline, current, {"accuracy_metrics": ["entity_f1.PER"]})) == [
        ("accuracy", *NER, "entity_f1.PER")]


def test_latency_increase_is_caught_with_significance(baseline):
    current = make_results(seed=2, latency_factor={CLS: 1.3})
    result = compare(baseline, current)
    assert _kinds(result) == [("latency", *CLS, "latency_b1_p50_ms")]
    f = result.regressions[0]
    assert f.p_value is not None and f.p_value < 1e-6
    assert "significant" in f.message and "Mann-Whitney" in f.message
    assert f.delta_relative == pytest.approx(0.3, abs=0.05)
    # Within the allowed 10%: passes.
    assert compare(baseline, make_results(seed=2, latency_factor={CLS: 1.06})).passed


def test_latency_jump_not_backed_by_samples_passes(baseline):
    # The recorded p50 is 25% higher, but the per-iteration samples are the same distribution:
    # beyond the band, not significant -> not a regression (and the finding says why).
    current = _edit(make_results(seed=2), CLS, "latency_b1_p50_ms", lambda v: v * 1.25)
    result = compare(baseline, current)
    assert result.passed
    f = next(f for f in result.findings if (f.model, f.task, f.compression) == CLS
             and f.metric == "latency_b1_p50_ms")
    assert "not significant" in f.message and f.p_value > 0.01


def test_noise_band_applies_even_when_significant(baseline):
    # 8% slower with tight noise: significant. latency_increase 0 leaves the 5% band -> caught;
    # a 3% slowdown is significant too but inside the band -> passes.
    tight = {"latency_noise": 0.01, "n_samples": 200}
    base = make_results(seed=1, **tight)
    th = {"latency_increase": 0.0}
    slow = make_results(seed=2, latency_factor={CLS: 1.08}, **tight)
    assert _kinds(compare(base, slow, th)) == [("latency", *CLS, "latency_b1_p50_ms")]
    bit = compare(base, make_results(seed=2, latency_factor={CLS: 1.03}, **tight), th)
    assert bit.passed
    f = next(f for f in bit.findings if (f.model, f.task, f.compression) == CLS
             and f.metric == "latency_b1_p50_ms")
    assert f.p_value < 0.01 and "within 5.0%" in f.message


def test_latency_without_samples_uses_the_band_and_says_so():
    base = make_results(seed=1, no_samples=True)
    result = compare(base, make_results(seed=2, no_samples=True, latency_factor={CLS: 1.3}))
    assert _kinds(result) == [("latency", *CLS, "latency_b1_p50_ms")]
    assert "no per-iteration samples" in result.regressions[0].message
    ok = compare(base, make_results(seed=2, no_samples=True))
    assert ok.passed
    assert all("noise band only" in f.message for f in ok.findings if f.kind == "latency")


def test_throughput_drop_via_metric_override(baseline):
    current = make_results(seed=2, latency_factor={CLS: 1.5})
    th = {"latency_metrics": [], "metrics": {"throughput_samples_s": {"max_increase": 0.1}}}
    result = compare(baseline, current, th)
    assert _kinds(result) == [("latency", *CLS, "throughput_samples_s")]
    assert "lower" in result.regressions[0].message


def test_size_increase_is_caught(baseline):
    current = make_results(seed=2, size_factor={CLS: 1.01})
    assert _kinds(compare(baseline, current)) == [("size", *CLS, "size_bytes")]
    assert compare(baseline, current, {"size_increase": 0.02}).passed
    assert compare(baseline, current, {"size_increase": None}).passed
    # Shrinking is never a regression.
    assert compare(baseline, make_results(seed=2, size_factor={CLS: 0.5})).passed


def test_missing_cell_is_a_regression(baseline):
    current = make_results(seed=2, drop=[CLS])
    result = compare(baseline, current)
    assert _kinds(result) == [("missing", *CLS, None)]
    assert "missing from current" in result.regressions[0].message
    allowed = compare(baseline, current, {"allow_missing": True})
    assert allowed.passed and any(f.kind == "missing" and f.status == "info"
                                  for f in allowed.findings)


def test_missing_metric_is_a_regression(baseline):
    current = make_results(seed=2)
    current = current[~((current.model == CLS[0]) & (current.task == CLS[1])
                        & (current.compression == CLS[2]) & (current.metric == "size_bytes"))]
    assert _kinds(compare(baseline, current)) == [("missing", *CLS, "size_bytes")]


def test_newly_failed_and_newly_skipped(baseline):
    other = ("minilm-l6", "sst2", "ov-int8")
    current = make_results(seed=2, fail={CLS: "CUDA error: <oops>"})
    current = current[~((current.model == other[0]) & (current.task == other[1])
                        & (current.compression == other[2]))]
    skipped = current.iloc[[0]].copy()
    skipped[["model", "task", "compression", "status", "error", "metric", "value"]] = [
        *other, "skipped", "not supported here", None, None]
    current = pd.concat([current, skipped], ignore_index=True)
    result = compare(baseline, current)
    assert _kinds(result) == [("failed", *CLS, None), ("missing", *other, None)]
    failed = next(f for f in result.regressions if f.kind == "failed")
    assert "newly failed: CUDA error: <oops>" == failed.message
    assert "newly skipped: not supported here" in next(
        f.message for f in result.regressions if f.kind == "missing")


def test_fixed_cell_is_not_a_regression():
    base = make_results(seed=1, fail={CLS: "boom"})
    result = compare(base, make_results(seed=2))
    assert result.passed
    assert any(f.kind == "failed" and f.status == "info" and "ok now" in f.message
               for f in result.findings)


def test_rerun_rows_supersede_earlier_ones(baseline):
    bad = make_results(seed=2, run_id="first", accuracy_delta={NER: -0.1})
    rerun = make_results(seed=3, run_id="second", models=["minilm-l6"])
    assert not compare(baseline, bad).passed
    assert compare(baseline, pd.concat([bad, rerun], ignore_index=True)).passed


# --------------------------------------------------------------------------- bad input


def test_suites_that_do_not_match_give_a_clear_error(baseline):
    other = make_results(seed=2, suite="other-suite", models=["distilbert"])
    with pytest.raises(DataError) as err:
        compare(baseline, other)
    msg = str(err.value)
    assert "no (model, task, compression) cell in common" in msg
    assert "'nightly'" in msg and "'other-suite'" in msg and "distilbert" in msg


def test_partly_overlapping_suites_note_it(baseline):
    other = make_results(seed=2, suite="renamed")
    result = compare(baseline, other)
    assert result.passed
    assert any("suites differ" in n for n in result.notes)


def test_environment_differences_are_noted(baseline):
    current = make_results(seed=2)
    current["threads"] = 8
    result = compare(baseline, current)
    assert any("threads differs" in n and "like for like" in n for n in result.notes)


def test_bad_tables():
    with pytest.raises(DataError, match="baseline: no result rows"):
        compare(pd.DataFrame(), make_results())
    with pytest.raises(DataError, match="missing columns: metric, value"):
        compare(make_results(), make_results()[["model", "task", "compression", "status"]])


# --------------------------------------------------------------------------- thresholds


def test_threshold_defaults_and_round_trip():
    th = gate_thresholds({})
    assert th.accuracy_drop == 0.01 and th.latency_increase == 0.10 and th.latency_noise == 0.05
    assert th.significance == 0.01 and th.size_increase == 0.0
    assert th.latency_metrics == ("latency_b1_p50_ms",) and th.accuracy_metrics == "main"
    full = {"accuracy_drop": 0.01, "accuracy_drop_relative": None, "latency_increase": 0.1,
            "latency_noise": 0.05, "significance": 0.01, "size_increase": 0.0,
            "metrics": {"entity_f1": {"max_drop": 0.005},
                        "latency_b1_p90_ms": {"max_increase": 0.2, "significance": 0.001},
                        "peak_rss_mb": {"max_increase": 0.1}, "f1.PER": {"ignore": True}}}
    th = gate_thresholds(full)
    assert gate_thresholds(th.to_dict()) == th
    assert th.rule_for("entity_f1", main=True).max_drop == 0.005
    assert th.rule_for("latency_b1_p90_ms", main=False).noise == 0.05  # filled from defaults
    assert th.rule_for("f1.PER", main=False) is None
    assert th.rule_for("eval_time_s", main=False) is None
    assert [metric_kind(m) for m in ("entity_f1", "latency_b1_p50_ms", "throughput_tokens_s",
                                     "size_bytes", "cold_start_ms")] == [
        "accuracy", "latency", "latency", "size", "latency"]


@pytest.mark.parametrize("gate, key, words", [
    ({"accuracy_dorp": 0.1}, "gate.accuracy_dorp", "Did you mean 'accuracy_drop'"),
    ({"metrics": {"entity_f1": {"max_increase": 0.1}}}, "gate.metrics.entity_f1.max_increase",
     "allowed: max_drop, max_drop_relative, ignore"),
    ({"metrics": {"size_bytes": {"max_drop": 0.1}}}, "gate.metrics.size_bytes.max_drop",
     "unknown key"),
    ({"latency_increase": "10%"}, "gate.latency_increase", "must be a number"),
    ({"size_increase": -1}, "gate.size_increase", ">= 0"),
    ({"significance": 0}, "gate.significance", "> 0"),
    ({"significance": 1.5}, "gate.significance", "< 1"),
    ({"latency_metrics": ["entity_f1"]}, "gate.latency_metrics", "not a latency metric"),
    ({"accuracy_metrics": 3}, "gate.accuracy_metrics", "list of metric names"),
    ({"allow_missing": "yes"}, "gate.allow_missing", "true or false"),
    ({"metrics": {"entity_f1": 0.1}}, "gate.metrics.entity_f1", "must be a mapping"),
])
def test_bad_thresholds_name_the_key(gate, key, words):
    with pytest.raises(SuiteError) as err:
        gate_thresholds(gate)
    assert key in str(err.value) and words in str(err.value)
    with pytest.raises(SuiteError, match=r"^suites/x\.yaml: " + key.replace(".", r"\.")):
        gate_thresholds(gate, path="suites/x.yaml")


# --------------------------------------------------------------------------- statistics


@pytest.mark.parametrize("seed", range(4))
def test_mann_whitney_matches_scipy(seed):
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(seed)
    x = np.round(rng.normal(10.3, 1, 30 + seed), 1)  # rounded: ties
    y = np.round(rng.normal(10.0, 1, 25), 1)
    for alt in ("greater", "less"):
        ref = stats.mannwhitneyu(x, y, alternative=alt, method="asymptotic").pvalue
        assert mann_whitney_p(x, y, alt) == pytest.approx(ref, rel=1e-9, abs=1e-12)
    assert mann_whitney_p([1, 1, 1], [1, 1, 1]) == 1.0
    assert mann_whitney_p([], [1.0]) == 1.0


# --------------------------------------------------------------------------- outputs


def test_outputs_table_markdown_junit_json(baseline):
    xss_cell = (XSS, "sst2", "none")
    current = make_results(seed=2, accuracy_delta={xss_cell: -0.05}, latency_factor={CLS: 1.4},
                           drop=[("minilm-l6", "sst2", "ov-int8")])
    result = compare(baseline, current, baseline_name="runs/base", current_name="runs/cur")
    assert len(result.regressions) == 3

    table = result.to_table()
    assert table.splitlines()[0].split()[:3] == ["STATUS", "KIND", "TASK"]
    assert table.splitlines()[1].startswith("REGRESSION")
    assert table.rstrip().endswith("in 61 checks (runs/base -> runs/cur)")
    assert "FAIL: 3 regressions (1 accuracy, 1 latency, 1 missing)" in table

    md = result.to_markdown()
    assert md.startswith("### ❌ harness regression gate: FAIL")
    assert "| REGRESSION | accuracy | sst2 | &lt;script&gt;alert(1)&lt;/script&gt; |" in md
    assert XSS not in md
    assert "<details><summary>All " in md and md.count("| REGRESSION |") == 6  # summary + details

    root = ET.fromstring(result.to_junit_xml())
    assert root.tag == "testsuites" and root.get("failures") == "3"
    cases = root.findall(".//testcase")
    assert len(cases) == len(result.findings)
    failures = [c for c in cases if c.find("failure") is not None]
    assert {c.find("failure").get("type") for c in failures} == {"accuracy", "latency", "missing"}
    assert any(c.get("classname") == f"sst2.{XSS}.none" for c in failures)

    data = json.loads(result.to_json())
    assert data["passed"] is False and data["exit_code"] == 1 and data["regressions"] == 3
    assert data["thresholds"]["latency_increase"] == 0.1
    assert {f["kind"] for f in data["findings"] if f["status"] == "regression"} == {
        "accuracy", "latency", "missing"}

    ok = compare(baseline, make_results(seed=2))
    assert ok.to_markdown().startswith("### ✅ harness regression gate: PASS")
    assert ET.fromstring(ok.to_junit_xml()).get("failures") == "0"
    assert ok.to_table().rstrip().splitlines()[-1].startswith("PASS: no regression")


# --------------------------------------------------------------------------- run_gate and CLI


def test_run_gate(tmp_path, baseline):
    base_dir = write_jsonl(baseline, tmp_path / "base")
    out = StringIO()
    code = run_gate(base_dir, make_results(seed=2), {"size_increase": 0.0}, out_dir=tmp_path / "cur",
                    out=out)
    assert code == 0 and "PASS" in out.getvalue()
    for name in ("gate.md", "gate.junit.xml", "gate.json"):
        assert (tmp_path / "cur" / name).exists()
    assert not list((tmp_path / "cur").glob(".*.tmp"))  # written atomically, nothing left over
    code = run_gate(base_dir, make_results(seed=2, size_factor={CLS: 2}), None, out=out)
    assert code == 1
    # Bad input raises (the command line turns it into exit status 2 in one place).
    with pytest.raises(DataError, match="nowhere"):
        run_gate(tmp_path / "nowhere", make_results(seed=2), None, out=out)
    with pytest.raises(SuiteError, match="suites/s.yaml: gate.latency_inc"):
        run_gate(base_dir, make_results(seed=2), {"latency_inc": 0.1}, out=out,
                 suite_path="suites/s.yaml")
    (tmp_path / "taken").mkdir()
    with pytest.raises(DataError, match="JSON report .*taken: cannot write"):
        run_gate(base_dir, make_results(seed=2), None, out=out, json_path=tmp_path / "taken")


SUITE = """\
name: nightly
models: [{plugin: hf, name: minilm-l6}]
tasks: [{plugin: ner, name: conll2003}]
gate:
  accuracy_drop: 0.05
  metrics:
    entity_f1: {max_drop: 0.001}
"""


def test_cli_compare(tmp_path, baseline):
    base = write_jsonl(baseline, tmp_path / "base")
    same = write_jsonl(make_results(seed=2), tmp_path / "same")
    worse = write_jsonl(make_results(seed=2, accuracy_delta={NER: -0.005}), tmp_path / "worse")
    runner = CliRunner()

    res = runner.invoke(compare_command, [str(base), str(same)])
    assert res.exit_code == 0, res.output
    assert "PASS: no regression" in res.output

    res = runner.invoke(compare_command, [str(base), str(worse)])
    assert res.exit_code == 0, res.output  # 0.005 < default 0.01

    md, junit, js = tmp_path / "o" / "gate.md", tmp_path / "o" / "gate.xml", tmp_path / "gate.json"
    res = runner.invoke(compare_command, [str(base), str(worse), "-t", "accuracy_drop=0.001",
                                          "--markdown", str(md), "--junit", str(junit),
                                          "--json", str(js)])
    assert res.exit_code == 1, res.output
    assert "FAIL: 1 regression (1 accuracy)" in res.output
    assert md.read_text().startswith("### ❌") and ET.parse(junit).getroot().get("failures") == "1"
    assert json.loads(js.read_text())["exit_code"] == 1

    suite = tmp_path / "nightly.yaml"
    suite.write_text(SUITE)
    res = runner.invoke(compare_command, [str(base), str(worse), "--suite", str(suite)])
    assert res.exit_code == 1, res.output  # the suite's entity_f1 max_drop 0.001
    res = runner.invoke(compare_command, [str(base), str(worse), "--suite", str(suite),
                                          "-t", "metrics.entity_f1.max_drop=0.01"])
    assert res.exit_code == 0, res.output  # -t wins over the suite

    suite.write_text(SUITE.replace("accuracy_drop:", "acuracy_drop:"))
    res = runner.invoke(compare_command, [str(base), str(same), "--suite", str(suite)])
    assert res.exit_code == 2
    assert f"{suite}: gate.acuracy_drop: unknown gate key" in res.output

    res = runner.invoke(compare_command, [str(base), str(tmp_path / "missing")])
    assert res.exit_code == 2 and "missing" in res.output
    res = runner.invoke(compare_command, [str(base), str(same), "-t", "latency_increase"])
    assert res.exit_code == 2 and "expected KEY=VALUE" in res.output
    res = runner.invoke(compare_command, [str(base), str(same), "-t", "metrics.latency_b1_p50_ms=0.1"])
    assert res.exit_code == 2 and "metrics.METRIC.KEY=VALUE" in res.output
    # A metric name with dots: -t metrics.NAME.WITH.DOTS.KEY=VALUE
    dotted = _edit(make_results(seed=2), NER, "entity_f1.PER", lambda v: v - 0.05)
    dotted = write_jsonl(dotted, tmp_path / "dotted")
    res = runner.invoke(compare_command, [str(base), str(dotted), "-t",
                                          "metrics.entity_f1.PER.max_drop=0.01"])
    assert res.exit_code == 1 and "entity_f1.PER" in res.output, res.output
    (tmp_path / "dir.md").mkdir()
    res = runner.invoke(compare_command, [str(base), str(same), "--markdown",
                                          str(tmp_path / "dir.md")])
    assert res.exit_code == 2 and "cannot write" in res.output and "Traceback" not in res.output

    other = write_jsonl(make_results(seed=2, suite="other", models=["x"]), tmp_path / "other")
    res = runner.invoke(compare_command, [str(base), str(other)])
    assert res.exit_code == 2 and "do not come from the same suite" in res.output

    help_text = runner.invoke(compare_command, ["--help"]).output
    assert "Example" in help_text and "--junit" in help_text and "Exit status" in help_text


def test_compare_imports_the_plugin_modules_given_with_p(tmp_path, monkeypatch):
    """A scorer declared only in a ``-p`` module (not an installed plugin) is declared before
    the gate reads predictions files: ``harness -p MODULE compare`` imports MODULE."""
    from harness.cli import main
    from harness.scorers import _SCORERS

    (tmp_path / "my_scorers.py").write_text(
        "import harness\n\n@harness.api.scorer\ndef exact(gold, pred):\n    return None, None\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    base = write_jsonl(make_results(seed=1), tmp_path / "base")
    same = write_jsonl(make_results(seed=2), tmp_path / "same")
    assert "my_scorers:exact" not in _SCORERS
    res = CliRunner().invoke(main, ["-p", "my_scorers", "compare", str(base), str(same)])
    assert res.exit_code == 0, res.output
    assert "my_scorers:exact" in _SCORERS
    res = CliRunner().invoke(main, ["-p", "no_such_scorers_mod", "compare", str(base), str(same)])
    assert res.exit_code == 2 and "no_such_scorers_mod" in res.output
