"""The public function :func:`fetch`: resolve the source, plan, download, commit, under the destination's lock."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from spora_sd import layout
from spora_sd.errors import CohortNotFoundError, InvalidArgumentError, TargetExistsError
from spora_sd.io.atomic import _exists, target_lock
from spora_sd.io.fetch.commit import _default_dest, _Staging
from spora_sd.io.fetch.plan import _listing, _plan, _read_remote_manifest
from spora_sd.io.fetch.source import _remote, _resolve_source
from spora_sd.io.fetch.transfer import (
    _DEFAULT_WORKERS,
    FetchProgress,
    _Downloader,
    _progress_reporter,
    _run_plan,
)

__all__ = ["FetchResult", "fetch"]

logger = logging.getLogger(__name__)


@dataclass
class FetchResult:
    """What :func:`fetch` did.

    Attributes
    ----------
    path
        The local copy.
    source
        The remote location, as shown to users (no credentials).
    files
        Files of the copy that the selection asked for.
    bytes_total
        Their total size.
    bytes_downloaded
        Bytes downloaded by this call (a rerun after a complete fetch downloads 0).
    files_downloaded
        Files (re)downloaded, entirely or their missing end, by this call.
    """

    path: Path
    source: str
    files: int = 0
    bytes_total: int = 0
    bytes_downloaded: int = 0
    files_downloaded: int = 0

    def __repr__(self) -> str:
        return (
            f"FetchResult({self.path.as_posix()!r}, files={self.files}, bytes_total={self.bytes_total}, "
            f"bytes_downloaded={self.bytes_downloaded})"
        )


def fetch(
    cohort: str | os.PathLike[str],
    dest: str | os.PathLike[str] | None = None,
    *,
    modalities: Sequence[str] | None = None,
    resolution: float | Sequence[float] | None = None,
    tissues: Sequence[str] | None = None,
    masks: Sequence[str] | None = None,
    storage_options: dict[str, Any] | None = None,
    workers: int = _DEFAULT_WORKERS,
    progress: bool | Callable[[FetchProgress], None] = False,
) -> FetchResult:
    """Copy a cohort, or only part of it, to a local folder: parallel, verified, resumable, atomic.

    Parameters
    ----------
    cohort
        Where the cohort is: ``s3://bucket/prefix/<dataset>``, ``https://host/.../<dataset>``, an
        rclone location ``remote:bucket/prefix/<dataset>``, a local folder, or a dataset key or
        alias of the registry (``"jackson2020"``: read from its hosted location, the ``spora``
        bucket, see :func:`spora_sd.datasets.registry.remote_location`).
    dest
        The local cohort folder to create or complete; default ``$SPORA_DATASETS_DIR/<dataset>``, or
        ``./<dataset>`` when that variable is not set. A refetch into an existing copy adds to it.
    modalities
        Modality folders to copy (``["imc"]``); default all.
    resolution
        Resolution(s) in microns per pixel of the images, standardization and tiling tables and
        tissue masks to copy; default all.
    tissues
        Tissue ids whose images and masks to copy; default all.
    masks
        Masks to copy for the chosen tissues: ``"tissue"`` (at the chosen resolutions),
        ``"instances"`` and semantic task names (at the finest mask resolution, where cell masks
        live), or ``["all"]`` (the default) or ``["none"]``. ``metadata/`` is always copied; masks
        left out are listed by :attr:`spora_sd.Cohort.missing`, and ``validate(allow_partial=True)``
        reports them as warnings.
    storage_options
        Passed to the remote filesystem (e.g. ``{"key": ..., "secret": ..., "client_kwargs":
        {"endpoint_url": ...}}``); they win over the rclone remote's settings and the AWS variables.
    workers
        Files downloaded at the same time.
    progress
        True: a progress bar on stderr (bytes, speed, files); a callable: called with a
        :class:`FetchProgress` after every block.

    Returns
    -------
    FetchResult
        The copy's path and what was downloaded.

    Raises
    ------
    TargetLockedError
        Another process writes ``dest`` right now (raised before anything is downloaded).
    CohortFormatError
        A downloaded file failed its size or checksum check (rule ``fetch.checksum`` or
        ``fetch.size_mismatch``; the message names the file, nothing of it is kept), or a file name
        of the source would leave the cohort (``fetch.unsafe_path``).
    CohortNotFoundError
        The location holds no cohort, or a listed file disappeared from the server.
    FetchError
        Access denied (wrong credentials) or another failure of the server or the network.
    InvalidArgumentError
        A modality, resolution, tissue or mask the cohort does not have.

    Examples
    --------
    >>> import spora_sd, tempfile, pathlib
    >>> remote = spora_sd.make_synthetic_cohort(tempfile.mkdtemp(), n_tissues=2, image_size=64, n_cells=8)
    >>> dest = pathlib.Path(tempfile.mkdtemp()) / remote.name
    >>> fetch(remote, dest, modalities=["he"], masks=["tissue"]).files > 0
    True
    >>> spora_sd.validate(dest, allow_partial=True).ok
    True
    """
    root = _resolve_source(cohort, storage_options)
    remote = _remote(root)
    key = PurePosixPath(remote.base).name
    target = Path(dest).expanduser() if dest is not None else _default_dest(key)
    target = target.absolute()
    if _exists(target) and not target.is_dir():
        raise TargetExistsError(f"{target} exists and is not a folder")
    if target.is_dir() and any(target.iterdir()) and not (target / layout.METADATA / layout.TISSUES_FILE).is_file():
        raise InvalidArgumentError(f"{target}: exists, is not empty and is no cohort; choose another destination")
    target.parent.mkdir(parents=True, exist_ok=True)
    result = FetchResult(path=target, source=remote.shown)
    logger.info("fetching %s into %s", remote.shown, target)
    with target_lock(target):
        manifest = _read_remote_manifest(remote)
        items = _listing(remote, manifest)
        if not any(i.rel == f"{layout.METADATA}/{layout.TISSUES_FILE}" for i in items):
            raise CohortNotFoundError(
                f"{remote.where(layout.METADATA)}/{layout.TISSUES_FILE}: missing; no cohort there"
            )
        staging = _Staging(target)
        staging.prepare()
        known = staging.link_existing()
        known.update(staging.verified())
        metadata = [i for i in items if i.rel.startswith(f"{layout.METADATA}/")]
        state = FetchProgress(files_total=len(metadata), bytes_total=sum(i.size for i in metadata))
        with _progress_reporter(progress, state, f"fetch {key}") as update:
            downloader = _Downloader(remote, staging, state, update)
            # metadata first: the tissues table checks the choice of tissues
            plan = _run_plan(downloader, metadata, known, workers)
            selected = _plan(
                items,
                staging.work / layout.METADATA / layout.TISSUES_FILE,
                remote.shown,
                modalities=modalities,
                resolution=resolution,
                tissues=tissues,
                masks=masks,
            )
            rest = [i for i in selected if not i.rel.startswith(f"{layout.METADATA}/")]
            with state._lock:
                state.files_total += len(rest)
                state.bytes_total += sum(i.size for i in rest)
            plan.update(_run_plan(downloader, rest, known, workers))
        staging.commit({**known, **plan})
    result.files = len(selected)
    result.bytes_total = sum(i.size for i in selected)
    result.bytes_downloaded = downloader.downloaded_bytes
    result.files_downloaded = downloader.downloaded_files
    logger.info(
        "fetched %s: %d files, %d bytes downloaded (%d bytes selected)",
        target,
        result.files,
        result.bytes_downloaded,
        result.bytes_total,
    )
    return result
