"""ONNX Runtime as a runtime: export of a transformers module to ONNX, an ORT predictor, and
what the ORT compressions (``harness_plugins.compressions.ort``) share: the export parity check against torch
and the count of the MatMul/Gemm nodes that really run quantised.

Export: ``torch.onnx.export(..., dynamo=False)``, the TorchScript exporter, opset
``OPSET`` (17: ``LayerNormalization`` is a single ONNX op from 17 on), dynamic ``batch`` and
``sequence`` axes on every input and on the logits. With torch 2.13 and transformers 5 it is
exact (max |logit diff| ~1e-7) and takes about a second for a tiny BERT. The dynamo exporter
(``dynamo=True``, needs onnxscript) was tried on the same model: 14 s, and logits off by ~2e-3,
so it is not used. The TorchScript exporter's warnings are caught and counted (``export_warnings``
in the row), not shown: a DeprecationWarning (the exporter is the legacy one), TracerWarnings from
transformers' mask code (Python branches on shapes that are recorded as constants; they do not
depend on the batch as long as an attention mask is passed, which the harness always does) and a
UserWarning on ``aten::index`` with negative indices (the mask code indexes with aranges). The
parity check on real evaluation batches of other shapes is what proves the graph generalises.

onnx and onnxruntime are imported lazily.
"""

from __future__ import annotations

import re
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from harness.api import CellContext, LoadedModel, Predictor, Task
from harness.errors import PluginError
from harness.toolkit import missing_packages_reason

OPSET = 17
EXPORTER = "torch.onnx.export (TorchScript exporter, dynamo=False)"
ONNX_FILE = "model.onnx"
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
#: graph optimisation levels accepted by the predictor (ORT's names without the prefix)
OptLevel = Literal["disable", "basic", "extended", "all"]
#: each level's ``onnxruntime.GraphOptimizationLevel`` name
OPT_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC",
              "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}
#: MatMul/Gemm-like ops, float and integer, as the exporter, the quantiser and ORT's fusions
#: name them (ai.onnx and com.microsoft domains)
FLOAT_MATMULS = {"MatMul", "Gemm", "FusedMatMul", "FusedGemm", "Attention", "MultiHeadAttention"}
INT_MATMULS = {"MatMulInteger", "QLinearMatMul", "DynamicQuantizeMatMul", "MatMulIntegerToFloat",
               "QGemm", "QAttention", "QOrderedMatMul"}


# ---------------------------------------------------------------------------------------------
# availability
# ---------------------------------------------------------------------------------------------


def available_providers() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


def ort_reason(plugin: str, ctx: CellContext, *, cpu: bool = True, cuda: bool = True) -> str | None:
    """Why ``plugin`` cannot run on ``ctx.device`` here (packages, device, execution provider)."""
    missing = missing_packages_reason(plugin, "onnx", "onnxruntime")
    if missing:
        return missing
    if ctx.device == "cpu":
        return None if cpu else f"{plugin}: runs on ONNX Runtime's CUDA execution provider only, not on the CPU"
    if ctx.device.startswith("cuda"):
        if not cuda:
            return f"{plugin}: runs on ONNX Runtime's CPU execution provider only, not on {ctx.device}"
        if "CUDAExecutionProvider" not in available_providers():
            import onnxruntime as ort

            return (f"{plugin}: device {ctx.device} needs ONNX Runtime's CUDAExecutionProvider, which "
                    f"this onnxruntime {ort.__version__} build lacks (providers: "
                    f"{', '.join(available_providers())}); install onnxruntime-gpu instead of onnxruntime")
        return None
    return f"{plugin}: unsupported device {ctx.device!r}"


def versions() -> dict[str, str]:
    import onnx
    import onnxruntime as ort

    return {"onnxruntime_version": ort.__version__, "onnx_version": onnx.__version__}


# ---------------------------------------------------------------------------------------------
# export
# ---------------------------------------------------------------------------------------------


class _Logits:
    """Build (lazily, torch imported inside) a module: model inputs positionally -> logits."""

    @staticmethod
    def wrap(module: Any, names: tuple[str, ...]) -> Any:
        import torch

        class Logits(torch.nn.Module):
            def __init__(self, inner: Any) -> None:
                super().__init__()
                self.inner = inner

            def forward(self, *args: Any) -> Any:
                return self.inner(**dict(zip(names, args))).logits

        return Logits(module).eval()


def export_inputs(model: LoadedModel) -> dict[str, Any]:
    """A padded batch of two real-looking sentences of different lengths (so the attention mask
    has zeros when tracing), only the inputs the tokenizer makes."""
    enc = model.tokenizer(
        ["The European Commission said on Thursday it disagreed with German advice .", "Peter Blackburn"],
        padding=True, return_tensors="pt",
    )
    names = [n for n in INPUT_NAMES if n in enc]
    unknown = set(enc) - set(INPUT_NAMES)
    if unknown:
        raise PluginError(f"ONNX export: the tokenizer makes inputs {sorted(unknown)} the exporter does not "
                          f"know; supported: {list(INPUT_NAMES)}")
    return {n: enc[n] for n in names}


