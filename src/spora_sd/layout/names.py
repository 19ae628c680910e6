"""The vocabulary of the spora layout: every spelling of the spec (folder and file names, ids,
resolutions, modalities, tasks, standardization and tiling names, H&E channels).

This and :mod:`spora_sd.layout.paths` are the only modules that know how the tree is spelled. Every name that comes from a cohort (a tissue id, a modality,
a task) is checked against its pattern before it becomes a path component, so that no name read from
an untrusted table can escape the cohort's folder.

Examples
--------
>>> from spora_sd.layout import format_resolution, parse_resolution, compose_tissue_id
>>> format_resolution(0.375)
'0_375mpp'
>>> parse_resolution("1_0mpp")
1.0
>>> compose_tissue_id("jackson2020single", "a1b2c3d4", 0)
'jackson2020single_a1b2c3d4_0000'
"""

from __future__ import annotations

import hashlib
import math
import re
from typing import NamedTuple

from spora_sd.errors import LayoutNameError

__all__ = [
    "CELLS_FILE",
    "CELL_MASKS_DIR",
    "CHANNELS_FILE",
    "CHANNELS_PER_TISSUE_FILE",
    "DEFAULT_STANDARDIZATION_PARAM",
    "HE",
    "HE_CHANNELS",
    "IHC_DIR",
    "IHC_PREFIX",
    "IMAGES_DIR",
    "IMAGE_DTYPES",
    "IMAGE_SUFFIX",
    "IMAGE_UNIT",
    "INSTANCES_TASK",
    "LABEL_ENCODER_FILE",
    "LENGTH_UNITS",
    "MANIFEST_FILE",
    "MASK_KEY",
    "MASK_SUFFIX",
    "METADATA",
    "MULTIPLEX_MODALITIES",
    "RESERVED_DIRS",
    "SPATIALDATA_IO_IMAGE_SUFFIX",
    "SEGMENTATIONS_DIR",
    "STANDARDIZATION_DIR",
    "STANDARDIZATION_IMAGE_SUFFIX",
    "STANDARDIZATION_LOWER_PREFIX",
    "STANDARDIZATION_METHODS",
    "STANDARDIZATION_OPTIONAL",
    "STANDARDIZATION_REQUIRED",
    "STANDARDIZATION_UPPER_PREFIX",
    "TABLE_SUFFIX",
    "TILING_DIR",
    "TISSUE_ID_RE",
    "TISSUES_FILE",
    "TISSUE_MASKS_DIR",
    "TissueId",
    "check_dataset_key",
    "check_modality",
    "check_patient_id",
    "check_task",
    "check_tissue_id",
    "compose_tissue_id",
    "format_resolution",
    "format_standardization_param",
    "is_multiplex",
    "is_resolution_name",
    "is_tissue_id",
    "parse_resolution",
    "parse_standardization_param",
    "parse_tissue_id",
    "patient_hash",
    "standardization_param_spellings",
]

HE = "he"
#: Channel names of an H&E image (its three colour channels, in this order).
HE_CHANNELS = ("R", "G", "B")
IHC_PREFIX = "ihc_"
IHC_DIR = "ihc"
MULTIPLEX_MODALITIES = ("imc", "codex", "cycif", "mibi")

METADATA = "metadata"
TISSUES_FILE = "tissues.parquet"
CELLS_FILE = "cells.parquet"
CHANNELS_FILE = "channels.parquet"
CHANNELS_PER_TISSUE_FILE = "channels_per_tissue.parquet"
IMAGES_DIR = "images"
IMAGE_SUFFIX = ".ome.zarr"
MASK_SUFFIX = ".npz"
MASK_KEY = "mask"
STANDARDIZATION_DIR = "standardization"
SEGMENTATIONS_DIR = "segmentations"
TISSUE_MASKS_DIR = "tissue_masks"
CELL_MASKS_DIR = "cell_masks"
INSTANCES_TASK = "instances"
LABEL_ENCODER_FILE = "label_encoder.parquet"
#: The content manifest that every export writes into ``metadata/`` (per-file size and checksum;
#: optional in a cohort, checked by ``validate(deep=True)``; see ``io/manifest.py``).
MANIFEST_FILE = "manifest.json"
TILING_DIR = "tiling"
#: Top-level folder names a cohort may contain besides modality folders.
RESERVED_DIRS = (METADATA, SEGMENTATIONS_DIR, TILING_DIR, IHC_DIR)

