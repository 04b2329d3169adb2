"""Outside check of the harness's batch-1 timer for the ONNX Runtime compressions.

For each compression given (default: onnx, ort-int8, ort-static-int8), the harness builds the
cell's artifact (fine-tuned model from the suite's cache, the compression's cached ``.onnx``),
saves it with ``Predictor.save`` and dumps the cell's 64 batch-1 latency inputs
(``task.latency_batches(model, 1, 64, seed)``) to ``inputs.npz``. Then, alternating in one
process (ABBA order over ``--rounds`` rounds, so the machine's drift hits both alike):

* the harness: ``harness.timing.measure_latency`` on the plugin's predictor, as a cell runs it;
* the outside timer: ``plain_p50`` below, nothing from harness: its own
  ``onnxruntime.InferenceSession`` on the saved file with the same thread count and graph
  optimisation level, ``time.perf_counter`` around ``session.run`` on the same inputs.

The check passes when the harness's p50 is within 10% of the outside p50, judged on the median
of the per-round ratios (adjacent rounds share the machine's load, so this is robust to drift on
a shared machine; the ratio of the overall medians is printed too). The outside timer
also runs on its own, without importing harness::

    python benchmarks/ort_outside_check.py --plain OUT/ort-int8/model.onnx OUT/inputs-conll.npz --threads 2

Usage (MiniLM on the shipped CoNLL sample; the first run fine-tunes, ~2 min on 2 cores)::

    python benchmarks/ort_outside_check.py --suite suites/quickstart.yaml --task conll2003-sample
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

TOLERANCE = 0.10


def plain_p50(onnx_path: str, feeds: list[dict[str, Any]], *, threads: int, opt_level: str = "ORT_ENABLE_ALL",
              passes: int = 4, warmup: int = 10) -> float:
    """Median ms of ``session.run`` over ``passes`` passes of ``feeds``: plain onnxruntime."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, opt_level)
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    sess = ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    feeds = [{n: f[n] for n in names} for f in feeds]
    for i in range(warmup):
        sess.run(None, feeds[i % len(feeds)])
    ms = []
    for _ in range(passes):
        for f in feeds:
            t = time.perf_counter()
            sess.run(None, f)
            ms.append((time.perf_counter() - t) * 1000)
    return statistics.median(ms)


def load_feeds(npz: str) -> list[dict[str, Any]]:
    import numpy as np

    data = np.load(npz)
    count = len({k.split("/")[0] for k in data.files})
    return [{k.split("/", 1)[1]: data[k] for k in data.files if k.startswith(f"{i}/")} for i in range(count)]


def harness_side(args: argparse.Namespace) -> list[dict[str, Any]]:
    import copy

    import numpy as np

    from harness.api import CellContext
    from harness.cell import LATENCY_INPUTS, PluginSet, scoped_identity
    from harness.suite import Entry, load_suite
    from harness.timing import PeakMemory, measure_latency

    suite = load_suite(Path(args.suite))
    s = suite.settings
    plugins = PluginSet.build([], [])
    task_entry = next(t for t in suite.tasks if t.name == args.task)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ctx = CellContext(device="cpu", seed=s.seed, cache_dir=Path(s.cache_dir).absolute(), work_dir=out,
                      show_progress=False)
    task = plugins.create(task_entry)
    model = plugins.create(suite.models[0])
    # the identity a cell gives the model, so the suite's cached fine-tune is found
    loaded = task.fit(scoped_identity(suite.models[0], model, model.load(task.head(), ctx)), ctx)
    batches = task.latency_batches(loaded, 1, LATENCY_INPUTS, s.seed)
    inputs = out / f"inputs-{args.task}.npz"
    np.savez(inputs, **{f"{i}/{k}": v.numpy() for i, b in enumerate(batches) for k, v in b.items()})
    feeds = load_feeds(str(inputs))
    results = []
    for name in args.compressions:
        params = {"threads": args.threads} if args.threads else {}
        comp = plugins.create(Entry(kind="compression", plugin=name, name=name, params=params, where="cli"))
        clone = copy.copy(loaded)
        clone.module = copy.deepcopy(loaded.module)
        pred = comp.apply(clone, task, ctx)
        saved = pred.save(out / name)
        d = pred.describe()
        h, p = [], []
        for r in range(args.rounds):
            for who in (("harness", "plain") if r % 2 == 0 else ("plain", "harness")):
                if who == "plain":
                    p.append(plain_p50(str(saved), feeds, threads=d["threads"],
                                       opt_level=d["graph_optimization_level"], passes=args.passes))
                else:
                    with PeakMemory(pred.device) as mem, mem.paused():
                        lat = measure_latency(pred, batches, warmup=10, min_iterations=args.passes * len(batches),
                                              min_duration_s=0)
                    h.append(lat.percentile(50))
        hm, pm = statistics.median(h), statistics.median(p)
        # adjacent rounds share the machine's state: the median of their ratios is robust to
        # drift (other processes on a shared machine) in a way the ratio of medians is not
        paired = statistics.median(a / b for a, b in zip(h, p))
        results.append({"task": args.task, "compression": name, "precision": pred.precision,
                        "threads": d["threads"], "harness_p50_ms": hm, "plain_p50_ms": pm, "ratio": hm / pm,
                        "paired_ratio": paired, "harness_round_p50s": h, "plain_round_p50s": p, "onnx": str(saved),
                        "ok": abs(paired - 1) <= TOLERANCE})
        print(f"{name:16s} harness p50 {hm:8.3f} ms   plain onnxruntime p50 {pm:8.3f} ms   "
              f"ratio {hm / pm:.3f}  paired {paired:.3f}  {'ok' if results[-1]['ok'] else 'OUTSIDE 10%'}",
              flush=True)
    (out / f"outside-{args.task}.json").write_text(json.dumps(results, indent=2))
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", default="suites/quickstart.yaml")
    ap.add_argument("--task", default="conll2003-sample")
    ap.add_argument("--compressions", nargs="+", default=["onnx", "ort-int8", "ort-static-int8"])
    ap.add_argument("--out", default="runs/ort-outside")
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--passes", type=int, default=1)
    ap.add_argument("--plain", nargs=2, metavar=("ONNX", "NPZ"), help="only the outside timer, no harness")
    ap.add_argument("--threads", type=int, default=None,
                    help="intra-op threads (the compressions' threads parameter; default: torch's thread "
                         "count; with --plain: all cores)")
    args = ap.parse_args()
    if args.plain:
        import os

        p50 = plain_p50(args.plain[0], load_feeds(args.plain[1]), threads=args.threads or os.cpu_count() or 1,
                        passes=args.passes)
        print(f"plain onnxruntime p50 {p50:.3f} ms")
        return 0
    return 0 if all(r["ok"] for r in harness_side(args)) else 1


if __name__ == "__main__":
    sys.exit(main())
