"""Name -> class registries for models, tasks and compressions, with helpful errors."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from .api import Compression, Executor, Model, Plugin, Task
from .errors import PluginError

P = TypeVar("P", bound=Plugin)


@dataclass
class Registry(Generic[P]):
    """Classes of one kind, by name. ``add`` rejects duplicates, ``get`` suggests near names."""

    kind: str
    base: type[P]
    classes: dict[str, type[P]] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    #: for an unknown name, an extra sentence (e.g. "it comes from a disabled plugin") or None
    hint: Callable[[str], str | None] | None = None

    def add(self, cls: type[P], source: str) -> None:
        if not (isinstance(cls, type) and issubclass(cls, self.base)):
            raise PluginError(
                f"plugin {source!r} registered {cls!r} as a {self.kind}, "
                f"but it is not a subclass of harness.{self.base.__name__}"
            )
        name = cls.name
        if not name:
            raise PluginError(f"plugin {source!r} registered {cls.__qualname__} without a name")
        if name in self.classes:
            raise PluginError(
                f"duplicate {self.kind} name {name!r}: registered by {self.sources[name]!r} "
                f"({self.classes[name].__module__}.{self.classes[name].__qualname__}) and by "
                f"{source!r} ({cls.__module__}.{cls.__qualname__})"
            )
        self.classes[name] = cls
        self.sources[name] = source

    def get(self, name: str) -> type[P]:
        try:
            return self.classes[name]
        except KeyError:
            msg = unknown_name_message(self.kind, name, self.classes)
            extra = self.hint(name) if self.hint is not None else None
            raise PluginError(f"{msg}. {extra}" if extra else msg) from None

    def __contains__(self, name: object) -> bool:
        return name in self.classes

    def __iter__(self):
        return iter(sorted(self.classes))


def unknown_name_message(kind: str, name: str, known: object) -> str:
    names = sorted(known)  # type: ignore[call-overload]
    msg = f"Unknown {kind} {name!r}."
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    if close:
        msg += f" Did you mean: {', '.join(close)}?"
    msg += f" Available: {', '.join(names) if names else '(none)'}"
    return msg


@dataclass
class Registries:
    models: Registry[Model]
    tasks: Registry[Task]
    compressions: Registry[Compression]
    executors: Registry[Executor]

    def by_kind(self, kind: str) -> Registry:
        kinds: dict[str, Registry] = {"model": self.models, "task": self.tasks,
                                      "compression": self.compressions, "executor": self.executors}
        return kinds[kind]
