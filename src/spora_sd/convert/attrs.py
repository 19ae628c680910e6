"""The ``sdata.attrs["spora"]`` format: its only writer and reader.

Every SpatialData made by :func:`spora_sd.to_spatialdata` carries in ``sdata.attrs["spora"]`` a JSON
object that says where every element came from and how the cohort's tables were spelled, so that
:func:`spora_sd.from_spatialdata` writes the cohort back exactly. ``SpatialData.write`` keeps it in the
``.zarr`` store, so it is a file format: this module builds it (:func:`build_spora_attrs`), reads and
checks it (:func:`read_spora_attrs`), and upgrades older versions (:func:`upgrade_spora_attrs`). No
other module indexes into it; they use the accessors of :class:`SporaAttrs`. Its JSON Schema is
``schemas/spora_attrs.schema.json`` (:func:`spora_sd.layout.schemas.load_attrs_schema`)::

    format_version, dataset, spora_sd_version, modalities, resolution, resolutions {modality: mpp},
    mask_resolution, tissue_mask_resolution
    elements: {element name: {kind, file, tissue_id, mpp, modality | task}}   # the reverse map
    tables: {cells: {kind: "table", file}, tissues: {...}}
    label_encoders: {task: {category name: value}}
    channels: {modality: {file, columns, dtypes, records}}                    # channels.parquet
    channels_per_tissue: {modality: {tissue_id: [channel, ...]}}
    tissues: {file, columns, dtypes, categories, n_rows, tissue_metadata}     # tissues.parquet
    cells: {file, columns, dtypes, categories, intensities: {modality: "table" | "computed"}}
    derived: {standardization: [recipe, ...], tiling: [recipe, ...]}

A semantic labels element also carries ``element.attrs["spora"] = {"task", "categories"}``
(:func:`set_label_attrs`, :func:`read_label_attrs`).

Versions
--------
``format_version`` is ``"MAJOR.MINOR"`` (:data:`FORMAT_VERSION`), independent of the package version.
A new *minor* version only adds optional keys: every reader ignores keys it does not know, so an older
spora-sd reads it. A new *major* version changes or removes keys: spora-sd refuses a major version newer
than its own (:class:`~spora_sd.errors.AttrsVersionError`, "upgrade spora-sd") and upgrades every older
one when reading. Objects written before the format was versioned have no ``format_version``: they are
version ``"0"`` (:data:`LEGACY_VERSION`), the same keys as ``1.0``, and are read as ``1.0``.

Examples
--------
>>> spora = build_spora_attrs(
...     dataset="demo2025x",
...     modalities=["imc"],
...     elements={"demo2025x_p1_0000__imc": ElementEntry("image", "imc/1_0mpp/images/demo2025x_p1_0000.ome.zarr",
...                                                     "demo2025x_p1_0000", 1.0, modality="imc")},
... )
>>> attrs = {}
>>> spora.write_to(attrs)
>>> info = read_spora_attrs(attrs)
>>> info.format_version, info.dataset, info.elements["demo2025x_p1_0000__imc"].kind
('1.0', 'demo2025x', 'image')
>>> info == spora
True
>>> read_spora_attrs({}) is None
True
"""

from __future__ import annotations

import copy
import functools
import math
import re
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from spora_sd._version import __version__
from spora_sd.errors import AttrsFormatError, AttrsVersionError

__all__ = [
    "ATTRS_KEY",
    "ELEMENT_KINDS",
    "FORMAT_VERSION",
    "LEGACY_VERSION",
    "ElementEntry",
    "FrameSpec",
    "LabelAttrs",
    "SporaAttrs",
    "build_spora_attrs",
    "has_spora_attrs",
    "json_safe",
    "parse_format_version",
    "read_label_attrs",
    "read_spora_attrs",
    "set_label_attrs",
    "upgrade_spora_attrs",
    "validate_spora_attrs",
]

