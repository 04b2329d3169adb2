"""Compressions that run on ONNX Runtime (``harness_plugins.runtimes.onnxruntime`` exports and runs the graphs):

* ``onnx``: the fp32 model exported to ONNX, on ORT: the same-runtime baseline of ``ort-*``.
* ``ort-int8``: ORT dynamic quantisation (``quantize_dynamic``): int8 weights, activations
  quantised per call at run time.
* ``ort-static-int8``: ORT static quantisation in QDQ format (``quantize_static``) calibrated
  on the task's ``calibration_batches``.
* ``ort-fp16``: the graph converted to fp16 (I/O kept fp32) on ORT's CUDA execution provider.

Every cell exports the fp32 model, compares the fp32 graph's logits with torch's on real
evaluation batches (the cell fails above ``export_tolerance``), then quantises/converts, and
records the comparison, the MatMul/Gemm nodes that really run quantised (in the graph ORT runs
after its optimisations) and the versions. Artifacts are cached with ``cached_or_build``.
"""

from __future__ import annotations

import json
import logging
import shutil
import uuid
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

import harness
from harness.api import CellContext, Compression, LoadedModel, Task
from harness.errors import PluginError
from harness.toolkit import base_info, cached_load, task_key

from .._lib.torch_utils import weight_counts
from ..runtimes import onnxruntime as rt

#: CPU flags of integer dot-product instructions that do not saturate u8 x s8 products
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


def auto_reduce_range() -> bool:
    """``reduce_range: "auto"`` on this machine: 7-bit weights on x86 CPUs without VNNI/AMX.

    There ORT's u8 x s8 kernels use AVX2/AVX-512 ``vpmaddubsw``, whose 16-bit pair sums can
    saturate with full-range weights (ORT's quantisation docs advise ``reduce_range`` there).
    With VNNI or AMX (or off x86), full 8-bit weights.
    """
    import platform

    from harness.provenance import cpu_flags

    if platform.machine().lower() not in ("x86_64", "amd64", "i686", "x86"):
        return False
    return not any(f in cpu_flags() for f in VNNI_FLAGS)


class _QuietQuantizer:
    """ORT's quantiser logs through the root logger (e.g. advice to run its pre-processing,
    which fails on these graphs: symbolic shape inference is incomplete for them) and prints
    while collecting histograms; keep the run's output clean."""

    def __enter__(self) -> None:
        import contextlib
        import io

        self.level = logging.getLogger().level
        logging.getLogger().setLevel(logging.ERROR)
        self.stdout = contextlib.redirect_stdout(io.StringIO())
        self.stdout.__enter__()

    def __exit__(self, *exc: object) -> None:
        self.stdout.__exit__(*exc)
        logging.getLogger().setLevel(self.level)


#: parameters echoed into the row (``reduce_range`` as resolved on this machine)
ROW_PARAMS = {"export_tolerance", "per_channel", "reduce_range"}


