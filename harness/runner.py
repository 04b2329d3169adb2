"""Expand a suite into cells, run them in isolated workers, write rows as each cell finishes.

Each cell runs in a spawned worker process: one per visible GPU (pinned with
``CUDA_VISIBLE_DEVICES``), or one on CPU unless ``jobs`` says otherwise. A worker that crashes,
is killed, runs out of memory or passes the per-cell timeout marks its cell ``failed`` and is
replaced. Finished cells are cached by a hash of everything that defines them, so a re-run
recomputes nothing and a run killed with ``kill -9`` resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import itertools
import json
import signal
import sys
import threading
import uuid
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .api import ExecutorContext
from .cell import CellOutcome, CellSpec, PluginSet
from .cellstore import (
    cache_cell,
    cell_rows,
    complete_cells,
    keep_recipe,
    predictions_path,
    read_cache,
    restore_predictions,
    save_predictions,
)
from .errors import BadInput, FolderInUse, HarnessWarning, RunFailed, SuiteError
from .fsutil import FolderLock, no_space
from .params import as_key
from .plugins import PluginManager
from .provenance import device_name, environment, gpu_environment
from .results import RESULTS_FILE, ResultsWriter
from .rows import KEY, build, cell_key, cell_label
from .suite import Suite
from .textfmt import skipped_lines
from .version import __version__


@dataclass
class RunOptions:
    jobs: int | None = None  #: worker processes; None: one per GPU, or 1 on CPU; 0: in-process
    devices: list[str] | None = None  #: e.g. ["cuda:0", "cuda:1"] or ["cpu"]; None: detect
    force: bool = False  #: recompute cells found in the cache
    only: list[str] = field(default_factory=list)  #: glob patterns on "model/task/compression"
    show_progress: bool = True
    disabled_plugins: list[str] = field(default_factory=list)
    extra_plugins: list[str] = field(default_factory=list)  #: importable module names
    executor: str | None = None  #: registered executor name; None: "local" ("inline" if jobs=0)
    address: str | None = None  #: cluster address for executors that use one
    wait_s: float = 0.0  #: how long to wait for another run holding the results folder


@dataclass
class RunSummary:
    out_dir: Path
    run_id: str
    counts: dict[str, int]
    bad_input: int = 0  #: failed cells whose failure is bad input (a data file, a parameter)

    @property
    def failed(self) -> int:
        return self.counts.get("failed", 0)

    @property
    def exit_status(self) -> int:
        """0 all good; 2 when every failure is bad input; 1 when any cell crashed."""
        if not self.failed:
            return 0
        return 2 if self.bad_input == self.failed else 1


#: device nodes of the GPU drivers torch.cuda can use (NVIDIA; AMD ROCm; WSL2's GPU bridge)
GPU_NODES = ("/dev/nvidiactl", "/dev/nvidia0", "/proc/driver/nvidia", "/dev/kfd", "/dev/dxg")


def may_have_gpu(nodes: Iterable[str] = GPU_NODES) -> bool:
    """False when this is Linux and no GPU driver node exists: CUDA cannot be available, and
    :func:`detect_devices` need not import torch (2-3 s of a fully cached re-run)."""
    return not sys.platform.startswith("linux") or any(Path(n).exists() for n in nodes)


def detect_devices() -> list[str]:
    """Visible CUDA devices, or ["cpu"]. Imports torch only here, and only when a GPU driver
    is present."""
    if not may_have_gpu():
        return ["cpu"]
    try:
        import torch

        if torch.cuda.is_available():
            return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    except ImportError:
        pass
    return ["cpu"]


def _resolved_identity(plugins: PluginSet, entry) -> str:
    """What defines a (non-chain) entry as its plugin resolved it: module, class, version,
    weights or data hash, and the parameters with defaults and "auto" values filled in (a
    changed default recomputes the cell even without a version bump). A plugin that cannot be
    built here is ``unresolved`` (its cell reports why); a plugin that rejects the suite's
    parameters is a :class:`SuiteError` before any cell runs."""
    try:
        plugin: Any = plugins.create(entry)
    except BadInput as exc:
        raise SuiteError(str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - reported when the cell runs
        return f"unresolved:{type(exc).__name__}"
    try:
        cls = type(plugin)
        extra = plugin.identity() if entry.kind == "model" else (
            plugin.data_hash() if entry.kind == "task" else "")
        resolved = as_key(plugin)
    except Exception as exc:  # noqa: BLE001 - reported when the cell runs
        return f"unresolved:{type(exc).__name__}"
    return f"{cls.__module__}.{cls.__qualname__}@{cls.version}:{extra}:{json.dumps(resolved, sort_keys=True)}"


def plan(suite: Suite, plugins: PluginSet, device_kind: str, harness_version: str,
         only: Iterable[str] = ()) -> list[CellSpec]:
    """The product of the suite's models x tasks x compressions, with a cache key each.

    Cells of one (model, task) are adjacent so a worker reuses the fine-tuned model.
    """
    ident: dict[str, str] = {}

    def identity(entry) -> str:
        key = repr(sorted(entry.spec().items()))
        if key not in ident:  # a chain: its steps as each resolved them
            ident[key] = ("chain:" + json.dumps([identity(step) for step in entry.steps])
                          if entry.steps else _resolved_identity(plugins, entry))
        return ident[key]

    patterns = list(only)
    s = suite.settings
    timing = [s.warmup, s.min_iterations, s.min_duration_s, s.throughput_batch_size,
              *([s.latency_seq_len] if s.latency_seq_len else [])]
    cells = []
    for m, t, c in itertools.product(suite.models, suite.tasks, suite.compressions):
        if patterns and not any(fnmatch.fnmatch(cell_label((m, t, c)), p) for p in patterns):
            continue
        doc = {
            "model": [m.spec(), identity(m)], "task": [t.spec(), identity(t)],
            "compression": [c.spec(), identity(c)], "harness": harness_version,
            "device": device_kind, "seed": s.seed, "timing": timing,
            **({"validation_split": s.validation_split} if s.validation_split else {}),
        }
        blob = json.dumps(doc, sort_keys=True, default=str).encode()
        cells.append(CellSpec(hashlib.sha256(blob).hexdigest()[:16], m, t, c, suite.settings))
    return cells


# ---------------------------------------------------------------------------------------------
# The run


def run_suite(
    suite: Suite,
    pm: PluginManager,
    out_dir: Path,
    opts: RunOptions | None = None,
) -> RunSummary:
    """Run every cell of ``suite`` not already done; append rows to ``out_dir/results.jsonl``."""
    opts = opts or RunOptions()
    out_dir = Path(out_dir)
    registries = pm.registries()
    suite.validate(registries)
    if opts.executor:
        registries.executors.get(opts.executor)  # unknown name: fail before any work
    devices = opts.devices or detect_devices()
    device_kind = "cpu" if devices == ["cpu"] else device_name(devices[0])
    jobs = opts.jobs if opts.jobs is not None else (len(devices) if devices != ["cpu"] else 1)

    main_plugins = PluginSet(registries)
    cells = plan(suite, main_plugins, device_kind, __version__, opts.only)
    run_id = uuid.uuid4().hex[:12]
    env = {**environment(), **gpu_environment(devices)}
    base = {"run_id": run_id, "suite": suite.name, "suite_hash": suite.hash,
            "seed": suite.settings.seed, "jobs": jobs, **env}
    cache = Path(suite.settings.cache_dir) / "cells"
    cache_writable = True
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a read-only shared cache is still read; results go to out_dir
        cache_writable = False
        _warn(f"cannot create the cell cache folder {cache} ({exc}); finished cells are "
              f"not cached, results are written to {out_dir} as usual")

    run = _Run(suite, pm, registries, out_dir, opts, devices, jobs, base, cache, cache_writable)
    with _results_lock(out_dir, opts.wait_s), _disk_full_message(out_dir, cache):
        return _run_locked(run, cells)


@contextlib.contextmanager
def _results_lock(out_dir: Path, wait_s: float):
    """Hold the results folder's OS lock (:class:`harness.fsutil.FolderLock`) for the block;
    :class:`FolderInUse` (exit 2) naming the holder when another run keeps it past ``wait_s``."""
    lock = FolderLock(out_dir)
    if not lock.acquire(wait_s, on_wait=lambda who: _warn(
            f"{out_dir} is in use by another harness run ({who}); waiting up to {wait_s:g} s")):
        raise FolderInUse(
            f"{out_dir} is in use by another harness run ({lock.holder()}): two runs appending "
            f"to one results file would lose rows. Wait for it to finish (or pass --wait SECONDS), "
            f"or give this run another --out")
    try:
        yield
    finally:
        lock.release()


@contextlib.contextmanager
def _disk_full_message(out_dir: Path, cache: Path):
    """A full disk becomes one :class:`RunFailed` line (exit 1) that names the folder."""
    try:
        yield
    except OSError as exc:
        if not no_space(exc):
            raise
        raise RunFailed(
            f"no space left on the device of {out_dir} ({exc.filename or exc.strerror}): the "
            f"cells finished before are in the cell cache {cache}; free some space and run the "
            f"same command again: they are restored without recomputing") from None


@dataclass
class _Run:
    """What the phases of one run share."""

    suite: Suite
    pm: PluginManager
    registries: Any
    out_dir: Path
    opts: RunOptions
    devices: list[str]
    jobs: int
    base: dict[str, Any]  #: the columns every row of this run has (run id, provenance)
    cache: Path  #: the cell cache folder
    cache_writable: bool


def _run_locked(run: _Run, cells: list[CellSpec]) -> RunSummary:
    """The run proper, under the results folder's lock: resume, execute, export."""
    writer = ResultsWriter(run.out_dir)
    counts: dict[str, int] = {}
    try:
        todo = _resume(run, cells, writer, counts)
        run.pm.hook.run_started(suite=run.suite, out_dir=run.out_dir, cells=[
            {"cell_id": c.cell_id, **dict(zip(KEY, cell_key(c)))} for c in todo])
        bad_input = _execute(run, todo, writer, counts)
        from .timephase import time_groups

        time_groups(run, cells, writer)
    finally:
        writer.close()
    from .results import export, load_results

    df = load_results(run.out_dir)
    export(df, run.out_dir)
    run.pm.hook.run_finished(results=df, out_dir=run.out_dir)
    return RunSummary(run.out_dir, run.base["run_id"], counts, bad_input)


