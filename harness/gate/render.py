"""The gate's outputs: a plain-text table (stdout), Markdown (a pull-request comment or
``$GITHUB_STEP_SUMMARY``), JUnit XML (CI test reports) and JSON. Every string from the results
is made safe for its format here."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING

from ..textfmt import num, one_line, table

if TYPE_CHECKING:  # render takes what findings builds; findings calls render lazily
    from .findings import Finding, GateResult

__all__ = ["to_json", "to_junit_xml", "to_markdown", "to_table"]

HEAD = ("STATUS", "KIND", "TASK", "MODEL", "COMPRESSION", "METRIC", "BASELINE", "CURRENT",
        "CHANGE", "DETAIL")


def fmt(v: float | None) -> str:
    """A number as the report shows it (:func:`harness.textfmt.num`); "-" for none."""
    return num(v, none="-")


def change(f: Finding) -> str:
    """The change of a finding: absolute for quality metrics, relative for the rest."""
    if f.delta is None:
        return ""
    if f.kind == "accuracy":
        return f"{f.delta:+.4f}"
    if f.delta_relative is None:
        return f"{f.delta:+.4g}"
    return f"{f.delta_relative:+.1%}"


def _row(f: Finding) -> list[str]:
    return [f.status.upper(), f.kind, f.task, f.model, f.compression, f.metric or "(cell)",
            fmt(f.baseline), fmt(f.current), change(f), f.message]


def _clip(s: str, n: int) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"


def _md(s: str) -> str:
    s = one_line(str(s))
    s = s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return s.replace("|", "\\|")


def _xml(s: str) -> str:
    """Text safe for XML 1.0 (ElementTree escapes markup, not control characters)."""
    return re.sub(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]", "?", str(s))


def to_table(result: GateResult, *, width: int = 40) -> str:
    """Plain-text table (every check, regressions first) with the notes and a summary line."""
    rows = [[_clip(c, width) if i < 9 else c for i, c in enumerate(_row(f))]
            for f in result.ordered()]
    lines = [f"note: {n}" for n in result.notes] + [result.summary()]
    return table(HEAD, rows) + "\n".join(lines) + "\n"


def to_markdown(result: GateResult) -> str:
    """Markdown: summary, the regressions, notes, thresholds, every check folded away."""
    icon = "✅" if result.passed else "❌"
    out = [f"### {icon} harness regression gate: {_md(result.summary())}", ""]
    head = "| " + " | ".join(HEAD) + " |\n|" + "---|" * len(HEAD)

    def line(f: Finding) -> str:
        return "| " + " | ".join(_md(c) for c in _row(f)) + " |"

    ordered = result.ordered()
    if result.regressions:
        out += ["**Regressions**", "", head, *(line(f) for f in ordered if f.regression), ""]
    if result.notes:
        out += ["**Notes**", ""] + [f"- {_md(n)}" for n in result.notes] + [""]
    th = ", ".join(f"`{k}`={_md(json.dumps(v))}" for k, v in result.thresholds.to_dict().items()
                   if k != "metrics" or v)
    out += [f"Thresholds: {th}", ""]
    out += [f"<details><summary>All {len(result.findings)} checks</summary>", "", head]
    out += [line(f) for f in ordered]
    out += ["", "</details>", ""]
    return "\n".join(out)


def to_junit_xml(result: GateResult) -> str:
    """JUnit XML: a testsuite per task, a testcase per check; regressions are failures."""
    root = ET.Element("testsuites", name="harness-gate", tests=str(len(result.findings)),
                      failures=str(len(result.regressions)), errors="0")
    suites: dict[str, ET.Element] = {}
    for f in result.ordered():
        ts = suites.get(f.task)
        if ts is None:
            ts = ET.SubElement(root, "testsuite", name=_xml(f"harness-gate.{f.task}"),
                               tests="0", failures="0", errors="0", skipped="0")
            suites[f.task] = ts
        ts.set("tests", str(int(ts.get("tests", "0")) + 1))
        tc = ET.SubElement(ts, "testcase", classname=_xml(f"{f.task}.{f.model}.{f.compression}"),
                           name=_xml(f"{f.kind}:{f.metric or 'cell'}"), time="0")
        detail = (f"baseline={fmt(f.baseline)} current={fmt(f.current)} change={change(f)} "
                  f"limit={f.limit} {f.message}").strip()
        if f.regression:
            ts.set("failures", str(int(ts.get("failures", "0")) + 1))
            fail = ET.SubElement(tc, "failure", message=_xml(f.message or f.kind), type=f.kind)
            fail.text = _xml(detail)
        else:
            ET.SubElement(tc, "system-out").text = _xml(detail)
    if result.notes:
        for ts in suites.values():
            ET.SubElement(ts, "system-err").text = _xml("\n".join(result.notes))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def to_json(result: GateResult) -> str:
    return json.dumps(result.to_dict(), indent=2, allow_nan=False) + "\n"
