"""The ``crf`` model plugin: a linear-chain CRF tagger (sklearn-crfsuite, i.e. CRFsuite) over the
standard hand-made word features, the classic NER baseline.

A :class:`harness.examples.ExampleModel`: the NER task hands it sentences as words; it turns
each word into features (the word lower-cased, its shape, prefixes and suffixes, case and digit
flags, and the same for the neighbouring words), trains with L-BFGS and elastic-net
regularisation, and tags with CRFsuite (double precision). Its artifact is CRFsuite's own
model file plus a JSON config: nothing pickled. sklearn-crfsuite is imported lazily.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import Field

import harness
from harness.api import CellContext, Head, LoadedModel, Model
from harness.examples import ExampleModel, Examples

_MODEL = "model.crfsuite"
_CONFIG = "config.json"


def word_shape(word: str) -> str:
    """``Xxxx`` -> ``Xx``: upper, lower and digit runs collapsed (``U.S.`` -> ``X.X.``)."""
    shape = "".join("X" if c.isupper() else "x" if c.islower() else "d" if c.isdigit() else c for c in word)
    return re.sub(r"(.)\1+", r"\1", shape)


def _word(word: str, prefix: str, affixes: int) -> dict[str, Any]:
    feats: dict[str, Any] = {
        f"{prefix}lower": word.lower(), f"{prefix}shape": word_shape(word),
        f"{prefix}istitle": word.istitle(), f"{prefix}isupper": word.isupper(),
    }
    for n in range(1, affixes + 1):
        feats[f"{prefix}suf{n}"] = word[-n:]
        feats[f"{prefix}pre{n}"] = word[:n]
    return feats


def sentence_features(words: Sequence[str], window: int = 2, affixes: int = 4) -> list[dict[str, Any]]:
    """CRFsuite features of each word: its own (bias, lower-cased form, shape, case, digits,
    hyphen, prefixes and suffixes up to ``affixes``) and those of the words up to ``window``
    away (lower-cased form, shape, case); ``BOS``/``EOS`` at the sentence edges."""
    out = []
    for i, w in enumerate(words):
        f = {"bias": 1.0, **_word(w, "", affixes), "isdigit": w.isdigit(), "hyphen": "-" in w}
        for d in range(1, window + 1):
            for j, side in ((i - d, f"-{d}:"), (i + d, f"+{d}:")):
                if 0 <= j < len(words):
                    f.update(_word(words[j], side, 0))
        f["BOS"], f["EOS"] = i == 0, i == len(words) - 1
        out.append(f)
    return out


class CrfModel(ExampleModel):
    """A CRFsuite tagger: trains on word lists and their IOB2 tags."""

    runtime = "crfsuite"
    precision = "fp64"

    def __init__(self, params: Crf.Params) -> None:
        self.params = params
        self._bytes: bytes | None = None
        self._tagger: Any = None

    def __deepcopy__(self, memo: dict[int, Any]) -> CrfModel:  # the C tagger does not copy
        clone = CrfModel(self.params)
        clone._bytes = self._bytes
        return clone

    def _features(self, words: Sequence[str]) -> list[dict[str, Any]]:
        return sentence_features(words, self.params.window, self.params.affixes)

    def fit(self, train: Examples, ctx: CellContext) -> None:
        import sklearn_crfsuite

        p = self.params
        with tempfile.TemporaryDirectory(prefix="harness-crf-") as tmp:
            path = Path(tmp) / _MODEL
            crf = sklearn_crfsuite.CRF(algorithm="lbfgs", c1=p.c1, c2=p.c2, max_iterations=p.max_iterations,
                                       all_possible_transitions=True, model_filename=str(path))
            crf.fit([self._features(ws) for ws in train.inputs], [list(t) for t in train.targets])
            self._use(path.read_bytes())

    def _use(self, data: bytes) -> None:
        import pycrfsuite

        self._bytes = data
        self._tagger = pycrfsuite.Tagger()
        self._tagger.open_inmemory(data)

    def _ready(self) -> Any:
        """The tagger, opened from the model bytes (a copy made by ``deepcopy`` has none yet)."""
        if self._tagger is None and self._bytes is not None:
            self._use(self._bytes)
        return self._tagger

    def predict(self, inputs: Sequence[Any]) -> list[Any]:
        tagger = self._ready()
        return [list(tagger.tag(self._features(ws))) if ws else [] for ws in inputs]

    def save(self, folder: Path) -> None:
        assert self._bytes is not None, "save() before fit()"
        (folder / _MODEL).write_bytes(self._bytes)
        (folder / _CONFIG).write_text(json.dumps({"params": self.params.model_dump()}, indent=2))

    def load(self, folder: Path) -> None:
        json.loads((folder / _CONFIG).read_text())
        self._use((folder / _MODEL).read_bytes())

    def parameter_counts(self) -> tuple[int, int]:
        info = self._ready().info()
        weights = [*info.state_features.values(), *info.transitions.values()]
        return len(weights), sum(1 for w in weights if w != 0.0)

    def describe(self) -> dict[str, Any]:
        return {"crf_labels": len(self._tagger.labels())} if self._tagger is not None else {}


class Crf(Model):
    """A linear-chain CRF (CRFsuite through sklearn-crfsuite) over word-shape, affix and
    neighbouring-word features: the classic NER tagger (token classification only; a text
    classification task is skipped)."""

    name = "crf"
    version = "1"
    description = "CRFsuite linear-chain CRF over word-shape/affix/neighbour features (NER)"
    kind = "crfsuite"
    heads = ("token-classification",)

    class Params(harness.Params):
        c1: float = Field(0.1, ge=0)
        """L1 regularisation coefficient."""
        c2: float = Field(0.1, ge=0)
        """L2 regularisation coefficient."""
        max_iterations: int = Field(100, ge=1)
        """L-BFGS iterations."""
        window: int = Field(2, ge=0, le=5)
        """Neighbouring words on each side whose features a word gets."""
        affixes: int = Field(4, ge=0, le=8)
        """Longest prefix and suffix used as features."""

    params: Params

    def load(self, head: Head, ctx: CellContext) -> LoadedModel:
        return LoadedModel(module=CrfModel(self.params), tokenizer=None, head=head,
                           identity=self.identity(), source="CRFsuite (sklearn-crfsuite)")


@harness.hookimpl
def register_models(register):
    register(Crf)