#: ``sdata.attrs[ATTRS_KEY]`` (and ``element.attrs[ATTRS_KEY]`` of semantic labels) hold the format.
ATTRS_KEY = "spora"
#: Version of the format this spora-sd writes, ``"MAJOR.MINOR"``; it reads every major version up to this one.
FORMAT_VERSION = "1.0"
#: The version of objects written before the format was versioned (no ``format_version`` key).
LEGACY_VERSION = "0"
#: The ``kind`` of an element of the reverse map (as :func:`~spora_sd.convert.element_names.parse_element_name`).
ELEMENT_KINDS = ("image", "cells", "tissue", "semantic")

_ROOT = f"sdata.attrs[{ATTRS_KEY!r}]"
_VERSION = re.compile(r"[0-9]+(?:\.[0-9]+)?")
#: Keys of the derived-product recipes that are passed on (they become keyword arguments of compute_*).
_RECIPE_KEYS = {
    "standardization": ("modality", "resolution", "methods", "upper_quantile", "lower_quantile"),
    "tiling": ("resolution", "strategy", "tile_size", "stride", "min_tissue"),
}


# --------------------------------------------------------------------------------------------------
# typed parts


@dataclass(frozen=True)
class ElementEntry:
    """Where one element came from: an entry of the reverse map ``elements``.

    Attributes
    ----------
    kind
        ``"image"``, ``"cells"`` (instance mask), ``"tissue"`` (tissue mask) or ``"semantic"``.
    file
        The file, relative to the cohort folder.
    tissue_id, mpp
        Its tissue and microns per pixel.
    modality, task
        The modality of an image, the task of a semantic mask (``None`` otherwise).
    """

    kind: str
    file: str
    tissue_id: str
    mpp: float
    modality: str | None = None
    task: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of this entry."""
        out: dict[str, Any] = {"kind": self.kind, "file": self.file, "tissue_id": self.tissue_id}
        if self.modality is not None:
            out["modality"] = self.modality
        out["mpp"] = self.mpp
        if self.task is not None:
            out["task"] = self.task
        return out

    @classmethod
    def from_dict(cls, entry: Mapping[str, Any]) -> ElementEntry:
        """The entry of a checked JSON object (:func:`validate_spora_attrs`)."""
        return cls(
            kind=str(entry["kind"]),
            file=str(entry["file"]),
            tissue_id=str(entry["tissue_id"]),
            mpp=float(entry["mpp"]),
            modality=None if entry.get("modality") is None else str(entry["modality"]),
            task=None if entry.get("task") is None else str(entry["task"]),
        )


@dataclass(frozen=True)
class FrameSpec:
    """How a Parquet file of the cohort was spelled (``channels``, ``tissues`` and ``cells`` sections).

    Attributes
    ----------
    columns
        Column names, in order.
    dtypes
        Column name -> pandas dtype name.
    file
        The file, relative to the cohort folder.
    categories
        Category order of its categorical columns (``None``: not recorded).
    records
        The rows, as JSON objects (``channels.parquet`` only).
    """

    columns: list[str]
    dtypes: dict[str, str]
    file: str | None = None
    categories: dict[str, list] | None = None
    records: list[dict[str, Any]] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of this section (without the section's own extra keys)."""
        out: dict[str, Any] = {} if self.file is None else {"file": self.file}
        out.update({"columns": list(self.columns), "dtypes": dict(self.dtypes)})
        if self.records is not None:
            out["records"] = [dict(r) for r in self.records]
        if self.categories is not None:
            out["categories"] = {k: list(v) for k, v in self.categories.items()}
        return out

    @classmethod
    def from_dict(cls, section: Mapping[str, Any]) -> FrameSpec:
        """The section of a checked JSON object (:func:`validate_spora_attrs`); copies it."""
        records = section.get("records")
        categories = section.get("categories")
        return cls(
            columns=[str(c) for c in section["columns"]],
            dtypes={str(k): str(v) for k, v in section["dtypes"].items()},
            file=section.get("file"),
            categories=None if categories is None else {str(k): list(v) for k, v in categories.items()},
            records=None if records is None else [dict(r) for r in records],
        )


