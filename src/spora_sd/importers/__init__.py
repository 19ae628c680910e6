"""Importers: other tools' outputs become spora cohorts in one call (or one ``spora-sd import`` command).

- :func:`from_ai4bmr`: the processed folder of ai4bmr-datasets (Jackson 2020, Danenberg 2022, Cords 2024,
  Keren 2018), read directly (:mod:`spora_sd.importers.ai4bmr`);
- :func:`from_steinbock`: a steinbock output folder, through ``spatialdata_io.steinbock``
  (:mod:`spora_sd.importers.steinbock`);
- :func:`from_mcmicro`: MCMICRO output folders, through ``spatialdata_io.mcmicro``
  (:mod:`spora_sd.importers.mcmicro`).

Every import streams one sample at a time, runs one task per sample on an active ``dask.distributed``
client, and is atomic: the target holds a complete valid cohort or nothing (the export's own writers,
:mod:`spora_sd.importers.cohort_writer`). Panel names become channel names through the cited table of
:mod:`spora_sd.importers.targets`.
"""

from __future__ import annotations

from spora_sd.importers.ai4bmr import from_ai4bmr
from spora_sd.importers.mcmicro import from_mcmicro
from spora_sd.importers.steinbock import from_steinbock

__all__ = ["RULES", "from_ai4bmr", "from_mcmicro", "from_steinbock"]

#: Rule ids of the errors that importers raise about their source folder (docs: the rules page).
RULES: dict[str, str] = {
    "ai4bmr.panel": "the ai4bmr panel.parquet is missing, unreadable, or its targets do not match the images",
    "ai4bmr.clinical": "the ai4bmr clinical.parquet is missing, unreadable, or lacks the patient column",
    "ai4bmr.cells": "an ai4bmr per-cell parquet file lacks the (sample_id, object_id) index or is unreadable",
    "ai4bmr.image": "an ai4bmr image TIFF is unreadable or not C x H x W",
    "ai4bmr.mask": "an ai4bmr mask TIFF is unreadable, not 2-D, or of another size than its image",
    "ai4bmr.intensity": "an ai4bmr intensity parquet file is unreadable or lacks panel targets",
    "steinbock.files": "a folder or file that a steinbock output must have is missing",
    "steinbock.read": "spatialdata-io's steinbock reader failed on the folder",
    "mcmicro.files": "a folder or file that an MCMICRO output must have is missing",
    "mcmicro.tma": "the MCMICRO output is a TMA run, which the importer does not read",
    "mcmicro.read": "spatialdata-io's MCMICRO reader failed on the folder",
}
