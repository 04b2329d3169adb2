"""harness.toolkit: public, cheap to import, free of built-in plugin names; the one Recipe."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness.errors import ParameterError
from harness.toolkit import Recipe, RecipeParams

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

    recipe = RecipeParams.model_fields
    assert set(Recipe.model_fields) - set(recipe) == {"seed"}
    for task in (NERTask, ClassificationTask):
        fields = task.Params.model_fields
        for name, field in recipe.items():
            assert name in fields, (task, name)
            assert fields[name].default == field.default, (task, name)
            assert fields[name].annotation == field.annotation, (task, name)
        assert fields["epochs"].default == 1 and fields["lr"].annotation is float
    t = NERTask(data_dir=".", epochs=3, lr=1e-4)
    assert t.recipe(7) == Recipe(epochs=3, lr=1e-4, seed=7)


def _builders():
    """Recipe.from_params and the built-in tasks that take the recipe as suite parameters."""
    from harness_plugins.tasks.classification import ClassificationTask
    from harness_plugins.tasks.ner import NERTask

    return (Recipe.from_params, lambda p: NERTask(data_dir=".", **p), lambda p: ClassificationTask(**p))


@pytest.mark.parametrize("params, message", [
    ({"epochs": -1}, "greater than or equal to 1, got int -1"),
    ({"lr": 0}, "greater than 0"),
    ({"warmup_ratio": 1.0}, "less than 1"),
    ({"mixed_precision": "fp8"}, "'auto', 'no', 'fp16' or 'bf16'"),
    ({"max_train_samples": 0}, "greater than or equal to 1"),
    ({"micro_batches": -1}, "greater than or equal to 0"),
    ({"epochs": "3"}, "valid integer"),
])
def test_recipe_ranges(params, message):
    key = next(iter(params))
    for build in _builders():
        with pytest.raises(ParameterError, match=message) as exc:
            build(params)
        assert exc.value.key == key and f"parameter {key!r}" in str(exc.value)


def test_recipe_unknown_names():
    for build in _builders():
        with pytest.raises(ParameterError, match=r"unknown parameter.*Did you mean: lr\?") as exc:
            build({"lrr": 1})
        assert exc.value.key == "lrr" and "'lrr'" in str(exc.value)