@dataclass(frozen=True)
class LabelAttrs:
    """``element.attrs["spora"]`` of a semantic labels element: its task and ``{category name: value}``."""

    task: str
    categories: dict[str, int]


# --------------------------------------------------------------------------------------------------
# the whole object


class SporaAttrs:
    """A checked ``sdata.attrs["spora"]`` at :data:`FORMAT_VERSION` (or a newer minor version), read-only.

    Make one with :func:`build_spora_attrs` (writing) or :func:`read_spora_attrs` (reading); the
    properties give typed copies of its parts and :meth:`to_dict` the JSON object. Keys this version
    does not know (from a newer minor version) are kept by :meth:`to_dict` and ignored otherwise.

    Attributes
    ----------
    upgraded_from
        The ``format_version`` it was read with when that was older (``"0"``: no version), else ``None``.
    """

    def __init__(self, data: Mapping[str, Any], *, upgraded_from: str | None = None, _owned: bool = False) -> None:
        """Wrap an already checked object (copied); use :meth:`from_dict` for anything read."""
        self._data: dict[str, Any] = dict(data) if _owned else copy.deepcopy(dict(data))
        self.upgraded_from = upgraded_from

    @classmethod
    def from_dict(cls, raw: Any) -> SporaAttrs:
        """Parse ``sdata.attrs["spora"]``: check the version, upgrade an older one, validate against the schema.

        Raises
        ------
        AttrsVersionError
            When its major version is newer than :data:`FORMAT_VERSION`'s.
        AttrsFormatError
            When it is malformed (every problem, each with its key path).
        """
        found = _version_of(raw)
        data = upgrade_spora_attrs(raw)
        validate_spora_attrs(data)
        older = parse_format_version(found) < parse_format_version(FORMAT_VERSION)
        return cls(data, upgraded_from=found if older else None, _owned=True)  # data is upgrade's own copy

    def to_dict(self) -> dict[str, Any]:
        """The JSON object (a deep copy), as stored in ``sdata.attrs["spora"]``."""
        return copy.deepcopy(self._data)

    def write_to(self, attrs: MutableMapping[str, Any]) -> None:
        """Store it in ``attrs`` (``sdata.attrs``) under :data:`ATTRS_KEY`."""
        attrs[ATTRS_KEY] = self.to_dict()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SporaAttrs) and self._data == other._data

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"SporaAttrs(format_version={self.format_version!r}, dataset={self.dataset!r}, "
            f"modalities={self.modalities!r}, {len(self._data['elements'])} elements)"
        )

    # scalars ---------------------------------------------------------------------------------------

    @property
    def format_version(self) -> str:
        return str(self._data["format_version"])

    @property
    def dataset(self) -> str:
        """Dataset key of the source cohort."""
        return str(self._data["dataset"])

    @property
    def spora_sd_version(self) -> str:
        """Version of the spora-sd that made it."""
        return str(self._data["spora_sd_version"])

    @property
    def modalities(self) -> list[str]:
        return [str(m) for m in self._data["modalities"]]

    @property
    def resolution(self) -> float | None:
        """The ``resolution`` argument of the conversion (``None``: each modality's finest)."""
        return self._data.get("resolution")

    @property
    def resolutions(self) -> dict[str, float]:
        """Microns per pixel of the images of each modality."""
        return dict(self._data.get("resolutions") or {})

    @property
    def mask_resolution(self) -> float | None:
        return self._data.get("mask_resolution")

    @property
    def tissue_mask_resolution(self) -> float | None:
        return self._data.get("tissue_mask_resolution")

    # the reverse map ---------------------------------------------------------------------------------

    @functools.cached_property
    def _elements(self) -> dict[str, ElementEntry]:
        return {str(name): ElementEntry.from_dict(entry) for name, entry in self._data["elements"].items()}

    @property
    def elements(self) -> dict[str, ElementEntry]:
        """Element name -> where it came from (the reverse map)."""
        return dict(self._elements)

    @property
    def tables(self) -> dict[str, str]:
        """Table name -> the cohort file it was made from."""
        return {str(name): str(entry["file"]) for name, entry in (self._data.get("tables") or {}).items()}

    @property
    def label_encoders(self) -> dict[str, dict[str, int]]:
        """Task -> ``{category name: value}``."""
        return {str(t): dict(m) for t, m in (self._data.get("label_encoders") or {}).items()}

    def label_encoder(self, task: str) -> dict[str, int] | None:
        """``{category name: value}`` of one task, ``None`` when the task has none."""
        mapping = (self._data.get("label_encoders") or {}).get(task)
        return None if mapping is None else dict(mapping)

    # tables --------------------------------------------------------------------------------------------

    def channels(self, modality: str) -> FrameSpec | None:
        """The modality's ``channels.parquet`` (with its ``records``), ``None`` when not recorded."""
        section = (self._data.get("channels") or {}).get(modality)
        return None if section is None else FrameSpec.from_dict(section)

    def channel_records(self, modality: str) -> list[dict[str, Any]] | None:
        """The rows of the modality's ``channels.parquet``, ``None`` (or empty) when not recorded."""
        spec = self.channels(modality)
        return None if spec is None else spec.records

    @property
    def channels_per_tissue(self) -> dict[str, dict[str, list[str]]]:
        """Modality -> tissue id -> the channels of that tissue's image."""
        return {
            str(m): {str(t): list(c) for t, c in per_tissue.items()}
            for m, per_tissue in (self._data.get("channels_per_tissue") or {}).items()
        }

    @property
    def tissues(self) -> FrameSpec | None:
        """How ``tissues.parquet`` was spelled."""
        section = self._data.get("tissues")
        return None if section is None else FrameSpec.from_dict(section)

    @property
    def tissue_metadata(self) -> str | None:
        """Where ``tissues.parquet`` went: ``"table"``, ``"obs"``, ``"both"`` or ``None``."""
        return (self._data.get("tissues") or {}).get("tissue_metadata")

    @property
    def n_tissue_rows(self) -> int | None:
        """Rows of ``tissues.parquet`` converted."""
        return (self._data.get("tissues") or {}).get("n_rows")

    @property
    def cells(self) -> FrameSpec | None:
        """How ``cells.parquet`` was spelled (``None``: no cell table was made)."""
        section = self._data.get("cells")
        return None if section is None else FrameSpec.from_dict(section)

    @property
    def cell_intensities(self) -> dict[str, str]:
        """Modality -> ``"table"`` (intensity columns of ``cells.parquet``) or ``"computed"``."""
        return dict((self._data.get("cells") or {}).get("intensities") or {})

    @property
    def derived(self) -> dict[str, list[dict[str, Any]]] | None:
        """How the standardization statistics and tilings were computed, ``None`` when not recorded.

        ``{"standardization": [recipe, ...], "tiling": [recipe, ...]}``; each recipe holds only the keys
        this version knows (they become keyword arguments of the ``compute_*`` functions).
        """
        section = self._data.get("derived")
        if section is None:
            return None
        return {
            kind: [{k: recipe[k] for k in keys if k in recipe} for recipe in section.get(kind) or []]
            for kind, keys in _RECIPE_KEYS.items()
        }


