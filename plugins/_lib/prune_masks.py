"""Unstructured pruning's masks and its sparse artifact, shared by the ``prune`` and ``finetune``
compressions: global magnitude keep-masks over a set of weight matrices, applying them, and a
safetensors file that stores each masked matrix as a packed bitmask plus its non-zero values
whenever that is smaller than dense (tied tensors once). torch is imported lazily.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from .torch_utils import WEIGHTS_FILE


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


__all__ = ["apply_masks", "global_magnitude_masks", "load_sparse", "save_sparse"]
