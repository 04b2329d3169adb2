"""Evidence for rotation timing and ``compare --retime`` (docs/methodology.md, docs/regression-gate.md).

Three studies, each writing ``benchmarks/results/rotation_<study>.json``:

* ``bias``: the variants of benchmarks/rotation_study.yaml (torch fp32/int8, ONNX Runtime
  fp32/int8, OpenVINO fp32/int8 of one MiniLM), batch-1 p50, paired by round: in each round
  every variant is timed in its own process (the rotation; every other process suspended) and,
  before or after, every variant back to back in one process that holds them all (the old
  ``speed_rounds.py``); the per-round ratio cancels the machine's drift. Fresh single processes with nothing else alive ("alone")
  are timed in blocks between ``--repeats`` blocks of rounds; the CPU time the other processes
  use during each turn is recorded.
* ``hog``: ``harness run suites/quickstart.yaml --force`` on a quiet machine and with a CPU hog
  (a spinning process pinned to core 0), ``--repeats`` times each: the rotation ratios
  (``latency_b1_ratio``) against the quiet ones, and the ratios of the cells' own timings.
* ``gate``: a model run as compression ``x`` = ``slowed`` (tests/plugins/slowed.py) with factor
  0 (baseline) and 0.15 (a planted 15% slowdown per call); ``--compares`` ``harness compare
  --retime`` of the unchanged model and of the slowed one each, the CPU hog on for half of
  them; false alarms and catches at the default 10% threshold.

    python benchmarks/rotation_study.py bias hog gate
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PY = sys.executable
sys.path.insert(0, str(ROOT))


def harness(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests" / "plugins")}
    done = subprocess.run([PY, "-m", "harness", "-p", "slowed", *args], capture_output=True,
                          text=True, cwd=ROOT, env=env)
    if check and done.returncode not in (0, 1):
        raise SystemExit(f"harness {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return done


@contextlib.contextmanager
def cpu_hog(on: bool):
    """A process spinning on core 0 for the block (nothing when ``on`` is false)."""
    if not on:
        yield
        return
    hog = subprocess.Popen(["taskset", "-c", "0", PY, "-c", "while True: pass"])
    try:
        time.sleep(1.0)
        yield
    finally:
        hog.kill()
        hog.wait()


def machine() -> dict[str, Any]:
    from harness.provenance import environment

    env = environment()
    return {k: env.get(k) for k in ("cpu", "cpu_count", "cpu_isa", "platform", "torch_version")} | {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def write(name: str, doc: dict[str, Any]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"rotation_{name}.json"
    path.write_text(json.dumps({"machine": machine(), **doc}, indent=1, default=float))
    print(f"wrote {path}", flush=True)


# ---------------------------------------------------------------------------------------------


def _specs(out: Path) -> dict[str, Any]:
    """{compression: (spec, sha)} of a finished run, from the recipes in its cache."""
    from harness.replay import read_recipe
    from harness.results import read

    df = read(out)
    found = {}
    for (comp, cell_id) in df[df.status == "ok"][["compression", "cell_id"]].drop_duplicates().values:
        got = read_recipe(ROOT / ".harness-cache", cell_id)
        if got:
            found[comp] = got
    return found


def _serve_shared(conn: Any, specs: dict[str, Any]) -> None:
    """The old method's process: every predictor built in it; times the one asked for."""
    from harness.cell import PluginSet
    from harness.replay import rebuild
    from harness.rotation import _time_turn

    plugins = PluginSet.build([], [])
    built = {name: rebuild(spec, plugins, sha) for name, (spec, sha) in specs.items()}
    conn.send(("ready", None))
    while (msg := conn.recv()) is not None:
        conn.send(("timed", _time_turn(built[msg[0]], msg[1])))


class Shared:
    """A process holding every predictor (the old speed_rounds.py), suspended between turns."""

    def __init__(self, specs: dict[str, Any]) -> None:
        import multiprocessing as mp

        import psutil

        self.conn, child = mp.get_context("spawn").Pipe()
        self.proc = mp.get_context("spawn").Process(target=_serve_shared, args=(child, specs),
                                                    daemon=True)
        self.proc.start()
        assert self.conn.recv()[0] == "ready"
        self.ps = psutil.Process(self.proc.pid)
        self.ps.suspend()

    def ask(self, name: str, budget: Any) -> Any:
        """One turn of ``name`` (the process must be resumed)."""
        self.conn.send((name, budget))
        return self.conn.recv()[1]

    def close(self) -> None:
        self.ps.resume()
        self.conn.send(None)
        self.proc.join(10)


