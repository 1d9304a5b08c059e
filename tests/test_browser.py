"""The rendered book as a reader opens it (stage 5 of `make test`): every page of `_build/html`, served on
127.0.0.1 and loaded in headless Chromium, makes no request outside 127.0.0.1, logs no console error, typesets
every formula, loads every image, shows at most one line per progress bar, and keeps the Reproduction check
table inside the text column. A screenshot of every page goes to `_build/screenshots/`.

Without Chromium the whole stage is skipped with one line saying so (never silently)."""

from __future__ import annotations

import json
import re

import pytest

from booktools import browser
from booktools.toc import BUILD

if browser.chromium_path() is None:
    pytest.skip("browser stage skipped: no Chromium (install Debian's `chromium`, which .ci/run does when root, "
                "or set CHROMIUM=/path/to/chrome)", allow_module_level=True)
PAGES = browser.pages() if browser.HTML.is_dir() else []
if not PAGES:
    pytest.skip("browser stage skipped: no rendered book in _build/html (`make book` builds it)",
                allow_module_level=True)
REPORTS: list[browser.PageReport] = []
re_outside = re.compile(r"^(?!http://127\.0\.0\.1[:/]|ws://127\.0\.0\.1[:/]).*")


@pytest.fixture(scope="module")
def chromium():
    with browser.serve() as base, browser.launched() as b:
        yield base, b
    (BUILD / "timings").mkdir(parents=True, exist_ok=True)
    (BUILD / "timings" / "browser-summary.json").write_text(json.dumps({"line": browser.summary(REPORTS)}))


@pytest.mark.parametrize("page", PAGES)
def test_page_reads_offline(chromium, page):
    base, b = chromium
    report = browser.check_page(b, base, page, browser.screenshot_path(page))
    REPORTS.append(report)
    assert not report.problems(), f"{page}: " + "; ".join(report.problems())


BAD_PAGE = """<!DOCTYPE html><html><head>
<script src="https://cdn.example.org/lib.js"></script>
<script>window.MathJax = {startup: {typeset: false}};</script>
</head><body><main style="width: 400px">
<span class="math">\\(x^2\\)</span>
<img src="missing.png">
<div class="cell_output"><pre>train:  50%|#####     | 1/2
train: 100%|##########| 2/2</pre></div>
<div><table class="book-claims" style="width: 900px; table-layout: fixed"><tr><td>wide</td></tr></table></div>
<div class="math"><mjx-container style="display: block; overflow-x: auto; width: 300px"><span style="display: inline-block; width: 900px">x</span></mjx-container></div>
<script>console.error("boom");</script>
</main></body></html>"""


def test_the_checks_catch_what_a_reader_would_hit(chromium, tmp_path):
    """A page with every fault the stage looks for: each is reported (so the page tests above can fail)."""
    (tmp_path / "bad.html").write_text(BAD_PAGE)
    with browser.serve(tmp_path) as base:
        report = browser.check_page(chromium[1], base, "bad.html")
    assert any("cdn.example.org" in u for u in report.outside_requests)
    assert any("boom" in e for e in report.console_errors)
    assert report.math == 2 and report.untypeset_math == 1
    assert report.broken_images == ["missing.png"]
    assert report.progress_repeats == ["'train' x2"]
    assert len(report.wide_tables) == 1 and len(report.wide_math) == 1
    assert len(report.problems()) == 7


def test_progress_repeats_counts_lines_per_bar_and_output():
    assert browser.progress_repeats(["a: 10%|#| 1/10\nb: 100%|#| 1/1\n", "a: 100%|#| 10/10\n"]) == []
    assert browser.progress_repeats(["a: 10%|#| 1/10\na: 100%|#| 10/10\n"]) == ["'a' x2"]


def test_jupyterlab_opens_a_chapter_and_runs_its_first_cells(chromium):
    """The executing reader's path (`make lab`): JupyterLab's page, a chapter opened with the book's kernel, its
    first cells run with Shift+Enter, the sizes table printed. The server listens on 127.0.0.1 only."""
    from booktools import lab

    lab.install_kernel()
    with lab.running_server() as server:
        context = chromium[1].new_context(viewport={"width": 1280, "height": 900})
        tab = context.new_page()
        tab.route(re_outside, lambda route: route.abort())  # JupyterLab must work offline too
        tab.goto(f"{server.url}lab/tree/appendix/roofline.ipynb?token={server.token}", wait_until="load")
        tab.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
        tab.wait_for_selector(f"text={lab.DISPLAY_NAME}", timeout=60_000)   # the kernel shown in the toolbar
        tab.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=60_000)
        code = tab.locator(".jp-Notebook .jp-CodeCell")
        code.first.locator(".jp-InputArea-editor").click()
        for _ in range(3):  # parameters, sizes table, setup
            tab.keyboard.press("Shift+Enter")
        tab.wait_for_function("() => Array.from(document.querySelectorAll('.jp-OutputArea-output'))"
                              ".some(el => el.textContent.includes('matmul_n'))", timeout=120_000)
        tab.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=120_000)
        errors = tab.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']").all_text_contents()
        assert not [e for e in errors if "Traceback" in e or "Error" in e], errors
        tab.screenshot(path=str(browser.SHOTS / "jupyterlab__roofline.png"))
        context.close()
        assert all(a.startswith(("127.0.0.1:", "::1:")) for a in server.listening()), server.listening()


@pytest.mark.parametrize("page", [p for p in PAGES if p.startswith("book/") and p.count("/") == 2], ids=str)
def test_a_chapter_downloads_as_notebook_and_text_form_offline(chromium, page):
    base, b = chromium
    context = b.new_context()
    tab = context.new_page()
    tab.goto(base + page, wait_until="load")
    links = tab.eval_on_selector_all(".dropdown-download-buttons a[href]", "els => els.map(e => e.href)")
    context.close()
    wanted = [u for u in links if u.endswith((".ipynb", ".md"))]
    assert {u.rsplit(".", 1)[1] for u in wanted} == {"ipynb", "md"}, f"{page}: download menu offers {links}"
    for url in wanted:
        assert url.startswith(base), f"{page}: {url} is not served by the book"
        response = b.new_context().request.get(url)
        assert response.status == 200 and len(response.body()) > 1000, f"{page}: {url} -> {response.status}"
