"""The ``low-rank`` compression: parameter replacement by truncated SVD.

Each chosen ``nn.Linear`` of the encoder's blocks, found by role in any transformers encoder
(``plugins/_lib/arch.py``; ``targets``: ``ffn`` = the feed-forward in and out Linears, BERT's
``intermediate.dense`` and ``output.dense``; ``attention`` = query/key/value, or a fused qkv, and
the attention output; ``all``)
with weight ``W`` (out x in) is replaced by two Linears, ``in -> r`` (no bias) then ``r -> out``
(the original bias), from ``W ~ (U_r sqrt(S_r)) (sqrt(S_r) V_r^T)``: the best rank-``r``
approximation. ``r`` is ``rank`` or ``rank_ratio`` of the full rank ``min(out, in)``. A Linear
whose factors would not have fewer parameters than ``W`` is left alone (and counted).

``embeddings_rank`` factorises the word-embedding table (vocab x hidden) the same way into a
(vocab x r) embedding followed by an (r x hidden) Linear, as ALBERT does: in MiniLM-L6 the table
is 11.7M of the 22.6M parameters. The artifact stores the factors (safetensors) plus a JSON spec
of the ranks, so the size on disk and the parameter count really fall; at load the structure is
rebuilt from the input model and the parameters (as the spec says) and the factors loaded. On
CPU the two thin GEMMs cost ``r (in + out)`` multiply-adds per token instead of ``in x out``, so
the FFN gets faster when ``r`` is small.
``recovery_epochs`` fine-tunes the factorised model with the task's recipe (both factors train).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

import harness
from harness.api import CellContext, LoadedModel, Task
from harness.errors import PluginError
from harness.toolkit import base_info, cached_load, save_module, task_key

from .._lib.arch import discover, set_sub
from .._lib.layers import RecoveringTransform, device_reason, recover, torch_predictor
from .._lib.torch_utils import CompressedTorchPredictor, cpu_copy, load_unique

SPEC_FILE = "lowrank_spec.json"
#: the roles (``plugins/_lib/arch.py``) of each ``targets`` choice, in the order they are replaced
TARGETS = {"ffn": ("ffn_in", "ffn_out"), "attention": ("query", "key", "value", "qkv", "attn_out")}
TARGETS["all"] = TARGETS["attention"] + TARGETS["ffn"]


def factor_params(out_f: int, in_f: int, r: int) -> int:
    """Weights of the two factors of an (out x in) matrix at rank ``r`` (biases excluded)."""
    return r * (in_f + out_f)


def svd_factors(weight: Any, r: int) -> tuple[Any, Any]:
    """``(A, B)`` with ``B @ A`` the best rank-``r`` approximation of ``weight`` (out x in):
    ``A`` is (r x in), ``B`` (out x r), the singular values split evenly between them.

    Computed in float64 from the eigen-decomposition of the Gram matrix of the smaller side
    (``W^T W`` or ``W W^T``): the same top-``r`` singular triplets as an SVD, but a (30522 x 384)
    embedding table takes a second instead of the tens of seconds LAPACK's SVD needs on a CPU."""
    import torch

    w = weight.detach().to(torch.float64)
    tall = w.shape[0] >= w.shape[1]
    evals, vecs = torch.linalg.eigh(w.T @ w if tall else w @ w.T)  # ascending
    vecs = vecs[:, -r:].flip(1)  # top r, largest first
    root = evals[-r:].flip(0).clamp(min=0).sqrt().sqrt()  # sqrt of the singular values
    inv = torch.where(root > 0, 1 / root.clamp(min=1e-300), torch.zeros_like(root))
    if tall:  # vecs = V_r: A = sqrt(S) V^T, B = W V / sqrt(S) = U sqrt(S)
        a, b = root[:, None] * vecs.T, (w @ vecs) * inv[None, :]
    else:  # vecs = U_r: B = U sqrt(S), A = U^T W / sqrt(S) = sqrt(S) V^T
        a, b = (vecs.T @ w) * inv[:, None], vecs * root[None, :]
    return a.to(weight.dtype).contiguous(), b.to(weight.dtype).contiguous()


def low_rank_linear(in_f: int, out_f: int, r: int, bias: bool) -> Any:
    """The replacement structure: ``Sequential(Linear(in, r, bias=False), Linear(r, out))``."""
    import torch

    return torch.nn.Sequential(torch.nn.Linear(in_f, r, bias=False), torch.nn.Linear(r, out_f, bias=bias))


