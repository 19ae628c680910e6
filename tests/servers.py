"""Real servers on loopback for the remote-cohort tests: an S3-compatible server and an HTTP server.

- :class:`S3Server`: moto's standalone server (``moto.server.ThreadedMotoServer``) on 127.0.0.1, with
  a bucket and helpers to upload a local folder. Requests are counted by the server itself (its
  WSGI app is wrapped, so the count is what reached the server, not what a client thinks it sent).
- :class:`HttpServer`: a read-only ``ThreadingHTTPServer`` over a folder, with ``Range`` support
  (what fsspec's HTTP filesystem uses for partial reads) and a request log.

Both are used as context managers; the fixtures in ``tests/conftest.py`` start them once per session.
"""

from __future__ import annotations

import http.server
import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["AuthS3Server", "FaultProxy", "HttpServer", "RequestLog", "S3Server", "moto_process"]

ACCESS_KEY = "spora-test-key"
SECRET_KEY = "spora-test-secret-do-not-print"
REGION = "us-east-1"


@dataclass
class RequestLog:
    """What a server saw: one ``(method, path, bytes_sent)`` per request, thread-safe."""

    entries: list[tuple[str, str, int]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, method: str, path: str, nbytes: int) -> None:
        with self._lock:
            self.entries.append((method, path, nbytes))

    def clear(self) -> None:
        with self._lock:
            self.entries.clear()

    @property
    def count(self) -> int:
        return len(self.entries)

    @property
    def bytes_sent(self) -> int:
        return sum(n for _, _, n in self.entries)

    def paths(self) -> list[str]:
        with self._lock:
            return [p for _, p, _ in self.entries]

    @contextmanager
    def recording(self) -> Iterator[RequestLog]:
        """Clears the log, then yields it: what happens in the block is what it holds."""
        self.clear()
        yield self


class _CountingApp:
    """A WSGI wrapper that logs each request and the bytes of its response body."""

    def __init__(self, app: Any, log: RequestLog) -> None:
        self.app, self.log = app, log

    def __call__(self, environ: dict, start_response: Any) -> Any:
        method, path = environ.get("REQUEST_METHOD", ""), environ.get("PATH_INFO", "")
        query = environ.get("QUERY_STRING", "")
        body = self.app(environ, start_response)
        chunks = list(body)
        if hasattr(body, "close"):
            body.close()
        self.log.add(method, f"{path}?{query}" if query else path, sum(len(c) for c in chunks))
        return chunks


class S3Server:
    """moto's S3 server on ``127.0.0.1`` (a free port), with one bucket.

    >>> with S3Server() as s3:
    ...     s3.put("cohorts/readme.txt", b"hello")
    ...     s3.client().get_object(Bucket="spora", Key="cohorts/readme.txt")["Body"].read()
    b'hello'

    A cohort goes up with ``s3.upload_folder(path, "cohorts/<dataset>")``, and is read back with
    ``open_cohort("s3://spora/cohorts/<dataset>", storage_options=s3.storage_options)``.
    """

    def __init__(self, bucket: str = "spora") -> None:
        self.bucket = bucket
        self.log = RequestLog()
        self._server: Any = None

    def start(self) -> S3Server:
        import logging

        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access line per request otherwise
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        # count what the server answers: wrap its WSGI app (set by start())
        werkzeug_server = self._server._server
        werkzeug_server.app = _CountingApp(werkzeug_server.app, self.log)
        self.client().create_bucket(Bucket=self.bucket)
        self.log.clear()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._server.get_host_and_port()[1]

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def storage_options(self) -> dict[str, Any]:
        """s3fs options that reach this server with the test credentials."""
        return {
            "key": ACCESS_KEY,
            "secret": SECRET_KEY,
            "client_kwargs": {"endpoint_url": self.endpoint_url, "region_name": REGION},
        }

    def env(self) -> dict[str, str]:
        """The standard AWS variables for this server (what users set instead of storage_options)."""
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_DEFAULT_REGION": REGION,
        }

    def rclone_config(self, path: Path, remote: str = "spora") -> Path:
        """Writes an ``rclone.conf`` with an ``s3`` remote for this server (the spec's set-up)."""
        path.write_text(
            f"[{remote}]\n"
            "type = s3\n"
            "provider = Other\n"
            f"access_key_id = {ACCESS_KEY}\n"
            f"secret_access_key = {SECRET_KEY}\n"
            f"endpoint = {self.endpoint_url}\n"
            f"region = {REGION}\n",
            encoding="utf-8",
        )
        return path

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
        )

    def upload_folder(self, folder: Path, prefix: str) -> str:
        """Uploads every file under ``folder`` to ``s3://<bucket>/<prefix>/...``; returns that URL."""
        client = self.client()
        folder = Path(folder)
        for file in sorted(p for p in folder.rglob("*") if p.is_file()):
            key = f"{prefix.strip('/')}/{file.relative_to(folder).as_posix()}"
            client.upload_file(str(file), self.bucket, key)
        return f"s3://{self.bucket}/{prefix.strip('/')}"

    def delete(self, key: str) -> None:
        self.client().delete_object(Bucket=self.bucket, Key=key)

    def put(self, key: str, body: bytes) -> None:
        self.client().put_object(Bucket=self.bucket, Key=key, Body=body)


