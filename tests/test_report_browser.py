"""The leaderboard in a real headless Chromium (Debian's chromium + chromium-driver, Selenium).

Skipped with a reason when chromium, chromedriver or selenium is missing; set
HARNESS_REQUIRE_BROWSER=1 (CI does, after scripts/install-browser.sh) to fail instead
(``browser_kit.needs_browser``). The screenshot goes to test-artifacts/ (or
$HARNESS_TEST_ARTIFACTS).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from browser_kit import needs_browser
from browser_kit import open_page as _open
from browser_kit import requests_made as _requests
from report_fixtures import XSS, make_results, ok_cells

from harness.report import render_report

pytestmark = [pytest.mark.slow, needs_browser]

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def frames():
    baseline = make_results(seed=1, run_id="base")
    current = make_results(seed=2, run_id="cur",
                           accuracy_delta={("minilm-l6", "conll2003", "none"): -0.03})
    return baseline, current


@pytest.fixture(scope="module")
def page_url(frames, tmp_path_factory) -> str:
    baseline, current = frames
    out = tmp_path_factory.mktemp("browser-report")
    return render_report(current, out, baseline=baseline).resolve().as_uri()


def test_loads_from_file_without_errors_or_network(driver, page_url):
    _open(driver, page_url)
    errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
    assert errors == []
    urls = _requests(driver)
    assert page_url in urls
    assert [u for u in urls if u != page_url and not u.startswith("data:")] == []


def test_model_names_render_as_text(driver, page_url):
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By

    _open(driver, page_url)
    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert  # noqa: B018 - an injected alert(1) would be open here
    names = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#task-0-table span.name")]
    assert XSS in names
    assert driver.execute_script("return document.querySelectorAll('script').length") == 2


def _column(driver, table: str, key: str) -> list[str]:
    return driver.execute_script(
        """const t = document.getElementById(arguments[0]);
           const i = [...t.tHead.rows[0].cells].findIndex(th => th.dataset.key === arguments[1]);
           return [...t.tBodies[0].rows].map(r => r.cells[i].dataset.sort);""", table, key)


def test_clicking_a_header_sorts(driver, page_url):
    from selenium.webdriver.common.by import By

    _open(driver, page_url)
    th = driver.find_element(By.CSS_SELECTOR, '#task-0-table th[data-key="p50"]')
    th.click()
    vals = _column(driver, "task-0-table", "p50")
    nums = [float(v) for v in vals if v]
    assert nums == sorted(nums) and len(nums) >= 8
    assert vals[len(nums):] == [""] * (len(vals) - len(nums))  # failed/skipped last
    assert th.get_attribute("aria-sort") == "ascending"
    th.click()
    nums = [float(v) for v in _column(driver, "task-0-table", "p50") if v]
    assert nums == sorted(nums, reverse=True)
    assert th.get_attribute("aria-sort") == "descending"
    driver.find_element(By.CSS_SELECTOR, '#task-0-table th[data-key="model"]').click()
    names = _column(driver, "task-0-table", "model")
    assert names == sorted(names)


def test_filter_hides_rows(driver, page_url):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    _open(driver, page_url)
    box = driver.find_element(By.CSS_SELECTOR, 'input.filter[data-table="task-0-table"]')
    box.send_keys("minilm int8")
    visible = driver.execute_script(
        "return [...document.querySelectorAll('#task-0-table tbody tr')].filter(r => !r.hidden)"
        ".map(r => r.dataset.search)")
    assert visible and all("minilm" in v and "int8" in v for v in visible)
    shown = driver.find_element(By.CSS_SELECTOR, '.shown[data-table="task-0-table"]').text
    assert shown.startswith(f"{len(visible)} of ")
    box.clear()
    box.send_keys(" ")
    Select(driver.find_element(By.CSS_SELECTOR, 'select.status-filter[data-table="task-0-table"]')
           ).select_by_value("failed")
    statuses = driver.execute_script(
        "return [...document.querySelectorAll('#task-0-table tbody tr')].filter(r => !r.hidden)"
        ".map(r => r.dataset.status)")
    assert statuses == ["failed"]


def test_each_chart_has_one_point_per_ok_cell(driver, page_url, frames):
    from selenium.webdriver.common.by import By

    _, current = frames
    _open(driver, page_url)
    charts = driver.find_elements(By.CSS_SELECTOR, "svg.chart")
    assert len(charts) == 4
    for chart in charts:
        task = chart.get_attribute("data-task")
        n = len(chart.find_elements(By.CSS_SELECTOR, "circle.point"))
        assert n == len(ok_cells(current, task)), chart.get_attribute("id")
        assert len(chart.find_elements(By.CSS_SELECTOR, "text.label")) == n
        assert chart.find_elements(By.CSS_SELECTOR, "path.frontier")


def test_hover_shows_details(driver, page_url):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    _open(driver, page_url)
    point = driver.find_element(By.CSS_SELECTOR, "#chart-t0-size circle.point.front")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", point)
    ActionChains(driver).move_to_element(point).perform()
    tip = driver.find_element(By.ID, "tooltip")
    assert tip.is_displayed()
    assert " / " in tip.text and "entity_f1" in tip.text and "size:" in tip.text
    row = driver.find_element(By.ID, point.get_attribute("data-row"))
    assert "hl" in row.get_attribute("class").split()


def test_screenshot_artifact(driver, page_url):
    _open(driver, page_url)
    out = Path(os.environ.get("HARNESS_TEST_ARTIFACTS") or ROOT / "test-artifacts")
    out.mkdir(parents=True, exist_ok=True)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1400, min(int(height) + 40, 8000))
    try:
        target = out / "report-leaderboard.png"
        assert driver.save_screenshot(str(target))
        assert target.stat().st_size > 20_000
    finally:
        driver.set_window_size(1400, 1000)


def test_extra_task_metric_column_sorts_and_its_table_shows(driver, tmp_path):
    from selenium.webdriver.common.by import By

    df = make_results(seed=3, extra_metrics={"ece": (0.03, ""), "nll": (0.4, "Calibration")})
    _open(driver, render_report(df, tmp_path).resolve().as_uri())
    errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
    assert errors == []
    th = driver.find_element(By.CSS_SELECTOR, '#task-0-table th[data-key="metric:ece"]')
    assert th.text == "ece"
    th.click()
    nums = [float(v) for v in _column(driver, "task-0-table", "metric:ece") if v]
    assert nums == sorted(nums) and len(nums) == len(ok_cells(df, "conll2003"))
    heads = [h.text for h in driver.find_elements(By.CSS_SELECTOR, "#task-0 h3")]
    assert "Calibration" in heads
    head = driver.find_element(By.CSS_SELECTOR, "#breakdown-t0-1 th:nth-child(3)")
    assert head.text == "nll"
    rows = driver.find_elements(By.CSS_SELECTOR, "#breakdown-t0-1 tbody tr")
    assert len(rows) == len(ok_cells(df, "conll2003"))


def test_tied_points_are_marked_and_in_the_legend(driver, page_url, frames):
    from selenium.webdriver.common.by import By

    from harness.report import build_view

    baseline, current = frames
    view = build_view(current, baseline)
    _open(driver, page_url)
    for t in view["tasks"]:
        for ckey in ("size", "latency"):
            expect = sum(r[f"tied_{ckey}"] for r in t["records"])
            chart = driver.find_element(By.ID, f"chart-t{t['index']}-{ckey}")
            marked = chart.find_elements(By.CSS_SELECTOR, "circle.point.tied")
            assert len(marked) == expect
            for m in marked:  # a dashed ring, visibly different from the others
                assert driver.execute_script(
                    "return getComputedStyle(arguments[0]).strokeDasharray", m) not in ("", "none")
        table = driver.find_element(By.ID, f"task-{t['index']}-table")
        badges = table.find_elements(By.CSS_SELECTOR, ".badge.tied")
        assert len(badges) == sum(r["tied_size"] + r["tied_latency"] for r in t["records"])
        assert all(b.is_displayed() and b.text.startswith("≈ tied") for b in badges)
    assert sum(len(driver.find_elements(By.CSS_SELECTOR, ".legend-tied"))
               for _ in [0]) == len(view["tasks"])
    assert any(r["tied_size"] for t in view["tasks"] for r in t["records"])
