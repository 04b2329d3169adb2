"""The plugin manager factory. Nothing here runs at import time."""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import importlib.metadata as md
import json
import os
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import pluggy

from . import hookspecs
from .api import Compression, Executor, Model, Task, Transform
from .capabilities import DEFAULT_MODEL_KIND, kinds_in
from .errors import PluginError
from .params import describe
from .registry import Registries, Registry, unknown_name_message
from .textfmt import table
from .version import __version__

GROUP = "harness"
#: Core plugins registered in every manager, after the entry points (like pytest's defaults).
DEFAULT_PLUGINS = ("harness.executors",)
DISABLE_ENV = "HARNESS_DISABLE_PLUGINS"


@dataclass
class PluginLoadError:
    name: str
    distribution: str
    error: str
    traceback: str

    def __str__(self) -> str:
        return f'Error loading plugin "{self.name}" from {self.distribution}: {self.error}'


class PluginManager(pluggy.PluginManager):
    """A pluggy manager that remembers which entry points failed and where plugins came from."""

    def __init__(self) -> None:
        super().__init__(GROUP)
        self.add_hookspecs(hookspecs)
        self.load_errors: list[PluginLoadError] = []
        self.distributions: dict[str, tuple[str, str]] = {}  # plugin name -> (dist, version)
        #: installed entry points skipped because they were disabled (name -> entry point)
        self.disabled_entrypoints: dict[str, md.EntryPoint] = {}

    def _disabled_hint(self, kind: str) -> Callable[[str], str | None]:
        """For an unknown name: which disabled plugin would have provided it. Imports the
        disabled plugins only then (they may be disabled because they are slow or broken)."""

        def hint(name: str) -> str | None:
            for plugin_name, ep in self.disabled_entrypoints.items():
                found: list[type] = []
                try:
                    module = ep.load()
                    hook = getattr(module, f"register_{kind}s", None)
                    if hook is not None:
                        hook(register=found.append)
                except Exception:  # noqa: BLE001 - a hint must never raise
                    continue
                if name in {getattr(cls, "name", "") for cls in found}:
                    return (f"{kind} {name!r} comes from plugin {plugin_name!r}, which is disabled "
                            f"(--disable-plugin or ${DISABLE_ENV}).")
            return None

        return hint

    def registries(self) -> Registries:
        """Collect every registered class through the ``register_*`` hooks."""
        regs = Registries(  # the bases are abstract: registered subclasses are concrete
            Registry("model", Model),  # type: ignore[type-abstract]
            Registry("task", Task),  # type: ignore[type-abstract]
            Registry("compression", Compression),  # type: ignore[type-abstract]
            Registry("executor", Executor),  # type: ignore[type-abstract]
        )
        if self.disabled_entrypoints:
            for kind in ("model", "task", "compression", "executor"):
                regs.by_kind(kind).hint = self._disabled_hint(kind)
        for hook, reg in (
            (self.hook.register_models, regs.models),
            (self.hook.register_tasks, regs.tasks),
            (self.hook.register_compressions, regs.compressions),
            (self.hook.register_executors, regs.executors),
        ):
            for impl in hook.get_hookimpls():
                source = impl.plugin_name

                def register(cls: type, _reg: Registry = reg, _source: str = source) -> None:
                    _reg.add(cls, _source)

                try:
                    impl.function(
                        **{a: register for a in impl.argnames if a == "register"}
                    )
                except PluginError:
                    raise
                except Exception as exc:
                    raise PluginError(
                        f"plugin {source!r} raised in {hook.name}: {type(exc).__name__}: {exc}"
                    ) from exc
        return regs


def disabled_from_env() -> list[str]:
    return [n.strip() for n in os.environ.get(DISABLE_ENV, "").split(",") if n.strip()]


