"""Fetch a partial, resumable, verified local copy of a remote cohort (``spora-sd fetch``).

:func:`fetch` copies a cohort's metadata, the chosen modalities, resolutions and tissues, and the
masks they need, from S3 (``s3://``, an rclone ``remote:bucket/path``, a registry key), HTTP(S) or a
local folder, into a local folder that opens and validates as a partial copy
(:attr:`spora_sd.Cohort.missing` lists what was left out).

How a copy is made safe (the guarantees of ``docs/guarantees.md`` and ``docs/fetch.md``):

- **One writer.** The destination's lock (:func:`spora_sd.io.atomic.target_lock`) is held for the
  whole fetch; a second fetch (or export) into the same folder fails at once with
  :class:`~spora_sd.errors.TargetLockedError`.
- **All or nothing at the destination.** The copy is built in ``<parent>/.<name>.tmp-fetch/<name>/``
  (which carries an in-progress marker, so it never validates) and moved into place in one step at
  the end, by ``rename`` or, when the destination exists, an atomic exchange. A refetch into an
  existing copy (another modality, more tissues) starts from hard links of its files, so the
  destination holds the old complete copy or the new complete one at every instant.
- **Every file verified.** Each file is downloaded to ``.<file>.tmp-part`` next to its final name,
  checked against its size and checksum (the CRC32C of the cohort's content manifest when it has
  one, else the size and the MD5 ETag of the S3 listing), and only then renamed. A mismatch deletes
  the part file and raises :class:`~spora_sd.errors.CohortFormatError` naming the file.
- **Resumable.** A fetch that dies (or fails) leaves its staging folder; the next fetch of the same
  destination keeps the finished files and continues the part files with range requests, so it
  downloads only what is left (plus the manifest, read again to notice a changed cohort).
- The copy gets its own ``metadata/manifest.json``: the remote manifest's entries of the files
  copied (or, without one, the checksums computed while downloading), so ``validate --deep`` checks
  the copy as it checks an export.

Examples
--------
>>> import spora_sd, tempfile, pathlib
>>> remote = spora_sd.make_synthetic_cohort(tempfile.mkdtemp(), n_tissues=2, image_size=64, n_cells=8)
>>> dest = pathlib.Path(tempfile.mkdtemp()) / remote.name
>>> result = fetch(remote, dest, modalities=["imc"])
>>> sorted(p.name for p in dest.iterdir())
['imc', 'metadata', 'segmentations', 'tiling']
>>> spora_sd.open_cohort(dest).missing
['he/']
>>> fetch(remote, dest, modalities=["imc"]).bytes_downloaded  # a rerun downloads nothing
0
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import google_crc32c

from spora_sd import layout
from spora_sd.errors import (
    CohortFormatError,
    CohortNotFoundError,
    InvalidArgumentError,
    LayoutNameError,
    SporaError,
    TargetExistsError,
)
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
    target_lock,
)
from spora_sd.io.location import display_location, filesystem_and_path, is_remote, redact, resolve_location
from spora_sd.io.manifest import ALGORITHM, _dump, file_checksum, read_manifest

if TYPE_CHECKING:
    import fsspec

__all__ = ["FETCH_FAULT_POINTS", "RULES", "FetchError", "FetchProgress", "FetchResult", "fetch"]

#: Rule ids of the errors a fetch raises about what it downloaded (docs: the rules page).
RULES: dict[str, str] = {
    "fetch.unsafe_path": "a file name of the source (listing or manifest) would leave the cohort's folder",
    "fetch.size_mismatch": "a downloaded file has another size than the source lists",
    "fetch.checksum": "a downloaded file's checksum differs from the manifest's (or the ETag)",
}

logger = logging.getLogger(__name__)

#: Fault points of a fetch (``SPORA_SD_FAULT_POINT``, see :mod:`spora_sd.io.atomic`), in order.
FETCH_FAULT_POINTS: dict[str, str] = {
    "lock.acquired": "the destination's lock is held; nothing written yet",
    "fetch.started": "the staging folder, its state and the in-progress marker exist",
    "fetch.linked": "the files of an existing destination are hard-linked into the staging folder",
    "fetch.part_written": "one block of a file was appended to its .tmp-part file",
    "fetch.verified": "a file is complete and verified, not yet renamed to its final name",
    "fetch.file_renamed": "a verified file was renamed to its final name (the journal not yet updated)",
    "fetch.manifest_written": "the copy's metadata/manifest.json is written; the marker still there",
    "fetch.marker_removed": "the staged copy is complete, not yet moved into place",
    "fetch.renamed": "moved into place by rename (there was no destination)",
    "fetch.exchanged": "exchanged with the old destination, which sits in the staging folder",
    "fetch.staged": "no renameat2, 1/3: the new copy renamed to .<name>.tmp-fetch.new",
    "fetch.moved_aside": "no renameat2, 2/3: the old copy renamed aside (open_cohort or a fetch moves the new one in)",
    "fetch.moved_in": "no renameat2, 3/3: the new copy renamed to the destination",
    "fetch.committed": "committed; the staging folder (and an old copy) not yet deleted",
    "fetch.cleaned": "the staging folder is deleted, the lock still held",
}

_STAGING = "fetch"  # .<name>.tmp-fetch
_PART = "part"  # .<file>.tmp-part
_STATE_FILE = "state.json"  # in the staging folder: the identity of its work tree
_JOURNAL_FILE = "verified.jsonl"  # in the staging folder: one verified file per line
_BLOCK = 8 << 20  # one range request
_DEFAULT_WORKERS = 8
_MASK_KINDS = ("tissue", layout.INSTANCES_TASK)
_CRC_RE = re.compile(r"[0-9a-f]{8}")


class FetchError(SporaError, OSError):
    """A remote cohort could not be read: access denied, a server error, a broken connection.

    The message names the location (never a credential) and what to check.
    """


# -------------------------------------------------------------------------------------------------
# results and progress


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


@dataclass
class FetchProgress:
    """Progress of a running fetch, passed to a ``progress`` callable after each block."""

    files_total: int
    bytes_total: int
    files_done: int = 0
    bytes_done: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, nbytes: int = 0, files: int = 0) -> None:
        with self._lock:
            self.bytes_done += nbytes
            self.files_done += files


@contextlib.contextmanager
def _progress_reporter(
    progress: bool | Callable[[FetchProgress], None], state: FetchProgress, description: str
) -> Iterator[Callable[[], None]]:
    """Yield ``update()``; a rich bar on stderr (bytes, speed, files) when ``progress`` is True."""
    if callable(progress):
        yield lambda: progress(state)
        return
    if not progress:
        yield lambda: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TextColumn("{task.fields[files]} files"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task(description, total=state.bytes_total, files=f"0/{state.files_total}")

        def update() -> None:
            bar.update(task, completed=state.bytes_done, files=f"{state.files_done}/{state.files_total}")

        yield update
        update()


# -------------------------------------------------------------------------------------------------
# the source


def _registry_location(name: str, storage_options: dict[str, Any] | None) -> str:
    """Where the registry's cohort ``name`` (a key or an alias) lives: its S3 URL or rclone location."""
    from spora_sd.datasets import registry

    info = registry.cohort_info(name)
    located = getattr(registry, "remote_location", None)  # bucket and prefix of each registry entry
    if callable(located):
        return str(located(info.key, storage_options))
    return f"{registry.RCLONE_REMOTE}/{info.key}"  # the spec's rclone remote and bucket


