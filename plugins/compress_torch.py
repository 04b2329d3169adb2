"""Compressions that run on eager PyTorch: ``none`` (fp32 baseline), ``half`` (fp16/bf16) and
``dynamic-int8`` (int8 weights, activations quantised on the fly, ``torch.ao.quantization``).

Also the torch helpers the built-in compressions share: CPU feature detection, weight counting
over quantised modules, and ``CompressedTorchPredictor``. The generic ones (the artifact cache,
``base_info``, ``TorchPredictor``) are public in ``harness.toolkit``; the names re-exported
below keep ``from .compress_torch import ...`` working for the runtime modules.

torch is imported lazily (inside functions) so that listing plugins stays cheap.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import harness
from harness.api import CellContext, Compression, LoadedModel, Task
from harness.errors import PluginError
from harness.provenance import cpu_flags, cpu_name
from harness.toolkit import (
    TorchPredictor,
    base_info,
    cached_load,
    cached_or_build,
    copy_artifact,
    task_key,
)

from ._int8_weights import load_int8, save_int8

WEIGHTS_FILE = "model.safetensors"
INT8_FILE = "model_int8.safetensors"

# ---------------------------------------------------------------------------------------------
# Helpers for torch compressions (used by compress_nncf.py, compress_ort.py and prune.py too)
# ---------------------------------------------------------------------------------------------


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


def save_unique(module: Any, folder: Path) -> None:
    """``module``'s tensors into ``folder`` (a tensor several layers share stored once) + config."""
    from safetensors.torch import save_model

    save_model(module, str(folder / WEIGHTS_FILE))
    if hasattr(module, "config"):
        module.config.to_json_file(str(folder / "config.json"))


def load_unique(module: Any, folder: Path, who: str) -> Any:
    """Load :func:`save_unique`'s tensors into ``module`` (already in the artifact's structure);
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


# ---------------------------------------------------------------------------------------------
# none
# ---------------------------------------------------------------------------------------------


class NoCompression(Compression):
    """The fp32 baseline: the fine-tuned model as is, eager PyTorch, on the cell's device."""

    name = "none"
    version = "1"
    description = "fp32 baseline (eager PyTorch, safetensors artifact)"

    def apply(self, model: LoadedModel, task: Task, ctx: CellContext) -> CompressedTorchPredictor:
        # the core hands each compression its own copy of the model: no need to copy again
        info = base_info(self, "torch", None, False)
        return CompressedTorchPredictor(model.module, device=ctx.device, precision="fp32", info=info)


# ---------------------------------------------------------------------------------------------
# half
# ---------------------------------------------------------------------------------------------

_HALF_DTYPES = ("fp16", "bf16")


class Half(Compression):
    """fp16 or bf16 weights and compute. On CUDA: fp16 always, bf16 where the GPU supports it.
    On CPU: only where the processor computes the dtype natively (bf16: AVX512_BF16 or AMX-BF16;
    fp16: AVX512_FP16 or AMX-FP16); elsewhere it is emulated and slower than fp32, so the cell
    is skipped with the reason."""

    name = "half"
    version = "2"  # 2: unique tensors loaded into the input's own structure
    description = "fp16/bf16 weights and compute (GPU; CPU only with native bf16/fp16 support)"

    def __init__(self, *, dtype: str = "bf16") -> None:
        super().__init__()
        if dtype not in _HALF_DTYPES:
            raise ValueError(f"half: dtype must be one of {_HALF_DTYPES}, got {dtype!r}")
        self.dtype = dtype

    def unsupported_reason(self, ctx: CellContext) -> str | None:
        if ctx.device.startswith("cuda"):
            import torch

            if not torch.cuda.is_available():
                return f"half: device {ctx.device} requested but CUDA is not available"
            if self.dtype == "bf16" and not torch.cuda.is_bf16_supported():
                return f"half: {torch.cuda.get_device_name(ctx.device)} has no native bf16"
            return None
        if ctx.device == "cpu":
            caps = cpu_capabilities()
            need = ("avx512_bf16", "amx_bf16") if self.dtype == "bf16" else ("avx512_fp16", "amx_fp16")
            if not any(caps[f] for f in need):
                return (
                    f"half: {self.dtype} on CPU needs {' or '.join(need)}; this processor "
                    f"({cpu_name()}) has neither, so {self.dtype} would be emulated and slower "
                    "than fp32"
                )
            return None
        return f"half: unsupported device {ctx.device!r}"

    def apply(self, model: LoadedModel, task: Task, ctx: CellContext) -> CompressedTorchPredictor:
        import torch

        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[self.dtype]

        # the input's own structure (a chain's transform may have changed it: factorised or
        # shared layers), its unique tensors saved once and loaded back into that structure
        built: dict[str, Any] = {}

        def build(folder: Path) -> dict[str, Any]:
            built["module"] = cpu_copy(model.module).to(dtype)
            save_unique(built["module"], folder)
            return {}

        def load(folder: Path) -> Any:
            if "module" in built:  # a build saved this very module
                return built["module"]
            return load_unique(cpu_copy(model.module).to(dtype), folder, "half")

        folder, meta, hit, module = cached_load(ctx, model, self, build, load)
        info = base_info(self, "torch", meta, hit)
        return CompressedTorchPredictor(
            module, device=ctx.device, precision=self.dtype, info=info, artifact=folder / "model"
        )


