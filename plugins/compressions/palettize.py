"""The ``palettize`` compression: weight clustering (a palette of ``2^bits`` values per tensor).

Each chosen weight tensor (the Linear weights of the encoder's blocks, found in any transformers
encoder by ``plugins/_lib/arch.py``; the word-embedding table too with ``include_embeddings``)
is clustered by 1-D k-means into ``2^bits`` centroids
(``bits`` 2..8): every weight becomes the index of its centroid. k-means runs in torch per
tensor, exactly, on all of its values (sorted once, so each Lloyd iteration is a binary search
plus prefix sums): centroids start at evenly spaced quantiles and move for at most
``iterations`` steps or until they stop. There is nothing random in it: the same weights give
the same palette (the cell's seed plays no part; recovery training uses it as the task does).

The artifact (safetensors) stores each clustered tensor as its codebook (``2^bits`` fp32
values) plus its indices packed at ``bits`` bits each; everything else (biases, LayerNorms,
position embeddings, the head) as is. ``bits_per_weight`` is measured from that file. The
predictor decompresses at load and runs **dense fp32 torch**: palettization buys size on disk
(and download / memory-at-rest), not latency on CPU.

``recovery_epochs`` fine-tunes with the task's recipe while keeping the palette: each clustered
weight is ``codebook[indices]`` during training, so the gradient of each centroid is the sum of
its weights' gradients (the indices stay fixed) and the model stays exactly palettized.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from pathlib import Path
from typing import Any

from pydantic import Field

import harness
from harness.api import CellContext, LoadedModel, Task
from harness.errors import PluginError
from harness.toolkit import base_info, cached_load, task_key

from .._lib.arch import discover, set_sub
from .._lib.layers import RecoveringTransform, device_reason, recover
from .._lib.torch_utils import WEIGHTS_FILE, CompressedTorchPredictor, check_fits, cpu_copy, weight_counts

META_KEY = "harness_palette"


# ---------------------------------------------------------------------------------------------
# k-means and bit packing
# ---------------------------------------------------------------------------------------------


def _assign(values: Any, centroids: Any) -> Any:
    """Index of the nearest of the (sorted) ``centroids`` for every value."""
    import torch

    return torch.bucketize(values, (centroids[1:] + centroids[:-1]) / 2)


def kmeans_1d(weight: Any, k: int, iterations: int) -> tuple[Any, Any]:
    """``(codebook (k,) fp32 ascending, indices (numel,) int64)`` of ``weight`` by exact 1-D
    k-means (Lloyd) on the whole tensor.

    The values are sorted once: every cluster is then a contiguous run of them, found by a
    binary search of the mid-points between centroids, and its mean comes from prefix sums, so
    an iteration costs O(k log n) whatever the tensor's size. Centroids start at the
    ``(i + 0.5) / k`` quantiles; empty clusters keep their centroid. No randomness: the same
    tensor always gives the same palette."""
    import torch

    v = weight.detach().float().flatten()
    s = v.sort().values
    n = s.numel()
    prefix = torch.cat([torch.zeros(1, dtype=torch.float64), s.double().cumsum(0)])
    at = ((torch.arange(k, dtype=torch.float64) + 0.5) / k * n).long().clamp(max=n - 1)
    c = s[at].double()
    zero, end = torch.zeros(1, dtype=torch.long), torch.full((1,), n, dtype=torch.long)
    for _ in range(iterations):
        bounds = ((c[1:] + c[:-1]) / 2).float()
        edges = torch.cat([zero, torch.searchsorted(s, bounds, right=True), end])
        counts = edges[1:] - edges[:-1]
        sums = prefix[edges[1:]] - prefix[edges[:-1]]
        new = torch.where(counts > 0, sums / counts.clamp(min=1), c).sort().values
        if torch.equal(new, c):
            break
        c = new
    codebook = c.float().sort().values
    return codebook, _assign(v, codebook)


def pack(indices: Any, bits: int) -> Any:
    """Indices (< 2^bits) packed at ``bits`` bits each, big-endian, as a uint8 tensor."""
    import numpy as np
    import torch

    a = indices.to(torch.uint8).numpy().reshape(-1, 1)
    return torch.from_numpy(np.packbits(np.unpackbits(a, axis=1)[:, 8 - bits:].reshape(-1)))


def unpack(packed: Any, bits: int, n: int) -> Any:
    """The ``n`` int64 indices back from :func:`pack`."""
    import numpy as np
    import torch

    b = np.unpackbits(packed.numpy())[: n * bits].reshape(n, bits)
    full = np.zeros((n, 8), dtype=np.uint8)
    full[:, 8 - bits:] = b
    return torch.from_numpy(np.packbits(full, axis=1).reshape(n).astype(np.int64))


# ---------------------------------------------------------------------------------------------
# palettized modules for recovery training
# ---------------------------------------------------------------------------------------------


@functools.cache
def _modules() -> tuple[type, type]:
    import torch
    import torch.nn.functional as F  # noqa: N812 - the usual name

    class PaletteLinear(torch.nn.Module):
        """A Linear whose weight is ``codebook[indices]``: only the centroids (and bias) train."""

        indices: Any

        def __init__(self, lin: Any, codebook: Any, indices: Any) -> None:
            super().__init__()
            self.shape = tuple(lin.weight.shape)
            self.codebook = torch.nn.Parameter(codebook.clone())
            self.register_buffer("indices", indices.view(self.shape).clone())
            self.bias = lin.bias

        def dense(self) -> Any:
            return self.codebook[self.indices]

        def forward(self, x: Any) -> Any:
            return F.linear(x, self.dense(), self.bias)

    class PaletteEmbedding(torch.nn.Module):
        indices: Any

        def __init__(self, emb: Any, codebook: Any, indices: Any) -> None:
            super().__init__()
            self.shape = tuple(emb.weight.shape)
            self.padding_idx = emb.padding_idx
            self.codebook = torch.nn.Parameter(codebook.clone())
            self.register_buffer("indices", indices.view(self.shape).clone())

        def dense(self) -> Any:
            return self.codebook[self.indices]

        def forward(self, ids: Any) -> Any:
            return F.embedding(ids, self.dense(), self.padding_idx)

    return PaletteLinear, PaletteEmbedding


def _recover_palettized(model: LoadedModel, module: Any, palettes: dict[str, list[Any]], task: Task,
                        ctx: CellContext, epochs: float) -> tuple[Any, str]:
    """Fine-tune with every clustered weight held at ``codebook[indices]``; updates
    ``palettes``' codebooks and ``module``'s dense weights in place of the trained ones."""
    import torch

    linear_cls, embedding_cls = _modules()
    originals = {}
    for pname, (codebook, indices) in palettes.items():
        mname = pname.rsplit(".", 1)[0]
        orig = module.get_submodule(mname)
        originals[mname] = orig
        cls = embedding_cls if isinstance(orig, torch.nn.Embedding) else linear_cls
        set_sub(module, mname, cls(orig, codebook, indices))
    module, note = recover(model, module, task, ctx, epochs, "palettize")
    with torch.no_grad():
        for mname, orig in originals.items():
            pal = module.get_submodule(mname)
            palettes[f"{mname}.weight"][0] = pal.codebook.detach().cpu().clone()
            orig.weight.copy_(pal.dense().cpu())
            set_sub(module, mname, orig)  # the bias Parameter was shared and trained in place
    return module, note


# ---------------------------------------------------------------------------------------------
# the artifact
# ---------------------------------------------------------------------------------------------


def save_palettized(module: Any, palettes: dict[str, list[Any]], bits: int, path: Path) -> None:
    """safetensors with each clustered weight as ``<name>.__codebook__`` + ``<name>.__indices__``."""
    from safetensors.torch import save_file

    tensors: dict[str, Any] = {}
    shapes: dict[str, list[int]] = {}
    for name, t in module.state_dict().items():
        if name in palettes:
            codebook, indices = palettes[name]
            tensors[f"{name}.__codebook__"] = codebook.float().contiguous()
            tensors[f"{name}.__indices__"] = pack(indices.flatten(), bits)
            shapes[name] = list(t.shape)
        else:
            tensors[name] = t.detach().cpu().contiguous().clone()
    save_file(tensors, str(path), metadata={META_KEY: json.dumps({"bits": bits, "shapes": shapes})})


def load_palettized(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(dense state dict, {"bits", "shapes"}) back from :func:`save_palettized`'s file."""
    from safetensors import safe_open

    state: dict[str, Any] = {}
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads((f.metadata() or {}).get(META_KEY, "{}"))
        if not meta:
            raise PluginError(f"palettize: {path} has no {META_KEY!r} metadata (not a palettize artifact)")
        for key in f.keys():  # noqa: SIM118 - a safetensors handle, not a dict
            if not key.endswith((".__codebook__", ".__indices__")):
                state[key] = f.get_tensor(key)
        for name, shape in meta["shapes"].items():
            codebook = f.get_tensor(f"{name}.__codebook__")
            idx = unpack(f.get_tensor(f"{name}.__indices__"), meta["bits"], math.prod(shape))
            state[name] = codebook[idx].view(shape)
    return state, meta


