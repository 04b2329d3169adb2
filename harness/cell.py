"""One cell (model x task x compression), run inside a worker process (or inline)."""

from __future__ import annotations

import copy
import hashlib
import importlib
import inspect
import json
import os
import shutil
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .api import CellContext, LoadedModel, MetricValue, Plugin, capability_reason
from .errors import BadInput, ParameterError, PluginError, Unsupported
from .params import validate as validate_params
from .plugins import PluginManager, get_plugin_manager
from .provenance import device_name
from .registry import Registries
from .rows import metric_columns
from .suite import Entry, Settings
from .timing import PeakMemory, describe_lengths, fixed_length, is_raw, measure_latency, measure_throughput
from .toolkit.artifacts import dir_bytes, dir_sha256
from .validation import eval_split_of, validation_rows, validation_split_of

LATENCY_INPUTS = 64  # distinct batch-1 inputs cycled through when timing
THROUGHPUT_BATCHES = 8


@dataclass
class CellSpec:
    """Plain data describing a cell; picklable, sent to a worker."""

    cell_id: str
    model: Entry
    task: Entry
    compression: Entry
    settings: Settings
    device: str = "cpu"


@dataclass
class CellOutcome:
    status: str  # ok / failed / skipped
    rows: list[dict[str, Any]] = field(default_factory=list)  # metric part + cell info
    error: str | None = None
    phase: str | None = None
    info: dict[str, Any] = field(default_factory=dict)  # cell-level columns
    #: failed because of bad input (a data file, a suite parameter), not a crash: exit 2
    bad_input: bool = False
    #: per-example outputs the task recorded: {"table": DataFrame, "meta": {...}}; the runner
    #: writes them to <run>/predictions/
    predictions: dict[str, Any] | None = None


@dataclass
class PluginSet:
    """What a worker keeps between cells: the registries and memoised models and tasks."""

    registries: Registries
    tasks: dict[str, Any] = field(default_factory=dict)
    fitted: dict[str, LoadedModel] = field(default_factory=dict)

    @classmethod
    def build(cls, disabled: list[str], extra: list[str]) -> PluginSet:
        pm: PluginManager = get_plugin_manager(
            disabled=disabled, extra_plugins=[importlib.import_module(m) for m in extra]
        )
        return cls(pm.registries())

    def create(self, entry: Entry) -> Plugin:
        if entry.steps:  # a chain: the core's own compression over its steps
            from .chain import Chain

            return Chain([self.create(step) for step in entry.steps])  # type: ignore[misc]
        cls = self.registries.by_kind(entry.kind).get(entry.plugin)
        if inspect.isabstract(cls):
            raise PluginError(
                f"{entry.kind} plugin {entry.plugin!r} ({cls.__module__}.{cls.__qualname__}) does "
                f"not implement the abstract method(s) {', '.join(sorted(cls.__abstractmethods__))}"
            )
        # Plugin.__init__ validates declared Params; a class written before Params keeps none
        legacy = cls._params_from_signature
        try:
            params = validate_params(cls, entry.params, entry.kind) if legacy else None
            plugin = cls(**entry.params)
        except ParameterError as exc:
            raise ParameterError(f"{exc} ({entry.where})", entry=entry, key=exc.key) from None
        except Exception as exc:  # the suite's values, not a crash
            raise ParameterError(
                f"{entry.kind} plugin {entry.plugin!r} ({entry.where}) rejected its parameters: "
                f"{type(exc).__name__}: {exc}", entry=entry) from exc
        if params is not None:
            plugin.params = params
        return plugin


def scoped_identity(entry: Entry, plugin: Plugin, loaded: LoadedModel) -> LoadedModel:
    """The core owns cache identity: what a model plugin reports (its weights) is scoped by the
    plugin's module, class and version and the entry's parameters, so every cache keyed on
    ``LoadedModel.identity`` (fine-tuned checkpoints, compressed artifacts) tells apart two
    plugins, or two parameter sets, that load the same weight files into different models."""
    cls = type(plugin)
    scope = json.dumps([f"{cls.__module__}.{cls.__qualname__}", cls.version, entry.params],
                       sort_keys=True, default=str)
    loaded.identity = "m-" + hashlib.sha256(f"{scope}|{loaded.identity}".encode()).hexdigest()[:16]
    return loaded


def _key(entry: Entry) -> str:
    return repr(sorted(entry.spec().items()))


