"""Comparing two runs cell by cell: the checks behind :func:`compare`.

Cells are matched by (model, task, compression) through :func:`harness.analysis.cells.cells_of` (the
reading the report uses too); inside a cell, metrics by name. Each gated metric becomes a
:class:`~harness.gate.findings.Finding` from :func:`check_metric`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..analysis.cells import CellResult, cells_of
from ..errors import DataError
from ..rows import CellKey, as_bool, as_float, as_samples, as_text, cell_label
from .findings import Finding, GateResult
from .noise import between_runs, derived_band, runs_band
from .paired import PairedTest, paired_test
from .retime import RETIMED_METRICS, Retimed
from .thresholds import MetricRule, Thresholds, gate_thresholds

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["check_metric", "compare", "mann_whitney_p", "parse_samples"]

_EPS = 1e-12
#: cell columns that should match between two runs; the last four make latency not like for like
_ENV_KEYS = ("task_params", "model_params", "compression_params", "threads", "device_name",
             "cpu", "runtime")
_MACHINE_KEYS = ("threads", "device_name", "cpu", "runtime")


def mann_whitney_p(x: Any, y: Any, alternative: str = "greater") -> float:
    """One-sided Mann-Whitney U p-value that ``x`` tends to be greater (or ``"less"``) than
    ``y``: ``scipy.stats.mannwhitneyu`` with the normal approximation (tie and continuity
    corrected). 1.0 when either sample is empty or every value is tied."""
    from scipy.stats import mannwhitneyu

    if len(x) == 0 or len(y) == 0:
        return 1.0
    p = float(mannwhitneyu(x, y, alternative=alternative, method="asymptotic").pvalue)
    return p if math.isfinite(p) else 1.0


#: per-iteration samples from a row (a list, an array or JSON text): :func:`harness.rows.as_samples`
parse_samples = as_samples


def _suite_names(cells: Mapping[CellKey, CellResult]) -> list[str]:
    return sorted({as_text(c.info.get("suite")) for c in cells.values()} - {""})


def _no_common_cells(base: Mapping[CellKey, CellResult], cur: Mapping[CellKey, CellResult],
                     baseline_name: str, current_name: str) -> DataError:
    bs, cs = _suite_names(base), _suite_names(cur)
    suites = (f" (baseline suite {', '.join(map(repr, bs)) or '?'}, current suite "
              f"{', '.join(map(repr, cs)) or '?'})")

    def sample(cells: Mapping[CellKey, CellResult]) -> str:
        names = sorted(cell_label(c) for c in cells)
        return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")

    return DataError(
        f"{baseline_name} and {current_name} have no (model, task, compression) cell in "
        f"common{suites}: the runs do not come from the same suite. Baseline has "
        f"{sample(base)}; current has {sample(cur)}."
    )


def _notes(base: Mapping[CellKey, CellResult], cur: Mapping[CellKey, CellResult]) -> list[str]:
    """Differences between the runs that are not checks: suites, new cells, environment."""
    notes: list[str] = []
    common = set(base) & set(cur)
    bs, cs = _suite_names(base), _suite_names(cur)
    if bs != cs:
        notes.append(f"suites differ: baseline {', '.join(bs) or '?'}, current {', '.join(cs) or '?'}; "
                     f"comparing the {len(common)} cells they share")
    new = sorted(set(cur) - set(base))
    if new:
        notes.append(f"{len(new)} cell(s) new in current, not gated: "
                     + ", ".join(cell_label(c) for c in new[:5]) + (" ..." if len(new) > 5 else ""))
    env_diff: dict[str, set[tuple[str, str]]] = {}
    for key in sorted(common):
        for col in _ENV_KEYS:
            bv, cv = as_text(base[key].info.get(col)), as_text(cur[key].info.get(col))
            if bv and cv and bv != cv:
                env_diff.setdefault(col, set()).add((bv, cv))
    for col, pairs in sorted(env_diff.items()):
        shown = "; ".join(f"{a} -> {b}" for a, b in sorted(pairs)[:3])
        notes.append(f"{col} differs between the runs ({shown})"
                     + ("; latency comparisons may not be like for like"
                        if col in _MACHINE_KEYS else ""))
    return notes


def _status_finding(b: CellResult, c: CellResult | None, th: Thresholds) -> Finding | None:
    """The cell-level finding (missing, failed, skipped), or None when both cells are ok."""
    mk: dict[str, Any] = {"model": b.model, "task": b.task, "compression": b.compression,
                          "metric": None}
    miss = "info" if th.allow_missing else "regression"
    if c is None:
        return Finding(**mk, kind="missing", status=miss,
                       message=f"cell ({b.status} in baseline) is missing from current")
    if b.status != "ok":
        if c.status == "ok":
            return Finding(**mk, kind="failed", status="info",
                           message=f"was {b.status} in baseline, ok now")
        return Finding(**mk, kind="failed" if c.status == "failed" else "missing", status="info",
                       message=f"{b.status} in baseline, {c.status} now: {c.error}".rstrip(": "))
    if c.status == "failed":
        return Finding(**mk, kind="failed", status="regression",
                       message=f"newly failed: {c.error or 'no error recorded'}")
    if c.status != "ok":
        return Finding(**mk, kind="missing", status=miss,
                       message=f"newly {c.status}: {c.error or 'no reason recorded'}")
    return None


def _metric_findings(b: CellResult, c: CellResult, th: Thresholds,
                     runs: tuple[Any, Any] = (None, None),
                     spreads: Mapping[tuple[Any, str], tuple[float, float, int]] | None = None,
                     retimed: Retimed | None = None) -> list[Finding]:
    """A finding per gated metric of two ok cells."""
    out: list[Finding] = []
    mk: dict[str, Any] = {"model": b.model, "task": b.task, "compression": b.compression}
    for metric in sorted(b.metrics):
        brow = b.metrics[metric]
        rule = th.rule_for(metric, main=bool(as_bool(brow.get("main_metric"))))
        if rule is None:
            continue
        bval, cval = b.value(metric), c.value(metric)
        if cval is None:
            out.append(Finding(**mk, metric=metric, kind="missing",
                               status="info" if th.allow_missing else "regression",
                               baseline=bval, limit=rule.describe(),
                               message="metric no longer reported"))
        elif retimed is not None and rule.kind == "latency" and metric in RETIMED_METRICS:
            out.append(retimed_finding(mk, metric, rule, retimed))
        elif bval is not None:
            paired = (paired_test(runs[0], runs[1], (b.model, b.task, b.compression), metric)
                      if rule.kind == "accuracy" else None)
            if isinstance(paired, PairedTest):
                _check_consistent(b, metric, bval, cval, paired)
            spread = (spreads or {}).get(((b.model, b.task, b.compression), metric))
            out.append(check_metric(mk, metric, rule, brow, c.metrics[metric], bval, cval,
                                    paired=paired, th=th, spread=spread))
    return out


#: how far the recorded change of a metric may differ from its change re-scored from the
#: per-example outputs before the runs count as inconsistent
CONSISTENCY_TOL = 1e-6


def _check_consistent(b: CellResult, metric: str, bval: float, cval: float, pr: PairedTest) -> None:
    """The recorded change of ``metric`` must be the change the per-example outputs give:
    otherwise a results file or a predictions file was edited, or they come from different
    runs, and no verdict can be trusted (a :class:`DataError`, exit 2, naming the cell)."""
    recorded = cval - bval
    if abs(recorded - pr.delta) > CONSISTENCY_TOL:
        raise DataError(
            f"cell {cell_label(b)}: the recorded change of {metric} "
            f"({bval:.6f} -> {cval:.6f}, {recorded:+.6f}) differs from the change its per-example "
            f"outputs give when re-scored ({pr.delta:+.6f}): the results or the predictions files "
            f"were edited or come from different runs; re-run the cell (or compare the runs "
            f"without their predictions/ folders)")


def compare(baseline: pd.DataFrame, current: pd.DataFrame,
            thresholds: Mapping[str, Any] | Thresholds | None = None, *,
            baseline_name: str = "baseline", current_name: str = "current",
            runs: tuple[Any, Any] = (None, None),
            noise_runs: Sequence[pd.DataFrame] = (),
            retimed: Mapping[CellKey, Retimed] | None = None) -> GateResult:
    """Gate ``current`` against ``baseline`` (both tidy result tables).

    ``noise_runs``: result tables of repeated runs of the baseline (same suite, same machine),
    for ``noise_band: runs``: each cell's latency band from how much its value moved between
    them (at least 3 runs; fewer, and that cell keeps the fixed band).

    ``retimed``: cells re-timed here (:func:`harness.gate.retime.retime`): their latency checks
    read the alternating rounds instead of the recorded figures.

    ``runs``: the (baseline, current) run folders, where the per-example outputs are read for
    the paired accuracy tests (None: no paired test, the threshold alone, and the finding says so).

    Raises :class:`~harness.errors.DataError` for bad input: an empty table, missing columns, or
    no (model, task, compression) in common (e.g. results of two different suites).
    """
    th = gate_thresholds(thresholds)
    uses_runs = th.noise_band == "runs" or any(r.noise_band == "runs" for r in th.metrics.values())
    if uses_runs and not noise_runs:
        raise DataError("noise_band 'runs' needs repeated runs of the baseline (harness compare "
                        "--noise-runs DIR, at least 3 runs); or use noise_band 'fixed' or 'auto'")
    spreads = between_runs(noise_runs) if noise_runs else {}
    base = cells_of(baseline, baseline_name)
    cur = cells_of(current, current_name)
    if not set(base) & set(cur):
        raise _no_common_cells(base, cur, baseline_name, current_name)
    findings: list[Finding] = []
    for key in sorted(base):
        b, c = base[key], cur.get(key)
        status = _status_finding(b, c, th)
        if status is not None:
            findings.append(status)
        elif c is not None:
            findings += _metric_findings(b, c, th, runs, spreads, (retimed or {}).get(key))
    notes = _notes(base, cur)
    unpaired = sum(1 for f in findings if f.kind == "accuracy" and f.test is None)
    if unpaired:
        notes.append(f"{unpaired} accuracy check(s) without a paired test (no per-example "
                     "outputs on the same data in both runs): threshold only, as before")
    return GateResult(findings, th, notes, baseline_name, current_name)


def _paired_verdict(f: Finding, over: list[str], pr: PairedTest, hib: bool,
                    th: Thresholds) -> None:
    """Accuracy verdict with a paired test: a drop fails only when significant (and, unless
    ``accuracy_gate_on: significance``, beyond the threshold too)."""
    f.test, f.ci_low, f.ci_high, f.p_value = pr.test, pr.ci_low, pr.ci_high, pr.p_value
    sig = pr.p_value < th.paired_alpha and (pr.delta < 0 if hib else pr.delta > 0)
    stat = pr.describe()
    if sig and (over or th.accuracy_gate_on == "significance"):
        f.status = "regression"
        f.message = "; ".join(over + [f"significant ({stat} < {th.paired_alpha:g})"])
    elif over:
        f.message = "; ".join(over) + f" but not significant ({stat} >= {th.paired_alpha:g})"
    else:
        f.message = ("improved; " if (pr.delta > 0) == hib and pr.delta else "") + stat


def _accuracy(f: Finding, rule: MetricRule, worse: float, rel: float,
              brow: Mapping[str, Any], crow: Mapping[str, Any],
              paired: PairedTest | str | None = None, hib: bool = True,
              th: Thresholds | None = None, spread: tuple[float, float, int] | None = None) -> None:
    over = []
    if rule.max_drop is not None and worse > rule.max_drop + _EPS:
        over.append(f"dropped {worse:.4f} > {rule.max_drop:g}")
    if rule.max_drop_relative is not None and rel > rule.max_drop_relative + _EPS:
        over.append(f"dropped {rel:.2%} > {rule.max_drop_relative:.2%}")
    if th is not None and th.noise_band == "runs":
        # repeated runs (other seeds) show how far this metric moves when nothing changed:
        # a drop inside that band is the training draw, not the release
        band, note = runs_band(spread, relative=False)
        if band is not None and worse <= band + _EPS:
            _within_noise(f, note, paired)
            return
        over = [*over, note] if over else over
    if isinstance(paired, PairedTest):
        _paired_verdict(f, over, paired, hib, th or Thresholds())
        return
    if paired:
        f.message = f"no paired test ({paired}): threshold only"
    if not over:
        if worse < -_EPS:
            f.message = "improved" + (f"; {f.message}" if f.message else "")
        return
    f.status = "regression"
    f.message = "; ".join(over) + (f"; {f.message}" if f.message else "") + _ci_note(brow, crow)


def _within_noise(f: Finding, note: str, paired: PairedTest | str | None) -> None:
    """A drop inside the band of repeated runs passes (the paired test, if any, is shown)."""
    f.message = f"within the noise of repeated runs ({note})"
    if isinstance(paired, PairedTest):
        f.test, f.ci_low, f.ci_high, f.p_value = paired.test, paired.ci_low, paired.ci_high, paired.p_value
        f.message += f"; {paired.describe()}"


def _ci_note(brow: Mapping[str, Any], crow: Mapping[str, Any]) -> str:
    """`` (95% CI baseline [...], current [...])`` when both rows have one, else ""."""
    bl, bh, cl, ch = (as_float(brow.get("ci_low")), as_float(brow.get("ci_high")),
                      as_float(crow.get("ci_low")), as_float(crow.get("ci_high")))
    if bl is None or bh is None or cl is None or ch is None:
        return ""
    overlap = not (ch < bl or cl > bh)
    return (f" (95% CI baseline [{bl:.4f}, {bh:.4f}], current [{cl:.4f}, {ch:.4f}]"
            f"{', overlapping' if overlap else ''})")


def _latency(f: Finding, rule: MetricRule, rel: float, hib: bool,
             brow: Mapping[str, Any], crow: Mapping[str, Any],
             spread: tuple[float, float, int] | None = None) -> None:
    """Beyond the allowed increase, beyond the noise band, and significant."""
    bs, cs = as_samples(brow.get("samples")), as_samples(crow.get("samples"))
    noise, band_note = rule.noise or 0.0, ""
    derived = None
    if rule.noise_band == "auto":
        derived, band_note = derived_band(f.metric or "", bs, cs, brow, crow)
    elif rule.noise_band == "runs":
        derived, band_note = runs_band(spread)
    noise = derived if derived is not None else noise
    allowed = max(rule.max_increase or 0.0, noise)
    beyond = rel > allowed + _EPS
    word = "slower" if not hib else "lower"
    _latency_verdict(f, rule, rel, allowed, beyond, word, hib, bs, cs)
    if band_note:
        f.message = (f.message + "; " if f.message else "") + band_note


def _latency_verdict(f: Finding, rule: MetricRule, rel: float, allowed: float, beyond: bool,
                     word: str, hib: bool, bs: list[float] | None, cs: list[float] | None) -> None:
    if not (bs and cs and len(bs) >= 3 and len(cs) >= 3):
        if beyond:
            f.status = "regression"
            f.message = f"{rel:.1%} {word} > {allowed:.1%}"
        f.message = (f.message + "; " if f.message else "") + \
            "no per-iteration samples: noise band only, no significance test"
        return
    p = mann_whitney_p(cs, bs, "less" if hib else "greater")
    f.p_value = p
    sig = p < (rule.significance or 0.01)
    stat = f"Mann-Whitney p={p:.2g} over {len(bs)}/{len(cs)} iterations"
    if beyond and sig:
        f.status = "regression"
        f.message = f"{rel:.1%} {word} > {allowed:.1%}, significant ({stat})"
    elif beyond:
        f.message = f"{rel:.1%} {word} but not significant ({stat} >= {rule.significance:g})"
    elif rel > _EPS:
        f.message = f"within {allowed:.1%} ({stat})"


def check_metric(mk: Mapping[str, Any], metric: str, rule: MetricRule, brow: Mapping[str, Any],
                 crow: Mapping[str, Any], bval: float, cval: float, *,
                 paired: PairedTest | str | None = None, th: Thresholds | None = None,
                 spread: tuple[float, float, int] | None = None) -> Finding:
    """The finding for one metric of one cell present in both runs (``spread``: its
    between-run spread for ``noise_band: runs``, from :func:`~harness.gate.noise.between_runs`)."""
    hib = as_bool(brow.get("higher_is_better"))
    if hib is None:
        hib = rule.kind == "accuracy" or metric.startswith("throughput_")
    worse = (bval - cval) if hib else (cval - bval)  # > 0: got worse
    rel = worse / abs(bval) if bval else (math.inf if worse > 0 else 0.0)
    f = Finding(**mk, metric=metric, kind=rule.kind, status="pass", baseline=bval, current=cval,
                delta=cval - bval, delta_relative=((cval - bval) / abs(bval)) if bval else None,
                limit=rule.describe())
    if rule.kind == "accuracy":
        _accuracy(f, rule, worse, rel, brow, crow, paired, bool(hib), th, spread)
    elif rule.kind == "size":
        if worse > _EPS and rel > (rule.max_increase or 0.0) + _EPS:
            f.status = "regression"
            f.message = f"grew {rel:.2%} > {rule.max_increase:.2%}"
    else:
        _latency(f, rule, rel, hib, brow, crow, spread)
    return f


def retimed_finding(mk: Mapping[str, Any], metric: str, rule: MetricRule, r: Retimed) -> Finding:
    """A latency finding from alternating rounds: a regression only when the whole 95% CI of
    the slowdown lies above the allowed increase (the CI is the noise band)."""
    import statistics

    figure = RETIMED_METRICS[metric]
    rel, lo, hi = r.change(figure)
    hib = figure == "throughput"
    worse, worse_low = (-rel, -hi) if hib else (rel, lo)  # > 0: got worse
    base, cur = statistics.median(r.base[figure]), statistics.median(r.cur[figure])
    allowed = rule.max_increase or 0.0
    f = Finding(**mk, metric=metric, kind="latency", status="pass", baseline=base, current=cur,
                delta=cur - base, delta_relative=rel, limit=rule.describe(), ci_low=lo, ci_high=hi,
                test=f"re-timed here: paired log-ratio, {r.rounds} alternating rounds")
    word = "lower" if hib else "slower"
    ci = f"95% CI [{lo:+.1%}, {hi:+.1%}] over {r.rounds} alternating rounds"
    if worse_low > allowed + _EPS:
        f.status = "regression"
        f.message = f"re-timed: {worse:.1%} {word}, {ci}, all above {allowed:.1%}"
    elif worse > allowed + _EPS:
        f.message = f"re-timed: {worse:.1%} {word} but the {ci} reaches {allowed:.1%}"
    else:
        f.message = f"re-timed: {rel:+.1%}, {ci}"
    return f
