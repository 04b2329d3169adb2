"""The speed lanes are markers only: ``@pytest.mark.slow`` on a test (``pytestmark`` on a
module) puts it in the slow lane, ``pytest -m "not slow"`` is the fast lane. A misspelt marker
would silently put a slow test in the fast lane; ``--strict-markers`` (pyproject.toml) makes it
an error at collection instead. These tests keep that setting from going away."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_markers_are_strict_and_the_lanes_registered(pytestconfig):
    assert "--strict-markers" in pytestconfig.getini("addopts")
    registered = {line.split(":")[0].strip() for line in pytestconfig.getini("markers")}
    assert {"slow", "gpu"} <= registered
    assert '-m "not slow"' in (ROOT / "README.md").read_text()  # the documented fast lane


def test_a_misspelt_marker_is_an_error_under_these_settings(pytester, pytestconfig):
    markers = "".join(f"    {line}\n" for line in pytestconfig.getini("markers"))
    pytester.makeini(f"[pytest]\naddopts = {' '.join(pytestconfig.getini('addopts'))}\n"
                     f"markers =\n{markers}")
    pytester.makepyfile(test_lanes="""
        import pytest

        @pytest.mark.slow
        def test_slow():
            pass

        @pytest.mark.slwo
        def test_misspelt():
            pass
    """)
    result = pytester.runpytest("-p", "no:cacheprovider", "-m", "not slow")
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*'slwo' not found in `markers` configuration option*"])
