"""The content manifest check of ``validate(deep=True)``: every file against ``metadata/manifest.json``.

A cohort without a manifest passes (it is optional). With one, the manifest must follow its JSON
Schema, every file it lists must exist with its size and CRC32C (a truncated, altered or swapped
file is an error, naming both checksums), and files it does not list are warnings. See
:mod:`spora_sd.io.manifest` for the format.

Examples
--------
>>> import spora_sd, tempfile
>>> from spora_sd.report import ValidationReport
>>> root = spora_sd.make_synthetic_cohort(tempfile.mkdtemp(), n_tissues=1, image_size=32, n_cells=4)
>>> report = ValidationReport(root=str(root))
>>> check_manifest(root, report)
>>> report.problems
[]
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import google_crc32c
from jsonschema import Draft202012Validator

from spora_sd.io.atomic import is_temporary
from spora_sd.io.manifest import ALGORITHM, ManifestDifference, read_manifest, verify_manifest
from spora_sd.io.remote import is_local, open_binary, read_bytes, remote_errors, walk_files
from spora_sd.layout import MANIFEST_FILE, METADATA, CohortPaths
from spora_sd.layout.schemas import load_manifest_schema
from spora_sd.report import ValidationReport

__all__ = ["MANIFEST_RULES", "check_manifest"]

#: Rule ids of the manifest check (part of :data:`spora_sd.validation.validator.RULES`).
MANIFEST_RULES: dict[str, str] = {
    "manifest.unreadable": "metadata/manifest.json is not JSON or breaks its schema",
    "manifest.file_missing": "a file that metadata/manifest.json lists is missing (validate(deep=True))",
    "manifest.mismatch": "a file's size or CRC32C differs from metadata/manifest.json: truncated, altered or "
    "swapped (validate(deep=True))",
    "manifest.unlisted": "a file that metadata/manifest.json does not list, added after the export (a warning)",
}

_MAX_UNLISTED = 20


def check_manifest(root: str | Path, report: ValidationReport, *, allow_partial: bool = False) -> None:
    """Compare the files of the cohort ``root`` with its manifest, adding the problems to ``report``.

    Parameters
    ----------
    root
        The cohort folder.
    report
        Where the problems go (rule ids in :data:`MANIFEST_RULES`).
    allow_partial
        Files missing from a partial copy are warnings.
    """
    root = Path(root) if isinstance(root, str) or is_local(root) else root
    path = CohortPaths(root).manifest if is_local(root) else _at(root, "")
    try:
        manifest = read_manifest(root) if is_local(root) else _read_remote(CohortPaths(root).manifest)
    except (OSError, ValueError) as exc:
        report.add(path, "manifest.unreadable", f"not JSON: {exc}")
        return
    if manifest is None:
        return
    errors = sorted(Draft202012Validator(load_manifest_schema()).iter_errors(manifest), key=lambda e: list(e.path))
    if errors:
        first = errors[0]
        where = "/".join(str(p) for p in first.absolute_path) or "(top level)"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        report.add(path, "manifest.unreadable", f"breaks manifest.schema.json at {where}: {first.message}{more}")
        return
    unlisted = []
    for diff in verify_manifest(root, manifest) if is_local(root) else _verify_remote(root, manifest):
        if diff.kind == "missing":
            report.add(
                _at(root, diff.path),
                "manifest.file_missing",
                "listed in metadata/manifest.json but missing",
                "warning" if allow_partial else "error",
            )
        elif diff.kind == "size":
            report.add(
                _at(root, diff.path),
                "manifest.mismatch",
                f"{diff.found} bytes, the manifest says {diff.expected}: truncated or rewritten after the export",
            )
        elif diff.kind == "checksum":
            report.add(
                _at(root, diff.path),
                "manifest.mismatch",
                f"CRC32C {diff.found}, the manifest says {diff.expected}: the content was altered or swapped "
                "with another file after the export",
            )
        else:
            unlisted.append(diff.path)
    for rel in unlisted[:_MAX_UNLISTED]:
        report.add(
            _at(root, rel),
            "manifest.unlisted",
            "not listed in metadata/manifest.json (added after the export?)",
            "warning",
        )
    if len(unlisted) > _MAX_UNLISTED:
        report.add(
            path,
            "manifest.unlisted",
            f"{len(unlisted) - _MAX_UNLISTED} more files are not listed in the manifest",
            "warning",
        )


def _read_remote(path: Any) -> dict[str, Any] | None:
    try:
        with remote_errors(path):
            raw = read_bytes(path)
    except FileNotFoundError:  # CohortNotFoundError too: no manifest
        return None
    return json.loads(raw)


def _crc32c(path: Any) -> str:
    checksum = google_crc32c.Checksum()
    with remote_errors(path), open_binary(path) as fh:
        while block := fh.read(4 << 20):
            checksum.update(block)
    return checksum.hexdigest().decode()


def _verify_remote(root: Any, manifest: dict[str, Any]) -> list[ManifestDifference]:
    """:func:`spora_sd.io.manifest.verify_manifest` for a remote cohort: sizes from one recursive listing,
    then the CRC32C of every file whose size matches (each file read once, in 4 MiB range requests)."""
    listed: dict[str, dict[str, Any]] = manifest["files"]
    manifest_rel = CohortPaths(root).manifest.path[len(root.path.rstrip("/")) + 1 :]
    found = {
        rel: size
        for rel, size in walk_files(root)
        if rel != manifest_rel and not any(is_temporary(part) for part in rel.split("/"))
    }
    out = []
    for rel, entry in listed.items():
        if rel.startswith("/") or ".." in rel.split("/") or rel not in found:
            out.append(ManifestDifference(rel, "missing"))
            continue
        if found[rel] != entry["size"]:
            out.append(ManifestDifference(rel, "size", entry["size"], found[rel]))
            continue
        checksum = _crc32c(root / rel)
        if checksum != entry[ALGORITHM]:
            out.append(ManifestDifference(rel, "checksum", entry[ALGORITHM], checksum))
    out.extend(ManifestDifference(rel, "unlisted") for rel in sorted(found) if rel not in listed)
    return out


def _at(root: Any, rel: str) -> Any:
    """Where a problem is reported: the local file, or (remote) the path relative to the cohort."""
    if is_local(root):
        return root / rel
    return rel or f"{METADATA}/{MANIFEST_FILE}"