#: Data types an image may have (numpy names, as Zarr v3's ``data_type`` spells them): integers and
#: floats. Booleans, complex numbers, strings and structured types are refused by readers and the validator.
IMAGE_DTYPES = (
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "int8",
    "int16",
    "int32",
    "int64",
    "float16",
    "float32",
    "float64",
)
#: The unit of an image's ``y`` and ``x`` axes (OME-NGFF ``axes[].unit``); its scale is then ``[1, mpp, mpp]``.
IMAGE_UNIT = "micrometer"
#: OME-NGFF length units that an image may state its scale in, and their size in micrometers: the
#: scale times the unit must equal the resolution folder's mpp.
LENGTH_UNITS = {
    "angstrom": 1e-4,
    "picometer": 1e-6,
    "nanometer": 1e-3,
    "micrometer": 1.0,
    "millimeter": 1e3,
    "centimeter": 1e4,
    "decimeter": 1e5,
    "meter": 1e6,
    "inch": 25_400.0,
    "foot": 304_800.0,
}

#: Parameter folder of a standardization spec: ``uq_<q>``, or ``uq_<q>_lq_<p>`` with a lower quantile;
#: spora-io's reader spells it with the suffix ``_image`` (``uq_0.99_image``).
STANDARDIZATION_UPPER_PREFIX = "uq_"
STANDARDIZATION_LOWER_PREFIX = "_lq_"
STANDARDIZATION_IMAGE_SUFFIX = "_image"
#: Suffix that spatialdata-io's readers append to an image element's name (``<sample>_image``).
SPATIALDATA_IO_IMAGE_SUFFIX = "_image"
#: The baseline standardization parameter folder (upper quantile 0.99, no lower quantile).
DEFAULT_STANDARDIZATION_PARAM = "uq_0.99"
#: Suffix of every table of the layout.
TABLE_SUFFIX = ".parquet"

#: Files of a standardization folder (spec §6); the first three are required.
STANDARDIZATION_REQUIRED = (
    "image_level_upper_quantiles",
    "global_level_means",
    "global_level_stds",
)
STANDARDIZATION_OPTIONAL = (
    "image_level_lower_quantiles",
    "global_level_upper_quantiles",
    "global_level_lower_quantiles",
    "image_level_means",
    "image_level_stds",
)
STANDARDIZATION_METHODS = ("quantile_clipping", "quantile_clipping_log1p")

# ASCII only: digits are [0-9] (Python's \d also matches other scripts' digits, e.g. "٠١٢٣"), and
# every pattern is applied with fullmatch (Python's $ alone also matches before a final newline). The
# patterns stay valid RE2 (no \Z), so pandas and Arrow can apply TISSUE_ID_RE.pattern too.
_RES_RE = re.compile(r"^([0-9]+)_([0-9]+)mpp$", re.ASCII)
_DATASET_RE = re.compile(r"^[a-z][a-z0-9]*$", re.ASCII)
_PATIENT_RE = re.compile(r"^[a-z0-9]{8}$", re.ASCII)
_SPECIMEN_RE = re.compile(r"^[0-9]{4}$", re.ASCII)
TISSUE_ID_RE = re.compile(r"^([a-z][a-z0-9]*)_([a-z0-9]{8})_([0-9]{4})$", re.ASCII)
# HUGO symbols are upper case letters, digits and hyphens (HLA-DR); we also allow lower case
# letters for the odd non-HUGO marker (e.g. "pH3") but never a path separator or a dot.
_MARKER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*$", re.ASCII)
_TASK_RE = re.compile(r"^[a-z][a-z0-9_]*$", re.ASCII)
_STRATEGY_RE = re.compile(r"^[a-z][a-z0-9_]*$", re.ASCII)
_PARAM_RE = re.compile(r"^[a-z][a-z0-9_.]*$", re.ASCII)


def _fail(kind: str, value: object, rule: str) -> LayoutNameError:
    return LayoutNameError(f"Invalid {kind} {value!r}: {rule}")


# --------------------------------------------------------------------------------------------------
# resolutions


def format_resolution(mpp: float) -> str:
    """Folder name of a resolution in microns per pixel, written the way Python prints the float.

    >>> format_resolution(1)
    '1_0mpp'
    """
    try:
        value = float(mpp)
    except (TypeError, ValueError):
        raise _fail("resolution", mpp, "must be a number of microns per pixel") from None
    if not math.isfinite(value) or value <= 0:
        raise _fail("resolution", mpp, "must be a positive, finite number of microns per pixel")
    text = repr(value)
    if "e" in text or "E" in text:
        raise _fail("resolution", mpp, "Python prints it in scientific notation, which has no folder name")
    return text.replace(".", "_") + "mpp"


