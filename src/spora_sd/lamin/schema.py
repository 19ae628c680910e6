"""The one curation schema of spora SpatialData artifacts, defined here and saved idempotently.

=========================  =============================================================================
slot                       what it validates
=========================  =============================================================================
``attrs:bio``              ``tissue`` (``bt.Tissue``), ``disease`` (``bt.Disease``), ``organism``
                           (``bt.Organism``)
``attrs:tech``             ``assay`` (``bt.ExperimentalFactor``)
``tables:cells:obs``       cell-type columns ``cell_type`` and ``cell_category`` (``bt.CellType``, or
                           ``ULabel`` for labels that no CL term fits), both optional
``tables:cells:var``       the markers: ``uniprot_id``, ``qc_pass``, ``is_nuclear_marker`` (optional)
``__external__``           ``dataset`` (key), ``n_tissues``, ``n_cells``, ``stored_as`` (``cohort``: the
                           folder in place; ``spatialdata``: a copy), ``format_version`` (of
                           ``sdata.attrs["spora"]``): for search and listing
=========================  =============================================================================

The curator is lamindb's own :class:`lamindb.curators.SpatialDataCurator`; see
:mod:`spora_sd.lamin.registration` for how the user's ``attrs`` are presented to it.

Examples
--------
Needs a LaminDB instance (:func:`spora_sd.lamin.init_instance`)::

    from spora_sd.lamin import spora_schema
    schema = spora_schema()
    sorted(schema.slots)
    # ['__external__', 'attrs:bio', 'attrs:tech', 'tables:cells:obs', 'tables:cells:var']
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from spora_sd.convert.element_names import CELL_TABLE
from spora_sd.errors import SporaError
from spora_sd.lamin.instance import quiet

if TYPE_CHECKING:
    import lamindb as ln

__all__ = ["CELL_TYPE_COLUMNS", "SCHEMA_NAME", "SLOT_BIO", "SLOT_OBS", "SLOT_TECH", "spora_schema"]

SCHEMA_NAME = "spora SpatialData"
SLOT_BIO = "attrs:bio"
SLOT_TECH = "attrs:tech"
SLOT_OBS = f"tables:{CELL_TABLE}:obs"
SLOT_VAR = f"tables:{CELL_TABLE}:var"
SLOT_EXTERNAL = "__external__"
#: obs columns validated as cell types (CL terms, or ULabels for labels without a CL term)
CELL_TYPE_COLUMNS = ("cell_type", "cell_category")
_CELL_TYPE_DTYPE = "cat[bionty.CellType|ULabel]"


def _feature(name: str, dtype: Any) -> ln.Feature:
    """An existing feature of that name and dtype, or a new one; a clash of dtypes is an error."""
    import lamindb as ln

    feature = ln.Feature(name=name, dtype=dtype)
    existing = ln.Feature.filter(name=name).first()
    if existing is None:
        return feature.save()
    if existing._dtype_str != feature._dtype_str:
        raise SporaError(
            f"the instance already has a feature {name!r} with dtype {existing._dtype_str!r}; spora-sd needs "
            f"{feature._dtype_str!r}. Use a separate LaminDB instance for spora cohorts, or rename that feature."
        )
    return existing


def spora_schema() -> ln.Schema:
    """The spora SpatialData schema of the current instance, created on first use.

    Calling it again returns the same saved schema: lamindb identifies a schema by the hash of its
    definition, so nothing new is created as long as this code does not change.

    Returns
    -------
    lamindb.Schema
        ``otype="SpatialData"`` with the slots listed in the module docstring.

    Examples
    --------
    Needs a LaminDB instance (:func:`spora_sd.lamin.init_instance`)::

        spora_schema().uid == spora_schema().uid
        # True
    """
    with quiet():  # lamindb's tips about feature types, and "returning existing ..." on every call
        return _define_schema()


def _define_schema() -> ln.Schema:
    import bionty as bt
    import lamindb as ln

    bio = ln.Schema(
        name="spora bio",
        features=[_feature("tissue", bt.Tissue), _feature("disease", bt.Disease), _feature("organism", bt.Organism)],
        coerce=True,
    ).save()
    tech = ln.Schema(name="spora tech", features=[_feature("assay", bt.ExperimentalFactor)], coerce=True).save()
    obs = ln.Schema(
        name="spora cell types",
        features=[_feature(col, _CELL_TYPE_DTYPE).with_config(optional=True) for col in CELL_TYPE_COLUMNS],
        coerce=True,
    ).save()
    var = ln.Schema(
        name="spora markers",
        features=[
            _feature("uniprot_id", str).with_config(optional=True),
            _feature("qc_pass", bool).with_config(optional=True),
            _feature("is_nuclear_marker", bool).with_config(optional=True),
        ],
        coerce=True,
    ).save()
    external = ln.Schema(
        name="spora cohort summary",
        features=[
            _feature("dataset", str),
            _feature("n_tissues", int),
            _feature("n_cells", int),
            _feature("stored_as", str),
            _feature("format_version", str),
        ],
    ).save()
    return ln.Schema(
        name=SCHEMA_NAME,
        otype="SpatialData",
        slots={SLOT_BIO: bio, SLOT_TECH: tech, SLOT_OBS: obs, SLOT_VAR: var, SLOT_EXTERNAL: external},
    ).save()
