"""Scorers of per-example outputs: the functions a task plugin declares with :func:`scorer`, so
that the gate's paired tests call the one a predictions file names, and no other function.

A predictions file comes from a run folder, maybe someone else's (``harness compare BASELINE``):
the ``scorer`` name in its metadata is looked up in this registry, which the plugins fill when
they are imported; a name is never imported or resolved as a module path from the file.

Aliases: a scorer's name is its ``module:qualname``, so moving the function to another module
renames it, and predictions files recorded before the move (an old baseline run folder) name it
by its old path. ``@scorer(aliases=("old.module:name",))`` declares those old names too: they
look up the same function, so ``harness compare`` of an old run still runs its paired test. New
files always record the current name (:func:`scorer_name`). The built-in ``ner`` task declares
its scorer's name from before the built-in plugins were laid out by axis this way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, overload

from .errors import DataError

__all__ = ["get_scorer", "scorer", "scorer_name"]

F = TypeVar("F", bound=Callable[..., Any])

_SCORERS: dict[str, Callable[..., Any]] = {}
_plugins_loaded = False


def scorer_name(fn: Callable[..., Any]) -> str:
    """The name a predictions file records for ``fn``: ``module:qualname``."""
    return f"{fn.__module__}:{fn.__qualname__}"


@overload
def scorer(fn: F, *, aliases: tuple[str, ...] = ()) -> F: ...


@overload
def scorer(fn: None = None, *, aliases: tuple[str, ...] = ()) -> Callable[[F], F]: ...


def scorer(fn: Any = None, *, aliases: tuple[str, ...] = ()) -> Any:
    """Declare ``fn`` a scorer: ``fn(gold, pred) -> (per-example stats, reduce)``, as
    ``ctx.record_predictions(..., scorer=scorer_name(fn))`` names it (docs/plugins.md). Only
    declared scorers can be called by the gate. Use it in the module of an installed plugin.

    ``@scorer(aliases=("old.module:name", ...))`` also declares the names ``fn`` had before it
    moved (``module:qualname`` strings), so predictions files that record an old name still
    find it (see the module docstring)."""
    if fn is None:
        return lambda f: scorer(f, aliases=aliases)
    for name in aliases:
        if ":" not in name:
            raise ValueError(f"scorer alias {name!r} is not 'module:qualname'")
    for name in (scorer_name(fn), *aliases):
        _SCORERS[name] = fn
    fn.__harness_scorer__ = scorer_name(fn)
    return fn


def _load_plugins() -> None:
    """Import the installed plugins once (the modules of the ``harness`` entry points, as
    ``harness.plugins`` does, less those disabled in ``$HARNESS_DISABLE_PLUGINS``): their
    modules declare their scorers. Only installed entry points are imported, never a name
    read from a file."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    import importlib.metadata as md
    import os

    disabled = {n.strip() for n in os.environ.get("HARNESS_DISABLE_PLUGINS", "").split(",")}
    for ep in md.entry_points(group="harness"):
        if ep.name not in disabled:
            try:
                ep.load()
            except Exception:  # noqa: BLE001 - a broken plugin leaves its scorers undeclared
                continue


def get_scorer(name: str, source: object) -> Callable[..., Any]:
    """The declared scorer ``name``; a :class:`DataError` naming ``source`` (the predictions
    file) when no installed plugin declares one by that name."""
    fn = _SCORERS.get(name)
    if fn is None:
        _load_plugins()
        fn = _SCORERS.get(name)
    if fn is None:
        known = ", ".join(sorted(_SCORERS)) or "none"
        raise DataError(f"{source}: scorer {name!r} is not declared by an installed harness plugin "
                        f"(@harness.api.scorer), so it is not called. Declared scorers: {known}")
    return fn
