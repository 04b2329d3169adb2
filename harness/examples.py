"""Models that are not transformers: the contract of a model that takes a task's raw examples.

A transformers model is fed token ids the task makes with the model's tokenizer. A classic model
(a scikit-learn pipeline, a CRF) does its own featurising, so the task hands it **raw examples**
(:class:`Examples`: texts, or sentences as word lists, with their gold labels) and the model
does the rest. The pieces, and who calls them::

    model plugin  load(head, ctx)   -> LoadedModel(module=<ExampleModel, untrained>, tokenizer=None)
    task          fit(loaded, ctx)  -> fit_examples(): module.fit(task's train Examples), cached
                                       through module.save / module.load (never pickle)
    compression   apply(...)        -> ExamplePredictor(module) (only compressions that accept
                                       the model's kind, e.g. ``none``; others are skipped)
    task          evaluate(...)     -> predict_examples(predictor, inputs): one output per input
    core          timing            -> predictor(batch) on ``example_batches(...)``: raw inputs,
                                       so featurising is inside the timed call

A model plugin of this kind sets ``Model.kind`` (e.g. ``"sklearn"``) and ``Model.heads``; the
tasks that can feed it list ``"model:*"`` (or its kind) in ``requires``.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

from .api import CellContext, LoadedModel, Predictor
from .errors import HarnessWarning, PluginError
from .fsutil import build_and_publish, discard_dir

__all__ = ["ExampleModel", "ExamplePredictor", "Examples", "example_batches", "fit_examples",
           "is_example_model", "predict_examples"]

FIT_META = "harness_fit.json"


@dataclass(frozen=True)
class Examples:
    """A task's labelled split, raw.

    ``kind`` is the head kind: for ``"sequence-classification"`` each input is a text (str) and
    each target a label name; for ``"token-classification"`` each input is a sentence as a list
    of words and each target the list of its IOB2 tags (one per word).
    """

    kind: str
    inputs: list[Any]
    targets: list[Any]
    labels: tuple[str, ...]  #: every label name of the task (the model's output vocabulary)
    data_hash: str  #: identifies the examples (content and any sample limit)

    def __len__(self) -> int:
        return len(self.inputs)


class ExampleModel(ABC):
    """A model that takes raw examples: the ``LoadedModel.module`` of a non-transformers model.

    Implement ``fit``, ``predict``, ``save``, ``load`` and ``parameter_counts``; set ``runtime``
    and ``precision`` to what actually computes (e.g. ``"scikit-learn"``, ``"fp64"``).
    ``save`` writes plain files (JSON, ``.npz`` without object arrays, safetensors, a library's
    own model file); ``load`` reads them back into a fresh instance made by the model plugin.
    Nothing is pickled, so a cache entry is data, never code.
    """

    runtime: ClassVar[str] = "python"
    precision: ClassVar[str] = "fp64"

    @abstractmethod
    def fit(self, train: Examples, ctx: CellContext) -> None:
        """Train on ``train`` (the task's train split), in place."""

    @abstractmethod
    def predict(self, inputs: Sequence[Any]) -> list[Any]:
        """One output per input: a label name per text, or a list of tags per sentence."""

    @abstractmethod
    def save(self, folder: Path) -> None:
        """Write the trained model's files into ``folder`` (it exists and is empty)."""

    @abstractmethod
    def load(self, folder: Path) -> None:
        """Read back what ``save`` wrote; raise any exception when it does not load."""

    @abstractmethod
    def parameter_counts(self) -> tuple[int, int]:
        """(total, non-zero) learned weights."""

    def bits_per_weight(self) -> float:
        """Storage bits per weight (default from ``precision``)."""
        return {"fp64": 64.0, "fp32": 32.0, "fp16": 16.0, "int8": 8.0}.get(self.precision, 64.0)

    def describe(self) -> dict[str, Any]:
        """Extra scalar columns for the result rows (e.g. vocabulary size, feature count)."""
        return {}


def is_example_model(model: LoadedModel) -> bool:
    """Whether ``model`` takes raw examples (an :class:`ExampleModel`), not token ids."""
    return isinstance(model.module, ExampleModel)


class ExamplePredictor(Predictor):
    """Runs an :class:`ExampleModel`: ``batch["examples"]`` (raw inputs) -> a list of outputs.
    Its artifact is the folder ``save`` writes; runtime and precision are the model's."""

    device = "cpu"

    def __init__(self, module: ExampleModel, info: dict[str, Any] | None = None) -> None:
        self.module = module
        self.runtime, self.precision = module.runtime, module.precision
        self.info = dict(info or {})

    def __call__(self, batch: Mapping[str, Any]) -> list[Any]:
        return self.module.predict(batch["examples"])

    def save(self, directory: Path) -> Path:
        out = Path(directory) / "model"
        out.mkdir(parents=True, exist_ok=True)
        self.module.save(out)
        return out

    def parameter_counts(self) -> tuple[int, int]:
        return self.module.parameter_counts()

    def bits_per_weight(self) -> float:
        return self.module.bits_per_weight()

    def describe(self) -> dict[str, Any]:
        return {**self.module.describe(), **self.info}


def _length(item: Any) -> int:
    """Words of a raw input (a word list, or a text split on whitespace)."""
    return len(item) if isinstance(item, (list, tuple)) else len(str(item).split())


def example_batches(inputs: Sequence[Any], batch_size: int, count: int, seed: int) -> list[dict[str, Any]]:
    """``count`` batches of ``batch_size`` raw inputs drawn reproducibly with ``seed`` (as the
    token batches of a transformers model are): ``{"examples": [...], "lengths": [words]}``."""
    if not inputs:
        raise PluginError("no examples to time")
    rng = random.Random(seed)
    need = batch_size * count
    picks = rng.sample(list(inputs), need) if need <= len(inputs) else rng.choices(list(inputs), k=need)
    chunks = [picks[i * batch_size:(i + 1) * batch_size] for i in range(count)]
    return [{"examples": c, "lengths": [_length(x) for x in c]} for c in chunks]


def predict_examples(predictor: Predictor, inputs: Sequence[Any], batch_size: int,
                     labels: Sequence[str]) -> list[Any]:
    """The predictor's outputs for ``inputs`` in batches of ``batch_size``, checked: one per
    input, label names only, and for word lists one tag per word."""
    known = set(labels)
    out: list[Any] = []
    for start in range(0, len(inputs), max(1, batch_size)):
        chunk = list(inputs[start:start + batch_size])
        got = list(predictor({"examples": chunk, "lengths": [_length(x) for x in chunk]}))
        if len(got) != len(chunk):
            raise PluginError(f"predictor returned {len(got)} outputs for {len(chunk)} inputs")
        for x, y in zip(chunk, got):
            seq = list(y) if isinstance(x, (list, tuple)) else [y]
            if isinstance(x, (list, tuple)) and len(seq) != len(x):
                raise PluginError(f"predictor returned {len(seq)} tags for a {len(x)}-word sentence")
            bad = [t for t in seq if t not in known]
            if bad:
                raise PluginError(f"predictor returned label {bad[0]!r}, not one of {sorted(known)}")
        out.extend(got)
    return out


def fit_examples(model: LoadedModel, train: Callable[[], Examples], ctx: CellContext, *,
                 data_hash: str, task: str, task_version: str) -> LoadedModel:
    """Train ``model.module`` on the task's train examples, or reload the cached result.

    Cached under ``<cache_dir>/fit/<key>/`` (key: the model's identity, head, the train data
    hash, the task and its version, the seed) with ``module.save`` and read back with
    ``module.load`` into the model plugin's fresh instance; an entry that does not load is
    removed, with a warning, and trained again."""
    module: ExampleModel = model.module
    key = hashlib.sha256(repr(("fit", model.identity, model.head.kind, tuple(model.head.labels),
                               data_hash, task, task_version, ctx.seed)).encode()).hexdigest()[:16]
    folder = Path(ctx.cache_dir) / "fit" / key
    meta = _cached_fit(module, folder)
    if meta is not None:
        ctx.progress("fine-tune", f"cached {folder}")
    else:
        examples = train()
        if not len(examples):
            raise PluginError(f"task {task!r}: no training examples")
        t0 = time.perf_counter()
        module.fit(examples, ctx)
        meta = {"train_time_s": time.perf_counter() - t0, "train_examples": len(examples),
                "task": task, "data_hash": data_hash, "seed": ctx.seed}
        _publish_fit(module, folder, meta)
        ctx.progress("fine-tune", f"trained in {meta['train_time_s']:.1f}s, saved {folder}")
    info = {**model.info, "fine_tuned": True, "checkpoint": str(folder),
            "train_time_s": float(meta["train_time_s"]), "train_examples": meta["train_examples"]}
    return replace(model, identity=f"fit-{key}", source=str(folder), trained_for_task=True, info=info)


def _cached_fit(module: ExampleModel, folder: Path) -> dict[str, Any] | None:
    if not (folder / FIT_META).is_file():
        return None
    try:
        meta = json.loads((folder / FIT_META).read_text())
        if not isinstance(meta, dict) or "train_time_s" not in meta:
            raise ValueError(f"{FIT_META} is not a fit record")
        module.load(folder / "model")
        return meta
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as exc:  # noqa: BLE001 - whatever a corrupt file makes a reader raise
        discard_dir(folder)
        warnings.warn(f"cache entry {folder} did not load ({type(exc).__name__}: {exc}); removed, "
                      "the model is trained again", HarnessWarning, stacklevel=3)
        return None


def _publish_fit(module: ExampleModel, folder: Path, meta: dict[str, Any]) -> None:
    def fill(tmp: Path) -> None:
        (tmp / "model").mkdir()
        module.save(tmp / "model")
        (tmp / FIT_META).write_text(json.dumps(meta, indent=2))

    build_and_publish(folder, fill, complete=FIT_META)
