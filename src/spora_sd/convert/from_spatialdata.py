"""SpatialData -> spora cohort: :func:`from_spatialdata`.

The export runs in three steps:

1. **Plan** (in memory, nothing written): from the reverse map that :func:`spora_sd.to_spatialdata`
   leaves in ``sdata.attrs["spora"]`` (:mod:`spora_sd.convert.plan_from_attrs`), or by inference for objects
   made elsewhere, e.g. by ``spatialdata_io.steinbock`` (:mod:`spora_sd.convert.plan_inferred`). Whatever
   cannot be inferred is an :class:`~spora_sd.errors.ExportInputError` here, before any write; it lists
   every problem of every element and table, not only the first.
2. **Stream** the pixels one tissue at a time (images as OME-Zarr v3, masks as ``.npz``): a tissue's
   image is written one row of shards at a time, so memory stays at about two copies of one tissue's
   image at most. With an active ``dask.distributed`` client, tissues are exported in parallel, one
   task per tissue (:mod:`spora_sd.stats.parallel`).
3. **Tables** (tissues, cells, channels, channels per tissue, label encoders), then by default the
   derived products (standardization statistics, tiling).

Everything is written into a hidden sibling folder that is moved into place at the very end, the
content manifest ``metadata/manifest.json`` last (:mod:`spora_sd.io.atomic`, :mod:`spora_sd.io.manifest`):
an interrupted export never leaves a folder that validates, an existing cohort is replaced in one
atomic step, and a second export to the same folder fails at once
(:class:`~spora_sd.errors.TargetLockedError`).

Examples
--------
>>> import numpy as np, spatialdata as sd, tempfile, pathlib
>>> from spatialdata.models import Image2DModel
>>> img = Image2DModel.parse(np.ones((2, 40, 50), "uint16"), dims=("c", "y", "x"), c_coords=["CD3E", "DNA1"])
>>> out = pathlib.Path(tempfile.mkdtemp()) / "demo2025export"
>>> path = from_spatialdata(sd.SpatialData(images={"s1_image": img}), out, mpp=0.5)
>>> import spora_sd
>>> spora_sd.validate(path).ok
True
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np

from spora_sd import layout
from spora_sd.convert.plan import INSTANCES, TISSUE, ExportPlan, Problems, TissuePlan, element_levels
from spora_sd.errors import ExportInputError, LayoutNameError, TargetExistsError
from spora_sd.io.atomic import export_workspace
from spora_sd.io.images import write_image
from spora_sd.io.manifest import write_manifest
from spora_sd.io.masks import write_mask
from spora_sd.io.memory import returns_free_memory
from spora_sd.io.tables import write_table
from spora_sd.layout import CohortPaths
from spora_sd.stats.parallel import active_client, imap_tissues

__all__ = ["build_plan", "from_spatialdata"]

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------
# planning


def _resolve_target(path: str | Path, dataset: str | None) -> tuple[Path, str]:
    """The cohort folder and its dataset key.

    Without ``dataset`` the folder's name is the key. With it, ``path`` is the cohort folder when its
    name is the key, else the datasets root that the cohort folder ``<path>/<dataset>`` goes into.
    """
    path = Path(path).expanduser()
    if dataset is None:
        try:
            return path, layout.check_dataset_key(path.name)
        except LayoutNameError:
            raise ExportInputError(
                f"dataset key missing: the target folder's name {path.name!r} is not a dataset key (lower-case "
                "letters and digits, e.g. 'jackson2020single'); pass dataset=... (spora-sd export --dataset)"
            ) from None
    layout.check_dataset_key(dataset)
    return (path if path.name == dataset else path / dataset), dataset


def build_plan(
    sdata: Any,
    *,
    dataset: str,
    mpp: float | None = None,
    modality: str = "imc",
    patient_key: str | None = None,
) -> ExportPlan:
    """The export plan of ``sdata``: from its spora reverse map when present, else inferred.

    Parameters
    ----------
    sdata
        The SpatialData object.
    dataset, mpp, modality, patient_key
        As for :func:`from_spatialdata`.

    Returns
    -------
    The :class:`~spora_sd.convert.plan.ExportPlan`; nothing is written.

    Examples
    --------
    >>> import numpy as np, spatialdata as sd
    >>> from spatialdata.models import Image2DModel
    >>> img = Image2DModel.parse(np.zeros((1, 8, 8), "uint8"), dims=("c", "y", "x"), c_coords=["DNA1"])
    >>> build_plan(sd.SpatialData(images={"a_image": img}), dataset="demo2025x", mpp=1.0).source
    'inferred'
    """
    from spora_sd.convert.plan_from_attrs import has_reverse_map, plan_from_reverse_map

    if has_reverse_map(sdata):
        ignored = {k: v for k, v in {"mpp": mpp, "patient_key": patient_key}.items() if v is not None}
        if ignored:
            logger.warning("sdata carries a spora reverse map, which fixes %s; ignoring %s", list(ignored), ignored)
        return plan_from_reverse_map(sdata, dataset=dataset)
    from spora_sd.convert.plan_inferred import infer_plan

    return infer_plan(sdata, dataset=dataset, mpp=mpp, modality=modality, patient_key=patient_key)


# --------------------------------------------------------------------------------------------------
# one tissue (runs in this process or on a dask worker)


@dataclass
class _TissueJob:
    """What a worker needs to write one tissue: the cohort folder, the plan and that tissue's elements."""

    root: str
    tissue: TissuePlan
    images: dict[str, Any]
    labels: dict[str, Any]
    on_worker: bool