def parse_resolution(name: str) -> float:
    """Microns per pixel from a resolution folder name (``"0_375mpp"`` -> ``0.375``).

    Only the canonical spelling is accepted: ``"1_00mpp"`` is refused because Python prints 1.0.
    """
    match = _RES_RE.fullmatch(str(name))
    if match is None:
        raise _fail("resolution folder", name, "expected '<int>_<frac>mpp', e.g. '1_0mpp' or '0_375mpp'")
    value = float(f"{match.group(1)}.{match.group(2)}")
    if value <= 0 or format_resolution(value) != name:
        raise _fail(
            "resolution folder",
            name,
            f"not written the way Python prints the float (expected {format_resolution(value)!r})"
            if value > 0
            else "resolution must be positive",
        )
    return value


def is_resolution_name(name: str) -> bool:
    """Whether ``name`` is a canonical resolution folder name."""
    try:
        parse_resolution(name)
    except LayoutNameError:
        return False
    return True


# --------------------------------------------------------------------------------------------------
# standardization parameters

_QUANTILE = r"([0-9]+(?:\.[0-9]+)?)"
_STANDARDIZATION_PARAM_RE = re.compile(
    rf"^{STANDARDIZATION_UPPER_PREFIX}{_QUANTILE}"
    rf"(?:{STANDARDIZATION_LOWER_PREFIX}{_QUANTILE})?"
    rf"(?:{STANDARDIZATION_IMAGE_SUFFIX})?$",
    re.ASCII,
)


def _quantile_text(kind: str, q: object) -> str:
    """A quantile written the way Python prints the float (``0.99``), checked to lie in [0, 1]."""
    try:
        value = float(q)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise _fail(kind, q, "must be a number in [0, 1]") from None
    if isinstance(q, bool) or not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise _fail(kind, q, "must be a number in [0, 1]")
    text = repr(value)
    if "e" in text or "E" in text:
        raise _fail(kind, q, "Python prints it in scientific notation, which has no folder name")
    return text


def format_standardization_param(upper: float, lower: float | None = None) -> str:
    """The parameter folder name of a standardization spec: ``uq_<upper>``, or ``uq_<upper>_lq_<lower>``.

    Quantiles are written the way Python prints the float, as spora-io names the folders.

    >>> format_standardization_param(0.99)
    'uq_0.99'
    >>> format_standardization_param(0.995, 0.01)
    'uq_0.995_lq_0.01'
    """
    name = f"{STANDARDIZATION_UPPER_PREFIX}{_quantile_text('upper quantile', upper)}"
    if lower is not None:
        lower_text = _quantile_text("lower quantile", lower)
        if not float(lower) < float(upper):
            raise _fail("lower quantile", lower, f"must be smaller than the upper quantile {upper!r}")
        name += f"{STANDARDIZATION_LOWER_PREFIX}{lower_text}"
    return name


def parse_standardization_param(name: str) -> tuple[float, float | None]:
    """``(upper, lower)`` quantiles of a standardization parameter folder name; ``lower`` is ``None``
    when the name has none. spora-io's spelling with the suffix ``_image`` is accepted.

    >>> parse_standardization_param("uq_0.99")
    (0.99, None)
    >>> parse_standardization_param("uq_0.995_lq_0.01_image")
    (0.995, 0.01)
    """
    match = _STANDARDIZATION_PARAM_RE.fullmatch(name) if isinstance(name, str) else None
    if match is None:
        raise _fail(
            "standardization parameter",
            name,
            f"expected '{STANDARDIZATION_UPPER_PREFIX}<q>' or "
            f"'{STANDARDIZATION_UPPER_PREFIX}<q>{STANDARDIZATION_LOWER_PREFIX}<p>' (optionally ending in "
            f"{STANDARDIZATION_IMAGE_SUFFIX!r}), e.g. 'uq_0.99'",
        )
    upper = float(match.group(1))
    lower = None if match.group(2) is None else float(match.group(2))
    if upper > 1.0 or (lower is not None and not lower < upper):
        raise _fail("standardization parameter", name, "quantiles must lie in [0, 1], the lower below the upper")
    return upper, lower


def standardization_param_spellings(param: str) -> tuple[str, str]:
    """Both spellings of a parameter folder: the spec's and spora-io's (with ``_image``).

    >>> standardization_param_spellings("uq_0.99_image")
    ('uq_0.99', 'uq_0.99_image')
    """
    base = param.removesuffix(STANDARDIZATION_IMAGE_SUFFIX)
    return base, f"{base}{STANDARDIZATION_IMAGE_SUFFIX}"


# --------------------------------------------------------------------------------------------------
# ids


class TissueId(NamedTuple):
    """The three parts of a tissue id: ``<dataset>_<patient_id>_<specimen_id>``."""

    dataset: str
    patient_id: str
    specimen_id: str

    def __str__(self) -> str:
        return f"{self.dataset}_{self.patient_id}_{self.specimen_id}"


