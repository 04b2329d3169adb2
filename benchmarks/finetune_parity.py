"""Fine-tuning F1 parity over seeds: the harness vs the transformers ``Trainer`` pipeline.

For each seed, both fine-tune MiniLM on the same CoNLL-2003 training sentences with the same
recipe (lr 5e-5, batch 32, 1 epoch, linear schedule with 10% warm-up, max length 128), each in
a fresh process (``finetune_speed.harness_fit`` / ``reference_fit``). **Both models are then
scored by the same scorer on the same words**: the harness's ``NERTask.evaluate`` (every word
of the test split, seqeval's entity F1 in conlleval mode) runs on the harness's checkpoint and on
the folder the Trainer saved; the Trainer's own seqeval figure, which leaves out the words its
truncation cut, is kept beside it as ``reference_own_f1``.

Writes ``--json`` (default benchmarks/results/finetune_parity.json) after every seed, so an
interrupted run keeps what it measured and ``--resume`` goes on from it::

    {"seeds": [{"seed", "harness_entity_f1", "reference_entity_f1", ...}, ...],
     "mean_delta", "ci95": [lo, hi], ...}

The delta is harness - reference per seed; its mean comes with a Student-t 95% interval.
Target: |mean delta| <= 0.005 and the interval includes 0. Usage::

    python benchmarks/finetune_parity.py [--seeds 42 1 2 3 4] [--max-train-samples all]

``--side reference`` / ``--side harness`` with ``--resume`` run one side at a time (into the same
``--json``), e.g. the Trainer's seeds once and the harness's again after a change of its loop.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from finetune_speed import harness_fit, reference_fit  # noqa: E402

HARNESS_SCORE = r"""
import json, sys, tempfile
from pathlib import Path
from harness.api import CellContext
from harness.toolkit import TorchPredictor
from harness_plugins.models.hf import HFModel
from harness_plugins.tasks.ner import NERTask
data, folder, out = sys.argv[1:4]
task = NERTask(data_dir=data)
ctx = CellContext(device="cpu", seed=42, cache_dir=Path(tempfile.mkdtemp()),
                  work_dir=Path(tempfile.mkdtemp()), show_progress=False)
loaded = HFModel(path=folder).load(task.head(), ctx)
assert loaded.trained_for_task, folder
metrics = {m.metric: m.value for m in task.evaluate(TorchPredictor(loaded.module.eval()), loaded, ctx)}
Path(out).write_text(json.dumps({"entity_f1": metrics["entity_f1"],
                                 "gold_entities": metrics["gold_entities"]}))
"""


def harness_score(data_dir: str, folder: Path, tmp: Path) -> dict:
    """Entity F1 of a saved token-classification folder by ``NERTask.evaluate`` (fresh process)."""
    out = tmp / f"score-{folder.name}.json"
    subprocess.run([sys.executable, "-c", HARNESS_SCORE, data_dir, str(folder), str(out)], check=True)
    return json.loads(out.read_text())


def t95(df: int) -> float:
    """Two-sided 95% Student-t quantile."""
    from scipy import stats

    return float(stats.t.ppf(0.975, df))


def summarise(rows: list[dict], metric: str = "entity_f1") -> dict:
    """The paired deltas ``harness_<metric> - reference_<metric>`` of the rows that have both,
    their mean and its Student-t 95% interval; ``met``: |mean| <= 0.005 and the interval holds 0."""
    h_key, r_key = f"harness_{metric}", f"reference_{metric}"
    rows = [r for r in rows if h_key in r and r_key in r]
    deltas = [r[h_key] - r[r_key] for r in rows]
    out: dict = {"n": len(rows), "deltas": deltas}
    if not deltas:
        return out
    mean = statistics.fmean(deltas)
    out["mean_delta"] = mean
    out[f"mean_{h_key}"] = statistics.fmean(r[h_key] for r in rows)
    out[f"mean_{r_key}"] = statistics.fmean(r[r_key] for r in rows)
    if len(deltas) >= 2:
        half = t95(len(deltas) - 1) * statistics.stdev(deltas) / math.sqrt(len(deltas))
        out["ci95"] = [mean - half, mean + half]
        out["met"] = abs(mean) <= 0.005 and out["ci95"][0] <= 0 <= out["ci95"][1]
    return out


def harness_side(args: argparse.Namespace, seed: int, tmp: Path) -> dict:
    """The harness's fine-tune of ``seed`` (or the one kept by finetune_speed.py --keep)."""
    kept = Path(args.reuse) if args.reuse else None
    if kept is not None and (kept / f"harness-{seed}.json").is_file():
        h = json.loads((kept / f"harness-{seed}.json").read_text())
    else:
        h = harness_fit(args.data_dir, args.max_train_samples, tmp, seed=seed,
                        cache_dir=str(tmp / f"cache-{seed}"))
    return {"harness_entity_f1": h["test_entity_f1"],
            "harness_gold_entities_scored": int(h["test_gold_entities_scored"]),
            "harness_train_s": h["train_time_s"], "train_sentences": h["train_sentences"]}


