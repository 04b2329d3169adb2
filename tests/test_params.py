"""Plugin parameters declared once (harness.params): validation with key paths and near names,
``harness plugins --params``, the docs tables and the cache key all come from ``Params``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Literal

import pytest
from click.testing import CliRunner
from pydantic import Field, model_validator

import harness
from harness.cli import main
from harness.entries import Entry, check_params
from harness.errors import ParameterError, SuiteError
from harness.params import as_key, describe, validate
from harness.plugins import get_plugin_manager

ROOT = Path(__file__).resolve().parents[1]


class Drop(harness.Transform):
    name = "drop-test"

    class Params(harness.Params):
        keep: int = Field(4, ge=1)
        """Layers kept."""
        mode: Literal["first", "every-other"] = "first"
        """Which layers."""
        ratio: float | None = None
        """A share instead of a count."""
        names: list[str] = []
        """Layer names."""

        @model_validator(mode="after")
        def _one(self) -> Any:
            if self.ratio is not None and self.keep != 4:
                raise ValueError("give keep or ratio, not both")
            return self

    params: Params

    def transform(self, model, task, ctx):  # pragma: no cover - not run here
        return model


class Legacy(harness.Compression):
    """Written before Params: keyword arguments of __init__."""

    name = "legacy-test"

    def __init__(self, *, bits: int = 8, scheme: str = "sym") -> None:
        super().__init__()
        self.bits, self.scheme = bits, scheme

    def apply(self, model, task, ctx):  # pragma: no cover - not run here
        raise NotImplementedError


def entry(params: dict[str, Any]) -> Entry:
    return Entry("compression", "drop-test", "drop-test", params, "compressions[2]")


@pytest.mark.parametrize("params, key, text", [
    ({"kep": 2}, "compressions[2].params.kep",
     "unknown parameter 'kep' for compression plugin 'drop-test'. Did you mean: keep? "
     "Accepted: keep, mode, ratio, names"),
    ({"keep": True}, "compressions[2].params.keep", "must be a valid integer, got bool True"),
    ({"keep": "3"}, "compressions[2].params.keep", "must be a valid integer, got str '3'"),
    ({"keep": 0}, "compressions[2].params.keep", "must be greater than or equal to 1"),
    ({"mode": "last"}, "compressions[2].params.mode", "must be 'first' or 'every-other'"),
    ({"names": [1]}, "compressions[2].params.names.0", "must be a valid string"),
    ({"keep": 2, "ratio": 0.5}, "compressions[2].params", "give keep or ratio, not both"),
])
def test_a_suite_entry_is_validated_with_its_key_path(params, key, text):
    with pytest.raises(SuiteError) as e:
        check_params(Drop, entry(params), Path("s.yaml"))
    assert e.value.key == key
    assert str(e.value).startswith(f"s.yaml: {key}: ")
    assert text in str(e.value)


def test_valid_values_and_an_int_for_a_float():
    p = validate(Drop, {"ratio": 1, "names": ["a"]})
    assert p.ratio == 1.0 and p.names == ["a"] and p.keep == 4
    d = Drop(ratio=1)
    assert d.params.ratio == 1.0 and d.params.mode == "first"


def test_direct_construction_raises_a_parameter_error_that_is_a_value_error():
    with pytest.raises(ParameterError, match="parameter 'keep' of compression plugin 'drop-test'") as e:
        Drop(keep=-1)
    assert isinstance(e.value, ValueError) and e.value.key == "keep"


def test_the_cache_key_is_the_validated_values_with_defaults():
    assert as_key(Drop()) == as_key(Drop(keep=4, mode="first")) == {
        "keep": 4, "mode": "first", "ratio": None, "names": []}
    assert as_key(Drop(keep=3)) != as_key(Drop())


def test_a_plugin_written_before_params_is_derived_from_its_signature():
    assert Legacy._params_from_signature
    assert [p.name for p in describe(Legacy)] == ["bits", "scheme"]
    with pytest.raises(SuiteError, match="Did you mean: bits"):
        check_params(Legacy, Entry("compression", "legacy-test", "l", {"bit": 4}, "c[0]"), None)
    assert as_key(Legacy(bits=4)) == {"bits": 4, "scheme": "sym"}  # from its attributes


def test_describe_lists_types_defaults_docs_and_bounds():
    rows = {p.name: p for p in describe(Drop)}
    assert rows["keep"].type == "int" and rows["keep"].default == "4"
    assert rows["keep"].doc == "Layers kept. (>= 1)"
    assert rows["mode"].type == '"first" | "every-other"' and rows["mode"].default == '"first"'
    assert rows["ratio"].type == "float | None" and rows["ratio"].default == "null"
    assert rows["names"].type == "list[str]"


def builtin_classes() -> list[tuple[str, str, type]]:
    regs = get_plugin_manager().registries()
    return [(kind, name, regs.by_kind(kind).classes[name])
            for kind in ("model", "task", "compression", "executor") for name in regs.by_kind(kind)
            if regs.by_kind(kind).classes[name].__module__.split(".")[0] in ("harness", "harness_plugins")]


def test_every_builtin_plugin_declares_documented_params():
    classes = builtin_classes()
    assert len(classes) > 15
    for kind, name, cls in classes:
        assert not cls._params_from_signature, f"{kind} {name}: declare a Params model"
        for p in describe(cls):
            assert p.doc, f"{kind} {name}: parameter {p.name!r} has no docstring"


def test_harness_plugins_params_lists_a_plugin():
    r = CliRunner().invoke(main, ["plugins", "--params", "low-rank"])
    assert r.exit_code == 0, r.output
    assert r.output.startswith("compression low-rank (")
    lines = r.output.splitlines()
    assert lines[1].split() == ["PARAMETER", "TYPE", "DEFAULT", "MEANING"]
    assert any(line.split()[:2] == ["recovery_epochs", "float"] for line in lines)
    r = CliRunner().invoke(main, ["plugins", "--params", "low-rank", "--json"])
    doc = json.loads(r.output)
    assert doc[0]["kind"] == "compression" and "rank" in [p["name"] for p in doc[0]["params"]]


def test_harness_plugins_params_unknown_name_exits_2_with_near_names():
    r = CliRunner().invoke(main, ["plugins", "--params", "lowrank"])
    assert r.exit_code == 2
    assert "Unknown plugin 'lowrank'. Did you mean: low-rank" in r.output


def test_docs_tables_are_generated_from_the_declarations():
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "params_docs.py"), "--check"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    doc = (ROOT / "docs" / "plugins.md").read_text()
    for kind, name, _ in builtin_classes():
        assert f"#### {kind} `{name}`" in doc
