"""harness: benchmark NLP models and their compressed variants (accuracy x size x latency).

Plugin authors need: the API classes exported here (``harness.api``; ``harness.examples`` for
models that are not transformers), ``harness.hookimpl``,
the errors (``harness.errors``), the helpers in ``harness.toolkit`` and the pytest fixtures
in ``harness.testing``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import chain as _chain  # noqa: F401  # registers Transform.apply's default
from .api import (
    CAPABILITIES,
    CellContext,
    Compression,
    Executor,
    ExecutorContext,
    Finetunable,
    Head,
    LoadedModel,
    MetricValue,
    Model,
    Params,
    Plugin,
    Predictor,
    Task,
    Transform,
    capability_reason,
)
from .errors import BadInput, DataError, HarnessError, ParameterError, PluginError, SuiteError
from .examples import ExampleModel, ExamplePredictor, Examples
from .hookspecs import hookimpl
from .plugins import get_plugin_manager
from .version import __version__

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "CAPABILITIES",
    "BadInput",
    "CellContext",
    "Compression",
    "DataError",
    "ExampleModel",
    "ExamplePredictor",
    "Examples",
    "Executor",
    "ExecutorContext",
    "Finetunable",
    "HarnessError",
    "Head",
    "LoadedModel",
    "MetricValue",
    "Model",
    "ParameterError",
    "Params",
    "Plugin",
    "PluginError",
    "Predictor",
    "SuiteError",
    "Task",
    "Transform",
    "__version__",
    "capability_reason",
    "get_plugin_manager",
    "hookimpl",
    "load_predictions",
    "load_results",
]


def load_results(path: Any, *, latest: bool = True) -> pd.DataFrame:
    """Read a results file or run folder (``results.jsonl``, ``.csv``, ``.json``, ``.parquet``).

    :param latest: keep only the rows of the last run that wrote each cell.
    """
    from .results import load_results as _load

    return _load(path, latest=latest)


def load_predictions(run: Any, cell: str | tuple[str, str, str]) -> pd.DataFrame:
    """The per-example outputs of ``cell`` ("model/task/compression", or a tuple of the three
    names when one has a ``/``) saved in the run folder ``run`` (one row per example; the
    file's metadata, e.g. ``kind``, ``metric`` and ``data_hash``, in ``df.attrs``). See
    docs/results.md."""
    from .predictions import load_predictions as _load

    return _load(run, cell)
