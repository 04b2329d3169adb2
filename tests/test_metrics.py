"""Metrics: conlleval-compatible entity scores, hand-computed values, bootstrap CIs, and the
local ``evaluate`` modules."""

from __future__ import annotations

import numpy as np
import pytest
from tiny_tasks import data

from harness_plugins._lib.conll import read_conll
from harness_plugins._lib.metrics import (
    bootstrap_ci,
    classification_metric,
    macro_f1_from_pairs,
    micro_f1_from_counts,
    sentence_entity_counts,
    seqeval_metric,
)


def by_name(metrics):
    out = {m.metric: m for m in metrics}
    assert len(out) == len(metrics), "metric names must be unique"
    return out


def perturb(tags: list[list[str]]) -> list[list[str]]:
    """A deterministic 'model output': drop every 4th entity, retype every 5th, shift every 7th
    one word right, in the tags' own scheme (so it works on IOB1 and IOB2 alike)."""
    out, k = [], 0
    for sent in tags:
        new = list(sent)
        for i, t in enumerate(sent):
            if t == "O":
                continue
            k += 1
            if k % 4 == 0:
                new[i] = "O"
            elif k % 5 == 0:
                new[i] = t[:2] + ("LOC" if t[2:] != "LOC" else "ORG")
            elif k % 7 == 0 and i + 1 < len(sent):
                new[i], new[i + 1] = "O", "I-" + t[2:]
        out.append(new)
    return out


# -- NER ---------------------------------------------------------------------------------------
def test_gold_as_prediction_scores_one_on_all_5648_entities():
    from harness_plugins.tasks.ner import ner_metrics

    gold = read_conll(data("conll2003", "test.txt")).tags
    m = by_name(ner_metrics(gold, gold, bootstrap=50, seed=0))
    assert m["entity_f1"].main_metric and sum(x.main_metric for x in m.values()) == 1
    assert m["entity_f1"].value == 1.0
    assert (m["entity_f1"].ci_low, m["entity_f1"].ci_high) == (1.0, 1.0)
    assert m["gold_entities"].value == 5648
    for key in ("entity_precision", "entity_recall", "entity_f1_strict", "token_accuracy",
                "entity_f1.PER", "entity_f1.LOC", "entity_f1.ORG", "entity_f1.MISC"):
        assert m[key].value == 1.0
    assert "conlleval" in m["entity_f1"].metric_description
    assert all(x.metric_description for x in m.values())


@pytest.mark.slow
def test_iob1_files_and_their_iob2_conversion_score_identically():
    from harness_plugins._lib.conll import iob1_to_iob2
    from harness_plugins.tasks.ner import ner_metrics

    def raw_tags(path):  # the file's own tags, unconverted
        sents, cur = [], []
        for line in path.read_text().splitlines():
            cols = line.split()
            if not cols or cols[0] == "-DOCSTART-":
                if cur:
                    sents.append(cur)
                cur = []
            else:
                cur.append(cols[-1])
        return sents + ([cur] if cur else [])

    raw1 = raw_tags(data("conll2003", "test.txt"))
    raw2 = raw_tags(data("conll2003_iob2", "test.txt"))
    assert raw1 != raw2  # the files really differ (IOB1 vs IOB2)
    assert read_conll(data("conll2003", "test.txt")).tags == raw2  # the loader converts once
    # a model's output in IOB1, scored against the IOB1 file, and the same output converted to
    # IOB2, scored against the IOB2 file: every entity-level number is identical
    pred1 = perturb(raw1)
    pred2 = [iob1_to_iob2(s) for s in pred1]
    a = by_name(ner_metrics(raw1, pred1, bootstrap=100, seed=3))
    b = by_name(ner_metrics(raw2, pred2, bootstrap=100, seed=3))
    assert 0.2 < a["entity_f1"].value < 0.95
    assert a["gold_entities"].value == b["gold_entities"].value == 5648
    entity_level = [n for n in a if n.startswith("entity_") and n != "entity_f1_strict"]
    assert len(entity_level) == 3 + 3 * 4
    for name in entity_level:
        assert a[name].value == b[name].value, name
    assert (a["entity_f1"].ci_low, a["entity_f1"].ci_high) == (b["entity_f1"].ci_low, b["entity_f1"].ci_high)


