"""What every importer shares: where the cohort goes, its tissue ids, and the end of the write.

The importers write through the export's own machinery (:mod:`spora_sd.convert.from_spatialdata`):
the cohort is built in a hidden sibling folder (:func:`spora_sd.io.atomic.export_workspace`), its tables
go through the schema-checked writers, the derived products are computed by the same calls, and the
content manifest is the last file. So an import is atomic and crash-safe exactly as an export is.

Examples
--------
>>> ids = assign_tissue_ids({"s1": "P1", "s2": "P1", "s3": "P2"}, "demo2025x")
>>> sorted(i[-4:] for i in ids.values())
['0000', '0000', '0001']
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from spora_sd import layout
from spora_sd.convert.from_spatialdata import (
    _derived_products,
    _options,
    _resolve_target,
    _write_tables,
    from_spatialdata,
)
from spora_sd.convert.plan import ExportPlan
from spora_sd.errors import ExportInputError
from spora_sd.importers.targets import name_table_channels
from spora_sd.io.manifest import write_manifest

__all__ = [
    "assign_tissue_ids",
    "finish_cohort",
    "resolve_target",
    "snake_case",
    "snake_case_obs",
    "write_spatialdata",
]

logger = logging.getLogger(__name__)


def resolve_target(out: str | Path, dataset: str | None) -> tuple[Path, str]:
    """The cohort folder and its dataset key, as :func:`spora_sd.from_spatialdata` resolves them.

    With a dataset key, ``out`` is the cohort folder when its name is the key, else the datasets root
    that ``out/<dataset>`` goes into.
    """
    return _resolve_target(out, dataset)


def assign_tissue_ids(raw_patients: Mapping[str, str], dataset: str) -> dict[str, str]:
    """``sample -> tissue id``: patients hashed, specimens numbered per patient in sample order.

    Parameters
    ----------
    raw_patients
        ``sample name -> raw patient identifier``.
    dataset
        The dataset key (part of the hash, so ids differ between cohorts).
    """
    by_patient: dict[str, list[str]] = defaultdict(list)
    for sample, raw in raw_patients.items():
        by_patient[str(raw)].append(sample)
    seen: dict[str, str] = {}
    out: dict[str, str] = {}
    for raw, group in sorted(by_patient.items()):
        digest = layout.patient_hash(raw, dataset)
        if digest in seen:
            raise ExportInputError(
                f"patients {seen[digest]!r} and {raw!r} have the same 8-character hash {digest!r}; pass another dataset key"
            )
        seen[digest] = raw
        for specimen, sample in enumerate(sorted(group)):
            out[sample] = layout.compose_tissue_id(dataset, digest, specimen)
    return out


def finish_cohort(
    plan: ExportPlan,
    work: Path,
    *,
    standardization: bool | Mapping[str, Any],
    tiling: bool | Mapping[str, Any],
    progress: bool,
) -> None:
    """Write the tables, the derived products and, last, the content manifest into ``work``."""
    _write_tables(plan, work)
    _derived_products(plan, work, _options(standardization), _options(tiling), progress)
    write_manifest(work)


def snake_case(name: str) -> str:
    """A column name in the layout's lower-case snake_case (MCMICRO and steinbock use CamelCase and ``-``).

    >>> snake_case("MajorAxisLength"), snake_case("centroid-0"), snake_case("X_centroid")
    ('major_axis_length', 'centroid_0', 'x_centroid')
    """
    name = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", str(name).strip())
    return re.sub(r"[^0-9a-zA-Z]+", "_", name).strip("_").lower()


def snake_case_obs(sdata: Any, keep: set[str]) -> None:
    """Rename the ``obs`` columns of every table to snake_case, except ``keep`` and the table's own keys.

    A renamed column that would collide with another keeps its name.
    """
    from spatialdata.models import get_table_keys

    for table in sdata.tables.values():
        _, region_key, instance_key = get_table_keys(table)
        fixed = keep | {region_key, instance_key}
        columns = [str(c) for c in table.obs.columns]
        renames = {c: snake_case(c) for c in columns if c not in fixed and snake_case(c) != c}
        taken = set(columns) - set(renames)
        renames = {
            old: new
            for old, new in renames.items()
            if new and new not in taken and list(renames.values()).count(new) == 1
        }
        if renames:
            table.obs = table.obs.rename(columns=renames)
            logger.debug("cell-table columns renamed to snake_case: %s", renames)


def write_spatialdata(
    sdata: Any, out: str | Path, *, patient_key: str | None, check_patient_key: bool = False, **options: Any
) -> Path:
    """Write a SpatialData read by spatialdata-io (steinbock, MCMICRO) as a cohort.

    The steps both importers share: the tables' channel names mapped to HUGO symbols (as the images'
    channels are, so the ``cells.parquet`` columns match), the ``obs`` columns in snake_case (all but
    ``patient_key``), then :func:`spora_sd.from_spatialdata` with ``patient_key`` and ``options``.

    Parameters
    ----------
    check_patient_key
        Raise :class:`ExportInputError` listing the cell-table columns when ``patient_key`` names none
        of them (checked after the snake_case renaming, so a renamed column counts).
    options
        The other keyword arguments of :func:`spora_sd.from_spatialdata` (``dataset``, ``mpp``, ...).

    Examples
    --------
    >>> import numpy as np, spatialdata as sd, tempfile, pathlib
    >>> from spatialdata.models import Image2DModel
    >>> img = Image2DModel.parse(np.zeros((1, 30, 30), "uint16"), dims=("c", "y", "x"), c_coords=["DNA1"])
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> write_spatialdata(sd.SpatialData(images={"s1_image": img}), root / "demo2025x", patient_key=None, mpp=1.0).name
    'demo2025x'
    """
    name_table_channels(sdata)
    snake_case_obs(sdata, keep={patient_key} if patient_key else set())
    if check_patient_key and patient_key is not None:
        if not any(patient_key in t.obs.columns for t in sdata.tables.values()):
            columns = sorted({str(c) for t in sdata.tables.values() for c in t.obs.columns})
            raise ExportInputError(f"patient_key={patient_key!r} is not a column of the cell table; columns: {columns}")
    return from_spatialdata(sdata, out, patient_key=patient_key, **options)
