"""Loading plugins from the command line: -p, --disable-plugin and the errors they give."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from harness.cli import main
from harness.errors import PluginError
from harness.plugins import check_disabled, get_plugin_manager


def invoke(*args, env=None):
    return CliRunner().invoke(main, list(args), catch_exceptions=False, env=env)


def test_p_naming_an_installed_plugin_module_loads_it_once():
    r = invoke("-p", "harness_plugins.models.hf", "plugins", "--json")
    assert r.exit_code == 0, r.output
    rows = json.loads(r.output)["plugins"]
    assert [row["name"] for row in rows].count("hf") == 1


def test_p_module_not_on_path_says_how_to_put_it_there():
    r = invoke("-p", "no_such_plugin_module", "plugins")
    assert r.exit_code == 2
    assert "not on the Python path" in r.output and "PYTHONPATH" in r.output
    assert "Traceback" not in r.output


def test_p_module_whose_dependency_is_missing_names_the_module(tmp_path, monkeypatch):
    (tmp_path / "needs_missing.py").write_text("import no_such_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    r = invoke("-p", "needs_missing", "plugins")
    assert r.exit_code == 2
    assert "'needs_missing'" in r.output and "no_such_dependency_xyz" in r.output
    assert "not on the Python path" not in r.output


def test_disable_unknown_plugin_is_an_error_with_did_you_mean():
    r = invoke("--disable-plugin", "nncff", "plugins")
    assert r.exit_code == 2
    assert "no plugin named 'nncff'" in r.output and "Did you mean: nncf" in r.output


def test_disable_unknown_plugin_from_env_is_an_error():
    r = invoke("plugins", env={"HARNESS_DISABLE_PLUGINS": "prunee"})
    assert r.exit_code == 2 and "Did you mean: prune?" in r.output


def test_disabling_a_p_module_by_its_name_is_allowed():
    check_disabled(["my_local_plugin"], extra=["my_local_plugin"])
    with pytest.raises(PluginError):
        check_disabled(["my_local_plugin"])


def test_unknown_name_mentions_the_disabled_plugin_that_provides_it():
    regs = get_plugin_manager(disabled=["torch-compressions"]).registries()
    with pytest.raises(PluginError) as err:
        regs.compressions.get("dynamic-int8")
    msg = str(err.value)
    assert "Unknown compression 'dynamic-int8'" in msg
    assert "comes from plugin 'torch-compressions', which is disabled" in msg
    with pytest.raises(PluginError) as err:  # a name nobody provides gets no such sentence
        regs.compressions.get("no-such-method")
    assert "disabled" not in str(err.value)
