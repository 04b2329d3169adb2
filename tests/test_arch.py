"""plugins/_lib/arch.py: the structure of an encoder found from its module tree, shapes and a probe
forward pass, on tiny random configs of seven transformers families x both head kinds: every role
found with the right shapes, the layer-count field, dropping a block then rebuilding from the
saved config (same structure, equal logits), sharing blocks, and clear errors for what is not an
encoder."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    PretrainedConfig,
)

from harness.errors import PluginError
from harness_plugins._lib.arch import (
    UnsupportedModel,
    discover,
    keep_blocks,
    layer_count_field,
    linear,
    share_blocks,
)

H, I = 32, 64
COMMON = {"hidden_size": H, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": I}
FAMILIES = {
    "bert": COMMON,
    "distilbert": {"dim": H, "n_layers": 2, "n_heads": 2, "hidden_dim": I},
    "roberta": COMMON,
    # relative attention with separate position projections: two Linears with no role
    "deberta-v2": {**COMMON, "relative_attention": True, "pos_att_type": ["p2c", "c2p"],
                   "share_att_key": False, "position_buckets": 16},
    "albert": {**COMMON, "embedding_size": 16},
    "electra": {**COMMON, "embedding_size": 16},
    "mpnet": COMMON,
}
KINDS = {"token": AutoModelForTokenClassification, "sequence": AutoModelForSequenceClassification}
EXPECTED = {  # family: (stack path without the base prefix, layer-count field, embedding projection)
    "bert": ("encoder.layer", "num_hidden_layers", None),
    "distilbert": ("transformer.layer", "n_layers", None),
    "roberta": ("encoder.layer", "num_hidden_layers", None),
    "deberta-v2": ("encoder.layer", "num_hidden_layers", None),
    "albert": ("encoder.albert_layer_groups.0.albert_layers", "num_hidden_layers",
               "encoder.embedding_hidden_mapping_in"),
    "electra": ("encoder.layer", "num_hidden_layers", "embeddings_project"),
    "mpnet": ("encoder.layer", "num_hidden_layers", None),
}
CASES = [(f, k) for f in FAMILIES for k in KINDS]
SHAPES = {"query": (H, H), "key": (H, H), "value": (H, H), "attn_out": (H, H), "ffn_in": (I, H), "ffn_out": (H, I)}


def build(family: str, kind: str = "token", **over):
    torch.manual_seed(0)
    cfg = AutoConfig.for_model(family, **{**FAMILIES[family], **over}, vocab_size=300,
                               max_position_embeddings=64, num_labels=3)
    return KINDS[kind].from_config(cfg).eval()


def logits(module) -> torch.Tensor:
    ids = torch.arange(3, 23).reshape(2, 10)
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    with torch.no_grad():
        return module(input_ids=ids, attention_mask=mask).logits


@pytest.mark.parametrize(("family", "kind"), CASES)
def test_discover(family, kind):
    module = build(family, kind)
    s = discover(module)
    base = module.base_model_prefix
    stack, field, projection = EXPECTED[family]
    assert s.stack_path == f"{base}.{stack}"
    assert s.layer_count_field == field and s.layer_count == 2
    assert (s.hidden_size, s.intermediate_size) == (H, I)
    assert module.get_submodule(s.word_embeddings_path) is module.get_input_embeddings()
    assert s.embedding_projection_path == (f"{base}.{projection}" if projection else None)
    if family == "albert":  # one layer, run num_hidden_layers times
        assert (len(s.blocks), s.applied_times, s.shared) == (1, 2, True)
    else:
        assert (len(s.blocks), s.applied_times, s.shared, s.tied) == (2, 1, False, [])
    layers = module.get_submodule(s.stack_path)
    for b in s.blocks:
        assert set(b.linears) == set(SHAPES) and b.same_as is None
        assert module.get_submodule(b.path) is layers[b.index]
        for role, shape in SHAPES.items():
            lin = linear(module, s, b.index, role)
            assert isinstance(lin, torch.nn.Linear) and tuple(lin.weight.shape) == shape, (role, b.linears)
    assert len(s.linear_paths()) == 6 * len(s.blocks)
    assert len(s.linear_paths(("ffn_in", "ffn_out"))) == 2 * len(s.blocks)
    if family == "deberta-v2":
        assert s.blocks[0].others == ("attention.self.pos_key_proj", "attention.self.pos_query_proj")


def test_role_names_per_family():
    """The names found, one family each (they differ: nothing here comes from a name table)."""
    assert dict(discover(build("distilbert")).blocks[0].linears) == {
        "query": "attention.q_lin", "key": "attention.k_lin", "value": "attention.v_lin",
        "attn_out": "attention.out_lin", "ffn_in": "ffn.lin1", "ffn_out": "ffn.lin2"}
    assert dict(discover(build("mpnet")).blocks[0].linears) == {
        "query": "attention.attn.q", "key": "attention.attn.k", "value": "attention.attn.v",
        "attn_out": "attention.attn.o", "ffn_in": "intermediate.dense", "ffn_out": "output.dense"}
    assert dict(discover(build("albert")).blocks[0].linears) == {
        "query": "attention.query", "key": "attention.key", "value": "attention.value",
        "attn_out": "attention.dense", "ffn_in": "ffn", "ffn_out": "ffn_output"}
    assert dict(discover(build("deberta-v2")).blocks[0].linears) == {
        "query": "attention.self.query_proj", "key": "attention.self.key_proj",
        "value": "attention.self.value_proj", "attn_out": "attention.output.dense",
        "ffn_in": "intermediate.dense", "ffn_out": "output.dense"}


@pytest.mark.parametrize(("family", "kind"), CASES)
def test_drop_a_block_and_rebuild(family, kind, tmp_path):
    module = build(family, kind)
    s = keep_blocks(module, discover(module), [1])
    assert s.layer_count == 1 and getattr(module.config, s.layer_count_field) == 1
    assert len(module.get_submodule(s.stack_path)) == 1
    expected = logits(module)
    module.save_pretrained(tmp_path)
    reloaded = KINDS[kind].from_pretrained(tmp_path).eval()
    assert discover(reloaded) == s
    torch.testing.assert_close(logits(reloaded), expected, rtol=0, atol=1e-6)
    rebuilt = KINDS[kind].from_config(AutoConfig.from_pretrained(tmp_path))
    assert discover(rebuilt) == s
    rebuilt.load_state_dict(module.state_dict())
    torch.testing.assert_close(logits(rebuilt.eval()), expected, rtol=0, atol=1e-6)


def test_keep_blocks_renumbers_and_validates():
    module = build("bert", num_hidden_layers=3)
    kept = module.bert.encoder.layer[2]
    s = keep_blocks(module, discover(module), [2, 0])  # order does not matter: kept in stack order
    assert module.bert.encoder.layer[1] is kept and s.layer_count == 2
    assert {m.layer_idx for m in kept.modules() if hasattr(m, "layer_idx")} == {1}  # as a rebuild numbers it
    for bad in ([], [3], [-1]):
        with pytest.raises(ValueError, match="distill: keep must name some of 0..1"):
            keep_blocks(module, s, bad, plugin="distill")


@pytest.mark.parametrize("family", [f for f in FAMILIES if f != "albert"])
def test_share_blocks(family):
    module = build(family, num_hidden_layers=3) if family != "distilbert" else build(family, n_layers=3)
    before = sum(p.numel() for p in module.parameters())
    s = discover(module)
    b0, b1 = (module.get_submodule(s.stack_path)[i].state_dict() for i in (0, 1))
    mean = {k: (b0[k] + b1[k]) / 2 for k in b0 if b0[k].is_floating_point()}
    shared = share_blocks(module, s, [[0, 1], [2]], init="mean")
    layers = module.get_submodule(s.stack_path)
    assert layers[0] is layers[1] and layers[2] is not layers[0]
    assert shared.shared and shared.tied == [[0, 1]] and shared.applied_times == 1
    assert [b.same_as for b in shared.blocks] == [None, 0, None]
    assert len(shared.linear_paths()) == 12 and shared.layer_count == 3
    for k, v in layers[0].state_dict().items():
        if k in mean:
            torch.testing.assert_close(v, mean[k])
    assert sum(p.numel() for p in module.parameters()) < before  # parameters() counts a tied block once
    out = logits(module.eval())
    assert out.shape[-1] == 3 and torch.isfinite(out).all()
    assert discover(module) == shared
    with pytest.raises(UnsupportedModel, match="share-layers: .*already shared .*tied blocks \\[\\[0, 1\\]\\]"):
        share_blocks(module, shared, [[1, 2]], plugin="share-layers")


def test_share_validates():
    module = build("bert")
    s = discover(module)
    for bad in ([[0, 0]], [[0, 2]], [[0], [0, 1]]):
        with pytest.raises(ValueError, match="groups must name distinct blocks of 0..1"):
            share_blocks(module, s, bad)
    with pytest.raises(ValueError, match="init must be"):
        share_blocks(module, s, [[0, 1]], init="median")


@pytest.mark.parametrize("kind", KINDS)
def test_albert_is_already_shared(kind):
    module = build("albert", kind)
    s = discover(module)
    with pytest.raises(UnsupportedModel, match="share-layers: AlbertFor.*already shared .*one block applied 2 times"):
        share_blocks(module, s, [[0, 1]], plugin="share-layers")
    out = logits(module)
    assert out.shape[0] == 2 and torch.isfinite(out).all()
    deeper = keep_blocks(module, s, [0])  # ALBERT drops applications of its one layer: config only
    assert deeper.applied_times == 1 and not deeper.shared and module.config.num_hidden_layers == 1
    assert not torch.equal(logits(module), out)


def test_albert_layer_groups():
    """Two groups of one layer each, run twice each: the groups are the blocks."""
    module = build("albert", num_hidden_layers=4, num_hidden_groups=2)
    s = discover(module)
    assert s.stack_path == "albert.encoder.albert_layer_groups" and len(s.blocks) == 2
    assert (s.applied_times, s.layer_count, s.layer_count_field) == (2, 4, "num_hidden_layers")
    assert s.blocks[0].linears["ffn_in"] == "albert_layers.0.ffn"
    with pytest.raises(UnsupportedModel, match="several blocks each applied several times"):
        keep_blocks(module, s, [0, 1])
    inner = build("albert", inner_group_num=2)  # 2 layers in one group, run twice: 4 applications
    with pytest.raises(UnsupportedModel, match="no single integer config field equals its 4 block applications"):
        discover(inner)


def test_fused_qkv():
    """DeBERTa (v1) projects q, k, v with one Linear H -> 3H."""
    module = build_any("deberta", **COMMON)
    s = discover(module)
    assert dict(s.blocks[0].linears) == {"qkv": "attention.self.in_proj", "attn_out": "attention.output.dense",
                                         "ffn_in": "intermediate.dense", "ffn_out": "output.dense"}
    assert tuple(linear(module, s, 0, "qkv").weight.shape) == (3 * H, H)


def build_any(family: str, **kw):
    cfg = AutoConfig.for_model(family, **kw, vocab_size=300, max_position_embeddings=64, num_labels=3)
    return AutoModelForTokenClassification.from_config(cfg).eval()


class Blocks(torch.nn.Module):
    def __init__(self, attention: bool):
        super().__init__()
        self.embed = torch.nn.Embedding(50, 8)
        self.config = PretrainedConfig(num_layers=2)

        def block():
            att = [torch.nn.Linear(8, 8) for _ in range(4)] if attention else []
            return torch.nn.Sequential(*att, torch.nn.Linear(8, 16), torch.nn.Linear(16, 8))
        self.layers = torch.nn.ModuleList([block(), block()])

    def get_input_embeddings(self):
        return self.embed

    def forward(self, input_ids):
        x = self.embed(input_ids)
        for layer in self.layers:
            x = x + layer(x)
        return x


def test_unsupported_models_say_what_is_missing():
    assert issubclass(UnsupportedModel, PluginError)
    with pytest.raises(UnsupportedModel, match="low-rank: Sequential: no stack of repeated transformer blocks"):
        discover(torch.nn.Sequential(torch.nn.Linear(4, 4)), plugin="low-rank")
    with pytest.raises(UnsupportedModel, match="Blocks: no query/key/value, attn_out Linear found in the blocks of layers"):
        discover(Blocks(attention=False))
    s = discover(Blocks(attention=True))  # a flat block: attention found by shape, no sub-module
    assert dict(s.blocks[0].linears) == {"query": "0", "key": "1", "value": "2", "attn_out": "3",
                                         "ffn_in": "4", "ffn_out": "5"}
    assert s.layer_count_field == "num_layers" and s.word_embeddings_path == "embed"


def test_layer_count_field():
    assert layer_count_field(AutoConfig.for_model("bert", **COMMON), 2) == "num_hidden_layers"  # heads are 2 too
    assert layer_count_field(AutoConfig.for_model("distilbert", **FAMILIES["distilbert"]), 2) == "n_layers"
    assert layer_count_field(PretrainedConfig(depth=5), 5) == "depth"
    assert layer_count_field(PretrainedConfig(depth=5, width=5), 5) is None
