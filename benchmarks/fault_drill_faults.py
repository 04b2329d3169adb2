"""The faults of benchmarks/fault_drill.py: each stages one fault in a fresh work folder and
returns a :class:`fault_drill_kit.Result` (what was lost, exit status against the expected one,
orphans, a note, and any other expectation that was not met)."""

from __future__ import annotations

import os
import pickle
import shutil
import signal
import subprocess
from pathlib import Path

import fault_drill_kit as kit
from fault_drill_kit import (
    GOOD,
    SAMPLE,
    TASKS,
    Result,
    Run,
    Skipped,
    cells,
    exit_text,
    finish_together,
    labels,
    lost,
    measured,
    partial_cells,
    suite,
    summary,
    wait_rows,
)


# -- faults of rounds 1 and 2 ------------------------------------------------------------------
def worker_crash(work: Path) -> Result:
    comps = [*GOOD[:3], "exits"]  # os._exit(3) in the middle of the cell
    r = Run(suite(work, comps), work / "out")
    status, orphans, _ = r.finish()
    got = cells(work / "out")
    expect = {c for c in got if not c.endswith("/exits")}
    return Result(lost(expect, work / "out"), status, 1, orphans, summary(got))


def hang(work: Path) -> Result:
    comps = [*GOOD[:3], "hangs"]  # sleeps far past settings.timeout_s
    r = Run(suite(work, comps, timeout_s=30.0), work / "out")
    status, orphans, _ = r.finish()
    got = cells(work / "out")
    expect = {c for c in got if not c.endswith("/hangs")}
    return Result(lost(expect, work / "out"), status, 1, orphans, summary(got))


def kill_9_and_resume(work: Path) -> Result:
    s, out = suite(work), work / "out"
    r = Run(s, out)
    r.wait(until=wait_rows(out, 3))
    before = measured(out)
    os.kill(r.proc.pid, signal.SIGKILL)  # the driver only: its workers must follow
    _, orphans, _ = r.finish()
    again = Run(s, out)
    status, orphans2, _ = again.finish()
    got = cells(out)
    return Result(lost(before | set(got), out), status, 0, orphans + orphans2,
                  f"{len(before)} cells done before the kill; " + summary(got))


def torn_last_line(work: Path) -> Result:
    s, out = suite(work), work / "out"
    _, orphans, _ = Run(s, out).finish()
    before = measured(out)
    path = out / "results.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])  # cut mid-row
    status, orphans2, _ = Run(s, out).finish()
    moved = len((out / "results.jsonl.bad").read_bytes().splitlines())
    return Result(lost(before, out), status, 0, orphans + orphans2,
                  f"{moved} torn line moved to results.jsonl.bad; " + summary(cells(out)))


def corrupt_byte(work: Path) -> Result:
    s, out = suite(work), work / "out"
    Run(s, out).finish()
    before = measured(out)
    path = out / "results.jsonl"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] = 0xFF  # one byte in the middle: that line is not UTF-8 any more
    path.write_bytes(bytes(data))
    status, orphans, _ = Run(s, out).finish()
    return Result(lost(before, out), status, 0, orphans,
                  "the damaged row's cell restored from the cache; " + summary(cells(out)))


def read_only_cache(work: Path) -> Result:
    s = suite(work)
    Run(s, work / "first").finish()
    cache = work / "cache"
    for p in [cache, *cache.rglob("*")]:  # a shared cache this user may only read
        p.chmod(0o555 if p.is_dir() else 0o444)
    try:
        status, orphans, _ = Run(s, work / "out").finish()
    finally:
        for p in [cache, *cache.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)
    got = cells(work / "out")
    cached = sum(1 for _ in (work / "out" / "results.jsonl").read_text().splitlines()
                 if '"cached": true' in _)
    return Result(lost(measured(work / "first"), work / "out"), status, 0, orphans,
                  f"{cached} rows served from the read-only cache; " + summary(got))


def unwritable_cell_cache(work: Path) -> Result:
    cache = work / "cache"
    cache.mkdir()
    (cache / "cells").write_text("a file where the cell cache folder should be")
    status, orphans, err = Run(suite(work), work / "out").finish()
    got = cells(work / "out")
    warned = sum("Warning: cannot create the cell cache folder" in line for line in err.splitlines())
    return Result(lost(set(got), work / "out") + [c for c in got if got[c]["status"] == "failed"],
                  status, 0, orphans, f"{warned} warning; " + summary(got))


def bad_data_folder(work: Path) -> Result:
    data = work / "data"
    shutil.copytree(SAMPLE, data)
    train = data / "train.txt"
    train.write_text(train.read_text().replace("I-ORG", "Q-ORG", 1))  # not an IOB tag
    status, orphans, _ = Run(suite(work, data_dir=data), work / "out").finish()
    got = cells(work / "out")
    expect = {c for c in got if "/conll-b/" not in c}
    bad = next((v["error"] for c, v in got.items() if v["status"] == "failed"), "")
    return Result(lost(expect, work / "out"), status, 2, orphans, f"{summary(got)}: {bad[:90]}...")