# ---------------------------------------------------------------------------------------------
# dynamic-int8
# ---------------------------------------------------------------------------------------------


def _dynamic_qconfig_spec(per_channel: bool, embeddings: bool) -> dict:
    import torch
    from torch.ao.quantization import (
        default_dynamic_qconfig,
        float_qparams_weight_only_qconfig,
        per_channel_dynamic_qconfig,
    )

    spec: dict = {torch.nn.Linear: per_channel_dynamic_qconfig if per_channel else default_dynamic_qconfig}
    if embeddings:
        spec[torch.nn.Embedding] = float_qparams_weight_only_qconfig
    return spec


def _quantize_dynamic(module: Any, per_channel: bool, embeddings: bool) -> Any:
    import warnings

    import torch

    with warnings.catch_warnings():
        # torch.ao.quantization is deprecated in favour of torchao; it still works on this torch
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(
            module, _dynamic_qconfig_spec(per_channel, embeddings), dtype=torch.qint8, inplace=True
        )


class DynamicInt8(Compression):
    """Dynamic int8 quantisation with ``torch.ao.quantization.quantize_dynamic``: Linear weights
    int8 (per output channel by default), activations quantised per batch at run time; with
    ``embeddings`` the embedding tables are stored as per-row int8 too. CPU only (the quantised
    kernels are fbgemm/oneDNN x86 and qnnpack ARM kernels)."""

    name = "dynamic-int8"
    version = "2"  # 2: the artifact is safetensors (int values + scales), not a torch pickle
    description = "dynamic int8 Linear (+ embedding) quantisation, torch.ao, CPU"

    def __init__(self, *, per_channel: bool = True, embeddings: bool = True) -> None:
        super().__init__()
        self.per_channel = bool(per_channel)
        self.embeddings = bool(embeddings)

    def unsupported_reason(self, ctx: CellContext) -> str | None:
        if ctx.device != "cpu":
            return f"dynamic-int8: torch.ao dynamic quantisation runs on CPU only, not {ctx.device}"
        import torch

        if not hasattr(torch, "ao") or not hasattr(torch.ao, "quantization"):
            return f"dynamic-int8: torch {torch.__version__} has no torch.ao.quantization"
        if torch.backends.quantized.engine in (None, "none"):
            return "dynamic-int8: this torch build has no quantised CPU engine"
        return None

    def apply(self, model: LoadedModel, task: Task, ctx: CellContext) -> CompressedTorchPredictor:
        import torch

        def quantized() -> Any:
            return _quantize_dynamic(cpu_copy(model.module).eval(), self.per_channel, self.embeddings)

        def build(folder: Path) -> dict[str, Any]:
            q = quantized()
            save_int8(q, folder / INT8_FILE)
            q.config.to_json_file(str(folder / "config.json"))
            return {"torch_version": torch.__version__}

        # the structure is the input quantised here; only the tensors' values come from the file
        folder, meta, hit, module = cached_load(
            ctx, model, self, build, lambda f: load_int8(quantized(), f / INT8_FILE))
        info = base_info(self, "torch", meta, hit)
        info.update(
            quantized_engine=torch.backends.quantized.engine,
            quantization_api="torch.ao.quantization.quantize_dynamic",
            activations="int8 dynamic (per batch)",
        )
        return CompressedTorchPredictor(
            module, device="cpu", precision="int8", info=info, artifact=folder / "model"
        )


@harness.hookimpl
def register_compressions(register):
    register(NoCompression)
    register(Half)
    register(DynamicInt8)


__all__ = [
    "CompressedTorchPredictor",
    "DynamicInt8",
    "Half",
    "NoCompression",
    "base_info",
    "cached_or_build",
    "cpu_capabilities",
    "cpu_copy",
    "task_key",
    "weight_counts",
]
