"""Expand a suite into cells, run them in isolated workers, write rows as each cell finishes.

Each cell runs in a spawned worker process: one per visible GPU (pinned with
``CUDA_VISIBLE_DEVICES``), or one on CPU unless ``jobs`` says otherwise. A worker that crashes,
is killed, runs out of memory or passes the per-cell timeout marks its cell ``failed`` and is
replaced. Finished cells are cached by a hash of everything that defines them, so a re-run
recomputes nothing and a run killed with ``kill -9`` resumes where it stopped.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import multiprocessing as mp
import os
import queue
import signal
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .cell import CellOutcome, CellSpec, PluginSet, run_cell
from .plugins import PluginManager
from .provenance import device_name, environment, now
from .results import RESULTS_FILE, ResultsWriter, read_rows
from .suite import Suite


@dataclass
class RunOptions:
    jobs: int | None = None  #: worker processes; None: one per GPU, or 1 on CPU; 0: in-process
    devices: list[str] | None = None  #: e.g. ["cuda:0", "cuda:1"] or ["cpu"]; None: detect
    force: bool = False  #: recompute cells found in the cache
    only: list[str] = field(default_factory=list)  #: glob patterns on "model/task/compression"
    show_progress: bool = True
    disabled_plugins: list[str] = field(default_factory=list)
    extra_plugins: list[str] = field(default_factory=list)  #: importable module names


@dataclass
class RunSummary:
    out_dir: Path
    run_id: str
    counts: dict[str, int]
    rows_written: int

    @property
    def failed(self) -> int:
        return self.counts.get("failed", 0)


def detect_devices() -> list[str]:
    """Visible CUDA devices, or ["cpu"]. Imports torch only here."""
    try:
        import torch

        if torch.cuda.is_available():
            return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    except ImportError:
        pass
    return ["cpu"]


def cell_label(spec: CellSpec) -> str:
    return f"{spec.model.name}/{spec.task.name}/{spec.compression.name}"


def plan(suite: Suite, plugins: PluginSet, device_kind: str, harness_version: str,
         only: Iterable[str] = ()) -> list[CellSpec]:
    """The product of the suite's models x tasks x compressions, with a cache key each.

    Cells of one (model, task) are adjacent so a worker reuses the fine-tuned model.
    """
    ident: dict[str, str] = {}

    def identity(entry) -> str:
        key = repr(sorted(entry.spec().items()))
        if key not in ident:
            try:
                plugin = plugins.create(entry)
                cls = type(plugin)
                extra = plugin.identity() if entry.kind == "model" else (
                    plugin.data_hash() if entry.kind == "task" else "")
                ident[key] = f"{cls.__module__}.{cls.__qualname__}@{cls.version}:{extra}"
            except Exception as exc:  # reported when the cell runs
                ident[key] = f"unresolved:{type(exc).__name__}"
        return ident[key]

    patterns = list(only)
    cells = []
    for m in suite.models:
        for t in suite.tasks:
            for c in suite.compressions:
                label = f"{m.name}/{t.name}/{c.name}"
                if patterns and not any(fnmatch.fnmatch(label, p) for p in patterns):
                    continue
                s = suite.settings
                doc = {
                    "model": [m.spec(), identity(m)], "task": [t.spec(), identity(t)],
                    "compression": [c.spec(), identity(c)], "harness": harness_version,
                    "device": device_kind, "seed": s.seed, "timing": [
                        s.warmup, s.min_iterations, s.min_duration_s, s.throughput_batch_size],
                }
                blob = json.dumps(doc, sort_keys=True, default=str).encode()
                cell_id = hashlib.sha256(blob).hexdigest()[:16]
                cells.append(CellSpec(cell_id, m, t, c, suite.settings))
    return cells


# ---------------------------------------------------------------------------------------------
# Workers


def _worker_main(disabled: list[str], extra: list[str], threads: int | None,
                 inbox: Any, outbox: Any) -> None:
    """Worker loop: build plugins once, run cells until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C
    if threads:
        import torch

        torch.set_num_threads(threads)
    plugins = PluginSet.build(disabled, extra)
    while True:
        msg = inbox.get()
        if msg is None:
            return
        spec: CellSpec = msg

        def progress(phase: str, text: str, _id: str = spec.cell_id) -> None:
            outbox.put(("phase", _id, phase, text))

        outcome = run_cell(spec, plugins, progress=progress)
        outbox.put(("done", spec.cell_id, outcome))


