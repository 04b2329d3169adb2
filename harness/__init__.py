"""harness: benchmark NLP models and their compressed variants (accuracy x size x latency)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .api import (
    CellContext,
    Compression,
    Executor,
    ExecutorContext,
    Head,
    LoadedModel,
    MetricValue,
    Model,
    Plugin,
    Predictor,
    Task,
)
from .errors import DataError, HarnessError, PluginError, SuiteError
from .hookspecs import hookimpl
from .plugins import get_plugin_manager

__version__ = "0.1.0"

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "CellContext",
    "Compression",
    "DataError",
    "Executor",
    "ExecutorContext",
    "HarnessError",
    "Head",
    "LoadedModel",
    "MetricValue",
    "Model",
    "Plugin",
    "PluginError",
    "Predictor",
    "SuiteError",
    "Task",
    "__version__",
    "get_plugin_manager",
    "hookimpl",
    "load_results",
]


def load_results(path: Any, *, latest: bool = True) -> pd.DataFrame:
    """Read a results file or run folder (``results.jsonl``, ``.csv``, ``.json``, ``.parquet``).

    :param latest: keep only the rows of the last run that wrote each cell.
    """
    from .results import load_results as _load

    return _load(path, latest=latest)
