"""Atomic writes of files, folders and whole cohorts, safe against crashes and concurrent writers.

Every write goes to a temporary name next to its target and is moved into place when complete, so a
reader, or a crash, sees the old target or the complete new one, never a half-written one under the
final name. Temporary names start with ``.`` and contain ``.tmp-`` (:func:`is_temporary`); the reader
ignores them and the validator reports them.

The protocol (docs: ``guarantees.md``, "Crashes and concurrent writers"):

1. **Lock.** One writer per target at a time: the lock file ``<parent>/.<name>.tmp-lock`` is held with
   ``flock`` (released by the kernel when its process dies, so a crash never leaves a stale lock); a
   second writer fails at once with :class:`~spora_sd.errors.TargetLockedError`, before writing.
2. **Clean up.** Under the lock, temporary siblings of the target (``.<name>.tmp-*``) are leftovers of
   writers that died: they are removed, unless a writer file (``.writer.json``, pid, host and boot id)
   says their writer still runs (then they are left alone). An interrupted fallback replacement is
   finished first (:func:`recover`).
3. **Build** under the temporary name: a file or folder (:func:`atomic_path`), or a whole cohort in
   ``<parent>/.<name>.tmp-<id>/<name>/`` with an in-progress marker (:func:`export_workspace`).
4. **Commit.** The marker is removed (the new tree is complete), then the new tree is moved into
   place in one step: ``rename`` when there is no target, and when there is one, Linux's
   ``renameat2(RENAME_EXCHANGE)``, which swaps the two trees atomically; the old tree then sits at the
   temporary name and is deleted. A crash during that deletion leaves a temporary folder, never a
   broken target.
5. **Fallback** (no ``renameat2``: other OSes, some file systems): the new tree is renamed to
   ``.<name>.tmp-<id>.new`` (staged), the old target to ``.<name>.tmp-<id>.old``, the staged tree to
   the target, and the old one is deleted. A crash between the second and the third rename leaves no
   target for an instant; the next writer, or :func:`spora_sd.open_cohort`, finds the staged complete
   tree and moves it in (:func:`recover`).

Fault injection (for tests): with ``SPORA_SD_FAULT_POINT=<point>[@<n>][:stop]`` in the environment, the
process kills itself with SIGKILL (or stops with SIGSTOP) at the ``n``-th time it reaches ``point``
(one of :data:`FAULT_POINTS`); without the variable a point costs one dictionary look-up.

Examples
--------
>>> import tempfile, pathlib
>>> target = pathlib.Path(tempfile.mkdtemp()) / "demo2025cohort"
>>> with export_workspace(target) as work:
...     _ = (work / "metadata").mkdir()
>>> sorted(p.name for p in target.iterdir())
['metadata']
>>> sorted(p.name for p in target.parent.iterdir())  # no lock, no temporary folder left
['demo2025cohort']
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import json
import logging
import os
import platform
import shutil
import signal
import socket
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from spora_sd.errors import TargetExistsError, TargetLockedError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: exclusive creation of the lock file instead
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "FAULT_POINTS",
    "FAULT_POINT_ENV",
    "MARKER_PREFIX",
    "TMP_MARKER",
    "WRITER_FILE",
    "atomic_path",
    "clean_leftovers",
    "export_workspace",
    "is_temporary",
    "lock_path",
    "recover",
    "remove_path",
    "replace_path",
    "target_lock",
]

logger = logging.getLogger(__name__)

TMP_MARKER = ".tmp-"
#: Name of the in-progress marker (a temporary name: ``.export-in-progress.tmp-<id>``).
MARKER_PREFIX = f".export-in-progress{TMP_MARKER}"
#: File in an export's temporary folder that names its writer (pid, host, boot id, start time).
WRITER_FILE = ".writer.json"
_LOCK = "lock"  # the lock file of <name> is .<name>.tmp-lock
_STAGED, _ASIDE = ".new", ".old"  # the fallback's new tree (complete) and old tree

#: Environment variable that arms a fault point (tests only): ``<point>[@<n>][:stop]``.
FAULT_POINT_ENV = "SPORA_SD_FAULT_POINT"
#: Set to ``0`` to never use ``renameat2`` (runs the rename fallback, e.g. to test it).
_EXCHANGE_ENV = "SPORA_SD_ATOMIC_EXCHANGE"

#: Every fault point, in the order a write reaches them. ``<scope>`` is ``export``
#: (:func:`export_workspace`), ``atomic`` (:func:`atomic_path`) or ``replace`` (:func:`replace_path`).
FAULT_POINTS: dict[str, str] = {
    "lock.acquired": "a lock was taken (every atomic_path and export): nothing written yet",
    "export.started": "export: temporary folder, writer file, work folder and in-progress marker exist",
    "atomic.written": "atomic_path: the temporary file or folder is complete, not yet moved into place",
    "manifest.written": "metadata/manifest.json written (an export's last file), the marker still there",
    "export.marker_removed": "export: the new tree is complete, not yet moved into place",
    "<scope>.renamed": "moved into place by rename (there was no target)",
    "<scope>.replaced": "a file replaced by a rename over it",
    "<scope>.exchanged": "renameat2 exchange: the new tree at the target, the old one at the temporary name",
    "<scope>.staged": "fallback 1/3: the new tree renamed to .<name>.tmp-<id>.new",
    "<scope>.moved_aside": "fallback 2/3: the old target renamed to .<name>.tmp-<id>.old (no target)",
    "<scope>.moved_in": "fallback 3/3: the staged new tree renamed to the target",
    "<scope>.committed": "committed, the old version not yet deleted",
    "remove.partial": "half of the files of a tree being deleted are gone",
    "export.cleaned": "export: old tree and temporary folder deleted, the lock still held",
    "recover.renamed": "recovery moved a staged complete tree into place",
}

_fault_hits: dict[str, int] = {}


def _fault_point(name: str) -> None:
    """Kill (or stop) this process here when ``SPORA_SD_FAULT_POINT`` names this point (tests)."""
    spec = os.environ.get(FAULT_POINT_ENV)
    if spec is None:
        return
    point, _, action = spec.partition(":")
    point, _, nth = point.partition("@")
    if point != name:
        return
    _fault_hits[name] = hits = _fault_hits.get(name, 0) + 1
    if hits == int(nth or 1):
        os.kill(os.getpid(), signal.SIGSTOP if action == "stop" else signal.SIGKILL)


# --------------------------------------------------------------------------------------------------
# names


def _temporary_sibling(target: Path) -> Path:
    return target.with_name(f".{target.name}{TMP_MARKER}{uuid.uuid4().hex[:12]}")


def is_temporary(name: str) -> bool:
    """Whether a file name is one of our temporary names (left behind by a crash)."""
    return name.startswith(".") and TMP_MARKER in name


def lock_path(target: str | Path) -> Path:
    """The lock file of ``target``: ``<parent>/.<name>.tmp-lock`` (a temporary name, gone after the write)."""
    target = Path(target)
    return target.with_name(f".{target.name}{TMP_MARKER}{_LOCK}")


def _leftovers(target: Path) -> list[Path]:
    """Temporary siblings of ``target`` (``.<name>.tmp-*``), except its lock file."""
    prefix, lock = f".{target.name}{TMP_MARKER}", lock_path(target).name
    try:
        names = os.listdir(target.parent)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [target.parent / n for n in sorted(n for n in names if n.startswith(prefix) and n != lock)]


def _in_private_tree(target: Path) -> bool:
    """Whether ``target`` lies inside a temporary folder (an export being built: only its writer writes there)."""
    return any(is_temporary(part) for part in target.parent.parts)


def _exists(path: Path) -> bool:
    return path.exists() or path.is_symlink()


# --------------------------------------------------------------------------------------------------
# writers: who holds a lock or a temporary folder, and whether it still runs


@functools.cache
def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
    except OSError:
        return None


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of ``/proc/<pid>/stat`` after the command name (state first), None without procfs."""
    try:
        return Path(f"/proc/{pid}/stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _writer_info() -> dict[str, Any]:
    stat = _proc_stat(os.getpid())
    return {
        "pid": os.getpid(),
        "hostname": socket.gethostname(),
        "boot_id": _boot_id(),
        # the process's start time (clock ticks after boot): tells a reused pid from the writer
        "start_ticks": stat[19] if stat else None,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _writer_alive(info: dict[str, Any], *, this_process: bool) -> bool:
    """Whether the writer ``info`` may still run; unknowable (another host) counts as running.

    ``this_process`` is what to answer when ``info`` names this very process.
    """
    try:
        pid = int(info["pid"])
    except (KeyError, TypeError, ValueError):
        return False
    if info.get("hostname") != socket.gethostname():
        return True
    boot = _boot_id()
    if boot and info.get("boot_id") and info["boot_id"] != boot:
        return False  # written before the last reboot
    if pid == os.getpid():
        return this_process
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = _proc_stat(pid)
    if stat is None:
        return True
    if info.get("start_ticks") and stat[19] != info["start_ticks"]:
        return False  # the pid was reused by another process
    return stat[0] not in ("Z", "X")  # a zombie (killed, not yet reaped by its parent) runs no code


# --------------------------------------------------------------------------------------------------
# the lock


def _locked_message(target: Path, holder: dict[str, Any] | None) -> str:
    who = "another process"
    if holder and "pid" in holder:
        who = f"process {holder['pid']} on {holder.get('hostname', '?')} (since {holder.get('started', '?')})"
    return (
        f"{target} is being written by {who}; spora-sd lets one writer at a time write a target. "
        "Wait for it to finish (or stop it), then try again"
    )


def _acquire(path: Path, target: Path) -> int:
    """Open and lock ``path``; the path must still name the locked file (its last holder may unlink it)."""
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
    while True:
        fd = os.open(path, flags, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = json.loads(os.pread(fd, 4096, 0) or b"null")
            except ValueError:
                holder = None
            os.close(fd)
            raise TargetLockedError(_locked_message(target, holder)) from None
        except OSError as exc:
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                os.close(fd)
                raise
            # e.g. an NFS mount without a lock daemon: write as before locks existed, and say so
            logger.warning("%s: the file system offers no locks; a concurrent writer would not be detected", target)
        except BaseException:
            os.close(fd)
            raise
        try:
            locked, named = os.fstat(fd), os.stat(path)
            same = (locked.st_dev, locked.st_ino) == (named.st_dev, named.st_ino)
        except FileNotFoundError:
            same = False
        if same:
            if locked.st_size:  # a lock file left by a crash (truncating a new file costs a flush on ext4)
                os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(_writer_info()).encode(), 0)
            return fd
        os.close(fd)  # its holder removed the file after we opened it: lock the new one


def _acquire_exclusive(path: Path, target: Path) -> int:  # pragma: no cover - only without fcntl
    for _ in range(3):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            holder = _read_json(path)
            stale = not _writer_alive(holder, this_process=True) if holder else _age(path) > 60
            if not stale:
                raise TargetLockedError(_locked_message(target, holder)) from None
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            continue
        os.write(fd, json.dumps(_writer_info()).encode())
        return fd
    raise TargetLockedError(_locked_message(target, None))


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 0.0


@contextlib.contextmanager
def target_lock(target: str | Path, *, timeout: float = 0.0) -> Iterator[Path]:
    """Hold the writer lock of ``target`` (its parent folder must exist); yields the lock file's path.

    Parameters
    ----------
    target
        The file or folder about to be written.
    timeout
        Seconds to wait for another writer to finish; by default none, the second writer fails at once.

    Raises
    ------
    TargetLockedError
        Another process (or another thread) writes ``target``.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "x.txt"
    >>> with target_lock(target):
    ...     try:
    ...         with target_lock(target):
    ...             pass
    ...     except TargetLockedError:
    ...         print("locked")
    locked
    """
    target = Path(target)
    path = lock_path(target)
    acquire = _acquire if fcntl is not None else _acquire_exclusive
    deadline = time.monotonic() + timeout
    while True:
        try:
            fd = acquire(path, target)
            break
        except TargetLockedError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.05)
    try:
        _fault_point("lock.acquired")
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # before closing: a process that opened it meanwhile sees it is gone and retries
        os.close(fd)


# --------------------------------------------------------------------------------------------------
# moving trees


_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
_RENAME_EXCHANGE = 2
#: renameat2's system call number, for a glibc older than 2.28 (no renameat2 wrapper).
_SYS_RENAMEAT2 = {"x86_64": 316, "aarch64": 276, "riscv64": 276, "ppc64le": 357, "s390x": 347, "i686": 353}


@functools.cache
def _renameat2() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:  # pragma: no cover
        return None
    args = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint)
    wrapper = getattr(libc, "renameat2", None)
    if wrapper is not None:
        wrapper.argtypes, wrapper.restype = args, ctypes.c_int
        return lambda src, dst, flags: wrapper(_AT_FDCWD, src, _AT_FDCWD, dst, flags)
    number = _SYS_RENAMEAT2.get(platform.machine())  # pragma: no cover - old glibc
    if number is None or not hasattr(libc, "syscall"):  # pragma: no cover
        return None
    syscall = libc.syscall  # pragma: no cover
    syscall.restype = ctypes.c_long  # pragma: no cover
    return lambda src, dst, flags: syscall(  # pragma: no cover
        ctypes.c_long(number), *(t(v) for t, v in zip(args, (_AT_FDCWD, src, _AT_FDCWD, dst, flags), strict=True))
    )


