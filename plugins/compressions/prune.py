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

Structured pruning needs a BERT-style layout (``attention.self.query/key/value``,
``attention.output.dense``, ``intermediate.dense``, ``output.dense``: BERT, RoBERTa, MiniLM,
ELECTRA, ...). With ``recovery_epochs > 0`` the pruned model is fine-tuned again with the task's
own recipe (pruned weights are kept at zero through gradient masks): the plugin then declares
``requires = ("finetune",)``, so with a task that is not ``harness.api.Finetunable`` the cell is
skipped with a reason naming the task and the capability.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import harness
from harness.api import CellContext, LoadedModel, Task, Transform
from harness.errors import PluginError
from harness.toolkit import base_info, cached_load, load_tensors, save_module, task_key

from .._lib.layers import recover
from .._lib.torch_utils import (
    WEIGHTS_FILE,
    CompressedTorchPredictor,
    check_fits,
    cpu_copy,
    load_unique,
    weight_counts,
)

METHODS = ("unstructured", "heads", "ffn")
SPEC_FILE = "prune_spec.json"


# ---------------------------------------------------------------------------------------------
# finding the prunable parts
# ---------------------------------------------------------------------------------------------


def _head_module_names(module: Any) -> set[str]:
    """Names of the classification head's modules (never pruned)."""
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


def bert_layers(module: Any) -> list[tuple[str, Any]]:
    """(name, layer) of every BERT-style transformer layer."""
    layers = []
    for name, mod in module.named_modules():
        att = getattr(mod, "attention", None)
        if (
            att is not None
            and hasattr(getattr(att, "self", None), "query")
            and hasattr(getattr(att, "output", None), "dense")
            and hasattr(getattr(mod, "intermediate", None), "dense")
            and hasattr(getattr(mod, "output", None), "dense")
        ):
            layers.append((name, mod))
    return layers


# ---------------------------------------------------------------------------------------------
# unstructured
# ---------------------------------------------------------------------------------------------


def global_magnitude_masks(weights: list[tuple[str, Any]], sparsity: float) -> dict[str, Any]:
    """Boolean keep-masks: the ``sparsity`` share of smallest |w| over all ``weights`` is dropped."""
    import torch

    if sparsity <= 0:
        return {n: torch.ones_like(w, dtype=torch.bool) for n, w in weights}
    flat = torch.cat([w.detach().abs().flatten().float() for _, w in weights])
    k = round(sparsity * flat.numel())
    if k <= 0:
        return {n: torch.ones_like(w, dtype=torch.bool) for n, w in weights}
    # the k-th smallest magnitude; ties at the threshold are broken by pruning exactly k overall
    threshold = torch.kthvalue(flat, k).values
    masks = {n: w.detach().abs() > threshold for n, w in weights}
    kept = sum(int(m.sum()) for m in masks.values())
    extra = (flat.numel() - k) - kept  # ties pruned beyond k: give some back
    if extra > 0:
        for n, w in weights:
            if extra <= 0:
                break
            ties = (w.detach().abs() == threshold) & ~masks[n]
            idx = ties.flatten().nonzero().flatten()[:extra]
            m = masks[n].flatten()
            m[idx] = True
            masks[n] = m.view_as(w)
            extra -= len(idx)
    return masks


def apply_masks(module: Any, masks: dict[str, Any]) -> None:
    import torch

    params = dict(module.named_parameters())
    with torch.no_grad():
        for n, m in masks.items():
            params[n].mul_(m.to(params[n].dtype))


def save_sparse(module: Any, masks: dict[str, Any], folder: Path) -> dict[str, Any]:
    """safetensors with every masked matrix as ``<name>.__mask__`` (packed bits, uint8) plus
    ``<name>.__values__`` (its non-zeros, row-major) whenever that is smaller than dense, and
    the module's config."""
    import numpy as np
    import torch
    from safetensors.torch import save_file

    tensors: dict[str, Any] = {}
    shapes: dict[str, list[int]] = {}
    state = module.state_dict()
    shared = {}
    for name, t in state.items():
        t = t.detach().cpu().contiguous()
        key = (t.data_ptr(), t.shape, t.dtype)
        if key in shared and t.numel():  # tied weights: store once
            shapes[name] = ["tied", shared[key]]  # type: ignore[list-item]
            continue
        shared[key] = name
        if name in masks:
            nz = t != 0
            nnz = int(nz.sum())
            sparse_bytes = math.ceil(t.numel() / 8) + nnz * t.element_size()
            if sparse_bytes < t.numel() * t.element_size():
                bits = np.packbits(nz.flatten().numpy())
                tensors[f"{name}.__mask__"] = torch.from_numpy(bits)
                tensors[f"{name}.__values__"] = t.flatten()[nz.flatten()].clone()
                shapes[name] = list(t.shape)
                continue
        tensors[name] = t.clone()
    save_file(tensors, str(folder / WEIGHTS_FILE), metadata={"harness_sparse": json.dumps(shapes)})
    module.config.to_json_file(str(folder / "config.json"))
    return {"sparse_tensors": sum(1 for v in shapes.values() if v and v[0] != "tied")}