class _ORTCompression(Compression):
    """What every ORT compression shares: export, parity check, counting, caching, predictor."""

    cpu_ok = True
    cuda_ok = True
    precision = "fp32"
    #: constant row columns (the quantisation API and how activations are quantised)
    quantization: ClassVar[dict[str, str]] = {}

    class Params(harness.Params):
        threads: int | None = Field(None, ge=1)
        """ORT's ``intra_op_num_threads`` on the CPU (default: torch's thread count)."""
        opt_level: rt.OptLevel = "all"
        """ORT's graph optimisation level (``all`` = ``ORT_ENABLE_ALL``)."""
        export_tolerance: float = Field(1e-4, gt=0)
        """Largest max |logit diff| between the fp32 ONNX graph and torch on real evaluation
        batches; above it the cell fails (the export is wrong for the model)."""

    params: Params

    def unsupported_reason(self, ctx: CellContext) -> str | None:
        return rt.ort_reason(self.name, ctx, cpu=self.cpu_ok, cuda=self.cuda_ok)

    # -- what a subclass provides ----------------------------------------------------------------
    def transform(self, fp32: Path, out: Path, model: LoadedModel, task: Task, ctx: CellContext,
                  scratch: Path) -> dict[str, Any]:
        """Write the graph that runs to ``out`` from the exported fp32 graph ``fp32``."""
        shutil.copy2(fp32, out)
        return {}

    # -- shared ------------------------------------------------------------------------------
    def _fp32_session(self, path: Path) -> rt.ORTPredictor:
        return rt.ORTPredictor(path, device="cpu", threads=self.params.threads, opt_level=self.params.opt_level)

    def apply(self, model: LoadedModel, task: Task, ctx: CellContext) -> rt.ORTPredictor:
        batches, described = rt.check_batches(model, task, ctx.seed)
        providers = rt.providers_for(ctx.device)

        def build(folder: Path) -> dict[str, Any]:
            scratch = Path(ctx.work_dir) / f"ort-{uuid.uuid4().hex[:8]}"
            scratch.mkdir(parents=True)
            try:
                fp32 = scratch / "fp32.onnx"
                ctx.progress("compress", f"{self.name}: exporting to ONNX (opset {rt.OPSET})")
                meta = rt.export_onnx(model, fp32, self.name)
                diff = rt.max_abs_diff(self._fp32_session(fp32), model.module, batches)
                if not diff <= self.params.export_tolerance:  # also catches NaN
                    raise PluginError(
                        f"{self.name}: the exported fp32 ONNX graph ({rt.EXPORTER}, opset {rt.OPSET}) "
                        f"differs from the torch model by max |logit diff| {diff:.3g} on {described}, "
                        f"above export_tolerance {self.params.export_tolerance:g}: the export is wrong for "
                        "this model; raise export_tolerance only if the difference is expected"
                    )
                meta.update(export_max_abs_diff=diff, export_check_inputs=described)
                ctx.progress("compress", f"{self.name}: building the ORT graph")
                meta.update(self.transform(fp32, folder / rt.ONNX_FILE, model, task, ctx, scratch))
                saved = rt.matmul_counts(folder / rt.ONNX_FILE)
                ran = rt.optimized_matmul_counts(folder / rt.ONNX_FILE, scratch, self.params.opt_level, providers)
                meta.update(
                    quantized_matmuls=f"{saved['quantized']}/{saved['total']}",
                    runtime_quantized_matmuls=f"{ran['quantized']}/{ran['total']}",
                    runtime_matmul_ops=json.dumps(ran["ops"], sort_keys=True),
                    runtime_quantized=ran["quantized"],
                    **rt.versions(),
                )
                return meta
            finally:
                shutil.rmtree(scratch, ignore_errors=True)

        def load(folder: Path) -> rt.ORTPredictor:  # ONNX Runtime parses the graph (no pickle)
            return rt.ORTPredictor(
                folder / rt.ONNX_FILE, device=ctx.device, counts=weight_counts(model.module),
                precision=self.precision, threads=self.params.threads, opt_level=self.params.opt_level,
            )

        folder, meta, hit, pred = cached_load(ctx, model, self, build, load, extra_key=task_key(task))
        info = pred.info
        info.update(base_info(self, "onnxruntime", meta, hit))
        for k in ("exporter", "opset", "export_warnings", "export_max_abs_diff", "export_check_inputs",
                  "quantized_matmuls", "runtime_quantized_matmuls", "runtime_matmul_ops",
                  "calibration_samples", "calibration_method"):
            if k in meta:
                info[k] = meta[k]
        info.update(self.quantization)
        info.update(self.params.model_dump(include=ROW_PARAMS))
        if self.precision == "int8" and not meta.get("runtime_quantized"):
            pred.precision = "fp32"  # nothing was quantised: say what really runs
        diff = rt.max_abs_diff(pred, model.module, batches)
        pred.info["max_abs_diff_vs_torch"] = diff
        if self.precision == "fp32" and not diff <= self.params.export_tolerance:
            raise PluginError(
                f"{self.name}: the ONNX graph as ORT runs it ({','.join(pred.session.get_providers())}, "
                f"opt_level {self.params.opt_level}) differs from the torch model by max |logit diff| "
                f"{diff:.3g} on {described}, above export_tolerance {self.params.export_tolerance:g}"
            )
        return pred


