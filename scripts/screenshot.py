"""Render an HTML report in headless Chromium and save a PNG of its top (the README's docs/report.png).

    python scripts/screenshot.py                                   # the committed demo report -> docs/report.png
    python scripts/screenshot.py PAGE.html OUT.png --height 2400   # any page, any height
    python scripts/screenshot.py PAGE.html OUT.png --full          # the whole page

Drives Debian's /usr/bin/chromium through Playwright (no browser download), with the flags the
browser tests use; the page makes no network request (its Content-Security-Policy forbids it).
The PNG is reduced to a 256-colour palette, which the report's flat colours survive unchanged to the
eye, to keep it small in the repository.
"""

from __future__ import annotations

import argparse
import io
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def screenshot(page: Path, out: Path, *, width: int = 1200, height: int = 1370, full: bool = False) -> int:
    """Write ``out`` (PNG) from ``page``; returns its size in bytes."""
    from PIL import Image
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("screenshot: Chromium is not installed (apt-get install -y chromium)")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=FLAGS)
        try:
            tab = browser.new_page(viewport={"width": width, "height": height})
            requests: list[str] = []
            tab.on("request", lambda r: requests.append(r.url))
            tab.goto(page.resolve().as_uri(), wait_until="load")
            tab.wait_for_timeout(300)
            png = tab.screenshot(full_page=full)
        finally:
            browser.close()
    extra = [u for u in requests if u != page.resolve().as_uri()]
    if extra:
        raise SystemExit(f"screenshot: the page made network requests: {extra[:3]}")
    img = Image.open(io.BytesIO(png)).convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT)
    out.parent.mkdir(parents=True, exist_ok=True)
    img.save(out, format="PNG", optimize=True)
    return out.stat().st_size


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "page", nargs="?", type=Path, default=REPO / "reports" / "demo_yolo11n_shapes" / "report.html"
    )
    p.add_argument("out", nargs="?", type=Path, default=REPO / "docs" / "report.png")
    p.add_argument("--width", type=int, default=1200, help="viewport width in px (default 1200)")
    p.add_argument(
        "--height",
        type=int,
        default=1370,
        help="height of the view in px (default 1370: the header, cards and the first two plots)",
    )
    p.add_argument("--full", action="store_true", help="the whole page, not only its top")
    a = p.parse_args(argv)
    size = screenshot(a.page, a.out, width=a.width, height=a.height, full=a.full)
    print(f"wrote {a.out} ({size / 1024:.0f} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
