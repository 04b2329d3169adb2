"""noise_band: auto: the latency noise band derived per cell from the recorded samples."""

from __future__ import annotations

import json
import statistics

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from report_fixtures import make_results, write_jsonl

from harness.cli import compare_command
from harness.errors import DataError, SuiteError
from harness.gate import compare, gate_thresholds
from harness.gate.noise import Z, derived_band, spread

CELL = ("minilm-l6", "sst2", "dynamic-int8")
METRIC = "latency_b1_p50_ms"


def _passes(factors: list[float], inputs: int = 25, level: float = 10.0, jitter: float = 0.002,
            seed: int = 0) -> list[float]:
    """Samples of whole passes over ``inputs`` inputs, pass k scaled by ``factors[k]``."""
    rng = np.random.default_rng(seed)
    base = level * (1 + 0.3 * np.sin(np.arange(inputs)))  # inputs of different lengths
    return [round(float(x), 5) for f in factors
            for x in base * f * np.exp(rng.normal(0, jitter, inputs))]


def _with(df: pd.DataFrame, samples: list[float] | None, inputs: int = 25) -> pd.DataFrame:
    """``df`` with CELL's p50 row replaced by these samples (value = their median)."""
    df = df.copy()
    at = ((df.model == CELL[0]) & (df.task == CELL[1]) & (df.compression == CELL[2])
          & (df.metric == METRIC))
    idx = df.index[at][0]
    for col in ("latency_inputs", "latency_passes", "samples"):
        df[col] = (df[col] if col in df.columns else None)
        df[col] = df[col].astype(object)
    df.at[idx, "samples"] = json.dumps(samples) if samples is not None else None
    if samples is not None:
        df.at[idx, "value"] = float(np.median(samples))
        df.at[idx, "latency_inputs"] = inputs
        df.at[idx, "latency_passes"] = len(samples) // inputs
    return df


def _finding(res):
    return next(f for f in res.findings if (f.model, f.task, f.compression) == CELL
                and f.metric == METRIC)


def test_spread_of_passes_by_hand():
    factors = [1.0, 1.1, 0.9, 1.0]
    s, how = spread(METRIC, _passes(factors, jitter=0.0), {"latency_inputs": 25})
    assert how == "4 passes"
    assert s == pytest.approx(statistics.stdev(factors) / statistics.fmean(factors), rel=1e-3)
    band, how = derived_band(METRIC, _passes(factors, jitter=0.0), _passes(factors, jitter=0.0),
                             {"latency_inputs": 25}, {"latency_inputs": 25})
    assert band == pytest.approx(Z * 2**0.5 * s, rel=1e-6) and "4 passes" in how


def test_bootstrap_band_is_seeded_and_shrinks_with_more_samples():
    rng = np.random.default_rng(1)
    few = list(10 * np.exp(rng.normal(0, 0.1, 40)))
    many = list(10 * np.exp(rng.normal(0, 0.1, 1000)))
    s1, how = spread(METRIC, few, {})
    assert how == "bootstrap of 40 iterations"
    assert spread(METRIC, few, {})[0] == s1  # the same samples give the same band
    assert spread(METRIC, many, {})[0] < s1 / 2
    noisy = list(10 * np.exp(rng.normal(0, 0.3, 40)))
    assert spread(METRIC, noisy, {})[0] > s1
    assert spread(METRIC, None, {}) == (None, "no samples")
    # the p90 metric measures the spread of the p90, not of the median
    assert spread("latency_b1_p90_ms", few, {})[0] != s1


def test_drifting_passes_widen_the_band_and_steady_ones_narrow_it():
    base_df = make_results(seed=1)
    strict = {"latency_increase": 0.0}
    # passes drift +-10% inside each run; current is 8% slower: within the derived band
    drift = [1.0, 1.12, 0.9, 1.05, 0.95, 1.1, 0.92, 1.0]
    b = _with(base_df, _passes(drift, seed=1))
    c = _with(base_df, _passes([x * 1.08 for x in drift], seed=2))
    fixed = _finding(compare(b, c, strict))
    auto = _finding(compare(b, c, {**strict, "noise_band": "auto"}))
    assert fixed.regression  # 8% > the fixed 5%, and significant over 200 iterations
    assert not auto.regression and "derived from 8 passes" in auto.message
    # steady passes (0.2% jitter); current 4% slower: under the fixed 5%, over the derived band
    steady = [1.0] * 8
    b = _with(base_df, _passes(steady, seed=1))
    c = _with(base_df, _passes([1.04] * 8, seed=2))
    assert not _finding(compare(b, c, strict)).regression
    auto = _finding(compare(b, c, {**strict, "noise_band": "auto"}))
    assert auto.regression and "significant" in auto.message


def test_without_samples_auto_falls_back_to_the_fixed_band():
    df = make_results(seed=1, no_samples=True)
    cur = make_results(seed=2, no_samples=True, latency_factor={CELL: 1.08})
    f = _finding(compare(df, cur, {"latency_increase": 0.0, "noise_band": "auto"}))
    assert f.regression and "fixed noise band" in f.message and "> 5.0%" in f.message


