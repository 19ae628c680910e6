"""``spora_sd.consolidate_images``: add consolidated metadata to the image groups of an existing cohort.

See :mod:`spora_sd.io.consolidated` for what it is and why (one request per image instead of one per
level when a cohort is opened over a network). spora-sd's writers add it to every image they write;
this is for cohorts written by other tools, local or on S3.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from spora_sd.errors import InvalidArgumentError
from spora_sd.io.atomic import atomic_path
from spora_sd.io.cohort import open_cohort
from spora_sd.io.consolidated import encode_json, with_consolidated
from spora_sd.io.location import display_location
from spora_sd.io.remote import is_local, read_many, read_many_under, remote_errors, retrying
from spora_sd.layout import IMAGE_SUFFIX

__all__ = ["consolidate_images"]

logger = logging.getLogger(__name__)


def _write_file(path: Any, data: bytes) -> None:
    """Replace one small file atomically: local through :func:`~spora_sd.io.atomic.atomic_path`, S3 by one PUT."""
    if is_local(path):
        with atomic_path(path) as tmp:
            Path(tmp).write_bytes(data)
        return
    with remote_errors(path):  # an S3 PUT replaces the object at once: readers see the old or the new file
        retrying(lambda: path.fs.pipe_file(path.path, data), path)


def _read_all(folder: Any, relative: Sequence[str]) -> dict[str, bytes | None]:
    """Contents of ``<folder>/<rel>`` keyed by ``rel`` (local reads, or one concurrent remote batch)."""
    if not relative:
        return {}
    if is_local(folder):
        got = read_many([Path(folder) / rel for rel in relative])
        return {rel: got[str(Path(folder) / rel)] for rel in relative}
    url = str(folder).rstrip("/")
    got = read_many_under(folder, relative)
    return {rel: got[f"{url}/{rel}"] for rel in relative}


def _load(raw: bytes | None) -> dict[str, Any] | None:
    try:
        content = json.loads(raw) if raw is not None else None
    except ValueError:
        return None
    return content if isinstance(content, dict) else None


def _consolidate_folder(folder: Any, names: Sequence[str], advance: Callable[[], None]) -> tuple[int, list[str]]:
    """Consolidate the images ``names`` of one images folder; ``(groups written, images skipped)``."""
    raw_groups = _read_all(folder, [f"{n}/zarr.json" for n in names])
    groups: dict[str, tuple[dict[str, Any], list[str]]] = {}  # name -> (group zarr.json, level paths)
    skipped: list[str] = []
    for name in names:
        group = _load(raw_groups[f"{name}/zarr.json"])
        try:
            datasets = group["attributes"]["ome"]["multiscales"][0]["datasets"]  # type: ignore[index]
            groups[name] = (group, [str(d["path"]) for d in datasets])  # type: ignore[assignment]
        except (KeyError, TypeError, IndexError):
            skipped.append(name)  # not an OME-Zarr group: validate says why
            advance()
    levels = _read_all(folder, [f"{n}/{lp}/zarr.json" for n, (_, paths) in groups.items() for lp in paths])
    written = 0
    for name, (group, paths) in groups.items():
        own = {lp: _load(levels[f"{name}/{lp}/zarr.json"]) for lp in paths}
        if any(meta is None for meta in own.values()):
            skipped.append(name)
            advance()
            continue
        merged = with_consolidated(group, own)  # type: ignore[arg-type]
        if merged != group:  # already consolidated and up to date: no write (idempotent)
            _write_file(folder / name / "zarr.json", encode_json(merged))
            written += 1
        advance()
    return written, skipped


@contextlib.contextmanager
def _progress(enabled: bool, total: int) -> Iterator[Callable[[], None]]:
    """Yield ``advance()``; a rich bar of images on stderr when ``enabled``."""
    if not enabled:
        yield lambda: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task("consolidating image metadata", total=total)
        yield lambda: bar.advance(task)


def consolidate_images(
    cohort: Any,
    *,
    storage_options: dict[str, Any] | None = None,
    progress: bool = False,
) -> int:
    """Add consolidated metadata to every image group of a cohort that lacks it (or has it stale).

    Each ``<tissue_id>.ome.zarr/zarr.json`` gets the ``zarr.json`` of its pyramid levels under
    ``consolidated_metadata`` (see the module's docstring), so that opening the image over a network
    reads one file instead of one per level. Each group file is replaced atomically (locally by a
    rename, on S3 by one ``PUT``); pixels and level files are not touched. A group already
    consolidated and up to date is not rewritten, so a second run writes nothing. Images whose
    metadata cannot be read are left as they are and logged (``spora_sd.validate`` says why).

    Parameters
    ----------
    cohort
        A cohort folder, key, ``s3://`` location or an opened :class:`~spora_sd.Cohort` (HTTP is read-only).
    storage_options
        Options of the remote filesystem, as for :func:`~spora_sd.open_cohort`.
    progress
        Show a progress bar (images) on stderr.

    Returns
    -------
    int
        How many group files were written.

    Examples
    --------
    >>> import spora_sd, tempfile
    >>> root = spora_sd.make_synthetic_cohort(tempfile.mkdtemp(), n_tissues=2, modalities=("imc",),
    ...                                       image_size=64, n_cells=5, standardization=False, tiling=False)
    >>> consolidate_images(root)  # the synthetic writer consolidates already
    0
    """
    opened = open_cohort(cohort, storage_options=storage_options)
    if not is_local(opened.path) and getattr(opened.path, "protocol", "") in ("http", "https"):
        raise InvalidArgumentError(f"{display_location(opened.path)}: an HTTP cohort is read-only; cannot write to it")
    folders = []
    for modality in opened.modalities:
        for mpp in opened.resolutions(modality):
            names = [f"{t}{IMAGE_SUFFIX}" for t in opened.image_tissue_ids(modality, mpp)]
            if names:
                folders.append((opened.paths.images_dir(modality, mpp), names))
    written, skipped = 0, []
    with _progress(progress, sum(len(n) for _, n in folders)) as advance:
        for folder, names in folders:
            n, bad = _consolidate_folder(folder, names, advance)
            written += n
            skipped += bad
    if skipped:
        shown = ", ".join(skipped[:5]) + (f" and {len(skipped) - 5} more" if len(skipped) > 5 else "")
        logger.warning(
            "%d images not consolidated (unreadable metadata; run spora_sd.validate): %s", len(skipped), shown
        )
    logger.info("%s: consolidated the metadata of %d image groups", display_location(opened.path), written)
    return written
