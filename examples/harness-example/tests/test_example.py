"""The example's own test, with the fixtures of ``harness.testing``. Run it with the package
installed (``pip install -e .``): the harness finds it through its entry point."""

from __future__ import annotations

pytest_plugins = ["harness.testing"]


def test_has_entity_and_layer_drop(run_suite_dict, shared_data):
    df = run_suite_dict({
        "models": [{"plugin": "tiny-bert", "params": {"hidden": 32}}],
        "tasks": [{"plugin": "has-entity", "params": {
            "data_dir": str(shared_data / "wnut17"), "max_train_samples": 32,
            "max_eval_samples": 32, "batch_size": 8}}],
        "compressions": ["none", {"plugin": "layer-drop", "params": {"keep": 1}},
                         {"name": "drop-ft", "chain": [{"plugin": "layer-drop", "params": {"keep": 1}},
                                                       {"plugin": "finetune", "params": {"epochs": 1}}]}],
    })
    assert set(df.status) == {"ok"}
    acc = df[df.metric == "accuracy"].set_index("compression").value
    assert acc.between(0, 1).all() and len(acc) == 3
    params = df[df.metric == "parameters"].set_index("compression").value
    assert params["layer-drop"] < params["none"]
    assert params["drop-ft"] == params["layer-drop"]  # recovery trains, it does not grow the model
    row = df[df.compression == "drop-ft"].iloc[0]
    assert '"layers_kept": 1' in row.chain_steps  # what each step recorded
    assert row.recovery.startswith("recovered: 1 epoch")  # the last step's own columns


def test_word_nb_is_a_model_without_an_adapter(run_suite_dict, shared_data):
    """A model that is not a transformer: the built-in classification task hands it raw texts;
    the cells it cannot take (a transformers-only task or compression) are skipped, not failed."""
    df = run_suite_dict({
        "models": [{"plugin": "word-nb"}],
        "tasks": [{"plugin": "classification", "params": {
            "format": "sst2", "data_dir": str(shared_data / "sst2"), "max_train_samples": 2000,
            "max_eval_samples": 200}},
            {"plugin": "has-entity", "params": {"data_dir": str(shared_data / "wnut17")}}],
        "compressions": ["none", {"plugin": "layer-drop", "params": {"keep": 1}}],
    })
    status = df.drop_duplicates("cell_id").set_index(["task", "compression"]).status.to_dict()
    assert status == {("classification", "none"): "ok", ("classification", "layer-drop"): "skipped",
                      ("has-entity", "none"): "skipped", ("has-entity", "layer-drop"): "skipped"}
    ok = df[df.status == "ok"].set_index("metric")
    assert 0.55 < ok.value["accuracy"] <= 1  # better than chance on SST-2
    assert ok.runtime.iloc[0] == "python" and ok.value["size_bytes"] > 0
