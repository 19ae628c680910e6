"""``spora-sd import {ai4bmr,steinbock,mcmicro} SRC OUT``: other tools' outputs become spora cohorts.

Each command is a thin wrapper around one function of :mod:`spora_sd.importers`; :mod:`spora_sd.cli.app`
mounts the group.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from spora_sd.cli.cohort import _Overwrite, _Standardization, _Tiling, _write_cohort
from spora_sd.cli.errors import handle_errors

__all__ = ["LabelsKind", "Segmentation", "ai4bmr", "import_app", "mcmicro", "steinbock"]

import_app = typer.Typer(
    help="Import ai4bmr-datasets, steinbock or MCMICRO outputs as spora cohorts (atomically; valid or nothing).",
    no_args_is_help=True,
)


class LabelsKind(StrEnum):
    """steinbock's mask folders (``masks_<kind>/``)."""

    deepcell = "deepcell"
    ilastik = "ilastik"


class Segmentation(StrEnum):
    """MCMICRO's masks."""

    cell = "cell"
    nuclei = "nuclei"


_Dataset = Annotated[
    str | None, typer.Option(help="Dataset key; default the registry key of a known dataset (required for others).")
]

#: steinbock and MCMICRO name no dataset: the cohort folder's name is the key unless --dataset says otherwise.
_Cohort = Annotated[Path, typer.Argument(help="Cohort folder (its name is the dataset key), or root with --dataset.")]
_DatasetOfCohort = Annotated[str | None, typer.Option(help="Dataset key; default the name of OUT.")]


@import_app.command()
@handle_errors
def ai4bmr(
    src: Annotated[
        Path,
        typer.Argument(
            help="The ai4bmr dataset folder (e.g. ~/.cache/ai4bmr_datasets/Jackson2020) or its 02_processed."
        ),
    ],
    out: Annotated[Path, typer.Argument(help="Datasets root (the cohort goes to OUT/<dataset>) or the cohort folder.")],
    dataset: _Dataset = None,
    patient_key: Annotated[
        str | None, typer.Option(help="clinical.parquet column with the raw patient id (default: per dataset).")
    ] = None,
    cell_type_key: Annotated[
        str | None, typer.Option(help="Per-cell column that becomes cell_type (default: per dataset).")
    ] = None,
    image_version: Annotated[str, typer.Option(help="Folder under images/.")] = "published",
    mask_version: Annotated[str | None, typer.Option(help="Folder under masks/ (default: whole-cell masks).")] = None,
    metadata_version: Annotated[str | None, typer.Option(help="Folder under metadata/ (annotations).")] = None,
    feature_version: Annotated[str | None, typer.Option(help="Folder under features/intensity/.")] = None,
    mpp: Annotated[float, typer.Option(help="Microns per pixel (1.0 for IMC and MIBI).")] = 1.0,
    overwrite: _Overwrite = False,
    standardization: _Standardization = True,
    tiling: _Tiling = True,
) -> None:
    """Import a processed ai4bmr-datasets folder (Jackson 2020, Danenberg 2022, Cords 2024, Keren 2018).

    → Python: ``spora_sd.importers.from_ai4bmr(src, out, ...)``
    """
    options = dict(locals())  # first statement: exactly the command's options
    from spora_sd.importers.ai4bmr import from_ai4bmr

    _write_cohort(from_ai4bmr, options)


@import_app.command()
@handle_errors
def steinbock(
    src: Annotated[Path, typer.Argument(help="The steinbock folder (cells.h5ad, panel.csv, ome/, masks_*/).")],
    out: _Cohort,
    dataset: _DatasetOfCohort = None,
    labels_kind: Annotated[LabelsKind, typer.Option(help="Which masks (masks_<kind>/).")] = LabelsKind.deepcell,
    mpp: Annotated[float, typer.Option(help="Microns per pixel (1.0 for IMC).")] = 1.0,
    modality: Annotated[str, typer.Option(help="Modality folder.")] = "imc",
    patient_key: Annotated[
        str | None, typer.Option(help="Cell-table column with the raw patient id, e.g. image_source_file.")
    ] = None,
    overwrite: _Overwrite = False,
    standardization: _Standardization = True,
    tiling: _Tiling = True,
) -> None:
    """Import a steinbock output folder (through spatialdata-io's reader).

    → Python: ``spora_sd.importers.from_steinbock(src, out, ...)``
    """
    options = dict(locals())  # first statement: exactly the command's options
    from spora_sd.importers.steinbock import from_steinbock

    _write_cohort(from_steinbock, options)


@import_app.command()
@handle_errors
def mcmicro(
    src: Annotated[Path, typer.Argument(help="One MCMICRO output folder (markers.csv) or a folder of them.")],
    out: _Cohort,
    dataset: _DatasetOfCohort = None,
    segmentation: Annotated[Segmentation, typer.Option(help="Which masks become the cells.")] = Segmentation.cell,
    mpp: Annotated[
        float | None, typer.Option(help="Microns per pixel; default PhysicalSizeX of the registration image.")
    ] = None,
    modality: Annotated[str, typer.Option(help="Modality folder (cycif, codex, ...).")] = "cycif",
    patient_key: Annotated[str | None, typer.Option(help="Quantification column with the raw patient id.")] = None,
    overwrite: _Overwrite = False,
    standardization: _Standardization = True,
    tiling: _Tiling = True,
) -> None:
    """Import MCMICRO outputs, one sample per folder (through spatialdata-io's reader).

    → Python: ``spora_sd.importers.from_mcmicro(src, out, ...)``
    """
    options = dict(locals())  # first statement: exactly the command's options
    from spora_sd.importers.mcmicro import from_mcmicro

    _write_cohort(from_mcmicro, options)
