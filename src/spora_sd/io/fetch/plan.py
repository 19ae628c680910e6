"""What a fetch copies: the source's files (from its manifest or a listing), and the user's choice of them.

:func:`_plan` checks each choice (modalities, resolutions, tissues, masks) against what the source
has, and keeps the files the choice asks for (:meth:`_Selection.wants`); ``metadata/`` always comes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spora_sd import layout
from spora_sd.errors import CohortFormatError, InvalidArgumentError, LayoutNameError
from spora_sd.io.atomic import is_temporary
from spora_sd.io.manifest import ALGORITHM

if TYPE_CHECKING:
    from spora_sd.io.fetch.source import _Remote

_MASK_KINDS = ("tissue", layout.INSTANCES_TASK)
_CRC_RE = re.compile(r"[0-9a-f]{8}")


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
    )
    return [i for i in items if selection.wants(i.rel)]