_RANGE_RE = re.compile(r"bytes=(\d*)-(\d*)$")


class _RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files read-only, with single ``Range`` requests (206) as S3 and real servers do."""

    log: RequestLog  # set on the subclass made per server

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the RequestLog is the log; stderr stays quiet

    def do_GET(self) -> None:
        path = Path(self.translate_path(self.path))
        header = self.headers.get("Range")
        if header is None or not path.is_file():
            # logged before the answer goes out, so a client that has its answer finds it in the log
            self.log.add("GET", self.path, path.stat().st_size if path.is_file() else 0)
            super().do_GET()
            return
        match = _RANGE_RE.match(header.strip())
        size = path.stat().st_size
        if not match or (not match.group(1) and not match.group(2)):
            self.send_error(416, "unsupported Range")
            return
        if match.group(1):
            start = int(match.group(1))
            end = min(int(match.group(2)), size - 1) if match.group(2) else size - 1
        else:  # suffix range: the last N bytes
            start, end = max(size - int(match.group(2)), 0), size - 1
        if start >= size or start > end:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{size}")
            self.end_headers()
            return
        with open(path, "rb") as f:
            f.seek(start)
            data = f.read(end - start + 1)
        self.send_response(206)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        self.log.add("GET", self.path, len(data))
        self.wfile.write(data)

    def do_HEAD(self) -> None:
        self.log.add("HEAD", self.path, 0)
        super().do_HEAD()

    def end_headers(self) -> None:
        self.send_header("Accept-Ranges", "bytes")
        super().end_headers()


class HttpServer:
    """A read-only HTTP server over ``root`` on ``127.0.0.1`` (a free port), with a request log."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.log = RequestLog()
        self._httpd: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> HttpServer:
        handler = type("Handler", (_RangeHandler,), {"log": self.log})
        root = os.fspath(self.root)

        def make(*args: Any, **kwargs: Any) -> _RangeHandler:
            return handler(*args, directory=root, **kwargs)

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), make)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> HttpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._httpd is not None, "server not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"


