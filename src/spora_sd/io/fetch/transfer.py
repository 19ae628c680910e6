"""How a fetch moves bytes: files downloaded in parallel, in blocks, resumed, verified, then renamed.

:class:`_Downloader` writes each file to ``.<file>.tmp-part`` (continuing a part an interrupted
fetch left, with range requests), checks it (:mod:`spora_sd.io.fetch.verify`) and renames it;
:func:`_run_plan` runs it over a plan on a thread pool, skipping finished files.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

import google_crc32c

from spora_sd.errors import CohortFormatError
from spora_sd.io.atomic import TMP_MARKER, _fault_point
from spora_sd.io.fetch.commit import _PART, _Staging
from spora_sd.io.fetch.plan import _Item
from spora_sd.io.fetch.source import _Remote
from spora_sd.io.fetch.verify import _plain_md5, download_problem, finished_entry
from spora_sd.io.manifest import ALGORITHM

__all__ = ["FetchProgress"]

logger = logging.getLogger(__name__)

_BLOCK = 8 << 20  # one range request
_DEFAULT_WORKERS = 8


@dataclass
class FetchProgress:
    """Progress of a running fetch, passed to a ``progress`` callable after each block."""

    files_total: int
    bytes_total: int
    files_done: int = 0
    bytes_done: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, nbytes: int = 0, files: int = 0) -> None:
        with self._lock:
            self.bytes_done += nbytes
            self.files_done += files


@contextlib.contextmanager
def _progress_reporter(
    progress: bool | Callable[[FetchProgress], None], state: FetchProgress, description: str
) -> Iterator[Callable[[], None]]:
    """Yield ``update()``; a rich bar on stderr (bytes, speed, files) when ``progress`` is True."""
    if callable(progress):
        yield lambda: progress(state)
        return
    if not progress:
        yield lambda: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TextColumn("{task.fields[files]} files"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task(description, total=state.bytes_total, files=f"0/{state.files_total}")

        def update() -> None:
            bar.update(task, completed=state.bytes_done, files=f"{state.files_done}/{state.files_total}")

        yield update
        update()


class _Downloader:
    """Downloads, verifies and renames the files of a plan into the work tree (thread-safe)."""

    def __init__(self, remote: _Remote, staging: _Staging, state: FetchProgress, update: Callable[[], None]) -> None:
        self.remote, self.staging, self.state, self.update = remote, staging, state, update
        self.downloaded_bytes = 0
        self.downloaded_files = 0
        self._lock = threading.Lock()
        self.entries: dict[str, dict[str, Any]] = {}

    def _count(self, nbytes: int) -> None:
        with self._lock:
            self.downloaded_bytes += nbytes
        self.state.add(nbytes)
        self.update()

    def finished(self, item: _Item, known: dict[str, Any] | None) -> dict[str, Any] | None:
        """The entry of an already copied file that matches ``item``; None when it must be (re)downloaded."""
        return finished_entry(self.staging.work / item.rel, item, known)

    def __call__(self, item: _Item) -> None:
        entry = self._download(item, resume=True)
        with self._lock:
            self.entries[item.rel] = entry
            self.downloaded_files += 1
        self.state.add(files=1)
        self.update()

    def _download(self, item: _Item, *, resume: bool) -> dict[str, Any]:
        final = self.staging.work / item.rel
        part = final.with_name(f".{final.name}{TMP_MARKER}{_PART}")
        final.parent.mkdir(parents=True, exist_ok=True)
        have = part.stat().st_size if resume and part.is_file() else 0
        if have > item.size:
            have = 0
        crc = 0
        # the MD5 only where it is the check (no manifest, an S3 ETag of a single-part upload)
        expected_md5 = _plain_md5(item.etag) if item.crc32c is None else None
        md5 = hashlib.md5(usedforsecurity=False) if expected_md5 else None
        if have:  # continue an interrupted download: hash what is there, ask for the rest only
            with open(part, "rb") as fh:
                while block := fh.read(_BLOCK):
                    crc = google_crc32c.extend(crc, block)
                    if md5 is not None:
                        md5.update(block)
            self.state.add(have)
        with open(part, "ab" if have else "wb", buffering=0) as fh:
            position = have
            while position < item.size:
                end = min(position + _BLOCK, item.size)
                # a whole file in one plain GET (servers answer it faster than a range), else a range
                data = (
                    self.remote.cat(item.rel)
                    if (position, end) == (0, item.size)
                    else self.remote.cat(item.rel, position, end)
                )
                if len(data) != end - position:
                    raise CohortFormatError(
                        self.remote.where(item.rel),
                        "fetch.size_mismatch",
                        f"the server sent {len(data)} bytes for bytes {position}-{end - 1}; "
                        f"the {'manifest' if item.crc32c else 'listing'} says the file has {item.size}",
                    )
                fh.write(data)  # unbuffered: a kill loses nothing already received and written
                crc = google_crc32c.extend(crc, data)
                if md5 is not None:
                    md5.update(data)
                position = end
                self._count(len(data))
                _fault_point("fetch.part_written")
        found = f"{crc:08x}"
        problem = download_problem(item, found, md5.hexdigest() if md5 is not None else None)
        if problem is not None:
            part.unlink()  # never keep bytes that failed their check
            if have:  # the part may come from an older version of the file: once more, from the start
                logger.info("%s: the resumed download failed its check; downloading it again", item.rel)
                self.state.add(-have)
                return self._download(item, resume=False)
            raise CohortFormatError(
                self.remote.where(item.rel),
                "fetch.checksum",
                f"downloaded {item.size} bytes with {problem}: the object was altered or is corrupt; "
                "nothing of it was kept",
            )
        _fault_point("fetch.verified")
        os.replace(part, final)
        _fault_point("fetch.file_renamed")
        entry = {"size": item.size, ALGORITHM: found}
        self.staging.record(item.rel, entry)
        return entry


def _run_parallel(func: Callable[[_Item], None], items: list[_Item], workers: int) -> None:
    """``func`` over ``items`` on ``workers`` threads; the first failure cancels what has not started."""
    if not items:
        return
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(items))), thread_name_prefix="spora-fetch") as pool:
        futures = [pool.submit(func, item) for item in items]
        done, pending = wait(futures, return_when=FIRST_EXCEPTION)
        for future in pending:
            future.cancel()
        for future in futures:
            if future.done() and not future.cancelled() and future.exception() is not None:
                raise future.exception()  # type: ignore[misc]


def _run_plan(
    downloader: _Downloader, items: list[_Item], known: dict[str, dict[str, Any]], workers: int
) -> dict[str, dict[str, Any]]:
    """Download the files of ``items`` that are not finished yet; returns every file's manifest entry."""
    entries: dict[str, dict[str, Any]] = {}
    todo = []
    for item in items:
        entry = downloader.finished(item, known.get(item.rel))
        if entry is None:
            todo.append(item)
        else:
            entries[item.rel] = entry
            downloader.state.add(item.size, files=1)
    downloader.update()
    # the largest first: the pool stays busy to the end
    _run_parallel(downloader, sorted(todo, key=lambda i: -i.size), workers)
    entries.update(downloader.entries)
    return entries