def _resolve_source(cohort: str | os.PathLike[str], storage_options: dict[str, Any] | None) -> Any:
    """The cohort's root as a path object (local :class:`~pathlib.Path` or remote ``UPath``)."""
    if not isinstance(cohort, str) or is_remote(cohort):
        return resolve_location(cohort, storage_options)
    if Path(cohort).expanduser().is_dir() or "/" in cohort or os.sep in cohort:
        return resolve_location(cohort, storage_options)
    try:
        location = _registry_location(cohort, storage_options)
    except CohortNotFoundError:
        raise CohortNotFoundError(
            f"{cohort!r} is neither a folder, a URL (s3://, https://), an rclone location (remote:bucket/path) "
            "nor a cohort of the registry"
        ) from None
    return resolve_location(location, storage_options)


def _secrets(path: Any) -> list[str]:
    """The secret values of a remote path's storage options (to scrub them from third-party messages)."""
    out: list[str] = []

    def walk(options: dict[str, Any]) -> None:
        for key, value in options.items():
            if isinstance(value, dict):
                walk(value)
            elif isinstance(value, str) and len(value) >= 4 and key in ("key", "secret", "token", "password"):
                out.append(value)

    walk(dict(getattr(path, "storage_options", {}) or {}))
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        if len(os.environ.get(name, "")) >= 4:
            out.append(os.environ[name])
    return out


