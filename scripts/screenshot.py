"""Screenshot an HTML page (a report.html, a leaderboard page) in headless Chromium at a given width.

    python scripts/screenshot.py runs/demo/report.html docs/report.png [--width 1400] [--height 1000] [--full]

Uses Playwright (``pip install playwright``) with Debian's Chromium (``/usr/bin/chromium``, or
``--chromium PATH``); nothing is downloaded. Prints the page's scroll width, so a page wider
than the window shows up here too.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("page", help="an HTML file or an http(s) URL")
    parser.add_argument("out", help="the PNG to write")
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=1000)
    parser.add_argument("--full", action="store_true", help="the whole page, not the first window")
    parser.add_argument("--chromium", default=shutil.which("chromium") or shutil.which("chromium-browser"))
    args = parser.parse_args()
    if not args.chromium:
        sys.exit("screenshot: no Chromium found (Debian: apt-get install chromium), or give --chromium PATH")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sys.exit("screenshot: Playwright is not installed (pip install playwright)")
    url = args.page if args.page.startswith(("http://", "https://")) else Path(args.page).resolve().as_uri()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, args=["--headless", "--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": args.width, "height": args.height})
        page.goto(url)
        page.wait_for_load_state("load")
        print(f"{args.page}: scroll width {page.evaluate('document.documentElement.scrollWidth')} px "
              f"at a {args.width} px window")
        page.screenshot(path=args.out, full_page=args.full)
        browser.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
