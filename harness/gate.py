"""Regression gate: compare a CURRENT run against a BASELINE run, cell by cell.

Cells are matched by (model, task, compression); inside a cell, metrics by name. What is checked
and how much worsening is allowed comes from a :class:`Thresholds` built by
:func:`gate_thresholds` out of a suite's ``gate:`` mapping and/or ``--threshold KEY=VALUE``
options. See docs/regression-gate.md for the keys and their meaning.

Kinds of check (``Finding.kind``):

* ``accuracy``: a quality metric (the task's main metric by default) got worse by more than
  an absolute (``accuracy_drop``) or relative (``accuracy_drop_relative``) amount;
* ``latency``: a latency/throughput metric got worse by more than ``latency_increase`` *and*
  more than the noise band ``latency_noise`` *and* the per-iteration samples say so with a
  one-sided Mann-Whitney U test at ``significance`` (without samples: the band only, and the
  finding says so);
* ``size``: the artifact (``size_bytes``) grew by more than ``size_increase`` (relative);
* ``missing``: a cell (or a gated metric) of the baseline is absent from the current run, or
  the cell is now skipped;
* ``failed``: a cell that was ok in the baseline failed.

Exit status of ``harness compare`` / :func:`run_gate`: 0 pass, 1 regression, 2 bad input.
"""

from __future__ import annotations

import json
import math
import re
import sys
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from .errors import DataError, HarnessError, SuiteError
from .results import as_bool, as_float, is_null

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "Finding",
    "GateResult",
    "MetricRule",
    "Thresholds",
    "compare",
    "suite_gate",
    "set_dotted",
    "gate_thresholds",
    "mann_whitney_p",
    "metric_kind",
    "run_gate",
]

# --------------------------------------------------------------------------- thresholds

#: Metrics checked as latency (noise band + significance). Throughput is "higher is better".
_LATENCY_RE = re.compile(r"^(latency_|throughput_)")
_LATENCY_NAMES = {"cold_start_ms", "compression_time_s", "train_time_s", "eval_time_s"}
#: Metrics checked as size (relative increase, no noise).
_SIZE_NAMES = {
    "size_bytes", "parameters", "nonzero_parameters", "bits_per_weight",
    "peak_rss_mb", "peak_gpu_mem_mb",
}

_TOP_KEYS = {
    "accuracy_drop": "largest allowed absolute worsening of a gated quality metric (null: no limit)",
    "accuracy_drop_relative": "largest allowed relative worsening of a gated quality metric",
    "accuracy_metrics": "'main' (each task's main metric), 'all', or a list of metric names",
    "latency_increase": "largest allowed relative latency increase (null: latency not gated)",
    "latency_noise": "relative noise band: changes within it never count",
    "significance": "p-value below which a latency change counts (one-sided Mann-Whitney U)",
    "latency_metrics": "latency metrics to gate (a list of names)",
    "size_increase": "largest allowed relative increase of size_bytes (null: size not gated)",
    "allow_missing": "true: cells/metrics absent from CURRENT are reported but do not fail",
    "metrics": "per-metric overrides: {metric: {key: value}}",
}
_RULE_KEYS = {
    "accuracy": ("max_drop", "max_drop_relative", "ignore"),
    "latency": ("max_increase", "noise", "significance", "ignore"),
    "size": ("max_increase", "ignore"),
}
_EPS = 1e-12


def metric_kind(metric: str) -> str:
    """``"latency"``, ``"size"`` or ``"accuracy"`` (everything else: a quality metric)."""
    if _LATENCY_RE.match(metric) or metric in _LATENCY_NAMES:
        return "latency"
    if metric in _SIZE_NAMES:
        return "size"
    return "accuracy"


@dataclass(frozen=True)
class MetricRule:
    """How one metric is gated (after defaults are filled in)."""

    kind: str
    max_drop: float | None = None
    max_drop_relative: float | None = None
    max_increase: float | None = None
    noise: float | None = None
    significance: float | None = None
    ignore: bool = False

    def describe(self) -> str:
        if self.kind == "accuracy":
            parts = []
            if self.max_drop is not None:
                parts.append(f"drop <= {self.max_drop:g}")
            if self.max_drop_relative is not None:
                parts.append(f"drop <= {self.max_drop_relative:.1%}")
            return " and ".join(parts) or "no limit"
        if self.kind == "latency":
            return (f"worse <= {self.max_increase:.1%} (noise {self.noise:.1%}, "
                    f"p < {self.significance:g})")
        return f"increase <= {self.max_increase:.1%}"