def _resume(run: _Run, cells: list[CellSpec], writer: ResultsWriter,
            counts: dict[str, int]) -> list[CellSpec]:
    """Cells already in the results folder are reused, cells in the cell cache restored (their
    rows carry this run's id); the rest, returned, are to run."""
    done_here = complete_cells(run.out_dir / RESULTS_FILE)
    todo: list[CellSpec] = []
    for spec in cells:
        if not run.opts.force and spec.cell_id in done_here:
            counts["reused"] = counts.get("reused", 0) + 1
            continue
        cached = None if run.opts.force else read_cache(run.cache, spec.cell_id)
        if cached is None:
            todo.append(spec)
            continue
        restore_predictions(run.cache, spec, run.out_dir)
        if run.cache_writable:
            with contextlib.suppress(OSError):
                keep_recipe(run.cache, spec, cached)
        # rows of this run now: one set per cell, even after a torn write
        writer.write_cell([build(row, {"run_id": run.base["run_id"], "cached": True}) for row in cached])
        counts["cached"] = counts.get("cached", 0) + 1
    return todo


def _execute(run: _Run, todo: list[CellSpec], writer: ResultsWriter, counts: dict[str, int]) -> int:
    """Run ``todo`` on the executor, recording each cell as it finishes; the number of cells
    that failed on bad input."""
    bar = _Progress(len(todo), run.opts.show_progress)
    bad_input = 0

    def on_phase(spec: CellSpec, phase: str) -> None:
        bar.phase(cell_label(spec), phase)

    def on_done(spec: CellSpec, outcome: CellOutcome) -> None:
        nonlocal bad_input
        _record(run, spec, outcome, writer)
        counts[outcome.status] = counts.get(outcome.status, 0) + 1
        bad_input += outcome.status == "failed" and outcome.bad_input
        bar.done(cell_label(spec), outcome.status, outcome.error)

    opts = run.opts
    executor = run.registries.executors.get(opts.executor or ("inline" if run.jobs == 0 else "local"))()
    ectx = ExecutorContext(devices=run.devices, jobs=run.jobs, disabled_plugins=opts.disabled_plugins,
                           extra_plugins=opts.extra_plugins, address=opts.address,
                           plugin_manager=run.pm)
    try:
        with _sigterm_as_interrupt():
            if todo:
                executor.run(todo, ectx, on_phase, on_done)
    finally:
        bar.close()
    return bad_input