class _Remote:
    """The source's filesystem, with every failure turned into a spora-sd error that names the file."""

    def __init__(self, root: Any) -> None:
        self.root = root
        self.base = (root.as_posix() if isinstance(root, Path) else str(root.path)).rstrip("/")
        self.shown = display_location(root)
        self._secrets = _secrets(root)

    @functools.cached_property
    def fs(self) -> fsspec.AbstractFileSystem:
        return filesystem_and_path(self.root)[0]

    def path(self, rel: str) -> str:
        return f"{self.base}/{rel}" if rel else self.base

    def where(self, rel: str = "") -> str:
        return f"{self.shown}/{rel}" if rel else self.shown

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return redact(text)

    def error(self, exc: BaseException, rel: str = "") -> SporaError:
        """The spora-sd error for a failed call on ``rel`` (raise it ``from None``)."""
        where = self.where(rel)
        if isinstance(exc, SporaError):
            return exc
        if isinstance(exc, FileNotFoundError):
            if rel:
                return CohortNotFoundError(
                    f"{where}: the cohort lists this file but the server has no such object "
                    "(deleted or moved during the copy?)"
                )
            return CohortNotFoundError(f"{where}: no cohort there (nothing found at this location)")
        if isinstance(exc, PermissionError):
            return FetchError(
                f"{where}: access denied; check the credentials (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                "storage_options, or the rclone remote's access_key_id and secret_access_key)"
            )
        detail = self._scrub(f"{type(exc).__name__}: {exc}".splitlines()[0])[:300]
        return FetchError(f"{where}: could not be read ({detail})")

    def cat(self, rel: str, start: int | None = None, end: int | None = None) -> bytes:
        try:
            return self.fs.cat_file(self.path(rel), start=start, end=end)
        except Exception as exc:  # noqa: BLE001 - third-party errors become ours, naming the file
            raise self.error(exc, rel) from None

    def cat_optional(self, rel: str) -> bytes | None:
        """The whole file ``rel``, None when there is none."""
        try:
            return self.fs.cat_file(self.path(rel))
        except FileNotFoundError:
            return None
        except Exception as exc:  # noqa: BLE001
            raise self.error(exc, rel) from None

    def list(self) -> dict[str, dict[str, Any]]:
        """Every file under the root: relative path -> ``{"size", "etag"}`` (one listing, paginated)."""
        try:
            found = self.fs.find(self.base, detail=True)
        except Exception as exc:  # noqa: BLE001
            raise self.error(exc) from None
        out: dict[str, dict[str, Any]] = {}
        prefix = self.base + "/"
        for name, info in found.items():
            if info.get("type", "file") != "file" or not name.startswith(prefix):
                continue
            size = info.get("size")
            if size is None:
                try:
                    size = self.fs.size(name)
                except Exception as exc:  # noqa: BLE001
                    raise self.error(exc, name[len(prefix) :]) from None
            etag = info.get("ETag") or info.get("etag")
            out[name[len(prefix) :]] = {"size": int(size), "etag": etag.strip('"') if isinstance(etag, str) else None}
        if not out:
            raise CohortNotFoundError(f"{self.shown}: no cohort there (no file found at this location)")
        return out


#: s3fs ``storage_options`` that :class:`_ObstoreRemote` understands; any other sends a fetch through s3fs.
_OBSTORE_KEYS = {"key", "secret", "token", "anon", "client_kwargs", "config_kwargs"}
#: botocore settings (``config_kwargs``) it maps: retries (attempts) and the connect timeout; the read
#: timeout is left to obstore's per-request default, which a whole block must fit in anyway.
_BOTOCORE_KEYS = {"s3", "retries", "connect_timeout", "read_timeout"}


