"""Names of SpatialData elements made from a cohort.

One scheme, parsed back by :func:`parse_element_name`. Tissue ids contain single underscores, so
the parts are joined by a double underscore ``__``:

==========================  =============================================================
element                     name
==========================  =============================================================
image                       ``<tissue_id>__<modality>`` (``..._0000__imc``, ``..._0000__he``)
cell instance labels        ``<tissue_id>__cells``
tissue mask labels          ``<tissue_id>__tissue``
semantic mask labels        ``<tissue_id>__<task>`` (``..._0000__cell_types``)
cell table                  ``cells``
tissue metadata table       ``tissues``
==========================  =============================================================

Every element of a tissue lives in the coordinate system named by its tissue id, in micrometers.
The reverse map from element names to spora files is part of ``sdata.attrs["spora"]``, whose format is
:mod:`spora_sd.convert.attrs`.

Examples
--------
>>> image_name("jackson2020single_a1b2c3d4_0000", "imc")
'jackson2020single_a1b2c3d4_0000__imc'
>>> parse_element_name("jackson2020single_a1b2c3d4_0000__cell_types")
ElementName(tissue_id='jackson2020single_a1b2c3d4_0000', kind='semantic', part='cell_types')
"""

from __future__ import annotations

from typing import Literal, NamedTuple

from spora_sd import layout
from spora_sd.errors import LayoutNameError

__all__ = [
    "CELL_TABLE",
    "CELLS_LABELS",
    "SEP",
    "TISSUE_LABELS",
    "TISSUE_TABLE",
    "ElementName",
    "check_task_name",
    "image_name",
    "labels_name",
    "parse_element_name",
]

SEP = "__"
CELL_TABLE = "cells"
TISSUE_TABLE = "tissues"
CELLS_LABELS = "cells"
TISSUE_LABELS = "tissue"
#: Region key and instance key of the cell table (the instance key is the mask label).
REGION_KEY = "region"
INSTANCE_KEY = "cell_id"

ElementKind = Literal["image", "cells", "tissue", "semantic"]


class ElementName(NamedTuple):
    tissue_id: str
    kind: ElementKind
    part: str  # modality for images, task for semantic masks, "cells"/"tissue" otherwise


def check_task_name(task: str) -> str:
    """A task name that cannot be confused with the other parts of an element name."""
    layout.check_task(task)
    try:
        layout.check_modality(task)
        is_modality = True
    except LayoutNameError:
        is_modality = False
    if task in (CELLS_LABELS, TISSUE_LABELS) or is_modality:
        raise LayoutNameError(f"Invalid mask task {task!r}: the name is reserved for other elements")
    return task


def image_name(tissue_id: str, modality: str) -> str:
    return f"{layout.check_tissue_id(tissue_id)}{SEP}{layout.check_modality(modality)}"


def labels_name(tissue_id: str, what: str) -> str:
    """``what`` is ``"cells"``, ``"tissue"`` or a semantic-mask task name."""
    if what not in (CELLS_LABELS, TISSUE_LABELS):
        check_task_name(what)
    return f"{layout.check_tissue_id(tissue_id)}{SEP}{what}"


def parse_element_name(name: str) -> ElementName:
    """Split an element name made by :func:`image_name` or :func:`labels_name`."""
    tissue_id, sep, part = name.partition(SEP)
    if not sep or not layout.is_tissue_id(tissue_id) or not part:
        raise LayoutNameError(f"Invalid element name {name!r}: expected '<tissue_id>{SEP}<part>'")
    if part == CELLS_LABELS:
        return ElementName(tissue_id, "cells", part)
    if part == TISSUE_LABELS:
        return ElementName(tissue_id, "tissue", part)
    try:
        layout.check_modality(part)
        return ElementName(tissue_id, "image", part)
    except LayoutNameError:
        pass
    check_task_name(part)
    return ElementName(tissue_id, "semantic", part)
