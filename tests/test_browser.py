"""The browser fixture itself: Debian's Chromium drives a real page from a real loopback server."""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tests.browser import ARTIFACTS, artifact_path, is_local_url, open_page

PAGE = """<!doctype html><html><head><title>probe</title><link rel="icon" href="data:,"></head>
<body style="margin:0;background:#fff"><div style="width:50px;height:50px;background:#f00"></div>
<script>document.title = "ran"; %s</script></body></html>"""


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A folder served by ``http.server`` on 127.0.0.1 (port chosen by the OS)."""
    handler = functools.partial(QuietHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", tmp_path
    finally:
        server.shutdown()
        server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def test_clean_page_loads_and_draws(browser_page, served) -> None:
    base, folder = served
    (folder / "ok.html").write_text(PAGE % "")
    browser_page.page.goto(f"{base}/ok.html")
    assert browser_page.page.title() == "ran"  # JavaScript ran in the system browser
    browser_page.assert_clean()
    shot = browser_page.screenshot("browser-probe")
    assert shot.parent == ARTIFACTS and (ARTIFACTS / ".gitignore").read_text() == "*\n"
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert tuple(pixels[10, 10]) == (255, 0, 0) and tuple(pixels[100, 100]) == (255, 255, 255)


def test_console_errors_and_cdn_requests_are_caught(browser_page, served) -> None:
    base, folder = served
    script = "console.error('boom'); fetch('https://unpkg.com/vitessce').catch(() => {});"
    (folder / "bad.html").write_text(PAGE % script)
    browser_page.page.goto(f"{base}/bad.html")
    browser_page.page.wait_for_timeout(300)  # let the fetch fail
    assert browser_page.console_errors[0].startswith("boom [http://127.0.0.1:")
    assert browser_page.external_requests == ["https://unpkg.com/vitessce"]
    with pytest.raises(AssertionError, match="non-loopback request: https://unpkg.com/vitessce"):
        browser_page.assert_clean()


def test_pages_do_not_share_state(chromium, served) -> None:
    """Each page gets a new context (own storage and cache): one test cannot see another's leftovers."""
    base, folder = served
    (folder / "ok.html").write_text(PAGE % "")
    found = []
    for _ in range(2):
        with open_page(chromium) as browser_page:
            browser_page.page.goto(f"{base}/ok.html")
            found.append(browser_page.page.evaluate("localStorage.getItem('seen')"))
            browser_page.page.evaluate("localStorage.setItem('seen', 'yes')")
            browser_page.assert_clean()
    assert found == [None, None]


def test_helpers_refuse_odd_names() -> None:
    assert is_local_url("file:///tmp/report.html") and not is_local_url("http://example.org/")
    with pytest.raises(ValueError, match="letters, digits"):
        artifact_path("../escape")