class _ObstoreRemote(_Remote):
    """An S3 source read through obstore (Rust; several times the throughput of s3fs on the same server).

    Built from the same resolved ``storage_options`` as the s3fs filesystem (so the rclone remote,
    the AWS variables and ``storage_options`` mean the same); obstore reads the ``AWS_*`` variables
    itself for what they do not set.
    """

    def __init__(self, root: Any, store: Any) -> None:
        super().__init__(root)
        self.store = store

    @classmethod
    def create(cls, root: Any) -> _ObstoreRemote | None:
        """The obstore reader of an ``s3://`` root, or None (not S3, options it cannot map, no obstore)."""
        if getattr(root, "protocol", None) not in ("s3", "s3a"):
            return None
        options = dict(getattr(root, "storage_options", {}) or {})
        if set(options) - _OBSTORE_KEYS:
            return None
        client = dict(options.get("client_kwargs") or {})
        botocore = dict(options.get("config_kwargs") or {})
        s3_config = dict(botocore.get("s3") or {})
        if set(client) - {"endpoint_url", "region_name"} or set(botocore) - _BOTOCORE_KEYS:
            return None
        if set(s3_config) - {"addressing_style"}:
            return None
        try:
            from obstore.store import S3Store
        except ImportError:
            return None
        bucket, _, prefix = root.path.strip("/").partition("/")
        config: dict[str, Any] = {}
        if options.get("anon"):
            config["skip_signature"] = True
        for ours, theirs in (("key", "access_key_id"), ("secret", "secret_access_key"), ("token", "session_token")):
            if options.get(ours):
                config[theirs] = options[ours]
        endpoint = client.get("endpoint_url")
        if endpoint:
            config["endpoint"] = endpoint
        if client.get("region_name"):
            config["region"] = client["region_name"]
        if s3_config.get("addressing_style") == "virtual":
            config["virtual_hosted_style_request"] = True
        client_options: dict[str, Any] = {}
        if str(endpoint or os.environ.get("AWS_ENDPOINT_URL", "")).startswith("http://"):
            client_options["allow_http"] = True
        if botocore.get("connect_timeout"):
            client_options["connect_timeout"] = f"{int(botocore['connect_timeout'])}s"
        attempts = (botocore.get("retries") or {}).get("max_attempts")
        if attempts:
            config["retry_config"] = {"max_retries": max(int(attempts) - 1, 0)}
        try:
            store = S3Store(bucket, prefix=prefix or None, client_options=client_options or None, **config)
        except Exception:  # a configuration obstore refuses: s3fs reads it
            logger.debug("obstore cannot read %s; using s3fs", display_location(root), exc_info=True)
            return None
        return cls(root, store)

    def error(self, exc: BaseException, rel: str = "") -> SporaError:
        from obstore import exceptions

        if isinstance(exc, exceptions.NotFoundError):
            exc = FileNotFoundError(rel)
        elif isinstance(exc, (exceptions.PermissionDeniedError, exceptions.UnauthenticatedError)) or (
            isinstance(exc, exceptions.GenericError) and " 403 " in f" {exc} "
        ):
            exc = PermissionError(rel)
        return super().error(exc, rel)

    def cat(self, rel: str, start: int | None = None, end: int | None = None) -> bytes:
        import obstore

        try:
            if start is None:
                return bytes(obstore.get(self.store, rel).bytes())
            return bytes(obstore.get_range(self.store, rel, start=start, end=end))  # crc32c wants bytes
        except Exception as exc:  # noqa: BLE001 - third-party errors become ours, naming the file
            raise self.error(exc, rel) from None

    def cat_optional(self, rel: str) -> bytes | None:
        import obstore
        from obstore import exceptions

        try:
            return bytes(obstore.get(self.store, rel).bytes())
        except (exceptions.NotFoundError, FileNotFoundError):  # obstore raises the builtin one
            return None
        except Exception as exc:  # noqa: BLE001
            raise self.error(exc, rel) from None

    def list(self) -> dict[str, dict[str, Any]]:
        import obstore

        out: dict[str, dict[str, Any]] = {}
        try:
            for batch in obstore.list(self.store):
                for meta in batch:
                    etag = meta.get("e_tag")
                    out[meta["path"]] = {"size": int(meta["size"]), "etag": etag.strip('"') if etag else None}
        except Exception as exc:  # noqa: BLE001
            raise self.error(exc) from None
        if not out:
            raise CohortNotFoundError(f"{self.shown}: no cohort there (no file found at this location)")
        return out


def _remote(root: Any) -> _Remote:
    """The reader of a source: obstore for S3 where it can, else the path's fsspec filesystem."""
    return _ObstoreRemote.create(root) or _Remote(root)


# -------------------------------------------------------------------------------------------------
# what to copy


@dataclass(frozen=True)
class _Item:
    """One file to copy: its relative path, size and the checksums to verify it with."""

    rel: str
    size: int
    crc32c: str | None = None
    etag: str | None = None


