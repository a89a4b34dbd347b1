"""A local web server for the built book and a headless Chromium to look at it.

Chromium is the system's (Debian packages ``chromium`` and ``chromium-driver``), driven
by Playwright through ``executable_path``: Playwright's own browser download is never
used. The browser starts with an empty profile and no background networking, and every
request that is not for the local server is blocked and recorded, so a page that tries
to load anything from the internet fails the test even on a machine that is online.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Page, Route

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
]
MISSING_HELP = (
    "headless Chromium is not installed (looked for {candidates}); install the Debian packages: "
    "apt-get install -y chromium chromium-driver"
)


def find_chromium() -> str | None:
    """The path of the system Chromium, or None."""
    for candidate in CHROMIUM_CANDIDATES:
        path = (
            candidate
            if os.path.isabs(candidate) and os.access(candidate, os.X_OK)
            else shutil.which(candidate)
        )
        if path:
            return path
    return None


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (stdlib signature)
        pass


@contextlib.contextmanager
def serve_directory(directory: Path) -> Iterator[str]:
    """Serve ``directory`` on 127.0.0.1 (a free port) in a thread; yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="book-http", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@dataclass
class PageProblems:
    """What went wrong while a page loaded (each a human-readable line)."""

    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    blocked_requests: list[str] = field(default_factory=list)

    def all(self) -> list[str]:
        return self.console_errors + self.page_errors + self.failed_requests + self.blocked_requests


@contextlib.contextmanager
def chromium_context(executable: str) -> Iterator[BrowserContext]:
    """A Playwright persistent context of the system Chromium with an empty, temporary profile."""
    from playwright.sync_api import sync_playwright

    with (
        tempfile.TemporaryDirectory(prefix="sydsgpt-chromium-") as profile,
        sync_playwright() as pw,
    ):
        context = pw.chromium.launch_persistent_context(
            user_data_dir=profile,
            executable_path=executable,
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1280, "height": 900},
            service_workers="block",
        )
        try:
            yield context
        finally:
            context.close()


def open_page(
    context: BrowserContext, url: str, allowed_host: str = "127.0.0.1"
) -> tuple[Page, PageProblems]:
    """Open ``url`` in a new tab, recording console errors, page errors and failed or blocked
    requests.

    Requests to any host other than ``allowed_host`` are aborted and recorded.
    """
    problems = PageProblems()
    page = context.new_page()

    def route(route_obj: Route) -> None:
        host = urlparse(route_obj.request.url).hostname
        if route_obj.request.url.startswith("data:") or host == allowed_host:
            route_obj.continue_()
        else:
            problems.blocked_requests.append(f"request to another host: {route_obj.request.url}")
            route_obj.abort()

    page.route("**/*", route)
    page.on(
        "console",
        lambda msg: (
            msg.type == "error"
            and problems.console_errors.append(
                f"console error: {msg.text} ({msg.location.get('url', '')})"
            )
        ),
    )
    page.on("pageerror", lambda exc: problems.page_errors.append(f"uncaught exception: {exc}"))
    page.on(
        "requestfailed",
        lambda req: problems.failed_requests.append(f"request failed: {req.url} ({req.failure})"),
    )
    page.on(
        "response",
        lambda resp: (
            resp.status >= 400
            and problems.failed_requests.append(f"HTTP {resp.status}: {resp.url}")
        ),
    )
    page.goto(url, wait_until="load")
    return page, problems


# Wait until MathJax 3 has typeset the page (resolves immediately on pages without MathJax).
WAIT_FOR_MATHJAX = """async () => {
  if (!document.querySelector('script[src*="mathjax"]')) return 'no mathjax';
  const t0 = Date.now();
  while (!(window.MathJax && MathJax.startup && MathJax.startup.promise)) {
    if (Date.now() - t0 > 20000) return 'mathjax did not start';
    await new Promise(r => setTimeout(r, 50));
  }
  await MathJax.startup.promise;
  return 'typeset';
}"""

# Load every image eagerly and report those that did not decode (naturalWidth 0).
BROKEN_IMAGES = """async () => {
  const images = Array.from(document.images);
  for (const img of images) { img.loading = 'eager'; }
  await Promise.all(images.map(img => img.decode().catch(() => null)));
  return images.filter(img => img.naturalWidth === 0).map(img => img.getAttribute('src'));
}"""

# Images without a text alternative, or whose alt is just a file name.
IMAGES_WITHOUT_ALT = """() => Array.from(document.images)
  .filter(img => { const alt = (img.getAttribute('alt') || '').trim();
                   return !alt || /\\.(png|jpe?g|svg|gif)$/i.test(alt); })
  .map(img => img.getAttribute('src'))"""

# How far the page is wider than the window (a horizontal scroll bar for the whole page).
PAGE_OVERFLOW_PX = "() => document.documentElement.scrollWidth - window.innerWidth"

# Code blocks that scroll sideways: the code of cell inputs (div.cell_input) and the package
# source that show_source(...) displays (a highlighted HTML output). Each as
# {kind, chars, line, overflow_px}: the length of its widest line, the first 60 characters of
# that line and how many pixels too wide it is.
# Printed outputs are not code and are not looked at (they wrap; text tables, marked
# "text-table", and cells tagged "nowrap-output" keep their columns and may scroll).
CODE_OVERFLOW = """() => {
  const kinds = [['cell input', 'div.cell_input pre'],
                 ['show_source output', 'div.cell_output div.output.text_html div.highlight pre']];
  const found = [];
  for (const [kind, selector] of kinds) {
    for (const pre of document.querySelectorAll(selector)) {
      if (pre.scrollWidth <= pre.clientWidth + 1) continue;
      const widest = pre.textContent.split('\\n')
        .reduce((a, b) => (b.length > a.length ? b : a), '');
      found.push({kind, chars: widest.length, line: widest.slice(0, 60),
                  overflow_px: pre.scrollWidth - pre.clientWidth});
    }
  }
  return found;
}"""
