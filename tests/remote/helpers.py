"""Helpers of the remote-cohort tests (imported as ``remote.helpers``; ``tests/`` is on the path)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from servers import RequestLog, S3Server

_PREFIXES = itertools.count()


@dataclass
class RemoteCohort:
    """A cohort served remotely: its URL, the options that reach it, and the local original."""

    kind: str  # "s3" or "http"
    url: str
    storage_options: dict[str, Any] | None = field(repr=False)
    local: Path
    log: RequestLog = field(repr=False)


def fresh_s3_cohort(s3_server: S3Server, local: Path) -> str:
    """Uploads ``local`` under a prefix no other test uses (for tests that delete or alter objects)."""
    return s3_server.upload_folder(local, f"fresh/{next(_PREFIXES)}/{local.name}")
