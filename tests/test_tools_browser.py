"""The leaderboard's site in a real headless browser (Debian's chromium, driven by selenium).

Checks what a reader sees and does: the page loads with no console error and no network request at all
(the site is self-contained), its plots render, headers sort, the filter filters, the history chart's steps
are the records' own dates, and a click on a record opens its page with the statistics card, the code diff
and why a record failed. One browser for the module, one small records tree (tests/helpers/site_records.py).

Each page is also saved as a PNG into the folder named by SPEEDRUN_ARTIFACTS when it is set (.ci/run sets
it; CI keeps the folder as an artifact), so a reviewer sees what the tests saw.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import skip_or_fail
from helpers.site_records import OFFICIAL, ONE_GPU, write_site_records
from tools.judge.records import discover
from tools.judge.verify import verify_records
from tools.site.leaderboard import build, write

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
    "--hide-scrollbars",
)
TRACK = "track_1_short"
OFFICIAL_TABLE = f"{TRACK}-8x-nvidia-h100-80gb-hbm3-table"
ONE_GPU_TABLE = f"{TRACK}-1x-nvidia-h100-80gb-hbm3-table"


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
    drv.set_window_size(1280, 1000)
    try:
        yield drv
    finally:
        drv.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("browser")
    records = write_site_records(root)
    out = root / "leaderboard"
    write(build(records, out, known_shards={}), out)
    return records, out / "index.html"


def screenshot(drv: Any, name: str) -> None:
    """The whole page as ``$SPEEDRUN_ARTIFACTS/<name>.png`` (nothing when the variable is unset)."""
    folder = os.environ.get("SPEEDRUN_ARTIFACTS")
    if not folder:
        return
    Path(folder).mkdir(parents=True, exist_ok=True)
    width, height = drv.get_window_size()["width"], drv.get_window_size()["height"]
    full = drv.execute_script("return document.documentElement.scrollHeight")
    drv.set_window_size(width, min(max(full, 600), 12_000))
    try:
        assert drv.save_screenshot(str(Path(folder) / f"{name}.png"))
    finally:
        drv.set_window_size(width, height)


def _rows(drv: Any, table_id: str, visible_only: bool = False) -> list[str]:
    from selenium.webdriver.common.by import By

    rows = drv.find_elements(By.CSS_SELECTOR, f"table#{table_id} tbody tr")
    return [r.get_attribute("data-record") for r in rows if r.is_displayed() or not visible_only]


def _text(drv: Any, css: str) -> str:
    from selenium.webdriver.common.by import By

    return str(drv.find_element(By.CSS_SELECTOR, css).text)


def _problems(drv: Any) -> list[Any]:
    return [e for e in drv.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]


def test_page_loads_without_errors_or_requests(browser: Any, site: tuple[Path, Path]) -> None:
    from selenium.webdriver.common.by import By

    _, page = site
    browser.get_log("performance")  # drain: chromium's own start-up page is not ours to judge
    browser.get_log("browser")
    browser.get(page.as_uri())
    assert browser.title == "Speedrun leaderboard"
    assert not _problems(browser)
    requests = []
    for entry in browser.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg["method"] == "Network.requestWillBeSent":
            requests.append(msg["params"]["request"]["url"])
    assert page.as_uri() in requests  # the log does record requests...
    assert [u for u in requests if not u.startswith("data:") and u != page.as_uri()] == []  # ...and there is no other
    # What the page is comes first; the note about CI is at the bottom.
    assert _text(browser, "body").startswith("Speedrun leaderboard\nWho trained a GPT")
    assert _rows(browser, OFFICIAL_TABLE) == [
        "2026-08-03_Bravo",
        "2026-08-04_Charlie",
        "2026-08-01_Alpha",
        "2026-08-05_Delta",
    ]
    assert _rows(browser, ONE_GPU_TABLE) == ["2026-08-06_Echo"]
    images = browser.find_elements(By.CSS_SELECTOR, "img.plot")
    assert len(images) == 3 and all(browser.execute_script("return arguments[0].naturalWidth", im) > 0 for im in images)
    assert "No records yet" in browser.find_element(By.ID, "track_2_medium").text
    screenshot(browser, "leaderboard-index")


def test_headers_sort_the_table(browser: Any, site: tuple[Path, Path]) -> None:
    from selenium.webdriver.common.by import By

    browser.get(site[1].as_uri())
    headers = browser.find_elements(By.CSS_SELECTOR, f"table#{OFFICIAL_TABLE} thead th")
    by_name = {h.text.strip(): h for h in headers}
    by_name["record"].find_element(By.TAG_NAME, "button").click()
    assert _rows(browser, OFFICIAL_TABLE) == [
        "2026-08-01_Alpha",
        "2026-08-03_Bravo",
        "2026-08-04_Charlie",
        "2026-08-05_Delta",
    ]
    assert by_name["record"].get_attribute("aria-sort") == "ascending"
    by_name["time (s)"].find_element(By.TAG_NAME, "button").click()
    assert _rows(browser, OFFICIAL_TABLE)[0] == "2026-08-05_Delta"  # one run: fastest, though it failed
    by_name["rank"].find_element(By.TAG_NAME, "button").click()  # unranked rows stay last
    assert _rows(browser, OFFICIAL_TABLE)[-1] == "2026-08-05_Delta"
    assert not [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]


def test_filter_by_hardware_status_and_text(browser: Any, site: tuple[Path, Path]) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser.get(site[1].as_uri())
    form = browser.find_element(By.ID, "filter")
    assert form.is_displayed()  # shown by the script: without JavaScript there is no filter to offer
    count = browser.find_element(By.ID, "filter-count")
    assert count.text == "5 of 5 records shown"
    Select(form.find_element(By.NAME, "hardware")).select_by_value(ONE_GPU)
    assert _rows(browser, ONE_GPU_TABLE, visible_only=True) == ["2026-08-06_Echo"]
    assert not browser.find_element(By.ID, OFFICIAL_TABLE).is_displayed() and count.text == "1 of 5 records shown"
    Select(form.find_element(By.NAME, "hardware")).select_by_value("")
    Select(form.find_element(By.NAME, "status")).select_by_value("failed")
    assert _rows(browser, OFFICIAL_TABLE, visible_only=True) == ["2026-08-05_Delta"]
    Select(form.find_element(By.NAME, "status")).select_by_value("")
    text = form.find_element(By.NAME, "text")
    text.send_keys("hopper LINEAR")  # authors and what changed, any case, every word
    assert _rows(browser, OFFICIAL_TABLE, visible_only=True) == ["2026-08-03_Bravo"]
    assert count.text == "1 of 5 records shown"
    screenshot(browser, "leaderboard-filtered")
    text.clear()
    text.send_keys("2.11.0+cu130")  # the software column
    assert count.text == "5 of 5 records shown"
    Select(form.find_element(By.NAME, "track")).select_by_value("track_2_medium")
    assert count.text == "0 of 5 records shown" and browser.find_element(By.ID, "track_2_medium").is_displayed()
    assert not browser.find_element(By.ID, TRACK).is_displayed()


def test_history_chart_steps_at_the_records_own_dates(browser: Any, site: tuple[Path, Path]) -> None:
    from selenium.webdriver.common.by import By

    records, page = site
    browser.get(page.as_uri())
    chart = browser.find_element(By.CSS_SELECTOR, f'img.history[data-track="{TRACK}"]')
    assert browser.execute_script("return arguments[0].naturalWidth", chart) > 0
    data = json.loads(
        browser.find_element(By.CSS_SELECTOR, f'script.history[data-track="{TRACK}"]').get_attribute("textContent")
    )
    verdicts = {v.record.name: v for v in verify_records(discover(records), known_shards={})}
    new = sorted(
        (v for v in verdicts.values() if v.is_new_record and v.hardware and v.hardware.label == OFFICIAL),
        key=lambda v: v.record.date or "",
    )
    official = next(c for c in data["classes"] if c["hardware"] == OFFICIAL)
    dates = [d for d, _ in official["steps"]]
    assert dates == [*(v.record.date for v in new), "2026-08-06"]  # each from its own date, to the chart's end
    for (_, minutes), v in zip(official["steps"], new, strict=False):
        assert minutes == pytest.approx((v.mean_train_time_ms or 0) / 60_000, abs=1e-6)
    assert data["last_date"] == "2026-08-06"
    low, high = data["y_range"]
    valid = [v.mean_train_time_ms / 60_000 for v in verdicts.values() if v.valid and v.mean_train_time_ms]
    assert low <= min(valid) and max(valid) <= high


def test_click_into_a_record_page_statistics_and_code_diff(browser: Any, site: tuple[Path, Path]) -> None:
    from selenium.webdriver.common.by import By

    records, page = site
    browser.get(page.as_uri())
    browser.find_element(By.CSS_SELECTOR, 'tr[data-record="2026-08-03_Bravo"] a.record').click()
    assert browser.current_url.endswith(f"/pages/{TRACK}/2026-08-03-bravo.html")
    assert browser.title == "2026-08-03_Bravo: speedrun record" and not _problems(browser)
    bravo = next(v for v in verify_records(discover(records), known_shards={}) if v.record.name == "2026-08-03_Bravo")
    sn = bravo.same_node
    assert sn is not None and sn.time.p_lower is not None and bravo.p_value is not None
    assert len(browser.find_elements(By.CSS_SELECTOR, "table#runs tbody tr")) == 3
    assert _text(browser, "#stat-n") == "3"
    assert f"p = {bravo.p_value:.3g} (below 0.01)" in _text(browser, "#stat-target")
    welch = _text(browser, "#stat-welch")
    assert f"one-sided p (faster) = {sn.time.p_lower:.3g}" in welch and f"{sn.speedup_pct:.2f} % faster" in welch
    assert "every run is faster than every baseline run" in _text(browser, "#stat-extremes")
    assert "Grace Hopper, Alan Turing" in _text(browser, "header")
    diff = _text(browser, "#diff")
    assert "diff against 2026-08-01_Alpha" in diff
    added = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "pre.diff span.add")]
    removed = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "pre.diff span.del")]
    assert "+# <script>alert(1)</script> is text" in added  # code from a log is text, never markup
    assert removed == ["-model = torch.compile(torch.nn.Linear(4, 4), dynamic=False)"]
    assert browser.execute_script("return document.querySelectorAll('body script').length") == 0
    plot = browser.find_element(By.CSS_SELECTOR, "#curves img.plot")
    assert browser.execute_script("return arguments[0].naturalWidth", plot) > 0
    for link in browser.find_elements(By.CSS_SELECTOR, "#logs a"):  # every log, as a file beside the page
        target = Path(link.get_attribute("href").removeprefix("file://"))
        assert target.is_file() and target.suffix == ".txt"
    screenshot(browser, "leaderboard-record")
    browser.find_element(By.LINK_TEXT, "← leaderboard").click()
    assert browser.current_url.endswith(f"index.html#{OFFICIAL_TABLE.removesuffix('-table')}")


def test_a_failed_record_says_why_in_the_table_and_on_its_page(browser: Any, site: tuple[Path, Path]) -> None:
    from selenium.webdriver.common.by import By

    browser.get(site[1].as_uri())
    status = browser.find_element(By.CSS_SELECTOR, 'tr[data-record="2026-08-05_Delta"] td.status span')
    assert status.text == "failed: target"
    assert status.get_attribute("title") == "target: one run: the p-value needs at least 3 runs"  # the tooltip
    browser.find_element(By.CSS_SELECTOR, 'tr[data-record="2026-08-05_Delta"] a.record').click()
    assert "target: one run: the p-value needs at least 3 runs." in _text(browser, "#why")
    assert "no p-value" in _text(browser, "#stat-target")
    screenshot(browser, "leaderboard-record-failed")
