"""Fixtures shared by harness's own tests; plain helpers live in the non-test modules beside this
file (``tiny_tasks``, ``report_fixtures``, ``suite_kit``, ``browser_kit``), and no test module
imports another.

The public fixtures of :mod:`harness.testing` (``cell_context``, ``plugin_manager``,
``run_suite_dict``, ``shared_data``) come in as a pytest plugin, exactly as a plugin author's
tests get them; ``tests/test_testing.py`` tests them.

Speed lanes are markers only: a slow test carries ``@pytest.mark.slow`` (a whole module
``pytestmark = pytest.mark.slow``), GPU tests ``gpu``; both are registered in pyproject.toml,
where ``--strict-markers`` makes any other (misspelt) marker an error.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest

pytest_plugins = ["harness.testing", "pytester"]

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
def ctx(cell_context):
    """Short name of ``harness.testing``'s public ``cell_context`` (the same object): a CPU
    CellContext, seed 0, no progress bars, private cache (``tmp_path/cache``) and work folder
    (``tmp_path/work``)."""
    return cell_context


@pytest.fixture
def repo_root() -> Path:
    return ROOT


# -- compression tests: one artifact cache and one tiny model per test module ------------------
@pytest.fixture(scope="module")
def module_cache(tmp_path_factory) -> Path:
    """An artifact cache shared by the tests of one module: each artifact is built once there."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def cached_ctx(cell_context, module_cache):
    """``cell_context`` on the module's shared ``module_cache`` (its own work folder)."""
    return dataclasses.replace(cell_context, cache_dir=module_cache)


@pytest.fixture(scope="module")
def rows() -> list[tuple[str, int]]:
    """The first 160 real SST-2 train rows (skips without the real data)."""
    from tiny_tasks import sst2_rows

    return sst2_rows()


@pytest.fixture(scope="module")
def seq(rows, module_cache, tmp_path_factory):
    """(model, task): ``TINY_BERT`` with a 2-label sequence-classification head, in eval mode,
    and a ``TinySST2`` task over ``rows``."""
    from tiny_tasks import TinySST2, make_ctx

    from harness.api import Head
    from harness.testing import TINY_BERT
    from harness_plugins.models.hf import HFModel

    ctx = make_ctx(module_cache, tmp_path_factory.mktemp("w"))
    model = HFModel(**TINY_BERT).load(Head("sequence-classification", ("0", "1")), ctx)
    model.module.eval()
    return model, TinySST2(rows, model.tokenizer)


# -- the browser tests ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def driver():
    """A headless Chromium (Selenium) for the module; the modules using it are marked with
    ``browser_kit.needs_browser``, which skips them (with the reason) without a browser."""
    import browser_kit

    drv, profile = browser_kit.start_driver()
    try:
        yield drv
    finally:
        browser_kit.stop_driver(drv, profile)
