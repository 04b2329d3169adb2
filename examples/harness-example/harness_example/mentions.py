"""``has-entity``: does a sentence mention any named entity? Sentence classification read from
CoNLL-style ``token<TAB>tag`` NER files (e.g. WNUT-17): the built-in ``classification`` task
reads tables, the built-in ``ner`` task labels tokens; neither asks this question.

Built on ``harness.toolkit.FineTunedTask``: the shared recipe, its suite parameters and the
fine-tune cache come with it; this module reads the data and scores accuracy.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path
from typing import Any, Literal

from harness.api import CellContext, LoadedModel, MetricValue, Predictor
from harness.errors import DataError
from harness.toolkit import FineTunedTask, pad_batch

LABELS = ("none", "entity")


def read_sentences(path: Path) -> list[tuple[str, str]]:
    """(sentence text, label) per sentence of a ``token<TAB>tag`` file."""
    out, words, tags = [], [], []
    for n, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines() + [""], 1):
        parts = line.replace("\ufeff", "").strip().split("\t")
        if parts == [""]:
            if words:
                out.append((" ".join(words), LABELS[any(t != "O" for t in tags)]))
            words, tags = [], []
        elif len(parts) != 2:
            raise DataError(f"{path}:{n}: expected 'token<TAB>tag', got {line!r}")
        else:
            words.append(parts[0])
            tags.append(parts[1])
    return out


class EntityMentions(FineTunedTask):
    """Binary sentence classification: ``entity`` if the sentence has any entity tag."""

    name, version = "has-entity", "1"
    description = "does the sentence mention a named entity? (CoNLL-style NER files); accuracy"
    head_kind = "sequence-classification"

    class Params(FineTunedTask.Params):  # adds to the recipe and evaluation parameters
        data_dir: str
        """Folder of ``train.conll``, ``validation.conll``, ``test.conll`` (``token<TAB>tag``)."""
        eval_split: Literal["train", "validation", "test"] = "test"
        """The split that is scored."""

    params: Params

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)  # validates them into self.params
        self._data: dict[str, list[tuple[str, str]] | None] = {}  # state derived from them

    @property
    def eval_split(self) -> str:  # type: ignore[override]  # FineTunedTask reads it
        return self.params.eval_split

    def split(self, split: str, required: bool = True) -> list[tuple[str, str]] | None:
        path = Path(self.params.data_dir) / f"{split}.conll"
        if split not in self._data:
            self._data[split] = read_sentences(path) if path.is_file() else None
        if self._data[split] is None and required:
            raise DataError(f"{path}: the {split} split is missing (data file not found)")
        return self._data[split]

    def rows(self, split: str, limit: int | None = None) -> list[tuple[str, str]]:
        rows = self.split(split) or []
        return rows[: limit or (self.params.max_train_samples if split == "train" else None)]

    def labels(self) -> list[str]:
        return list(LABELS)

    def split_hash(self, split: str) -> str:
        return hashlib.sha256(repr(self.rows(split)).encode()).hexdigest()

    def encode(self, tokenizer: Any, rows: list[tuple[str, str]], max_length: int) -> list[dict]:
        enc = tokenizer([text for text, _ in rows], truncation=True, max_length=max_length)
        return [{"input_ids": ids} for ids in enc["input_ids"]]

    def train_features(self, tokenizer: Any, label2id: dict[str, int], max_length: int):
        rows = self.rows("train")
        feats = self.encode(tokenizer, rows, max_length)
        return [{**f, "labels": label2id[y]} for f, (_, y) in zip(feats, rows)], len(rows)

    def evaluate(self, predictor: Predictor, model: LoadedModel, ctx: CellContext, *,
                 split: str | None = None, limit: int | None = None,
                 intervals: bool = True) -> list[MetricValue]:
        split, limit = self.eval_options(split, limit)
        setup = self.eval_setup(model)
        rows = self.rows(split, limit)
        feats = self.encode(setup.tokenizer, rows, setup.max_length)
        right = 0
        bs = self.params.eval_batch_size
        for lo in range(0, len(rows), bs):
            logits = predictor(pad_batch(feats[lo : lo + bs], setup.tokenizer))
            for p, (_, gold) in zip(logits.argmax(-1).tolist(), rows[lo : lo + bs]):
                right += setup.labels[p] == gold
        return [MetricValue("accuracy", right / max(1, len(rows)), main_metric=True, metric_description=(
            f"share of the {len(rows)} {split} sentences whose entity/none label is right"))]

    def latency_batches(self, model: LoadedModel, batch_size: int, count: int, seed: int):
        rows = random.Random(seed).choices(self.rows(self.eval_split), k=batch_size * count)
        feats = self.encode(model.tokenizer, rows, self.eval_setup(model).max_length)
        return [pad_batch(feats[i * batch_size : (i + 1) * batch_size], model.tokenizer)
                for i in range(count)]
