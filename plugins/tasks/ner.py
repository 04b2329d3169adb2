"""The ``ner`` task: named-entity recognition on CoNLL-format data (CoNLL-2003, WNUT-17, ...)
or an HF ``datasets`` source, scored at entity level with seqeval in conlleval mode.

Words are split into subwords by the model's (fast) tokenizer. Training labels the first
subword of each word (the other subwords are ignored by the loss); a prediction for a word is
the arg-max label at its first subword. A sentence longer than the length limit is split into
consecutive windows of whole words, so no word is ever dropped: every word of the evaluation
split gets a prediction and every gold entity is scored. See docs/tasks.md.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from pathlib import Path
from typing import Any, Literal

from pydantic import model_validator

import harness
from harness.api import CellContext, LoadedModel, MetricValue, Predictor, scorer
from harness.errors import DataError, PluginError
from harness.examples import Examples, is_example_model, predict_examples
from harness.scorers import scorer_name
from harness.toolkit import EvalSetup, FineTunedTask, model_eval_length, pad_batch

from .._lib.conll import ConllSplit, Scheme, Sentence, iob1_to_iob2, is_iob2, label_list, read_conll
from .._lib.metrics import ner_metrics
from .._lib.ner_windows import Window, cached_word_pieces, make_windows, special_affixes, word_pieces

__all__ = ["NERTask", "Window", "make_windows", "ner_metrics", "paired_scorer", "special_affixes",
           "word_pieces"]

SPLITS = ("train", "validation", "test")


HUB_PREFIX = "hub:"


def _as_hf_source(data_dir: str | None) -> str | None:
    """``data_dir`` if it names an HF ``datasets`` source rather than a folder of CoNLL files:
    a ``save_to_disk`` folder, or a hub id written with the ``hub:`` prefix
    (``hub:eriktks/conll2003``). Never a guess: a path that does not exist is a local path
    that is missing, not a hub id."""
    if data_dir is None:
        return None
    if data_dir.startswith(HUB_PREFIX):
        return data_dir[len(HUB_PREFIX):]
    path = Path(data_dir)
    if path.is_dir():
        marks = ("dataset_dict.json", "dataset_info.json", "state.json")
        return data_dir if any((path / m).is_file() for m in marks) else None
    return None


def _hash_sentences(sentences: list[Sentence]) -> str:
    h = hashlib.sha256()
    for s in sentences:
        h.update(("\x1f".join(s.tokens) + "\x1e" + "\x1f".join(s.tags) + "\x1d").encode())
    return h.hexdigest()


class NERTask(FineTunedTask):
    """Named-entity recognition on CoNLL column files or an HF ``datasets`` source."""

    name = "ner"
    head_kind = "token-classification"
    requires = ("model:*",)  # transformers (tokenised here) and any ExampleModel (raw words/text)
    version = "1"
    description = "NER on CoNLL-format files or HF datasets; entity F1 (seqeval, conlleval mode)"

    class Params(FineTunedTask.Params):
        data_dir: str | None = None
        """Folder of CoNLL column files, an HF ``save_to_disk`` folder, or ``hub:ID`` (an HF hub
        dataset); give this or ``hf_dataset``."""
        train_file: str = "train.txt"
        """File of the train split in ``data_dir``."""
        validation_file: str = "validation.txt"
        """File of the validation split in ``data_dir``."""
        test_file: str = "test.txt"
        """File of the test split in ``data_dir``."""
        eval_split: Literal["train", "validation", "test"] = "test"
        """The split that is scored."""
        scheme: Scheme = "auto"
        """Tag scheme of the CoNLL files: "auto" (IOB1 when some ``I-`` tag starts an entity, else
        IOB2), "iob1", or "iob2" (an ``I-`` tag that starts an entity is an error)."""
        hf_dataset: str | None = None
        """An HF ``datasets`` hub id or ``save_to_disk`` folder (wins over ``data_dir``)."""
        hf_tokens_column: str = "tokens"
        """Column of the word lists in an HF dataset."""
        hf_tags_column: str = "ner_tags"
        """Column of the tags (names, or ids of a ``ClassLabel`` sequence) in an HF dataset."""

        @model_validator(mode="after")
        def _some_data(self) -> Any:
            if self.data_dir is None and self.hf_dataset is None:
                raise ValueError(
                    "set 'data_dir' (CoNLL files, a save_to_disk folder or hub:ID) or 'hf_dataset'")
            return self

    params: Params

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        p = self.params
        #: the HF ``datasets`` source read, if any: hf_dataset wins over data_dir; a data_dir that
        #: is a save_to_disk folder or hub:ID is read with `datasets` too
        self.hf_source = p.hf_dataset or _as_hf_source(p.data_dir)
        self.files = {"train": p.train_file, "validation": p.validation_file, "test": p.test_file}
        self._splits: dict[str, ConllSplit | None] = {}
        self._hf: Any = None
        self._windows: dict[tuple[str, int, int | None], tuple[Any, list[Window]]] = {}

    @property
    def eval_split(self) -> str:  # type: ignore[override]
        return self.params.eval_split

    # -- data --------------------------------------------------------------------------------
    def _path(self, split: str) -> Path:
        return Path(self.params.data_dir) / self.files[split]  # type: ignore[arg-type]

    def _load_hf(self) -> Any:
        if self._hf is None:
            import datasets

            src = Path(self.hf_source)  # type: ignore[arg-type]
            try:
                if src.exists():
                    self._hf = datasets.load_from_disk(str(src))
                else:  # a hub id: needs network (or the local datasets cache)
                    self._hf = datasets.load_dataset(self.hf_source)
            except Exception as exc:
                kind = "save_to_disk folder" if src.exists() else "no such local folder; as a hub id"
                raise DataError(
                    f"{self.hf_source}: cannot load the dataset ({kind}): {type(exc).__name__}: {exc}"
                ) from exc
        return self._hf

    def _hf_split(self, split: str) -> ConllSplit | None:
        ds = self._load_hf()
        if not hasattr(ds, "keys"):
            raise DataError(
                f"{self.hf_source}: expected a DatasetDict with train/validation/test splits, "
                f"got a single {type(ds).__name__}"
            )
        names = {"validation": ("validation", "valid", "dev"), "test": ("test",), "train": ("train",)}
        key = next((n for n in names[split] if n in ds), None)
        if key is None:
            return None
        part = ds[key]
        where = f"{self.hf_source}[{key}]"
        for col in (self.params.hf_tokens_column, self.params.hf_tags_column):
            if col not in part.column_names:
                raise DataError(f"{where}: no column {col!r} (columns: {part.column_names})")
        feat = part.features[self.params.hf_tags_column]
        inner = getattr(feat, "feature", None)
        names_ = getattr(inner, "names", None)
        sentences = []
        for i, row in enumerate(part):
            toks, tags = row[self.params.hf_tokens_column], row[self.params.hf_tags_column]
            if names_ is not None:
                tags = [names_[t] for t in tags]
            if len(toks) != len(tags):
                raise DataError(f"{where}: row {i}: {len(toks)} tokens but {len(tags)} tags")
            for t in tags:
                if not (t == "O" or (t[:2] in ("B-", "I-") and len(t) > 2)):
                    raise DataError(f"{where}: row {i}: tag {t!r} is not IOB")
            if toks:
                sentences.append(Sentence(list(toks), list(tags), i + 1))
        scheme = "iob2" if all(is_iob2(s.tags) for s in sentences) else "iob1"
        for s in sentences:
            s.tags = iob1_to_iob2(s.tags)
        return ConllSplit(where, sentences, scheme, _hash_sentences(sentences))

    def split(self, split: str, required: bool = True) -> ConllSplit | None:
        """The sentences of ``split`` (IOB2), read once; ``None`` if absent and not required."""
        if split not in self._splits:
            if self.hf_source is not None:
                data = self._hf_split(split)
            else:
                folder = Path(self.params.data_dir)  # type: ignore[arg-type]
                if not folder.is_dir():
                    raise DataError(
                        f"{self.params.data_dir}: no such data folder (looked for {folder.absolute()}); "
                        f"a Hugging Face hub dataset is named explicitly: hf_dataset: ID or "
                        f"data_dir: {HUB_PREFIX}ID")
                path = self._path(split)
                data = read_conll(path, self.params.scheme) if path.is_file() else None
            self._splits[split] = data
        data = self._splits[split]
        if data is None and required:
            where = self.hf_source if self.hf_source is not None else self._path(split)
            raise DataError(f"{where}: the {split} split is missing (data file not found)")
        return data

    def sentences(self, split: str, limit: int | None = None) -> list[Sentence]:
        """The first ``limit`` sentences of ``split`` (default: ``max_train_samples`` for
        train, ``max_eval_samples`` for the evaluation split, else all)."""
        data = self.split(split)
        assert data is not None
        limit = self.sample_limit(split, limit)
        return data.sentences[:limit] if limit else data.sentences

    def labels(self) -> list[str]:
        types: set[str] = set()
        found = False
        for sp in SPLITS:
            data = self.split(sp, required=sp == self.eval_split)
            if data is not None:
                found = True
                types |= data.entity_types()
        if not found:
            raise DataError("no data")
        return label_list(types)

    def split_hash(self, split: str) -> str:
        data = self.split(split)
        assert data is not None
        limit = self.params.max_train_samples if split == "train" else self.params.max_eval_samples
        return f"{split}:{data.sha256}:{data.scheme}:{limit}"

    def raw_examples(self, split: str, limit: int | None = None) -> Examples:
        sents = self.sentences(split, limit)
        return Examples("token-classification", [s.tokens for s in sents], [s.tags for s in sents],
                        tuple(self.labels()), f"{self.split_hash(split)}:{limit}")

    def train_features(
        self, tokenizer: Any, label2id: dict[str, int], max_length: int
    ) -> tuple[list[dict[str, Any]], int]:
        sents = self.sentences("train")
        return self._features(tokenizer, sents, label2id, max_length), len(sents)

    def _features(self, tokenizer: Any, sentences: list[Sentence], label2id: dict[str, int], max_length: int):
        prefix, suffix = special_affixes(tokenizer)
        pieces = word_pieces(tokenizer, [s.tokens for s in sentences])
        feats = []
        for w in make_windows(pieces, prefix, suffix, max_length):
            labels = [-100] * len(w.input_ids)
            tags = sentences[w.sentence].tags
            for pos, wi in zip(w.first, range(w.start, w.end)):
                labels[pos] = label2id[tags[wi]]
            feats.append({"input_ids": w.input_ids, "labels": labels})
        return feats

    def predict(
        self, predictor: Predictor, setup: EvalSetup, ctx: CellContext, sentences: list[Sentence],
        windows: list[Window] | None = None,
    ) -> list[list[str]]:
        """Predicted IOB tags for every word of ``sentences`` (windows, length-sorted batches,
        dynamic padding), with the model's tokenizer and label order (``setup``). ``windows``:
        the sentences already tokenised and windowed (by ``_windows_for``), else they are here."""
        import torch
        from tqdm.auto import tqdm

        tokenizer, labels, max_len = setup.tokenizer, setup.labels, setup.max_length
        if windows is None:
            prefix, suffix = special_affixes(tokenizer)
            windows = make_windows(word_pieces(tokenizer, [s.tokens for s in sentences]), prefix, suffix, max_len)
        order = sorted(range(len(windows)), key=lambda i: len(windows[i].input_ids), reverse=True)
        preds: list[list[str | None]] = [[None] * len(s.tokens) for s in sentences]
        bs = max(1, int(self.params.eval_batch_size))
        batches = [order[i : i + bs] for i in range(0, len(order), bs)]
        with torch.inference_mode():
            for idx in tqdm(batches, desc="evaluate ner", unit="batch", disable=not ctx.show_progress):
                batch = pad_batch([{"input_ids": windows[i].input_ids} for i in idx], tokenizer)
                logits = predictor(batch)
                logits = getattr(logits, "logits", logits)
                logits = torch.as_tensor(logits).float().cpu()
                if logits.shape[-1] != len(labels):
                    raise PluginError(
                        f"predictor returned {logits.shape[-1]} labels per token, task has {len(labels)}"
                    )
                best = logits.argmax(-1).tolist()
                for row, i in zip(best, idx):
                    w = windows[i]
                    for pos, wi in zip(w.first, range(w.start, w.end)):
                        preds[w.sentence][wi] = labels[row[pos]]
        missing = sum(p is None for s in preds for p in s)
        if missing:  # cannot happen by construction; never score a partial prediction silently
            raise PluginError(f"{missing} words got no prediction")
        return preds  # type: ignore[return-value]

    def evaluate(self, predictor: Predictor, model: LoadedModel, ctx: CellContext, *,
                 split: str | None = None, limit: int | None = None,
                 intervals: bool = True) -> list[MetricValue]:
        split, limit = self.eval_options(split, limit)
        setup = self.eval_setup(model)
        sentences = self.sentences(split, limit)
        ctx.progress("evaluate", f"{len(sentences)} sentences of {split}")
        if is_example_model(model):  # a CRF, ...: the words themselves
            preds = predict_examples(predictor, [s.tokens for s in sentences],
                                     self.params.eval_batch_size, setup.labels)
        else:
            windows = self._windows_for(setup.tokenizer, split, setup.max_length, limit, ctx.cache_dir)
            preds = self.predict(predictor, setup, ctx, sentences, windows)
        import pandas as pd

        ctx.record_predictions(pd.DataFrame({
            "example": range(len(sentences)), "gold": [s.tags for s in sentences], "pred": preds,
        }), kind="sequence-labels", metric="entity_f1", scorer=scorer_name(paired_scorer),
            split=split, data_hash=f"{self.split_hash(split)}:{limit}")
        metrics = ner_metrics(
            [s.tags for s in sentences], preds, bootstrap=self.params.bootstrap if intervals else 0,
            seed=ctx.seed, split=split,
        )
        return metrics + self._unseen_types(sentences, split)

    def _unseen_types(self, sentences: list[Sentence], split: str) -> list[MetricValue]:
        """One row per entity type of the evaluation split that the train split never has: the
        model cannot have learnt it, so its F1 of 0 is the data's doing, not the compression's."""
        if split == "train" or self.split("train", required=False) is None:
            return []
        trained = {t[2:] for s in self.sentences("train") for t in s.tags if t[:2] in ("B-", "I-")}
        begins: Counter[str] = Counter()
        for s in sentences:
            prev = "O"
            for t in s.tags:
                if t != "O" and (t.startswith("B-") or prev[2:] != t[2:]):
                    begins[t[2:]] += 1
                prev = t
        unseen = [typ for typ in sorted(begins) if typ not in trained]
        if unseen:  # one 'Warning: ...' line of harness run (the executors show a repeat once)
            import warnings

            from harness.errors import HarnessWarning

            counts = ", ".join(f"{begins[typ]} {typ}" for typ in unseen)
            warnings.warn(
                f"NER data {self.hf_source or self.params.data_dir}: the {split} split has gold entities "
                f"of type(s) the train split never has ({counts}); the model cannot predict them, "
                "so they count as misses in every cell (rows unseen_in_train.*)",
                HarnessWarning, stacklevel=2)
        return [MetricValue(
            f"unseen_in_train.{typ}", float(begins[typ]), higher_is_better=False, unit="entities",
            metric_group="Entity types never seen in training",
            metric_description=(f"{begins[typ]} gold {typ} entities in the {split} split, a type "
                         "the train split never has: the model cannot predict it"))
            for typ in unseen]

    # -- inputs for timing and calibration ---------------------------------------------------
    def _windows_for(self, tokenizer: Any, split: str, max_length: int,
                     limit: int | None = None, cache_dir: Any = None) -> list[Window]:
        """The split's sentences tokenised and windowed; memoised per (tokenizer, split, length,
        limit), so the compressions of one model evaluated by one worker tokenise the split once,
        and with ``cache_dir`` the subword ids are kept on disk for the other cells of the suite
        (``harness.toolkit.features``: keyed by the tokenizer's fingerprint and the split)."""
        key = (split, max_length, limit)
        hit = self._windows.get(key)
        if hit is not None and hit[0] is tokenizer:
            return hit[1]
        words = [s.tokens for s in self.sentences(split, limit)]
        pieces = cached_word_pieces(tokenizer, words, cache_dir, f"{self.split_hash(split)}:{limit}")
        prefix, suffix = special_affixes(tokenizer)
        windows = make_windows(pieces, prefix, suffix, max_length)
        self._windows[key] = (tokenizer, windows)
        return windows

    def latency_batches(self, model: LoadedModel, batch_size: int, count: int, seed: int) -> list[dict[str, Any]]:
        if is_example_model(model):
            return self.example_latency_batches(batch_size, count, seed)
        tokenizer = model.tokenizer
        windows = self._windows_for(tokenizer, self.eval_split, model_eval_length(model, self.params.eval_max_length))
        rng = random.Random(seed)
        need = batch_size * count
        picks = rng.sample(windows, need) if need <= len(windows) else rng.choices(windows, k=need)
        return [
            pad_batch([{"input_ids": w.input_ids} for w in picks[i * batch_size : (i + 1) * batch_size]], tokenizer)
            for i in range(count)
        ]

    def calibration_batches(self, model: LoadedModel, samples: int, seed: int) -> list[dict[str, Any]]:
        tokenizer = model.tokenizer
        split = "train" if self.split("train", required=False) is not None else "validation"
        if split == self.eval_split:
            raise DataError(f"task 'ner': no train split to draw calibration data from ({self._path('train') if self.params.data_dir else self.hf_source})")
        windows = self._windows_for(tokenizer, split, min(self.params.max_length, model_eval_length(model, self.params.eval_max_length)))
        rng = random.Random(seed)
        picks = rng.sample(windows, min(samples, len(windows)))
        return [pad_batch([{"input_ids": w.input_ids}], tokenizer) for w in picks]


# declared: the gate calls only declared scorers (harness.scorers); the alias is the name old
# run folders record, from before this module moved out of harness_plugins.ner
@scorer(aliases=("harness_plugins.ner:paired_scorer",))
def paired_scorer(gold: list[list[str]], pred: list[list[str]]) -> tuple[Any, Any]:
    """The gate's scorer for entity_f1 (``record_predictions(scorer=...)``): per-sentence
    (true positive, predicted, gold) entity counts and the function giving micro F1 from counts
    summed over axis -2, the same seqeval computation as :func:`ner_metrics`."""
    import numpy as np

    from .._lib.metrics import micro_f1_from_counts, seqeval_metric

    res = seqeval_metric().compute(predictions=pred, references=gold)
    return np.asarray(res["sentence_counts"], dtype=np.int64).reshape(-1, 3), micro_f1_from_counts


@harness.hookimpl
def register_tasks(register):
    register(NERTask)
