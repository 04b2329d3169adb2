"""Reading labelled text tables (CSV, TSV, JSON lines) for text classification. No heavy imports.

Every problem is a ``harness.errors.DataError`` naming the file and line.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from harness.errors import DataError

#: the format presets of the ``classification`` task (see :func:`preset`)
Format = Literal["sst2", "ag_news", "csv", "tsv", "jsonl"]
FORMATS: tuple[str, ...] = get_args(Format)


@dataclass
class Example:
    text: str
    pair: str | None
    label: str  #: label *name*
    line: int


@dataclass
class TextSplit:
    path: str
    examples: list[Example]
    sha256: str


def _columns(spec: str | list[str | int] | None) -> list[str]:
    if spec is None:
        return []
    return [spec] if isinstance(spec, str) else [str(s) for s in spec]


class LabelMap:
    """Turns a raw label value of the file into a label name.

    * ``names`` + ``offset``: the value is an integer index, ``names[int(value) - offset]``
      (AG News / DBpedia CSVs count classes from 1 with names in ``classes.txt``; SST-2 counts
      from 0), or already one of the names;
    * no names: the value itself is the name.
    """

    def __init__(self, names: list[str] | None = None, offset: int = 0) -> None:
        self.names, self.offset = names, offset

    def __call__(self, value: str, where: str) -> str:
        value = value.strip()
        if value == "":
            raise DataError(f"{where}: empty label")
        if self.names is None:
            return value
        if value in self.names:
            return value
        try:
            idx = int(value) - self.offset
        except ValueError:
            idx = -1
        if not 0 <= idx < len(self.names):
            hint = f"{self.offset}..{self.offset + len(self.names) - 1}"
            raise DataError(f"{where}: label {value!r} is not one of {self.names} (or an index {hint})")
        return self.names[idx]


Getter = Callable[[str, str], str]  # (column, "file:line") -> cell text


def read_table(
    path: str | Path,
    *,
    fmt: str,
    text_columns: str | list[str | int] | None,
    pair_columns: str | list[str | int] | None,
    label_column: str,
    label_map: LabelMap,
    header: bool,
) -> TextSplit:
    """Read a labelled table. ``fmt`` is ``csv`` (RFC-4180 quoting), ``tsv`` (tab-separated, no
    quoting: GLUE style) or ``jsonl`` (one JSON object a line). Columns are header names, or
    0-based indices (as strings or ints) for a file without a header. Several text columns are
    joined with a space (AG News: title + description). Text is stripped of surrounding
    whitespace; a row whose text is empty is an error."""
    path = Path(path)
    raw, text = _decode(path)
    texts, pairs = _columns(text_columns), _columns(pair_columns)
    if not texts:
        raise DataError(f"{path}: no text column configured")
    if fmt == "jsonl":
        rows = _jsonl_rows(path, text)
    elif fmt in ("csv", "tsv"):
        rows = _table_rows(path, text, fmt, header, [*texts, *pairs, label_column])
    else:
        raise ValueError(f"unknown table format {fmt!r}")
    examples: list[Example] = []
    for lineno, get in rows:
        where = f"{path}:{lineno}"
        t = " ".join(get(c, where) for c in texts).strip()
        p = " ".join(get(c, where) for c in pairs).strip() if pairs else None
        if not t:
            raise DataError(f"{where}: empty text")
        examples.append(Example(t, p, label_map(get(label_column, where), where), lineno))
    if not examples:
        raise DataError(f"{path}: no examples found")
    return TextSplit(str(path), examples, hashlib.sha256(raw).hexdigest())


def _decode(path: Path) -> tuple[bytes, str]:
    if not path.is_file():
        raise DataError(f"{path}: data file not found")
    raw = path.read_bytes()
    try:
        return raw, raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not valid UTF-8 ({exc.reason})") from None


def _jsonl_rows(path: Path, text: str) -> Iterator[tuple[int, Getter]]:
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{lineno}: invalid JSON ({exc.msg})") from None
        if not isinstance(obj, dict):
            raise DataError(f"{path}:{lineno}: expected a JSON object")

        def get(c: str, where: str, obj: dict = obj) -> str:
            if c not in obj:
                raise DataError(f"{where}: no key {c!r} (keys: {sorted(obj)})")
            v = obj[c]
            return "" if v is None else str(v)

        yield lineno, get


def _table_rows(path: Path, text: str, fmt: str, header: bool,
                needed: list[str]) -> Iterator[tuple[int, Getter]]:
    stream = io.StringIO(text, newline="")
    if fmt == "tsv":
        reader = csv.reader(stream, delimiter="\t", quoting=csv.QUOTE_NONE)
    else:
        reader = csv.reader(stream, delimiter=",")
    index: dict[str, int] = {}
    width = None
    try:
        for row in reader:
            lineno = reader.line_num
            if not row or all(not c.strip() for c in row):
                continue
            if header and not index:
                index = {name.strip(): i for i, name in enumerate(row)}
                width = len(row)
                missing = [c for c in needed if c not in index]
                if missing:
                    raise DataError(
                        f"{path}:{lineno}: header has no column {missing[0]!r} (columns: {list(index)})")
                continue
            width = len(row) if width is None else width
            if len(row) != width:
                raise DataError(f"{path}:{lineno}: {len(row)} fields, expected {width}")

            def get(c: str, where: str, row: list = row, index: dict = index) -> str:
                i = index[c] if header else _index(c, where)
                if i >= len(row):
                    raise DataError(f"{where}: no column {i} (row has {len(row)} fields)")
                return row[i]

            yield lineno, get
    except csv.Error as exc:
        raise DataError(f"{path}:{reader.line_num}: malformed {fmt.upper()} ({exc})") from None


def _index(c: str, where: str) -> int:
    try:
        return int(c)
    except (TypeError, ValueError):
        raise DataError(f"{where}: column {c!r} must be a 0-based index for a file without header") from None


def read_names(path: str | Path) -> list[str]:
    """Class names, one a line (``classes.txt``), blank lines ignored."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: class-names file not found")
    names = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
    if not names:
        raise DataError(f"{path}: no class names")
    if len(set(names)) != len(names):
        raise DataError(f"{path}: duplicate class names")
    return names


