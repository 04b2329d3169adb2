"""The public plugin API: the three axes of a suite and the objects that pass between them.

A cell of a suite is one (model, task, compression). The runner drives it like this::

    model = ModelPlugin(**params)             # a Model subclass, registered by name
    task = TaskPlugin(**params)
    compression = CompressionPlugin(**params)
    reason = compression.unsupported_reason(ctx)   # -> a "skipped" row when not None
    loaded = model.load(task.head(), ctx)       # a LoadedModel (transformers module + tokenizer)
    loaded = task.fit(loaded, ctx)               # fine-tunes when the model has no head (cached)
    predictor = compression.apply(loaded, task, ctx)   # runs on torch, OpenVINO, ...
    metrics = task.evaluate(predictor, ctx)     # list[MetricValue]
    # the core then times ``predictor`` on ``task.latency_batches(...)`` and measures its artifact.

Plugins import torch and transformers lazily (inside methods), so that listing plugins is cheap.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

__all__ = [
    "CellContext",
    "Compression",
    "Executor",
    "ExecutorContext",
    "Head",
    "LoadedModel",
    "MetricValue",
    "Model",
    "Plugin",
    "Predictor",
    "Task",
]


class Plugin:
    """Base of every registered class.

    Parameters come from the suite file as keyword arguments of ``__init__``; the core checks
    their names (and simple types) against the signature before constructing the plugin, so an
    unknown parameter is reported with the suite file and key path.
    """

    #: Name used in suite files and on the command line. Unique per kind.
    name: ClassVar[str] = ""
    #: Bump when a change alters results; it is part of every cache key and result row.
    version: ClassVar[str] = "0"
    #: One line shown by ``harness plugins``.
    description: ClassVar[str] = ""

    def __init__(self, **params: Any) -> None:
        if params:
            raise TypeError(f"{type(self).__name__} takes no parameters, got {sorted(params)}")

    #: Set True in a plugin whose ``__init__`` keeps arbitrary ``**params`` itself: the core then
    #: does not reject parameter names it cannot see in a signature.
    accepts_any_params: ClassVar[bool] = False

    @classmethod
    def parameters(cls) -> dict[str, inspect.Parameter]:
        """The keyword parameters a suite may set, from ``__init__``'s signature; where it ends
        in ``**params`` (a subclass passing them on with ``super().__init__(**params)``), also
        those of the base classes' ``__init__`` down to ``Plugin``."""
        out: dict[str, inspect.Parameter] = {}
        for klass in cls.__mro__:
            init = klass.__dict__.get("__init__")
            if init is None:
                continue
            if klass is Plugin:
                break
            params = inspect.signature(init).parameters
            for n, p in params.items():
                if n != "self" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD):
                    out.setdefault(n, p)
            if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
                break
        return out


@dataclass(frozen=True)
class Head:
    """What a task needs on top of an encoder."""

    kind: str  #: "token-classification" or "sequence-classification"
    labels: tuple[str, ...]  #: label names in id order


@dataclass
class LoadedModel:
    """A model ready for a task: a ``transformers`` module with a head of ``len(head.labels)``.

    ``identity`` is a stable hash of where the weights came from and their bytes; the core then
    scopes it by the model plugin (module, class, version) and the entry's parameters, so a
    plugin need not encode those itself. After fine-tuning it also covers the data hash and the
    recipe. Caches key on it.
    """

    module: Any  #: torch.nn.Module; forward(**batch) returns an object with ``.logits``
    tokenizer: Any  #: a transformers tokenizer (fast tokenizers give word ids)
    head: Head
    identity: str
    source: str  #: human-readable origin: a path or hub id
    trained_for_task: bool = False  #: the head already carries trained weights for head.labels
    max_length: int = 512  #: the model's position limit, in subword tokens
    info: dict[str, Any] = field(default_factory=dict)  #: e.g. train_time_s, fine-tune recipe


class Predictor:
    """Something that turns a tokenised batch into logits: the thing that is evaluated and timed.

    ``batch`` maps ``input_ids``/``attention_mask``/(``token_type_ids``) to int64 CPU tensors of
    shape (batch, seq). ``__call__`` returns float logits, (batch, seq, labels) for token
    classification or (batch, labels) for sequence classification, as a torch tensor that may
    live on the predictor's device. ``synchronize()`` waits for queued device work (CUDA).
    """

    runtime: str = "torch"  #: "torch", "openvino", ...
    device: str = "cpu"  #: "cpu", "cuda:0", ...
    precision: str = "fp32"  #: the precision actually computed (e.g. "bf16" under AMX)

    def __call__(self, batch: Mapping[str, Any]) -> Any:  # pragma: no cover - interface
        raise NotImplementedError

    def synchronize(self) -> None:
        """Block until queued device work is done. No-op on CPU."""

    def save(self, directory: Path) -> Path:  # pragma: no cover - interface
        """Write the deployable artifact under ``directory``; return the file or folder written.

        Its size on disk is what the leaderboard reports.
        """
        raise NotImplementedError

    def parameter_counts(self) -> tuple[int, int]:  # pragma: no cover - interface
        """(total, non-zero) parameter counts of the model as it runs."""
        raise NotImplementedError

    def bits_per_weight(self) -> float:
        """Average storage bits per weight parameter of the artifact."""
        return {"fp32": 32.0, "fp16": 16.0, "bf16": 16.0, "int8": 8.0, "int4": 4.0}.get(
            self.precision, 32.0
        )

    def describe(self) -> dict[str, Any]:
        """Extra columns for the result rows (e.g. threads, inference precision hint)."""
        return {}


