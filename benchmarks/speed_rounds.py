"""Speed ratios of a task's compressions, timed interleaved in one process: robust on a busy machine.

A suite run times each cell once, minutes apart from the others, so on a shared machine the
ratios between cells carry the load drift of those minutes. This script builds every
compression's predictor of one (model, task) from the suite's cache (run the suite first), then
times them in ``--rounds`` rounds, each round every predictor once, in a rotated order:
batch-1 latency (the harness timer, as a cell runs it: one whole pass over the task's 64 timing
inputs per round, at least ``--min-iterations`` calls) and throughput (batches of the suite's
``throughput_batch_size``). The ratio of each compression to the ``--baseline`` is taken per
round (adjacent measurements share the machine's state) and the median over rounds reported,
beside the ratio of the medians.

    python benchmarks/speed_rounds.py suites/ort.yaml --task conll2003 \\
        --compressions none onnx ort-int8 ort-static-int8 openvino-fp32 nncf-int8 \\
        --out benchmarks/results/ort_speed_conll2003.json
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any


def build_predictors(suite_file: str, task_name: str, names: list[str],
                     work: Path) -> tuple[tuple[Any, Any, Any], dict[str, Any]]:
    """(suite, {compression entry name: predictor}) for one task of ``suite_file``, from its cache."""
    from harness.api import CellContext
    from harness.cell import PluginSet, scoped_identity
    from harness.suite import load_suite

    suite = load_suite(Path(suite_file))
    s = suite.settings
    plugins = PluginSet.build([], [])
    task_entry = next(t for t in suite.tasks if t.name == task_name)
    entries = {c.name: c for c in suite.compressions}
    missing = [n for n in names if n not in entries]
    if missing:
        raise SystemExit(f"{suite_file}: no compression entries {missing} (has {sorted(entries)})")
    work.mkdir(parents=True, exist_ok=True)
    ctx = CellContext(device="cpu", seed=s.seed, cache_dir=Path(s.cache_dir).absolute(), work_dir=work,
                      show_progress=False)
    task = plugins.create(task_entry)
    model = plugins.create(suite.models[0])
    # the identity a cell gives the model, so the suite's cached fine-tune is found
    loaded = task.fit(scoped_identity(suite.models[0], model, model.load(task.head(), ctx)), ctx)
    preds = {}
    for name in names:
        clone = copy.copy(loaded)
        clone.module = copy.deepcopy(loaded.module)
        preds[name] = plugins.create(entries[name]).apply(clone, task, ctx)
        print(f"built {name}: {preds[name].runtime} {preds[name].precision}", flush=True)
    return (suite, task, loaded), preds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("suite")
    ap.add_argument("--task", required=True)
    ap.add_argument("--compressions", nargs="+", required=True, help="compression entry names of the suite")
    ap.add_argument("--baseline", default="none")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--min-iterations", type=int, default=64)
    ap.add_argument("--throughput-s", type=float, default=1.0, help="seconds of throughput timing per round")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    names = list(dict.fromkeys([args.baseline, *args.compressions]))

    from harness.cell import LATENCY_INPUTS, THROUGHPUT_BATCHES
    from harness.provenance import cpu_flags, cpu_name
    from harness.timing import PeakMemory, measure_latency, measure_throughput

    (suite, task, loaded), preds = build_predictors(args.suite, args.task, names, Path("runs/speed-rounds"))
    s = suite.settings
    b1 = task.latency_batches(loaded, 1, LATENCY_INPUTS, s.seed)
    bn = task.latency_batches(loaded, s.throughput_batch_size, THROUGHPUT_BATCHES, s.seed)
    p50: dict[str, list[float]] = {n: [] for n in names}
    thr: dict[str, list[float]] = {n: [] for n in names}
    t0 = time.time()
    for r in range(args.rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        for n in order:
            with PeakMemory("cpu") as mem, mem.paused():
                lat = measure_latency(preds[n], b1, warmup=s.warmup, min_iterations=args.min_iterations,
                                      min_duration_s=0)
            p50[n].append(lat.percentile(50))
            thr[n].append(measure_throughput(preds[n], bn, min_duration_s=args.throughput_s)["throughput_samples_s"])
        print(f"round {r + 1}/{args.rounds}: " + "  ".join(f"{n} {p50[n][-1]:.2f} ms" for n in names), flush=True)
    base = args.baseline
    rows = []
    for n in names:
        speedup = [b / x for b, x in zip(p50[base], p50[n])]
        tratio = [x / b for b, x in zip(thr[base], thr[n])]
        rows.append({
            "compression": n, "runtime": preds[n].runtime, "precision": preds[n].precision,
            "p50_ms_median": statistics.median(p50[n]), "throughput_median": statistics.median(thr[n]),
            "b1_speedup_vs_baseline": statistics.median(speedup),
            "b1_speedup_range": [min(speedup), max(speedup)],
            "throughput_ratio_vs_baseline": statistics.median(tratio),
            "throughput_ratio_range": [min(tratio), max(tratio)],
            "p50_ms_rounds": p50[n], "throughput_rounds": thr[n],
        })
        print(f"{n:22s} b1 p50 {rows[-1]['p50_ms_median']:7.2f} ms  x{rows[-1]['b1_speedup_vs_baseline']:.2f} "
              f"(range {min(speedup):.2f}-{max(speedup):.2f})   throughput "
              f"{rows[-1]['throughput_median']:7.1f}/s  x{rows[-1]['throughput_ratio_vs_baseline']:.2f}")
    out = {
        "suite": args.suite, "task": args.task, "baseline": base, "rounds": args.rounds,
        "latency_inputs": len(b1), "throughput_batch_size": s.throughput_batch_size,
        "cpu": cpu_name(), "cpu_flags": sorted(f for f in cpu_flags() if f.startswith(("avx", "amx", "fma"))),
        "wall_s": time.time() - t0, "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
