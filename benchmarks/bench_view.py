"""View: how soon ``spora-sd view`` draws the first image tile, and that it reads only what the browser asks for.

The cohort is synthetic: one tissue of 1000 x 1000 px with 30 IMC channels (one pyramid level; chunks
of (30, 256, 256), sharded, zstd), its cell mask and cells. The view server runs in this process on
loopback; Debian's Chromium (headless, software WebGL, ``tests/browser.py``) loads the page in a
fresh browser context each time (empty cache: the 16 MB bundle is fetched and compiled every load).

Reported:

- ``view_first_tile``: seconds from the start of the navigation until a screenshot of the spatial
  view's canvas shows the image drawn at the tissue (the nuclear channel's blue, which no outline
  colour has), best of ``repeat`` loads, against the issue's budget of 2 s (the baseline). The
  screenshots are taken back to back, so the figure is an upper bound by one screenshot's time.
  Also given: when the page's ``load`` event fired (bundle fetched and run) and when the first image
  chunk request reached the server;
  Under load a screenshot takes seconds, so the start of the last screenshot that did not show the
  tile is reported too (the tile was drawn between the two). The requests of a load are what
  Vitessce asks for: per shard a ``HEAD``, a range for its index, then one range for the chunk (all
  channels of a 256 x 256 tile, read once for every channel shown);
- ``view_unrequested_reads``: shard files of the image the server opened that no browser request
  named, counted with a Python audit hook on ``open`` over the whole load (the session's set-up
  included: it reads the image's metadata, never its pixels). Goal: none.
"""

from __future__ import annotations

import io
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
from common import Result, synthetic_cohort

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/browser.py: the shared Chromium launcher

SIZES = {
    True: {"image_size": 256, "n_channels": 5, "n_cells": 40, "repeat": 1},
    False: {"image_size": 1000, "n_channels": 30, "n_cells": 3000, "repeat": 3},
}
NAME = "bench2025view"
BUDGET_S = 2.0
TIMEOUT_S = 300.0


class _Opens:
    """Files opened under one folder while armed (a ``sys.addaudithook`` hook: it cannot be removed)."""

    def __init__(self, folder: Path) -> None:
        self.folder = str(folder.resolve())
        self.paths: list[str] = []
        self.armed = False
        self._lock = threading.Lock()
        sys.addaudithook(self._hook)

    def _hook(self, event: str, args: tuple) -> None:
        if self.armed and event == "open" and isinstance(args[0], str | Path):
            path = str(args[0])
            if path.startswith(self.folder):
                with self._lock:
                    self.paths.append(path)


def _drawn(png: bytes) -> bool:
    """The nuclear channel (DNA1, drawn pure blue) lights the centre of the canvas."""
    from PIL import Image

    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    h, w, _ = pixels.shape
    centre = pixels[int(h * 0.35) : int(h * 0.65), int(w * 0.4) : int(w * 0.6)]
    blue = (centre[..., 2] > 150) & (centre[..., 0] < 50)
    return bool(blue.mean() > 0.005)


def _load_once(server: object, browser: object, tissue: str) -> dict[str, float]:
    from tests.browser import open_page

    with open_page(browser) as seen:
        page = seen.page
        received: list[float] = []
        page.on(
            "requestfinished",
            lambda r: (
                received.append(time.perf_counter()) if "/image.zarr/0/c/" in r.url and r.method == "GET" else None
            ),
        )
        t0 = time.perf_counter()
        page.goto(server.tissue_url(tissue), wait_until="commit")
        canvas = page.locator(".react-grid-item").filter(has=page.get_by_role("heading", name="Spatial", exact=True))
        canvas = canvas.locator("canvas").first
        drawn = None
        not_yet = 0.0  # start of the last screenshot that did not show it: a lower bound
        while time.perf_counter() - t0 < TIMEOUT_S:
            started = time.perf_counter() - t0
            if canvas.count() and _drawn(canvas.screenshot(timeout=TIMEOUT_S * 1000)):
                drawn = time.perf_counter() - t0
                break
            not_yet = started
            time.sleep(0.05)
        if drawn is None:
            raise RuntimeError(f"the image was not drawn within {TIMEOUT_S:.0f} s")
        load_ms = page.evaluate("performance.timing.loadEventEnd - performance.timing.navigationStart")
        chunks = [r for r in server.log.data_requests(tissue) if "/0/c/" in r.path and r.status == 206 and r.time > t0]
        first_chunk = min(r.time for r in chunks) - t0
    return {
        "drawn": drawn,
        "not_yet": not_yet,
        "load": load_ms / 1e3,
        "first_chunk": first_chunk,
        "first_chunk_received": min(received) - t0 if received else float("nan"),
        "chunk_requests": float(len(chunks)),
    }


def run(quick: bool) -> list[Result]:
    import logging

    from tests.browser import launch_chromium

    from spora_sd.viewer.server import ViewServer

    logging.getLogger("spora_sd").setLevel(logging.WARNING)  # one INFO line per request otherwise
    p = SIZES[quick]
    path = synthetic_cohort(
        NAME,
        quick,
        n_tissues=1,
        modalities=("imc",),
        image_size=p["image_size"],
        size_jitter=0.0,
        n_channels=p["n_channels"],
        n_cells=p["n_cells"],
        seed=0,
        tiling=False,
    )
    opens = _Opens(path / "imc")
    loads = []
    opens.armed = True  # from before the server opens the cohort: its set-up counts too
    with ViewServer(path) as server, launch_chromium() as browser:
        tissue = server.session.tissues[0]
        image = server.session.image_folder(tissue)
        for _ in range(p["repeat"]):
            loads.append(_load_once(server, browser, tissue))
        requested = Counter(
            str((image / r.path.split("/image.zarr/", 1)[1]).resolve())
            for r in server.log.snapshot()
            if "/image.zarr/" in r.path and r.method == "GET" and r.status in (200, 206)
        )
    opens.armed = False
    shard_opens = Counter(q for q in opens.paths if f"{Path('0', 'c')}" in q)
    unrequested = sum(max(0, n - requested.get(q, 0)) for q, n in shard_opens.items())
    best = min(loads, key=lambda d: d["drawn"])
    return [
        Result(
            "view_first_tile",
            best["drawn"] / BUDGET_S,
            "<=1.0",
            f"seconds from navigation to the first image tile drawn / the {BUDGET_S:g} s budget",
            {
                "drawn s": best["drawn"],
                "not drawn yet at s": best["not_yet"],
                "page load event s": best["load"],
                "first chunk request s": best["first_chunk"],
                "first chunk in browser s": best["first_chunk_received"],
                "chunk requests": best["chunk_requests"],
                "loads": float(len(loads)),
            },
        ),
        Result(
            "view_unrequested_reads",
            float(unrequested),
            "<=0",
            "image shard files the server opened that no request named",
            {"shard opens": float(sum(shard_opens.values())), "image requests": float(sum(requested.values()))},
        ),
    ]