def unsupported_op(message: str) -> str | None:
    """The operator an exporter error names, if it names one."""
    first = message.strip().splitlines()[0] if message.strip() else ""
    for pattern in (r"operator '([\w:.]+)'", r"unrecognized namespace '?([\w:.]+?)'?[.\s]",
                    r"No (?:ONNX function|decomposition) found for .*?'?([\w:.]+\.\w+)'?"):
        m = re.search(pattern, first)
        if m:
            return m.group(1)
    return None


def export_onnx(model: LoadedModel, path: Path, plugin: str) -> dict[str, Any]:
    """Export ``model.module`` (fp32, CPU copy) to ``path``; return what the row records.

    An exporter error becomes a ``PluginError`` naming the operator and the exporter.
    """
    import torch

    from .._lib.torch_utils import cpu_copy

    example = export_inputs(model)
    names = tuple(example)
    wrapper = _Logits.wrap(cpu_copy(model.module).float().eval(), names)
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes["logits"] = {0: "batch"} if model.head.kind == "sequence-classification" else {0: "batch", 1: "sequence"}
    import inspect

    # torch >= 2.9 defaults to the dynamo exporter; older torch has no ``dynamo`` keyword
    legacy = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
    with warnings.catch_warnings(record=True) as caught, torch.no_grad():
        warnings.simplefilter("always")
        try:
            torch.onnx.export(
                wrapper, tuple(example.values()), str(path), input_names=list(names),
                output_names=["logits"], dynamic_axes=axes, opset_version=OPSET, **legacy,
            )
        except Exception as exc:  # noqa: BLE001 - any exporter error, reported with the op
            text = str(exc)
            op = unsupported_op(text)
            what = f"operator {op!r}" if op else "the model"
            first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
            raise PluginError(
                f"{plugin}: {EXPORTER}, opset {OPSET}, cannot export {what} "
                f"({type(exc).__name__}: {first}). Replace the operator in the model, or run this "
                "model with a torch compression (none, dynamic-int8) instead"
            ) from exc
    kinds = Counter(w.category.__name__ for w in caught)
    return {
        "exporter": EXPORTER, "opset": OPSET, "export_inputs": list(names),
        "export_warnings": ", ".join(f"{k} x{v}" for k, v in sorted(kinds.items())) or "none",
    }


# ---------------------------------------------------------------------------------------------
# graph inspection
# ---------------------------------------------------------------------------------------------


def matmul_counts(graph_path: Path) -> dict[str, Any]:
    """{quantized, total, ops} over the MatMul/Gemm-like nodes of a saved graph. A float MatMul
    or Gemm fed by ``DequantizeLinear`` (QDQ format) counts as quantised: ORT fuses the pattern
    into an integer kernel. ``ops`` counts every MatMul/Gemm-like op type found."""
    import onnx

    graph = onnx.load(str(graph_path), load_external_data=False).graph
    producer = {o: n.op_type for n in graph.node for o in n.output}
    ops: Counter = Counter()
    quantized = total = 0
    for n in graph.node:
        if n.op_type in INT_MATMULS:
            quantized += 1
        elif n.op_type in FLOAT_MATMULS:
            if n.op_type in ("MatMul", "Gemm") and any(producer.get(i) == "DequantizeLinear" for i in n.input[:2]):
                quantized += 1
        else:
            continue
        total += 1
        ops[n.op_type] += 1
    return {"quantized": quantized, "total": total, "ops": dict(sorted(ops.items()))}


def optimized_matmul_counts(graph_path: Path, scratch: Path, opt_level: str, providers: list[str]) -> dict[str, Any]:
    """``matmul_counts`` of the graph ORT actually runs: the session's optimised graph, written
    to ``scratch`` (ORT's ``optimized_model_filepath``) and removed."""
    import onnxruntime as ort

    out = Path(scratch) / "optimized.onnx"
    so = ort.SessionOptions()
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, OPT_LEVELS[opt_level])
    so.optimized_model_filepath = str(out)
    so.log_severity_level = 3  # the "hardware specific optimizations" warning on saving
    so.intra_op_num_threads = 1
    try:
        ort.InferenceSession(str(graph_path), so, providers=providers)
        return matmul_counts(out)
    finally:
        out.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# predictor
# ---------------------------------------------------------------------------------------------


def providers_for(device: str) -> list[str]:
    return ["CUDAExecutionProvider", "CPUExecutionProvider"] if device.startswith("cuda") else ["CPUExecutionProvider"]


