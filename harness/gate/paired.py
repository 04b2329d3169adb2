"""Paired accuracy tests on per-example outputs (``<run>/predictions/``, see
:mod:`harness.predictions`): when both runs saved the predictions of a cell on the same data,
the gate tests the change of the metric the predictions score on the same examples:

* ``per-example-label``: exact McNemar test on the discordant pairs (examples right in one run
  only); the delta is the change of accuracy;
* ``sequence-labels``: paired bootstrap over examples with the task's scorer (named in the file,
  returning per-example additive statistics and the metric of their sums). Only a scorer an
  installed plugin declares (``@harness.api.scorer``) is called: the name in the file is looked
  up in that registry, never imported (:mod:`harness.scorers`).

Both give the delta, a 95% percentile-bootstrap CI of the delta (:func:`harness.stats.bootstrap`,
the resampling of the metrics' CIs: examples drawn with replacement, ``RESAMPLES`` times, seed
``SEED``) and a two-sided p-value.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..predictions import find, read_predictions
from ..scorers import get_scorer
from ..stats import bootstrap, percentile_interval

__all__ = ["PairedTest", "RESAMPLES", "mcnemar_p", "paired_tables", "paired_test"]

RESAMPLES = 2000
SEED = 0


@dataclass
class PairedTest:
    test: str  #: "McNemar" or "paired bootstrap"
    delta: float  #: current - baseline, from the per-example outputs
    ci_low: float
    ci_high: float
    p_value: float
    examples: int

    def describe(self) -> str:
        return (f"{self.test} over {self.examples} examples: delta {self.delta:+.4f} "
                f"[95% CI {self.ci_low:+.4f}, {self.ci_high:+.4f}], p={self.p_value:.2g}")


def mcnemar_p(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value: ``b`` and ``c`` are the discordant pair counts."""
    from scipy.stats import binomtest

    return 1.0 if b + c == 0 else float(binomtest(c, b + c, 0.5).pvalue)


def _labels(base: Any, cur: Any) -> PairedTest:
    import numpy as np

    bc = (base["gold"].to_numpy() == base["pred"].to_numpy()).astype(np.int64)
    cc = (cur["gold"].to_numpy() == cur["pred"].to_numpy()).astype(np.int64)
    n = len(bc)
    d = (cc - bc).astype(float)
    lo, hi = percentile_interval(bootstrap(d, lambda s: s.mean(axis=1), RESAMPLES, SEED,
                                           vectorized=True))
    b, c = int(((bc == 1) & (cc == 0)).sum()), int(((bc == 0) & (cc == 1)).sum())
    return PairedTest("McNemar", float(d.mean()), lo, hi, mcnemar_p(b, c), n)


def _scorer(name: str, source: object) -> Any:
    """The declared scorer ``name`` (a ``DataError`` naming ``source``, the file, otherwise)."""
    return get_scorer(name, source)


def _bootstrap(base: Any, cur: Any, scorer: str, source: object) -> PairedTest:
    import numpy as np

    score = _scorer(scorer, source)
    gold = list(base["gold"])
    bs, reduce = score(gold, list(base["pred"]))
    cs, _ = score(gold, list(cur["pred"]))
    bs, cs = np.asarray(bs, dtype=float), np.asarray(cs, dtype=float)
    delta = float(reduce(cs) - reduce(bs))

    def change(s: Any) -> Any:  # (B, n, 2, m) resamples -> B deltas of the metric
        return np.asarray(reduce(s[:, :, 1])) - np.asarray(reduce(s[:, :, 0]))

    deltas = bootstrap(np.stack([bs, cs], axis=1), change, RESAMPLES, SEED, vectorized=True)
    lo, hi = percentile_interval(deltas)
    # two-sided bootstrap p: how often a resample's delta falls on the other side of zero
    p = 2 * min(float((deltas <= 0).mean()), float((deltas >= 0).mean()))
    p = min(1.0, max(p, 1.0 / RESAMPLES)) if np.any(deltas != 0) else 1.0
    return PairedTest("paired bootstrap", delta, lo, hi, p, len(gold))


def paired_test(base_run: Path | None, cur_run: Path | None, cell: tuple[str, str, str],
                metric: str) -> PairedTest | str:
    """The paired test of ``metric`` in ``cell`` (model, task, compression) between two run
    folders, or the reason there is none (a sentence for the report)."""
    if base_run is None or cur_run is None:
        return "results given as a table, not a run folder: no per-example outputs"
    bf, cf = find(base_run, *cell), find(cur_run, *cell)
    if bf is None or cf is None:
        which = " and ".join(n for n, f in (("baseline", bf), ("current", cf)) if f is None)
        return f"no per-example outputs in {which}"
    base, cur = read_predictions(bf), read_predictions(cf)
    if base.attrs.get("metric") != metric:
        return ""  # the predictions score another metric of the task: nothing to say
    return paired_tables(base, cur, source=bf)


def paired_tables(base: Any, cur: Any, source: object = "baseline predictions") -> PairedTest | str:
    """The paired test between two per-example tables (:func:`harness.predictions.read_predictions`),
    e.g. two cells of one run, or the reason there is none. ``source`` names ``base``'s file in
    errors (its scorer is the one used)."""
    if (base.attrs.get("data_hash"), base.attrs.get("split"), len(base)) != \
            (cur.attrs.get("data_hash"), cur.attrs.get("split"), len(cur)):
        return "per-example outputs on different data (data hash, split or size differ)"
    if base.attrs.get("kind") != cur.attrs.get("kind"):
        return "per-example outputs of different kinds"
    if list(base["example"]) != list(cur["example"]):
        return "per-example outputs cover different examples"
    if base.attrs.get("kind") == "per-example-label":
        return _labels(base, cur)
    return _bootstrap(base, cur, str(base.attrs.get("scorer")), source)
