"""The content manifest of a cohort: ``metadata/manifest.json``, the size and CRC32C of every file.

Every export (:func:`spora_sd.from_spatialdata`, :func:`spora_sd.make_synthetic_cohort`) writes it
last, before the cohort is moved into place, and ``spora_sd.validate(path, deep=True)`` compares the
files with it (:mod:`spora_sd.validation.manifest`): a truncated, altered, swapped (two shards of an
image exchanged) or missing file is found, whatever its format. The manifest is optional: a cohort
without one is checked by the layout's rules alone.

The format (JSON Schema ``schemas/manifest.schema.json``, :func:`spora_sd.layout.schemas.load_manifest_schema`)::

    {"manifest_version": "1.0", "dataset": "<key>", "algorithm": "crc32c", "spora_sd_version": "...",
     "files": {"metadata/tissues.parquet": {"size": 5210, "crc32c": "1c291ca3"}, ...}}

``files`` maps the path of every regular file of the cohort, relative to its root with ``/`` as the
separator, to its size in bytes and its CRC32C (Castagnoli, the checksum of Zarr v3's shard indexes;
8 lower-case hex digits). The manifest itself, temporary names (``.*.tmp-*``) and symlinks are not
listed. Entries are sorted, and nothing else (no time stamp) is recorded, so two equal cohorts have
equal manifests. In-place writers of spora-sd (:func:`spora_sd.compute_standardization`,
:func:`spora_sd.compute_tiling`) update the entries of the files they write
(:func:`update_manifest`).

Examples
--------
>>> import spora_sd, tempfile
>>> root = spora_sd.make_synthetic_cohort(tempfile.mkdtemp(), n_tissues=1, image_size=32, n_cells=4)
>>> manifest = read_manifest(root)
>>> manifest["algorithm"], "metadata/tissues.parquet" in manifest["files"]
('crc32c', True)
>>> verify_manifest(root, manifest)
[]
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

import google_crc32c

from spora_sd.io.atomic import _atomic_path_locked, _fault_point, is_temporary, target_lock
from spora_sd.layout import CohortPaths

__all__ = [
    "ALGORITHM",
    "MANIFEST_VERSION",
    "ManifestDifference",
    "compute_entries",
    "file_checksum",
    "read_manifest",
    "update_manifest",
    "verify_manifest",
    "write_manifest",
]

#: Version of the manifest format ("MAJOR.MINOR"; a minor version only adds optional keys).
MANIFEST_VERSION = "1.0"
#: The checksum of every entry.
ALGORITHM = "crc32c"
_CHUNK = 4 << 20


class ManifestDifference(NamedTuple):
    """One file that differs from the manifest.

    ``kind`` is ``"missing"`` (listed, not found), ``"size"``, ``"checksum"`` or ``"unlisted"`` (found,
    not listed); ``expected`` and ``found`` are the manifest's and the file's values.
    """

    path: str
    kind: str
    expected: Any = None
    found: Any = None


def file_checksum(path: str | Path) -> str:
    """CRC32C of a file's bytes, as 8 lower-case hex digits (read in 4 MiB blocks).

    >>> import tempfile, pathlib
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "x"
    >>> _ = f.write_bytes(b"123456789")
    >>> file_checksum(f)  # the CRC32C check value
    'e3069283'
    """
    value = 0
    with open(path, "rb") as fh:
        while block := fh.read(_CHUNK):
            value = google_crc32c.extend(value, block)
    return f"{value:08x}"


def _files(root: Path) -> Iterable[str]:
    """Relative posix paths of the regular files under ``root`` (no temporary names, no symlinks)."""
    manifest = CohortPaths(root).manifest
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not is_temporary(d))
        here = Path(dirpath)
        for name in sorted(filenames):
            path = here / name
            if is_temporary(name) or path.is_symlink() or path == manifest:
                continue
            yield path.relative_to(root).as_posix()


def _entry(path: Path) -> dict[str, Any]:
    return {"size": path.stat().st_size, ALGORITHM: file_checksum(path)}


def compute_entries(root: str | Path, under: Iterable[str | Path] | None = None) -> dict[str, dict[str, Any]]:
    """The manifest entries of the files of ``root`` (or only of those below the paths ``under``)."""
    root = Path(root)
    if under is None:
        return {rel: _entry(root / rel) for rel in _files(root)}
    out: dict[str, dict[str, Any]] = {}
    for path in under:
        path = Path(path)
        if path.is_dir() and not path.is_symlink():
            base = path.relative_to(root).as_posix()
            out.update({f"{base}/{sub}": _entry(path / sub) for sub in _files(path)})
        elif path.is_file() and not path.is_symlink():
            out[path.relative_to(root).as_posix()] = _entry(path)
    return out


def _dump(root: Path, files: dict[str, dict[str, Any]]) -> None:
    from spora_sd._version import __version__

    header = {
        "manifest_version": MANIFEST_VERSION,
        "dataset": root.name,
        "algorithm": ALGORITHM,
        "spora_sd_version": __version__,
    }
    # One line per file, so that two manifests compare well with diff.
    lines = [f"  {json.dumps(rel)}: {json.dumps(entry)}" for rel, entry in sorted(files.items())]
    listed = "{\n" + ",\n".join(lines) + "\n }" if lines else "{}"
    text = json.dumps(header, indent=1)[:-2] + f',\n "files": {listed}\n}}\n'
    target = CohortPaths(root).manifest
    with _atomic_path_locked(target, overwrite=True) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_manifest(root: str | Path) -> Path:
    """Write ``metadata/manifest.json`` for every file of the cohort ``root``; returns its path."""
    root = Path(root)
    target = CohortPaths(root).manifest
    target.parent.mkdir(parents=True, exist_ok=True)
    files = compute_entries(root)
    with target_lock(target, timeout=60):
        _dump(root, files)
    _fault_point("manifest.written")
    return target


def read_manifest(root: str | Path) -> dict[str, Any] | None:
    """The parsed manifest of a cohort, None when it has none.

    Raises
    ------
    ValueError
        The file is not JSON (its schema is checked by :mod:`spora_sd.validation.manifest`).
    """
    path = CohortPaths(Path(root)).manifest
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    return json.loads(text)


def update_manifest(root: str | Path, paths: Iterable[str | Path]) -> bool:
    """Refresh the manifest's entries below ``paths`` (files or folders just written in place).

    Does nothing when the cohort has no manifest (e.g. while an export builds it: the export writes
    the manifest at its end). Entries of files that no longer exist below ``paths`` are dropped.
    Returns whether a manifest was updated.
    """
    root = Path(root)
    target = CohortPaths(root).manifest
    if not target.is_file():
        return False
    paths = [Path(p) for p in paths]
    fresh = compute_entries(root, paths)
    prefixes = [p.relative_to(root).as_posix() for p in paths]
    with target_lock(target, timeout=60):
        manifest = read_manifest(root)
        if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
            return False
        files = {
            rel: entry
            for rel, entry in manifest["files"].items()
            if not any(rel == p or rel.startswith(f"{p}/") for p in prefixes)
        }
        files.update(fresh)
        _dump(root, files)
    return True


def verify_manifest(root: str | Path, manifest: dict[str, Any]) -> list[ManifestDifference]:
    """Compare the files of ``root`` with ``manifest`` (sizes first, checksums of equal-size files)."""
    root = Path(root)
    listed: dict[str, dict[str, Any]] = manifest["files"]
    out = []
    for rel, entry in listed.items():
        path = root / rel
        if rel.startswith("/") or ".." in rel.split("/") or not path.is_file():  # never read outside the cohort
            out.append(ManifestDifference(rel, "missing"))
            continue
        size = path.stat().st_size
        if size != entry["size"]:
            out.append(ManifestDifference(rel, "size", entry["size"], size))
            continue
        found = file_checksum(path)
        if found != entry[ALGORITHM]:
            out.append(ManifestDifference(rel, "checksum", entry[ALGORITHM], found))
    out.extend(ManifestDifference(rel, "unlisted") for rel in _files(root) if rel not in listed)
    return out
