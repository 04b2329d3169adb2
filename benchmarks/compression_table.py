"""Markdown tables of what each compression buys and costs, from one run's results: per task,
the main metric (with its CI) and its change against the fp32 baseline with a paired 95% CI
(McNemar / paired bootstrap on the per-example outputs of the two cells, when the run saved
them), the artifact size and its share of fp32, batch-1 p50 latency and batch-N throughput with
their ratios to fp32, the time to build the compressed model, and the precision and runtime
really used.

    python benchmarks/compression_table.py runs/full [--baseline none]

When the run timed its cells in rotation (``settings.timing_rounds``, docs/methodology.md), the
latency and throughput columns are the rotation figures and their ratios the medians of the
per-round ratios to the baseline, which hold on a shared machine where a suite's cells are
timed minutes apart; otherwise each cell's own timing.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

import harness
from harness.gate.paired import paired_tables
from harness.predictions import find, read_predictions


def _metric(cell, name):
    row = cell[cell.metric == name]
    return None if row.empty else row.iloc[0]


def _value(cell, name) -> float | None:
    r = _metric(cell, name)
    return None if r is None else float(r.value)


def _ci(m) -> str:
    ok = pd.notna(m.ci_low) and pd.notna(m.ci_high)
    return f" ({m.ci_low:.4f}-{m.ci_high:.4f})" if ok else ""


def _paired(run: Path | None, model: str, task: str, base: str, comp: str) -> str:
    """The paired delta CI of the main metric, compression vs baseline, from the run's outputs."""
    if run is None or comp == base:
        return ""
    bf, cf = find(run, model, task, base), find(run, model, task, comp)
    if bf is None or cf is None:
        return "no outputs"
    t = paired_tables(read_predictions(bf), read_predictions(cf))
    return t if isinstance(t, str) else f"{t.ci_low:+.4f} to {t.ci_high:+.4f}"


def _build_time(c) -> str:
    """What producing the compressed model took (training included), cached or not."""
    built = c.compression_time_build_s.dropna() if "compression_time_build_s" in c else []
    t = float(built.iloc[0]) if len(built) else (_value(c, "compression_time_s") or 0.0)
    return "-" if t == 0 else (f"{t / 60:.1f} min" if t >= 90 else f"{t:.0f} s")


def _steps(c) -> str:
    if "chain_steps" not in c or c.chain_steps.isna().all():
        return str(c.compression_plugin.iloc[0])
    return " → ".join(s["plugin"] for s in json.loads(c.chain_steps.dropna().iloc[0]))


def _rotation(c, base_name: str) -> tuple[float, float, float, float] | None:
    """(p50, throughput, speed-up, throughput ratio) from the run's rotation timing, when it
    has them against ``base_name`` (its timing reference)."""
    names = ("latency_b1_rotation_p50_ms", "throughput_rotation_samples_s", "latency_b1_ratio",
             "throughput_ratio")
    got = [_value(c, n) for n in names]
    ref = c.timing_reference.dropna() if "timing_reference" in c else []
    if any(v is None for v in got) or not len(ref) or ref.iloc[0] != base_name:
        return None
    p50, thr, lat_ratio, thr_ratio = got
    return p50, thr, 1 / lat_ratio, thr_ratio


def tables(df, baseline: str = "none", run: Path | None = None) -> str:
    out = []
    for (model, task), cells in df.groupby(["model", "task"], sort=False):
        base = cells[(cells.compression == baseline) & (cells.status == "ok")]
        if base.empty:
            continue
        main_name = base[base.main_metric == True].metric.iloc[0]  # noqa: E712
        b_acc, b_size = _value(base, main_name), _value(base, "size_bytes")
        b_p50, b_thr = _value(base, "latency_b1_p50_ms"), _value(base, "throughput_samples_s")
        thr_bs = int(base.throughput_batch_size.iloc[0])
        rotated = False
        out.append(f"### {model} on {task} ({main_name})\n")
        out.append(f"| compression | steps | {main_name} (95% CI) | vs fp32 | paired 95% CI | size MB | "
                   f"size vs fp32 | b1 p50 ms | b1 speed-up | b{thr_bs} samples/s | throughput ratio | "
                   f"build time | precision | runtime |")
        out.append("|" + "---|" * 14)
        for comp, c in cells.groupby("compression", sort=False):
            if (c.status != "ok").all():
                reason = str(c.error.dropna().iloc[0]) if c.error.notna().any() else ""
                out.append(f"| {comp} | {c.status.iloc[0]}: {reason[:120]} |" + " |" * 12)
                continue
            m = _metric(c, main_name)
            acc, size = float(m.value), _value(c, "size_bytes")
            rot = _rotation(c, baseline)
            if rot is not None:
                p50, thr, up, tr = rot
                rotated = True
            else:
                p50, thr = _value(c, "latency_b1_p50_ms"), _value(c, "throughput_samples_s")
                up, tr = b_p50 / p50, thr / b_thr
            out.append(
                f"| {comp} | {_steps(c)} | {acc:.4f}{_ci(m)} | {acc - b_acc:+.4f} | "
                f"{_paired(run, model, task, baseline, comp)} | {size / 1e6:.1f} | {size / b_size:.0%} | "
                f"{p50:.2f} | {up:.2f}x | {thr:.1f} | {tr:.2f}x | {_build_time(c)} | "
                f"{c.precision.iloc[0]} | {c.runtime.iloc[0]} |"
            )
        first = base.iloc[0]
        rounds = base.timing_rounds.dropna() if "timing_rounds" in base else []
        timing = (f"latency and throughput: timed in rotation, each variant alone in its own "
                  f"process, {int(rounds.iloc[0]) if len(rounds) else '?'} rounds (median; "
                  f"ratios: median of per-round ratios)" if rotated else
                  "latency and throughput: as each cell timed itself in the run")
        threads = f"{int(first.threads)} threads" if pd.notna(first.threads) else "the runtime's own threads"
        out.append(f"\nTiming inputs: {first.seq_len}; {threads}; "
                   f"device {first.device_name}; {timing}.\n")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", help="a run folder (or a results file: then no paired CIs)")
    ap.add_argument("--baseline", default="none", help="the compression the ratios are against")
    args = ap.parse_args()
    run = Path(args.results)
    print(tables(harness.load_results(args.results), args.baseline,
                 run if run.is_dir() else None))


if __name__ == "__main__":
    main()
