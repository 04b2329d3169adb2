"""Figures of a GPU run of suites/gpu.yaml (docs/gpu.md), with an outside check of the timer.

    python benchmarks/gpu_figures.py runs/gpu [--suite suites/gpu.yaml]

* Table per task and compression from the run's rows: status, headline metric with its CI and
  delta vs fp32, batch-1 p50/p90 (CUDA events), throughput, peak GPU memory, evaluation,
  fine-tuning and compression time, size on disk.
* F1/accuracy parity of fp16 and bf16 with fp32: |delta| <= 0.005.
* Outside check: for each task the fine-tuned model (from the harness's checkpoint cache) is
  timed by a plain loop written here, with no harness timing code: ``torch.cuda.Event`` pairs
  around ``model(**inputs).logits`` (inputs moved to the GPU inside the timed call, as the
  harness predictor does), the same 64 batch-1 inputs and the same number of passes as the
  harness row; one synchronise at the end. The harness p50 must be within 10% of it.

Writes OUT/gpu_figures.json and OUT/gpu_figures.md; exit 1 if a check fails.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

PARITY = 0.005
OUTSIDE_TOLERANCE = 0.10



def cell_table(df) -> dict[str, dict[str, dict[str, Any]]]:
    """{task: {compression: {status, error, metric values...}}} from the latest rows."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for (task, comp), g in df.groupby(["task", "compression"], sort=False):
        first = g.iloc[0]
        cell: dict[str, Any] = {"status": first.status, "error": first.error,
                                "precision": first.get("precision"), "device_name": first.get("device_name")}
        for _, row in g.iterrows():
            if row.metric is None or row.metric != row.metric:
                continue
            cell[row.metric] = row.value
            if bool(row.main_metric):
                cell.update(main=row.metric, value=row.value, ci_low=row.ci_low, ci_high=row.ci_high)
        for col in ("latency_passes", "latency_inputs", "seq_len", "cuda_version", "gpu_driver",
                    "torch_version", "transformers_version", "gpu_names", "cpu", "cpu_isa"):
            if col in g.columns:
                cell[col] = first.get(col)
        out.setdefault(task, {})[comp] = cell
    return out


def parity(table) -> list[dict[str, Any]]:
    rows = []
    for task, cells in table.items():
        base = cells.get("none", {})
        for comp in ("fp16", "bf16"):
            c = cells.get(comp)
            if not c or c["status"] != "ok" or base.get("status") != "ok":
                continue
            delta = c["value"] - base["value"]
            rows.append({"task": task, "compression": comp, "metric": base["main"],
                         "fp32": base["value"], "value": c["value"], "delta": delta,
                         "ok": abs(delta) <= PARITY})
    return rows


def plain_p50_of(module, batches, passes: int, warmup: int = 10) -> float:
    """The outside timer, nothing from harness: on CUDA, event pairs around a plain forward and
    one synchronise at the end; on CPU, ``time.perf_counter`` around it."""
    import time

    import torch

    dev = next(module.parameters()).device
    cuda = dev.type == "cuda"
    ms: list[float] = []
    with torch.inference_mode():
        for i in range(warmup):
            module(**{k: v.to(dev, non_blocking=True) for k, v in batches[i % len(batches)].items()})
        if cuda:
            torch.cuda.synchronize(dev)
        events = []
        for _ in range(passes):
            for b in batches:
                if cuda:
                    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    s.record()
                    _ = module(**{k: v.to(dev, non_blocking=True) for k, v in b.items()}).logits
                    e.record()
                    events.append((s, e))
                else:
                    t = time.perf_counter()
                    _ = module(**b).logits
                    ms.append((time.perf_counter() - t) * 1000)
        if cuda:
            torch.cuda.synchronize(dev)
            ms = [s.elapsed_time(e) for s, e in events]
    return statistics.median(ms)