def moto_process(**env: str) -> tuple[Any, int]:
    """``python -m moto.server`` on a free loopback port, with ``env`` added; ``(process, port)`` once it answers."""
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=dict(os.environ, **env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(300):  # up to 30 s on a busy machine
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/", timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    return process, port


class AuthS3Server:
    """moto's S3 server with authentication on (``INITIAL_NO_AUTH_ACTION_COUNT=0``), in a subprocess.

    moto reads that setting once per process, so this server runs on its own: every request is
    checked, and keys it never issued are refused with ``InvalidAccessKeyId`` (403), as AWS does
    for bad keys.
    """

    def __init__(self) -> None:
        self._process: Any = None
        self.port = 0

    def __enter__(self) -> AuthS3Server:
        self._process, self.port = moto_process(INITIAL_NO_AUTH_ACTION_COUNT="0")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=10)

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class FaultProxy:
    """A loopback HTTP proxy in front of a server, that can delay, fail, hang, drop or lie.

    Each request is forwarded to ``upstream`` (``http://127.0.0.1:<port>``) unless a fault is set:

    - ``delay``: seconds added before each request is forwarded (network latency);
    - ``fail_next(n, status, body)``: the next ``n`` requests get ``status`` and ``body`` (e.g. 503
      ``SlowDown``), ``n=-1`` for every request;
    - ``hang``: requests get no answer (the connection stays open; the client times out);
    - ``drop``: the connection is closed without an answer;
    - ``truncate``: responses with a body send only that many bytes of it, then close;
    - ``size_bonus``: ``Content-Length`` of ``HEAD`` answers is that much larger (a server that lies
      about sizes).

    ``log`` counts the requests the proxy received (faults included); ``forwarded`` logs the answers
    that came from upstream, with the bytes of their bodies.
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.log = RequestLog()
        self.forwarded = RequestLog()
        self.delay = 0.0
        self.hang = False
        self.drop = False
        self.truncate: int | None = None
        self.size_bonus = 0
        self._fail: list[Any] = [0, 500, b""]
        self._lock = threading.Lock()
        self._httpd: http.server.ThreadingHTTPServer | None = None
        self._stop = threading.Event()

    def fail_next(self, n: int, status: int, body: bytes = b"") -> None:
        with self._lock:
            self._fail = [n, status, body]

    def reset(self) -> None:
        self.delay, self.hang, self.drop, self.truncate, self.size_bonus = 0.0, False, False, None, 0
        self.fail_next(0, 500)

    def _take_failure(self) -> tuple[int, bytes] | None:
        with self._lock:
            n, status, body = self._fail
            if n == 0:
                return None
            if n > 0:
                self._fail[0] = n - 1
            return status, body

    def start(self) -> FaultProxy:
        import http.client
        import time
        from urllib.parse import urlsplit

        proxy = self
        target = urlsplit(self.upstream)

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # TCP_NODELAY: the answer goes out as two writes (headers, then body); with Nagle's algorithm
            # the body waited for the client's delayed ACK of the headers, about 40 ms more per request
            # than `delay` says (measured: 69 ms instead of 27 ms with a 20 ms delay)
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                proxy.log.add(self.command, self.path, 0)
                if proxy.delay:
                    time.sleep(proxy.delay)
                if proxy.hang:
                    proxy._stop.wait(60)
                    self.close_connection = True
                    return
                if proxy.drop:
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                failure = proxy._take_failure()
                if failure is not None:
                    status, payload = failure
                    self.send_response(status)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(payload)
                    return
                conn = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection",)}
                conn.request(self.command, self.path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
                proxy.forwarded.add(self.command, self.path, len(data))
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() in ("transfer-encoding", "connection", "content-length"):
                        continue
                    self.send_header(key, value)
                declared = len(data)
                if self.command == "HEAD":
                    declared = int(response.getheader("Content-Length") or 0) + proxy.size_bonus
                self.send_header("Content-Length", str(declared))
                self.end_headers()
                conn.close()
                if self.command == "HEAD":
                    return
                if proxy.truncate is not None and len(data) > proxy.truncate:
                    self.wfile.write(data[: proxy.truncate])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        # a listen backlog of 128, not socketserver's 5: a client with a pool of many connections
        # (s3fs' 64, obstore's) would otherwise see connections dropped and retried after 1 s
        server = type("Server", (http.server.ThreadingHTTPServer,), {"request_queue_size": 128})
        self._httpd = server(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._httpd is not None, "proxy not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"