def _check_relative(rel: str, where: str) -> str:
    """``rel`` when it is a safe relative path inside the cohort; a name never escapes the copy."""
    parts = rel.split("/")
    if (
        not rel
        or rel.startswith("/")
        or "\\" in rel
        or "\x00" in rel
        or any(p in ("", ".", "..") for p in parts)
        or any(is_temporary(p) for p in parts)
    ):
        raise CohortFormatError(
            where, "fetch.unsafe_path", f"refusing the file name {rel!r}: not a path inside the cohort"
        )
    return rel


def _read_remote_manifest(remote: _Remote) -> dict[str, Any] | None:
    """The source's content manifest, checked against its JSON Schema; None when it has none."""
    rel = f"{layout.METADATA}/{layout.MANIFEST_FILE}"
    raw = remote.cat_optional(rel)
    if raw is None:
        return None
    try:
        manifest = json.loads(raw)
    except ValueError as exc:
        raise CohortFormatError(remote.where(rel), "manifest.unreadable", f"not JSON: {exc}") from None
    # the schema's rules that a copy relies on (schemas/manifest.schema.json; the names are checked
    # by _check_relative): checked here, without the schema machinery's imports
    problem = None
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict):
        problem = "no 'files' object"
    elif manifest.get("algorithm", ALGORITHM) != ALGORITHM:
        problem = f"algorithm {manifest.get('algorithm')!r}, expected {ALGORITHM!r}"
    else:
        for name, entry in files.items():
            size = entry.get("size") if isinstance(entry, dict) else None
            crc = entry.get(ALGORITHM) if isinstance(entry, dict) else None
            if not (isinstance(size, int) and size >= 0 and isinstance(crc, str) and _CRC_RE.fullmatch(crc)):
                problem = f"the entry of {name!r} needs a size (bytes) and a {ALGORITHM} (8 hex digits)"
                break
    if problem is not None:
        raise CohortFormatError(remote.where(rel), "manifest.unreadable", f"breaks manifest.schema.json: {problem}")
    return manifest


def _listing(remote: _Remote, manifest: dict[str, Any] | None) -> list[_Item]:
    """Every file of the source (but its manifest): from the manifest when there is one, else a listing."""
    manifest_rel = f"{layout.METADATA}/{layout.MANIFEST_FILE}"
    if manifest is not None:
        files = manifest["files"]
        items = [_Item(rel, int(e["size"]), crc32c=str(e[ALGORITHM])) for rel, e in files.items()]
    else:
        items = [_Item(rel, e["size"], etag=e["etag"]) for rel, e in remote.list().items() if not _ignored(rel)]
    return sorted(
        (i for i in items if _check_relative(i.rel, remote.where(i.rel)) != manifest_rel), key=lambda i: i.rel
    )


def _ignored(rel: str) -> bool:
    """Files of a listing that are no part of a cohort: temporary names of interrupted writes."""
    return any(is_temporary(p) for p in rel.split("/"))


