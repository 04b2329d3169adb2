"""Synthetic result rows shaped like the runner's, for the report and gate tests.

``make_results()`` builds a tidy DataFrame: 3 models x 4 compressions x 2 tasks (one NER, one
classification), with one failed and two skipped cells, per-entity / per-class F1, latency
metrics with per-iteration samples, size and memory. The "true" value of every metric comes from
a hash of the cell, so two calls with different seeds are two noisy runs of the same models on the
same data (accuracy identical, latency samples redrawn); keyword arguments plant regressions.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

XSS = "<script>alert(1)</script>"
MODELS = ["minilm-l6", "bert-base-cased", XSS]
COMPRESSIONS = ["none", "dynamic-int8", "prune-50", "ov-int8"]
TASKS = {
    "conll2003": {
        "plugin": "ner",
        "main": "entity_f1",
        "description": "entity-level micro F1, seqeval default (conlleval-compatible) mode (a "
                       "predicted entity counts only when its span and type both match: not "
                       "token accuracy)",
        "breakdown": ["PER", "ORG", "LOC", "MISC"],
        "breakdown_description": "entity-level F1 of entity type {}",
        "breakdown_group": "Per-entity-type F1",
        "base": 0.90,
    },
    "sst2": {
        "plugin": "classification",
        "main": "accuracy",
        "description": "accuracy: share of sentences whose predicted label is the gold label",
        "breakdown": ["negative", "positive"],
        "breakdown_description": "F1 of class {} (one-vs-rest)",
        "breakdown_group": "Per-class F1",
        "base": 0.91,
    },
}
#: (model, task, compression) -> error text
FAILED = {("bert-base-cased", "conll2003", "ov-int8"): "RuntimeError: <b>out of memory</b> & more"}
SKIPPED = {
    ("minilm-l6", "sst2", "prune-50"): "prune-50 needs a fine-tuned head; <none> here",
    (XSS, "conll2003", "dynamic-int8"): "dynamic-int8 unsupported on this CPU",
}
PROVENANCE = {
    "harness_version": "0.1.0",
    "plugin_versions": json.dumps({"hf": "1", "ner": "2", "classification": "1"}),
    "python_version": "3.11.2",
    "torch_version": "2.4.0+cpu",
    "transformers_version": "4.44.0",
    "platform": "Linux-6.1-x86_64",
    "cpu": "Intel(R) Xeon(R) <fake> CPU",
    "git_commit": "0123456789abcdef",
    "hostname": "bench-1",
}
Cell = tuple[str, str, str]


def _u(*parts: Any) -> float:
    """A stable number in [0, 1) from the parts."""
    h = hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()
    return int(h[:12], 16) / float(16**12)


def cells(models: Iterable[str] = MODELS) -> list[Cell]:
    return [(m, t, c) for t in TASKS for m in models for c in COMPRESSIONS]


def status_of(cell: Cell) -> str:
    if cell in FAILED:
        return "failed"
    if cell in SKIPPED:
        return "skipped"
    return "ok"


def make_results(
    *,
    seed: int = 0,
    run_id: str = "run-a",
    suite: str = "nightly",
    models: Iterable[str] = MODELS,
    n_samples: int = 40,
    latency_noise: float = 0.04,
    accuracy_delta: Mapping[Cell, float] | None = None,
    latency_factor: Mapping[Cell, float] | None = None,
    size_factor: Mapping[Cell, float] | None = None,
    drop: Iterable[Cell] = (),
    fail: Mapping[Cell, str] | None = None,
    no_samples: bool = False,
    samples_as_list: bool = False,
    extra_metrics: Mapping[str, tuple[float, str]] | None = None,
) -> pd.DataFrame:
    """Rows of one run. ``accuracy_delta`` shifts the main metric (and its CI) of a cell;
    ``latency_factor`` multiplies its latency distribution; ``size_factor`` its size; ``drop``
    removes cells; ``fail`` turns cells into failed ones with that error; ``extra_metrics``
    ({name: (value, group)}) adds task metrics to every ok cell (the value shifted per cell)."""
    rng = np.random.default_rng(seed)
    accuracy_delta = dict(accuracy_delta or {})
    latency_factor = dict(latency_factor or {})
    size_factor = dict(size_factor or {})
    fail = dict(fail or {})
    dropped = set(drop)
    rows: list[dict[str, Any]] = []
    for cell in cells(models):
        if cell in dropped:
            continue
        model, task, comp = cell
        spec = TASKS[task]
        base = {
            "run_id": run_id,
            "cell_id": hashlib.sha1("|".join(cell).encode()).hexdigest()[:12],
            "suite": suite,
            "suite_hash": hashlib.sha1(suite.encode()).hexdigest()[:12],
            "model": model, "model_plugin": "hf",
            "model_params": json.dumps({"checkpoint": model}),
            "task": task, "task_plugin": spec["plugin"],
            "task_params": json.dumps({"split": "test"}),
            "compression": comp,
            "compression_plugin": comp if comp != "ov-int8" else "nncf",
            "compression_params": json.dumps({}),
            "status": "ok", "error": None,
            "metric": None, "value": None, "ci_low": None, "ci_high": None,
            "metric_description": None, "higher_is_better": None, "main_metric": None,
            "unit": None, "metric_group": None, "samples": None,
            "runtime": "openvino" if comp == "ov-int8" else "torch",
            "device": "cpu", "device_name": "Intel(R) Xeon(R) <fake> CPU",
            "precision": "int8" if "int8" in comp else "fp32",
            "latency_batch_size": 1, "throughput_batch_size": 32,
            "seq_len": "real lengths, p50 23 / max 124 tokens",
            "threads": 2, "jobs": 1,
            **PROVENANCE,
            "seed": 13,
            "timestamp": f"2024-06-01T12:{len(rows) % 60:02d}:00+00:00",
        }
        status = "failed" if cell in fail else status_of(cell)
        if status != "ok":
            err = fail.get(cell) or FAILED.get(cell) or SKIPPED.get(cell)
            rows.append({**base, "status": status, "error": err})
            continue

        def row(metric: str, value: float, *, desc: str, hib: bool | None, unit: str,
                main: bool = False, ci: tuple[float, float] | None = None,
                samples: list[float] | None = None, base: dict[str, Any] = base,
                group: str | None = None) -> None:
            r = {**base, "metric": metric, "value": float(value), "metric_description": desc,
                 "higher_is_better": hib, "main_metric": main, "unit": unit, "metric_group": group}
            if ci:
                r["ci_low"], r["ci_high"] = ci
            if samples is not None:
                r["samples"] = samples if samples_as_list else json.dumps(samples)
            rows.append(r)

        quality = spec["base"] - 0.12 * _u(model, "q") - {"none": 0, "dynamic-int8": 0.004,
                                                              "prune-50": 0.03, "ov-int8": 0.006}[comp]
        quality += accuracy_delta.get(cell, 0.0)
        row(spec["main"], quality, desc=spec["description"], hib=True, unit="fraction", main=True,
            ci=(quality - 0.011, quality + 0.010), group="")
        for label in spec["breakdown"]:
            name = f"{'entity_f1' if task == 'conll2003' else 'f1'}.{label}"
            row(name, quality - 0.05 + 0.1 * _u(model, comp, label),
                desc=spec["breakdown_description"].format(label), hib=True, unit="fraction",
                group=spec["breakdown_group"])
        for name, (value, group) in (extra_metrics or {}).items():
            row(name, value + 0.01 * _u(model, comp, name), desc=f"{name}, a metric the task returned",
                hib=False, unit="", group=group)

        size_mb = 40 + 400 * _u(model, "size")
        size_mb *= {"none": 1.0, "dynamic-int8": 0.3, "prune-50": 0.55, "ov-int8": 0.27}[comp]
        size_mb *= size_factor.get(cell, 1.0)
        params = int(size_mb * 1e6 / 4 if comp == "none" else size_mb * 1e6 / 1.2)
        lat = 3 + 30 * _u(model, "lat")
        lat *= {"none": 1.0, "dynamic-int8": 0.6, "prune-50": 0.8, "ov-int8": 0.45}[comp]
        lat *= latency_factor.get(cell, 1.0)
        samples = lat * np.exp(rng.normal(0.0, latency_noise, n_samples))
        s = [round(float(x), 4) for x in samples]
        sl = None if no_samples else s
        lat_desc = "batch-1 latency over {} timed iterations, {}"
        for q in (50, 90, 99):
            row(f"latency_b1_p{q}_ms", float(np.percentile(samples, q)),
                desc=lat_desc.format(n_samples, f"{q}th percentile"), hib=False, unit="ms",
                samples=sl)
        row("latency_b1_mean_ms", float(samples.mean()), desc=lat_desc.format(n_samples, "mean"),
            hib=False, unit="ms", samples=sl)
        row("latency_b1_std_ms", float(samples.std()), desc="standard deviation of batch-1 latency",
            hib=False, unit="ms")
        row("latency_b1_cv", float(samples.std() / samples.mean()),
            desc="coefficient of variation of batch-1 latency", hib=False, unit="ratio")
        row("cold_start_ms", lat * 20, desc="load to first prediction", hib=False, unit="ms")
        row("throughput_samples_s", 32 / (lat * 4) * 1000, desc="samples per second at batch 32",
            hib=True, unit="samples/s")
        row("throughput_tokens_s", 23 * 32 / (lat * 4) * 1000, desc="tokens per second at batch 32",
            hib=True, unit="tokens/s")
        row("peak_rss_mb", 300 + size_mb * 2, desc="peak resident memory of the process",
            hib=False, unit="MB")
        row("size_bytes", size_mb * 1e6, desc="bytes of the serialized model artifact",
            hib=False, unit="bytes")
        row("parameters", params, desc="parameters of the model", hib=False, unit="count")
        row("nonzero_parameters", params // (2 if comp == "prune-50" else 1),
            desc="parameters that are not zero", hib=False, unit="count")
        row("bits_per_weight", 8.0 if "int8" in comp else 32.0, desc="storage bits per weight",
            hib=False, unit="bits")
        row("eval_time_s", 12.5, desc="wall time of evaluation", hib=False, unit="s")
    return pd.DataFrame(rows)


def ok_cells(df: pd.DataFrame, task: str) -> set[tuple[str, str]]:
    sub = df[(df["task"] == task) & (df["status"] == "ok")]
    return set(zip(sub["model"], sub["compression"]))


def write_jsonl(df: pd.DataFrame, folder: Path) -> Path:
    """Write ``df`` as ``folder/results.jsonl`` (the runner's format); returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "results.jsonl", "w", encoding="utf-8") as f:
        for rec in df.to_dict(orient="records"):
            clean = {k: (None if isinstance(v, float) and math.isnan(v) else v)
                     for k, v in rec.items()}
            f.write(json.dumps(clean) + "\n")
    return folder
