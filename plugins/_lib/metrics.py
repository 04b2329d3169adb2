"""Metrics of the built-in tasks, as ``evaluate`` metric modules defined here (never loaded from
a hub), plus a seeded percentile bootstrap for confidence intervals.

``evaluate`` and ``seqeval`` are imported lazily: ``seqeval_metric()`` and
``classification_metric()`` build the module instances.

* :func:`seqeval_metric` - entity-level scores with seqeval. Default mode is seqeval's
  conlleval-compatible chunking (an ``I-X`` after ``O`` or another type starts an entity, as the
  CoNLL-2000 ``conlleval`` script does); ``mode="strict"`` is seqeval's strict IOB2 matching,
  which is *not* conlleval: it drops predicted entities that start with ``I-`` instead of
  counting them, so on a model's raw output it differs by 1-2 F1 points (either direction).
* :func:`classification_metric` - accuracy, macro-F1 and per-class precision/recall/F1.
* :func:`sentence_entity_counts` - (true positives, predicted, gold) entities per sentence, the
  exact decomposition of seqeval's micro scores, so bootstrapping over sentences is cheap.
* :func:`bootstrap_ci` - percentile bootstrap over rows of per-item statistics (vectorised for
  statistics marked ``vectorized``, such as :func:`micro_f1_from_counts`), on the core's
  :func:`harness.stats.bootstrap` (the gate's paired bootstrap uses the same resampling).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from harness.api import MetricValue
from harness.errors import DataError

_SEQEVAL_DESCRIPTION = (
    "Entity-level precision, recall and F1 (micro over all entities, and per entity type) "
    "computed with seqeval; default mode follows conlleval's chunking."
)
_CLS_DESCRIPTION = "Accuracy, macro-averaged F1 and per-class precision/recall/F1 over label ids."


def _safe_div(a: float, b: float) -> float:
    return float(a) / float(b) if b else 0.0


def _f1(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if (p + r) else 0.0


def _build_seqeval_class():
    import datasets
    import evaluate

    class Seqeval(evaluate.Metric):
        """seqeval wrapped as an ``evaluate`` metric module (local, no hub)."""

        def _info(self) -> Any:
            return evaluate.MetricInfo(
                description=_SEQEVAL_DESCRIPTION,
                citation="seqeval: https://github.com/chakki-works/seqeval (Nakayama, 2018)",
                inputs_description=(
                    "predictions, references: lists of sentences, each a list of IOB tag strings. "
                    "mode: None (conlleval-compatible, default) or 'strict' (IOB2 scheme)."
                ),
                features=datasets.Features(
                    {
                        "predictions": datasets.Sequence(datasets.Value("string")),
                        "references": datasets.Sequence(datasets.Value("string")),
                    }
                ),
            )

        def _compute(self, predictions, references, mode: str | None = None) -> dict[str, Any]:
            from seqeval.metrics import accuracy_score

            if mode == "strict":
                out = _strict_scores(references, predictions)
            elif mode is None:
                out = _default_scores(references, predictions)
            else:
                raise ValueError(f"mode must be None (conlleval) or 'strict', got {mode!r}")
            out["overall_accuracy"] = float(accuracy_score(references, predictions))
            return out

    return Seqeval


def _build_classification_class():
    import datasets
    import evaluate

    class ClassificationScores(evaluate.Metric):
        """Accuracy, macro-F1, per-class P/R/F1 as an ``evaluate`` metric module (local)."""

        def _info(self) -> Any:
            return evaluate.MetricInfo(
                description=_CLS_DESCRIPTION,
                citation="",
                inputs_description=(
                    "predictions, references: label ids. num_labels: number of classes (classes "
                    "absent from both get F1 0 and still count in the macro average)."
                ),
                features=datasets.Features(
                    {
                        "predictions": datasets.Value("int64"),
                        "references": datasets.Value("int64"),
                    }
                ),
            )

        def _compute(self, predictions, references, num_labels: int | None = None):
            pred = np.asarray(predictions, dtype=np.int64)
            ref = np.asarray(references, dtype=np.int64)
            k = int(num_labels or (max(pred.max(initial=0), ref.max(initial=0)) + 1))
            cm = np.zeros((k, k), dtype=np.int64)  # rows: reference, cols: prediction
            np.add.at(cm, (ref, pred), 1)
            tp = np.diag(cm).astype(float)
            support = cm.sum(axis=1)
            predicted = cm.sum(axis=0)
            precision = [_safe_div(t, p) for t, p in zip(tp, predicted)]
            recall = [_safe_div(t, s) for t, s in zip(tp, support)]
            f1 = [_f1(p, r) for p, r in zip(precision, recall)]
            return {
                "accuracy": _safe_div(tp.sum(), len(ref)),
                "macro_f1": float(np.mean(f1)) if k else 0.0,
                "precision": precision,
                "recall": recall,
                "f1": f1,
                "support": support.tolist(),
                "confusion_matrix": cm.tolist(),
            }

    return ClassificationScores


def _default_scores(references: Sequence[Sequence[str]], predictions: Sequence[Sequence[str]]) -> dict[str, Any]:
    """seqeval default (conlleval) mode, from one pass of seqeval's ``get_entities`` over each
    sentence: the micro scores are seqeval's exactly (its ``precision_recall_fscore_support``
    chunks the sentences the same way, joined by an ``O``; tests/test_metrics.py checks the
    equality on real data), per type and per sentence from the same entities.
    ``sentence_counts`` holds (true positives, predicted, gold) per sentence for the bootstrap,
    ``strict_sentence_counts`` the same for seqeval's strict IOB2 mode (see
    :func:`sentence_entity_counts`)."""
    strict: list[tuple[int, int, int]] = []
    counts = sentence_entity_counts(references, predictions, per_type := {}, strict)
    tp, npred, ngold = (int(x) for x in counts.sum(axis=0))
    p, r = _safe_div(tp, npred), _safe_div(tp, ngold)
    out: dict[str, Any] = {}
    for t in sorted(per_type):
        t_tp, t_pred, t_gold = per_type[t]
        tp_p, tp_r = _safe_div(t_tp, t_pred), _safe_div(t_tp, t_gold)
        out[t] = {"precision": tp_p, "recall": tp_r, "f1": _f1(tp_p, tp_r), "number": t_gold}
    out.update(overall_precision=p, overall_recall=r, overall_f1=_f1(p, r),
               overall_number=ngold, sentence_counts=counts.tolist(),
               strict_sentence_counts=strict)
    return out


def _strict_scores(references: Sequence[Sequence[str]], predictions: Sequence[Sequence[str]]) -> dict[str, Any]:
    """seqeval strict mode with the IOB2 scheme (not conlleval), via its classification report."""
    from seqeval.metrics import classification_report
    from seqeval.scheme import IOB2

    report = classification_report(
        references, predictions, output_dict=True, zero_division=0, digits=6, mode="strict", scheme=IOB2
    )
    out: dict[str, Any] = {}
    for key, row in report.items():
        if not key.endswith(" avg"):
            out[key] = {"precision": float(row["precision"]), "recall": float(row["recall"]),
                        "f1": float(row["f1-score"]), "number": int(row["support"])}
    micro = report["micro avg"]
    out.update(overall_precision=float(micro["precision"]), overall_recall=float(micro["recall"]),
               overall_f1=float(micro["f1-score"]), overall_number=int(micro["support"]))
    return out


_CLASSES: dict[str, type] = {}


def seqeval_metric():
    """A fresh seqeval ``evaluate.Metric`` (kept in memory, no cache files, no hub)."""
    if "seqeval" not in _CLASSES:
        _CLASSES["seqeval"] = _build_seqeval_class()
    return _CLASSES["seqeval"](keep_in_memory=True)


def classification_metric():
    """A fresh classification ``evaluate.Metric`` (kept in memory, no cache files, no hub)."""
    if "cls" not in _CLASSES:
        _CLASSES["cls"] = _build_classification_class()
    return _CLASSES["cls"](keep_in_memory=True)


def sentence_entity_counts(
    references: Sequence[Sequence[str]],
    predictions: Sequence[Sequence[str]],
    per_type: dict[str, list[int]] | None = None,
    strict: list[tuple[int, int, int]] | None = None,
) -> np.ndarray:
    """(n_sentences, 3) int array: true-positive, predicted and gold entity counts per sentence,
    with seqeval's default (conlleval) chunking. Column sums give seqeval's micro counts exactly.
    ``per_type``, when given, is filled with ``type -> [tp, predicted, gold]``. ``strict``, when
    given, gets the same three counts per sentence for seqeval's strict mode with the IOB2
    scheme: its entities are the chunks that begin with a ``B-`` tag (an entity that starts
    with ``I-`` is not one; inside a chunk every tag is an ``I-`` of its type), checked against
    seqeval's own strict scores in tests/test_metrics.py."""
    from seqeval.metrics.sequence_labeling import get_entities

    out = np.zeros((len(references), 3), dtype=np.int64)
    for i, (ref, pred) in enumerate(zip(references, predictions)):
        ref, pred = list(ref), list(pred)
        gold = set(get_entities(ref))
        guess = set(get_entities(pred))
        hit = gold & guess
        out[i] = (len(hit), len(guess), len(gold))
        if strict is not None:
            s_gold = {e for e in gold if ref[e[1]].startswith("B-")}
            s_guess = {e for e in guess if pred[e[1]].startswith("B-")}
            strict.append((len(s_gold & s_guess), len(s_guess), len(s_gold)))
        if per_type is not None:
            for col, ents in ((0, hit), (1, guess), (2, gold)):
                for t, _, _ in ents:
                    per_type.setdefault(t, [0, 0, 0])[col] += 1
    return out


