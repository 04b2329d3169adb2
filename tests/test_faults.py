"""Faults injected on purpose (issue 13): several workers, killed drivers, broken caches, torn
and corrupt result files, bad data. Each test reproduces one defect and fails without its fix."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import psutil
import pytest
from suite_kit import MODEL, PLUGINS, SAMPLE, doc_module, ner_entry, second_ner
from suite_kit import write_suite as _write_suite

import harness
from harness.results import read_rows
from harness.testing import TINY_BERT, alive_processes

TINY16 = {**TINY_BERT, "config": {**TINY_BERT["config"], "hidden_size": 16, "num_hidden_layers": 1,
                                  "intermediate_size": 32}}
NER = ner_entry(48)
ENV = {**os.environ, "PYTHONPATH": str(PLUGINS), "HARNESS_PLUGINS": "faulty"}


def write_suite(tmp: Path, compressions, *, tasks=None, **settings) -> Path:
    return _write_suite(tmp, compressions, tasks=tasks or [NER], **settings)


def invoke(*args: str):
    """``harness -p faulty ARGS`` in this process (no interpreter to start: fast)."""
    from click.testing import CliRunner

    from harness.cli import main

    return CliRunner().invoke(main, ["-p", "faulty", *args])


def start(*args, cwd: Path) -> subprocess.Popen:
    """``harness run ...`` in the background, in its own session (so a test can signal it)."""
    return subprocess.Popen([sys.executable, "-m", "harness", *args], cwd=cwd, env=ENV,
                            start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for(cond, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


#: two tasks that train different checkpoints: rendezvous cells of the two groups start at once
#: (a rendezvous cell waits in its setup, where a cell holds back the rest of its group)
TWO_TASKS = [NER, second_ner()]


def apart(first: str, second: str) -> list[str]:
    """``--only`` options running ``first`` on the first task and ``second`` on the second."""
    return [f"--only=tiny/conll/{first}", f"--only=tiny/conll-b/{second}"]


def rendezvous(folder: Path, role: str, name: str | None = None) -> dict:
    return {"plugin": "rendezvous", "name": name or role,
            "params": {"folder": str(folder), "role": role}}


alive = alive_processes


def kill_all(procs: list[psutil.Process]) -> None:
    for p in alive(procs):
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass


# -- 1. two workers: one dies while the other finishes -----------------------------------------
@pytest.mark.slow
def test_worker_death_does_not_lose_another_workers_result(tmp_path):
    """Two (faked) GPUs, one worker each. While the driver is stopped, one worker crashes and
    the other finishes its cell; the finished cell must be reported as finished (before the
    fix its messages were thrown away: a hang with timeout_s 0, 'timed out' with a timeout)."""
    meet = tmp_path / "meet"
    meet.mkdir()
    suite = write_suite(tmp_path, [rendezvous(meet, "crash"), rendezvous(meet, "finish")],
                        tasks=TWO_TASKS, timeout_s=8.0)
    proc = start("run", str(suite), "--out", str(tmp_path / "out"), "--jobs", "2",
                 "--devices", "cuda:0,cuda:1", "--no-progress", "--no-report",
                 *apart("crash", "finish"), cwd=tmp_path)
    try:
        wait_for(lambda: (meet / "crash.started").exists() and (meet / "finish.started").exists(),
                 "both cells to start")
        time.sleep(0.5)  # the driver has handled both cells' first phases
        os.kill(proc.pid, signal.SIGSTOP)
        (meet / "go").touch()
        crashed = psutil.Process(int((meet / "crash.started").read_text()))
        wait_for(lambda: not alive([crashed]), "the crashing worker to exit", 30)
        time.sleep(1.0)  # the other worker's phases and 'done' are in the pipe
        os.kill(proc.pid, signal.SIGCONT)
        _, err = proc.communicate(timeout=90)
    finally:
        proc.kill()
    assert proc.returncode == 1, err
    df = harness.load_results(tmp_path / "out").set_index("compression")
    assert df.status.to_dict() == {"crash": "failed", "finish": "skipped"}, df.error.to_dict()
    assert "exited with status 3" in df.error["crash"]
    assert df.error["finish"].startswith("finished pid=")


# -- 2. killing the driver leaves no worker behind ---------------------------------------------
def _run_with_two_busy_workers(tmp_path: Path, extra=()) -> tuple[subprocess.Popen, list]:
    meet = tmp_path / "meet"
    meet.mkdir()
    # two cells that wait for a 'go' that never comes: both workers stay busy
    comps = [*extra, rendezvous(meet, "a"), rendezvous(meet, "b")]
    suite = write_suite(tmp_path, comps, tasks=TWO_TASKS)
    proc = start("run", str(suite), "--out", str(tmp_path / "out"), "--jobs", "2",
                 "--no-progress", "--no-report", *apart("a", "b"),
                 *(f"--only=tiny/conll/{c}" for c in extra), cwd=tmp_path)
    wait_for(lambda: (meet / "a.started").exists() and (meet / "b.started").exists(),
             "both workers to be inside a cell")
    return proc, psutil.Process(proc.pid).children(recursive=True)


@pytest.mark.slow
def test_kill_9_of_the_driver_leaves_no_worker(tmp_path):
    proc, children = _run_with_two_busy_workers(tmp_path)
    try:
        assert len(alive(children)) >= 2
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 5
        while alive(children) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = alive(children)
        assert not left, [p.cmdline()[:3] for p in left]
    finally:
        kill_all(children)


@pytest.mark.slow
def test_sigterm_keeps_rows_and_stops_workers(tmp_path):
    proc, children = _run_with_two_busy_workers(tmp_path, extra=["needs-tpu"])
    try:
        wait_for(lambda: (tmp_path / "out" / "results.jsonl").exists(), "the first row")
        os.kill(proc.pid, signal.SIGTERM)
        proc.communicate(timeout=30)
        assert proc.returncode != 0
        deadline = time.monotonic() + 5
        while alive(children) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(children)
    finally:
        kill_all(children)
    rows = read_rows(tmp_path / "out" / "results.jsonl")
    assert [r["compression"] for r in rows] == ["needs-tpu"]


# -- 3. a cache that cannot be written costs no result -----------------------------------------
def test_unwritable_cache_keeps_the_rows_and_warns(tmp_path):
    """The cache folder stops being writable while the cell runs (it is replaced by a file,
    which no user, root included, can write into): the cell's row is kept, the run ends
    normally with a warning naming the folder; then a read-only cache is still read."""
    cells = tmp_path / "cache" / "cells"
    suite = write_suite(tmp_path, [{"plugin": "spoil-cache", "params": {"folder": str(cells)}}])
    r = invoke("run", str(suite), "--out", str(tmp_path / "out"), "--jobs", "0", "--no-progress")
    assert r.exit_code == 0 and r.exc_info[0] is SystemExit, r.output
    assert f"Warning: cannot write to the cell cache folder {cells}" in r.stderr
    rows = read_rows(tmp_path / "out" / "results.jsonl")
    assert [r["status"] for r in rows] == ["skipped"]
    assert (tmp_path / "out" / "index.html").exists() and (tmp_path / "out" / "results.csv").exists()

    # a read-only cache holding the cell: read, not recomputed, nothing written
    cells.unlink()
    os.rename(f"{cells}-saved", cells)
    entry = cells / f"{rows[0]['cell_id']}.json"
    entry.write_text(json.dumps(rows))
    for p in (entry, cells, cells.parent):
        p.chmod(0o555 if p.is_dir() else 0o444)
    try:
        again = invoke("run", str(suite), "--out", str(tmp_path / "again"), "--jobs", "0",
                       "--no-progress", "--no-report")
    finally:
        for p in (cells.parent, cells, entry):
            p.chmod(0o755 if p.is_dir() else 0o644)
    assert again.exit_code == 0, again.output
    assert "1 cached" in again.stdout and "Warning" not in again.stderr


# -- 4. resuming after a torn line leaves one set of rows --------------------------------------
@pytest.mark.slow
def test_resume_after_a_torn_line_leaves_one_set_of_rows(run_suite_dict, tmp_path):
    """Killed while writing a cached cell's rows (its cache entry exists): the resumed run
    restores the cell from the cache. Before the fix the restored rows kept the first run's
    run_id, so every export held the cell's metrics twice and the torn line warned forever."""
    doc = {"models": [MODEL], "tasks": [NER], "compressions": ["none"]}
    out = tmp_path / "out"
    n = len(run_suite_dict(doc, out=out))
    path = out / "results.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    assert n == len(lines) > 5
    path.write_text("".join(lines[:3]) + lines[3][:40])  # three rows, then half of one
    with pytest.warns(UserWarning, match=r"ignored 1 incomplete cell"):
        assert len(harness.load_results(out, latest=False)) == 0  # a cell cut short: not run
    # the torn line and the three rows of the cell it cut short go aside together
    with pytest.warns(UserWarning, match=r"moved 4 \(line 1, 2, 3, 4\) torn or corrupt result"):
        again = run_suite_dict(doc, out=out)
    assert len(again) == n and again.metric.is_unique and set(again.cached) == {True}
    for fmt in ("csv", "json", "parquet"):
        assert len(harness.load_results(out / f"results.{fmt}")) == n, fmt
    assert (out / "results.jsonl.bad").read_text() == "".join(lines[:3]) + lines[3][:40] + "\n"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # repaired once: later reads are clean
        assert len(harness.load_results(out, latest=False)) == n


