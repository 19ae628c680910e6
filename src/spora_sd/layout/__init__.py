"""The spora format: its vocabulary (:mod:`.names`), its paths (:mod:`.paths`) and its table schemas
(:mod:`.schemas`). Pure: no I/O beyond reading its own schema files.

Modules elsewhere use it as a namespace (``layout.CohortPaths``, ``layout.check_tissue_id``), so a
spelling of the spec is looked up in one place.

>>> from spora_sd import layout
>>> layout.CohortPaths("/data/x2020").tissues.as_posix()
'/data/x2020/metadata/tissues.parquet'
"""

from spora_sd.layout.names import *  # noqa: F403
from spora_sd.layout.names import __all__ as _names_all
from spora_sd.layout.paths import *  # noqa: F403
from spora_sd.layout.paths import __all__ as _paths_all

__all__ = [*_names_all, *_paths_all]
