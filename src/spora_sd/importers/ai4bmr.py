"""ai4bmr-datasets processed folder -> spora cohort: :func:`from_ai4bmr`.

`ai4bmr-datasets <https://github.com/AI4SCR/ai4bmr-datasets>`_ downloads Jackson 2020, Danenberg 2022,
Cords 2024 and Keren 2018 from their public archives and writes a *processed* folder of TIFFs and
Parquet files (the layout and where each fact comes from: :mod:`spora_sd.importers.ai4bmr_layout`).
This module reads that folder directly, one sample at a time, and writes a spora cohort:

- **tissues**: each ``sample_id`` becomes ``<dataset>_<patient hash>_<specimen>``; the patient is the
  dataset's known clinical column (``pid`` for Jackson 2020, ``metabric_id`` for Danenberg 2022,
  ``patient_id`` for Cords 2024 and Keren 2018) or ``patient_key``. Clinical columns become
  ``tissues.parquet`` columns (a column named like a spora column is prefixed ``clinical_``), with
  ``source_name`` (the ``sample_id``) and ``mpp_<modality> = mpp`` (1.0: IMC and MIBI pixels are 1 µm).
- **channels**: panel ``target``s become channel names through the cited table of
  :mod:`spora_sd.importers.targets` (HUGO symbols; unknown targets keep their name and are reported).
- **images**: each ``images/<version>/<sample_id>.tiff`` (``C x H x W``) is copied pixel for pixel into
  OME-Zarr; a large TIFF is read lazily, one band of rows at a time, through
  ``tifffile.imread(..., aszarr=True)``; a small one in one multi-threaded read.
- **masks**: ``masks/<version>/<sample_id>.tiff`` is the instance mask, kept as it is (ids from 2, gaps);
  ``cell_id`` is the mask label. A full tissue mask covers each image.
- **cells**: one row per mask label, with the sample's per-cell annotations (``cell_type`` from the
  dataset's own column, every other column under its name) and intensities (columns renamed to the
  channel names, values as given). Annotated objects that are not in the mask are dropped, mask
  labels without annotation keep empty values; both are counted in the log.

The import is atomic (a complete valid cohort or nothing at the target, :mod:`spora_sd.io.atomic`),
and with an active ``dask.distributed`` client, one task per sample runs on the cluster.

Examples
--------
>>> import tempfile, pathlib
>>> from spora_sd.importers.synthetic_ai4bmr import make_ai4bmr_folder
>>> src = make_ai4bmr_folder(pathlib.Path(tempfile.mkdtemp()), n_samples=2, size=32)
>>> out = from_ai4bmr(src, pathlib.Path(tempfile.mkdtemp()), standardization=False, tiling=False)
>>> out.name
'jackson2020single'
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from spora_sd import layout
from spora_sd.convert.plan import INSTANCES, ExportPlan, ImageSource, MaskSource, TissuePlan, channels_per_tissue_table
from spora_sd.errors import CohortFormatError, CohortNotFoundError, ExportInputError, TargetExistsError
from spora_sd.importers.ai4bmr_layout import (
    KNOWN_DATASETS,
    Ai4bmrDataset,
    Ai4bmrPaths,
    read_cell_table,
    read_clinical,
    read_panel,
    samples,
)
from spora_sd.importers.cohort_writer import assign_tissue_ids, finish_cohort, resolve_target
from spora_sd.importers.targets import TargetMapping, channels_table_for, map_targets
from spora_sd.io.atomic import export_workspace
from spora_sd.io.images import write_image
from spora_sd.io.masks import write_mask
from spora_sd.layout import CohortPaths
from spora_sd.stats.parallel import imap_tissues

__all__ = ["from_ai4bmr"]

logger = logging.getLogger(__name__)

#: A TIFF up to this size (bytes of pixels) is read at once with tifffile's threads; a larger one
#: lazily, one band of rows at a time (memory stays at a band, whatever the image size).
IN_MEMORY_BYTES = 1 << 30
_TIFF = ".tiff"
_PARQUET = ".parquet"
_CELL_TYPE = "cell_type"
_CLINICAL_PREFIX = "clinical_"
#: Columns of tissues.parquet that the importer writes itself (a clinical column of that name is prefixed).
_TISSUE_COLUMNS = ("tissue_id", "patient_id", "specimen_id", "modality", "alignment", "source_name")


@dataclass
class _SampleJob:
    """What a worker needs to import one sample: its files, its tissue id and the panel."""

    root: str
    sample_id: str
    tissue_id: str
    image: str
    mask: str | None
    annotations: str | None
    intensities: str | None
    modality: str
    mpp: float
    channels: list[str]
    targets: list[str]
    cell_type_key: str | None


@dataclass
class _SampleResult:
    tissue_id: str
    shape: tuple[int, int]
    cells: pd.DataFrame | None = None
    #: (annotated objects not in the mask, mask labels without annotation)
    unmatched: tuple[int, int] = (0, 0)
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------------
# one sample (runs in this process or on a dask worker)


def _open_tiff(path: Path) -> Any:
    """The ``C x H x W`` pixels of an ai4bmr image TIFF: a numpy array when small, else a lazy zarr array."""
    import tifffile
    import zarr

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            shape, dtype = tuple(series.shape), np.dtype(series.dtype)
            if int(np.prod(shape)) * dtype.itemsize <= IN_MEMORY_BYTES:
                data = series.asarray()
                return data[np.newaxis] if data.ndim == 2 else data
        # zarr-backed: write_image reads one band of rows at a time, tifffile decodes only its strips/tiles
        array = zarr.open(tifffile.imread(path, aszarr=True), mode="r")
    except (tifffile.TiffFileError, ValueError, OSError) as exc:
        raise CohortFormatError(path, "ai4bmr.image", f"not a readable TIFF ({exc})") from None
    if array.ndim == 2:
        return np.asarray(array)[np.newaxis]
    return array


def _read_mask(path: Path, shape: tuple[int, int]) -> np.ndarray:
    import tifffile

    try:
        mask = tifffile.imread(path)
    except (tifffile.TiffFileError, ValueError, OSError) as exc:
        raise CohortFormatError(path, "ai4bmr.mask", f"not a readable TIFF ({exc})") from None
    mask = np.squeeze(mask)
    if mask.ndim != 2 or tuple(mask.shape) != shape:
        raise CohortFormatError(path, "ai4bmr.mask", f"mask shape {mask.shape} differs from the image's {shape}")
    if not np.issubdtype(mask.dtype, np.integer) or (np.issubdtype(mask.dtype, np.signedinteger) and mask.min() < 0):
        raise CohortFormatError(path, "ai4bmr.mask", f"a label mask holds non-negative integers, got {mask.dtype}")
    return mask


def _sample_cells(job: _SampleJob, labels: np.ndarray) -> tuple[pd.DataFrame, tuple[int, int]]:
    """The sample's rows of cells.parquet: one per mask label, annotations and intensities joined."""
    index = pd.Index(labels.astype("int64"), name="object_id")
    parts: list[pd.DataFrame] = []
    known = pd.Index([], dtype="int64")
    if job.annotations:
        annotations = read_cell_table(Path(job.annotations), job.sample_id)
        if job.cell_type_key and job.cell_type_key in annotations.columns:
            if job.cell_type_key != _CELL_TYPE and _CELL_TYPE in annotations.columns:
                annotations = annotations.rename(columns={_CELL_TYPE: f"{_CELL_TYPE}_source"})
            annotations = annotations.rename(columns={job.cell_type_key: _CELL_TYPE})
            annotations[_CELL_TYPE] = annotations[_CELL_TYPE].astype("string")
        clash = sorted(set(map(str, annotations.columns)) & (set(job.channels) | {"tissue_id", "cell_id"}))
        if clash:
            annotations = annotations.rename(columns={c: f"annotation_{c}" for c in clash})
        known = known.union(annotations.index)
        parts.append(annotations.reindex(index))
    if job.intensities:
        intensities = read_cell_table(Path(job.intensities), job.sample_id)
        missing = sorted(set(job.targets) - set(map(str, intensities.columns)))
        if missing:
            raise CohortFormatError(
                job.intensities, "ai4bmr.intensity", f"no column for the panel targets {missing[:5]}"
            )
        intensities = intensities[job.targets].set_axis(job.channels, axis=1)
        for column in job.channels:  # pandas' nullable numbers (convert_dtypes) -> plain floats, same values
            if not pd.api.types.is_float_dtype(intensities[column]) or isinstance(
                intensities[column].dtype, pd.api.extensions.ExtensionDtype
            ):
                intensities[column] = intensities[column].astype("float64")
        known = known.union(intensities.index)
        parts.append(intensities.reindex(index))
    cells = pd.concat(parts, axis=1) if parts else pd.DataFrame(index=index)
    cells = cells.rename(columns=str).reset_index(drop=True)
    cells.insert(0, "cell_id", labels.astype("int64"))
    cells.insert(0, "tissue_id", job.tissue_id)
    if not parts:
        return cells, (0, 0)
    return cells, (int(known.difference(index).size), int(index.difference(known).size))


