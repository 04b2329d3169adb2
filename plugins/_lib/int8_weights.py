"""Dynamic-int8 weights as safetensors (no pickle): each quantised tensor of a
``torch.ao.quantization.quantize_dynamic`` module is stored as its integer values plus its scales
and zero points, everything else as is. Loading fills a module the caller quantised the same way
(``dynamic-int8`` quantises a copy of its input model): the quantisation scheme, axis, dtypes and
shapes come from that module, only values from the file, and every one is checked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["load_int8", "save_int8"]


def _per_tensor(t: Any) -> bool:
    import torch

    return t.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric)


def _entries(state: dict[str, Any]) -> list[tuple[str, Any]]:
    """(file key, tensor) of every tensor of a state dict; the elements of a tuple (a quantised
    Linear's packed ``(weight, bias)``) under ``key.i``; non-tensors (dtypes) left out."""
    import torch

    out = []
    for key, value in state.items():
        if isinstance(value, tuple):
            out += [(f"{key}.{i}", v) for i, v in enumerate(value) if isinstance(v, torch.Tensor)]
        elif isinstance(value, torch.Tensor):
            out.append((key, value))
    return out


def _shared(t: Any, seen: dict[int, str], key: str) -> str | None:
    """The key of an earlier tensor whose storage ``t`` shares (tied layers), else None (and
    ``t``'s storage is remembered under ``key``)."""
    if t.is_quantized or not t.numel():
        return None
    ptr = t.untyped_storage().data_ptr()
    if ptr in seen:
        return seen[ptr]
    seen[ptr] = key
    return None


def save_int8(module: Any, path: Path) -> None:
    """The tensors of the dynamically quantised ``module`` into the safetensors file ``path``
    (a tensor several tied layers share stored once, under its first name)."""
    import torch
    from safetensors.torch import save_file

    tensors: dict[str, Any] = {}
    seen: dict[int, str] = {}
    for key, t in _entries(module.state_dict()):
        t = t.detach()
        if _shared(t, seen, key) is not None:
            continue
        if not t.is_quantized:
            tensors[key] = t
        elif _per_tensor(t):
            tensors[f"{key}.int_repr"] = t.int_repr()
            tensors[f"{key}.scale"] = torch.tensor([t.q_scale()], dtype=torch.float64)
            tensors[f"{key}.zero_point"] = torch.tensor([t.q_zero_point()], dtype=torch.int64)
        else:
            tensors[f"{key}.int_repr"] = t.int_repr()
            tensors[f"{key}.scale"] = t.q_per_channel_scales()
            tensors[f"{key}.zero_point"] = t.q_per_channel_zero_points()
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))


def _checked(file: dict[str, Any], key: str, like: Any) -> Any:
    t = file[key]
    if t.shape != like.shape or t.dtype != like.dtype:
        raise ValueError(f"tensor {key!r}: {t.dtype} {tuple(t.shape)} where the model has "
                         f"{like.dtype} {tuple(like.shape)}")
    return t


def _tensor(file: dict[str, Any], key: str, like: Any, seen: dict[int, str]) -> Any:
    """The tensor ``key`` of the file, in the form of ``like`` (the module's own); a tensor the
    module shares with an earlier one (tied layers) from that one's entry."""
    import torch

    if not like.is_quantized:
        return _checked(file, _shared(like, seen, key) or key, like)
    values = _checked(file, f"{key}.int_repr", like.int_repr())
    if _per_tensor(like):
        scale = _checked(file, f"{key}.scale", torch.zeros(1, dtype=torch.float64))
        zero = _checked(file, f"{key}.zero_point", torch.zeros(1, dtype=torch.int64))
        return torch._make_per_tensor_quantized_tensor(values, float(scale[0]), int(zero[0]))
    scales = _checked(file, f"{key}.scale", like.q_per_channel_scales())
    zeros = _checked(file, f"{key}.zero_point", like.q_per_channel_zero_points())
    return torch._make_per_channel_quantized_tensor(values, scales, zeros, like.q_per_channel_axis())


def load_int8(module: Any, path: Path) -> Any:
    """Load :func:`save_int8`'s file into ``module``, quantised the same way; strict: a missing
    tensor, a wrong shape or dtype raises (``KeyError`` / ``ValueError``)."""
    import torch
    from safetensors.torch import load_file

    file = load_file(str(path))
    own = module.state_dict()
    state = type(own)()
    state._metadata = getattr(own, "_metadata", None)  # type: ignore[attr-defined]  # versions
    seen: dict[int, str] = {}
    for key, value in own.items():
        if isinstance(value, tuple):
            state[key] = tuple(_tensor(file, f"{key}.{i}", v, seen) if isinstance(v, torch.Tensor)
                               else v for i, v in enumerate(value))
        elif isinstance(value, torch.Tensor):
            state[key] = _tensor(file, key, value, seen)
        else:  # e.g. the packed params' dtype: the module's own
            state[key] = value
    module.load_state_dict(state)
    return module
