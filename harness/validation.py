"""Choices on the validation split, results on the evaluation split.

With the run setting ``validation_split`` (e.g. ``validation``), a cell scores that split too,
after its evaluation split, whenever the task offers it (``Task.splits()``) and it is not the
task's own evaluation split (a task's own ``validation_split`` parameter overrides the setting:
e.g. a held-out part of train where the validation split is the one reported):
its main metric becomes the row ``validation_<metric>`` (not a main
metric; no ``metric_group``: a leaderboard column beside the main metric's; ``split`` the
split's name). ``harness select`` chooses on
it when every ok variant of a (model, task) has it and reports the chosen variant's evaluation
(test) figure beside it (:mod:`harness.analysis.select`), so a release decision is never tuned on
the test split. Every task row names its split in the ``split`` column.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from .api import CellContext, LoadedModel, Predictor, Task
from .rows import metric_columns

__all__ = ["PREFIX", "eval_split_of", "validation_rows", "validation_split_of"]

PREFIX = "validation_"  #: a validation row's metric: this + the task's main metric


def eval_split_of(task: Task) -> str | None:
    """The split a task's ``evaluate()`` scores by default (its ``eval_split``), if it says."""
    split = getattr(task, "eval_split", None)
    return split if isinstance(split, str) and split else None


def validation_split_of(task: Task, setting: str) -> str | None:
    """The split to score beside the evaluation split: the task's own ``validation_split``
    attribute when it names one (a task parameter of ``harness.toolkit.FineTunedTask``), else
    ``setting``; when the task has that split and it is not its evaluation split, else None."""
    own = getattr(task, "validation_split", None)
    split = own if isinstance(own, str) and own else setting
    if not split or split == eval_split_of(task):
        return None
    return split if split in task.splits() else None


def validation_rows(task: Task, predictor: Predictor, model: LoadedModel, ctx: CellContext,
                    split: str) -> list[dict[str, Any]]:
    """The metric part of the validation row: the task's main metric on ``split``. The cell's
    recorded predictions stay those of its evaluation split (what its metrics and the paired
    tests of ``harness compare`` rest on): this evaluation records none."""
    quiet = replace(ctx, record_predictions=lambda table, **meta: None)
    main = next(m for m in task.evaluate(predictor, model, quiet, split=split) if m.main_metric)
    renamed = replace(main, metric=PREFIX + main.metric, main_metric=False,
                      metric_group="",
                      metric_description=f"{main.metric_description} - on the {split} split, "
                                         "for choices (harness select)")
    return [{**metric_columns(renamed), "split": split}]