def sort_labels(values: set[str]) -> list[str]:
    """Numeric order when every label is an integer, else string order."""
    try:
        return sorted(values, key=lambda v: (int(v), v))
    except ValueError:
        return sorted(values)


def preset(fmt: str) -> dict[str, Any]:
    """Defaults of a format preset (any of them may be overridden by a task parameter)."""
    if fmt == "sst2":
        return {
            "table": "tsv", "header": True, "text_column": "sentence", "text_pair_column": None,
            "label_column": "label", "label_names": ["negative", "positive"], "label_offset": 0,
            "files": {"train": "train.tsv", "validation": "validation.tsv", "test": None},  # GLUE test: no labels
            "eval_split": "validation", "classes_file": None,
        }
    if fmt == "ag_news":
        return {
            "table": "csv", "header": False, "text_column": ["1", "2"], "text_pair_column": None,
            "label_column": "0", "label_names": None, "label_offset": 1,
            "files": {"train": "train.csv", "validation": None, "test": "test.csv"},
            "eval_split": "test", "classes_file": "classes.txt",
        }
    ext = {"csv": "csv", "tsv": "tsv", "jsonl": "jsonl"}[fmt]
    return {
        "table": fmt, "header": True, "text_column": "text", "text_pair_column": None, "label_column": "label",
        "label_names": None, "label_offset": 0,
        "files": {"train": f"train.{ext}", "validation": f"validation.{ext}", "test": f"test.{ext}"},
        "eval_split": "test", "classes_file": None,
    }
