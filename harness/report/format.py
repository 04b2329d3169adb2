"""Formatting for the report: numbers (:func:`harness.textfmt.num`), counts, labels, and JSON
safe inside the page."""

from __future__ import annotations

import json
from typing import Any

from ..rows import as_json, moved_names
from ..textfmt import num  # the one number formatter (the gate's too)

__all__ = ["count", "count_unit", "json_for_script", "num", "short_label"]

#: Units that measure rather than count: a whole value in one of them keeps its decimals.
_MEASURES = {"fraction", "ratio", "percent", "%", "x", "bits", "ns", "us", "µs", "ms", "s", "min",
             "h", "kb", "kib", "mb", "mib", "gb", "gib"}


def count_unit(unit: str | None) -> bool:
    """Whether ``unit`` (a row's ``unit``) counts things (``entities``, ``sentences``,
    ``bytes``, ``count``, ...): named, not a rate (no ``/``) and not a measure such as ``ms``,
    ``MiB``, ``fraction`` or ``bits``. A whole value of a count unit is shown as an integer."""
    u = (unit or "").strip().lower()
    return bool(u) and "/" not in u and u not in _MEASURES


def count(v: float | None) -> str:
    if v is None:
        return "–"
    for div, suf in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.1f} {suf}"
    return f"{v:.0f}"


def json_for_script(data: Any) -> str:
    """JSON safe inside ``<script type="application/json">`` (no ``</script>``, no ``<!--``)."""
    text = json.dumps(data, ensure_ascii=False, allow_nan=False, sort_keys=True)
    for a, b in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e"),
                 ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(a, b)
    return text


__getattr__ = moved_names(__name__, {"clean_json": ("harness.rows.as_json", lambda: as_json)})


def short_label(model: str, compression: str, limit: int = 36) -> str:
    """``model / compression`` in at most ``limit`` characters, shortening the model first."""
    full = f"{model} / {compression}"
    if len(full) <= limit:
        return full
    comp = compression if len(compression) <= limit // 2 else compression[: limit // 2 - 1] + "…"
    room = max(6, limit - len(comp) - 4)
    return f"{model[:room]}… / {comp}"