# -- 5. a corrupt results file: bad lines skipped, one warning, no traceback --------------------
def test_corrupt_results_lines_are_skipped_with_one_warning(tmp_path):
    suite = write_suite(tmp_path, ["needs-tpu"])
    out = tmp_path / "out"
    first = invoke("run", str(suite), "--out", str(out), "--jobs", "0", "--no-progress",
                   "--no-report")
    assert first.exit_code == 0, first.output
    path = out / "results.jsonl"
    good = path.read_bytes()
    row = json.loads(good)
    bad_byte = good.replace(b'"skipped"', b'"skip\xffped"')
    wrong_type = json.dumps({**row, "cell_rows": "many"}).encode() + b"\n"
    garbage = b"".join(b"garbage %d\n" % i for i in range(50))
    path.write_bytes(good + bad_byte + wrong_type + garbage)

    for args in (["report", str(out), "-o", str(tmp_path / "rep")], ["compare", str(out), str(out)]):
        r = invoke(*args)
        assert r.exit_code == 0 and r.exception is None, (args, r.output)
        warned = [line for line in r.stderr.splitlines() if "torn or corrupt" in line]
        assert 1 <= len(warned) <= 2, r.stderr  # one per file read (compare reads two)
        assert "skipped 52 (line 2, 3, 4, 5, 6, 7, 8, 9, 10, 11 and 42 more)" in warned[0]
        assert "not UTF-8" in warned[0]

    again = invoke("run", str(suite), "--out", str(out), "--jobs", "0", "--no-progress",
                   "--no-report")
    assert again.exit_code == 0 and again.exc_info[0] is SystemExit, again.output
    assert "1 reused" in again.stdout
    assert again.stderr.count("torn or corrupt") == 1, again.stderr
    assert path.read_bytes() == good
    assert len((out / "results.jsonl.bad").read_bytes().splitlines()) == 52


