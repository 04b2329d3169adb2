"""The leaderboard's filter also filters the charts, and a double-click on a model's legend entry
isolates it (issue 30, part 2): in a real headless Chromium, on the 6-model x 8-compression frame
of ``test_report_charts_models.py`` (one model named ``<script>…``).

A marker (circle, shape, label) is visible only when its row passes the text filter and the
Status select *and* its model is shown in the legend; rows and markers are matched by
(model, compression)."""

from __future__ import annotations

from pathlib import Path

import pytest
from browser_kit import needs_browser
from browser_kit import open_page as _open
from report_fixtures import XSS
from test_report_charts_models import MODELS, six_by_eight

from harness.report import render_report

pytestmark = [pytest.mark.slow, needs_browser]

# per element of task-0's charts: model, compression (a label takes its circle's), kind, visible
MARKERS = """
const sec = document.getElementById(arguments[0]);
const out = [];
for (const svg of sec.querySelectorAll('svg.chart')) {
  const comp = {};
  for (const c of svg.querySelectorAll('circle.point')) comp[c.dataset.row] = c.dataset.compression;
  for (const el of svg.querySelectorAll('circle.point, path.shape, text.label, path.model-front')) {
    out.push({model: el.getAttribute('data-model'),
              compression: el.getAttribute('data-compression') || comp[el.getAttribute('data-row')] || null,
              kind: el.getAttribute('class').split(' ')[0],
              shown: getComputedStyle(el).display !== 'none'});
  }
}
return out;"""

VISIBLE_ROWS = """
return [...document.querySelectorAll('#' + arguments[0] + '-table tbody tr')]
  .filter(r => !r.hidden).map(r => [r.getAttribute('data-model'), r.getAttribute('data-compression')]);"""


@pytest.fixture(scope="module")
def frame():
    return six_by_eight()


@pytest.fixture(scope="module")
def page_url(frame, tmp_path_factory) -> str:
    path: Path = render_report(frame, tmp_path_factory.mktemp("chart-filter"))
    return path.resolve().as_uri()


def _markers(driver, section: str = "task-0") -> list[dict]:
    return driver.execute_script(MARKERS, section)


def _shown_cells(driver, section: str = "task-0", kind: str = "point") -> set[tuple[str, str]]:
    return {(m["model"], m["compression"]) for m in _markers(driver, section)
            if m["kind"] == kind and m["shown"]}


def _no_console_errors(driver) -> None:
    assert [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "WARNING")] == []


def _type(driver, text: str, section: str = "task-0") -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    box = driver.find_element(By.CSS_SELECTOR, f'input.filter[data-table="{section}-table"]')
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(Keys.BACKSPACE)
    if text:
        box.send_keys(text)


def _status(driver, value: str, section: str = "task-0") -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element(
        By.CSS_SELECTOR, f'select.status-filter[data-table="{section}-table"]')).select_by_value(value)


def _button(driver, model: str, section: str = "task-0"):
    from selenium.webdriver.common.by import By

    b = next(b for b in driver.find_elements(By.CSS_SELECTOR, f"#{section}-legend button.legend-model")
             if b.get_attribute("data-model") == model)
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", b)
    return b


def test_typing_a_model_leaves_only_its_markers(driver, page_url):
    _open(driver, page_url)
    everything = _shown_cells(driver)
    assert {m for m, _ in everything} == set(MODELS) and len(everything) > 40
    for model in ("enc-c", XSS):
        _type(driver, model)
        rows = {tuple(r) for r in driver.execute_script(VISIBLE_ROWS, "task-0")}
        assert rows and {m for m, _ in rows} == {model}
        shown = _shown_cells(driver)
        assert shown and {m for m, _ in shown} == {model}
        assert shown == everything & rows  # exactly the ok cells among the visible rows
        marks = _markers(driver)
        assert all(m["model"] == model for m in marks if m["shown"])
        assert [m for m in marks if m["kind"] == "model-front" and m["shown"]]  # its own front
        assert {m for m, _ in _shown_cells(driver, "task-1")} == set(MODELS)  # other task
    _type(driver, "")
    assert _shown_cells(driver) == everything
    assert all(m["shown"] for m in _markers(driver))
    _no_console_errors(driver)


