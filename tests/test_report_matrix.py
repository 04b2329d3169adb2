"""The report's models x compressions view (issue 30, part 1).

Every model a row, every compression a column; each cell's change and ratios are against the
same model's own uncompressed variant (``none``); failed and skipped cells carry their reason
as a hover title; the best cell of each row is marked; a single-model task has no matrix.
"""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any

import pandas as pd
import pytest
from browser_kit import needs_browser
from browser_kit import open_page as _open
from report_fixtures import COMPRESSIONS, FAILED, MODELS, SKIPPED, XSS, make_results

from harness.report import build_view, render_report
from harness.report.format import num
from harness.report.matrix import BASELINE, best_of, ratio

BEST = ("minilm-l6", "conll2003", "prune-50")  # planted: better than its own none


class _Matrix(HTMLParser):
    """A matrix table parsed back: {model: {compression: {attrs..., "text": ...}}}."""

    def __init__(self, table_id: str) -> None:
        super().__init__()
        self.table_id, self.inside, self.head = table_id, False, []
        self.rows: dict[str, dict[str, dict[str, Any]]] = {}
        self._model: list[str] | None = None
        self._cell: dict[str, Any] | None = None
        self._where = ""

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self.inside = a.get("id") == self.table_id
        elif self.inside and tag == "thead":
            self._where = "head"
        elif self.inside and tag == "tbody":
            self._where = "body"
        elif self.inside and tag == "th" and self._where == "head":
            self.head.append(a.get("data-key"))
        elif self.inside and tag == "th" and a.get("scope") == "row":
            self._model = []
        elif self.inside and tag == "td":
            self._cell = {**a, "text": []}

    def handle_endtag(self, tag):
        if tag == "table" and self.inside:
            self.inside = False
        elif tag == "th" and self._model is not None:
            self.current = "".join(self._model).strip()
            self.rows[self.current] = {}
            self._model = None
        elif tag == "td" and self._cell is not None:
            self._cell["text"] = " ".join("".join(self._cell["text"]).split())
            self.rows[self.current][self._cell["data-compression"]] = self._cell
            self._cell = None

    def handle_data(self, data):
        if self._model is not None:
            self._model.append(data)
        elif self._cell is not None:
            self._cell["text"].append(data + " ")


def matrix_of(html: str, task_index: int) -> _Matrix:
    p = _Matrix(f"task-{task_index}-matrix")
    p.feed(html)
    return p


def main_of(df: pd.DataFrame, model: str, task: str, comp: str) -> float:
    sel = df[(df.model == model) & (df.task == task) & (df.compression == comp) & (df.main_metric == True)]  # noqa: E712
    return float(sel.value.iloc[0])


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    # no latency noise: a cell's p50 is exactly the fixture's latency, so ratios are exact
    return make_results(latency_noise=0.0, accuracy_delta={BEST: 0.05})


@pytest.fixture(scope="module")
def html(frame, tmp_path_factory) -> str:
    return render_report(frame, tmp_path_factory.mktemp("matrix")).read_text(encoding="utf-8")


def test_every_model_a_row_every_compression_a_column(html):
    m = matrix_of(html, 0)  # conll2003: 3 models x 4 compressions, one failed, one skipped
    assert "<h3>Models × compressions</h3>" in html
    assert m.head == ["model", BASELINE, "dynamic-int8", "ov-int8", "prune-50"]
    assert set(m.rows) == set(MODELS)
    for cells in m.rows.values():
        assert set(cells) == set(COMPRESSIONS)
    statuses = {(mod, c): cell["data-status"] for mod, cells in m.rows.items() for c, cell in cells.items()}
    assert {k: s for k, s in statuses.items() if s != "ok"} == {
        ("bert-base-cased", "ov-int8"): "failed", (XSS, "dynamic-int8"): "skipped"}
    # the matrix sits between the per-model summary and the leaderboard
    assert html.index('id="task-0-summary"') < html.index('id="task-0-matrix"') < html.index('id="task-0-table"')