def load_sparse(folder: Path) -> dict[str, Any]:
    """The dense state dict back from :func:`save_sparse`'s file."""
    import numpy as np
    import torch
    from safetensors import safe_open

    out: dict[str, Any] = {}
    with safe_open(str(folder / WEIGHTS_FILE), framework="pt") as f:
        shapes = json.loads((f.metadata() or {}).get("harness_sparse", "{}"))
        for key in f.keys():  # noqa: SIM118 - a safetensors handle, not a dict
            if key.endswith(".__values__"):
                continue
            if key.endswith(".__mask__"):
                name = key[: -len(".__mask__")]
                shape = shapes[name]
                n = math.prod(shape)
                mask = f.get_tensor(key)
                bits = np.unpackbits(mask.numpy())[:n].astype(bool)
                values = f.get_tensor(f"{name}.__values__")
                if n > 8 * mask.numel() or int(bits.sum()) != values.numel():
                    raise ValueError(f"{folder / WEIGHTS_FILE}: sparse tensor {name!r} is inconsistent")
                dense = torch.zeros(n, dtype=values.dtype)
                dense[torch.from_numpy(bits)] = values
                out[name] = dense.view(shape)
            else:
                out[key] = f.get_tensor(key)
    for name, v in shapes.items():
        if v and v[0] == "tied":
            out[name] = out[v[1]]
    return out


# ---------------------------------------------------------------------------------------------
# structured
# ---------------------------------------------------------------------------------------------


def _shrink_linear(lin: Any, keep: Any, dim: int) -> Any:
    """A new Linear keeping ``keep`` indices of its output (dim 0) or input (dim 1) features."""
    import torch

    w = lin.weight.detach().index_select(dim, keep).clone()
    out_f, in_f = w.shape
    new = torch.nn.Linear(in_f, out_f, bias=lin.bias is not None, dtype=w.dtype, device=w.device)
    with torch.no_grad():
        new.weight.copy_(w)
        if lin.bias is not None:
            new.bias.copy_(lin.bias.detach() if dim == 1 else lin.bias.detach().index_select(0, keep))
    new.train(lin.training)
    return new


def head_scores(layer: Any) -> Any:
    """Magnitude score of every head: L2 norm of its q/k/v rows and output-projection columns."""
    import torch

    sa = layer.attention.self
    d = sa.attention_head_size
    h = sa.query.weight.shape[0] // d
    parts = [sa.query.weight, sa.key.weight, sa.value.weight]
    s = torch.zeros(h)
    for w in parts:
        s += w.detach().float().view(h, d, -1).pow(2).sum(dim=(1, 2))
    s += layer.attention.output.dense.weight.detach().float().view(-1, h, d).pow(2).sum(dim=(0, 2))
    return s.sqrt()


def ffn_scores(layer: Any) -> Any:
    w_in = layer.intermediate.dense.weight.detach().float()  # (inter, hidden)
    w_out = layer.output.dense.weight.detach().float()  # (hidden, inter)
    return w_in.norm(dim=1) * w_out.norm(dim=0)


def structured_spec(module: Any, method: str, sparsity: float) -> dict[str, list[int]]:
    """{layer name: kept head (or neuron) indices}, the same count removed in every layer."""
    import torch

    layers = bert_layers(module)
    if not layers:
        raise PluginError(
            f"prune: method={method!r} needs a BERT-style encoder (attention.self.query, "
            f"intermediate.dense, ...); {type(module).__name__} has none. Use "
            "method='unstructured'."
        )
    spec = {}
    for name, layer in layers:
        scores = head_scores(layer) if method == "heads" else ffn_scores(layer)
        n = scores.numel()
        drop = min(round(sparsity * n), n - 1)  # keep at least one head/neuron
        keep = torch.argsort(scores, descending=True)[: n - drop].sort().values
        spec[name] = keep.tolist()
    return spec


def apply_structured(module: Any, method: str, spec: dict[str, list[int]]) -> None:
    """Shrink the layers of ``module`` in place to the kept heads/neurons of ``spec``."""
    import torch

    layers = dict(bert_layers(module))
    for name, kept in spec.items():
        layer = layers[name]
        if method == "heads":
            sa = layer.attention.self
            d = sa.attention_head_size
            idx = torch.tensor([h * d + i for h in kept for i in range(d)], dtype=torch.long)
            sa.query = _shrink_linear(sa.query, idx, 0)
            sa.key = _shrink_linear(sa.key, idx, 0)
            sa.value = _shrink_linear(sa.value, idx, 0)
            layer.attention.output.dense = _shrink_linear(layer.attention.output.dense, idx, 1)
            sa.num_attention_heads = len(kept)
            sa.all_head_size = len(kept) * d
        else:
            idx = torch.tensor(kept, dtype=torch.long)
            layer.intermediate.dense = _shrink_linear(layer.intermediate.dense, idx, 0)
            layer.output.dense = _shrink_linear(layer.output.dense, idx, 1)


# ---------------------------------------------------------------------------------------------
# recovery
# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# the plugin
# ---------------------------------------------------------------------------------------------


