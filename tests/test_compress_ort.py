"""onnx / ort-int8 / ort-static-int8 / ort-fp16 on a tiny random BERT fed real SST-2 sentences
and the shipped CoNLL-2003 sample."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from tiny_tasks import TinySST2, make_ctx, reference_logits

import harness
from harness.api import CellContext, Head
from harness.errors import PluginError
from harness.provenance import environment
from harness.testing import TINY_BERT, make_plugin_manager
from harness_plugins.compressions.ort import OnnxFP32, OrtDynamicInt8, OrtFP16, OrtStaticInt8
from harness_plugins.models.hf import HFModel
from harness_plugins.runtimes import onnxruntime as rt

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

ROOT = Path(__file__).resolve().parents[1]
CONLL_SAMPLE = ROOT / "suites" / "data" / "conll2003-sample"



class CountingTask(TinySST2):
    """TinySST2 that records every calibration_batches call."""

    calls: list[int] = []

    def calibration_batches(self, model, samples, seed):
        out = super().calibration_batches(model, samples, seed)
        CountingTask.calls.append(len(out))
        return out


def test_registered_through_entry_point(plugin_manager):
    names = set(plugin_manager.registries().compressions.classes)
    assert {"onnx", "ort-int8", "ort-static-int8", "ort-fp16"} <= names


def test_provenance_has_ort_versions():
    env = environment()
    assert env["onnxruntime_version"] and env["onnx_version"]


def test_skip_reasons(cached_ctx, monkeypatch):
    cuda = CellContext(device="cuda:0", seed=0, cache_dir=cached_ctx.cache_dir, work_dir=cached_ctx.work_dir)
    for comp in (OnnxFP32(), OrtDynamicInt8(), OrtStaticInt8()):
        assert comp.unsupported_reason(cached_ctx) is None
    assert "GPU" not in OrtFP16().unsupported_reason(cached_ctx) and "CUDA" in OrtFP16().unsupported_reason(cached_ctx)
    assert "CPU execution provider only" in OrtDynamicInt8().unsupported_reason(cuda)
    assert "CPU execution provider only" in OrtStaticInt8().unsupported_reason(cuda)
    monkeypatch.setattr(rt, "available_providers", lambda: ["CPUExecutionProvider"])
    for comp in (OnnxFP32(), OrtFP16()):
        reason = comp.unsupported_reason(cuda)
        assert "CUDAExecutionProvider" in reason and "onnxruntime-gpu" in reason
    monkeypatch.setattr(rt, "available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert OrtFP16().unsupported_reason(cuda) is None
    # onnxruntime missing at run time: a skip reason, before any model is loaded
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "onnxruntime" else real(n, *a))
    reason = OnnxFP32().unsupported_reason(cached_ctx)
    assert reason.startswith("onnx: package(s) onnxruntime not installed") and "pip install onnxruntime" in reason


def test_parameter_validation():
    with pytest.raises(ValueError, match="'calibration_method' of .*'ort-static-int8'"):
        OrtStaticInt8(calibration_method="kl")
    with pytest.raises(ValueError, match="'samples'"):
        OrtStaticInt8(samples=0)
    with pytest.raises(ValueError, match="'opt_level' of .*'onnx'"):
        OnnxFP32(opt_level="max")
    with pytest.raises(ValueError, match="'threads' of .*'ort-int8'"):
        OrtDynamicInt8(threads=0)
    with pytest.raises(ValueError, match="'export_tolerance'"):
        OnnxFP32(export_tolerance=0)
    # the shared parameters are every ORT compression's; embeddings' default differs
    assert OrtFP16(opt_level="basic").params.opt_level == "basic"
    assert OrtDynamicInt8().params.embeddings is True and OrtStaticInt8().params.embeddings is False


def test_onnx_fp32_matches_torch_at_any_shape(seq, cached_ctx, tmp_path):
    model, task = seq
    pred = OnnxFP32(threads=1).apply(model, task, cached_ctx)
    assert (pred.runtime, pred.device, pred.precision) == ("onnxruntime", "cpu", "fp32")
    for n in (1, 3, 7):  # dynamic batch and sequence length
        batch = task.batch(task.rows[n : 2 * n])
        out = pred(batch)
        assert isinstance(out, torch.Tensor) and out.shape == (n, 2)
        torch.testing.assert_close(out, reference_logits(model, batch), atol=1e-5, rtol=1e-5)
    d = pred.describe()
    assert d["export_max_abs_diff"] < 1e-5 and d["max_abs_diff_vs_torch"] < 1e-5
    assert d["opset"] == rt.OPSET and "dynamo=False" in d["exporter"]
    assert d["threads"] == 1 and d["graph_optimization_level"] == "ORT_ENABLE_ALL"
    assert d["execution_providers"] == "CPUExecutionProvider"
    assert d["onnxruntime_version"] and d["onnx_version"]
    assert d["quantized_matmuls"].startswith("0/") and d["runtime_quantized_matmuls"].startswith("0/")
    assert "TracerWarning" in d["export_warnings"]  # caught and counted, not shown
    saved = pred.save(tmp_path / "art")
    assert saved.name == "model.onnx" and saved.stat().st_size == d["onnx_size_bytes"]
    assert saved.stat().st_size > 4 * pred.parameter_counts()[0]  # fp32 weights inside the file
    assert 31.5 < pred.bits_per_weight() < 33
    # the saved file runs in a fresh predictor
    fresh = rt.ORTPredictor(saved, threads=1, counts=pred.counts)
    batch = task.batch(task.rows[:2])
    torch.testing.assert_close(fresh(batch), pred(batch))


def test_token_classification_logits(rows, cached_ctx):
    model = HFModel(**TINY_BERT).load(Head("token-classification", ("O", "B-X", "I-X")), cached_ctx)
    model.module.eval()
    task = TinySST2(rows, model.tokenizer, kind="token-classification")
    batch = task.batch(task.rows[:3])
    out = OnnxFP32().apply(model, task, cached_ctx)(batch)
    assert out.shape == (*batch["input_ids"].shape, 3)
    torch.testing.assert_close(out, reference_logits(model, batch), atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_ort_int8_quantizes_matmuls_smaller_and_cached(seq, cached_ctx, tmp_path):
    model, task = seq
    pred = OrtDynamicInt8().apply(model, task, cached_ctx)
    d = pred.describe()
    assert pred.precision == "int8" and d["cache_hit"] is False
    q, total = map(int, d["runtime_quantized_matmuls"].split("/"))
    assert total >= 14 and q >= total - 4  # every Linear; attention's two MatMuls per layer stay fp32
    assert "DynamicQuantizeMatMul" in d["runtime_matmul_ops"] or "MatMulIntegerToFloat" in d["runtime_matmul_ops"]
    batch = task.batch(task.rows[:8])
    out, ref = pred(batch), reference_logits(model, batch)
    assert out.shape == (8, 2) and (out - ref).abs().max() < 0.1 * ref.abs().max() + 0.02
    assert 0 < d["max_abs_diff_vs_torch"] < 0.1 * ref.abs().max() + 0.02
    fp32 = OnnxFP32().apply(model, task, cached_ctx)
    assert pred.save(tmp_path / "i8").stat().st_size < 0.35 * fp32.save(tmp_path / "f32").stat().st_size
    again = OrtDynamicInt8().apply(model, task, cached_ctx)
    assert again.describe()["cache_hit"] is True and again.describe()["compression_time_s"] == 0.0
    torch.testing.assert_close(again(batch), out)
    channel = OrtDynamicInt8(per_channel=True, embeddings=False).apply(model, task, cached_ctx)
    assert channel.describe()["cache_hit"] is False and channel.describe()["per_channel"] is True
    # embeddings left fp32: the file is far bigger than with int8 embeddings
    assert channel.save(tmp_path / "pc").stat().st_size > 2 * pred.save(tmp_path / "i8b").stat().st_size


@pytest.mark.slow
def test_static_int8_calibrates_on_calibration_batches(seq, cached_ctx):
    model, _ = seq
    task = CountingTask(seq[1].rows, model.tokenizer)
    CountingTask.calls.clear()
    pred = OrtStaticInt8(samples=24, calibration_method="entropy").apply(model, task, cached_ctx)
    d = pred.describe()
    assert CountingTask.calls == [24]
    assert d["calibration_samples"] == 24 and d["calibration_method"] == "entropy"
    q, total = map(int, d["runtime_quantized_matmuls"].split("/"))
    assert q == total and total >= 14 and "QLinearMatMul" in d["runtime_matmul_ops"]
    assert q == int(d["quantized_matmuls"].split("/")[0])  # QDQ MatMuls in the saved graph
    assert pred.precision == "int8"
    batch = task.batch(task.rows[:8])
    ref = reference_logits(model, batch)
    assert (pred(batch) - ref).abs().max() < 0.2 * ref.abs().max() + 0.05
    # another sample count is another artifact; the same one is a cache hit without calibrating
    assert OrtStaticInt8(samples=24, calibration_method="entropy").apply(model, task, cached_ctx).describe()["cache_hit"]
    assert CountingTask.calls == [24]
    fp32_tables = OrtStaticInt8(samples=8).apply(model, task, cached_ctx)
    assert CountingTask.calls == [24, 8]
    int8_tables = OrtStaticInt8(samples=8, embeddings=True).apply(model, task, cached_ctx)
    assert int8_tables.graph.stat().st_size < 0.4 * fp32_tables.graph.stat().st_size


def test_export_tolerance_fails_with_a_clear_message(seq, cached_ctx):
    model, task = seq
    with pytest.raises(PluginError, match=r"onnx: the exported fp32 ONNX graph .* above export_tolerance 1e-12"):
        OnnxFP32(export_tolerance=1e-12).apply(model, task, cached_ctx)
    assert not list((Path(cached_ctx.cache_dir) / "compress").glob("onnx-*tmp*"))  # nothing half-written


class FFTHead(torch.nn.Module):
    """A classifier no ONNX exporter of this torch can export (aten::fft_fft)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(torch.fft.fft(x).real)


