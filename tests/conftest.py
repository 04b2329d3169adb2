from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest_plugins = ["harness.testing"]

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent / "plugins"))  # test plugin modules


def _cuda_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:
        return False


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` skip cleanly (with the reason) where CUDA is not available."""
    gpu_items = [item for item in items if "gpu" in item.keywords]
    if gpu_items and not _cuda_available():
        skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
        for item in gpu_items:
            item.add_marker(skip)


@pytest.fixture
def ctx(tmp_path: Path):
    """A CPU CellContext, seed 0, cache under ``tmp_path/cache``, no progress bars."""
    from harness.api import CellContext

    return CellContext(device="cpu", seed=0, cache_dir=tmp_path / "cache", work_dir=tmp_path,
                       show_progress=False)


@pytest.fixture
def repo_root() -> Path:
    return ROOT
