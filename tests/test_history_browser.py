"""The history page in headless Chromium: loads from disk without console errors or network
requests, one series per cell in every chart, flagged changes ringed. Skips without a browser
unless HARNESS_REQUIRE_BROWSER=1 (then a missing browser is an error)."""

from __future__ import annotations

import pytest
from browser_kit import needs_browser
from browser_kit import open_page as _open
from browser_kit import requests_made as _requests
from report_fixtures import XSS, make_results, ok_cells, write_jsonl

from harness.analysis.history import build_history, render_history

pytestmark = [pytest.mark.slow, needs_browser]

ACC = ("minilm-l6", "sst2", "none")
LAT = ("minilm-l6", "sst2", "ov-int8")


@pytest.fixture(scope="module")
def runs():
    return [make_results(seed=i, run_id=f"r{i}", accuracy_delta={ACC: -0.03 * i},
                         latency_factor={LAT: 1 + 0.3 * i}) for i in range(3)]


@pytest.fixture(scope="module")
def page_url(runs, tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("browser-history")
    paths = [write_jsonl(df, root / f"run{i}") for i, df in enumerate(runs)]
    return render_history(paths, root / "out").resolve().as_uri()


def test_loads_without_console_errors_or_network(driver, page_url):
    _open(driver, page_url)
    errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
    assert errors == []
    urls = _requests(driver)
    assert page_url in urls
    assert [u for u in urls if u != page_url and not u.startswith("data:")] == []
    assert driver.execute_script("return window.__xss === undefined")
    from selenium.webdriver.common.by import By

    assert XSS in driver.find_element(By.TAG_NAME, "body").text  # shown as text, not run


def test_one_series_per_cell_in_every_chart(driver, page_url, runs):
    from selenium.webdriver.common.by import By

    _open(driver, page_url)
    charts = driver.find_elements(By.CSS_SELECTOR, "svg.chart.history")
    assert len(charts) == 2 * 4
    for ch in charts:
        task = ch.get_attribute("data-task")
        n_cells = len({(m, c) for m, tk, c in zip(runs[0].model, runs[0].task,
                                                   runs[0].compression) if tk == task})
        groups = ch.find_elements(By.CSS_SELECTOR, "g.series-group")
        assert len(groups) == n_cells, ch.get_attribute("id")
        keys = {g.get_attribute("data-series") for g in groups}
        assert len(keys) == n_cells
        # a series has a point per run where the cell is ok, and a drawn line
        ok = len(ok_cells(runs[0], task))
        assert len(ch.find_elements(By.CSS_SELECTOR, "circle.pt")) == ok * len(runs)
        drawn = [g for g in groups if g.find_element(By.CSS_SELECTOR, "path.series")
                 .get_attribute("d")]
        assert len(drawn) == ok
        box = ch.rect
        assert box["width"] > 200 and box["height"] > 100


def test_flagged_changes_are_ringed_and_in_the_table(driver, page_url, runs):
    from selenium.webdriver.common.by import By

    view = build_history(runs, ["0", "1", "2"])
    _open(driver, page_url)
    rings = driver.find_elements(By.CSS_SELECTOR, "svg.chart circle.flag")
    assert len(rings) == view["flag_count"] == 4
    assert all(r.is_displayed() for r in rings)
    flagged = driver.find_elements(By.CSS_SELECTOR, "td.flagged")
    assert len(flagged) == 4
    assert any("accuracy: dropped" in td.text for td in flagged)
    assert any("latency:" in td.text and "slower" in td.text for td in flagged)


def test_hovering_a_row_highlights_its_series(driver, page_url):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    _open(driver, page_url)
    row = driver.find_element(By.CSS_SELECTOR, "#task-1-history tbody tr")
    ActionChains(driver).move_to_element(row).perform()
    key = row.get_attribute("data-series")
    hl = driver.find_elements(By.CSS_SELECTOR, "path.series.hl")
    assert len(hl) == 4
    assert all(h.find_element(By.XPATH, "..").get_attribute("data-series") == key for h in hl)
