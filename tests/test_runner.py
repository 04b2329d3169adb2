"""The run loop: rows, lifecycle hooks, isolation of misbehaving plugins, cache and resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from suite_kit import second_ner

import harness
from harness.results import read_rows
from harness.testing import FAST_SETTINGS, TINY_BERT, make_plugin_manager

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "suites" / "data" / "conll2003-sample"
NER = {"plugin": "ner", "name": "conll", "params": {
    "data_dir": str(SAMPLE), "max_train_samples": 48, "max_eval_samples": 48, "batch_size": 16}}
MODEL = {"plugin": "hf", "name": "tiny", "params": TINY_BERT}


def suite_doc(tmp: Path, compressions, **settings) -> dict:
    return {"name": "t", "settings": {**FAST_SETTINGS, "cache_dir": str(tmp / "cache"), **settings},
            "models": [MODEL], "tasks": [NER], "compressions": compressions}


def two_tasks(doc: dict) -> dict:
    """``doc`` with a second task (``suite_kit.second_ner``: two (model, task) groups)."""
    return doc | {"tasks": [NER, second_ner()]}


def write_suite(tmp: Path, doc: dict) -> Path:
    p = tmp / "suite.yaml"
    p.write_text(yaml.safe_dump(doc))
    return p


def cli(*args, cwd: Path, env_extra: dict | None = None, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent / "plugins"),
           "HARNESS_PLUGINS": "faulty", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, **kw)


def test_rows_are_tidy_with_provenance(run_suite_dict):
    df = run_suite_dict(suite_doc(Path("/unused"), ["none"]) | {"settings": {}})
    assert set(df.status) == {"ok"}
    main = df[df.main_metric == True]  # noqa: E712
    assert main.metric.tolist() == ["entity_f1"]
    assert main.ci_low.iloc[0] <= main.value.iloc[0] <= main.ci_high.iloc[0]
    assert "seqeval" in main.metric_description.iloc[0]
    for metric in ("latency_b1_p50_ms", "latency_b1_p99_ms", "throughput_samples_s",
                   "size_bytes", "parameters", "nonzero_parameters", "peak_rss_mb", "cold_start_ms"):
        assert metric in set(df.metric), metric
    p50 = df[df.metric == "latency_b1_p50_ms"].iloc[0]
    assert len(p50.samples) >= FAST_SETTINGS["min_iterations"]
    size = df[df.metric == "size_bytes"].value.iloc[0]
    assert size > 4 * 1_000_000 * 0.9  # ~1M fp32 parameters on disk
    row = df.iloc[0]
    for col in ("harness_version", "torch_version", "transformers_version", "suite_hash",
                "seed", "device_name", "timestamp", "plugin_versions", "runtime", "precision"):
        assert row[col] not in (None, ""), col
    assert json.loads(row.plugin_versions)["task"]["plugin"] == "ner"
    assert row.git_commit is None or len(row.git_commit) >= 40


def _observer():
    import observer

    observer.EVENTS.clear()
    return observer


def test_hook_run_started(run_suite_dict):
    obs = _observer()
    run_suite_dict(suite_doc(Path("/u"), ["none", "needs-tpu"]) | {"settings": {}},
                   pm=make_plugin_manager(obs, __import__("faulty")))
    assert obs.EVENTS[0] == ("run_started", ("t", 2))


def test_hook_result_recorded(run_suite_dict):
    obs = _observer()
    df = run_suite_dict(suite_doc(Path("/u"), ["none", "needs-tpu"]) | {"settings": {}},
                        pm=make_plugin_manager(obs, __import__("faulty")))
    recorded = [e[1] for e in obs.EVENTS if e[0] == "result_recorded"]
    assert len(recorded) == len(df)
    assert ("tiny", "skipped", None) in recorded


def test_hook_run_finished(run_suite_dict):
    obs = _observer()
    df = run_suite_dict(suite_doc(Path("/u"), ["none"]) | {"settings": {}},
                        pm=make_plugin_manager(obs))
    assert obs.EVENTS[-1] == ("run_finished", len(df))


def test_misbehaving_plugins_fail_only_their_cell(tmp_path):
    """Raises, MemoryError and os._exit, each in a worker process; the run goes on."""
    doc = suite_doc(tmp_path, ["raises", "oom", "exits", "none", "needs-tpu"])
    r = cli("run", str(write_suite(tmp_path, doc)), "--out", str(tmp_path / "out"),
            "--no-progress", "--no-report", cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    df = harness.load_results(tmp_path / "out")
    status = df.groupby("compression").status.first().to_dict()
    assert status == {"raises": "failed", "oom": "failed", "exits": "failed",
                      "none": "ok", "needs-tpu": "skipped"}
    err = df.groupby("compression").error.first()
    assert "compression plugin 'raises' raised RuntimeError during compress: boom" in err["raises"]
    assert "MemoryError" in err["oom"]
    assert "exited with status 3" in err["exits"]
    assert "needs a TPU" in err["needs-tpu"]
    assert "FAILED: tiny/conll/raises" in r.stderr


def test_hanging_cell_times_out_and_run_goes_on(tmp_path):
    doc = suite_doc(tmp_path, ["hangs", "needs-tpu"], timeout_s=3.0)
    r = cli("run", str(write_suite(tmp_path, doc)), "--out", str(tmp_path / "out"),
            "--no-progress", "--no-report", cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    df = harness.load_results(tmp_path / "out")
    err = df.set_index("compression").error
    assert "timed out after 3 s (settings.timeout_s); worker killed" in err["hangs"]
    assert df.set_index("compression").status["needs-tpu"] == "skipped"  # a fresh worker ran it


@pytest.mark.slow
def test_cache_hit_on_rerun_and_force(tmp_path):
    suite = write_suite(tmp_path, suite_doc(tmp_path, ["none"]))
    out = tmp_path / "out"
    first = cli("run", str(suite), "--out", str(out), "--no-progress", "--no-report", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    n = len(read_rows(out / "results.jsonl"))
    t = time.monotonic()
    again = cli("run", str(suite), "--out", str(out), "--no-progress", "--no-report", cwd=tmp_path)
    assert again.returncode == 0 and "1 reused" in again.stdout
    assert time.monotonic() - t < 30  # no worker, no model: only start-up
    assert len(read_rows(out / "results.jsonl")) == n  # nothing appended
    other = cli("run", str(suite), "--out", str(tmp_path / "b"), "--no-progress", "--no-report",
                cwd=tmp_path)
    assert "1 cached" in other.stdout
    df = harness.load_results(tmp_path / "b")
    assert df.cached.all() and len(df) == n
    # per-example outputs: written from the worker's outcome, restored from the cell cache
    ours, cached = (harness.load_predictions(d, "tiny/conll/none") for d in (out, tmp_path / "b"))
    assert len(ours) == 48 and ours.pred.tolist() == cached.pred.tolist()
    forced = cli("run", str(suite), "--out", str(out), "--force", "--no-progress", "--no-report",
                 cwd=tmp_path)
    assert "1 ok" in forced.stdout
    assert len(read_rows(out / "results.jsonl")) == 2 * n


@pytest.mark.slow
def test_kill_9_then_resume(tmp_path):
    doc = suite_doc(tmp_path, ["none", "dynamic-int8", "needs-tpu"])
    doc["models"] = [MODEL, {**MODEL, "name": "tiny2", "params": {**TINY_BERT, "seed": 1}}]
    suite = write_suite(tmp_path, doc)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent / "plugins"),
           "HARNESS_PLUGINS": "faulty"}
    proc = subprocess.Popen([sys.executable, "-m", "harness", "run", str(suite), "--out", str(out),
                             "--no-progress", "--no-report"], cwd=tmp_path, env=env,
                            start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    results = out / "results.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if results.exists() and len({r["cell_id"] for r in read_rows(results)}) >= 2:
            break
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = read_rows(results)
    done_before = {r["cell_id"] for r in before}
    assert 2 <= len(done_before) < 6
    with open(results, "a") as f:
        f.write('{"run_id": "torn", "cell_id": "x", "sta')  # a write cut by the kill
    r = cli("run", str(suite), "--out", str(out), "--no-progress", "--no-report", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "torn or corrupt result line" in r.stderr
    df = harness.load_results(out)
    assert df.cell_id.nunique() == 6
    assert set(df.status) == {"ok", "skipped"}
    first_run = {r["run_id"] for r in before}
    kept = df[df.cell_id.isin(done_before)]
    # finished cells were not recomputed: their rows are still the first run's
    complete_before = {c for c in done_before
                       if sum(r["cell_id"] == c for r in before) == before[[r["cell_id"] for r in before].index(c)]["cell_rows"]}
    assert set(kept[kept.cell_id.isin(complete_before)].run_id) <= first_run


def test_bad_suite_exits_2_naming_file_and_key(tmp_path):
    doc = suite_doc(tmp_path, ["dynamic-int"])
    r = cli("run", str(write_suite(tmp_path, doc)), cwd=tmp_path)
    assert r.returncode == 2
    assert "suite.yaml: compressions[0].plugin: Unknown compression 'dynamic-int'. Did you mean: dynamic-int8" in r.stderr
    assert "Traceback" not in r.stderr


def test_only_filters_cells(run_suite_dict):
    df = run_suite_dict(suite_doc(Path("/u"), ["none", "needs-tpu"]) | {"settings": {}},
                        pm=make_plugin_manager(__import__("faulty")), only=["*/needs-*"])
    assert df.compression.unique().tolist() == ["needs-tpu"]


@pytest.mark.slow
def test_one_worker_per_device_pinned_with_cuda_visible_devices(tmp_path):
    """Simulates two GPUs: each worker is pinned to one, sees it as cuda:0, and cells are
    spread over both (CI has no GPU; the real CUDA path is checked on a GPU machine)."""
    comps = [{"plugin": "where-am-i", "name": f"w{i}", "params": {"tag": i}} for i in range(3)]
    suite = write_suite(tmp_path, two_tasks(suite_doc(tmp_path, comps)))
    r = cli("run", str(suite), "--out", str(tmp_path / "out"), "--devices", "cuda:0,cuda:1",
            "--no-progress", "--no-report", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    df = harness.load_results(tmp_path / "out")
    assert len(df) == 6 and set(df.status) == {"skipped"}
    seen = [dict(kv.split("=") for kv in e.split()) for e in df.error]
    assert {s["visible"] for s in seen} == {"0", "1"}
    assert {s["device"] for s in seen} == {"cuda:0"}
    by_gpu = {}
    for s in seen:
        by_gpu.setdefault(s["visible"], set()).add(s["pid"])
    assert all(len(p) == 1 for p in by_gpu.values())  # one long-lived worker per GPU
    assert set(df.jobs) == {2}


def test_jobs_on_cpu_split_threads(tmp_path):
    comps = [{"plugin": "where-am-i", "name": f"w{i}", "params": {"tag": i}} for i in range(2)]
    suite = write_suite(tmp_path, two_tasks(suite_doc(tmp_path, comps)))
    r = cli("run", str(suite), "--out", str(tmp_path / "out"), "--jobs", "2", "--no-progress",
            "--no-report", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    df = harness.load_results(tmp_path / "out")
    pids = {e.split()[1] for e in df.error}
    assert len(pids) == 2 and set(df.jobs) == {2}
    assert {e.split()[0] for e in df.error} == {"visible=None"}


def test_fixed_latency_length_is_stated_and_keys_the_cell(run_suite_dict, tmp_path):
    import torch

    from harness.timing import fixed_length

    # cut and repeat: real tokens at exactly the length asked for, every position attended
    batch = {"input_ids": torch.tensor([[101, 7, 8, 102]]), "attention_mask": torch.tensor([[1, 1, 1, 0]])}
    long, short = fixed_length([batch], 10)[0], fixed_length([batch], 3)[0]
    assert long["input_ids"].tolist() == [[101, 7, 8, 102, 101, 7, 8, 102, 101, 7]]
    assert long["attention_mask"].tolist() == [[1] * 10] and short["input_ids"].tolist() == [[101, 7, 8]]

    df = run_suite_dict(suite_doc(Path("/u"), ["none"]) | {"settings": {"latency_seq_len": 24}},
                        out=tmp_path / "fixed")
    assert set(df.status) == {"ok"}
    assert set(df.seq_len) == {"fixed length: 24 tokens (real inputs cut or repeated)"}
    real = run_suite_dict(suite_doc(Path("/u"), ["none"]) | {"settings": {}}, out=tmp_path / "real")
    assert set(real.seq_len).pop().startswith("real lengths")
    zero = run_suite_dict(suite_doc(Path("/u"), ["none"]) | {"settings": {"latency_seq_len": 0}},
                          out=tmp_path / "zero")
    # the fixed length keys the cell; 0 (real lengths, the default) keeps the old key
    assert set(df.cell_id) != set(real.cell_id) and set(zero.cell_id) == set(real.cell_id)


def test_pinning_respects_the_callers_cuda_visible_devices():
    """``CUDA_VISIBLE_DEVICES=2,3 harness run`` sees cuda:0 and cuda:1; its workers must be
    pinned to the physical GPUs 2 and 3, not 0 and 1."""
    from harness.executors import physical_gpu

    assert physical_gpu("cuda:0", None) == "0" and physical_gpu("cuda:1", "") == "1"
    assert physical_gpu("cuda:0", "2,3") == "2" and physical_gpu("cuda:1", "2, 3") == "3"
    assert physical_gpu("cuda:1", "GPU-5a1c,GPU-77e0") == "GPU-77e0"  # UUIDs pass through
    assert physical_gpu("cuda:4", "2,3") == "4"  # not in the list: as given


def test_skipped_cells_are_one_console_line_per_model_and_task(tmp_path):
    comps = [{"plugin": "needs-tpu", "name": f"tpu{i}"} for i in range(3)]
    suite = write_suite(tmp_path, suite_doc(tmp_path, comps))
    r = cli("run", str(suite), "--out", str(tmp_path / "out"), "--no-progress", "--no-report", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.startswith("SKIPPED")]
    # three cells, one reason: one line naming them all (each row keeps its own reason)
    assert len(lines) == 1 and lines[0].startswith("SKIPPED: 3 cells of tiny/conll (tpu0, tpu1, tpu2): ")
    assert set(harness.load_results(tmp_path / "out").status) == {"skipped"}
