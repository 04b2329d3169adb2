"""Compression chains: ``chain:`` entries, validation (exit 2 naming both steps), the
``finetune`` step, prefix caching, per-step rows; tiny BERT on the shipped SST-2 sample."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness.api import Transform
from harness.cli import main
from harness.errors import SuiteError
from harness.suite import suite_from_dict
from harness.testing import TINY_BERT, make_plugin_manager

SAMPLE = Path(__file__).resolve().parents[1] / "suites" / "data" / "sst2-sample"
SST2 = {"plugin": "classification", "name": "sst2", "params": {
    "format": "sst2", "data_dir": str(SAMPLE), "max_train_samples": 64, "max_eval_samples": 48,
    "batch_size": 16, "bootstrap": 0, "max_length": 32}}
MODEL = {"plugin": "hf", "name": "tiny", "params": TINY_BERT}
PRUNE_FT = [{"plugin": "prune", "params": {"sparsity": 0.5}}, {"plugin": "finetune", "params": {"epochs": 0.5}}]


def _suite(*compressions) -> dict:
    return {"name": "chains", "models": [MODEL], "tasks": [SST2], "compressions": list(compressions)}


def test_a_chain_entry_is_parsed_with_its_steps():
    suite = suite_from_dict(_suite(
        {"chain": [{"plugin": "prune", "params": {"sparsity": 0.5}}, "finetune", "dynamic-int8"]},
        {"name": "p-ft", "chain": PRUNE_FT},
    ) | {"defaults": {"compressions": {"finetune": {"epochs": 0.25}}}})
    first, second = suite.compressions
    assert first.name == "prune+finetune+dynamic-int8" and first.plugin == "chain"
    assert [s.plugin for s in first.steps] == ["prune", "finetune", "dynamic-int8"]
    assert first.steps[1].params == {"epochs": 0.25}  # defaults apply per step plugin
    assert first.steps[2].where == "compressions[0].chain[2]"
    assert first.params["chain"][0] == {"plugin": "prune", "params": {"sparsity": 0.5}}
    assert second.name == "p-ft" and second.steps[1].params == {"epochs": 0.5}
    suite.validate(make_plugin_manager().registries())


@pytest.mark.parametrize("entry,key,words", [
    ({"chain": []}, "compressions[0].chain", "non-empty"),
    ({"chain": "prune"}, "compressions[0].chain", "non-empty list"),
    ({"plugin": "prune", "chain": ["finetune"]}, "compressions[0].plugin", "'name' and 'chain'"),
    ({"chain": [{"plugin": "prune", "epochs": 1}]}, "compressions[0].chain[0].epochs", "unknown key"),
    ({"chain": [{"params": {}}]}, "compressions[0].chain[0].plugin", "missing plugin"),
])
def test_malformed_chains_name_the_key(entry, key, words):
    with pytest.raises(SuiteError) as err:
        suite_from_dict(_suite(entry))
    assert err.value.key == key and words in str(err.value)


def test_a_step_that_cannot_feed_the_next_is_a_suite_error_naming_both(tmp_path):
    reg = make_plugin_manager().registries()
    suite = suite_from_dict(_suite({"chain": ["dynamic-int8", "finetune"]}))
    with pytest.raises(SuiteError) as err:
        suite.validate(reg)
    msg = str(err.value)
    assert "'dynamic-int8' cannot feed step 2 'finetune'" in msg and "prune" in msg  # what can
    assert err.value.key == "compressions[0].chain[0].plugin"
    for bad, key in (({"chain": ["prun", "none"]}, "compressions[0].chain[0].plugin"),
                     ({"chain": [{"plugin": "finetune", "params": {"epoch": 1}}, "none"]},
                      "compressions[0].chain[0].params.epoch")):
        with pytest.raises(SuiteError) as err:
            suite_from_dict(_suite(bad)).validate(reg)
        assert err.value.key == key
    # on the command line: exit 2, one line, before any cell runs
    path = tmp_path / "s.yaml"
    path.write_text(json.dumps(_suite({"name": "bad", "chain": ["nncf-ptq", "finetune"]})))
    r = CliRunner().invoke(main, ["run", str(path), "-o", str(tmp_path / "o"), "--no-progress"])
    assert r.exit_code == 2, r.output
    assert "compressions[0].chain[0].plugin" in r.output and "'nncf-ptq' cannot feed" in r.output
    assert "Traceback" not in r.output and not (tmp_path / "o" / "results.jsonl").exists()


def test_builtin_transforms():
    classes = make_plugin_manager().registries().compressions.classes
    transforms = {n for n, c in classes.items() if issubclass(c, Transform)}
    assert {"prune", "finetune", "low-rank", "share-layers", "palettize", "distill"} <= transforms
    assert not {"none", "dynamic-int8", "nncf-ptq", "ort-int8", "onnx"} & transforms


def test_chains_run_share_prefixes_and_record_their_steps(run_suite_dict, tmp_path):
    df = run_suite_dict(_suite(
        "none", {"plugin": "prune", "name": "prune", "params": {"sparsity": 0.5}},
        {"name": "prune-ft", "chain": PRUNE_FT},
        {"name": "prune-ft-int8", "chain": [*PRUNE_FT, "dynamic-int8"]},
    ))
    assert set(df.status) == {"ok"}, df[["compression", "error"]].drop_duplicates()
    cells = df.drop_duplicates("compression").set_index("compression")
    steps = {c: json.loads(cells.chain_steps[c]) for c in ("prune-ft", "prune-ft-int8")}
    assert [s["plugin"] for s in steps["prune-ft-int8"]] == ["prune", "finetune", "dynamic-int8"]
    assert steps["prune-ft-int8"][1]["params"] == {"epochs": 0.5, "keep_zeros": True}
    # the second chain found the shared prefix (prune -> finetune) in the cache: computed once
    assert [s["cache_hit"] for s in steps["prune-ft"]] == [False, False]
    assert [s["cache_hit"] for s in steps["prune-ft-int8"]][:2] == [True, True]
    assert steps["prune-ft"][1]["time_s"] > 0 and steps["prune-ft-int8"][1]["time_s"] == 0
    assert steps["prune-ft-int8"][1]["build_time_s"] == steps["prune-ft"][1]["time_s"]
    cache = tmp_path / "cache" / "transform"
    assert len([p for p in cache.iterdir() if not p.name.startswith(".")]) == 2
    assert json.loads(cells.compression_params["prune-ft"])["chain"][0]["plugin"] == "prune"
    assert cells.compression_plugin["prune-ft"] == "chain" and cells.chain_length["prune-ft-int8"] == 3
    value = df.set_index(["compression", "metric"]).value
    # finetune kept the pruned zeros, and int8 kept them too
    zeros = {c: value[c, "parameters"] - value[c, "nonzero_parameters"]
             for c in ("prune", "prune-ft", "prune-ft-int8")}
    assert zeros["prune"] > 4000  # half of the tiny encoder's Linear weights (the table is kept)
    assert zeros["prune-ft"] == zeros["prune"] and zeros["prune-ft-int8"] >= zeros["prune"]
    assert value["prune-ft-int8", "size_bytes"] < 0.5 * value["prune-ft", "size_bytes"]
    # finetune as the last step stores the kept zeros sparse, as prune does: the same saving
    saved = {c: value["none", "size_bytes"] - value[c, "size_bytes"] for c in ("prune", "prune-ft")}
    assert saved["prune"] > 10_000 and saved["prune-ft"] > 0.95 * saved["prune"]
    assert cells.precision["prune-ft-int8"] == "int8" and cells.runtime["prune-ft"] == "torch"
    # a re-run is served from the cell cache; changing a step's parameter is a new cell
    again = run_suite_dict(_suite({"name": "prune-ft", "chain": PRUNE_FT}), out=tmp_path / "again")
    assert again.cached.all()
    changed = run_suite_dict(_suite({"name": "prune-ft", "chain": [
        PRUNE_FT[0], {"plugin": "finetune", "params": {"epochs": 0.25}}]}), out=tmp_path / "changed")
    assert not changed.cached.any()
    record = json.loads(changed.chain_steps.iloc[0])
    assert record[0]["cache_hit"] and not record[1]["cache_hit"]  # the prune prefix is reused


def test_finetune_alone_and_a_task_without_the_capability(run_suite_dict):
    from tiny_tasks import TinySST2

    from harness.api import capability_reason
    from harness.chain import Chain
    from harness_plugins.compressions.finetune import Finetune
    from harness_plugins.compressions.prune import Prune

    chain = Chain([Prune(), Finetune(epochs=0.5)])
    assert chain.requires == ("finetune", "model:transformers")  # task capability, model kinds
    assert Chain([Prune()]).requires == ("model:transformers",)
    reason = capability_reason(chain, TinySST2([], None))
    assert reason is not None and "'tiny-sst2'" in reason and "'finetune'" in reason
    with pytest.raises(ValueError, match="'epochs'.*'finetune'"):
        Finetune(epochs=0)
    df = run_suite_dict(_suite("none", {"plugin": "finetune", "params": {"epochs": 0.5}}))
    assert set(df.status) == {"ok"}
    rows = df.drop_duplicates("compression").set_index("compression")
    assert rows.recovery["finetune"].startswith("recovered: 0.5 epoch")
    value = df.set_index(["compression", "metric"]).value
    # the artifact is the module's weights: about the fp32 baseline's size
    assert value["finetune", "size_bytes"] == pytest.approx(value["none", "size_bytes"], rel=0.05)


def test_a_failing_step_names_itself(run_suite_dict):
    df = run_suite_dict(_suite({"name": "bad", "chain": [
        {"plugin": "distill", "params": {"layers": [7]}}, "none"]}))
    row = df.iloc[0]
    assert row.status == "failed"
    assert "chain step 1/2 'distill'" in row.error and "layers [7] do not exist" in row.error
