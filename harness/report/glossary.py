"""The report's reference sections: what each metric means, and where the numbers come from."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from ..rows import as_bool, as_text, is_null

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["EXPLAIN", "metric_docs", "provenance", "unique"]

#: What the measurements the core makes mean, shown beside the description the run recorded.
#: A task's metrics are explained by the description its plugin records with them.
EXPLAIN = {
    "latency_b1_p50_ms": "Median wall-clock time of one prediction at batch size 1, over the "
                         "timed iterations after warm-up.",
    "latency_b1_p90_ms": "90th percentile of batch-1 latency: 1 prediction in 10 is slower.",
    "latency_b1_p99_ms": "99th percentile of batch-1 latency.",
    "latency_b1_mean_ms": "Mean batch-1 latency.",
    "latency_b1_std_ms": "Standard deviation of batch-1 latency across iterations.",
    "latency_b1_cv": "Coefficient of variation (std / mean) of batch-1 latency: the noise.",
    "cold_start_ms": "Time from loading the model to its first prediction.",
    "throughput_samples_s": "Examples per second at the throughput batch size.",
    "latency_b1_rotation_p50_ms": "Rotation-timed batch-1 p50 latency: every variant of the "
                                  "(model, task) timed alone in its own process, in rounds of "
                                  "rotated order; the median over rounds of each round's p50. "
                                  "Comparable across models; the leaderboard's p50 where present.",
    "throughput_rotation_samples_s": "Rotation-timed throughput: examples per second at the "
                                     "throughput batch size, median over the rotation rounds; the "
                                     "leaderboard's throughput where present.",
    "latency_b1_ratio": "The variant's batch-1 p50 latency divided by that of its group's "
                        "reference variant (default: the compression named none), timed in "
                        "alternation in separate processes: the median of the per-round ratios, "
                        "with a 95% bootstrap CI. Below 1 is faster.",
    "throughput_ratio": "The variant's throughput divided by that of its group's reference "
                        "variant, timed in alternation in separate processes: the median of the "
                        "per-round ratios, with a 95% bootstrap CI. Above 1 is faster.",
    "throughput_tokens_s": "Tokens per second at the throughput batch size.",
    "peak_rss_mb": "Peak resident memory of the process while predicting.",
    "peak_gpu_mem_mb": "Peak GPU memory allocated while predicting.",
    "peak_gpu_reserved_mb": "Peak GPU memory reserved by torch's allocator while predicting.",
    "size_bytes": "Bytes of the serialized model artifact on disk (shown in MB = 10^6 bytes).",
    "parameters": "Number of parameters of the model.",
    "nonzero_parameters": "Parameters that are not zero (pruning shows here).",
    "bits_per_weight": "Storage bits per weight (32 for fp32, 8 for int8).",
    "compression_time_s": "Wall time spent compressing the model.",
    "train_time_s": "Wall time spent fine-tuning.",
    "eval_time_s": "Wall time spent evaluating.",
}


_PROVENANCE = [
    ("suite", "Suite"), ("suite_hash", "Suite hash"), ("run_id", "Run"),
    ("git_commit", "Git commit"), ("harness_version", "harness"),
    ("plugin_versions", "Plugin versions"), ("python_version", "Python"),
    ("torch_version", "torch"), ("transformers_version", "transformers"),
    ("openvino_version", "OpenVINO"), ("nncf_version", "NNCF"),
    ("platform", "Platform"), ("cpu", "CPU"), ("cpu_isa", "CPU ISA"), ("hostname", "Host"),
    ("device", "Device"),
    ("device_name", "Device name"), ("runtime", "Runtimes"), ("precision", "Precisions"),
    ("threads", "Threads"), ("jobs", "Jobs"), ("latency_batch_size", "Latency batch size"),
    ("throughput_batch_size", "Throughput batch size"), ("seq_len", "Sequence lengths"),
    ("seed", "Seed"),
]



def unique(df: pd.DataFrame, col: str, limit: int = 6) -> str:
    if col not in df.columns:
        return ""
    vals = []
    for v in df[col].tolist():
        t = as_text(v)
        if t and t not in vals:
            vals.append(t)
    if len(vals) > limit:
        return ", ".join(vals[:limit]) + f" and {len(vals) - limit} more"
    return ", ".join(vals)


def provenance(df: pd.DataFrame) -> list[dict[str, str]]:
    """Label/value pairs of where the numbers come from (versions, machine, settings)."""
    out = []
    for col, label in _PROVENANCE:
        v = unique(df, col)
        if v:
            out.append({"label": label, "value": v})
    if "timestamp" in df.columns:
        ts = sorted(t for t in (as_text(x) for x in df["timestamp"].tolist()) if t)
        if ts:
            out.append({"label": "Time", "value": ts[0] if ts[0] == ts[-1] else f"{ts[0]} – {ts[-1]}"})
    return out


def metric_docs(df: pd.DataFrame, mains: set[str]) -> list[dict[str, Any]]:
    """One entry per metric (``x.<label>`` metrics as one ``x.*`` entry listing the labels):
    unit, direction, the description recorded and, for the core's measurements, an explanation."""
    seen: dict[str, dict[str, Any]] = {}
    ok = df[df["metric"].map(lambda m: not is_null(m))]
    for rec in ok.to_dict(orient="records"):
        name = str(rec["metric"])
        group = name.split(".", 1)[0] + ".*" if "." in name else name
        if group in seen:
            member = name.split(".", 1)[1] if "." in name else ""
            if member and member not in seen[group]["members"]:
                seen[group]["members"].append(member)
            continue
        hib = as_bool(rec.get("higher_is_better"))
        seen[group] = {
            "name": group, "main": name in mains, "unit": as_text(rec.get("unit")),
            "better": "higher" if hib else "lower" if hib is False else "",
            "description": as_text(rec.get("metric_description")),
            "explain": EXPLAIN.get(group, ""),
            "members": [name.split(".", 1)[1]] if "." in name else [],
        }
    for d in seen.values():
        if d["members"]:
            d["description"] = re.sub(re.escape(d["members"][0]) + r"\b", "<label>", d["description"]) \
                if d["description"] else ""
    return sorted(seen.values(), key=lambda d: (not d["main"], d["name"]))
