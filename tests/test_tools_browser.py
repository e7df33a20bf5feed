"""leaderboard/index.html in a real headless browser (Debian's chromium, driven by selenium).

Checks what a reader sees: no console errors, no network request at all (the page is
self-contained), the expected rows, plots that render, and headers that sort.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import skip_or_fail
from logfactory import H100, write_record
from tools.leaderboard import build, write

pytestmark = pytest.mark.slow  # launches chromium

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver_path):
        skip_or_fail("chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        skip_or_fail("selenium is not installed (pip install -r requirements-dev.txt)")
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(chromium)
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    # An explicit driver path: selenium then never tries to download one.
    drv = webdriver.Chrome(service=Service(executable_path=str(driver_path)), options=options)
    try:
        yield drv
    finally:
        drv.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("browser")
    records = root / "records"
    write_record(records, "2026-08-01_Alpha", step_ms=60.0)
    write_record(records, "2026-08-02_Bravo", step_ms=50.0)
    write_record(records, "2026-08-03_Charlie", step_ms=55.0)
    write_record(records, "2026-08-04_Delta", runs=2, step_ms=45.0)
    write_record(records, "2026-08-05_Echo", num_gpus=1, step_ms=300.0, meta={"hardware": f"1x {H100}"})
    out = root / "leaderboard"
    write(build(records, out, known_shards={}), out)
    return out / "index.html"


def _rows(drv: Any, table_id: str) -> list[str]:
    from selenium.webdriver.common.by import By

    return [r.get_attribute("data-record") for r in drv.find_elements(By.CSS_SELECTOR, f"table#{table_id} tbody tr")]


def test_page_loads_without_errors_or_requests(browser: Any, page: Path) -> None:
    from selenium.webdriver.common.by import By

    browser.get_log("performance")  # drain: chromium's own start-up page is not ours to judge
    browser.get_log("browser")
    browser.get(page.as_uri())
    assert browser.title == "Speedrun leaderboard"
    severe = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
    assert not severe, severe
    requests = []
    for entry in browser.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg["method"] == "Network.requestWillBeSent":
            requests.append(msg["params"]["request"]["url"])
    assert page.as_uri() in requests  # the log does record requests...
    assert [u for u in requests if not u.startswith("data:") and u != page.as_uri()] == []  # ...and there is no other
    official = "track_1_short-8x-nvidia-h100-80gb-hbm3"
    assert _rows(browser, official) == [
        "2026-08-02_Bravo",
        "2026-08-03_Charlie",
        "2026-08-01_Alpha",
        "2026-08-04_Delta",
    ]
    assert _rows(browser, "track_1_short-1x-nvidia-h100-80gb-hbm3") == ["2026-08-05_Echo"]
    images = browser.find_elements(By.CSS_SELECTOR, "img.plot")
    assert len(images) == 3 and all(browser.execute_script("return arguments[0].naturalWidth", im) > 0 for im in images)
    assert "No records yet" in browser.find_element(By.ID, "track_2_medium").text


def test_headers_sort_the_table(browser: Any, page: Path) -> None:
    from selenium.webdriver.common.by import By

    browser.get(page.as_uri())
    table = "track_1_short-8x-nvidia-h100-80gb-hbm3"
    headers = browser.find_elements(By.CSS_SELECTOR, f"table#{table} thead th")
    by_name = {h.text.strip(): h for h in headers}
    by_name["record"].find_element(By.TAG_NAME, "button").click()
    assert _rows(browser, table) == ["2026-08-01_Alpha", "2026-08-02_Bravo", "2026-08-03_Charlie", "2026-08-04_Delta"]
    assert by_name["record"].get_attribute("aria-sort") == "ascending"
    by_name["time (s)"].find_element(By.TAG_NAME, "button").click()
    assert _rows(browser, table) == ["2026-08-04_Delta", "2026-08-02_Bravo", "2026-08-03_Charlie", "2026-08-01_Alpha"]
    by_name["time (s)"].find_element(By.TAG_NAME, "button").click()  # again: descending
    assert _rows(browser, table)[0] == "2026-08-01_Alpha"
    by_name["rank"].find_element(By.TAG_NAME, "button").click()  # unranked rows stay last
    assert _rows(browser, table)[-1] == "2026-08-04_Delta"
    assert not [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
