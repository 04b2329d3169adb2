"""Workers never build the same cached work at once (harness.scheduling): a teacher is fine-tuned
once, and a chain's shared first step (a distilled student) is trained once, with --jobs > 1."""

from __future__ import annotations

import os
import time

import pytest
from suite_kit import ner_entry

from harness.api import ExecutorContext
from harness.cell import CellSpec
from harness.executors import LocalExecutor
from harness.scheduling import building, built, needs, next_ready
from harness.suite import suite_from_dict
from harness.testing import FAST_SETTINGS, TINY_BERT
from harness.timephase import ROTATION_METRICS

DISTILL = {"plugin": "distill", "params": {"num_layers": 1, "epochs": 0.1}}


def _cells(tmp_path, compressions, tasks=None) -> list[CellSpec]:
    doc = {"name": "t", "settings": {**FAST_SETTINGS, "cache_dir": str(tmp_path / "cache")},
           "models": [{"plugin": "hf", "name": "tiny", "params": TINY_BERT}],
           "tasks": tasks or [ner_entry(32)], "compressions": compressions}
    suite = suite_from_dict(doc, tmp_path / "suite.yaml")
    return [CellSpec(f"{t.name}-{c.name}", suite.models[0], t, c, suite.settings)
            for t in suite.tasks for c in suite.compressions]


def test_a_cell_waits_for_the_checkpoint_or_prefix_another_is_building(tmp_path):
    other_task = {**ner_entry(16), "name": "conll-b"}
    cells = _cells(tmp_path, [
        "none", "dynamic-int8", {"name": "d1", **DISTILL},
        {"name": "d1-int8", "chain": [DISTILL, "dynamic-int8"]},
    ], tasks=[ner_entry(32), other_task])
    none, dyn, d1, chain = cells[:4]
    # fine-tuning (model, task): every cell of that pair waits; the other task's first cell runs
    assert next_ready(cells[1:], [(none, "fine-tune")]) is cells[4]
    assert next_ready(cells[1:4], [(none, "load")]) is None
    # the checkpoint is built: the others run, except the chain whose first step d1 is training
    assert next_ready([dyn, chain], [(d1, "compress")]) is dyn
    assert next_ready([chain], [(d1, "compress")]) is None
    assert next_ready([chain], [(d1, "evaluate")]) is chain  # d1's student is in the cache now
    # names do not matter, plugins and parameters do: d1 and the chain's step share one key
    assert building(d1, "compress") <= needs(chain)
    assert not building(dyn, "compress") & needs(d1)
    assert building(none, "time") == set()
    # once built in this run, the checkpoint and the prefix hold nothing back: a later cell of
    # the same (model, task) in its fit phases is loading it from the cache, not training it
    assert built(none, "fine-tune") == set() and built(none, "compress") == needs(none) - building(none, "compress")
    done = built(d1, "evaluate")
    assert next_ready(cells[1:4], [(none, "load")], done) is dyn
    assert next_ready([chain], [(d1, "compress")], done) is chain


def test_two_workers_fine_tune_a_cold_teacher_once(tmp_path):
    cells = _cells(tmp_path, ["none", "dynamic-int8"])
    seen: list[tuple[str, str, float]] = []
    done: dict[str, str] = {}
    ectx = ExecutorContext(devices=["cpu"], jobs=2, disabled_plugins=[], extra_plugins=[])
    LocalExecutor().run(cells, ectx, on_phase=lambda c, p: seen.append((c.cell_id, p, time.monotonic())),
                        on_done=lambda c, o: done.__setitem__(c.cell_id, o.status))
    assert done == {c.cell_id: "ok" for c in cells}
    first, second = (c.cell_id for c in cells)
    left_fit = min(t for cid, p, t in seen if cid == first and p == "compress")
    began = min(t for cid, p, t in seen if cid == second)
    # the second cell was held until the first had its fine-tuned checkpoint (not trained twice)
    assert began >= left_fit
    # both workers serving a (model, task) once its checkpoint is built: test_runner's
    # test_jobs_on_cpu_split_threads
    assert [p for cid, p, _ in seen if cid == second].count("fine-tune") >= 1


def test_a_plugins_progress_text_does_not_change_the_cells_phase(tmp_path):
    from harness.executors import _Worker

    d1 = _cells(tmp_path, [{"name": "d1", **DISTILL}])[0]
    ex, w = LocalExecutor(), _Worker("cpu", cell=d1)
    ex.workers, ex.built = [w], set()
    phases: list[str] = []

    def handle(phase: str, text: str) -> None:
        ex._handle(("phase", d1.cell_id, phase, text), {d1.cell_id: d1},
                   lambda c, p: phases.append(p), lambda c, o: None)

    handle("compress", "")
    # the student's training loop reports "fine-tune" steps inside the core's "compress" phase:
    # the worker is still building the chain prefix, not the (model, task) checkpoint
    handle("fine-tune", "step 10/100 loss 0.5")
    assert w.phase == "compress" and phases == ["compress", "fine-tune: step 10/100 loss 0.5"]
    handle("evaluate", "")
    assert w.phase == "evaluate"


def test_rotation_rows_record_the_threads_the_rotation_used(run_suite_dict, tmp_path, capfd):
    if (os.cpu_count() or 1) < 2:
        pytest.skip("needs 2 cores: --jobs 2 then gives each cell worker fewer threads than the rotation")
    doc = {"models": [{"plugin": "hf", "name": "tiny", "params": TINY_BERT}], "tasks": [ner_entry(16)],
           "compressions": ["none", "dynamic-int8", {"plugin": "dynamic-int8", "name": "int8-b"}],
           "settings": {"timing_rounds": 2, "timing_processes": 2}}
    df = run_suite_dict(doc, jobs=2, show_progress=True)
    # two chunks of two processes (the reference in each): the progress line says which
    assert "chunk 2/2 (2 processes), round 2/2" in capfd.readouterr().err
    rotation = df[df.metric.isin(list(ROTATION_METRICS))]
    cells = df[~df.metric.isin(list(ROTATION_METRICS))]
    # the cells ran in 2 workers of cpu_count // 2 threads; each variant in rotation ran alone
    # with every core, and its rows say so (a copy of the cell's threads was wrong)
    assert set(cells.threads) == {os.cpu_count() // 2}
    assert len(rotation) and set(rotation.threads) == {os.cpu_count()}
