"""The ``classification`` task: single-text or text-pair classification from SST-2 TSV, AG News
CSV, or any CSV/TSV/JSONL table; scored by accuracy (main, with a bootstrap CI), macro-F1 and
per-class precision/recall/F1. See docs/tasks.md."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

import harness
from harness.api import CellContext, LoadedModel, MetricValue, Predictor
from harness.errors import DataError, PluginError
from harness.examples import Examples, is_example_model, predict_examples
from harness.toolkit import EvalSetup, FineTunedTask, cached_tokens, model_eval_length, pad_batch

from .._lib.textdata import (
    FORMATS,
    Example,
    Format,
    LabelMap,
    TextSplit,
    preset,
    read_names,
    read_table,
    sort_labels,
)

SPLITS = ("train", "validation", "test")
HOLDOUT = "holdout"  #: the split of the last ``holdout`` train examples


class ClassificationTask(FineTunedTask):
    """Text (or text-pair) classification on local tables."""

    name = "classification"
    head_kind = "sequence-classification"
    requires = ("model:*",)  # transformers (tokenised here) and any ExampleModel (raw words/text)
    version = "1"
    description = "text classification (SST-2, AG News, CSV/TSV/JSONL); accuracy, macro-F1"

    class Params(FineTunedTask.Params):
        data_dir: str = "."
        """Folder of the data files."""
        format: Format = "csv"
        """A preset of file names, columns and labels: "sst2" (GLUE TSV), "ag_news" (headerless
        CSV, classes.txt), or a plain table: "csv", "tsv", "jsonl" (columns text, label)."""
        train_file: str | None = None
        """File of the train split in ``data_dir`` (default: the format's; "": none)."""
        validation_file: str | None = None
        """File of the validation split in ``data_dir`` (default: the format's; "": none)."""
        test_file: str | None = None
        """File of the test split in ``data_dir`` (default: the format's; "": none)."""
        eval_split: Literal["train", "validation", "test"] | None = None
        """The split that is scored (default: the format's)."""
        text_column: str | list[str | int] | None = None
        """Text column(s): header names or 0-based indices; several are joined with a space
        (default: the format's)."""
        text_pair_column: str | list[str | int] | None = None
        """Second-text column(s) of a text-pair task (default: the format's, none)."""
        label_column: str | None = None
        """Label column: a header name or a 0-based index (default: the format's)."""
        header: bool | None = None
        """Whether a CSV/TSV file starts with a header row (default: the format's)."""
        label_names: list[str] | None = None
        """Label names in id order, for files holding label indices (default: the format's)."""
        label_offset: int | None = None
        """Index of the first label in the files (AG News counts from 1; default: the format's)."""
        classes_file: str | None = None
        """File in ``data_dir`` with one label name a line (default: the format's; "": none)."""
        holdout: int = Field(0, ge=0)
        """The last N examples of the train file held out of training as the split ``holdout``
        (for choices, with ``validation_split: holdout``, where the validation split is the one
        reported, as SST-2's unlabelled test split leaves it); training reads the examples
        before them (``max_train_samples`` counts from the start)."""

        @model_validator(mode="before")
        @classmethod
        def _preset_defaults(cls, data: Any) -> Any:
            """What is not given (or None) comes from the format's preset."""
            fmt = data.get("format", "csv") if isinstance(data, dict) else None
            if not isinstance(fmt, str) or fmt not in FORMATS:
                return data  # the format's own check reports it
            p = preset(fmt)
            filled = {f"{split}_file": p["files"][split] for split in SPLITS}
            filled.update({k: p[k] for k in ("eval_split", "text_column", "text_pair_column", "label_column",
                                              "header", "label_names", "label_offset", "classes_file")})
            return {**data, **{k: v for k, v in filled.items() if data.get(k) is None}}

        @model_validator(mode="after")
        def _eval_file(self) -> Any:
            if not getattr(self, f"{self.eval_split}_file", None):
                raise ValueError(f"eval_split {self.eval_split!r} has no file configured")
            return self

    params: Params

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        p = self.params
        self.table = preset(p.format)["table"]
        #: file name of each split in data_dir (None: no such split)
        self.files = {split: getattr(p, f"{split}_file") or None for split in SPLITS}
        self._splits: dict[str, TextSplit | None] = {}
        self._names: list[str] | None = None
        if p.holdout:
            self.split_names = (*SPLITS, HOLDOUT)

    @property
    def eval_split(self) -> str:  # type: ignore[override]
        return str(self.params.eval_split)

    # -- data --------------------------------------------------------------------------------
    def _path(self, split: str) -> Path | None:
        name = self.files.get(split)
        return Path(self.params.data_dir) / name if name else None

    def _fixed_names(self) -> list[str] | None:
        """Label names fixed by the configuration (classes file or label_names), if any."""
        if self._names is None:
            if self.params.classes_file:
                self._names = read_names(Path(self.params.data_dir) / self.params.classes_file)
            elif self.params.label_names:
                self._names = list(self.params.label_names)
        return self._names

    def split(self, split: str, required: bool = True) -> TextSplit | None:
        if split == HOLDOUT or (split == "train" and self.params.holdout):
            data = self._held_out(split)
        else:
            data = self._read(split)
        if data is None and required:
            if split == HOLDOUT and not self.params.holdout:
                raise DataError(f"task {self.name!r}: no {HOLDOUT} split; set the task's holdout "
                                "(the number of train examples to hold out of training)")
            path = self._path("train" if split == HOLDOUT else split)
            hint = ""
            if self.params.format == "ag_news" and split == "train":
                hint = (
                    "; AG News' train split is not shipped with the test data: download train.csv "
                    "(same layout as test.csv) and set the task's data_dir or train_file to it"
                )
            raise DataError(f"{path or '(no file configured)'}: the {split} split is missing (data file not found){hint}")
        return data

    def _read(self, split: str) -> TextSplit | None:
        """``split`` as its file holds it (None: no file)."""
        if split not in self._splits:
            path = self._path(split)
            data = None
            if path is not None and path.is_file():
                data = read_table(
                    path, fmt=self.table, text_columns=self.params.text_column,
                    pair_columns=self.params.text_pair_column, label_column=self.params.label_column,
                    label_map=LabelMap(self._fixed_names(), self.params.label_offset), header=self.params.header,
                )
            self._splits[split] = data
        return self._splits[split]

    def _held_out(self, split: str) -> TextSplit | None:
        """The train file's examples before its last ``holdout`` (``train``) or those last ones
        (``holdout``); a train file with no more than ``holdout`` examples is a DataError."""
        n = self.params.holdout
        whole = self._read("train") if n else None
        if whole is None:
            return None
        key = f"{split}#holdout"  # sliced once, like the files' splits
        if key not in self._splits:
            if len(whole.examples) <= n:
                raise DataError(f"{whole.path}: holdout {n} leaves no train examples "
                                f"({len(whole.examples)} in the file); lower the task's holdout")
            cut = len(whole.examples) - n
            part = whole.examples[:cut] if split == "train" else whole.examples[cut:]
            self._splits[key] = TextSplit(whole.path, part, f"{whole.sha256}:{split}-of-holdout-{n}")
        return self._splits[key]

    def examples(self, split: str, limit: int | None = None) -> list[Example]:
        """The first ``limit`` examples of ``split`` (default: ``max_train_samples`` for
        train, ``max_eval_samples`` for the evaluation split, else all)."""
        data = self.split(split)
        assert data is not None
        limit = self.sample_limit(split, limit)
        return data.examples[:limit] if limit else data.examples

    def raw_examples(self, split: str, limit: int | None = None) -> Examples:
        exs = self.examples(split, limit)
        return Examples("sequence-classification", [e.text for e in exs], [e.label for e in exs],
                        tuple(self.labels()), f"{self.split_hash(split)}:{limit}")

    def labels(self) -> list[str]:
        names = self._fixed_names()
        if names is not None:
            return list(names)
        values: set[str] = set()
        for sp in self.split_names:
            data = self.split(sp, required=sp == self.eval_split)
            if data is not None:
                values |= {e.label for e in data.examples}
        return sort_labels(values)

    def split_hash(self, split: str) -> str:
        data = self.split(split)
        assert data is not None
        limit = self.params.max_train_samples if split == "train" else self.params.max_eval_samples
        cols = (self.params.text_column, self.params.text_pair_column, self.params.label_column, self.params.header)
        return f"{split}:{data.sha256}:{cols}:{self._fixed_names()}:{self.params.label_offset}:{limit}"

    # -- encoding ----------------------------------------------------------------------------
    @staticmethod
    def encode(tokenizer: Any, examples: list[Example], max_length: int) -> list[dict[str, Any]]:
        """Tokenise (truncating to ``max_length``); each feature keeps ``truncated``."""
        texts = [e.text for e in examples]
        pairs = [e.pair or "" for e in examples] if any(e.pair is not None for e in examples) else None
        out: list[dict[str, Any]] = []
        step = 4096
        for lo in range(0, len(texts), step):
            kw: dict[str, Any] = {}
            if pairs is not None:
                kw["text_pair"] = pairs[lo : lo + step]
            enc = tokenizer(texts[lo : lo + step], truncation=False, verbose=False, **kw)
            long = [i for i, ids in enumerate(enc["input_ids"]) if len(ids) > max_length]
            cut = None
            if long:  # only inputs over the limit are encoded again, truncated
                kw2 = {"text_pair": [kw["text_pair"][i] for i in long]} if pairs is not None else {}
                cut = tokenizer(
                    [texts[lo + i] for i in long], truncation=True, max_length=max_length, **kw2
                )
            redo = {i: j for j, i in enumerate(long)}
            for i in range(len(enc["input_ids"])):
                src, at = (cut, redo[i]) if i in redo else (enc, i)
                f = {"input_ids": src["input_ids"][at], "truncated": i in redo}
                if "token_type_ids" in src:
                    f["token_type_ids"] = src["token_type_ids"][at]
                out.append(f)
        return out

    def train_features(
        self, tokenizer: Any, label2id: dict[str, int], max_length: int
    ) -> tuple[list[dict[str, Any]], int]:
        exs = self.examples("train")
        feats = self.encode(tokenizer, exs, max_length)
        for f, e in zip(feats, exs):
            f["labels"] = label2id[e.label]
            f.pop("truncated")
        return feats, len(exs)

    # -- evaluation --------------------------------------------------------------------------
    def predict(self, predictor: Predictor, setup: EvalSetup, ctx: CellContext,
                examples: list[Example], data_key: str | None = None) -> tuple[list[int], int, list[float]]:
        """Predicted label ids (in the model's label order), the number of truncated inputs and
        the softmax probability of each predicted label. With ``data_key`` (naming the
        examples: the split's hash and limit) the features come from the suite's feature cache,
        so the other cells of the suite do not tokenise the split again."""
        import torch
        from tqdm.auto import tqdm

        tokenizer, labels, max_len = setup.tokenizer, setup.labels, setup.max_length
        if data_key is None:
            feats = self.encode(tokenizer, examples, max_len)
        else:
            feats = cached_tokens(ctx.cache_dir, "cls-features", tokenizer, data_key,
                                  lambda: self.encode(tokenizer, examples, max_len),
                                  lambda v: isinstance(v, list) and len(v) == len(examples), (max_len,))
        order = sorted(range(len(feats)), key=lambda i: len(feats[i]["input_ids"]), reverse=True)
        bs = max(1, int(self.params.eval_batch_size))
        batches = [order[i : i + bs] for i in range(0, len(order), bs)]
        preds = [-1] * len(feats)
        probs = [0.0] * len(feats)
        with torch.inference_mode():
            for idx in tqdm(batches, desc="evaluate classification", unit="batch", disable=not ctx.show_progress):
                logits = predictor(pad_batch([feats[i] for i in idx], tokenizer))
                logits = torch.as_tensor(getattr(logits, "logits", logits)).float().cpu()
                if logits.shape[-1] != len(labels):
                    raise PluginError(f"predictor returned {logits.shape[-1]} logits, task has {len(labels)} labels")
                top = logits.softmax(-1).max(-1)
                for i, p, q in zip(idx, top.indices.tolist(), top.values.tolist()):
                    preds[i], probs[i] = int(p), float(q)
        return preds, sum(bool(f["truncated"]) for f in feats), probs

    def evaluate(self, predictor: Predictor, model: LoadedModel, ctx: CellContext, *,
                 split: str | None = None, limit: int | None = None,
                 intervals: bool = True) -> list[MetricValue]:
        split, limit = self.eval_options(split, limit)
        setup = self.eval_setup(model)
        labels = setup.labels
        examples = self.examples(split, limit)
        ctx.progress("evaluate", f"{len(examples)} examples of {split}")
        if is_example_model(model):  # TF-IDF, ...: the text itself, no truncation
            named = predict_examples(predictor, [e.text for e in examples], self.params.eval_batch_size, labels)
            preds, truncated, probs = [labels.index(p) for p in named], 0, None
        else:
            preds, truncated, probs = self.predict(predictor, setup, ctx, examples,
                                                   f"{self.split_hash(split)}:{limit}")
        index = {name: i for i, name in enumerate(labels)}
        refs = []
        for e in examples:
            if e.label not in index:
                raise DataError(f"{self._path(split)}:{e.line}: label {e.label!r} unknown to the model ({list(labels)})")
            refs.append(index[e.label])
        import pandas as pd

        table = {"example": range(len(examples)), "gold": [labels[r] for r in refs],
                 "pred": [labels[p] for p in preds], **({"prob": probs} if probs is not None else {})}
        ctx.record_predictions(pd.DataFrame(table), kind="per-example-label", metric="accuracy", split=split,
            data_hash=f"{self.split_hash(split)}:{limit}")
        return classification_metrics(
            refs, preds, list(labels), bootstrap=self.params.bootstrap if intervals else 0, seed=ctx.seed,
            split=split, truncated=truncated, max_length=setup.max_length,
        )

    # -- inputs for timing and calibration ---------------------------------------------------
    def latency_batches(self, model: LoadedModel, batch_size: int, count: int, seed: int) -> list[dict[str, Any]]:
        if is_example_model(model):
            return self.example_latency_batches(batch_size, count, seed)
        tokenizer = model.tokenizer
        exs = self.examples(self.eval_split)
        rng = random.Random(seed)
        need = batch_size * count
        picks = rng.sample(exs, need) if need <= len(exs) else rng.choices(exs, k=need)
        feats = self.encode(tokenizer, picks, model_eval_length(model, self.params.eval_max_length))
        return [pad_batch(feats[i * batch_size : (i + 1) * batch_size], tokenizer) for i in range(count)]

    def calibration_batches(self, model: LoadedModel, samples: int, seed: int) -> list[dict[str, Any]]:
        tokenizer = model.tokenizer
        split = "train" if self.split("train", required=False) is not None else "validation"
        if split == self.eval_split or self.split(split, required=False) is None:
            self.split("train")  # raises the DataError naming the missing train file
        exs = self.examples(split)
        rng = random.Random(seed)
        picks = rng.sample(exs, min(samples, len(exs)))
        feats = self.encode(tokenizer, picks, min(self.params.max_length, model_eval_length(model, self.params.eval_max_length)))
        return [pad_batch([f], tokenizer) for f in feats]


def classification_metrics(
    references: list[int],
    predictions: list[int],
    labels: list[str],
    *,
    bootstrap: int = 1000,
    seed: int = 0,
    split: str = "test",
    truncated: int = 0,
    max_length: int | None = None,
) -> list[MetricValue]:
    """Accuracy (main), macro-F1 and per-class scores of label-id ``predictions``."""
    import numpy as np

    from .._lib.metrics import (
        bootstrap_ci,
        class_indicators,
        classification_metric,
        macro_f1_of_sums,
        share_of_sums,
    )

    if len(references) != len(predictions):
        raise DataError(f"{len(references)} gold labels but {len(predictions)} predictions")
    k = len(labels)
    res = classification_metric().compute(predictions=predictions, references=references, num_labels=k)
    n = len(references)
    pairs = np.stack([np.asarray(references), np.asarray(predictions)], axis=1)
    # both from resampled row sums (one matrix product per block of resamples, same draws)
    acc_ci = bootstrap_ci((pairs[:, 0] == pairs[:, 1]).astype(np.int64), share_of_sums(n), bootstrap, seed)
    f1_ci = bootstrap_ci(class_indicators(pairs, k), macro_f1_of_sums(k), bootstrap, seed)
    ci = (
        f"; 95% CI: percentile bootstrap, {bootstrap} resamples of the {n} examples, seed {seed}"
        if bootstrap > 0 else ""
    )
    trunc = f"; {truncated} of {n} inputs truncated to {max_length} tokens" if truncated else ""
    out = [
        MetricValue(
            "accuracy", res["accuracy"], *acc_ci,
            metric_description=f"accuracy (fraction of the {n} {split} examples whose predicted label "
            f"is the gold label){ci}{trunc}",
            main_metric=True,
        ),
        MetricValue(
            "macro_f1", res["macro_f1"], *f1_ci,
            metric_description=f"macro-averaged F1 over the {k} classes (unweighted mean of per-class "
            f"F1), {split} split{ci}",
        ),
    ]
    for i, name in enumerate(labels):
        for key in ("f1", "precision", "recall"):
            out.append(
                MetricValue(
                    f"{key}.{name}", res[key][i], metric_group=f"Per-class {'F1' if key == 'f1' else key}",
                    metric_description=f"{key if key != 'f1' else 'F1'} of class {name!r} "
                    f"({res['support'][i]} gold examples), one-vs-rest, {split} split",
                )
            )
    return out


@harness.hookimpl
def register_tasks(register):
    register(ClassificationTask)
