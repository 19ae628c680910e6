"""A spora cohort as a :class:`spatialdata.SpatialData` object: lazy pixels, squidpy-ready tables.

==========================  ==================================================================
cohort                      SpatialData
==========================  ==================================================================
tissue                      coordinate system named by the ``tissue_id``, in micrometers
``<m>/<res>/images/<t>``    image ``<t>__<m>``: ``Image2DModel``, dims ``c, y, x``, ``c`` = the
                            tissue's channel names, lazy dask over the Zarr arrays, stored
                            pyramid levels as a multiscale image (``scale0``, ``scale1``, ...)
``instances/<t>.npz``       labels ``<t>__cells`` (instance mask; lazy, read on first compute)
``tissue_masks/<t>.npz``    labels ``<t>__tissue``
``<task>/<t>.npz``          labels ``<t>__<task>``; category names in the element's
                            ``attrs["spora"]`` and in ``sdata.attrs["spora"]``
``cells.parquet``           table ``cells`` annotating the ``<t>__cells`` labels
                            (:mod:`spora_sd.convert.cell_table`)
``tissues.parquet``         table ``tissues`` (one row per tissue and modality), and/or its
                            tissue-level columns joined into the cell table's ``obs``
dataset metadata            ``sdata.attrs`` (below)
==========================  ==================================================================

Every element of a tissue carries ``Scale([mpp, mpp], axes=("y", "x"))`` into the tissue's coordinate
system, so registered modalities (H&E and IMC of one tissue) overlay, and extents, bounding-box
queries and squidpy distances are in micrometers. There is no ``global`` coordinate system: tissues
are separate slides, and putting them in one space would invite distances between them.

``sdata.attrs`` (JSON only, so ``sdata.write`` keeps it)::

    dataset, title, citation, doi, modalities, resolution
    bio:  {tissue, tissue_ontology_id, disease, disease_ontology_id, organism, organism_ontology_id}
    tech: {assay, assay_ontology_id}
    spora: {format_version, dataset, elements (the reverse map), tables, label_encoders, channels, ...}

``spora`` is a versioned format (``format_version``) with one owner, :mod:`spora_sd.convert.attrs`, which
builds, reads, validates and upgrades it and documents its keys (JSON Schema:
``schemas/spora_attrs.schema.json``).

``title``, ``citation``, ``doi``, ``bio`` and ``tech`` come from the registry
(:mod:`spora_sd.datasets.registry`) when the dataset key is known, updated by the ``bio`` / ``tech``
arguments; for other cohorts they are present only when given as arguments.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import hashlib
import logging
import os
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import dask
import dask.array as da
import numpy as np
import pandas as pd
from dask.utils import parse_bytes

from spora_sd import layout
from spora_sd._version import __version__
from spora_sd.convert import element_names
from spora_sd.convert.attrs import ElementEntry, FrameSpec, build_spora_attrs, json_safe, set_label_attrs
from spora_sd.convert.cell_table import build_cell_table
from spora_sd.convert.store import write_spatialdata
from spora_sd.errors import CohortFormatError, CohortNotFoundError, InvalidArgumentError, TargetExistsError
from spora_sd.io.cohort import Cohort, open_cohort
from spora_sd.io.images import open_image_levels
from spora_sd.io.masks import read_mask, read_mask_shape
from spora_sd.io.memory import returns_free_memory
from spora_sd.io.remote import listdir

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData
    from xarray import Coordinates, DataArray, DataTree

__all__ = ["ELEMENTS", "convert", "to_spatialdata"]

logger = logging.getLogger(__name__)

#: Kinds of elements :func:`to_spatialdata` can make.
ELEMENTS = ("images", "labels", "tables")
TissueMetadata = Literal["table", "obs", "both"] | None
_TISSUE_METADATA = ("table", "obs", "both", None)


# --------------------------------------------------------------------------------------------------
# what to convert


@dataclass
class _Selection:
    cohort: Cohort
    tissue_ids: list[str]  # sorted
    modalities: list[str]
    image_mpp: dict[str, float]
    cell_mask_mpp: float | None
    tissue_mask_mpp: float | None
    tasks: list[str] = field(default_factory=list)


def _modality_hint(cohort: Cohort, modality: str) -> str:
    from spora_sd.datasets.registry import cohorts, rclone_command

    if cohort.dataset in cohorts:
        return f"; copy it with: {rclone_command(cohort.dataset, cohort.path, [modality])}"
    return ""


def _select(
    cohort: Cohort,
    tissues: Sequence[str] | None,
    modalities: Sequence[str] | None,
    resolution: float | None,
) -> _Selection:
    on_disk = cohort.modalities
    if modalities is None:
        chosen = list(on_disk)
        listed = sorted(set(cohort.tissues["modality"].astype(str)) - set(on_disk))
        if listed:
            logger.warning("%s: modality folder(s) %s are not on disk (partial copy?): skipped", cohort.path, listed)
    else:
        chosen = list(dict.fromkeys(layout.check_modality(m) for m in modalities))
        for m in chosen:
            if m not in on_disk:
                raise CohortNotFoundError(
                    f"{cohort.paths.modality_dir(m)}: modality {m!r} is not on disk "
                    f"(found: {', '.join(on_disk) or 'none'}){_modality_hint(cohort, m)}"
                )
    image_mpp: dict[str, float] = {}
    for m in chosen:
        available = cohort.resolutions(m)
        if resolution is None:
            if not available:
                logger.warning("%s: no resolution folder; modality %s skipped", cohort.paths.modality_dir(m), m)
                continue
            image_mpp[m] = available[0]
        elif float(resolution) in available:
            image_mpp[m] = float(resolution)
        else:
            raise CohortNotFoundError(
                f"{cohort.paths.resolution_dir(m, resolution)}: no {m} images at {resolution} mpp "
                f"(available: {available or 'none'})"
            )
    chosen = [m for m in chosen if m in image_mpp]

    rows = cohort.tissues[cohort.tissues["modality"].astype(str).isin(chosen)]
    known = set(rows["tissue_id"].astype(str))
    if tissues is None:
        tissue_ids = sorted(known)
    else:
        requested = list(dict.fromkeys(str(t) for t in tissues))
        unknown = [t for t in requested if t not in known]
        if unknown:
            raise InvalidArgumentError(
                f"{cohort.paths.tissues}: no row for tissue(s) {unknown[:5]} with modality in {chosen} "
                f"({len(unknown)} unknown); known tissues are e.g. {sorted(known)[:5]} ({len(known)} in all)"
            )
        tissue_ids = sorted(requested)

    def mask_mpp(folder: Callable[[float], Path]) -> float | None:
        """``resolution`` when these masks are stored there, else the finest resolution that has them."""
        found = [r for r in cohort.mask_resolutions() if folder(r).is_dir()]
        if resolution is not None and float(resolution) in found:
            return float(resolution)
        return found[0] if found else None

    cell_mpp = mask_mpp(cohort.paths.instance_masks_dir)
    tissue_mpp = mask_mpp(cohort.paths.tissue_masks_dir)
    tasks = cohort.tasks(cell_mpp) if cell_mpp is not None else []
    return _Selection(cohort, tissue_ids, chosen, image_mpp, cell_mpp, tissue_mpp, tasks)


# --------------------------------------------------------------------------------------------------
# elements


def _pixel_centres(full: int, n: int) -> np.ndarray:
    """Coordinates of the ``n`` pixel centres of a level whose full-resolution size is ``full``.

    The formula of ``spatialdata.transformations._utils.compute_coordinates`` (so that an element
    read back with ``spatialdata.read_zarr`` is identical), without its per-element ``assign_coords``.
    """
    return np.linspace(0, full, n + 1)[:-1] + full / n / 2


@functools.lru_cache(maxsize=4096)
def _coordinates(
    dims: tuple[str, ...], full: tuple[int, ...], shape: tuple[int, ...], channels: tuple[str, ...] | None
) -> Coordinates:
    """The coordinates of a level of shape ``shape`` of an element of full-resolution shape ``full``.

    Made once per distinct shape and shared (read-only) by the elements that have it: a tissue's
    masks and its image share theirs, and building the indexes of new coordinates is most of the
    cost of an xarray object (0.4 of 0.6 ms).
    """
    from xarray import Coordinates

    values: dict[str, Any] = {d: _pixel_centres(f, n) for d, f, n in zip(dims, full, shape, strict=True) if d != "c"}
    if channels is not None:
        values["c"] = list(channels)
    return Coordinates(values)


@functools.lru_cache(maxsize=1024)
def _template(dims: tuple[str, ...], shape: tuple[int, ...], channels: tuple[str, ...] | None) -> DataArray:
    """A single-level element of this shape over a placeholder (a zero-stride array: no memory).

    Made once per distinct shape: the labels elements of a tissue (cells, tissue, one per task) share
    it. :func:`_raster` copies it around each element's array (``copy(deep=False, data=...)``); the
    copy shares the template's coordinate indexes (immutable), where ``DataArray(..., coords=...)``
    deep-copies them: 0.5 ms of the 0.55 ms a labels element took.
    """
    from xarray import DataArray

    placeholder = np.broadcast_to(np.uint8(0), shape)
    return DataArray(placeholder, dims=dims, coords=_coordinates(dims, shape, shape, channels), name="image")


def _raster(
    levels: Sequence[da.Array], dims: tuple[str, ...], mpp: float, tissue_id: str, channels: list[str] | None = None
) -> DataArray | DataTree:
    """An image (``dims = c, y, x``) or labels (``y, x``) element over lazy arrays, in µm.

    Not validated here: ``SpatialData(images=..., labels=...)`` validates every element it is given
    (``Image2DModel`` / ``Labels2DModel``); a second pass cost 0.7 ms per multiscale image. A
    single-level element is a copy of the template of its shape (:func:`_template`). A multiscale
    element is built from one ``Dataset`` per level (``DataTree.from_dict`` of ``DataArray``
    objects makes the same tree in 25 % more time). The transformations are put in each level's
    attributes (:func:`_level_transformations`), not with ``set_transformation`` afterwards, which
    copies the tree's nodes: 1 ms per image.
    """
    from spatialdata.models._utils import TRANSFORM_KEY  # "transform": where get_transformation looks
    from xarray import Dataset, DataTree

    names = None if channels is None else tuple(channels)
    shapes = [tuple(int(s) for s in level.shape) for level in levels]
    transforms = _level_transformations(dims, shapes, mpp, tissue_id)
    if len(levels) == 1:
        element = _template(dims, shapes[0], names).copy(deep=False, data=levels[0])
        element.attrs = {TRANSFORM_KEY: transforms[0]}
        return element
    return DataTree(
        children={
            f"scale{i}": DataTree(
                Dataset(
                    {"image": (dims, level, {TRANSFORM_KEY: t})}, coords=_coordinates(dims, shapes[0], shape, names)
                )
            )
            for i, (level, shape, t) in enumerate(zip(levels, shapes, transforms, strict=True))
        }
    )


def _level_transformations(
    dims: tuple[str, ...], shapes: Sequence[tuple[int, ...]], mpp: float, tissue_id: str
) -> list[dict[str, Any]]:
    """The transformations of each level, as ``set_transformation(element, {tissue_id: Scale(mpp)}, set_all=True)`` sets them.

    Level 0: ``Scale([mpp, mpp])`` (not Identity: pixel (i, j) of level 0 covers [i, i + 1) x
    [j, j + 1) * mpp micrometers). Level ``i``: ``Sequence([Scale(shape_0 / shape_i), Scale([mpp, mpp])])``
    over the spatial axes, spatialdata's own formula for multiscale elements.

    >>> _level_transformations(("c", "y", "x"), [(3, 8, 8), (3, 4, 4)], 0.5, "t1")[1]["t1"].transformations[0].scale
    array([2., 2.])
    """
    from spatialdata.transformations import Scale, Sequence

    spatial = [i for i, d in enumerate(dims) if d != "c"]
    axes = tuple(dims[i] for i in spatial)
    base = Scale([mpp, mpp], axes=("y", "x"))
    out: list[dict[str, Any]] = [{tissue_id: base}]
    for shape in shapes[1:]:
        factors = np.array(shapes[0]) / np.array(shape)
        out.append({tissue_id: Sequence([Scale([factors[i] for i in spatial], axes=axes), base])})
    return out


def _lazy_mask(path: Path) -> da.Array:
    """A one-chunk dask array over an ``.npz`` mask: the header is read now, the pixels on first compute.

    An ``.npz`` member cannot be read in parts, so the whole mask is one chunk; the task name is
    made from the path, size and modification time (cheaper than dask's tokenization of a delayed call).
    """
    shape, dtype = read_mask_shape(path)
    if len(shape) != 2:
        raise CohortFormatError(path, "mask.shape", f"a mask must be 2-D, got shape {shape}")
    stat = path.stat()
    name = "spora-mask-" + hashlib.sha1(f"{path}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()
    graph = {(name, 0, 0): (read_mask, str(path))}
    return da.Array(graph, name, chunks=tuple((int(s),) for s in shape), dtype=dtype)


def _channels_by_tissue(cohort: Cohort, modality: str, tissue_ids: Sequence[str]) -> dict[str, list[str]]:
    """The channels of each tissue's image (``Cohort.tissue_channels`` for many tissues at once)."""
    panel = cohort.panel(modality)
    if not layout.is_multiplex(modality):
        return {t: list(panel) for t in tissue_ids}
    cpt = cohort.channels_per_tissue(modality)
    duplicated = cpt.index[cpt.index.duplicated()]
    if len(duplicated):
        raise CohortFormatError(
            cohort.paths.channels_per_tissue(modality),
            "table.key.duplicate",
            f"tissue ids with more than one row: {sorted(map(str, set(duplicated)))[:5]}",
        )
    missing = [t for t in tissue_ids if t not in cpt.index]
    if missing:
        raise CohortFormatError(
            cohort.paths.channels_per_tissue(modality), "ids.inconsistent", f"no row for tissue(s) {missing[:5]}"
        )
    measured = cpt.reindex(index=list(tissue_ids), columns=panel, fill_value=False).to_numpy(dtype=bool)
    return {t: [c for c, m in zip(panel, row, strict=True) if m] for t, row in zip(tissue_ids, measured, strict=True)}


def _relative(cohort: Cohort, path: Path) -> str:
    if not cohort.remote:
        return path.relative_to(cohort.path).as_posix()
    # a remote relative_to costs milliseconds (UPath): strings, for thousands of elements
    return str(path).removeprefix(str(cohort.path).rstrip("/") + "/")


def _listing(folder: Path, suffix: str) -> set[str]:
    # local or remote (one cached listing request); hidden names are left out
    return {n.removesuffix(suffix) for n in listdir(folder) if n.endswith(suffix)}


def _images(sel: _Selection, elements: dict[str, ElementEntry]) -> dict[str, DataArray | DataTree]:
    cohort, out = sel.cohort, {}
    # dask chunks of whole 256 x 256 Zarr chunks up to dask's chunk-size setting (128 MiB): a random
    # crop is then mostly one task and one Zarr call, which keeps crops close to raw Zarr reads
    chunk_bytes = parse_bytes(dask.config.get("array.chunk-size"))
    for m in sel.modalities:
        mpp = sel.image_mpp[m]
        on_disk = _listing(cohort.paths.images_dir(m, mpp), layout.IMAGE_SUFFIX)
        wanted = set(cohort.tissue_ids(m))
        absent = [t for t in sel.tissue_ids if t in wanted and t not in on_disk]
        if absent:
            logger.warning(
                "%s: %d image(s) listed in tissues.parquet are missing (e.g. %s); skipped",
                cohort.paths.images_dir(m, mpp),
                len(absent),
                absent[0],
            )
        present = [t for t in sel.tissue_ids if t in wanted and t in on_disk]
        channels_of = _channels_by_tissue(cohort, m, present)
        # remote: every zarr.json fetched concurrently, in the background; each image below waits for its own
        cohort.prefetch_images(m, mpp, present, wait=False)
        for tissue_id in present:
            path = cohort.paths.image(m, mpp, tissue_id)
            channels = channels_of[tissue_id]
            # the OME metadata must agree with the tables (channel names and order) and the folder (mpp)
            levels = open_image_levels(
                path,
                chunk_bytes=chunk_bytes,
                mpp=mpp,
                channel_names=channels if layout.is_multiplex(m) or m == layout.HE else None,
                on_mismatch=cohort.on_mismatch,
                cache=cohort._zarr_json,
            )
            if len(channels) != levels[0].shape[0]:
                raise CohortFormatError(
                    path,
                    "image.channels",
                    f"{levels[0].shape[0]} channels, but {len(channels)} are listed for {tissue_id} "
                    f"({layout.CHANNELS_PER_TISSUE_FILE if layout.is_multiplex(m) else m})",
                )
            name = element_names.image_name(tissue_id, m)
            out[name] = _raster(levels, ("c", "y", "x"), mpp, tissue_id, channels)
            elements[name] = ElementEntry("image", _relative(cohort, path), tissue_id, mpp, modality=m)
    return out


def _labels(sel: _Selection, elements: dict[str, ElementEntry], encoders: dict[str, dict[str, int]]) -> dict[str, Any]:
    cohort, out = sel.cohort, {}
    kinds: list[tuple[str, Path, float, str | None]] = []  # (labels part, folder, mpp, task)
    if sel.cell_mask_mpp is not None:
        kinds.append(
            (element_names.CELLS_LABELS, cohort.paths.instance_masks_dir(sel.cell_mask_mpp), sel.cell_mask_mpp, None)
        )
        for task in sel.tasks:
            try:
                element_names.check_task_name(task)
            except ValueError:
                logger.warning("%s: task name %r clashes with element names; skipped", cohort.path, task)
                continue
            kinds.append((task, cohort.paths.task_dir(sel.cell_mask_mpp, task), sel.cell_mask_mpp, task))
            encoders[task] = cohort.label_encoder(task, sel.cell_mask_mpp)
    if sel.tissue_mask_mpp is not None:
        kinds.append(
            (element_names.TISSUE_LABELS, cohort.paths.tissue_masks_dir(sel.tissue_mask_mpp), sel.tissue_mask_mpp, None)
        )
    for part, folder, mpp, task in kinds:
        on_disk = _listing(folder, layout.MASK_SUFFIX)
        for tissue_id in sel.tissue_ids:
            if tissue_id not in on_disk:
                continue
            path = folder / f"{tissue_id}{layout.MASK_SUFFIX}"
            name = element_names.labels_name(tissue_id, part)
            element = _raster([_lazy_mask(path)], ("y", "x"), mpp, tissue_id)
            kind = element_names.parse_element_name(name).kind
            if task is not None:
                set_label_attrs(element, task, encoders[task])
            out[name] = element
            elements[name] = ElementEntry(kind, _relative(cohort, path), tissue_id, mpp, task=task)
    return out


def _categorical_obs(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    for column in frame.columns:
        if frame[column].dtype == object or pd.api.types.is_string_dtype(frame[column].dtype):
            frame[column] = frame[column].astype("category")
    return frame


def _tissues_table(rows: pd.DataFrame) -> AnnData:
    from anndata import AnnData
    from spatialdata.models import TableModel

    obs = _categorical_obs(rows.reset_index(drop=True))
    obs.index = pd.Index((rows["tissue_id"].astype(str) + element_names.SEP + rows["modality"].astype(str)).to_numpy())
    return TableModel.validate(AnnData(obs=obs))


# --------------------------------------------------------------------------------------------------
# attrs


def _dtypes(frame: pd.DataFrame) -> dict[str, str]:
    return {str(c): str(t) for c, t in frame.dtypes.items()}


def _cells_frame(cohort: Cohort) -> pd.DataFrame:
    """An empty ``cells.parquet`` with its columns and dtypes (read from the schema, not the rows)."""
    from spora_sd.io.tables import open_parquet

    return open_parquet(cohort.paths.cells).schema_arrow.empty_table().to_pandas()  # local or remote


def _attrs(
    sel: _Selection,
    resolution: float | None,
    elements: dict[str, ElementEntry],
    encoders: dict[str, dict[str, int]],
    tables: dict[str, Any],
    tissue_rows: pd.DataFrame,
    tissue_metadata: TissueMetadata,
    bio: Mapping[str, str] | None,
    tech: Mapping[str, str] | None,
) -> dict[str, Any]:
    from spora_sd.datasets.registry import cohorts

    cohort = sel.cohort
    attrs: dict[str, Any] = {"dataset": cohort.dataset}
    info = cohorts.get(cohort.dataset)
    if info is not None:
        attrs.update({"title": info.title, "citation": info.citation, "doi": info.doi})
    attrs.update({"modalities": list(sel.modalities), "resolution": resolution})
    bio_attrs = {**(info.bio() if info is not None else {}), **dict(bio or {})}
    tech_attrs = {**(info.tech() if info is not None else {}), **dict(tech or {})}
    if bio_attrs:
        attrs["bio"] = {str(k): str(v) for k, v in bio_attrs.items()}
    if tech_attrs:
        attrs["tech"] = {str(k): str(v) for k, v in tech_attrs.items()}

    # Category order and derived-product recipes, for from_spatialdata to write the cohort back exactly.
    from spora_sd.convert.plan_from_attrs import reverse_map_extras

    extras = reverse_map_extras(cohort)
    multiplex = [m for m in sel.modalities if layout.is_multiplex(m)]
    channels: dict[str, FrameSpec] = {}
    channels_per_tissue: dict[str, dict[str, list[str]]] = {}
    for m in multiplex:
        frame = cohort.channels(m)
        channels[m] = FrameSpec(
            columns=list(map(str, frame.columns)),
            dtypes=_dtypes(frame),
            file=_relative(cohort, cohort.paths.channels(m)),
            records=frame.to_dict("records"),
        )
        with_modality = set(cohort.tissue_ids(m))
        channels_per_tissue[m] = _channels_by_tissue(cohort, m, [t for t in sel.tissue_ids if t in with_modality])
    table_files: dict[str, str] = {}
    cells: FrameSpec | None = None
    if element_names.CELL_TABLE in tables:
        empty = _cells_frame(cohort)
        cells = FrameSpec(
            columns=list(map(str, empty.columns)),
            dtypes=_dtypes(empty),
            file=_relative(cohort, cohort.paths.cells),
            categories=extras.cell_categories,
        )
        table_files[element_names.CELL_TABLE] = _relative(cohort, cohort.paths.cells)
    if element_names.TISSUE_TABLE in tables:
        table_files[element_names.TISSUE_TABLE] = _relative(cohort, cohort.paths.tissues)
    spora = build_spora_attrs(
        dataset=cohort.dataset,
        modalities=sel.modalities,
        elements=elements,
        resolution=resolution,
        resolutions=sel.image_mpp,
        mask_resolution=sel.cell_mask_mpp,
        tissue_mask_resolution=sel.tissue_mask_mpp,
        tables=table_files,
        label_encoders=encoders,
        channels=channels,
        channels_per_tissue=channels_per_tissue,
        tissues=FrameSpec(
            columns=list(map(str, cohort.tissues.columns)),
            dtypes=_dtypes(cohort.tissues),
            file=_relative(cohort, cohort.paths.tissues),
            categories=extras.tissue_categories,
        ),
        tissue_rows=len(tissue_rows),
        tissue_metadata=tissue_metadata,
        cells=cells,
        cell_intensities={m: ("table" if cohort.intensity_columns(m) else "computed") for m in multiplex}
        if cells is not None
        else None,
        derived=extras.derived,
        spora_sd_version=__version__,
    )
    attrs = json_safe(attrs)
    spora.write_to(attrs)
    return attrs


# --------------------------------------------------------------------------------------------------


@returns_free_memory
def to_spatialdata(
    cohort: str | os.PathLike[str] | Cohort,
    *,
    tissues: Sequence[str] | None = None,
    modalities: Sequence[str] | None = None,
    resolution: float | None = None,
    elements: Sequence[str] = ELEMENTS,
    tissue_metadata: TissueMetadata = "table",
    bio: Mapping[str, str] | None = None,
    tech: Mapping[str, str] | None = None,
    progress: bool = False,
    on_mismatch: Literal["raise", "warn"] | None = None,
    storage_options: dict[str, Any] | None = None,
) -> SpatialData:
    """A spora cohort as a SpatialData object; pixels stay on disk until computed.

    Parameters
    ----------
    cohort
        A cohort folder, a dataset key (``"jackson2020single"``), an alias (``"jackson2020"``; both
        looked for under ``$SPORA_DATASETS_DIR``) or an opened :class:`~spora_sd.io.cohort.Cohort`.
    tissues
        Tissue ids to convert (default: every tissue of the selected modalities).
    modalities
        Modalities to convert (default: every modality folder on disk).
    resolution
        Microns per pixel of the images (default: the finest of each modality). Masks are taken at
        this resolution when stored there, else at the finest resolution they are stored at (cell
        masks exist only at the finest); their own ``Scale`` keeps everything aligned in µm.
    elements
        Which kinds of elements to make: any of ``"images"``, ``"labels"``, ``"tables"``.
    tissue_metadata
        Where ``tissues.parquet`` goes: ``"table"`` (a ``tissues`` table), ``"obs"`` (its
        tissue-level columns joined into the cell table's ``obs``), ``"both"``, or ``None``.
    bio, tech
        Ontology-backed labels for ``sdata.attrs["bio"]`` / ``["tech"]`` (e.g. ``{"tissue":
        "breast", "tissue_ontology_id": "UBERON:0000310"}``); they update the registry's values.
    progress
        Show a progress bar while the cell table is built.
    on_mismatch
        When an image's OME metadata contradicts the tables (``omero`` channel labels vs
        ``channels.parquet`` and ``channels_per_tissue.parquet``) or its resolution folder (level-0
        scale and unit vs the folder's mpp): ``"raise"`` a :class:`~spora_sd.errors.CohortFormatError`,
        or ``"warn"`` and name the channels as the tables do (to rescue a cohort whose image metadata
        is known wrong). Default: the opened cohort's setting (``"raise"``; see :func:`spora_sd.open_cohort`).
    storage_options
        Options of the remote filesystem when ``cohort`` is remote (``s3://``, ``https://``, an
        rclone remote, or a registry cohort read from its hosted location); see :func:`spora_sd.open_cohort`.

    Returns
    -------
    spatialdata.SpatialData
        Images, labels and tables named as in :mod:`spora_sd.convert.element_names`, one coordinate system per
        tissue, and ``attrs`` as described in this module's docstring.

    Raises
    ------
    CohortNotFoundError
        When the cohort, a requested modality or resolution is not on disk (with the rclone
        command for a known cohort).
    CohortFormatError
        When a file breaks the layout (e.g. an image's channel count differs from its row of
        ``channels_per_tissue.parquet``, or its ``omero`` channel labels differ from the tables).
        Pixels are read later: computing a chunk whose shard file is missing or corrupt raises it too.

    Examples
    --------
    >>> import spora_sd, tempfile
    >>> root = spora_sd.make_synthetic_cohort(tempfile.mkdtemp(), n_tissues=2, image_size=64, n_cells=10)
    >>> sdata = spora_sd.to_spatialdata(root, modalities=["imc"], elements=("images",))
    >>> tid = sorted(sdata.coordinate_systems)[0]
    >>> sdata.images[f"{tid}__imc"].dims
    ('c', 'y', 'x')
    """
    from spatialdata import SpatialData

    unknown = [e for e in elements if e not in ELEMENTS]
    if unknown:
        raise InvalidArgumentError(f"unknown element kind(s) {unknown}; expected any of {ELEMENTS}")
    if tissue_metadata not in _TISSUE_METADATA:
        raise InvalidArgumentError(f"tissue_metadata must be one of {_TISSUE_METADATA}, not {tissue_metadata!r}")
    c = open_cohort(cohort, on_mismatch=on_mismatch, storage_options=storage_options)
    sel = _select(c, tissues, modalities, resolution)
    element_map: dict[str, dict] = {}
    encoders: dict[str, dict[str, int]] = {}
    with _gc_paused():  # thousands of small xarray objects
        try:
            images = _images(sel, element_map) if "images" in elements else {}
            labels = _labels(sel, element_map, encoders) if "labels" in elements else {}
        finally:
            # the shared coordinates live as long as the elements that use them, not as long as the
            # process: cached, they kept thousands of small objects scattered over the allocator's
            # arenas, which then stay in the RSS after the SpatialData is dropped
            _coordinates.cache_clear()
            _template.cache_clear()
    if "labels" not in elements and sel.cell_mask_mpp is not None:
        encoders = {t: c.label_encoder(t, sel.cell_mask_mpp) for t in sel.tasks}

    tissue_rows = c.tissues[
        c.tissues["tissue_id"].astype(str).isin(sel.tissue_ids) & c.tissues["modality"].astype(str).isin(sel.modalities)
    ]
    tables: dict[str, Any] = {}
    if "tables" in elements:
        if c.paths.cells.is_file():
            tables[element_names.CELL_TABLE] = build_cell_table(
                c,
                tissue_ids=sel.tissue_ids,
                modalities=[m for m in sel.modalities if layout.is_multiplex(m)],
                mask_resolution=sel.cell_mask_mpp,
                tissues=tissue_rows if tissue_metadata in ("obs", "both") else None,
                spatial=sel.cell_mask_mpp is not None,
                progress=progress,
            )
        else:
            logger.warning("%s: not found; no cell table", c.paths.cells)
        if tissue_metadata in ("table", "both"):
            tables[element_names.TISSUE_TABLE] = _tissues_table(tissue_rows)
    attrs = _attrs(sel, resolution, element_map, encoders, tables, tissue_rows, tissue_metadata, bio, tech)
    with _gc_paused():
        sdata = SpatialData(attrs=attrs)
        _add_rasters(sdata.images, images)
        _add_rasters(sdata.labels, labels)
    # Asked for: without labels, the cell table still names its labels elements (no warning then).
    _add_tables(sdata, tables, warn_missing="labels" in elements)
    return sdata


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while many long-lived objects are made.

    Each collection walks the objects made since the previous one, and the collections of the older
    generations walk all of them: building the elements of 2,000 tissues (8,000 xarray objects and
    their indexes) spent 2 to 5 s of 25 s in the collector. The objects made here are kept, so there
    is little garbage to wait for; the collector resumes (if it was on) when the block ends.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _add_rasters(container: Any, elements: Mapping[str, DataArray | DataTree]) -> None:
    """Add image or labels elements to ``sdata.images`` / ``sdata.labels``, validating each structure once.

    ``sdata.images[name] = element`` (what ``SpatialData(images=...)`` does) runs the element model's
    ``validate`` on every element: 1 to 2 ms for a multiscale image, 3 to 5 s for the 8,000 elements of
    2,000 tissues, a sixth of ``to_spatialdata``. That validation is structural (dims, a dask array per
    level, ``scale0..`` keys, one data variable, a transformation) and every element here comes out of
    :func:`_raster`, so elements of one structure (type, dims, number of levels) pass or fail it
    together: the first of each goes through spatialdata's check, the others get spatialdata's name
    checks only. The large-chunk warning spatialdata adds is kept for single-chunk masks (the only
    elements whose chunks are not bounded by the dask chunk size).
    """
    from spatialdata import settings
    from spatialdata._core._elements import Elements
    from xarray import DataArray, DataTree

    checked: set[tuple[Any, ...]] = set()
    for name, element in elements.items():
        if isinstance(element, DataTree):
            structure = (DataTree, next(iter(element.children.values()))["image"].dims, len(element.children))
            large = False  # dask chunks of images are bounded by dask's chunk size (_images)
        else:
            structure = (DataArray, element.dims, 1)
            large = element.data.nbytes > settings.large_chunk_threshold_bytes  # may warn: one chunk per mask
        if structure not in checked or large:
            container[name] = element  # the model's full validation
            checked.add(structure)
        else:
            container._check_key(name, container.keys(), container._shared_keys)
            Elements.__setitem__(container, name, element)  # spatialdata's name bookkeeping, no model check


def _add_tables(sdata: SpatialData, tables: Mapping[str, AnnData], *, warn_missing: bool) -> None:
    """Add ``tables`` to ``sdata``: what ``SpatialData(tables=...)`` does, in time linear in the regions.

    spatialdata's constructor checks that every region a table annotates is an element of the object
    with ``SpatialData.get``, which scans every element: O(regions x elements), 1.2 s for the cell
    table of 2,000 tissues (8,000 elements). Here the check is one set look-up per region, with
    spatialdata's warning; ``sdata.tables[name] = table`` validates the table (``TableModel``). The
    instance-key dtype check spatialdata adds is for points and shapes indexed by strings; the
    elements here are rasters.
    """
    from spatialdata.models import TableModel, get_table_keys

    present = set(sdata.images) | set(sdata.labels)
    for name, table in tables.items():
        if warn_missing and TableModel.ATTRS_KEY in table.uns:
            region = get_table_keys(table)[0]
            for r in region if isinstance(region, list) else [region]:
                if r not in present:
                    warnings.warn(
                        f"The table is annotating {r!r}, which is not present in the SpatialData object.",
                        UserWarning,
                        stacklevel=4,  # the caller of to_spatialdata (its returns_free_memory wrapper is a frame)
                    )
        sdata.tables[name] = table


def convert(
    cohort: str | os.PathLike[str] | Cohort,
    out: str | os.PathLike[str],
    *,
    tissues: Sequence[str] | None = None,
    modalities: Sequence[str] | None = None,
    resolution: float | None = None,
    overwrite: bool = False,
    progress: bool = False,
    **kwargs: Any,
) -> Path:
    """:func:`to_spatialdata` then :func:`~spora_sd.convert.store.write_spatialdata`: what ``spora-sd convert`` runs.

    Parameters
    ----------
    cohort
        Cohort folder, dataset key, alias or opened cohort.
    out
        Target ``.zarr`` store.
    tissues, modalities, resolution
        As in :func:`to_spatialdata`.
    overwrite
        Replace an existing store.
    progress
        Progress bars on stderr.
    kwargs
        Passed to :func:`to_spatialdata` (``tissue_metadata``, ``bio``, ``tech``, ``elements``).

    Returns
    -------
    Path
        The written store.

    Examples
    --------
    >>> import spora_sd, tempfile, pathlib
    >>> root = spora_sd.make_synthetic_cohort(tempfile.mkdtemp(), n_tissues=1, image_size=64, n_cells=5)
    >>> convert(root, pathlib.Path(tempfile.mkdtemp()) / "c.zarr").suffix
    '.zarr'
    """
    target = Path(out)
    if target.exists() and not overwrite:
        raise TargetExistsError(f"{target} exists; pass overwrite=True (--overwrite) to replace it")
    sdata = to_spatialdata(
        cohort, tissues=tissues, modalities=modalities, resolution=resolution, progress=progress, **kwargs
    )
    return write_spatialdata(sdata, target, overwrite=overwrite, progress=progress)