def _import_sample(job: _SampleJob) -> _SampleResult:
    paths = CohortPaths(job.root)
    image = _open_tiff(Path(job.image))
    if image.ndim != 3 or image.shape[0] != len(job.channels):
        raise CohortFormatError(
            job.image, "ai4bmr.image", f"shape {image.shape} does not fit the panel's {len(job.channels)} channels"
        )
    shape = (int(image.shape[1]), int(image.shape[2]))
    write_image(paths.image(job.modality, job.mpp, job.tissue_id), [image], mpp=job.mpp, channel_names=job.channels)
    del image
    write_mask(paths.tissue_mask(job.mpp, job.tissue_id), np.ones(shape, dtype=np.uint8))
    result = _SampleResult(job.tissue_id, shape)
    if job.mask is None:
        return result
    mask = _read_mask(Path(job.mask), shape)
    write_mask(paths.instance_mask(job.mpp, job.tissue_id), mask)
    labels = np.unique(mask)
    del mask
    result.cells, result.unmatched = _sample_cells(job, labels[labels != 0])
    return result


# --------------------------------------------------------------------------------------------------
# planning


def _dataset_facts(name: str, dataset: str | None, patient_key: str | None, cell_type_key: str | None) -> Ai4bmrDataset:
    known = KNOWN_DATASETS.get(name)
    if known is None:
        if dataset is None:
            raise ExportInputError(
                f"ai4bmr dataset {name!r} is not one of {sorted(KNOWN_DATASETS)}: pass dataset=<key> "
                "(spora-sd import ai4bmr --dataset) and patient_key=... for its clinical patient column"
            )
        logger.info(
            "ai4bmr dataset %r is not a known one: each sample is its own patient unless patient_key is set", name
        )
        known = Ai4bmrDataset(name, dataset, patient_key or "", cell_type_key or "")
    return Ai4bmrDataset(
        known.name,
        dataset or known.key,
        patient_key if patient_key is not None else known.patient_key,
        cell_type_key if cell_type_key is not None else known.cell_type_key,
        known.modality,
        known.mask_version,
    )


