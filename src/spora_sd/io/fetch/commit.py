"""Where a fetch builds its copy, and how the copy moves into place.

The copy is built in ``<parent>/.<name>.tmp-fetch/<name>/`` (:class:`_Staging`), with an
in-progress marker and a journal of the files verified so far (what a rerun resumes from), and
moved to the destination in one step by :meth:`_Staging.commit` (rename, or an atomic exchange).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from spora_sd import layout
from spora_sd.io.atomic import (
    MARKER_PREFIX,
    TMP_MARKER,
    WRITER_FILE,
    _commit,
    _exists,
    _fault_point,
    _leftovers,
    _recover_locked,
    _writer_info,
    is_temporary,
    remove_path,
)
from spora_sd.io.location import is_remote
from spora_sd.io.manifest import ALGORITHM, _dump, file_checksum, read_manifest

logger = logging.getLogger(__name__)

_STAGING = "fetch"  # .<name>.tmp-fetch
_PART = "part"  # .<file>.tmp-part
_STATE_FILE = "state.json"  # in the staging folder: the identity of its work tree
_JOURNAL_FILE = "verified.jsonl"  # in the staging folder: one verified file per line


def _finished_files(root: Path) -> Iterator[Path]:
    """Every file under ``root``, skipping temporary files and folders (writes in progress) and symlinks."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not is_temporary(d)]
        here = Path(dirpath)
        for name in filenames:
            path = here / name
            if not is_temporary(name) and not path.is_symlink():
                yield path


def _default_dest(key: str) -> Path:
    """``$SPORA_DATASETS_DIR/<key>`` when that is a local folder setting, else ``./<key>``."""
    layout.check_dataset_key(key)
    root = os.environ.get("SPORA_DATASETS_DIR")
    if root and not is_remote(root):
        return Path(root).expanduser() / key
    return Path.cwd() / key


class _Staging:
    """The staging folder ``<parent>/.<name>.tmp-fetch/`` of a destination: its work tree and journal."""

    def __init__(self, dest: Path) -> None:
        self.dest = dest
        self.holder = dest.with_name(f".{dest.name}{TMP_MARKER}{_STAGING}")
        self.work = self.holder / dest.name
        self.journal = self.holder / _JOURNAL_FILE
        self.marker = self.work / f"{MARKER_PREFIX}{_STAGING}"
        self._journal_lock = threading.Lock()

    def _ours(self) -> bool:
        """Whether the work tree is the one this staging folder built (after an exchange it holds the old copy)."""
        try:
            state = json.loads((self.holder / _STATE_FILE).read_text(encoding="utf-8"))
            stat = os.stat(self.work)
        except (OSError, ValueError):
            return False
        return [stat.st_dev, stat.st_ino] == state.get("work")

    def prepare(self) -> bool:
        """Create the staging folder, or keep one left by an interrupted fetch; returns whether it resumes."""
        _recover_locked(self.dest)  # an interrupted fallback replacement: move its complete copy in
        for path in _leftovers(self.dest):  # what dead writers left, except our own staging folder
            if path != self.holder:
                logger.warning("%s: removing what an interrupted write left behind", path)
                remove_path(path)
        resumed = self.holder.is_dir() and self._ours()
        if not resumed:
            remove_path(self.holder)  # nothing, or the old copy that an exchange left there
            self.holder.mkdir()
            self.work.mkdir()
            stat = os.stat(self.work)
            (self.holder / _STATE_FILE).write_text(json.dumps({"work": [stat.st_dev, stat.st_ino]}), encoding="utf-8")
        else:
            logger.info("%s: resuming the copy that an interrupted fetch left", self.dest)
        (self.holder / WRITER_FILE).write_text(json.dumps(_writer_info()), encoding="utf-8")
        if not self.marker.exists():
            self.marker.write_text("spora-sd fetch in progress; this folder is incomplete\n", encoding="utf-8")
        _fault_point("fetch.started")
        return resumed

    def link_existing(self) -> dict[str, dict[str, Any]]:
        """Hard-link the destination's files into the work tree; returns the destination's manifest entries.

        Files are never changed in place (a new version is renamed over the link), so the links share
        no future writes with the destination.
        """
        if not self.dest.is_dir():
            return {}
        for source in _finished_files(self.dest):
            target = self.work / source.relative_to(self.dest)
            if _exists(target) or _exists(target.with_name(f".{target.name}{TMP_MARKER}{_PART}")):
                continue  # the staging copy is newer (downloaded by an interrupted fetch)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(source, target)
            except OSError:  # no hard links on this file system: copy it
                import shutil

                shutil.copy2(source, target)
        _fault_point("fetch.linked")
        try:
            manifest = read_manifest(self.dest)
        except (OSError, ValueError):
            manifest = None
        files = manifest.get("files") if isinstance(manifest, dict) else None
        return dict(files) if isinstance(files, dict) else {}

    def verified(self) -> dict[str, dict[str, Any]]:
        """Files that earlier (interrupted) fetches verified and renamed: relative path -> entry."""
        out: dict[str, dict[str, Any]] = {}
        try:
            lines = self.journal.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return out
        for line in lines:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                record = json.loads(line)
                out[record["rel"]] = {"size": int(record["size"]), ALGORITHM: str(record[ALGORITHM])}
        return out

    def record(self, rel: str, entry: dict[str, Any]) -> None:
        line = json.dumps({"rel": rel, **entry}) + "\n"
        with self._journal_lock, open(self.journal, "a", encoding="utf-8") as fh:
            fh.write(line)  # one short write: a kill leaves at most one partial (ignored) line

    def commit(self, entries: dict[str, dict[str, Any]]) -> None:
        """Write the copy's manifest, remove the marker and move the work tree to the destination."""
        listed = {}
        for path in _finished_files(self.work):
            rel = path.relative_to(self.work).as_posix()
            if rel == f"{layout.METADATA}/{layout.MANIFEST_FILE}":
                continue
            entry = entries.get(rel)
            if entry is None or entry.get("size") != path.stat().st_size:
                entry = {"size": path.stat().st_size, ALGORITHM: file_checksum(path)}
            listed[rel] = {"size": int(entry["size"]), ALGORITHM: str(entry[ALGORITHM])}
        (self.work / layout.METADATA).mkdir(exist_ok=True)
        _dump(self.work, listed)
        _fault_point("fetch.manifest_written")
        self.marker.unlink()  # before the move: the tree that moves in is complete
        _fault_point("fetch.marker_removed")
        old = _commit(self.work, self.dest, self.holder, overwrite=True, scope="fetch")
        _fault_point("fetch.committed")
        remove_path(self.holder)  # after an exchange, the old copy is inside it
        if old is not None and self.holder not in old.parents:
            remove_path(old)  # the fallback's old copy
        _fault_point("fetch.cleaned")
