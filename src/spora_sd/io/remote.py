"""File operations that work on local folders and on remote cohorts alike, with clear errors.

A cohort's root is a :class:`pathlib.Path` (local) or a :class:`upath.UPath` (``s3://``, ``http(s)://``,
see :mod:`spora_sd.io.location`). Local paths keep the plain ``os`` calls (nothing changes, nothing
gets slower); remote paths go through the path's fsspec filesystem:

- listings (:func:`listdir`) use the filesystem's listing cache, so after a folder is listed, asking
  whether a file in it exists costs no request (s3fs answers from that cache);
- many small files (the ``zarr.json`` of every image) are read at once with :func:`read_many`, one
  concurrent batch (fsspec's async ``cat``) instead of one round trip per file in sequence;
- pixels are read through Zarr's :class:`~zarr.storage.FsspecStore` over the same filesystem options
  (:func:`zarr_store`), wrapped so that a missing shard is an error, never zeros (as local reads);
- every failure becomes one :class:`~spora_sd.errors.SporaError` line naming the URL, without
  secrets (:func:`remote_errors`): a missing object is a
  :class:`~spora_sd.errors.CohortNotFoundError`, anything else a
  :class:`~spora_sd.errors.RemoteAccessError` with its ``kind``.

Retries: s3fs and botocore retry throttling (``SlowDown``, 429), 5xx answers, timeouts and dropped
connections themselves (botocore's ``standard`` mode, 5 attempts, set in
:func:`spora_sd.io.location.default_storage_options`); fsspec's HTTP filesystem does not, so reads
made here over ``http(s)://`` are retried on the same errors (:func:`retrying`).

Examples
--------
>>> import tempfile, pathlib
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> _ = (folder / "a.txt").write_text("x")
>>> listdir(folder), file_size(folder / "a.txt")
(['a.txt'], 1)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar

from zarr.storage import WrapperStore

from spora_sd.errors import CohortNotFoundError, RemoteAccessError, SporaError
from spora_sd.io.location import display_location, redact, tune_filesystem
from spora_sd.io.objectstore import obstore_kind, s3_store

if TYPE_CHECKING:
    import zarr.abc.store
    from upath import UPath

__all__ = [
    "ArrivingFiles",
    "CheckedStore",
    "MissingChunkError",
    "cached_size",
    "file_size",
    "is_dir",
    "is_file",
    "is_local",
    "listdir",
    "open_binary",
    "prefetch_listings",
    "read_bytes",
    "read_many",
    "read_in_background",
    "read_many_under",
    "remote_error",
    "remote_errors",
    "retrying",
    "url_of",
    "walk_files",
    "zarr_store",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Requests in flight of a batch read through obstore when the options set no pool size.
_BATCH_CONNECTIONS = 64
#: Attempts of a read over ``http(s)://`` (s3fs/botocore retry by themselves).
HTTP_ATTEMPTS = 4
_HTTP_BACKOFF = 0.25  # seconds, doubled per attempt


def is_local(path: object) -> bool:
    """Whether ``path`` is a local :class:`~pathlib.Path` (a remote path is a :class:`upath.UPath`)."""
    return isinstance(path, Path)


def url_of(path: Path | UPath) -> str:
    """How ``path`` is shown: its local path or its URL, without credentials."""
    return display_location(path)


# -------------------------------------------------------------------------------------------------
# errors
def _status_of(exc: BaseException) -> int | None:
    status = getattr(exc, "status", None)  # aiohttp.ClientResponseError
    if isinstance(status, int):
        return status
    response = getattr(exc, "response", None)  # botocore.exceptions.ClientError
    if isinstance(response, dict):
        meta = response.get("ResponseMetadata") or {}
        code = meta.get("HTTPStatusCode")
        if isinstance(code, int):
            return code
    return None


def _code_of(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str((response.get("Error") or {}).get("Code", ""))
    return ""


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _classify(exc: BaseException) -> str | None:
    """The kind of a remote failure (see :class:`~spora_sd.errors.RemoteAccessError`), ``"missing"``, or None."""
    for e in _chain(exc):
        kind = obstore_kind(e)
        if kind is not None:
            return kind
    names = " ".join(type(e).__name__ for e in _chain(exc))
    text = " ".join(str(e) for e in _chain(exc)).lower()
    codes = {_code_of(e) for e in _chain(exc)} - {""}
    statuses = {s for s in map(_status_of, _chain(exc)) if s is not None}
    if any(isinstance(e, FileNotFoundError) for e in _chain(exc)) or codes & {"NoSuchKey", "404", "NoSuchBucket"}:
        return "missing"
    if 404 in statuses:
        return "missing"
    if (
        any(isinstance(e, PermissionError) for e in _chain(exc))
        or codes & {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "ExpiredToken", "InvalidToken"}
        or statuses & {401, 403}
        or "nocredentialserror" in names.lower()
        or "unable to locate credentials" in text
    ):
        return "credentials"
    if codes & {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequests"} or (
        statuses & {429, 503}
    ):
        return "throttled"
    if any(s >= 500 for s in statuses) or codes & {"InternalError", "ServiceUnavailable"}:
        return "server"
    if any(
        isinstance(e, TimeoutError | asyncio.TimeoutError) or "timeout" in type(e).__name__.lower() for e in _chain(exc)
    ):
        return "timeout"
    if any(
        isinstance(e, ConnectionError)
        or "connect" in type(e).__name__.lower()
        or "ServerDisconnected" in type(e).__name__
        for e in _chain(exc)
    ) or ("could not connect" in text or "connection refused" in text or "cannot connect" in text):
        return "unreachable"
    if "ClientPayloadError" in names or "IncompleteRead" in names or "ResponseStreamingError" in names:
        return "unreachable"
    return None


_ADVICE = {
    "credentials": "access refused: check the credentials (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, the rclone "
    "remote's access_key_id/secret_access_key, or storage_options key/secret) and that they may read this bucket",
    "unreachable": "no answer from the server (is it up? is the endpoint URL right? AWS_ENDPOINT_URL, the rclone "
    "remote's endpoint, or storage_options client_kwargs.endpoint_url)",
    "timeout": "the server did not answer in time, after retries; try again, or raise the timeouts with "
    "storage_options config_kwargs.read_timeout / connect_timeout",
    "throttled": "the server kept asking to slow down (throttling), after retries; try again later or with fewer "
    "parallel reads",
    "server": "the server failed (5xx), after retries; try again later",
}


def remote_error(exc: BaseException, path: Path | UPath | str) -> SporaError | None:
    """The :class:`~spora_sd.errors.SporaError` for a failed remote operation on ``path``, or None if not one.

    >>> remote_error(FileNotFoundError("x"), "s3://spora/c/metadata/tissues.parquet")
    CohortNotFoundError('s3://spora/c/metadata/tissues.parquet: no such object on the server')
    >>> remote_error(ConnectionRefusedError("refused"), "s3://spora/c").kind
    'unreachable'
    """
    if isinstance(exc, SporaError):
        return exc
    url = path if isinstance(path, str) else url_of(path)
    url = redact(url)
    kind = _classify(exc)
    if kind is None:
        return None
    if kind == "missing":
        return CohortNotFoundError(f"{url}: no such object on the server")
    detail = redact(f"{type(exc).__name__}: {exc}".splitlines()[0])[:200]
    return RemoteAccessError(url, kind, f"{_ADVICE[kind]} ({detail})")


@contextlib.contextmanager
def remote_errors(path: Path | UPath | str) -> Iterator[None]:
    """Turn a failure of a remote operation on ``path`` into its one-line SporaError (local: no change)."""
    try:
        yield
    except SporaError:
        raise
    except Exception as exc:
        if isinstance(path, Path):
            raise
        error = remote_error(exc, path)
        if error is None:
            raise
        raise error from None


def _retryable(exc: BaseException) -> bool:
    return _classify(exc) in ("unreachable", "timeout", "throttled", "server")


def _cut_transfer(exc: BaseException) -> bool:
    names = " ".join(type(e).__name__ for e in _chain(exc))
    return any(n in names for n in ("IncompleteRead", "ClientPayloadError", "ResponseStreamingError"))


def retrying(func: Callable[[], T], path: Path | UPath) -> T:
    """``func()``, retried with backoff on transient failures of a remote ``path``.

    Over HTTP, every transient failure (5xx, 429, timeouts, dropped connections) is retried; over S3,
    botocore retries requests itself, so only a body cut mid-transfer (which it does not retry) is.
    Local paths are never retried. The last failure is raised as it is (wrap the call in
    :func:`remote_errors` to translate it).
    """
    if isinstance(path, Path):
        return func()
    http = getattr(path, "protocol", "") in ("http", "https")
    attempts = HTTP_ATTEMPTS if http else 2
    for attempt in range(attempts):
        try:
            return func()
        except SporaError:
            raise
        except Exception as exc:
            transient = _retryable(exc) if http else _cut_transfer(exc)
            if attempt == attempts - 1 or not transient:
                raise
            delay = _HTTP_BACKOFF * 2**attempt
            logger.info("%s: %s, retrying in %.2f s", url_of(path), _classify(exc), delay)
            time.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


def _call(path: Path | UPath, func: Callable[[], T]) -> T:
    with remote_errors(path):
        return retrying(func, path)


# -------------------------------------------------------------------------------------------------
# file operations
def _entries(folder: UPath) -> dict[str, str]:
    """``name -> "file" | "directory"`` of the entries right under a remote folder (``{}`` when none).

    One listing request; the filesystem caches it (s3fs then also answers ``info`` of those files).
    Over HTTP, the folder's index page is the listing (links out of the folder are ignored).
    """
    fs, fs_path = folder.fs, folder.path.rstrip("/")
    http = folder.protocol in ("http", "https")
    if not http and _absent_from_cached_parent(fs, fs_path):
        return {}  # the parent's listing (cached) has no such folder: no request

    def ls() -> dict[str, str]:
        try:
            entries = fs.ls(fs_path + ("/" if http else ""), detail=True)
        except (FileNotFoundError, NotADirectoryError):
            return {}
        out: dict[str, str] = {}
        base = fs_path + "/"
        for entry in entries:
            name = str(entry["name"])
            if not name.startswith(base):
                continue  # the folder itself, its parent, other sites
            rest = name[len(base) :]
            kind = "directory" if rest.endswith("/") or entry.get("type") == "directory" else "file"
            rest = rest.strip("/")
            if rest and "/" not in rest:
                out[rest] = kind
        return out

    return _call(folder, ls)


def _absent_from_cached_parent(fs: Any, fs_path: str) -> bool:
    """Whether the cached listing of the parent of ``fs_path`` (S3) shows that it is not a folder."""
    if fs_path in fs.dircache:
        return False
    parent = fs_path.rsplit("/", 1)[0]
    try:
        entries = fs.dircache[parent] if "/" in fs_path else None
    except KeyError:
        return False
    if entries is None:
        return False
    return not any(e.get("name", "").rstrip("/") == fs_path and e.get("type") == "directory" for e in entries)


def prefetch_listings(root: Path | UPath, *, depth: int = 4, max_folders: int = 256) -> int:
    """List the folders under a remote S3 ``root`` ahead of use, one concurrent batch per level; returns how many.

    Opening a cohort lists a dozen folders (metadata, modalities, resolutions, masks), one after the
    other: a round trip each. Here they are listed level by level, each level at once, into the
    filesystem's listing cache, which :func:`listdir`, :func:`is_file` and :func:`is_dir` then answer
    from. Each open lists afresh, so a table rewritten in the bucket since the last open is read with
    its new size. Folders whose name has a dot (``<tissue>.ome.zarr``: pixel data) are not descended into,
    nor more than ``max_folders`` per level. Local roots and HTTP: nothing to do (returns 0). A
    failure is left to the reads that follow (they retry and say what failed), except on the root.
    """
    if isinstance(root, Path) or root.protocol != "s3":
        return 0
    from fsspec.asyn import sync

    fs = root.fs

    async def list_all(folders: list[str]) -> list[Any]:
        # refresh: s3fs keeps its filesystems (and their listings, sizes included) across opens, and
        # an open must see the bucket as it is now, not a table's size from before it was rewritten
        return await asyncio.gather(*(fs._lsdir(f, refresh=True) for f in folders), return_exceptions=True)

    level, listed = [root.path.rstrip("/")], 0
    for depth_now in range(depth + 1):
        if not level:
            break
        results = _call(root, lambda level=level: sync(fs.loop, list_all, level))
        listed += len(level)
        below: list[str] = []
        for entries in results:
            if isinstance(entries, BaseException):
                if depth_now == 0:
                    raise remote_error(entries, root) or entries
                continue
            below += [
                str(e["name"]).rstrip("/")
                for e in entries
                if e.get("type") == "directory" and "." not in str(e["name"]).rstrip("/").rsplit("/", 1)[-1]
            ]
        level = below[:max_folders]
    return listed


def listdir(path: Path | UPath, *, hidden: bool = False) -> list[str]:
    """Names in a folder, sorted, without hidden names (unless ``hidden``); ``[]`` when it is not a folder.

    Remote: one listing request, cached by the filesystem.
    """
    if isinstance(path, Path):
        try:
            return sorted(n for n in os.listdir(path) if hidden or not n.startswith("."))
        except (FileNotFoundError, NotADirectoryError):
            return []
    return sorted(n for n in _entries(path) if hidden or not n.startswith("."))


def is_file(path: Path | UPath) -> bool:
    """Whether ``path`` is a file (remote: from its folder's listing, cached; no request once listed)."""
    if isinstance(path, Path):
        return path.is_file()
    return _entries(path.parent).get(path.name) == "file"


def is_dir(path: Path | UPath) -> bool:
    """Whether ``path`` is a folder (remote: a prefix with objects under it, from its parent's listing)."""
    if isinstance(path, Path):
        return path.is_dir()
    return _entries(path.parent).get(path.name) == "directory"


def file_size(path: Path | UPath) -> int:
    """Size of a file in bytes (remote: from the listing cache or one ``HEAD``)."""
    if isinstance(path, Path):
        return path.stat().st_size
    return int(_call(path, lambda: path.fs.size(path.path)))


def cached_size(path: Path | UPath) -> int | None:
    """Size of a remote file from its folder's cached listing (no request), or None when not cached or unknown.

    >>> import pathlib
    >>> cached_size(pathlib.Path("/local/files/are/not/cached")) is None
    True
    """
    if isinstance(path, Path):
        return None
    cache = getattr(path.fs, "dircache", None)
    if cache is None:
        return None
    parent = path.fs._strip_protocol(str(path.parent)).rstrip("/")
    name = path.fs._strip_protocol(str(path)).rstrip("/")
    try:
        entries = cache[parent]
    except (KeyError, TypeError):
        return None
    for entry in entries:
        if entry.get("name", "").rstrip("/") == name and entry.get("type") == "file":
            size = entry.get("size")
            return int(size) if isinstance(size, int) else None
    return None


def open_binary(path: Path | UPath) -> BinaryIO:
    """A seekable binary file object; remote reads are range requests (no whole-file download)."""
    if isinstance(path, Path):
        return open(path, "rb")
    # block_size: the pieces fetched per range request; small enough that reading a header or a
    # footer does not fetch megabytes, large enough that sequential reads are few requests
    return _call(path, lambda: path.fs.open(path.path, "rb", block_size=1 << 20, cache_type="readahead"))


def read_bytes(path: Path | UPath) -> bytes:
    """The whole content of a (small) file."""
    if isinstance(path, Path):
        return path.read_bytes()
    return _call(path, lambda: path.fs.cat_file(path.path))


def read_many(paths: Sequence[Path | UPath]) -> dict[str, bytes | None]:
    """Contents of many small files at once, keyed by ``str(path)``; ``None`` for a missing one.

    Remote paths of one filesystem are fetched in one concurrent batch (fsspec's async ``cat``), so
    reading the metadata of 1,000 images costs about the time of a few round trips, not 1,000.
    """
    out: dict[str, bytes | None] = {}
    remote: dict[Any, list[UPath]] = {}
    for p in paths:
        if isinstance(p, Path):
            try:
                out[str(p)] = p.read_bytes()
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                out[str(p)] = None
        else:
            remote.setdefault(id(p.fs), []).append(p)
    for group in remote.values():
        fs = group[0].fs
        keys = [p.path for p in group]

        def cat(fs: Any = fs, keys: list[str] = keys) -> dict[str, Any]:
            return fs.cat(keys, on_error="return")

        got = _call(group[0], cat)
        for p in group:
            value = got.get(p.path)
            if isinstance(value, BaseException):
                error = remote_error(value, p)
                if isinstance(error, CohortNotFoundError):
                    out[str(p)] = None
                    continue
                raise error if error is not None else value
            out[str(p)] = value
    return out


def read_many_under(folder: UPath, relative: Sequence[str]) -> dict[str, bytes | None]:
    """:func:`read_many` of the files ``<folder>/<relative>``, keyed by their URL (``f"{folder}/{rel}"``).

    For thousands of small files: it joins strings, not path objects (a remote join costs about a
    millisecond), and fetches them in one concurrent batch.
    """
    base, url = folder.path.rstrip("/"), str(folder).rstrip("/")
    keys = {f"{base}/{rel}": f"{url}/{rel}" for rel in relative}
    if not keys:
        return {}
    got = _obstore_cat(folder, list(keys))
    if got is None:  # not S3, or options obstore cannot express: s3fs or fsspec's HTTP filesystem
        got = _call(folder, lambda: folder.fs.cat(list(keys), on_error="return"))
    out: dict[str, bytes | None] = {}
    for key, shown in keys.items():
        value = got.get(key)
        if isinstance(value, BaseException):
            error = remote_error(value, shown)
            if isinstance(error, CohortNotFoundError):
                out[shown] = None
                continue
            raise error if error is not None else value
        out[shown] = value
    return out


def _obstore_reader(folder: UPath) -> Callable[[str], Any] | None:
    """An async read of one ``bucket/key`` through obstore (a limited number in flight at once), or None.

    None when ``folder`` is not S3 or obstore cannot express its options. Many small files (the
    ``zarr.json`` of every image) are fetched concurrently on fsspec's event loop thread; obstore
    signs and parses each request in Rust, where s3fs (aiobotocore) spends about 2 ms of Python per
    request, on the same core as everything else the client does. At most as many requests are in
    flight as the s3fs connection pool has connections (``config_kwargs.max_pool_connections``):
    200 at once took twice as long as 64 (1.2 against 0.6 s for 200 files on the loopback server;
    each new connection costs the server a thread).
    """
    if getattr(folder, "protocol", "") not in ("s3", "s3a"):
        return None
    store = s3_store(folder, prefix="")
    if store is None:
        return None
    import obstore

    bucket = folder.path.strip("/").partition("/")[0] + "/"
    config = dict(folder.storage_options).get("config_kwargs") or {}
    slots = asyncio.Semaphore(max(1, int(config.get("max_pool_connections") or _BATCH_CONNECTIONS)))

    async def get(key: str) -> bytes:
        async with slots:
            return bytes(await (await obstore.get_async(store, key.removeprefix(bucket))).bytes_async())

    return get


def _obstore_cat(folder: UPath, keys: list[str]) -> dict[str, Any] | None:
    """``fs.cat(keys, on_error="return")`` through obstore (S3), or None when obstore cannot read ``folder``.

    ``keys`` are ``bucket/key`` paths of the folder's filesystem (see :func:`_obstore_reader`).
    """
    get = _obstore_reader(folder)
    if get is None:
        return None
    from fsspec.asyn import get_loop, sync

    async def every() -> list[Any]:
        return await asyncio.gather(*(get(k) for k in keys), return_exceptions=True)

    results = _call(folder, lambda: sync(get_loop(), every))
    return dict(zip(keys, results, strict=True))


class ArrivingFiles(Mapping[str, "bytes | None"]):
    """Contents of small files keyed by URL, some still arriving: reading one waits until it is there.

    What :func:`read_in_background` started reading is registered at once, so ``url in files`` is
    true from the start; ``files[url]`` then waits for that file (and the files read with it),
    returns ``None`` for a missing one, and raises the :class:`~spora_sd.errors.SporaError` of a
    failed one. Plain contents are added with :meth:`update`.
    """

    def __init__(self) -> None:
        self._done: dict[str, Any] = {}
        self._pending: dict[str, Any] = {}  # url -> concurrent.futures.Future of {url: bytes | None | error}

    def update(self, contents: Mapping[str, bytes | None]) -> None:
        self._done.update(contents)

    def add_pending(self, urls: Sequence[str], future: Any) -> None:
        for url in urls:
            self._pending[url] = future

    def wait(self) -> int:
        """Wait for every file still arriving; returns how many files there are."""
        for url in list(self._pending):
            self._resolve(url)
        return len(self._done)

    def _resolve(self, url: str) -> None:
        future = self._pending.get(url)  # left registered until its contents are in: threads may ask too
        if future is None:
            return
        contents = future.result()
        for key, value in contents.items():
            self._done.setdefault(key, value)
        for key in contents:
            self._pending.pop(key, None)

    def __getitem__(self, url: str) -> bytes | None:
        self._resolve(url)
        value = self._done[url]
        if isinstance(value, BaseException):
            raise value
        return value

    def __contains__(self, url: object) -> bool:
        return url in self._done or url in self._pending

    def __iter__(self) -> Iterator[str]:
        return iter({**dict.fromkeys(self._done), **dict.fromkeys(self._pending)})

    def __len__(self) -> int:
        return len(set(self._done) | set(self._pending))


def read_in_background(
    folder: UPath,
    relative: Sequence[str],
    files: ArrivingFiles,
    follow: Callable[[str, bytes | None], Sequence[str]] | None = None,
) -> bool:
    """Start reading the files ``<folder>/<rel>`` into ``files``, without waiting; False when it cannot.

    S3 only, through obstore (:func:`_obstore_cat`'s store and limit of requests in flight): the
    reads run on fsspec's event loop thread while the caller goes on, e.g. opening the images whose
    metadata arrived first. ``follow(rel, content)`` names more files (relative to ``folder``) to
    read once ``rel`` is there, such as the level ``zarr.json`` files a group names; they arrive
    together with ``rel``. False (nothing started) when obstore cannot read ``folder``: the caller
    then reads with :func:`read_many_under`.
    """
    get = _obstore_reader(folder)
    if get is None:
        return False
    import concurrent.futures

    from fsspec.asyn import get_loop

    url = str(folder).rstrip("/")
    base = folder.path.rstrip("/")

    async def one(rel: str) -> Any:
        try:
            return await get(f"{base}/{rel}")
        except Exception as exc:  # noqa: BLE001 - kept for the reader of this file, translated
            error = remote_error(exc, f"{url}/{rel}")
            return None if isinstance(error, CohortNotFoundError) else error or exc

    async def chain(rel: str) -> dict[str, Any]:
        out = {f"{url}/{rel}": await one(rel)}
        raw = out[f"{url}/{rel}"]
        more = list(follow(rel, raw)) if follow is not None and not isinstance(raw, BaseException) else []
        if more:
            got = await asyncio.gather(*(one(m) for m in more))
            out.update({f"{url}/{m}": value for m, value in zip(more, got, strict=True)})
        return out

    loop = get_loop()
    for rel in relative:
        future: concurrent.futures.Future[Any] = asyncio.run_coroutine_threadsafe(chain(rel), loop)
        files.add_pending([f"{url}/{rel}"], future)
    return True


def walk_files(root: Path | UPath) -> Iterator[tuple[str, int]]:
    """``(path relative to root, size)`` of every file under ``root``; remote: one recursive listing."""
    if isinstance(root, Path):
        for dirpath, _, filenames in os.walk(root):
            for name in filenames:
                file = Path(dirpath) / name
                yield file.relative_to(root).as_posix(), file.stat().st_size
        return
    base = root.path.rstrip("/") + "/"
    found = _call(root, lambda: _find_uncached(root.fs, root.path))
    for name, info in sorted(found.items()):
        if info.get("type") == "file" and name.startswith(base):
            size = info.get("size")
            if size is None:  # an HTTP index page lists names without sizes: ask for each (HEAD)
                size = _call(root, lambda name=name: root.fs.size(name))
            yield name[len(base) :], int(size or 0)


def _find_uncached(fs: Any, path: str) -> dict[str, Any]:
    """``fs.find(path, detail=True)`` without touching the listing cache.

    s3fs' ``find`` stores the folders it saw in the listing cache, but stops climbing at a folder
    that is cached already; a folder above it then gets a listing that lacks it (seen here: a
    resolution folder listed with ``standardization/`` but without ``images/``). The folders it
    added are dropped again, so later listings ask the server.
    """
    cache = getattr(fs, "dircache", None)
    before = set(cache) if cache is not None else set()
    try:
        return fs.find(path, detail=True)
    finally:
        if cache is not None:
            for key in set(cache) - before:
                cache.pop(key, None)


# -------------------------------------------------------------------------------------------------
# zarr
class MissingChunkError(FileNotFoundError):
    """A chunk (shard) key of an array is absent from the store (Zarr would read it as zeros)."""

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(key)


class CheckedStore(WrapperStore):  # type: ignore[type-arg]
    """A read-only Zarr store over ``inner`` (keys under ``prefix``), where a missing chunk is an error.

    Zarr reads an absent chunk key as the fill value; here it raises :class:`MissingChunkError`.
    Every read method zarr may use is overridden (``get``, ``get_partial_values`` and, from zarr 3.2
    on, ``get_ranges``, which the sharding codec reads inner chunks with): a method left to
    :class:`~zarr.storage.WrapperStore` would reach the inner store without the prefix and without
    the check, and read a wrong key as zeros. Zarr's synchronous fast path is turned off for the
    same reason.
    """

    def __init__(self, inner: Any, prefix: str = "") -> None:
        super().__init__(inner)
        self._prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""

    def __reduce__(self) -> tuple[Any, ...]:
        return (CheckedStore, (self._store, self._prefix))

    async def get(self, key: str, prototype: Any, byte_range: Any = None) -> Any:
        value = await self._store.get(self._prefix + key, prototype, byte_range)
        if value is None and _is_chunk_key(key):
            raise MissingChunkError(key)
        return value

    async def get_partial_values(self, prototype: Any, key_ranges: Any) -> list[Any]:
        key_ranges = list(key_ranges)
        values = await self._store.get_partial_values(prototype, [(self._prefix + k, r) for k, r in key_ranges])
        for (key, _), value in zip(key_ranges, values, strict=True):
            if value is None and _is_chunk_key(key):
                raise MissingChunkError(key)
        return values

    async def get_ranges(self, key: str, byte_ranges: Sequence[Any], **kwargs: Any) -> Any:
        async for batch in self._store.get_ranges(self._prefix + key, byte_ranges, **kwargs):
            if _is_chunk_key(key) and any(value is None for _, value in batch):
                raise MissingChunkError(key)
            yield batch

    @property
    def _supports_sync_io(self) -> bool:
        return False

    async def exists(self, key: str) -> bool:
        return await self._store.exists(self._prefix + key)


def zarr_store(path: UPath) -> zarr.abc.store.Store:
    """A read-only Zarr store over the remote folder ``path``.

    S3: zarr's ``ObjectStore`` over obstore (:func:`spora_sd.io.objectstore.s3_store`, the same
    options; one store per bucket and options, the folder is a key prefix); otherwise, or when
    obstore cannot express the options, zarr's ``FsspecStore`` on the path's filesystem options.
    The choice was made by measurement (``docs/design.md``, "Remote cohorts").

    Reading a chunk or shard key that is not in the store raises :class:`MissingChunkError` (Zarr
    itself would return the fill value), so a missing shard of a remote image is an error, as it is
    locally (:class:`spora_sd.io.images.CheckedLevel`), at no extra request.
    """
    from zarr.storage import FsspecStore, ObjectStore

    if path.protocol in ("s3", "s3a"):
        bucket, _, key = path.path.strip("/").partition("/")
        cache_key = f"{_options_key(path)} {bucket}"
        if cache_key not in _OBJECT_STORES:
            bucket_store = s3_store(path, prefix="")
            _OBJECT_STORES[cache_key] = None if bucket_store is None else ObjectStore(bucket_store, read_only=True)
        if _OBJECT_STORES[cache_key] is not None:
            return CheckedStore(_OBJECT_STORES[cache_key], key)
    url = f"{path.protocol}://{path.path.rstrip('/')}" if path.protocol not in ("http", "https") else str(path)
    fs = _async_filesystem(path)
    if fs is None:
        inner = FsspecStore.from_url(url, storage_options=dict(path.storage_options), read_only=True)
        tune_filesystem(inner.fs)
        _ASYNC_FS[_options_key(path)] = inner.fs
    else:  # the filesystem of an earlier store: a store is then a path on it (opening 1,000 images)
        inner = FsspecStore(fs, read_only=True, path=inner_path(fs, url))
    return CheckedStore(inner)


#: zarr's ``ObjectStore`` per options and bucket (None: obstore cannot express the options).
_OBJECT_STORES: dict[str, Any] = {}

#: The asynchronous filesystem zarr's stores use, per protocol and options (fsspec would make the same
#: one again, after hashing the options each time).
_ASYNC_FS: dict[str, Any] = {}


def _options_key(path: UPath) -> str:
    import json

    return path.protocol + json.dumps(path.storage_options, sort_keys=True, default=repr)


def _async_filesystem(path: UPath) -> Any:
    return _ASYNC_FS.get(_options_key(path))


def inner_path(fs: Any, url: str) -> str:
    """The path of ``url`` as ``fs`` spells it (``bucket/key`` for S3, the URL itself for HTTP)."""
    return fs._strip_protocol(url)


def _is_chunk_key(key: str) -> bool:
    # keys are relative to the array's folder; Zarr v3's "default" chunk key encoding (what spora-sd
    # writes) puts every chunk under "c/" (or "c." with the "." separator)
    return key.startswith(("c/", "c."))