def _rename2(src: Path, dst: Path, flags: int) -> bool:
    """``renameat2(src, dst, flags)``; False where the OS or the file system does not offer it."""
    if os.environ.get(_EXCHANGE_ENV) == "0":
        return False
    call = _renameat2()
    if call is None:
        return False
    if call(os.fsencode(src), os.fsencode(dst), flags) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(src), None, str(dst))


def _commit(new: Path, target: Path, stem: Path, *, overwrite: bool, scope: str) -> Path | None:
    """Move the complete ``new`` to ``target`` atomically; return the old version's new place, to delete.

    ``stem`` is a temporary sibling name of ``target`` that the fallback derives its names from;
    ``scope`` names the fault points (:data:`FAULT_POINTS`).
    """
    if not _exists(target):
        if not _rename2(new, target, _RENAME_NOREPLACE):
            os.rename(new, target)
        _fault_point(f"{scope}.renamed")
        return None
    if not overwrite:
        raise TargetExistsError(f"{target} exists; pass overwrite=True to replace it")
    if not new.is_dir() and not target.is_dir():
        os.replace(new, target)  # one rename replaces a file
        _fault_point(f"{scope}.replaced")
        return None
    if _rename2(new, target, _RENAME_EXCHANGE):
        _fault_point(f"{scope}.exchanged")
        return new  # it now holds the old tree
    staged, aside = stem.with_name(stem.name + _STAGED), stem.with_name(stem.name + _ASIDE)
    os.rename(new, staged)
    _fault_point(f"{scope}.staged")
    os.rename(target, aside)
    _fault_point(f"{scope}.moved_aside")
    os.rename(staged, target)
    _fault_point(f"{scope}.moved_in")
    return aside


