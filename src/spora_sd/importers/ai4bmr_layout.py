"""The processed folder that ai4bmr-datasets writes: its paths, the facts known per dataset, checked reads.

Checked against the source of ai4bmr-datasets (AI4SCR/ai4bmr-datasets, main at commit 9d67ca6 of
2026-04-21, the 2.1 series):

- ``src/ai4bmr_datasets/datasets/BaseIMCDataset.py``: the folder names (``processed_dir`` =
  ``<base_dir>/02_processed``; ``images/<version>/<sample_id>.tiff`` and ``images/<version>/panel.parquet``
  from ``get_image_version_dir``/``get_panel_path``; ``masks/<version>/``; ``metadata/clinical.parquet``;
  ``metadata/<version>/``; ``features/intensity/<version>/`` and ``features/spatial/<version>/``), the
  ``setup()`` checks (``panel.index.name == "channel_index"``, a ``target`` column, ``clinical.index.name
  == "sample_id"``, per-cell index names ``("sample_id", "object_id")``), hidden files skipped
  (``not p.name.startswith('.')``), and ``resolve_base_dir`` (``$AI4BMR_DATASETS_DIR/<name>``, else
  ``~/.cache/ai4bmr_datasets/<name>``).
- ``src/ai4bmr_datasets/utils/io.py``: images are written by ``tifffile.imwrite(..., compression="zstd")``
  (``DEFAULT_TIFF_COMPRESSION``), masks by ``save_mask`` (deflate).
- ``Jackson2020.py`` (``name = "Jackson2020"``): clinical columns are ``tidy_name``'d from
  ``Basel_PatientMetadata.csv``/``Zuri_PatientMetadata.csv``, whose patient column ``PID`` becomes
  ``pid``; per-cell ``cell_type`` from ``Metacluster_annotations.csv`` (``create_metadata``).
- ``Danenberg.py`` (``name = "Danenberg2022"``): masks ``published_cell`` and ``published_nucleus``
  (``create_masks``); ``metabric_id`` in the clinical table (``create_clinical_metadata``); per-cell
  ``cell_phenotype`` (the published phenotype) and ``label`` (its tidy form).
- ``Cords2024.py`` (``name = "Cords2024"``): clinical ``patient_id`` (``'Control'`` for control cores,
  flagged ``is_control``); per-cell ``cell_category``, ``cell_type``, ``cell_subtype``.
- ``Keren2018.py`` (``name = "Keren2018"``): ``sample_id`` equals ``patient_id`` (one image per
  patient, ``create_clinical_metadata``); per-cell ``label_name`` (immune group, else group); masks keep
  the raw labels, where borders and background are 0 and ids start at 2 (``assert 1 not in mask.flat``).

Examples
--------
>>> KNOWN_DATASETS["Jackson2020"].key
'jackson2020single'
>>> Ai4bmrPaths("/data/Jackson2020").panel("published").as_posix()
'/data/Jackson2020/02_processed/images/published/panel.parquet'
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from spora_sd.errors import CohortFormatError, CohortNotFoundError

__all__ = [
    "KNOWN_DATASETS",
    "PROCESSED_DIR",
    "Ai4bmrDataset",
    "Ai4bmrPaths",
    "default_root",
    "read_cell_table",
    "read_clinical",
    "read_panel",
    "samples",
]

#: ``BaseIMCDataset.processed_dir``: the processed data under a dataset's base folder.
PROCESSED_DIR = "02_processed"
_ENV = "AI4BMR_DATASETS_DIR"
_INDEX = ("sample_id", "object_id")
_TIFF = ".tiff"
_PARQUET = ".parquet"


@dataclass(frozen=True)
class Ai4bmrDataset:
    """What is known of one ai4bmr dataset (see the module docstring for where each fact comes from)."""

    #: The dataset class's ``name`` (also its folder name).
    name: str
    #: The spora dataset key (``spora_sd.datasets.registry``), so the cohort resolves by its aliases.
    key: str
    #: Column of ``clinical.parquet`` with the raw patient identifier.
    patient_key: str
    #: Per-cell column that becomes ``cell_type``.
    cell_type_key: str
    modality: str = "imc"
    #: The mask version that holds whole-cell masks.
    mask_version: str = "published"


KNOWN_DATASETS: dict[str, Ai4bmrDataset] = {
    d.name: d
    for d in (
        Ai4bmrDataset("Jackson2020", "jackson2020single", "pid", "cell_type"),
        Ai4bmrDataset("Danenberg2022", "danenberg2022breast", "metabric_id", "cell_phenotype", "imc", "published_cell"),
        Ai4bmrDataset("Cords2024", "cords2024cancer", "patient_id", "cell_type"),
        Ai4bmrDataset("Keren2018", "keren2018structured", "patient_id", "label_name", "mibi"),
    )
}


def default_root(name: str) -> Path:
    """Where ai4bmr-datasets puts dataset ``name`` (``BaseIMCDataset.resolve_base_dir``).

    >>> default_root("Jackson2020").name
    'Jackson2020'
    """
    base = os.environ.get(_ENV)
    return (Path(base) if base else Path.home() / ".cache" / "ai4bmr_datasets") / name


class Ai4bmrPaths:
    """The files of one processed ai4bmr dataset (``<base>/02_processed/...``).

    ``base`` may be the dataset folder (``.../Jackson2020``) or its ``02_processed`` folder.
    """

    def __init__(self, base: str | Path) -> None:
        base = Path(base).expanduser()
        self.base = base.parent if base.name == PROCESSED_DIR else base
        self.processed = self.base / PROCESSED_DIR

    @property
    def name(self) -> str:
        """The dataset's name: its folder name (``Jackson2020``)."""
        return self.base.name

    def images_dir(self, version: str) -> Path:
        return self.processed / "images" / version

    def panel(self, version: str) -> Path:
        return self.images_dir(version) / "panel.parquet"

    def masks_dir(self, version: str) -> Path:
        return self.processed / "masks" / version

    @property
    def clinical(self) -> Path:
        return self.processed / "metadata" / "clinical.parquet"

    def metadata_dir(self, version: str) -> Path:
        return self.processed / "metadata" / version

    def intensity_dir(self, version: str) -> Path:
        return self.processed / "features" / "intensity" / version

    def versions(self, kind: str) -> list[str]:
        """The versions present for ``images``, ``masks``, ``metadata`` or ``intensity``."""
        parent = {
            "images": self.processed / "images",
            "masks": self.processed / "masks",
            "metadata": self.processed / "metadata",
            "intensity": self.processed / "features" / "intensity",
        }[kind]
        if not parent.is_dir():
            return []
        return sorted(p.name for p in parent.iterdir() if p.is_dir() and not p.name.startswith("."))

    def check(self) -> None:
        """Fail with a message that says what is missing when this is not a processed ai4bmr folder."""
        if not self.processed.is_dir():
            raise CohortNotFoundError(
                f"{self.base}: no {PROCESSED_DIR}/ folder; pass the folder of one ai4bmr dataset (e.g. "
                f"{default_root('Jackson2020')}) after running its prepare_data()"
            )


