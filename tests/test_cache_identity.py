"""The core owns cache identity: a model plugin's name, version and parameters are part of the
identity every cache keys on, so a plugin that subclasses ``hf`` and changes the architecture
is never handed another model's cached checkpoint."""

from __future__ import annotations

from pathlib import Path

from harness.testing import TINY_BERT, make_plugin_manager

SAMPLE = Path(__file__).resolve().parents[1] / "suites" / "data" / "conll2003-sample"
NER = {"plugin": "ner", "name": "conll", "params": {
    "data_dir": str(SAMPLE), "max_train_samples": 32, "max_eval_samples": 32, "batch_size": 16}}


def test_a_subclass_that_changes_the_architecture_is_trained_anew(run_suite_dict):
    import truncated

    df = run_suite_dict({
        "models": [{"plugin": "hf", "name": "full", "params": TINY_BERT},
                   {"plugin": "hf-truncated", "name": "cut", "params": {**TINY_BERT, "layers": 1}}],
        "tasks": [NER], "compressions": ["none"],
    }, pm=make_plugin_manager(truncated))
    assert set(df.status) == {"ok"}, df[["model", "error"]]
    params = df[df.metric == "parameters"].set_index("model").value
    assert params["cut"] < params["full"]  # the 1-layer model ran, not the cached 2-layer one
    size = df[df.metric == "size_bytes"].set_index("model").value
    assert size["cut"] < size["full"]


def test_model_parameters_enter_the_identity(run_suite_dict, tmp_path):
    """Two entries of one plugin that differ only in a parameter the weights do not show."""
    import truncated

    doc = {"tasks": [NER], "compressions": ["none"]}
    one = run_suite_dict({**doc, "models": [
        {"plugin": "hf-truncated", "name": "m", "params": {**TINY_BERT, "layers": 1}}]},
        pm=make_plugin_manager(truncated), out=tmp_path / "a")
    two = run_suite_dict({**doc, "models": [
        {"plugin": "hf-truncated", "name": "m", "params": {**TINY_BERT, "layers": 2}}]},
        pm=make_plugin_manager(truncated), out=tmp_path / "b")
    p1 = one[one.metric == "parameters"].value.iloc[0]
    p2 = two[two.metric == "parameters"].value.iloc[0]
    assert p1 < p2


def test_a_changed_default_is_a_new_cell_even_without_a_version_bump(monkeypatch):
    """The cell id covers the parameters as the plugin resolved them, defaults included: a
    release that changes a default (as ort-int8's per_channel did) must not be served the
    cached rows of the old default under the same entry."""
    from harness.cell import PluginSet
    from harness.runner import plan
    from harness.suite import suite_from_dict
    from harness_plugins.compressions.torch_compressions import DynamicInt8

    suite = suite_from_dict({"name": "s", "models": [{"plugin": "hf", "name": "m", "params": TINY_BERT}],
                             "tasks": [NER], "compressions": ["dynamic-int8"]})
    plugins = PluginSet(make_plugin_manager().registries())
    before = plan(suite, plugins, "cpu", "0")[0].cell_id
    assert plan(suite, plugins, "cpu", "0")[0].cell_id == before  # stable
    default = DynamicInt8.Params.model_fields["per_channel"].default

    class Flipped(DynamicInt8.Params):  # the same plugin, released with the other default
        per_channel: bool = not default

    monkeypatch.setattr(DynamicInt8, "Params", Flipped)
    assert DynamicInt8().params.per_channel is (not default)
    assert plan(suite, plugins, "cpu", "0")[0].cell_id != before