@dataclass
class _Selection:
    """The user's choice, checked against the source's files and tissues table."""

    modalities: set[str] | None
    resolutions: set[float] | None
    tissues: set[str] | None
    masks: set[str] | None  # "tissue", "instances", task names; None: all
    cell_mask_resolution: float | None  # where cell masks live (the finest mask resolution)
    all_instances: bool = False  # every instance mask (the cohort has metadata/cells.parquet)

    def res_ok(self, mpp: float | None) -> bool:
        return mpp is not None and (self.resolutions is None or mpp in self.resolutions)

    def tissue_ok(self, filename: str, suffix: str) -> bool:
        try:
            tid = layout.tissue_id_from_filename(filename, suffix)
        except LayoutNameError:
            return False
        return self.tissues is None or tid in self.tissues

    def mask_ok(self, kind: str) -> bool:
        return self.masks is None or kind in self.masks

    def wants(self, rel: str) -> bool:
        """Whether the file ``rel`` belongs to the selection (metadata always does)."""
        parts = rel.split("/")
        top = parts[0]
        if top == layout.METADATA:
            return True
        if top == layout.SEGMENTATIONS_DIR:
            if len(parts) < 4:
                return False
            mpp = _mpp(parts[1])
            if parts[2] == layout.TISSUE_MASKS_DIR and len(parts) == 4:
                return self.res_ok(mpp) and self.mask_ok("tissue") and self.tissue_ok(parts[3], layout.MASK_SUFFIX)
            if parts[2] == layout.CELL_MASKS_DIR and len(parts) == 5:
                # cell masks are stored at the finest resolution only: copied there whatever the choice
                if mpp is None or not (self.res_ok(mpp) or mpp == self.cell_mask_resolution):
                    return False
                if parts[3] == layout.INSTANCES_TASK and self.all_instances and mpp == self.cell_mask_resolution:
                    # metadata/cells.parquet (always copied) lists the cells of every tissue, and the
                    # validator wants each one's instance mask: they all come, whatever the choice
                    return True
                if not self.mask_ok(parts[3]):
                    return False
                return parts[4] == layout.LABEL_ENCODER_FILE or self.tissue_ok(parts[4], layout.MASK_SUFFIX)
            return False
        if top == layout.TILING_DIR:
            return len(parts) > 2 and self.res_ok(_mpp(parts[1]))
        modality, rest = (parts[1], parts[2:]) if top == layout.IHC_DIR and len(parts) > 2 else (top, parts[1:])
        try:
            layout.check_modality(modality)
        except LayoutNameError:
            return False
        if not rest or (self.modalities is not None and modality not in self.modalities):
            return False
        if len(rest) == 1:  # channels.parquet, channels_per_tissue.parquet
            return True
        if not self.res_ok(_mpp(rest[0])):
            return False
        if rest[1] == layout.IMAGES_DIR:
            return len(rest) > 3 and self.tissue_ok(rest[2], layout.IMAGE_SUFFIX)
        return True  # standardization statistics (small tables over all tissues)


def _mpp(name: str) -> float | None:
    """The resolution a folder name stands for (``1_0mpp`` -> 1.0); None for another name."""
    try:
        return layout.parse_resolution(name)
    except LayoutNameError:
        return None


def _modality_of(rel: str) -> str | None:
    parts = rel.split("/")
    if parts[0] in (layout.METADATA, layout.SEGMENTATIONS_DIR, layout.TILING_DIR):
        return None
    if parts[0] == layout.IHC_DIR:
        return parts[1] if len(parts) > 2 else None
    return parts[0] if len(parts) > 1 else None


def _plan(
    items: list[_Item],
    tissues_table: Path,
    where: str,
    *,
    modalities: Sequence[str] | None,
    resolution: float | Sequence[float] | None,
    tissues: Sequence[str] | None,
    masks: Sequence[str] | None,
) -> list[_Item]:
    """The files to copy, after checking each choice against what the source has."""
    from spora_sd.io.tables import read_table

    available_modalities = sorted({m for i in items if (m := _modality_of(i.rel)) is not None})
    chosen_modalities = None
    if modalities is not None:
        chosen_modalities = {layout.check_modality(m) for m in modalities}
        unknown = sorted(chosen_modalities - set(available_modalities))
        if unknown:
            raise InvalidArgumentError(
                f"{where}: no modality {unknown[0]!r} in this cohort (it has: {', '.join(available_modalities) or 'none'})"
            )
    resolutions = None
    if resolution is not None:
        values = [resolution] if isinstance(resolution, (int, float)) else list(resolution)
        resolutions = {float(r) for r in values}
        stored = set()
        for i in items:
            m = _modality_of(i.rel)
            if m is not None and (chosen_modalities is None or m in chosen_modalities):
                rest = i.rel.split("/")[2 if i.rel.startswith(f"{layout.IHC_DIR}/") else 1 :]
                if len(rest) > 1 and layout.is_resolution_name(rest[0]):
                    stored.add(layout.parse_resolution(rest[0]))
        unknown_res = sorted(resolutions - stored)
        if unknown_res:
            raise InvalidArgumentError(
                f"{where}: no images at {unknown_res[0]} mpp for the chosen modalities "
                f"(stored: {', '.join(map(str, sorted(stored))) or 'none'})"
            )
    chosen_tissues = None
    if tissues is not None:
        table = read_table(tissues_table, columns=["tissue_id"])
        known = set(table["tissue_id"].astype(str))
        chosen_tissues = {str(t) for t in tissues}
        unknown_ids = sorted(chosen_tissues - known)
        if unknown_ids:
            raise InvalidArgumentError(
                f"{where}: tissue {unknown_ids[0]!r} is not in metadata/tissues.parquet ({len(known)} tissues there)"
            )
    cell_res = sorted(
        mpp
        for i in items
        if len(p := i.rel.split("/")) == 5
        and p[0] == layout.SEGMENTATIONS_DIR
        and p[2] == layout.CELL_MASKS_DIR
        and (mpp := _mpp(p[1])) is not None
    )
    chosen_masks = None
    if masks is not None:
        chosen_masks = {str(m) for m in masks}
        if "all" in chosen_masks:
            chosen_masks = None
        elif "none" in chosen_masks:
            chosen_masks = set()
        else:
            tasks = {p[3] for i in items if len(p := i.rel.split("/")) == 5 and p[2] == layout.CELL_MASKS_DIR}
            unknown_masks = sorted(chosen_masks - set(_MASK_KINDS) - tasks)
            if unknown_masks:
                raise InvalidArgumentError(
                    f"{where}: unknown mask {unknown_masks[0]!r}; expected 'all', 'none', 'tissue', 'instances' or "
                    f"a semantic task of this cohort ({', '.join(sorted(tasks - {layout.INSTANCES_TASK})) or 'none'})"
                )
    selection = _Selection(
        modalities=chosen_modalities,
        resolutions=resolutions,
        tissues=chosen_tissues,
        masks=chosen_masks,
        cell_mask_resolution=cell_res[0] if cell_res else None,
        all_instances=any(i.rel == f"{layout.METADATA}/{layout.CELLS_FILE}" for i in items),
    )
    return [i for i in items if selection.wants(i.rel)]