@dataclass
class _Worker:
    device: str
    proc: Any = None
    inbox: Any = None
    cell: CellSpec | None = None
    started: float = 0.0


class ProcessExecutor:
    """One spawned process per device slot; replaces a worker that dies or hangs."""

    def __init__(self, devices: list[str], jobs: int, opts: RunOptions) -> None:
        self.ctx = mp.get_context("spawn")
        self.outbox = self.ctx.Queue()
        self.opts = opts
        ncpu = os.cpu_count() or 1
        self.threads = max(1, ncpu // jobs) if devices == ["cpu"] else None
        slots = [devices[i % len(devices)] for i in range(jobs)]
        self.workers = [_Worker(d) for d in slots]
        for w in self.workers:
            self._start(w)

    def _start(self, w: _Worker) -> None:
        env_backup = os.environ.get("CUDA_VISIBLE_DEVICES")
        if w.device.startswith("cuda"):
            os.environ["CUDA_VISIBLE_DEVICES"] = w.device.split(":", 1)[1]
        w.inbox = self.ctx.Queue()
        w.proc = self.ctx.Process(
            target=_worker_main,
            args=(self.opts.disabled_plugins, self.opts.extra_plugins, self.threads,
                  w.inbox, self.outbox),
            daemon=True,
        )
        try:
            w.proc.start()
        finally:
            if env_backup is None:
                os.environ.pop("CUDA_VISIBLE_DEVICES", None)
            else:
                os.environ["CUDA_VISIBLE_DEVICES"] = env_backup
        w.cell = None

    def run(self, cells: list[CellSpec], on_phase: Callable[[CellSpec, str], None],
            on_done: Callable[[CellSpec, CellOutcome], None]) -> None:
        pending = list(cells)
        by_id = {c.cell_id: c for c in cells}
        while pending or any(w.cell for w in self.workers):
            for w in self.workers:
                if w.cell is None and pending:
                    spec = pending.pop(0)
                    # inside the worker the pinned GPU is always cuda:0
                    w.cell = replace(spec, device="cuda:0" if w.device.startswith("cuda") else "cpu")
                    w.started = time.monotonic()
                    w.inbox.put(w.cell)
            try:
                msg = self.outbox.get(timeout=0.2)
            except queue.Empty:
                msg = None
            if msg is not None:
                kind, cell_id = msg[0], msg[1]
                w = next((w for w in self.workers if w.cell and w.cell.cell_id == cell_id), None)
                if kind == "phase" and w is not None:
                    on_phase(by_id[cell_id], msg[2])
                elif kind == "done" and w is not None:
                    w.cell = None
                    on_done(by_id[cell_id], msg[2])
            for w in self.workers:
                if w.cell is None:
                    continue
                timeout = w.cell.settings.timeout_s
                reason = None
                if not w.proc.is_alive():
                    code = w.proc.exitcode
                    if code is not None and code < 0:
                        sig = signal.Signals(-code).name
                        reason = (f"worker process was killed by {sig}"
                                  + (" (out of memory? the kernel's OOM killer sends SIGKILL)"
                                     if sig == "SIGKILL" else ""))
                    else:
                        reason = f"worker process exited with status {code} in the middle of the cell"
                elif timeout and time.monotonic() - w.started > timeout:
                    reason = f"timed out after {timeout:g} s (settings.timeout_s); worker killed"
                    w.proc.kill()
                if reason:
                    spec = by_id[w.cell.cell_id]
                    w.proc.join(5)
                    self._drain(by_id, on_done, w)
                    if w.cell is not None:
                        on_done(spec, CellOutcome("failed", error=reason, phase="worker",
                                                  info={"device": w.device}))
                    self._start(w)

    def _drain(self, by_id, on_done, w: _Worker) -> None:
        """Take a 'done' that a dying worker managed to send before it went."""
        try:
            while True:
                kind, cell_id, *rest = self.outbox.get_nowait()
                if kind == "done" and w.cell and cell_id == w.cell.cell_id:
                    w.cell = None
                    on_done(by_id[cell_id], rest[-1])
        except queue.Empty:
            pass

    def close(self) -> None:
        for w in self.workers:
            if w.proc.is_alive():
                w.inbox.put(None)
        for w in self.workers:
            w.proc.join(10)
            if w.proc.is_alive():
                w.proc.kill()


class InlineExecutor:
    """Runs cells in this process (``--jobs 0``): no isolation, easiest to debug."""

    def __init__(self, devices: list[str], opts: RunOptions, pm: PluginManager | None) -> None:
        self.device = devices[0]
        self.plugins = PluginSet(pm.registries()) if pm is not None else PluginSet.build(
            opts.disabled_plugins, opts.extra_plugins)

    def run(self, cells, on_phase, on_done) -> None:
        for spec in cells:
            spec = replace(spec, device=self.device)
            on_done(spec, run_cell(spec, self.plugins, progress=lambda p, t, s=spec: on_phase(s, p)))

    def close(self) -> None:
        pass


# ---------------------------------------------------------------------------------------------
# The run


def run_suite(
    suite: Suite,
    pm: PluginManager,
    out_dir: Path,
    opts: RunOptions | None = None,
) -> RunSummary:
    """Run every cell of ``suite`` not already done; append rows to ``out_dir/results.jsonl``."""
    import harness

    opts = opts or RunOptions()
    out_dir = Path(out_dir)
    registries = pm.registries()
    suite.validate(registries)
    devices = opts.devices or detect_devices()
    device_kind = "cpu" if devices == ["cpu"] else device_name(devices[0])
    jobs = opts.jobs if opts.jobs is not None else (len(devices) if devices != ["cpu"] else 1)

    main_plugins = PluginSet(registries)
    cells = plan(suite, main_plugins, device_kind, harness.__version__, opts.only)
    run_id = uuid.uuid4().hex[:12]
    env = environment()
    base = {"run_id": run_id, "suite": suite.name, "suite_hash": suite.hash,
            "seed": suite.settings.seed, "jobs": jobs, **env}
    cache = Path(suite.settings.cache_dir) / "cells"
    cache.mkdir(parents=True, exist_ok=True)

    writer = ResultsWriter(out_dir)
    done_here = _complete_cells(out_dir / RESULTS_FILE)
    counts: dict[str, int] = {}
    written = 0
    todo: list[CellSpec] = []
    for spec in cells:
        if not opts.force and spec.cell_id in done_here:
            counts["reused"] = counts.get("reused", 0) + 1
            continue
        cached = None if opts.force else _read_cache(cache, spec.cell_id)
        if cached is not None:
            for row in cached:
                writer.write({**row, "cached": True})
                written += 1
            counts["cached"] = counts.get("cached", 0) + 1
            continue
        todo.append(spec)

    pm.hook.run_started(suite=suite, out_dir=out_dir, cells=[
        {"cell_id": c.cell_id, "model": c.model.name, "task": c.task.name,
         "compression": c.compression.name} for c in todo])

    bar = _Progress(len(todo), opts.show_progress)

    def on_phase(spec: CellSpec, phase: str) -> None:
        bar.phase(cell_label(spec), phase)

    def on_done(spec: CellSpec, outcome: CellOutcome) -> None:
        nonlocal written
        rows = _rows(spec, outcome, base, pm, registries)
        if outcome.status in ("ok", "skipped"):
            _write_cache(cache, spec.cell_id, rows)
        for row in rows:
            writer.write(row)
            written += 1
            pm.hook.result_recorded(row=row)
        counts[outcome.status] = counts.get(outcome.status, 0) + 1
        bar.done(cell_label(spec), outcome.status, outcome.error)

    executor: Any = None
    try:
        if todo:
            executor = (InlineExecutor(devices, opts, pm) if jobs == 0
                        else ProcessExecutor(devices, jobs, opts))
            executor.run(todo, on_phase, on_done)
    finally:
        if executor is not None:
            executor.close()
        bar.close()
        writer.close()

    from .results import export, load_results

    df = load_results(out_dir)
    export(df, out_dir)
    pm.hook.run_finished(results=df, out_dir=out_dir)
    return RunSummary(out_dir, run_id, counts, written)


def _complete_cells(path: Path) -> set[str]:
    """cell_ids whose rows are all in the results file (each row says how many the cell has)."""
    if not path.exists():
        return set()
    seen: dict[str, set[Any]] = {}
    need: dict[str, int] = {}
    for row in read_rows(path):
        cid = row.get("cell_id")
        if not cid or row.get("status") == "failed":
            continue
        seen.setdefault(cid, set()).add(row.get("metric"))
        need[cid] = int(row.get("cell_rows") or 1)
    return {cid for cid, metrics in seen.items() if len(metrics) >= need[cid]}


def _read_cache(cache: Path, cell_id: str) -> list[dict[str, Any]] | None:
    f = cache / f"{cell_id}.json"
    if not f.exists():
        return None
    try:
        return json.loads(f.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _write_cache(cache: Path, cell_id: str, rows: list[dict[str, Any]]) -> None:
    tmp = cache / f".{cell_id}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(rows, default=str))
    os.replace(tmp, cache / f"{cell_id}.json")  # atomic: a kill leaves old or new, not half


def _rows(spec: CellSpec, outcome: CellOutcome, base: dict[str, Any], pm: PluginManager,
          registries) -> list[dict[str, Any]]:
    versions = {}
    for entry in (spec.model, spec.task, spec.compression):
        reg = registries.by_kind(entry.kind)
        if entry.plugin in reg:
            src = reg.sources[entry.plugin]
            dist = pm.distributions.get(src)
            versions[entry.kind] = {"plugin": entry.plugin, "version": reg.classes[entry.plugin].version,
                                    "distribution": f"{dist[0]} {dist[1]}" if dist else src}
    ident = {
        "cell_id": spec.cell_id,
        "model": spec.model.name, "model_plugin": spec.model.plugin,
        "model_params": json.dumps(spec.model.params, sort_keys=True, default=str),
        "task": spec.task.name, "task_plugin": spec.task.plugin,
        "task_params": json.dumps(spec.task.params, sort_keys=True, default=str),
        "compression": spec.compression.name, "compression_plugin": spec.compression.plugin,
        "compression_params": json.dumps(spec.compression.params, sort_keys=True, default=str),
        "status": outcome.status, "error": outcome.error, "phase": outcome.phase,
        "plugin_versions": json.dumps(versions, sort_keys=True),
        "timestamp": now(), "cached": False,
    }
    info = {"device_name": base["cpu"], **outcome.info}
    metric_rows = outcome.rows or [{"metric": None, "value": None}]
    n = len(metric_rows)
    return [{**base, **ident, **info, **m, "cell_rows": n} for m in metric_rows]


class _Progress:
    """cells done/total, the current cell and its phase, ETA (tqdm on stderr)."""

    def __init__(self, total: int, enabled: bool) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit="cell", disable=not enabled or total == 0,
                        file=sys.stderr, dynamic_ncols=True)

    def phase(self, label: str, phase: str) -> None:
        self.bar.set_postfix_str(f"{label}: {phase}", refresh=True)

    def done(self, label: str, status: str, error: str | None) -> None:
        if status != "ok":
            self.bar.write(f"{status.upper()}: {label}: {error}", file=sys.stderr)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()
