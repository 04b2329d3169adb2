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
        lines += [
            f"fine-tune throughput harness/Trainer: {ft['throughput_ratio']:.2f}x (target >= 1.0); "
            f"{ft['harness_train_s']:.0f} s vs {ft['reference_train_s']:.0f} s",
            f"test entity F1 harness {ft['harness_test_entity_f1']:.4f} on "
            f"{ft['harness_gold_entities_scored']:.0f} entities vs Trainer {ref['entity_f1']:.4f} on "
            f"{ref['gold_entities_scored']} (delta {ft['harness_test_entity_f1'] - ref['entity_f1']:+.4f}; "
            "target |delta| <= 0.005)",
        ]
    if ev := load("eval_speed"):
        lines.append(
            f"evaluation harness vs Trainer.predict+seqeval: {ev['speedup_vs_reference']:.2f}x faster "
            f"(target >= 2.0), {ev['harness_eval_s']:.1f} s vs {ev['reference_eval_s']:.1f} s; "
            f"harness / pure forward {ev['overhead_vs_forward']:.3f} (median of per-round ratios "
            f"{ev.get('overhead_per_round_median', float('nan')):.3f}; target <= 1.10); "
            f"F1 {ev['harness_entity_f1']:.4f} vs {ev['reference_entity_f1']:.4f}")
    if wt := load("suite_walltime"):
        lines.append(f"quickstart cold {wt['cold_s']:.0f} s (target < 300), cached re-run "
                     f"{wt['rerun_new_out_s']:.1f} s (target < 5)")
    if cv := load("latency_cv"):
        lines.append(f"batch-1 p50 over {len(cv['runs'])} runs: {cv['p50_mean_ms']:.2f} ms, "
                     f"CV across runs {cv['p50_cv_across_runs']:.3f}")
    print("\n".join(lines) or f"no results in {out}")


if __name__ == "__main__":
    main()
