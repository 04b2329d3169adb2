"""A shared cache is data, never code (issue 24, item 1; docs/reliability.md, "Trust model of
a shared cache"): a tiny suite with every built-in compression and chains of transforms fills a
cache (fine-tuned checkpoints, compressed artifacts, chain steps' outputs, teacher logits);
then every file of it is replaced by a pickle that would leave a marker file if anything
unpickled it. The re-run must never create the marker, and every cell must be rebuilt (or fail
naming the corrupt entry). The gate likewise calls only scorers a plugin declares."""

from __future__ import annotations

import json
import pickle
import shutil
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest

import harness
from harness.api import scorer_name
from harness.errors import DataError
from harness.gate.paired import paired_test
from harness.predictions import PREDICTIONS_DIR, file_name, write_predictions
from harness.runner import RunOptions, run_suite
from harness.suite import suite_from_dict
from harness.testing import FAST_SETTINGS, TINY_BERT, make_plugin_manager
from harness_plugins.tasks.ner import paired_scorer

ROOT = Path(__file__).resolve().parents[1]
CONLL = ROOT / "suites" / "data" / "conll2003-sample"
TINY = {**TINY_BERT, "config": {**TINY_BERT["config"], "hidden_size": 16, "intermediate_size": 32}}
NER = {"plugin": "ner", "name": "conll", "params": {
    "data_dir": str(CONLL), "max_train_samples": 16, "max_eval_samples": 8, "batch_size": 8,
    "bootstrap": 0}}
#: chains through every transform, so the transform/ cache holds each one's output; the
#: structured prune, the student, the factors and the tied layers are rebuilt by their plugins
CHAINS = [
    {"name": "distill-lr-ft-ort", "chain": [
        {"plugin": "distill", "params": {"num_layers": 1, "epochs": 0.5}},
        {"plugin": "low-rank", "params": {"rank": 4}},
        {"plugin": "finetune", "params": {"epochs": 0.5}}, "ort-int8"]},
    {"name": "heads-share-pal-int8", "chain": [
        {"plugin": "prune", "params": {"method": "heads", "sparsity": 0.5}},
        {"plugin": "share-layers", "params": {"every": 2}}, "palettize", "dynamic-int8"]},
]


