"""Faults of issue 24 (reliability round 3): two runs into one folder, a full disk, a kill while
a cell's rows are written, hand-edited or inconsistent results. Each test fails without its fix."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from suite_kit import MODEL, PLUGINS, ner_entry, write_suite

import harness
from harness.fsutil import FolderLock
from harness.results import ResultsWriter, export, read_rows

NER = ner_entry(32)


def suite_file(tmp: Path, compressions) -> Path:
    return write_suite(tmp, compressions, tasks=[NER])


def harness_run(suite: Path, out: Path, *args: str, env: dict | None = None,
                plugins: str = "faulty,sabotage", jobs: int = 0) -> subprocess.Popen:
    """``harness -p PLUGINS run SUITE --out OUT --jobs JOBS ...`` in a new process."""
    cmd = [sys.executable, "-m", "harness", *sum((["-p", p] for p in plugins.split(",")), []),
           "run", str(suite), "--out", str(out), "--jobs", str(jobs), "--no-progress", "--no-report",
           *args]
    return subprocess.Popen(cmd, env={**os.environ, "PYTHONPATH": str(PLUGINS), **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(p: subprocess.Popen, timeout: float = 240) -> tuple[int, str, str]:
    out, err = p.communicate(timeout=timeout)
    return p.returncode, out, err


def cell_groups(path: Path) -> dict[tuple[str, str], list[dict]]:
    """Rows of a results file by (cell_id, run_id)."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in read_rows(path):
        groups.setdefault((row["cell_id"], row["run_id"]), []).append(row)
    return groups


# -- 2. two runs into one folder ----------------------------------------------------------------
@pytest.mark.slow
def test_two_runs_into_one_folder_lose_no_rows(tmp_path):
    """Two runs on one --out, each with its own --only, started together while results.jsonl has
    a torn last line. Before the fix both exited 0 and one run's rows could vanish (each run's
    repair replaced the file the other was appending to). Now the second exits 2 naming the
    holder's pid, or with --wait runs after it; every run that exits 0 has all its rows."""
    slow = [{"plugin": "slow", "name": f"slow{i}", "params": {"seconds": 1.0}} for i in range(6)]
    suite = suite_file(tmp_path, slow)
    for wait, out in ((None, tmp_path / "nowait"), ("120", tmp_path / "wait")):
        out.mkdir()
        (out / "results.jsonl").write_text('{"run_id": "x", "cell_id": "y", "met')  # torn
        extra = ("--wait", wait) if wait else ()
        runs = {pattern: harness_run(suite, out, "--only", pattern, *extra)
                for pattern in ("*/*/slow[012]", "*/*/slow[345]")}
        ended = {pattern: finish(p) for pattern, p in runs.items()}
        rows = read_rows(out / "results.jsonl")
        for pattern, (code, _, err) in ended.items():
            assert code in (0, 2), err
            if code == 0:
                mine = {r["compression"] for r in rows if r["status"] == "skipped"}
                want = {f"slow{c}" for c in pattern[-4:-1]}
                assert want <= mine, (pattern, mine)
            else:
                assert wait is None, err  # with --wait both finish
                assert "in use by another harness run (pid " in err and "Traceback" not in err, err
        assert 0 in [code for code, _, _ in ended.values()]
        if wait:
            assert len({r["compression"] for r in rows}) == 6  # both ran, one after the other


def test_the_folder_lock_dies_with_its_holder(tmp_path):
    """flock: a holder killed with SIGKILL leaves no stale lock; while it lives, the holder's
    pid is what a second run is told."""
    code = ("import sys, time; from harness.fsutil import FolderLock; "
            "assert FolderLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(60)")
    p = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None and p.stdout.readline().strip() == "held"
        lock = FolderLock(tmp_path)
        assert not lock.acquire()
        assert f"pid {p.pid} since" in lock.holder()
        p.send_signal(signal.SIGKILL)
        p.wait(10)
        assert lock.acquire(wait_s=5)
        lock.release()
    finally:
        p.kill()


