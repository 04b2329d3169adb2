"""Parameter grids in suite entries (``grid:``, harness.grid): expansion order and names, list
parameters left alone, list-of-lists values, deep merge, errors naming file and key path,
duplicates, validation of each variant by its plugin, chains, the suite hash and the cells."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from harness.errors import BadInput, SuiteError
from harness.grid import MAX_VARIANTS, value_text, variant_name
from harness.suite import load_suite, suite_from_dict
from harness.testing import TINY_BERT

SAMPLE = Path(__file__).resolve().parents[1] / "suites" / "data" / "conll2003-sample"
MODEL = {"plugin": "hf", "name": "tiny", "params": TINY_BERT}
NER = {"plugin": "ner", "name": "conll", "params": {"data_dir": str(SAMPLE)}}
HEAD = f"""
name: g
models: [{json.dumps(MODEL)}]
tasks: [{json.dumps(NER)}]
"""


def write(tmp: Path, text: str, name: str = "s.yaml") -> Path:
    p = tmp / name
    p.write_text(textwrap.dedent(HEAD) + textwrap.dedent(text))
    return p


def suite(compressions: list, **extra):
    return suite_from_dict({"models": [MODEL], "tasks": [NER], "compressions": compressions, **extra})


def test_expansion_order_names_and_origin():
    s = suite(["none", {"plugin": "prune", "params": {"recovery_epochs": 1},
                        "grid": {"sparsity": [0.3, 0.5, 0.7], "method": ["unstructured", "heads"]}}])
    names = [e.name for e in s.compressions]
    assert names == [
        "none",
        "prune@sparsity=0.3,method=unstructured", "prune@sparsity=0.3,method=heads",
        "prune@sparsity=0.5,method=unstructured", "prune@sparsity=0.5,method=heads",
        "prune@sparsity=0.7,method=unstructured", "prune@sparsity=0.7,method=heads",
    ]
    v = s.compressions[4]
    assert v.plugin == "prune"
    assert v.params == {"recovery_epochs": 1, "sparsity": 0.5, "method": "heads"}
    assert v.grid_of == "prune" and v.grid_point == {"sparsity": 0.5, "method": "heads"}
    assert list(v.grid_point) == ["sparsity", "method"]  # the grid's order
    assert v.where == "compressions[1]<prune@sparsity=0.5,method=heads>"
    assert s.compressions[0].grid_of is None and s.compressions[0].grid_point == {}


def test_an_explicit_name_is_the_base_and_models_and_tasks_expand_too():
    s = suite_from_dict({
        "models": [{"plugin": "hf", "name": "tiny", "grid": {"seed": [1, 2]}}],
        "tasks": [{"plugin": "ner", "name": "conll", "grid": {"lr": [1e-05, 2e-05]}}],
        "compressions": [{"plugin": "prune", "name": "p", "grid": {"sparsity": [0.5]}}],
    })
    assert [e.name for e in s.models] == ["tiny@seed=1", "tiny@seed=2"]
    assert [e.name for e in s.tasks] == ["conll@lr=1e-05", "conll@lr=2e-05"]
    assert [e.name for e in s.compressions] == ["p@sparsity=0.5"]
    assert s.compressions[0].grid_of == "p"
    assert {e.kind for e in s.models} == {"model"}


def test_a_list_in_params_is_not_a_grid():
    s = suite([{"plugin": "distill", "params": {"layers": [0, 2, 5]}}])
    assert [e.name for e in s.compressions] == ["distill"]
    assert s.compressions[0].params == {"layers": [0, 2, 5]}
    assert s.compressions[0].grid_of is None


def test_a_list_of_lists_gives_list_valued_params():
    s = suite([{"plugin": "distill", "params": {"temperature": 2.0},
                "grid": {"layers": [[0, 5], [0, 2, 5]]}}])
    assert [e.name for e in s.compressions] == ["distill@layers=0-5", "distill@layers=0-2-5"]
    assert [e.params["layers"] for e in s.compressions] == [[0, 5], [0, 2, 5]]
    assert s.compressions[1].grid_point == {"layers": [0, 2, 5]}
    assert all(e.params["temperature"] == 2.0 for e in s.compressions)


def test_deep_merge_with_defaults_and_params():
    s = suite_from_dict({
        "models": ["hf"], "compressions": ["none"],
        "defaults": {"tasks": {"ner": {"recipe": {"warmup": 0.1, "lr": 1.0}, "epochs": 3}}},
        "tasks": [{"plugin": "ner", "params": {"recipe": {"batch": 8}},
                   "grid": {"recipe.lr": [0.1, 0.2], "epochs": [1]}}],
    })
    assert [e.name for e in s.tasks] == ["ner@recipe.lr=0.1,epochs=1", "ner@recipe.lr=0.2,epochs=1"]
    assert s.tasks[1].params == {"recipe": {"warmup": 0.1, "lr": 0.2, "batch": 8}, "epochs": 1}
    # a mapping value merges into the defaults' mapping key by key
    s = suite_from_dict({
        "models": ["hf"], "compressions": ["none"],
        "defaults": {"tasks": {"ner": {"recipe": {"warmup": 0.1, "lr": 1.0}}}},
        "tasks": [{"plugin": "ner", "grid": {"recipe": [{"lr": 0.5}]}}],
    })
    assert s.tasks[0].params == {"recipe": {"warmup": 0.1, "lr": 0.5}}
    assert s.tasks[0].name == "ner@recipe=lr:0.5"


def test_values_are_written_compactly_and_safely():
    assert value_text(0.5) == "0.5" and value_text(3) == "3" and value_text(True) == "true"
    assert value_text(None) == "null" and value_text([0, 2, 5]) == "0-2-5"
    assert value_text("a/b c*[x]") == "a_b_c_x_"  # no '/' (cell labels) nor glob characters
    name = variant_name("m", {"path": "../data dir", "on": False})
    assert name == "m@path=.._data_dir,on=false"
    assert "/" not in name and not set("*?[]") & set(name)


BAD = [
    ("grid: {sparsity: []}", r"compressions\[1\]\.grid\.sparsity: must be a non-empty list of values, got an empty list"),
    ("grid: {sparsity: 0.5}", r"compressions\[1\]\.grid\.sparsity: must be a non-empty list of values, got float 0\.5"),
    ("grid: [0.3, 0.5]", r"compressions\[1\]\.grid: must be a non-empty mapping"),
    ("grid: {}", r"compressions\[1\]\.grid: must be a non-empty mapping"),
    ("params: {sparsity: 0.5}, grid: {sparsity: [0.3, 0.7]}",
     r"compressions\[1\]\.grid\.sparsity: 'sparsity' is given both in params and in grid"),
    ("params: {recipe: {lr: 1}}, grid: {recipe.lr: [0.3]}",
     r"compressions\[1\]\.grid\.recipe\.lr: 'recipe\.lr' is given both in params and in grid"),
    ("grid: {recipe: [{lr: 1}], recipe.lr: [2]}", r"compressions\[1\]\.grid\.recipe\.lr: overlaps the grid key 'recipe'"),
    (f"grid: {{a: {list(range(13))}, b: [1, 2, 3, 4, 5]}}",
     rf"compressions\[1\]\.grid: the grid gives 65 variants \(13 \(a\) x 5 \(b\)\); at most {MAX_VARIANTS}"),
]


@pytest.mark.parametrize("text,message", BAD, ids=[f"bad{i}" for i in range(len(BAD))])
def test_bad_grid_names_file_and_key_path(tmp_path, text, message):
    p = write(tmp_path, f"""
        compressions:
          - none
          - {{plugin: prune, {text}}}
    """)
    with pytest.raises(SuiteError, match=r"s\.yaml: " + message) as e:
        load_suite(p)
    assert isinstance(e.value, BadInput)  # the CLI's exit status 2


def test_sixty_four_variants_are_allowed():
    s = suite([{"plugin": "prune", "grid": {"a": list(range(8)), "b": list(range(8))}}])
    assert len(s.compressions) == MAX_VARIANTS


def test_bad_grid_in_a_chain_step_and_on_a_chain_entry(tmp_path):
    p = write(tmp_path, """
        compressions:
          - name: pf
            chain:
              - {plugin: prune, grid: {sparsity: []}}
              - finetune
    """)
    with pytest.raises(SuiteError, match=r"s\.yaml: compressions\[0\]\.chain\[0\]\.grid\.sparsity: must be a non-empty list"):
        load_suite(p)
    p = write(tmp_path, """
        compressions:
          - name: pf
            chain: [prune, finetune]
            grid: {sparsity: [0.3]}
    """, "t.yaml")
    with pytest.raises(SuiteError, match=r"t\.yaml: compressions\[0\]\.grid: a chain entry has no grid of its own; put the grid on the step"):
        load_suite(p)


def test_a_duplicate_name_after_expansion_is_an_error(tmp_path):
    p = write(tmp_path, """
        compressions:
          - {plugin: prune, grid: {sparsity: [0.5, 0.3, 0.5]}}
    """)
    with pytest.raises(SuiteError, match=r"s\.yaml: compressions\[0\]<prune@sparsity=0\.5>\.name: duplicate name 'prune@sparsity=0\.5'"):
        load_suite(p)
    p = write(tmp_path, """
        compressions:
          - {plugin: prune, name: prune@sparsity=0.3, params: {sparsity: 0.3}}
          - {plugin: prune, grid: {sparsity: [0.3]}}
    """, "t.yaml")
    with pytest.raises(SuiteError, match=r"duplicate name 'prune@sparsity=0\.3' \(also at compressions\[0\]\)"):
        load_suite(p)


def test_each_variant_is_validated_by_its_plugin(tmp_path, plugin_manager):
    regs = plugin_manager.registries()
    ok = load_suite(write(tmp_path, """
        compressions:
          - {plugin: prune, grid: {sparsity: [0.3, 0.5], method: [unstructured, heads]}}
    """))
    ok.validate(regs)
    bad = load_suite(write(tmp_path, """
        compressions:
          - {plugin: prune, grid: {sparsity: [0.5, 1.5]}}
    """, "t.yaml"))
    with pytest.raises(SuiteError) as e:
        bad.validate(regs)
    msg = str(e.value)
    assert "t.yaml: compressions[0]<prune@sparsity=1.5>.params.sparsity: " in msg
    assert "sparsity" in msg.split(".params.sparsity: ", 1)[1]
    # the same value written by hand fails the same way
    by_hand = load_suite(write(tmp_path, """
        compressions:
          - {plugin: prune, params: {sparsity: 1.5}}
    """, "u.yaml"))
    with pytest.raises(SuiteError) as e2:
        by_hand.validate(regs)
    assert str(e2.value).split(": ", 2)[2] == msg.split(": ", 2)[2]
    # a cross-field rule of the plugin (include_embeddings needs unstructured) per variant
    mixed = load_suite(write(tmp_path, """
        compressions:
          - {plugin: prune, params: {include_embeddings: true}, grid: {method: [unstructured, ffn]}}
    """, "v.yaml"))
    with pytest.raises(SuiteError, match=r"v\.yaml: compressions\[0\]<prune@method=ffn>\.params.*unstructured"):
        mixed.validate(regs)


def test_chain_steps_expand_into_one_chain_per_combination(plugin_manager):
    s = suite([{"name": "pf", "chain": [{"plugin": "prune", "grid": {"sparsity": [0.3, 0.5]}},
                                        {"plugin": "finetune", "params": {"epochs": 1}},
                                        {"plugin": "dynamic-int8"}]}])
    assert [e.name for e in s.compressions] == ["pf@sparsity=0.3", "pf@sparsity=0.5"]
    v = s.compressions[1]
    assert v.params == {"chain": [{"plugin": "prune", "params": {"sparsity": 0.5}},
                                  {"plugin": "finetune", "params": {"epochs": 1}},
                                  {"plugin": "dynamic-int8", "params": {}}]}
    assert v.grid_of == "pf" and v.grid_point == {"sparsity": 0.5}
    assert [st.where for st in v.steps][0] == "compressions[0]<pf@sparsity=0.5>.chain[0]"
    s.validate(plugin_manager.registries())
    # grids on several steps: their product; a key varied on two steps is named by plugin
    s = suite([{"chain": [{"plugin": "prune", "grid": {"sparsity": [0.3, 0.5]}},
                          {"plugin": "prune", "params": {"method": "heads"}, "grid": {"sparsity": [0.1]}},
                          "dynamic-int8"]}])
    assert [e.name for e in s.compressions] == [
        "prune+prune+dynamic-int8@step1.sparsity=0.3,step2.sparsity=0.1",
        "prune+prune+dynamic-int8@step1.sparsity=0.5,step2.sparsity=0.1"]
    assert s.compressions[0].steps[1].params == {"method": "heads", "sparsity": 0.1}
    assert s.compressions[1].grid_point == {"step1.sparsity": 0.5, "step2.sparsity": 0.1}
    s = suite([{"name": "pft", "chain": [{"plugin": "prune", "grid": {"recovery_epochs": [0, 1]}},
                                         {"plugin": "finetune", "grid": {"recovery_epochs": [2]}},
                                         "dynamic-int8"]}])
    assert [e.name for e in s.compressions] == [
        "pft@prune.recovery_epochs=0,finetune.recovery_epochs=2",
        "pft@prune.recovery_epochs=1,finetune.recovery_epochs=2"]


def test_a_bad_value_in_a_chain_variant_names_the_variant(plugin_manager):
    s = suite([{"name": "pf", "chain": [{"plugin": "prune", "grid": {"sparsity": [0.5, 2]}}, "dynamic-int8"]}])
    with pytest.raises(SuiteError, match="sparsity.*must be less than 1") as e:
        s.validate(plugin_manager.registries())
    assert e.value.key == "compressions[0]<pf@sparsity=2>.chain[0].params.sparsity"


def test_hash_and_cells_equal_the_suite_written_by_hand(plugin_manager):
    from harness.cell import PluginSet
    from harness.runner import plan

    grid = suite(["none", {"plugin": "prune", "params": {"recovery_epochs": 0},
                           "grid": {"sparsity": [0.3, 0.5]}}])
    hand = suite(["none",
                  {"plugin": "prune", "name": "prune@sparsity=0.3", "params": {"recovery_epochs": 0, "sparsity": 0.3}},
                  {"plugin": "prune", "name": "prune@sparsity=0.5", "params": {"sparsity": 0.5, "recovery_epochs": 0}}])
    assert grid.hash == hand.hash
    other = suite(["none", {"plugin": "prune", "grid": {"sparsity": [0.3, 0.7]}}])
    assert other.hash != grid.hash
    plugins = PluginSet(plugin_manager.registries())
    cells = plan(grid, plugins, "cpu", "0")
    assert [c.compression.name for c in cells] == ["none", "prune@sparsity=0.3", "prune@sparsity=0.5"]
    assert [c.cell_id for c in cells] == [c.cell_id for c in plan(hand, plugins, "cpu", "0")]
    # --only globs select variants: the names carry no glob character
    only = plan(grid, plugins, "cpu", "0", only=["*/*/prune@sparsity=0.5"])
    assert [c.compression.name for c in only] == ["prune@sparsity=0.5"]


def test_set_addresses_the_grid_entry(tmp_path):
    p = write(tmp_path, """
        compressions:
          - {plugin: prune, name: p, grid: {sparsity: [0.3, 0.5]}}
    """)
    s = load_suite(p, ["compressions.p.grid.sparsity=[0.1, 0.2, 0.4]", "compressions.p.params.method=heads"])
    assert [e.name for e in s.compressions] == ["p@sparsity=0.1", "p@sparsity=0.2", "p@sparsity=0.4"]
    assert all(e.params["method"] == "heads" for e in s.compressions)