def samples(folder: Path, suffix: str) -> dict[str, Path]:
    """``sample_id -> file`` for the visible files ``<sample_id><suffix>`` of a folder (none if it is missing).

    The ids come from the file names on disk, so a path built from an id never leaves the folder.
    """
    if not folder.is_dir():
        return {}
    return {
        p.name[: -len(suffix)]: p
        for p in sorted(folder.iterdir())
        if p.name.endswith(suffix) and not p.name.startswith(".") and p.is_file()
    }


def _read_parquet(path: Path, rule: str) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except FileNotFoundError:
        raise CohortNotFoundError(f"{path}: missing (needed by the ai4bmr importer)") from None
    except Exception as exc:  # noqa: BLE001 - pyarrow raises many types; all mean "not a readable table"
        raise CohortFormatError(path, rule, f"not a readable Parquet file ({type(exc).__name__}: {exc})") from None


def read_panel(path: Path) -> pd.DataFrame:
    """``panel.parquet``, sorted by ``channel_index`` (the position in the image stack), checked."""
    panel = _read_parquet(path, "ai4bmr.panel")
    if panel.index.name != "channel_index" or "target" not in panel.columns:
        raise CohortFormatError(
            path,
            "ai4bmr.panel",
            f"a panel needs the index 'channel_index' and a column 'target' (found index {panel.index.name!r}, "
            f"columns {list(map(str, panel.columns))})",
        )
    panel = panel.sort_index()
    positions = panel.index.to_numpy()
    if list(positions) != list(range(len(panel))):
        raise CohortFormatError(path, "ai4bmr.panel", f"channel_index must be 0..{len(panel) - 1}, got {positions}")
    targets = panel["target"].astype(str)
    if targets.duplicated().any() or panel["target"].isna().any():
        raise CohortFormatError(
            path, "ai4bmr.panel", f"targets must be unique and present: {targets[targets.duplicated()].tolist()}"
        )
    return panel


def read_clinical(path: Path) -> pd.DataFrame:
    """``clinical.parquet`` (index ``sample_id`` as strings), checked."""
    clinical = _read_parquet(path, "ai4bmr.clinical")
    if clinical.index.name != "sample_id":
        raise CohortFormatError(
            path, "ai4bmr.clinical", f"the index must be 'sample_id', found {clinical.index.name!r}"
        )
    clinical.index = clinical.index.astype(str)
    if clinical.index.duplicated().any():
        raise CohortFormatError(
            path, "ai4bmr.clinical", f"repeated sample ids: {sorted(set(clinical.index[clinical.index.duplicated()]))}"
        )
    return clinical


def read_cell_table(path: Path, sample_id: str) -> pd.DataFrame:
    """A per-cell table of one sample (annotations or intensities), indexed by ``object_id`` (int64)."""
    table = _read_parquet(path, "ai4bmr.cells")
    if tuple(table.index.names) != _INDEX:
        raise CohortFormatError(
            path, "ai4bmr.cells", f"the index must be ('sample_id', 'object_id'), found {tuple(table.index.names)}"
        )
    ids = table.index.get_level_values("sample_id").astype(str)
    if not (ids == sample_id).all():
        raise CohortFormatError(
            path, "ai4bmr.cells", f"rows of other samples than {sample_id!r}: {sorted(set(ids) - {sample_id})[:3]}"
        )
    objects = pd.to_numeric(pd.Series(table.index.get_level_values("object_id")), errors="coerce")
    if objects.isna().any() or (objects % 1 != 0).any() or (objects < 1).any():
        raise CohortFormatError(path, "ai4bmr.cells", "object_id must hold the positive integer mask labels")
    table.index = pd.Index(objects.astype("int64").to_numpy(), name="object_id")
    if table.index.duplicated().any():
        raise CohortFormatError(path, "ai4bmr.cells", "repeated object_id")
    return table
