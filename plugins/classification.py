"""Deprecated: ``harness_plugins.classification`` moved to ``harness_plugins.tasks.classification``.

This module re-exports the public names of the ``classification`` task for one release and goes
away in the next one; import them from ``harness_plugins.tasks.classification``. It is not an
entry point and declares no hooks: the ``classification`` plugin is registered from its new
module only.
"""

import warnings

from .tasks.classification import SPLITS, ClassificationTask, classification_metrics

warnings.warn(
    "harness_plugins.classification is deprecated: import from "
    "harness_plugins.tasks.classification instead; the old path goes away in the next release",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = ["SPLITS", "ClassificationTask", "classification_metrics"]
