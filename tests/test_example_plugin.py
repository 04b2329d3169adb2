"""The example third-party package installs, is discovered through its entry point, and a
suite uses its model, task and compression."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import harness
from harness.testing import FAST_SETTINGS

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "harness-example"


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("site")
    r = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "--target", str(target), str(EXAMPLE)],
        capture_output=True, text=True,
    )
    assert r.returncode == 0, r.stderr
    assert list(target.glob("harness_example-0.1.0.dist-info"))
    return target


def run_cli(site: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True,
                          text=True, env=env, cwd=cwd)


def test_harness_plugins_lists_the_example(installed):
    r = run_cli(installed, "plugins")
    assert r.returncode == 0, r.stderr
    lines = {line.split()[0]: line for line in r.stdout.splitlines()[1:]}
    for name, kind in (("tiny-bert", "model"), ("wnut17", "task"), ("layer-drop", "compression")):
        assert name in lines, r.stdout
        assert kind in lines[name] and "example" in lines[name]
        assert "harness-example 0.1.0" in lines[name]
    assert "dynamic-int8" in lines  # built-ins still there


def test_a_suite_uses_the_example_plugin(installed, shared_data, tmp_path):
    doc = yaml.safe_load((EXAMPLE / "suite.yaml").read_text())
    doc["settings"] = {**FAST_SETTINGS, "cache_dir": str(tmp_path / "cache")}
    doc["tasks"][0]["params"].update(data_dir=str(shared_data / "wnut17"),
                                     max_train_samples=32, max_eval_samples=32)
    doc["models"][0]["params"] = {"hidden": 32}
    suite = tmp_path / "suite.yaml"
    suite.write_text(yaml.safe_dump(doc))
    r = run_cli(installed, "run", str(suite), "--out", str(tmp_path / "out"), "--no-progress",
                "--no-report", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    df = harness.load_results(tmp_path / "out")
    assert set(df.status) == {"ok"}
    assert set(df.model) == {"tiny-bert"} and set(df.task) == {"wnut17"}
    params = df[df.metric == "parameters"].set_index("compression").value
    assert params["layer-drop"] < params["none"]  # one of two layers dropped
    f1 = df[df.metric == "entity_f1"]
    assert len(f1) == 2 and f1.value.between(0, 1).all()
