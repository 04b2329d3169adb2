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
import json
import shutil
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
from .errors import HarnessWarning, SuiteError
from .fsutil import atomic_write_text
from .plugins import PluginManager
from .provenance import device_name, environment, gpu_environment, now
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
    executor: str | None = None  #: registered executor name; None: "local" ("inline" if jobs=0)
    address: str | None = None  #: cluster address for executors that use one


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


def cell_label(spec: CellSpec) -> str:
    return f"{spec.model.name}/{spec.task.name}/{spec.compression.name}"


def _stable(value: Any) -> Any:
    """A JSON value that is the same in every process (no object addresses)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_stable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _stable(v) for k, v in value.items()}
    return type(value).__qualname__


def plan(suite: Suite, plugins: PluginSet, device_kind: str, harness_version: str,
         only: Iterable[str] = ()) -> list[CellSpec]:
    """The product of the suite's models x tasks x compressions, with a cache key each.

    Cells of one (model, task) are adjacent so a worker reuses the fine-tuned model.
    """
    ident: dict[str, str] = {}

    def identity(entry) -> str:
        key = repr(sorted(entry.spec().items()))
        if entry.steps and key not in ident:  # a chain: its steps as each resolved them
            ident[key] = "chain:" + json.dumps([identity(step) for step in entry.steps])
        if key not in ident:
            try:
                plugin: Any = plugins.create(entry)
            except Exception as exc:
                if getattr(exc, "bad_input", False):  # the suite's parameters: fail before any cell
                    raise SuiteError(str(exc)) from None
                ident[key] = f"unresolved:{type(exc).__name__}"
                return ident[key]
            try:
                cls = type(plugin)
                extra = plugin.identity() if entry.kind == "model" else (
                    plugin.data_hash() if entry.kind == "task" else "")
                # the parameters as the plugin resolved them (defaults and "auto" values
                # included): a changed default recomputes the cell even without a version bump
                resolved = {n: _stable(getattr(plugin, n, None)) for n in sorted(cls.parameters())}
                ident[key] = (f"{cls.__module__}.{cls.__qualname__}@{cls.version}:{extra}:"
                              f"{json.dumps(resolved, sort_keys=True)}")
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
                        s.warmup, s.min_iterations, s.min_duration_s, s.throughput_batch_size,
                        *([s.latency_seq_len] if s.latency_seq_len else [])],
                }
                blob = json.dumps(doc, sort_keys=True, default=str).encode()
                cell_id = hashlib.sha256(blob).hexdigest()[:16]
                cells.append(CellSpec(cell_id, m, t, c, suite.settings))
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
    import harness

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
    cells = plan(suite, main_plugins, device_kind, harness.__version__, opts.only)
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

    writer = ResultsWriter(out_dir)
    done_here = _complete_cells(out_dir / RESULTS_FILE)
    counts: dict[str, int] = {}
    bad_input: list[bool] = []
    todo: list[CellSpec] = []
    for spec in cells:
        if not opts.force and spec.cell_id in done_here:
            counts["reused"] = counts.get("reused", 0) + 1
            continue
        cached = None if opts.force else _read_cache(cache, spec.cell_id)
        if cached is not None:
            _restore_predictions(cache, spec, out_dir)
            for row in cached:  # rows of this run now: one set per cell, even after a torn write
                writer.write({**row, "run_id": run_id, "cached": True})
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
        nonlocal cache_writable
        if outcome.predictions is not None:
            outcome.info["predictions"] = _save_predictions(spec, outcome, out_dir)
        rows = _rows(spec, outcome, base, pm, registries)
        for row in rows:  # rows first: nothing after this may cost a measured result
            writer.write(row)
            pm.hook.result_recorded(row=row)
        if outcome.status in ("ok", "skipped") and cache_writable:
            try:
                _write_cache(cache, spec.cell_id, rows)
                if outcome.predictions is not None:
                    shutil.copyfile(out_dir / outcome.info["predictions"],
                                    cache / f"{spec.cell_id}.predictions.parquet")
            except OSError as exc:
                cache_writable = False  # one warning per run
                _warn(f"cannot write to the cell cache folder {cache} ({exc}); the results "
                      f"are kept in {out_dir}, the cache is not updated in this run")
        counts[outcome.status] = counts.get(outcome.status, 0) + 1
        bad_input.append(outcome.status == "failed" and getattr(outcome, "bad_input", False))
        bar.done(cell_label(spec), outcome.status, outcome.error)

    name = opts.executor or ("inline" if jobs == 0 else "local")
    executor = registries.executors.get(name)()
    ectx = ExecutorContext(devices=devices, jobs=jobs, disabled_plugins=opts.disabled_plugins,
                           extra_plugins=opts.extra_plugins, address=opts.address,
                           plugin_manager=pm)
    try:
        with _sigterm_as_interrupt():
            if todo:
                executor.run(todo, ectx, on_phase, on_done)
    finally:
        bar.close()
        writer.close()

    from .results import export, load_results

    df = load_results(out_dir)
    export(df, out_dir)
    pm.hook.run_finished(results=df, out_dir=out_dir)
    return RunSummary(out_dir, run_id, counts, sum(bad_input))


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
    # atomic: a kill leaves old or new, not half
    atomic_write_text(cache / f"{cell_id}.json", json.dumps(rows, default=str))


def _save_predictions(spec: CellSpec, outcome: CellOutcome, out_dir: Path) -> str:
    """Write the cell's per-example outputs to <run>/predictions/; the path relative to the run."""
    from .predictions import PREDICTIONS_DIR, file_name, write_predictions

    assert outcome.predictions is not None
    rel = f"{PREDICTIONS_DIR}/{file_name(spec.model.name, spec.task.name, spec.compression.name)}"
    meta = {**outcome.predictions["meta"], "model": spec.model.name,
            "compression": spec.compression.name, "cell_id": spec.cell_id}
    write_predictions(out_dir / rel, outcome.predictions["table"], meta)
    return rel


def _restore_predictions(cache: Path, spec: CellSpec, out_dir: Path) -> None:
    """A cached cell's predictions file back into the run folder (when the cache has one)."""
    from .predictions import PREDICTIONS_DIR, file_name

    src = cache / f"{spec.cell_id}.predictions.parquet"
    if src.is_file() and spec.settings.save_predictions:
        dst = out_dir / PREDICTIONS_DIR / file_name(spec.model.name, spec.task.name,
                                                    spec.compression.name)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)


def _warn(message: str) -> None:
    warnings.warn(message, HarnessWarning, stacklevel=2)


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
