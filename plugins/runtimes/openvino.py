"""The OpenVINO runtime: torch -> OpenVINO IR export, the ``OpenVINOPredictor`` (CPU plugin),
and the read-back of the precision each compute layer really runs in. Used by the compressions
in ``harness_plugins.compressions.nncf``; a compression that produces OpenVINO IR needs nothing else.

The model is converted with ``openvino.convert_model`` with dynamic batch and sequence dims, so
real (dynamically padded) lengths are fed. It is compiled for the CPU with
``INFERENCE_PRECISION_HINT=f32`` by default (on AMX/AVX512-BF16 processors OpenVINO would
otherwise silently run fp32 models in bf16) and the precision the compiled model really uses is
read back from the runtime graph. openvino is imported lazily.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from harness.api import CellContext, LoadedModel, Params, Predictor
from harness.errors import PluginError
from harness.toolkit import copy_artifact, missing_packages_reason

from .._lib.torch_utils import cpu_capabilities, cpu_copy

XML, BIN = "model.xml", "model.bin"
InferencePrecision = Literal["f32", "bf16", "f16"]
_COMPUTE_OPS = ("FullyConnected", "MatMul", "Convolution", "FullyConnectedCompressed")


def openvino_reason(plugin: str, ctx: CellContext, need_nncf: bool) -> str | None:
    missing = missing_packages_reason(plugin, "openvino", *(("nncf",) if need_nncf else ()))
    if missing:
        return missing
    if ctx.device != "cpu":
        return (
            f"{plugin}: runs on OpenVINO's CPU plugin; device {ctx.device!r} is not supported "
            "(OpenVINO has no CUDA device)"
        )
    return None


# ---------------------------------------------------------------------------------------------
# torch -> OpenVINO
# ---------------------------------------------------------------------------------------------


def logits_module(module: Any, names: tuple[str, ...]) -> Any:
    """A module whose forward takes the model inputs positionally/by name and returns logits."""
    import torch

    class Logits(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask=None, token_type_ids=None):
            kwargs = {"input_ids": input_ids}
            if attention_mask is not None:
                kwargs["attention_mask"] = attention_mask
            if token_type_ids is not None:
                kwargs["token_type_ids"] = token_type_ids
            return self.inner(**kwargs).logits

    unknown = set(names) - {"input_ids", "attention_mask", "token_type_ids"}
    if unknown:
        raise PluginError(f"OpenVINO export: unsupported model inputs {sorted(unknown)}")
    return Logits(module).eval()


def example_batch(model: LoadedModel) -> dict[str, Any]:
    """A padded batch of two real-looking sentences, only the inputs the tokenizer makes."""
    enc = model.tokenizer(
        ["The European Commission said on Thursday it disagreed .", "Peter Blackburn"],
        padding=True,
        return_tensors="pt",
    )
    return {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}


def to_openvino(model: LoadedModel) -> Any:
    """``openvino.convert_model`` of the fp32 module, dynamic batch and sequence dims, output
    named ``logits``."""
    import warnings

    import openvino as ov
    import torch

    example = example_batch(model)
    wrapper = logits_module(cpu_copy(model.module).float().eval(), tuple(example))
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        ov_model = ov.convert_model(wrapper, example_input=example)
    for inp in ov_model.inputs:  # dynamic batch and sequence, whatever tracing inferred
        if inp.get_partial_shape().rank.get_length() == 2:
            ov_model.reshape({inp.get_any_name(): ov.PartialShape([-1, -1])})
    ov_model.outputs[0].get_tensor().set_names({"logits"})
    return ov_model


def save_ov(ov_model: Any, folder: Path) -> None:
    import openvino as ov

    ov.save_model(ov_model, str(folder / XML), compress_to_fp16=False)


def runtime_precisions(compiled: Any) -> dict[str, dict[str, int]]:
    """{layer type: {runtime precision: count}} of the compute layers of a compiled model."""
    out: dict[str, Counter] = {}
    for op in compiled.get_runtime_model().get_ops():
        rt = op.get_rt_info()
        try:
            kind = rt["layerType"].astype(str)
            prec = rt["runtimePrecision"].astype(str)
        except Exception:  # noqa: BLE001 - an op without the info
            continue
        if kind in _COMPUTE_OPS:
            out.setdefault(kind, Counter())[prec] += 1
    return {k: dict(v) for k, v in out.items()}


def dominant_compute_precision(precisions: dict[str, dict[str, int]]) -> str:
    """"int8" when most FullyConnected/MatMul layers run in u8/i8, else the float type."""
    totals: Counter = Counter()
    for counts in precisions.values():
        for prec, n in counts.items():
            totals["int8" if prec in ("u8", "i8") else {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}.get(prec, prec)] += n
    return totals.most_common(1)[0][0] if totals else "fp32"


class OpenVINOPredictor(Predictor):
    """Runs an OpenVINO IR (``model.xml`` + ``model.bin``) on the CPU plugin; returns torch logits."""

    runtime = "openvino"
    device = "cpu"

    def __init__(
        self,
        folder: Path,
        *,
        counts: tuple[int, int],
        info: dict[str, Any] | None = None,
        inference_precision: str = "f32",
        threads: int | None = None,
        precision: str | None = None,
        compiled: Any = None,
    ) -> None:
        import openvino as ov

        self.folder = Path(folder)
        self.counts = counts
        self.info = dict(info or {})
        if compiled is None:
            core = ov.Core()
            config: dict[str, Any] = {
                "INFERENCE_PRECISION_HINT": inference_precision,
                "PERFORMANCE_HINT": "LATENCY",
            }
            if threads:
                config["INFERENCE_NUM_THREADS"] = int(threads)
            compiled = core.compile_model(core.read_model(str(self.folder / XML)), "CPU", config)
        self.compiled = compiled
        self.request = compiled.create_infer_request()
        self.input_names = tuple(i.get_any_name() for i in compiled.inputs)
        self.precisions = runtime_precisions(compiled)
        hint = compiled.get_property("INFERENCE_PRECISION_HINT")
        self.inference_precision = hint.to_string() if hasattr(hint, "to_string") else str(hint)
        self.precision = precision or dominant_compute_precision(self.precisions)

    def __call__(self, batch: Mapping[str, Any]) -> Any:
        import numpy as np
        import torch

        feed = {}
        for name in self.input_names:
            v = batch[name]
            # contiguous: inputs are shared with OpenVINO, which reads them as dense buffers
            feed[name] = np.ascontiguousarray(v.numpy() if isinstance(v, torch.Tensor) else v)
        out = self.request.infer(feed, share_inputs=True, share_outputs=False)
        return torch.from_numpy(out[0])

    def save(self, directory: Path) -> Path:
        return copy_artifact(self.folder, directory)

    def parameter_counts(self) -> tuple[int, int]:
        return self.counts

    def bits_per_weight(self) -> float:
        """Bytes of ``model.bin`` x 8 / parameters of the source model (int8/int4 weights plus
        their scales and zero points, and whatever stays fp32)."""
        total = self.counts[0]
        return round(8 * (self.folder / BIN).stat().st_size / total, 3) if total else 0.0

    def describe(self) -> dict[str, Any]:
        import openvino as ov

        def prop(name: str) -> Any:
            try:
                return self.compiled.get_property(name)
            except Exception:  # noqa: BLE001
                return None

        return {
            **self.info,
            "runtime": "openvino",
            "openvino_version": ov.get_version(),
            "inference_precision_hint": self.inference_precision,
            "runtime_precisions": json.dumps(self.precisions, sort_keys=True),
            "threads": prop("INFERENCE_NUM_THREADS"),
            "streams": prop("NUM_STREAMS"),
            "nonzero_counted_on": "fp32 source model",
        }


class OpenVINOParams(Params):
    """The parameters of every compression that runs on OpenVINO (its ``Params`` extend these)."""

    inference_precision: InferencePrecision = "f32"
    """``INFERENCE_PRECISION_HINT`` of the CPU plugin: f32, or bf16/f16 where the CPU computes
    them natively (elsewhere the cell is skipped)."""
    threads: int | None = Field(None, ge=1)
    """``INFERENCE_NUM_THREADS`` (default: torch's thread count)."""


def predictor_config(comp: Any) -> dict[str, Any]:
    """``OpenVINOPredictor`` keyword arguments from a compression's :class:`OpenVINOParams`."""
    import torch

    return {
        "inference_precision": comp.params.inference_precision,
        "threads": comp.params.threads or torch.get_num_threads(),
    }


def precision_reason(plugin: str, inference_precision: str) -> str | None:
    if inference_precision == "f32":
        return None
    caps = cpu_capabilities()
    need = ("avx512_bf16", "amx_bf16") if inference_precision == "bf16" else ("avx512_fp16", "amx_fp16")
    if not any(caps[f] for f in need):
        return f"{plugin}: inference_precision={inference_precision} needs {' or '.join(need)} on the CPU"
    return None
