"""Module-scoped fixtures shared by the compression test modules: real SST-2 rows, one artifact
cache per module (each artifact is built once), a tiny sequence-classification model with its
task, and a CellContext on that cache. Import the fixtures by name into a test module."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tiny_tasks import TinySST2, sst2_rows

from harness.api import CellContext, Head
from harness.testing import TINY_BERT
from harness_plugins.hf import HFModel


def make_ctx(cache: Path, tmp: Path, device: str = "cpu") -> CellContext:
    return CellContext(device=device, seed=0, cache_dir=cache, work_dir=tmp, show_progress=False)


def reference_logits(model, batch):
    """The fp32 torch logits a compressed predictor is compared with."""
    with torch.inference_mode():
        return model.module(**batch).logits


@pytest.fixture(scope="module")
def rows() -> list[tuple[str, int]]:
    return sst2_rows()


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")  # shared: each artifact is built once per module


@pytest.fixture(scope="module")
def seq(rows, cache, tmp_path_factory):
    ctx = make_ctx(cache, tmp_path_factory.mktemp("w"))
    model = HFModel(**TINY_BERT).load(Head("sequence-classification", ("0", "1")), ctx)
    model.module.eval()
    return model, TinySST2(rows, model.tokenizer)


@pytest.fixture
def ctx(cache, tmp_path) -> CellContext:
    return make_ctx(cache, tmp_path)
