"""The ``vocab-trim`` transform and the tokenizer hand-off: only the train split's word pieces (and
the specials) are kept, logits of kept words are unchanged, dropped pieces re-segment or become
[UNK], a BPE tokenizer is skipped with its reason, the cache restores the tokenizer, and chains
(-> dynamic-int8, -> onnx) are evaluated and timed with the new tokenizer. Tiny BERT (hidden 32)
with MiniLM's real WordPiece tokenizer, on small SST-2-format files written here."""

from __future__ import annotations

import copy
import dataclasses
import json
import warnings
from pathlib import Path

import pytest
import torch

from harness.api import CellContext, Head, LoadedModel
from harness.chain import TOKENIZER_DIR, run_transform
from harness.errors import HarnessWarning, ParameterError, Unsupported
from harness.testing import TINY_BERT
from harness_plugins.compressions.vocab_trim import VocabTrim
from harness_plugins.models.hf import HFModel
from harness_plugins.tasks.classification import ClassificationTask

#: every word is one MiniLM piece but "snowball" (snow ##ball); "plot" occurs once
TRAIN = [
    ("the movie was good", 1), ("the film was bad", 0), ("a very good film", 1),
    ("a very bad movie", 0), ("the story was fun", 1), ("the story was boring", 0),
    ("not a good movie", 0), ("a great film", 1), ("the cat was great fun", 1),
    ("my foot hurt and the snowball was bad", 0), ("the plot was not boring", 1),
    ("boring and bad", 0),
]
#: train words only: both models see exactly the same pieces
VALIDATION = [("the movie was great", 1), ("a boring film", 0), ("the story was not good", 0),
              ("a very fun movie", 1), ("the cat was bad", 0), ("good film", 1)]
#: "zebra" and "elephant" occur only in the evaluation split: they must not be kept
LEAKY = VALIDATION + [("the zebra was good", 1), ("an elephant film", 0)]
SPECIALS = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"}