# --------------------------------------------------------------------------------------------------
# versions


def parse_format_version(version: str) -> tuple[int, int]:
    """``"MAJOR.MINOR"`` (or ``"MAJOR"``) as a tuple of ints.

    Examples
    --------
    >>> parse_format_version("1.0"), parse_format_version(LEGACY_VERSION)
    ((1, 0), (0, 0))
    """
    if not isinstance(version, str) or _VERSION.fullmatch(version) is None:
        raise AttrsFormatError([(f"{_ROOT}['format_version']", f"must be a 'MAJOR.MINOR' string, not {version!r}")])
    major, _, minor = version.partition(".")
    return int(major), int(minor or 0)


def _version_of(raw: Any) -> str:
    if not isinstance(raw, Mapping):
        raise AttrsFormatError([(_ROOT, f"must be a JSON object (dict), not {type(raw).__name__}")])
    if "format_version" not in raw:
        return LEGACY_VERSION
    found = raw["format_version"]
    if not isinstance(found, str) or re.fullmatch(r"[0-9]+\.[0-9]+", found) is None:
        raise AttrsFormatError([(f"{_ROOT}['format_version']", f"must be a 'MAJOR.MINOR' string, not {found!r}")])
    return found


def _from_legacy(data: dict[str, Any]) -> dict[str, Any]:
    """Version 0 (no ``format_version``, spora-sd 0.1.0) -> 1.0: the same keys, so only the version is added."""
    data["format_version"] = "1.0"
    return data


