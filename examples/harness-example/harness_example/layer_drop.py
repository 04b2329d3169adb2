"""``layer-drop``: keep the first ``keep`` encoder layers (no retraining). Cached like the
built-in compressions, with the public toolkit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import harness
from harness.toolkit import TorchPredictor, base_info, cached_or_build, copy_artifact


class LayerDropPredictor(TorchPredictor):
    """The truncated model on eager PyTorch; its artifact is the cached folder."""

    def __init__(self, module: Any, device: str, artifact: Path, info: dict[str, Any]) -> None:
        super().__init__(module, device=device)
        self.artifact, self.info = artifact, info

    def save(self, directory: Path) -> Path:
        return copy_artifact(self.artifact, directory)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), **self.info}


class LayerDrop(harness.Compression):
    """Keep only the first ``keep`` transformer layers of the encoder."""

    name, version = "layer-drop", "1"
    description = "keep the first `keep` encoder layers (no retraining)"

    def __init__(self, *, keep: int = 1) -> None:
        if keep < 1:
            raise ValueError("layer-drop: keep must be >= 1")
        self.keep = keep

    def apply(self, model: harness.LoadedModel, task: harness.Task,
              ctx: harness.CellContext) -> harness.Predictor:
        def build(folder: Path) -> dict[str, Any]:
            module = model.module  # the core hands each compression its own copy
            encoder = module.base_model.encoder
            kept = list(encoder.layer)[: self.keep]
            encoder.layer = type(encoder.layer)(kept)
            module.config.num_hidden_layers = len(kept)
            module.save_pretrained(folder)
            return {"layers_kept": len(kept)}

        folder, meta, hit = cached_or_build(ctx, model, self, build)
        module = type(model.module).from_pretrained(folder / "model")
        info = {**base_info(self, "torch", meta, hit), "layers_kept": meta["layers_kept"]}
        return LayerDropPredictor(module, ctx.device, folder / "model", info)
