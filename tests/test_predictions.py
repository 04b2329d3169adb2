"""Per-example outputs (issue 18 parts 1-2): a real run saves every cell's predictions,
``harness.load_predictions`` reads them, and ``harness compare`` runs paired tests on them
(McNemar for accuracy, paired bootstrap over sentences for entity F1)."""

from __future__ import annotations

import json
import shutil
from io import StringIO
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import harness
from harness.cli import compare_command
from harness.errors import DataError, PluginError, SuiteError
from harness.gate import run_gate
from harness.gate.paired import mcnemar_p
from harness.predictions import check_table, read_predictions, write_predictions
from harness.results import RESULTS_FILE
from harness.runner import RunOptions, run_suite
from harness.suite import suite_from_dict
from harness.testing import FAST_SETTINGS, TINY_BERT, make_plugin_manager
from harness_plugins.tasks.ner import NERTask, paired_scorer

ROOT = Path(__file__).resolve().parents[1]
CONLL = ROOT / "suites" / "data" / "conll2003-sample"
SST2 = ROOT / "suites" / "data" / "sst2-sample"
TASKS = [
    {"plugin": "ner", "name": "conll", "params": {
        "data_dir": str(CONLL), "max_train_samples": 400, "batch_size": 16, "bootstrap": 0}},
    {"plugin": "classification", "name": "sst2", "params": {
        "format": "sst2", "data_dir": str(SST2), "max_train_samples": 400, "batch_size": 16,
        "bootstrap": 0}},
]
MODEL = {"plugin": "hf", "name": "tiny", "params": TINY_BERT}


def _run(tmp: Path, out: Path, **settings) -> Path:
    doc = {"name": "preds", "settings": {**FAST_SETTINGS, "cache_dir": str(tmp / "cache"),
                                         **settings},
           "models": [MODEL], "tasks": TASKS, "compressions": ["none"]}
    suite = suite_from_dict(doc, tmp / "suite.yaml")
    run_suite(suite, make_plugin_manager(), out, RunOptions(jobs=0, show_progress=False))
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("preds")
    return _run(tmp, tmp / "base")


def _value(run: Path, task: str, metric: str) -> float:
    df = harness.load_results(run)
    return float(df[(df.task == task) & (df.metric == metric)].value.iloc[0])


def test_run_saves_predictions_that_reproduce_the_metrics(run):
    files = sorted(p.name for p in (run / "predictions").iterdir())
    assert files == ["tiny__conll__none.parquet", "tiny__sst2__none.parquet"]
    ner = harness.load_predictions(run, "tiny/conll/none")
    task = NERTask(data_dir=str(CONLL))
    assert len(ner) == len(task.sentences("test")) > 500  # every sentence of the test split
    assert [list(g) for g in ner.gold] == [s.tags for s in task.sentences("test")]
    assert ner.attrs["kind"] == "sequence-labels" and ner.attrs["metric"] == "entity_f1"
    assert ner.attrs["data_hash"] and ner.attrs["split"] == "test"
    # keyed by the examples scored, not the task's train data: runs that trained on other
    # data (a changed max_train_samples) are still paired on the same test sentences
    assert ner.attrs["data_hash"] == f"{task.split_hash('test')}:None"
    assert all(len(g) == len(p) for g, p in zip(ner.gold, ner.pred))
    counts, f1 = paired_scorer(list(ner.gold), list(ner.pred))
    assert f1(counts) == pytest.approx(_value(run, "conll", "entity_f1"))
    clf = harness.load_predictions(run, "tiny/sst2/none")
    assert len(clf) == 872 and clf.attrs["kind"] == "per-example-label"
    assert (clf.gold == clf.pred).mean() == pytest.approx(_value(run, "sst2", "accuracy"))
    assert clf.prob.between(0.5, 1.0).all()
    rows = harness.load_results(run)
    assert set(rows[rows.task == "sst2"].predictions) == {"predictions/tiny__sst2__none.parquet"}


def test_cached_cells_restore_their_predictions(run, tmp_path):
    again = _run(run.parent, tmp_path / "again")  # same cache folder: every cell is a cache hit
    assert harness.load_results(again).cached.all()
    a = harness.load_predictions(again, "tiny/sst2/none")
    b = harness.load_predictions(run, "tiny/sst2/none")
    assert a.pred.tolist() == b.pred.tolist()


def _copy_with(run: Path, dest: Path, cell: str, edit) -> Path:
    """A copy of ``run`` whose ``cell`` predictions are edited by ``edit(df) -> df``, the
    cell's main metric row rewritten to match (as if the current run had predicted them)."""
    shutil.copytree(run, dest)
    model, task, comp = cell.split("/")
    f = dest / "predictions" / f"{model}__{task}__{comp}.parquet"
    df = read_predictions(f)
    meta = dict(df.attrs)
    df = edit(df.copy())
    if meta["kind"] == "per-example-label":
        value = float((df.gold == df.pred).mean())
    else:
        counts, f1 = paired_scorer(list(df.gold), list(df.pred))
        value = float(f1(counts))
    write_predictions(f, df, meta)
    lines = []
    for line in (dest / RESULTS_FILE).read_text().splitlines():
        row = json.loads(line)
        if row["task"] == task and row["metric"] == meta["metric"]:
            row["value"] = value
        lines.append(json.dumps(row))
    (dest / RESULTS_FILE).write_text("\n".join(lines) + "\n")
    for other in dest.glob("results.*"):
        if other.name != RESULTS_FILE:
            other.unlink()
    return dest


