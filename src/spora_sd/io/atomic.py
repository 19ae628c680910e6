"""Atomic writes: write to a temporary name in the same folder, then rename.

A rename within one file system is atomic, so a reader (or a crash) sees either the old file, or
the complete new one, never a half-written file under the final name. Temporary names start with
``.`` and contain ``.tmp-``, which the reader and the validator ignore.

A whole cohort is written the same way (:func:`export_workspace`): it is built in a hidden sibling
folder and renamed into place at the end.

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
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from spora_sd.errors import TargetExistsError

__all__ = [
    "MARKER_PREFIX",
    "TMP_MARKER",
    "atomic_path",
    "export_workspace",
    "is_temporary",
    "remove_path",
    "replace_path",
]

logger = logging.getLogger(__name__)

TMP_MARKER = ".tmp-"


def _temporary_sibling(target: Path) -> Path:
    return target.with_name(f".{target.name}{TMP_MARKER}{uuid.uuid4().hex[:12]}")


def is_temporary(name: str) -> bool:
    """Whether a file name is one of our temporary names (left behind by a crash)."""
    return name.startswith(".") and TMP_MARKER in name


def remove_path(path: Path) -> None:
    """Remove a file or a folder tree, if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def replace_path(tmp: Path, target: Path, *, overwrite: bool = True) -> None:
    """Move ``tmp`` to ``target`` atomically; an existing target is replaced only when ``overwrite``.

    Folders cannot be replaced by one ``rename`` call, so an existing target folder is first moved
    aside to a temporary name (atomic), then the new one is moved in (atomic), then the old one is
    deleted. At every moment ``target`` is either the old or the new complete tree, or absent.
    """
    if target.exists() or target.is_symlink():
        if not overwrite:
            raise TargetExistsError(f"{target} exists; pass overwrite=True to replace it")
        if tmp.is_dir() or target.is_dir():
            aside = _temporary_sibling(target)
            os.rename(target, aside)
            os.rename(tmp, target)
            remove_path(aside)
            return
    os.replace(tmp, target)


@contextlib.contextmanager
def atomic_path(target: str | Path, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; on success it is renamed to ``target``.

    On an exception the temporary file or folder is removed and ``target`` is left untouched.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> with atomic_path(d / "x.txt") as tmp:
    ...     _ = tmp.write_text("hello")
    >>> (d / "x.txt").read_text()
    'hello'
    """
    target = Path(target)
    if not overwrite and target.exists():
        raise TargetExistsError(f"{target} exists; pass overwrite=True to replace it")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_sibling(target)
    try:
        yield tmp
        replace_path(tmp, target, overwrite=overwrite)
    except BaseException:
        remove_path(tmp)
        raise


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
        Replace an existing ``target`` (else :class:`~spora_sd.errors.TargetExistsError`, a
        ``FileExistsError``, before anything is written).
    """
    target = Path(target)
    if (target.exists() or target.is_symlink()) and not overwrite:
        raise TargetExistsError(f"{target} exists; pass overwrite=True to replace it")
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
