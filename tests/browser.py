"""Debian's Chromium, headless, driven by Playwright: the browser the view and report tests look with.

Playwright's own browser download needs the internet, so the tests launch the system browser
(``/usr/bin/chromium``, installed by ``.ci/run`` with apt) through ``executable_path``. The pieces:

- :func:`launch_chromium` (a context manager, usable outside pytest, e.g. by a benchmark) starts
  one headless browser. Playwright gives every launch a fresh, temporary user-data dir, so no
  profile, cache or extension of the user's is read.
- :func:`open_page` opens a page in a new browser context (its own cache and cookies, so one test
  cannot be served another test's cached chunks) and records what a test wants to assert on:
  console errors, uncaught page errors, failed requests and requests to non-loopback hosts.
- :class:`BrowserPage.screenshot` saves a PNG under ``tests/_artifacts/`` (ignored by git): the
  screenshots a run leaves behind for people to look at.
- The fixtures ``chromium`` (one browser per pytest worker) and ``browser_page`` (a fresh page per
  test) are exposed to every test by ``tests/conftest.py``.

Offline by construction: the host resolver of the browser maps every name but ``localhost`` to
"not found", so a page that tries a CDN fails loudly (a failed request, usually a console error)
instead of quietly working on a machine that happens to be online.

Chromium asks every http page for ``/favicon.ico`` and logs a 404 as a console error: pages under
test declare their icon (``<link rel="icon" href="data:,">``) or serve one.

Example (in a test)::

    def test_page(browser_page):
        browser_page.page.goto(url)
        browser_page.assert_clean()
        browser_page.screenshot("report")
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest

log = logging.getLogger(__name__)

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).parent / "_artifacts"
# --headless is added by Playwright itself (headless=True); the rest keep the browser from phoning
# home (updates, sync, QUIC probes) and from needing a GPU or a sandbox (containers have neither).
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
)
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}
# schemes that never leave the machine
LOCAL_SCHEMES = {"file", "data", "blob", "about", "chrome", "devtools"}


def is_local_url(url: str) -> bool:
    """Whether a request stays on this machine (loopback host or a local scheme).

    >>> is_local_url("http://127.0.0.1:8000/a.zarr/0/0.0"), is_local_url("https://unpkg.com/x.js")
    (True, False)
    """
    parts = urlsplit(url)
    return parts.scheme in LOCAL_SCHEMES or (parts.hostname or "") in LOOPBACK_HOSTS


def artifact_path(name: str) -> Path:
    """``tests/_artifacts/<name>.png``, the folder created (and ignored by git) on first use.

    >>> artifact_path("report").name
    'report.png'
    """
    if not re.fullmatch(r"[A-Za-z0-9._-]+", name):
        raise ValueError(f"artifact name {name!r}: use letters, digits, '.', '_' and '-' only")
    ARTIFACTS.mkdir(exist_ok=True)
    # the folder ignores itself, so no test run can leave screenshots for `git add`
    ignore = ARTIFACTS / ".gitignore"
    if not ignore.exists():
        ignore.write_text("*\n")
    return ARTIFACTS / (name if name.endswith(".png") else f"{name}.png")


@contextmanager
def launch_chromium(*, headless: bool = True) -> Iterator[object]:
    """Start Debian's Chromium through Playwright and yield the ``playwright`` ``Browser``.

    Fails (never skips) with a message saying how to install the browser when it is missing.
    """
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (`apt-get install chromium`, see .ci/run)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=headless, args=list(CHROMIUM_ARGS))
        log.debug("launched %s %s", CHROMIUM, browser.version)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class BrowserPage:
    """A Playwright page and what it reported while a test drove it."""

    page: object  # playwright.sync_api.Page
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    external_requests: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        """Everything that makes a page load unclean, one line each."""
        return (
            [f"console error: {m}" for m in self.console_errors]
            + [f"page error: {m}" for m in self.page_errors]
            + [f"failed request: {m}" for m in self.failed_requests]
            + [f"non-loopback request: {m}" for m in self.external_requests]
        )

    def assert_clean(self) -> None:
        """Fail with every console error, page error, failed or non-loopback request seen so far."""
        problems = self.problems()
        assert not problems, "the page was not clean:\n" + "\n".join(problems)

    def screenshot(self, name: str, *, full_page: bool = True) -> Path:
        """Save a PNG of the page as ``tests/_artifacts/<name>.png`` and return its path."""
        path = artifact_path(name)
        self.page.screenshot(path=str(path), full_page=full_page)
        return path


def console_line(msg: object) -> str:
    """A console message with the resource it is about (a 404 names no URL in its text)."""
    url = (msg.location or {}).get("url", "")
    return f"{msg.text} [{url}]" if url else msg.text


@contextmanager
def open_page(browser: object, *, viewport: tuple[int, int] = (1280, 900)) -> Iterator[BrowserPage]:
    """A new page in a new browser context (own cache and cookies) that records console errors."""
    context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]})
    page = context.new_page()
    seen = BrowserPage(page)
    page.on("console", lambda msg: seen.console_errors.append(console_line(msg)) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: seen.page_errors.append(str(exc)))
    page.on("requestfailed", lambda req: seen.failed_requests.append(f"{req.url} ({req.failure})"))
    page.on("request", lambda req: None if is_local_url(req.url) else seen.external_requests.append(req.url))
    try:
        yield seen
    finally:
        context.close()


@pytest.fixture(scope="session")
def chromium() -> Iterator[object]:
    """One headless Chromium per pytest worker (xdist workers each start their own)."""
    with launch_chromium() as browser:
        yield browser


@pytest.fixture
def browser_page(chromium: object) -> Iterator[BrowserPage]:
    """A fresh page (new context: empty cache) in the worker's Chromium; see :class:`BrowserPage`."""
    with open_page(chromium) as seen:
        yield seen