def factorised_embedding(vocab: int, hidden: int, r: int, padding_idx: int | None) -> Any:
    """``Sequential(Embedding(vocab, r), Linear(r, hidden, bias=False))`` (ALBERT-style)."""
    import torch

    return torch.nn.Sequential(torch.nn.Embedding(vocab, r, padding_idx=padding_idx),
                               torch.nn.Linear(r, hidden, bias=False))


def plan(module: Any, found: Any, targets: str, rank: int | None,
         ratio: float | None) -> tuple[dict[str, list[int]], list[str]]:
    """``({linear name: [in, out, rank, bias]}, [names left alone])`` for ``module`` of the
    discovered structure ``found``: the ``targets`` roles of every block (a tied block once)."""
    chosen: dict[str, list[int]] = {}
    kept: list[str] = []
    for name in found.linear_paths(TARGETS[targets]):
        lin = module.get_submodule(name)
        out_f, in_f = lin.weight.shape
        full = min(out_f, in_f)
        r = min(rank, full) if rank is not None else max(1, round(float(ratio or 0) * full))
        if factor_params(out_f, in_f, r) >= out_f * in_f:
            kept.append(name)
        else:
            chosen[name] = [in_f, out_f, r, int(lin.bias is not None)]
    return chosen, kept


def build_structure(module: Any, spec: dict[str, Any]) -> None:
    """Replace the modules named in ``spec`` by (uninitialised) factorised ones, in place."""
    for name, (in_f, out_f, r, bias) in spec["linears"].items():
        set_sub(module, name, low_rank_linear(in_f, out_f, r, bool(bias)))
    emb = spec.get("embeddings")
    if emb:
        set_sub(module, emb["name"], factorised_embedding(emb["vocab"], emb["hidden"], emb["rank"], emb["padding_idx"]))


def factorise(module: Any, spec: dict[str, Any]) -> None:
    """Replace the modules named in ``spec`` by their truncated-SVD factors, in place."""
    import torch

    for name, (in_f, out_f, r, bias) in spec["linears"].items():
        lin = module.get_submodule(name)
        a, b = svd_factors(lin.weight, r)
        new = low_rank_linear(in_f, out_f, r, bool(bias))
        with torch.no_grad():
            new[0].weight.copy_(a)
            new[1].weight.copy_(b)
            if bias:
                new[1].bias.copy_(lin.bias.detach())
        set_sub(module, name, new)
    emb = spec.get("embeddings")
    if emb:
        table = module.get_submodule(emb["name"])
        # the table is (vocab x hidden) = E; E^T (hidden x vocab) ~ B A with A (r x vocab)
        a, b = svd_factors(table.weight.detach().t(), emb["rank"])
        new = factorised_embedding(emb["vocab"], emb["hidden"], emb["rank"], emb["padding_idx"])
        with torch.no_grad():
            new[0].weight.copy_(a.t())
            new[1].weight.copy_(b)
        set_sub(module, emb["name"], new)