@dataclass
class _TissueResult:
    tissue_id: str
    #: Sorted non-zero labels of the instance mask (None when there is none).
    instance_labels: np.ndarray | None


class _InThisThread:
    """A dask array whose slices are computed in the calling thread (``scheduler="synchronous"``).

    On a dask worker, a plain ``np.asarray(dask_array)`` would send the computation back to the
    cluster from inside a task, which can deadlock it; ``dask.config.set`` cannot prevent that safely
    because the config is shared by every thread of the process. :func:`~spora_sd.io.images.write_image`
    needs only ``shape``, ``dtype``, ``chunks`` (to align its bands with the source's blocks) and slicing.
    """

    def __init__(self, array: Any) -> None:
        self.array = array
        self.shape, self.dtype, self.ndim, self.chunks = array.shape, array.dtype, array.ndim, array.chunks

    def __getitem__(self, key: Any) -> np.ndarray:
        return np.asarray(self.array[key].compute(scheduler="synchronous"))

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return np.asarray(self.array.compute(scheduler="synchronous"), dtype=dtype)


def _local(array: Any, on_worker: bool) -> Any:
    return _InThisThread(array) if on_worker and isinstance(array, da.Array) else array


def _export_tissue(job: _TissueJob) -> _TissueResult:
    paths = CohortPaths(job.root)
    tissue = job.tissue
    for image in tissue.images:
        levels = element_levels(job.images[image.element])
        if image.order is not None:
            levels = [level[list(image.order)] for level in levels]
        write_image(
            paths.image(image.modality, image.mpp, tissue.tissue_id),
            [_local(level, job.on_worker) for level in levels],
            mpp=image.mpp,
            channel_names=list(image.channels),
        )
    instance_labels = None
    for mask in tissue.masks:
        data = np.asarray(_local(element_levels(job.labels[mask.element])[0], job.on_worker))
        if mask.what == INSTANCES:
            target = paths.instance_mask(mask.mpp, tissue.tissue_id)
            labels = np.unique(data)
            instance_labels = labels[labels != 0]
        elif mask.what == TISSUE:
            target = paths.tissue_mask(mask.mpp, tissue.tissue_id)
        else:
            target = paths.semantic_mask(mask.mpp, mask.what, tissue.tissue_id)
        write_mask(target, data)
        del data
    for mpp, shape in tissue.full_tissue_masks:
        write_mask(paths.tissue_mask(mpp, tissue.tissue_id), np.ones(shape, dtype=np.uint8))
    return _TissueResult(tissue.tissue_id, instance_labels)