@dataclass(frozen=True)
class Thresholds:
    """Validated gate settings; build with :func:`gate_thresholds`."""

    accuracy_drop: float | None = 0.01
    accuracy_drop_relative: float | None = None
    accuracy_metrics: str | tuple[str, ...] = "main"
    latency_increase: float | None = 0.10
    latency_noise: float = 0.05
    significance: float = 0.01
    latency_metrics: tuple[str, ...] = ("latency_b1_p50_ms",)
    size_increase: float | None = 0.0
    allow_missing: bool = False
    metrics: Mapping[str, MetricRule] = field(default_factory=dict)

    def rule_for(self, metric: str, *, main: bool) -> MetricRule | None:
        """The rule for ``metric``, or None when it is not gated."""
        kind = metric_kind(metric)
        default = self._default_rule(kind)
        own = self.metrics.get(metric)
        if own is not None:
            if own.ignore:
                return None
            return replace(default, **{
                k: getattr(own, k) for k in _RULE_KEYS[kind] if k != "ignore"
                and getattr(own, k) is not None
            })
        if kind == "accuracy":
            if self.accuracy_drop is None and self.accuracy_drop_relative is None:
                return None
            if self.accuracy_metrics == "all" or (self.accuracy_metrics == "main" and main) or (
                isinstance(self.accuracy_metrics, tuple) and metric in self.accuracy_metrics
            ):
                return default
            return None
        if kind == "latency":
            if self.latency_increase is None or metric not in self.latency_metrics:
                return None
            return default
        if self.size_increase is None or metric != "size_bytes":
            return None
        return default

    def _default_rule(self, kind: str) -> MetricRule:
        if kind == "accuracy":
            return MetricRule("accuracy", max_drop=self.accuracy_drop,
                              max_drop_relative=self.accuracy_drop_relative)
        if kind == "latency":
            return MetricRule("latency", max_increase=self.latency_increase or 0.0,
                              noise=self.latency_noise, significance=self.significance)
        return MetricRule("size", max_increase=self.size_increase or 0.0)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["latency_metrics"] = list(self.latency_metrics)
        if isinstance(self.accuracy_metrics, tuple):
            d["accuracy_metrics"] = list(self.accuracy_metrics)
        d["metrics"] = {
            name: {k: v for k, v in asdict(rule).items() if v is not None and k != "kind"
                   and not (k == "ignore" and v is False)}
            for name, rule in self.metrics.items()
        }
        return d


def _err(message: str, key: str, path: Any) -> SuiteError:
    if path is None:
        return SuiteError(f"{key}: {message}", key=key)
    return SuiteError(message, path=path, key=key)


def _number(value: Any, key: str, path: Any, *, nullable: bool = True,
            upper: float | None = None, positive: bool = False) -> float | None:
    if value is None:
        if nullable:
            return None
        raise _err("must be a number, not null", key, path)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise _err(f"must be a number, got {value!r}", key, path)
    value = float(value)
    if value < 0 or (positive and value == 0):
        raise _err(f"must be {'> 0' if positive else '>= 0'}, got {value:g}", key, path)
    if upper is not None and value >= upper:
        raise _err(f"must be < {upper:g}, got {value:g}", key, path)
    return value