class LowRank(RecoveringTransform):
    """Truncated-SVD factorisation of encoder Linears (and optionally the word embeddings)."""

    name = "low-rank"
    version = "1"
    description = "parameter replacement: truncated-SVD factors for encoder Linears (+ ALBERT-style embeddings)"

    class Params(harness.Params):
        rank: int | None = Field(None, ge=1)
        """Rank of every factorised Linear (capped at its full rank); give this or rank_ratio."""
        rank_ratio: float | None = Field(None, gt=0, le=1)
        """Or: share of each Linear's full rank min(out, in) (0.25 when neither is given)."""
        targets: Literal["ffn", "attention", "all"] = "ffn"
        """Which Linears of each layer: the feed-forward pair, the attention projections, or all."""
        embeddings_rank: int | None = Field(None, ge=1)
        """Factorise the word-embedding table at this rank (default: not)."""
        recovery_epochs: float = Field(0, ge=0)
        """Fine-tune after factorising with the task's recipe (0: none)."""

        @model_validator(mode="before")
        @classmethod
        def _default_ratio(cls, data: Any) -> Any:
            if isinstance(data, dict) and data.get("rank") is None and data.get("rank_ratio") is None:
                return {**data, "rank_ratio": 0.25}
            return data

        @model_validator(mode="after")
        def _one_rank(self) -> Any:
            if self.rank is not None and self.rank_ratio is not None:
                raise ValueError("give rank or rank_ratio, not both")
            return self

    params: Params


    def unsupported_reason(self, ctx: CellContext) -> str | None:
        return device_reason("low-rank", ctx.device)

    def _spec(self, module: Any) -> dict[str, Any]:
        found = discover(module, "low-rank")
        linears, kept = plan(module, found, self.params.targets, self.params.rank, self.params.rank_ratio)
        spec: dict[str, Any] = {"linears": linears, "kept": kept, "embeddings": None, "stack": found.stack_path}
        if self.params.embeddings_rank is not None:
            name = found.word_embeddings_path
            table = module.get_submodule(name)
            vocab, hidden = table.weight.shape
            r = min(self.params.embeddings_rank, vocab, hidden)
            if factor_params(vocab, hidden, r) >= vocab * hidden:
                raise PluginError(f"low-rank: embeddings_rank={self.params.embeddings_rank} does not make the "
                                  f"{vocab}x{hidden} word-embedding table smaller")
            spec["embeddings"] = {"name": name, "vocab": vocab, "hidden": hidden, "rank": r,
                                  "padding_idx": table.padding_idx}
        return spec

    def _compute(self, model: LoadedModel, task: Task, ctx: CellContext) -> tuple[Any, dict[str, Any], str]:
        """(factorised module, its spec, recovery note)."""
        module = cpu_copy(model.module).float().eval()
        spec = self._spec(module)
        factorise(module, spec)
        note = "no recovery"
        if self.params.recovery_epochs > 0:
            module, note = recover(model, module, task, ctx, self.params.recovery_epochs, "low-rank")
        return module, spec, note

    def transform(self, model: LoadedModel, task: Task, ctx: CellContext) -> LoadedModel:
        module, spec, note = self._compute(model, task, ctx)
        info = {"replaced_linears": len(spec["linears"]), "kept_linears": len(spec["kept"]),
                "embeddings_rank": spec["embeddings"]["rank"] if spec.get("embeddings") else None,
                "recovery": note}
        return dataclasses.replace(model, module=module, info={**model.info, **info})

    def _build(self, model: LoadedModel, task: Task, ctx: CellContext, folder: Path) -> dict[str, Any]:
        module, spec, note = self._compute(model, task, ctx)
        save_module(module, folder)
        (folder / SPEC_FILE).write_text(json.dumps(spec, indent=1))
        return {"recovery": note}

    def load(self, model: LoadedModel, folder: Path) -> tuple[Any, dict[str, Any]]:
        """The factorised module back from an artifact folder, and its spec: the structure is
        rebuilt from ``model`` and this plugin's parameters, as ``_compute`` made it (the spec
        file is for people; nothing but tensors is read from the folder)."""
        module = cpu_copy(model.module).float().eval()
        spec = self._spec(module)
        build_structure(module, spec)
        return load_unique(module, Path(folder), "low-rank").eval(), spec

    def load_output(self, model: LoadedModel, folder: Path) -> Any:
        """``transform``'s cached output (``save_output``'s default: the unique tensors)."""
        return self.load(model, folder)[0]

    def apply(self, model: LoadedModel, task: Task, ctx: CellContext) -> CompressedTorchPredictor:
        discover(model.module, "low-rank")  # a skip, with the reason, before any work
        extra_key = task_key(task) if self.params.recovery_epochs > 0 else ""
        folder, meta, hit, (module, spec) = cached_load(
            ctx, model, self, lambda f: self._build(model, task, ctx, f),
            lambda f: self.load(model, f), extra_key=extra_key,
        )
        info = base_info(self, "torch", meta, hit)
        ranks: dict[str, set[int]] = {}
        for name, (_, _, r, _) in spec["linears"].items():  # "<stack>.<i>.intermediate.dense": by sub-layer
            ranks.setdefault(name.removeprefix(spec["stack"] + ".").partition(".")[2], set()).add(r)
        info["lowrank_ranks"] = " ".join(f"{k}={'/'.join(map(str, sorted(v)))}" for k, v in sorted(ranks.items()))
        info["replaced_linears"] = len(spec["linears"])
        info["kept_linears"] = len(spec["kept"])
        info["embeddings_rank"] = spec["embeddings"]["rank"] if spec.get("embeddings") else None
        info["recovery"] = meta.get("recovery", "no recovery")
        return torch_predictor(module, model, ctx, info, folder)


@harness.hookimpl
def register_compressions(register):
    register(LowRank)


__all__ = ["LowRank", "factorise", "svd_factors"]
