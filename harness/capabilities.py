"""What a cell's plugins need from each other, declared, and why a cell is skipped before any work.

A compression (and a task) lists in ``requires`` what it needs:

- **task capabilities**, names in :data:`CAPABILITIES` (``"finetune"``: the task can continue
  training a model, :class:`Finetunable`; ``"train-features"``: it hands out its train split
  tokenised, :class:`TrainFeatures`); a task lacking one skips the cell;
- **model kinds**, as ``"model:<kind>"`` (``"model:transformers"``, ``"model:sklearn"``, or
  ``"model:*"`` for any): the ``kind`` a model plugin declares must be one of them. A plugin that
  names no model kind accepts ``transformers`` models only, the kind every plugin written before
  model kinds existed was written for.

A model declares its ``kind`` and the head kinds it can serve (``heads``); a task declares the
head kind it needs (``head_kind``). :func:`capability_reason` checks all of it from the classes'
declarations, before anything loads or trains. Re-exported by :mod:`harness.api`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from .api import CellContext, LoadedModel

__all__ = ["CAPABILITIES", "DEFAULT_MODEL_KIND", "MODEL_PREFIX", "Finetunable", "TrainFeatures",
           "capability_reason", "common_kinds", "kinds_in", "model_kinds"]

#: the kind of a model plugin that declares none, and the only kind a plugin accepts when its
#: ``requires`` names no model kind
DEFAULT_MODEL_KIND = "transformers"
#: the prefix of a model-kind entry of ``requires`` (``"model:sklearn"``)
MODEL_PREFIX = "model:"


@runtime_checkable
class Finetunable(Protocol):
    """Optional task capability ``"finetune"``: continue training a model that already has its
    trained head (e.g. recovery after pruning), with the task's own recipe.

    ``finetune(model, ctx, epochs=...)`` returns the trained model; ``epochs`` may be
    fractional. The head is kept and nothing is cached (the compression caches its artifact).
    """

    def finetune(self, model: LoadedModel, ctx: CellContext, *, epochs: float) -> LoadedModel: ...


@runtime_checkable
class TrainFeatures(Protocol):
    """Optional task capability ``"train-features"``: the train split tokenised for a model
    (``harness.toolkit.FineTunedTask`` has it): what a compression that trains or reads the
    training data itself (``distill``, ``vocab-trim``) needs.

    ``train_features(tokenizer, label2id, max_length)`` returns ``(features, examples)`` as
    ``harness.toolkit.finetune`` takes them; ``train_hash()`` identifies the train split as used.
    """

    def train_features(self, tokenizer: Any, label2id: dict[str, int],
                       max_length: int) -> tuple[list[dict[str, Any]], int]: ...

    def train_hash(self) -> str: ...


#: capability name (as in ``Compression.requires``) -> the protocol a task must satisfy
CAPABILITIES: dict[str, type] = {"finetune": Finetunable, "train-features": TrainFeatures}


def kinds_in(requires: Iterable[str]) -> tuple[str, ...]:
    """The model kinds named by the ``"model:<kind>"`` entries of ``requires`` (``("*",)``: any
    kind; none named: ``("transformers",)``)."""
    kinds = tuple(r[len(MODEL_PREFIX):] for r in requires if r.startswith(MODEL_PREFIX))
    return kinds or (DEFAULT_MODEL_KIND,)


def model_kinds(plugin: Any) -> tuple[str, ...]:
    """The model kinds ``plugin`` (a compression or a task instance) accepts."""
    return kinds_in(getattr(plugin, "requires", ()))


def common_kinds(plugins: list[Any]) -> tuple[str, ...]:
    """The model kinds every one of ``plugins`` accepts (a chain's steps), as ``requires``
    entries; ``("model:transformers",)`` when they share none (every chain step before the last
    is a torch transform)."""
    common: set[str] | None = None
    for plugin in plugins:
        kinds = set(model_kinds(plugin))
        if "*" not in kinds:
            common = kinds if common is None else common & kinds
    kinds_ = sorted(common) if common is not None else ["*"]
    return tuple(f"{MODEL_PREFIX}{k}" for k in (kinds_ or [DEFAULT_MODEL_KIND]))


def _kind_reason(plugin: Any, model: Any) -> str | None:
    kinds = model_kinds(plugin)
    kind = getattr(model, "kind", DEFAULT_MODEL_KIND)
    if "*" in kinds or kind in kinds:
        return None
    return (f"{plugin.axis} {plugin.name!r} takes {' or '.join(kinds)} models; model plugin "
            f"{model.name!r} is a {kind} model")


def _head_reason(task: Any, model: Any) -> str | None:
    need = getattr(task, "head_kind", "")
    heads = getattr(model, "heads", ())
    if not need or not heads or need in heads:
        return None
    return (f"task {task.name!r} needs a {need} model; model plugin {model.name!r} predicts "
            f"{' and '.join(heads)} only")


def _task_reason(compression: Any, task: Any) -> str | None:
    for cap in compression.requires:
        if cap.startswith(MODEL_PREFIX):
            continue
        proto = CAPABILITIES.get(cap)
        if proto is None:
            return (f"compression {compression.name!r} requires unknown capability {cap!r} "
                    f"(known: {sorted(CAPABILITIES)}, or model:<kind>)")
        if not isinstance(task, proto):
            return (f"{compression.name}: task {task.name!r} lacks the {cap!r} capability "
                    f"(harness.api.{proto.__name__}) that this compression requires")
    return None


def capability_reason(compression: Any, task: Any, model: Any = None) -> str | None:
    """Why the cell (``model`` x ``task`` x ``compression``) cannot run, or None: a task
    capability the compression requires that the task lacks, a model kind the compression or
    the task does not take, a head the model cannot serve. ``model`` None: task checks only."""
    reason = _task_reason(compression, task)
    if reason or model is None:
        return reason
    return _head_reason(task, model) or _kind_reason(task, model) or _kind_reason(compression, model)