def outside_check(suite_path: Path, table, device: str, *, finetuned: bool = True,
                  rounds: int = 5, passes: int = 4) -> list[dict[str, Any]]:
    """For each task and each torch precision of the suite (none/fp16/bf16): the harness's own
    predictor (built by the compression plugin) timed by ``harness.timing.measure_latency``
    inside ``PeakMemory`` with its sampler paused, exactly as a cell does, and the same weights timed by the plain loop
    above, alternated for ``rounds`` rounds (ABBA order) of ``passes`` passes over the same 64
    inputs. Comparing within one process and one time window keeps the machine's drift out of
    the ratio; the drift itself (spread of the harness p50 across rounds, and the suite row's
    p50) is reported beside it.

    ``finetuned``: time the task's fine-tuned checkpoint (a cache hit after the suite ran);
    otherwise the base encoder with a fresh head (the same architecture and compute)."""
    import copy

    import torch

    from harness.api import CellContext
    from harness.cell import LATENCY_INPUTS, PluginSet, copy_model, scoped_identity
    from harness.suite import load_suite
    from harness.timing import PeakMemory, measure_latency

    suite = load_suite(suite_path)
    plugins = PluginSet.build([], [])
    s = suite.settings
    results = []
    for model_entry in suite.models:
        for task_entry in suite.tasks:
            cells = table.get(task_entry.name, {})
            ctx = CellContext(device=device, seed=s.seed, cache_dir=Path(s.cache_dir).absolute(),
                              work_dir=Path("/tmp"), show_progress=False)
            task = plugins.create(task_entry)
            model = plugins.create(model_entry)
            loaded = scoped_identity(model_entry, model, model.load(task.head(), ctx))  # as a cell
            if finetuned:
                loaded = task.fit(loaded, ctx)  # the suite's cached checkpoint
                if not loaded.info.get("cached"):
                    print(f"note: {task_entry.name}: no cached fine-tune checkpoint; trained again")
            batches = task.latency_batches(loaded, 1, LATENCY_INPUTS, s.seed)
            for comp_entry in suite.compressions:
                comp = plugins.create(comp_entry)
                if comp_entry.plugin not in ("none", "half") or comp.unsupported_reason(ctx):
                    continue
                predictor = comp.apply(copy_model(loaded), task, ctx)
                dtype = {"fp32": torch.float32, "fp16": torch.float16,
                         "bf16": torch.bfloat16}[predictor.precision]
                module = copy.deepcopy(loaded.module).to(device).to(dtype).eval()
                harness_p50, plain_p50, sampler_p50 = [], [], []
                for r in range(rounds):
                    order = ("harness", "plain") if r % 2 == 0 else ("plain", "harness")
                    for who in order:
                        if who == "plain":
                            plain_p50.append(plain_p50_of(module, batches, passes))
                        else:
                            with PeakMemory(predictor.device) as mem, mem.paused():  # as a cell
                                lat = measure_latency(predictor, batches, warmup=10,
                                                      min_iterations=passes * len(batches),
                                                      min_duration_s=0)
                            harness_p50.append(lat.percentile(50))
                    with PeakMemory(predictor.device):  # before the fix: the sampler thread running
                        old = measure_latency(predictor, batches, warmup=10,
                                              min_iterations=passes * len(batches), min_duration_s=0)
                    sampler_p50.append(old.percentile(50))
                h, p = statistics.median(harness_p50), statistics.median(plain_p50)
                row_p50 = cells.get(comp_entry.name, {}).get("latency_b1_p50_ms")
                results.append({
                    "task": task_entry.name, "compression": comp_entry.name,
                    "precision": predictor.precision, "finetuned": finetuned,
                    "harness_p50_ms": h, "plain_p50_ms": p, "ratio": h / p,
                    "harness_sampler_running_p50_ms": statistics.median(sampler_p50),
                    "round_ratios": [a / b for a, b in zip(harness_p50, plain_p50)],
                    "harness_round_p50s": harness_p50, "plain_round_p50s": plain_p50,
                    "round_spread": max(harness_p50) / min(harness_p50),
                    "suite_row_p50_ms": row_p50, "iterations_per_round": passes * len(batches),
                    "ok": abs(h / p - 1) <= OUTSIDE_TOLERANCE,
                })
                del module, predictor
                if device.startswith("cuda"):
                    torch.cuda.empty_cache()
    return results


def fmt(v: Any, spec: str = ".4f") -> str:
    try:
        return format(float(v), spec)
    except (TypeError, ValueError):
        return "-"


