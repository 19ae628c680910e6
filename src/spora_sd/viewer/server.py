"""The loopback web server of ``spora-sd view``: the page, the Vitessce bundle, the configs and the data.

Routes (all ``GET``/``HEAD``, read-only):

==================================  ==============================================================
``/`` (``?tissue=<id>``)            the page: tissue picker + Vitessce (:mod:`spora_sd.viewer.page`)
``/static/<file>``                  the bundle (:mod:`spora_sd.viewer.bundle`)
``/api/tissues.json``               the cohort, modality and tissue ids
``/api/config/<tissue>.json``       the tissue's Vitessce config (:mod:`spora_sd.viewer.config`)
``/data/<tissue>/image.zarr/...``   the tissue's OME-Zarr image, one channel per chunk, from the cohort
``/data/<tissue>/labels.zarr/...``  cell outlines, ``/data/<tissue>/cells.zarr/...`` the cells (cache)
==================================  ==============================================================

The image is presented one channel per chunk (:mod:`spora_sd.viewer.channel_chunks`): a chunk
request names one channel of a block of the cohort's chunks (2 x 2 of 256 px), which the server
decodes (once each, cached) from the shard files the key names (:meth:`ViewServer.image_files`),
and no other. Files (the bundle, the labels and cells stores) are served with single ``Range``
requests (``206``). A path that leaves its store (``..``, a symbolic link out), is no key of the
image, or names an unknown tissue is a ``404``. Every request is logged (``logging``, at INFO) and
recorded in :attr:`ViewServer.log`, which tests and benchmarks read. Answers go out with
``TCP_NODELAY`` (see ``_Handler``).

Examples
--------
>>> parse_range("bytes=10-19", 100), parse_range("bytes=-16", 100), parse_range("bytes=90-", 100)
((10, 20), (84, 100), (90, 100))
>>> parse_range("bytes=200-", 100) is None
True
"""

from __future__ import annotations

import http.server
import json
import logging
import mimetypes
import re
import shutil
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spora_sd.errors import SporaError
from spora_sd.viewer.bundle import BUNDLE_JS, find_bundle
from spora_sd.viewer.config import tissue_config
from spora_sd.viewer.page import index_html
from spora_sd.viewer.session import ViewSession

__all__ = ["Request", "RequestLog", "ViewServer", "parse_range"]

logger = logging.getLogger(__name__)