HAND_MADE = """\
-DOCSTART- -X- O O

Alex B-PER B-PER
Smith I-PER I-PER
visited O O
New B-LOC B-LOC
York I-LOC O
. O O

The O O
United B-ORG I-ORG
Nations I-ORG I-ORG
met O O
in O O
Paris B-LOC B-PER
with O B-MISC
EU B-ORG B-ORG
envoys O O
"""
# gold: PER(Alex Smith) LOC(New York) ORG(United Nations) LOC(Paris) ORG(EU)    -> 5
# pred: PER(Alex Smith) LOC(New) ORG(United Nations: I- after O starts a chunk,
#       conlleval) PER(Paris) MISC(with) ORG(EU)                              -> 6
# correct: Alex Smith, United Nations, EU -> 3.  P = 3/6, R = 3/5, F1 = 2PR/(P+R) = 6/11
# strict IOB2: "I-ORG" cannot start an entity, so United Nations is not predicted: P = 2/5,
# R = 2/5, F1 = 0.4. Per type (default): PER P=1/2 R=1/1 F1=2/3; LOC P=0/1 R=0/2 F1=0;
# ORG P=2/2 R=2/2 F1=1; MISC P=0/1 R=0 (no gold) F1=0.
# token accuracy: 15 words, wrong: York, United (I-ORG vs B-ORG), Paris, with -> 11/15.


def test_hand_made_prediction_file_scores_to_hand_computed_values(tmp_path):
    from harness_plugins.tasks.ner import ner_metrics

    rows = [ln.split() for ln in HAND_MADE.splitlines()]
    # gold through the project's reader (token + gold columns); predictions taken raw
    g_file = tmp_path / "gold.txt"
    g_file.write_text("\n".join(" ".join(r[:2]) for r in rows) + "\n")
    gold = read_conll(g_file).tags
    preds = [r[2] for r in rows if r and r[0] != "-DOCSTART-"]
    raw_pred, k = [], 0
    for sent in gold:
        raw_pred.append(preds[k : k + len(sent)])
        k += len(sent)
    assert k == len(preds) == 15
    m = by_name(ner_metrics(gold, raw_pred, bootstrap=200, seed=1))
    assert m["gold_entities"].value == 5
    assert m["entity_precision"].value == pytest.approx(3 / 6)
    assert m["entity_recall"].value == pytest.approx(3 / 5)
    assert m["entity_f1"].value == pytest.approx(6 / 11)
    assert m["entity_f1_strict"].value == pytest.approx(0.4)
    assert m["token_accuracy"].value == pytest.approx(11 / 15)
    assert m["entity_f1.PER"].value == pytest.approx(2 / 3)
    assert m["entity_precision.PER"].value == pytest.approx(1 / 2)
    assert m["entity_f1.LOC"].value == 0.0
    assert m["entity_f1.ORG"].value == pytest.approx(1.0)
    assert m["entity_f1.MISC"].value == 0.0
    lo, hi = m["entity_f1"].ci_low, m["entity_f1"].ci_high
    assert 0.0 <= lo <= hi <= 1.0


