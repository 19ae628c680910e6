"""A whole cohort written atomically: built in a hidden sibling folder, renamed into place at the end.

The cohort is built at ``<parent>/.<name>.tmp-<id>/<name>/`` so that it already has its final folder
name (the dataset key, which writers and the validator check), and it carries a marker file
``.export-in-progress.tmp-<id>`` from the first moment. The marker is a temporary name, which the
validator reports as an error, so a folder whose export was interrupted at any point, even between
the rename and the removal of the marker, never validates. On an exception the sibling folder is
removed and an existing target is left untouched.

Examples
--------
>>> import tempfile, pathlib
>>> target = pathlib.Path(tempfile.mkdtemp()) / "demo2025cohort"
>>> with export_workspace(target) as work:
...     _ = (work / "metadata").mkdir()
>>> sorted(p.name for p in target.iterdir())
['metadata']
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path

from .atomic import TMP_MARKER, _temporary_sibling, remove_path, replace_path

__all__ = ["MARKER_PREFIX", "export_workspace"]

logger = logging.getLogger(__name__)

#: Name of the in-progress marker (a temporary name: ``.export-in-progress.tmp-<id>``).
MARKER_PREFIX = f".export-in-progress{TMP_MARKER}"


@contextlib.contextmanager
def export_workspace(target: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield the folder to build the cohort in; on success it replaces ``target`` atomically.

    Parameters
    ----------
    target
        The cohort folder to create.
    overwrite
        Replace an existing ``target`` (else :class:`FileExistsError`, before anything is written).
    """
    target = Path(target)
    if (target.exists() or target.is_symlink()) and not overwrite:
        raise FileExistsError(f"{target} exists; pass overwrite=True to replace it")
    target.parent.mkdir(parents=True, exist_ok=True)
    holder = _temporary_sibling(target)
    work = holder / target.name
    work.mkdir(parents=True)
    marker_name = f"{MARKER_PREFIX}{uuid.uuid4().hex[:12]}"
    (work / marker_name).write_text("spora-sd export in progress; this folder is incomplete\n")
    try:
        yield work
        replace_path(work, target, overwrite=overwrite)
        # Removed only after the rename: a crash in between leaves the marker, never a "valid" half.
        (target / marker_name).unlink()
        with contextlib.suppress(OSError):
            holder.rmdir()
    except BaseException:
        remove_path(holder)
        raise
    logger.info("wrote %s", target)
