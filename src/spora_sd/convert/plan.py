"""What an export writes: the plan that :func:`spora_sd.from_spatialdata` carries out.

A plan is built in memory from a :class:`~spatialdata.SpatialData` (from the reverse map that
:func:`spora_sd.to_spatialdata` leaves in ``attrs``, or by inference) before any file is written, so
that every missing piece is reported before the disk is touched. It holds the tables (small) and, per
tissue, the *names* of the elements whose pixels are streamed later, one tissue at a time.

Examples
--------
>>> merge_panels([["CD3E", "DNA1"], ["CD8A", "DNA1"], ["CD3E", "CD8A"]])
['CD3E', 'DNA1', 'CD8A']
>>> channels_per_tissue_table(["CD3E", "DNA1"], {"a2025x_a1b2c3d4_0000": ["DNA1"]}).loc["a2025x_a1b2c3d4_0000"].tolist()
[False, True]
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from spora_sd.errors import ExportInputError
from spora_sd.layout import INSTANCES_TASK

__all__ = [
    "ExportInputError",
    "ExportPlan",
    "ImageSource",
    "MaskSource",
    "Problems",
    "TissuePlan",
    "channel_names",
    "channels_per_tissue_table",
    "channels_table",
    "check_channel_names",
    "element_levels",
    "element_yx_shape",
    "merge_panels",
    "panel_order",
    "unnamed_channels",
]

logger = logging.getLogger(__name__)


class Problems:
    """The problems of an export's input, collected so that one :class:`ExportInputError` names them all.

    Planning checks every element and table; a check that fails inside :meth:`collect` is recorded and
    planning goes on with the next element, so a user fixes everything in one round (as spatialdata's
    own validation reports every problem, not only the first).

    >>> problems = Problems()
    >>> for name in ("a", "b"):
    ...     with problems.collect():
    ...         raise ExportInputError(f"image {name!r}: no channel names")
    >>> problems.add("table 'cells': no 'tissue_id' column")
    >>> try:
    ...     problems.raise_if_any()
    ... except ExportInputError as error:
    ...     print(len(error.problems))
    3
    """

    def __init__(self) -> None:
        self.messages: list[str] = []

    def __bool__(self) -> bool:
        return bool(self.messages)

    def add(self, message: str) -> None:
        """Record one problem (a message that names the element or table)."""
        self.messages.append(message)

    @contextmanager
    def collect(self) -> Iterator[None]:
        """Record the :class:`ExportInputError` raised inside the block instead of propagating it."""
        try:
            yield
        except ExportInputError as error:
            self.messages.extend(error.problems)

    def raise_if_any(self) -> None:
        """Raise one :class:`ExportInputError` that lists every recorded problem (nothing when there is none)."""
        if self.messages:
            raise ExportInputError(list(dict.fromkeys(self.messages)))


#: ``MaskSource.what`` of a cell instance mask and of a tissue mask (anything else is a task name).
INSTANCES = INSTANCES_TASK
TISSUE = "tissue"


@dataclass(frozen=True)
class ImageSource:
    """One image element to write as ``<modality>/<res>/images/<tissue_id>.ome.zarr``.

    ``order`` re-orders the element's channels into the cohort panel's order (``None``: as they are).
    """

    element: str
    modality: str
    mpp: float
    channels: tuple[str, ...]
    order: tuple[int, ...] | None = None


@dataclass(frozen=True)
class MaskSource:
    """One labels element to write as a mask (in its own dtype): ``what`` is ``"instances"``, ``"tissue"`` or a task."""

    element: str
    what: str
    mpp: float


@dataclass
class TissuePlan:
    """Everything written for one tissue: the unit of streaming and of parallel work."""

    tissue_id: str
    images: list[ImageSource] = field(default_factory=list)
    masks: list[MaskSource] = field(default_factory=list)
    #: Resolutions (mpp) at which no tissue mask was given, with the (height, width) to cover.
    full_tissue_masks: list[tuple[float, tuple[int, int]]] = field(default_factory=list)
    #: Cell ids of the cell table for this tissue, checked against the instance mask's labels.
    cell_ids: np.ndarray | None = None


@dataclass
class ExportPlan:
    """The whole export: tables built in memory and one :class:`TissuePlan` per tissue."""

    dataset: str
    tissues: list[TissuePlan]
    tissues_table: pd.DataFrame
    cells_table: pd.DataFrame | None
    channels: dict[str, pd.DataFrame]
    channels_per_tissue: dict[str, pd.DataFrame]
    #: ``(mpp, task) -> label encoder`` (columns ``name``, ``id``).
    label_encoders: dict[tuple[float, str], pd.DataFrame] = field(default_factory=dict)
    #: ``"reverse map"`` or ``"inferred"``: how the plan was made (logged).
    source: str = "inferred"
    #: How the source cohort's standardization statistics and tilings were computed (reverse map only):
    #: ``{"standardization": [{modality, resolution, methods, upper_quantile, lower_quantile}], "tiling":
    #: [{resolution, strategy, tile_size, stride, min_tissue}]}``.
    derived: dict | None = None

    @property
    def multiplex_modalities(self) -> list[str]:
        return sorted(self.channels)


# --------------------------------------------------------------------------------------------------
# elements


def element_levels(element: Any) -> list[Any]:
    """The pyramid levels of an image or labels element as arrays (dask or numpy), finest first.

    Levels of a multiscale element are kept only while each is the 2x reduction of the previous one
    (``floor`` or ``ceil`` of half its size), because the layout's OME metadata states a scale of
    ``mpp * 2**level``; coarser levels that do not fit are dropped (they can be rebuilt).
    """
    from xarray import DataTree

    if isinstance(element, DataTree):  # a multiscale element
        from spatialdata import get_pyramid_levels

        arrays = get_pyramid_levels(element, attr="data")
    else:
        arrays = [element.data]
    levels = [arrays[0]]
    for arr in arrays[1:]:
        prev = levels[-1]
        if arr.shape[:-2] != prev.shape[:-2] or any(
            s not in (p // 2, -(-p // 2)) for s, p in zip(arr.shape[-2:], prev.shape[-2:], strict=True)
        ):
            logger.info("dropping pyramid levels from %s on: not a 2x reduction", arr.shape)
            break
        levels.append(arr)
    return levels


def element_yx_shape(element: Any) -> tuple[int, int]:
    """(height, width) of level 0 of an image or labels element; reads no pixel."""
    shape = element_levels(element)[0].shape
    return int(shape[-2]), int(shape[-1])


# --------------------------------------------------------------------------------------------------
# channel names and tables


def channel_names(element: Any) -> list[Any]:
    """The ``c`` coordinates of an image element (names, or positions when it has none)."""
    from spatialdata.models import get_channel_names

    return list(get_channel_names(element))


def unnamed_channels(names: Sequence[Any]) -> bool:
    """Whether channel coordinates are only the positions ``0..C-1`` (as ints or digit strings).

    >>> unnamed_channels([0, 1, 2]), unnamed_channels(["0", "1"]), unnamed_channels(["CD3E"])
    (True, True, False)
    """
    return [str(n) for n in names] == [str(i) for i in range(len(names))]


def check_channel_names(names: Sequence[Any], where: str) -> list[str]:
    """``names`` as strings, refused when empty, padded with spaces or repeated (``where`` names the source)."""
    out = [str(n) for n in names]
    bad = [n for n in out if not n or n != n.strip()]
    if bad:
        raise ExportInputError(f"{where}: channel names must be non-empty without surrounding spaces, got {bad}")
    dupes = sorted({n for n in out if out.count(n) > 1})
    if dupes:
        raise ExportInputError(f"{where}: channel names must be unique, repeated: {dupes}")
    return out


def panel_order(names: Sequence[str], panel: Sequence[str]) -> tuple[list[str], tuple[int, ...] | None]:
    """An image's channels in panel order, and the indices that re-order its planes (None: already in order).

    >>> panel_order(["DNA1", "CD3E"], ["CD3E", "DNA1", "CD8A"])
    (['CD3E', 'DNA1'], (1, 0))
    """
    ordered = [c for c in panel if c in names]
    order = tuple(list(names).index(c) for c in ordered)
    return ordered, None if order == tuple(range(len(names))) else order


def merge_panels(panels: Iterable[Sequence[str]]) -> list[str]:
    """The union of several channel lists, in order of first appearance (stable across runs)."""
    return list(dict.fromkeys(c for panel in panels for c in panel))


def channels_table(panel: Sequence[str], var: pd.DataFrame | None = None) -> pd.DataFrame:
    """``channels.parquet`` for ``panel``: known columns from ``var`` (indexed by channel name), else defaults.

    Defaults: ``qc_pass`` True, ``is_nuclear_marker`` False, ``uniprot_id`` from
    ``spora_sd.ontologies.proteins.uniprot_id`` (offline) when that module is installed, else empty.
    """
    out = pd.DataFrame({"channel_name": pd.Series(list(panel), dtype=object)})
    known = var if var is not None else pd.DataFrame(index=pd.Index([], dtype=object))
    defaults: dict[str, Any] = {"qc_pass": True, "uniprot_id": None, "is_nuclear_marker": False}
    lookup = _uniprot_lookup()
    for column, default in defaults.items():
        values = []
        for name in panel:
            value = known[column].get(name) if column in known.columns and name in known.index else None
            if value is None or (isinstance(value, float) and np.isnan(value)):
                value = (lookup(name) or "") if column == "uniprot_id" else default
            values.append(value)
        out[column] = pd.Series(values, dtype=bool if column != "uniprot_id" else object)
    return out


def _uniprot_lookup() -> Any:
    try:
        from spora_sd.ontologies.proteins import uniprot_id
    except ImportError:  # the lamin extra is optional: no lookup, empty accessions
        return lambda name: ""

    def lookup(name: str) -> str:
        try:
            return uniprot_id(name) or ""
        except (KeyError, ValueError, LookupError):
            return ""

    return lookup


def channels_per_tissue_table(panel: Sequence[str], tissue_channels: Mapping[str, Sequence[str]]) -> pd.DataFrame:
    """The boolean tissue x channel matrix of ``channels_per_tissue.parquet`` (index ``tissue_id``)."""
    index = pd.Index(list(tissue_channels), name="tissue_id", dtype=object)
    data = {c: [c in set(tissue_channels[t]) for t in index] for c in panel}
    return pd.DataFrame(data, index=index, columns=list(panel)).astype(bool)