def _names(value: Any, key: str, path: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
        raise _err(f"must be a list of metric names, got {value!r}", key, path)
    return tuple(value)


def gate_thresholds(d: Mapping[str, Any] | None = None, *, path: Any = None,
                    prefix: str = "gate") -> Thresholds:
    """Validate a ``gate:`` mapping (keys documented in docs/regression-gate.md).

    Unknown keys, wrong types and out-of-range values raise :class:`~harness.errors.SuiteError`
    naming the key (``gate.metrics.entity_f1.max_dorp``) and, when given, the suite file.
    """
    if d is None:
        return Thresholds()
    if isinstance(d, Thresholds):
        return d
    if not isinstance(d, Mapping):
        raise _err(f"must be a mapping, got {type(d).__name__}", prefix, path)
    unknown = sorted(set(d) - set(_TOP_KEYS))
    if unknown:
        import difflib

        close = difflib.get_close_matches(str(unknown[0]), _TOP_KEYS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise _err(f"unknown gate key {unknown[0]!r}.{hint} Allowed: {', '.join(sorted(_TOP_KEYS))}",
                   f"{prefix}.{unknown[0]}", path)
    kw: dict[str, Any] = {}

    def k(name: str) -> str:
        return f"{prefix}.{name}"

    for name in ("accuracy_drop", "accuracy_drop_relative", "latency_increase", "size_increase"):
        if name in d:
            kw[name] = _number(d[name], k(name), path)
    if "latency_noise" in d:
        kw["latency_noise"] = _number(d["latency_noise"], k("latency_noise"), path) or 0.0
    if "significance" in d:
        kw["significance"] = _number(d["significance"], k("significance"), path, nullable=False,
                                     upper=1.0, positive=True)
    if "accuracy_metrics" in d:
        v = d["accuracy_metrics"]
        kw["accuracy_metrics"] = v if v in ("main", "all") else _names(v, k("accuracy_metrics"), path)
    if "latency_metrics" in d:
        names = _names(d["latency_metrics"] or [], k("latency_metrics"), path) \
            if d["latency_metrics"] is not None else ()
        for n in names:
            if metric_kind(n) != "latency":
                raise _err(f"{n!r} is not a latency metric (latency_*, throughput_*, cold_start_ms, "
                           "*_time_s)", k("latency_metrics"), path)
        kw["latency_metrics"] = names
    if "allow_missing" in d:
        if not isinstance(d["allow_missing"], bool):
            raise _err(f"must be true or false, got {d['allow_missing']!r}", k("allow_missing"), path)
        kw["allow_missing"] = d["allow_missing"]
    rules: dict[str, MetricRule] = {}
    raw = d.get("metrics") or {}
    if not isinstance(raw, Mapping):
        raise _err("must be a mapping of metric name -> {key: value}", k("metrics"), path)
    for metric, spec in raw.items():
        mkey = k(f"metrics.{metric}")
        kind = metric_kind(str(metric))
        if not isinstance(spec, Mapping):
            raise _err(f"must be a mapping with keys {', '.join(_RULE_KEYS[kind])}", mkey, path)
        bad = sorted(set(spec) - set(_RULE_KEYS[kind]))
        if bad:
            raise _err(f"unknown key {bad[0]!r} for {kind} metric {metric!r}; allowed: "
                       f"{', '.join(_RULE_KEYS[kind])}", f"{mkey}.{bad[0]}", path)
        vals: dict[str, Any] = {}
        for key, value in spec.items():
            if key == "ignore":
                if not isinstance(value, bool):
                    raise _err(f"must be true or false, got {value!r}", f"{mkey}.ignore", path)
                vals[key] = value
            elif key == "significance":
                vals[key] = _number(value, f"{mkey}.{key}", path, upper=1.0, positive=True)
            else:
                vals[key] = _number(value, f"{mkey}.{key}", path)
        rules[str(metric)] = MetricRule(kind, **vals)
    kw["metrics"] = rules
    return Thresholds(**kw)


def set_dotted(doc: dict[str, Any], text: str) -> None:
    """Apply ``KEY=VALUE`` / ``metrics.NAME.KEY=VALUE`` (VALUE parsed as YAML) to ``doc``."""
    import yaml

    if "=" not in text:
        raise SuiteError(f"--threshold {text!r}: expected KEY=VALUE, e.g. accuracy_drop=0.005")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    key = key.strip()
    key = key.removeprefix("gate.")
    parts = key.split(".", 2) if key.startswith("metrics.") else [key]
    if not all(parts) or (parts[0] == "metrics" and len(parts) != 3):
        raise SuiteError(f"--threshold {text!r}: use KEY=VALUE or metrics.METRIC.KEY=VALUE")
    node = doc
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise SuiteError(f"--threshold {text!r}: {p} is not a mapping")
    node[parts[-1]] = value


# --------------------------------------------------------------------------- statistics


def _rank_average(a: Any) -> Any:
    import numpy as np

    order = np.argsort(a, kind="mergesort")
    sa = a[order]
    starts = np.r_[True, sa[1:] != sa[:-1]]
    group = starts.cumsum() - 1
    bounds = np.r_[np.nonzero(starts)[0], len(sa)]
    avg = 0.5 * (bounds[:-1] + bounds[1:] - 1) + 1.0
    ranks = np.empty(len(a), dtype=float)
    ranks[order] = avg[group]
    return ranks


def mann_whitney_p(x: Any, y: Any, alternative: str = "greater") -> float:
    """One-sided Mann-Whitney U p-value that ``x`` tends to be greater (or ``"less"``) than ``y``.

    Normal approximation with tie and continuity correction (the same as
    ``scipy.stats.mannwhitneyu(..., method="asymptotic")``); numpy only.
    """
    import numpy as np

    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    n1, n2 = len(x), len(y)
    if n1 == 0 or n2 == 0:
        return 1.0
    both = np.concatenate([x, y])
    ranks = _rank_average(both)
    u1 = ranks[:n1].sum() - n1 * (n1 + 1) / 2.0
    u = u1 if alternative == "greater" else n1 * n2 - u1
    n = n1 + n2
    _, counts = np.unique(both, return_counts=True)
    tie = float((counts**3 - counts).sum())
    var = n1 * n2 / 12.0 * ((n + 1) - tie / (n * (n - 1)))
    if var <= 0:
        return 1.0
    z = (u - n1 * n2 / 2.0 - 0.5) / math.sqrt(var)
    return float(min(1.0, max(0.0, 0.5 * math.erfc(z / math.sqrt(2.0)))))


# --------------------------------------------------------------------------- data


_KEY = ("model", "task", "compression")
_REQUIRED = ("model", "task", "compression", "status", "metric", "value")
Cell = tuple[str, str, str]


def parse_samples(v: Any) -> list[float] | None:
    """Per-iteration samples from a row: a JSON list string, a list or an array; else None."""
    if v is None:
        return None
    if isinstance(v, str):
        if not v.strip():
            return None
        try:
            v = json.loads(v)
        except json.JSONDecodeError:
            return None
    try:
        out = [float(x) for x in v]
    except (TypeError, ValueError):
        return None
    out = [x for x in out if not math.isnan(x)]
    return out or None


@dataclass
class _CellData:
    status: str
    error: str | None
    rows: dict[str, dict[str, Any]]
    info: dict[str, Any]


def _text(v: Any) -> str:
    return "" if is_null(v) else str(v)


def _cells(df: pd.DataFrame, name: str) -> dict[Cell, _CellData]:
    """One entry per cell; of cells run several times (appended re-runs), the last run counts."""
    if df is None or len(df) == 0:
        raise DataError(f"{name}: no result rows")
    missing = [c for c in _REQUIRED if c not in df.columns]
    if missing:
        raise DataError(f"{name}: not a harness results table (missing columns: {', '.join(missing)})")
    out: dict[Cell, _CellData] = {}
    records = df.to_dict(orient="records")
    by_cell: dict[Cell, list[dict[str, Any]]] = {}
    for rec in records:
        by_cell.setdefault(tuple(_text(rec.get(k)) for k in _KEY), []).append(rec)  # type: ignore[arg-type]
    for cell, recs in by_cell.items():
        last_run = recs[-1].get("run_id")
        if not is_null(last_run):
            recs = [r for r in recs if r.get("run_id") == last_run]
        status = _text(recs[-1].get("status")) or "ok"
        rows: dict[str, dict[str, Any]] = {}
        error = None
        for r in recs:
            if is_null(r.get("metric")):
                if _text(r.get("status")) != "ok":
                    status = _text(r.get("status"))
                    error = None if is_null(r.get("error")) else str(r.get("error"))
                continue
            rows[str(r["metric"])] = r
        if status == "ok" and not rows:
            status, error = "failed", "no metric rows"
        info = {k: recs[-1].get(k) for k in ("suite", "suite_hash", "task_params", "model_params",
                                             "compression_params", "threads", "device_name",
                                             "cpu", "runtime", "seq_len", "run_id", "git_commit")}
        out[cell] = _CellData(status, error, rows, info)
    return out


def _load(source: Any, name: str) -> pd.DataFrame:
    import pandas as pd

    if isinstance(source, pd.DataFrame):
        return source
    from . import load_results

    try:
        return load_results(source)
    except HarnessError:
        raise
    except (OSError, ValueError) as e:
        raise DataError(f"{name} {source}: cannot read results: {e}") from e


# --------------------------------------------------------------------------- findings


@dataclass
class Finding:
    """One check of one (model, task, compression, metric); ``metric`` is None for cell-level."""

    model: str
    task: str
    compression: str
    metric: str | None
    kind: str  #: accuracy / latency / size / missing / failed
    status: str  #: pass / regression / info
    baseline: float | None = None
    current: float | None = None
    delta: float | None = None
    delta_relative: float | None = None
    limit: str = ""
    p_value: float | None = None
    message: str = ""

    @property
    def regression(self) -> bool:
        return self.status == "regression"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    a = abs(v)
    if a == 0:
        return "0"
    if a >= 1e6:
        return f"{v:.4g}"
    if a >= 100:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.3f}"
    return f"{v:.4f}"


def _change(f: Finding) -> str:
    if f.delta is None:
        return ""
    if f.kind == "accuracy":
        return f"{f.delta:+.4f}"
    if f.delta_relative is None:
        return f"{f.delta:+.4g}"
    return f"{f.delta_relative:+.1%}"


@dataclass
class GateResult:
    """The outcome of :func:`compare`."""

    findings: list[Finding]
    thresholds: Thresholds
    notes: list[str] = field(default_factory=list)
    baseline_name: str = "baseline"
    current_name: str = "current"

    @property
    def regressions(self) -> list[Finding]:
        return [f for f in self.findings if f.regression]

    @property
    def passed(self) -> bool:
        return not self.regressions

    @property
    def exit_code(self) -> int:
        return 0 if self.passed else 1

    def summary(self) -> str:
        n = len(self.regressions)
        checks = sum(1 for f in self.findings if f.status != "info")
        if self.passed:
            return f"PASS: no regression in {checks} checks ({self.baseline_name} -> {self.current_name})"
        kinds: dict[str, int] = {}
        for f in self.regressions:
            kinds[f.kind] = kinds.get(f.kind, 0) + 1
        by = ", ".join(f"{v} {k}" for k, v in sorted(kinds.items()))
        return (f"FAIL: {n} regression{'s' if n != 1 else ''} ({by}) in {checks} checks "
                f"({self.baseline_name} -> {self.current_name})")

    def _ordered(self) -> list[Finding]:
        rank = {"regression": 0, "info": 1, "pass": 2}
        return sorted(self.findings, key=lambda f: (rank.get(f.status, 3), f.task, f.model,
                                                    f.compression, f.metric or ""))

    def _rows(self) -> list[list[str]]:
        return [[f.status.upper(), f.kind, f.task, f.model, f.compression, f.metric or "(cell)",
                 _fmt(f.baseline), _fmt(f.current), _change(f), f.message]
                for f in self._ordered()]

    _HEAD = ("STATUS", "KIND", "TASK", "MODEL", "COMPRESSION", "METRIC", "BASELINE", "CURRENT",
             "CHANGE", "DETAIL")

    def to_table(self, *, width: int = 40) -> str:
        """Plain-text table (every check, regressions first) with a summary line."""
        rows = [[_clip(c, width) if i < 9 else c for i, c in enumerate(r)] for r in self._rows()]
        rows = [[re.sub(r"[\x00-\x1f\x7f]", " ", c) for c in r] for r in rows]
        widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(self._HEAD)]
        lines = ["  ".join(h.ljust(w) for h, w in zip(self._HEAD, widths)).rstrip()]
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        lines += [f"note: {n}" for n in self.notes]
        lines.append(self.summary())
        return "\n".join(lines) + "\n"

    def to_markdown(self) -> str:
        """Markdown for a pull-request comment or ``$GITHUB_STEP_SUMMARY``."""
        icon = "✅" if self.passed else "❌"
        out = [f"### {icon} harness regression gate: {_md(self.summary())}", ""]
        head = "| " + " | ".join(self._HEAD) + " |\n|" + "---|" * len(self._HEAD)
        if self.regressions:
            out += ["**Regressions**", "", head]
            out += ["| " + " | ".join(_md(c) for c in r) + " |"
                    for r, f in zip(self._rows(), self._ordered()) if f.regression]
            out.append("")
        if self.notes:
            out += ["**Notes**", ""] + [f"- {_md(n)}" for n in self.notes] + [""]
        th = ", ".join(f"`{k}`={_md(json.dumps(v))}" for k, v in self.thresholds.to_dict().items()
                       if k != "metrics" or v)
        out += [f"Thresholds: {th}", ""]
        out += [f"<details><summary>All {len(self.findings)} checks</summary>", "", head]
        out += ["| " + " | ".join(_md(c) for c in r) + " |" for r in self._rows()]
        out += ["", "</details>", ""]
        return "\n".join(out)

    def to_junit_xml(self) -> str:
        """JUnit XML: one testcase per check; regressions are failures."""
        checks = list(self.findings)
        root = ET.Element("testsuites", name="harness-gate", tests=str(len(checks)),
                          failures=str(len(self.regressions)), errors="0")
        suites: dict[str, ET.Element] = {}
        for f in self._ordered():
            ts = suites.get(f.task)
            if ts is None:
                ts = ET.SubElement(root, "testsuite", name=_xml(f"harness-gate.{f.task}"),
                                   tests="0", failures="0", errors="0", skipped="0")
                suites[f.task] = ts
            ts.set("tests", str(int(ts.get("tests", "0")) + 1))
            tc = ET.SubElement(ts, "testcase", classname=_xml(f"{f.task}.{f.model}.{f.compression}"),
                               name=_xml(f"{f.kind}:{f.metric or 'cell'}"), time="0")
            detail = (f"baseline={_fmt(f.baseline)} current={_fmt(f.current)} change={_change(f)} "
                      f"limit={f.limit} {f.message}").strip()
            if f.regression:
                ts.set("failures", str(int(ts.get("failures", "0")) + 1))
                fail = ET.SubElement(tc, "failure", message=_xml(f.message or f.kind), type=f.kind)
                fail.text = _xml(detail)
            else:
                so = ET.SubElement(tc, "system-out")
                so.text = _xml(detail)
        if self.notes:
            for ts in suites.values():
                note = ET.SubElement(ts, "system-err")
                note.text = _xml("\n".join(self.notes))
        ET.indent(root)
        return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "exit_code": self.exit_code,
            "summary": self.summary(),
            "baseline": self.baseline_name,
            "current": self.current_name,
            "regressions": len(self.regressions),
            "checks": sum(1 for f in self.findings if f.status != "info"),
            "thresholds": self.thresholds.to_dict(),
            "notes": list(self.notes),
            "findings": [f.to_dict() for f in self._ordered()],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"


