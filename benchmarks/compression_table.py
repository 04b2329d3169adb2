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


def _speed(c, baseline: str, b_p50: float, b_thr: float) -> tuple[float, float, float, float]:
    """(p50, throughput, batch-1 speed-up, throughput ratio): the rotation figures against
    ``baseline`` where the run has them, else the cell's own against the baseline cell's."""
    rot = _rotation(c, baseline)
    if rot is not None:
        return rot
    p50, thr = _value(c, "latency_b1_p50_ms"), _value(c, "throughput_samples_s")
    return p50, thr, b_p50 / p50, thr / b_thr


def goals(df, baseline: str = "none", size_x: float = 10.0, speed_x: float = 10.0,
          max_drop: float = 0.01) -> str:
    """Per (model, task): the variants at least ``size_x`` smaller (saved bytes) and ``speed_x``
    faster at batch 1 than ``baseline`` within ``max_drop`` of its main metric; where none is,
    the nearest points: the most accurate one that is small and fast enough, and of those within
    the drop the one whose smaller factor (size or speed) is largest."""
    out = []
    for (model, task), cells in df.groupby(["model", "task"], sort=False):
        base = cells[(cells.compression == baseline) & (cells.status == "ok")]
        if base.empty or (cells.compression != baseline).sum() == 0:
            continue
        main_name = base[base.main_metric == True].metric.iloc[0]  # noqa: E712
        b_acc, b_size = _value(base, main_name), _value(base, "size_bytes")
        b_p50, b_thr = _value(base, "latency_b1_p50_ms"), _value(base, "throughput_samples_s")
        points = []
        for comp, c in cells[cells.status == "ok"].groupby("compression", sort=False):
            if comp == baseline:
                continue
            up = _speed(c, baseline, b_p50, b_thr)[2]
            points.append((comp, _value(c, main_name) - b_acc, b_size / _value(c, "size_bytes"), up))
        say = [f"{p[0]} ({p[1]:+.4f}, {p[2]:.1f}x smaller, {p[3]:.1f}x faster)" for p in points]
        met = [say[i] for i, p in enumerate(points) if p[2] >= size_x and p[3] >= speed_x and p[1] >= -max_drop]
        head = f"- **{model} on {task}** ({size_x:g}x smaller, {speed_x:g}x faster, within {max_drop:g}): "
        if met:
            out.append(head + "met by " + "; ".join(met))
            continue
        fast = [i for i, p in enumerate(points) if p[2] >= size_x and p[3] >= speed_x]
        close = [i for i, p in enumerate(points) if p[1] >= -max_drop]
        near = []
        if fast:
            near.append("most accurate of those small and fast enough: " + say[max(fast, key=lambda i: points[i][1])])
        if close:
            near.append("within the drop, the largest smaller factor: "
                        + say[max(close, key=lambda i: min(points[i][2], points[i][3]))])
        out.append(head + "not met; " + "; ".join(near or ["no variant"]))
    return "\n".join(out) + "\n"


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
        out.append(f"| compression | steps | {main_name} (95% CI) | vs fp32 | paired 95% CI | validation | "
                   f"size MB | size vs fp32 | b1 p50 ms | b1 speed-up | b{thr_bs} samples/s | "
                   f"throughput ratio | build time | precision | runtime |")
        out.append("|" + "---|" * 15)
        not_ok: dict[str, list[tuple[str, str]]] = {}  # status -> (compression, reason), below the table
        for comp, c in cells.groupby("compression", sort=False):
            if (c.status != "ok").all():
                reason = str(c.error.dropna().iloc[0]) if c.error.notna().any() else ""
                not_ok.setdefault(str(c.status.iloc[0]), []).append((str(comp), reason))
                continue
            m = _metric(c, main_name)
            acc, size = float(m.value), _value(c, "size_bytes")
            rotated = rotated or _rotation(c, baseline) is not None
            p50, thr, up, tr = _speed(c, baseline, b_p50, b_thr)
            val = _value(c, f"validation_{main_name}")
            out.append(
                f"| {comp} | {_steps(c)} | {acc:.4f}{_ci(m)} | {acc - b_acc:+.4f} | "
                f"{_paired(run, model, task, baseline, comp)} | {'' if val is None else f'{val:.4f}'} | "
                f"{size / 1e6:.1f} | {size / b_size:.0%} | "
                f"{p50:.2f} | {up:.2f}x | {thr:.1f} | {tr:.2f}x | {_build_time(c)} | "
                f"{c.precision.iloc[0]} | {c.runtime.iloc[0]} |"
            )
        for status, items in not_ok.items():
            reasons = sorted({r for _, r in items})
            more = f"; {len(reasons) - 1} other reasons alike" if len(reasons) > 1 else ""
            out.append(f"\n{len(items)} {status}: {', '.join(c for c, _ in items)} "
                       f"(\"{reasons[0]}\"{more}).")
        first = base.iloc[0]
        rounds = base.timing_rounds.dropna() if "timing_rounds" in base else []
        if rotated and len(rounds):  # the rotation's own threads (every core), not the cell's
            first = base.loc[rounds.index[0]]
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
    ap.add_argument("--goal", action="store_true",
                    help="also say which variants reach 10x smaller, 10x faster within 0.01 (or the nearest)")
    args = ap.parse_args()
    run = Path(args.results)
    df = harness.load_results(args.results)
    print(tables(df, args.baseline, run if run.is_dir() else None))
    if args.goal:
        print(goals(df, args.baseline))


if __name__ == "__main__":
    main()
