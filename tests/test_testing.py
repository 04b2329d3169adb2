"""The public fixtures of ``harness.testing`` (docs/plugins.md, "Testing a plugin") used as a
plugin author uses them: directly (this project opts in from conftest.py with
``pytest_plugins = ["harness.testing"]``, as the docs say) and in a new project that pytest's
``pytester`` runs."""

from __future__ import annotations

from pathlib import Path

import pytest

import harness
from harness.api import CellContext
from harness.testing import SHARED_DATA_ENV, TINY_BERT, find_shared_data, make_plugin_manager
from harness_plugins.compressions.torch_compressions import NoCompression

ROOT = Path(__file__).resolve().parents[1]
SST2_SAMPLE = ROOT / "suites" / "data" / "sst2-sample"


class _MyPlugin:
    """A plugin module as an author writes one: a compression, registered through the hook."""

    class Baseline(NoCompression):
        name = "my-baseline"

    @staticmethod
    @harness.hookimpl
    def register_compressions(register):
        register(_MyPlugin.Baseline)


# -- directly -----------------------------------------------------------------------------------
def test_cell_context_is_a_cpu_context_with_private_folders(cell_context, tmp_path):
    assert isinstance(cell_context, CellContext)
    assert (cell_context.device, cell_context.seed, cell_context.show_progress) == ("cpu", 0, False)
    assert cell_context.cache_dir == tmp_path / "cache"
    assert cell_context.work_dir == tmp_path / "work" and cell_context.work_dir.is_dir()


def test_our_ctx_is_cell_context_and_cached_ctx_only_swaps_the_cache(ctx, cell_context, cached_ctx,
                                                                      module_cache):
    assert ctx is cell_context
    assert cached_ctx.cache_dir == module_cache != cell_context.cache_dir
    assert (cached_ctx.device, cached_ctx.work_dir) == (cell_context.device, cell_context.work_dir)


def test_plugin_manager_is_fresh_with_every_installed_plugin(plugin_manager):
    reg = plugin_manager.registries()
    assert "hf" in reg.models.classes
    assert {"ner", "classification"} <= set(reg.tasks.classes)
    assert {"none", "dynamic-int8", "prune", "onnx"} <= set(reg.compressions.classes)
    assert "my-baseline" not in reg.compressions.classes
    mine = make_plugin_manager(_MyPlugin)  # the same, plus the author's unregistered module
    assert mine is not plugin_manager
    assert set(mine.registries().compressions.classes) == {*reg.compressions.classes, "my-baseline"}


def test_run_suite_dict_runs_in_process_with_fast_settings(run_suite_dict, tmp_path):
    doc = {
        "models": [{"plugin": "hf", "params": TINY_BERT}],
        "tasks": [{"plugin": "classification", "params": {
            "format": "sst2", "data_dir": str(SST2_SAMPLE), "max_train_samples": 8,
            "max_eval_samples": 8, "bootstrap": 0}}],
        "compressions": ["my-baseline"],
        "settings": {"save_predictions": False},  # merged over FAST_SETTINGS
    }
    df = run_suite_dict(doc, pm=make_plugin_manager(_MyPlugin))
    assert df.status.unique().tolist() == ["ok"] and set(df.compression) == {"my-baseline"}
    assert (tmp_path / "out" / "results.jsonl").is_file()  # the default out=
    assert any((tmp_path / "cache").iterdir())  # the cache under the test's tmp_path
    # out= and RunOptions keywords are passed on; the cell is found in the cache
    again = run_suite_dict(doc, pm=make_plugin_manager(_MyPlugin), out=tmp_path / "again",
                           only=["*/*/my-baseline"])
    assert again.status.unique().tolist() == ["ok"]
    assert (tmp_path / "again" / "results.jsonl").is_file()
    # without pm=, the installed plugins (a built-in compression that skips on a CPU)
    skipped = run_suite_dict({**doc, "compressions": ["ort-fp16"]}, out=tmp_path / "cpu")
    assert skipped.status.unique().tolist() == ["skipped"]


def test_find_shared_data(tmp_path, monkeypatch):
    monkeypatch.delenv(SHARED_DATA_ENV, raising=False)
    (tmp_path / "a" / "b").mkdir(parents=True)
    found = find_shared_data(tmp_path / "a" / "b")  # None, or one above tmp_path (not ours)
    assert found is None or not found.is_relative_to(tmp_path)
    (tmp_path / "shared" / "data").mkdir(parents=True)
    assert find_shared_data(tmp_path / "a" / "b") == tmp_path / "shared" / "data"
    elsewhere = tmp_path / "elsewhere"
    monkeypatch.setenv(SHARED_DATA_ENV, str(elsewhere))
    assert find_shared_data(tmp_path) is None  # the variable wins, even naming no folder
    elsewhere.mkdir()
    assert find_shared_data(tmp_path) == elsewhere


# -- in a new project, as docs/plugins.md shows -------------------------------------------------
AUTHOR_TESTS = '''
from pathlib import Path

from harness.api import CellContext


def test_context(cell_context, tmp_path):
    assert isinstance(cell_context, CellContext) and cell_context.work_dir.is_dir()
    assert tmp_path in cell_context.cache_dir.parents


def test_manager(plugin_manager):
    assert "none" in plugin_manager.registries().compressions.classes


def test_runner(run_suite_dict):
    assert callable(run_suite_dict)


def test_data(shared_data, request):
    assert shared_data == Path(request.config.rootpath) / "shared" / "data"
'''


@pytest.mark.parametrize("where", ["conftest.py", "the test module"])
def test_a_plugin_project_gets_the_fixtures_by_opting_in(pytester, monkeypatch, where):
    monkeypatch.delenv(SHARED_DATA_ENV, raising=False)
    opt_in = 'pytest_plugins = ["harness.testing"]\n'
    if where == "conftest.py":
        pytester.makeconftest(opt_in)
        pytester.makepyfile(test_author=AUTHOR_TESTS)
    else:
        pytester.makepyfile(test_author=opt_in + AUTHOR_TESTS)
    result = pytester.runpytest("-p", "no:cacheprovider", "-rs")
    result.assert_outcomes(passed=3, skipped=1)  # no real data anywhere: shared_data skips ...
    result.stdout.fnmatch_lines([f"*real benchmark data not found (set {SHARED_DATA_ENV}*"])  # ... saying why
    (pytester.path / "shared" / "data").mkdir(parents=True)
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=4)


def test_without_opting_in_there_are_no_fixtures(pytester):
    pytester.makepyfile(test_author=AUTHOR_TESTS)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(errors=4)
    result.stdout.fnmatch_lines(["*fixture 'cell_context' not found*"])
