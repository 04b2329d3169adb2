"""The shape of the core (issue 14): the report and the gate know no built-in plugin, and no
module of harness/ grows past ~400 lines."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.plugins import get_plugin_manager, plugin_table

HARNESS = Path(__file__).resolve().parents[1] / "harness"
#: The report and the gate, and the reading of results they share.
REPORT_GATE = sorted([*(HARNESS / "report").rglob("*.py"), *(HARNESS / "gate").rglob("*.py"),
                      *(HARNESS / "analysis").rglob("*.py"), *(HARNESS / "templates").glob("*.*")])
#: Metric names of the built-in tasks (harness_plugins): the core renders and gates them from
#: MetricValue fields, never by name.
BUILTIN_METRICS = ["entity_f1", "entity_precision", "entity_recall", "token_accuracy",
                   "gold_entities", "macro_f1", "unseen_in_train"]
#: "none", the suite's default compression, is the one built-in name the core may know.
ALLOWED = {"none"}


def _builtin_plugin_names() -> set[str]:
    rows = plugin_table(get_plugin_manager())
    return {r["name"] for r in rows if not r["plugin"].startswith("harness.")} - ALLOWED


def mentions(source: str, plugin_names: set[str]) -> list[str]:
    """Built-in names in ``source``: a plugin name as a quoted string, a metric name anywhere,
    or a per-class metric prefix such as ``"f1.``."""
    found = [n for n in sorted(plugin_names) if re.search(rf"""["']{re.escape(n)}["']""", source)]
    found += [n for n in BUILTIN_METRICS if re.search(rf"\b{n}\b", source)]
    found += [m.group(0) for m in re.finditer(r"""["'](f1|precision|recall)\.|["']f1["']""", source)]
    return found


def test_the_scan_finds_what_it_looks_for():
    names = _builtin_plugin_names()
    assert {"ner", "classification", "hf", "dynamic-int8"} <= names
    planted = 'is_ner = plugin == "ner"\nprefixes = ("entity_f1.", "f1.")\nx = \'hf\''
    assert set(mentions(planted, names)) == {"ner", "entity_f1", '"f1.', "hf"}
    assert mentions('compression = "none"  # the suite default', names) == []


@pytest.mark.parametrize("path", REPORT_GATE, ids=lambda p: str(p.relative_to(HARNESS)))
def test_report_and_gate_know_no_builtin_plugin(path):
    assert mentions(path.read_text(encoding="utf-8"), _builtin_plugin_names()) == []


def test_no_module_of_the_core_or_the_builtins_over_400_lines():
    sizes = {str(p.relative_to(HARNESS.parent)): len(p.read_text(encoding="utf-8").splitlines())
             for root in (HARNESS, HARNESS.parent / "plugins") for p in root.rglob("*.py")}
    assert len(sizes) > 60
    assert {p: n for p, n in sizes.items() if n > 400} == {}


def test_report_and_gate_functions_are_simple():
    """McCabe complexity <= 15 (ruff C901) in the report, the gate and the cells reading."""
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed (the dev extra)")
    targets = [str(HARNESS / "report"), str(HARNESS / "gate"), str(HARNESS / "cells.py"),
               str(HARNESS / "select.py"), str(HARNESS / "history.py")]
    res = subprocess.run([ruff, "check", "--no-cache", "--select", "C901", "--config",
                          "lint.mccabe.max-complexity=15", *targets],
                         capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