# -------------------------------------------------------------------------------------------------
# the destination


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
        for dirpath, dirnames, filenames in os.walk(self.dest):
            dirnames[:] = [d for d in dirnames if not is_temporary(d)]
            here = Path(dirpath)
            for name in filenames:
                source = here / name
                if is_temporary(name) or source.is_symlink():
                    continue
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
        for dirpath, dirnames, filenames in os.walk(self.work):
            dirnames[:] = [d for d in dirnames if not is_temporary(d)]
            here = Path(dirpath)
            for name in filenames:
                path = here / name
                if is_temporary(name) or path.is_symlink():
                    continue
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


# -------------------------------------------------------------------------------------------------
# downloading one file


def _plain_md5(etag: str | None) -> str | None:
    """The MD5 an S3 ETag stands for; None for multipart uploads (``<md5>-<parts>``) and other servers."""
    if etag and len(etag) == 32 and all(c in "0123456789abcdef" for c in etag.lower()):
        return etag.lower()
    return None


class _Downloader:
    """Downloads, verifies and renames the files of a plan into the work tree (thread-safe)."""

    def __init__(self, remote: _Remote, staging: _Staging, state: FetchProgress, update: Callable[[], None]) -> None:
        self.remote, self.staging, self.state, self.update = remote, staging, state, update
        self.downloaded_bytes = 0
        self.downloaded_files = 0
        self._lock = threading.Lock()
        self.entries: dict[str, dict[str, Any]] = {}

    def _count(self, nbytes: int) -> None:
        with self._lock:
            self.downloaded_bytes += nbytes
        self.state.add(nbytes)
        self.update()

    def finished(self, item: _Item, known: dict[str, Any] | None) -> dict[str, Any] | None:
        """The entry of an already copied file that matches ``item``; None when it must be (re)downloaded."""
        final = self.staging.work / item.rel
        if not final.is_file() or final.is_symlink() or final.stat().st_size != item.size:
            return None
        if known is not None and int(known.get("size", -1)) == item.size:
            if item.crc32c is None or known.get(ALGORITHM) == item.crc32c:
                return {"size": item.size, ALGORITHM: str(known[ALGORITHM])}
        crc = file_checksum(final)
        if item.crc32c is not None and crc != item.crc32c:
            return None  # the source changed since: download it again
        if item.crc32c is None and (md5 := _plain_md5(item.etag)) is not None and _md5(final) != md5:
            return None
        return {"size": item.size, ALGORITHM: crc}

    def __call__(self, item: _Item) -> None:
        entry = self._download(item, resume=True)
        with self._lock:
            self.entries[item.rel] = entry
            self.downloaded_files += 1
        self.state.add(files=1)
        self.update()

    def _download(self, item: _Item, *, resume: bool) -> dict[str, Any]:
        final = self.staging.work / item.rel
        part = final.with_name(f".{final.name}{TMP_MARKER}{_PART}")
        final.parent.mkdir(parents=True, exist_ok=True)
        have = part.stat().st_size if resume and part.is_file() else 0
        if have > item.size:
            have = 0
        crc = 0
        # the MD5 only where it is the check (no manifest, an S3 ETag of a single-part upload)
        expected_md5 = _plain_md5(item.etag) if item.crc32c is None else None
        md5 = hashlib.md5(usedforsecurity=False) if expected_md5 else None
        if have:  # continue an interrupted download: hash what is there, ask for the rest only
            with open(part, "rb") as fh:
                while block := fh.read(_BLOCK):
                    crc = google_crc32c.extend(crc, block)
                    if md5 is not None:
                        md5.update(block)
            self.state.add(have)
        with open(part, "ab" if have else "wb", buffering=0) as fh:
            position = have
            while position < item.size:
                end = min(position + _BLOCK, item.size)
                # a whole file in one plain GET (servers answer it faster than a range), else a range
                data = (
                    self.remote.cat(item.rel)
                    if (position, end) == (0, item.size)
                    else self.remote.cat(item.rel, position, end)
                )
                if len(data) != end - position:
                    raise CohortFormatError(
                        self.remote.where(item.rel),
                        "fetch.size_mismatch",
                        f"the server sent {len(data)} bytes for bytes {position}-{end - 1}; "
                        f"the {'manifest' if item.crc32c else 'listing'} says the file has {item.size}",
                    )
                fh.write(data)  # unbuffered: a kill loses nothing already received and written
                crc = google_crc32c.extend(crc, data)
                if md5 is not None:
                    md5.update(data)
                position = end
                self._count(len(data))
                _fault_point("fetch.part_written")
        found = f"{crc:08x}"
        problem = None
        if item.crc32c is not None and found != item.crc32c:
            problem = f"CRC32C {found}, the cohort's manifest says {item.crc32c}"
        elif md5 is not None and md5.hexdigest() != expected_md5:
            problem = f"MD5 {md5.hexdigest()}, the server's ETag says {expected_md5}"
        if problem is not None:
            part.unlink()  # never keep bytes that failed their check
            if have:  # the part may come from an older version of the file: once more, from the start
                logger.info("%s: the resumed download failed its check; downloading it again", item.rel)
                self.state.add(-have)
                return self._download(item, resume=False)
            raise CohortFormatError(
                self.remote.where(item.rel),
                "fetch.checksum",
                f"downloaded {item.size} bytes with {problem}: the object was altered or is corrupt; "
                "nothing of it was kept",
            )
        _fault_point("fetch.verified")
        os.replace(part, final)
        _fault_point("fetch.file_renamed")
        entry = {"size": item.size, ALGORITHM: found}
        self.staging.record(item.rel, entry)
        return entry


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        while block := fh.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _run_parallel(func: Callable[[_Item], None], items: list[_Item], workers: int) -> None:
    """``func`` over ``items`` on ``workers`` threads; the first failure cancels what has not started."""
    if not items:
        return
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(items))), thread_name_prefix="spora-fetch") as pool:
        futures = [pool.submit(func, item) for item in items]
        done, pending = wait(futures, return_when=FIRST_EXCEPTION)
        for future in pending:
            future.cancel()
        for future in futures:
            if future.done() and not future.cancelled() and future.exception() is not None:
                raise future.exception()  # type: ignore[misc]


# -------------------------------------------------------------------------------------------------
# the public function


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
        live), or ``["all"]`` (the default) or ``["none"]``. ``metadata/`` is always copied, and
        with it, when the cohort has ``metadata/cells.parquet``, the instance masks of *every*
        tissue (that table lists the cells of all tissues, and ``validate`` wants their masks).
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


def _run_plan(
    downloader: _Downloader, items: list[_Item], known: dict[str, dict[str, Any]], workers: int
) -> dict[str, dict[str, Any]]:
    """Download the files of ``items`` that are not finished yet; returns every file's manifest entry."""
    entries: dict[str, dict[str, Any]] = {}
    todo = []
    for item in items:
        entry = downloader.finished(item, known.get(item.rel))
        if entry is None:
            todo.append(item)
        else:
            entries[item.rel] = entry
            downloader.state.add(item.size, files=1)
    downloader.update()
    # the largest first: the pool stays busy to the end
    _run_parallel(downloader, sorted(todo, key=lambda i: -i.size), workers)
    entries.update(downloader.entries)
    return entries
