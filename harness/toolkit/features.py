"""Tokenised features shared by the cells of a suite: a JSON cache keyed by tokenizer and data.

Every cell of a (task, model family) evaluates the same split with the same tokenizer; a cell runs
in its own worker process, so an in-memory memo does not carry over. ``cached_json`` keeps what a
task derives from its data (subword ids of each word, say) under
``<cache_dir>/features/<key>.json``: plain JSON, never unpickled; an entry that does not parse
or fails the caller's check is rebuilt and rewritten; a cache that cannot be written is only
not used. ``tokenizer_fingerprint`` names a tokenizer by what it does (its serialised pipeline
and vocabulary), so a fine-tuned checkpoint's copy of a tokenizer shares the base model's entry.
"""

from __future__ import annotations

import hashlib
import json
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from ..fsutil import atomic_write_text
from .artifacts import hash_text

T = TypeVar("T")

#: bump when what the built-in tasks store changes shape (part of every key)
FEATURES_VERSION = "1"

_FINGERPRINTS: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


def _describe(tokenizer: Any) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and hasattr(backend, "to_str"):
        return str(backend.to_str())
    vocab = tokenizer.get_vocab() if hasattr(tokenizer, "get_vocab") else {}
    return json.dumps(sorted(vocab.items())) + repr(getattr(tokenizer, "init_kwargs", {}))


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """sha256 of the tokenizer's class and serialised pipeline (a fast tokenizer's JSON: its
    normaliser, pre-tokeniser, model and vocabulary; else its vocabulary and init arguments),
    memoised per tokenizer object."""
    try:
        return _FINGERPRINTS[tokenizer]
    except (KeyError, TypeError):
        pass
    h = hashlib.sha256(type(tokenizer).__name__.encode())
    h.update(_describe(tokenizer).encode())
    fp = h.hexdigest()
    try:
        _FINGERPRINTS[tokenizer] = fp
    except TypeError:  # not weakly referenceable: computed again next time
        pass
    return fp


def cached_json(
    cache_dir: str | Path | None, key: str, build: Callable[[], T],
    valid: Callable[[Any], bool] = lambda _v: True,
) -> T:
    """``build()``'s JSON-serialisable value, read from ``<cache_dir>/features/<key>.json`` when
    an entry is there, parses and passes ``valid``; else built and written (atomically; a write
    that fails, e.g. a read-only cache, is skipped). ``cache_dir`` None: always built."""
    if cache_dir is None:
        return build()
    path = Path(cache_dir) / "features" / f"{key}.json"
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
        if valid(value):
            return value  # type: ignore[no-any-return]
    except (OSError, ValueError, TypeError, LookupError, AttributeError):
        pass  # absent, unreadable, not JSON, or not the shape the caller expects: rebuilt
    value = build()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(value, separators=(",", ":")))
    except OSError:
        pass
    return value


def cached_tokens(
    cache_dir: str | Path | None, kind: str, tokenizer: Any, data_key: str, build: Callable[[], T],
    valid: Callable[[Any], bool] = lambda _v: True, extra: tuple[Any, ...] = (),
) -> T:
    """:func:`cached_json` of a task's tokenised data, keyed by what it is (``kind``, e.g.
    ``"ner-word-pieces"``), :data:`FEATURES_VERSION`, the tokenizer's fingerprint, ``data_key``
    (which examples: the split's data hash and sample limit) and ``extra`` (e.g. a length)."""
    key = hash_text(kind, FEATURES_VERSION, tokenizer_fingerprint(tokenizer), data_key, *extra)
    return cached_json(cache_dir, key, build, valid)
