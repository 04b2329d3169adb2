"""The CUDA paths: device placement, CUDA-event timing, peak GPU memory, fp16/bf16, mixed-
precision fine-tuning, pruning on the GPU, and a suite run by a worker pinned to a GPU.

Every test here is marked ``gpu`` and skips (with the reason) where CUDA is not available:
``pytest -m gpu`` on a GPU machine (``benchmarks/gpu_check.sh`` does that)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from harness.api import CellContext, Head
from harness.executors import physical_gpu
from harness.runner import detect_devices
from harness.testing import TINY_BERT
from harness.timing import PeakMemory, measure_latency
from harness.toolkit import Recipe, finetune, pad_batch
from harness_plugins.compressions.prune import Prune
from harness_plugins.compressions.torch_compressions import DynamicInt8, Half, NoCompression
from harness_plugins.models.hf import HFModel

pytestmark = pytest.mark.gpu

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "suites" / "data" / "conll2003-sample"
HEAD = Head("sequence-classification", ("0", "1"))
SENTENCES = ["a gripping , funny film", "dull and far too long", "the cast is superb",
             "nothing works here", "an unexpected delight from start to finish", "meh"]


def gpu_ctx(tmp_path: Path) -> CellContext:
    return CellContext(device="cuda:0", seed=0, cache_dir=tmp_path / "cache", work_dir=tmp_path,
                       show_progress=False)


@pytest.fixture
def tiny(tmp_path):
    ctx = gpu_ctx(tmp_path)
    model = HFModel(**TINY_BERT).load(HEAD, ctx)
    model.module.eval()
    return model, ctx


def inputs(model, sentences=SENTENCES) -> list[dict]:
    """Batch-1 inputs at their real lengths (int64 CPU tensors, as tasks hand them over)."""
    return [pad_batch([{"input_ids": model.tokenizer(s)["input_ids"]}], model.tokenizer)
            for s in sentences]


def cpu_logits(module, batch) -> torch.Tensor:
    with torch.inference_mode():
        return module.to("cpu").float()(**batch).logits


def test_detect_devices_lists_every_visible_gpu():
    assert detect_devices() == [f"cuda:{i}" for i in range(torch.cuda.device_count())]


def test_none_runs_on_the_gpu_and_matches_cpu(tiny):
    model, ctx = tiny
    batch = inputs(model)[0]
    ref = cpu_logits(model.module, batch)
    pred = NoCompression().apply(model, None, ctx)
    out = pred(batch)
    assert pred.device == "cuda:0" and out.is_cuda and out.dtype == torch.float32
    assert next(pred.module.parameters()).is_cuda
    torch.testing.assert_close(out.cpu(), ref, atol=1e-4, rtol=1e-3)


def test_cuda_event_latency_and_peak_gpu_memory(tiny):
    model, ctx = tiny
    pred = NoCompression().apply(model, None, ctx)
    batches = inputs(model)
    with PeakMemory(pred.device) as mem:
        lat = measure_latency(pred, batches, warmup=3, min_iterations=20, min_duration_s=0.2)
    assert lat.passes >= 4 and len(lat.samples_ms) == lat.passes * len(batches)
    assert all(0 < s < 1000 for s in lat.samples_ms)
    stats = lat.stats()
    assert 0 < stats["latency_b1_p50_ms"] <= stats["latency_b1_p99_ms"]
    peaks = mem.result()
    assert peaks["peak_gpu_mem_mb"] > 0 and peaks["peak_gpu_reserved_mb"] >= peaks["peak_gpu_mem_mb"]


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_half_on_the_gpu_is_close_to_fp32(tiny, dtype):
    model, ctx = tiny
    if dtype == "bf16" and not torch.cuda.is_bf16_supported():
        assert "no native bf16" in Half(dtype="bf16").unsupported_reason(ctx)
        return
    comp = Half(dtype=dtype)
    assert comp.unsupported_reason(ctx) is None
    batch = inputs(model)[1]
    ref = cpu_logits(model.module, batch)
    pred = comp.apply(model, None, ctx)
    out = pred(batch)
    want = {"fp16": torch.float16, "bf16": torch.bfloat16}[dtype]
    assert pred.precision == dtype and out.dtype == want and out.is_cuda
    assert next(pred.module.parameters()).dtype == want
    torch.testing.assert_close(out.float().cpu(), ref, atol=0.05, rtol=0.05)
    assert pred.bits_per_weight() == pytest.approx(16.0, abs=0.5)


def test_dynamic_int8_is_skipped_on_the_gpu_with_the_reason(tiny):
    _, ctx = tiny
    assert "CPU only" in DynamicInt8().unsupported_reason(ctx)


@pytest.mark.parametrize("mixed", ["auto", "fp16"])
def test_mixed_precision_finetune_on_the_gpu(tmp_path, mixed):
    ctx = gpu_ctx(tmp_path)
    model = HFModel(**TINY_BERT).load(HEAD, ctx)
    rows = [(s, i % 2) for i, s in enumerate(SENTENCES * 6)]

    def build():
        feats = []
        for s, y in rows:
            enc = model.tokenizer(s)
            feats.append({"input_ids": enc["input_ids"], "token_type_ids": enc["token_type_ids"],
                          "labels": y})
        return feats, len(feats)

    recipe = Recipe(batch_size=8, lr=1e-3, epochs=2, seed=0, mixed_precision=mixed)
    tuned = finetune(model, build, recipe, ctx, data_hash="gpu", task="t", task_version="1")
    want = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if mixed == "auto" else "fp16"
    assert tuned.info["train_precision"] == want and tuned.info["train_device"] == "cuda:0"
    assert tuned.info["optimizer_steps"] == 10 and tuned.info["train_time_s"] > 0
    assert torch.isfinite(torch.tensor(tuned.info["train_loss"]))
    params = list(tuned.module.parameters())
    assert all(not p.is_cuda for p in params)  # handed back on the CPU, fp32
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in params)


def test_prune_runs_on_the_gpu(tiny):
    model, ctx = tiny
    pred = Prune(sparsity=0.5).apply(model, None, ctx)
    assert pred.device == "cuda:0" and next(pred.module.parameters()).is_cuda
    total, nonzero = pred.parameter_counts()
    assert nonzero < total
    batch = inputs(model)[2]
    out = pred(batch)
    torch.testing.assert_close(out.cpu(), cpu_logits(pred.module, batch), atol=1e-4, rtol=1e-3)


def test_suite_runs_in_a_worker_pinned_to_the_gpu(run_suite_dict):
    ner = {"plugin": "ner", "name": "conll", "params": {
        "data_dir": str(SAMPLE), "max_train_samples": 48, "max_eval_samples": 48, "batch_size": 16}}
    df = run_suite_dict({
        "models": [{"plugin": "hf", "name": "tiny", "params": TINY_BERT}],
        "tasks": [ner],
        "compressions": ["none", {"plugin": "half", "name": "fp16", "params": {"dtype": "fp16"}},
                         "dynamic-int8"],
    }, jobs=None)  # the default: one spawned worker per GPU
    status = df.groupby("compression").status.first().to_dict()
    assert status == {"none": "ok", "fp16": "ok", "dynamic-int8": "skipped"}, df[["compression", "error"]]
    ok = df[df.status == "ok"]
    assert set(ok.device) == {"cuda:0"} and set(ok.jobs) == {torch.cuda.device_count()}
    assert torch.cuda.get_device_name(0) in set(ok.device_name)
    first = physical_gpu("cuda:0", os.environ.get("CUDA_VISIBLE_DEVICES"))
    assert set(ok.cuda_visible_devices) == {first}  # the worker was pinned to the first GPU
    assert ok.cuda_version.iloc[0] == torch.version.cuda and ok.gpu_names.iloc[0]
    assert set(ok[ok.compression == "fp16"].precision) == {"fp16"}
    peak = ok[ok.metric == "peak_gpu_mem_mb"]
    assert len(peak) == 2 and (peak.value > 0).all()
    assert (ok[ok.metric == "latency_b1_p50_ms"].value > 0).all()
    train = ok[ok.metric == "train_time_s"]
    assert (train.value > 0).all()


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two or more GPUs")
def test_one_worker_per_gpu(run_suite_dict):
    ner = {"plugin": "ner", "name": "conll", "params": {
        "data_dir": str(SAMPLE), "max_train_samples": 32, "max_eval_samples": 32, "batch_size": 16}}
    df = run_suite_dict({
        "models": [{"plugin": "hf", "name": "tiny", "params": TINY_BERT},
                   {"plugin": "hf", "name": "tiny2", "params": {**TINY_BERT, "seed": 1}}],
        "tasks": [ner],
        "compressions": ["none", {"plugin": "half", "name": "fp16", "params": {"dtype": "fp16"}}],
    }, jobs=None)
    assert set(df.status) == {"ok"}
    assert set(df.jobs) == {torch.cuda.device_count()}
    assert len(set(df.cuda_visible_devices)) >= 2  # cells ran on more than one physical GPU