def f1_of_counts(tp: np.ndarray, predicted: np.ndarray, gold: np.ndarray) -> np.ndarray:
    """Elementwise F1 of true-positive, predicted and gold counts (float arrays), 0 where a
    precision, recall or F1 would divide by 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(predicted > 0, tp / np.where(predicted > 0, predicted, 1), 0.0)
        r = np.where(gold > 0, tp / np.where(gold > 0, gold, 1), 0.0)
        return np.where(p + r > 0, 2 * p * r / np.where(p + r > 0, p + r, 1), 0.0)


def micro_f1_from_counts(counts: np.ndarray) -> float | np.ndarray:
    """Entity micro F1 from (tp, predicted, gold) rows summed over axis -2: an (n, 3) array gives
    a float, a (B, n, 3) stack of resamples gives B values."""
    f1 = f1_of_counts(*np.moveaxis(np.asarray(counts).sum(axis=-2).astype(float), -1, 0))
    return float(f1) if np.ndim(f1) == 0 else f1


micro_f1_from_counts.vectorized = True  # type: ignore[attr-defined]
micro_f1_from_counts.row_sums = True  # type: ignore[attr-defined]  # reads only the summed counts


def bootstrap_ci(
    stats: np.ndarray,
    statistic: Callable[[np.ndarray], float],
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float | None, float | None]:
    """Percentile bootstrap CI of ``statistic`` over rows of ``stats`` (items resampled with
    replacement, ``n_resamples`` times, numpy ``default_rng(seed)``: :func:`harness.stats.bootstrap`,
    vectorised for statistics marked ``vectorized``). ``(None, None)`` when ``n_resamples`` is 0
    or there are no items."""
    from harness.stats import bootstrap, percentile_interval

    stats = np.asarray(stats)
    if n_resamples <= 0 or len(stats) == 0:
        return None, None
    values = bootstrap(stats, statistic, n_resamples, seed,
                       vectorized=getattr(statistic, "vectorized", False),
                       row_sums=getattr(statistic, "row_sums", False))
    return percentile_interval(values, confidence)


def share_of_sums(n: int) -> Callable[[np.ndarray], np.ndarray]:
    """The bootstrap statistic "mean of a 0/1 column" read from resampled row sums
    (``harness.stats.bootstrap(row_sums=True)``): a ``(B, 1)`` stack of sums -> ``B`` shares."""
    def share(sums: np.ndarray) -> np.ndarray:
        return np.asarray(sums, dtype=float).reshape(len(sums), -1)[:, 0] / n

    share.vectorized = share.row_sums = True  # type: ignore[attr-defined]
    return share


def class_indicators(pairs: np.ndarray, num_labels: int) -> np.ndarray:
    """Per example, one-hot (true positive, predicted, gold) indicators of each of ``num_labels``
    classes: an ``(n, 3k)`` int array whose column sums are the per-class counts macro F1 needs."""
    pairs = np.asarray(pairs, dtype=np.int64)
    k, n = int(num_labels), len(pairs)
    out = np.zeros((n, 3 * k), dtype=np.int64)
    rows = np.arange(n)
    ref, pred = pairs[:, 0], pairs[:, 1]
    hit = ref == pred
    out[rows[hit], ref[hit]] = 1
    out[rows, k + pred] = 1
    out[rows, 2 * k + ref] = 1
    return out


def macro_f1_of_sums(num_labels: int) -> Callable[[np.ndarray], np.ndarray]:
    """Macro F1 read from resampled row sums of :func:`class_indicators` (a ``(B, 1, 3k)``
    stack): the bootstrap of :func:`macro_f1_from_pairs` without a Python call per resample."""
    k = int(num_labels)

    def macro(sums: np.ndarray) -> np.ndarray:
        c = np.asarray(sums, dtype=float).reshape(len(sums), 3 * k)
        f1 = f1_of_counts(c[:, :k], c[:, k:2 * k], c[:, 2 * k:])
        return f1.mean(axis=1) if k else np.zeros(len(c))

    macro.vectorized = macro.row_sums = True  # type: ignore[attr-defined]
    return macro


def macro_f1_from_pairs(pairs: np.ndarray, num_labels: int) -> float:
    """Macro F1 from an (n, 2) array of (reference, prediction) label ids."""
    pairs = np.asarray(pairs, dtype=np.int64)
    k = int(num_labels)
    ref, pred = pairs[:, 0], pairs[:, 1]
    tp = np.bincount(ref[ref == pred], minlength=k).astype(float)
    support = np.bincount(ref, minlength=k).astype(float)
    predicted = np.bincount(pred, minlength=k).astype(float)
    return float(f1_of_counts(tp, predicted, support).mean()) if k else 0.0


def ner_metrics(
    references: list[list[str]],
    predictions: list[list[str]],
    *,
    bootstrap: int = 1000,
    seed: int = 0,
    split: str = "test",
) -> list[MetricValue]:
    """Entity-level metrics of ``predictions`` against ``references`` (IOB tags per word)."""
    for i, (r, p) in enumerate(zip(references, predictions)):
        if len(r) != len(p):
            raise DataError(f"sentence {i}: {len(r)} gold tags but {len(p)} predicted")
    if len(references) != len(predictions):
        raise DataError(f"{len(references)} gold sentences but {len(predictions)} predicted")
    res = seqeval_metric().compute(predictions=predictions, references=references)
    counts = np.asarray(res.pop("sentence_counts"), dtype=np.int64).reshape(-1, 3)
    # only strict mode's micro F1 is reported
    strict_f1 = micro_f1_from_counts(np.asarray(res.pop("strict_sentence_counts"),
                                                dtype=np.int64).reshape(-1, 3))
    n_gold = int(counts[:, 2].sum())
    low, high = bootstrap_ci(counts, micro_f1_from_counts, n_resamples=bootstrap, seed=seed)
    mode = "seqeval default (conlleval-compatible) mode"
    ci = (
        f"; 95% CI: percentile bootstrap, {bootstrap} resamples of the {len(references)} "
        f"sentences, seed {seed}" if bootstrap > 0 else ""
    )
    out = [
        MetricValue(
            "entity_f1", res["overall_f1"], low, high,
            metric_description=f"entity-level micro F1, {mode}, over all {n_gold} gold entities of the "
            f"{split} split (every word scored; a predicted entity counts only when its span and "
            f"type both match a gold entity: not token accuracy){ci}",
            main_metric=True,
        ),
        MetricValue(
            "entity_precision", res["overall_precision"],
            metric_description=f"entity-level micro precision, {mode}, {split} split",
        ),
        MetricValue(
            "entity_recall", res["overall_recall"],
            metric_description=f"entity-level micro recall, {mode}, {split} split",
        ),
        MetricValue(
            "entity_f1_strict", strict_f1,
            metric_description="entity-level micro F1, seqeval STRICT mode with the IOB2 scheme "
            f"(not conlleval: an entity must start with B-), {split} split",
        ),
        MetricValue(
            "token_accuracy", res["overall_accuracy"],
            metric_description=f"token-level accuracy over all words including O-tagged ones "
            f"(not an entity metric), {split} split",
        ),
        MetricValue(
            "gold_entities", float(n_gold), unit="entities", metric_group="Evaluation data",
            metric_description=f"number of gold entities scored in the {split} split (conlleval chunking)",
        ),
    ]
    types = sorted(k for k, v in res.items() if isinstance(v, dict))
    for t in types:
        row = res[t]
        for key, what in (("f1", "F1"), ("precision", "precision"), ("recall", "recall")):
            out.append(
                MetricValue(
                    f"entity_{key}.{t}", row[key], metric_group=f"Per-entity-type {what}",
                    metric_description=f"entity-level {what} of type {t} ({row['number']} gold), {mode}, "
                    f"{split} split",
                )
            )
    return out