# -- 8. results.csv / .json / .parquet: one writer, the same rows ------------------------------
def test_results_exports_agree_after_a_run(tmp_path):
    """A second run with another seed writes the same label under another cell id. Before the
    fix the run exported both cells and the leaderboard then overwrote results.csv and
    results.json keeping one row per label: 1 row there, 2 in results.parquet. Now every view
    (load_results(latest=True), the exports, the report) keeps the label's latest run: 1 row,
    the seed-1 cell, everywhere; results.jsonl keeps both."""
    import pandas as pd

    suite = write_suite(tmp_path, ["needs-tpu"])
    out = tmp_path / "out"
    for seed in (0, 1):
        r = invoke("run", str(suite), "--out", str(out), "--set", f"settings.seed={seed}",
                   "--jobs", "0", "--no-progress")
        assert r.exit_code == 0, r.output
    csv = pd.read_csv(out / "results.csv")
    js = pd.read_json(out / "results.json", orient="records")
    pq = pd.read_parquet(out / "results.parquet")
    assert len(csv) == len(js) == len(pq) == 1
    assert set(csv.cell_id) == set(js.cell_id) == set(pq.cell_id)
    assert set(csv.seed) == {1}
    assert len(pd.read_json(out / "results.jsonl", lines=True)) == 2
    rep = invoke("report", str(out), "-o", str(tmp_path / "rep"))
    assert rep.exit_code == 0, rep.output
    assert (tmp_path / "rep" / "results.csv").read_text() == (out / "results.csv").read_text()