class PalettizedPredictor(CompressedTorchPredictor):
    """Dense fp32 torch; ``bits_per_weight`` is measured from the artifact file."""

    def __init__(self, module: Any, *, bits_per_weight: float, **kwargs: Any) -> None:
        super().__init__(module, **kwargs)
        self._bits_per_weight = bits_per_weight

    def bits_per_weight(self) -> float:
        return self._bits_per_weight


# ---------------------------------------------------------------------------------------------
# the plugin
# ---------------------------------------------------------------------------------------------


class Palettize(RecoveringTransform):
    """Weight clustering: ``2^bits`` centroids per tensor, stored as packed indices + codebook."""

    name = "palettize"
    version = "1"
    description = "weight clustering: k-means palette per tensor, packed-index artifact (size, not speed)"

    class Params(harness.Params):
        bits: int = Field(4, ge=2, le=8)
        """Index width: each tensor gets 2^bits centroids (4: 16)."""
        include_embeddings: bool = False
        """Cluster the word-embedding table too."""
        iterations: int = Field(300, ge=1)
        """k-means (Lloyd) iterations at most (it stops earlier once the centroids stop moving)."""
        recovery_epochs: float = Field(0, ge=0)
        """Fine-tune the centroids (indices fixed) with the task's recipe (0: none)."""

    params: Params


    def unsupported_reason(self, ctx: CellContext) -> str | None:
        return device_reason("palettize", ctx.device)

    def targets(self, module: Any) -> list[tuple[str, Any]]:
        """(parameter name, weight) of every tensor to cluster."""
        import torch

        found = discover(module, "palettize")
        out = []
        for i, layer in enumerate(module.get_submodule(found.stack_path)):
            for mname, mod in layer.named_modules():
                if isinstance(mod, torch.nn.Linear):
                    out.append((f"{found.stack_path}.{i}.{mname}.weight", mod.weight))
        if self.params.include_embeddings:
            name = found.word_embeddings_path
            out.append((f"{name}.weight", module.get_submodule(name).weight))
        return out

    def _compute(self, model: LoadedModel, task: Task, ctx: CellContext) -> tuple[Any, dict[str, list[Any]], str]:
        """(dense module holding the clustered weights, {name: [codebook, indices]}, note)."""
        import torch

        module = cpu_copy(model.module).float().eval()
        palettes: dict[str, list[Any]] = {}
        for name, w in self.targets(module):
            codebook, indices = kmeans_1d(w, 2 ** self.params.bits, self.params.iterations)
            palettes[name] = [codebook, indices]
            with torch.no_grad():
                w.copy_(codebook[indices].view_as(w))
        note = "no recovery"
        if self.params.recovery_epochs > 0:
            module, note = _recover_palettized(model, module, palettes, task, ctx, self.params.recovery_epochs)
        return module, palettes, note

    def transform(self, model: LoadedModel, task: Task, ctx: CellContext) -> LoadedModel:
        """The clustered weights as a dense torch model (what a next step sees)."""
        module, palettes, note = self._compute(model, task, ctx)
        info = {"recovery": note, "palettized_tensors": len(palettes), "palette_bits": self.params.bits}
        return dataclasses.replace(model, module=module, info={**model.info, **info})

    def _build(self, model: LoadedModel, task: Task, ctx: CellContext, folder: Path) -> dict[str, Any]:
        module, palettes, note = self._compute(model, task, ctx)
        save_palettized(module, palettes, self.params.bits, folder / WEIGHTS_FILE)
        module.config.to_json_file(str(folder / "config.json"))
        return {"recovery": note, "palettized_tensors": len(palettes),
                "palettized_params": sum(int(i.numel()) for _, i in palettes.values())}

    @staticmethod
    def _load(model: LoadedModel, folder: Path) -> Any:
        """The artifact back: its tensors (the palettes decoded) into a copy of ``model.module``."""
        state, _ = load_palettized(folder / WEIGHTS_FILE)
        module = cpu_copy(model.module).float().eval()
        missing, unexpected = module.load_state_dict(state, strict=False)
        check_fits(missing, unexpected, folder, "palettize")
        return module

    def apply(self, model: LoadedModel, task: Task, ctx: CellContext) -> PalettizedPredictor:
        discover(model.module, "palettize")  # a skip, with the reason, before any work
        extra_key = task_key(task) if self.params.recovery_epochs > 0 else ""
        folder, meta, hit, module = cached_load(
            ctx, model, self, lambda f: self._build(model, task, ctx, f),
            lambda f: self._load(model, f), extra_key=extra_key,
        )
        path = folder / "model" / WEIGHTS_FILE
        info = base_info(self, "torch", meta, hit)
        for k in ("recovery", "palettized_tensors", "palettized_params"):
            info[k] = meta.get(k)
        info["palette_bits"] = self.params.bits
        info["dense_compute"] = True
        info["note"] = "decompressed at load, runs dense fp32: smaller on disk, not faster"
        total, _ = weight_counts(module)
        bpw = round(8 * path.stat().st_size / total, 4) if total else 32.0
        return PalettizedPredictor(module, bits_per_weight=bpw, device=ctx.device, precision="fp32",
                                   info=info, artifact=folder / "model")


@harness.hookimpl
def register_compressions(register):
    register(Palettize)


__all__ = ["Palettize", "kmeans_1d", "load_palettized", "pack", "save_palettized", "unpack"]