def _check_cells(tissue: TissuePlan, result: _TissueResult) -> None:
    """The instance mask's labels must be the tissue's cell ids: a mismatch is an input error."""
    if tissue.cell_ids is None or result.instance_labels is None:
        return
    cells = np.unique(np.asarray(tissue.cell_ids))
    labels = result.instance_labels
    if cells.shape != labels.shape or not np.array_equal(cells, labels):
        element = next(m.element for m in tissue.masks if m.what == INSTANCES)
        only_mask = np.setdiff1d(labels, cells)
        only_table = np.setdiff1d(cells, labels)
        raise ExportInputError(
            f"labels {element!r}: {only_mask.size} mask labels have no row in the cell table (e.g. "
            f"{only_mask[:3].tolist()}) and {only_table.size} table cells are not in the mask (e.g. "
            f"{only_table[:3].tolist()}); the instance key must be the mask label of each cell"
        )


def _stream_tissues(sdata: Any, plan: ExportPlan, work: Path, progress: bool) -> None:
    on_worker = active_client() is not None
    jobs = [
        _TissueJob(
            str(work),
            tissue,
            {i.element: sdata.images[i.element] for i in tissue.images},
            {m.element: sdata.labels[m.element] for m in tissue.masks},
            on_worker,
        )
        for tissue in plan.tissues
    ]
    problems = Problems()  # every tissue whose mask and cell table disagree, reported together
    for position, result in imap_tissues(_export_tissue, jobs, progress=progress, description="export tissues"):
        with problems.collect():
            _check_cells(plan.tissues[position], result)
    problems.raise_if_any()


# --------------------------------------------------------------------------------------------------
# tables and derived products


def _write_tables(plan: ExportPlan, work: Path) -> None:
    paths = CohortPaths(work)
    dataset = plan.dataset
    for modality, channels in plan.channels.items():
        write_table(channels, paths.channels(modality), "channels", index=False)
        panel = channels["channel_name"].astype(str).tolist()
        cpt = plan.channels_per_tissue[modality]
        write_table(cpt, paths.channels_per_tissue(modality), "channels_per_tissue", channels=panel, dataset=dataset)
    for (mpp, task), encoder in plan.label_encoders.items():
        write_table(encoder, paths.label_encoder(mpp, task), "label_encoder", index=False)
    if plan.cells_table is not None:
        all_channels = sorted({c for ch in plan.channels.values() for c in ch["channel_name"].astype(str)})
        write_table(plan.cells_table, paths.cells, "cells", index=False, channels=all_channels, dataset=dataset)
    write_table(plan.tissues_table, paths.tissues, "tissues", index=False, dataset=dataset)


def _options(value: bool | Mapping[str, Any]) -> dict[str, Any] | None:
    if value is False or value is None:
        return None
    return {} if value is True else dict(value)


def _derived_runs(
    plan: ExportPlan, options: dict[str, Any] | None, kind: str, available: set[tuple[str, float]]
) -> list[dict[str, Any]]:
    """Keyword arguments of each ``compute_*`` call: explicit options, else the source cohort's recipes.

    ``available`` holds the ``(modality, mpp)`` (standardization) or ``("", mpp)`` (tiling) pairs that
    the export wrote, so that a recipe for a resolution that was not exported is dropped.
    """
    if options is None:
        return []
    recipes = (plan.derived or {}).get(kind) or []
    if not options and recipes:  # defaults asked for, and the source cohort says how it did it
        runs = []
        for recipe in recipes:
            key = (recipe.get("modality", ""), float(recipe["resolution"]))
            if key in available:
                runs.append(dict(recipe))
        if runs:
            return runs
    if kind == "tiling":
        return [dict(options)]
    return [{"modality": modality, **options} for modality in plan.multiplex_modalities]


def _derived_products(
    plan: ExportPlan, work: Path, standardization: dict[str, Any] | None, tiling: dict[str, Any] | None, progress: bool
) -> None:
    images = {(i.modality, i.mpp) for t in plan.tissues for i in t.images}
    for kwargs in _derived_runs(plan, standardization, "standardization", images):
        from spora_sd.stats.standardization import compute_standardizations

        compute_standardizations(work, **{"progress": progress, **kwargs})
    masks = {("", m.mpp) for t in plan.tissues for m in t.masks if m.what == TISSUE}
    masks |= {("", mpp) for t in plan.tissues for mpp, _ in t.full_tissue_masks}
    for kwargs in _derived_runs(plan, tiling, "tiling", masks):
        from spora_sd.stats.tiling import compute_tiling

        compute_tiling(work, **{"progress": progress, **kwargs})