def _load_entrypoint(pm: PluginManager, ep: Any, strict: bool) -> None:
    """Register one installed entry point (a blocked one is only remembered; a broken one is
    recorded in ``pm.load_errors``, or raised with ``strict``)."""
    if pm.is_blocked(ep.name):
        pm.disabled_entrypoints[ep.name] = ep
        return
    if pm.get_plugin(ep.name) is not None:
        return
    dist = ep.dist.name if ep.dist else "?"
    version = ep.dist.version if ep.dist else "?"
    try:
        pm.register(ep.load(), name=ep.name)
    except Exception as exc:  # a broken plugin must not take the others down
        err = PluginLoadError(ep.name, f"{dist} {version}", f"{type(exc).__name__}: {exc}",
                              traceback.format_exc())
        if strict:
            raise PluginError(str(err)) from exc
        pm.load_errors.append(err)
        return
    pm.distributions[ep.name] = (dist, version)


def get_plugin_manager(
    *,
    load_entrypoints: bool = True,
    disabled: Iterable[str] = (),
    strict: bool = False,
    extra_plugins: Iterable[ModuleType | Any] = (),
) -> PluginManager:
    """Build a fresh plugin manager.

    :param load_entrypoints: load every installed ``harness`` entry point (built-ins included).
    :param disabled: plugin (entry-point) names to skip, on top of ``$HARNESS_DISABLE_PLUGINS``.
    :param strict: raise ``PluginError`` on the first plugin that fails to import, instead of
        recording it in ``pm.load_errors`` and going on.
    :param extra_plugins: modules or objects to register directly (tests, notebooks).
    """
    pm = PluginManager()
    for name in [*disabled, *disabled_from_env()]:
        pm.set_blocked(name)
    if load_entrypoints:
        for ep in sorted(md.entry_points(group=GROUP), key=lambda e: e.name):
            _load_entrypoint(pm, ep, strict)
    for name in DEFAULT_PLUGINS:
        if not pm.is_blocked(name):
            pm.register(importlib.import_module(name), name=name)
            pm.distributions[name] = ("harness-bench", __version__)
    for plugin in extra_plugins:
        name = getattr(plugin, "__name__", None) or type(plugin).__name__
        # a module given with -p that is also an installed entry point is loaded once
        if pm.get_plugin(name) is None and not pm.is_blocked(name) and not pm.is_registered(plugin):
            pm.register(plugin, name=name)
    pm.check_pending()
    return pm


def installed_plugin_names() -> list[str]:
    """Entry-point names of every installed plugin, and the core's own plugins."""
    return sorted({ep.name for ep in md.entry_points(group=GROUP)} | set(DEFAULT_PLUGINS))


def check_disabled(names: Iterable[str], extra: Iterable[str] = ()) -> None:
    """Raise ``PluginError`` for a name to disable that no installed plugin (or ``-p`` module)
    has: a typo would otherwise silently disable nothing."""
    known = [*installed_plugin_names(), *extra]
    for name in names:
        if name not in known:
            msg = f"--disable-plugin / ${DISABLE_ENV}: no plugin named {name!r} is installed."
            close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
            if close:
                msg += f" Did you mean: {', '.join(close)}?"
            raise PluginError(msg + f" Installed: {', '.join(known)} (see 'harness plugins').")


