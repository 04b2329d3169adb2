"""openvino / nncf-ptq / nncf-weights on a tiny random BERT fed real SST-2 sentences."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from tiny_tasks import TinySST2, reference_logits

from harness.api import CellContext, Head
from harness.testing import TINY_BERT
from harness.toolkit import dir_bytes
from harness_plugins.compressions.nncf import NNCFPostTrainingInt8, NNCFWeightCompression, OpenVINOFP32
from harness_plugins.compressions.torch_compressions import NoCompression
from harness_plugins.models.hf import HFModel
from harness_plugins.runtimes import openvino as ovr
from harness_plugins.runtimes.openvino import OpenVINOPredictor

pytest.importorskip("openvino")
pytest.importorskip("nncf")



def test_registered_through_entry_point(plugin_manager):
    names = set(plugin_manager.registries().compressions.classes)
    assert {"openvino", "nncf-ptq", "nncf-weights"} <= names


def test_skipped_off_cpu_or_without_packages(cached_ctx, monkeypatch):
    cuda = CellContext(device="cuda:0", seed=0, cache_dir=cached_ctx.cache_dir, work_dir=cached_ctx.work_dir)
    for comp in (OpenVINOFP32(), NNCFPostTrainingInt8(), NNCFWeightCompression()):
        assert comp.unsupported_reason(cached_ctx) is None
        assert "OpenVINO" in comp.unsupported_reason(cuda)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "nncf" else real(n, *a))
    assert "package(s) nncf not installed (pip install nncf)" in NNCFPostTrainingInt8().unsupported_reason(cached_ctx)
    assert OpenVINOFP32().unsupported_reason(cached_ctx) is None  # needs openvino only
    monkeypatch.setattr(ovr, "cpu_capabilities", lambda: {k: False for k in ("avx512_bf16", "amx_bf16")})
    assert "bf16" in OpenVINOFP32(inference_precision="bf16").unsupported_reason(cached_ctx)


def test_parameter_validation():
    with pytest.raises(ValueError, match="'mode' of .*'nncf-weights'"):
        NNCFWeightCompression(mode="int3")
    with pytest.raises(ValueError, match="'nncf-weights'.*4-bit modes only"):
        NNCFWeightCompression(mode="int8_asym", group_size=64)
    with pytest.raises(ValueError, match="'ratio'"):
        NNCFWeightCompression(mode="int4_sym", ratio=1.5)
    with pytest.raises(ValueError, match="'preset' of .*'nncf-ptq'"):
        NNCFPostTrainingInt8(preset="fast")
    with pytest.raises(ValueError, match="'subset_size'"):
        NNCFPostTrainingInt8(subset_size=0)
    with pytest.raises(ValueError, match="'max_drop'"):
        NNCFPostTrainingInt8(max_drop=-0.1)
    with pytest.raises(ValueError, match="'inference_precision' of .*'openvino'"):
        OpenVINOFP32(inference_precision="int8")
    with pytest.raises(ValueError, match="'threads' of .*'nncf-ptq'"):
        NNCFPostTrainingInt8(threads=0)
    # the runtime's parameters are every OpenVINO compression's, with their defaults
    assert NNCFWeightCompression(mode="int4_sym", ratio=1).params.inference_precision == "f32"
    assert NNCFWeightCompression(mode="int8_sym", all_layers=False).params.all_layers is False
    assert OpenVINOFP32(threads=2).params.threads == 2


@pytest.mark.slow
def test_openvino_fp32_matches_torch_at_any_shape(seq, cached_ctx, tmp_path):
    model, task = seq
    pred = OpenVINOFP32().apply(model, task, cached_ctx)
    assert (pred.runtime, pred.device, pred.precision) == ("openvino", "cpu", "fp32")
    assert pred.inference_precision == "f32"
    for n in (1, 3, 7):  # dynamic batch and sequence length
        batch = task.batch(task.rows[n : 2 * n])
        out = pred(batch)
        assert isinstance(out, torch.Tensor) and out.shape == (n, 2)
        torch.testing.assert_close(out, reference_logits(model, batch), atol=1e-4, rtol=1e-4)
    size = dir_bytes(pred.save(tmp_path / "ov"))
    assert size > 4 * pred.parameter_counts()[0]
    assert 31.5 < pred.bits_per_weight() < 33
    assert pred.describe()["runtime_precisions"].count("f32")


@pytest.mark.slow
def test_token_classification_logits(rows, cached_ctx):
    model = HFModel(**TINY_BERT).load(Head("token-classification", ("0", "1")), cached_ctx)
    model.module.eval()
    task = TinySST2(rows, model.tokenizer, kind="token-classification")
    batch = task.batch(task.rows[:3])
    pred = OpenVINOFP32().apply(model, task, cached_ctx)
    out = pred(batch)
    assert out.shape == (*batch["input_ids"].shape, 2)
    torch.testing.assert_close(out, reference_logits(model, batch), atol=1e-4, rtol=1e-4)


def test_ptq_is_real_int8_quarter_size_and_cached(seq, cached_ctx, tmp_path):
    model, task = seq
    comp = NNCFPostTrainingInt8(subset_size=32)
    pred = comp.apply(model, task, cached_ctx)
    assert (pred.runtime, pred.precision) == ("openvino", "int8")
    fc = pred.precisions["FullyConnected"]
    assert sum(v for k, v in fc.items() if k in ("i8", "u8")) > sum(v for k, v in fc.items() if k == "f32")
    batch = task.batch(task.rows[:8])
    out = pred(batch)
    ref = reference_logits(model, batch)
    assert out.shape == (8, 2) and torch.isfinite(out).all()
    assert (out - ref).abs().max() < 0.1 * ref.abs().max() + 0.02
    fp32 = dir_bytes(NoCompression().apply(model, task, cached_ctx).save(tmp_path / "fp32"))
    int8 = dir_bytes(pred.save(tmp_path / "int8"))
    assert int8 < 0.35 * fp32
    assert pred.parameter_counts()[0] == sum(p.numel() for p in model.module.parameters())
    d = pred.describe()
    assert d["cache_hit"] is False and d["calibration_samples"] == 32
    assert d["inference_precision_hint"] == "f32" and d["runtime"] == "openvino"
    again = NNCFPostTrainingInt8(subset_size=32).apply(model, task, cached_ctx)
    assert again.describe()["cache_hit"] is True and again.describe()["compression_time_s"] == 0.0
    torch.testing.assert_close(again(batch), out)


def test_ptq_accuracy_control_uses_the_task_metric(seq, cached_ctx):
    model, task = seq
    task.eval_log.clear()
    pred = NNCFPostTrainingInt8(subset_size=16, max_drop=0.5, ranking_samples=8).apply(model, task, cached_ctx)
    d = pred.describe()
    # fp32 and int8 evaluated on OpenVINO with the task's own evaluate()
    assert len(task.eval_log) >= 2 and set(task.eval_log) == {"openvino"}
    assert d["accuracy_control_evaluations"] == len(task.eval_log)
    assert d["accuracy_control_split"]  # the tiny task has no eval_split: its own split
    assert d["accuracy_control_fp32_metric"] - d["accuracy_control_final_metric"] <= 0.5 + 1e-9
    assert pred.precision == "int8"


def test_weights_int8_and_int4(seq, cached_ctx, tmp_path):
    model, task = seq
    batch = task.batch(task.rows[:4])
    ref = reference_logits(model, batch)
    fp32 = dir_bytes(OpenVINOFP32().apply(model, task, cached_ctx).save(tmp_path / "fp32"))
    w8 = NNCFWeightCompression(mode="int8_asym").apply(model, task, cached_ctx)
    w4 = NNCFWeightCompression(mode="int4_sym", group_size=-1, ratio=1.0, all_layers=True).apply(
        model, task, cached_ctx
    )
    s8, s4 = dir_bytes(w8.save(tmp_path / "w8")), dir_bytes(w4.save(tmp_path / "w4"))
    assert s8 < 0.32 * fp32 and s4 < 0.7 * s8
    assert 8 <= w8.bits_per_weight() < 10 and 4 <= w4.bits_per_weight() < 6
    assert w8.precision.startswith("w8") and w4.precision.startswith("w4")
    for p in (w8, w4):
        out = p(batch)
        assert out.shape == (4, 2) and torch.isfinite(out).all()
        assert (out - ref).abs().max() < 0.2 * ref.abs().max() + 0.02
        assert p.describe()["weights"] in ("int8_asym", "int4_sym")
    assert NNCFWeightCompression(mode="int8_asym").apply(model, task, cached_ctx).describe()["cache_hit"]


def test_predictor_reads_artifact_folder(seq, cached_ctx, tmp_path):
    """An OpenVINO artifact saved by one predictor runs in a fresh one."""
    model, task = seq
    pred = OpenVINOFP32().apply(model, task, cached_ctx)
    folder = pred.save(tmp_path / "art")
    fresh = OpenVINOPredictor(folder, counts=pred.counts, threads=1)
    batch = task.batch(task.rows[:2])
    torch.testing.assert_close(fresh(batch), pred(batch))
    assert fresh.describe()["threads"] == 1


def test_accuracy_control_asks_for_a_split_the_task_offers(tmp_path):
    """The control split goes through the public evaluate(split=...) contract: asked for only
    when the task lists it in splits(); otherwise the task's own split, and the row says so."""
    from harness_plugins._lib.conll import write_conll
    from harness_plugins.compressions.nncf import _control_split
    from harness_plugins.tasks.classification import ClassificationTask
    from harness_plugins.tasks.ner import NERTask

    for split in ("train", "validation", "test"):
        write_conll(tmp_path / f"{split}.txt", [["Paris"]], [["B-LOC"]])
    ner = NERTask(data_dir=str(tmp_path))
    assert ner.splits() == ("train", "validation", "test")
    assert _control_split(ner, "validation") == ("validation", "validation")
    assert _control_split(ner, "dev") == (None, "test (the task's evaluation split: tuned on what is scored)")
    sst2 = ClassificationTask(format="sst2", data_dir=str(Path(__file__).parents[1] / "suites" / "data" / "sst2-sample"))
    split, note = _control_split(sst2, "validation")
    assert split == "validation" and note.startswith("validation (the task's evaluation split")
