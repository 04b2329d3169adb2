"""The architecture matrix (issue 26): tiny random encoders of BERT, DistilBERT, RoBERTa,
DeBERTa-v2, ALBERT, ELECTRA and MPNet (hidden 32, 2 layers, the MiniLM tokenizer, built by the
``hf`` plugin from a config) x every built-in compression (each method of ``prune``) x both task
kinds (the committed SST-2 and CoNLL-2003 samples), run once through the real runner in this
process (``inline``). The suite is ``scripts/arch_support.py``'s, which also writes the support
table of docs/compression.md from the same rows.

Every cell is ``ok`` except ``share-layers`` on ALBERT (``skipped``: its one layer is already
shared) and skips decided before any model is loaded, for every family alike, by the machine
(``half`` without native bf16, ``ort-fp16`` without CUDA). An ``ok`` cell is checked for what
its method promises, against the ``none`` row of the same model and task: fewer parameters
(structural methods; ``distill`` runs fewer layers, and on ALBERT, whose one layer runs
repeatedly, that is all it promises), fewer bytes (int8 / 16-bit / palette / sparse
artifacts; ``ort-static-int8`` quantises the embedding tables too here, as they are most of a
tiny model's bytes), and logits within 1e-4 of torch for the fp32 format conversions (``onnx``
from its rows; ``openvino`` by calling its predictor in ``test_openvino_logits_match_torch``),
within 1e-2 for ``ort-fp16`` (fp16 weights and compute).

With ``HARNESS_ARCH_RESULTS=DIR`` the run's results folder is kept in DIR, for
``python scripts/arch_support.py --results DIR``. About 3 minutes on 2 CPU cores (the run itself; OpenVINO / NNCF conversions are most
of it): ``slow``.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("arch_support", ROOT / "scripts" / "arch_support.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


ARCH = _script()
FAMILIES = list(ARCH.FAMILIES)
COMPRESSIONS = [ARCH.entry_name(c) for c in ARCH.COMPRESSIONS]
#: what each ok cell must show against the ``none`` row of its model and task
FEWER_PARAMETERS = {"low-rank", "share-layers", "prune-heads", "prune-ffn", "distill", "vocab-trim"}
FEWER_BYTES = {"dynamic-int8", "half", "ort-int8", "ort-fp16", "ort-static-int8", "nncf-ptq", "nncf-weights",
               "palettize", "prune", "vocab-trim"}
LOGITS_TOLERANCE = {"onnx": 1e-4, "ort-fp16": 1e-2}
#: cells that fail today, in plugins outside the structural methods: (family, compression) ->
#: the error. xfail(strict): the test says when one is fixed, so it can leave this list.
KNOWN_FAILURES: dict[tuple[str, str], str] = {}


@pytest.fixture(scope="module")
def matrix(tmp_path_factory):
    """The matrix's rows: {(family, task, compression): {"status", "error", "phase", metric: value,
    info column: value}}."""
    keep = os.environ.get("HARNESS_ARCH_RESULTS")
    tmp = tmp_path_factory.mktemp("arch")
    out = Path(keep) if keep else tmp / "out"
    df = ARCH.run(out, tmp / "cache")
    cells = {}
    for key, g in df.groupby(["model", "task", "compression"]):
        first = g.iloc[0]
        cell = {k: first[k] for k in g.columns if k not in ("metric", "value") and first[k] == first[k]}
        cell.update(zip(g["metric"].dropna(), g.loc[g["metric"].notna(), "value"], strict=True))
        cells[key] = cell
    return cells


def _environment_skips(matrix) -> dict[str, str]:
    """Compressions this machine cannot run (skipped at setup, before a model is loaded, for
    every cell with one reason): {compression: reason}."""
    out = {}
    for c in COMPRESSIONS:
        got = [v for (_, _, comp), v in matrix.items() if comp == c]
        if all(v["status"] == "skipped" and v.get("phase") == "setup" for v in got):
            reasons = {v.get("error") for v in got}
            if len(reasons) == 1:
                out[c] = reasons.pop()
    return out


def test_every_cell_ran(matrix):
    assert len(matrix) == len(FAMILIES) * len(COMPRESSIONS) * len(ARCH.TASKS)
    env = _environment_skips(matrix)
    failed = {k: v.get("error") for k, v in matrix.items()
              if v["status"] == "failed" and (k[0], k[2]) not in KNOWN_FAILURES}
    assert not failed, "\n".join(f"{'/'.join(k)}: {e}" for k, e in failed.items())
    skipped = {(f, c) for (f, _, c), v in matrix.items() if v["status"] == "skipped" and c not in env}
    assert skipped == set(ARCH.PERMITTED_SKIPS), (skipped, env)


@pytest.mark.parametrize(("family", "compression"), [
    pytest.param(f, c, marks=pytest.mark.xfail(reason=KNOWN_FAILURES[(f, c)], strict=True))
    if (f, c) in KNOWN_FAILURES else (f, c) for c in COMPRESSIONS for f in FAMILIES])
def test_cell_keeps_its_promise(matrix, family, compression):
    env = _environment_skips(matrix)
    for task in (t["name"] for t in ARCH.TASKS):
        cell, base = matrix[(family, task, compression)], matrix[(family, task, "none")]
        if compression in env:
            continue
        if (family, compression) in ARCH.PERMITTED_SKIPS:
            assert cell["status"] == "skipped", cell.get("error")
            assert ARCH.PERMITTED_SKIPS[(family, compression)] in cell["error"]
            continue
        assert cell["status"] == "ok", cell.get("error")
        _promise(compression, family, cell, base)


def _promise(compression: str, family: str, cell: dict, base: dict) -> None:
    if compression in FEWER_PARAMETERS and not (compression == "distill" and family == "albert"):
        assert cell["parameters"] < base["parameters"]
    if compression in FEWER_BYTES:
        assert cell["size_bytes"] < base["size_bytes"]
    if compression in LOGITS_TOLERANCE:
        assert cell["max_abs_diff_vs_torch"] <= LOGITS_TOLERANCE[compression]
    if compression in ("ort-int8", "ort-static-int8"):
        assert cell["precision"] == "int8"
    if compression == "prune":
        assert cell["nonzero_parameters"] < base["nonzero_parameters"]
        assert cell["achieved_sparsity"] == pytest.approx(0.5, abs=0.01)  # of the encoder's Linears
    if compression == "distill":
        assert cell["student_layers"] < cell["teacher_layers"]
    if compression == "finetune":
        assert str(cell["recovery"]).startswith("recovered")
    if compression == "vocab-trim":  # the train split's pieces only: far fewer than MiniLM's 30522
        assert cell["vocab_kept"] < cell["vocab_before"] // 10


@pytest.mark.parametrize("family", FAMILIES)
def test_openvino_logits_match_torch(family, cell_context):
    """The OpenVINO conversion of each family gives torch's token logits within 1e-4."""
    pytest.importorskip("openvino")
    import torch

    from harness.api import Head
    from harness_plugins.compressions.nncf import OpenVINOFP32
    from harness_plugins.models.hf import HFModel
    from harness_plugins.tasks.ner import NERTask

    task = NERTask(**ARCH.TASKS[1]["params"])
    params = {"config": ARCH.FAMILIES[family], "tokenizer_package": ARCH.TOKENIZER}
    model = HFModel(**params).load(Head("token-classification", task.head().labels), cell_context)
    model.module.eval()
    pred = OpenVINOFP32().apply(model, task, cell_context)
    for batch in task.latency_batches(model, 4, 2, seed=0):
        with torch.inference_mode():
            ref = model.module(**batch).logits
        got = torch.as_tensor(pred(batch))
        mask = batch["attention_mask"].bool()
        assert (got - ref).abs()[mask].max().item() <= 1e-4


def test_support_table_renders(matrix, tmp_path):
    """The docs section from these rows: every family a column, every compression a row."""
    import pandas as pd

    rows = [{"model": f, "task": t, "compression": c, "status": v["status"], "error": v.get("error")}
            for (f, t, c), v in matrix.items()]
    text = ARCH.section(pd.DataFrame(rows))
    assert text.startswith(ARCH.BEGIN) and text.endswith(ARCH.END)
    assert "| compression | " + " | ".join(FAMILIES) + " |" in text
    assert all(f"| `{c}` |" in text for c in COMPRESSIONS) and "already shared" in text
    doc = tmp_path / "doc.md"
    doc.write_text(f"# t\n\n{ARCH.BEGIN} -->\nold\n{ARCH.END}\n\nafter\n")
    assert ARCH.rewrite(doc, text) and not ARCH.rewrite(doc, text)
    assert doc.read_text() == f"# t\n\n{text}\n\nafter\n"