def _clip(s: str, n: int) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"


def _md(s: str) -> str:
    s = re.sub(r"[\x00-\x1f\x7f]", " ", str(s))
    s = s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return s.replace("|", "\\|")


def _xml(s: str) -> str:
    """Text safe for XML 1.0 (ElementTree escapes markup, not control characters)."""
    return re.sub(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]", "?", str(s))


# --------------------------------------------------------------------------- compare


def _suite_names(cells: dict[Cell, _CellData]) -> list[str]:
    return sorted({_text(c.info.get("suite")) for c in cells.values()} - {""})


def compare(baseline: pd.DataFrame, current: pd.DataFrame,
            thresholds: Mapping[str, Any] | Thresholds | None = None, *,
            baseline_name: str = "baseline", current_name: str = "current") -> GateResult:
    """Gate ``current`` against ``baseline`` (both tidy result tables).

    Raises :class:`~harness.errors.DataError` for bad input: an empty table, missing columns, or
    no (model, task, compression) in common (e.g. results of two different suites).
    """
    th = gate_thresholds(thresholds) if not isinstance(thresholds, Thresholds) else thresholds
    base = _cells(baseline, baseline_name)
    cur = _cells(current, current_name)
    common = set(base) & set(cur)
    if not common:
        bs, cs = _suite_names(base), _suite_names(cur)
        suites = (f" (baseline suite {', '.join(map(repr, bs)) or '?'}, current suite "
                  f"{', '.join(map(repr, cs)) or '?'})")
        def sample(cells: dict[Cell, _CellData]) -> str:
            names = sorted("/".join(c) for c in cells)
            return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        raise DataError(
            f"{baseline_name} and {current_name} have no (model, task, compression) cell in "
            f"common{suites}: the runs do not come from the same suite. Baseline has "
            f"{sample(base)}; current has {sample(cur)}."
        )
    notes: list[str] = []
    bs, cs = _suite_names(base), _suite_names(cur)
    if bs != cs:
        notes.append(f"suites differ: baseline {', '.join(bs) or '?'}, current {', '.join(cs) or '?'}; "
                     f"comparing the {len(common)} cells they share")
    new = sorted(set(cur) - set(base))
    if new:
        notes.append(f"{len(new)} cell(s) new in current, not gated: "
                     + ", ".join("/".join(c) for c in new[:5]) + (" ..." if len(new) > 5 else ""))
    env_diff: dict[str, set[tuple[str, str]]] = {}
    findings: list[Finding] = []
    for cell in sorted(base):
        b = base[cell]
        model, task, comp = cell
        mk: dict[str, Any] = {"model": model, "task": task, "compression": comp}
        c = cur.get(cell)
        miss_status = "info" if th.allow_missing else "regression"
        if c is None:
            findings.append(Finding(**mk, metric=None, kind="missing", status=miss_status,
                                    message=f"cell ({b.status} in baseline) is missing from current"))
            continue
        for key in ("task_params", "model_params", "compression_params", "threads", "device_name",
                    "cpu", "runtime"):
            bv, cv = _text(b.info.get(key)), _text(c.info.get(key))
            if bv and cv and bv != cv:
                env_diff.setdefault(key, set()).add((bv, cv))
        if b.status != "ok":
            if c.status == "ok":
                findings.append(Finding(**mk, metric=None, kind="failed", status="info",
                                        message=f"was {b.status} in baseline, ok now"))
            else:
                findings.append(Finding(**mk, metric=None,
                                        kind="failed" if c.status == "failed" else "missing",
                                        status="info",
                                        message=f"{b.status} in baseline, {c.status} now: {c.error or ''}".rstrip(": ")))
            continue
        if c.status == "failed":
            findings.append(Finding(**mk, metric=None, kind="failed", status="regression",
                                    message=f"newly failed: {c.error or 'no error recorded'}"))
            continue
        if c.status != "ok":
            findings.append(Finding(**mk, metric=None, kind="missing", status=miss_status,
                                    message=f"newly {c.status}: {c.error or 'no reason recorded'}"))
            continue
        for metric in sorted(b.rows):
            brow = b.rows[metric]
            rule = th.rule_for(metric, main=bool(as_bool(brow.get("main_metric"))))
            if rule is None:
                continue
            bval = as_float(brow.get("value"))
            crow = c.rows.get(metric)
            if crow is None or as_float(crow.get("value")) is None:
                findings.append(Finding(**mk, metric=metric, kind="missing", status=miss_status,
                                        baseline=bval, limit=rule.describe(),
                                        message="metric no longer reported"))
                continue
            if bval is None:
                continue
            cval = as_float(crow.get("value"))
            assert cval is not None
            findings.append(_check(mk, metric, rule, brow, crow, bval, cval))
    for key, pairs in sorted(env_diff.items()):
        shown = "; ".join(f"{a} -> {b}" for a, b in sorted(pairs)[:3])
        notes.append(f"{key} differs between the runs ({shown})"
                     + ("; latency comparisons may not be like for like"
                        if key in ("threads", "device_name", "cpu", "runtime") else ""))
    return GateResult(findings, th, notes, baseline_name, current_name)