class _Bomb:
    """Unpickling this creates ``path`` (a file that can only come from code execution)."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _builtin_compressions() -> list[str]:
    pm = make_plugin_manager()
    reg = pm.registries().compressions
    return sorted(n for n in reg.classes
                  if (pm.distributions.get(reg.sources[n]) or ("",))[0] == "harness-bench")


def _run(cache: Path, out: Path) -> Any:
    doc = {"name": "poison", "settings": {**FAST_SETTINGS, "cache_dir": str(cache)},
           "models": [{"plugin": "hf", "name": "tiny", "params": TINY}], "tasks": [NER],
           "compressions": [*_builtin_compressions(), *CHAINS]}
    run_suite(suite_from_dict(doc, out.parent / "suite.yaml"), make_plugin_manager(), out,
              RunOptions(jobs=0, show_progress=False))
    return harness.load_results(out)


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """(cache folder, its run's rows) of the suite run once on an empty cache."""
    tmp = tmp_path_factory.mktemp("poison")
    df = _run(tmp / "cache", tmp / "clean")
    status = df.groupby("compression").status.first()
    assert set(status) <= {"ok", "skipped"}, df[df.status == "failed"][["compression", "error"]]
    return tmp / "cache", df


def _poison(cache: Path, marker: Path, *, json_too: bool) -> int:
    """Every file of ``cache`` (recursively) becomes a pickle bomb; JSON files too with
    ``json_too``, else they stay but the cell cache is dropped (so the cells run again)."""
    bomb = pickle.dumps(_Bomb(marker))
    n = 0
    for f in sorted(p for p in cache.rglob("*") if p.is_file()):
        if f.suffix == ".json" and not json_too:
            if f.parent.name == "cells":
                f.unlink()
            continue
        f.write_bytes(bomb)
        n += 1
    return n


def _check(df, clean_df, cache: Path, marker: Path) -> None:
    assert not marker.exists(), "a cache file was unpickled"
    got = df.groupby("compression").status.first().to_dict()
    want = clean_df.groupby("compression").status.first().to_dict()
    assert set(got) == set(want)
    for comp, status in got.items():
        if status == "failed":  # allowed only with a message that names the corrupt entry
            error = df[df.compression == comp].error.iloc[0]
            assert str(cache) in error and "cache entry" in error, (comp, error)
        else:
            assert status == want[comp], (comp, status)
    assert not df.cached.any()  # the cell cache was dropped or poisoned: every cell ran


@pytest.mark.slow
@pytest.mark.parametrize("json_too", [False, True], ids=["artifacts", "every-file"])
def test_a_poisoned_cache_is_rebuilt_never_unpickled(clean, tmp_path, json_too):
    cache_src, clean_df = clean
    cache = shutil.copytree(cache_src, tmp_path / "cache")
    assert {p.name for p in cache.iterdir()} >= {"finetune", "compress", "transform", "cells",
                                                 "distill-teacher"}
    marker = tmp_path / "UNPICKLED"
    assert _poison(cache, marker, json_too=json_too) > 40
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        df = _run(cache, tmp_path / "out")
    _check(df, clean_df, cache, marker)
    if not json_too:  # intact meta.json, corrupt artifacts: each was loaded, refused, rebuilt
        rebuilt = [w for w in seen if "did not load" in str(w.message)]
        assert len(rebuilt) >= 10, [str(w.message) for w in seen]
    # the rebuilt cache is sound: a re-run is served from it
    again = _run(cache, tmp_path / "again")
    assert again.cached.all() and not marker.exists()


@pytest.mark.slow
def test_a_clean_cache_hit_rebuilds_each_transform_output_from_its_plugin(clean, tmp_path):
    """Cell cache dropped, artifacts intact: every transform output and artifact is loaded back
    (structure from the plugin, tensors from the cache) and scores as it did when built."""
    cache_src, clean_df = clean
    cache = shutil.copytree(cache_src, tmp_path / "cache")
    shutil.rmtree(cache / "cells")
    df = _run(cache, tmp_path / "out")
    ok = df[(df.status == "ok") & df.main_metric.astype(bool)].set_index("compression").value
    ref = clean_df[(clean_df.status == "ok") & clean_df.main_metric.astype(bool)].set_index("compression").value
    assert sorted(ok.index) == sorted(ref.index)
    for comp in ref.index:
        assert ok[comp] == pytest.approx(ref[comp], abs=1e-9), comp
    steps = {c: json.loads(s) for c, s in
             df.dropna(subset=["chain_steps"]).groupby("compression").chain_steps.first().items()}
    assert steps and all(s["cache_hit"] for chain in steps.values() for s in chain[:-1])


def _predictions(run: Path, gold: list, pred: list, scorer: str) -> Path:
    """A run folder holding one ``sequence-labels`` predictions file naming ``scorer``."""
    import pandas as pd

    f = run / PREDICTIONS_DIR / file_name(*CELL)
    table = pd.DataFrame({"example": range(len(gold)), "gold": gold, "pred": pred})
    write_predictions(f, table, {"kind": "sequence-labels", "metric": "entity_f1", "scorer": scorer,
                                 "split": "test", "data_hash": "d"})
    return f


CELL = ("tiny", "conll", "none")


def test_the_gate_calls_only_declared_scorers(tmp_path):
    """A predictions file names its scorer; ``os:system`` or any undeclared function (even one
    in a module never imported) is refused with a DataError naming the file and the scorer, and
    nothing is imported; the NER task's declared scorer still runs the paired bootstrap."""
    gold = [["B-PER", "O"], ["O", "B-LOC"], ["B-ORG", "I-ORG"], ["O", "O"]] * 5
    pred = [["B-PER", "O"], ["O", "O"], ["B-ORG", "I-ORG"], ["O", "B-PER"]] * 5
    good = scorer_name(paired_scorer)
    assert good == "harness_plugins.tasks.ner:paired_scorer"
    _predictions(tmp_path / "cur", gold, pred, good)
    result = paired_test(_predictions(tmp_path / "ok", gold, gold, good).parents[1], tmp_path / "cur",
                         CELL, "entity_f1")
    assert result.test == "paired bootstrap" and result.delta < 0
    # a baseline recorded before the NER task moved names its scorer by the old module path:
    # a declared alias, so comparing against an old run folder still runs the paired test
    old = _predictions(tmp_path / "old", gold, gold, "harness_plugins.ner:paired_scorer")
    again = paired_test(old.parents[1], tmp_path / "cur", CELL, "entity_f1")
    assert again.test == "paired bootstrap" and again.delta == result.delta
    trap = tmp_path / "trap"
    trap.mkdir()
    (trap / "evil_scorer_mod.py").write_text(
        f"open({str(tmp_path / 'IMPORTED')!r}, 'w').close()\ndef score(g, p):\n    return 0, 0\n")
    sys.path.insert(0, str(trap))
    try:
        for i, name in enumerate(("os:system", "evil_scorer_mod:score",
                                  "harness_plugins._lib.metrics:micro_f1_from_counts", "nonsense")):
            f = _predictions(tmp_path / f"base{i}", gold, gold, name)
            with pytest.raises(DataError) as err:
                paired_test(f.parents[1], tmp_path / "cur", CELL, "entity_f1")
            assert str(f) in str(err.value) and repr(name) in str(err.value)
            assert "not declared by an installed harness plugin" in str(err.value)
    finally:
        sys.path.remove(str(trap))
    assert not (tmp_path / "IMPORTED").exists() and "evil_scorer_mod" not in sys.modules


def test_cached_load_rebuilds_once_or_names_the_entry(tmp_path, monkeypatch):
    """The loader of a cache hit raises (a corrupt file): the entry is removed and rebuilt, with
    a warning naming it; where it cannot be removed (a read-only cache) the error names it."""
    import torch

    from harness.api import CellContext, Compression, Head, LoadedModel
    from harness.errors import HarnessWarning
    from harness.toolkit import CorruptCacheEntry, artifacts, cached_load

    class Comp(Compression):
        name = "c"

        def apply(self, model, task, ctx):  # pragma: no cover - not used
            raise NotImplementedError

    builds = []

    def build(folder: Path) -> dict:
        builds.append(folder)
        (folder / "x.json").write_text("[1]")
        return {}

    def load(folder: Path) -> list:
        return json.loads((folder / "x.json").read_text())

    ctx = CellContext(device="cpu", seed=0, cache_dir=tmp_path / "cache", work_dir=tmp_path)
    model = LoadedModel(module=torch.nn.Linear(2, 2), tokenizer=None, head=Head("k", ("a",)),
                        identity="m", source="s")
    folder, _, hit, value = cached_load(ctx, model, Comp(), build, load)
    assert (hit, value, len(builds)) == (False, [1], 1)
    (folder / "model" / "x.json").write_bytes(pickle.dumps(_Bomb(tmp_path / "UNPICKLED")))
    with pytest.warns(HarnessWarning, match=f"cache entry {folder} did not load"):
        again, _, hit, value = cached_load(ctx, model, Comp(), build, load)
    assert (again, hit, value, len(builds)) == (folder, False, [1], 2)
    (folder / "model" / "x.json").write_text("{broken")
    monkeypatch.setattr(artifacts, "discard_dir", lambda f: False)  # as in a read-only cache
    with pytest.raises(CorruptCacheEntry, match=f"cache entry {folder}: c: corrupt") as err:
        cached_load(ctx, model, Comp(), build, load)
    assert err.value.folder == folder and len(builds) == 2
    assert not (tmp_path / "UNPICKLED").exists()
