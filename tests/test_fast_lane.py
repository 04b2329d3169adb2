"""The fast lane (``pytest -m "not slow"``) lists its slow tests by name: every name must exist,
or a renamed test would silently join the fast lane."""

from __future__ import annotations

from pathlib import Path

from conftest import SLOW_MODULES, SLOW_TESTS

HERE = Path(__file__).resolve().parent


def test_every_listed_slow_test_exists():
    missing = [m for m in SLOW_MODULES if not (HERE / m).is_file()]
    for entry in SLOW_TESTS:
        module, name = entry.split("::")
        path = HERE / module
        if not path.is_file() or f"def {name}(" not in path.read_text():
            missing.append(entry)
    assert missing == []