# ---------------------------------------------------------------------------------------------
# onnx (fp32)
# ---------------------------------------------------------------------------------------------


class OnnxFP32(_ORTCompression):
    """The fp32 model exported to ONNX and run by ONNX Runtime: the same-runtime baseline of
    ``ort-int8`` / ``ort-static-int8`` / ``ort-fp16``. CPU; CUDA with onnxruntime-gpu."""

    name = "onnx"
    version = "1"
    description = "fp32 model exported to ONNX, on ONNX Runtime (runtime baseline for ort-*)"


# ---------------------------------------------------------------------------------------------
# ort-int8 (dynamic)
# ---------------------------------------------------------------------------------------------


class _OrtInt8(_ORTCompression):
    """What the int8 quantisations share: their weight-scale parameters. CPU only (the integer
    kernels are the CPU provider's)."""

    cuda_ok = False
    precision = "int8"

    class Params(_ORTCompression.Params):
        per_channel: bool = True
        """Per-output-channel weight scales (false: one scale per tensor)."""
        reduce_range: bool | Literal["auto"] = Field("auto", validate_default=True)
        """7-bit weights; "auto": where the CPU's u8 x s8 kernels can saturate (x86 without
        VNNI/AMX). The value used on this machine is the one in the cache key and the row."""
        embeddings: bool = True
        """Store the embedding tables (``Gather``) int8 too."""

        @field_validator("reduce_range", mode="before")
        @classmethod
        def _resolve_auto(cls, value: Any) -> Any:
            if isinstance(value, bool):
                return value
            if value == "auto":
                return auto_reduce_range()
            raise ValueError(f'must be true, false or "auto", got {value!r}')

    params: Params


class OrtDynamicInt8(_OrtInt8):
    """``onnxruntime.quantization.quantize_dynamic``: MatMul/Gemm weights int8 (signed), their
    activations quantised per call (``DynamicQuantizeLinear``); with ``embeddings`` the
    embedding tables (``Gather``) are stored int8 too. CPU only (the integer kernels are the CPU
    provider's)."""

    name = "ort-int8"
    version = "2"  # 2: per-channel weight scales and reduce_range "auto" by default
    description = "ONNX Runtime dynamic int8 quantisation (MatMul/Gemm, embeddings), CPU"
    quantization = {"quantization_api": "onnxruntime.quantization.quantize_dynamic",
                    "activations": "int8 dynamic (per call)"}

    def transform(self, fp32, out, model, task, ctx, scratch):
        from onnxruntime.quantization import QuantType, quantize_dynamic

        p = self.params
        ops = None if p.embeddings else ["MatMul", "Gemm"]  # None: every op ORT quantises dynamically
        with _QuietQuantizer():
            quantize_dynamic(str(fp32), str(out), weight_type=QuantType.QInt8, per_channel=p.per_channel,
                             reduce_range=p.reduce_range, op_types_to_quantize=ops)
        return {}


# ---------------------------------------------------------------------------------------------
# ort-static-int8 (QDQ)
# ---------------------------------------------------------------------------------------------


class _Reader:
    """``CalibrationDataReader`` over numpy feeds. ``__len__``/``set_range`` let ORT collect one
    sample at a time (``CalibStridedMinMax: 1``): the inputs have different lengths, and the
    histogram methods cannot stack activations of different shapes."""

    def __init__(self, feeds: list[dict[str, Any]]) -> None:
        self.feeds = feeds
        self.set_range(0, len(feeds))

    def get_next(self) -> dict[str, Any] | None:
        return next(self._it, None)

    def __len__(self) -> int:
        return len(self.feeds)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._it = iter(self.feeds[start_index:end_index])