@dataclass
class _Step:
    """Where a cell is: its phase and whose code runs (the entry of the plugin; None: the core)."""

    phase: str = "setup"
    entry: Entry | None = None

    @property
    def culprit(self) -> str:
        return f"{self.entry.kind} plugin {self.entry.plugin!r}" if self.entry else "harness"


@dataclass
class _Parts:
    """The plugins of a cell once set up, and what the phases hand each other."""

    model: Any
    task: Any
    compression: Any
    loaded: Any = None  #: the fitted model
    predictor: Any = None
    compress_s: float = 0.0


def run_cell(
    spec: CellSpec,
    plugins: PluginSet,
    *,
    progress: Callable[[str, str], None] = lambda phase, text: None,
    show_progress: bool = False,
) -> CellOutcome:
    """Run one cell; never raises for a plugin's error (the outcome is ``failed``).

    Phases: setup (plugins, skip reasons), load and fine-tune (memoised per model and task),
    compress, evaluate, time, size."""
    at = _Step()
    work = Path(tempfile.mkdtemp(prefix="harness-cell-"))
    info: dict[str, Any] = {"device": spec.device}
    recorded: dict[str, Any] = {}

    def step(name: str, entry: Entry | None) -> None:
        at.phase, at.entry = name, entry
        progress(name, "")

    try:
        s = spec.settings
        ctx = CellContext(
            device=spec.device, seed=s.seed, cache_dir=Path(s.cache_dir).absolute(),
            work_dir=work, progress=progress, show_progress=show_progress,
            record_predictions=_recorder(recorded, s.save_predictions),
        )
        parts = _setup(spec, plugins, ctx, step)
        if isinstance(parts, str):
            return CellOutcome("skipped", error=parts, phase="setup", info=info)
        _fit(spec, plugins, parts, ctx, step)
        _compress(spec, parts, ctx, step, info)
        rows = _measure(spec, parts, ctx, step, info, work)
        return CellOutcome("ok", rows=rows, info=info,
                           predictions=_with_meta(recorded, spec, parts.task))
    except BaseException as exc:  # noqa: BLE001 - a cell must not take the run down
        if isinstance(exc, KeyboardInterrupt):
            raise
        return _failed(exc, at, info)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _setup(spec: CellSpec, plugins: PluginSet, ctx: CellContext, step) -> _Parts | str:
    """The cell's plugins (the task memoised), or the reason the cell is skipped."""
    step("setup", spec.model)
    model: Any = plugins.create(spec.model)
    step("setup", spec.task)
    task_key = _key(spec.task)
    task: Any = plugins.tasks.get(task_key) or plugins.create(spec.task)
    plugins.tasks[task_key] = task
    step("setup", spec.compression)
    compression: Any = plugins.create(spec.compression)
    reason = compression.unsupported_reason(ctx) or capability_reason(compression, task, model)
    return str(reason) if reason else _Parts(model, task, compression)


def _fit(spec: CellSpec, plugins: PluginSet, parts: _Parts, ctx: CellContext, step) -> None:
    """Load and fine-tune the model for the task, once per (model, task) in a worker."""
    fit_key = _key(spec.model) + _key(spec.task)
    loaded = plugins.fitted.get(fit_key)
    if loaded is None:
        step("load", spec.task)
        head = parts.task.head()  # reads the data: the task's fault
        step("load", spec.model)
        loaded = scoped_identity(spec.model, parts.model, parts.model.load(head, ctx))
        step("fine-tune", spec.task)
        loaded = parts.task.fit(loaded, ctx)
        plugins.fitted = {fit_key: loaded}  # keep one: models are large
    parts.loaded = loaded


def _compress(spec: CellSpec, parts: _Parts, ctx: CellContext, step, info: dict[str, Any]) -> None:
    step("compress", spec.compression)
    t0 = time.perf_counter()
    parts.predictor = predictor = parts.compression.apply(copy_model(parts.loaded), parts.task, ctx)
    parts.compress_s = time.perf_counter() - t0
    info.update(runtime=predictor.runtime, device=predictor.device,
                precision=predictor.precision, device_name=device_name(predictor.device))
    if predictor.device.startswith("cuda"):  # which physical GPU a pinned worker had
        info["cuda_visible_devices"] = os.environ.get("CUDA_VISIBLE_DEVICES")