def _cpu(pids: list[int]) -> float:
    import psutil

    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system + getattr(t, "children_user", 0.0)
    return total


def _alone_block(specs: dict[str, Any], budget: Any) -> dict[str, float]:
    """Each variant in a fresh process with no other timing process alive, one turn."""
    from harness.rotation import Variant

    out = {}
    for name, (spec, sha) in specs.items():
        v = Variant(name, spec, expect_sha256=sha)
        try:
            v.ready()
            out[name] = v.time(budget).p50_ms
        finally:
            v.close()
    return out


def study_bias(args) -> None:
    """Paired by round: in each round every variant is timed in its own process (the rotation:
    the other processes suspended) and, before or after, every variant back to back in the one
    process that holds them all (the old method); per-round ratios cancel the machine's drift. Fresh single processes
    ("alone", nothing else alive) are timed in blocks between the rounds."""
    from harness.rotation import RoundBudget, Variant, start_all

    out = Path("/tmp/rotation-study/bias")
    harness("run", "benchmarks/rotation_study.yaml", "--out", str(out), "--no-report", "--no-progress")
    specs = _specs(out)
    names = list(specs)
    budget = RoundBudget(warmup=10, latency_s=0.5, throughput=False)
    alone: dict[str, list[float]] = {n: [] for n in names}
    own: dict[str, list[float]] = {n: [] for n in names}
    shared: dict[str, list[float]] = {n: [] for n in names}
    others_cpu: dict[str, list[float]] = {"own": [], "shared": []}
    for block in range(args.repeats):
        for n, v in _alone_block(specs, budget).items():
            alone[n].append(v)
        variants = [Variant(n, spec, expect_sha256=sha) for n, (spec, sha) in specs.items()]
        ready, failed = start_all(variants)
        assert not failed, failed
        host = Shared(specs)
        pids = [v.proc.pid for v in variants] + [host.proc.pid]
        try:
            for r in range(args.rounds):
                k = (block * args.rounds + r) % len(names)
                order = [*variants[k:], *variants[:k]]
                # the old method as it ran: every variant in turn in the one process, back to
                # back; the new: every variant in turn in its own process, the others suspended
                for kind in (("own", "shared") if r % 2 == 0 else ("shared", "own")):
                    if kind == "shared":
                        host.ps.resume()
                    for v in order:
                        pid = host.proc.pid if kind == "shared" else v.proc.pid
                        rest = [p for p in pids if p != pid]
                        before = _cpu(rest)
                        timed = host.ask(v.name, budget) if kind == "shared" else v.time(budget)
                        others_cpu[kind].append(_cpu(rest) - before)
                        (own if kind == "own" else shared)[v.name].append(timed.p50_ms)
                    if kind == "shared":
                        host.ps.suspend()
        finally:
            host.close()
            for v in variants:
                v.close()
    for n, v in _alone_block(specs, budget).items():
        alone[n].append(v)
    rows = []
    for n in names:
        sh = [s_ / o for s_, o in zip(shared[n], own[n], strict=True)]
        med_own = statistics.median(own[n])
        rows.append({"variant": n, "own_process_p50_ms": med_own,
                     "shared_process_p50_ms": statistics.median(shared[n]),
                     "shared_over_own_per_round": sh, "shared_over_own": statistics.median(sh),
                     "alone_p50_ms_blocks": alone[n], "alone_p50_ms": statistics.median(alone[n]),
                     "own_over_alone": med_own / statistics.median(alone[n])})
        print(f"{n:14s} own {med_own:7.3f}  shared {statistics.median(shared[n]):7.3f} "
              f"(paired {statistics.median(sh):5.2f}x)  alone {statistics.median(alone[n]):7.3f} "
              f"(own/alone {med_own / statistics.median(alone[n]):5.2f}) alone blocks "
              f"{[round(x, 2) for x in alone[n]]}", flush=True)
    cpu = {k: {"turns": len(v), "max_s": max(v), "total_s": sum(v)} for k, v in others_cpu.items()}
    print("CPU seconds the other processes used during a turn:", cpu, flush=True)
    write("bias", {"rounds": args.rounds, "repeats": args.repeats, "suite": "benchmarks/rotation_study.yaml",
                   "rows": rows, "other_processes_cpu_during_turns": cpu})


# ---------------------------------------------------------------------------------------------


