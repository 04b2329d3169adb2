"""CoNLL column files: reading, IOB1 -> IOB2 conversion, label sets. No heavy imports.

A file holds one token per line, any number of whitespace-separated columns, the tag in the
last column; sentences are separated by blank lines (a line of only whitespace, e.g. a lone
tab as in WNUT-17, counts as blank). ``-DOCSTART-`` lines (``-DOCSTART- -X- O O`` or
``-DOCSTART- -X- -X- O``) end the current sentence and are dropped. Byte-order marks are
removed wherever they occur (WNUT-17's validation file has two in the middle). Extra blank
lines anywhere, a missing final newline, CRLF line ends: all fine.

Tags are IOB1 (``I-`` starts an entity unless it continues one of the same type; ``B-`` only
between two adjacent entities of one type: the original CoNLL-2003 files) or IOB2 (every entity
starts with ``B-``). Both are converted once, on reading, to IOB2. The conversion is the
conlleval chunk rule (an ``I-X`` after ``O``, after another type or at a sentence start begins a
chunk), so an IOB1 file and its IOB2 conversion describe exactly the same entities.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

from harness.errors import DataError

_TAG = re.compile(r"^(?:O|([BI])-(\S+))$")
_BOM = "\ufeff"
_ASCII_WS = " \t\r\n\x0b\x0c"

#: how the tags of a file are read (see :func:`read_conll`)
Scheme = Literal["auto", "iob1", "iob2"]
SCHEMES: tuple[str, ...] = get_args(Scheme)


@dataclass
class Sentence:
    tokens: list[str]
    tags: list[str]  #: IOB2 after reading
    line: int  #: 1-based line number of the first token in its file


@dataclass
class ConllSplit:
    """One file's sentences, tags already in IOB2."""

    path: str
    sentences: list[Sentence]
    scheme: str  #: the scheme the file was read as: "iob1" or "iob2"
    sha256: str = ""
    documents: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def tokens(self) -> list[list[str]]:
        return [s.tokens for s in self.sentences]

    @property
    def tags(self) -> list[list[str]]:
        return [s.tags for s in self.sentences]

    def entity_types(self) -> set[str]:
        return {t[2:] for s in self.sentences for t in s.tags if t != "O"}


def iob1_to_iob2(tags: list[str]) -> list[str]:
    """IOB1 (or any IOB) -> IOB2, by the conlleval chunk-start rule. Idempotent on IOB2."""
    out: list[str] = []
    prev = "O"
    for tag in tags:
        if tag.startswith("I-"):
            typ = tag[2:]
            if prev == "O" or prev[2:] != typ:
                tag = "B-" + typ
        out.append(tag)
        prev = tag
    return out


def is_iob2(tags: list[str]) -> bool:
    """True when no ``I-X`` starts a chunk (what IOB2 requires)."""
    prev = "O"
    for tag in tags:
        if tag.startswith("I-") and (prev == "O" or prev[2:] != tag[2:]):
            return False
        prev = tag
    return True


def _columns(path: Path, lineno: int, bline: bytes) -> list[str]:
    """The columns of one line (decoded as UTF-8, byte-order marks dropped)."""
    try:
        line = bline.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}:{lineno}: not valid UTF-8 ({exc.reason})") from None
    line = line.replace(_BOM, "").strip(_ASCII_WS)
    # tab-separated files may have spaces inside a column; otherwise any run of spaces
    # separates columns. Only ASCII whitespace separates: tokens may hold U+00A0 etc.
    parts = line.split("\t") if "\t" in line else line.split(" ")
    cols = [c.strip(_ASCII_WS) for c in parts if c.strip(_ASCII_WS)]
    if cols and cols[0] != "-DOCSTART-":
        if len(cols) < 2:
            raise DataError(
                f"{path}:{lineno}: expected a token and a tag separated by whitespace, got {line!r}"
            )
        if not _TAG.match(cols[-1]):
            raise DataError(f"{path}:{lineno}: tag {cols[-1]!r} is not IOB (O, B-TYPE or I-TYPE)")
    return cols


def _sentences(path: Path, raw: bytes) -> tuple[list[Sentence], int]:
    """(sentences with their raw tags, number of ``-DOCSTART-`` documents)."""
    sentences: list[Sentence] = []
    tokens: list[str] = []
    tags: list[str] = []
    start, documents = 0, 0
    for lineno, bline in enumerate([*raw.splitlines(), b""], start=1):
        cols = _columns(path, lineno, bline)
        if not cols or cols[0] == "-DOCSTART-":
            if tokens:
                sentences.append(Sentence(tokens, tags, start))
            tokens, tags = [], []
            documents += bool(cols)
            continue
        if not tokens:
            start = lineno
        tokens.append(cols[0])
        tags.append(cols[-1])
    return sentences, documents


def _forbid_iob1(path: Path, s: Sentence) -> None:
    """Raise the DataError naming the line of the first ``I-`` tag that starts an entity."""
    prev = "O"
    for i, tag in enumerate(s.tags):
        if tag.startswith("I-") and (prev == "O" or prev[2:] != tag[2:]):
            raise DataError(
                f"{path}:{s.line + i}: tag {tag!r} starts an entity, which IOB2 forbids; "
                "read the file with scheme 'iob1' or 'auto'"
            )
        prev = tag


def read_conll(path: str | Path, scheme: str = "auto") -> ConllSplit:
    """Read a CoNLL column file into IOB2 sentences.

    :param scheme: ``"auto"`` (IOB1 when some ``I-`` tag starts an entity, else IOB2),
        ``"iob1"``, or ``"iob2"`` (then an ``I-`` tag that starts an entity is a ``DataError``).
    :raises DataError: missing file, undecodable bytes, a line without a tag column, or a tag
        that is neither ``O`` nor ``B-``/``I-`` + type; the message names the file and line.
    """
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: data file not found")
    raw = path.read_bytes()
    sentences, documents = _sentences(path, raw)
    if not sentences:
        raise DataError(f"{path}: no sentences found")
    iob1_evidence = next((s for s in sentences if not is_iob2(s.tags)), None)
    if scheme == "iob2" and iob1_evidence is not None:
        _forbid_iob1(path, iob1_evidence)
    read_as = "iob1" if (scheme == "iob1" or (scheme == "auto" and iob1_evidence)) else "iob2"
    for s in sentences:
        s.tags = iob1_to_iob2(s.tags)
    return ConllSplit(
        path=str(path),
        sentences=sentences,
        scheme=read_as,
        sha256=hashlib.sha256(raw).hexdigest(),
        documents=documents,
    )


def label_list(types: set[str] | list[str]) -> list[str]:
    """IOB2 labels in id order: ``O``, then ``B-T``, ``I-T`` for each type, types sorted."""
    labels = ["O"]
    for t in sorted(set(types)):
        labels += [f"B-{t}", f"I-{t}"]
    return labels


def entity_counts(tags: list[list[str]]) -> Counter:
    """Gold entities per type, by conlleval chunking (each sentence chunked on its own)."""
    counts: Counter = Counter()
    for sent in tags:
        for tag in iob1_to_iob2(sent):
            if tag.startswith("B-"):
                counts[tag[2:]] += 1
    return counts


def write_conll(path: str | Path, tokens: list[list[str]], *columns: list[list[str]]) -> None:
    """Write sentences as a column file (token, then each column), blank line between them."""
    with open(path, "w", encoding="utf-8") as f:
        for i, sent in enumerate(tokens):
            f.writelines(" ".join([tok, *(col[i][j] for col in columns)]) + "\n" for j, tok in enumerate(sent))
            f.write("\n")
