"""The plugin API's explicit contracts: abstract axes, declared capabilities, and every plugin
of the project (built-ins, test plugins, tiny tasks, the example, the docs) is concrete."""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

import pytest

import harness
from harness.api import (
    Compression,
    Executor,
    Finetunable,
    Model,
    Predictor,
    Task,
    Transform,
    capability_reason,
)
from harness.testing import TINY_BERT, make_plugin_manager

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("axis, methods", [
    (Model, {"load"}),
    (Task, {"head", "data_hash", "evaluate", "latency_batches"}),
    (Compression, {"apply"}),
    (Transform, {"transform"}),
    (Predictor, {"__call__", "save", "parameter_counts"}),
    (Executor, {"run"}),
])
def test_axes_are_abstract_base_classes(axis, methods):
    assert set(axis.__abstractmethods__) == methods
    incomplete = type("Incomplete", (axis,), {"name": "incomplete"})
    with pytest.raises(TypeError, match="abstract"):
        incomplete()


def _project_classes() -> list[type]:
    import faulty
    import observer
    import tiny_tasks
    import truncated
    from suite_kit import doc_module

    sys.path.insert(0, str(ROOT / "examples" / "harness-example"))
    try:
        import harness_example
    finally:
        sys.path.pop(0)
    docs = doc_module(ROOT / "docs" / "plugins.md")
    classes = []
    for extra in ((faulty, observer, truncated, harness_example), (docs,)):  # docs reuse names
        reg = make_plugin_manager(*extra).registries()
        classes += [c for kind in ("model", "task", "compression", "executor")
                    for c in reg.by_kind(kind).classes.values()]
    return classes + [tiny_tasks.TinySST2, tiny_tasks.RecoverableSST2]


def test_every_plugin_of_the_project_is_concrete():
    classes = _project_classes()
    names = {c.name for c in classes}
    assert {"ner", "classification", "none", "prune", "nncf-ptq", "inline", "tiny-bert",
            "has-entity", "layer-drop", "raises", "hf-truncated", "tiny-sst2"} <= names
    abstract = {c.__name__: sorted(c.__abstractmethods__) for c in classes if inspect.isabstract(c)}
    assert abstract == {}


def test_builtin_tasks_are_finetunable_and_prune_declares_it():
    from harness_plugins.compressions.prune import Prune
    from harness_plugins.tasks.classification import ClassificationTask

    task = ClassificationTask(format="sst2", data_dir=str(ROOT / "suites" / "data" / "sst2-sample"))
    assert isinstance(task, Finetunable)
    assert Prune(recovery_epochs=1).requires == ("finetune",) and Prune().requires == ()
    assert capability_reason(Prune(recovery_epochs=1), task) is None


class _Plain(Compression):
    name = "needs-magic"
    requires = ("magic",)

    def apply(self, model, task, ctx):  # pragma: no cover - never reached
        raise AssertionError


def test_unknown_capability_is_a_reason_naming_it():
    from harness_plugins.tasks.classification import ClassificationTask

    task = ClassificationTask(format="sst2", data_dir=".")
    assert "unknown capability 'magic'" in capability_reason(_Plain(), task)


class _NoFinetune:
    """A module registering a classification task without the 'finetune' capability."""

    from harness_plugins.tasks.classification import ClassificationTask as _Base

    class Task(_Base):
        name = "no-finetune"
        finetune = None  # type: ignore[assignment]  # opts out of harness.api.Finetunable

    @staticmethod
    @harness.hookimpl
    def register_tasks(register):
        register(_NoFinetune.Task)


def test_a_missing_capability_skips_the_cell_with_a_reason(run_suite_dict):
    data = str(ROOT / "suites" / "data" / "sst2-sample")
    df = run_suite_dict({
        "models": [{"plugin": "hf", "params": TINY_BERT}],
        "tasks": [{"plugin": "no-finetune", "params": {
            "format": "sst2", "data_dir": data, "max_train_samples": 16, "max_eval_samples": 16,
            "bootstrap": 0, "batch_size": 8}}],
        "compressions": ["none", {"plugin": "prune", "params": {"recovery_epochs": 1}}],
    }, pm=make_plugin_manager(_NoFinetune))
    status = df.drop_duplicates("compression").set_index("compression")
    assert status.status["none"] == "ok"
    assert status.status["prune"] == "skipped"
    reason = status.error["prune"]
    assert "task 'no-finetune'" in reason and "'finetune' capability" in reason


def test_an_abstract_plugin_fails_its_cell_naming_the_missing_methods(run_suite_dict):
    class Half(Compression):  # no apply()
        name = "half-done"

    class Plugin:
        @staticmethod
        @harness.hookimpl
        def register_compressions(register):
            register(Half)

    df = run_suite_dict({
        "models": [{"plugin": "hf", "params": TINY_BERT}],
        "tasks": [{"plugin": "classification", "params": {
            "format": "sst2", "data_dir": str(ROOT / "suites" / "data" / "sst2-sample"),
            "max_train_samples": 8, "max_eval_samples": 8, "bootstrap": 0}}],
        "compressions": ["half-done"],
    }, pm=make_plugin_manager(Plugin))
    assert df.status.tolist() == ["failed"]
    assert "compression plugin 'half-done'" in df.error[0] and "abstract method(s) apply" in df.error[0]
