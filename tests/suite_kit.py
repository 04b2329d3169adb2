"""Helpers for tests that run small suites through the core or the ``harness`` command
(``test_faults.py``, ``test_faults_round3.py``, ``test_api_contract.py``, ``test_runner.py``).
Plain constants and functions only: fixtures are in conftest.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from harness.testing import FAST_SETTINGS, TINY_BERT

ROOT = Path(__file__).resolve().parents[1]
#: the test plugin modules (``faulty``, ``sabotage``, ...): put on PYTHONPATH for subprocesses
PLUGINS = Path(__file__).parent / "plugins"
#: the CoNLL-2003 sample committed with the suites
SAMPLE = ROOT / "suites" / "data" / "conll2003-sample"
MODEL: dict[str, Any] = {"plugin": "hf", "name": "tiny", "params": TINY_BERT}


def ner_entry(samples: int) -> dict[str, Any]:
    """The ``ner`` task on ``SAMPLE`` with ``samples`` train and evaluation sentences."""
    return {"plugin": "ner", "name": "conll", "params": {
        "data_dir": str(SAMPLE), "max_train_samples": samples, "max_eval_samples": samples,
        "batch_size": 16}}


def second_ner(samples: int = 40) -> dict[str, Any]:
    """A second ``ner`` task, ``conll-b``, on ``SAMPLE`` with another train size, so another
    fine-tuned checkpoint: its cells and the first task's are different (model, task) groups,
    which two workers start at once (cells of one group wait while the first may be
    fine-tuning its checkpoint, harness.scheduling)."""
    return {**ner_entry(samples), "name": "conll-b"}


def write_suite(tmp: Path, compressions, *, tasks, **settings) -> Path:
    """``tmp/suite.yaml``: ``MODEL`` x ``tasks`` x ``compressions``, fast timing settings and
    the cache in ``tmp/cache`` (``settings`` added)."""
    doc = {"name": "t", "settings": {**FAST_SETTINGS, "cache_dir": str(tmp / "cache"), **settings},
           "models": [MODEL], "tasks": tasks, "compressions": compressions}
    p = tmp / "suite.yaml"
    p.write_text(yaml.safe_dump(doc))
    return p


def doc_module(doc: Path):
    """A module made of every ```python block of ``doc``, run in order."""
    import re
    import types

    blocks = re.findall(r"```python\n(.*?)```", doc.read_text(), flags=re.S)
    assert blocks, doc
    module = types.ModuleType(f"docs_{doc.stem.replace('-', '_')}")
    for i, code in enumerate(blocks):
        exec(compile(code, f"{doc}[block {i}]", "exec"), module.__dict__)  # noqa: S102
    return module
