"""Torch helpers the built-in compressions and runtimes share: CPU feature detection, weight
counting over quantised modules, saving/loading unique tensors and ``CompressedTorchPredictor``.
The generic ones (the artifact cache, ``base_info``, ``TorchPredictor``) are public in
``harness.toolkit``. Private to ``harness_plugins``: not an API for third-party plugins.

torch is imported lazily (inside functions) so that listing plugins stays cheap.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.errors import PluginError
from harness.provenance import cpu_flags
from harness.toolkit import TorchPredictor, copy_artifact
from harness.toolkit.weights import WEIGHTS_FILE


def cpu_capabilities() -> dict[str, bool]:
    """The CPU features that decide whether low precision is native here."""
    flags = cpu_flags()
    return {
        "avx2": "avx2" in flags,
        "avx512f": "avx512f" in flags,
        "avx512_vnni": "avx512_vnni" in flags,
        "avx_vnni": "avx_vnni" in flags,
        "avx512_bf16": "avx512_bf16" in flags,
        "avx512_fp16": "avx512_fp16" in flags,
        "amx_bf16": "amx_bf16" in flags,
        "amx_int8": "amx_int8" in flags,
        "amx_fp16": "amx_fp16" in flags,
    }


def tensor_bits(module: Any) -> tuple[int, int]:
    """(parameters, storage bits) over the module's weights as held in memory, including the
    packed int8 weights of quantised modules (which are not ``parameters()``)."""
    total, bits = 0, 0
    for _, t in iter_weights(module):
        total += t.numel()
        bits += t.numel() * t.element_size() * 8
    return total, bits


def iter_weights(module: Any):
    """(name, tensor) for every weight of ``module``: its parameters, plus the unpacked int8
    weights/biases of ``torch.ao`` dynamically quantised Linear and Embedding modules."""
    seen: set[int] = set()
    for mname, mod in module.named_modules():
        if hasattr(mod, "_packed_params") and callable(getattr(mod, "weight", None)):
            yield f"{mname}.weight", mod.weight()
            bias = getattr(mod, "bias", None)
            b = bias() if callable(bias) else None
            if b is not None:
                yield f"{mname}.bias", b
        for pname, p in mod.named_parameters(recurse=False):
            if id(p) in seen:
                continue
            seen.add(id(p))
            yield (f"{mname}.{pname}" if mname else pname), p.detach()


def load_unique(module: Any, folder: Path, who: str) -> Any:
    """Load the tensors ``harness.toolkit.save_module`` wrote into ``module`` (already in the
    artifact's structure);
    a :class:`PluginError` naming ``who`` when the artifact does not fit."""
    from safetensors.torch import load_model

    missing, unexpected = load_model(module, str(folder / WEIGHTS_FILE), strict=False)
    check_fits(missing, unexpected, folder, who)
    return module


def check_fits(missing: Any, unexpected: Any, folder: Path, who: str) -> None:
    """A :class:`PluginError` naming ``who`` when a cached artifact's tensors do not fit the
    module they were loaded into (``position_ids`` buffers may be missing)."""
    missing = [k for k in missing if "position_ids" not in k]
    if unexpected or missing:
        raise PluginError(f"{who}: cached artifact {folder} does not fit the model "
                          f"(missing {missing[:5]}, unexpected {list(unexpected)[:5]})")


def weight_counts(module: Any) -> tuple[int, int]:
    """(total, non-zero) over every weight, quantised ones included (zero = dequantises to 0)."""
    import torch

    total = nonzero = 0
    for _, t in iter_weights(module):
        total += t.numel()
        if t.is_quantized:
            t = t.dequantize()
        nonzero += int(torch.count_nonzero(t).item())
    return total, nonzero


def cpu_copy(module: Any) -> Any:
    """A deep copy of ``module`` on the CPU (the caller's model stays untouched)."""
    return copy.deepcopy(module).to("cpu")


class CompressedTorchPredictor(TorchPredictor):
    """A ``TorchPredictor`` that knows its artifact, its counts and how it was made."""

    def __init__(
        self,
        module: Any,
        *,
        device: str,
        precision: str,
        info: dict[str, Any],
        artifact: Path | None = None,
        save_fn: Callable[[Path], Path] | None = None,
    ) -> None:
        super().__init__(module, device=device, precision=precision)
        self.info = dict(info)
        self.artifact = artifact  #: the cached model/ folder, if any
        self._save_fn = save_fn

    def save(self, directory: Path) -> Path:
        if self.artifact is not None:
            return copy_artifact(self.artifact, directory)
        if self._save_fn is not None:
            return self._save_fn(directory)
        return super().save(directory)

    def parameter_counts(self) -> tuple[int, int]:
        return weight_counts(self.module)

    def bits_per_weight(self) -> float:
        """Bytes of the artifact's weight files x 8 / parameters (scales and unquantised
        tensors included); from the tensors in memory when there is no artifact."""
        total, _ = weight_counts(self.module)
        if self.artifact is not None and total:
            files = [p for p in self.artifact.iterdir() if p.suffix in {".safetensors", ".pt", ".bin"}]
            return round(8 * sum(p.stat().st_size for p in files) / total, 3)
        params, bits = tensor_bits(self.module)
        return round(bits / params, 3) if params else 0.0

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), **self.info}


__all__ = [
    "WEIGHTS_FILE",
    "CompressedTorchPredictor",
    "check_fits",
    "cpu_capabilities",
    "cpu_copy",
    "iter_weights",
    "load_unique",
    "tensor_bits",
    "weight_counts",
]