def _measure(spec: CellSpec, parts: _Parts, ctx: CellContext, step, info: dict[str, Any],
             work: Path) -> list[dict[str, Any]]:
    """Evaluate, time and size the compressed model: the cell's rows. A predictor whose
    ``tokenizer`` is set (a transform changed it) is evaluated and timed with that tokenizer."""
    s, task, predictor = spec.settings, parts.task, parts.predictor
    tokenizer = getattr(predictor, "tokenizer", None)
    model = parts.loaded if tokenizer is None else replace(parts.loaded, tokenizer=tokenizer)
    step("evaluate", spec.task)
    t0 = time.perf_counter()
    with PeakMemory(predictor.device) as mem:
        metrics = list(task.evaluate(predictor, model, ctx))
        eval_s = time.perf_counter() - t0
        if sum(m.main_metric for m in metrics) != 1:
            raise PluginError(
                f"task plugin {spec.task.plugin!r} returned {sum(m.main_metric for m in metrics)} "
                "main metrics; exactly one MetricValue must have main_metric=True"
            )
        step("time", spec.task)
        b1, bn, words, fixed = timing_inputs(task, model, s)
        step("time", spec.compression)
        with mem.paused():  # no sampler thread competing for the GIL while timing batch-1
            lat = measure_latency(predictor, b1, warmup=s.warmup, min_iterations=s.min_iterations,
                                  min_duration_s=s.min_duration_s)
        thr = measure_throughput(predictor, bn, min_duration_s=min(s.min_duration_s, 5.0))
    val = validation_split_of(task, s.validation_split)
    val_rows = validation_rows(task, predictor, model, ctx, val) if val else []
    step("size", spec.compression)
    artifact = predictor.save(work / "artifact")
    info.update(
        latency_batch_size=1, throughput_batch_size=s.throughput_batch_size,
        seq_len=describe_lengths(lat.seq_lens, fixed, unit="words" if words else "tokens"),
        latency_inputs=lat.inputs, latency_passes=lat.passes, artifact_sha256=dir_sha256(artifact),
    )
    described = predictor.describe()
    info["threads"] = described.pop("threads", None)
    info.update({k: v for k, v in described.items() if not isinstance(v, (dict, list))})
    rows = [{**metric_columns(m), "split": eval_split_of(task)} for m in metrics] + val_rows
    for name, value in lat.stats().items():
        rows.append(_measured(name, value, higher=False,
                              samples=lat.samples_ms if name.startswith("latency_b1_") else None))
    for name, value in {**thr, **mem.result()}.items():
        rows.append(_measured(name, value, higher=name.startswith("throughput")))
    total, nonzero = predictor.parameter_counts()
    sizes = {
        "size_bytes": dir_bytes(artifact), "parameters": total,
        "nonzero_parameters": nonzero, "bits_per_weight": predictor.bits_per_weight(),
        "compression_time_s": float(described.get("compression_time_s", parts.compress_s)),
        "eval_time_s": eval_s,
    }
    if "train_time_s" in parts.loaded.info:
        sizes["train_time_s"] = float(parts.loaded.info["train_time_s"])
    rows += [_measured(name, float(value), higher=False) for name, value in sizes.items()]
    return rows


def timing_inputs(task: Any, model: LoadedModel, s: Settings) -> tuple[list, list, bool, int]:
    """The batch-1 and throughput inputs every predictor of a task is timed on (the cell's
    timing and the rotation timing of :mod:`harness.rotation` alike), whether they are raw
    examples (lengths in words), and the fixed length they were cut to (0: real lengths)."""
    b1 = task.latency_batches(model, 1, LATENCY_INPUTS, s.seed)
    bn = task.latency_batches(model, s.throughput_batch_size, THROUGHPUT_BATCHES, s.seed)
    words = bool(b1) and is_raw(b1[0])  # raw examples (harness.examples): real lengths
    fixed = 0 if words else s.latency_seq_len
    if fixed:
        b1, bn = fixed_length(b1, fixed), fixed_length(bn, fixed)
    return b1, bn, words, fixed