# -- round 3 -----------------------------------------------------------------------------------
TORN = '{"run_id": "x", "cell_id": "y", "met'  # a last line cut mid-row, no newline


def two_runs(work: Path, wait: bool = False) -> Result:
    """Two runs on one --out, one --only per task, started together on a torn results file:
    one exits 2 naming the other's pid (or, with --wait, runs after it); nothing an exit-0 run
    measured is lost."""
    s, out = suite(work), work / "out"
    out.mkdir()
    (out / "results.jsonl").write_text(TORN)
    extra = ("--wait", "300") if wait else ()
    runs = [Run(s, out, "--only", f"*/{t}/*", *extra) for t in TASKS]
    ended = finish_together(runs)
    expect, problems, said = set(), [], []
    for mine, (code, _, err), other in zip(TASKS, ended, reversed(runs)):
        if code == 0:
            expect |= labels(tasks=(mine,))
        elif code == 2:
            problems += _named_holder(err, other.proc.pid)
        said.append(f"*/{mine}/*: {exit_text(code)}{' after waiting' if 'waiting up to' in err else ''}")
    codes = " and ".join(sorted(exit_text(code) for code, _, _ in ended))
    torn = "set aside" if (out / "results.jsonl.bad").exists() else "NOT set aside"
    note = f"{', '.join(said)}; torn line {torn}; {summary(cells(out))}"
    return Result(lost(labels() if wait else expect, out), codes,
                  "0 and 0" if wait else ("0 and 2", "0 and 0"), sum(o for _, o, _ in ended),
                  note, problems)


def _named_holder(err: str, pid: int) -> list[str]:
    """What is wrong with the stderr of a run refused because run ``pid`` holds the folder."""
    if "Traceback" in err:
        return ["a Traceback from the refused run"]
    if f"in use by another harness run (pid {pid} " not in err:
        return [f"the refused run does not name pid {pid}: {err.strip()[-200:]!r}"]
    return []


def two_runs_waiting(work: Path) -> Result:
    return two_runs(work, wait=True)


def disk_full(work: Path) -> Result:
    """The --out folder on an 8 MiB tmpfs that the sabotage plugin fills after the first cell."""
    mnt = work / "small-disk"
    mnt.mkdir()
    why = _mount_tmpfs(mnt, "8m")
    if why:
        raise Skipped(f"cannot mount an 8 MiB tmpfs ({why}); needs root")
    try:
        return _fill_then_resume(work, mnt)
    finally:
        if kit.KEEP:  # the tmpfs goes away: keep a copy of what the runs wrote there
            shutil.copytree(mnt, work / "small-disk-copy", ignore=shutil.ignore_patterns("filler.bin"))
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, check=False)


def _mount_tmpfs(mnt: Path, size: str) -> str | None:
    """Mount a tmpfs of ``size`` on ``mnt``: None, or why it could not be."""
    if shutil.which("mount") is None:
        return "no mount command"
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)],
                       capture_output=True, text=True, check=False)
    return None if r.returncode == 0 else (r.stderr.strip() or f"mount exited {r.returncode}")


def _fill_then_resume(work: Path, mnt: Path) -> Result:
    s, out = suite(work), mnt / "run"
    r = Run(s, out, plugins=("sabotage",), env={"HARNESS_TEST_FILL_DISK": str(mnt)})
    status, orphans, err = r.finish()
    problems = _one_error_line(err, "no space left", str(out))
    before = {c: v for c, v in cells(out).items() if v["status"] in ("ok", "skipped")}
    first_runs = {v["run_id"] for v in before.values()}
    finished = {p.stem for p in (work / "cache" / "cells").glob("*.json")}
    finished |= {v["cell_id"] for v in before.values()}  # in the cell cache, or in results
    (mnt / "filler.bin").unlink(missing_ok=True)
    again = Run(s, out)
    status2, orphans2, _ = again.finish()
    redone = sorted(c for c, v in cells(out).items() if v["cell_id"] in finished
                    and v["run_id"] not in first_runs and not v["cached"])
    if redone:
        problems.append(f"recomputed although finished before the disk filled: {redone}")
    note = (f"{len(finished)} cells finished before the disk filled ({len(before)} in the results); "
            f"re-run: {again.stdout.split(';')[0]}")
    return Result(lost(labels(), out), f"{exit_text(status)}, then {exit_text(status2)}",
                  "1, then 0", orphans + orphans2, note, problems)


def _one_error_line(err: str, *needles: str) -> list[str]:
    """What is wrong with ``err`` if it should hold one 'Error:' line (no traceback) that
    contains every needle."""
    lines = [line for line in err.splitlines() if line.startswith("Error:")]
    problems = ["a Traceback on stderr"] if "Traceback" in err else []
    if len(lines) != 1 or not all(n in lines[0] for n in needles):
        problems.append(f"{len(lines)} 'Error:' line(s), wanted one with {list(needles)}: "
                        f"{[line[:200] for line in lines[:2]]}")
    return problems