def test_noise_band_setting_is_validated_and_round_trips():
    th = gate_thresholds({"noise_band": "auto", "metrics": {METRIC: {"noise_band": "fixed"}}})
    assert th.noise_band == "auto" and gate_thresholds(th.to_dict()) == th
    assert th.rule_for(METRIC, main=False).noise_band == "fixed"
    assert th.rule_for("latency_b1_p90_ms", main=False) is None
    assert "noise auto" in gate_thresholds({"noise_band": "auto"}).rule_for(
        METRIC, main=False).describe()
    with pytest.raises(SuiteError, match="gate.noise_band.*'fixed', 'auto' or 'runs'"):
        gate_thresholds({"noise_band": "sometimes"})
    with pytest.raises(SuiteError, match=f"gate.metrics.{METRIC}.noise_band"):
        gate_thresholds({"metrics": {METRIC: {"noise_band": 0.1}}})


def test_cli_noise_band_option(tmp_path):
    base = make_results(seed=1)
    drift = [1.0, 1.12, 0.9, 1.05, 0.95, 1.1, 0.92, 1.0]
    write_jsonl(_with(base, _passes(drift, seed=1)), tmp_path / "a")
    write_jsonl(_with(base, _passes([x * 1.08 for x in drift], seed=2)), tmp_path / "b")
    runner = CliRunner()
    args = [str(tmp_path / "a"), str(tmp_path / "b"), "-t", "latency_increase=0"]
    assert runner.invoke(compare_command, args).exit_code == 1
    res = runner.invoke(compare_command, [*args, "--noise-band", "auto"])
    assert res.exit_code == 0, res.output
    assert "derived from 8 passes" in res.output
    res = runner.invoke(compare_command, [*args, "--noise-band", "sometimes"])
    assert res.exit_code == 2


def _reps(factors: list[float]) -> list[pd.DataFrame]:
    """Repeated runs of the baseline: CELL's latency scaled by each factor in turn."""
    return [make_results(seed=10 + i, latency_factor={CELL: f}) for i, f in enumerate(factors)]


def test_runs_band_from_repeated_baseline_runs():
    """Between runs a cell moved +-10%: a current run 15% slower is inside its band; where the
    repeated runs agree to 1%, 8% slower is outside it. (The within-run samples of these
    synthetic runs are iid, as on a quiet machine; on a shared one the runs differ more.)"""
    strict = {"latency_increase": 0.0}
    base = make_results(seed=1)
    slower = make_results(seed=2, latency_factor={CELL: 1.15})
    assert _finding(compare(base, slower, strict)).regression
    drifting = _reps([1.0, 1.12, 0.9, 1.05, 0.95])
    f = _finding(compare(base, slower, {**strict, "noise_band": "runs"}, noise_runs=drifting))
    assert not f.regression, f.message
    assert "from 5 repeated runs" in f.message
    s = statistics.stdev(v := [_finding(compare(base, r, strict)).current for r in drifting]) / \
        statistics.fmean(v)
    assert f"between-run CV {s:.1%}" in f.message
    steady = _reps([1.0, 1.01, 0.99, 1.0])
    slightly = make_results(seed=2, latency_factor={CELL: 1.08})
    f = _finding(compare(base, slightly, {**strict, "noise_band": "runs"}, noise_runs=steady))
    assert f.regression and "from 4 repeated runs" in f.message
    # a cell in fewer than 3 repeated runs keeps the fixed band, and says so
    f = _finding(compare(base, slower, {**strict, "noise_band": "runs"}, noise_runs=drifting[:2]))
    assert f.regression and "fewer than 3 repeated runs" in f.message
    with pytest.raises(DataError, match="--noise-runs"):
        compare(base, slower, {"noise_band": "runs"})


def test_cli_noise_runs(tmp_path):
    write_jsonl(make_results(seed=1), tmp_path / "a")
    write_jsonl(make_results(seed=2, latency_factor={CELL: 1.15}), tmp_path / "b")
    reps = []
    for i, df in enumerate(_reps([1.0, 1.12, 0.9, 1.05])):
        write_jsonl(df, tmp_path / f"r{i}")
        reps += ["--noise-runs", str(tmp_path / f"r{i}")]
    runner = CliRunner()
    args = [str(tmp_path / "a"), str(tmp_path / "b"), "-t", "latency_increase=0"]
    assert runner.invoke(compare_command, args).exit_code == 1
    res = runner.invoke(compare_command, [*args, *reps])  # --noise-runs implies the runs band
    assert res.exit_code == 0, res.output
    assert "from 4 repeated runs" in res.output
    res = runner.invoke(compare_command, [*args, "--noise-band", "runs"])
    assert res.exit_code == 2 and "--noise-runs" in res.output


def test_runs_band_for_accuracy_is_the_seed_noise():
    """Other seeds of the same code moved the accuracy by about +-0.015: a 0.03 drop is within
    the band (the training draw), a 0.10 drop is a regression and says what the band was."""
    def main_finding(res):
        return next(f for f in res.findings if (f.model, f.task, f.compression) == CELL
                    and f.kind == "accuracy")

    seeds = [make_results(seed=20 + i, accuracy_delta={CELL: d})
             for i, d in enumerate([0.0, -0.02, 0.015, -0.01, 0.01])]
    base = make_results(seed=1)
    th = {"noise_band": "runs"}
    small = make_results(seed=2, accuracy_delta={CELL: -0.03})
    assert main_finding(compare(base, small, {})).regression  # 0.03 > accuracy_drop 0.01
    f = main_finding(compare(base, small, th, noise_runs=seeds))
    assert not f.regression and "within the noise of repeated runs" in f.message
    assert "from 5 repeated runs (between-run sd" in f.message
    big = make_results(seed=2, accuracy_delta={CELL: -0.10})
    f = main_finding(compare(base, big, th, noise_runs=seeds))
    assert f.regression and "dropped" in f.message and "from 5 repeated runs" in f.message
