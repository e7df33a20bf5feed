"""Screenshot the leaderboard built from a records folder (the README's picture: docs/leaderboard.png).

    git clone https://github.com/KellerJordan/modded-nanogpt
    python bench/screenshot_leaderboard.py modded-nanogpt/records

Builds the leaderboard into a temporary folder with ``python -m tools leaderboard``, opens its index.html in
headless chromium (Debian's ``chromium`` and ``chromium-driver``, through selenium, as the browser tests do)
and saves the top of the page, then the page of the fastest valid record of the official class, as PNGs.
Nothing is downloaded and the page makes no request: it is the same self-contained site GitHub Pages serves.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--no-first-run",
)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "records", type=Path, help="a records folder (this repository's records/, or the public speedrun's)"
    )
    ap.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "leaderboard.png", help="the index page's PNG")
    ap.add_argument("--record-out", type=Path, default=REPO_ROOT / "docs" / "leaderboard-record.png")
    ap.add_argument("--width", type=int, default=1440)
    ap.add_argument("--height", type=int, default=1500, help="how much of the index page, in CSS pixels")
    args = ap.parse_args()
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        print("error: needs chromium and chromium-driver (apt-get install chromium chromium-driver)", file=sys.stderr)
        return 2
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    with tempfile.TemporaryDirectory(prefix="leaderboard-") as tmp:
        site = Path(tmp) / "leaderboard"
        build = [
            sys.executable,
            "-m",
            "tools",
            "leaderboard",
            "--records",
            str(args.records.resolve()),
            "--out",
            str(site),
        ]
        subprocess.run(build, cwd=REPO_ROOT, check=True)
        options = webdriver.ChromeOptions()
        options.binary_location = chromium
        for flag in (*FLAGS, f"--user-data-dir={Path(tmp) / 'profile'}"):
            options.add_argument(flag)
        drv = webdriver.Chrome(service=Service(executable_path=driver), options=options)
        try:
            drv.set_window_size(args.width, args.height)
            drv.get((site / "index.html").as_uri())
            args.out.parent.mkdir(parents=True, exist_ok=True)
            drv.save_screenshot(str(args.out))
            print(f"wrote {args.out}")
            best = drv.find_element(By.CSS_SELECTOR, "section.class tbody tr a.record")  # rank 1, official class
            best.click()
            drv.set_window_size(args.width, drv.execute_script("return document.documentElement.scrollHeight"))
            drv.save_screenshot(str(args.record_out))
            print(f"wrote {args.record_out} ({drv.title})")
        finally:
            drv.quit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