def _version(paths: Ai4bmrPaths, kind: str, wanted: str | None, default: str, required: bool) -> str | None:
    present = paths.versions(kind)
    version = wanted or default
    if version in present:
        return version
    if wanted is None and not required:
        logger.info("no %s/%s in %s: not imported", kind, version, paths.processed)
        return None
    raise CohortFormatError(
        paths.processed / kind,
        f"ai4bmr.{kind}",
        f"version {version!r} not found; present: {present or 'none'}",
    )


def _raw_patients(facts: Ai4bmrDataset, clinical: pd.DataFrame, sample_ids: list[str], where: Path) -> dict[str, str]:
    if not facts.patient_key:
        return {s: s for s in sample_ids}
    if facts.patient_key not in clinical.columns:
        raise CohortFormatError(
            where,
            "ai4bmr.clinical",
            f"no patient column {facts.patient_key!r}; pass patient_key=<column> (spora-sd import ai4bmr "
            f"--patient-key); columns: {list(map(str, clinical.columns))}",
        )
    out: dict[str, str] = {}
    unknown: list[str] = []
    for sample in sample_ids:
        value = clinical[facts.patient_key].get(sample, pd.NA)
        if pd.isna(value):
            unknown.append(sample)
            out[sample] = sample
        else:
            out[sample] = str(value)
    if unknown:
        logger.warning(
            "%d samples have no %r in clinical.parquet and count as their own patient: %s",
            len(unknown),
            facts.patient_key,
            ", ".join(unknown[:10]),
        )
    return out


def _tissues_table(
    ids: dict[str, str], clinical: pd.DataFrame, facts: Ai4bmrDataset, mpp: float, order: list[str]
) -> pd.DataFrame:
    rows = pd.DataFrame(
        {
            "tissue_id": [ids[s] for s in order],
            "patient_id": [layout.parse_tissue_id(ids[s]).patient_id for s in order],
            "specimen_id": [layout.parse_tissue_id(ids[s]).specimen_id for s in order],
            "modality": facts.modality,
            "alignment": pd.Series([None] * len(order), dtype=object),
            f"mpp_{facts.modality}": float(mpp),
            "source_name": order,
        }
    )
    extra = clinical.reindex(order).reset_index(drop=True)
    reserved = set(rows.columns) | set(_TISSUE_COLUMNS)
    extra = extra.rename(columns=lambda c: f"{_CLINICAL_PREFIX}{c}" if str(c) in reserved else str(c))
    return pd.concat([rows, extra], axis=1)


