"""Deprecated: ``harness_plugins.ner`` moved to ``harness_plugins.tasks.ner``.

This module re-exports the public names of the ``ner`` task for one release and goes away in
the next one; import them from ``harness_plugins.tasks.ner``. It is not an entry point and
declares no hooks: the ``ner`` plugin is registered from its new module only.
"""

import warnings

from .tasks.ner import (
    HUB_PREFIX,
    SPLITS,
    NERTask,
    Window,
    make_windows,
    ner_metrics,
    paired_scorer,
    special_affixes,
    word_pieces,
)

warnings.warn(
    "harness_plugins.ner is deprecated: import from harness_plugins.tasks.ner instead; "
    "the old path goes away in the next release",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = [
    "HUB_PREFIX",
    "SPLITS",
    "NERTask",
    "Window",
    "make_windows",
    "ner_metrics",
    "paired_scorer",
    "special_affixes",
    "word_pieces",
]
