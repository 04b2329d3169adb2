"""benchmarks/compression_table.py: the per-task tables of docs/compression.md, with each
change's paired CI from the run's per-example outputs and the chain's steps."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd

from harness.testing import TINY_BERT

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "suites" / "data" / "sst2-sample"


def _script():
    spec = importlib.util.spec_from_file_location("compression_table", ROOT / "benchmarks" / "compression_table.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def test_tables_have_paired_cis_steps_and_rotation_timing(run_suite_dict, tmp_path):
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
    assert -1 <= lo <= hi <= 1 and cells[12] != "-" and cells[13] == "int8"
    assert cells[5] == ""  # no validation split scored in this run
    # a run timed in rotation: the latency columns are its figures and per-round ratios
    rotation = []
    for comp, p50, thr, lat_ratio, thr_ratio in (("none", 4.0, 10.0, 1.0, 1.0),
                                                 ("pr-int8", 2.0, 25.0, 0.5, 2.5)):
        row = df[(df.compression == comp) & (df.metric == "size_bytes")].iloc[0]
        for metric, value in (("latency_b1_rotation_p50_ms", p50), ("throughput_rotation_samples_s", thr),
                              ("latency_b1_ratio", lat_ratio), ("throughput_ratio", thr_ratio)):
            rotation.append(row.to_dict() | {"metric": metric, "value": value, "timing_rounds": 3,
                                             "timing_reference": "none", "threads": 7})
    skipped = df[(df.compression == "none")].iloc[:1].assign(
        compression="needs-gpu", status="skipped", error="compression 'x' needs a GPU", metric=None)
    text = mod.tables(pd.concat([df, pd.DataFrame(rotation), skipped], ignore_index=True), "none", run)
    row = next(line for line in text.splitlines() if line.startswith("| pr-int8 |"))
    assert "| 2.00 | 2.00x | 25.0 | 2.50x |" in row and "timed in rotation" in text and "3 rounds" in text
    # the rotation's threads (its own rows), not the cell's; a skipped cell is a line, not a row
    assert "; 7 threads;" in text and "| needs-gpu |" not in text
    assert "1 skipped: needs-gpu (\"compression 'x' needs a GPU\")." in text
    # the goal: 2x faster (rotation) is met at 2x/1x, and missed at 10x/10x with the nearest said
    rotated = pd.concat([df, pd.DataFrame(rotation)], ignore_index=True)
    drop = rotated[rotated.compression == "pr-int8"]
    b_acc = float(rotated[(rotated.compression == "none") & (rotated.main_metric == True)].value.iloc[0])  # noqa: E712
    acc = float(drop[drop.main_metric == True].value.iloc[0])  # noqa: E712
    assert "met by pr-int8" in mod.goals(rotated, size_x=1.0, speed_x=2.0, max_drop=1.0)
    missed = mod.goals(rotated, max_drop=max(0.0, b_acc - acc))
    assert "not met; within the drop, the largest smaller factor: pr-int8" in missed
    assert "2.0x faster" in missed