def graph_inputs(path: Path) -> set[str]:
    """The input names an ONNX graph declares (read from the file's graph, weights not loaded)."""
    import onnx

    return {i.name for i in onnx.load(str(path), load_external_data=False).graph.input}


class OrtStaticInt8(_OrtInt8):
    """``onnxruntime.quantization.quantize_static`` in QDQ format: MatMul/Gemm inputs and weights
    int8 with ranges calibrated on ``samples`` inputs of the task's train split
    (``Task.calibration_batches``, batch 1, real lengths) with ``calibration_method``. Activations
    uint8 (asymmetric), weights int8 (symmetric), as ORT recommends for x86 CPUs; with
    ``embeddings`` the embedding tables (``Gather``) are int8 too. CPU only."""

    name = "ort-static-int8"
    version = "2"  # 2: reduce_range "auto" and per-channel weight scales by default
    description = "ONNX Runtime static int8 (QDQ), calibrated on the task's train split, CPU"
    quantization = {"quantization_api": "onnxruntime.quantization.quantize_static (QDQ)",
                    "activations": "uint8 static (calibrated)"}

    class Params(_OrtInt8.Params):
        samples: int = Field(300, ge=1)
        """Calibration inputs drawn (seeded) from the task's train split."""
        calibration_method: Literal["minmax", "entropy", "percentile", "distribution"] = "minmax"
        """ORT's ``CalibrationMethod`` for the activation ranges."""
        embeddings: bool = False
        """Store the embedding tables (``Gather``) int8 too."""

    params: Params

    def transform(self, fp32, out, model, task, ctx, scratch):
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

        p = self.params
        calib = task.calibration_batches(model, p.samples, ctx.seed)
        if not calib:
            raise PluginError(f"{self.name}: task {task.name!r} gave no calibration samples")
        takes = graph_inputs(fp32)  # DistilBERT, DeBERTa-v2: no token_type_ids in the graph
        feeds = [{k: v.numpy() for k, v in b.items() if k in takes} for b in calib]
        method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                  "percentile": CalibrationMethod.Percentile,
                  "distribution": CalibrationMethod.Distribution}[p.calibration_method]
        with _QuietQuantizer():
            quantize_static(
                str(fp32), str(out), _Reader(feeds), quant_format=QuantFormat.QDQ,
                op_types_to_quantize=["MatMul", "Gemm", *(["Gather"] if p.embeddings else [])],
                per_channel=p.per_channel, reduce_range=p.reduce_range, activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8, calibrate_method=method,
                extra_options={"CalibStridedMinMax": 1},
            )
        return {"calibration_samples": len(feeds), "calibration_method": p.calibration_method}


# ---------------------------------------------------------------------------------------------
# ort-fp16 (GPU)
# ---------------------------------------------------------------------------------------------


class OrtFP16(_ORTCompression):
    """The graph converted to fp16 (``onnxruntime.transformers.float16``, inputs and logits kept
    fp32) on ORT's CUDA execution provider. Skipped on the CPU: ORT's CPU provider has no fp16
    MatMul kernels for most ops and would insert casts back to fp32, slower than fp32."""

    name = "ort-fp16"
    version = "1"
    description = "fp16 ONNX graph on ONNX Runtime's CUDA execution provider (GPU only)"
    cpu_ok = False
    precision = "fp16"

    def transform(self, fp32, out, model, task, ctx, scratch):
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16

        half = convert_float_to_float16(onnx.load(str(fp32)), keep_io_types=True)
        onnx.save(half, str(out))
        return {}


@harness.hookimpl
def register_compressions(register):
    register(OnnxFP32)
    register(OrtDynamicInt8)
    register(OrtStaticInt8)
    register(OrtFP16)


__all__ = ["OnnxFP32", "OrtDynamicInt8", "OrtFP16", "OrtStaticInt8"]
