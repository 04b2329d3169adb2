"""``layer-drop``: keep the first ``keep`` encoder layers (no retraining by itself).

A ``harness.Transform``: a torch model in, a torch model out. The core caches what
``transform`` returns, so it can be a compression of its own (``apply`` runs the cached result
on eager PyTorch) or any step of a chain, e.g. ``[layer-drop, finetune, dynamic-int8]``. The
cache holds tensors only: since the output has fewer layers than the input, ``load_output``
rebuilds that structure before the tensors are loaded.
"""

from __future__ import annotations

import dataclasses

from pydantic import Field

import harness


class LayerDrop(harness.Transform):
    """Keep only the first ``keep`` transformer layers of the encoder."""

    name, version = "layer-drop", "2"
    description = "keep the first `keep` encoder layers (a transform: chains can recover it)"

    class Params(harness.Params):
        keep: int = Field(1, ge=1)
        """How many of the encoder's first layers are kept."""

    params: Params

    def _drop(self, module) -> int:
        """Keep the first ``keep`` layers of ``module`` (in place); the count kept."""
        encoder = module.base_model.encoder
        kept = list(encoder.layer)[: self.params.keep]
        encoder.layer = type(encoder.layer)(kept)
        module.config.num_hidden_layers = len(kept)
        return len(kept)

    def transform(self, model: harness.LoadedModel, task: harness.Task,
                  ctx: harness.CellContext) -> harness.LoadedModel:
        kept = self._drop(model.module)  # the core hands each step its own copy
        return dataclasses.replace(model, info={**model.info, "layers_kept": kept})

    def load_output(self, model: harness.LoadedModel, folder):
        """The cached output: the structure rebuilt as ``transform`` makes it (from the input
        model and ``keep``), the saved tensors loaded into it. Only tensors come from the cache;
        never a class or code named there."""
        import copy

        from harness.toolkit import load_tensors

        module = copy.deepcopy(model.module)
        self._drop(module)
        return load_tensors(module, folder / "model.safetensors")
