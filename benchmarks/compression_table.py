"""Markdown tables of what each compression buys and costs, from one run's results: per task,
the main metric (with its CI) and its change against the fp32 baseline, the artifact size and
its share of fp32, batch-1 p50 latency and batch-N throughput with their ratios to fp32, and
the precision and runtime really used.

    python benchmarks/compression_table.py runs/full [--baseline none]
"""

from __future__ import annotations

import argparse

import harness


def _metric(cell, name):
    row = cell[cell.metric == name]
    return None if row.empty else row.iloc[0]


def tables(df, baseline: str = "none") -> str:
    out = []
    for (model, task), cells in df.groupby(["model", "task"], sort=False):
        base = cells[(cells.compression == baseline) & (cells.status == "ok")]
        if base.empty:
            continue
        main_name = base[base.main_metric == True].metric.iloc[0]  # noqa: E712

        def value(c, name):
            r = _metric(c, name)
            return None if r is None else float(r.value)

        b_acc, b_size = value(base, main_name), value(base, "size_bytes")
        b_p50, b_thr = value(base, "latency_b1_p50_ms"), value(base, "throughput_samples_s")
        thr_bs = int(base.throughput_batch_size.iloc[0])
        out.append(f"### {model} on {task} ({main_name})\n")
        out.append(f"| compression | {main_name} (95% CI) | vs fp32 | size MB | size vs fp32 | "
                   f"b1 p50 ms | speed-up | b{thr_bs} samples/s | speed-up | precision | runtime |")
        out.append("|---|---|---|---|---|---|---|---|---|---|---|")
        for comp, c in cells.groupby("compression", sort=False):
            if (c.status != "ok").all():
                reason = str(c.error.dropna().iloc[0]) if c.error.notna().any() else ""
                out.append(f"| {comp} | {c.status.iloc[0]}: {reason[:120]} |  |  |  |  |  |  |  |  |  |")
                continue
            m = _metric(c, main_name)
            acc, size = float(m.value), value(c, "size_bytes")
            p50, thr = value(c, "latency_b1_p50_ms"), value(c, "throughput_samples_s")
            out.append(
                f"| {comp} | {acc:.4f} ({m.ci_low:.4f}-{m.ci_high:.4f}) | {acc - b_acc:+.4f} | "
                f"{size / 1e6:.1f} | {size / b_size:.0%} | {p50:.2f} | {b_p50 / p50:.2f}x | "
                f"{thr:.1f} | {thr / b_thr:.2f}x | {c.precision.iloc[0]} | {c.runtime.iloc[0]} |"
            )
        first = base.iloc[0]
        out.append(f"\nTiming inputs: {first.seq_len}; {int(first.threads)} threads; "
                   f"device {first.device_name}.\n")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results")
    ap.add_argument("--baseline", default="none", help="the compression the ratios are against")
    args = ap.parse_args()
    print(tables(harness.load_results(args.results), args.baseline))


if __name__ == "__main__":
    main()