# -- 3. a full disk -----------------------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs (needs root and mount; skipped elsewhere)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)],
            capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.mark.slow
def test_a_full_disk_is_one_line_and_the_finished_cells_are_kept(tmp_path, small_disk):
    """The out folder's disk fills after the first cell. Before the fix: exit 1 with three
    chained tracebacks that never named the folder. Now: one line naming the folder and 'no
    space left', exit 1; the next run (with space) restores the first cell from the cell cache."""
    suite = suite_file(tmp_path, ["none", "dynamic-int8"])
    out = small_disk / "run"
    code, _, err = finish(harness_run(suite, out, env={"HARNESS_TEST_FILL_DISK": str(small_disk)},
                                      jobs=1))
    assert code == 1, err
    assert "Traceback" not in err and "leaked" not in err, err  # an idle worker ends cleanly
    lines = [line for line in err.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1 and "no space left" in lines[0] and str(out) in lines[0], err
    first = {r["cell_id"] for r in read_rows(out / "results.jsonl")}
    assert len(first) == 1  # the first cell's rows landed before the disk filled
    assert all((tmp_path / "cache" / "cells" / f"{c}.json").is_file() for c in first)
    (small_disk / "filler.bin").unlink()
    code, stdout, err = finish(harness_run(suite, out))
    assert code == 0, err
    # nothing recomputed: the first cell's rows are in the folder; the second, whose rows met
    # the full disk, is in the cell cache
    assert stdout.startswith("1 cached, 1 reused"), stdout


def test_an_export_on_a_full_disk_keeps_the_previous_files(tmp_path, small_disk):
    """Every export is written to a temporary file and renamed: before the fix, a full disk
    left results.csv truncated and `harness report` could not read it."""
    rows = [{"run_id": "r", "cell_id": f"c{i}", "model": "m", "task": "t", "compression": f"c{i}",
             "status": "ok", "metric": "accuracy", "value": 0.5, "cell_rows": 1} for i in range(3)]
    w = ResultsWriter(tmp_path)
    for r in rows:
        w.write(r)
    w.close()
    df = harness.load_results(tmp_path)
    export(df, small_disk)
    bigger = df.loc[df.index.repeat(2)]
    with open(small_disk / "filler.bin", "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * (1 << 16))
        except OSError:
            pass
    with pytest.raises(OSError):
        export(bigger, small_disk)
    for fmt in ("csv", "json", "parquet"):
        assert len(harness.load_results(small_disk / f"results.{fmt}")) == 3, fmt
    assert not [p for p in small_disk.iterdir() if p.name.endswith(".tmp")]


# -- 4. a kill while a cell's rows are written -----------------------------------------------------
@pytest.mark.slow
def test_a_kill_while_rows_are_recorded_leaves_whole_cells(tmp_path):
    """SIGKILL of the driver as the second cell's first row is recorded. Before the fix, rows
    were written one at a time with the hook between them: the cell was left with 1 of its
    ~20 rows, `harness report` listed it as ok with blank size and latency. Now a cell's rows
    land together; the resumed run completes the rest."""
    suite = suite_file(tmp_path, ["none", "dynamic-int8"])
    out = tmp_path / "out"
    code, _, err = finish(harness_run(suite, out, env={"HARNESS_TEST_KILL_AT": "dynamic-int8"}))
    assert code == -signal.SIGKILL, err
    groups = cell_groups(out / "results.jsonl")
    assert len(groups) == 2
    for rows in groups.values():
        assert len(rows) == rows[0]["cell_rows"] > 5
    code, stdout, err = finish(harness_run(suite, out))
    assert code == 0 and "2 reused" in stdout, (stdout, err)


def test_a_write_cut_short_is_ignored_by_every_reader_and_set_aside(tmp_path, monkeypatch):
    """The kernel cuts a cell's write short (a kill inside the write call): the cell's complete
    lines are not a result. load_results, the report and compare ignore it; the next run's
    repair moves its lines aside."""
    import harness.results as results

    def rows(cell, n):
        return [{"run_id": "r", "cell_id": cell, "model": "m", "task": "t", "compression": cell,
                 "status": "ok", "metric": f"m{i}", "value": 1.0, "cell_rows": n} for i in range(n)]

    w = ResultsWriter(tmp_path)
    w.write_cell(rows("whole", 4))
    real_write = os.write

    def half_then_killed(fd, data):
        real_write(fd, bytes(data[: len(data) // 2 + 10]))  # 3 lines and a torn one
        raise KeyboardInterrupt

    monkeypatch.setattr(results.os, "write", half_then_killed)
    with pytest.raises(KeyboardInterrupt):
        w.write_cell(rows("cut", 6))
    monkeypatch.undo()
    w.close()
    with pytest.warns(UserWarning, match=r"ignored 1 incomplete cell\(s\).*m/t/cut"):
        df = harness.load_results(tmp_path)
    assert set(df.compression) == {"whole"}
    with pytest.warns(UserWarning):
        ResultsWriter(tmp_path).close()  # repair: the cut cell's lines go to results.jsonl.bad
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert {r["cell_id"] for r in read_rows(tmp_path / "results.jsonl")} == {"whole"}
    assert (tmp_path / "results.jsonl.bad").read_text().count("\n") == 4  # 3 whole lines + torn


# -- 6. hand-edited or inconsistent results --------------------------------------------------------
@pytest.fixture
def ner_run(run_suite_dict, tmp_path):
    out = tmp_path / "base"
    run_suite_dict({"models": [MODEL], "tasks": [NER], "compressions": ["none"]}, out=out)
    return out


@pytest.mark.slow
def test_rows_without_a_required_key_and_duplicates_are_dropped_with_a_warning(ner_run, tmp_path):
    path = ner_run / "results.jsonl"
    lines = path.read_text().splitlines()
    phantom = json.loads(lines[0])
    del phantom["task"]
    path.write_text("\n".join(lines + [json.dumps(phantom)] + lines[:5]) + "\n")
    from click.testing import CliRunner

    from harness.cli import main

    r = CliRunner().invoke(main, ["report", str(ner_run), "-o", str(tmp_path / "rep")])
    assert r.exit_code == 0, r.output
    assert f"line {len(lines) + 1}) result row(s) without the required key(s) task" in r.stderr
    assert "dropped 5 exact duplicate result row(s)" in r.stderr
    df = harness.load_results(tmp_path / "rep" / "results.csv")
    assert len(df) == len(lines)  # no phantom cell, no duplicate
    assert set(zip(df.model, df.task, df.compression)) == {("tiny", "conll", "none")}


@pytest.mark.slow
def test_compare_refuses_a_recorded_change_its_predictions_do_not_show(ner_run, tmp_path):
    """The recorded entity F1 of the current run is lowered by 0.05 by hand while its
    per-example predictions are unchanged. Before the fix the paired test re-scored the
    predictions, found delta 0 and the gate PASSED; now it is an inconsistency: exit 2."""
    from click.testing import CliRunner

    from harness.cli import main

    cur = tmp_path / "cur"
    shutil.copytree(ner_run, cur)
    path = cur / "results.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    main_row = next(r for r in rows if r.get("main_metric"))
    main_row["value"] -= 0.05
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    r = CliRunner().invoke(main, ["compare", str(ner_run), str(cur)])
    assert r.exit_code == 2, r.output
    assert "cell tiny/conll/none: the recorded change of " + main_row["metric"] in r.stderr
    same = CliRunner().invoke(main, ["compare", str(ner_run), str(ner_run)])
    assert same.exit_code == 0, same.output
