"""Every hook has a test and documentation (as datasette does), and is typed."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

import harness
from harness import hookspecs

TESTS = Path(__file__).parent
DOCS = Path(__file__).parents[1] / "docs" / "plugins.md"
HOOKS = sorted(
    name for name, fn in vars(hookspecs).items()
    if callable(fn) and hasattr(fn, "harness_spec")
)


def test_there_are_hooks():
    assert {"register_models", "register_tasks", "register_compressions", "register_executors", "run_started",
            "result_recorded", "run_finished"} == set(HOOKS)


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_has_a_test(hook):
    pattern = re.compile(rf"^def test_hook_{hook}\b", re.M)
    assert any(pattern.search(p.read_text()) for p in TESTS.glob("test_*.py")), \
        f"hook {hook!r} has no test named test_hook_{hook}"


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_documented_with_signature(hook):
    doc = DOCS.read_text()
    sig = inspect.signature(getattr(hookspecs, hook))
    params = ", ".join(sig.parameters)
    assert f"### {hook}({params})" in doc, f"docs/plugins.md lacks '### {hook}({params})'"


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_typed_and_has_docstring(hook):
    fn = getattr(hookspecs, hook)
    doc = fn.__doc__ or ""
    assert "Called" in doc, f"{hook}: the docstring does not say when the hook is called"
    sig = inspect.signature(fn)
    undocumented = [p for p in sig.parameters if f":param {p}:" not in doc]
    assert not undocumented, f"{hook}: parameters without ':param' in the docstring: {undocumented}"
    assert all(p.annotation is not inspect.Parameter.empty for p in sig.parameters.values())
    assert sig.return_annotation is not inspect.Signature.empty


class _Recorder:
    def __init__(self):
        self.seen = []


def _register_hook_plugin(kind: str, cls: type):
    rec = _Recorder()

    class P:
        pass

    def impl(register):
        rec.seen.append(kind)
        register(cls)

    impl.__name__ = f"register_{kind}s"
    setattr(P, impl.__name__, staticmethod(harness.hookimpl(impl)))
    return P(), rec


def test_hook_register_models():
    class M(harness.Model):
        name = "my-model"

    plugin, rec = _register_hook_plugin("model", M)
    regs = harness.get_plugin_manager(extra_plugins=[plugin]).registries()
    assert regs.models.get("my-model") is M and rec.seen == ["model"]


def test_hook_register_tasks():
    class T(harness.Task):
        name = "my-task"

    plugin, rec = _register_hook_plugin("task", T)
    regs = harness.get_plugin_manager(extra_plugins=[plugin]).registries()
    assert regs.tasks.get("my-task") is T and rec.seen == ["task"]


def test_hook_register_compressions():
    class C(harness.Compression):
        name = "my-compression"

    plugin, rec = _register_hook_plugin("compression", C)
    regs = harness.get_plugin_manager(extra_plugins=[plugin]).registries()
    assert regs.compressions.get("my-compression") is C and rec.seen == ["compression"]