# --------------------------------------------------------------------------------------------------
# the public function


def from_ai4bmr(
    path: str | Path,
    out: str | Path,
    *,
    dataset: str | None = None,
    patient_key: str | None = None,
    cell_type_key: str | None = None,
    image_version: str = "published",
    mask_version: str | None = None,
    metadata_version: str | None = None,
    feature_version: str | None = None,
    mpp: float = 1.0,
    overwrite: bool = False,
    standardization: bool | Mapping[str, Any] = True,
    tiling: bool | Mapping[str, Any] = True,
    progress: bool = False,
) -> Path:
    """Import a processed ai4bmr-datasets folder as a spora cohort that passes :func:`spora_sd.validate`.

    Parameters
    ----------
    path
        The dataset's folder, ``$AI4BMR_DATASETS_DIR/<Name>`` (default ``~/.cache/ai4bmr_datasets/<Name>``),
        or its ``02_processed`` folder. ``<Name>`` says which dataset it is (``Jackson2020``,
        ``Danenberg2022``, ``Cords2024``, ``Keren2018``).
    out
        Datasets root (the cohort goes to ``out/<dataset>``) or the cohort folder itself when its name is
        the dataset key.
    dataset
        Dataset key; default the registry key of a known ``<Name>`` (``Jackson2020`` ->
        ``jackson2020single``), so the cohort resolves by the registry's aliases. Required otherwise.
    patient_key
        Column of ``clinical.parquet`` with the raw patient id; default the known dataset's column, and
        for an unknown dataset, each sample is its own patient.
    cell_type_key
        Per-cell annotation column that becomes ``cell_type``; default the known dataset's column.
    image_version, mask_version, metadata_version, feature_version
        The ai4bmr versions to read (folders under ``images/``, ``masks/``, ``metadata/`` and
        ``features/intensity/``). Defaults: ``published``, the dataset's whole-cell masks
        (``published_cell`` for Danenberg 2022), and the mask version's annotations and intensities
        when present (else ``published``); missing annotations or intensities are left out (logged).
    mpp
        Microns per pixel (1.0 for IMC and MIBI-TOF).
    overwrite
        Replace an existing cohort, atomically.
    standardization, tiling
        As for :func:`spora_sd.from_spatialdata`: compute the derived products (a mapping gives options).
    progress
        Show a progress bar (rich, on stderr).

    Returns
    -------
    Path
        The cohort folder.

    Raises
    ------
    CohortNotFoundError
        ``path`` holds no ``02_processed`` folder, or a required file is missing.
    CohortFormatError
        A file breaks the ai4bmr layout (the message names it and the rule, e.g. ``ai4bmr.panel``).
    ExportInputError
        The dataset is unknown and no ``dataset`` was given.
    TargetExistsError
        The cohort exists and ``overwrite`` is False.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from spora_sd.importers.synthetic_ai4bmr import make_ai4bmr_folder
    >>> src = make_ai4bmr_folder(pathlib.Path(tempfile.mkdtemp()), n_samples=2, size=32, name="Keren2018")
    >>> import spora_sd
    >>> spora_sd.validate(from_ai4bmr(src, pathlib.Path(tempfile.mkdtemp()), tiling=False)).ok
    True
    """
    paths = Ai4bmrPaths(path)
    paths.check()
    facts = _dataset_facts(paths.name, dataset, patient_key, cell_type_key)
    target, key = resolve_target(out, facts.key)
    if (target.exists() or target.is_symlink()) and not overwrite:
        raise TargetExistsError(f"{target} exists; pass overwrite=True to replace it (spora-sd import --overwrite)")

    images_version = _version(paths, "images", image_version, "published", required=True) or image_version
    masks_version = _version(paths, "masks", mask_version, facts.mask_version, required=False)
    metadata_default = masks_version if masks_version in paths.versions("metadata") else "published"
    annotations_version = _version(paths, "metadata", metadata_version, metadata_default or "published", False)
    intensity_default = masks_version if masks_version in paths.versions("intensity") else "published"
    intensities_version = _version(paths, "intensity", feature_version, intensity_default or "published", False)

    panel = read_panel(paths.panel(images_version))
    targets = panel["target"].astype(str).tolist()
    mappings: list[TargetMapping] = map_targets(targets, dataset=facts.name)
    channels = [m.channel_name for m in mappings]
    clinical = read_clinical(paths.clinical)

    images = samples(paths.images_dir(images_version), _TIFF)
    if not images:
        raise CohortNotFoundError(f"{paths.images_dir(images_version)}: no <sample_id>.tiff images")
    masks = samples(paths.masks_dir(masks_version), _TIFF) if masks_version else {}
    annotations = samples(paths.metadata_dir(annotations_version), _PARQUET) if annotations_version else {}
    intensities = samples(paths.intensity_dir(intensities_version), _PARQUET) if intensities_version else {}
    order = sorted(images)
    _report_unmatched(order, clinical, masks)

    ids = assign_tissue_ids(_raw_patients(facts, clinical, order, paths.clinical), key)
    jobs = [
        _SampleJob(
            root="",
            sample_id=s,
            tissue_id=ids[s],
            image=str(images[s]),
            mask=str(masks[s]) if s in masks else None,
            annotations=str(annotations[s]) if s in annotations and s in masks else None,
            intensities=str(intensities[s]) if s in intensities and s in masks else None,
            modality=facts.modality,
            mpp=float(mpp),
            channels=channels,
            targets=targets,
            cell_type_key=facts.cell_type_key or None,
        )
        for s in order
    ]
    logger.info("importing %d samples of %s into %s", len(jobs), paths.name, target)
    with export_workspace(target, overwrite=overwrite) as work:
        for job in jobs:
            job.root = str(work)
        results: dict[str, _SampleResult] = {}
        for position, result in imap_tissues(_import_sample, jobs, progress=progress, description="import samples"):
            results[order[position]] = result
        plan = _plan(key, facts, float(mpp), order, ids, results, clinical, mappings)
        finish_cohort(plan, work, standardization=standardization, tiling=tiling, progress=progress)
    return target


