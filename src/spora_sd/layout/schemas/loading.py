"""The JSON Schemas of the layout's tables: which kinds exist, their rule ids, and loading them.

The files ``json/<kind>.schema.json`` (also at the repository's top-level ``schemas/``) are the single
description of every table of a cohort. Each describes *one row* as a JSON object, in plain JSON Schema
2020-12, so any validator can check single rows; spora extension keywords (``x-dtype``, ``x-unique``,
``x-index``, ``x-channel-columns``, ... documented in each file's ``$comment``) say what a row-wise validator
cannot: dtypes, keys, the pandas index and channel columns. :mod:`.checker` applies them to whole tables.

Two files in that folder are not table schemas: :data:`ATTRS_SCHEMA_FILE` describes ``sdata.attrs["spora"]``,
the JSON object that :mod:`spora_sd.convert.attrs` writes into every SpatialData (:func:`load_attrs_schema`
loads it), and :data:`MANIFEST_SCHEMA_FILE` a cohort's content manifest ``metadata/manifest.json``
(:mod:`spora_sd.io.manifest`; :func:`load_manifest_schema`).

Examples
--------
>>> load_schema("cells")["required"]
['tissue_id', 'cell_id']
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
from jsonschema import Draft202012Validator

from spora_sd.errors import LayoutNameError

__all__ = [
    "ATTRS_SCHEMA_FILE",
    "BOUNDS",
    "DTYPE_FAMILIES",
    "MANIFEST_SCHEMA_FILE",
    "RULES",
    "SCHEMA_KINDS",
    "cached_schema",
    "is_nullable",
    "load_attrs_schema",
    "load_manifest_schema",
    "load_schema",
    "schema_dir",
]

SCHEMA_KINDS: tuple[str, ...] = (
    "tissues",
    "cells",
    "channels",
    "channels_per_tissue",
    "standardization_image",
    "standardization_global",
    "tile_coordinates",
    "tile_stats",
    "label_encoder",
)

#: The one schema file of :func:`schema_dir` that is not a table kind: ``sdata.attrs["spora"]``.
ATTRS_SCHEMA_FILE = "spora_attrs.schema.json"
#: The other one: a cohort's content manifest, ``metadata/manifest.json``.
MANIFEST_SCHEMA_FILE = "manifest.schema.json"

#: The dtype families that ``x-dtype`` may name (an all-null column fits every family).
DTYPE_FAMILIES: tuple[str, ...] = (
    "string",
    "category-of-string",
    "integer",
    "unsignedinteger",
    "floating",
    "boolean",
)

#: Stable rule ids of table problems and what each means (documented on the docs' rules page).
RULES: dict[str, str] = {
    "table.unreadable": "The file cannot be read as one Apache Parquet table (missing, a folder, truncated, not "
    "Parquet, or with corrupt pandas metadata).",
    "table.column.name": "A column name is not a string (Parquet needs string names); as a warning, a name that "
    "breaks the naming convention (lower-case snake_case except channel names; the label encoder's columns are "
    "read as 'name' and 'id').",
    "table.column.duplicate": "Two or more columns share one name.",
    "table.column.missing": "A required column is missing (or, in a positional table, there are too few columns).",
    "table.column.unexpected": "A column that this table does not allow (the schema's additionalProperties is false).",
    "table.column.dtype": "A column's dtype is not one of the families its schema allows (x-dtype), or its values "
    "mix types so that it cannot be stored as a typed Parquet column.",
    "table.column.null": "A column that may not be empty holds missing values (null, None, NaN, pd.NA).",
    "table.column.pattern": "String values that do not match the column's pattern.",
    "table.column.enum": "Values outside the column's list of allowed values.",
    "table.column.range": "Numbers outside the column's minimum/maximum.",
    "table.key.duplicate": "Rows that repeat a key (x-unique), e.g. the same (tissue_id, cell_id) twice.",
    "table.index": "The pandas index is not what the layout needs: a column stored as the index (or vice versa), "
    "or an index with an unexpected name.",
    "table.rows": "The table has too few or too many rows (x-rows), e.g. a global statistics table that is not "
    "a single row.",
    "table.channels.mismatch": "The channel columns differ from the channel list of channels.parquet: missing, "
    "extra or out of order.",
    "table.dataset.mismatch": "Tissue ids that do not start with the cohort's dataset key.",
    "table.tissue_id.parts": "A tissue id that is not '<dataset>_<patient_id>_<specimen_id>' of its own row.",
}

# (keyword, Arrow kernel that flags a value breaking it, how to say the bound)
BOUNDS: tuple[tuple[str, Callable[..., Any], str], ...] = (
    ("minimum", pc.less, ">="),
    ("exclusiveMinimum", pc.less_equal, ">"),
    ("maximum", pc.greater, "<="),
    ("exclusiveMaximum", pc.greater_equal, "<"),
)


def schema_dir() -> Path:
    """Folder that holds the ``<kind>.schema.json`` files.

    Returns
    -------
    Path
        ``spora_sd/layout/schemas/json`` inside the installed package.

    Examples
    --------
    >>> sorted(p.name for p in schema_dir().glob("*.schema.json"))[:2]
    ['cells.schema.json', 'channels.schema.json']
    """
    return Path(__file__).resolve().parent / "json"


@functools.cache
def cached_schema(kind: str) -> dict[str, Any]:
    """The parsed, meta-validated schema of ``kind``, shared (do not mutate; :func:`load_schema` copies)."""
    if kind not in SCHEMA_KINDS:
        raise LayoutNameError(f"Unknown table kind {kind!r}; valid kinds: {', '.join(SCHEMA_KINDS)}")
    return _schema_file(f"{kind}.schema.json")


@functools.cache
def _schema_file(name: str) -> dict[str, Any]:
    """One schema file of :func:`schema_dir`, parsed and checked against the 2020-12 meta-schema once."""
    schema = json.loads((schema_dir() / name).read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return schema


def load_schema(kind: str) -> dict[str, Any]:
    """Load the JSON Schema of one table kind.

    The file is parsed and checked against the JSON Schema 2020-12 meta-schema once per process; each call
    returns a fresh copy, so callers may modify it.

    Parameters
    ----------
    kind
        One of :data:`SCHEMA_KINDS`.

    Returns
    -------
    dict
        The schema, describing one row of the table.

    Raises
    ------
    LayoutNameError
        If ``kind`` is not a known table kind (the message lists the valid ones).

    Examples
    --------
    >>> load_schema("cells")["required"]
    ['tissue_id', 'cell_id']
    >>> load_schema("tissues")["x-unique"]
    [['tissue_id', 'modality']]
    """
    return copy.deepcopy(cached_schema(kind))


def load_attrs_schema() -> dict[str, Any]:
    """Load the JSON Schema of ``sdata.attrs["spora"]`` (:data:`ATTRS_SCHEMA_FILE`; not a table kind).

    Parsed and meta-validated once per process; each call returns a fresh copy.

    Returns
    -------
    dict
        The schema (JSON Schema 2020-12), describing the whole ``attrs["spora"]`` object.

    Examples
    --------
    >>> load_attrs_schema()["required"][:2]
    ['format_version', 'dataset']
    """
    return copy.deepcopy(_schema_file(ATTRS_SCHEMA_FILE))


def load_manifest_schema() -> dict[str, Any]:
    """Load the JSON Schema of a cohort's ``metadata/manifest.json`` (:data:`MANIFEST_SCHEMA_FILE`; not a table kind).

    Parsed and meta-validated once per process; each call returns a fresh copy.

    Examples
    --------
    >>> load_manifest_schema()["required"]
    ['manifest_version', 'algorithm', 'files']
    """
    return copy.deepcopy(_schema_file(MANIFEST_SCHEMA_FILE))


def _types(spec: dict[str, Any]) -> list[str]:
    kind = spec.get("type", [])
    return [kind] if isinstance(kind, str) else list(kind)


def is_nullable(spec: dict[str, Any]) -> bool:
    return bool(spec.get("x-nullable", "null" in _types(spec)))
