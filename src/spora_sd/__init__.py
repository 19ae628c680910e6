"""spora-sd: spatial proteomics cohorts (the spora layout) as first-class SpatialData citizens.

>>> import spora_sd
>>> [name for name in ("open_cohort", "to_spatialdata", "SporaError") if name in spora_sd.__all__]
['open_cohort', 'to_spatialdata', 'SporaError']

Submodules are imported on first use (as spatialdata does), so ``import spora_sd`` stays fast and
does not pull in spatialdata, squidpy or lamindb until they are needed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from spora_sd import errors as _errors
from spora_sd._version import __version__ as __version__
from spora_sd.errors import *  # noqa: F403 (every exception, eagerly: errors.py imports nothing heavy)

# name -> module that defines it (exceptions aside); tests/test_init.py checks this against __all__.
_LAZY_IMPORTS: dict[str, str] = {
    "Cohort": "spora_sd.io.cohort",
    "open_cohort": "spora_sd.io.cohort",
    "validate": "spora_sd.validation.validator",
    "ValidationReport": "spora_sd.report",
    "Problem": "spora_sd.report",
    "make_synthetic_cohort": "spora_sd.datasets.synthetic",
    "to_spatialdata": "spora_sd.convert.to_spatialdata",
    "from_spatialdata": "spora_sd.convert.from_spatialdata",
    "from_ai4bmr": "spora_sd.importers.ai4bmr",
    "from_steinbock": "spora_sd.importers.steinbock",
    "from_mcmicro": "spora_sd.importers.mcmicro",
    "write_spatialdata": "spora_sd.convert.store",
    "write_qc_report": "spora_sd.qc.page",
    "compute_cell_intensities": "spora_sd.stats.intensities",
    "compute_standardization": "spora_sd.stats.standardization",
    "compute_tiling": "spora_sd.stats.tiling",
    "fetch": "spora_sd.io.fetch",
    "consolidate_images": "spora_sd.io.consolidate",
    "resolve_cohort": "spora_sd.datasets.registry",
    "cohorts": "spora_sd.datasets.registry",
    "view": "spora_sd.viewer.launch",
}

__all__ = [
    "Cohort",
    "Problem",
    "ValidationReport",
    "cohorts",
    "compute_cell_intensities",
    "compute_standardization",
    "compute_tiling",
    "consolidate_images",
    "fetch",
    "from_ai4bmr",
    "from_mcmicro",
    "from_spatialdata",
    "from_steinbock",
    "make_synthetic_cohort",
    "open_cohort",
    "resolve_cohort",
    "to_spatialdata",
    "validate",
    "view",
    "write_qc_report",
    "write_spatialdata",
    *_errors.__all__,
]

if TYPE_CHECKING:  # static imports for type checkers and IDEs
    from spora_sd.convert.from_spatialdata import from_spatialdata
    from spora_sd.convert.store import write_spatialdata
    from spora_sd.convert.to_spatialdata import to_spatialdata
    from spora_sd.datasets.registry import cohorts, resolve_cohort
    from spora_sd.datasets.synthetic import make_synthetic_cohort
    from spora_sd.importers.ai4bmr import from_ai4bmr
    from spora_sd.importers.mcmicro import from_mcmicro
    from spora_sd.importers.steinbock import from_steinbock
    from spora_sd.io.cohort import Cohort, open_cohort
    from spora_sd.io.consolidate import consolidate_images
    from spora_sd.io.fetch import fetch
    from spora_sd.qc.page import write_qc_report
    from spora_sd.report import Problem, ValidationReport
    from spora_sd.stats.intensities import compute_cell_intensities
    from spora_sd.stats.standardization import compute_standardization
    from spora_sd.stats.tiling import compute_tiling
    from spora_sd.validation.validator import validate
    from spora_sd.viewer.launch import view


def __getattr__(name: str) -> Any:
    if name in _LAZY_IMPORTS:
        module = importlib.import_module(_LAZY_IMPORTS[name])
        value = getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'spora_sd' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