def test_sentence_counts_decompose_seqeval_micro_scores():
    gold = read_conll(data("conll2003", "validation.txt")).tags[:400]
    pred = perturb(gold)
    res = seqeval_metric().compute(predictions=pred, references=gold)
    counts = sentence_entity_counts(gold, pred)
    assert micro_f1_from_counts(counts) == pytest.approx(res["overall_f1"], abs=1e-12)
    assert counts[:, 2].sum() == res["overall_number"]
    # per type and micro, default and strict: exactly seqeval's own classification report
    from seqeval.metrics import classification_report
    from seqeval.scheme import IOB2

    strict = seqeval_metric().compute(predictions=pred, references=gold, mode="strict")
    for result, kw in ((res, {}), (strict, {"mode": "strict", "scheme": IOB2})):
        report = classification_report(gold, pred, output_dict=True, zero_division=0, **kw)
        types = sorted(k for k in report if not k.endswith(" avg"))
        assert types == sorted(k for k, v in result.items() if isinstance(v, dict)) and len(types) == 4
        for t in types:
            assert result[t]["f1"] == pytest.approx(report[t]["f1-score"], abs=1e-12)
            assert result[t]["precision"] == pytest.approx(report[t]["precision"], abs=1e-12)
            assert result[t]["number"] == report[t]["support"]
        assert result["overall_f1"] == pytest.approx(report["micro avg"]["f1-score"], abs=1e-12)
    assert strict["overall_f1"] != res["overall_f1"]  # the modes differ on perturbed tags
    # ner_metrics counts entities once per sentence (default and strict chunks from the same
    # get_entities pass): seqeval's own micro scores, default and strict, to the last digits
    from seqeval.metrics import f1_score, precision_score, recall_score

    from harness_plugins._lib.metrics import ner_metrics

    reported = {m.metric: m.value for m in ner_metrics(gold, pred, bootstrap=0)}
    assert reported["entity_f1_strict"] == pytest.approx(
        f1_score(gold, pred, mode="strict", scheme=IOB2), abs=1e-12)
    assert reported["entity_f1_strict"] == pytest.approx(strict["overall_f1"], abs=1e-12)
    assert reported["entity_f1"] == pytest.approx(f1_score(gold, pred), abs=1e-12)
    assert reported["entity_precision"] == pytest.approx(precision_score(gold, pred), abs=1e-12)
    assert reported["entity_recall"] == pytest.approx(recall_score(gold, pred), abs=1e-12)