def _check(mk: dict[str, Any], metric: str, rule: MetricRule, brow: dict[str, Any],
           crow: dict[str, Any], bval: float, cval: float) -> Finding:
    hib = as_bool(brow.get("higher_is_better"))
    if hib is None:
        hib = rule.kind == "accuracy" or metric.startswith("throughput_")
    worse = (bval - cval) if hib else (cval - bval)  # > 0: got worse
    rel = worse / abs(bval) if bval else (math.inf if worse > 0 else 0.0)
    f = Finding(**mk, metric=metric, kind=rule.kind, status="pass", baseline=bval, current=cval,
                delta=cval - bval, delta_relative=((cval - bval) / abs(bval)) if bval else None,
                limit=rule.describe())
    if rule.kind == "accuracy":
        over = []
        if rule.max_drop is not None and worse > rule.max_drop + _EPS:
            over.append(f"dropped {worse:.4f} > {rule.max_drop:g}")
        if rule.max_drop_relative is not None and rel > rule.max_drop_relative + _EPS:
            over.append(f"dropped {rel:.2%} > {rule.max_drop_relative:.2%}")
        if over:
            f.status = "regression"
            f.message = "; ".join(over)
            bl, bh, cl, ch = (as_float(brow.get("ci_low")), as_float(brow.get("ci_high")),
                              as_float(crow.get("ci_low")), as_float(crow.get("ci_high")))
            if None not in (bl, bh, cl, ch):
                overlap = not (ch < bl or cl > bh)  # type: ignore[operator]
                f.message += (f" (95% CI baseline [{bl:.4f}, {bh:.4f}], current [{cl:.4f}, {ch:.4f}]"
                              f"{', overlapping' if overlap else ''})")
        elif worse < -_EPS:
            f.message = "improved"
        return f
    if rule.kind == "size":
        if worse > _EPS and rel > (rule.max_increase or 0.0) + _EPS:
            f.status = "regression"
            f.message = f"grew {rel:.2%} > {rule.max_increase:.2%}"
        return f
    # latency: beyond the allowed increase, beyond the noise band, and significant.
    allowed = max(rule.max_increase or 0.0, rule.noise or 0.0)
    beyond = rel > allowed + _EPS
    bs, cs = parse_samples(brow.get("samples")), parse_samples(crow.get("samples"))
    word = "slower" if not hib else "lower"
    if bs and cs and len(bs) >= 3 and len(cs) >= 3:
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
    else:
        if beyond:
            f.status = "regression"
            f.message = f"{rel:.1%} {word} > {allowed:.1%}"
        f.message = (f.message + "; " if f.message else "") + \
            "no per-iteration samples: noise band only, no significance test"
    return f


