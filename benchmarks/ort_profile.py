"""Per-operator time of saved ONNX graphs under ONNX Runtime's profiler (issue 16).

Runs each ``.onnx`` on the batch-1 inputs that ``ort_outside_check.py`` dumped (``inputs-*.npz``)
with ``SessionOptions.enable_profiling``, reads the profiler's JSON trace and sums the node
events by operator type: where a batch-1 call spends its time (plain onnxruntime, no harness)::

    python benchmarks/ort_profile.py runs/ort-outside/inputs-conll2003.npz \\
        runs/ort-outside/onnx/model.onnx runs/ort-outside/ort-int8/model.onnx --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ort_outside_check import load_feeds  # noqa: E402  (plain numpy, no harness)


def profile(onnx_path: str, feeds: list[dict], threads: int, passes: int = 2) -> tuple[dict[str, float], float]:
    """({op type: µs per call}, µs per call of the whole run) over ``passes`` passes."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    so.enable_profiling = True
    so.profile_file_prefix = str(Path(onnx_path).with_suffix("")) + "-profile"
    sess = ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    feeds = [{n: f[n] for n in names} for f in feeds]
    for f in feeds[:10]:
        sess.run(None, f)
    calls = 0
    for _ in range(passes):
        for f in feeds:
            sess.run(None, f)
            calls += 1
    trace = json.loads(Path(sess.end_profiling()).read_text())
    per_op: dict[str, float] = defaultdict(float)
    runs: list[float] = []
    for ev in trace:
        if ev.get("cat") == "Node" and ev.get("name", "").endswith("_kernel_time"):
            per_op[ev.get("args", {}).get("op_name", "?")] += ev["dur"]
        elif ev.get("cat") == "Session" and ev.get("name") == "model_run":
            runs.append(ev["dur"])
    timed = runs[-calls:]  # the warm-up calls come first
    scale = len(runs) or 1
    return {k: v / scale for k, v in per_op.items()}, sum(timed) / max(len(timed), 1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("inputs", help="inputs-*.npz written by ort_outside_check.py")
    ap.add_argument("graphs", nargs="+")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--top", type=int, default=8)
    args = ap.parse_args()
    feeds = load_feeds(args.inputs)
    for g in args.graphs:
        ops, per_call = profile(g, feeds, args.threads)
        total = sum(ops.values()) or 1.0
        print(f"\n{g}: {per_call / 1000:.3f} ms per call (mean), kernels {total / 1000:.3f} ms, {args.threads} threads")
        for op, us in sorted(ops.items(), key=lambda kv: -kv[1])[: args.top]:
            print(f"  {op:28s} {us / 1000:7.3f} ms  {100 * us / total:5.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
