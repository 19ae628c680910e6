"""Validate a cohort folder against the spora layout.

:func:`validate` walks the tree once and collects every broken rule into a
:class:`~spora_sd.report.ValidationReport` (it never stops at the first problem, and never raises on
bad input). Table rules come from the JSON Schemas in ``schemas/``; structural rules are here and in
:mod:`spora_sd.validation.images`. Rule ids are listed in :data:`RULES`.

Examples
--------
>>> import spora_sd, tempfile
>>> root = spora_sd.make_synthetic_cohort(tempfile.mkdtemp(), n_tissues=2, image_size=128, n_cells=20)
>>> spora_sd.validate(root).ok
True
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from spora_sd import layout
from spora_sd.errors import CohortFormatError, CohortNotFoundError, LayoutNameError
from spora_sd.io.atomic import is_temporary
from spora_sd.io.location import display_location, is_remote
from spora_sd.io.masks import read_mask, read_mask_shape
from spora_sd.io.memory import returns_free_memory
from spora_sd.io.remote import is_dir, is_local, listdir, walk_files
from spora_sd.layout import CohortPaths
from spora_sd.report import ValidationReport
from spora_sd.validation.images import check_image
from spora_sd.validation.manifest import MANIFEST_RULES, check_manifest

__all__ = ["RULES", "validate"]

logger = logging.getLogger(__name__)

#: Structural rule ids (table rules are in :data:`spora_sd.layout.schemas.RULES`).
RULES: dict[str, str] = {
    "layout.root": "the cohort path is not a folder",
    "layout.dataset_key": "the folder name is not a valid dataset key",
    "layout.tissues_missing": "metadata/tissues.parquet is missing",
    "layout.unknown_entry": "a file or folder that the layout does not define",
    "layout.resolution_name": "a resolution folder not named like '1_0mpp'",
    "layout.filename": "an image or mask file name that is not '<tissue_id>.ome.zarr' / '<tissue_id>.npz'",
    "layout.path_escape": "a name or symlink that points outside its folder",
    "layout.temporary_file": "a temporary file left by an interrupted write",
    "layout.modality_missing": "tissues.parquet lists a modality whose folder is missing",
    "layout.file_missing": "a file that the tables imply is missing",
    "ids.unknown_tissue": "a tissue id that tissues.parquet does not list for that modality",
    "ids.inconsistent": "tissue ids disagree between files",
    "image.zarr_format": "the image is not Zarr format 3",
    "image.ome_metadata": "OME-NGFF 0.5 multiscales/omero metadata missing or malformed",
    "image.unreadable": "the image cannot be opened or decoded",
    "image.shape": "a pyramid level is not a (c, y, x) array, or its channel count differs from level 0",
    "image.dtype": "the image's data type is not an integer or float type (bool, complex, ... are refused)",
    "image.too_large": "zarr.json declares more pixels, channels or bytes per chunk than the size limits allow "
    "(SPORA_SD_MAX_IMAGE_PIXELS, SPORA_SD_MAX_IMAGE_CHANNELS, SPORA_SD_MAX_CHUNK_BYTES)",
    "image.chunks": "chunks are not (C, 256, 256)",
    "image.shards": "not sharded, shard not a chunk multiple, or more than 100 shards",
    "image.chunk_missing": "a shard file that the array's shape implies is missing (an interrupted copy); "
    "Zarr would read its pixels as zeros",
    "image.truncated": "a shard file is truncated or its index is corrupted",
    "image.corrupt": "a chunk cannot be decoded (checksum mismatch, decompression error); found by reads and "
    "by validate --deep",
    "image.channels": "channel count differs from the channels_per_tissue row",
    "image.consolidated": "the image group's consolidated metadata (an optional zarr.json key) differs from a "
    "level's own zarr.json (stale), or lacks a level",
    "image.channel_labels": "omero channel labels differ from the tissue's channels (channels.parquet order, "
    "filtered by channels_per_tissue.parquet)",
    "image.scale": "level-0 scale times the axis unit is not the resolution folder's mpp (or disagrees with "
    "mpp_<modality>), the unit is not a length unit, or the pixels are not square",
    "mask.unreadable": "not a readable .npz, or its .npy header declares more or less data than the file holds",
    "mask.too_large": "the .npy header declares more pixels than the size limit allows (SPORA_SD_MAX_MASK_PIXELS)",
    "mask.key": "no array under the key 'mask'",
    "mask.pickled": "the mask holds a pickled object array",
    "mask.shape": "mask is not 2-D or its shape differs from the image at the same resolution",
    "mask.dtype": "mask dtype is not integer or boolean",
    "mask.values": "tissue mask not binary, or semantic values not in the label encoder",
    "mask.labels_mismatch": "instance-mask labels differ from the cell ids of cells.parquet",
    "mask.missing": "a mask the layout requires is missing",
    "standardization.missing": "a required standardization table is missing",
    "tiling.out_of_bounds": "a 'default' tile reaches outside its image",
    "check.failed": "a check could not run on this file (the message says why)",
    **MANIFEST_RULES,
}

_MODALITY_TABLES = (layout.CHANNELS_FILE, layout.CHANNELS_PER_TISSUE_FILE)


def _entries(path: Path) -> list[str]:
    return listdir(path, hidden=True)  # local or remote (spora_sd.io.remote); hidden: temporary names too


class _Validator:
    """One validation run; the state shared by the checks of one cohort."""

    def __init__(self, root: Path, *, deep: bool, allow_partial: bool) -> None:
        self.root = root
        self.paths = CohortPaths(root)
        self.deep = deep
        self.allow_partial = allow_partial
        self.report = ValidationReport(root=display_location(root))
        self.dataset = root.name
        self.tissues: pd.DataFrame | None = None
        self.tissue_ids_by_modality: dict[str, set[str]] = {}
        self.channels: dict[str, list[str]] = {}
        self.tissue_channels: dict[str, pd.DataFrame] = {}
        # (tissue_id, mpp) -> (height, width) of any image at that resolution, for mask checks
        self.image_shapes: dict[tuple[str, float], tuple[int, int]] = {}
        self.cells: pd.DataFrame | None = None

    # helpers -------------------------------------------------------------------------------------
    def add(self, file: Path | str, rule: str, message: str, severity: str = "error") -> None:
        self.report.add(self._local_form(file), rule, message, severity)  # type: ignore[arg-type]

    def _local_form(self, file: Any) -> Any:
        """A remote file as its path relative to the cohort (the report's form), local files as they are."""
        if is_local(self.root):
            return file
        text, root = str(file), str(self.root).rstrip("/") + "/"
        return text[len(root) :] if text.startswith(root) else display_location(text)

    def failed(self, file: Path, exc: BaseException) -> None:
        """A check crashed on one file: report it there (``check.failed``) and go on with the others."""
        logger.debug("check of %s failed", file, exc_info=True)
        self.add(getattr(exc, "file", file), getattr(exc, "rule", "check.failed"), f"{type(exc).__name__}: {exc}")

    def rel(self, path: Path) -> str:
        return self.report._rel(self._local_form(path))

    @property
    def all_tissue_ids(self) -> set[str]:
        return set().union(*self.tissue_ids_by_modality.values()) if self.tissue_ids_by_modality else set()

    def check_inside(self, path: Path) -> bool:
        """A symlink (or anything) that resolves outside the cohort is refused."""
        if not is_local(self.root):
            return True  # object stores have no symlinks; the names themselves are checked by the layout
        try:
            resolved = path.resolve()
        except (OSError, RuntimeError):
            self.add(path, "layout.path_escape", "cannot resolve the path (symlink loop?)")
            return False
        if resolved != self.root and self.root not in resolved.parents:
            self.add(path, "layout.path_escape", f"resolves to {resolved}, outside the cohort folder")
            return False
        return True

    def table(self, path: Path, kind: str, **ctx) -> pd.DataFrame | None:
        from spora_sd.io.tables import read_table_checked

        df, problems = read_table_checked(path, kind, **ctx)
        self.report.extend(problems)
        self.report.count("tables")
        return df

    def tissue_from_name(self, path: Path, suffix: str, modality: str | None = None) -> str | None:
        name = path.name
        try:
            tid = layout.tissue_id_from_filename(name, suffix)
        except LayoutNameError as exc:
            rule = "layout.path_escape" if (".." in name or "/" in name or "\\" in name) else "layout.filename"
            self.add(path, rule, str(exc))
            return None
        known = self.tissue_ids_by_modality.get(modality, set()) if modality else self.all_tissue_ids
        if self.tissues is not None and tid not in known:
            where = f"for modality {modality!r}" if modality else "at all"
            self.add(path, "ids.unknown_tissue", f"tissue {tid!r} is not listed in tissues.parquet {where}")
        return tid

    def check_id_subset(self, file: Path, ids: Iterable[str], modality: str | None = None) -> None:
        if self.tissues is None:
            return
        known = self.tissue_ids_by_modality.get(modality, set()) if modality else self.all_tissue_ids
        unknown = sorted(set(map(str, ids)) - known)
        if unknown:
            self.add(
                file,
                "ids.unknown_tissue",
                f"{len(unknown)} tissue ids not in tissues.parquet"
                + (f" for modality {modality!r}" if modality else "")
                + f": {unknown[:3]}",
            )

    def resolution_dirs(self, folder: Path) -> list[tuple[float, Path]]:
        out = []
        for name in _entries(folder):
            path = folder / name
            if name in _MODALITY_TABLES or not path.is_dir() or is_temporary(name):
                continue
            try:
                out.append((layout.parse_resolution(name), path))
            except LayoutNameError as exc:
                self.add(path, "layout.resolution_name", str(exc))
        return out

    def _temporary_remote(self) -> None:
        """Temporary names anywhere in a remote cohort (one recursive listing), reported once per name."""
        seen: set[str] = set()
        for rel, _ in walk_files(self.root):
            parts = rel.split("/")
            for i, name in enumerate(parts):
                where = "/".join(parts[: i + 1])
                if is_temporary(name) and where not in seen:
                    seen.add(where)
                    self.add(self.root / where, "layout.temporary_file", "left by an interrupted write; delete it")
                    break

    # checks --------------------------------------------------------------------------------------
    def check_root(self) -> bool:
        if not is_dir(self.root):
            self.add(self.root, "layout.root", "not a folder" if is_local(self.root) else "nothing stored there")
            return False
        try:
            layout.check_dataset_key(self.dataset)
        except LayoutNameError as exc:
            self.add(self.root, "layout.dataset_key", str(exc))
        if not is_local(self.root):
            self._temporary_remote()
        for dirpath, dirnames, filenames in os.walk(self.root) if is_local(self.root) else ():
            for name in dirnames + filenames:
                if is_temporary(name):
                    self.add(Path(dirpath) / name, "layout.temporary_file", "left by an interrupted write; delete it")
            dirnames[:] = [d for d in dirnames if not d.endswith(layout.IMAGE_SUFFIX) and not is_temporary(d)]
        for name in _entries(self.root):
            path = self.root / name
            if is_temporary(name):
                continue
            if path.is_symlink():
                self.check_inside(path)
            if name in layout.RESERVED_DIRS:
                continue
            try:
                layout.check_modality(name)
                if name.startswith(layout.IHC_PREFIX):
                    raise LayoutNameError(f"IHC folders live under ihc/, not at the top: {name!r}")
            except LayoutNameError as exc:
                self.add(path, "layout.unknown_entry", f"unknown top-level entry: {exc}")
        return True

    def check_tissues(self) -> None:
        path = self.paths.tissues
        if not path.is_file():
            self.add(path, "layout.tissues_missing", "every cohort needs metadata/tissues.parquet")
            return
        df = self.table(path, "tissues", dataset=self.dataset)
        if df is None:
            return
        if "tissue_id" not in df.columns and "tissue_id" in (df.index.names or []):
            df = df.reset_index()
        if "tissue_id" not in df.columns or "modality" not in df.columns:
            return
        ok = df["tissue_id"].astype("string").str.fullmatch(layout.TISSUE_ID_RE.pattern).fillna(False).astype(bool)
        escaping = df.loc[~ok, "tissue_id"].astype(str)
        escaping = escaping[escaping.str.contains(r"/|\\|\.\.", regex=True)]
        if len(escaping):
            self.add(path, "layout.path_escape", f"tissue ids that would escape their folder: {escaping.tolist()[:3]}")
        good = df[ok]
        self.tissues = good
        for modality, group in good.groupby("modality"):
            self.tissue_ids_by_modality[str(modality)] = set(group["tissue_id"].astype(str))
        # patient_id / specimen_id vs the tissue id's parts: the schema's table.tissue_id.parts rule.
        for modality in self.tissue_ids_by_modality:
            try:
                mdir = self.paths.modality_dir(modality)
            except LayoutNameError:
                continue  # the schema check reported the bad modality value
            if not mdir.is_dir():
                self.add(
                    mdir,
                    "layout.modality_missing",
                    f"tissues.parquet lists modality {modality!r} but its folder is missing",
                    "warning" if self.allow_partial else "error",
                )

    def modality_folders(self) -> list[tuple[str, Path]]:
        out = []
        for name in _entries(self.root):
            if name in layout.RESERVED_DIRS or is_temporary(name):
                continue
            try:
                if not name.startswith(layout.IHC_PREFIX):
                    out.append((layout.check_modality(name), self.root / name))
            except LayoutNameError:
                continue  # reported by check_root
        for name in _entries(self.root / layout.IHC_DIR):
            path = self.root / layout.IHC_DIR / name
            if is_temporary(name):
                continue
            try:
                modality = layout.check_modality(name)
                if not modality.startswith(layout.IHC_PREFIX):
                    raise LayoutNameError(f"expected 'ihc_<MARKER>' under ihc/, got {name!r}")
                out.append((modality, path))
            except LayoutNameError as exc:
                self.add(path, "layout.unknown_entry", str(exc))
        return out

    def check_modality(self, modality: str, folder: Path) -> None:
        multiplex = layout.is_multiplex(modality)
        if multiplex:
            self.check_channels(modality)
        for name in _entries(folder):
            path = folder / name
            if is_temporary(name) or (multiplex and name in _MODALITY_TABLES):
                continue
            if not path.is_dir():
                self.add(path, "layout.unknown_entry", "unexpected file in a modality folder")
        resolutions = self.resolution_dirs(folder)
        self.check_stated_mpp(modality, [m for m, _ in resolutions])
        for mpp, res_dir in resolutions:
            for name in _entries(res_dir):
                if is_temporary(name):
                    continue
                if name == layout.IMAGES_DIR:
                    self.check_images(modality, mpp, res_dir / name)
                elif name == layout.STANDARDIZATION_DIR and multiplex:
                    self.check_standardization(modality, res_dir / name)
                else:
                    self.add(res_dir / name, "layout.unknown_entry", "expected only images/ and standardization/")

    def check_stated_mpp(self, modality: str, stored: list[float]) -> None:
        """``mpp_<modality>`` in tissues.parquet must be one of the resolutions stored for it."""
        column = f"mpp_{modality}"
        if self.tissues is None or column not in self.tissues.columns or not stored:
            return
        rows = self.tissues[self.tissues["modality"] == modality]
        stated = pd.to_numeric(rows[column], errors="coerce")
        bad = rows[stated.notna() & ~stated.apply(lambda v: any(np.isclose(v, m, rtol=1e-6) for m in stored))]
        if len(bad):
            self.add(
                self.paths.tissues,
                "image.scale",
                f"{column} of {len(bad)} tissues (e.g. {bad['tissue_id'].iloc[0]}: {bad[column].iloc[0]}) is not "
                f"one of the stored resolutions {stored}",
                # a partial copy may hold a coarser resolution only (spora-sd fetch --resolution)
                "warning" if self.allow_partial else "error",
            )

    def check_channels(self, modality: str) -> None:
        ch_path = self.paths.channels(modality)
        cpt_path = self.paths.channels_per_tissue(modality)
        if not ch_path.is_file():
            self.add(ch_path, "layout.file_missing", "multiplex modalities need channels.parquet")
            return
        channels = self.table(ch_path, "channels")
        if channels is None or "channel_name" not in channels.columns:
            return
        panel = channels["channel_name"].astype(str).tolist()
        self.channels[modality] = panel
        if not cpt_path.is_file():
            self.add(cpt_path, "layout.file_missing", "multiplex modalities need channels_per_tissue.parquet")
            return
        cpt = self.table(cpt_path, "channels_per_tissue", channels=panel, dataset=self.dataset)
        if cpt is None:
            return
        if "tissue_id" in cpt.columns:
            cpt = cpt.set_index("tissue_id")
        self.tissue_channels[modality] = cpt
        self.check_id_subset(cpt_path, cpt.index, modality)
        missing = sorted(self.tissue_ids_by_modality.get(modality, set()) - set(map(str, cpt.index)))
        if missing:
            self.add(
                cpt_path, "ids.inconsistent", f"no row for {len(missing)} tissues of tissues.parquet: {missing[:3]}"
            )

    def expected_channels(self, modality: str, tissue_id: str) -> list[str] | None:
        if not layout.is_multiplex(modality):
            return list(layout.HE_CHANNELS) if modality == layout.HE else None
        cpt = self.tissue_channels.get(modality)
        panel = self.channels.get(modality)
        if cpt is None or panel is None or tissue_id not in cpt.index:
            return None
        row = cpt.loc[tissue_id]
        if isinstance(row, pd.DataFrame):  # duplicate index rows: reported by the schema check
            return None
        return [c for c in panel if c in row.index and bool(row[c])]

    def check_images(self, modality: str, mpp: float, folder: Path) -> None:
        seen = set()
        for name in _entries(folder):
            path = folder / name
            if is_temporary(name):
                continue
            if not self.check_inside(path):
                continue
            tid = self.tissue_from_name(path, layout.IMAGE_SUFFIX, modality)
            if tid is None:
                continue
            seen.add(tid)
            self.report.count("images")
            try:
                problems, hw = check_image(
                    path,
                    self.rel(path),
                    mpp=mpp,
                    expected_channels=self.expected_channels(modality, tid),
                    deep=self.deep,
                )
            except Exception as exc:  # noqa: BLE001 - one broken image must not stop the others' checks
                self.failed(path, exc)
                continue
            self.report.extend(problems)
            if hw is not None:
                self.image_shapes.setdefault((tid, mpp), hw)
                if self.image_shapes[(tid, mpp)] != hw:
                    self.add(
                        path,
                        "mask.shape",
                        f"image is {hw}, but another modality of the same tissue at this resolution is "
                        f"{self.image_shapes[(tid, mpp)]} (registered tissues must share a size)",
                    )
        expected = self.tissue_ids_by_modality.get(modality, set())
        for tid in sorted(expected - seen):
            self.add(
                self.paths.image(modality, mpp, tid),
                "layout.file_missing",
                "image listed in tissues.parquet is missing",
                "warning" if self.allow_partial else "error",
            )

    def check_standardization(self, modality: str, folder: Path) -> None:
        panel = self.channels.get(modality)
        for method in _entries(folder):
            for param in _entries(folder / method):
                spec_dir = folder / method / param
                if is_temporary(param) or not spec_dir.is_dir():
                    continue
                present = {n.removesuffix(layout.TABLE_SUFFIX) for n in _entries(spec_dir)}
                for name in layout.STANDARDIZATION_REQUIRED:
                    if name not in present:
                        self.add(
                            self.paths.standardization_file(spec_dir, name),
                            "standardization.missing",
                            "required table is missing",
                        )
                for name in sorted(present):
                    file = spec_dir / f"{name}{layout.TABLE_SUFFIX}"
                    if is_temporary(name):
                        continue
                    if name.startswith("image_level_"):
                        df = self.table(file, "standardization_image", channels=panel, dataset=self.dataset)
                        if df is not None:
                            ids = df["tissue_id"] if "tissue_id" in df.columns else df.index
                            self.check_id_subset(file, ids, modality)
                    elif name.startswith("global_level_"):
                        self.table(file, "standardization_global", channels=panel)
                    else:
                        self.add(file, "layout.unknown_entry", "not a standardization table of spec §6")

    def check_cells(self) -> None:
        path = self.paths.cells
        if not path.is_file():
            return
        channels = sorted(set().union(*self.channels.values())) if self.channels else None
        df = self.table(path, "cells", dataset=self.dataset, channels=channels)
        if df is None:
            return
        if "tissue_id" not in df.columns and "tissue_id" in (df.index.names or []):
            df = df.reset_index()
        if {"tissue_id", "cell_id"} <= set(df.columns):
            self.cells = df[["tissue_id", "cell_id"]]
            self.check_id_subset(path, df["tissue_id"].unique())

    def check_masks(self) -> None:
        seg = self.root / layout.SEGMENTATIONS_DIR
        for name in _entries(seg):
            if is_temporary(name):
                continue
            if not (seg / name).is_dir():
                self.add(seg / name, "layout.unknown_entry", "expected resolution folders")
        resolutions = self.resolution_dirs(seg)
        image_res = {mpp for (_, mpp) in self.image_shapes}
        for mpp in sorted(image_res - {m for m, _ in resolutions}):
            self.add(
                self.paths.tissue_masks_dir(mpp), "mask.missing", "tissue masks are required at every image resolution"
            )
        finest = min((m for m, _ in resolutions), default=None)
        for mpp, res_dir in resolutions:
            for name in _entries(res_dir):
                if is_temporary(name):
                    continue
                if name == layout.TISSUE_MASKS_DIR:
                    self.check_mask_folder(mpp, res_dir / name, kind="tissue")
                elif name == layout.CELL_MASKS_DIR:
                    self.check_cell_masks(mpp, res_dir / name, finest=mpp == finest)
                else:
                    self.add(res_dir / name, "layout.unknown_entry", "expected tissue_masks/ and cell_masks/")
            if not (res_dir / layout.TISSUE_MASKS_DIR).is_dir() and mpp in image_res:
                self.add(res_dir / layout.TISSUE_MASKS_DIR, "mask.missing", "tissue masks are required here")
        if self.cells is not None and (finest is None or not self.paths.instance_masks_dir(finest).is_dir()):
            self.add(
                self.paths.cells,
                "mask.missing",
                "cells.parquet exists but no instance masks do",
                "warning" if self.allow_partial else "error",  # a partial copy fetched without them
            )

    def check_cell_masks(self, mpp: float, folder: Path, finest: bool) -> None:
        for name in _entries(folder):
            path = folder / name
            if is_temporary(name):
                continue
            if name == layout.INSTANCES_TASK:
                self.check_mask_folder(mpp, path, kind="instance")
                continue
            try:
                task = layout.check_task(name)
            except LayoutNameError as exc:
                self.add(path, "layout.unknown_entry", str(exc))
                continue
            encoder_file = self.paths.label_encoder(mpp, task)
            values = None
            if not encoder_file.is_file():
                self.add(encoder_file, "layout.file_missing", "a semantic-mask task needs label_encoder.parquet")
            else:
                enc = self.table(encoder_file, "label_encoder")
                if enc is not None and enc.shape[1] >= 2:
                    values = set(pd.to_numeric(enc.iloc[:, 1], errors="coerce").dropna().astype(int).tolist())
            self.check_mask_folder(mpp, path, kind="semantic", allowed=values)
        if finest and not (folder / layout.INSTANCES_TASK).is_dir() and self.cells is not None:
            self.add(
                folder / layout.INSTANCES_TASK,
                "mask.missing",
                "instance masks are missing",
                "warning" if self.allow_partial else "error",
            )

    def check_mask_folder(self, mpp: float, folder: Path, *, kind: str, allowed: set[int] | None = None) -> None:
        cells_by_tissue = None
        if kind == "instance" and self.cells is not None:
            cells_by_tissue = {
                str(t): np.sort(g.to_numpy())
                for t, g in self.cells.groupby("tissue_id", sort=False, observed=True)["cell_id"]
            }
        seen = set()
        for name in _entries(folder):
            path = folder / name
            if is_temporary(name) or name == layout.LABEL_ENCODER_FILE:
                continue
            if not self.check_inside(path):
                continue
            tid = self.tissue_from_name(path, layout.MASK_SUFFIX)
            if tid is None:
                continue
            seen.add(tid)
            self.report.count("masks")
            try:
                self.check_mask(path, tid, mpp, kind, allowed, cells_by_tissue)
            except CohortFormatError as exc:
                self.add(path, exc.rule, exc.message)
            except Exception as exc:  # noqa: BLE001 - one broken mask must not stop the others' checks
                self.failed(path, exc)
        if kind == "instance" and cells_by_tissue is not None:
            for tid in sorted(set(cells_by_tissue) - seen):
                self.add(
                    self.paths.instance_mask(mpp, tid) if layout.is_tissue_id(tid) else folder,
                    "mask.missing",
                    f"cells.parquet has cells of {tid!r} but its instance mask is missing",
                    "warning" if self.allow_partial else "error",
                )
        if kind == "tissue":
            expected_ids = {t for (t, m) in self.image_shapes if m == mpp}
            for tid in sorted(expected_ids - seen):
                self.add(self.paths.tissue_mask(mpp, tid), "mask.missing", "tissue mask missing for an image")

    def check_mask(
        self,
        path: Path,
        tid: str,
        mpp: float,
        kind: str,
        allowed: set[int] | None,
        cells_by_tissue: dict[str, np.ndarray] | None,
    ) -> None:
        """The checks of one mask file: its header first, then (when needed) its values."""
        shape, dtype = read_mask_shape(path)
        if len(shape) != 2:
            self.add(path, "mask.shape", f"a mask must be 2-D, got shape {shape}")
            return
        if not (np.issubdtype(dtype, np.integer) or dtype == np.bool_):
            self.add(path, "mask.dtype", f"dtype {dtype} is neither integer nor boolean")
            return
        expected = self.image_shapes.get((tid, mpp))
        if expected is not None and tuple(shape) != expected:
            self.add(path, "mask.shape", f"mask is {tuple(shape)}, the image at {mpp} mpp is {expected}")
        if kind == "semantic" and allowed is None and not self.deep:
            return
        mask = read_mask(path)
        labels = np.unique(mask)
        if kind == "tissue" and not np.isin(labels, [0, 1]).all():
            self.add(path, "mask.values", f"tissue mask must be binary, found values {labels[:5].tolist()}")
        elif kind == "semantic" and allowed is not None:
            bad = np.setdiff1d(labels, np.array(sorted(allowed | {0})))
            if bad.size:
                self.add(path, "mask.values", f"values {bad[:5].tolist()} are not in label_encoder.parquet")
        elif kind == "instance" and cells_by_tissue is not None:
            ids = labels[labels != 0]
            cells = cells_by_tissue.get(tid, np.array([], dtype=ids.dtype))
            if ids.shape != cells.shape or not np.array_equal(ids, cells):
                only_mask = np.setdiff1d(ids, cells)
                only_table = np.setdiff1d(cells, ids)
                self.add(
                    path,
                    "mask.labels_mismatch",
                    f"{only_mask.size} labels not in cells.parquet (e.g. {only_mask[:3].tolist()}), "
                    f"{only_table.size} cell_ids not in the mask (e.g. {only_table[:3].tolist()})",
                )

    def check_tiling(self) -> None:
        tiling = self.root / layout.TILING_DIR
        for mpp, res_dir in self.resolution_dirs(tiling):
            for strategy in _entries(res_dir):
                sdir = res_dir / strategy
                if is_temporary(strategy):
                    continue
                for name in _entries(sdir):
                    file = sdir / name
                    if is_temporary(name):
                        continue
                    try:
                        size, what = layout.parse_tile_filename(name)
                    except LayoutNameError as exc:
                        self.add(file, "layout.filename", str(exc))
                        continue
                    df = self.table(file, f"tile_{what}", dataset=self.dataset)
                    if df is None:
                        continue
                    ids = df["tissue_id"] if "tissue_id" in df.columns else df.index
                    self.check_id_subset(file, pd.unique(np.asarray(ids, dtype=object)))
                    if what == "coordinates" and strategy == "default" and {"row", "col"} <= set(df.columns):
                        self.check_tiles_inside(file, df, mpp, size)

    def check_tiles_inside(self, file: Path, df: pd.DataFrame, mpp: float, size: int) -> None:
        shapes = {t: hw for (t, m), hw in self.image_shapes.items() if m == mpp}
        if not shapes:
            return
        h = df["tissue_id"].map(lambda t: shapes.get(t, (np.inf, np.inf))[0]).astype(float)
        w = df["tissue_id"].map(lambda t: shapes.get(t, (np.inf, np.inf))[1]).astype(float)
        row = pd.to_numeric(df["row"], errors="coerce")
        col = pd.to_numeric(df["col"], errors="coerce")
        outside = (row < 0) | (col < 0) | (row + size > h) | (col + size > w)
        if outside.any():
            first = df[outside].iloc[0]
            self.add(
                file,
                "tiling.out_of_bounds",
                f"{int(outside.sum())} tiles reach outside their image, e.g. {first['tissue_id']} at "
                f"row={first['row']}, col={first['col']}",
            )

    def run(self) -> ValidationReport:
        if not self.check_root():
            return self.report
        self.guarded(self.root, self.check_tissues)
        modalities: list[tuple[str, Path]] = []
        self.guarded(self.root, lambda: modalities.extend(self.modality_folders()))
        for modality, folder in modalities:  # one broken modality does not stop the checks of the others
            self.guarded(folder, lambda m=modality, f=folder: self.check_modality(m, f))
        for step in (self.check_cells, self.check_masks, self.check_tiling):
            self.guarded(self.root, step)
        if self.deep:  # every byte against metadata/manifest.json, when the cohort has one
            self.guarded(self.root, lambda: check_manifest(self.root, self.report, allow_partial=self.allow_partial))
        return self.report

    def guarded(self, where: Path, step: Callable[[], object]) -> None:
        """Run one check; if it crashes, report that (on ``where``, or the file the error names) and go on."""
        try:
            step()
        except Exception as exc:
            logger.debug("validation step failed", exc_info=True)
            self.failed(where, exc)


@returns_free_memory
def validate(
    path: str | Path,
    *,
    deep: bool = False,
    allow_partial: bool = False,
    storage_options: dict[str, Any] | None = None,
) -> ValidationReport:
    """Check a cohort against every rule of the spora layout.

    Parameters
    ----------
    path
        The cohort folder, or a dataset key or alias found under ``$SPORA_DATASETS_DIR`` (as
        :func:`spora_sd.open_cohort` takes them). A cohort that is not there is reported, not raised.
    deep
        Also decode every image chunk, one row of chunks of one shard at a time, and every semantic
        mask (slow; by default images are checked through their metadata, the list of their shard
        files and the shard indexes, which find missing, truncated and corrupted shard files without
        reading pixels; see :doc:`/guarantees`),
        and compare every file with the content manifest ``metadata/manifest.json`` when there is one
        (size and CRC32C: finds altered and swapped files; :mod:`spora_sd.validation.manifest`).
    allow_partial
        Report files missing from a partial copy (e.g. only ``imc/`` was copied) as warnings: also
        a resolution named in ``mpp_<modality>`` that was not copied (a coarser one only), and
        instance masks left out (``spora-sd fetch --masks tissue``).
    storage_options
        Options of the remote filesystem when ``path`` is remote (``s3://``, ``https://``, an rclone
        remote): the same checks run over the network (shard indexes with range requests; ``deep``
        reads every byte). A server that cannot be read raises its
        :class:`~spora_sd.errors.RemoteAccessError` (it says nothing about the cohort).

    Returns
    -------
    A :class:`~spora_sd.report.ValidationReport`; ``report.ok`` is True when no error was found.

    Examples
    --------
    >>> import spora_sd, tempfile
    >>> root = spora_sd.make_synthetic_cohort(tempfile.mkdtemp(), n_tissues=2, image_size=128, n_cells=20)
    >>> report = spora_sd.validate(root)
    >>> report.ok, report.problems
    (True, [])
    """
    if (isinstance(path, str) and is_remote(path)) or not isinstance(path, str | os.PathLike):
        from spora_sd.datasets.registry import resolve_cohort

        remote = resolve_cohort(path, storage_options=storage_options)
        return _Validator(remote, deep=deep, allow_partial=allow_partial).run()
    root = Path(path).expanduser()
    if not root.exists() and len(root.parts) == 1:
        # a dataset key or an alias: the same look-up as open_cohort (which would also read the tables)
        from spora_sd.datasets.registry import resolve_cohort

        with contextlib.suppress(CohortNotFoundError, LayoutNameError):
            root = resolve_cohort(str(path), storage_options=storage_options)
        if not is_local(root):
            return _Validator(root, deep=deep, allow_partial=allow_partial).run()
    root = root.resolve() if root.exists() else root
    return _Validator(root, deep=deep, allow_partial=allow_partial).run()