# --------------------------------------------------------------------------------------------------
# the public function


@returns_free_memory
def from_spatialdata(
    sdata: Any,
    path: str | Path,
    *,
    dataset: str | None = None,
    mpp: float | None = None,
    modality: str = "imc",
    patient_key: str | None = None,
    overwrite: bool = False,
    standardization: bool | Mapping[str, Any] = True,
    tiling: bool | Mapping[str, Any] = True,
    progress: bool = False,
) -> Path:
    """Write a SpatialData object as a spora cohort that passes :func:`spora_sd.validate`.

    A SpatialData made by :func:`spora_sd.to_spatialdata` carries a reverse map in
    ``sdata.attrs["spora"]`` and is written back exactly (images and masks bit for bit, equal tables).
    Any other SpatialData (e.g. from ``spatialdata_io.steinbock``) is inferred: tissues from the
    labels that tables annotate and their images, channel names from ``c_coords`` (or the table's
    ``var_names`` when ``c_coords`` are only ``0..C-1``), mpp from ``Scale`` transformations, patients
    from ``patient_key``. What cannot be inferred raises an error that names the argument to pass.

    Parameters
    ----------
    sdata
        The SpatialData object. Its pixels are read lazily, one tissue at a time.
    path
        The cohort folder to create. When ``dataset`` is given and differs from the folder's name,
        ``path`` is the datasets root and the cohort goes to ``path / dataset``.
    dataset
        Dataset key (lower-case BibTeX-style key, e.g. ``"jackson2020single"``); default the name of
        ``path``, which must then be a valid key.
    mpp
        Microns per pixel of the images, when their transformations carry no ``Scale``.
    modality
        Modality of the images when inferring (``"imc"``, ``"codex"``, ``"cycif"``, ``"mibi"``, ``"he"``).
    patient_key
        Column of the cell table holding the raw patient identifier (constant per tissue); its values
        are hashed into 8-character patient ids. Default: each sample is its own patient.
    overwrite
        Replace an existing cohort folder, atomically: at every instant the folder holds the complete
        old cohort or the complete new one (see :mod:`spora_sd.io.atomic`). Without it an existing
        folder is an error.
    standardization
        Compute the standardization statistics (spec §6) of every multiplex modality; a mapping is passed
        as keyword arguments to :func:`spora_sd.stats.standardization.compute_standardizations`.
    tiling
        Compute the default tiling (spec §8); a mapping is passed to :func:`spora_sd.compute_tiling`.
    progress
        Show progress bars (rich, on stderr).

    Returns
    -------
    Path
        The cohort folder.

    Raises
    ------
    ExportInputError
        Something the cohort needs is missing from ``sdata`` and from the arguments; every problem
        found is listed in its message and in ``error.problems``.
    TargetExistsError
        The cohort folder exists and ``overwrite`` is False (a ``FileExistsError``).
    TargetLockedError
        Another process exports to the same folder right now (raised before anything is written).

    Examples
    --------
    >>> import numpy as np, spatialdata as sd, tempfile, pathlib
    >>> from spatialdata.models import Image2DModel
    >>> img = Image2DModel.parse(np.zeros((2, 30, 30), "uint16"), dims=("c", "y", "x"), c_coords=["CD3E", "DNA1"])
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> from_spatialdata(sd.SpatialData(images={"s1_image": img}), root, dataset="demo2025x", mpp=1.0).name
    'demo2025x'
    """
    target, dataset = _resolve_target(path, dataset)
    if (target.exists() or target.is_symlink()) and not overwrite:
        raise TargetExistsError(f"{target} exists; pass overwrite=True to replace it (spora-sd export --overwrite)")
    plan = build_plan(sdata, dataset=dataset, mpp=mpp, modality=modality, patient_key=patient_key)
    logger.info("exporting %d tissues to %s (plan: %s)", len(plan.tissues), target, plan.source)
    with export_workspace(target, overwrite=overwrite) as work:
        _stream_tissues(sdata, plan, work, progress)
        _write_tables(plan, work)
        _derived_products(plan, work, _options(standardization), _options(tiling), progress)
        write_manifest(work)  # the last file: sizes and checksums of all the others
    return target