_RANGE_RE = re.compile(r"bytes=(\d*)-(\d*)$")
_STORES = ("image.zarr", "labels.zarr", "cells.zarr")
_COPY_BLOCK = 1 << 20
_KEEP = "public, max-age=31536000, immutable"


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``(start, stop)`` of a single-range ``Range`` header for a file of ``size`` bytes; None if unusable."""
    match = _RANGE_RE.match((header or "").strip())
    if not match or match.groups() == ("", ""):
        return None
    first, last = match.groups()
    if first == "":
        start, stop = max(0, size - int(last)), size
    else:
        start = int(first)
        stop = size if last == "" else min(size, int(last) + 1)
    if start >= size or stop <= start:
        return None
    return start, stop


@dataclass(frozen=True)
class Request:
    """One request the server answered: path (no query), status, bytes of body, byte range asked for."""

    method: str
    path: str
    status: int
    nbytes: int
    byte_range: tuple[int, int] | None
    time: float


@dataclass
class RequestLog:
    """Every request of a server, in order; thread-safe."""

    entries: list[Request] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, request: Request) -> None:
        with self._lock:
            self.entries.append(request)

    def snapshot(self) -> list[Request]:
        with self._lock:
            return list(self.entries)

    def clear(self) -> None:
        with self._lock:
            self.entries.clear()

    def data_requests(self, tissue_id: str | None = None, store: str = "image.zarr") -> list[Request]:
        """Requests into a store (default: the images), of one tissue or of any."""
        prefix = f"/data/{tissue_id}/{store}/" if tissue_id else None
        return [
            r
            for r in self.snapshot()
            if (r.path.startswith(prefix) if prefix else r.path.startswith("/data/") and f"/{store}/" in r.path)
        ]


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive: the browser reuses connections for its many chunk requests
    # TCP_NODELAY: an answer goes out as two writes, headers then body; with Nagle's algorithm a small body
    # waits for the client's ACK of the headers, which Linux may delay by 40 ms (http.client: 44 ms a zarr.json)
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        pass  # each request is logged once, with its outcome, by _record

    def do_HEAD(self) -> None:
        self._dispatch(head=True)

    def do_GET(self) -> None:
        self._dispatch(head=False)

    # -- plumbing --------------------------------------------------------------------------------

    def _record(self, status: int, nbytes: int, byte_range: tuple[int, int] | None = None) -> None:
        path = urllib.parse.urlsplit(self.path).path
        self.server.view.log.add(Request(self.command, path, status, nbytes, byte_range, time.perf_counter()))
        where = f" bytes {byte_range[0]}-{byte_range[1] - 1}" if byte_range else ""
        logger.info("%s %s%s -> %d (%d B)", self.command, path, where, status, nbytes)

    def _send(self, status: int, body: bytes, content_type: str, head: bool) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        # recorded before the body goes out: a client that has its answer finds it in the log
        self._record(status, 0 if head else len(body))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _json(self, value: Any, head: bool) -> None:
        self._send(200, json.dumps(value).encode(), "application/json", head)

    def _not_found(self, head: bool, why: str = "not found") -> None:
        self._send(404, why.encode(), "text/plain; charset=utf-8", head)

    def _file(self, root: Path, rest: str, head: bool, cache: str = "no-store") -> None:
        """Serve ``root/rest`` (a file inside ``root``), with ``Range``; ``cache`` is its ``Cache-Control``."""
        root = root.resolve()
        target = (root / urllib.parse.unquote(rest)).resolve()
        if not target.is_relative_to(root) or not target.is_file():
            self._not_found(head)
            return
        size = target.stat().st_size
        wanted = self.headers.get("Range")
        byte_range = parse_range(wanted, size) if wanted else None
        if wanted and byte_range is None:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self._record(416, 0)
            self.end_headers()
            return
        start, stop = byte_range or (0, size)
        self.send_response(206 if byte_range else 200)
        ctype = "application/json" if target.name.endswith((".json", ".zattrs", ".zarray", ".zgroup")) else None
        self.send_header("Content-Type", ctype or mimetypes.guess_type(target.name)[0] or "application/octet-stream")
        self.send_header("Content-Length", str(stop - start))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Cache-Control", cache)
        if byte_range:
            self.send_header("Content-Range", f"bytes {start}-{stop - 1}/{size}")
        self._record(206 if byte_range else 200, 0 if head else stop - start, byte_range)
        self.end_headers()
        if not head:
            with target.open("rb") as f:
                f.seek(start)
                left = stop - start
                while left > 0:
                    block = f.read(min(_COPY_BLOCK, left))
                    if not block:
                        break
                    self.wfile.write(block)
                    left -= len(block)

    def _image(self, tissue: str, key: str, head: bool) -> None:
        """A key of the tissue's image as served: metadata or one channel's chunk (see channel_chunks)."""
        body = self.server.view.session.image_store(tissue).get(key)
        if body is None:
            self._not_found(head)
        else:
            self._send(200, body, "application/json" if key.endswith(".json") else "application/octet-stream", head)

    def _dispatch(self, head: bool) -> None:
        view = self.server.view
        parts = urllib.parse.urlsplit(self.path)
        path = parts.path
        try:
            if path in ("/", "/index.html"):
                body = index_html(view.session.summary(), view.bundle_version)
                self._send(200, body.encode(), "text/html; charset=utf-8", head)
            elif path == "/favicon.ico":
                self._send(204, b"", "image/x-icon", head)
            elif path.startswith("/static/"):
                # the page asks for the bundle by a URL naming its version (``?v=``): kept for a year, so a
                # reload or a second page skips fetching and, with Chromium's code cache, compiling it
                versioned = parts.query == f"v={urllib.parse.quote(view.bundle_version)}"
                self._file(view.bundle, path.removeprefix("/static/"), head, _KEEP if versioned else "no-cache")
            elif path == "/api/tissues.json":
                self._json(view.session.summary(), head)
            elif path.startswith("/api/config/") and path.endswith(".json"):
                tissue = urllib.parse.unquote(path.removeprefix("/api/config/").removesuffix(".json"))
                self._json(view.config(tissue), head)
            elif path.startswith("/data/"):
                tissue, _, rest = path.removeprefix("/data/").partition("/")
                store, _, inner = rest.partition("/")
                tissue = urllib.parse.unquote(tissue)
                if store not in _STORES or tissue not in view.session.tissues:
                    self._not_found(head)
                elif store == "image.zarr":
                    self._image(tissue, inner, head)
                else:
                    view.session.tissue_view(tissue)  # the stores are written with the tissue's view
                    self._file(view.session.store_folder(tissue) / store, inner, head)
            else:
                self._not_found(head)
        except SporaError as exc:
            logger.warning("%s: %s", path, exc)
            self._send(500, str(exc).encode(), "text/plain; charset=utf-8", head)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the browser gave up on a request (e.g. a tile scrolled out of view)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    view: ViewServer


class ViewServer:
    """A view of one cohort, served on loopback from a background thread (a context manager).

    Parameters
    ----------
    cohort
        A cohort folder, dataset key or alias.
    port
        TCP port on 127.0.0.1; 0 picks a free one.
    modality
        What to show (default: the first multiplex modality with images, else H&E).
    cache
        Folder for the per-tissue stores; default: a temporary folder removed by :meth:`stop`.
    bundle
        Folder of the Vitessce bundle (default: the installed one); a missing bundle raises
        :class:`~spora_sd.errors.ViewerBundleMissingError` before the server starts.
    tissue
        The tissue shown first (default: the first). Its stores and its config are made in the
        background as soon as the server starts, while the browser fetches and compiles the bundle.

    Examples
    --------
    ::

        with ViewServer("jackson2020") as server:
            print(server.url)                     # http://127.0.0.1:<port>/
            server.log.data_requests()            # the image chunks the browser fetched
    """

    def __init__(
        self,
        cohort: Any,
        *,
        port: int = 0,
        modality: str | None = None,
        cache: str | Path | None = None,
        bundle: str | Path | None = None,
        tissue: str | None = None,
    ) -> None:
        self.bundle = find_bundle(Path(bundle) if bundle is not None else None)
        built = (self.bundle / BUNDLE_JS).stat()
        #: names the bundle's build in its URL (modification time and size), see ``_Handler._dispatch``
        self.bundle_version = f"{built.st_mtime_ns:x}-{built.st_size:x}"
        self._own_cache = cache is None
        self.cache = Path(tempfile.mkdtemp(prefix="spora-sd-view-")) if cache is None else Path(cache)
        self.session = ViewSession(cohort, self.cache, modality)
        self.first_tissue = self.session.check_tissue(tissue) if tissue is not None else self.session.tissues[0]
        self.log = RequestLog()
        self._port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the server is not running")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def tissue_url(self, tissue_id: str) -> str:
        """The page showing one tissue."""
        return f"{self.url}?tissue={urllib.parse.quote(self.session.check_tissue(tissue_id))}"

    def image_files(self, tissue_id: str, key: str) -> tuple[Path, ...] | None:
        """The cohort files a request for ``/data/<tissue_id>/image.zarr/<key>`` reads (None: no file).

        A chunk key names the shard files holding the cohort chunks it covers (up to four for the
        layout's 256 px chunks, served 2 x 2); a metadata key, the image's ``zarr.json``.
        """
        image = self.session.image_store(tissue_id)
        if key == "zarr.json" or (key.endswith("/zarr.json") and key.split("/")[0] in image.levels):
            return (image.folder / key,)
        return image.source_files(key)

    def config(self, tissue_id: str) -> dict[str, Any]:
        """The Vitessce config of a tissue, as the page gets it (URLs relative to the server)."""
        return tissue_config(self.session.tissue_view(tissue_id, base=self.url.rstrip("/"))).to_dict()

    def start(self) -> ViewServer:
        self._server = _Server(("127.0.0.1", self._port), _Handler)
        self._server.view = self
        self._thread = threading.Thread(target=self._server.serve_forever, name="spora-sd-view", daemon=True)
        self._thread.start()
        threading.Thread(
            target=self._prepare, args=(self.first_tissue,), name="spora-sd-view-prepare", daemon=True
        ).start()
        logger.info(
            "serving %s (%s, %d tissues) at %s",
            self.session.name,
            self.session.modality,
            len(self.session.tissues),
            self.url,
        )
        return self

    def _prepare(self, tissue_id: str) -> None:
        try:
            self.config(tissue_id)  # its stores, and the config builder imported (0.2 s the first time)
        except Exception:  # the browser's request for it builds it again and reports the error
            logger.debug("preparing %s failed", tissue_id, exc_info=True)

    def wait(self) -> None:
        """Block until interrupted (Ctrl+C), then stop."""
        try:
            while self._thread is not None and self._thread.is_alive():
                self._thread.join(0.5)
        except KeyboardInterrupt:
            logger.info("stopping")
        finally:
            self.stop()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._own_cache:
            shutil.rmtree(self.cache, ignore_errors=True)

    def __enter__(self) -> ViewServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
