"""How a fetch verifies a file: against the manifest's size and CRC32C, or the size and MD5 ETag of a listing.

A downloaded file is checked before it is renamed to its final name (:func:`download_problem`); a
file already in the copy (a rerun, a refetch) is kept only when it still matches the source
(:func:`finished_entry`).

Examples
--------
>>> _plain_md5("0123456789abcdef0123456789abcdef"), _plain_md5("0123456789abcdef0123456789abcdef-2")
('0123456789abcdef0123456789abcdef', None)
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from spora_sd.io.fetch.plan import _Item
from spora_sd.io.manifest import ALGORITHM, file_checksum

__all__ = ["download_problem", "finished_entry"]

_READ_BLOCK = 8 << 20  # bytes hashed at a time


def _plain_md5(etag: str | None) -> str | None:
    """The MD5 an S3 ETag stands for; None for multipart uploads (``<md5>-<parts>``) and other servers."""
    if etag and len(etag) == 32 and all(c in "0123456789abcdef" for c in etag.lower()):
        return etag.lower()
    return None


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        while block := fh.read(_READ_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def finished_entry(final: Path, item: _Item, known: dict[str, Any] | None) -> dict[str, Any] | None:
    """The manifest entry of the copied file ``final`` when it matches ``item``; None when it must be (re)downloaded.

    ``known``: the entry a manifest or the journal of an interrupted fetch holds for it (trusted
    when its size and CRC32C are those of the source; else the file is hashed).
    """
    if not final.is_file() or final.is_symlink() or final.stat().st_size != item.size:
        return None
    if known is not None and int(known.get("size", -1)) == item.size:
        if item.crc32c is None or known.get(ALGORITHM) == item.crc32c:
            return {"size": item.size, ALGORITHM: str(known[ALGORITHM])}
    crc = file_checksum(final)
    if item.crc32c is not None and crc != item.crc32c:
        return None  # the source changed since: download it again
    if item.crc32c is None and (md5 := _plain_md5(item.etag)) is not None and _md5(final) != md5:
        return None
    return {"size": item.size, ALGORITHM: crc}


def download_problem(item: _Item, crc32c: str, md5: str | None) -> str | None:
    """What is wrong with downloaded bytes of ``crc32c`` (and ``md5``, where it is the check), or None.

    >>> download_problem(_Item("a", 3, crc32c="00000001"), "00000002", None)
    "CRC32C 00000002, the cohort's manifest says 00000001"
    """
    if item.crc32c is not None and crc32c != item.crc32c:
        return f"CRC32C {crc32c}, the cohort's manifest says {item.crc32c}"
    expected_md5 = _plain_md5(item.etag) if item.crc32c is None else None
    if md5 is not None and md5 != expected_md5:
        return f"MD5 {md5}, the server's ETag says {expected_md5}"
    return None
