"""Helpers for the browser test: serve a built book on localhost, drive headless Chromium, and
check one page the way a reader's browser shows it.

Each `check_*` function returns a list of problems (plain sentences, empty when the page is fine),
so the test can name every problem of a page at once, and so the self-test can show that the same
functions report a broken formula and a missing image.
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Debian's package installs /usr/bin/chromium; a test tool's own browser download cannot work here.
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# Without the background-networking switches Chromium keeps dialling Google on a closed network.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ENABLE_HINT = (
    "the browser test needs Debian's Chromium and a CJK font: "
    "`apt-get install chromium fonts-noto-cjk` (or set STORYOPT_CHROMIUM to a Chromium binary)"
)
VIEWPORT = {"width": 1280, "height": 900}
# Console errors that are not the book's: pydata-sphinx-theme 0.17 logs this on a reader's first
# visit (no theme mode in localStorage yet) and then uses "auto", as it should.
KNOWN_CONSOLE_NOISE = ("Got invalid theme mode: . Resetting to auto.",)
# Chromium asks every site for /favicon.ico by itself (the book declares no icon): not the page's.
BROWSER_OWN_REQUESTS = ("favicon.ico",)
MATHJAX_TIMEOUT_MS = 20_000


def find_chromium() -> str | None:
    """The Chromium binary: env STORYOPT_CHROMIUM, else the first of CHROMIUM_NAMES on PATH."""
    explicit = os.environ.get("STORYOPT_CHROMIUM")
    if explicit:
        return explicit if Path(explicit).is_file() else None
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def serve(root: Path) -> Iterator[str]:
    """Serve `root` on 127.0.0.1 at a free port from a background thread; yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="book-http", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@dataclass
class PageLog:
    """What the browser reported while a page loaded: console errors, failed requests to the book
    server, and requests that leave it (blocked: the book must work offline, the test must not
    depend on the network)."""

    base_url: str
    console_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    external_requests: list[str] = field(default_factory=list)

    def attach(self, page: Any) -> None:
        page.route(lambda url: not url.startswith(self.base_url), self._block_external)
        page.on("console", self._on_console)
        page.on("pageerror", lambda exc: self.console_errors.append(f"uncaught exception: {exc}"))
        page.on("requestfailed", self._on_request_failed)
        page.on("response", self._on_response)

    def _block_external(self, route: Any) -> None:
        self.external_requests.append(route.request.url)
        route.abort()

    def _on_console(self, msg: Any) -> None:
        if msg.type != "error" or msg.text.startswith(KNOWN_CONSOLE_NOISE):
            return
        where = (msg.location or {}).get("url", "")
        if self._browser_own(where):
            return
        self.console_errors.append(f"{msg.text} ({where})" if where else msg.text)

    def _browser_own(self, url: str) -> bool:
        return any(url == self.base_url + name for name in BROWSER_OWN_REQUESTS)

    def _on_request_failed(self, request: Any) -> None:
        if request.url.startswith(self.base_url) and not self._browser_own(request.url):
            self.failed_requests.append(f"{request.url} ({request.failure})")

    def _on_response(self, response: Any) -> None:
        if self._browser_own(response.url):
            return
        if response.url.startswith(self.base_url) and response.status >= 400:
            self.failed_requests.append(f"{response.url} (HTTP {response.status})")

    def problems(self) -> list[str]:
        return (
            [f"JavaScript console error: {e}" for e in self.console_errors]
            + [f"failed request to the book server: {r}" for r in self.failed_requests]
            + [f"request outside the book (blocked): {u}" for u in self.external_requests]
        )


# Runs in the page: waits for MathJax, then reports on the math elements Sphinx emitted (`.math`).
_MATH_JS = r"""
async (timeoutMs) => {
  const mathEls = Array.from(document.querySelectorAll('.math'));
  const out = {nMath: mathEls.length, nContainers: 0, loaded: false, startupError: null,
               nErrorBoxes: 0, errors: [], undefinedMacros: [], raw: []};
  if (mathEls.length === 0) return out;
  const mj = window.MathJax;
  if (!mj || !mj.startup || !mj.startup.promise) return out;
  out.loaded = true;
  const timeout = new Promise((_, reject) =>
      setTimeout(() => reject(new Error('MathJax.startup.promise did not settle')), timeoutMs));
  try {
    await Promise.race([mj.startup.promise, timeout]);
  } catch (e) {
    out.startupError = String(e);
  }
  out.nContainers = document.querySelectorAll('mjx-container').length;
  out.nErrorBoxes = document.querySelectorAll('mjx-merror').length;
  // The internal MathML of every typeset formula names its TeX source and its errors; MathJax's
  // `noundefined` package draws an unknown macro as red text, not as an error box.
  const doc = mj.startup.document;
  if (doc && doc.math && mj.startup.toMML) {
    for (const item of doc.math) {
      let mml = '';
      try { mml = mj.startup.toMML(item.root); } catch (e) { continue; }
      const tex = String(item.math).trim().slice(0, 120);
      const err = mml.match(/<merror[^>]*data-mjx-error="([^"]*)"/);
      if (err || mml.includes('<merror')) out.errors.push({error: err ? err[1] : 'merror', tex});
      const undef = mml.match(/<mtext[^>]*mathcolor="red"[^>]*>\s*(\\[A-Za-z]+)/);
      if (undef) out.undefinedMacros.push({macro: undef[1], tex});
    }
  }
  // TeX delimiters left in the plain text of a math element: MathJax never typeset it.
  for (const el of mathEls) {
    const walker = document.createTreeWalker(el, NodeFilter.SHOW_TEXT, {
      acceptNode: (n) => n.parentElement.closest('mjx-container')
          ? NodeFilter.FILTER_REJECT : NodeFilter.FILTER_ACCEPT});
    let text = '';
    while (walker.nextNode()) text += walker.currentNode.nodeValue;
    if (/\\\(|\\\[|\$\$/.test(text)) out.raw.push(text.trim().slice(0, 120));
  }
  return out;
}
"""


