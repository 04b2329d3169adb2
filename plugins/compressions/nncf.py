"""Compressions that run on OpenVINO, where NNCF's int8 is real int8 (in PyTorch an NNCF
model is fake-quantised and slower than fp32):

* ``openvino``: the fp32 model converted to OpenVINO IR, no compression: the runtime baseline
  that the int8 speed-up is measured against (the same kernels, only the precision differs).
* ``nncf-ptq``: NNCF post-training static int8 quantisation (``ModelType.TRANSFORMER``),
  calibrated on the task's train split; ``max_drop`` switches to NNCF's accuracy-controlled
  quantisation with the task's own main metric.
* ``nncf-weights``: NNCF weight compression (int8/int4, group size, ratio); activations stay
  floating point.

Export, the predictor and the precision read-back are the OpenVINO runtime module
(``harness_plugins.runtimes.openvino``). nncf and openvino are imported lazily.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

import harness
from harness.api import CellContext, Compression, LoadedModel, Task
from harness.errors import PluginError
from harness.toolkit import (
    base_info,
    cached_load,
    task_key,
)

from .._lib.torch_utils import weight_counts
from ..runtimes.openvino import (
    OpenVINOParams,
    OpenVINOPredictor,
    openvino_reason,
    precision_reason,
    predictor_config,
    save_ov,
    to_openvino,
)

WeightMode = Literal["int8_sym", "int8_asym", "int4_sym", "int4_asym", "nf4"]


def ov_loader(comp: Any, model: LoadedModel) -> Any:
    """``cached_load``'s loader of an OpenVINO IR folder: the predictor (OpenVINO parses the IR
    files; a folder it cannot read is rebuilt)."""

    def load(folder: Path) -> OpenVINOPredictor:
        return OpenVINOPredictor(folder, counts=weight_counts(model.module), **predictor_config(comp))

    return load


# ---------------------------------------------------------------------------------------------
# openvino (fp32 runtime baseline)
# ---------------------------------------------------------------------------------------------


class OpenVINOFP32(Compression):
    """The fp32 model on OpenVINO: the same-runtime baseline of ``nncf-ptq``/``nncf-weights``."""

    name = "openvino"
    version = "1"
    description = "fp32 model converted to OpenVINO IR (runtime baseline for nncf-*), CPU"

    Params = OpenVINOParams
    params: OpenVINOParams

    def unsupported_reason(self, ctx: CellContext) -> str | None:
        return openvino_reason(self.name, ctx, need_nncf=False) or precision_reason(
            self.name, self.params.inference_precision
        )

    def apply(self, model: LoadedModel, task: Task, ctx: CellContext) -> OpenVINOPredictor:
        def build(folder: Path) -> dict[str, Any]:
            save_ov(to_openvino(model), folder)
            return {}

        folder, meta, hit, pred = cached_load(ctx, model, self, build, ov_loader(self, model))
        pred.info.update(base_info(self, "openvino", meta, hit))
        return pred


# ---------------------------------------------------------------------------------------------
# nncf-ptq
# ---------------------------------------------------------------------------------------------


class _NNCFLogLevel:
    """NNCF logs at INFO (tables, per-step timings); keep it to warnings unless the run shows
    progress."""

    def __init__(self, ctx: CellContext) -> None:
        self.quiet = not ctx.show_progress

    def __enter__(self) -> None:
        if self.quiet:
            import logging

            import nncf

            self.level = nncf.nncf_logger.level
            nncf.set_log_level(logging.WARNING)

    def __exit__(self, *exc: object) -> None:
        if self.quiet:
            import nncf

            nncf.set_log_level(self.level)


def _to_numpy_fn(names: tuple[str, ...]):
    def transform(batch: Mapping[str, Any]) -> dict[str, Any]:
        return {n: batch[n].numpy() for n in names if n in batch}

    return transform


def _control_split(task: Task, split: str) -> tuple[str | None, str]:
    """The ``split=`` to ask ``task.evaluate`` for (``split`` when the task offers it in
    ``splits()``, else None: its own evaluation split), and how to name it in the row."""
    offered = bool(split) and split in task.splits()
    own = getattr(task, "eval_split", None)
    if offered and split != own:
        return split, split
    # e.g. SST-2: the only labelled held-out split is the one that is scored
    name = split if offered else own
    return (split if offered else None), (
        f"{name + ' ' if name else ''}(the task's evaluation split: tuned on what is scored)")


def _main_metric(metrics: list[Any]) -> tuple[float, bool, str]:
    mains = [m for m in metrics if m.main_metric]
    if len(mains) != 1:
        raise PluginError(f"accuracy control: the task returned {len(mains)} main metrics, needs 1")
    return float(mains[0].value), bool(mains[0].higher_is_better), mains[0].metric


class NNCFPostTrainingInt8(Compression):
    """NNCF post-training static int8 quantisation of the OpenVINO model."""

    name = "nncf-ptq"
    version = "1"
    description = "NNCF post-training static int8 (transformer preset) on OpenVINO, CPU"

    class Params(OpenVINOParams):
        subset_size: int = Field(300, ge=1)
        """Calibration samples drawn (seeded) from the task's train split."""
        preset: Literal["mixed", "performance"] = "mixed"
        """``mixed`` (asymmetric activations, NNCF's transformer default) or ``performance``."""
        fast_bias_correction: bool = True
        """NNCF's fast bias correction (false: the slower, more exact algorithm)."""
        smooth_quant: bool = True
        """Apply SmoothQuant (NNCF's transformer default); false disables it."""
        max_drop: float | None = Field(None, ge=0)
        """If set, ``nncf.quantize_with_accuracy_control``: layers are reverted to fp32 until the
        task's main metric drops by at most this much (absolute, metric units: 0.01 = 1 F1
        point), measured on ``control_split``."""
        control_split: str = "validation"
        """Split for accuracy control, asked for with ``task.evaluate(..., split=control_split)``
        when the task lists it in ``splits()``; otherwise the task's own evaluation split is used
        and the result row says so."""
        control_samples: int | None = None
        """Cap on evaluated examples per accuracy-control evaluation (default: all)."""
        ranking_samples: int = 100
        """Train examples NNCF ranks layers on (by output change), with ``max_drop``."""

    params: Params

    def unsupported_reason(self, ctx: CellContext) -> str | None:
        return openvino_reason(self.name, ctx, need_nncf=True) or precision_reason(
            self.name, self.params.inference_precision
        )

    def _quantize(self, model: LoadedModel, task: Task, ctx: CellContext) -> tuple[Any, dict[str, Any]]:
        import nncf
        from nncf.quantization.advanced_parameters import (
            AdvancedAccuracyRestorerParameters,
            AdvancedQuantizationParameters,
            AdvancedSmoothQuantParameters,
        )

        ov_model = to_openvino(model)
        names = tuple(i.get_any_name() for i in ov_model.inputs)
        calib = task.calibration_batches(model, self.params.subset_size, ctx.seed)
        if not calib:
            raise PluginError(f"nncf-ptq: task {task.name!r} gave no calibration samples")
        dataset = nncf.Dataset(calib, _to_numpy_fn(names))
        preset = {"mixed": nncf.QuantizationPreset.MIXED,
                  "performance": nncf.QuantizationPreset.PERFORMANCE}[self.params.preset]
        adv = AdvancedQuantizationParameters()
        if not self.params.smooth_quant:
            adv = AdvancedQuantizationParameters(
                smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=-1, convolution=-1)
            )
        common = dict(
            preset=preset,
            subset_size=min(self.params.subset_size, len(calib)),
            fast_bias_correction=self.params.fast_bias_correction,
            model_type=nncf.ModelType.TRANSFORMER,
            target_device=nncf.TargetDevice.CPU,
        )
        extra: dict[str, Any] = {"calibration_samples": len(calib)}
        if self.params.max_drop is None:
            return nncf.quantize(ov_model, dataset, advanced_parameters=adv, **common), extra

        control, split = _control_split(task, self.params.control_split)
        ranking = task.calibration_batches(model, self.params.ranking_samples, ctx.seed + 1)
        evaluations: list[float] = []
        cfg = predictor_config(self)
        sign = {"value": 1.0}

        def validate(compiled: Any, data: Any) -> tuple[float | None, None]:
            items = list(data)
            if len(items) < len(ranking) and len(ranking) > 1:
                # NNCF probes the function on one item to pick its mode; answering None makes it
                # rank layers by output change (the task metric is not defined per item here)
                return None, None
            pred = OpenVINOPredictor(Path("."), counts=(0, 0), compiled=compiled, **cfg)
            value, higher, _ = _main_metric(task.evaluate(
                pred, model, ctx, split=control, limit=self.params.control_samples, intervals=False))
            sign["value"] = 1.0 if higher else -1.0
            evaluations.append(value)
            ctx.progress("compress", f"nncf-ptq accuracy control: metric {value:.4f}")
            return sign["value"] * value, None

        restorer = AdvancedAccuracyRestorerParameters(
            ranking_subset_size=min(self.params.ranking_samples, len(ranking))
        )
        quantized = nncf.quantize_with_accuracy_control(
            ov_model,
            dataset,
            nncf.Dataset(ranking, _to_numpy_fn(names)),
            validate,
            max_drop=self.params.max_drop,
            drop_type=nncf.DropType.ABSOLUTE,
            advanced_quantization_parameters=adv,
            advanced_accuracy_restorer_parameters=restorer,
            **common,
        )
        extra.update(
            accuracy_control_split=split,
            accuracy_control_evaluations=len(evaluations),
            accuracy_control_fp32_metric=evaluations[0] if evaluations else None,
            accuracy_control_final_metric=evaluations[-1] if evaluations else None,
        )
        return quantized, extra

    def apply(self, model: LoadedModel, task: Task, ctx: CellContext) -> OpenVINOPredictor:
        def build(folder: Path) -> dict[str, Any]:
            import nncf

            with _NNCFLogLevel(ctx):
                q, extra = self._quantize(model, task, ctx)
            save_ov(q, folder)
            return {**extra, "nncf_version": nncf.__version__}

        folder, meta, hit, pred = cached_load(ctx, model, self, build, ov_loader(self, model),
                                              extra_key=task_key(task))
        info = pred.info
        info.update(base_info(self, "openvino", meta, hit))
        for k in (
            "calibration_samples",
            "accuracy_control_split",
            "accuracy_control_evaluations",
            "accuracy_control_fp32_metric",
            "accuracy_control_final_metric",
            "nncf_version",
        ):
            if k in meta:
                info[k] = meta[k]
        return pred


