"""``word-nb``: naive Bayes over lower-cased words, a model that is not a transformer. As a
``harness.ExampleModel`` it gets the task's raw texts, trains, predicts, saves (JSON, no pickle)
and reloads itself; ``kind`` and ``heads`` skip the cells it cannot take, before any work."""

from __future__ import annotations

import json
import math
from collections import Counter

from pydantic import Field

import harness


class WordCounts(harness.ExampleModel):
    runtime, precision = "python", "fp64"

    def __init__(self, smoothing: float) -> None:
        self.smoothing, self.prior, self.unk, self.logp = smoothing, {}, {}, {}

    def fit(self, train, ctx):
        counts = {y: Counter() for y in train.labels}
        for text, y in zip(train.inputs, train.targets):
            counts[y].update(text.lower().split())
        vocab, seen = set().union(*counts.values()), Counter(train.targets)
        for y, c in counts.items():
            total = sum(c.values()) + self.smoothing * (len(vocab) + 1)
            self.logp[y] = {w: math.log((n + self.smoothing) / total) for w, n in c.items()}
            self.unk[y] = math.log(self.smoothing / total)
            self.prior[y] = math.log((seen[y] + 1) / (len(train) + len(counts)))

    def predict(self, inputs):
        def score(y, words): return self.prior[y] + sum(self.logp[y].get(w, self.unk[y]) for w in words)
        return [max(self.prior, key=lambda y: score(y, text.lower().split())) for text in inputs]

    def save(self, folder):
        (folder / "word_nb.json").write_text(json.dumps([self.prior, self.unk, self.logp]))

    def load(self, folder):
        self.prior, self.unk, self.logp = json.loads((folder / "word_nb.json").read_text())

    def parameter_counts(self):
        n = sum(len(v) for v in self.logp.values()) + 2 * len(self.prior)
        return n, n


class WordNB(harness.Model):
    """Naive Bayes over words: text classification only, trains in a second, runs in Python."""

    name, version, kind, heads = "word-nb", "1", "python", ("sequence-classification",)

    class Params(harness.Params):
        smoothing: float = Field(1.0, gt=0)
        """Add-k smoothing of the word counts."""

    def load(self, head, ctx):
        return harness.LoadedModel(WordCounts(self.params.smoothing), None, head, self.identity(),
                                   source="naive Bayes over words")