def check_math(page: Any) -> list[str]:
    """MathJax typeset every formula of the loaded page, with no error and no raw TeX left."""
    info = page.evaluate(_MATH_JS, MATHJAX_TIMEOUT_MS)
    if info["nMath"] == 0:
        return []
    problems = []
    if not info["loaded"]:
        return [f"the page has {info['nMath']} formulas but MathJax did not load"]
    if info["startupError"]:
        problems.append(f"MathJax did not finish: {info['startupError']}")
    for m in info["errors"]:
        problems.append(f"MathJax error {m['error']!r} in formula {m['tex']!r}")
    if info["nErrorBoxes"] > len(info["errors"]):
        problems.append(f"{info['nErrorBoxes']} MathJax error boxes (mjx-merror) on the page")
    for m in info["undefinedMacros"]:
        problems.append(f"undefined TeX macro {m['macro']} in formula {m['tex']!r}")
    for text in info["raw"]:
        problems.append(f"formula left as raw TeX (not typeset): {text!r}")
    if info["nContainers"] < info["nMath"]:
        problems.append(
            f"MathJax typeset {info['nContainers']} formulas of the {info['nMath']} on the page"
        )
    return problems


_IMAGES_JS = """
() => Array.from(document.images).map((img) => ({
  src: img.currentSrc || img.src || img.getAttribute('src') || '',
  alt: img.alt || '',
  complete: img.complete,
  width: img.naturalWidth,
}))
"""


def check_images(page: Any) -> list[str]:
    """Every <img> of the page loaded (natural width above 0)."""
    # Lazy images load only near the viewport: load them all before judging.
    page.evaluate(
        "() => document.querySelectorAll('img[loading=lazy]')"
        ".forEach((img) => { img.loading = 'eager'; })"
    )
    page.wait_for_function(
        "() => Array.from(document.images).every((img) => img.complete)", timeout=10_000
    )
    return [
        f"image did not load: {img['src']} (alt {img['alt']!r})"
        for img in page.evaluate(_IMAGES_JS)
        if img["width"] <= 0
    ]


def check_launch_buttons(page: Any, docname: str, colab_url: str) -> list[str]:
    """The Colab launch button opens this page's notebook and the download buttons point at its
    sources, which the server holds. `docname` is the page path without suffix."""
    links = page.evaluate(
        "() => Array.from(document.querySelectorAll('a[href]'))"
        ".map((a) => ({href: a.href, cls: a.className, title: a.title || ''}))"
    )
    problems = []
    colab = [a["href"] for a in links if a["href"].startswith(colab_url)]
    if not colab:
        problems.append("no Colab launch button")
    elif not all(h.endswith(f"/{docname}.ipynb") for h in colab):
        problems.append(f"the Colab button does not open {docname}.ipynb: {colab}")
    downloads = [
        a["href"] for a in links if "btn-download" in a["cls"] and "/_sources/" in a["href"]
    ]
    if not downloads:
        problems.append("no download button for the page source")
    for href in downloads:
        if f"/_sources/{docname}." not in href:
            problems.append(f"download button points at another page's source: {href}")
            continue
        response = page.request.get(href)
        if response.status != 200:
            problems.append(f"download button target is missing: {href} (HTTP {response.status})")
    return problems


def search(page: Any, base_url: str, word: str) -> list[str]:
    """Type `word` into search.html's box and press Enter; the result links (relative paths)."""
    page.goto(base_url + "search.html", wait_until="load")
    box = page.locator("form.bd-search input[name='q']:visible").first
    box.fill(word)
    with page.expect_navigation(wait_until="load"):
        box.press("Enter")
    # Sphinx fills the summary line only when the search has finished listing its results.
    page.wait_for_function(
        "() => { const s = document.querySelector('#search-results .search-summary');"
        " return s !== null && s.textContent.trim() !== ''; }",
        timeout=20_000,
    )
    hrefs = page.eval_on_selector_all(
        "#search-results ul.search li a", "(as) => as.map((a) => a.getAttribute('href'))"
    )
    return [h.split("?")[0].split("#")[0] for h in hrefs]


def launch(playwright: Any, executable: str) -> Any:
    """Headless Chromium from `executable` (never a downloaded browser)."""
    return playwright.chromium.launch(
        executable_path=executable, headless=True, args=CHROMIUM_ARGS, timeout=30_000
    )


def open_page(browser: Any, url: str, base_url: str) -> tuple[Any, PageLog]:
    """A fresh tab with `url` loaded (and its fonts), listening for errors from the start."""
    page = browser.new_page(viewport=VIEWPORT, locale="zh-CN")
    log = PageLog(base_url)
    log.attach(page)
    page.goto(url, wait_until="load", timeout=30_000)
    page.evaluate("() => document.fonts.ready.then(() => true)")
    return page, log


def check_page(page: Any, log: PageLog, docname: str, colab_url: str, notebook: bool) -> list[str]:
    """Every check of one loaded page: formulas, images, buttons (notebook pages), then the
    browser's log (last, so errors raised by the checks' own loads are counted)."""
    problems = check_math(page) + check_images(page)
    if notebook:
        problems += check_launch_buttons(page, docname, colab_url)
    return problems + log.problems()
