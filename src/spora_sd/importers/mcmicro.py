"""MCMICRO output folders -> spora cohort: :func:`from_mcmicro`.

`MCMICRO <https://mcmicro.org>`_ (Schapiro et al. 2022, Nat Methods) writes one folder per whole-slide
sample: ``markers.csv`` (``channel_number``, ``cycle_number``, ``marker_name``), ``qc/params.yml``,
``registration/<sample>.ome.tif``, ``segmentation/<method>-<sample>/{cell,nuclei}.ome.tif`` and
``quantification/<sample>--<method>_{cell,nuclei}.csv`` (``CellID``, one column per marker,
``X_centroid``, ``Y_centroid``, morphology). spatialdata-io's reader (``spatialdata_io.mcmicro``) reads
one such folder (one sample; TMA runs are not supported here); :func:`spora_sd.from_spatialdata` writes
the cohort, one tissue at a time. What this module adds:

- **several samples**: ``path`` is one MCMICRO output folder (it has ``markers.csv``) or a folder of
  them; each is read lazily and becomes one tissue, in a coordinate system of its own;
- **one segmentation**: the ``cell`` masks and their table by default (``segmentation="nuclei"`` for
  the other); the other masks, tables and the ``raw``/``illumination`` images are not imported;
- **channel names**: ``marker_name``s mapped to HUGO symbols (:mod:`spora_sd.importers.targets`);
- **mpp**: from the registration image's OME-XML ``PhysicalSizeX`` (and its unit) unless given.

Examples
--------
An MCMICRO output folder (one sub-folder per run) becomes one cohort::

    from spora_sd.importers import from_mcmicro
    from_mcmicro("mcmicro_runs/", "/data/spora/lin2023cycif")

``tests/importers/test_mcmicro.py`` runs it on an MCMICRO-shaped folder.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np

from spora_sd import layout
from spora_sd.errors import CohortFormatError, CohortNotFoundError, ExportInputError
from spora_sd.importers.cohort_writer import write_spatialdata
from spora_sd.importers.targets import map_targets

__all__ = ["from_mcmicro", "mcmicro_samples", "physical_pixel_size"]

logger = logging.getLogger(__name__)

_MARKERS = "markers.csv"
_PARAMS = "qc/params.yml"
_REGISTRATION = "registration"
_IMAGE_SUFFIX = ".ome.tif"
_SIZE_RE = re.compile(r'PhysicalSize(X|Y)="([0-9.eE+-]+)"')
_UNIT_RE = re.compile(r'PhysicalSizeXUnit="([^"]+)"')
_UNIT_NAMES = {"µm": "micrometer", "um": "micrometer", "nm": "nanometer", "mm": "millimeter", "Å": "angstrom"}


def mcmicro_samples(path: str | Path) -> list[Path]:
    """The MCMICRO output folders under ``path``: itself when it has ``markers.csv``, else its subfolders that do."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise CohortNotFoundError(f"{path}: no such MCMICRO folder")
    if (path / _MARKERS).is_file():
        return [path]
    found = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".") and (p / _MARKERS).is_file())
    if not found:
        raise CohortFormatError(
            path, "mcmicro.files", f"neither {_MARKERS} here nor MCMICRO output folders (with {_MARKERS}) below"
        )
    return found


def physical_pixel_size(image: Path) -> float | None:
    """Microns per pixel from an OME-TIFF's ``PhysicalSizeX`` (None when absent, or X and Y differ)."""
    import tifffile

    with tifffile.TiffFile(image) as tif:
        xml = tif.ome_metadata or ""
    sizes = dict(_SIZE_RE.findall(xml))
    if "X" not in sizes:
        return None
    unit = _UNIT_RE.search(xml)
    name = _UNIT_NAMES.get(unit.group(1), unit.group(1)) if unit else "micrometer"
    factor = layout.LENGTH_UNITS.get(name)
    if factor is None or ("Y" in sizes and float(sizes["Y"]) != float(sizes["X"])):
        return None
    return float(sizes["X"]) * factor


