"""Print the ratios of a ``benchmarks/run_all.sh`` output folder, one line each, with targets.

    python benchmarks/summary.py [benchmarks/results]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/results")

    def load(name: str) -> dict | None:
        p = out / f"{name}.json"
        return json.loads(p.read_text()) if p.is_file() else None

    lines = []
    if ft := load("finetune_speed"):
        ref = ft["reference"]
        grouped = (f"; vs the Trainer with group_by_length {ft['throughput_ratio_vs_grouped']:.2f}x"
                   if "throughput_ratio_vs_grouped" in ft else "")
        lines += [
            f"fine-tune throughput harness/Trainer: {ft['throughput_ratio']:.2f}x (target >= 2.0); "
            f"{ft['harness_train_s']:.0f} s vs {ft['reference_train_s']:.0f} s{grouped}",
            f"test entity F1 at seed 42: harness {ft['harness_test_entity_f1']:.4f} on "
            f"{ft['harness_gold_entities_scored']:.0f} entities vs Trainer {ref['entity_f1']:.4f} on "
            f"{ref['gold_entities_scored']} (its own scorer)",
        ]
    for name, what in (("finetune_parity", "entity F1"), ("finetune_parity_sst2", "accuracy")):
        if (par := load(name)) and "ci95" in par:
            lo, hi = par["ci95"]
            lines.append(f"{what} parity over {par['n']} seeds (harness - Trainer, same scorer): mean "
                         f"{par['mean_delta']:+.4f}, 95% CI [{lo:+.4f}, {hi:+.4f}] (target |mean| <= "
                         "0.005 and the CI holds 0)")
    for name in ("eval_speed", "eval_speed_sst2"):
        if ev := load(name):
            lines.append(
                f"{name}: harness / pure forward {ev.get('overhead_per_round_median', float('nan')):.3f} "
                f"(median of per-round ratios; target <= 1.03); vs Trainer.predict "
                f"{ev.get('speedup_per_round_median', float('nan')):.2f}x faster (target >= 2.0)")
    if wt := load("suite_walltime"):
        lines.append(f"quickstart cold {wt['cold_s']:.0f} s (target < 300), cached re-run "
                     f"{wt['rerun_new_out_s']:.1f} s (target < 5)")
    if cv := load("latency_cv"):
        lines.append(f"batch-1 p50 over {len(cv['runs'])} runs: {cv['p50_mean_ms']:.2f} ms, "
                     f"CV across runs {cv['p50_cv_across_runs']:.3f}")
    print("\n".join(lines) or f"no results in {out}")


if __name__ == "__main__":
    main()
