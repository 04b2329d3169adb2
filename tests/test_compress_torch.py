"""none / half / dynamic-int8 on a tiny random BERT fed real SST-2 sentences."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from tiny_tasks import reference_logits

from harness.api import CellContext
from harness.testing import TINY_BERT
from harness.toolkit import dir_bytes
from harness_plugins._lib import torch_utils as tu
from harness_plugins.compressions.torch_compressions import DynamicInt8, Half, NoCompression


def test_registered_through_entry_point(plugin_manager):
    names = set(plugin_manager.registries().compressions.classes)
    assert {"none", "half", "dynamic-int8"} <= names


def test_none_is_the_fp32_model(seq, ctx, tmp_path):
    model, task = seq
    batch = task.batch(task.rows[:5])
    pred = NoCompression().apply(model, task, ctx)
    assert NoCompression().unsupported_reason(ctx) is None
    assert (pred.runtime, pred.device, pred.precision) == ("torch", "cpu", "fp32")
    out = pred(batch)
    assert isinstance(out, torch.Tensor) and out.shape == (5, 2)
    torch.testing.assert_close(out, reference_logits(model, batch))
    total, nonzero = pred.parameter_counts()
    assert total == sum(p.numel() for p in model.module.parameters()) and 0 < nonzero <= total
    size = dir_bytes(pred.save(tmp_path / "art"))
    assert 4 * total <= size < 4 * total * 1.05
    assert pred.bits_per_weight() == 32.0
    d = pred.describe()
    assert d["runtime"] == "torch" and d["cache_hit"] is False and d["compression_time_s"] == 0.0
    assert "compression" not in d and "compression_params" not in d  # core columns


def test_half_skipped_without_native_bf16(ctx, monkeypatch):
    monkeypatch.setattr(tu, "cpu_flags", lambda: {"avx2", "fma"})
    reason = Half(dtype="bf16").unsupported_reason(ctx)
    assert reason and "avx512_bf16" in reason
    assert "avx512_fp16" in Half(dtype="fp16").unsupported_reason(ctx)
    if not torch.cuda.is_available():
        cuda = CellContext(device="cuda:0", seed=0, cache_dir=ctx.cache_dir, work_dir=ctx.work_dir)
        assert "CUDA is not available" in Half().unsupported_reason(cuda)
    with pytest.raises(ValueError):
        Half(dtype="int8")


def test_half_bf16_where_supported(seq, ctx, tmp_path, monkeypatch):
    monkeypatch.setattr(tu, "cpu_flags", lambda: {"avx512_bf16"})
    comp = Half(dtype="bf16")
    assert comp.unsupported_reason(ctx) is None
    model, task = seq
    batch = task.batch(task.rows[:4])
    pred = comp.apply(model, task, ctx)
    assert pred.precision == "bf16" and next(pred.module.parameters()).dtype == torch.bfloat16
    out = pred(batch)
    assert out.shape == (4, 2)
    torch.testing.assert_close(out.float(), reference_logits(model, batch), atol=0.05, rtol=0.05)
    fp32 = dir_bytes(NoCompression().apply(model, task, ctx).save(tmp_path / "fp32"))
    half = dir_bytes(pred.save(tmp_path / "bf16"))
    assert 0.45 < half / fp32 < 0.55
    assert 15.5 < pred.bits_per_weight() < 17
    assert next(model.module.parameters()).dtype == torch.float32  # input untouched


def test_dynamic_int8(seq, ctx, tmp_path):
    model, task = seq
    comp = DynamicInt8()
    assert comp.unsupported_reason(ctx) is None
    batch = task.batch(task.rows[:6])
    pred = comp.apply(model, task, ctx)
    assert (pred.runtime, pred.precision) == ("torch", "int8")
    out = pred(batch)
    assert isinstance(out, torch.Tensor) and out.shape == (6, 2)
    ref = reference_logits(model, batch)
    assert (out - ref).abs().max() < 0.05 * ref.abs().max() + 1e-3
    # the Linear layers and embeddings really are quantised modules
    kinds = {type(m).__name__ for m in pred.module.modules()}
    assert "DynamicQuantizedLinear" in kinds or "Linear" in {k.split(".")[-1] for k in kinds}
    assert not any(type(m) is torch.nn.Linear for m in pred.module.modules())
    assert not any(type(m) is torch.nn.Embedding for m in pred.module.modules())
    # size: int8 weights and embeddings, about a quarter of fp32
    total, nonzero = pred.parameter_counts()
    assert total == sum(p.numel() for p in model.module.parameters())
    assert nonzero <= total
    fp32 = dir_bytes(NoCompression().apply(model, task, ctx).save(tmp_path / "fp32"))
    int8 = dir_bytes(pred.save(tmp_path / "int8"))
    assert int8 < 0.35 * fp32
    assert 8 <= pred.bits_per_weight() < 11
    d = pred.describe()
    assert d["cache_hit"] is False and d["compression_time_s"] > 0
    assert d["quantization_api"].startswith("torch.ao")
    assert task.evaluate(pred, model, ctx)[0].value >= 0


def test_dynamic_int8_cache_hit_and_key(seq, ctx):
    model, task = seq
    batch = task.batch(task.rows[:3])
    first = DynamicInt8().apply(model, task, ctx)
    entries = list((ctx.cache_dir / "compress").iterdir())
    assert len(entries) == 1 and (entries[0] / "meta.json").is_file()
    stamp = (entries[0] / "model" / "model_int8.safetensors").stat().st_mtime_ns
    again = DynamicInt8().apply(model, task, ctx)
    d = again.describe()
    assert d["cache_hit"] is True and d["compression_time_s"] == 0.0
    assert d["compression_time_build_s"] == first.describe()["compression_time_build_s"]
    assert (entries[0] / "model" / "model_int8.safetensors").stat().st_mtime_ns == stamp
    torch.testing.assert_close(again(batch), first(batch))
    # other parameters, or another input model: another entry
    DynamicInt8(per_channel=False).apply(model, task, ctx)
    other = dataclasses.replace(model, identity=model.identity + "-other")
    DynamicInt8().apply(other, task, ctx)
    assert len(list((ctx.cache_dir / "compress").iterdir())) == 3
    assert not [p for p in (ctx.cache_dir / "compress").iterdir() if p.name.startswith(".")]


def test_dynamic_int8_skipped_off_cpu(ctx):
    cuda = CellContext(device="cuda:0", seed=0, cache_dir=ctx.cache_dir, work_dir=ctx.work_dir)
    assert "CPU only" in DynamicInt8().unsupported_reason(cuda)


def test_cpu_capabilities_reads_flags():
    caps = tu.cpu_capabilities()
    assert set(caps) >= {"avx2", "avx512_bf16", "amx_bf16", "amx_int8", "avx512_vnni"}
    assert all(isinstance(v, bool) for v in caps.values())


@pytest.mark.slow
def test_suite_runs_and_skips(run_suite_dict, shared_data, monkeypatch):
    """Through the core: ok rows with the size columns, half skipped (not failed) on a CPU
    without native bf16."""
    monkeypatch.setattr(tu, "cpu_flags", lambda: {"avx2"})
    df = run_suite_dict({
        "models": [{"plugin": "hf", "params": TINY_BERT}],
        "tasks": [{"plugin": "classification", "params": {
            "format": "sst2", "data_dir": str(shared_data / "sst2"),
            "max_train_samples": 64, "max_eval_samples": 64, "bootstrap": 0}}],
        "compressions": ["none", "dynamic-int8", {"plugin": "half", "params": {"dtype": "bf16"}}],
    })
    status = df.groupby("compression").status.first().to_dict()
    assert status == {"none": "ok", "dynamic-int8": "ok", "half": "skipped"}, df[["compression", "status", "error"]].drop_duplicates()
    skipped = df[df.compression == "half"].error.iloc[0]
    assert "avx512_bf16" in skipped
    ok = df[df.status == "ok"]
    size = ok[ok.metric == "size_bytes"].set_index("compression").value
    assert size["dynamic-int8"] < 0.35 * size["none"]
    assert set(ok.runtime) == {"torch"}
