"""Plain-text output shared by the command line, the gate and the report: aligned tables and
numbers in a few significant digits."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

__all__ = ["num", "one_line", "table"]

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def one_line(s: str) -> str:
    """``s`` with every control character (newline, tab, escape, ...) replaced by a space, so
    a name from a results file or a plugin keeps a table's row on one line."""
    return _CONTROL.sub(" ", s)


def table(head: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """``head`` and ``rows`` as left-aligned columns two spaces apart, one line each (control
    characters replaced by spaces, trailing spaces cut), ending with a newline."""
    lines = [[one_line(str(c)) for c in r] for r in [head, *rows]]
    widths = [max(len(r[i]) for r in lines) for i in range(len(head))]
    return "".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() + "\n"
                   for r in lines)


def num(v: float | None, digits: int = 4, none: str = "–") -> str:
    """A number for people: ``digits`` decimals below 1 (one fewer, at least 2, up to 10), 2 up
    to 100, 1 up to 100,000, then whole with thousands separators; ``none`` for None."""
    if v is None:
        return none
    a = abs(v)
    if a >= 1e5:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.1f}"
    if a >= 10:
        return f"{v:.2f}"
    return f"{v:.{digits}f}" if a < 1 else f"{v:.{max(2, digits - 1)}f}"


def skipped_lines(skipped: Sequence[tuple[str, str]], names: int = 6) -> list[str]:
    """Console lines for skipped cells (``(label "model/task/compression", reason)``), one per
    (model, task): a suite with a classic baseline skips 24 compressions of it, which as one line
    each would bury the run's output. A group's reason is shown once when all agree, else the
    first one as an example (each cell's reason is in the results' ``error`` column)."""
    groups: dict[str, list[tuple[str, str]]] = {}
    for label, reason in skipped:
        group, _, comp = label.rpartition("/")
        groups.setdefault(group, []).append((comp, reason))
    out = []
    for group, items in groups.items():
        if len(items) == 1:
            out.append(f"SKIPPED: {group}/{items[0][0]}: {items[0][1]}")
            continue
        comps = [c for c, _ in items]
        shown = ", ".join(comps[:names]) + (f" and {len(comps) - names} more" if len(comps) > names else "")
        reasons = {r for _, r in items}
        why = (items[0][1] if len(reasons) == 1 else
               f"{len(reasons)} reasons, e.g. {items[0][0]}: {items[0][1]} (each in the results' error column)")
        out.append(f"SKIPPED: {len(items)} cells of {group} ({shown}): {why}")
    return out