def test_strict_counts_equal_seqeval_strict_mode_on_random_tag_soup():
    """Any IOB tag sequence (I- after O, I-X after B-Y, B-X B-X...): the strict counts give
    seqeval's strict-mode (IOB2) precision, recall and F1, and the default counts its default."""
    import random

    from seqeval.metrics import f1_score, precision_score, recall_score
    from seqeval.scheme import IOB2

    rng = random.Random(5)
    tags = ["O", "O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    gold = [[rng.choice(tags) for _ in range(rng.randint(1, 12))] for _ in range(600)]
    pred = [[t if rng.random() < 0.7 else rng.choice(tags) for t in sent] for sent in gold]
    strict: list = []
    default = sentence_entity_counts(gold, pred, None, strict)
    s_tp, s_pred, s_gold = np.asarray(strict).sum(axis=0)
    kw = {"mode": "strict", "scheme": IOB2}
    assert s_tp / s_pred == pytest.approx(precision_score(gold, pred, **kw), abs=1e-12)
    assert s_tp / s_gold == pytest.approx(recall_score(gold, pred, **kw), abs=1e-12)
    assert micro_f1_from_counts(np.asarray(strict)) == pytest.approx(f1_score(gold, pred, **kw), abs=1e-12)
    assert micro_f1_from_counts(default) == pytest.approx(f1_score(gold, pred), abs=1e-12)
    assert s_gold < default[:, 2].sum()  # the soup has I- starts: the modes really differ


def test_vectorised_bootstrap_equals_the_resample_loop():
    gold = read_conll(data("conll2003", "validation.txt")).tags[:300]
    counts = sentence_entity_counts(gold, perturb(gold))

    def looped(c):  # the same statistic, not marked vectorized: one resample at a time
        return micro_f1_from_counts(c)

    fast = bootstrap_ci(counts, micro_f1_from_counts, n_resamples=250, seed=3)
    slow = bootstrap_ci(counts, looped, n_resamples=250, seed=3)
    assert fast == pytest.approx(slow, abs=1e-12) and fast[0] < micro_f1_from_counts(counts) < fast[1]
    # row sums from draw counts (what micro F1 is marked for): the very same resample values
    from harness.stats import bootstrap

    gathered = bootstrap(counts, micro_f1_from_counts, 700, 3, vectorized=True)
    summed = bootstrap(counts, micro_f1_from_counts, 700, 3, row_sums=True)
    assert np.array_equal(gathered, summed) and len(np.unique(summed)) > 100


def test_bootstrap_is_seeded_and_brackets_the_estimate():
    rng = np.random.default_rng(0)
    x = (rng.random(500) < 0.8).astype(float)
    a = bootstrap_ci(x, np.mean, n_resamples=300, seed=7)
    b = bootstrap_ci(x, np.mean, n_resamples=300, seed=7)
    c = bootstrap_ci(x, np.mean, n_resamples=300, seed=8)
    assert a == b and a != c
    assert a[0] < x.mean() < a[1]
    assert a[1] - a[0] == pytest.approx(2 * 1.96 * np.sqrt(0.8 * 0.2 / 500), rel=0.25)
    assert bootstrap_ci(x, np.mean, n_resamples=0) == (None, None)


# -- classification ----------------------------------------------------------------------------
def test_classification_metric_hand_computed():
    refs = [0, 0, 1, 1, 2]
    preds = [0, 1, 1, 1, 0]
    res = classification_metric().compute(predictions=preds, references=refs, num_labels=3)
    assert res["accuracy"] == pytest.approx(3 / 5)
    assert res["precision"] == pytest.approx([1 / 2, 2 / 3, 0.0])
    assert res["recall"] == pytest.approx([1 / 2, 1.0, 0.0])
    assert res["f1"] == pytest.approx([0.5, 0.8, 0.0])
    assert res["macro_f1"] == pytest.approx((0.5 + 0.8) / 3)
    assert macro_f1_from_pairs(np.array([refs, preds]).T, 3) == pytest.approx(res["macro_f1"])
    assert res["support"] == [2, 2, 1]


def test_classification_metrics_rows():
    from harness_plugins.tasks.classification import classification_metrics

    m = by_name(classification_metrics([0, 0, 1, 1, 2], [0, 1, 1, 1, 0], ["a", "b", "c"],
                                       bootstrap=100, seed=0))
    assert [x.metric for x in m.values() if x.main_metric] == ["accuracy"]
    assert m["accuracy"].value == pytest.approx(0.6)
    assert m["accuracy"].ci_low <= 0.6 <= m["accuracy"].ci_high
    assert m["macro_f1"].ci_low is not None
    assert m["f1.b"].value == pytest.approx(0.8) and m["recall.a"].value == pytest.approx(0.5)
    assert all(x.metric_description for x in m.values())


def test_metric_modules_are_local_evaluate_metrics(monkeypatch):
    import evaluate

    def no_hub(*a, **k):  # pragma: no cover - must not be called
        raise AssertionError("evaluate.load must never be used")

    monkeypatch.setattr(evaluate, "load", no_hub)
    s, c = seqeval_metric(), classification_metric()
    assert isinstance(s, evaluate.Metric) and isinstance(c, evaluate.Metric)
    assert set(s.features) == {"predictions", "references"}
    s.add_batch(predictions=[["B-PER", "I-PER"]], references=[["B-PER", "I-PER"]])
    assert s.compute()["overall_f1"] == 1.0
    with pytest.raises(ValueError, match="mode"):
        s.compute(predictions=[["O"]], references=[["O"]], mode="lenient")


def test_classification_cis_from_row_sums_are_the_per_resample_bootstrap():
    """Accuracy and macro-F1 CIs come from resampled row sums (one matrix product per block):
    with an even number of examples (the same draws) they equal the per-resample loop of
    ``np.mean`` / ``macro_f1_from_pairs`` exactly; with an odd number the draws are blocked
    differently, so only close."""
    from harness.stats import bootstrap, percentile_interval
    from harness_plugins.tasks.classification import classification_metrics

    rng = np.random.default_rng(3)
    for n in (872, 301):
        refs = rng.integers(0, 3, n).tolist()
        preds = [r if rng.random() < 0.7 else int(rng.integers(0, 3)) for r in refs]
        got = {m.metric: m for m in classification_metrics(refs, preds, ["a", "b", "c"], seed=5)}
        pairs = np.array([refs, preds]).T
        acc = percentile_interval(bootstrap((pairs[:, 0] == pairs[:, 1]).astype(float), np.mean, 1000, 5))
        f1 = percentile_interval(bootstrap(pairs, lambda s: macro_f1_from_pairs(s, 3), 1000, 5))
        new = (got["accuracy"].ci_low, got["accuracy"].ci_high, got["macro_f1"].ci_low, got["macro_f1"].ci_high)
        if n % 2 == 0:
            assert new == pytest.approx((*acc, *f1), abs=1e-12)
        else:
            assert new == pytest.approx((*acc, *f1), abs=0.03)
        assert got["macro_f1"].value == pytest.approx(macro_f1_from_pairs(pairs, 3))
