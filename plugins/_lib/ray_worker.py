"""The ``ray`` executor's code that runs inside a Ray worker process (a cell's task and the
phase log actor), and the driver's search for the folders of ``--plugin`` modules that workers
must put on their path. Ray itself is imported only inside functions."""

from __future__ import annotations

import importlib.util
import os
import socket
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from harness.cell import CellOutcome, CellSpec, PluginSet, run_cell

# ---------------------------------------------------------------------------------------------
# Inside a Ray worker process

#: one PluginSet per Ray worker process (and per plugin selection), reused by its later cells
_WORKER_PLUGINS: dict[tuple[tuple[str, ...], tuple[str, ...]], PluginSet] = {}


class _PhaseLog:
    """A tiny actor: tasks report their phases to it, the driver drains it every ``POLL_S``."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def put(self, cell_id: str, phase: str) -> None:
        self.events.append((cell_id, phase))

    def drain(self) -> list[tuple[str, str]]:
        events, self.events = self.events, []
        return events


def _run_in_worker(spec: CellSpec, disabled: list[str], extra: list[str], paths: list[str],
                   threads: int, phases: Any) -> CellOutcome:
    """The body of a cell's Ray task: build (or reuse) the plugins, run the cell."""
    import ray

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    for p in paths:  # where the driver found --plugin modules (a local dir or shared storage)
        if p not in sys.path and os.path.isdir(p):
            sys.path.append(p)
    # Ray sets CUDA_VISIBLE_DEVICES to the GPU(s) it granted this task: that is cuda:0 here
    device = "cuda:0" if ray.get_gpu_ids() else "cpu"
    if device == "cpu" and threads > 0:
        try:
            import torch

            torch.set_num_threads(threads)
        except ImportError:
            pass
    last = [""]

    def progress(phase: str, text: str) -> None:
        if phases is not None and phase != last[0]:
            last[0] = phase
            phases.put.remote(spec.cell_id, phase)

    key = (tuple(disabled), tuple(extra))
    plugins = _WORKER_PLUGINS.get(key)
    if plugins is None:
        try:
            plugins = PluginSet.build(list(disabled), list(extra))
        except Exception as exc:  # noqa: BLE001 - reported as the cell's failure
            return CellOutcome(
                "failed", phase="setup", info={"device": device},
                error=f"could not load the harness plugins on Ray node {socket.gethostname()}: "
                      f"{type(exc).__name__}: {exc} (is every plugin installed on every node?)",
            )
        _WORKER_PLUGINS[key] = plugins
    return run_cell(replace(spec, device=device), plugins, progress=progress)


# ---------------------------------------------------------------------------------------------
# The driver


def _plugin_paths(modules: list[str]) -> list[str]:
    """Folders to put on a worker's sys.path so that it can import the --plugin modules."""
    paths: list[str] = []
    for name in modules:
        try:
            spec = importlib.util.find_spec(name.split(".")[0])
        except (ImportError, ValueError):
            continue
        if spec is None:
            continue
        if spec.submodule_search_locations:  # a package: its parent folder
            folders = [str(Path(p).parent) for p in spec.submodule_search_locations]
        elif spec.origin and spec.origin not in ("built-in", "frozen"):
            folders = [str(Path(spec.origin).parent)]
        else:
            folders = []
        # only folders the driver has on sys.path by hand (PYTHONPATH, the working directory):
        # installed packages are the nodes' business, and the Python installation is theirs too
        installed = {str(Path(p).resolve()) for p in (sys.prefix, sys.base_prefix)}
        for f in folders:
            resolved = str(Path(f).resolve())
            if f in sys.path and f not in paths and "-packages" not in resolved \
                    and not any(resolved.startswith(i + os.sep) for i in installed):
                paths.append(f)
    return paths
