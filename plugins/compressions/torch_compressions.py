"""The ``torch-compressions`` plugin: compressions that run on eager PyTorch: ``none`` (fp32
baseline), ``half`` (fp16/bf16) and ``dynamic-int8`` (int8 weights, activations quantised on the
fly, ``torch.ao.quantization``). The torch helpers the built-in compressions share are in
``harness_plugins._lib.torch_utils``.

torch is imported lazily (inside functions) so that listing plugins stays cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import harness
from harness.api import CellContext, Compression, LoadedModel, Predictor, Task
from harness.examples import ExamplePredictor, is_example_model
from harness.provenance import cpu_name
from harness.toolkit import base_info, cached_load, save_module

from .._lib.int8_weights import load_int8, save_int8
from .._lib.torch_utils import CompressedTorchPredictor, cpu_capabilities, cpu_copy, load_unique

INT8_FILE = "model_int8.safetensors"


# ---------------------------------------------------------------------------------------------
# none
# ---------------------------------------------------------------------------------------------


class NoCompression(Compression):
    """The fp32 baseline: the fine-tuned model as is, eager PyTorch, on the cell's device."""

    name = "none"
    version = "1"
    description = "the model as trained: fp32 eager PyTorch (safetensors), or a classic model as is"
    #: any kind: a model that is not a transformer runs as its own ExamplePredictor
    requires = ("model:*",)

    def apply(self, model: LoadedModel, task: Task, ctx: CellContext) -> Predictor:
        if is_example_model(model):
            return ExamplePredictor(model.module, base_info(self, model.module.runtime, None, False))
        # the core hands each compression its own copy of the model: no need to copy again
        info = base_info(self, "torch", None, False)
        return CompressedTorchPredictor(model.module, device=ctx.device, precision="fp32", info=info)


# ---------------------------------------------------------------------------------------------
# half
# ---------------------------------------------------------------------------------------------

class Half(Compression):
    """fp16 or bf16 weights and compute. On CUDA: fp16 always, bf16 where the GPU supports it.
    On CPU: only where the processor computes the dtype natively (bf16: AVX512_BF16 or AMX-BF16;
    fp16: AVX512_FP16 or AMX-FP16); elsewhere it is emulated and slower than fp32, so the cell
    is skipped with the reason."""

    name = "half"
    version = "2"  # 2: unique tensors loaded into the input's own structure
    description = "fp16/bf16 weights and compute (GPU; CPU only with native bf16/fp16 support)"

    class Params(harness.Params):
        dtype: Literal["fp16", "bf16"] = "bf16"
        """The 16-bit float type of the weights and the compute."""

    params: Params

    def unsupported_reason(self, ctx: CellContext) -> str | None:
        if ctx.device.startswith("cuda"):
            import torch

            if not torch.cuda.is_available():
                return f"half: device {ctx.device} requested but CUDA is not available"
            if self.params.dtype == "bf16" and not torch.cuda.is_bf16_supported():
                return f"half: {torch.cuda.get_device_name(ctx.device)} has no native bf16"
            return None
        if ctx.device == "cpu":
            caps = cpu_capabilities()
            need = ("avx512_bf16", "amx_bf16") if self.params.dtype == "bf16" else ("avx512_fp16", "amx_fp16")
            if not any(caps[f] for f in need):
                return (
                    f"half: {self.params.dtype} on CPU needs {' or '.join(need)}; this processor "
                    f"({cpu_name()}) has neither, so {self.params.dtype} would be emulated and slower "
                    "than fp32"
                )
            return None
        return f"half: unsupported device {ctx.device!r}"

    def apply(self, model: LoadedModel, task: Task, ctx: CellContext) -> CompressedTorchPredictor:
        import torch

        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[self.params.dtype]

        # the input's own structure (a chain's transform may have changed it: factorised or
        # shared layers), its unique tensors saved once and loaded back into that structure
        built: dict[str, Any] = {}

        def build(folder: Path) -> dict[str, Any]:
            built["module"] = cpu_copy(model.module).to(dtype)
            save_module(built["module"], folder)
            return {}

        def load(folder: Path) -> Any:
            if "module" in built:  # a build saved this very module
                return built["module"]
            return load_unique(cpu_copy(model.module).to(dtype), folder, "half")

        folder, meta, hit, module = cached_load(ctx, model, self, build, load)
        info = base_info(self, "torch", meta, hit)
        return CompressedTorchPredictor(
            module, device=ctx.device, precision=self.params.dtype, info=info, artifact=folder / "model"
        )


# ---------------------------------------------------------------------------------------------
# dynamic-int8
# ---------------------------------------------------------------------------------------------


def _input_embeddings(module: Any) -> list[str]:
    """Names of the embedding tables the model looks tokens up in: the word embeddings and the
    tables beside them (position, token type). Not a table a model reads as a weight matrix
    (DeBERTa's relative-position ``rel_embeddings``): a quantised module has no ``.weight``."""
    import torch

    words = module.get_input_embeddings() if hasattr(module, "get_input_embeddings") else None
    names = {id(m): n for n, m in module.named_modules()}
    if words is None or id(words) not in names:
        return []
    parent = names[id(words)].rpartition(".")[0]
    return [n for n, m in module.named_modules()
            if isinstance(m, torch.nn.Embedding) and n.rpartition(".")[0] == parent]


def _dynamic_qconfig_spec(module: Any, per_channel: bool, embeddings: bool) -> dict:
    import torch
    from torch.ao.quantization import (
        default_dynamic_qconfig,
        float_qparams_weight_only_qconfig,
        per_channel_dynamic_qconfig,
    )

    spec: dict = {torch.nn.Linear: per_channel_dynamic_qconfig if per_channel else default_dynamic_qconfig}
    if embeddings:
        spec.update({name: float_qparams_weight_only_qconfig for name in _input_embeddings(module)})
    return spec


def _quantize_dynamic(module: Any, per_channel: bool, embeddings: bool) -> Any:
    import warnings

    import torch

    with warnings.catch_warnings():
        # torch.ao.quantization is deprecated in favour of torchao; it still works on this torch
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(
            module, _dynamic_qconfig_spec(module, per_channel, embeddings), dtype=torch.qint8,
            inplace=True,
        )


class DynamicInt8(Compression):
    """Dynamic int8 quantisation with ``torch.ao.quantization.quantize_dynamic``: Linear weights
    int8 (per output channel by default), activations quantised per batch at run time; with
    ``embeddings`` the embedding tables are stored as per-row int8 too. CPU only (the quantised
    kernels are fbgemm/oneDNN x86 and qnnpack ARM kernels)."""

    name = "dynamic-int8"
    version = "2"  # 2: the artifact is safetensors (int values + scales), not a torch pickle
    description = "dynamic int8 Linear (+ embedding) quantisation, torch.ao, CPU"

    class Params(harness.Params):
        per_channel: bool = True
        """Per-output-channel int8 weight scales (false: one scale per tensor)."""
        embeddings: bool = True
        """Store the input embedding tables (words, positions, token types) as per-row int8 too."""

    params: Params

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
            return _quantize_dynamic(cpu_copy(model.module).eval(), self.params.per_channel,
                                     self.params.embeddings)

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


__all__ = ["DynamicInt8", "Half", "NoCompression", "register_compressions"]
