"""The latency noise band derived from the runs themselves (``noise_band: auto``).

The fixed band (``latency_noise``, 5%) is a guess about how much a latency statistic moves
between two runs of an unchanged model. With ``noise_band: auto`` the gate estimates it per
cell from the per-iteration samples each run recorded:

* when the samples are several whole timing passes over the same inputs (the rows'
  ``latency_inputs`` and ``latency_passes``), the statistic (p50, p90, mean, ... from the
  metric's name) of each pass: ``s`` is their relative standard deviation, i.e. how much the
  statistic moves between repetitions inside one run;
* otherwise (one pass, or no pass information), ``s`` is the relative standard deviation of the
  statistic over bootstrap resamples of the samples (seeded: the same rows give the same band).

The band for a cell is ``z * sqrt(s_baseline**2 + s_current**2)`` (``z = 2``: about 95% of
the differences of two such statistics fall inside it). Without samples on either side the
fixed ``latency_noise`` applies, and the finding says so.

Both estimate how much the statistic moves *inside* one run. Between two runs it moves more on
a shared machine (frequency, neighbours, cache state: measured in docs/regression-gate.md), so
``noise_band: runs`` takes the band from repeated runs of the baseline instead
(``harness compare --noise-runs DIR ...``): ``s`` is the relative standard deviation of the
metric's value over those runs (at least :data:`MIN_RUNS`), and the band for one run against
another is ``z * sqrt(2) * s``.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..rows import as_float

__all__ = ["MIN_RUNS", "Z", "between_runs", "derived_band", "runs_band", "spread"]

Z = 2.0
_BOOTSTRAP = 200
_MIN_SAMPLES = 5
MIN_RUNS = 3  #: repeated runs needed for ``noise_band: runs``


def _statistic(metric: str) -> Callable[[list[Sequence[float]]], list[float]]:
    """The function of the samples that ``metric`` reports (a percentile, numpy's linear
    method, or the mean), applied to each of equally long rows of samples."""
    m = re.search(r"_p(\d{1,2})(?:_|$)", metric)
    if m:
        q = int(m.group(1))

        def pct(rows: list[Sequence[float]]) -> list[float]:
            from ..stats import percentiles

            return [float(v) for v in percentiles(rows, [q], axis=-1)[0]]

        return pct
    return lambda rows: [statistics.fmean(r) for r in rows]


def _rel_std(values: Sequence[float]) -> float | None:
    if len(values) < 2:
        return None
    mean = statistics.fmean(values)
    return statistics.stdev(values) / abs(mean) if mean else None


def spread(metric: str, samples: Sequence[float] | None,
           row: Mapping[str, Any]) -> tuple[float | None, str]:
    """(relative spread ``s`` of the metric's statistic in one run, how it was found); ``s`` is
    None when the samples are too few."""
    if not samples or len(samples) < _MIN_SAMPLES:
        return None, "no samples"
    stat = _statistic(metric)
    inputs = as_float(row.get("latency_inputs"))
    n = int(inputs) if inputs else 0
    passes = len(samples) // n if n else 0
    if passes >= 2:
        per_pass = stat([samples[i * n:(i + 1) * n] for i in range(passes)])
        return _rel_std(per_pass), f"{passes} passes"
    import random

    rng = random.Random(len(samples))  # seeded: the same samples give the same band
    k = len(samples)
    boot = stat([[samples[rng.randrange(k)] for _ in range(k)] for _ in range(_BOOTSTRAP)])
    return _rel_std(boot), f"bootstrap of {k} iterations"


def derived_band(metric: str, bs: Sequence[float] | None, cs: Sequence[float] | None,
                 brow: Mapping[str, Any], crow: Mapping[str, Any]) -> tuple[float | None, str]:
    """(the cell's relative noise band, a short description), or (None, why) when either run
    lacks the samples to derive it."""
    sb, how_b = spread(metric, bs, brow)
    sc, how_c = spread(metric, cs, crow)
    if sb is None or sc is None:
        return None, f"{how_b if sb is None else how_c}: fixed noise band"
    band = Z * math.hypot(sb, sc)
    how = how_b if how_b == how_c else f"{how_b} / {how_c}"
    return band, f"noise band {band:.1%} derived from {how}"


def between_runs(tables: Sequence[Any]) -> dict[tuple[Any, str], tuple[float, float, int]]:
    """``{(cell key, metric): (standard deviation, mean, runs)}`` of the value of every metric
    of every ok cell found in at least :data:`MIN_RUNS` of ``tables`` (result tables of
    repeated runs of one suite: other seeds of the same code, on the same machine)."""
    from ..analysis.cells import cells_of

    values: dict[tuple[Any, str], list[float]] = {}
    for i, table in enumerate(tables):
        for key, cell in cells_of(table, f"noise run {i + 1}").items():
            if cell.status != "ok":
                continue
            for metric in cell.metrics:
                v = cell.value(metric)
                if v is not None and math.isfinite(v):
                    values.setdefault((key, metric), []).append(v)
    return {k: (statistics.stdev(vs), statistics.fmean(vs), len(vs))
            for k, vs in values.items() if len(vs) >= MIN_RUNS}


def runs_band(found: tuple[float, float, int] | None, *,
              relative: bool = True) -> tuple[float | None, str]:
    """(band, description) for one metric from its :func:`between_runs` entry, or (None, why):
    ``z * sqrt(2) * s`` with ``s`` the standard deviation over the runs, relative to their mean
    (latency) or absolute (accuracy)."""
    if found is None:
        return None, f"fewer than {MIN_RUNS} repeated runs of this cell: no noise band from runs"
    sd, mean, n = found
    if relative:
        s = sd / abs(mean) if mean else 0.0
        band = Z * math.sqrt(2) * s
        return band, f"noise band {band:.1%} from {n} repeated runs (between-run CV {s:.1%})"
    band = Z * math.sqrt(2) * sd
    return band, f"noise band {band:.4f} from {n} repeated runs (between-run sd {sd:.4f})"