def reference_side(args: argparse.Namespace, seed: int, tmp: Path) -> dict:
    """The Trainer's fine-tune of ``seed`` (or the one kept by finetune_speed.py --keep), scored
    by the harness's evaluator."""
    kept = Path(args.reuse) if args.reuse else None
    if kept is not None and (kept / f"reference-{seed}").is_dir():
        r = json.loads((kept / f"ref-{seed}-random.json").read_text())
        ref_dir = kept / f"reference-{seed}"
    else:
        ref_dir = tmp / f"reference-{seed}"
        r = reference_fit(args.iob2_dir, args.max_train_samples, tmp, seed=seed, save_model=ref_dir)
    scored = harness_score(args.data_dir, ref_dir, tmp)
    return {"reference_entity_f1": scored["entity_f1"],
            "gold_entities_scored": int(scored["gold_entities"]),
            "reference_own_f1": r["entity_f1"], "reference_own_gold_scored": r["gold_entities_scored"],
            "reference_train_s": r["train_time_s"], "recipe": r["recipe"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default="../shared/data/conll2003")
    ap.add_argument("--iob2-dir", default="../shared/data/conll2003_iob2")
    ap.add_argument("--max-train-samples", default="all", help="a number, or 'all'")
    ap.add_argument("--seeds", type=int, nargs="+", default=[42, 1, 2, 3, 4])
    ap.add_argument("--json", default=str(HERE / "results" / "finetune_parity.json"))
    ap.add_argument("--resume", action="store_true",
                    help="keep what --json already holds (each seed's side that is there is not redone)")
    ap.add_argument("--side", choices=("both", "harness", "reference"), default="both",
                    help="run only this side (the other can run later, or elsewhere, with --resume)")
    ap.add_argument("--reuse", metavar="DIR",
                    help="a finetune_speed.py --keep folder: its seed-42 runs are scored, not redone")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ft-parity-"))
    path = Path(args.json)
    rows: dict[int, dict] = {}
    if args.resume and path.is_file():
        rows = {r["seed"]: r for r in json.loads(path.read_text())["seeds"] if r["seed"] in args.seeds}
    sides = {"harness": (harness_side, "harness_entity_f1"),
             "reference": (reference_side, "reference_entity_f1")}
    for seed in args.seeds:
        row = rows.setdefault(seed, {"seed": seed})
        for name, (run, key) in sides.items():
            if args.side in ("both", name) and key not in row:
                row.update(run(args, seed, tmp))
                # re-read: another process may have written the other side meanwhile
                if args.resume and path.is_file():
                    for other in json.loads(path.read_text())["seeds"]:
                        if other["seed"] in args.seeds:
                            rows[other["seed"]] = {**other, **rows.get(other["seed"], {})}
                    row = rows[seed]
                ordered = [rows[k] for k in args.seeds if k in rows]
                path.write_text(json.dumps({
                    "scorer": "harness NERTask.evaluate (seqeval, conlleval mode, every test word)",
                    "seeds": ordered, **summarise(ordered)}, indent=1))
                print(f"seed {seed}: {name} {row[key]:.4f}", flush=True)
    s = summarise([rows[k] for k in args.seeds if k in rows])
    if "ci95" in s:
        lo, hi = s["ci95"]
        print(f"mean delta (harness - reference) {s['mean_delta']:+.4f}, 95% CI [{lo:+.4f}, {hi:+.4f}] "
              f"over {s['n']} seeds: {'met' if s['met'] else 'NOT met'} (|mean| <= 0.005, CI holds 0)")


if __name__ == "__main__":
    main()