def test_change_and_ratios_are_against_each_models_own_none(frame, html):
    m = matrix_of(html, 0)
    cell = m.rows["minilm-l6"]
    assert cell["dynamic-int8"]["text"].split()[1:] == ["-0.0040", "size", "0.30×", "latency", "0.60×"]
    assert cell["ov-int8"]["text"].split()[1:] == ["-0.0060", "size", "0.27×", "latency", "0.45×"]
    assert cell["prune-50"]["text"].split()[1:] == ["★", "best", "+0.0200", "size", "0.55×",
                                                   "latency", "0.80×"]
    assert m.rows["bert-base-cased"]["dynamic-int8"]["text"].split()[1:] == [
        "-0.0040", "size", "0.30×", "latency", "0.60×"]
    # the values are each model's own, and the none column shows absolute size / latency
    for model in ("minilm-l6", "bert-base-cased"):
        base = main_of(frame, model, "conll2003", "none")
        assert m.rows[model]["none"]["text"].startswith(f"{num(base)} ★ best" if model != "minilm-l6"
                                                        else f"{num(base)} size ")
        assert "MB" in m.rows[model]["none"]["text"] and "ms" in m.rows[model]["none"]["text"]
        own = main_of(frame, model, "conll2003", "dynamic-int8")
        assert m.rows[model]["dynamic-int8"]["text"].startswith(num(own))
        assert float(m.rows[model]["dynamic-int8"]["data-sort"]) == pytest.approx(own)
    bases = {main_of(frame, mod, "conll2003", "none") for mod in MODELS}
    assert len(bases) == 3  # three different references, so "own none" is what was checked
    # the view's numbers, in sst2 too (minilm-l6's prune-50 is skipped there)
    sst2 = {r["model"]: {c["compression"]: c for c in r["cells"]}
            for r in build_view(frame)["tasks"][1]["matrix"]["rows"]}
    assert sst2["bert-base-cased"]["ov-int8"]["change"]["text"] == "-0.0060"
    assert sst2["bert-base-cased"]["ov-int8"]["lines"] == ["size 0.27×", "latency 0.45×"]
    assert sst2["minilm-l6"]["prune-50"]["status"] == "skipped"


def test_skipped_and_failed_cells_carry_their_reason(html):
    m = matrix_of(html, 0)
    failed = m.rows["bert-base-cased"]["ov-int8"]
    assert failed["text"] == "failed" and "cell-failed" in failed["class"].split()
    assert failed["title"] == "failed: " + FAILED[("bert-base-cased", "conll2003", "ov-int8")]
    skipped = m.rows[XSS]["dynamic-int8"]
    assert skipped["text"] == "skipped" and skipped["data-sort"] == ""
    assert skipped["title"] == "skipped: " + SKIPPED[(XSS, "conll2003", "dynamic-int8")]
    # the reason's markup is text in the attribute, not markup
    table = html[html.index('id="task-0-matrix"'):]
    table = table[: table.index("</table>")]
    assert "&lt;b&gt;out of memory&lt;/b&gt; &amp; more" in table and "<b>out of" not in table


def test_best_cell_per_row_is_marked(html):
    m = matrix_of(html, 0)
    best = {mod: [c for c, cell in cells.items() if "best" in cell["class"].split()]
            for mod, cells in m.rows.items()}
    assert best == {"minilm-l6": ["prune-50"], "bert-base-cased": ["none"], XSS: ["none"]}
    for mod, (comp,) in best.items():
        assert "★ best" in m.rows[mod][comp]["text"]
        assert sum("★ best" in cell["text"] for cell in m.rows[mod].values()) == 1
    assert best_of([("b", 0.5), ("a", 0.5), ("c", 0.4), ("d", None)], True) == "a"  # ties: name
    assert best_of([("b", 0.5), ("a", 0.5), ("c", 0.4)], False) == "c"  # lower is better
    assert best_of([("x", None)], True) is None
    assert ratio(3.0, 4.0) == 0.75 and ratio(1.0, 0.0) is None and ratio(None, 1.0) is None


