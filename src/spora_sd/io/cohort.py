"""Open a spora cohort: metadata eagerly, pixels lazily.

:func:`open_cohort` reads ``tissues.parquet`` and lists folders; nothing else is read until asked
for. Images come back as dask arrays over the Zarr v3 arrays (one dask chunk per Zarr chunk), masks
are read with ``allow_pickle=False``, tables with pyarrow column selection.

Examples
--------
>>> import spora_sd, tempfile
>>> root = spora_sd.make_synthetic_cohort(tempfile.mkdtemp(), n_tissues=2, image_size=128, n_cells=20)
>>> cohort = spora_sd.open_cohort(root)
>>> cohort.modalities
['he', 'imc']
>>> img = cohort.image(cohort.tissue_ids("imc")[0], "imc")
>>> img.ndim
3
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import pandas as pd
from dask.utils import parse_bytes

from spora_sd import layout
from spora_sd.errors import CohortFormatError, CohortNotFoundError, InvalidArgumentError, LayoutNameError
from spora_sd.io.atomic import is_temporary, recover
from spora_sd.io.consolidated import consolidated_levels
from spora_sd.io.images import ImageMetadata, OnMismatch, _check_on_mismatch, open_image_levels, read_image_metadata
from spora_sd.io.location import child_name, display_location, is_remote
from spora_sd.io.masks import read_mask
from spora_sd.io.remote import (
    ArrivingFiles,
    is_dir,
    is_file,
    is_local,
    listdir,
    prefetch_listings,
    read_in_background,
    read_many_under,
)
from spora_sd.io.tables import parquet_columns, parquet_num_rows, read_table
from spora_sd.layout import CohortPaths

__all__ = ["Cohort", "open_cohort"]

logger = logging.getLogger(__name__)


def _listdir(path: Path) -> list[str]:
    return listdir(path)


def _some(names: Sequence[str], limit: int = 5) -> str:
    """``names`` for an error message: the first ``limit`` of them and how many more there are.

    >>> _some(["a", "b", "c"], limit=2)
    "['a', 'b'] (and 1 more)"
    """
    shown = list(names)[:limit]
    more = len(names) - len(shown)
    return f"{shown}" + (f" (and {more} more)" if more else "")


def _resolutions_in(path: Path) -> list[float]:
    return sorted(layout.parse_resolution(n) for n in _listdir(path) if layout.is_resolution_name(n))


class Cohort:
    """A spora cohort on disk. Create it with :func:`open_cohort`.

    Attributes
    ----------
    path
        The cohort folder.
    paths
        The :class:`~spora_sd.layout.CohortPaths` of the tree.
    dataset
        The dataset key (folder name).
    tissues
        ``metadata/tissues.parquet`` with ``tissue_id`` as a column.
    on_mismatch
        What reading an image does when its OME metadata contradicts the tables (channel names) or
        its resolution folder (mpp): ``"raise"`` (default) or ``"warn"``; see :func:`open_cohort`.
    """

    def __init__(self, path: str | Path, *, on_mismatch: OnMismatch = "raise") -> None:
        _check_on_mismatch(on_mismatch)
        self.on_mismatch: OnMismatch = on_mismatch
        #: Contents of remote ``zarr.json`` files fetched in bulk (:meth:`prefetch_images`).
        self._zarr_json = ArrivingFiles()
        if isinstance(path, str) or is_local(path):
            self.path = Path(path).expanduser().resolve()
            if not self.path.is_dir():
                raise CohortNotFoundError(f"{self.path}: no such cohort folder")
        else:  # a remote cohort (upath.UPath): one listing of its root says whether it is there
            self.path = path
            prefetch_listings(self.path)  # the layout's folders, a level at a time (S3)
            if not listdir(self.path):
                raise CohortNotFoundError(
                    f"{display_location(self.path)}: no such cohort (nothing stored under this location)"
                )
        self.paths = CohortPaths(self.path)
        self.dataset = child_name(self.path)
        tissues_file = self.paths.tissues
        if not is_file(tissues_file):
            raise CohortFormatError(
                tissues_file, "layout.tissues_missing", "every cohort needs metadata/tissues.parquet"
            )
        tissues = read_table(tissues_file)
        if "tissue_id" not in tissues.columns and "tissue_id" in (tissues.index.names or []):
            tissues = tissues.reset_index()
        for column in ("tissue_id", "modality"):
            if column not in tissues.columns:
                raise CohortFormatError(tissues_file, "table.column.missing", f"column {column!r} is missing")
        bad = ~tissues["tissue_id"].astype("string").str.fullmatch(layout.TISSUE_ID_RE.pattern).fillna(False)
        if bad.any():
            raise CohortFormatError(
                tissues_file,
                "table.column.pattern",
                f"malformed tissue ids (first: {tissues.loc[bad, 'tissue_id'].iloc[0]!r}); run spora_sd.validate",
            )
        self.tissues: pd.DataFrame = tissues

    # ---------------------------------------------------------------------------------------------
    # what is there

    @functools.cached_property
    def modalities(self) -> list[str]:
        """Modalities whose folder exists, sorted."""
        found = []
        for name in _listdir(self.path):
            if name in layout.RESERVED_DIRS:
                continue
            try:
                found.append(layout.check_modality(name))
            except LayoutNameError:
                logger.warning("%s: ignoring unknown folder %r", self.path, name)
        for name in _listdir(self.path / layout.IHC_DIR):
            try:
                found.append(layout.check_modality(name))
            except LayoutNameError:
                logger.warning("%s: ignoring unknown folder ihc/%r", self.path, name)
        return sorted(found)

    @property
    def multiplex_modalities(self) -> list[str]:
        return [m for m in self.modalities if layout.is_multiplex(m)]

    def resolutions(self, modality: str | None = None) -> list[float]:
        """Resolutions (mpp) stored for ``modality``, or for any modality or mask when ``None``."""
        if modality is not None:
            return _resolutions_in(self.paths.modality_dir(modality))
        found: set[float] = set(_resolutions_in(self.path / layout.SEGMENTATIONS_DIR))
        for m in self.modalities:
            found.update(self.resolutions(m))
        return sorted(found)

    def mask_resolutions(self) -> list[float]:
        return _resolutions_in(self.path / layout.SEGMENTATIONS_DIR)

    def tissue_ids(self, modality: str | None = None) -> list[str]:
        """Tissue ids of the tissues table (for one modality when given), in table order, unique."""
        t = self.tissues if modality is None else self.tissues[self.tissues["modality"] == modality]
        return list(dict.fromkeys(t["tissue_id"].astype(str)))

    def _default_resolution(self, modality: str | None, resolution: float | None) -> float:
        if resolution is not None:
            return float(resolution)
        available = self.resolutions(modality)
        if not available:
            where = self.paths.modality_dir(modality) if modality else self.path
            raise CohortNotFoundError(f"{where}: no resolution folder (e.g. 1_0mpp) found")
        return available[0]

    # ---------------------------------------------------------------------------------------------
    # channels

    @functools.cache  # noqa: B019 - a Cohort lives as long as its tables are useful
    def channels(self, modality: str) -> pd.DataFrame:
        """``<modality>/channels.parquet``: the cohort panel in image order.

        Raises
        ------
        CohortNotFoundError
            The file is missing (e.g. a partial copy without it); the message names it.
        CohortFormatError
            It cannot be read, or has no ``channel_name`` column (``table.column.missing``).
        """
        path = self.paths.channels(modality)
        if not is_file(path):
            raise CohortNotFoundError(
                f"{path}: missing; the multiplex modality {modality!r} needs it to name its image channels"
            )
        channels = read_table(path)
        if "channel_name" not in channels.columns:
            raise CohortFormatError(path, "table.column.missing", "column 'channel_name' is missing")
        return channels

    @functools.cache  # noqa: B019
    def channels_per_tissue(self, modality: str) -> pd.DataFrame:
        """``<modality>/channels_per_tissue.parquet``: boolean tissue x channel matrix, index ``tissue_id``."""
        path = self.paths.channels_per_tissue(modality)
        if not is_file(path):
            raise CohortNotFoundError(
                f"{path}: missing; the multiplex modality {modality!r} needs it to know each image's channels"
            )
        cpt = read_table(path)
        if "tissue_id" in cpt.columns:
            cpt = cpt.set_index("tissue_id")
        return cpt

    def panel(self, modality: str) -> list[str]:
        """Channel names of the cohort panel of ``modality`` (for H&E: ``["R", "G", "B"]``)."""
        if not layout.is_multiplex(modality):
            return list(layout.HE_CHANNELS) if modality == layout.HE else [modality.removeprefix(layout.IHC_PREFIX)]
        return self.channels(modality)["channel_name"].astype(str).tolist()

    def tissue_channels(self, tissue_id: str, modality: str) -> list[str]:
        """Channels measured for one tissue, in panel order (the channels of its image).

        Raises
        ------
        InvalidArgumentError
            ``tissue_id`` is no ``modality`` tissue of the cohort.
        CohortFormatError
            It is one, but ``channels_per_tissue.parquet`` has no row for it (rule ``ids.inconsistent``).
        """
        if not layout.is_multiplex(modality):
            return self.panel(modality)
        cpt = self.channels_per_tissue(modality)
        if tissue_id not in cpt.index:
            cpt_path = self.paths.channels_per_tissue(modality)
            known = self.tissue_ids(modality)
            if tissue_id in known:
                raise CohortFormatError(cpt_path, "ids.inconsistent", f"no row for tissue {tissue_id!r}")
            raise InvalidArgumentError(
                f"{cpt_path}: no row for tissue {tissue_id!r}, which is no {modality!r} tissue of the cohort; "
                f"expected one of {_some(known)}"
            )
        row = cpt.loc[tissue_id]
        if isinstance(row, pd.DataFrame):
            raise CohortFormatError(
                self.paths.channels_per_tissue(modality), "table.key.duplicate", f"two rows for tissue {tissue_id!r}"
            )
        return [c for c in self.panel(modality) if bool(row.get(c, False))]

    def image_channels(self, tissue_id: str, modality: str) -> list[str] | None:
        """The channel names an image of ``tissue_id`` must have, from the tables; ``None`` if they do not say.

        Multiplex: :meth:`tissue_channels`; H&E: ``R, G, B``; IHC: ``None`` (one channel, unnamed by the tables).
        """
        if layout.is_multiplex(modality) or modality == layout.HE:
            return self.tissue_channels(tissue_id, modality)
        return None

    # ---------------------------------------------------------------------------------------------
    # images

    def image_path(self, tissue_id: str, modality: str, resolution: float | None = None) -> Path:
        return self.paths.image(modality, self._default_resolution(modality, resolution), tissue_id)

    def image_tissue_ids(self, modality: str, resolution: float | None = None) -> list[str]:
        """Tissue ids whose image file exists for ``modality`` at ``resolution`` (a folder listing)."""
        folder = self.paths.images_dir(modality, self._default_resolution(modality, resolution))
        return [n.removesuffix(layout.IMAGE_SUFFIX) for n in _listdir(folder) if n.endswith(layout.IMAGE_SUFFIX)]

    def image_metadata(self, tissue_id: str, modality: str, resolution: float | None = None) -> ImageMetadata:
        return read_image_metadata(self.image_path(tissue_id, modality, resolution), cache=self._zarr_json)

    def output_paths(self, output: str | os.PathLike[str] | None = None) -> CohortPaths:
        """Where derived tables of this cohort are written: the cohort itself, or the local folder ``output``.

        ``output`` is a cohort root laid out like this one (e.g. a partial copy made by ``spora-sd
        fetch``); the tables go to the same relative paths there. A remote cohort is never written
        to, so it needs ``output``.

        Raises
        ------
        InvalidArgumentError
            The cohort is remote and ``output`` is not given, or ``output`` is remote.
        """
        if output is None:
            if self.remote:
                raise InvalidArgumentError(
                    f"{display_location(self.path)} is remote and spora-sd never writes to a remote cohort: pass "
                    "output= a local folder (e.g. a partial copy made by `spora-sd fetch`) to write the tables there"
                )
            return self.paths
        if isinstance(output, str) and is_remote(output):
            raise InvalidArgumentError(f"{display_location(output)}: output must be a local folder")
        return CohortPaths(Path(output).expanduser())

    @property
    def remote(self) -> bool:
        """Whether the cohort is read over the network (``s3://``, ``http(s)://``, an rclone remote)."""
        return not is_local(self.path)

    def prefetch_images(
        self, modality: str, resolution: float | None = None, tissue_ids: Sequence[str] = (), *, wait: bool = True
    ) -> int:
        """Fetch the ``zarr.json`` files of many remote images at once; returns how many files were fetched.

        Opening an image reads its group's ``zarr.json`` and then one per pyramid level. Done image by
        image over a network, that is three round trips per image in sequence; here they are
        fetched concurrently for all images. A group whose ``zarr.json`` holds its levels' metadata
        (consolidated, as spora-sd writes it; see :mod:`spora_sd.io.consolidated`) needs no level
        file: one request per image. The contents are kept, and :meth:`image_levels` then opens
        each image without a request. Local cohorts: nothing to do (returns 0).

        With ``wait=False`` (S3 through obstore), it returns at once (the number of images asked
        for) and the files arrive in the background: opening an image waits for its own files
        only, so the images whose metadata came first are opened while the rest is on its way.
        """
        if not self.remote:
            return 0
        mpp = self._default_resolution(modality, resolution)
        folder = self.paths.images_dir(modality, mpp)
        url = str(folder).rstrip("/")
        # strings, not path objects: a remote join costs about 0.1 ms, for thousands of files
        names = [f"{layout.check_tissue_id(t)}{layout.IMAGE_SUFFIX}" for t in tissue_ids]
        groups = [f"{n}/zarr.json" for n in names if f"{url}/{n}/zarr.json" not in self._zarr_json]
        if read_in_background(folder, groups, self._zarr_json, follow=_level_files):
            return self._zarr_json.wait() if wait else len(groups)
        before = len(self._zarr_json)
        self._zarr_json.update(read_many_under(folder, groups))
        levels = [m for rel in groups for m in _level_files(rel, self._zarr_json.get(f"{url}/{rel}"))]
        levels = [rel for rel in levels if f"{url}/{rel}" not in self._zarr_json]
        self._zarr_json.update(read_many_under(folder, levels))
        return len(self._zarr_json) - before

    def image_levels(self, tissue_id: str, modality: str, resolution: float | None = None) -> list[da.Array]:
        """Every pyramid level of an image as lazy ``(C, Y, X)`` dask arrays; no pixel is read.

        The image's OME metadata is checked against the tables (its channel names, see
        :meth:`image_channels`) and against its resolution folder (the level-0 scale); a contradiction
        raises :class:`~spora_sd.errors.CohortFormatError` (or warns, with ``on_mismatch="warn"``).
        Computing a chunk that is missing or corrupt raises too (see :func:`spora_sd.io.images.open_image_levels`).
        """
        mpp = self._default_resolution(modality, resolution)
        path = self.paths.image(modality, mpp, tissue_id)
        if not (path.exists() if not self.remote else is_dir(path)):
            raise CohortNotFoundError(f"{path}: image not found (missing: {self._relative(path)})")
        return open_image_levels(
            path,
            # remote: dask chunks of whole Zarr chunks up to dask's chunk size, so that a crop is one read
            # that fetches each shard index once, not once per 256 x 256 chunk (one round trip each)
            chunk_bytes=parse_bytes(dask.config.get("array.chunk-size")) if self.remote else None,
            mpp=mpp,
            channel_names=self.image_channels(tissue_id, modality),
            on_mismatch=self.on_mismatch,
            cache=self._zarr_json,
        )

    def image(self, tissue_id: str, modality: str, resolution: float | None = None, level: int = 0) -> da.Array:
        """One pyramid level of an image as a lazy ``(C, Y, X)`` dask array."""
        levels = self.image_levels(tissue_id, modality, resolution)
        if not -len(levels) <= level < len(levels):
            raise InvalidArgumentError(
                f"level={level!r}: the image of {tissue_id!r} has {len(levels)} pyramid levels, 0..{len(levels) - 1}"
            )
        return levels[level]

    # ---------------------------------------------------------------------------------------------
    # cells

    @functools.cached_property
    def cell_columns(self) -> list[str]:
        """Columns of ``cells.parquet`` (read from the file footer only)."""
        if not is_file(self.paths.cells):
            return []
        return parquet_columns(self.paths.cells)

    def cells(self, columns: Sequence[str] | None = None, tissues: Sequence[str] | None = None) -> pd.DataFrame:
        """Read ``cells.parquet``; only ``columns`` (plus the keys) and only ``tissues`` when given."""
        if not is_file(self.paths.cells):
            raise CohortNotFoundError(f"{self.paths.cells}: this cohort has no cells table")
        cols = None
        if columns is not None:
            cols = list(dict.fromkeys(["tissue_id", "cell_id", *columns]))
            cols = [c for c in cols if c in self.cell_columns]
        filters = [("tissue_id", "in", list(tissues))] if tissues is not None else None
        df = read_table(self.paths.cells, columns=cols, filters=filters)
        if "tissue_id" not in df.columns and "tissue_id" in (df.index.names or []):
            df = df.reset_index()
        return df

    def intensity_columns(self, modality: str) -> list[str]:
        """Channels of ``modality`` that have a mean-intensity column in ``cells.parquet``."""
        present = set(self.cell_columns)
        return [c for c in self.panel(modality) if c in present]

    # ---------------------------------------------------------------------------------------------
    # masks

    def _mask_resolution(self, resolution: float | None) -> float:
        if resolution is not None:
            return float(resolution)
        available = self.mask_resolutions()
        if not available:
            raise CohortNotFoundError(f"{self.path / layout.SEGMENTATIONS_DIR}: no segmentations found")
        return available[0]

    def tissue_mask(self, tissue_id: str, resolution: float | None = None) -> np.ndarray:
        return read_mask(self.paths.tissue_mask(self._mask_resolution(resolution), tissue_id))

    def instance_mask(self, tissue_id: str, resolution: float | None = None) -> np.ndarray:
        return read_mask(self.paths.instance_mask(self._mask_resolution(resolution), tissue_id))

    def tasks(self, resolution: float | None = None) -> list[str]:
        """Semantic-mask tasks (``cell_masks/<task>/`` folders) at a resolution."""
        try:
            folder = self.paths.cell_masks_dir(self._mask_resolution(resolution))
        except CohortNotFoundError:
            return []
        out = []
        for name in _listdir(folder):
            try:
                out.append(layout.check_task(name))
            except LayoutNameError:
                continue
        return out

    def semantic_mask(self, tissue_id: str, task: str, resolution: float | None = None) -> np.ndarray:
        return read_mask(self.paths.semantic_mask(self._mask_resolution(resolution), task, tissue_id))

    def label_encoder(self, task: str, resolution: float | None = None) -> dict[str, int]:
        """Category name -> integer value of a semantic-mask task (first and second column)."""
        df = read_table(self.paths.label_encoder(self._mask_resolution(resolution), task))
        if df.shape[1] < 2:
            raise CohortFormatError(
                self.paths.label_encoder(self._mask_resolution(resolution), task),
                "table.column.missing",
                "a label encoder needs two columns: category name, integer value",
            )
        return {str(k): int(v) for k, v in zip(df.iloc[:, 0], df.iloc[:, 1], strict=True)}

    # ---------------------------------------------------------------------------------------------
    # derived products

    def standardization_specs(self, modality: str, resolution: float | None = None) -> list[tuple[str, str]]:
        """``(method, param)`` folders present, e.g. ``[("quantile_clipping", "uq_0.99")]``."""
        root = self.paths.standardization_root(modality, self._default_resolution(modality, resolution))
        return [(m, p) for m in _listdir(root) for p in _listdir(root / m) if is_dir(root / m / p)]

    def standardization(
        self,
        modality: str,
        method: str = "quantile_clipping",
        param: str = layout.DEFAULT_STANDARDIZATION_PARAM,
        resolution: float | None = None,
    ) -> dict[str, pd.DataFrame]:
        """The §6 tables of one standardization spec; both folder spellings (``uq_0.99``, ``uq_0.99_image``)."""
        mpp = self._default_resolution(modality, resolution)
        candidates = self.paths.standardization_candidates(modality, mpp, method, param)
        folder = next((c for c in candidates if is_dir(c)), None)
        if folder is None:
            raise CohortNotFoundError(f"no standardization folder; looked for {', '.join(map(str, candidates))}")
        out = {}
        for name in layout.STANDARDIZATION_REQUIRED + layout.STANDARDIZATION_OPTIONAL:
            file = self.paths.standardization_file(folder, name)
            if is_file(file):
                df = read_table(file)
                if "tissue_id" in df.columns:
                    df = df.set_index("tissue_id")
                out[name] = df
        missing = [n for n in layout.STANDARDIZATION_REQUIRED if n not in out]
        if missing:
            raise CohortFormatError(folder, "standardization.missing", f"missing required tables: {missing}")
        return out

    def tilings(self) -> list[tuple[float, str, int]]:
        """``(resolution, strategy, tile size)`` of every tiling table present."""
        root = self.path / layout.TILING_DIR
        out = []
        for res_name in _listdir(root):
            if not layout.is_resolution_name(res_name):
                continue
            for strategy in _listdir(root / res_name):
                for name in _listdir(root / res_name / strategy):
                    try:
                        size, what = layout.parse_tile_filename(name)
                    except LayoutNameError:
                        continue
                    if what == "coordinates":
                        out.append((layout.parse_resolution(res_name), strategy, size))
        return sorted(out)

    def tiling(
        self, resolution: float | None = None, strategy: str = "default", tile_size: int = 256
    ) -> tuple[pd.DataFrame, pd.DataFrame | None]:
        """Tile coordinates (``tissue_id, tile_id, row, col``) and tile stats (or ``None``)."""
        mpp = self._mask_resolution(resolution) if resolution is None else float(resolution)
        coords = read_table(self.paths.tile_coordinates(mpp, strategy, tile_size))
        stats_file = self.paths.tile_stats(mpp, strategy, tile_size)
        stats = read_table(stats_file) if is_file(stats_file) else None
        if stats is not None and "tissue_id" in stats.columns:
            stats = stats.set_index("tissue_id")
        return coords, stats

    # ---------------------------------------------------------------------------------------------
    # partial copies

    def _relative(self, path: Path) -> str:
        if self.remote:
            root, text = str(self.path).rstrip("/") + "/", str(path)
            return text[len(root) :] if text.startswith(root) else display_location(path)
        try:
            return path.relative_to(self.path).as_posix()
        except ValueError:
            return str(path)

    @functools.cached_property
    def missing(self) -> list[str]:
        """Files the tissues table implies but that are not on disk (e.g. a partial copy made by ``fetch``).

        - a modality folder, once, when it is absent (instead of each of its images);
        - a resolution folder (``<modality>/<res>/``) that ``mpp_<modality>`` of the tissues table
          names but that was not copied (a copy of a coarser resolution only);
        - images of listed tissues absent at a stored resolution;
        - masks: the tissue masks of each stored image (a whole ``tissue_masks/`` folder once), and,
          when there is a cells table, the instance masks of the tissues that have cells (a whole
          ``instances/`` folder once);
        - ``cells.parquet`` when instance masks exist without it.
        """
        out: list[str] = []
        stored: dict[float, set[str]] = {}  # resolution -> tissues with an image there
        for modality, group in self.tissues.groupby("modality", sort=True):
            modality = str(modality)
            try:
                mdir = self.paths.modality_dir(modality)
            except LayoutNameError:
                continue
            if not is_dir(mdir):
                out.append(self._relative(mdir) + "/")
                continue
            if layout.is_multiplex(modality):
                for table in (self.paths.channels(modality), self.paths.channels_per_tissue(modality)):
                    if not is_file(table):
                        out.append(self._relative(table))
            resolutions = self.resolutions(modality)
            column = f"mpp_{modality}"
            stated = pd.to_numeric(group[column], errors="coerce").dropna() if column in group else pd.Series([])
            for mpp in sorted({float(v) for v in stated} - set(resolutions)):
                out.append(self._relative(self.paths.resolution_dir(modality, mpp)) + "/")
            for mpp in resolutions:
                present = set(self.image_tissue_ids(modality, mpp))
                stored.setdefault(mpp, set()).update(present)
                for tid in group["tissue_id"].dropna().astype(str):
                    if tid not in present:
                        out.append(self._relative(self.paths.image(modality, mpp, tid)))
        out += self._missing_masks(stored)
        return out

    def _missing_masks(self, stored: dict[float, set[str]]) -> list[str]:
        """The masks :attr:`missing` lists (``stored``: the tissues with an image, per resolution)."""
        out: list[str] = []
        for mpp, tids in sorted(stored.items()):
            out += self._missing_in(self.paths.tissue_masks_dir(mpp), tids)
        mask_res = self.mask_resolutions()
        finest = mask_res[0] if mask_res else min(stored, default=None)
        if finest is not None and is_file(self.paths.cells):
            # dropna: a missing id is the validator's to report (pandas 3 keeps NaN through astype(str))
            ids = read_table(self.paths.cells, columns=["tissue_id"])["tissue_id"].dropna()
            with_cells = set(ids.astype(str).unique())
            out += self._missing_in(self.paths.instance_masks_dir(finest), with_cells)
        elif finest is not None and is_dir(self.paths.instance_masks_dir(finest)):
            out.append(self._relative(self.paths.cells))
        return out

    def _missing_in(self, folder: Path, tissue_ids: set[str]) -> list[str]:
        """``folder/`` when it is absent, else the masks of ``tissue_ids`` that are not in it."""
        if not tissue_ids:
            return []
        where = self._relative(folder)
        if not is_dir(folder):
            return [where + "/"]
        present = set(_listdir(folder))
        names = (f"{t}{layout.MASK_SUFFIX}" for t in sorted(tissue_ids))
        return [f"{where}/{n}" for n in names if n not in present]

    @property
    def leftover_temporary_files(self) -> list[str]:
        """Temporary names left by an interrupted write (top two levels only; cheap)."""
        out: list[str] = []
        if self.remote:
            return out  # writers never write into a remote cohort, so none of their leftovers are there
        for base in [self.path, *(self.path / n for n in _listdir(self.path))]:
            try:
                names = os.listdir(base)
            except (NotADirectoryError, FileNotFoundError):
                continue
            out.extend(self._relative(base / n) for n in names if is_temporary(n))
        return out

    # ---------------------------------------------------------------------------------------------

    def summary(self) -> dict:
        """A JSON-serialisable summary: tissues, modalities, channels, resolutions, cells, what is missing."""
        info: dict = {
            "dataset": self.dataset,
            "path": display_location(self.path),
            "n_tissues": len(self.tissue_ids()),
            "modalities": {},
            "mask_resolutions": self.mask_resolutions(),
            "tasks": self.tasks() if self.mask_resolutions() else [],
            "n_cells": None,
            "missing": self.missing,
        }
        for m in self.modalities:
            entry: dict = {"n_tissues": len(self.tissue_ids(m)), "resolutions": self.resolutions(m)}
            if layout.is_multiplex(m) and is_file(self.paths.channels(m)):
                entry["n_channels"] = len(self.panel(m))
                entry["channels"] = self.panel(m)
            info["modalities"][m] = entry
        if is_file(self.paths.cells):
            info["n_cells"] = parquet_num_rows(self.paths.cells)
        return info

    def __repr__(self) -> str:
        return (
            f"Cohort({self.dataset!r}, tissues={len(self.tissue_ids())}, modalities={self.modalities}, "
            f"resolutions={self.resolutions()})"
        )


def _level_files(group_file: str, raw: bytes | None) -> list[str]:
    """The level ``zarr.json`` files (relative, like ``group_file``) that an image's group ``zarr.json`` names.

    Empty when the group holds them (consolidated metadata), is missing or is malformed (opening the
    image reports it, naming the file).

    >>> group = {"attributes": {"ome": {"multiscales": [{"datasets": [{"path": "0"}, {"path": "1"}]}]}}}
    >>> _level_files("x.ome.zarr/zarr.json", json.dumps(group).encode())
    ['x.ome.zarr/0/zarr.json', 'x.ome.zarr/1/zarr.json']
    """
    try:
        group = json.loads(raw) if raw else {}
        datasets = group["attributes"]["ome"]["multiscales"][0]["datasets"] if raw else []
        paths = [str(d["path"]) for d in datasets]
    except (ValueError, KeyError, TypeError, IndexError):
        return []
    if consolidated_levels(group, paths) is not None:
        return []  # the group's zarr.json holds the levels' metadata
    image = group_file.removesuffix("zarr.json")
    return [f"{image}{lp}/zarr.json" for lp in paths if lp.isdigit()]


def open_cohort(
    cohort: str | os.PathLike[str] | Cohort,
    *,
    datasets_dir: str | Path | None = None,
    on_mismatch: OnMismatch | None = None,
    storage_options: dict[str, Any] | None = None,
) -> Cohort:
    """Open a spora cohort; reads ``tissues.parquet`` and folder listings only, never a pixel.

    The one way to open a cohort: every entry point (``to_spatialdata``, ``compute_*``, ``TileDataset``,
    the CLI) goes through it, so each accepts the same three spellings.

    Parameters
    ----------
    cohort
        The cohort folder (``.../<dataset>``), a remote location (``s3://bucket/prefix/<dataset>``,
        ``https://.../<dataset>``, an rclone ``remote:bucket/prefix/<dataset>``), a dataset key
        (``"jackson2020single"``) or an alias (``"jackson2020"``) found under
        ``$SPORA_DATASETS_DIR`` or at the registry's hosted location (see
        :func:`spora_sd.resolve_cohort`), or an already opened :class:`Cohort` (returned as is).
    datasets_dir
        Folder (or URL) to look up keys and aliases in, instead of ``$SPORA_DATASETS_DIR``.
    on_mismatch
        What reading an image does when its OME metadata contradicts the cohort's tables (channel
        names and order, from ``channels.parquet`` and ``channels_per_tissue.parquet``) or its
        resolution folder (the level-0 scale and unit): ``"raise"`` a
        :class:`~spora_sd.errors.CohortFormatError` (the default), or ``"warn"`` and read it with the
        tables' names, to rescue a cohort whose image metadata is known to be wrong. ``None`` keeps
        the setting of an opened :class:`Cohort` (``"raise"`` for a new one).
    storage_options
        Options of the remote filesystem (s3fs or fsspec's HTTP), e.g. ``{"key": ..., "secret": ...,
        "client_kwargs": {"endpoint_url": ...}}``; they win over the AWS variables and the rclone
        remote's settings (see :func:`spora_sd.io.location.resolve_location`). Never shown in messages.

    Remote cohorts read the same files the same way: tables through pyarrow's filesystem layer,
    masks with range requests, images through Zarr's ``FsspecStore``; see ``docs/remote.md``.

    Raises
    ------
    CohortNotFoundError
        When no such folder exists; the message says where it looked and how to get the cohort.

    Examples
    --------
    >>> import spora_sd, tempfile
    >>> root = spora_sd.make_synthetic_cohort(tempfile.mkdtemp(), n_tissues=2, image_size=128, n_cells=20)
    >>> spora_sd.open_cohort(root).dataset
    'synthetic2025cohort'
    >>> spora_sd.open_cohort("synthetic2025cohort", datasets_dir=root.parent).path == root
    True
    """
    if on_mismatch is not None:
        _check_on_mismatch(on_mismatch)
    if isinstance(cohort, Cohort):
        if on_mismatch is None or on_mismatch == cohort.on_mismatch:
            return cohort
        other = copy.copy(cohort)  # the same tables, another policy; the caller's cohort is left as it is
        other.on_mismatch = on_mismatch
        return other
    from spora_sd.datasets.registry import resolve_cohort

    try:
        path = resolve_cohort(cohort, datasets_dir=datasets_dir, storage_options=storage_options)
    except CohortNotFoundError:
        # Where the OS has no atomic exchange, a crash between the two renames of a replacement leaves
        # the complete new cohort staged next to its folder: move it in (io.atomic.recover), then retry.
        if not isinstance(cohort, str | os.PathLike) or (isinstance(cohort, str) and is_remote(cohort)):
            raise
        if not recover(Path(os.fspath(cohort)).expanduser()):
            raise
        path = resolve_cohort(cohort, datasets_dir=datasets_dir, storage_options=storage_options)
    return Cohort(path, on_mismatch=on_mismatch or "raise")