def _record(run: _Run, spec: CellSpec, outcome: CellOutcome, writer: ResultsWriter) -> None:
    """A finished cell's predictions and rows (together), then the cell cache, then the hook."""
    if outcome.predictions is not None:
        outcome.info["predictions"] = predictions_path(spec)
    rows = cell_rows(spec, outcome, run.base, run.pm, run.registries)
    try:  # rows first, all together: nothing after this may cost a measured result
        if outcome.predictions is not None:
            save_predictions(spec, outcome, run.out_dir / outcome.info["predictions"])
        writer.write_cell(rows)
    finally:  # the cache too when the results folder's disk is full (it may have room)
        if outcome.status in ("ok", "skipped") and run.cache_writable:
            run.cache_writable = cache_cell(run.cache, spec, outcome, rows, run.out_dir)
    for row in rows:
        run.pm.hook.result_recorded(row=row)


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM (``kill``, a batch scheduler's stop) is handled like Ctrl-C: the rows written so
    far stay, workers are stopped, then the run ends."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"terminated by {signal.Signals(signum).name}")

    old = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _warn(message: str) -> None:
    warnings.warn(message, HarnessWarning, stacklevel=2)


class _Progress:
    """cells done/total, the current cell and its phase, ETA (tqdm on stderr)."""

    def __init__(self, total: int, enabled: bool) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit="cell", disable=not enabled or total == 0,
                        file=sys.stderr, dynamic_ncols=True)
        self.skipped: list[tuple[str, str]] = []

    def phase(self, label: str, phase: str) -> None:
        self.bar.set_postfix_str(f"{label}: {phase}", refresh=True)

    def done(self, label: str, status: str, error: str | None) -> None:
        if status == "skipped":  # said at the end, a line per (model, task)
            self.skipped.append((label, str(error)))
        elif status != "ok":
            self.bar.write(f"{status.upper()}: {label}: {error}", file=sys.stderr)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()
        for line in skipped_lines(self.skipped):
            print(line, file=sys.stderr)
