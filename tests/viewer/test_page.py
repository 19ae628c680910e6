"""The view in a real browser: Debian's Chromium (headless, tests/browser.py) against the loopback server.

The machine may be slow (software WebGL, shared cores), so every wait is for a condition, with a
generous limit; nothing here measures time (benchmarks/bench_view.py does).
"""

from __future__ import annotations

import io
import re
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from tests.browser import BrowserPage

from spora_sd.viewer.server import Request, ViewServer

#: How long a condition may take to hold (the first page load compiles the 4.4 MB bundle on a software renderer).
WAIT_S = 240.0
#: Zarr's loader asks for metadata keys that may not exist (``.zattrs`` of a Zarr v3 image, ``.zarray``
#: of a group) and takes a 404 as "absent"; Vitessce logs that these 404s are expected. They are the
#: only console errors allowed, each matched to a 404 in the server's own log.
ZARR_PROBES = (".zattrs", ".zarray", ".zgroup", "zarr.json")
_CONSOLE_404 = re.compile(r"status of 404 \(Not Found\) \[(?P<url>[^\]]+)\]$")


def wait_for(condition: Callable[[], object], what: str, timeout: float = WAIT_S) -> object:
    """Poll ``condition`` until it returns something true; fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.25)


def chunk_requests(server: ViewServer, tissue: str) -> list[Request]:
    """Image chunk reads (one channel of one chunk each) of one tissue, as the server logged them."""
    return [r for r in server.log.data_requests(tissue) if "/0/c/" in r.path and r.method == "GET" and r.status == 200]


def assert_clean_but_zarr_probes(seen: BrowserPage, server: ViewServer) -> None:
    """No console error, page error or external request, except the 404s of Zarr metadata probes."""
    not_found = {r.path for r in server.log.snapshot() if r.status == 404}
    unexpected = []
    for line in seen.console_errors:
        match = _CONSOLE_404.search(line)
        path = match and match["url"].removeprefix(server.url.rstrip("/"))
        if not (path and path.startswith("/data/") and path.endswith(ZARR_PROBES) and path in not_found):
            unexpected.append(line)
    assert not unexpected, "console errors:\n" + "\n".join(unexpected)
    assert not seen.page_errors, seen.page_errors
    assert not seen.external_requests, seen.external_requests
    # Vitessce cancels the tile requests of a view it leaves (net::ERR_ABORTED); nothing else may fail
    failed = [f for f in seen.failed_requests if not ("/data/" in f and "ERR_ABORTED" in f)]
    assert not failed, failed
    assert not [p for p in not_found if not (p.startswith("/data/") and p.endswith(ZARR_PROBES))], not_found


def view_panel(page: object, title: str) -> object:
    """The grid item of one Vitessce view, found by its title ("Spatial", "Spatial Layers", ...)."""
    return page.locator(".react-grid-item").filter(has=page.get_by_role("heading", name=title, exact=True))


def spatial_canvas_pixels(seen: BrowserPage) -> np.ndarray:
    """The spatial view's WebGL canvas as an RGB array (a screenshot of that element)."""
    from PIL import Image

    canvas = view_panel(seen.page, "Spatial").locator("canvas").first
    png = canvas.screenshot(timeout=WAIT_S * 1000)
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def tissue_is_drawn(pixels: np.ndarray) -> bool:
    """The image layer has drawn where the tissue is: the centre (the view opens fitted on the
    image, whose tissue blob is centred) is mostly lit, and includes the nuclear marker's blue."""
    h, w, _ = pixels.shape
    centre = pixels[int(h * 0.4) : int(h * 0.6), int(w * 0.45) : int(w * 0.55)].astype(int)
    lit = centre.max(axis=2) > 40
    bluish = (centre[..., 2] > 80) & (centre[..., 2] > centre[..., 0] + 30)
    return bool(lit.mean() > 0.3 and bluish.mean() > 0.01)


@pytest.fixture(scope="module")
def view_server(small_cohort: Path) -> ViewServer:
    with ViewServer(small_cohort) as server:
        yield server