def _check_sample(folder: Path) -> Path:
    params = folder / _PARAMS
    if not params.is_file():
        raise CohortFormatError(folder, "mcmicro.files", f"missing {_PARAMS} (spatialdata-io's reader needs it)")
    import yaml

    workflow = (yaml.safe_load(params.read_text(encoding="utf-8")) or {}).get("workflow", {})
    if workflow.get("tma"):
        raise CohortFormatError(params, "mcmicro.tma", "TMA runs (workflow: tma: true) are not supported")
    images = sorted((folder / _REGISTRATION).glob(f"*{_IMAGE_SUFFIX}"))
    if len(images) != 1:
        raise CohortFormatError(
            folder / _REGISTRATION, "mcmicro.files", f"needs exactly one {_IMAGE_SUFFIX} image, found {len(images)}"
        )
    return images[0]


def _read_like_spatialdata_io(folder: Path, registration: Path, sample: str, segmentation: str) -> Any:
    """The registration image, one segmentation and its table, as ``spatialdata_io.mcmicro`` builds them.

    Follows spatialdata-io 0.7.1 ``readers/mcmicro.py`` (non-TMA): image ``<sample>_image`` with the
    markers as ``c`` coordinates, labels ``<sample>_<mask>``, and a table of the quantification CSV
    (``X`` the marker columns as float64, ``obs`` the other columns but the centroids, ``obsm["spatial"]``
    the centroids, region ``<sample>_<mask>``, instance key ``CellID``).
    """
    import anndata as ad
    import dask.array as da
    import pandas as pd
    import spatialdata as sd
    import tifffile
    import zarr
    from spatialdata.models import Image2DModel, Labels2DModel, TableModel

    markers = pd.read_csv(folder / _MARKERS)
    names = markers["marker_name"].astype(str).tolist()
    image = da.from_zarr(zarr.open(tifffile.imread(registration, aszarr=True), mode="r"))
    labels_file = next((folder / "segmentation").glob(f"*/{segmentation}{_IMAGE_SUFFIX}"), None)
    tables = sorted((folder / "quantification").glob(f"{sample}--*_{segmentation}.csv"))
    if labels_file is None or not tables:
        raise CohortFormatError(folder, "mcmicro.files", f"no {segmentation} masks or quantification table")
    mask = np.squeeze(tifffile.imread(labels_file))
    table = pd.read_csv(tables[0])
    coords = ["X_centroid", "Y_centroid"]
    adata = ad.AnnData(
        table[names].to_numpy(dtype="float64"),
        obs=table.drop(columns=names + coords),
        var=markers.set_index("marker_name", drop=False),
        obsm={"spatial": table[coords].to_numpy()},
    )
    region = f"{sample}_{segmentation}"
    adata.obs["region"] = pd.Categorical([region] * adata.n_obs)
    return sd.SpatialData(
        images={
            f"{sample}{layout.SPATIALDATA_IO_IMAGE_SUFFIX}": Image2DModel.parse(
                image, dims=("c", "y", "x"), c_coords=names
            )
        },
        labels={region: Labels2DModel.parse(mask, dims=("y", "x"))},
        tables={tables[0].stem: TableModel.parse(adata, region=region, region_key="region", instance_key="CellID")},
    )


