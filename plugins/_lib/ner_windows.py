"""How the ``ner`` task turns sentences of words into model inputs: each word's subword ids
from the model's tokenizer, and windows of whole words within the model's length limit (a
sentence longer than the limit is split, never cut: every word keeps a prediction)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.errors import PluginError
from harness.toolkit import cached_tokens


@dataclass
class Window:
    """A model input covering words [start, end) of sentence ``sentence``."""

    sentence: int
    start: int
    end: int
    input_ids: list[int]
    first: list[int]  #: position of each word's first subword in input_ids


def special_affixes(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The special-token ids a tokenizer puts before and after a single sequence."""
    enc = tokenizer(["a"], is_split_into_words=True, add_special_tokens=True)
    words = enc.word_ids()
    ids = enc["input_ids"]
    inside = [i for i, w in enumerate(words) if w is not None]
    return list(ids[: inside[0]]), list(ids[inside[-1] + 1 :])


def word_pieces(tokenizer: Any, sentences: list[list[str]], chunk: int = 2048) -> list[list[list[int]]]:
    """Subword ids of every word of every sentence (no special tokens). A word the tokenizer
    turns into nothing (e.g. a lone byte-order mark or control character) gets the unknown
    token, so it still has a position and a prediction."""
    unk = tokenizer.unk_token_id
    if unk is None:
        unk = tokenizer.pad_token_id or 0
    out: list[list[list[int]]] = []
    for lo in range(0, len(sentences), chunk):
        part = sentences[lo : lo + chunk]
        enc = tokenizer(part, is_split_into_words=True, add_special_tokens=False)
        for i, words in enumerate(part):
            pieces: list[list[int]] = [[] for _ in words]
            for tok, w in zip(enc["input_ids"][i], enc.word_ids(i)):
                if w is not None:
                    pieces[w].append(tok)
            out.append([p or [unk] for p in pieces])
    return out


def cached_word_pieces(
    tokenizer: Any, words: list[list[str]], cache_dir: Any, data_key: str
) -> list[list[list[int]]]:
    """:func:`word_pieces` of ``words``, kept in the suite's feature cache under ``cache_dir``
    (None: not cached) by the tokenizer's fingerprint and ``data_key`` (which names the words:
    the split's data hash and sample limit), so the other cells' workers read them instead of
    tokenising. An entry whose shape does not match ``words`` is rebuilt."""
    def matches(v: Any) -> bool:
        return len(v) == len(words) and all(len(p) == len(w) for p, w in zip(v, words))

    if cache_dir is None:
        return word_pieces(tokenizer, words)
    return cached_tokens(cache_dir, "ner-word-pieces", tokenizer, data_key,
                         lambda: word_pieces(tokenizer, words), matches)


def make_windows(
    pieces: list[list[list[int]]], prefix: list[int], suffix: list[int], max_length: int
) -> list[Window]:
    """Split each sentence into consecutive windows of whole words of at most ``max_length``
    subwords including special tokens. A single word longer than a window keeps its first
    subwords (its first subword, the one that is labelled and predicted, always survives)."""
    budget = max_length - len(prefix) - len(suffix)
    if budget < 1:
        raise PluginError(f"max_length {max_length} leaves no room besides special tokens")
    windows: list[Window] = []
    for si, sent in enumerate(pieces):
        start = 0
        while start < len(sent):
            ids = list(prefix)
            first: list[int] = []
            end = start
            while end < len(sent):
                p = sent[end]
                used = len(ids) - len(prefix)
                if used + len(p) > budget:
                    if end == start:  # one over-long word: keep what fits
                        first.append(len(ids))
                        ids.extend(p[:budget])
                        end += 1
                    break
                first.append(len(ids))
                ids.extend(p)
                end += 1
            ids.extend(suffix)
            windows.append(Window(si, start, end, ids, first))
            start = end
    return windows