class ORTPredictor(Predictor):
    """Runs an ``.onnx`` graph with an ONNX Runtime ``InferenceSession``; returns torch logits.

    CPU: ``CPUExecutionProvider`` with ``intra_op_num_threads`` threads (default: torch's
    thread count, like the OpenVINO predictor), one inter-op thread, sequential execution.
    ``cuda:N``: ``CUDAExecutionProvider`` on device N, TF32 off (inputs and outputs copied
    through host memory). ``opt_level`` is ORT's graph optimisation level (``all`` = ``ORT_ENABLE_ALL``).
    """

    runtime = "onnxruntime"

    def __init__(
        self,
        graph: Path,
        *,
        device: str = "cpu",
        counts: tuple[int, int] = (0, 0),
        precision: str = "fp32",
        threads: int | None = None,
        opt_level: str = "all",
        info: dict[str, Any] | None = None,
    ) -> None:
        import onnxruntime as ort

        if opt_level not in OPT_LEVELS:
            raise ValueError(f"onnxruntime: opt_level must be one of {sorted(OPT_LEVELS)}, got {opt_level!r}")
        self.graph = Path(graph)
        self.device, self.precision, self.counts = device, precision, counts
        self.opt_level = opt_level
        self.info = dict(info or {})
        so = ort.SessionOptions()
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, OPT_LEVELS[opt_level])
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.inter_op_num_threads = 1
        if threads is None:
            import torch

            threads = torch.get_num_threads()
        so.intra_op_num_threads = self.threads = int(threads)
        providers: list[Any] = ["CPUExecutionProvider"]
        if device.startswith("cuda"):
            index = int(device.split(":", 1)[1]) if ":" in device else 0
            # use_tf32=0: an fp32 graph computes in fp32 (TF32 would change the logits ~1e-3)
            providers = [("CUDAExecutionProvider", {"device_id": index, "use_tf32": 0}), "CPUExecutionProvider"]
        self.session = ort.InferenceSession(str(self.graph), so, providers=providers)
        self.input_names = tuple(i.name for i in self.session.get_inputs())

    def __call__(self, batch: Mapping[str, Any]) -> Any:
        import numpy as np
        import torch

        feed = {}
        for name in self.input_names:
            v = batch[name]
            feed[name] = v.numpy() if isinstance(v, torch.Tensor) else np.asarray(v, dtype=np.int64)
        return torch.from_numpy(self.session.run(None, feed)[0])

    def save(self, directory: Path) -> Path:
        """The ``.onnx`` file (weights inside the file, no external data) copied to ``directory``."""
        import shutil

        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        return Path(shutil.copy2(self.graph, out / ONNX_FILE))

    def parameter_counts(self) -> tuple[int, int]:
        return self.counts

    def bits_per_weight(self) -> float:
        """Bytes of the ``.onnx`` file x 8 / parameters of the source model (int8 weights plus
        their scales and zero points, and whatever stays fp32)."""
        total = self.counts[0]
        return round(8 * self.graph.stat().st_size / total, 3) if total else 0.0

    def describe(self) -> dict[str, Any]:
        return {
            **self.info,
            **versions(),
            "runtime": "onnxruntime",
            "threads": self.threads,
            "graph_optimization_level": OPT_LEVELS[self.opt_level],
            "execution_providers": ",".join(self.session.get_providers()),
            "onnx_size_bytes": self.graph.stat().st_size,
            "nonzero_counted_on": "fp32 source model",
        }


# ---------------------------------------------------------------------------------------------
# parity against torch
# ---------------------------------------------------------------------------------------------


def check_batches(model: LoadedModel, task: Task, seed: int, batches: int = 4, size: int = 4
                  ) -> tuple[list[dict[str, Any]], str]:
    """Real evaluation inputs to compare logits on: ``task.latency_batches`` (``batches`` x
    ``size`` inputs at their real lengths, dynamically padded), or the export example when the
    task offers none. Returns the batches and a description of them."""
    try:
        got = task.latency_batches(model, size, batches, seed)
        if got:
            return list(got), f"{len(got)} batches of {size} evaluation inputs (task.latency_batches)"
    except NotImplementedError:
        pass
    return [export_inputs(model)], "the export example (the task offers no latency_batches)"


def max_abs_diff(predictor: Any, module: Any, batches: Sequence[Mapping[str, Any]]) -> float:
    """max |logits(predictor) - logits(torch module)| over ``batches``, on real positions only
    (padding positions of token-classification logits are ignored)."""
    import torch

    module = module.eval()
    worst = 0.0
    for batch in batches:
        inputs = {k: v for k, v in batch.items() if k in INPUT_NAMES}
        with torch.inference_mode():
            ref = module(**{k: v.to(next(module.parameters()).device) for k, v in inputs.items()}).logits
        out = torch.as_tensor(predictor(inputs)).to(ref.device, torch.float32)
        diff = (out - ref.float()).abs()
        if diff.dim() == 3 and "attention_mask" in inputs:
            diff = diff[inputs["attention_mask"].bool().to(diff.device)]
        worst = max(worst, float(diff.max()) if diff.numel() else 0.0)
    return worst