# -- 10. the documented API exists: every code block of the plugin docs runs -------------------
def test_plugin_docs_code_blocks_run(run_suite_dict, repo_root):
    from harness.testing import make_plugin_manager

    for name in ("Executor", "ExecutorContext"):
        assert name in harness.__all__ and hasattr(harness, name)
    scale_out = doc_module(repo_root / "docs" / "scale-out.md")
    plugins = doc_module(repo_root / "docs" / "plugins.md")
    pm = make_plugin_manager(plugins, scale_out, __import__("faulty"))
    reg = pm.registries()
    assert {"tiny-bert"} <= set(reg.models.classes) and {"wnut17"} <= set(reg.tasks.classes)
    assert {"layer-drop"} <= set(reg.compressions.classes)
    assert {"serial", "slurm"} <= set(reg.executors.classes)
    # the documented executor runs a cell
    df = run_suite_dict({"models": [MODEL], "tasks": [NER], "compressions": ["needs-tpu"]},
                        pm=pm, executor="serial", extra_plugins=["faulty"])
    assert df.status.tolist() == ["skipped"]


# -- 6. bad data is bad input: exit 2, the task and the file and line named --------------------
def test_bad_data_exits_2_and_blames_the_task(tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(SAMPLE, data)
    train = data / "train.txt"
    lines = train.read_text().splitlines(keepends=True)
    lines[2] = lines[2].replace("I-ORG", "Q-ORG")  # line 3: not an IOB tag
    train.write_text("".join(lines))
    task = {**NER, "params": {**NER["params"], "data_dir": str(data)}}
    suite = write_suite(tmp_path, ["none"], tasks=[task])
    r = invoke("run", str(suite), "--out", str(tmp_path / "out"), "--jobs", "0",
               "--no-progress", "--no-report")
    assert r.exit_code == 2 and r.exc_info[0] is SystemExit, r.output
    err = harness.load_results(tmp_path / "out").error.iloc[0]
    assert err.startswith("bad input for task 'conll' (task plugin 'ner') during load: "), err
    assert f"{train}:3:" in err and "model plugin" not in err

    # a crash besides the bad data: exit 1
    suite = write_suite(tmp_path, ["none", "raises-early"], tasks=[task])
    r = invoke("run", str(suite), "--out", str(tmp_path / "out2"), "--jobs", "0",
               "--no-progress", "--no-report")
    assert r.exit_code == 1 and r.exc_info[0] is SystemExit, r.output
    df = harness.load_results(tmp_path / "out2").set_index("compression")
    assert "raised RuntimeError" in df.error["raises-early"]


# -- 7. a mistyped local path is not looked up on the hub --------------------------------------
def test_missing_data_dir_fails_at_once_without_the_hub(run_suite_dict, tmp_path, monkeypatch):
    import datasets

    def no_hub(*args, **kwargs):
        raise AssertionError(f"the hub was asked for {args}")

    monkeypatch.setattr(datasets, "load_dataset", no_hub)
    monkeypatch.chdir(tmp_path)
    task = {**NER, "params": {**NER["params"], "data_dir": "data/conlltyni"}}
    t = time.monotonic()
    df = run_suite_dict({"models": [MODEL], "tasks": [task], "compressions": ["none"]})
    assert time.monotonic() - t < 30
    err = df.error.iloc[0]
    assert df.status.iloc[0] == "failed" and err.startswith("bad input for task 'conll'"), err
    assert f"data/conlltyni: no such data folder (looked for {tmp_path / 'data' / 'conlltyni'})" in err
    assert "hub" in err and "hub was asked" not in err


# -- 12. fixed-length timing works for every built-in compression ------------------------------
@pytest.mark.slow
def test_fixed_latency_length_works_for_every_builtin_compression(run_suite_dict, plugin_manager,
                                                                   recwarn):
    """settings.latency_seq_len cuts and repeats real inputs into strided tensors; dynamic
    int8's quantised embedding refused them ('Expect weight, indices, and offsets to be
    contiguous'). Every compression installed with harness itself must time them."""
    reg = plugin_manager.registries().compressions
    dist = plugin_manager.distributions
    builtin = sorted(n for n in reg.classes
                     if (dist.get(reg.sources[n]) or ("",))[0] == "harness-bench")
    assert {"none", "dynamic-int8"} <= set(builtin), builtin
    task = {**NER, "params": {**NER["params"], "max_train_samples": 16, "max_eval_samples": 8}}
    df = run_suite_dict({"models": [{"plugin": "hf", "name": "tiny", "params": TINY16}],
                         "tasks": [task], "compressions": builtin,
                         "settings": {"latency_seq_len": 24, "throughput_batch_size": 2}})
    status = df.groupby("compression").status.first().to_dict()
    errors = df.groupby("compression").error.first().to_dict()
    assert set(status) == set(builtin)
    assert set(status.values()) <= {"ok", "skipped"}, errors
    assert status["dynamic-int8"] == "ok", errors["dynamic-int8"]
    ok = df[df.status == "ok"]
    assert set(ok.seq_len) == {"fixed length: 24 tokens (real inputs cut or repeated)"}
    # item 9: no library noise ("TypedStorage is deprecated" on loading dynamic int8 weights)
    assert not [w for w in recwarn if "TypedStorage" in str(w.message)]


# -- 9. smaller ones ---------------------------------------------------------------------------
def test_bad_settings_and_missing_include_are_suite_errors(tmp_path):
    from harness.errors import SuiteError
    from harness.suite import load_suite, suite_from_dict

    doc = {"models": [MODEL], "tasks": [NER], "settings": {"cache_dir": 5}}
    with pytest.raises(SuiteError, match=r"s.yaml: settings.cache_dir: must be str, got 5"):
        suite_from_dict(doc, tmp_path / "s.yaml")
    top = tmp_path / "top.yaml"
    top.write_text("include: [base.yaml]\nmodels: [hf]\ntasks: [ner]\n")
    with pytest.raises(SuiteError, match=rf"top.yaml: include\[0\]: included file not found: "
                                         rf"{tmp_path / 'base.yaml'}"):
        load_suite(top)


def test_memory_error_says_out_of_memory_and_the_phase(run_suite_dict):
    from harness.testing import make_plugin_manager

    df = run_suite_dict({"models": [MODEL], "tasks": [NER], "compressions": [
        {"plugin": "oom", "params": {"message": "", "early": True}}]},
        pm=make_plugin_manager(__import__("faulty")))
    err = df.error.iloc[0]
    assert err.startswith("out of memory during setup: compression plugin 'oom' raised "
                          "MemoryError at faulty.py:"), err


def test_out_of_range_recipe_values_fail_at_suite_validation(tmp_path):
    """``epochs: -1`` is bad input found before any cell runs: exit 2, the entry named, no rows."""
    bad = {**NER, "params": {**NER["params"], "epochs": -1}}
    suite = write_suite(tmp_path, ["none"], tasks=[bad])
    r = invoke("run", str(suite), "--out", str(tmp_path / "out"), "--no-progress", "--no-report")
    assert r.exit_code == 2, r.output
    assert "parameter 'epochs' of task plugin 'ner'" in r.output
    assert "greater than or equal to 1, got int -1" in r.output
    assert "tasks[0].params.epochs" in r.output  # where in the suite
    assert not (tmp_path / "out" / "results.jsonl").exists() or not list(
        read_rows(tmp_path / "out" / "results.jsonl"))
    for key, value, says in (("lr", 0, "'lr' of task plugin 'ner': must be greater than 0"),
                             ("eval_batch_size", 0, "'eval_batch_size' of task plugin 'ner': must be greater than or equal to 1"),
                             ("bootstrap", -5, "'bootstrap' of task plugin 'ner': must be greater than or equal to 0")):
        bad = {**NER, "params": {**NER["params"], key: value}}
        r = invoke("run", str(write_suite(tmp_path, ["none"], tasks=[bad])), "--out",
                   str(tmp_path / f"out-{key}"), "--no-progress", "--no-report")
        assert r.exit_code == 2 and says in r.output, (key, r.output)


def test_a_test_label_never_seen_in_training_is_reported(run_suite_dict, tmp_path):
    data = tmp_path / "planets"
    data.mkdir()
    (data / "train.txt").write_text("Ada NNP B-NP B-PER\nspoke VBD B-VP O\n\nBob NNP B-NP B-PER\n\n")
    (data / "test.txt").write_text(
        "Ada NNP B-NP B-PER\nsaw VBD B-VP O\nMars NNP B-NP B-PLANET\n\n"
        "Venus NNP B-NP B-PLANET\nand CC O O\nNew NNP B-NP B-PLANET\nEarth NNP I-NP I-PLANET\n\n")
    task = {"plugin": "ner", "name": "planets", "params": {"data_dir": str(data), "batch_size": 2}}
    df = run_suite_dict({"models": [MODEL], "tasks": [task], "compressions": ["none"]})
    assert set(df.status) == {"ok"}, df.error.tolist()
    unseen = df[df.metric.astype(str).str.startswith("unseen_in_train.")]
    assert unseen.metric.tolist() == ["unseen_in_train.PLANET"]
    assert unseen.value.iloc[0] == 3  # Mars, Venus, New Earth
    assert "never has" in unseen.metric_description.iloc[0]


def test_params_passed_on_with_star_star_are_still_checked(tmp_path):
    """A plugin that subclasses ``hf`` with ``**params`` accepts ``hf``'s parameters and its
    own; any other key is an unknown parameter at validation, with a did-you-mean."""
    from harness.errors import SuiteError
    from harness.suite import suite_from_dict
    from harness.testing import make_plugin_manager

    sys.path.insert(0, str(PLUGINS))
    import truncated

    registries = make_plugin_manager(truncated).registries()
    ok = {"plugin": "hf-truncated", "name": "cut", "params": {**TINY_BERT, "layers": 1}}
    suite_from_dict({"models": [ok], "tasks": [NER]}, tmp_path / "s.yaml").validate(registries)
    bad = {**ok, "params": {**ok["params"], "layer": 1}}
    with pytest.raises(SuiteError, match=r"s.yaml: models\[0\].params.layer: unknown parameter "
                                         r"'layer' for model plugin 'hf-truncated'. Did you mean: layers"):
        suite_from_dict({"models": [bad], "tasks": [NER]}, tmp_path / "s.yaml").validate(registries)
    assert {"layers", "config", "tokenizer_package", "path"} <= set(truncated.TruncatedHF.Params.model_fields)
