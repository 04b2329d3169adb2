from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import harness
from harness.errors import PluginError
from harness.plugins import get_plugin_manager, plugin_table


class Dup(harness.Compression):
    name = "none"


class DupPlugin:
    @harness.hookimpl
    def register_compressions(self, register):
        register(Dup)


def fake_distribution(tmp: Path, dist: str, ep_name: str, module: str, source: str) -> Path:
    """A real installed-distribution layout (dist-info + entry_points.txt) on a path entry."""
    info = tmp / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[harness]\n{ep_name} = {module}\n")
    (tmp / f"{module}.py").write_text(textwrap.dedent(source))
    return tmp


def test_factory_builds_fresh_managers():
    a, b = get_plugin_manager(), get_plugin_manager()
    assert a is not b
    assert a.get_plugin("hf") is not None


def test_builtins_registered_through_entry_points():
    pm = get_plugin_manager()
    assert not pm.load_errors, [str(e) for e in pm.load_errors]
    regs = pm.registries()
    assert "hf" in regs.models
    assert {"ner", "classification"} <= set(regs.tasks)
    assert {"none", "dynamic-int8", "nncf-ptq"} <= set(regs.compressions)
    assert pm.distributions["hf"][0] == "harness-bench"


def test_no_entry_points_means_no_builtins():
    pm = get_plugin_manager(load_entrypoints=False)
    assert list(pm.registries().models) == []


def test_disable_plugin_by_name_and_env(monkeypatch):
    pm = get_plugin_manager(disabled=["nncf"])
    assert "nncf-ptq" not in pm.registries().compressions
    monkeypatch.setenv("HARNESS_DISABLE_PLUGINS", "prune, ner")
    regs = get_plugin_manager().registries()
    assert "ner" not in regs.tasks and "prune" not in regs.compressions
    assert "hf" in regs.models


def test_duplicate_names_name_both_sources():
    pm = get_plugin_manager(extra_plugins=[DupPlugin()])
    with pytest.raises(PluginError) as e:
        pm.registries()
    msg = str(e.value)
    assert "duplicate compression name 'none'" in msg
    assert "torch-compressions" in msg and "DupPlugin" in msg


def test_unknown_name_did_you_mean():
    regs = get_plugin_manager().registries()
    with pytest.raises(PluginError) as e:
        regs.compressions.get("dynamic-int")
    msg = str(e.value)
    assert msg.startswith("Unknown compression 'dynamic-int'. Did you mean: dynamic-int8")
    assert "Available: " in msg and "nncf-ptq" in msg


def test_plugin_raising_at_import_is_reported_and_others_load(tmp_path, monkeypatch):
    fake_distribution(tmp_path, "harness-broken", "broken", "broken_mod",
                      "raise RuntimeError('missing native library')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    pm = get_plugin_manager()
    assert [e.name for e in pm.load_errors] == ["broken"]
    err = str(pm.load_errors[0])
    assert 'Error loading plugin "broken" from harness-broken 0.1' in err
    assert "RuntimeError: missing native library" in err
    assert "hf" in pm.registries().models  # the others still load
    with pytest.raises(PluginError, match='plugin "broken" from harness-broken'):
        get_plugin_manager(strict=True)
    assert not get_plugin_manager(disabled=["broken"]).load_errors


def test_plugin_raising_in_register_hook_is_named():
    class Bad:
        @harness.hookimpl
        def register_models(self, register):
            raise KeyError("oops")

    pm = get_plugin_manager(load_entrypoints=False, extra_plugins=[Bad()])
    with pytest.raises(PluginError, match=r"plugin 'Bad' raised in register_models: KeyError"):
        pm.registries()


def test_registering_a_non_plugin_class_is_an_error():
    class NotAModel:
        name = "x"

    class Bad:
        @harness.hookimpl
        def register_models(self, register):
            register(NotAModel)

    with pytest.raises(PluginError, match="not a subclass of harness.Model"):
        get_plugin_manager(load_entrypoints=False, extra_plugins=[Bad()]).registries()


def test_plugin_table_lists_kind_version_distribution():
    rows = plugin_table(get_plugin_manager())
    hf = next(r for r in rows if r["name"] == "hf")
    assert hf["kind"] == "model" and hf["plugin"] == "hf"
    by_name = {r["name"]: r for r in rows}
    assert by_name["prune"]["chain"] == "any step" and by_name["nncf-ptq"]["chain"] == "last step"
    assert hf["chain"] == ""
    assert hf["distribution"].startswith("harness-bench ")


def test_cli_plugins_reports_broken_plugin(tmp_path):
    fake_distribution(tmp_path, "harness-broken", "broken", "broken_mod", "import nonexistent_pkg\n")
    env = {"PYTHONPATH": str(tmp_path), "PATH": str(Path(sys.executable).parent)}
    cmd = [sys.executable, "-m", "harness", "plugins"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert r.returncode == 1
    assert 'Error loading plugin "broken" from harness-broken 0.1' in r.stderr
    assert "ModuleNotFoundError" in r.stderr
    assert "dynamic-int8" in r.stdout  # built-ins still listed
    r = subprocess.run([sys.executable, "-m", "harness", "--strict", "plugins"],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 2 and "Error: Error loading plugin \"broken\"" in r.stderr


def test_every_package_is_in_the_distribution():
    """pyproject.toml lists its packages by hand: a package missing there is missing from a
    wheel or a non-editable install (harness.toolkit once was); every module of plugins/ that
    implements a hook is registered through an entry point, and is named after it."""
    import tomllib

    root = Path(__file__).resolve().parents[1]
    conf = tomllib.loads((root / "pyproject.toml").read_text())
    listed = set(conf["tool"]["setuptools"]["packages"])
    on_disk = {".".join(p.parent.relative_to(root).parts) for p in (root / "harness").rglob("__init__.py")}
    on_disk |= {".".join(("harness_plugins", *p.parent.relative_to(root / "plugins").parts))
                for p in (root / "plugins").rglob("__init__.py")}
    assert on_disk - listed == set()
    assert {"harness_plugins", "harness_plugins.compressions", "harness_plugins._lib"} <= listed
    eps = conf["project"]["entry-points"]["harness"]
    modules = {".".join(("harness_plugins", *p.relative_to(root / "plugins").with_suffix("").parts))
               for p in (root / "plugins").rglob("*.py") if "@harness.hookimpl" in p.read_text()}
    assert "harness_plugins.compressions.finetune" in modules
    assert modules - set(eps.values()) == set()
    for name, module in eps.items():  # each entry point in a module named after it
        assert module.rsplit(".", 1)[1] == name.replace("-", "_"), (name, module)


def test_the_old_task_modules_warn_and_re_export():
    """harness_plugins.ner and .classification (shown to third parties by docs/plugins.md) are
    deprecated re-exports for one release: they warn, and declare no hooks of their own."""
    code = ("import warnings; warnings.simplefilter('error', DeprecationWarning)\n"
            "import harness_plugins.{old} as m\n")
    for old, new, name in (("ner", "tasks.ner", "NERTask"),
                           ("classification", "tasks.classification", "ClassificationTask")):
        r = subprocess.run([sys.executable, "-c", code.format(old=old)], capture_output=True, text=True)
        assert r.returncode != 0 and "DeprecationWarning" in r.stderr and f"harness_plugins.{new}" in r.stderr
        with pytest.warns(DeprecationWarning):
            shim = importlib.reload(importlib.import_module(f"harness_plugins.{old}"))
        current = importlib.import_module(f"harness_plugins.{new}")
        assert getattr(shim, name) is getattr(current, name)
        assert not hasattr(shim, "register_tasks")
