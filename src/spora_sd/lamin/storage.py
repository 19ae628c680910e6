"""Storage locations for cohorts registered in place: find the one that holds a cohort, or add its folder.

LaminDB registers a folder *in place* (no copy) only when the folder lies inside a storage location
that the instance knows (``ln.Storage``); anything else it copies into the default storage. So
before an in-place registration, :func:`storage_for` finds the location that contains the cohort;
when there is none, it adds the cohort's parent folder (``$SPORA_DATASETS_DIR``, a lab's shared
cohort disk, ...) as a location of the instance, once, with a log line. Nothing is written into
that folder: the location is recorded in the database only (LaminDB's marker file is skipped, so
a read-only disk works too); LaminDB makes an empty ``.lamindb`` folder in it when it can.

Examples
--------
Needs a LaminDB instance (:func:`spora_sd.lamin.init_instance`)::

    storage = storage_for(Path("/data/cohorts/jackson2020single"))
    storage.root
    # '/data/cohorts'
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spora_sd.lamin.instance import offline_hub_state, quiet
from spora_sd.lamin.locking import instance_lock

if TYPE_CHECKING:
    import lamindb as ln

__all__ = ["add_remote_storage", "add_storage", "remote_root", "storage_for"]

logger = logging.getLogger(__name__)


def _containing(path: Path) -> ln.Storage | None:
    import lamindb as ln

    # the deepest location wins, as in LaminDB's own look-up
    for storage in sorted(ln.Storage.filter(type="local"), key=lambda s: len(s.root), reverse=True):
        root = Path(storage.root)
        if path == root or root in path.parents:
            return storage
    return None


def add_storage(root: str | Path) -> ln.Storage:
    """Record a local folder as a storage location of the current instance (idempotent).

    Parameters
    ----------
    root
        A folder holding cohorts; it must exist. Nothing is written into it.

    Returns
    -------
    lamindb.Storage
        The new or existing record.

    Examples
    --------
    Needs a LaminDB instance (:func:`spora_sd.lamin.init_instance`)::

        add_storage("/data/cohorts").root
        # '/data/cohorts'
    """
    import lamindb as ln

    path = Path(root).expanduser().resolve()
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such folder (a storage location must exist)")
    offline_hub_state()
    with instance_lock("storage"):  # two processes adding the same folder: one record
        existing = ln.Storage.filter(root=path.as_posix()).one_or_none()
        if existing is not None:
            return existing
        logger.info("adding %s as a storage location of the instance (cohorts in it are registered in place)", path)
        with quiet():
            storage = ln.Storage(root=path.as_posix(), skip_mark_storage_root=True).save()
    return storage


def remote_root(location: Any) -> str:
    """LaminDB's spelling of a remote folder: ``s3://bucket/prefix``, plus ``?endpoint_url=...`` if set.

    The endpoint of an S3-compatible server is part of the root, as LaminDB stores it; credentials
    never are (LaminDB reads them from the environment).
    """
    from spora_sd.errors import InvalidArgumentError

    if getattr(location, "protocol", None) not in ("s3", "s3a"):
        raise InvalidArgumentError(
            f"{location}: only cohorts in S3 buckets (and local folders) can be registered in place; "
            "register it with mode='spatialdata' to copy it"
        )
    options = getattr(location, "storage_options", {}) or {}
    endpoint = options.get("endpoint_url") or (options.get("client_kwargs") or {}).get("endpoint_url")
    root = f"s3://{location.path.strip('/')}"
    return f"{root}?endpoint_url={endpoint}" if endpoint else root


def add_remote_storage(root: str) -> ln.Storage:
    """Record an S3 folder (:func:`remote_root`) as a storage location (idempotent; nothing is written)."""
    import lamindb as ln

    offline_hub_state()
    with instance_lock("storage"):
        existing = ln.Storage.filter(root=root).one_or_none()
        if existing is not None:
            return existing
        logger.info("adding %s as a storage location of the instance (cohorts in it are registered in place)", root)
        with quiet():
            return ln.Storage(root=root, skip_mark_storage_root=True).save()


def storage_for(path: str | Path) -> ln.Storage:
    """The storage location that contains ``path``; its parent folder becomes one when none does.

    Parameters
    ----------
    path
        A local cohort folder.

    Returns
    -------
    lamindb.Storage

    Examples
    --------
    Needs a LaminDB instance (:func:`spora_sd.lamin.init_instance`)::

        storage_for("/data/cohorts/jackson2020single").root
        # '/data/cohorts'
    """
    path = Path(path).expanduser().resolve()
    found = _containing(path)
    if found is not None and Path(found.root) != path:
        return found
    return add_storage(path.parent)
