"""One registration of a name at a time, across processes: the lock that makes concurrent registers safe.

Registering is "look for the artifact with this key and fingerprint, else create a new version".
Two processes doing that at once for the same cohort would both see nothing and both create an
artifact. :func:`instance_lock` serialises them per name, through the database itself where it can:

- PostgreSQL: a session-level advisory lock (``pg_advisory_lock``) on a 64-bit hash of the name;
  every client of the shared instance, on any machine, takes the same lock;
- SQLite: the writer lock of :mod:`spora_sd.io.atomic` on a file next to the database (SQLite
  instances are used from one machine).

Different names do not wait for each other.

Examples
--------
Needs a LaminDB instance (:func:`spora_sd.lamin.init_instance`)::

    with instance_lock("register:spora/jackson2020single"):
        ...  # look up, then create
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Iterator
from pathlib import Path

__all__ = ["LOCK_TIMEOUT", "advisory_key", "instance_lock"]

logger = logging.getLogger(__name__)

#: Seconds a registration waits for another one of the same name (a large cohort's curation included).
LOCK_TIMEOUT = 3600.0


def advisory_key(name: str) -> int:
    """A signed 64-bit integer for ``name``: the key of PostgreSQL's advisory locks.

    >>> advisory_key("register:spora/x") == advisory_key("register:spora/x")
    True
    >>> -(2**63) <= advisory_key("anything") < 2**63
    True
    """
    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "big", signed=True)


@contextlib.contextmanager
def instance_lock(name: str, *, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """Hold the lock ``name`` of the current instance for the block (waits for another holder).

    Parameters
    ----------
    name
        What is locked, e.g. ``"register:spora/jackson2020single"``.
    timeout
        Seconds to wait (SQLite; PostgreSQL waits until the other session ends or releases).

    Examples
    --------
    Needs a LaminDB instance (:func:`spora_sd.lamin.init_instance`)::

        with instance_lock("storage"):
            ...
    """
    import lamindb_setup

    if lamindb_setup.settings.instance.dialect == "postgresql":
        with _advisory_lock(name):
            yield
        return
    from spora_sd.io.atomic import target_lock

    folder = Path(lamindb_setup.settings.instance._sqlite_file_local).parent
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:16]
    with target_lock(folder / f"spora-lock-{digest}", timeout=timeout):
        yield


@contextlib.contextmanager
def _advisory_lock(name: str) -> Iterator[None]:
    from django.db import connection

    key = advisory_key(name)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [key])
        if not cursor.fetchone()[0]:
            logger.info("waiting for another process that holds the lock %r", name)
            cursor.execute("SELECT pg_advisory_lock(%s)", [key])
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [key])
