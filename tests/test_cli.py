from __future__ import annotations

import json

from click.testing import CliRunner

import harness
from harness.cli import main


def invoke(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_version():
    r = invoke("--version")
    assert r.exit_code == 0 and harness.__version__ in r.output


def test_every_command_help_has_an_example():
    top = invoke("--help")
    assert "Examples:" in top.output
    for cmd in main.commands:
        r = invoke(cmd, "--help")
        assert r.exit_code == 0
        assert "Example" in r.output, f"'harness {cmd} --help' has no example"


def test_commands_exist():
    assert {"run", "plugins", "report", "compare"} <= set(main.commands)


def test_plugins_json():
    r = invoke("plugins", "--json")
    doc = json.loads(r.output)
    kinds = {(p["name"], p["kind"]) for p in doc["plugins"]}
    assert ("hf", "model") in kinds and ("ner", "task") in kinds and ("none", "compression") in kinds
    assert doc["load_errors"] == []


def test_disable_plugin_option():
    r = invoke("--disable-plugin", "nncf", "plugins", "--json")
    names = {p["name"] for p in json.loads(r.output)["plugins"]}
    assert "nncf-ptq" not in names and "none" in names


def test_missing_suite_file_is_exit_2(tmp_path):
    r = CliRunner().invoke(main, ["run", str(tmp_path / "nope.yaml")])
    assert r.exit_code == 2 and "nope.yaml: suite file not found" in r.output


def test_unknown_parameter_is_exit_2(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("models: [{plugin: hf, params: {pth: x}}]\ntasks: [ner]\n")
    r = CliRunner().invoke(main, ["run", str(p)])
    assert r.exit_code == 2
    assert "s.yaml: models[0].params.pth: unknown parameter 'pth' for model plugin 'hf'. Did you mean: path?" in r.output


def test_one_version_source():
    """harness.__version__, --version and the plugins table all read the package metadata."""
    from importlib.metadata import version

    assert harness.__version__ == version("harness-bench")
    from harness.plugins import get_plugin_manager
    from harness.version import __version__

    assert __version__ == harness.__version__
    assert get_plugin_manager().distributions["harness.executors"] == ("harness-bench", __version__)
    for module in (harness, harness.version):
        text = (__import__("pathlib").Path(module.__file__)).read_text()
        assert '__version__ = "' not in text  # no second, hand-kept copy
