"""harness.toolkit: public, cheap to import, free of built-in plugin names; the one Recipe."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from harness.toolkit import Recipe

HARNESS = Path(__file__).resolve().parents[1] / "harness"


def test_importing_harness_and_the_toolkit_does_not_import_torch():
    code = ("import sys, harness, harness.toolkit, harness.testing; "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_toolkit_modules_are_small_and_name_no_builtin_plugin():
    files = sorted((HARNESS / "toolkit").glob("*.py"))
    assert len(files) >= 5
    for f in files:
        text = f.read_text()
        assert len(text.splitlines()) <= 400, f
        assert "harness_plugins" not in text, f


def test_the_public_names_are_exported():
    import harness.toolkit as tk

    for name in ("TorchPredictor", "pad_batch", "FineTunedTask", "cached_or_build", "base_info",
                 "dir_bytes", "Recipe", "finetune"):
        assert name in tk.__all__ and hasattr(tk, name)
    from harness_plugins.tasks.ner import NERTask

    assert issubclass(NERTask, tk.FineTunedTask)  # the built-ins use the public base


def test_recipe_is_the_one_declaration_of_the_task_parameters():
    from harness_plugins.tasks.classification import ClassificationTask
    from harness_plugins.tasks.ner import NERTask

    names = {f.name for f in fields(Recipe)} - {"seed"}
    assert set(Recipe.parameters()) == names
    for task in (NERTask, ClassificationTask):
        params = task.parameters()
        assert names <= set(params)
        assert params["epochs"].default == 1 and params["lr"].annotation == "float"
    t = NERTask(data_dir=".", epochs=3, lr=1e-4)
    assert t.recipe(7) == Recipe(epochs=3, lr=1e-4, seed=7)


@pytest.mark.parametrize("params, message", [
    ({"epochs": -1}, "epochs must be >= 1, got -1"),
    ({"lr": 0}, "lr must be > 0"),
    ({"warmup_ratio": 1.0}, "warmup_ratio must be in"),
    ({"mixed_precision": "fp8"}, "mixed_precision must be one of"),
    ({"max_train_samples": 0}, "max_train_samples must be >= 1"),
])
def test_recipe_ranges(params, message):
    with pytest.raises(ValueError, match=message):
        Recipe.from_params(params)


def test_recipe_unknown_names():
    with pytest.raises(TypeError, match=r"unknown recipe parameter\(s\) \['lrr'\]"):
        Recipe.from_params({"lrr": 1})