def kill_while_recording(work: Path) -> Result:
    """The sabotage plugin SIGKILLs the driver when the first row of a dynamic-int8 cell has
    been recorded: every cell in the results must be whole, and the re-run completes the rest."""
    s, out = suite(work), work / "out"
    r = Run(s, out, plugins=("sabotage",), env={"HARNESS_TEST_KILL_AT": "dynamic-int8"})
    status, orphans, _ = r.finish()
    partial = partial_cells(out) if (out / "results.jsonl").exists() else []
    whole = len(measured(out))
    status2, orphans2, _ = Run(s, out).finish()
    return Result(lost(labels(), out), f"{exit_text(status)}, then {exit_text(status2)}",
                  "SIGKILL, then 0", orphans + orphans2,
                  f"{whole} whole cells and {len(partial)} partial before the kill; "
                  + summary(cells(out)), [f"partial cell: {p}" for p in partial])


class _Bomb:
    """Unpickling this creates ``path``: a file that can only come from code execution."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def poisoned_cache(work: Path) -> Result:
    """Every file of a filled cache replaced by a pickle bomb; a fresh --out on that cache must
    rebuild each cell (or fail naming the corrupt entry) and never unpickle anything."""
    s, cache, marker = suite(work), work / "cache", work / "unpickled"
    Run(s, work / "first").finish()
    files = [p for p in cache.rglob("*") if p.is_file()]
    for p in files:
        p.write_bytes(pickle.dumps(_Bomb(marker)))
    status, orphans, err = Run(s, work / "out").finish()
    got = cells(work / "out")
    named = {c for c, v in got.items() if v["status"] == "failed" and str(cache) in str(v["error"])}
    problems = [f"{marker} exists: a cache file was unpickled"] if marker.exists() else []
    if "Traceback" in err:
        problems.append(f"a Traceback on stderr, ending {err.strip().splitlines()[-1][:160]!r}")
    note = (f"{len(files)} cache files poisoned; marker {'CREATED' if marker.exists() else 'absent'}; "
            f"{len(named)} failed naming the entry; {summary(got)}")
    return Result(lost(measured(work / "first") - named, work / "out"), status, (0, 1), orphans,
                  note, problems)


LONG_TASK = "t" * 300


def hostile_names(work: Path) -> Result:
    """A suite named ../../../escaped with a 300-character task name, run with the default --out
    from a cwd four folders deep in the work folder: everything lands in <cwd>/runs/<one folder>."""
    from harness.predictions import PREDICTIONS_DIR

    comps, tasks = GOOD[:2], ("conll-a", LONG_TASK)
    s = suite(work, comps, name="../../../escaped", tasks=tasks)
    cwd, runs = work / "a" / "b" / "c" / "cwd", work / "a" / "b" / "c" / "cwd" / "runs"
    cwd.mkdir(parents=True)
    before = set(work.rglob("*"))
    status, orphans, _ = Run(s, None, cwd=cwd).finish()
    outside = sorted(str(p.relative_to(work)) for p in set(work.rglob("*")) - before
                     if not p.is_relative_to(runs) and not p.is_relative_to(work / "cache"))
    folders = sorted(runs.iterdir()) if runs.is_dir() else []
    problems = [f"written outside {runs}: {outside[:3]}"] if outside else []
    if len(folders) != 1:
        return Result(sorted(labels(comps, tasks)), status, 0, orphans, "no run folder",
                      [*problems, f"{len(folders)} folders in {runs}, wanted 1"])
    out = folders[0]
    got = cells(out)
    preds = sorted((out / PREDICTIONS_DIR).iterdir()) if (out / PREDICTIONS_DIR).is_dir() else []
    ok = sum(v["status"] == "ok" for v in got.values())
    if len(preds) != ok or any(len(p.name.encode()) > 255 for p in preds):
        problems.append(f"{len(preds)} predictions files for {ok} ok cells")
    note = f"run folder runs/{out.name}; {len(preds)} predictions files; {summary(got)}"
    return Result(lost(labels(comps, tasks), out), status, 0, orphans, note, problems)


FAULTS = [
    ("worker crash (os._exit mid-cell)", worker_crash),
    ("hang past timeout_s (30 s)", hang),
    ("SIGKILL of the driver + resume", kill_9_and_resume),
    ("torn last line + resume", torn_last_line),
    ("corrupt byte in results.jsonl + resume", corrupt_byte),
    ("read-only cache (chmod a-w)", read_only_cache),
    ("unwritable cell cache folder", unwritable_cell_cache),
    ("bad data folder (bad tag, line 3)", bad_data_folder),
    ("two runs into one --out (torn last line)", two_runs),
    ("two runs into one --out, both --wait 300", two_runs_waiting),
    ("disk full mid-run", disk_full),
    ("SIGKILL while a cell's rows are recorded", kill_while_recording),
    ("poisoned cache (pickle payload in every cache file)", poisoned_cache),
    ("hostile names (300-char task name, suite named ../../../escaped)", hostile_names),
]
