"""What the gate found: one :class:`Finding` per check, gathered in a :class:`GateResult`.

The result renders itself through :mod:`harness.gate.render` (plain table, Markdown, JUnit XML,
JSON); new outputs go there, new kinds of check add findings here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..rows import as_json
from .thresholds import Thresholds

__all__ = ["Finding", "GateResult"]


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
    #: paired accuracy test on per-example outputs: its name and the delta's 95% CI
    test: str | None = None
    ci_low: float | None = None
    ci_high: float | None = None

    @property
    def regression(self) -> bool:
        return self.status == "regression"

    def to_dict(self) -> dict[str, Any]:
        return as_json(asdict(self))


_RANK = {"regression": 0, "info": 1, "pass": 2}


@dataclass
class GateResult:
    """The outcome of :func:`harness.gate.compare`."""

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

    @property
    def checks(self) -> int:
        """Findings that are checks (pass or regression), not notes."""
        return sum(1 for f in self.findings if f.status != "info")

    def summary(self) -> str:
        n = len(self.regressions)
        runs = f"({self.baseline_name} -> {self.current_name})"
        if self.passed:
            return f"PASS: no regression in {self.checks} checks {runs}"
        kinds: dict[str, int] = {}
        for f in self.regressions:
            kinds[f.kind] = kinds.get(f.kind, 0) + 1
        by = ", ".join(f"{v} {k}" for k, v in sorted(kinds.items()))
        return f"FAIL: {n} regression{'s' if n != 1 else ''} ({by}) in {self.checks} checks {runs}"

    def ordered(self) -> list[Finding]:
        """Regressions first, then notes, then passes; each by task, model, compression, metric."""
        return sorted(self.findings, key=lambda f: (_RANK.get(f.status, 3), f.task, f.model,
                                                    f.compression, f.metric or ""))

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "exit_code": self.exit_code,
            "summary": self.summary(),
            "baseline": self.baseline_name,
            "current": self.current_name,
            "regressions": len(self.regressions),
            "checks": self.checks,
            "thresholds": self.thresholds.to_dict(),
            "notes": list(self.notes),
            "findings": [f.to_dict() for f in self.ordered()],
        }

    def to_table(self, *, width: int = 40) -> str:
        """Plain-text table (every check, regressions first) with a summary line."""
        from .render import to_table

        return to_table(self, width=width)

    def to_markdown(self) -> str:
        """Markdown for a pull-request comment or ``$GITHUB_STEP_SUMMARY``."""
        from .render import to_markdown

        return to_markdown(self)

    def to_junit_xml(self) -> str:
        """JUnit XML: one testcase per check; regressions are failures."""
        from .render import to_junit_xml

        return to_junit_xml(self)

    def to_json(self) -> str:
        from .render import to_json

        return to_json(self)
