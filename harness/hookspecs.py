"""Hook specifications of the ``harness`` entry-point group.

Implement a hook by decorating a function of the same name with ``@harness.hookimpl``. An
implementation may accept any subset of the arguments, so hooks can gain arguments later.
No hook here is ``firstresult``: every implementation is called.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import pandas as pd

    from .api import Compression, Executor, Model, Task
    from .suite import Suite

hookspec = pluggy.HookspecMarker("harness")
hookimpl = pluggy.HookimplMarker("harness")


@hookspec
def register_models(register: Callable[[type[Model]], None]) -> None:
    """Register ``harness.Model`` subclasses: call ``register(MyModel)`` once per class.

    Called once when the registries are built (``harness run``, ``harness plugins``).
    :param register: adds a class under its ``name``; a duplicate name raises ``PluginError``
        naming both plugins.
    """


@hookspec
def register_tasks(register: Callable[[type[Task]], None]) -> None:
    """Register ``harness.Task`` subclasses: call ``register(MyTask)`` once per class.

    Called once when the registries are built.
    :param register: adds a class under its ``name``; duplicates raise ``PluginError``.
    """


@hookspec
def register_compressions(register: Callable[[type[Compression]], None]) -> None:
    """Register ``harness.Compression`` subclasses: call ``register(MyCompression)``.

    Called once when the registries are built.
    :param register: adds a class under its ``name``; duplicates raise ``PluginError``.
    """


@hookspec
def register_executors(register: Callable[[type[Executor]], None]) -> None:
    """Register ``harness.Executor`` subclasses: call ``register(MyExecutor)``.

    Called once when the registries are built. ``harness run --executor NAME`` picks one; the
    built-ins are ``local`` (worker processes, the default) and ``inline`` (this process).
    :param register: adds a class under its ``name``; duplicates raise ``PluginError``.
    """


@hookspec
def run_started(suite: Suite, out_dir: Path, cells: list[dict[str, Any]]) -> None:
    """Called in the main process after the suite is validated, before the first cell runs.

    :param suite: the validated suite.
    :param out_dir: where ``results.jsonl`` is being written.
    :param cells: one dict per cell to run (``cell_id``, ``model``, ``task``, ``compression``).
    """


@hookspec
def result_recorded(row: dict[str, Any]) -> None:
    """Called in the main process for every result row, right after it is flushed to disk.

    :param row: the flat result row (see ``docs/results.md`` for its columns). Do not mutate it.
    """


@hookspec
def run_finished(results: pd.DataFrame, out_dir: Path) -> None:
    """Called once after the last cell, when every file of the run is written.

    :param results: all rows of this run (``harness.load_results`` form).
    :param out_dir: the run's output folder; add your own artifacts here.
    """
