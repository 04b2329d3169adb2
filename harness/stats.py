"""Statistics shared by the core and the plugins, on numpy: percentiles of samples and the
seeded percentile bootstrap.

* :func:`percentiles` - numpy's ``method="linear"`` (its default; Hyndman & Fan type 7), what
  the latency figures report;
* :func:`bootstrap` - a statistic on resamples of the rows of an array (rows drawn with
  replacement by ``numpy.random.default_rng(seed).integers``), and :func:`percentile_interval`
  of its values: the accuracy metrics' confidence intervals (``plugins/_lib/metrics.py``) and the
  gate's paired bootstrap (:mod:`harness.gate.paired`).

numpy is imported on first use, so importing this module costs nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import ArrayLike

__all__ = ["BLOCK_ELEMENTS", "bootstrap", "percentile_interval", "percentiles"]

#: elements of one block of stacked resamples (a vectorised statistic gets them a block at a time)
BLOCK_ELEMENTS = 2_000_000


def percentiles(samples: ArrayLike, qs: Sequence[float], *,
                axis: int | None = None) -> Any:
    """The ``qs`` percentiles (0-100) of ``samples``, linearly interpolated between the order
    statistics (numpy's ``method="linear"``): a list of floats, or with ``axis`` numpy's array
    (``qs`` first, then the other axes)."""
    import numpy as np

    out = np.percentile(np.asarray(samples, dtype=float), qs, axis=axis, method="linear")
    return out if axis is not None else [float(v) for v in out]


def bootstrap(data: ArrayLike, statistic: Callable[[Any], Any], n_resamples: int, seed: int, *,
              vectorized: bool = False, row_sums: bool = False) -> np.ndarray:
    """``statistic`` on ``n_resamples`` resamples of the rows of ``data`` (each resample: as many
    rows as ``data``, drawn with replacement), as a float array.

    The draws are ``numpy.random.default_rng(seed).integers(0, n, ...)``: with ``vectorized``
    the statistic takes a ``(B, n, ...)`` stack of resamples and returns their ``B`` values, and
    the indices are drawn a block of ``B`` resamples at a time (at most
    :data:`BLOCK_ELEMENTS` elements held at once); otherwise one resample at a time.
    ``row_sums`` (a vectorised statistic that reads a resample only through the sum of its rows,
    such as entity counts): the same draws, but each resample's row sum is computed from how
    often each row was drawn (one matrix product) and the statistic gets a ``(B, 1, ...)`` stack
    of those sums: the same values, without gathering the resampled rows."""
    import numpy as np

    data = np.asarray(data)
    n = len(data)
    rng = np.random.default_rng(seed)
    values = np.empty(n_resamples, dtype=float)
    if vectorized or row_sums:
        block = max(1, min(n_resamples, BLOCK_ELEMENTS // max(1, data[:1].size * n)))
        for lo in range(0, n_resamples, block):
            hi = min(n_resamples, lo + block)
            idx = rng.integers(0, n, size=(hi - lo, n))
            values[lo:hi] = statistic(_resampled_sums(data, idx) if row_sums else data[idx])
    else:
        for b in range(n_resamples):
            values[b] = statistic(data[rng.integers(0, n, size=n)])
    return values


def _resampled_sums(data: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``data[idx].sum(axis=1, keepdims=True)`` for a ``(B, n)`` index block, from the draw counts
    of each row (exact for integer data below 2**53)."""
    import numpy as np

    b, n = idx.shape
    counts = np.bincount((idx + (np.arange(b) * n)[:, None]).ravel(), minlength=b * n)
    sums = counts.reshape(b, n).astype(float) @ data.reshape(n, -1).astype(float)
    if np.issubdtype(data.dtype, np.integer):
        sums = np.rint(sums).astype(data.dtype)
    return sums.reshape(b, 1, *data.shape[1:])


def percentile_interval(values: ArrayLike, confidence: float = 0.95) -> tuple[float, float]:
    """The central ``confidence`` interval of bootstrap ``values`` (their ``(1 - confidence) / 2``
    and ``(1 + confidence) / 2`` quantiles, numpy's linear method): a percentile bootstrap CI."""
    import numpy as np

    alpha = (1.0 - confidence) / 2
    low, high = np.quantile(np.asarray(values, dtype=float), [alpha, 1.0 - alpha])
    return float(low), float(high)
