"""Helpers for the tests in a real headless Chromium (Debian's chromium + chromium-driver,
Selenium): ``test_report_browser.py`` and ``test_history_browser.py``. The ``driver`` fixture
built on them is in conftest.py.

A module using the browser sets ``pytestmark = [pytest.mark.slow, needs_browser]``: skipped
with a reason when chromium, chromedriver or selenium is missing; with
HARNESS_REQUIRE_BROWSER=1 (CI sets it, after scripts/install-browser.sh) a missing browser is
an error instead.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any

import pytest

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars", "--window-size=1400,1000"]


def find(*names: str) -> str | None:
    """The first of ``names`` on PATH."""
    for n in names:
        p = shutil.which(n)
        if p:
            return p
    return None


def missing() -> str | None:
    """Why the browser tests cannot run here; None when they can."""
    if find("chromium", "chromium-browser") is None:
        return "Debian's chromium is not installed (run scripts/install-browser.sh)"
    if find("chromedriver") is None:
        return "chromium-driver is not installed (run scripts/install-browser.sh)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    return None


_why = missing()
if _why and os.environ.get("HARNESS_REQUIRE_BROWSER") == "1":
    raise RuntimeError(f"HARNESS_REQUIRE_BROWSER=1 but {_why}")
#: the mark of a module that needs the browser
needs_browser = pytest.mark.skipif(_why is not None, reason=_why or "")


def start_driver() -> tuple[Any, str]:
    """A headless Chromium with browser and network logging, and its temporary profile folder."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = find("chromium", "chromium-browser") or ""
    for flag in FLAGS:
        opts.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="harness-chromium-")
    opts.add_argument(f"--user-data-dir={profile}")
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    try:
        drv = webdriver.Chrome(service=Service(find("chromedriver")), options=opts)
    except BaseException:
        shutil.rmtree(profile, ignore_errors=True)
        raise
    drv.set_page_load_timeout(20)
    return drv, profile


def stop_driver(drv: Any, profile: str) -> None:
    drv.quit()
    shutil.rmtree(profile, ignore_errors=True)


def open_page(driver, url: str) -> None:
    """Load ``url`` after dropping the logs of what came before; the page must set data-ready."""
    driver.get("about:blank")
    driver.get_log("browser")
    driver.get_log("performance")  # drop what came before
    driver.get(url)
    assert driver.execute_script("return document.documentElement.dataset.ready") == "1"


def requests_made(driver) -> list[str]:
    """The URLs the page requested (HTTP and web sockets) since ``open_page``."""
    urls = []
    for entry in driver.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg["method"] in ("Network.requestWillBeSent", "Network.webSocketCreated"):
            p = msg["params"]
            urls.append(p.get("request", {}).get("url") or p.get("url", ""))
    return urls