def test_filtering_by_compression_matches_the_rows(driver, page_url):
    _open(driver, page_url)
    everything = _shown_cells(driver)
    _type(driver, "prune-50-ft")
    shown = _shown_cells(driver)
    assert shown and {c for _, c in shown} == {"prune-50-ft"}
    assert shown == {c for c in everything if c[1] == "prune-50-ft"}
    assert {c for _, c in _shown_cells(driver, kind="shape")} <= {"prune-50-ft"}
    assert {c for _, c in _shown_cells(driver, kind="label")} <= {"prune-50-ft"}
    _type(driver, "")
    assert _shown_cells(driver) == everything
    _no_console_errors(driver)


def test_status_filter_hides_markers_of_other_cells(driver, page_url):
    _open(driver, page_url)
    everything = _shown_cells(driver)
    _status(driver, "skipped")  # skipped cells have no marker: every marker goes
    assert driver.execute_script(VISIBLE_ROWS, "task-0") == [
        [XSS, "dynamic-int8"], [XSS, "dynamic-int8-ft"]]
    assert _shown_cells(driver) == set()
    assert not [m for m in _markers(driver) if m["shown"]]
    assert {m for m, _ in _shown_cells(driver, "task-1")} == set(MODELS)  # other task untouched
    _status(driver, "ok")
    assert _shown_cells(driver) == everything
    _type(driver, "enc-a")  # both filters at once
    assert {m for m, _ in _shown_cells(driver)} == {"enc-a"}
    _status(driver, "failed")
    assert _shown_cells(driver) == set()
    _status(driver, "all")
    _type(driver, "")
    assert _shown_cells(driver) == everything
    _no_console_errors(driver)


def test_filter_and_legend_combine(driver, page_url):
    _open(driver, page_url)
    everything = _shown_cells(driver)
    _button(driver, "enc-b").click()  # legend hides enc-b
    _type(driver, "enc-b")
    assert _shown_cells(driver) == set()  # the filter cannot show what the legend hides
    _type(driver, "")
    shown = _shown_cells(driver)
    assert shown == {c for c in everything if c[0] != "enc-b"}  # still hidden by the legend
    _type(driver, "enc-d")
    _button(driver, "enc-b").click()  # legend shows enc-b again: the filter still hides it
    assert {m for m, _ in _shown_cells(driver)} == {"enc-d"}
    _type(driver, "")
    assert _shown_cells(driver) == everything
    _no_console_errors(driver)


def test_double_click_isolates_a_model_and_again_shows_all(driver, page_url):
    from selenium.webdriver.common.action_chains import ActionChains

    _open(driver, page_url)
    everything = _shown_cells(driver)
    for model in ("enc-e", XSS):
        ActionChains(driver).double_click(_button(driver, model)).perform()
        shown = _shown_cells(driver)
        assert shown and {m for m, _ in shown} == {model}
        assert shown == {c for c in everything if c[0] == model}
        assert not [m for m in _markers(driver) if m["shown"] and m["model"] not in (None, model)]
        pressed = {b.get_attribute("data-model"): b.get_attribute("aria-pressed")
                   for b in driver.find_elements("css selector", "#task-0-legend button.legend-model")}
        assert pressed == {m: ("true" if m == model else "false") for m in MODELS}
        assert {m for m, _ in _shown_cells(driver, "task-1")} == set(MODELS)  # other task too
        ActionChains(driver).double_click(_button(driver, model)).perform()
        assert _shown_cells(driver) == everything
        assert all(b.get_attribute("aria-pressed") == "true" for b in driver.find_elements(
            "css selector", "#task-0-legend button.legend-model"))
    caption = driver.find_element("id", "task-0-legend").text
    assert "double-click" in caption
    _no_console_errors(driver)
