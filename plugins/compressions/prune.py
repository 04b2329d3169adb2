"""The ``prune`` compression: magnitude pruning of a transformers encoder.

* ``method="unstructured"``: global magnitude pruning. The ``sparsity`` fraction of the
  smallest-magnitude weights over all encoder Linear weight matrices (the classifier, biases and
  LayerNorms excluded; embeddings only with ``include_embeddings``) is set to zero. The model
  still runs dense (PyTorch has no CPU kernel that beats dense GEMM at these sparsities), so it
  brings no speed-up; the artifact stores each pruned matrix as a bitmask plus its non-zero
  values, so it really is smaller on disk.
* ``method="heads"``: structured: in every layer the ``sparsity`` share of attention heads with
  the smallest weight magnitude (query/key/value rows + output columns) is removed; the Linear
  layers are physically shrunk, so the model is smaller *and* faster.
* ``method="ffn"``: structured: in every layer the ``sparsity`` share of feed-forward neurons
  with the smallest ``|W_in row| * |W_out column|`` is removed (shrunk Linear layers).

Structured pruning finds the blocks and their query/key/value, attention-output and
feed-forward Linears in any transformers encoder (``plugins/_lib/arch.py``: BERT, DistilBERT,
RoBERTa, DeBERTa-v2, ALBERT, ELECTRA, MPNet, ...; see ``plugins/_lib/structured.py``); a model
where they are not found is skipped with what is missing. With ``recovery_epochs > 0`` the pruned model is fine-tuned again with the task's
own recipe (pruned weights are kept at zero through gradient masks): the plugin then declares
``requires = ("finetune",)``, so with a task that is not ``harness.api.Finetunable`` the cell is
skipped with a reason naming the task and the capability.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

import harness
from harness.api import CellContext, LoadedModel, Task
from harness.toolkit import base_info, cached_load, load_tensors, save_module, task_key

from .._lib.arch import discover
from .._lib.layers import RecoveringTransform, device_reason, recover
from .._lib.prune_masks import apply_masks, global_magnitude_masks, load_sparse, save_sparse
from .._lib.structured import apply_structured, structured_spec
from .._lib.torch_utils import (
    WEIGHTS_FILE,
    CompressedTorchPredictor,
    check_fits,
    cpu_copy,
    load_unique,
    weight_counts,
)

SPEC_FILE = "prune_spec.json"


# ---------------------------------------------------------------------------------------------
# finding the prunable parts
# ---------------------------------------------------------------------------------------------


def _head_module_names(module: Any) -> set[str]:
    """Names of the classification head's modules (never pruned): the children outside the
    transformers base model (``classifier``; DistilBERT's ``pre_classifier`` too), or, for a
    module without one, those named like a head."""
    base = getattr(module, "base_model", None)
    if base is not None and base is not module:
        return {n for n, m in module.named_children() if m is not base}
    names = set()
    for n, _ in module.named_modules():
        last = n.rsplit(".", 1)[-1]
        if last in ("classifier", "score", "qa_outputs") or n.startswith("classifier"):
            names.add(n)
    return names


def prunable_weights(module: Any, include_embeddings: bool) -> list[tuple[str, Any]]:
    """(name, Parameter) of the weight matrices unstructured pruning acts on."""
    import torch

    head = _head_module_names(module)
    out = []
    for mname, mod in module.named_modules():
        if any(mname == h or mname.startswith(h + ".") for h in head):
            continue
        if isinstance(mod, torch.nn.Linear) or (include_embeddings and isinstance(mod, torch.nn.Embedding)):
            if isinstance(mod, torch.nn.Embedding) and mod.num_embeddings <= 2:
                continue  # token-type embeddings: nothing to gain
            out.append((f"{mname}.weight", mod.weight))
    return out


def structure(module: Any, plugin: str = "prune") -> Any:
    """The discovered ``Structure`` of ``module`` (``UnsupportedModel``, a skip, when none)."""
    return discover(module, plugin)


# ---------------------------------------------------------------------------------------------
# the plugin
# ---------------------------------------------------------------------------------------------


class Prune(RecoveringTransform):
    """Magnitude pruning: global unstructured, or structured attention heads / FFN neurons."""

    name = "prune"
    version = "1"
    description = "magnitude pruning: global unstructured (sparse artifact) or heads/FFN (smaller, faster)"

    class Params(harness.Params):
        method: Literal["unstructured", "heads", "ffn"] = "unstructured"
        """Global unstructured magnitude pruning, or structured: attention heads or FFN neurons."""
        sparsity: float = Field(0.5, ge=0, lt=1)
        """Share removed: of the prunable weights (unstructured), of the heads per layer (heads) or
        of the FFN neurons per layer (ffn)."""
        include_embeddings: bool = False
        """Unstructured only: prune the word/position embeddings too."""
        recovery_epochs: float = Field(0, ge=0)
        """Fine-tune after pruning with the task's recipe, pruned weights kept at zero (0: none)."""

        @model_validator(mode="after")
        def _embeddings_unstructured(self) -> Any:
            if self.include_embeddings and self.method != "unstructured":
                raise ValueError("include_embeddings applies to method 'unstructured' only")
            return self

    params: Params


    def unsupported_reason(self, ctx: CellContext) -> str | None:
        return device_reason("prune", ctx.device)

    def _compute(self, model: LoadedModel, task: Task, ctx: CellContext,
                 folder: Path | None) -> tuple[Any, dict[str, Any], dict[str, Any]]:
        """(pruned module, masks of the kept weights (unstructured), what to record); writes the
        structured spec into ``folder`` when given."""
        module = cpu_copy(model.module).float().eval()
        extra: dict[str, Any] = {}
        masks: dict[str, Any] = {}
        if self.params.method == "unstructured":
            weights = prunable_weights(module, self.params.include_embeddings)
            masks = global_magnitude_masks(weights, self.params.sparsity)
            apply_masks(module, masks)
            pruned = sum(int((~m).sum()) for m in masks.values())
            extra["prunable_params"] = sum(int(m.numel()) for m in masks.values())
            extra["achieved_sparsity"] = round(pruned / max(1, extra["prunable_params"]), 6)
        else:
            found = structure(module)
            spec = structured_spec(module, found, self.params.method, self.params.sparsity)
            apply_structured(module, found, self.params.method, spec)
            if folder is not None:
                (folder / SPEC_FILE).write_text(json.dumps({"method": self.params.method, "kept": spec}))
            first = next(iter(spec.values()))
            extra["kept_per_layer"] = len(first)
        note = "no recovery"
        if self.params.recovery_epochs > 0:
            module, note = recover(model, module, task, ctx, self.params.recovery_epochs, "prune",
                                   masks=masks)
        extra["recovery"] = note
        return module, masks, extra

    def transform(self, model: LoadedModel, task: Task, ctx: CellContext) -> LoadedModel:
        module, _, extra = self._compute(model, task, ctx, None)
        return dataclasses.replace(model, module=module, info={**model.info, **extra})

    def _build(self, model: LoadedModel, task: Task, ctx: CellContext, folder: Path) -> dict[str, Any]:
        module, masks, extra = self._compute(model, task, ctx, folder)
        if self.params.method == "unstructured":
            extra.update(save_sparse(module, masks, folder))
        else:
            save_module(module, folder)
        return extra

    def _structure(self, model: LoadedModel) -> Any:
        """A copy of ``model.module`` in the pruned structure ``_compute`` makes (structured: the
        same heads/neurons kept, found again from the model and the parameters)."""
        module = cpu_copy(model.module).float().eval()
        if self.params.method != "unstructured":
            found = structure(module)
            spec = structured_spec(module, found, self.params.method, self.params.sparsity)
            apply_structured(module, found, self.params.method, spec)
        return module

    def _load(self, model: LoadedModel, folder: Path) -> Any:
        """The artifact back: tensors only are read (the spec file is for people)."""
        module = self._structure(model)
        if self.params.method != "unstructured":
            return load_unique(module, folder, "prune")
        missing, unexpected = module.load_state_dict(load_sparse(folder), strict=False)
        check_fits(missing, unexpected, folder, "prune")
        return module

    def load_output(self, model: LoadedModel, folder: Path) -> Any:
        """``transform``'s cached output (``save_output``'s default: the unique tensors)."""
        return load_tensors(self._structure(model), Path(folder) / WEIGHTS_FILE)

    def apply(self, model: LoadedModel, task: Task, ctx: CellContext) -> CompressedTorchPredictor:
        if self.params.method != "unstructured":
            structure(model.module)  # a skip, with the reason, before any work
        extra_key = task_key(task) if self.params.recovery_epochs > 0 else ""
        folder, meta, hit, module = cached_load(
            ctx, model, self, lambda f: self._build(model, task, ctx, f),
            lambda f: self._load(model, f), extra_key=extra_key,
        )
        info = base_info(self, "torch", meta, hit)
        for k in ("achieved_sparsity", "prunable_params", "kept_per_layer", "recovery"):
            if k in meta:
                info[k] = meta[k]
        total, nonzero = weight_counts(module)
        src_total, _ = weight_counts(model.module)
        info["params_vs_source"] = round(total / src_total, 6) if src_total else None
        info["overall_sparsity"] = round(1 - nonzero / total, 6) if total else 0.0
        info["dense_compute"] = self.params.method == "unstructured"
        pred = CompressedTorchPredictor(
            module, device=ctx.device, precision="fp32", info=info, artifact=folder / "model"
        )
        bytes_ = (folder / "model" / WEIGHTS_FILE).stat().st_size
        pred.info["bits_per_nonzero"] = round(8 * bytes_ / nonzero, 3) if nonzero else None
        return pred


@harness.hookimpl
def register_compressions(register):
    register(Prune)


__all__ = ["Prune", "load_sparse", "save_sparse"]
