"""steinbock output folder -> spora cohort: :func:`from_steinbock`.

`steinbock <https://bodenmillergroup.github.io/steinbock>`_ (Windhager et al. 2023, Nat Protoc) writes
``ome/<image>.ome.tiff``, ``masks_<kind>/<image>.tiff``, ``panel.csv``, ``images.csv`` and, after
``steinbock export anndata``, ``cells.h5ad``. spatialdata-io's reader (``spatialdata_io.steinbock``)
reads that folder into a SpatialData (lazy images and masks, one table of mean intensities whose
``obs`` carries the columns of ``images.csv`` prefixed ``image_``); :func:`spora_sd.from_spatialdata`
writes it, one tissue at a time. What this module adds:

- **channel names**: the reader leaves the channel coordinates as ``0..C-1``; the panel names (the
  table's ``var_names``, from ``panel.csv``) are mapped to HUGO symbols by the cited table of
  :mod:`spora_sd.importers.targets` (``Cytokeratin 5`` -> ``KRT5``); unknown names are kept and reported.
- **mpp** defaults to 1.0: IMC pixels are 1 µm (steinbock's images carry no physical size).
- **patients**: ``patient_key`` may be any ``obs`` column, e.g. ``image_source_file`` (one patient per
  ``.mcd`` file); default: each image is its own patient.

Examples
--------
The real IMC data of the test suite (a steinbock output folder) becomes a cohort::

    from spora_sd.importers import from_steinbock
    from_steinbock("tests/data/imc_testdata_steinbock", "/data/spora/eling2021steinbock", tiling=False)

``tests/importers/test_steinbock.py`` runs exactly this, and ``notebooks/steinbock_tutorial.ipynb``
analyses the result.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from spora_sd.errors import CohortFormatError, CohortNotFoundError
from spora_sd.importers.cohort_writer import write_spatialdata

__all__ = ["from_steinbock"]

logger = logging.getLogger(__name__)

_CELLS_FILE = "cells.h5ad"
_PANEL_FILE = "panel.csv"


def _check_folder(path: Path, labels_kind: str) -> None:
    if not path.is_dir():
        raise CohortNotFoundError(f"{path}: no such steinbock folder")
    missing = [n for n in (_CELLS_FILE, _PANEL_FILE, "ome", f"masks_{labels_kind}") if not (path / n).exists()]
    if missing:
        raise CohortFormatError(
            path,
            "steinbock.files",
            f"missing {missing}; spatialdata-io's reader needs cells.h5ad (steinbock export anndata), "
            f"panel.csv, ome/ and masks_{labels_kind}/",
        )


def from_steinbock(
    path: str | Path,
    out: str | Path,
    *,
    dataset: str | None = None,
    labels_kind: Literal["deepcell", "ilastik"] = "deepcell",
    mpp: float = 1.0,
    modality: str = "imc",
    patient_key: str | None = None,
    overwrite: bool = False,
    standardization: bool | Mapping[str, Any] = True,
    tiling: bool | Mapping[str, Any] = True,
    progress: bool = False,
) -> Path:
    """Import a steinbock output folder as a spora cohort that passes :func:`spora_sd.validate`.

    Parameters
    ----------
    path
        The steinbock folder (with ``cells.h5ad``, ``panel.csv``, ``ome/``, ``masks_<labels_kind>/``).
    out
        The cohort folder (its name is the dataset key), or the datasets root with ``dataset``.
    dataset
        Dataset key (lower-case BibTeX-style key); default the name of ``out``.
    labels_kind
        Which masks: ``deepcell`` (``masks_deepcell/``) or ``ilastik`` (``masks_ilastik/``).
    mpp
        Microns per pixel (1.0 for IMC).
    modality
        The modality folder (``imc``).
    patient_key
        Column of the cell table with the raw patient id, e.g. ``image_source_file``.
    overwrite, standardization, tiling, progress
        As for :func:`spora_sd.from_spatialdata`.

    Returns
    -------
    Path
        The cohort folder.

    Raises
    ------
    CohortNotFoundError, CohortFormatError
        ``path`` is not a steinbock folder (the message names what is missing).
    ExportInputError
        What the cohort needs cannot be inferred (the message names the argument).
    """
    import spatialdata_io

    path = Path(path).expanduser()
    _check_folder(path, labels_kind)
    try:
        sdata = spatialdata_io.steinbock(path, labels_kind=labels_kind)
    except (ValueError, KeyError, OSError) as exc:
        raise CohortFormatError(path, "steinbock.read", f"spatialdata_io.steinbock failed: {exc}") from None
    logger.info("steinbock %s: %d images, %d labels", path, len(sdata.images), len(sdata.labels))
    return write_spatialdata(
        sdata,
        out,
        patient_key=patient_key,
        check_patient_key=True,
        dataset=dataset,
        mpp=mpp,
        modality=modality,
        overwrite=overwrite,
        standardization=standardization,
        tiling=tiling,
        progress=progress,
    )