class FFTBert(HFModel):
    name = "fft-bert"

    def load(self, head, ctx):
        loaded = super().load(head, ctx)
        loaded.module.classifier = FFTHead(loaded.module.classifier)
        loaded.trained_for_task = True  # keep this module: fine-tuning would rebuild a plain one
        return loaded


def test_export_failure_names_the_op_and_exporter(seq, cached_ctx):
    model, task = seq
    bad = FFTBert(**TINY_BERT).load(Head("sequence-classification", ("0", "1")), cached_ctx)
    with pytest.raises(PluginError) as err:
        OrtDynamicInt8().apply(bad, task, cached_ctx)
    msg = str(err.value)
    assert "'aten::fft_fft'" in msg and "TorchScript exporter" in msg and f"opset {rt.OPSET}" in msg
    assert msg.startswith("ort-int8:")


def test_unsupported_op_parsing():
    assert rt.unsupported_op("Exporting the operator 'aten::fft_fft' to ONNX opset version 17 is "
                             "not supported") == "aten::fft_fft"
    assert rt.unsupported_op("ONNX export failed on an operator with unrecognized namespace "
                             "my_ns::twist. If you are trying") == "my_ns::twist"
    assert rt.unsupported_op("something else went wrong") is None


@pytest.mark.slow
def test_suite_ner_and_classification(run_suite_dict, shared_data):
    """Through the core with the built-in tasks: ok rows with the ORT columns; an unexportable
    model fails its own cells with the op and the exporter, the rest of the run goes on."""
    plugin = SimpleNamespace(register_models=harness.hookimpl(lambda register: register(FFTBert)))
    df = run_suite_dict({
        "models": [{"plugin": "hf", "name": "tiny", "params": TINY_BERT},
                   {"plugin": "fft-bert", "name": "fft", "params": TINY_BERT}],
        "tasks": [
            {"plugin": "ner", "name": "conll", "params": {
                "data_dir": str(CONLL_SAMPLE), "max_train_samples": 32, "max_eval_samples": 32,
                "batch_size": 16, "bootstrap": 0}},
            {"plugin": "classification", "name": "sst2", "params": {
                "format": "sst2", "data_dir": str(shared_data / "sst2"), "max_train_samples": 32,
                "max_eval_samples": 32, "bootstrap": 0}},
        ],
        "compressions": ["none", "onnx", "ort-int8", {"plugin": "ort-static-int8", "params": {"samples": 8}},
                         "ort-fp16"],
    }, pm=make_plugin_manager(plugin))
    cells = df.groupby(["model", "task", "compression"]).first()
    tiny = cells.loc["tiny"]
    status = tiny.status.to_dict()
    assert {k: v for k, v in status.items() if k[1] != "ort-fp16"} == {
        (t, c): "ok" for t in ("conll", "sst2") for c in ("none", "onnx", "ort-int8", "ort-static-int8")}
    assert set(tiny.xs("ort-fp16", level="compression").status) == {"skipped"}
    ok = df[(df.status == "ok") & (df.model == "tiny")]
    ort_rows = ok[ok.compression != "none"]
    assert set(ort_rows.runtime) == {"onnxruntime"}
    for col in ("export_max_abs_diff", "quantized_matmuls", "runtime_quantized_matmuls", "opset",
                "graph_optimization_level", "onnx_size_bytes", "onnxruntime_version", "threads"):
        assert ort_rows[col].notna().all(), col
    assert (ort_rows.export_max_abs_diff < 1e-4).all()
    assert set(ok[ok.compression == "ort-int8"].precision) == {"int8"}
    size = ok[(ok.metric == "size_bytes") & (ok.task == "conll")].set_index("compression").value
    assert size["ort-int8"] < 0.35 * size["onnx"]
    main = ok[ok.main_metric].set_index(["task", "compression"]).value
    assert main[("conll", "onnx")] == pytest.approx(main[("conll", "none")], abs=1e-6)
    assert main[("sst2", "onnx")] == pytest.approx(main[("sst2", "none")], abs=1e-6)
    fft = df[(df.model == "fft") & (df.compression.isin(["onnx", "ort-int8", "ort-static-int8"]))]
    assert set(fft.status) == {"failed"}
    assert fft.error.str.contains("aten::fft_fft").all() and fft.error.str.contains("TorchScript exporter").all()
    assert set(df[(df.model == "fft") & (df.compression == "none")].status) == {"ok"}


