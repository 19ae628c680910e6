"""``spora-sd view --artifact UID``: the cohort folder behind a registered LaminDB artifact.

A cohort registered in place (key ``spora/<dataset>``) *is* a cohort folder: it is viewed where it is.
A SpatialData copy (key ``spora/<dataset>.zarr``) is written back to a cohort once
(:func:`spora_sd.lamin.export`, i.e. :func:`spora_sd.from_spatialdata`) into the viewer's cache,
``$SPORA_SD_VIEW_CACHE`` or ``~/.cache/spora-sd/view``, under the artifact's version uid; later views
of the same version reuse it.

Examples
--------
Needs a LaminDB instance with a registered cohort::

    artifact_cohort("jackson2020single")   # PosixPath('/data/spora/jackson2020single')
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from spora_sd.layout.paths import CohortPaths

__all__ = ["CACHE_ENV", "artifact_cohort", "view_cache"]

logger = logging.getLogger(__name__)

#: Environment variable naming the viewer's cache folder.
CACHE_ENV = "SPORA_SD_VIEW_CACHE"


def view_cache() -> Path:
    """``$SPORA_SD_VIEW_CACHE``, else ``~/.cache/spora-sd/view``.

    >>> import os
    >>> os.environ[CACHE_ENV] = "/tmp/x"; str(view_cache()); del os.environ[CACHE_ENV]
    '/tmp/x'
    """
    configured = os.environ.get(CACHE_ENV)
    return Path(configured) if configured else Path.home() / ".cache" / "spora-sd" / "view"


def _is_cohort_folder(path: Path) -> bool:
    return path.is_dir() and CohortPaths(path).tissues.is_file()


def artifact_cohort(ref: Any, cache: Path | None = None) -> Path:
    """The cohort folder of a registered artifact (uid, key or dataset key; see :func:`spora_sd.lamin.get_artifact`)."""
    from spora_sd.lamin.query import export, get_artifact

    artifact = get_artifact(ref)
    local = Path(str(artifact.path)) if not str(artifact.path).startswith(("s3://", "gs://", "http")) else None
    if local is not None and _is_cohort_folder(local):
        logger.info("%s: viewing the registered cohort folder %s", artifact.key, local)
        return local
    dataset = Path(str(artifact.key)).name.removesuffix(".zarr")
    target = (cache or view_cache()) / "artifacts" / artifact.uid / dataset
    if _is_cohort_folder(target):
        logger.info("%s: reusing %s", artifact.key, target)
        return target
    logger.info("%s: writing the SpatialData copy back to a cohort at %s (once per version)", artifact.key, target)
    return Path(export(artifact, target))