# --------------------------------------------------------------------------- CLI


def _write(path: Path | None, text: str) -> None:
    if path is None:
        return
    path = Path(path)
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def run_gate(baseline: Any, current: Any, thresholds: Mapping[str, Any] | Thresholds | None = None,
             *, markdown: Path | None = None, junit: Path | None = None,
             json_path: Path | None = None, out_dir: Path | None = None,
             suite_path: Path | None = None, out: IO[str] | None = None,
             err: IO[str] | None = None, baseline_name: str | None = None,
             current_name: str | None = None) -> int:
    """Compare, print the table to ``out`` (stdout), write the requested reports; return the
    exit status: 0 pass, 1 regression, 2 bad input (message on ``err``, stderr).

    ``baseline``/``current``: a results folder or file, or a DataFrame. ``harness run SUITE
    --baseline DIR`` calls this with the fresh run's rows and the suite's ``gate:`` mapping.
    ``out_dir``: also write ``gate.md``, ``gate.junit.xml`` and ``gate.json`` there (for the
    paths not given explicitly). ``suite_path`` names the suite in threshold errors.
    """
    out = out or sys.stdout
    err = err or sys.stderr
    if out_dir is not None:
        out_dir = Path(out_dir)
        markdown = markdown or out_dir / "gate.md"
        junit = junit or out_dir / "gate.junit.xml"
        json_path = json_path or out_dir / "gate.json"
        current_name = current_name or str(out_dir)
    try:
        bname = baseline_name or (str(baseline) if not hasattr(baseline, "columns") else "baseline")
        cname = current_name or (str(current) if not hasattr(current, "columns") else "current")
        th = gate_thresholds(thresholds, path=suite_path) \
            if not isinstance(thresholds, Thresholds) else thresholds
        result = compare(_load(baseline, "baseline"), _load(current, "current"), th,
                         baseline_name=bname, current_name=cname)
        _write(markdown, result.to_markdown())
        _write(junit, result.to_junit_xml())
        _write(json_path, result.to_json())
    except HarnessError as e:
        print(f"Error: {e}", file=err)
        return 2
    except OSError as e:
        print(f"Error: {e}", file=err)
        return 2
    out.write(result.to_table())
    out.flush()
    return result.exit_code


def suite_gate(path: Path) -> dict[str, Any]:
    from .suite import load_suite

    return dict(load_suite(path).gate or {})
