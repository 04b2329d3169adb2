"""A third-party-style model plugin that subclasses the built-in ``hf`` and changes the
architecture after loading (keeps the first ``layers`` transformer layers): the core must not
hand it the full model's cached fine-tuned checkpoint (tests/test_cache_identity.py)."""

from __future__ import annotations

import harness
from harness_plugins.models.hf import HFModel


class TruncatedHF(HFModel):
    name = "hf-truncated"
    version = "1"
    description = "an hf encoder cut to its first `layers` transformer layers"

    def __init__(self, *, layers: int = 1, **params) -> None:
        super().__init__(**params)
        self.layers = layers

    def load(self, head, ctx):
        loaded = super().load(head, ctx)
        base = getattr(loaded.module, loaded.module.base_model_prefix)
        base.encoder.layer = base.encoder.layer[: self.layers]
        loaded.module.config.num_hidden_layers = self.layers
        return loaded


@harness.hookimpl
def register_models(register):
    register(TruncatedHF)
