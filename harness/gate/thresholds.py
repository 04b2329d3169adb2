"""Gate thresholds: which metrics are checked and how much worsening is allowed.

:func:`gate_thresholds` validates a suite's ``gate:`` mapping (keys in docs/regression-gate.md)
into a :class:`Thresholds`; :func:`set_dotted` applies one ``--threshold KEY=VALUE`` to such a
mapping. Bad values raise :class:`~harness.errors.SuiteError` naming the key and the suite file.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ..analysis.cells import metric_kind
from ..errors import SuiteError

__all__ = ["MetricRule", "Thresholds", "gate_thresholds", "metric_kind", "set_dotted"]

_TOP_KEYS = {
    "accuracy_drop": "largest allowed absolute worsening of a gated quality metric (null: no limit)",
    "accuracy_drop_relative": "largest allowed relative worsening of a gated quality metric",
    "accuracy_metrics": "'main' (each task's main metric), 'all', or a list of metric names",
    "latency_increase": "largest allowed relative latency increase (null: latency not gated)",
    "latency_noise": "relative noise band: changes within it never count",
    "noise_band": "'fixed' (latency_noise), 'auto' (per cell, from the recorded samples) or "
                  "'runs' (per cell, from repeated baseline runs: --noise-runs)",
    "significance": "p-value below which a latency change counts (one-sided Mann-Whitney U)",
    "latency_metrics": "latency metrics to gate (a list of names)",
    "size_increase": "largest allowed relative increase of size_bytes (null: size not gated)",
    "paired_alpha": "p-value below which a paired accuracy change (per-example outputs) counts",
    "accuracy_gate_on": "'both' (beyond the drop limit and significant) or 'significance' "
                        "(significant worsening alone) when per-example outputs allow a paired test",
    "allow_missing": "true: cells/metrics absent from CURRENT are reported but do not fail",
    "metrics": "per-metric overrides: {metric: {key: value}}",
}
_RULE_KEYS = {
    "accuracy": ("max_drop", "max_drop_relative", "ignore"),
    "latency": ("max_increase", "noise", "noise_band", "significance", "ignore"),
    "size": ("max_increase", "ignore"),
}


@dataclass(frozen=True)
class MetricRule:
    """How one metric is gated (after defaults are filled in)."""

    kind: str
    max_drop: float | None = None
    max_drop_relative: float | None = None
    max_increase: float | None = None
    noise: float | None = None
    noise_band: str | None = None  #: "fixed", "auto" or "runs" (latency)
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
            noise = self.noise_band if self.noise_band in ("auto", "runs") else f"{self.noise:.1%}"
            return f"worse <= {self.max_increase:.1%} (noise {noise}, p < {self.significance:g})"
        return f"increase <= {self.max_increase:.1%}"


@dataclass(frozen=True)
class Thresholds:
    """Validated gate settings; build with :func:`gate_thresholds`."""

    accuracy_drop: float | None = 0.01
    accuracy_drop_relative: float | None = None
    accuracy_metrics: str | tuple[str, ...] = "main"
    latency_increase: float | None = 0.10
    latency_noise: float = 0.05
    noise_band: str = "fixed"
    significance: float = 0.01
    latency_metrics: tuple[str, ...] = ("latency_b1_p50_ms",)
    size_increase: float | None = 0.0
    allow_missing: bool = False
    paired_alpha: float = 0.05
    accuracy_gate_on: str = "both"
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
                              noise=self.latency_noise, noise_band=self.noise_band,
                              significance=self.significance)
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


def _flag(value: Any, key: str, path: Any) -> bool:
    if not isinstance(value, bool):
        raise _err(f"must be true or false, got {value!r}", key, path)
    return value


def _band(value: Any, key: str, path: Any) -> str:
    if value not in ("fixed", "auto", "runs"):
        raise _err(f"must be 'fixed', 'auto' or 'runs', got {value!r}", key, path)
    return str(value)


def _latency_names(value: Any, key: str, path: Any) -> tuple[str, ...]:
    names = () if value is None else _names(value or [], key, path)
    for n in names:
        if metric_kind(n) != "latency":
            raise _err(f"{n!r} is not a latency metric (latency_*, throughput_*, cold_start_ms, "
                       "*_time_s)", key, path)
    return names


def _gate_on(value: Any, key: str, path: Any) -> str:
    if value not in ("both", "significance"):
        raise _err(f"must be 'both' or 'significance', got {value!r}", key, path)
    return str(value)


def _probability(value: Any, key: str, path: Any) -> Any:
    return _number(value, key, path, nullable=False, upper=1.0, positive=True)


#: how each top-level key of a ``gate:`` mapping is read (the others are numbers:
#: accuracy_drop(_relative), latency_increase, size_increase)
_TOP_READERS = {
    "latency_noise": lambda v, k, p: _number(v, k, p) or 0.0,
    "significance": _probability,
    "paired_alpha": _probability,
    "noise_band": _band,
    "accuracy_metrics": lambda v, k, p: v if v in ("main", "all") else _names(v, k, p),
    "latency_metrics": _latency_names,
    "allow_missing": _flag,
    "accuracy_gate_on": _gate_on,
}


def _top_value(name: str, value: Any, key: str, path: Any) -> Any:
    """One validated top-level value of a ``gate:`` mapping (``metrics`` excepted)."""
    return _TOP_READERS.get(name, _number)(value, key, path)


def _rule(metric: str, spec: Any, mkey: str, path: Any) -> MetricRule:
    """A ``metrics.NAME`` entry as a :class:`MetricRule`."""
    kind = metric_kind(metric)
    if not isinstance(spec, Mapping):
        raise _err(f"must be a mapping with keys {', '.join(_RULE_KEYS[kind])}", mkey, path)
    bad = sorted(set(spec) - set(_RULE_KEYS[kind]))
    if bad:
        raise _err(f"unknown key {bad[0]!r} for {kind} metric {metric!r}; allowed: "
                   f"{', '.join(_RULE_KEYS[kind])}", f"{mkey}.{bad[0]}", path)
    vals: dict[str, Any] = {}
    for key, value in spec.items():
        if key == "ignore":
            vals[key] = _flag(value, f"{mkey}.ignore", path)
        elif key == "noise_band":
            vals[key] = _band(value, f"{mkey}.{key}", path)
        elif key == "significance":
            vals[key] = _number(value, f"{mkey}.{key}", path, upper=1.0, positive=True)
        else:
            vals[key] = _number(value, f"{mkey}.{key}", path)
    return MetricRule(kind, **vals)


def gate_thresholds(d: Mapping[str, Any] | Thresholds | None = None, *, path: Any = None,
                    prefix: str = "gate") -> Thresholds:
    """Validate a ``gate:`` mapping (keys documented in docs/regression-gate.md).

    Unknown keys, wrong types and out-of-range values raise :class:`~harness.errors.SuiteError`
    naming the key (``gate.metrics.<metric>.max_dorp``) and, when given, the suite file.
    """
    if d is None:
        return Thresholds()
    if isinstance(d, Thresholds):
        return d
    if not isinstance(d, Mapping):
        raise _err(f"must be a mapping, got {type(d).__name__}", prefix, path)
    unknown = sorted(set(d) - set(_TOP_KEYS))
    if unknown:
        close = difflib.get_close_matches(str(unknown[0]), _TOP_KEYS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise _err(f"unknown gate key {unknown[0]!r}.{hint} Allowed: {', '.join(sorted(_TOP_KEYS))}",
                   f"{prefix}.{unknown[0]}", path)
    kw = {name: _top_value(name, value, f"{prefix}.{name}", path)
          for name, value in d.items() if name != "metrics"}
    raw = d.get("metrics") or {}
    if not isinstance(raw, Mapping):
        raise _err("must be a mapping of metric name -> {key: value}", f"{prefix}.metrics", path)
    kw["metrics"] = {str(m): _rule(str(m), spec, f"{prefix}.metrics.{m}", path)
                     for m, spec in raw.items()}
    return Thresholds(**kw)


def set_dotted(doc: dict[str, Any], text: str) -> None:
    """Apply one ``--threshold`` to a ``gate:`` mapping: ``KEY=VALUE`` or
    ``metrics.METRIC.KEY=VALUE`` (METRIC may contain dots; VALUE is parsed as YAML, as
    ``--set`` values are). Raises :class:`~harness.errors.SuiteError` for a malformed one."""
    from ..suite import parse_override

    parts, value = parse_override(text, option="--threshold", example="accuracy_drop=0.005")
    if parts[0] == "gate":
        parts = parts[1:]
    if parts[:1] == ["metrics"] and len(parts) >= 3:
        parts = ["metrics", ".".join(parts[1:-1]), parts[-1]]
    elif len(parts) != 1:
        raise SuiteError(f"--threshold {text!r}: use KEY=VALUE or metrics.METRIC.KEY=VALUE")
    node = doc
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise SuiteError(f"--threshold {text!r}: {p} is not a mapping")
    node[parts[-1]] = value