def markdown(table, par, outside) -> str:
    lines = []
    for task, cells in table.items():
        base = cells.get("none", {}).get("value")
        lines += [f"### {task}", "",
                  "| compression | status | precision | main metric (95% CI) | delta vs fp32 | b1 p50 ms | b1 p90 ms "
                  "| throughput /s | peak GPU MiB (alloc / reserved) | eval s | train s | compress s | size MB |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for comp, c in cells.items():
            if c["status"] != "ok":
                lines.append(f"| {comp} | {c['status']}: {c['error']} |" + " |" * 11)
                continue
            delta = c["value"] - base if base is not None else None
            lines.append(
                f"| {comp} | ok | {c.get('precision')} | {fmt(c['value'])} ({fmt(c['ci_low'])}-{fmt(c['ci_high'])}) "
                f"| {fmt(delta, '+.4f')} | {fmt(c.get('latency_b1_p50_ms'), '.3f')} | {fmt(c.get('latency_b1_p90_ms'), '.3f')} "
                f"| {fmt(c.get('throughput_samples_s'), '.0f')} "
                f"| {fmt(c.get('peak_gpu_mem_mb'), '.0f')} / {fmt(c.get('peak_gpu_reserved_mb'), '.0f')} "
                f"| {fmt(c.get('eval_time_s'), '.2f')} | {fmt(c.get('train_time_s'), '.1f')} "
                f"| {fmt(c.get('compression_time_s'), '.2f')} | {fmt((c.get('size_bytes') or 0) / 1e6, '.1f')} |")
        lines.append("")
    lines += ["### fp16 / bf16 parity with fp32 (|delta| <= 0.005)", "",
              "| task | compression | metric | fp32 | value | delta | within |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {p['task']} | {p['compression']} | {p['metric']} | {fmt(p['fp32'])} | {fmt(p['value'])} "
              f"| {fmt(p['delta'], '+.4f')} | {'yes' if p['ok'] else 'NO'} |" for p in par]
    lines += ["", "### Outside check: harness timer vs a plain loop, interleaved in one process (within 10%)", "",
              "| task | compression | harness p50 ms | plain p50 ms | ratio | per-round ratios | harness p50 spread "
              "across rounds | harness with the RSS sampler running (before the fix) | suite row p50 ms | within |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {o['task']} | {o['compression']} | {fmt(o['harness_p50_ms'], '.3f')} | {fmt(o['plain_p50_ms'], '.3f')} "
              f"| {fmt(o['ratio'], '.3f')} | {' '.join(fmt(x, '.2f') for x in o['round_ratios'])} "
              f"| {fmt(o['round_spread'], '.2f')}x | {fmt(o['harness_sampler_running_p50_ms'], '.3f')} "
              f"| {fmt(o['suite_row_p50_ms'], '.3f')} | {'yes' if o['ok'] else 'NO'} |" for o in outside]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="results folder of suites/gpu.yaml")
    ap.add_argument("--suite", type=Path, default=Path("suites/gpu.yaml"))
    ap.add_argument("--no-outside", action="store_true", help="skip the outside timer check")
    ap.add_argument("--no-finetune", action="store_true",
                    help="outside check on the base encoder with a fresh head (same compute) instead "
                         "of the suite's cached fine-tuned checkpoint")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--device", default=None, help="device of the run [default: cuda:0 if available, else cpu]")
    args = ap.parse_args(argv)

    import harness

    df = harness.load_results(args.run)
    table = cell_table(df)
    par = parity(table)
    outside: list[dict[str, Any]] = []
    if not args.no_outside:
        import torch

        device = args.device or ("cuda:0" if torch.cuda.is_available() else "cpu")
        outside = outside_check(args.suite, table, device, finetuned=not args.no_finetune,
                                rounds=args.rounds)
    (args.run / "gpu_figures.json").write_text(json.dumps(
        {"cells": table, "parity": par, "outside_check": outside}, indent=2, default=str))
    md = markdown(table, par, outside)
    (args.run / "gpu_figures.md").write_text(md)
    print(md)
    failed = [p for p in par if not p["ok"]] + [o for o in outside if not o["ok"]]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