def _ratios(out: Path) -> dict[str, dict[str, float]]:
    """{model/task/compression: {"rotation": latency_b1_ratio, "cell": own p50 / reference's}}."""
    from harness.results import read

    df = read(out)
    df = df[df.status == "ok"]
    out_: dict[str, dict[str, float]] = {}
    for (model, task), g in df.groupby(["model", "task"]):
        p50 = g[g.metric == "latency_b1_p50_ms"].set_index("compression").value
        rot = g[g.metric == "latency_b1_ratio"].set_index("compression").value
        for comp in rot.index:
            if comp != "none":
                out_[f"{model}/{task}/{comp}"] = {"rotation": float(rot[comp]),
                                                   "cell": float(p50[comp] / p50["none"])}
    return out_


def study_hog(args) -> None:
    runs = []
    for i in range(args.repeats):
        for hog in (False, True):
            out = Path(f"/tmp/rotation-study/hog-{i}-{int(hog)}")
            shutil.rmtree(out, ignore_errors=True)
            t0 = time.perf_counter()
            with cpu_hog(hog):
                harness("run", "suites/quickstart.yaml", "--force", "--out", str(out), "--no-report",
                        "--no-progress")
            runs.append({"hog": hog, "repeat": i, "wall_s": time.perf_counter() - t0,
                         "ratios": _ratios(out)})
            print(json.dumps(runs[-1]), flush=True)
    quiet = [r for r in runs if not r["hog"]]
    summary = {}
    for key in quiet[0]["ratios"]:
        for method in ("rotation", "cell"):
            q = statistics.median(r["ratios"][key][method] for r in quiet)
            summary[f"{key} {method}"] = {
                "quiet": q, "hog": [r["ratios"][key][method] for r in runs if r["hog"]],
                "max_deviation": max(abs(r["ratios"][key][method] / q - 1) for r in runs if r["hog"])}
    print(json.dumps(summary, indent=1))
    write("hog", {"runs": runs, "summary": summary})


# ---------------------------------------------------------------------------------------------


def _gate_runs() -> dict[str, Path]:
    import yaml

    doc = yaml.safe_load((ROOT / "benchmarks" / "rotation_study.yaml").read_text())
    runs = {}
    for name, factor in (("base", 0.0), ("slow", 0.15)):
        doc.update(name=f"rotation-gate-{name}", compressions=[
            {"name": "x", "plugin": "slowed", "params": {"factor": factor}}])
        suite = Path(f"/tmp/rotation-study/gate-{name}.yaml")
        suite.parent.mkdir(parents=True, exist_ok=True)
        suite.write_text(yaml.safe_dump(doc))
        runs[name] = Path(f"/tmp/rotation-study/gate-{name}")
        harness("run", str(suite), "--out", str(runs[name]), "--no-report", "--no-progress")
    return runs


def study_gate(args) -> None:
    runs = _gate_runs()
    results = []
    for i in range(args.compares):
        for cur in ("base", "slow"):
            hog = i % 2 == 1
            with cpu_hog(hog):
                done = harness("compare", str(runs["base"]), str(runs[cur]), "--retime",
                               str(args.rounds), "--json", "/tmp/rotation-study/gate.json")
            found = json.loads(Path("/tmp/rotation-study/gate.json").read_text())["findings"]
            lat = next(f for f in found if f["metric"] == "latency_b1_p50_ms")
            results.append({"current": cur, "hog": hog, "exit": done.returncode,
                            "status": lat["status"], "change": lat["delta_relative"],
                            "ci_low": lat["ci_low"], "ci_high": lat["ci_high"]})
            print(json.dumps(results[-1]), flush=True)
    unchanged = [r for r in results if r["current"] == "base"]
    slowed = [r for r in results if r["current"] == "slow"]
    summary = {"false_alarms": sum(r["status"] == "regression" for r in unchanged),
               "unchanged_compares": len(unchanged),
               "caught": sum(r["status"] == "regression" for r in slowed),
               "slowed_compares": len(slowed),
               "threshold": 0.10, "planted": 0.15, "rounds": args.rounds}
    print(json.dumps(summary))
    write("gate", {"compares": results, "summary": summary})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("studies", nargs="+", choices=["bias", "hog", "gate"])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3,
                    help="bias: blocks of each method; hog: quickstart runs per condition")
    ap.add_argument("--compares", type=int, default=20, help="gate: compares of each kind")
    args = ap.parse_args()
    for name in args.studies:
        {"bias": study_bias, "hog": study_hog, "gate": study_gate}[name](args)


if __name__ == "__main__":
    main()
