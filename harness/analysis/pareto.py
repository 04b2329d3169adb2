"""Pareto fronts of (x, accuracy) points: the non-dominated points (x minimised: size,
latency), and the points tied with the front within their confidence intervals."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["pareto_front", "tied_with_front"]


def pareto_front(points: Sequence[tuple[float, float]], *, maximize_y: bool = True) -> list[int]:
    """Indices of the non-dominated points: no other point has x <= and y >= (or <= when
    ``maximize_y`` is False) with at least one strict. x is always minimised (size, latency)."""
    sign = 1.0 if maximize_y else -1.0
    front = []
    for i, (xi, yi) in enumerate(points):
        dominated = False
        for j, (xj, yj) in enumerate(points):
            if j == i:
                continue
            if xj <= xi and sign * yj >= sign * yi and (xj < xi or sign * yj > sign * yi):
                dominated = True
                break
        if not dominated:
            front.append(i)
    return front

def tied_with_front(points: Sequence[tuple[float, float | None, float | None]],
                    front: Sequence[int]) -> list[int]:
    """Indices of the points off the front that are *tied with the front*: their accuracy CI
    ``(x, ci_low, ci_high)`` overlaps the CI of a front point at least as good in x (x <=, as
    small/fast or better). Points without a CI are never tied, nor are front points."""
    on = set(front)
    tied = []
    for i, (xi, lo, hi) in enumerate(points):
        if i in on or lo is None or hi is None:
            continue
        for j in front:
            xj, lj, hj = points[j]
            if lj is not None and hj is not None and xj <= xi and lo <= hj and lj <= hi:
                tied.append(i)
                break
    return tied