def _failed(exc: BaseException, at: _Step, info: dict[str, Any]) -> CellOutcome:
    """The outcome of a cell that raised: bad input (whose, where), out of memory, or a crash."""
    phase = at.phase
    if isinstance(exc, Unsupported):  # the compression cannot take this model: a skip, with why
        return CellOutcome("skipped", error=str(exc), phase=phase, info=info)
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" at {Path(tb[-1].filename).name}:{tb[-1].lineno}" if tb else ""
    if isinstance(exc, BadInput):
        # bad input, not a crash: say whose input, and where (the message names the file)
        entry = at.entry
        whose = f"{entry.kind} {entry.name!r} ({at.culprit})" if entry else at.culprit
        return CellOutcome("failed", error=f"bad input for {whose} during {phase}: {exc}",
                           phase=phase, info=info, bad_input=True)
    if isinstance(exc, MemoryError):  # often raised with no message at all
        return CellOutcome("failed", phase=phase, info=info, error=(
            f"out of memory during {phase}: {at.culprit} raised MemoryError"
            f"{': ' + str(exc) if str(exc) else ''}{where}"))
    return CellOutcome("failed", phase=phase, info=info,
                       error=f"{at.culprit} raised {type(exc).__name__} during {phase}: {exc}{where}")


def _with_meta(recorded: dict[str, Any], spec: CellSpec, task: Any) -> dict[str, Any] | None:
    """What the task recorded, with the cell's provenance (the task's data hash)."""
    if not recorded:
        return None
    meta = recorded["meta"]
    meta.update(task=spec.task.name, task_plugin=spec.task.plugin, seed=spec.settings.seed)
    if not meta.get("data_hash"):  # the task did not say which examples: all of its data
        meta["data_hash"] = task.data_hash()
    return recorded


def _recorder(into: dict[str, Any], enabled: bool) -> Callable[..., None]:
    """The ``ctx.record_predictions`` of a cell: validates and keeps the task's table (validates
    only when ``save_predictions`` is off)."""
    from .predictions import check_table

    def record(table: Any, *, kind: str, metric: str, scorer: str | None = None,
               split: str | None = None, data_hash: str | None = None) -> None:
        checked = check_table(table, kind, metric, scorer)
        if not enabled:
            return
        into["table"] = checked
        into["meta"] = {"kind": kind, "metric": metric, "scorer": scorer, "split": split,
                        "examples": len(into["table"]), "data_hash": data_hash}

    return record


def copy_model(loaded: LoadedModel) -> LoadedModel:
    """What the core hands a compression: a shallow copy with its own module (compressions may
    modify the module in place)."""
    clone = copy.copy(loaded)
    clone.module = copy.deepcopy(loaded.module)
    return clone


_LATENCY_DOC = "batch-1 forward latency over real test inputs, after warm-up"
_UNITS = {"throughput_samples_s": "samples/s", "throughput_tokens_s": "tokens/s",
          "peak_rss_mb": "MiB", "peak_gpu_mem_mb": "MiB", "peak_gpu_reserved_mb": "MiB",
          "size_bytes": "bytes", "compression_time_s": "s", "eval_time_s": "s",
          "train_time_s": "s", "bits_per_weight": "bits"}
_DOCS = {
    "cold_start_ms": "first forward call after loading (one call, not averaged)",
    "latency_b1_cv": "coefficient of variation (std/mean) of the batch-1 latency samples",
    "throughput_samples_s": "samples per second at the throughput batch size, real lengths",
    "throughput_tokens_s": "non-padding tokens per second at the throughput batch size",
    "peak_rss_mb": "peak resident memory of the worker process while evaluating and timing",
    "peak_gpu_mem_mb": "peak GPU memory allocated by torch while evaluating and timing",
    "peak_gpu_reserved_mb": "peak GPU memory reserved by torch's allocator",
    "size_bytes": "bytes on disk of the saved deployable artifact",
    "parameters": "parameter count of the model as it runs",
    "nonzero_parameters": "parameters that are not zero",
    "bits_per_weight": "average storage bits per weight",
    "compression_time_s": "seconds to produce the compressed model (0 on a cache hit)",
    "eval_time_s": "seconds to score the evaluation split",
    "train_time_s": "seconds of fine-tuning (from the checkpoint cache when reused)",
}


def _measured(name: str, value: float, *, higher: bool,
              samples: list[float] | None = None) -> dict[str, Any]:
    """The metric part of a row for one of the core's own measurements: a
    :class:`~harness.api.MetricValue` like a task's metrics (no group; per-iteration samples for
    batch-1 latency)."""
    unit = _UNITS.get(name, "ms" if name.endswith("_ms") else "")
    doc = _DOCS.get(name, _LATENCY_DOC if name.startswith("latency_") else "")
    return metric_columns(MetricValue(name, value, metric_description=doc, higher_is_better=higher,
                                      unit=unit), samples=samples, measured_by_core=True)
