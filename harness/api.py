"""The public plugin API: the axes of a suite and the objects that pass between them.

A cell of a suite is one (model, task, compression). The runner drives it like this::

    model = ModelPlugin(**params)             # a Model subclass, registered by name
    task = TaskPlugin(**params)
    compression = CompressionPlugin(**params)
    reason = (compression.unsupported_reason(ctx)
              or capability_reason(compression, task, model))   # kinds, heads, capabilities
    # a reason -> a "skipped" row, before anything loads
    loaded = model.load(task.head(), ctx)       # a LoadedModel: a transformers module + tokenizer,
                                                # or an ExampleModel (harness.examples)
    loaded = task.fit(loaded, ctx)               # trains when the model has no head (cached)
    predictor = compression.apply(loaded, task, ctx)   # runs on torch, OpenVINO, ...
    metrics = task.evaluate(predictor, loaded, ctx)    # list[MetricValue]
    # the core then times ``predictor`` on ``task.latency_batches(loaded, ...)`` and measures
    # the size of what ``predictor.save(folder)`` writes.

Every axis is an abstract base class (``@abstractmethod``s must be implemented). Optional
capabilities are declared (``Finetunable``, ``Compression.requires``), never guessed. Plugins
import torch and transformers lazily (inside methods), so that listing plugins is cheap. Helpers
for plugin authors (``TorchPredictor``, ``cached_or_build``, ``FineTunedTask``, ...) are in
``harness.toolkit``.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from . import params as _params
from .capabilities import CAPABILITIES, Finetunable, capability_reason
from .params import Params, adopt_signature, as_key, declared
from .params import validate as validate_params
from .rows import MetricValue
from .scorers import scorer, scorer_name

__all__ = [
    "CAPABILITIES",
    "CellContext",
    "Compression",
    "Executor",
    "ExecutorContext",
    "Finetunable",
    "Head",
    "LoadedModel",
    "MetricValue",
    "Model",
    "Params",
    "Plugin",
    "Predictor",
    "Task",
    "Transform",
    "capability_reason",
    "scorer",
    "scorer_name",
]


class Plugin(ABC):  # noqa: B024 - the axes below declare the abstract methods
    """Base of every registered class.

    What a suite may set is declared once, as a nested ``class Params(harness.api.Params)``
    (a pydantic model; see :mod:`harness.params`): the core validates a suite entry against it
    before any cell runs (errors name the suite file and key path), lists it in
    ``harness plugins --params NAME``, and keys caches on the validated values. ``__init__``
    stores them as ``self.params``; a subclass that derives state from them overrides
    ``__init__(self, **params)`` and calls ``super().__init__(**params)`` first.
    """

    #: Name used in suite files and on the command line. Unique per kind.
    name: ClassVar[str] = ""
    #: Bump when a change alters results; it is part of every cache key and result row.
    version: ClassVar[str] = "0"
    #: One line shown by ``harness plugins``.
    description: ClassVar[str] = ""
    #: The axis ("model", "task", "compression", "executor"), set by each axis' base class.
    axis: ClassVar[str] = ""
    #: The parameters a suite may set (none by default).
    Params: ClassVar[type[Params]] = Params
    #: This instance's validated parameters (an instance of ``type(self).Params``).
    params: _params.Params

    #: Set by a class written before ``Params`` that keeps arbitrary ``**params``: any key goes.
    accepts_any_params: ClassVar[bool] = False
    _params_from_signature: ClassVar[bool] = False  #: ``Params`` derived from ``__init__``

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        adopt_signature(cls)  # a class written before Params: derived from its __init__

    def __init__(self, **params: Any) -> None:
        self.params = validate_params(type(self), params, self.axis, declared(type(self)).Params)


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

    #: torch.nn.Module whose forward(**batch) returns ``.logits``; for a model plugin of another
    #: ``kind``, a :class:`harness.examples.ExampleModel`
    module: Any
    tokenizer: Any  #: a transformers tokenizer (fast ones give word ids); None for an ExampleModel
    head: Head
    identity: str
    source: str  #: human-readable origin: a path or hub id
    trained_for_task: bool = False  #: the head already carries trained weights for head.labels
    max_length: int = 512  #: the model's position limit, in subword tokens
    info: dict[str, Any] = field(default_factory=dict)  #: e.g. train_time_s, fine-tune recipe


class Predictor(ABC):
    """Something that turns a tokenised batch into logits: the thing that is evaluated and timed.

    ``batch`` maps ``input_ids``/``attention_mask``/(``token_type_ids``) to int64 CPU tensors of
    shape (batch, seq). ``__call__`` returns float logits, (batch, seq, labels) for token
    classification or (batch, labels) for sequence classification, as a torch tensor that may
    live on the predictor's device. ``synchronize()`` waits for queued device work (CUDA).
    See docs/plugins.md, "Predictor contract", for what the core reads from a predictor.
    """

    runtime: str = "torch"  #: "torch", "openvino", ...
    device: str = "cpu"  #: "cpu", "cuda:0", ...
    precision: str = "fp32"  #: the precision actually computed (e.g. "bf16" under AMX)
    #: the tokenizer of the model this predictor runs when a transform changed it (vocab-trim);
    #: None: the fitted model's. The core evaluates and times with it (chains set it).
    tokenizer: Any = None

    @abstractmethod
    def __call__(self, batch: Mapping[str, Any]) -> Any:
        """Logits for ``batch``."""

    def synchronize(self) -> None:
        """Block until queued device work is done. No-op on CPU."""
        return None

    @abstractmethod
    def save(self, directory: Path) -> Path:
        """Write the deployable artifact under ``directory``; return the file or folder written.

        The bytes on disk of what it returns are the ``size_bytes`` the leaderboard reports.
        """

    @abstractmethod
    def parameter_counts(self) -> tuple[int, int]:
        """(total, non-zero) weight counts of the model as it runs. A non-torch artifact (ONNX,
        OpenVINO) reports those of the torch model it was exported from (same architecture)."""

    def bits_per_weight(self) -> float:
        """Average storage bits per weight of the artifact (default: from ``precision``)."""
        return {"fp32": 32.0, "fp16": 16.0, "bf16": 16.0, "int8": 8.0, "int4": 4.0}.get(
            self.precision, 32.0
        )

    def describe(self) -> dict[str, Any]:
        """Extra columns for the result rows (e.g. threads, inference precision hint). The core
        reads ``threads`` and ``compression_time_s`` specially (docs/plugins.md)."""
        return {}


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
    #: ``record_predictions(table, *, kind, metric, scorer=None, split=None, data_hash=None)``:
    #: the task's per-example outputs on the evaluation split (a pandas DataFrame; kinds and
    #: columns in :mod:`harness.predictions`), saved by the runner for the gate's paired tests.
    #: ``data_hash`` identifies the examples scored (default: the task's ``data_hash()``, which
    #: also covers its train data: pass the evaluated split's own hash, so runs that trained
    #: differently are still paired on the same examples). No-op unless the core collects them.
    record_predictions: Callable[..., None] = lambda table, **meta: None


class Model(Plugin):
    """A model source (a local path, a hub id, a config for a tiny test model, ...).

    ``kind`` says what ``load`` returns: ``"transformers"`` (a module + tokenizer; tasks tokenise,
    the core fine-tunes) or another name for a :class:`harness.examples.ExampleModel` (raw
    examples in; it trains, predicts, saves and reloads itself). Compressions and tasks accept
    kinds in ``requires`` (``"model:<kind>"``): docs/plugins.md, "The model contract"."""

    axis = "model"
    #: what ``load`` returns: "transformers", or the kind name of an ``ExampleModel``
    kind: ClassVar[str] = "transformers"
    #: the head kinds (``Head.kind``) this model can serve; a task needing another is skipped
    heads: ClassVar[tuple[str, ...]] = ("token-classification", "sequence-classification")

    @abstractmethod
    def load(self, head: Head, ctx: CellContext) -> LoadedModel:
        """Return the model with a head for ``head``.

        Set ``trained_for_task`` when the checkpoint already has a trained head with exactly
        ``head.labels``; raise ``harness.errors.PluginError`` when it has a head with other labels.
        """

    def identity(self) -> str:
        """A stable string identifying the weights (for cache keys); default: the parameters."""
        return f"{self.name}:{json.dumps(as_key(self), sort_keys=True)}"


class Task(Plugin):
    """A dataset + metric (+ a fine-tuning recipe for models without a head).

    A task keeps no state between calls that another call depends on: every method receives
    the model it works for (``harness.toolkit.FineTunedTask`` is the built-ins' base).
    """

    axis = "task"
    #: the ``Head.kind`` this task needs ("" = found only when ``head()`` reads the data); a
    #: model whose ``heads`` lack it is skipped before any work
    head_kind: ClassVar[str] = ""
    #: the model kinds this task can feed (``"model:<kind>"``, ``"model:*"``; none named:
    #: transformers only: the task tokenises with ``LoadedModel.tokenizer``)
    requires: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def head(self) -> Head:
        """The head this task needs. May read the data (label set from the data)."""

    @abstractmethod
    def data_hash(self) -> str:
        """A hash of the data files used (cache keys and provenance)."""

    def fit(self, model: LoadedModel, ctx: CellContext) -> LoadedModel:
        """Fine-tune ``model`` on the train split unless ``model.trained_for_task``. Cached."""
        return model

    @abstractmethod
    def evaluate(self, predictor: Predictor, model: LoadedModel, ctx: CellContext, *,
                 split: str | None = None, limit: int | None = None,
                 intervals: bool = True) -> list[MetricValue]:
        """Score ``predictor``, which runs (a compressed form of) ``model``; ``model`` gives
        the tokenizer, the label order (``model.head.labels``) and the length limit.
        Exactly one returned MetricValue has ``main=True``.

        The keywords let a compression ask for a smaller evaluation (e.g. accuracy-controlled
        quantisation); the core calls ``evaluate(predictor, model, ctx)`` only.

        :param split: score this split instead of the task's evaluation split; only names in
            ``splits()`` are valid. A task that cannot honour it raises
            ``harness.errors.PluginError`` naming itself.
        :param limit: score at most this many examples (the first ones). A task that cannot
            honour it raises ``PluginError``.
        :param intervals: ``False``: confidence intervals may be skipped (faster).
        """

    def splits(self) -> tuple[str, ...]:
        """The labelled splits ``evaluate(split=...)`` accepts; default ``()``: only the
        task's own evaluation split."""
        return ()

    @abstractmethod
    def latency_batches(
        self, model: LoadedModel, batch_size: int, count: int, seed: int
    ) -> list[dict[str, Any]]:
        """``count`` batches of ``batch_size`` real evaluation inputs tokenised for ``model``,
        at their real lengths (dynamic padding, at most the model's evaluation length), drawn
        reproducibly with ``seed``: what latency is timed on."""

    def calibration_batches(self, model: LoadedModel, samples: int, seed: int) -> list[dict[str, Any]]:
        """Batch-1 inputs from the train split tokenised for ``model``, for static quantisation."""
        raise NotImplementedError(f"task {self.name!r} provides no calibration data")


class Compression(Plugin):
    """A transformation of a fine-tuned model into something smaller or faster."""

    axis = "compression"

    #: task capabilities (names in ``CAPABILITIES``) that ``apply`` uses, and the model kinds it
    #: takes (``"model:<kind>"``, ``"model:*"``; none named: transformers only); a cell whose
    #: task or model does not fit is ``skipped`` with the reason, before any work
    #: (:func:`harness.capabilities.capability_reason`). An instance may narrow it in
    #: ``__init__`` (e.g. only when a parameter asks for recovery training).
    requires: tuple[str, ...] = ()

    def unsupported_reason(self, ctx: CellContext) -> str | None:
        """Why this compression cannot run here (device, runtime, missing package), or None.

        A reason makes the cell ``skipped`` (never ``failed``).
        """
        return None

    @abstractmethod
    def apply(self, model: LoadedModel, task: Task, ctx: CellContext) -> Predictor:
        """Return a predictor running the compressed model. Cache artifacts under
        ``ctx.cache_dir`` keyed by ``model.identity`` and this plugin's parameters
        (``harness.toolkit.cached_or_build`` does this)."""


class Transform(Compression):
    """A compression whose result is again a torch model: a step that can feed another.

    In a chain (a suite's ``chain:`` entry) every step but the last must be a ``Transform``;
    the last may be any compression (deploying to torch, OpenVINO, ONNX Runtime, ...). The core
    calls ``transform`` and caches its result by (input model, this plugin's module, class,
    version and resolved parameters, the task), so chains sharing a prefix compute it once;
    ``transform`` itself caches nothing; ``save_output`` / ``load_output`` store tensors only.
    ``apply`` (the transform used alone or as the last step) defaults to the core-cached
    ``transform`` run as eager PyTorch, its artifact the module's unique weights as safetensors;
    a plugin with a compact artifact of its own (factors, packed indices) overrides ``apply``.
    """

    @abstractmethod
    def transform(self, model: LoadedModel, task: Task, ctx: CellContext) -> LoadedModel:
        """Return the transformed model: a ``LoadedModel`` whose ``module`` is a torch module with
        the same head (``dataclasses.replace(model, module=new)`` is typical).

        ``model`` is the core's copy: its module may be modified in place, its tokenizer not (the
        fitted model shares it). A transform may *replace* the tokenizer (``vocab-trim``:
        ``dataclasses.replace(model, module=new, tokenizer=new_tokenizer)``, of the same class):
        the core saves it with the step's output (its JSON files), restores it on a cache hit and
        uses it in every later phase: the next step's calibration and export, evaluation and the
        timing inputs. The core sets the result's ``identity`` (it keys the next step's cache) and
        keeps ``info`` columns that are plain values."""

    def save_output(self, module: Any, folder: Path) -> None:
        """Write ``transform``'s output into its cache entry: its unique tensors + config.json."""
        from .toolkit.weights import save_module

        save_module(module, folder)

    def load_output(self, model: LoadedModel, folder: Path) -> Any:
        """The output ``save_output`` wrote, for the input ``model`` (left unmodified): by default
        a copy of ``model.module`` with the tensors loaded strictly. A transform that changes the
        structure rebuilds it from ``model`` and its parameters, never from what the folder
        names; an error here makes the core rebuild the entry."""
        from .toolkit.weights import load_into_copy

        return load_into_copy(model.module, folder)

    def apply(self, model: LoadedModel, task: Task, ctx: CellContext) -> Predictor:
        assert _transform_apply is not None, "harness.chain registers it when harness loads"
        return _transform_apply(self, model, task, ctx)


#: ``Transform.apply``'s default, the core-cached transform run as eager PyTorch: set by
#: ``harness.chain`` when the package loads (this contract module imports nothing above it)
_transform_apply: Callable[[Transform, LoadedModel, Task, CellContext], Predictor] | None = None


def _register_transform_apply(fn: Callable[[Transform, LoadedModel, Task, CellContext], Predictor]) -> None:
    global _transform_apply
    _transform_apply = fn


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

    ``run`` calls ``on_phase(cell, phase)`` as work progresses (optional; ``phase`` may carry a
    plugin's progress text after a colon, ``"fine-tune: step 300/2195 loss 0.2100"``) and
    ``on_done(cell, outcome)`` exactly once per cell, in the calling thread, with a
    ``harness.cell.CellOutcome``; a cell whose worker died is reported ``failed`` with the
    reason. The runner writes rows and caches results; executors never touch the results file.
    """

    axis = "executor"

    @abstractmethod
    def run(self, cells: list[Any], ectx: ExecutorContext,
            on_phase: Callable[[Any, str], None],
            on_done: Callable[[Any, Any], None]) -> None:
        """Run ``cells``; call ``on_done`` once per cell."""
