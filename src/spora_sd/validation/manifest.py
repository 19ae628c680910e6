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

from pathlib import Path

from jsonschema import Draft202012Validator

from spora_sd.io.manifest import read_manifest, verify_manifest
from spora_sd.layout import CohortPaths
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
    root = Path(root)
    path = CohortPaths(root).manifest
    try:
        manifest = read_manifest(root)
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
    for diff in verify_manifest(root, manifest):
        if diff.kind == "missing":
            report.add(
                root / diff.path,
                "manifest.file_missing",
                "listed in metadata/manifest.json but missing",
                "warning" if allow_partial else "error",
            )
        elif diff.kind == "size":
            report.add(
                root / diff.path,
                "manifest.mismatch",
                f"{diff.found} bytes, the manifest says {diff.expected}: truncated or rewritten after the export",
            )
        elif diff.kind == "checksum":
            report.add(
                root / diff.path,
                "manifest.mismatch",
                f"CRC32C {diff.found}, the manifest says {diff.expected}: the content was altered or swapped "
                "with another file after the export",
            )
        else:
            unlisted.append(diff.path)
    for rel in unlisted[:_MAX_UNLISTED]:
        report.add(
            root / rel, "manifest.unlisted", "not listed in metadata/manifest.json (added after the export?)", "warning"
        )
    if len(unlisted) > _MAX_UNLISTED:
        report.add(
            path,
            "manifest.unlisted",
            f"{len(unlisted) - _MAX_UNLISTED} more files are not listed in the manifest",
            "warning",
        )
