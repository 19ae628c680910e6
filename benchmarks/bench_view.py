"""View: how soon ``spora-sd view`` draws the first image tile, and that it reads only what the browser asks for.

The cohort is synthetic: one tissue of 1000 x 1000 px with 30 IMC channels (one pyramid level; chunks
of (30, 256, 256), sharded, zstd), its cell mask and cells. The view server runs in this process on
loopback; Debian's Chromium (headless, ``tests/browser.CHROMIUM_ARGS``: ``--disable-gpu``, so WebGL
is SwiftShader's software renderer) loads the page in a fresh browser context each time (empty
cache: the 4.4 MB bundle is fetched and compiled every load).

Reported:

- ``view_first_tile``: milliseconds from the start of the navigation until the first animation frame
  whose spatial canvas shows the image at the tissue (the nuclear channel's blue, which no outline
  colour has), best of ``repeat`` loads, against the issue's budget of 2 s. It is measured in the page
  (:data:`PROBE_JS`, run before the page's own scripts): after every frame in which WebGL drew, it
  reads three 32 x 32 patches of the canvas back (``readPixels``; the contexts keep their drawing
  buffer for it). A screenshot confirms the tile afterwards. The steps on the way, same clock:
  the bundle received and evaluated (the page's ``spora:*`` performance marks), Vitessce mounted,
  the first image chunk requested and received, the first uint16 texture (an image tile) uploaded.
  Also given: the image chunk requests (the server presents the image one channel per chunk of
  512 x 512 px, 2 x 2 cohort chunks, see ``spora_sd.viewer.channel_chunks``, so there is one per
  shown channel and served chunk: 6 x 4), when the server answered the last of them (the server's
  request log, on this process's clock from ``page.goto``: about 0.3 s more than the page's clock),
  and the chunk decodes the bundle's zstd pool ran (none since: the served chunks are uncompressed).
- ``view_unrequested_reads``: shard files of the image the server opened that no browser request
  named (a channel chunk request names the shards holding the cohort chunks it covers,
  ``ViewServer.image_files``),
  counted with a Python audit hook on ``open`` over the whole load (the session's set-up included:
  it reads the image's metadata, never its pixels): a shard opened more often than requests named
  it counts the difference. Goal: none.
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


# Runs in the page before its scripts (``add_init_script``): marks, on the page's clock
# (``performance.now()``, 0 = start of the navigation), when the first image tile was drawn.
PROBE_JS = r"""
(() => {
  const marks = (window.__sporaBench = {});
  const mark = (name) => { if (!(name in marks)) marks[name] = performance.now(); };
  const contexts = [];
  const getContext = HTMLCanvasElement.prototype.getContext;
  HTMLCanvasElement.prototype.getContext = function (type, attrs) {
    const webgl = type === "webgl2" || type === "webgl";
    const ctx = getContext.call(this, type, webgl ? { ...attrs, preserveDrawingBuffer: true } : attrs);
    if (webgl && ctx && !contexts.includes(ctx)) contexts.push(ctx);
    return ctx;
  };
  let drew = false;
  const proto = WebGL2RenderingContext.prototype;
  for (const name of ["drawArrays", "drawElements", "drawArraysInstanced", "drawElementsInstanced"]) {
    const draw = proto[name];
    proto[name] = function (...args) { if ("texture" in marks) drew = true; return draw.apply(this, args); };
  }
  for (const name of ["texImage2D", "texSubImage2D"]) {
    const upload = proto[name];
    proto[name] = function (...args) {
      if (args.some((a) => a instanceof Uint16Array)) mark("texture");
      return upload.apply(this, args);
    };
  }
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      if (e.name.includes("/image.zarr/0/c/") && !("chunk_request" in marks)) {
        marks.chunk_request = e.startTime;
        marks.chunk_received = e.responseEnd;
      }
      if (e.name.includes("/static/vitessce-bundle")) marks.bundle_received = e.responseEnd;
    }
  }).observe({ type: "resource", buffered: true });
  const pixels = new Uint8Array(32 * 32 * 4);
  function check() {
    if (drew) {
      drew = false;
      for (const gl of contexts) {
        const { width, height } = gl.canvas;
        if (width < 300 || height < 300) continue;
        const bound = gl.getParameter(gl.FRAMEBUFFER_BINDING);
        gl.bindFramebuffer(gl.FRAMEBUFFER, null);
        let blue = 0;
        for (const [fx, fy] of [[0.45, 0.4], [0.5, 0.5], [0.55, 0.6]]) {
          gl.readPixels(Math.floor(width * fx) - 16, Math.floor(height * fy) - 16, 32, 32, gl.RGBA, gl.UNSIGNED_BYTE, pixels);
          for (let i = 0; i < pixels.length; i += 4) if (pixels[i + 2] > 150 && pixels[i] < 50) blue++;
        }
        gl.bindFramebuffer(gl.FRAMEBUFFER, bound);
        if (blue > 15) { mark("drawn"); return; }
      }
    }
    requestAnimationFrame(check);
  }
  requestAnimationFrame(check);
})();
"""
_SPORA_MARKS = "Object.fromEntries(performance.getEntriesByType('mark').map(m => [m.name, m.startTime]))"


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
        page.add_init_script(PROBE_JS)
        t0 = time.perf_counter()
        page.goto(server.tissue_url(tissue), wait_until="commit")
        page.wait_for_function("window.__sporaBench && window.__sporaBench.drawn", timeout=TIMEOUT_S * 1000)
        marks = page.evaluate("window.__sporaBench")
        spora = page.evaluate(_SPORA_MARKS)
        stats = page.evaluate("window.sporaView.decodeStats") or {"decodes": float("nan"), "shared": 0, "cached": 0}
        load_ms = page.evaluate("performance.getEntriesByType('navigation')[0].loadEventEnd")
        canvas = page.locator(".react-grid-item").filter(has=page.get_by_role("heading", name="Spatial", exact=True))
        canvas = canvas.locator("canvas").first
        while not _drawn(canvas.screenshot(timeout=TIMEOUT_S * 1000)):  # a screenshot confirms it
            if time.perf_counter() - t0 > TIMEOUT_S:
                raise RuntimeError("the page marked the tile drawn, but no screenshot of the canvas shows it")
            time.sleep(0.1)
        confirmed = time.perf_counter() - t0
        chunks = [r for r in server.log.data_requests(tissue) if "/0/c/" in r.path and r.status == 200 and r.time > t0]
    return {
        "drawn": marks["drawn"] / 1e3,
        "texture": marks["texture"] / 1e3,
        "confirmed": confirmed,
        "load": load_ms / 1e3,
        "bundle_received": marks.get("bundle_received", float("nan")) / 1e3,
        "bundle_evaluated": spora.get("spora:bundle-evaluated", float("nan")) / 1e3,
        "mounted": spora.get("spora:mounted", float("nan")) / 1e3,
        "chunk_request": marks.get("chunk_request", float("nan")) / 1e3,
        "chunk_received": marks.get("chunk_received", float("nan")) / 1e3,
        "chunk_requests": float(len(chunks)),
        "chunks_answered": max((r.time for r in chunks), default=float("nan")) - t0,
        "decodes": float(stats["decodes"]),
        "decode_asks": float(stats["decodes"] + stats["shared"] + stats["cached"]),
    }


def run(quick: bool) -> list[Result]:
    import logging

    from tests.browser import CHROMIUM_ARGS, launch_chromium

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
        for _ in range(p["repeat"]):
            loads.append(_load_once(server, browser, tissue))
        # the cohort files each image request names (a channel chunk: the shards holding the chunks it covers)
        asked = [
            r.path.split("/image.zarr/", 1)[1]
            for r in server.log.snapshot()
            if "/image.zarr/" in r.path and r.method == "GET" and r.status == 200
        ]
        n_requests = len(asked)
        requested = Counter(str(f.resolve()) for key in asked for f in server.image_files(tissue, key) or ())
    opens.armed = False
    shard_opens = Counter(q for q in opens.paths if f"{Path('0', 'c')}" in q)
    unrequested = sum(max(0, n - requested.get(q, 0)) for q, n in shard_opens.items())
    best = min(loads, key=lambda d: d["drawn"])
    flags = " ".join(a for a in CHROMIUM_ARGS if not a.startswith("--host-resolver-rules"))
    return [
        Result(
            "view_first_tile",
            best["drawn"] / BUDGET_S,
            "<=1.0",
            f"seconds from navigation to the first image tile drawn (in-page) / the {BUDGET_S:g} s budget",
            {
                "drawn s": best["drawn"],
                "first image texture s": best["texture"],
                "screenshot showing it s": best["confirmed"],
                "bundle received s": best["bundle_received"],
                "bundle evaluated s": best["bundle_evaluated"],
                "page load event s": best["load"],
                "Vitessce mounted s": best["mounted"],
                "first chunk request s": best["chunk_request"],
                "first chunk received s": best["chunk_received"],
                "chunk requests": best["chunk_requests"],
                "last chunk answered s (server, from goto)": best["chunks_answered"],
                "chunk decodes": best["decodes"],
                "decode asks": best["decode_asks"],
                "all loads drawn s": "/".join(f"{d['drawn']:.2f}" for d in loads),
                "chromium flags": flags,
            },
        ),
        Result(
            "view_unrequested_reads",
            float(unrequested),
            "<=0",
            "image shard files the server opened that no request named",
            {
                "shard opens": float(sum(shard_opens.values())),
                "image requests": float(n_requests),
                "files they name": float(sum(requested.values())),
            },
        ),
    ]