def test_page_draws_the_image_with_real_channel_names(view_server: ViewServer, browser_page: BrowserPage) -> None:
    server, seen, page = view_server, browser_page, browser_page.page
    tissue = server.session.tissues[0]
    server.log.clear()
    page.goto(server.tissue_url(tissue))

    # the browser reads the image's chunks, one channel each
    wait_for(lambda: chunk_requests(server, tissue), "the first image chunk request")
    # the layer controller lists the image's channels by their real names: one picker per shown
    # channel, set to that channel, each offering every channel of the image
    controller = view_panel(page, "Spatial Layers")
    view = server.session.tissue_view(tissue)
    names = list(view.channels)
    shown = [names[i] for i in view.shown]
    pickers = controller.locator("select")
    wait_for(lambda: pickers.count() == len(shown), f"{len(shown)} channel pickers in the layer controller")
    assert [p.evaluate("s => s.options[s.selectedIndex].text") for p in pickers.all()] == shown
    for picker in pickers.all():
        assert picker.evaluate("s => Array.from(s.options, o => o.text)") == names
    assert names[:3] == ["DNA1", "H3C1", "PTPRC"]  # the synthetic panel's HUGO names, not "Channel 0"

    # the cells are outlined and coloured by cell type once the cell sets have loaded
    wait_for(lambda: "cell type" in page.locator("body").inner_text(), "the cell sets")
    wait_for(lambda: tissue_is_drawn(spatial_canvas_pixels(seen)), "the image layer to draw the tissue")
    # the heatmap and the cell-set view are mounted once the image's first tile is up (the bundle's
    # image-first.js): after the image's chunks arrived, and they are there
    wait_for(lambda: view_panel(page, "Heatmap").locator("canvas").count(), "the heatmap")
    released, chunk_arrived = page.evaluate(
        """() => [performance.getEntriesByName("spora:views-released").map((m) => m.startTime),
                  performance.getEntriesByType("resource").filter((e) => e.name.includes("/image.zarr/0/c/"))
                    .map((e) => e.responseEnd)]"""
    )
    assert len(released) == 1 and chunk_arrived and min(chunk_arrived) < released[0], (released, chunk_arrived)
    seen.screenshot("view")
    # the browser fetched the shown channels and no other (the server slices them out of the cohort's
    # chunks), and the outlines, held back until the image's first tile, are up
    fetched = {int(r.path.split("/0/c/", 1)[1].split("/")[0]) for r in chunk_requests(server, tissue)}
    assert fetched == set(view.shown), (fetched, view.shown)
    wait_for(lambda: server.log.data_requests(tissue, "labels.zarr"), "the outlines' labels")

    # with the cell outlines hidden, what is left at the tissue is the image layer itself
    cell_layer = controller.locator("[class*=layerControllerRoot]").filter(has=page.locator('p[title="Cell"]'))
    cell_layer.get_by_role("button", name="Toggle channel visibility").first.click()
    wait_for(lambda: tissue_is_drawn(spatial_canvas_pixels(seen)), "the image layer alone")
    pixels = spatial_canvas_pixels(seen)
    corner = pixels[: pixels.shape[0] // 10, pixels.shape[1] // 3 : pixels.shape[1] // 2]
    assert corner.max() < 40, "outside the image the canvas stays background"
    assert_clean_but_zarr_probes(seen, server)


def test_switching_tissue_loads_the_other_tissues_chunks(view_server: ViewServer, browser_page: BrowserPage) -> None:
    server, page = view_server, browser_page.page
    first, second = server.session.tissues[:2]
    server.log.clear()
    page.goto(server.tissue_url(first))
    wait_for(lambda: chunk_requests(server, first), f"{first}'s image chunks")
    assert not chunk_requests(server, second), "a tissue that is not shown is not read"

    switched = time.perf_counter()
    page.select_option("#tissue-picker", second)
    wait_for(lambda: chunk_requests(server, second), f"{second}'s image chunks after the switch")
    assert all(r.time > switched for r in chunk_requests(server, second))
    assert page.evaluate("new URL(window.location).searchParams.get('tissue')") == second
    wait_for(lambda: page.evaluate("document.body.dataset.tissue") == second, "the page to show the second tissue")
    assert_clean_but_zarr_probes(browser_page, server)


def test_lasso_selects_cells_into_a_new_cell_set(view_server: ViewServer, browser_page: BrowserPage) -> None:
    """The spatial view's lasso (nebula.gl's polygon-by-dragging mode, kept in the bundle's edit-modes.js)
    makes a cell set of the cells it encloses, listed by the cell-set view."""
    server, seen = view_server, browser_page
    page = seen.page
    page.goto(server.tissue_url(server.session.tissues[0]))
    wait_for(lambda: "cell type" in page.locator("body").inner_text(), "the cell sets")
    wait_for(lambda: tissue_is_drawn(spatial_canvas_pixels(seen)), "the image layer to draw the tissue")
    sets = view_panel(page, "Cell Sets")
    wait_for(lambda: "cell type" in sets.inner_text(), "the cell-set view")
    assert "My Selections" not in sets.inner_text()
    spatial = view_panel(page, "Spatial")
    spatial.locator('button[title="Select lasso"]').click()
    box = spatial.locator("canvas").first.bounding_box()
    cx, cy, r = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, min(box["width"], box["height"]) / 4
    page.mouse.move(cx - r, cy - r)
    page.mouse.down()
    for x, y in [(cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r), (cx - r, cy - r)]:
        page.mouse.move(x, y, steps=8)
    page.mouse.up()
    wait_for(lambda: "My Selections" in sets.inner_text(), "the lasso's cell set in the cell-set view")
    assert_clean_but_zarr_probes(seen, server)
