"""benchmarks/compression_table.py: the per-task tables of docs/compression.md, with each
change's paired CI from the run's per-example outputs and the chain's steps."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from harness.testing import TINY_BERT

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "suites" / "data" / "sst2-sample"


def _script():
    spec = importlib.util.spec_from_file_location("compression_table", ROOT / "benchmarks" / "compression_table.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def test_tables_have_paired_cis_steps_and_speed_rounds(run_suite_dict, tmp_path):
    df = run_suite_dict({
        "models": [{"plugin": "hf", "name": "tiny", "params": TINY_BERT}],
        "tasks": [{"plugin": "classification", "name": "sst2", "params": {
            "format": "sst2", "data_dir": str(SAMPLE), "max_train_samples": 64, "max_eval_samples": 48,
            "batch_size": 16, "bootstrap": 0, "max_length": 32}}],
        "compressions": ["none", {"name": "pr-int8", "chain": [
            {"plugin": "prune", "params": {"sparsity": 0.5}}, "dynamic-int8"]}],
    })
    run = tmp_path / "out"
    mod = _script()
    text = mod.tables(df, "none", run)
    row = next(line for line in text.splitlines() if line.startswith("| pr-int8 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "prune → dynamic-int8"
    lo, hi = (float(x) for x in cells[4].split(" to "))  # McNemar CI of the change
    assert -1 <= lo <= hi <= 1 and cells[11] != "-" and cells[12] == "int8"
    # --speed: the latency columns come from speed_rounds.py's file for the task
    speed = tmp_path / "speed.json"
    speed.write_text(json.dumps({"task": "sst2", "rounds": 3, "throughput_batch_size": 8, "rows": [
        {"compression": c, "p50_ms_median": p, "throughput_median": t, "b1_speedup_vs_baseline": u,
         "throughput_ratio_vs_baseline": r}
        for c, p, t, u, r in (("none", 4.0, 10.0, 1.0, 1.0), ("pr-int8", 2.0, 25.0, 2.0, 2.5))]}))
    text = mod.tables(df, "none", run, mod._speed([str(speed)]))
    row = next(line for line in text.splitlines() if line.startswith("| pr-int8 |"))
    assert "| 2.00 | 2.00x | 25.0 | 2.50x |" in row and "b8 samples/s" in text and "3 interleaved rounds" in text