def _write(folder: Path, validation: list[tuple[str, int]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train", TRAIN), ("validation", validation)):
        (folder / f"{name}.tsv").write_text("sentence\tlabel\n" + "".join(f"{s}\t{y}\n" for s, y in rows))
    return folder


def _task(folder: Path) -> ClassificationTask:
    return ClassificationTask(format="sst2", data_dir=str(folder), bootstrap=0)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return _write(tmp_path_factory.mktemp("vt") / "leaky", LEAKY)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory, data) -> LoadedModel:
    """The tiny BERT with a (random) head for the task, as the core hands it to a compression."""
    tmp = tmp_path_factory.mktemp("fit")
    ctx = CellContext(device="cpu", seed=0, cache_dir=tmp / "cache", work_dir=tmp, show_progress=False)
    model = HFModel(**TINY_BERT).load(_task(data).head(), ctx)
    model.module.eval()
    return dataclasses.replace(model, trained_for_task=True)


def _copy(model: LoadedModel) -> LoadedModel:
    return dataclasses.replace(model, module=copy.deepcopy(model.module), info=dict(model.info))


def _trim(fitted: LoadedModel, data: Path, ctx: CellContext, **params) -> LoadedModel:
    return VocabTrim(**params).transform(_copy(fitted), _task(data), ctx)


def _pieces(tokenizer, sentences) -> set[str]:
    return {p for s in sentences for p in tokenizer.convert_ids_to_tokens(tokenizer(s)["input_ids"])}


def test_keeps_exactly_the_train_pieces_and_the_specials(fitted, data, ctx):
    out = _trim(fitted, data, ctx)
    old, new = fitted.tokenizer, out.tokenizer
    vocab = new.get_vocab()
    assert set(vocab) == _pieces(old, [s for s, _ in TRAIN]) | SPECIALS
    assert "zebra" not in vocab and "elephant" not in vocab  # evaluation-only words: dropped
    assert "zebra" in old.get_vocab() and len(old) == 30522 and old is fitted.tokenizer  # untouched
    # renumbered in old-id order: [PAD] stays 0, and the order of every piece is kept
    assert new.pad_token_id == 0 and sorted(vocab, key=vocab.get) == sorted(vocab, key=old.get_vocab().get)
    assert new.convert_ids_to_tokens([new.cls_token_id, new.sep_token_id, new.unk_token_id]) == [
        "[CLS]", "[SEP]", "[UNK]"]
    assert new.model_input_names == old.model_input_names and new.model_max_length == old.model_max_length
    emb = out.module.get_input_embeddings()
    assert emb.num_embeddings == len(new) == out.module.config.vocab_size == out.info["vocab_kept"] < 60
    assert out.info["vocab_before"] == 30522 and out.info["params_vs_source"] < 0.2
    # each kept row is the old row of its piece
    old_rows = fitted.module.get_input_embeddings().weight
    for piece in ("movie", "##ball", "[CLS]"):
        assert torch.equal(emb.weight[vocab[piece]], old_rows[old.get_vocab()[piece]])


def test_min_count_and_keep_tokens(fitted, data, ctx):
    out = _trim(fitted, data, ctx, min_count=2, keep_tokens=["zebra"])
    vocab = out.tokenizer.get_vocab()
    assert "plot" not in vocab and "movie" in vocab  # once vs. three times in train
    assert "zebra" in vocab and SPECIALS <= set(vocab)
    with pytest.raises(ParameterError, match="not in the tokenizer's vocabulary"):
        _trim(fitted, data, ctx, keep_tokens=["no-such-piece"])


def test_logits_of_a_sentence_whose_pieces_were_kept_are_unchanged(fitted, data, ctx):
    out = _trim(fitted, data, ctx)
    out.module.eval()
    sentences = ["the story was not good", "my foot hurt and the snowball was bad"]
    a = fitted.tokenizer(sentences, padding=True, return_tensors="pt")
    b = out.tokenizer(sentences, padding=True, return_tensors="pt")
    assert b["input_ids"].max() < 60 and torch.equal(a["attention_mask"], b["attention_mask"])
    with torch.inference_mode():
        ref, got = fitted.module(**a).logits, out.module(**b).logits
        with pytest.raises(IndexError):  # the old ids do not fit: a phase using them would fail
            out.module(**a)
    assert torch.allclose(ref, got, atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", ["bert", "distilbert", "roberta", "deberta-v2", "albert", "electra", "mpnet"])
def test_every_family_gives_the_same_token_logits_on_train_sentences(family, ctx, repo_root):
    """The architecture matrix's tiny encoders on its CoNLL sample: padded batches of training
    sentences (RoBERTa and MPNet derive positions from the pad id) give the same logits."""
    import importlib.util

    from harness.toolkit import pad_batch
    from harness_plugins.tasks.ner import NERTask

    spec = importlib.util.spec_from_file_location("arch_support", repo_root / "scripts" / "arch_support.py")
    arch = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(arch)  # type: ignore[union-attr]
    task = NERTask(**arch.TASKS[1]["params"])
    model = HFModel(config=arch.FAMILIES[family], tokenizer_package=arch.TOKENIZER).load(
        Head("token-classification", task.head().labels), ctx)
    model.module.eval()
    out = VocabTrim().transform(_copy(model), task, ctx)
    out.module.eval()
    assert out.module.get_input_embeddings().num_embeddings == len(out.tokenizer) < 300

    def padded(m: LoadedModel):  # the same training sentences, tokenised for m, in one batch
        return pad_batch([{"input_ids": b["input_ids"][0].tolist()} for b in task.calibration_batches(m, 6, 0)],
                         m.tokenizer)

    a, b = padded(model), padded(out)
    assert (a["attention_mask"] == 0).any() and torch.equal(a["attention_mask"], b["attention_mask"])
    with torch.inference_mode():
        assert torch.allclose(model.module(**a).logits, out.module(**b).logits, atol=1e-5, rtol=0)


def test_dropped_pieces_are_resegmented_or_unknown(fitted, data, ctx):
    new = _trim(fitted, data, ctx).tokenizer
    old = fitted.tokenizer
    assert old.tokenize("football") == ["football"] and old.tokenize("cats") == ["cats"]
    # re-segmented with kept pieces ("foot", and "##ball" from "snowball") ...
    assert new.tokenize("football") == ["foot", "##ball"]
    # ... or, when some position matches no kept piece ("cat" kept, "##s" not), one [UNK]
    assert new.tokenize("cats") == ["[UNK]"] and new.tokenize("zebra") == ["[UNK]"]
    assert new.tokenize("the zebra was good") == ["the", "[UNK]", "was", "good"]
    # keep_characters: unseen words are spelt in kept pieces instead
    spelt = _trim(fitted, data, ctx, keep_characters=True).tokenizer
    assert "[UNK]" not in spelt.tokenize("zebra cats") and len(spelt) > 1500


def test_a_bpe_tokenizer_is_skipped_with_its_reason(fitted, data, ctx):
    from tokenizers import Tokenizer
    from tokenizers.models import BPE
    from tokenizers.pre_tokenizers import Whitespace
    from transformers import PreTrainedTokenizerFast

    from harness.cell import _failed, _Step

    vocab = {"<unk>": 0, "<pad>": 1, "t": 2, "h": 3, "e": 4, "th": 5, "the": 6}
    backend = Tokenizer(BPE(vocab, [("t", "h"), ("th", "e")], unk_token="<unk>"))
    backend.pre_tokenizer = Whitespace()
    bpe = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>")
    assert bpe.tokenize("the") == ["the"]
    with pytest.raises(Unsupported, match="BPE") as err:
        VocabTrim().transform(dataclasses.replace(_copy(fitted), tokenizer=bpe), _task(data), ctx)
    outcome = _failed(err.value, _Step("compress"), {})
    assert outcome.status == "skipped" and "only WordPiece" in str(outcome.error)


def test_a_task_without_training_features_is_skipped(fitted, ctx):
    from tiny_tasks import TinySST2

    with pytest.raises(Unsupported, match="no training features"):
        VocabTrim().transform(_copy(fitted), TinySST2([("a film", 1)] * 40, fitted.tokenizer), ctx)


def test_the_cache_restores_the_tokenizer_and_rebuilds_a_corrupt_one(fitted, data, ctx):
    task = _task(data)
    first, rec1 = run_transform(VocabTrim(), _copy(fitted), task, ctx)
    second, rec2 = run_transform(VocabTrim(), _copy(fitted), task, ctx)
    assert not rec1["cache_hit"] and rec2["cache_hit"] and first.identity == second.identity
    assert second.tokenizer is not first.tokenizer and type(second.tokenizer) is type(fitted.tokenizer)
    assert second.tokenizer.get_vocab() == first.tokenizer.get_vocab()
    assert second.tokenizer("the cat was fun")["input_ids"] == first.tokenizer("the cat was fun")["input_ids"]
    assert torch.equal(second.module.get_input_embeddings().weight, first.module.get_input_embeddings().weight)
    entry = next((ctx.cache_dir / "transform").glob("vocab-trim*")) / "model"
    files = sorted(p.name for p in (entry / TOKENIZER_DIR).iterdir())
    assert files and all(f.endswith(".json") for f in files), files  # data, never a pickle
    # a tokenizer with more ids than the saved embedding rows does not fit: the entry is rebuilt
    path = entry / TOKENIZER_DIR / "tokenizer.json"
    full = json.loads(fitted.tokenizer.backend_tokenizer.to_str())
    path.write_text(json.dumps(full))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        third, rec3 = run_transform(VocabTrim(), _copy(fitted), task, ctx)
    assert not rec3["cache_hit"] and any(issubclass(w.category, HarnessWarning) for w in caught)
    assert len(third.tokenizer) == len(first.tokenizer)


def test_a_transform_that_keeps_the_tokenizer_saves_none(fitted, data, ctx):
    from harness_plugins.compressions.prune import Prune

    out, _ = run_transform(Prune(sparsity=0.5), _copy(fitted), _task(data), ctx)
    assert out.tokenizer is fitted.tokenizer
    entry = next((ctx.cache_dir / "transform").glob("prune*")) / "model"
    assert not (entry / TOKENIZER_DIR).exists()


@pytest.mark.slow
def test_chains_evaluate_and_time_with_the_new_tokenizer(run_suite_dict, tmp_path):
    """An evaluation or timing batch tokenised with the old tokenizer would index rows the trimmed
    table no longer has (ids up to 30521 into ~50 rows) and fail the cell: every cell ``ok``
    means every phase used the new one; the metrics equal the untrimmed model's."""
    folder = _write(tmp_path / "data", VALIDATION)
    task = {"plugin": "classification", "name": "sst2", "params": {
        "format": "sst2", "data_dir": str(folder), "bootstrap": 0, "batch_size": 4, "epochs": 1}}
    doc = {"models": [{"plugin": "hf", "name": "tiny", "params": TINY_BERT}], "tasks": [task],
           "compressions": ["none", "vocab-trim", "dynamic-int8", "onnx",
                            {"name": "vt-int8", "chain": ["vocab-trim", "dynamic-int8"]},
                            {"name": "vt-onnx", "chain": ["vocab-trim", "onnx"]},
                            {"name": "vt-static", "chain": ["vocab-trim", {
                                "plugin": "ort-static-int8", "params": {"samples": 4}}]}]}
    df = run_suite_dict(doc)
    assert set(df.status) == {"ok"}, df[["compression", "error"]].drop_duplicates()
    value = df.set_index(["compression", "metric"]).value
    for trimmed, base in (("vocab-trim", "none"), ("vt-int8", "dynamic-int8"), ("vt-onnx", "onnx")):
        assert value[trimmed, "accuracy"] == value[base, "accuracy"]
        assert value[trimmed, "parameters"] < value[base, "parameters"]
        assert value[trimmed, "size_bytes"] < value[base, "size_bytes"]
    cells = df.drop_duplicates("compression").set_index("compression")
    assert cells.vocab_kept["vocab-trim"] < 60 and cells.max_abs_diff_vs_torch["vt-onnx"] <= 1e-4
    steps = json.loads(cells.chain_steps["vt-int8"])
    assert steps[0]["info"]["vocab_kept"] == cells.vocab_kept["vocab-trim"]
    # a forced re-run finds every vocab-trim output in the transform cache: same results
    again = run_suite_dict(doc, out=tmp_path / "again", force=True)
    assert set(again.status) == {"ok"}
    redo = again.drop_duplicates("compression").set_index("compression")
    assert all(json.loads(redo.chain_steps[c])[0]["cache_hit"] for c in ("vt-int8", "vt-onnx", "vt-static"))
    assert bool(redo.cache_hit["vocab-trim"])
    got = again.set_index(["compression", "metric"]).value
    for c in ("vocab-trim", "vt-int8", "vt-onnx", "vt-static"):
        assert got[c, "accuracy"] == value[c, "accuracy"] and got[c, "parameters"] == value[c, "parameters"]


def test_the_artifact_loads_as_a_normal_smaller_model(fitted, data, ctx, tmp_path):
    import transformers as tf

    from harness.chain import transform_predictor

    pred = transform_predictor(VocabTrim(), _copy(fitted), _task(data), ctx)
    assert pred.tokenizer is not None and len(pred.tokenizer) < 60
    folder = pred.save(tmp_path / "artifact")
    model = tf.AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = tf.AutoTokenizer.from_pretrained(folder)
    assert model.config.vocab_size == len(tokenizer) == len(pred.tokenizer)
    batch = tokenizer(["the movie was good"], return_tensors="pt")
    with torch.inference_mode():
        assert torch.allclose(model(**batch).logits, pred(batch), atol=1e-5)