class Prune(Transform):
    """Magnitude pruning: global unstructured, or structured attention heads / FFN neurons.

    :param method: "unstructured", "heads" or "ffn".
    :param sparsity: share of the prunable weights (unstructured), of the heads per layer
        (heads) or of the FFN neurons per layer (ffn) that is removed.
    :param include_embeddings: unstructured only: prune the word/position embeddings too.
    :param recovery_epochs: fine-tune after pruning with the task's recipe (0: none).
    """

    name = "prune"
    version = "1"
    description = "magnitude pruning: global unstructured (sparse artifact) or heads/FFN (smaller, faster)"

    def __init__(
        self,
        *,
        method: str = "unstructured",
        sparsity: float = 0.5,
        include_embeddings: bool = False,
        recovery_epochs: float = 0,
    ) -> None:
        super().__init__()
        if method not in METHODS:
            raise ValueError(f"prune: method must be one of {METHODS}, got {method!r}")
        if not 0 <= float(sparsity) < 1:
            raise ValueError(f"prune: sparsity must be in [0, 1), got {sparsity!r}")
        if include_embeddings and method != "unstructured":
            raise ValueError("prune: include_embeddings applies to method='unstructured' only")
        if float(recovery_epochs) < 0:
            raise ValueError("prune: recovery_epochs must be >= 0")
        self.method, self.sparsity = method, float(sparsity)
        self.include_embeddings = bool(include_embeddings)
        self.recovery_epochs = recovery_epochs
        # recovery trains with the task's recipe: a task without it makes the cell skipped
        self.requires = ("finetune",) if float(recovery_epochs) > 0 else ()

    def unsupported_reason(self, ctx: CellContext) -> str | None:
        if ctx.device.startswith("cuda"):
            import torch

            if not torch.cuda.is_available():
                return f"prune: device {ctx.device} requested but CUDA is not available"
        elif ctx.device != "cpu":
            return f"prune: unsupported device {ctx.device!r}"
        return None

    def _compute(self, model: LoadedModel, task: Task, ctx: CellContext,
                 folder: Path | None) -> tuple[Any, dict[str, Any], dict[str, Any]]:
        """(pruned module, masks of the kept weights (unstructured), what to record); writes the
        structured spec into ``folder`` when given."""
        module = cpu_copy(model.module).float().eval()
        extra: dict[str, Any] = {}
        masks: dict[str, Any] = {}
        if self.method == "unstructured":
            weights = prunable_weights(module, self.include_embeddings)
            masks = global_magnitude_masks(weights, self.sparsity)
            apply_masks(module, masks)
            pruned = sum(int((~m).sum()) for m in masks.values())
            extra["prunable_params"] = sum(int(m.numel()) for m in masks.values())
            extra["achieved_sparsity"] = round(pruned / max(1, extra["prunable_params"]), 6)
        else:
            spec = structured_spec(module, self.method, self.sparsity)
            apply_structured(module, self.method, spec)
            if folder is not None:
                (folder / SPEC_FILE).write_text(json.dumps({"method": self.method, "kept": spec}))
            first = next(iter(spec.values()))
            extra["kept_per_layer"] = len(first)
        note = "no recovery"
        if float(self.recovery_epochs) > 0:
            module, note = recover(model, module, task, ctx, float(self.recovery_epochs), "prune",
                                   masks=masks)
        extra["recovery"] = note
        return module, masks, extra

    def transform(self, model: LoadedModel, task: Task, ctx: CellContext) -> LoadedModel:
        module, _, extra = self._compute(model, task, ctx, None)
        return dataclasses.replace(model, module=module, info={**model.info, **extra})

    def _build(self, model: LoadedModel, task: Task, ctx: CellContext, folder: Path) -> dict[str, Any]:
        module, masks, extra = self._compute(model, task, ctx, folder)
        if self.method == "unstructured":
            extra.update(save_sparse(module, masks, folder))
        else:
            save_module(module, folder)
        return extra

    def _structure(self, model: LoadedModel) -> Any:
        """A copy of ``model.module`` in the pruned structure ``_compute`` makes (structured: the
        same heads/neurons kept, found again from the model and the parameters)."""
        module = cpu_copy(model.module).float().eval()
        if self.method != "unstructured":
            apply_structured(module, self.method, structured_spec(module, self.method, self.sparsity))
        return module

    def _load(self, model: LoadedModel, folder: Path) -> Any:
        """The artifact back: tensors only are read (the spec file is for people)."""
        module = self._structure(model)
        if self.method != "unstructured":
            return load_unique(module, folder, "prune")
        missing, unexpected = module.load_state_dict(load_sparse(folder), strict=False)
        check_fits(missing, unexpected, folder, "prune")
        return module

    def load_output(self, model: LoadedModel, folder: Path) -> Any:
        """``transform``'s cached output (``save_output``'s default: the unique tensors)."""
        return load_tensors(self._structure(model), Path(folder) / WEIGHTS_FILE)

    def apply(self, model: LoadedModel, task: Task, ctx: CellContext) -> CompressedTorchPredictor:
        extra_key = task_key(task) if float(self.recovery_epochs) > 0 else ""
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
        info["dense_compute"] = self.method == "unstructured"
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
