"""Names that become paths (issue 24 item 5): every file or folder name derived from a model,
task, compression, suite or plugin name goes through ``harness.fsutil.safe_name`` (bounded,
deterministic, no separators), so a 300-character or ``../`` name neither crashes a run nor
writes outside its folder. Also item 7: an entity type the train split never has is one console
line of ``harness run``, from a worker process too."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

import harness
from harness.cli import main
from harness.fsutil import SAFE_NAME_LEN, safe_name
from harness.predictions import PREDICTIONS_DIR, file_name, find, write_predictions
from harness.runner import RunOptions, run_suite
from harness.suite import suite_from_dict
from harness.testing import FAST_SETTINGS, TINY_BERT, make_plugin_manager

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "suites" / "data" / "conll2003-sample"
NER = {"plugin": "ner", "name": "conll", "params": {
    "data_dir": str(SAMPLE), "max_train_samples": 16, "max_eval_samples": 16, "batch_size": 8,
    "bootstrap": 0}}
MODEL = {"plugin": "hf", "name": "tiny", "params": TINY_BERT}

LONG_TASK = "t" * 300
ODD_TASK = "../a/b\\c\x00/..//задача ✓"
LONG_COMP = "int8-" + "x" * 295


def _unsafe(name: str) -> list[str]:
    """What makes ``name`` unfit as one file name inside a folder (empty: nothing)."""
    bad = [c for c in ("/", "\\", "\x00", "..") if c in name]
    bad += ["leading dot"] if name.startswith(".") else []
    bad += ["empty"] if not name else []
    bad += ["too long"] if len(name.encode()) > SAFE_NAME_LEN else []
    return bad


# ---------------------------------------------------------------------------------------------
# safe_name


def test_short_safe_names_are_kept_as_they_are():
    for name in ("tiny", "conll", "none", "ort-int8", "nncf-ptq", "prune50-ft-int8", "v1.2",
                 "MiniLM_L6", "x" * SAFE_NAME_LEN):
        assert safe_name(name) == name


def test_any_name_is_bounded_deterministic_and_has_no_separator(tmp_path):
    rng = random.Random(0)
    alphabet = "ab/\\.\x00 -_é✓задача模型😀:*?\"<>|"
    names = ["", ".", "..", "...", "../../../escaped", "/etc/passwd", "C:\\x", "a/../b", "CON",
             "nul.txt", "-rf", " ", "é" * 300, "😀" * 100, "x" * 300, LONG_TASK, ODD_TASK,
             *("".join(rng.choice(alphabet) for _ in range(rng.randint(1, 400)))
               for _ in range(300))]
    for name in names:
        out = safe_name(name)
        assert not _unsafe(out), (name, out, _unsafe(out))
        assert out not in (".", "..") and out.isascii()
        assert safe_name(name) == out  # deterministic
        assert (tmp_path / out).resolve().parent == tmp_path.resolve()  # stays in its folder
    # every one is a name the file system takes (the 300-character ones included)
    for out in {safe_name(n) for n in names}:
        (tmp_path / out).mkdir()
    for n in (20, 40):
        assert all(len(safe_name(name, max_len=n)) <= n for name in names)
    with pytest.raises(ValueError, match="max_len"):
        safe_name("x", max_len=5)


def test_distinct_names_stay_distinct():
    long_a, long_b = "m" * 300 + "-a", "m" * 300 + "-b"  # share a 300-character prefix
    assert safe_name(long_a) != safe_name(long_b)
    assert safe_name(long_a).startswith("mmmm")  # a readable prefix
    assert len({safe_name(n) for n in ("a/b", "a_b", "a b", "a\\b", "a:b")}) == 5
    assert safe_name("modèle/fr").startswith("modele_fr-")
    many = {f"{'task' * 40}-{i}" for i in range(2000)}
    assert len({safe_name(n) for n in many}) == len(many)


def test_predictions_file_names():
    # short, safe names: the name harness always gave the file
    assert file_name("tiny", "conll", "none") == "tiny__conll__none.parquet"
    long = file_name("m" * 300, LONG_TASK, LONG_COMP)
    assert len(long.encode()) <= 3 * SAFE_NAME_LEN + 12 < 255
    assert "/" not in file_name("a", ODD_TASK, "../../x") and len(
        file_name("é" * 200, "😀" * 200, "模" * 200).encode()) < 255


def test_old_run_folders_are_still_read(tmp_path):
    """A run written by the previous naming (unsafe characters replaced, no bound) keeps its
    predictions: ``find`` falls back to the old name, only for a file of the same cell."""
    import pandas as pd

    table = pd.DataFrame({"example": [0, 1], "gold": ["b", "a"], "pred": ["b", "b"]})
    old = tmp_path / PREDICTIONS_DIR / "my_model__conll__int8_v2.parquet"
    write_predictions(old, table, {"model": "my model", "compression": "int8/v2",
                                   "kind": "per-example-label", "metric": "accuracy"})
    assert find(tmp_path, "my model", "conll", "int8/v2") == old
    assert harness.load_predictions(tmp_path, ("my model", "conll", "int8/v2")).pred.tolist() == ["b", "b"]
    # the same old name, another cell's file: not taken for this cell
    assert find(tmp_path, "my:model", "conll", "int8/v2") is None
    # the new name wins when both are there
    new = tmp_path / PREDICTIONS_DIR / file_name("my model", "conll", "int8/v2")
    write_predictions(new, table.assign(pred=["a", "a"]), {"model": "my model"})
    assert find(tmp_path, "my model", "conll", "int8/v2") == new


def test_compressed_artifact_cache_folders(ctx):
    """The artifact cache folder keeps its name for a safe plugin name (existing caches stay
    valid) and is bounded and inside the cache for any other."""
    from harness.api import Compression, Head, LoadedModel
    from harness.toolkit.artifacts import cache_dir, cache_key

    class Comp(Compression):
        name = "int8"

        def apply(self, model, task, ctx):  # pragma: no cover - never run
            raise NotImplementedError

    import torch

    model = LoadedModel(module=torch.nn.Linear(2, 2), tokenizer=None, head=Head("x", ()),
                        identity="m", source="test")
    comp = Comp()
    assert cache_dir(ctx, model, comp).name == f"int8-{cache_key(model, comp)}"
    comp.name = "../../" + "z" * 300
    folder = cache_dir(ctx, model, comp)
    assert folder.parent == Path(ctx.cache_dir) / "compress" and not _unsafe(folder.name[:-17])
    assert len(folder.name) <= SAFE_NAME_LEN + 17


# ---------------------------------------------------------------------------------------------
# End to end


def _doc(tmp: Path, name: str = "names") -> dict:
    return {"name": name, "settings": {**FAST_SETTINGS, "cache_dir": str(tmp / "cache")},
            "models": [MODEL],
            "tasks": [{**NER, "name": LONG_TASK}, {**NER, "name": ODD_TASK}],
            "compressions": ["none", {"plugin": "none", "name": LONG_COMP}]}


def _run(tmp: Path, out: Path) -> Path:
    suite = suite_from_dict(_doc(tmp), tmp / "suite.yaml")
    run_suite(suite, make_plugin_manager(), out, RunOptions(jobs=0, show_progress=False))
    return out


@pytest.fixture(scope="module")
def names_run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("names")
    return _run(tmp, tmp / "run")


def test_long_and_unsafe_names_run_end_to_end(names_run):
    df = harness.load_results(names_run)
    assert set(df.status) == {"ok"}, df.error.dropna().tolist()
    assert set(df.task) == {LONG_TASK, ODD_TASK} and set(df.compression) == {"none", LONG_COMP}
    files = sorted((names_run / PREDICTIONS_DIR).iterdir())
    assert len(files) == 4 and all(len(f.name.encode()) < 255 for f in files)
    # every file is in the predictions folder, each cell's rows point at its own file
    assert {f.parent for f in files} == {names_run / PREDICTIONS_DIR}
    rel = set(df.predictions.dropna())
    assert rel == {f"{PREDICTIONS_DIR}/{f.name}" for f in files}
    for task in (LONG_TASK, ODD_TASK):
        p = harness.load_predictions(names_run, ("tiny", task, LONG_COMP))
        assert p.attrs["compression"] == LONG_COMP and len(p) == 16
    assert not [p for p in names_run.parent.iterdir() if p.name not in ("run", "cache", "suite.yaml")]


def test_a_rerun_with_long_names_is_cached(names_run, tmp_path):
    again = _run(names_run.parent, tmp_path / "again")  # same cache: every cell is a hit
    df = harness.load_results(again)
    assert df.cached.all() and set(df.status) == {"ok"}
    assert len(list((again / PREDICTIONS_DIR).iterdir())) == 4
    a = harness.load_predictions(again, ("tiny", ODD_TASK, "none"))
    b = harness.load_predictions(names_run, ("tiny", ODD_TASK, "none"))
    assert a.pred.tolist() == b.pred.tolist()


def test_a_suite_named_dot_dot_writes_under_runs(names_run, tmp_path, monkeypatch):
    suites, cwd = tmp_path / "suites", tmp_path / "deep" / "er" / "cwd"
    suites.mkdir()
    cwd.mkdir(parents=True)
    doc = _doc(names_run.parent, name="../../../escaped")  # the cells are cached: fast
    (suites / "s.yaml").write_text(yaml.safe_dump(doc, allow_unicode=True))
    monkeypatch.chdir(cwd)
    r = CliRunner().invoke(main, ["run", str(suites / "s.yaml"), "--jobs", "0", "--no-progress",
                                  "--no-report"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    runs = cwd / "runs"
    (folder,) = runs.iterdir()
    assert folder.name == safe_name("../../../escaped") and "escaped" in folder.name
    assert (folder / "results.jsonl").is_file() and len(list((folder / PREDICTIONS_DIR).iterdir())) == 4
    assert [p.name for p in cwd.iterdir()] == ["runs"]
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "deep" / "escaped").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deep", "suites"]


# ---------------------------------------------------------------------------------------------
# Item 7: an entity type the train split never has is said on the console


def _planets(tmp: Path) -> Path:
    data = tmp / "planets"
    data.mkdir()
    (data / "train.txt").write_text("Ada NNP B-NP B-PER\nspoke VBD B-VP O\n\nBob NNP B-NP B-PER\n\n")
    (data / "test.txt").write_text(
        "Ada NNP B-NP B-PER\nsaw VBD B-VP O\nMars NNP B-NP B-PLANET\n\n"
        "Venus NNP B-NP B-PLANET\nand CC O O\nNew NNP B-NP B-PLANET\nEarth NNP I-NP I-PLANET\n\n")
    return data


def _planets_suite(tmp_path: Path) -> Path:
    """``tmp_path/s.yaml``: two cells (``none`` twice) on :func:`_planets`."""
    task = {"plugin": "ner", "name": "planets", "params": {
        "data_dir": str(_planets(tmp_path)), "batch_size": 2, "bootstrap": 0}}
    doc = {"name": "planets", "settings": {**FAST_SETTINGS, "cache_dir": str(tmp_path / "cache")},
           "models": [MODEL], "tasks": [task],
           "compressions": ["none", {"plugin": "none", "name": "again"}]}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(doc))
    return tmp_path / "s.yaml"


@pytest.mark.slow
def test_unseen_entity_type_is_one_console_line_from_a_worker(tmp_path):
    """``harness run`` with the default (local) executor: the warning is raised in the worker
    process and shown by the parent as one 'Warning: ...' line on stderr, once for the two
    cells that evaluate the same data."""
    _planets_suite(tmp_path)
    r = subprocess.run([sys.executable, "-m", "harness", "run", str(tmp_path / "s.yaml"),
                        "--out", str(tmp_path / "out"), "--no-progress", "--no-report"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONWARNINGS": ""})
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if "train split never has" in ln]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("Warning: NER data ") and "(3 PLANET)" in lines[0], lines[0]
    assert "unseen_in_train" in lines[0]
    df = harness.load_results(tmp_path / "out")
    assert (df.metric == "unseen_in_train.PLANET").sum() == 2


def test_unseen_entity_type_warning_inline(tmp_path):
    """In this process (``--jobs 0``) the CLI shows the same line, once for two cells."""
    _planets_suite(tmp_path)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        r = CliRunner().invoke(main, ["run", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "o"),
                                      "--jobs", "0", "--no-progress", "--no-report"],
                               catch_exceptions=False)
    assert r.exit_code == 0, r.output
    lines = [ln for ln in r.stderr.splitlines() if "train split never has" in ln]
    assert len(lines) == 1 and lines[0].startswith("Warning: NER data "), r.stderr
    assert "(3 PLANET)" in lines[0]