def _gate(base: Path, cur: Path, **th) -> tuple[int, dict]:
    js = cur.parent / f"{cur.name}.gate.json"
    code = run_gate(base, cur, th or None, json_path=js, out=StringIO())
    return code, json.loads(js.read_text())


def _finding(report: dict, task: str, metric: str) -> dict:
    return next(f for f in report["findings"] if f["task"] == task and f["metric"] == metric)


def test_same_predictions_are_not_flagged(run, tmp_path):
    same = _copy_with(run, tmp_path / "same", "tiny/sst2/none", lambda df: df)
    code, rep = _gate(run, same, accuracy_gate_on="significance")
    assert code == 0
    for task, metric, test in (("sst2", "accuracy", "McNemar"),
                               ("conll", "entity_f1", "paired bootstrap")):
        f = _finding(rep, task, metric)
        assert f["status"] == "pass" and f["test"] == test and f["p_value"] == 1.0


def test_flipping_one_percent_of_labels_is_detected(run, tmp_path):
    """1% of SST-2's 872 validation predictions (9 examples the baseline got right) flipped to
    the other label: the exact McNemar test finds it (p = 2 * 0.5**9 = 0.004)."""
    def flip(df):
        right = df.index[df.gold == df.pred][:9]
        a, b = sorted(set(df.gold))
        df.loc[right, "pred"] = [b if p == a else a for p in df.loc[right, "pred"]]
        return df

    cur = _copy_with(run, tmp_path / "flipped", "tiny/sst2/none", flip)
    code, rep = _gate(run, cur, accuracy_drop=0.005)
    f = _finding(rep, "sst2", "accuracy")
    assert f["test"] == "McNemar" and f["p_value"] == pytest.approx(mcnemar_p(9, 0))
    assert f["status"] == "regression" and code == 1
    assert f["ci_high"] < 0 and "significant" in f["message"]
    # gating on significance alone: the verdict does not depend on the drop limit
    code, rep = _gate(run, cur, accuracy_drop=0.5, accuracy_gate_on="significance")
    assert code == 1
    code, rep = _gate(run, cur, accuracy_drop=0.5)  # significant but within the limit: passes
    f = _finding(rep, "sst2", "accuracy")
    assert code == 0 and f["status"] == "pass" and f["p_value"] < 0.05
    # the command line: --gate-on significance and --significance (alpha)
    r = CliRunner().invoke(compare_command, [str(run), str(cur), "--gate-on", "significance"])
    assert r.exit_code == 1 and "McNemar over 872 examples" in r.output, r.output
    r = CliRunner().invoke(compare_command, [str(run), str(cur), "--gate-on", "significance",
                                             "--significance", "0.001"])
    assert r.exit_code == 0, r.output


def test_flipping_one_percent_of_sentences_is_detected(run, tmp_path):
    """The runs differ in 1% of the 569 test sentences (6 with gold entities): the baseline
    predicted them right, the current run predicts what the real tiny model predicted. (The
    tiny model finds few entities, so the baseline is the real run with these 6 sentences
    right, and the current run is the real run as is.) The paired bootstrap over sentences
    finds the drop of entity F1; the same predictions against themselves do not."""
    def fix(df):
        wrong = [i for i, (g, p) in enumerate(zip(df.gold, df.pred))
                 if any(t != "O" for t in g) and list(g) != list(p)][:6]
        assert len(wrong) == 6
        df["pred"] = [list(df.gold[i]) if i in wrong else list(p) for i, p in enumerate(df.pred)]
        return df

    base = _copy_with(run, tmp_path / "base", "tiny/conll/none", fix)
    cur = shutil.copytree(run, tmp_path / "cur")
    code, rep = _gate(base, cur, accuracy_gate_on="significance")
    f = _finding(rep, "conll", "entity_f1")
    assert f["test"] == "paired bootstrap" and f["p_value"] < 0.05
    assert f["status"] == "regression" and code == 1 and f["ci_high"] <= 0 < -f["delta"]


def test_without_predictions_compare_falls_back_and_says_so(tmp_path):
    off = _run(tmp_path, tmp_path / "off", save_predictions=False)
    assert not (off / "predictions").exists()
    with pytest.raises(DataError, match="no predictions for cell"):
        harness.load_predictions(off, "tiny/sst2/none")
    code, rep = _gate(off, off)
    f = _finding(rep, "sst2", "accuracy")
    assert f["test"] is None and "no per-example outputs" in f["message"]
    assert any("without a paired test" in n for n in rep["notes"])


def test_bad_values_are_named():
    with pytest.raises(SuiteError, match="settings.save_predictions"):
        suite_from_dict({"name": "x", "settings": {"save_predictions": "yes"}, "models": [MODEL],
                         "tasks": TASKS[:1], "compressions": ["none"]}, Path("s.yaml"))
    with pytest.raises(SuiteError, match="accuracy_gate_on"):
        run_gate(pd.DataFrame(), pd.DataFrame(), {"accuracy_gate_on": "maybe"}, out=StringIO())
    with pytest.raises(PluginError, match="needs column"):
        check_table(pd.DataFrame({"gold": [1]}), "per-example-label", "accuracy", None)
    with pytest.raises(PluginError, match="scorer"):
        check_table(pd.DataFrame({"example": [0], "gold": [["O"]], "pred": [["O"]]}),
                    "sequence-labels", "entity_f1", None)
    assert mcnemar_p(0, 0) == 1.0 and mcnemar_p(5, 5) == pytest.approx(1.0)
    assert np.isclose(mcnemar_p(9, 0), 2 * 0.5**9)
