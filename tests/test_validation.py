"""Choices on the validation split, results on the evaluation split (issue 28, item 2): with the
run setting ``validation_split`` a cell also scores that split (row ``validation_<main>``, split
named in the ``split`` column), and ``harness select`` chooses on it, reporting the chosen
variant's test figure beside it."""

from __future__ import annotations

import re

import pandas as pd
import pytest
from report_fixtures import make_results
from suite_kit import MODEL, ner_entry

from harness.analysis.select import select, to_table
from harness.report import build_view


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The tiny model on the CoNLL-2003 sample (test: 32 sentences; validation: 32), with and
    without ``validation_split``, one cell each."""
    from harness.results import load_results
    from harness.runner import RunOptions, run_suite
    from harness.suite import suite_from_dict
    from harness.testing import FAST_SETTINGS, make_plugin_manager

    tmp = tmp_path_factory.mktemp("validation")
    out = {}
    for name, extra in (("with", {"validation_split": "validation"}), ("without", {})):
        doc = {"name": "v", "settings": {**FAST_SETTINGS, "cache_dir": str(tmp / "cache"), **extra},
               "models": [MODEL], "tasks": [ner_entry(32)], "compressions": ["none"]}
        run_suite(suite_from_dict(doc, tmp / "suite.yaml"), make_plugin_manager(), tmp / name,
                  RunOptions(jobs=0, show_progress=False))
        out[name] = load_results(tmp / name)
        out[name].attrs["run_folder"] = tmp / name
    return out


def test_a_cell_scores_the_validation_split_beside_the_test_split(runs):
    df = runs["with"]
    val = df[df.metric == "validation_entity_f1"]
    assert len(val) == 1 and val.iloc[0]["split"] == "validation"
    assert not bool(val.iloc[0]["main_metric"]) and not val.iloc[0]["metric_group"]
    assert 0.0 <= float(val.iloc[0]["value"]) <= 1.0 and "validation split" in val.iloc[0]["metric_description"]
    main = df[df.main_metric == True]  # noqa: E712 - a nullable boolean column
    assert list(main.metric) == ["entity_f1"] and list(main.split) == ["test"]
    task_rows = df[df.metric.str.startswith("entity_") | (df.metric == "token_accuracy")]
    assert set(task_rows.split) == {"test"}  # every task row names its split
    assert df[df.metric == "latency_b1_p50_ms"].split.isna().all()  # the core's: no split
    # the same cell without the setting: no validation row, a different cell (not reused)
    plain = runs["without"]
    assert "validation_entity_f1" not in set(plain.metric)
    assert plain.cell_id.iloc[0] != df.cell_id.iloc[0]
    same = set(plain.metric) & set(df.metric)
    f1 = {name: float(d[d.metric == "entity_f1"].value.iloc[0]) for name, d in runs.items()}
    assert f1["with"] == f1["without"] and "entity_f1" in same  # the test figure is unchanged


def test_the_saved_predictions_stay_those_of_the_evaluation_split(runs):
    """The validation evaluation records no predictions: the cell's file is the test split's,
    the same as without the setting (paired tests in compare rest on it)."""
    from harness.predictions import load_predictions

    got = {name: load_predictions(df.attrs["run_folder"], ("tiny", "conll", "none"))
           for name, df in runs.items()}
    assert got["with"].attrs["split"] == got["without"].attrs["split"] == "test"
    assert got["with"].equals(got["without"])


def test_no_validation_row_when_the_evaluation_split_is_the_validation_split():
    from harness.validation import validation_split_of

    class T:
        eval_split = "validation"

        def splits(self):
            return ("train", "validation")

    assert validation_split_of(T(), "validation") is None
    T.eval_split = "test"
    assert validation_split_of(T(), "validation") == "validation"
    assert validation_split_of(T(), "dev") is None  # the task has no such split
    assert validation_split_of(T(), "") is None  # the setting is off


def _with_validation(df: pd.DataFrame, shift: dict[str, float], task: str = "conll2003") -> pd.DataFrame:
    """``df`` plus a validation row per ok cell of ``task``: its main metric + ``shift`` of its
    compression (0 where not given)."""
    main = df[(df.task == task) & (df.main_metric == True)].copy()  # noqa: E712
    main["value"] = main["value"] + main["compression"].map(shift).fillna(0.0)
    main["metric"] = "validation_" + main["metric"]
    main["main_metric"] = False
    main["split"] = "validation"
    df = df.assign(split=df["main_metric"].map(lambda m: "test" if m is True else None))
    return pd.concat([df, main], ignore_index=True)


def test_select_chooses_on_validation_and_reports_the_test_figure():
    df = make_results()
    test_pick = {(s.model, s.task): s for s in select(df, 0.01)}
    model = "minilm-l6"
    first = test_pick[(model, "conll2003")]
    assert first.chosen_on == "entity_f1" and first.chosen.test_value == first.chosen.value
    # on validation the variant chosen on test falls 0.05 behind: another one must be chosen
    shifted = _with_validation(df, {first.chosen.compression: -0.05})
    s = next(s for s in select(shifted, 0.01) if (s.model, s.task) == (model, "conll2003"))
    assert s.chosen_on == "validation_entity_f1" and s.chosen.compression != first.chosen.compression
    test = df[(df.model == model) & (df.task == "conll2003") & (df.metric == "entity_f1")]
    values = dict(zip(test.compression, test.value))
    assert s.chosen.test_value == pytest.approx(values[s.chosen.compression])
    assert s.chosen.test_delta == pytest.approx(values[s.chosen.compression] - values["none"])
    assert "validation_entity_f1" in to_table([s])
    other = next(s for s in select(shifted, 0.01) if s.task == "sst2")
    assert other.chosen_on == "accuracy"  # no validation rows in that task: chosen on its metric
    d = s.to_dict()
    assert d["chosen_on"] == "validation_entity_f1" and d["test_value"] == s.chosen.test_value


def test_one_variant_without_a_validation_row_keeps_the_choice_on_the_test_metric():
    df = _with_validation(make_results(), {})
    drop = (df.metric == "validation_entity_f1") & (df.compression == "dynamic-int8")
    for s in select(df[~drop], 0.01):
        if s.task == "conll2003" and any(v.compression == "dynamic-int8" and v.status == "ok"
                                         for v in s.variants):
            assert s.chosen_on == "entity_f1"


def test_the_report_summary_says_the_choice_was_made_on_validation(tmp_path):
    from harness.report import render_report

    df = _with_validation(make_results(), {})
    summary = build_view(df)["tasks"]
    conll = next(t for t in summary if t["name"] == "conll2003")["summary"]
    assert conll["metric"] == "validation_entity_f1" and conll["test_metric"] == "entity_f1"
    assert all(r["test"] not in ("", None) for r in conll["rows"])
    html = render_report(df, tmp_path).read_text(encoding="utf-8")
    assert "The choice is made on the <b>validation</b> split" in html
    assert "entity_f1 (test)</th>" in html
    conll = next(t for t in build_view(df)["tasks"] if t["name"] == "conll2003")
    labels = [c.label for c in conll["columns"]]
    assert labels[2:4] == ["entity_f1 (test)", "entity_f1 (validation)"]  # both, marked
    sst2 = next(t for t in build_view(df)["tasks"] if t["name"] == "sst2")
    assert [c.label for c in sst2["columns"]][2] == "accuracy"  # no validation: unmarked
    unnamed = _with_validation(make_results(), {}).assign(split=None)  # rows of an older version
    conll = next(t for t in build_view(unnamed)["tasks"] if t["name"] == "conll2003")
    assert [c.label for c in conll["columns"]][2] == "entity_f1 (evaluation)"


def _grid_of_compressions(df: pd.DataFrame) -> pd.DataFrame:
    """minilm-l6's conll2003 cells only, compressions renamed as the variants of one grid:
    dynamic-int8 -> q@bits=8, prune-50 -> q@bits=4, ov-int8 -> q@bits=2 (none stays none)."""
    names = {"dynamic-int8": "q@bits=8", "prune-50": "q@bits=4", "ov-int8": "q@bits=2"}
    one = df[(df.model == "minilm-l6") & (df.task == "conll2003")].copy()
    one["compression"] = one["compression"].map(lambda c: names.get(c, c))
    one["cell_id"] = one["cell_id"].astype(str) + one["compression"]
    return one


def test_select_grid_chooses_each_grid_on_validation_and_reports_its_test_figure(tmp_path):
    from click.testing import CliRunner

    from harness.analysis.grids import choose, to_json, to_table
    from harness.cli import select_command

    df = _grid_of_compressions(make_results())
    test = {c: float(v) for c, v in df[df.metric == "entity_f1"][["compression", "value"]].values}
    best_on_test = max((c for c in test if "@" in c), key=test.get)
    # on validation the best test variant falls 0.2 behind: another one is chosen
    shifted = _with_validation(df, {best_on_test: -0.2})
    (choice,) = choose(shifted)  # one grid ('none' is no variant of it)
    assert (choice.task, choice.compression, choice.metric) == ("conll2003", "q", "entity_f1")
    assert choice.chosen_on == "validation_entity_f1" and len(choice.variants) == 3
    assert choice.chosen.compression != best_on_test
    assert choice.chosen.test == pytest.approx(test[choice.chosen.compression])
    assert choice.chosen.validation == pytest.approx(max(v.validation for v in choice.variants))
    assert '"chosen_on": "validation_entity_f1"' in to_json([choice])
    assert (choice.chosen.validation_split, choice.chosen.test_split) == ("validation", "test")
    assert f"{choice.chosen.validation:.4f} (validation)" in to_table([choice])
    chosen_mark = re.compile(re.escape(choice.chosen.compression) + r"\s+\*")
    assert chosen_mark.search(to_table([choice])) and to_table([choice]).count("*") == 1
    # without validation figures nothing is chosen (never on the test split), and it says why
    (plain,) = choose(df)
    assert plain.chosen is None and "validation_split" in plain.note
    assert "(none: no validation_entity_f1" in to_table([plain])
    assert choose(make_results()) == []  # no grid in it
    # the command line: --grid needs no --max-drop; without --grid --max-drop is required
    shifted.to_json(tmp_path / "results.json", orient="records")
    res = CliRunner().invoke(select_command, [str(tmp_path / "results.json"), "--grid"])
    assert res.exit_code == 0 and chosen_mark.search(res.output), res.output
    res = CliRunner().invoke(select_command, [str(tmp_path / "results.json")])
    assert res.exit_code == 2 and "--max-drop is required (or --grid)" in res.output