def _one_sample(folder: Path, segmentation: str) -> tuple[Any, float | None]:
    """One MCMICRO folder as a SpatialData that holds only its image, chosen masks and their table."""
    import spatialdata as sd
    import spatialdata_io
    from spatialdata.models import get_table_keys, set_channel_names
    from spatialdata.transformations import Identity, set_transformation

    registration = _check_sample(folder)
    sample = registration.name.removesuffix(_IMAGE_SUFFIX)
    try:
        full = spatialdata_io.mcmicro(folder)
    except TypeError as exc:
        if "dtype" not in str(exc):
            raise
        # spatialdata-io <= 0.7.1 passes AnnData(..., dtype=float), which anndata 0.13 removed
        # (deprecated since anndata#854): read the same files the way its reader does
        logger.info("spatialdata_io.mcmicro fails with this anndata (%s); reading %s directly", exc, folder)
        full = _read_like_spatialdata_io(folder, registration, sample, segmentation)
    except (ValueError, KeyError, OSError) as exc:
        raise CohortFormatError(folder, "mcmicro.read", f"spatialdata_io.mcmicro failed: {exc}") from None
    image_name = f"{sample}{layout.SPATIALDATA_IO_IMAGE_SUFFIX}"
    labels_name = f"{sample}_{segmentation}"
    if image_name not in full.images or labels_name not in full.labels:
        raise CohortFormatError(
            folder, "mcmicro.files", f"no image {image_name!r} or masks {labels_name!r}; found {sorted(full.labels)}"
        )
    tables = {}
    for table in full.tables.values():
        region = get_table_keys(table)[0]
        if region == labels_name or (not isinstance(region, str) and list(region) == [labels_name]):
            tables[f"{sample}_{segmentation}_table"] = table
    image = full.images[image_name]
    mapped = map_targets([str(c) for c in image.coords["c"].values], report=False)
    image = set_channel_names(image, [m.channel_name for m in mapped])
    labels = full.labels[labels_name]
    for element in (image, labels):  # one coordinate system per sample: images of equal size stay apart
        set_transformation(element, {sample: Identity()}, set_all=True)
    part = sd.SpatialData(images={image_name: image}, labels={labels_name: labels}, tables=tables)
    return part, physical_pixel_size(registration)


def from_mcmicro(
    path: str | Path,
    out: str | Path,
    *,
    dataset: str | None = None,
    segmentation: Literal["cell", "nuclei"] = "cell",
    mpp: float | None = None,
    modality: str = "cycif",
    patient_key: str | None = None,
    overwrite: bool = False,
    standardization: bool | Mapping[str, Any] = True,
    tiling: bool | Mapping[str, Any] = True,
    progress: bool = False,
) -> Path:
    """Import MCMICRO output folders as a spora cohort that passes :func:`spora_sd.validate`.

    Parameters
    ----------
    path
        One MCMICRO output folder (with ``markers.csv``), or a folder of them (one sample each).
    out
        The cohort folder (its name is the dataset key), or the datasets root with ``dataset``.
    dataset
        Dataset key; default the name of ``out``.
    segmentation
        Which masks become the instance masks: ``cell`` (``cell.ome.tif``) or ``nuclei``.
    mpp
        Microns per pixel; default from the registration images' OME-XML (``PhysicalSizeX``).
    modality
        ``cycif`` (MCMICRO's usual input), or ``codex``, ``mibi``, ``imc``.
    patient_key
        Column of the quantification tables with the raw patient id; default each sample is its own patient.
    overwrite, standardization, tiling, progress
        As for :func:`spora_sd.from_spatialdata`.

    Returns
    -------
    Path
        The cohort folder.
    """
    import spatialdata as sd

    folders = mcmicro_samples(path)
    parts, sizes = [], {}
    for folder in folders:
        part, size = _one_sample(folder, segmentation)
        parts.append(part)
        sizes[folder.name] = size
    if mpp is None:
        found = {s for s in sizes.values() if s is not None}
        if len(found) != 1 or None in sizes.values():
            raise ExportInputError(
                f"microns per pixel: the registration images state {sizes} (PhysicalSizeX); pass mpp=... "
                "(spora-sd import mcmicro --mpp)"
            )
        mpp = found.pop()
    sdata = sd.SpatialData(
        images={k: v for p in parts for k, v in p.images.items()},
        labels={k: v for p in parts for k, v in p.labels.items()},
        tables={k: v for p in parts for k, v in p.tables.items()},
    )
    logger.info("MCMICRO: %d samples, mpp %s", len(parts), mpp)
    return write_spatialdata(
        sdata,
        out,
        patient_key=patient_key,
        dataset=dataset,
        mpp=mpp,
        modality=modality,
        overwrite=overwrite,
        standardization=standardization,
        tiling=tiling,
        progress=progress,
    )
