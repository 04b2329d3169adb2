"""Writing the report: the page from the jinja2 templates in ``harness/templates`` and the data
files beside it. Every file is replaced atomically (:mod:`harness.fsutil`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import DataError
from ..fsutil import atomic_write_text
from ..rows import as_json
from .format import json_for_script
from .summary import MAX_DROP
from .view import build_view

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["render_report"]


def _env() -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("harness", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["script_json"] = lambda data: jinja2.utils.markupsafe.Markup(json_for_script(data))
    return env


def render_report(results: pd.DataFrame, out_dir: Path, *, baseline: pd.DataFrame | None = None,
                  title: str | None = None, write_rows: bool = True,
                  max_drop: float = MAX_DROP) -> Path:
    """Write ``index.html`` (self-contained leaderboard), ``results.csv``/``results.json`` (the
    rows given, through :func:`harness.results.export`; ``write_rows=False`` when they are
    already there) and ``leaderboard.csv``/``leaderboard.json`` (one row per cell) into
    ``out_dir``; return the path of ``index.html``. Each task opens with the per-model summary
    of ``harness select --max-drop max_drop`` (:mod:`.summary`). Raises
    :class:`~harness.errors.DataError` on bad input."""
    import pandas as pd

    from ..results import export

    view = build_view(results, baseline, title, max_drop)
    html = _env().get_template("report.html.j2").render(**view)
    out_dir = Path(out_dir)
    board = pd.DataFrame([r for t in view["tasks"] for r in t["records"]])
    try:
        page = atomic_write_text(out_dir / "index.html", html)
        if write_rows:
            export(results, out_dir, ("csv", "json"))
        atomic_write_text(out_dir / "leaderboard.csv", board.to_csv(index=False))
        atomic_write_text(out_dir / "leaderboard.json", json.dumps(
            as_json(board.to_dict(orient="records")), indent=1, ensure_ascii=False) + "\n")
    except OSError as e:
        raise DataError(f"report folder {out_dir}: cannot write: {e.strerror or e}") from e
    return page
