"""The JSON Schemas of the layout's tables: loading (:mod:`.loading`), the column checker
(:mod:`.checker`) and the Markdown rendering for the docs (:mod:`.markdown`); also the one non-table schema,
that of ``sdata.attrs["spora"]`` (:func:`.loading.load_attrs_schema`) and that of a cohort's content manifest
(:func:`.loading.load_manifest_schema`).

>>> from spora_sd.layout.schemas import SCHEMA_KINDS
>>> SCHEMA_KINDS[:2]
('tissues', 'cells')
"""

from spora_sd.layout.schemas.checker import check_table, ensure_valid_table
from spora_sd.layout.schemas.loading import (
    ATTRS_SCHEMA_FILE,
    DTYPE_FAMILIES,
    MANIFEST_SCHEMA_FILE,
    RULES,
    SCHEMA_KINDS,
    load_attrs_schema,
    load_manifest_schema,
    load_schema,
    schema_dir,
)
from spora_sd.layout.schemas.markdown import schema_markdown

__all__ = [
    "ATTRS_SCHEMA_FILE",
    "DTYPE_FAMILIES",
    "MANIFEST_SCHEMA_FILE",
    "RULES",
    "SCHEMA_KINDS",
    "check_table",
    "ensure_valid_table",
    "load_attrs_schema",
    "load_manifest_schema",
    "load_schema",
    "schema_dir",
    "schema_markdown",
]
