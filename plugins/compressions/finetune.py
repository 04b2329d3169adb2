"""The ``finetune`` compression: recovery training as a step of its own.

Continues training the model it is given on the task's train split with the task's own recipe
(``harness.api.Finetunable``: learning rate, batch size, length), head kept, for ``epochs`` (any
fraction of an epoch). It compresses nothing by itself: in a chain it recovers what an earlier
step lost (``[prune, finetune, nncf-ptq]``, ``[low-rank, finetune]``), so every method can
recover without a ``recovery_epochs`` parameter of its own. Weight matrices with exact zeros
(what pruning leaves) keep them (``keep_zeros``), so a pruned model stays as sparse, and as the
last step of a chain its artifact stores those matrices as ``prune`` does (bitmask + non-zero
values), so the size on disk shows the sparsity. Tied (shared) layers stay tied: they are one
module trained once.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from pydantic import Field

import harness
from harness.api import CellContext, LoadedModel, Task, Transform

from .._lib.layers import device_reason, recover, zero_masks
from .._lib.prune_masks import save_sparse
from .._lib.torch_utils import CompressedTorchPredictor


class Finetune(Transform):
    """Recovery fine-tuning with the task's recipe (a chain step)."""

    name = "finetune"
    version = "2"  # 2: a sparse artifact when exact zeros were kept
    description = "recovery training on the task's train split with its recipe (a chain step)"
    requires = ("finetune",)

    class Params(harness.Params):
        epochs: float = Field(1.0, gt=0)
        """Passes over the train split; a fraction trains on that share of the batches."""
        keep_zeros: bool = True
        """Weight matrices with exact zeros keep them (their gradients are masked)."""

    params: Params

    def unsupported_reason(self, ctx: CellContext) -> str | None:
        return device_reason("finetune", ctx.device)

    def transform(self, model: LoadedModel, task: Task, ctx: CellContext) -> LoadedModel:
        module = model.module.to("cpu").float().train()
        masks = zero_masks(module) if self.params.keep_zeros else {}
        tuned, note = recover(model, module, task, ctx, self.params.epochs, "finetune", masks=masks)
        info: dict[str, Any] = {"recovery": note}
        if masks:
            info["kept_zero_matrices"] = len(masks)
        return dataclasses.replace(model, module=tuned, info={**model.info, **info})

    def apply(self, model: LoadedModel, task: Task, ctx: CellContext) -> Any:
        """The cached transform on eager PyTorch (the ``Transform`` default); when it kept exact
        zeros, the artifact stores those matrices sparse (bitmask + values)."""
        pred = super().apply(model, task, ctx)
        masks = zero_masks(pred.module) if self.params.keep_zeros else {}
        if not masks:
            return pred

        def save(directory: Path) -> Path:
            folder = Path(directory) / "model"
            folder.mkdir(parents=True, exist_ok=True)
            save_sparse(pred.module, masks, folder)
            return folder

        return CompressedTorchPredictor(pred.module, device=pred.device, precision=pred.precision,
                                        info=dict(getattr(pred, "info", {})), save_fn=save)


@harness.hookimpl
def register_compressions(register):
    register(Finetune)


__all__ = ["Finetune"]