def check_dataset_key(key: str) -> str:
    """Return ``key`` if it is a valid dataset key (lower-case BibTeX-style, e.g. ``jackson2020single``)."""
    if not isinstance(key, str) or not _DATASET_RE.fullmatch(key):
        raise _fail("dataset key", key, "must be lower-case letters and digits, starting with a letter")
    return key


def check_patient_id(patient_id: str) -> str:
    """Return ``patient_id`` if it is an 8-character lower-case hash."""
    if not isinstance(patient_id, str) or not _PATIENT_RE.fullmatch(patient_id):
        raise _fail("patient id", patient_id, "must be 8 lower-case letters or digits")
    return patient_id


def patient_hash(raw_patient_id: object, dataset: str = "") -> str:
    """The 8-character patient hash of a raw patient identifier.

    The hash is the first 8 hex digits of SHA-256 over ``"<dataset>/<raw id>"``: stable across runs
    and machines, and it does not reveal the raw identifier.

    >>> patient_hash("P-001", "mystudy2025cohort")
    '539d8352'
    """
    digest = hashlib.sha256(f"{dataset}/{raw_patient_id}".encode()).hexdigest()
    return digest[:8]


def compose_tissue_id(dataset: str, patient_id: str, specimen: int | str = 0) -> str:
    """Compose ``<dataset>_<patient_id>_<specimen_id>``; ``specimen`` may be an int or 4 digits."""
    check_dataset_key(dataset)
    check_patient_id(patient_id)
    if isinstance(specimen, int) and not isinstance(specimen, bool):
        if not 0 <= specimen <= 9999:
            raise _fail("specimen id", specimen, "must be between 0 and 9999")
        specimen = f"{specimen:04d}"
    if not isinstance(specimen, str) or not _SPECIMEN_RE.fullmatch(specimen):
        raise _fail("specimen id", specimen, "must be 4 digits")
    return f"{dataset}_{patient_id}_{specimen}"


def parse_tissue_id(tissue_id: str) -> TissueId:
    """Split a tissue id into dataset, patient id and specimen id; raises on a malformed id."""
    if not isinstance(tissue_id, str):
        raise _fail("tissue id", tissue_id, "must be a string")
    match = TISSUE_ID_RE.fullmatch(tissue_id)
    if match is None:
        raise _fail(
            "tissue id",
            tissue_id,
            "expected '<dataset>_<8-character patient hash>_<4-digit specimen>', "
            "e.g. 'jackson2020single_a1b2c3d4_0000'",
        )
    return TissueId(*match.groups())


def check_tissue_id(tissue_id: str, dataset: str | None = None) -> str:
    """Return ``tissue_id`` if it is well formed (and belongs to ``dataset`` when given)."""
    parts = parse_tissue_id(tissue_id)
    if dataset is not None and parts.dataset != dataset:
        raise _fail("tissue id", tissue_id, f"does not start with the dataset key {dataset!r}")
    return tissue_id


def is_tissue_id(value: object) -> bool:
    """Whether ``value`` is a well formed tissue id."""
    return isinstance(value, str) and TISSUE_ID_RE.fullmatch(value) is not None


# --------------------------------------------------------------------------------------------------
# modalities and other folder names


def check_modality(modality: str) -> str:
    """Return ``modality`` if it is ``he``, a multiplex modality or ``ihc_<MARKER>``."""
    if modality == HE or modality in MULTIPLEX_MODALITIES:
        return modality
    if isinstance(modality, str) and modality.startswith(IHC_PREFIX):
        if _MARKER_RE.fullmatch(modality[len(IHC_PREFIX) :]):
            return modality
    raise _fail(
        "modality",
        modality,
        f"expected one of {', '.join((HE, *MULTIPLEX_MODALITIES))} or 'ihc_<MARKER>' (e.g. 'ihc_CD3E')",
    )


def is_multiplex(modality: str) -> bool:
    """Whether a modality uses the multiplex layout (channels tables, standardization)."""
    return check_modality(modality) in MULTIPLEX_MODALITIES


def check_task(task: str) -> str:
    """Return ``task`` if it is a valid semantic-mask task folder name (snake_case, not ``instances``)."""
    if not isinstance(task, str) or not _TASK_RE.fullmatch(task) or task == INSTANCES_TASK:
        raise _fail("mask task", task, "must be a snake_case folder name other than 'instances'")
    return task


def _check_simple(kind: str, value: str, pattern: re.Pattern[str]) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value) or ".." in value:
        raise _fail(kind, value, "must be a snake_case name")
    return value