def _recover_locked(target: Path) -> bool:
    """Finish a fallback replacement that stopped between its two renames (the lock is held)."""
    if _exists(target):
        return False
    staged = [p for p in _leftovers(target) if p.name.endswith(_STAGED) and _exists(p)]
    if not staged:
        return False
    newest = max(staged, key=lambda p: p.lstat().st_ctime_ns)
    os.rename(newest, target)
    _fault_point("recover.renamed")
    logger.warning("%s: moved in the complete new version that an interrupted write left at %s", target, newest.name)
    return True


def _abort(stem: Path, target: Path) -> None:
    """Undo a write that failed (an exception, not a crash): the target keeps its old or new version."""
    _recover_locked(target)
    for path in (stem, stem.with_name(stem.name + _STAGED), stem.with_name(stem.name + _ASIDE)):
        if path.name.endswith(_ASIDE) and not _exists(target):
            continue  # never delete the only complete version
        remove_path(path)


def _clean_leftovers_locked(target: Path) -> list[Path]:
    leftovers = _leftovers(target)
    if leftovers and _recover_locked(target):
        leftovers = _leftovers(target)
    removed = []
    for path in leftovers:
        info = _read_json(path / WRITER_FILE) if path.is_dir() and not path.is_symlink() else None
        if info is not None and _writer_alive(info, this_process=False):
            logger.warning(
                "%s: left alone: its writer, process %s on %s, still runs", path, info.get("pid"), info.get("hostname")
            )
            continue
        logger.warning("%s: removing what an interrupted write left behind", path)
        remove_path(path)
        removed.append(path)
    return removed