# ---------------------------------------------------------------------------------------------
# nncf-weights
# ---------------------------------------------------------------------------------------------


class NNCFWeightCompression(Compression):
    """NNCF weight compression of the OpenVINO model (data-free): weights int8 or int4 (with
    groups), activations in floating point; OpenVINO decompresses weights inside its kernels."""

    name = "nncf-weights"
    version = "1"
    description = "NNCF weight-only compression (int8 / int4, group size, ratio) on OpenVINO, CPU"

    class Params(OpenVINOParams):
        mode: WeightMode = "int8_asym"
        """int8_sym, int8_asym (per output channel), int4_sym, int4_asym, nf4."""
        group_size: int | None = None
        """int4/nf4 only: weights per scale along the input dim (-1 = per channel); NNCF's
        default is 128."""
        ratio: float | None = Field(None, gt=0, le=1)
        """int4/nf4 only: share of the layers compressed to 4 bits; the rest int8."""
        all_layers: bool | None = None
        """int4/nf4 only: also compress the embeddings and the last layer to 4 bits."""

        @model_validator(mode="after")
        def _four_bit_only(self) -> Any:
            if self.mode.startswith("int8") and (
                    self.group_size is not None or self.ratio is not None or self.all_layers):
                raise ValueError("group_size, ratio and all_layers apply to 4-bit modes only")
            return self

    params: Params

    def unsupported_reason(self, ctx: CellContext) -> str | None:
        return openvino_reason(self.name, ctx, need_nncf=True) or precision_reason(
            self.name, self.params.inference_precision
        )

    def apply(self, model: LoadedModel, task: Task, ctx: CellContext) -> OpenVINOPredictor:
        def build(folder: Path) -> dict[str, Any]:
            import nncf

            p = self.params
            kwargs: dict[str, Any] = {"mode": nncf.CompressWeightsMode(p.mode)}
            if p.group_size is not None:
                kwargs["group_size"] = p.group_size
            if p.ratio is not None:
                kwargs["ratio"] = float(p.ratio)
            if p.all_layers is not None:
                kwargs["all_layers"] = p.all_layers
            with _NNCFLogLevel(ctx):
                save_ov(nncf.compress_weights(to_openvino(model), **kwargs), folder)
            return {"nncf_version": nncf.__version__}

        folder, meta, hit, pred = cached_load(ctx, model, self, build, ov_loader(self, model))
        pred.info.update(base_info(self, "openvino", meta, hit))
        pred.info["weights"] = self.params.mode
        bits = "8" if self.params.mode.startswith("int8") else "4"
        act = {"int8": "8", "fp32": "32", "bf16": "16", "fp16": "16"}.get(pred.precision, "32")
        pred.info["compute_precision"] = pred.precision
        pred.precision = f"w{bits}a{act}"  # weight-only: int weights, float (or dyn-int8) activations
        return pred


@harness.hookimpl
def register_compressions(register):
    register(OpenVINOFP32)
    register(NNCFPostTrainingInt8)
    register(NNCFWeightCompression)


__all__ = [
    "NNCFPostTrainingInt8",
    "NNCFWeightCompression",
    "OpenVINOFP32",
]
