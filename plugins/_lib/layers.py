"""Helpers shared by the structural compressions (``low-rank``, ``share-layers``, ``palettize``,
``prune``, ``distill``, ``finetune``): a recovery fine-tune through the task's
``finetune(model, ctx, epochs=...)`` hook (exact zeros kept), the parameter ratio a row reports,
and the device check every torch compression makes. What a method needs inside the model (the
blocks, their Linears by role, the embeddings) is found by ``plugins/_lib/arch.py``, in any
transformers encoder. torch is imported lazily.
"""

from __future__ import annotations

from typing import Any

from harness.api import CellContext, Finetunable, LoadedModel, Task, Transform
from harness.errors import PluginError


def device_reason(plugin: str, device: str) -> str | None:
    """Why a torch compression cannot run on ``device`` here, or None."""
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            return f"{plugin}: device {device} requested but CUDA is not available"
        return None
    if device != "cpu":
        return f"{plugin}: unsupported device {device!r}"
    return None


def zero_masks(module: Any) -> dict[str, Any]:
    """``{parameter name: bool mask of its non-zero entries}`` for every weight matrix that has
    exact zeros (what pruning left): recovery training keeps those zeros (``recover(masks=)``)."""
    out = {}
    for name, p in module.named_parameters():
        if p.dim() >= 2:
            keep = p.detach() != 0
            if not bool(keep.all()):
                out[name] = keep
    return out


def recover(
    model: LoadedModel, module: Any, task: Task, ctx: CellContext, epochs: float, plugin: str,
    masks: dict[str, Any] | None = None,
) -> tuple[Any, str]:
    """Fine-tune the compressed ``module`` for ``epochs`` with the task's own recipe (the task's
    ``finetune(model, ctx, epochs=...)``, the ``"finetune"`` capability: head kept, nothing cached
    there). ``masks`` (parameter name -> bool keep mask) pins the other entries to zero: their
    gradients are masked and they are zeroed again after training. Returns ``(module, note)``.
    Compressions that recover declare ``requires = ("finetune",)``, so the core skips the cell
    before this for a task without it."""
    import torch

    if not isinstance(task, Finetunable):
        raise PluginError(f"{plugin}: task {task.name!r} is not harness.api.Finetunable "
                          "(no finetune(model, ctx, *, epochs)); recovery needs it")
    masks = masks or {}
    params = dict(module.named_parameters())
    handles = [params[n].register_hook(lambda g, keep=m: g * keep.to(device=g.device, dtype=g.dtype))
               for n, m in masks.items()]
    compressed = LoadedModel(
        module=module,
        tokenizer=model.tokenizer,
        head=model.head,
        identity=f"{model.identity}+{plugin}",
        source=model.source,
        trained_for_task=True,
        max_length=model.max_length,
        info=dict(model.info),
    )
    try:
        tuned = task.finetune(compressed, ctx, epochs=epochs)
    finally:
        for h in handles:
            h.remove()
    out = getattr(tuned, "module", tuned).to("cpu").eval()
    if masks:
        tuned_params = dict(out.named_parameters())
        with torch.no_grad():  # exact zeros whatever the optimiser (weight decay) did
            for n, m in masks.items():
                tuned_params[n].mul_(m.to(tuned_params[n].dtype))
    return out, f"recovered: {epochs:g} epoch(s) with task {task.name!r}'s recipe"


def params_vs_source(module: Any, source: Any) -> float | None:
    """The weights of ``module`` over those of the ``source`` module it was made from."""
    from .torch_utils import weight_counts

    total, _ = weight_counts(module)
    src_total, _ = weight_counts(source)
    return round(total / src_total, 6) if src_total else None


def torch_predictor(module: Any, model: LoadedModel, ctx: CellContext, info: dict[str, Any],
                    folder: Any) -> Any:
    """The predictor of a method's torch module, with ``params_vs_source`` (its weights over the
    input model's) added to the row."""
    from .torch_utils import CompressedTorchPredictor

    info["params_vs_source"] = params_vs_source(module, model.module)
    return CompressedTorchPredictor(module, device=ctx.device, precision="fp32", info=info,
                                    artifact=folder / "model")


class RecoveringTransform(Transform):
    """Base of the transforms with a ``recovery_epochs`` parameter. Recovery trains through the
    task's recipe, so they require the task's ``"finetune"`` capability only when asked to
    recover (``recovery_epochs > 0``); a task without it then makes the cell skipped."""

    @property  # type: ignore[override]
    def requires(self) -> tuple[str, ...]:
        return ("finetune",) if self.params.recovery_epochs > 0 else ()