def test_a_model_whose_none_failed_has_no_change(tmp_path):
    df = make_results(fail={("bert-base-cased", "sst2", "none"): "RuntimeError: boom"})
    rows = {r["model"]: r for r in build_view(df)["tasks"][1]["matrix"]["rows"]}
    cell = {c["compression"]: c for c in rows["bert-base-cased"]["cells"]}["dynamic-int8"]
    assert cell["status"] == "ok" and cell["change"]["text"] == ""
    assert "'none' variant failed" in cell["title"]
    assert cell["lines"][0].endswith(" MB")  # no reference: the absolute size instead


def test_single_model_task_has_no_matrix(tmp_path):
    df = make_results(models=["minilm-l6"])
    assert all(t["matrix"] is None for t in build_view(df)["tasks"])
    page = render_report(df, tmp_path).read_text(encoding="utf-8")
    assert "Models × compressions" not in page and "-matrix" not in page
    two = make_results(models=["minilm-l6", "bert-base-cased"])
    assert all(t["matrix"] is not None for t in build_view(two)["tasks"])


def test_model_names_are_escaped(html):
    m = matrix_of(html, 0)
    assert XSS in m.rows  # parsed back as text: it was escaped in the source
    table = html[html.index('id="task-0-matrix"'):]
    table = table[: table.index("</table>")]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in table and "<script>" not in table
    assert "<script>alert(1)" not in html


@pytest.mark.slow
@needs_browser
def test_matrix_in_the_browser(driver, frame, tmp_path):
    from selenium.webdriver.common.by import By

    _open(driver, render_report(frame, tmp_path).resolve().as_uri())
    errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
    assert errors == []
    for i in (0, 1):
        table = driver.find_element(By.ID, f"task-{i}-matrix")
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", table)
        assert table.is_displayed()
        names = [e.text for e in table.find_elements(By.CSS_SELECTOR, "tbody th")]
        assert sorted(names) == sorted(MODELS)
        marks = table.find_elements(By.CSS_SELECTOR, "td.best .best-mark")
        assert len(marks) == 3 and all(b.is_displayed() for b in marks)
    th = driver.find_element(By.CSS_SELECTOR, '#task-0-matrix th[data-key="dynamic-int8"]')
    th.click()
    vals = driver.execute_script(
        "return [...document.querySelectorAll('#task-0-matrix tbody td[data-compression=\"dynamic-int8\"]')]"
        ".map(td => td.dataset.sort)")
    assert [float(v) for v in vals[:2]] == sorted(float(v) for v in vals[:2]) and vals[2] == ""


def test_a_model_skipped_in_every_cell_is_a_note_not_a_row(tmp_path):
    """A model that cannot serve the task (e.g. a text classifier on an NER task) adds no row."""
    df = make_results(models=["minilm-l6", "bert-base-cased", "tagger"])
    tagger = df.model == "tagger"
    skipped = df[tagger].drop_duplicates(["task", "compression"]).assign(  # as the runner writes one
        metric=None, value=None, status="skipped", error="task needs a token-classification model")
    df = pd.concat([df[~tagger], skipped], ignore_index=True)
    views = [t["matrix"] for t in build_view(df)["tasks"]]
    assert all(v is not None for v in views)
    assert all([r["model"] for r in v["rows"]] == ["bert-base-cased", "minilm-l6"] for v in views)
    assert all(v["hidden"] == [{"model": "tagger", "reason": "task needs a token-classification model"}]
               for v in views)
    page = render_report(df, tmp_path).read_text(encoding="utf-8")
    assert 'title="task needs a token-classification model">tagger</span>' in page
    summaries = [t["summary"] for t in build_view(df)["tasks"]]
    assert all(t is not None and "tagger" not in [r["model"] for r in t["rows"]] for t in summaries)
    only = df[df.model.isin(["minilm-l6", "tagger"])]
    assert all(t["matrix"] is None for t in build_view(only)["tasks"])  # one model left: no view