@pytest.mark.gpu
def test_fp16_and_fp32_on_cuda(seq, module_cache, tmp_path):
    """On a GPU with onnxruntime-gpu: ort-fp16 runs fp16 on the CUDA execution provider."""
    if "CUDAExecutionProvider" not in rt.available_providers():
        pytest.skip("onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu)")
    model, task = seq
    cuda = make_ctx(module_cache, tmp_path, device="cuda:0")
    batch = task.batch(task.rows[:4])
    ref = reference_logits(model, batch)
    fp32 = OnnxFP32().apply(model, task, cuda)
    assert fp32.describe()["execution_providers"].startswith("CUDAExecutionProvider")
    torch.testing.assert_close(fp32(batch), ref, atol=1e-3, rtol=1e-3)
    half = OrtFP16().apply(model, task, cuda)
    assert half.precision == "fp16" and half.device == "cuda:0"
    assert half.save(tmp_path / "h").stat().st_size < 0.6 * fp32.save(tmp_path / "f").stat().st_size
    assert (half(batch) - ref).abs().max() < 0.05 * ref.abs().max() + 0.01


def test_reduce_range_auto_follows_the_cpu(monkeypatch):
    import harness.provenance as prov
    from harness.params import as_key
    from harness_plugins.compressions import ort as compress_ort

    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    monkeypatch.setattr(prov, "cpu_flags", lambda: {"avx2", "fma"})
    assert OrtDynamicInt8().params.reduce_range is True  # AVX2 without VNNI: 7-bit weights
    assert OrtStaticInt8(reduce_range="auto").params.reduce_range is True
    monkeypatch.setattr(prov, "cpu_flags", lambda: {"avx2", "avx512f", "avx512_vnni"})
    assert OrtDynamicInt8().params.reduce_range is False
    assert OrtDynamicInt8(reduce_range=True).params.reduce_range is True  # explicit wins
    # the cache key holds the value used, not "auto"
    assert as_key(OrtDynamicInt8())["reduce_range"] is False
    monkeypatch.setattr("platform.machine", lambda: "aarch64")
    assert compress_ort.auto_reduce_range() is False
    with pytest.raises(ValueError, match="'reduce_range' of .*'ort-int8'.*true, false or \"auto\""):
        OrtDynamicInt8(reduce_range="sometimes")


@pytest.mark.slow
def test_static_int8_feeds_only_the_inputs_the_graph_takes(run_suite_dict):
    """DistilBERT's graph has no token_type_ids: calibration fed them anyway and the cell failed
    with 'Invalid input name: token_type_ids' (issue 26)."""
    distil = {"model_type": "distilbert", "dim": 16, "n_layers": 1, "n_heads": 2, "hidden_dim": 32,
              "vocab_size": 30522, "max_position_embeddings": 512}
    df = run_suite_dict({
        "models": [{"plugin": "hf", "name": "distil",
                    "params": {"config": distil, "tokenizer_package": TINY_BERT["tokenizer_package"]}}],
        "tasks": [{"plugin": "ner", "name": "conll", "params": {
            "data_dir": str(ROOT / "suites" / "data" / "conll2003-sample"), "max_train_samples": 16,
            "max_eval_samples": 8, "batch_size": 8}}],
        "compressions": [{"plugin": "ort-static-int8", "params": {"samples": 8}}]})
    assert set(df.status) == {"ok"}, df.error.dropna().unique()
    assert df.loc[df.metric == "entity_f1", "precision"].item() == "int8"