def import_plugin_module(module: str) -> ModuleType:
    """Import a module named with ``-p``/``$HARNESS_PLUGINS``; a ``PluginError`` saying how to put
    it on the path when it cannot be imported."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and module.split(".")[0] == exc.name.split(".")[0]:
            raise PluginError(
                f"cannot import plugin module {module!r} given with --plugin/-p: it is not on the "
                f"Python path (cwd {os.getcwd()}). Put the folder that holds it on the path "
                f"(PYTHONPATH=/path/to/folder harness ...), run 'python -m harness ...' from that "
                f"folder, or install its package (pip install -e /path/to/package)."
            ) from exc
        raise PluginError(f"plugin module {module!r} given with --plugin/-p failed to import: "
                          f"{type(exc).__name__}: {exc} (a package it needs is missing)") from exc
    except Exception as exc:
        raise PluginError(f"plugin module {module!r} given with --plugin/-p failed to import: "
                          f"{type(exc).__name__}: {exc}") from exc


def plugin_table(pm: PluginManager) -> list[dict[str, str]]:
    """One row per registered class: name, kind, version, plugin, distribution, description and
    (compressions) where it may stand in a chain."""
    regs = pm.registries()
    rows = []
    for kind in ("model", "task", "compression", "executor"):
        reg = regs.by_kind(kind)
        for name in reg:
            cls = reg.classes[name]
            source = reg.sources[name]
            dist, dist_version = pm.distributions.get(source, ("(registered directly)", ""))
            rows.append(
                {
                    "name": name,
                    "kind": kind,
                    "version": str(cls.version),
                    "plugin": source,
                    "distribution": f"{dist} {dist_version}".strip(),
                    "description": cls.description or (cls.__doc__ or "").strip().split("\n")[0],
                    # where a compression may stand in a chain: a Transform feeds the next step
                    "chain": ("" if kind != "compression" else
                              "any step" if issubclass(cls, Transform) else "last step"),
                    "models": _models_column(kind, cls),
                }
            )
    return rows


def _models_column(kind: str, cls: type) -> str:
    """A model's kind; the model kinds a task or compression accepts ("any" for all)."""
    if kind == "model":
        return str(getattr(cls, "kind", DEFAULT_MODEL_KIND))
    if kind not in ("task", "compression"):
        return ""
    declared = getattr(cls, "requires", ())  # a property (set per instance): no kind named
    kinds = kinds_in(declared if isinstance(declared, (tuple, list)) else ())
    return "any" if "*" in kinds else ",".join(kinds)


def classes_named(pm: PluginManager, name: str) -> list[tuple[str, type]]:
    """``(kind, class)`` of every registered plugin called ``name`` (a name may be, say, both a
    task and a model); a ``PluginError`` with near names when there is none."""
    regs = pm.registries()
    found = [(kind, regs.by_kind(kind).classes[name])
             for kind in ("model", "task", "compression", "executor") if name in regs.by_kind(kind)]
    if not found:
        known = sorted({n for kind in ("model", "task", "compression", "executor")
                        for n in regs.by_kind(kind).classes})
        raise PluginError(unknown_name_message("plugin", name, known) + " (see 'harness plugins')")
    return found


def _cell(text: str) -> str:
    """``text`` for a Markdown table cell: a ``|`` (a union type) escaped, so the row holds."""
    return text.replace("|", "\\|")


def params_markdown(pm: PluginManager, kinds: Iterable[str] = ("model", "task", "compression",
                                                                 "executor")) -> str:
    """One Markdown table of parameters per registered plugin (docs/plugins.md, "Parameters of
    the installed plugins", is this text for the built-ins)."""
    regs = pm.registries()
    out = []
    for kind in kinds:
        for name in regs.by_kind(kind):
            cls = regs.by_kind(kind).classes[name]
            out.append(f"#### {kind} `{name}`\n")
            infos = describe(cls)
            if not infos:
                out.append("No parameters.\n")
                continue
            out.append("| parameter | type | default | meaning |\n|---|---|---|---|")
            out.extend(f"| `{p.name}` | `{_cell(p.type)}` | `{_cell(p.default)}` | {_cell(p.doc)} |"
                       for p in infos)
            out.append("")
    return "\n".join(out)


def params_listing(pm: PluginManager, name: str, *, as_json: bool = False) -> str:
    """``harness plugins --params NAME``: the parameters of every plugin called ``name``, as
    aligned text or JSON."""
    found = classes_named(pm, name)
    if as_json:
        return json.dumps([{"kind": k, "name": name, "class": f"{c.__module__}.{c.__qualname__}",
                            "params": [dataclasses.asdict(p) for p in describe(c)]}
                           for k, c in found], indent=1) + "\n"
    out = []
    for kind, cls in found:
        out.append(f"{kind} {name} ({cls.__module__}.{cls.__qualname__}, version {getattr(cls, 'version', '?')})\n")
        infos = describe(cls)
        out.append(table(["PARAMETER", "TYPE", "DEFAULT", "MEANING"],
                         [[p.name, p.type, p.default, p.doc] for p in infos])
                   if infos else "  no parameters\n")
    return "".join(out)
