"""The example third-party package installs, is discovered through its entry point, and a
suite uses its model, task and compression."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import harness
from harness.testing import FAST_SETTINGS

pytestmark = pytest.mark.slow

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
    for name, kind in (("tiny-bert", "model"), ("has-entity", "task"), ("layer-drop", "compression")):
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
    assert set(df.model) == {"tiny-bert"} and set(df.task) == {"has-entity"}
    params = df[df.metric == "parameters"].set_index("compression").value
    assert params["layer-drop"] < params["none"]  # one of two layers dropped
    acc = df[df.metric == "accuracy"]
    assert len(acc) == 3 and acc.value.between(0, 1).all()
    chain = df[df.compression == "drop-ft-int8"]
    assert set(chain.precision) == {"int8"} and chain.chain_length.iloc[0] == 3


def test_the_example_passes_its_own_tests(installed, shared_data):
    """Its own test uses harness.testing's fixtures (run_suite_dict, shared_data)."""
    env = {**os.environ, "PYTHONPATH": str(installed), "HARNESS_SHARED_DATA": str(shared_data)}
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        str(EXAMPLE / "tests")], capture_output=True, text=True, env=env,
                       cwd=EXAMPLE)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 passed" in r.stdout


def _imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, module, imported names) of every import statement of a Python file."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module, [a.name for a in node.names]))
    return out


def private_harness_imports(path: Path) -> list[str]:
    """Imports of built-in plugins or of underscore-prefixed harness modules or names."""
    bad = []
    for line, module, names in _imports(path):
        parts = module.split(".")
        if parts[0] == "harness_plugins":
            bad.append(f"{path}:{line}: imports the built-in plugins ({module})")
        elif parts[0] == "harness":
            private = [p for p in parts[1:] if p.startswith("_")] + [n for n in names if n.startswith("_")]
            if private:
                bad.append(f"{path}:{line}: imports private {', '.join(private)} from {module}")
    return bad


def test_examples_import_only_public_names():
    files = sorted((EXAMPLE.parent).rglob("*.py"))
    assert any(f.name == "layer_drop.py" for f in files)
    assert [b for f in files for b in private_harness_imports(f)] == []


def test_the_import_check_catches_private_imports(tmp_path):
    src = tmp_path / "bad.py"
    src.write_text("import harness\nfrom harness_plugins.tasks.ner import NERTask\n"
                   "from harness.cell import _key\nimport harness._x\nfrom harness.toolkit import pad_batch\n")
    found = private_harness_imports(src)
    assert len(found) == 3 and ":2:" in found[0] and "_key" in found[1] and "_x" in found[2]


def test_the_example_stays_small():
    """The compression and the model are short: the toolkit does the work (the lines counted
    include their documented ``Params``)."""
    code = EXAMPLE / "harness_example"
    assert len((code / "layer_drop.py").read_text().splitlines()) <= 60
    assert len((code / "model.py").read_text().splitlines()) <= 40
    assert len((code / "word_nb.py").read_text().splitlines()) < 60  # a model that is not a transformer