#: major version -> the function that upgrades an object of that major version to the next one.
_UPGRADES = {0: _from_legacy}


def upgrade_spora_attrs(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``sdata.attrs["spora"]`` upgraded to :data:`FORMAT_VERSION`.

    Older major versions go through each major version's upgrade in turn; an older minor version of the
    current major version only gets the current version number (minor versions add optional keys). A
    newer minor version is returned unchanged (its extra keys are ignored by this version). Not validated:
    :func:`read_spora_attrs` validates after upgrading.

    Raises
    ------
    AttrsVersionError
        When its major version is newer than :data:`FORMAT_VERSION`'s: upgrade spora-sd to read it.

    Examples
    --------
    >>> upgrade_spora_attrs({"dataset": "demo2025x"})["format_version"]
    '1.0'
    """
    found = _version_of(raw)
    data = copy.deepcopy(dict(raw))
    current = parse_format_version(FORMAT_VERSION)
    version = parse_format_version(found)
    if version[0] > current[0]:
        raise AttrsVersionError(found, FORMAT_VERSION, __version__)
    while version[0] < current[0]:
        data = _UPGRADES[version[0]](data)
        version = parse_format_version(data["format_version"])
    if version < current:
        data["format_version"] = FORMAT_VERSION
    return data


# --------------------------------------------------------------------------------------------------
# validation


def _inline(node: Any, defs: Mapping[str, Any]) -> Any:
    """``node`` with every ``{"$ref": "#/$defs/<name>"}`` replaced by that definition (the schema has no cycles).

    The same schema, validated several times faster: a large cohort's reverse map has thousands of entries.
    """
    if isinstance(node, Mapping):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            rest = {k: v for k, v in node.items() if k != "$ref"}
            return {**_inline(defs[ref.removeprefix("#/$defs/")], defs), **_inline(rest, defs)}
        return {k: _inline(v, defs) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline(v, defs) for v in node]
    return node


@functools.cache
def _validators() -> tuple[Any, Any]:
    from jsonschema import Draft202012Validator

    from spora_sd.layout.schemas.loading import load_attrs_schema

    schema = load_attrs_schema()
    defs = schema["$defs"]
    return Draft202012Validator(_inline(schema, defs)), Draft202012Validator(_inline(defs["label_attrs"], defs))


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, list | tuple):
        return "array"
    return type(value).__name__


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _problems(validator: Any, instance: Any, root: str) -> list[tuple[str, str]]:
    """Every schema violation as ``(key path, message)``, sorted by key path."""
    out = set()
    for error in validator.iter_errors(instance):
        path = root + "".join(f"[{p!r}]" for p in error.absolute_path)
        kind, expected, value = error.validator, error.validator_value, error.instance
        if kind == "required":
            for key in expected:
                if isinstance(value, Mapping) and key not in value:
                    out.add((f"{path}[{key!r}]", "required key is missing"))
            continue
        if kind == "type":
            types = " or ".join(expected) if isinstance(expected, list) else expected
            message = f"must be of JSON type {types}, not {_json_type(value)} ({_short(value)})"
        elif kind == "enum":
            message = f"{_short(value)} is not one of {expected}"
        elif kind == "const":
            message = f"must be {expected!r}, not {_short(value)}"
        elif kind == "pattern":
            message = f"{_short(value)} does not match {expected!r}"
        elif kind == "minLength":
            message = "must not be empty"
        elif kind in ("minimum", "exclusiveMinimum"):
            message = f"{_short(value)} must be {'>=' if kind == 'minimum' else '>'} {expected}"
        else:
            message = _short(error.message, 200)
        out.add((path, message))
    return sorted(out)


def validate_spora_attrs(data: Any) -> None:
    """Check ``sdata.attrs["spora"]`` against its JSON Schema; every problem in one error.

    Raises
    ------
    AttrsFormatError
        Naming the key path of each problem, e.g. ``sdata.attrs['spora']['elements']['x__imc']['kind']``.

    Examples
    --------
    >>> validate_spora_attrs({"format_version": "1.0", "dataset": "d", "spora_sd_version": "0", "modalities": [],
    ...                       "elements": {"x__imc": {"kind": "picture", "file": "f", "tissue_id": "x", "mpp": 1}}})
    Traceback (most recent call last):
    ...
    spora_sd.errors.AttrsFormatError: sdata.attrs['spora'] is malformed: sdata.attrs['spora']['elements']['x__imc']['kind']: 'picture' is not one of ['image', 'cells', 'tissue', 'semantic']
    """
    validator = _validators()[0]
    problems = _problems(validator, _representative(data), _ROOT)
    if problems:
        # every problem, with its key path: the whole object through the schema
        raise AttrsFormatError(_problems(validator, data, _ROOT))


def _nonempty_str(value: Any) -> bool:
    return isinstance(value, str) and bool(value)


def _element_entry_ok(name: Any, entry: Any) -> bool:
    """Whether an entry of the ``elements`` map is certainly valid under the schema's ``element`` definition.

    A cheap check of the same rules (kind one of :data:`ELEMENT_KINDS`, non-empty ``file``,
    ``tissue_id``, ``modality`` and ``task`` strings, a number ``mpp`` > 0, ``modality`` for images,
    ``task`` for semantic labels, a non-empty name). It may say no to a valid entry (the schema then
    decides), never yes to an invalid one (``tests/convert/test_attrs.py`` holds it to the schema).
    """
    if not (_nonempty_str(name) and isinstance(entry, dict)):
        return False
    kind, mpp = entry.get("kind"), entry.get("mpp")
    if not (isinstance(kind, str) and kind in ELEMENT_KINDS):
        return False
    if not (_nonempty_str(entry.get("file")) and _nonempty_str(entry.get("tissue_id"))):
        return False
    if type(mpp) not in (int, float) or not mpp > 0:  # bool is not a JSON number; NaN is not > 0
        return False
    if any(key in entry and not _nonempty_str(entry[key]) for key in ("modality", "task")):
        return False
    return not ((kind == "image" and "modality" not in entry) or (kind == "semantic" and "task" not in entry))


def _channel_lists_ok(value: Any) -> bool:
    """Whether ``channels_per_tissue`` is certainly valid: modality -> tissue id -> list of strings."""
    return isinstance(value, dict) and all(
        isinstance(per_tissue, dict)
        and all(isinstance(names, list) and all(isinstance(n, str) for n in names) for names in per_tissue.values())
        for per_tissue in value.values()
    )


def _representative(data: Any) -> Any:
    """``data`` with its per-element and per-tissue maps cut to their first entry when every entry passes a cheap check.

    The JSON Schema costs about 0.2 ms per entry of the ``elements`` map, 1.5 s for the 8,000
    elements of 2,000 tissues; the cheap checks (:func:`_element_entry_ok`, :func:`_channel_lists_ok`)
    cost a hundredth of that. When every entry passes them, the schema sees the rest of the object
    and one entry of each map; when any fails, the caller validates the whole object.
    """
    if not isinstance(data, dict):
        return data
    out = dict(data)
    elements = data.get("elements")
    if isinstance(elements, dict) and all(_element_entry_ok(k, v) for k, v in elements.items()):
        out["elements"] = dict(list(elements.items())[:1])
    per_modality = data.get("channels_per_tissue")
    if _channel_lists_ok(per_modality):
        out["channels_per_tissue"] = {m: dict(list(t.items())[:1]) for m, t in per_modality.items()}
    return out


# --------------------------------------------------------------------------------------------------
# reading and writing


def _attrs_of(source: Any) -> Mapping[str, Any] | None:
    attrs = source if isinstance(source, Mapping) else getattr(source, "attrs", None)
    return attrs if isinstance(attrs, Mapping) else None


def has_spora_attrs(source: Any) -> bool:
    """Whether a SpatialData (or its ``attrs`` mapping) carries ``attrs["spora"]``, not yet read or checked.

    >>> has_spora_attrs({}), has_spora_attrs({ATTRS_KEY: {}})
    (False, True)
    """
    attrs = _attrs_of(source)
    return attrs is not None and ATTRS_KEY in attrs


def read_spora_attrs(source: Any) -> SporaAttrs | None:
    """The checked ``attrs["spora"]`` of a SpatialData (or of its ``attrs`` mapping); ``None`` when absent.

    Older format versions are upgraded (:func:`upgrade_spora_attrs`).

    Parameters
    ----------
    source
        A :class:`spatialdata.SpatialData`, or its ``attrs`` (a mapping that may hold :data:`ATTRS_KEY`).

    Raises
    ------
    AttrsVersionError
        When it was written in a newer major format version: upgrade spora-sd.
    AttrsFormatError
        When it is malformed; the message names the key path of every problem.
    """
    attrs = _attrs_of(source)
    if attrs is None or ATTRS_KEY not in attrs:
        return None
    return SporaAttrs.from_dict(attrs[ATTRS_KEY])


def json_safe(value: Any) -> Any:
    """``value`` with only JSON types: numpy scalars unwrapped, NaN/NA -> None, tuples -> lists, dict keys str.

    >>> json_safe({"a": (np.int64(1), float("nan"), pd.NA)})
    {'a': [1, None, None]}
    """
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if value is pd.NA or value is pd.NaT:
        return None
    return str(value)


def build_spora_attrs(
    *,
    dataset: str,
    modalities: Sequence[str],
    elements: Mapping[str, ElementEntry],
    resolution: float | None = None,
    resolutions: Mapping[str, float] | None = None,
    mask_resolution: float | None = None,
    tissue_mask_resolution: float | None = None,
    tables: Mapping[str, str] | None = None,
    label_encoders: Mapping[str, Mapping[str, int]] | None = None,
    channels: Mapping[str, FrameSpec] | None = None,
    channels_per_tissue: Mapping[str, Mapping[str, Sequence[str]]] | None = None,
    tissues: FrameSpec | None = None,
    tissue_rows: int | None = None,
    tissue_metadata: str | None = None,
    cells: FrameSpec | None = None,
    cell_intensities: Mapping[str, str] | None = None,
    derived: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    spora_sd_version: str = __version__,
) -> SporaAttrs:
    """Build ``sdata.attrs["spora"]`` at :data:`FORMAT_VERSION`, converted to JSON types and validated.

    Parameters
    ----------
    dataset, modalities
        Dataset key of the cohort and the modalities converted.
    elements
        Element name -> :class:`ElementEntry` (the reverse map).
    resolution, resolutions, mask_resolution, tissue_mask_resolution
        The ``resolution`` argument, modality -> image mpp, and the mpp of the cell and tissue masks.
    tables
        Table name -> the cohort file it was made from.
    label_encoders
        Task -> ``{category name: value}``.
    channels, channels_per_tissue
        Multiplex modality -> its ``channels.parquet`` (with ``records``); modality -> tissue -> channels.
    tissues, tissue_rows, tissue_metadata
        How ``tissues.parquet`` was spelled, how many rows were converted and where they went.
    cells, cell_intensities
        How ``cells.parquet`` was spelled and, per modality, whether intensities were in it (``"table"``)
        or computed (``"computed"``); ``cells=None`` when no cell table was made.
    derived
        ``{"standardization": [...], "tiling": [...]}`` recipes of the derived products.
    spora_sd_version
        The package version that made it.

    Raises
    ------
    AttrsFormatError
        When the result breaks the schema (a bug of the caller).
    """
    data: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "dataset": dataset,
        "resolution": resolution,
        "resolutions": dict(resolutions or {}),
        "mask_resolution": mask_resolution,
        "tissue_mask_resolution": tissue_mask_resolution,
        "modalities": list(modalities),
        "spora_sd_version": spora_sd_version,
        "elements": {name: entry.to_dict() for name, entry in elements.items()},
        "tables": {name: {"kind": "table", "file": file} for name, file in (tables or {}).items()},
        "label_encoders": {task: dict(mapping) for task, mapping in (label_encoders or {}).items()},
        "channels": {m: spec.to_dict() for m, spec in (channels or {}).items()},
        "channels_per_tissue": {
            m: {t: list(c) for t, c in per_tissue.items()} for m, per_tissue in (channels_per_tissue or {}).items()
        },
    }
    if tissues is not None:
        data["tissues"] = tissues.to_dict()
        if tissue_rows is not None:
            data["tissues"]["n_rows"] = tissue_rows
        data["tissues"]["tissue_metadata"] = tissue_metadata
    if cells is not None:
        data["cells"] = cells.to_dict()
        if cell_intensities is not None:
            data["cells"]["intensities"] = dict(cell_intensities)
    if derived is not None:
        data["derived"] = {kind: [dict(r) for r in recipes] for kind, recipes in derived.items()}
    data = json_safe(data)  # a new object
    validate_spora_attrs(data)
    return SporaAttrs(data, _owned=True)


# --------------------------------------------------------------------------------------------------
# labels elements


def set_label_attrs(element: Any, task: str, categories: Mapping[str, int]) -> None:
    """Store the task and ``{category name: value}`` in ``element.attrs["spora"]`` of a semantic labels element."""
    element.attrs[ATTRS_KEY] = json_safe({"task": task, "categories": dict(categories)})


def read_label_attrs(element: Any, name: str | None = None) -> LabelAttrs | None:
    """The task and categories of a semantic labels element, ``None`` when it has none.

    Parameters
    ----------
    element
        A labels element (anything with ``attrs``).
    name
        Its element name, for error messages.

    Raises
    ------
    AttrsFormatError
        When ``element.attrs["spora"]`` is malformed.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> element = xr.DataArray(np.zeros((2, 2), "uint8"), dims=("y", "x"))
    >>> set_label_attrs(element, "cell_types", {"T cell": 1})
    >>> read_label_attrs(element)
    LabelAttrs(task='cell_types', categories={'T cell': 1})
    """
    attrs = getattr(element, "attrs", None)
    if not isinstance(attrs, Mapping) or ATTRS_KEY not in attrs:
        return None
    raw = attrs[ATTRS_KEY]
    root = f"{'element' if name is None else f'labels {name!r}'}.attrs[{ATTRS_KEY!r}]"
    problems = _problems(_validators()[1], raw, root)
    if problems:
        raise AttrsFormatError(problems, where=root)
    return LabelAttrs(str(raw["task"]), {str(k): int(v) for k, v in raw["categories"].items()})
