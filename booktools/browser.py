"""The rendered book in a real browser: serve ``_build/html`` on 127.0.0.1 and load every page in headless
Chromium through Playwright (the pip package, driving the system's Chromium: nothing is downloaded).

:func:`check_page` returns what a reader would hit on one page: requests that left 127.0.0.1, console errors,
math left as raw TeX, images that did not load, progress bars that kept more than one line per loop, and
Reproduction check tables wider than the text column. ``tests/test_browser.py`` asserts that all are empty
for every page (``make test``, stage 5) and saves a screenshot of each under ``_build/screenshots/``.
``python -m booktools browser`` prints the same summary without pytest.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator
from urllib.parse import urlparse

from booktools.toc import BUILD
from kernels._http import serve_in_thread

HTML = BUILD / "html"
SHOTS = BUILD / "screenshots"
# Chromium flags for a sandboxed, offline machine: no first-run, no background services phoning home
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-default-apps", "--disable-dev-shm-usage"]
PROGRESS = re.compile(r"^(?P<desc>[^\n|]*?):?\s*\d{1,3}%\|")


def chromium_path() -> str | None:
    """The Chromium to drive: ``$CHROMIUM``, else Debian's ``chromium`` or another on PATH (None if none)."""
    env = os.environ.get("CHROMIUM")
    if env:
        return env if Path(env).is_file() else None
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def pages(root: Path = HTML) -> list[str]:
    """Every HTML page of the rendered book, relative to its root."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.html") if "_static" not in p.parts)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # no log lines in the test output
        pass


@contextlib.contextmanager
def serve(root: Path = HTML) -> Iterator[str]:
    """Serve ``root`` on 127.0.0.1 at a free port in a thread; yields the base URL."""
    with serve_in_thread(functools.partial(_QuietHandler, directory=str(root))) as server:
        yield f"http://127.0.0.1:{server.server_address[1]}/"


@dataclass
class PageReport:
    page: str
    outside_requests: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    untypeset_math: int = 0
    math: int = 0
    broken_images: list[str] = field(default_factory=list)
    progress_repeats: list[str] = field(default_factory=list)
    wide_tables: list[str] = field(default_factory=list)
    wide_math: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        out = []
        if self.outside_requests:
            out.append(f"{len(self.outside_requests)} request(s) outside 127.0.0.1: {self.outside_requests[:3]}")
        if self.console_errors:
            out.append(f"console errors: {self.console_errors[:3]}")
        if self.untypeset_math:
            out.append(f"{self.untypeset_math} of {self.math} math elements left untypeset")
        if self.broken_images:
            out.append(f"images that did not load: {self.broken_images[:3]}")
        if self.progress_repeats:
            out.append(f"progress bars with more than one line: {self.progress_repeats[:3]}")
        if self.wide_tables:
            out.append(f"Reproduction check tables wider than the column: {self.wide_tables}")
        if self.wide_math:
            out.append(f"display equations wider than the column (split them): {self.wide_math}")
        return out


_PAGE_JS = r"""
async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) { await MathJax.startup.promise; }
  const math = Array.from(document.querySelectorAll('.math'));
  const untypeset = math.filter(el => !el.querySelector('mjx-container')).length;
  const broken = Array.from(document.images).filter(img => !(img.complete && img.naturalWidth > 0))
                      .map(img => img.getAttribute('src'));
  const outputs = Array.from(document.querySelectorAll('div.cell_output .output pre, div.cell_output pre'))
                       .map(el => el.textContent);
  const wide = Array.from(document.querySelectorAll('table.book-claims'))
                    .filter(t => t.scrollWidth > t.parentElement.clientWidth + 1 ||
                                 t.getBoundingClientRect().right > document.querySelector('main, article, body')
                                                                           .getBoundingClientRect().right + 1)
                    .map(t => `${t.scrollWidth}px in ${t.parentElement.clientWidth}px`);
  const wideMath = Array.from(document.querySelectorAll('div.math mjx-container'))
                        .filter(el => el.scrollWidth > el.clientWidth + 1)
                        .map(el => (el.closest('div.math').id || 'equation') + `: ${el.scrollWidth}px in ${el.clientWidth}px`);
  return {math: math.length, untypeset: untypeset, broken: broken, outputs: outputs, wide: wide, wideMath: wideMath};
}
"""


def progress_repeats(outputs: list[str]) -> list[str]:
    """Progress-bar descriptions that appear on more than one line of one output block."""
    out = []
    for text in outputs:
        seen: dict[str, int] = {}
        for line in text.splitlines():
            m = PROGRESS.match(line.strip())
            if m:
                seen[m.group("desc")] = seen.get(m.group("desc"), 0) + 1
        out += [f"{desc!r} x{n}" for desc, n in seen.items() if n > 1]
    return out


def check_page(browser, base: str, page: str, screenshot: Path | None = None) -> PageReport:
    """Load one page in a fresh browser context and report what a reader would hit."""
    report = PageReport(page)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()

    def on_request(request) -> None:
        host = urlparse(request.url).hostname
        if request.url.startswith(("data:", "blob:", "about:")):
            return
        if host != "127.0.0.1":
            report.outside_requests.append(request.url)

    tab.on("request", on_request)
    tab.on("console", lambda msg: report.console_errors.append(msg.text) if msg.type == "error" else None)
    tab.on("pageerror", lambda exc: report.console_errors.append(str(exc)))
    # anything outside 127.0.0.1 is refused at once (it is also recorded above)
    tab.route(re.compile(r"^(?!http://127\.0\.0\.1[:/]).*"), lambda route: route.abort())
    tab.goto(base + page, wait_until="networkidle")  # also follows the redirect of index.html
    info = tab.evaluate(_PAGE_JS)
    report.math, report.untypeset_math = info["math"], info["untypeset"]
    report.broken_images = info["broken"]
    report.progress_repeats = progress_repeats(info["outputs"])
    report.wide_tables = info["wide"]
    report.wide_math = info["wideMath"]
    if screenshot is not None:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        tab.screenshot(path=str(screenshot), full_page=True)
    context.close()
    return report


@contextlib.contextmanager
def launched() -> Iterator[object]:
    """Headless Chromium through Playwright, or a RuntimeError saying what is missing."""
    path = chromium_path()
    if path is None:
        raise RuntimeError("no Chromium found: install Debian's `chromium` (apt-get install chromium) or set "
                           "CHROMIUM=/path/to/chrome")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        raise RuntimeError("the `playwright` package is missing from .venv (it is in requirements.txt)") from exc
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def screenshot_path(page: str) -> Path:
    return SHOTS / (page.replace("/", "__").removesuffix(".html") + ".png")


def main() -> int:
    """``python -m booktools browser``: check every page, print a summary, save screenshots."""
    reports = []
    with serve() as base, launched() as browser:
        for page in pages():
            reports.append(check_page(browser, base, page, screenshot_path(page)))
    bad = [r for r in reports if r.problems()]
    for r in bad:
        print(f"{r.page}: " + "; ".join(r.problems()))
    print(summary(reports))
    return 1 if bad else 0


def summary(reports: list[PageReport]) -> str:
    return (f"browser: {len(reports)} pages; requests outside 127.0.0.1: "
            f"{sum(len(r.outside_requests) for r in reports)}; console errors: "
            f"{sum(len(r.console_errors) for r in reports)}; math elements: {sum(r.math for r in reports)}, "
            f"untypeset: {sum(r.untypeset_math for r in reports)}; broken images: "
            f"{sum(len(r.broken_images) for r in reports)}; progress bars with more than one line: "
            f"{sum(len(r.progress_repeats) for r in reports)}; too-wide claims tables: "
            f"{sum(len(r.wide_tables) for r in reports)}; too-wide equations: "
            f"{sum(len(r.wide_math) for r in reports)}; screenshots in {SHOTS.relative_to(BUILD.parent)}/")
