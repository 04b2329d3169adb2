"""The per-model summary at the top of a task's section: for each model, its best variant within
an accuracy bound, as chosen by :func:`harness.analysis.select.select`, the function behind
``harness select``. The report does not repeat select's rules (the baseline variant ``none``, the
absolute drop of the main metric, the measurement optimised, the ties); it shows its outcome.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..analysis.select import BASELINE, Selection, select
from ..errors import DataError
from .format import num

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["MAX_DROP", "selections", "summary"]

MAX_DROP = 0.01  #: the report's default bound (``harness report --max-drop``)


def selections(results: pd.DataFrame, max_drop: float) -> dict[str, list[Selection]]:
    """``select(results, max_drop)`` (its default measurement and baseline variant) by task.
    Empty when no row records the measurement select optimises (then there is no summary);
    a negative ``max_drop`` is select's :class:`~harness.errors.DataError`."""
    try:
        sels = select(results, max_drop)
    except DataError:
        if max_drop < 0:
            raise
        return {}
    out: dict[str, list[Selection]] = {}
    for s in sels:
        out.setdefault(s.task, []).append(s)
    return out


def _row(s: Selection, row_ids: dict[tuple[str, str], str]) -> dict[str, Any]:
    c = s.chosen
    if c is None:
        return {"model": s.model, "chosen": "", "href": "", "value": "–", "delta": "",
                "by": "–", "baseline": num(s.baseline), "note": s.note, "test": "–"}
    test = num(c.test_value) + (f" ({c.test_delta:+.4f})" if c.test_delta is not None else "")
    return {"model": s.model, "chosen": c.compression,
            "href": row_ids.get((s.model, c.compression), ""), "value": num(c.value),
            "delta": f"{c.delta:+.4f}" if c.delta is not None else "", "by": num(c.by_value, 2),
            "baseline": num(s.baseline), "note": "", "test": test}


def summary(sels: list[Selection], max_drop: float,
            row_ids: dict[tuple[str, str], str]) -> dict[str, Any] | None:
    """The summary table of one task (``row_ids``: (model, compression) -> leaderboard row id,
    to link the chosen variant); None when select gave nothing for the task."""
    if not sels:
        return None
    on_validation = any(s.chosen_on != s.metric for s in sels)
    return {"max_drop": f"{max_drop:g}", "by": " / ".join(dict.fromkeys(s.by for s in sels)),
            "metric": sels[0].chosen_on or sels[0].metric or "main metric",
            "test_metric": sels[0].metric if on_validation else None,
            "baseline": BASELINE,
            "rows": [_row(s, row_ids) for s in sels]}