@dataclass
class MetricValue:
    """One measured number of a cell; becomes one tidy result row."""

    name: str  #: e.g. "entity_f1", "entity_f1.PER", "accuracy"
    value: float
    ci_low: float | None = None
    ci_high: float | None = None
    #: what the number is, shown in reports: "entity-level micro F1 (seqeval, conlleval mode)"
    description: str = ""
    higher_is_better: bool = True
    main: bool = False  #: the task's headline metric (one per task)
    unit: str = ""
    #: where reports show it: "" a leaderboard column of its own (a dotted name "x.y": column
    #: "y" of a table "x"); a title such as "Per-class F1": a table of the metrics sharing it
    group: str = ""


@dataclass
class CellContext:
    """Everything a plugin may need from the run, passed to each step of a cell."""

    device: str  #: "cpu" or "cuda:N"
    seed: int
    cache_dir: Path  #: persistent cache (fine-tuned checkpoints, compressed artifacts)
    work_dir: Path  #: scratch space for this cell
    #: called with a phase name ("fine-tune", "compress", "evaluate", "time") and progress text
    progress: Callable[[str, str], None] = lambda phase, text: None
    show_progress: bool = True  #: draw progress bars (off in workers without a terminal)
    extra: dict[str, Any] = field(default_factory=dict)


class Model(Plugin):
    """A model source (a local path, a hub id, a config for a tiny test model, ...)."""

    def load(self, head: Head, ctx: CellContext) -> LoadedModel:  # pragma: no cover - interface
        """Return the model with a head for ``head``.

        Set ``trained_for_task`` when the checkpoint already has a trained head with exactly
        ``head.labels``; raise ``harness.errors.PluginError`` when it has a head with other labels.
        """
        raise NotImplementedError

    def identity(self) -> str:
        """A stable string identifying the weights (for cache keys); default: the parameters."""
        return f"{self.name}:{sorted(vars(self).items())!r}"


class Task(Plugin):
    """A dataset + metric (+ a fine-tuning recipe for models without a head)."""

    def head(self) -> Head:  # pragma: no cover - interface
        """The head this task needs. May read the data (label set from the data)."""
        raise NotImplementedError

    def data_hash(self) -> str:  # pragma: no cover - interface
        """A hash of the data files used (cache keys and provenance)."""
        raise NotImplementedError

    def fit(self, model: LoadedModel, ctx: CellContext) -> LoadedModel:
        """Fine-tune ``model`` on the train split unless ``model.trained_for_task``. Cached."""
        return model

    def evaluate(self, predictor: Predictor, ctx: CellContext) -> list[MetricValue]:  # pragma: no cover
        """Score ``predictor`` on the evaluation split. Exactly one MetricValue has ``main=True``."""
        raise NotImplementedError

    def latency_batches(
        self, tokenizer: Any, batch_size: int, count: int, seed: int
    ) -> list[dict[str, Any]]:  # pragma: no cover - interface
        """``count`` tokenised batches of ``batch_size`` real evaluation inputs at their real
        lengths (dynamic padding), drawn reproducibly with ``seed``: what latency is timed on."""
        raise NotImplementedError

    def calibration_batches(self, tokenizer: Any, samples: int, seed: int) -> list[dict[str, Any]]:
        """Batch-1 tokenised inputs from the train split, for static quantisation."""
        raise NotImplementedError(f"task {self.name!r} provides no calibration data")


class Compression(Plugin):
    """A transformation of a fine-tuned model into something smaller or faster."""

    def unsupported_reason(self, ctx: CellContext) -> str | None:
        """Why this compression cannot run here (device, runtime, missing package), or None.

        A reason makes the cell ``skipped`` (never ``failed``).
        """
        return None

    def apply(self, model: LoadedModel, task: Task, ctx: CellContext) -> Predictor:  # pragma: no cover
        """Return a predictor running the compressed model. Cache artifacts under
        ``ctx.cache_dir`` keyed by ``model.identity`` and this plugin's parameters."""
        raise NotImplementedError


def iter_rows(metrics: Iterable[MetricValue]) -> Iterable[dict[str, Any]]:
    """MetricValues as flat dicts (the metric part of a result row)."""
    for m in metrics:
        yield {
            "metric": m.name,
            "value": m.value,
            "ci_low": m.ci_low,
            "ci_high": m.ci_high,
            "metric_description": m.description,
            "higher_is_better": m.higher_is_better,
            "main_metric": m.main,
            "unit": m.unit,
            "metric_group": m.group,
        }


@dataclass
class ExecutorContext:
    """What an executor needs to run cells, besides the cells."""

    devices: list[str]  #: e.g. ["cpu"] or ["cuda:0", "cuda:1"]
    jobs: int  #: parallel workers asked for (``--jobs``)
    disabled_plugins: list[str]  #: names a worker must not load
    extra_plugins: list[str]  #: importable module names a worker must load
    address: str | None = None  #: cluster address (``--address``), for executors that use one
    plugin_manager: Any = None  #: the main process's manager (in-process executors only)


class Executor(Plugin):
    """Runs a list of cells: in this process, in local worker processes, on a cluster.

    ``run`` calls ``on_phase(cell, phase)`` as work progresses (optional) and
    ``on_done(cell, outcome)`` exactly once per cell, in the calling thread, with a
    ``harness.cell.CellOutcome``; a cell whose worker died is reported ``failed`` with the
    reason. The runner writes rows and caches results; executors never touch the results file.
    """

    def run(self, cells: list[Any], ectx: ExecutorContext,
            on_phase: Callable[[Any, str], None],
            on_done: Callable[[Any, Any], None]) -> None:  # pragma: no cover - interface
        raise NotImplementedError
