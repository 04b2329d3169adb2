"""``layer-drop``: keep the first ``keep`` encoder layers (no retraining by itself).

A ``harness.Transform``: a torch model in, a torch model out. The core caches what
``transform`` returns, so it can be a compression of its own (``apply`` runs the cached result
on eager PyTorch) or any step of a chain, e.g. ``[layer-drop, finetune, dynamic-int8]``.
"""

from __future__ import annotations

import dataclasses

import harness


class LayerDrop(harness.Transform):
    """Keep only the first ``keep`` transformer layers of the encoder."""

    name, version = "layer-drop", "2"
    description = "keep the first `keep` encoder layers (a transform: chains can recover it)"

    def __init__(self, *, keep: int = 1) -> None:
        if keep < 1:
            raise ValueError("layer-drop: keep must be >= 1")
        self.keep = keep

    def transform(self, model: harness.LoadedModel, task: harness.Task,
                  ctx: harness.CellContext) -> harness.LoadedModel:
        module = model.module  # the core hands each step its own copy
        encoder = module.base_model.encoder
        kept = list(encoder.layer)[: self.keep]
        encoder.layer = type(encoder.layer)(kept)
        module.config.num_hidden_layers = len(kept)
        return dataclasses.replace(model, info={**model.info, "layers_kept": len(kept)})