def clean_leftovers(target: str | Path) -> list[Path]:
    """Remove what interrupted writes of ``target`` left next to it; returns the removed paths.

    Takes the target's lock (so it fails with :class:`~spora_sd.errors.TargetLockedError` while a writer
    runs), finishes an interrupted replacement (:func:`recover`), then removes every temporary sibling
    ``.<name>.tmp-*`` except those whose writer file names a process that still runs. Every write does
    this before it starts.
    """
    target = Path(target)
    if not target.parent.is_dir():
        return []
    with target_lock(target):
        return _clean_leftovers_locked(target)


def recover(target: str | Path) -> bool:
    """Move in the complete new version that an interrupted fallback replacement left; True if it did.

    Only the fallback protocol (no ``renameat2``) can leave ``target`` missing, for the instant between
    two renames; :func:`spora_sd.open_cohort` calls this when a cohort is not found. Does nothing while
    a writer holds the target's lock.
    """
    target = Path(target)
    if _exists(target) or not any(p.name.endswith(_STAGED) for p in _leftovers(target)):
        return False
    try:
        with target_lock(target):
            return _recover_locked(target)
    except TargetLockedError:
        return False


# --------------------------------------------------------------------------------------------------
# public writers


def remove_path(path: Path) -> None:
    """Remove a file or a folder tree, if it exists."""
    if path.is_dir() and not path.is_symlink():
        if os.environ.get(FAULT_POINT_ENV, "").startswith("remove.partial"):
            files = sorted(Path(d) / f for d, _, names in os.walk(path) for f in names)
            for file in files[: max(1, len(files) // 2)]:
                file.unlink()
            _fault_point("remove.partial")
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def replace_path(tmp: Path, target: Path, *, overwrite: bool = True) -> None:
    """Move ``tmp`` to ``target`` atomically; an existing target is replaced only when ``overwrite``.

    Takes the target's lock; a folder replaces a folder by an atomic exchange where the OS offers one
    (see the module's docstring), and the old version is deleted afterwards.
    """
    tmp, target = Path(tmp), Path(target)
    if _exists(target) and not overwrite:
        raise TargetExistsError(f"{target} exists; pass overwrite=True to replace it")
    with target_lock(target):
        stem = _temporary_sibling(target)
        try:
            old = _commit(tmp, target, stem, overwrite=overwrite, scope="replace")
            _fault_point("replace.committed")
            if old is not None:
                remove_path(old)
        except BaseException:
            _abort(stem, target)
            raise


@contextlib.contextmanager
def _atomic_path_locked(target: Path, *, overwrite: bool) -> Iterator[Path]:
    """:func:`atomic_path` for a caller that holds the target's lock."""
    if not _in_private_tree(target):  # in an export's own tree nothing is left over (and a scan is O(files))
        _clean_leftovers_locked(target)
    if not overwrite and _exists(target):
        raise TargetExistsError(f"{target} exists; pass overwrite=True to replace it")
    tmp = _temporary_sibling(target)
    try:
        yield tmp
        _fault_point("atomic.written")
        old = _commit(tmp, target, tmp, overwrite=overwrite, scope="atomic")
        _fault_point("atomic.committed")
        if old is not None:
            remove_path(old)
    except BaseException:
        _abort(tmp, target)
        raise


@contextlib.contextmanager
def atomic_path(target: str | Path, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; on success it is moved to ``target`` atomically.

    The caller creates a file or a folder at the yielded path. While it does, the target's lock is
    held (a concurrent writer of the same target fails with
    :class:`~spora_sd.errors.TargetLockedError`), and what crashed writers left next to the target was
    removed first. A folder replaces an existing one by an atomic exchange (see the module's docstring).
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
    if not overwrite and _exists(target):
        raise TargetExistsError(f"{target} exists; pass overwrite=True to replace it")
    target.parent.mkdir(parents=True, exist_ok=True)
    with target_lock(target), _atomic_path_locked(target, overwrite=overwrite) as tmp:
        yield tmp


@contextlib.contextmanager
def export_workspace(target: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield the folder to build a cohort in; on success it replaces ``target`` atomically.

    The cohort is built at ``<parent>/.<name>.tmp-<id>/<name>/`` so that it already has its final
    folder name (the dataset key, which writers and the validator check). From the first moment it
    carries a marker file ``.export-in-progress.tmp-<id>``, a temporary name that the validator reports,
    so that a half-built cohort never validates; ``.<name>.tmp-<id>/.writer.json`` names the writer.
    When the body is done (its last step writes the content manifest,
    :func:`spora_sd.io.manifest.write_manifest`), the marker is removed and the complete tree is moved
    into place (see the module's docstring). On an exception the temporary folder is removed and an
    existing target is left untouched.

    Parameters
    ----------
    target
        The cohort folder to create.
    overwrite
        Replace an existing ``target`` (else :class:`~spora_sd.errors.TargetExistsError`, a
        ``FileExistsError``, before anything is written).

    Raises
    ------
    TargetLockedError
        Another process exports to ``target`` right now (raised before anything is written).
    """
    target = Path(target)
    if _exists(target) and not overwrite:
        raise TargetExistsError(f"{target} exists; pass overwrite=True to replace it")
    target.parent.mkdir(parents=True, exist_ok=True)
    with target_lock(target):
        _clean_leftovers_locked(target)
        if _exists(target) and not overwrite:  # made by a writer that finished just before we locked
            raise TargetExistsError(f"{target} exists; pass overwrite=True to replace it")
        holder = _temporary_sibling(target)
        holder.mkdir()
        try:
            (holder / WRITER_FILE).write_text(json.dumps(_writer_info()), encoding="utf-8")
            work = holder / target.name
            work.mkdir()
            marker = work / f"{MARKER_PREFIX}{uuid.uuid4().hex[:12]}"
            marker.write_text("spora-sd export in progress; this folder is incomplete\n", encoding="utf-8")
            _fault_point("export.started")
            yield work
            marker.unlink()  # before the move: the tree that moves in is complete
            _fault_point("export.marker_removed")
            old = _commit(work, target, holder, overwrite=overwrite, scope="export")
            _fault_point("export.committed")
            remove_path(holder)  # after an exchange, the old tree is inside it
            if old is not None and holder not in old.parents:
                remove_path(old)  # the fallback's old tree
            _fault_point("export.cleaned")
        except BaseException:
            _abort(holder, target)
            raise
    logger.info("wrote %s", target)
