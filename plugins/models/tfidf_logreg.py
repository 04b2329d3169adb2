"""The ``tfidf-logreg`` model plugin: a classic text classifier (scikit-learn TF-IDF features +
logistic regression), the baseline a leaderboard reader compares a transformer with.

A :class:`harness.examples.ExampleModel`: the classification task hands it raw sentences; it
trains in seconds on the train split and runs on scikit-learn in float64. Its artifact is the
vocabulary (JSON), the IDF weights and the classifier's coefficients (``.npz``, no object
arrays): nothing pickled. scikit-learn is imported lazily.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import Field

import harness
from harness.api import CellContext, Head, LoadedModel, Model
from harness.examples import ExampleModel, Examples

_WEIGHTS = "weights.npz"
_VOCAB = "vocabulary.json"
_CONFIG = "config.json"


class TfidfLogRegModel(ExampleModel):
    """TF-IDF word n-grams -> logistic regression, trained on raw texts."""

    runtime = "scikit-learn"
    precision = "fp64"

    def __init__(self, params: TfidfLogReg.Params, seed: int = 0) -> None:
        self.params = params
        self.seed = seed
        self.vectorizer: Any = None
        self.classifier: Any = None

    def _vectorizer(self) -> Any:
        from sklearn.feature_extraction.text import TfidfVectorizer

        p = self.params
        return TfidfVectorizer(ngram_range=(1, p.ngram_max), min_df=p.min_df, sublinear_tf=p.sublinear_tf,
                               lowercase=True)

    def _classifier(self) -> Any:
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(C=self.params.C, max_iter=self.params.max_iter, random_state=self.seed)

    def fit(self, train: Examples, ctx: CellContext) -> None:
        self.seed = ctx.seed
        self.vectorizer = self._vectorizer()
        features = self.vectorizer.fit_transform(train.inputs)
        self.classifier = self._classifier()
        self.classifier.fit(features, list(train.targets))

    def predict(self, inputs: Sequence[Any]) -> list[Any]:
        return [str(y) for y in self.classifier.predict(self.vectorizer.transform(list(inputs)))]

    def _arrays(self) -> dict[str, Any]:
        return {"idf": self.vectorizer.idf_, "coef": self.classifier.coef_,
                "intercept": self.classifier.intercept_}

    def save(self, folder: Path) -> None:
        import numpy as np

        np.savez(folder / _WEIGHTS, **self._arrays())
        vocab = {term: int(i) for term, i in self.vectorizer.vocabulary_.items()}
        (folder / _VOCAB).write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
        config = {"classes": [str(c) for c in self.classifier.classes_], "seed": self.seed,
                  "params": self.params.model_dump()}
        (folder / _CONFIG).write_text(json.dumps(config, indent=2))

    def load(self, folder: Path) -> None:
        import numpy as np

        config = json.loads((folder / _CONFIG).read_text())
        with np.load(folder / _WEIGHTS, allow_pickle=False) as w:
            idf, coef, intercept = w["idf"], w["coef"], w["intercept"]
        self.vectorizer = self._vectorizer()
        self.vectorizer.vocabulary_ = json.loads((folder / _VOCAB).read_text(encoding="utf-8"))
        self.vectorizer.idf_ = idf
        self.classifier = self._classifier()
        self.classifier.classes_ = np.asarray(config["classes"])
        self.classifier.coef_, self.classifier.intercept_ = coef, intercept
        self.seed = int(config["seed"])

    def parameter_counts(self) -> tuple[int, int]:
        import numpy as np

        arrays = self._arrays().values()
        return sum(int(a.size) for a in arrays), sum(int(np.count_nonzero(a)) for a in arrays)

    def describe(self) -> dict[str, Any]:
        return {"vocabulary_size": len(self.vectorizer.vocabulary_)} if self.vectorizer is not None else {}


class TfidfLogReg(Model):
    """scikit-learn TF-IDF + logistic regression: a text classifier that needs no GPU and trains in
    seconds (sequence classification only; an NER task is skipped)."""

    name = "tfidf-logreg"
    version = "1"
    description = "scikit-learn TF-IDF word n-grams + logistic regression (text classification)"
    kind = "sklearn"
    heads = ("sequence-classification",)

    class Params(harness.Params):
        ngram_max: int = Field(2, ge=1, le=5)
        """Longest word n-gram (1: unigrams only)."""
        min_df: int = Field(2, ge=1)
        """Keep n-grams seen in at least this many training texts."""
        sublinear_tf: bool = True
        """Use 1 + log(tf) instead of raw term counts."""
        C: float = Field(1.0, gt=0)
        """Inverse L2 regularisation strength of the logistic regression."""
        max_iter: int = Field(1000, ge=1)
        """Iterations of the lbfgs solver."""

    params: Params

    def load(self, head: Head, ctx: CellContext) -> LoadedModel:
        return LoadedModel(module=TfidfLogRegModel(self.params, ctx.seed), tokenizer=None, head=head,
                           identity=self.identity(), source="scikit-learn TfidfVectorizer + LogisticRegression")


@harness.hookimpl
def register_models(register):
    register(TfidfLogReg)