def _report_unmatched(order: list[str], clinical: pd.DataFrame, masks: dict[str, Path]) -> None:
    no_clinical = [s for s in order if s not in clinical.index]
    if no_clinical:
        logger.warning("%d images have no row in clinical.parquet: %s", len(no_clinical), ", ".join(no_clinical[:10]))
    no_image = sorted(set(clinical.index) - set(order))
    if no_image:
        logger.info("%d samples of clinical.parquet have no image and are not imported", len(no_image))
    if masks:
        no_mask = [s for s in order if s not in masks]
        if no_mask:
            logger.warning("%d images have no mask and are imported without cells: %s", len(no_mask), no_mask[:10])


def _plan(
    key: str,
    facts: Ai4bmrDataset,
    mpp: float,
    order: list[str],
    ids: dict[str, str],
    results: dict[str, _SampleResult],
    clinical: pd.DataFrame,
    mappings: list[TargetMapping],
) -> ExportPlan:
    """The tables of the cohort (the pixels are written already), in the export's own plan."""
    channels = [m.channel_name for m in mappings]
    tissues = []
    for sample in order:
        result = results[sample]
        plan = TissuePlan(ids[sample], images=[ImageSource(sample, facts.modality, mpp, tuple(channels))])
        plan.full_tissue_masks.append((mpp, result.shape))
        if result.cells is not None:
            plan.masks.append(MaskSource(sample, INSTANCES, mpp))
        tissues.append(plan)
    parts = [results[s].cells for s in order if results[s].cells is not None]
    dropped = sum(results[s].unmatched[0] for s in order)
    empty = sum(results[s].unmatched[1] for s in order)
    if dropped or empty:
        logger.warning(
            "%d annotated objects are not in their mask (dropped) and %d mask labels have no annotation "
            "(kept with empty values)",
            dropped,
            empty,
        )
    cells = None
    if parts:
        cells = pd.concat(parts, ignore_index=True)
        cells = cells.sort_values(["tissue_id", "cell_id"], kind="stable").reset_index(drop=True)
    tissues_table = _tissues_table(ids, clinical, facts, mpp, order).sort_values("tissue_id").reset_index(drop=True)
    multiplex = layout.is_multiplex(facts.modality)
    return ExportPlan(
        dataset=key,
        tissues=sorted(tissues, key=lambda t: t.tissue_id),
        tissues_table=tissues_table,
        cells_table=cells,
        channels={facts.modality: channels_table_for(mappings)} if multiplex else {},
        channels_per_tissue=(
            {
                facts.modality: channels_per_tissue_table(
                    channels, {ids[s]: channels for s in sorted(order, key=ids.get)}
                )
            }
            if multiplex
            else {}
        ),
        source="ai4bmr",
    )
