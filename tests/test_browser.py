"""The built book as a reader's browser shows it: every page of `_toc.yml` opened in headless
Chromium from a local server, with no JavaScript error, every formula typeset by MathJax, every
image loaded and, on notebook pages, working Colab and download buttons; the search page finds a
Chinese word; a patched page shows that the checks catch a broken formula and a missing image.

Screenshots of every page land in `_build/screenshots/<page>.png` for review.
Needs Debian's Chromium (`apt-get install chromium fonts-noto-cjk`); skipped without it, except
when STORYOPT_REQUIRE_BROWSER=1 (set by `.ci/run`), where a missing browser fails.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest
import yaml

from . import browser as bt
from .conftest import ROOT
from .test_book import toc_files

pytestmark = pytest.mark.browser

CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
COLAB_URL = CONFIG["launch_buttons"]["colab_url"].rstrip("/") + "/"
PAGES = toc_files()
SEARCH_WORD = "优化"
SEARCH_PAGE = "chapters/07_00_chapter"  # the chapter landing page, 第7章 优化技术
# Unbalanced braces; an undefined macro; a TeX error (MathJax draws an error box).
BROKEN_TEX = ("\\frac{", "\\notacommand{x}", "x^2^3")
MATH_RE = re.compile(r'(<(span|div) class="math(?: [^"]*)?">)(.*?)(</\2>)', re.DOTALL)


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("STORYOPT_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason} (STORYOPT_REQUIRE_BROWSER=1 makes this a failure)")
    pytest.skip(reason)


def _is_notebook_page(docname: str, html: str) -> bool:
    """A page that executes (its source has a kernelspec) or that the build gave a Colab link."""
    md = (ROOT / f"{docname}.md").read_text(encoding="utf-8")
    front = md.split("---", 2)[1] if md.startswith("---") else ""
    return "kernelspec:" in front or COLAB_URL in html


@pytest.fixture(scope="module")
def chromium() -> str:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _unavailable("the Python package playwright is missing: pip install -r requirements.txt")
    path = bt.find_chromium()
    if path is None:
        _unavailable(f"Chromium not found; {bt.ENABLE_HINT}")
    return path


@pytest.fixture(scope="module")
def browser(chromium: str) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chrome = bt.launch(playwright, chromium)
        yield chrome
        chrome.close()


@pytest.fixture(scope="module")
def book_url(built_html: Path) -> Iterator[str]:
    with bt.serve(built_html) as url:
        yield url


@pytest.fixture(scope="module")
def screenshots(built_html: Path) -> Path:
    out = built_html.parent / "screenshots"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    return out


@pytest.mark.parametrize("docname", PAGES)
def test_page_in_browser(
    browser: Any, book_url: str, built_html: Path, screenshots: Path, docname: str
) -> None:
    html = (built_html / f"{docname}.html").read_text(encoding="utf-8")
    page, log = bt.open_page(browser, f"{book_url}{docname}.html", book_url)
    try:
        problems = bt.check_page(page, log, docname, COLAB_URL, _is_notebook_page(docname, html))
        shot = screenshots / f"{docname}.png"
        shot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shot), full_page=True)
    finally:
        page.close()
    assert not problems, f"{docname}.html in Chromium:\n  " + "\n  ".join(problems)


def test_search_page_finds_a_chinese_word(browser: Any, book_url: str, screenshots: Path) -> None:
    holders = {d for d in PAGES if SEARCH_WORD in (ROOT / f"{d}.md").read_text(encoding="utf-8")}
    assert SEARCH_PAGE in holders, f"{SEARCH_PAGE}.md no longer holds {SEARCH_WORD!r}"
    page = browser.new_page(viewport=bt.VIEWPORT, locale="zh-CN")
    log = bt.PageLog(book_url)
    log.attach(page)
    try:
        results = bt.search(page, book_url, SEARCH_WORD)
        page.screenshot(path=str(screenshots / "search.png"), full_page=True)
    finally:
        page.close()
    found = {r.removesuffix(".html") for r in results}
    assert f"{SEARCH_PAGE}.html" in results, (
        f"searching {SEARCH_WORD!r} on search.html does not list {SEARCH_PAGE}.html: {results}"
    )
    assert found <= holders, f"search lists pages without {SEARCH_WORD!r}: {found - holders}"
    assert not log.problems(), "search.html in Chromium:\n  " + "\n  ".join(log.problems())


def _patch_page(html: str) -> str:
    """Break a built page: the first formula becomes `\\frac{` (unbalanced, so MathJax leaves it as
    raw TeX), two formulas are added (an undefined macro, a TeX error), and the first image points
    at a file that does not exist."""
    first = MATH_RE.search(html)
    assert first, "the patched page must hold a formula"
    inline = first.group(2) == "span"
    body = f"\\({BROKEN_TEX[0]}\\)" if inline else f"\\[{BROKEN_TEX[0]}\\]"
    html = html[: first.start(3)] + body + html[first.end(3) :]
    added = "".join(
        f'<p><span class="math notranslate nohighlight">\\({tex}\\)</span></p>'
        for tex in BROKEN_TEX[1:]
    )
    assert "</main>" in html, "the page has no <main> to add formulas to"
    html = html.replace("</main>", added + "</main>", 1)
    html, n = re.subn(r'(<img\b[^>]*\bsrc=")[^"]*(")', r"\1no-such-figure.png\2", html, count=1)
    if n == 0:
        html = html.replace("</main>", '<img src="no-such-figure.png" alt="missing"></main>', 1)
    return html


def test_checks_catch_a_broken_formula_and_a_missing_image(
    browser: Any, built_html: Path, tmp_path: Path
) -> None:
    with_math = [d for d in PAGES if MATH_RE.search((built_html / f"{d}.html").read_text())]
    assert with_math, "no page of the book has a formula to break"
    docname = with_math[0]
    copy = tmp_path / "html"
    shutil.copytree(built_html, copy, symlinks=True)
    target = copy / f"{docname}.html"
    target.write_text(_patch_page(target.read_text(encoding="utf-8")), encoding="utf-8")

    with bt.serve(copy) as url:
        page, log = bt.open_page(browser, f"{url}{docname}.html", url)
        try:
            problems = bt.check_page(page, log, docname, COLAB_URL, notebook=False)
        finally:
            page.close()
    report = f"{docname}.html, patched, reported:\n" + "\n".join(problems)
    assert any("not typeset" in p and "\\frac{" in p for p in problems), report
    assert any(p.startswith("MathJax typeset ") for p in problems), report
    assert any("MathJax error" in p and "x^2^3" in p for p in problems), report
    assert any("undefined TeX macro \\notacommand" in p for p in problems), report
    assert any("image did not load" in p and "no-such-figure.png" in p for p in problems), report
    assert any("failed request" in p and "no-such-figure.png" in p for p in problems), report
