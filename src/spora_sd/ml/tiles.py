"""A PyTorch tile dataset over a spora cohort or a SpatialData object.

:class:`TileDataset` serves square tiles of one modality: on the cohort's tiling table, on a grid
computed from the tissue masks when the cohort has none, or centred on cells. Each item is a dict:

``image``
    float32 ``(C, H, W)``: the tissue's measured channels among those asked for, standardized with the
    cohort's statistics (see :mod:`spora_sd.ml.standardize`), in panel order.
``channel_names``
    the names of those ``C`` channels.
``channel_present``
    boolean over :attr:`TileDataset.panel`: which panel channels ``image`` holds. Panels vary across
    tissues (and a channel with unusable statistics is dropped), so ``C`` varies: :func:`~spora_sd.ml.collate`
    pads a batch to the panel.
``masks``
    the requested masks cropped to the tile: ``"cells"`` (instance labels, int64), ``"tissue"`` (bool)
    and semantic tasks (int64).
``tissue_id``, ``row``, ``col``
    the tile's tissue and top-left pixel (``cell_id`` too for cell-centred tiles).
``labels``
    the tissue-level columns asked for (e.g. ``split``, clinical variables).

Arrays are torch tensors when torch is installed (numpy arrays otherwise, or with ``numpy=True``).
Pixels of a tile that lie outside the image are 0 in ``image`` and in every mask.

Speed: a tile reads only the ``(C, 256, 256)`` chunks it overlaps, decoded chunks are kept in a
per-worker cache (:class:`~spora_sd.ml.reader.TileReader`) so neighbouring tiles reuse them, images
are opened once per worker, and the dataset pickles without open files, for ``DataLoader(num_workers>0)``.

Examples
--------
>>> import spora_sd, tempfile
>>> from spora_sd.ml import TileDataset
>>> root = spora_sd.make_synthetic_cohort(tempfile.mkdtemp(), n_tissues=2, image_size=128, n_cells=20)
>>> ds = TileDataset(root, tile_size=64, masks=("cells", "tissue"), numpy=True)
>>> item = ds[0]
>>> item["image"].shape[1:], item["image"].dtype, item["masks"]["cells"].shape
((64, 64), dtype('float32'), (64, 64))
"""

from __future__ import annotations

import logging
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from spora_sd import layout
from spora_sd.convert import element_names
from spora_sd.convert.attrs import read_spora_attrs
from spora_sd.errors import CohortFormatError, CohortNotFoundError, InvalidArgumentError
from spora_sd.io.images import CHUNK_SIZE
from spora_sd.ml.masks import MaskCache, MaskRef, crop_padded
from spora_sd.ml.reader import DEFAULT_CACHE_BYTES, ArraySource, TileReader, ZarrSource
from spora_sd.ml.standardize import Standardizer
from spora_sd.stats.intensities import label_centroids

if TYPE_CHECKING:
    from spora_sd.io.cohort import Cohort

try:  # torch is optional: without it, items are numpy arrays and the dataset is a plain class
    import torch
    from torch.utils.data import Dataset as _DatasetBase
except ImportError:  # pragma: no cover - exercised on Python 3.12, where no torch wheel is installed
    torch = None
    _DatasetBase = object  # type: ignore[assignment,misc]

__all__ = ["TileDataset", "cell_centres"]

logger = logging.getLogger(__name__)

CELLS = element_names.CELLS_LABELS
TISSUE = element_names.TISSUE_LABELS
DEFAULT_STANDARDIZATION = "quantile_clipping_log1p/uq_0.99"


@dataclass
class _TissueSource:
    """One tissue as the dataset sees it: its image, its channels, its masks and its labels."""

    tissue_id: str
    image: ZarrSource | ArraySource
    channel_names: list[str]  # of the image, in image order
    masks: dict[str, MaskRef] = field(default_factory=dict)
    labels: dict[str, Any] = field(default_factory=dict)


def _listed(names: Sequence[str], limit: int = 20) -> str:
    """Names for an error message: all of them, or the first ``limit`` and how many more.

    >>> _listed(["CD3E", "CD8A", "DNA1"], limit=2)
    "['CD3E', 'CD8A'] (and 1 more)"
    """
    shown = list(names)[:limit]
    return f"{shown}" + (f" (and {len(names) - limit} more)" if len(names) > limit else "")


def _names(value: str | Sequence[str]) -> list[str]:
    """A name or a sequence of names, as a list (``masks="cells"`` means ``["cells"]``)."""
    return [value] if isinstance(value, str) else list(value)


def _required_masks(masks: list[str], centres: object) -> list[str]:
    """The masks asked for, plus the instance masks when tiles are centred on cells."""
    return [*masks, CELLS] if isinstance(centres, str) and centres == "cells" and CELLS not in masks else masks


def _python_value(value: Any) -> Any:
    """Numpy scalars as Python scalars, NaN/NA as None: labels must pickle and collate plainly."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, np.generic):
        return value.item()
    return value


def cell_centres(instance_mask: np.ndarray) -> pd.DataFrame:
    """Centroid (in pixels) of every cell of an instance mask: columns ``cell_id, y, x``.

    Examples
    --------
    >>> import numpy as np
    >>> m = np.zeros((4, 6), "uint32"); m[0:2, 0:2] = 1; m[3, 5] = 7
    >>> cell_centres(m).values.tolist()
    [[1.0, 0.5, 0.5], [7.0, 3.0, 5.0]]
    """
    # compact per-cell arrays: a mask with a few huge labels costs what its cells cost
    labels, _, mean_y, mean_x = label_centroids(np.asarray(instance_mask))
    return pd.DataFrame({"cell_id": labels.astype(np.int64), "y": mean_y, "x": mean_x})


class TileDataset(_DatasetBase):
    """Tiles of one modality of a spora cohort, as a :class:`torch.utils.data.Dataset`.

    Parameters
    ----------
    cohort
        A cohort folder, dataset key, alias, or an opened :class:`~spora_sd.io.cohort.Cohort`
        (anything :func:`spora_sd.open_cohort` accepts).
    modality
        ``"imc"``, ``"codex"``, ``"he"``, ... (one of the cohort's modalities).
    resolution
        Microns per pixel of the images (and masks) to read.
    tile_size
        Side of the square tiles in pixels.
    strategy
        Tiling strategy: the folder ``tiling/<res>/<strategy>/`` to read, or, when the cohort has no such
        table, how to lay the grid over the tissue masks: ``"default"`` (tiles inside the image) or
        ``"grid"`` (covers the image; edge tiles reach past it and are zero-padded).
    standardization
        ``"<method>/<param>"`` of the cohort's standardization statistics, a :class:`Standardizer`, or
        ``None`` for raw values (as float32). Multiplex modalities only.
    channels
        ``"all"``, ``"qc"`` (``qc_pass``), ``"uniprot"`` (``qc_pass`` and a UniProt accession), or a list of
        channel names. Defines :attr:`panel`.
    masks
        Masks to return, among ``"cells"``, ``"tissue"`` and the cohort's semantic tasks (``"cell_types"``).
    tissues
        Only these tissue ids.
    split
        Only tissues whose ``split`` column in ``tissues.parquet`` is this value (or one of these values).
    labels
        Tissue-level columns of ``tissues.parquet`` to return with each tile.
    transform
        Called on each item (a dict) before it is returned.
    centres
        Centre tiles on points instead of tiling: ``"cells"`` (every cell of the instance masks; see
        :meth:`cell_centred`) or a table with columns ``tissue_id, y, x`` (pixels) and optionally ``cell_id``.
    zscore
        Apply the z-score step of the standardization (global means and stds).
    min_tissue
        When the grid is computed here: keep tiles with at least this fraction of tissue pixels
        (as :func:`spora_sd.compute_tiling` does).
    cache_bytes
        Budget of the decoded-chunk cache of each worker.
    numpy
        Return numpy arrays even when torch is installed.
    storage_options
        Options of the remote filesystem when ``cohort`` is remote (``s3://``, ``https://``, an rclone
        remote; see :func:`spora_sd.open_cohort`). Each worker reads only the chunks of its tiles.

    Examples
    --------
    >>> import spora_sd, tempfile
    >>> root = spora_sd.make_synthetic_cohort(tempfile.mkdtemp(), n_tissues=2, image_size=128, n_cells=20)
    >>> ds = TileDataset(root, tile_size=64, channels="qc", labels=("split",), numpy=True)
    >>> sorted(ds[0])
    ['channel_names', 'channel_present', 'col', 'image', 'labels', 'masks', 'row', 'tissue_id']
    """

    def __init__(
        self,
        cohort: str | Path | Cohort,
        *,
        modality: str = "imc",
        resolution: float = 1.0,
        tile_size: int = 256,
        strategy: str = "default",
        standardization: str | Standardizer | None = DEFAULT_STANDARDIZATION,
        channels: str | Sequence[str] = "all",
        masks: Sequence[str] = (),
        tissues: Sequence[str] | None = None,
        split: str | Sequence[str] | None = None,
        labels: Sequence[str] = (),
        transform: Callable[[dict], Any] | None = None,
        centres: str | pd.DataFrame | None = None,
        zscore: bool = True,
        min_tissue: float = 0.5,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        numpy: bool = False,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        from spora_sd.io.cohort import open_cohort

        cohort = open_cohort(cohort, storage_options=storage_options)
        layout.check_modality(modality)
        if modality not in cohort.modalities:
            raise CohortNotFoundError(f"{cohort.path}: no {modality!r} folder (modalities: {cohort.modalities})")
        mpp = float(resolution)
        masks = _names(masks)
        channel_table = self._channel_table(cohort, modality)
        rows = self._tissue_rows(cohort.tissues, modality, tissues, split, labels, where=str(cohort.paths.tissues))
        sources = []
        skipped = []
        on_disk = set(cohort.image_tissue_ids(modality, mpp))  # one listing (local or remote), not one stat each
        for tissue_id, label_values in rows:
            image_path = cohort.paths.image(modality, mpp, tissue_id)
            if tissue_id not in on_disk:
                skipped.append(image_path)
                continue
            sources.append(
                _TissueSource(
                    tissue_id=tissue_id,
                    image=ZarrSource(image_path / "0"),
                    channel_names=cohort.tissue_channels(tissue_id, modality),
                    masks=self._cohort_masks(cohort, mpp, tissue_id, _required_masks(masks, centres)),
                    labels=label_values,
                )
            )
        if skipped:
            # A partially copied cohort is legal (spec §1): serve what is there, say what is not.
            logger.warning(
                "%d tissue(s) have no %s image at %s mpp and are left out (first: %s)",
                len(skipped),
                modality,
                mpp,
                skipped[0],
            )
        if not sources:
            raise CohortNotFoundError(f"{cohort.paths.images_dir(modality, mpp)}: no image of a selected tissue")
        if isinstance(standardization, str):
            standardization = Standardizer.from_cohort(cohort, modality, standardization, mpp, zscore=zscore)
        table = None
        if centres is None and cohort.paths.tile_coordinates(mpp, strategy, tile_size).is_file():
            table, _ = cohort.tiling(mpp, strategy, tile_size)
        self._setup(
            modality=modality,
            channel_table=channel_table,
            sources=sources,
            standardizer=standardization,
            channels=channels,
            masks=masks,
            tile_size=tile_size,
            strategy=strategy,
            tiling_table=table,
            centres=centres,
            min_tissue=min_tissue,
            transform=transform,
            cache_bytes=cache_bytes,
            numpy=numpy,
            where=str(cohort.path),
        )

    # ---------------------------------------------------------------------------------------------
    # alternative constructors

    @classmethod
    def cell_centred(cls, cohort: str | Path | Cohort, *, tile_size: int = 32, **kwargs: Any) -> TileDataset:
        """Tiles centred on every cell of the instance masks (one tile per cell).

        Cells are ordered by tissue, then by the 256 x 256 chunk holding their centre, so that a sequential
        pass decodes each chunk about once. Items carry ``cell_id``. Keyword arguments are those of
        :class:`TileDataset`.

        Examples
        --------
        >>> import spora_sd, tempfile
        >>> root = spora_sd.make_synthetic_cohort(tempfile.mkdtemp(), n_tissues=1, image_size=128, n_cells=20)
        >>> ds = TileDataset.cell_centred(root, tile_size=16, numpy=True)
        >>> ds[0]["image"].shape[1:], "cell_id" in ds[0]
        ((16, 16), True)
        """
        return cls(cohort, tile_size=tile_size, centres="cells", **kwargs)

    @classmethod
    def from_spatialdata(
        cls,
        sdata: Any,
        *,
        modality: str = "imc",
        tile_size: int = 256,
        strategy: str = "default",
        standardization: Standardizer | None = None,
        channels: str | Sequence[str] = "all",
        masks: Sequence[str] = (),
        tissues: Sequence[str] | None = None,
        split: str | Sequence[str] | None = None,
        labels: Sequence[str] = (),
        transform: Callable[[dict], Any] | None = None,
        centres: str | pd.DataFrame | None = None,
        min_tissue: float = 0.5,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        numpy: bool = False,
    ) -> TileDataset:
        """The same dataset over a SpatialData object laid out as :func:`spora_sd.to_spatialdata` makes it.

        Images are the elements named ``<tissue_id>__<modality>`` (channel names from their ``c``
        coordinates), masks the labels ``<tissue_id>__cells``, ``<tissue_id>__tissue`` and
        ``<tissue_id>__<task>`` (see :mod:`spora_sd.convert.element_names`). The panel (with ``qc_pass`` and ``uniprot_id``)
        is ``channels.parquet`` as ``to_spatialdata`` stores it in ``sdata.attrs["spora"]``, else the ``var``
        of the cell table, else the images' channels. Tissue labels and ``split`` come from the ``tissues``
        table. The grid is computed from the tissue
        labels (the whole image when a tissue has none).

        Parameters
        ----------
        sdata
            The SpatialData object; images may be lazy (dask) or in memory.
        standardization
            A :class:`Standardizer` (e.g. ``Standardizer.from_cohort(...)``) or ``None``: the statistics
            live in the cohort, not in the SpatialData object.

        Other parameters are those of :class:`TileDataset`.

        Examples
        --------
        >>> import spora_sd, tempfile
        >>> root = spora_sd.make_synthetic_cohort(tempfile.mkdtemp(), n_tissues=1, image_size=128, n_cells=20)
        >>> sdata = spora_sd.to_spatialdata(root, modalities=["imc"])
        >>> ds = TileDataset.from_spatialdata(sdata, tile_size=64, numpy=True)
        >>> ds[0]["image"].shape[1:]
        (64, 64)
        """
        layout.check_modality(modality)
        masks = _names(masks)
        required = _required_masks(masks, centres)
        sources, channel_table, tissue_table = _spatialdata_sources(sdata, modality)
        if not sources:
            raise CohortNotFoundError(f"the SpatialData object has no image element named '<tissue_id>__{modality}'")
        wanted = {s.tissue_id for s in sources}
        if tissue_table is None:
            tissue_table = pd.DataFrame({"tissue_id": sorted(wanted), "modality": modality})
        rows = cls._tissue_rows(tissue_table, modality, tissues, split, labels, where="the 'tissues' table")
        by_id = {s.tissue_id: s for s in sources}
        selected = []
        for tissue_id, label_values in rows:
            source = by_id.get(tissue_id)
            if source is None:
                continue
            source.labels = label_values
            missing = [m for m in required if m not in source.masks]
            if missing:
                raise CohortNotFoundError(
                    f"labels element {element_names.labels_name(tissue_id, missing[0])!r} not found in the SpatialData object"
                )
            source.masks = {m: source.masks[m] for m in dict.fromkeys([*required, TISSUE]) if m in source.masks}
            selected.append(source)
        if not selected:
            raise CohortNotFoundError("no image element of a selected tissue in the SpatialData object")
        self = cls.__new__(cls)
        self._setup(
            modality=modality,
            channel_table=channel_table,
            sources=selected,
            standardizer=standardization,
            channels=channels,
            masks=masks,
            tile_size=tile_size,
            strategy=strategy,
            tiling_table=None,
            centres=centres,
            min_tissue=min_tissue,
            transform=transform,
            cache_bytes=cache_bytes,
            numpy=numpy,
            where="SpatialData object",
        )
        return self

    # ---------------------------------------------------------------------------------------------
    # set-up helpers (shared by both constructors)

    @staticmethod
    def _channel_table(cohort: Cohort, modality: str) -> pd.DataFrame:
        if not layout.is_multiplex(modality):
            return pd.DataFrame({"channel_name": cohort.panel(modality)})
        path = cohort.paths.channels(modality)
        if not path.is_file():
            raise CohortNotFoundError(f"{path}: the channels table of {modality!r} is missing")
        return cohort.channels(modality)

    @staticmethod
    def _tissue_rows(
        table: pd.DataFrame,
        modality: str,
        tissues: Sequence[str] | None,
        split: str | Sequence[str] | None,
        labels: Sequence[str],
        where: str,
    ) -> list[tuple[str, dict[str, Any]]]:
        """``(tissue_id, labels)`` of the selected tissues of ``modality``, in table order."""
        if "modality" in table.columns:
            table = table[table["modality"].astype(str) == modality]
        table = table.drop_duplicates("tissue_id")
        labels = _names(labels)
        missing = [c for c in labels if c not in table.columns]
        if missing:
            raise InvalidArgumentError(
                f"{where}: labels={missing}: no such column of the tissues table to use as a label "
                f"(columns: {list(map(str, table.columns))})"
            )
        if tissues is not None:
            tissues = _names(tissues)
            known = table["tissue_id"].astype(str).tolist()
            unknown = sorted(set(tissues) - set(known))
            if unknown:
                raise InvalidArgumentError(
                    f"{where}: tissues={unknown}: no {modality!r} tissue of that id; "
                    f"the {modality!r} tissues are {_listed(known)}"
                )
            table = table[table["tissue_id"].astype(str).isin(tissues)]
        if split is not None:
            if "split" not in table.columns:
                raise InvalidArgumentError(
                    f"{where}: split={split!r}: the tissues table has no 'split' column to select from "
                    f"(columns: {list(map(str, table.columns))})"
                )
            splits = _names(split)
            available = sorted(set(table["split"].dropna().astype(str)))
            table = table[table["split"].astype("string").isin(splits).fillna(False).to_numpy(bool)]
            if table.empty:
                raise InvalidArgumentError(
                    f"{where}: no {modality!r} tissue has split {split!r}; the splits are {available}"
                )
        return [(str(row["tissue_id"]), {c: _python_value(row[c]) for c in labels}) for _, row in table.iterrows()]

    @staticmethod
    def _cohort_masks(cohort: Cohort, mpp: float, tissue_id: str, masks: Sequence[str]) -> dict[str, MaskRef]:
        """The requested masks of a tissue (and its tissue mask, for the grid), checked to exist."""
        out = {}
        for name in dict.fromkeys([*masks, TISSUE]):
            if name == CELLS:
                path = cohort.paths.instance_mask(mpp, tissue_id)
            elif name == TISSUE:
                path = cohort.paths.tissue_mask(mpp, tissue_id)
            else:
                path = cohort.paths.semantic_mask(mpp, element_names.check_task_name(name), tissue_id)
            if path.is_file():
                out[name] = MaskRef(key=str(path), path=str(path))
            elif name in masks:
                raise CohortNotFoundError(f"{path}: mask {name!r} of tissue {tissue_id!r} not found")
        return out

    def _select_channels(self, channel_table: pd.DataFrame, channels: str | Sequence[str], where: str) -> list[str]:
        names = channel_table["channel_name"].astype(str).tolist()
        if isinstance(channels, str) and channels in ("all", "qc", "uniprot"):
            if channels == "all":
                return names
            if "qc_pass" not in channel_table.columns:
                raise InvalidArgumentError(
                    f"{where}: channels={channels!r} needs the 'qc_pass' column, which the channels table lacks; "
                    "pass channels='all' or a list of channel names"
                )
            keep = channel_table["qc_pass"].fillna(False).astype(bool).to_numpy()
            if channels == "uniprot":
                if "uniprot_id" not in channel_table.columns:
                    raise InvalidArgumentError(
                        f"{where}: channels='uniprot' needs the 'uniprot_id' column, which the channels table lacks; "
                        "pass channels='all', 'qc' or a list of channel names"
                    )
                keep = keep & (  # not in place: pandas may hand out a read-only array
                    channel_table["uniprot_id"]
                    .astype("string")
                    .str.fullmatch(_uniprot_pattern())
                    .fillna(False)
                    .to_numpy(bool)
                )
            return [n for n, k in zip(names, keep, strict=True) if k]
        if isinstance(channels, str):
            raise InvalidArgumentError(
                f"channels={channels!r}: expected 'all', 'qc', 'uniprot' or a list of channel names "
                f"(a single channel as a list: channels=[{channels!r}])"
            )
        wanted = list(channels)
        unknown = [c for c in wanted if c not in names]
        if unknown:
            raise InvalidArgumentError(
                f"{where}: channels {unknown} are not in the {self.modality!r} panel; the panel is {_listed(names)}"
            )
        return [n for n in names if n in set(wanted)]

    def _setup(
        self,
        *,
        modality: str,
        channel_table: pd.DataFrame,
        sources: list[_TissueSource],
        standardizer: Standardizer | None,
        channels: str | Sequence[str],
        masks: Sequence[str],
        tile_size: int,
        strategy: str,
        tiling_table: pd.DataFrame | None,
        centres: str | pd.DataFrame | None,
        min_tissue: float,
        transform: Callable[[dict], Any] | None,
        cache_bytes: int,
        numpy: bool,
        where: str,
    ) -> None:
        if isinstance(tile_size, bool) or not isinstance(tile_size, numbers.Integral) or tile_size <= 0:
            raise InvalidArgumentError(f"tile_size must be a positive integer, got {tile_size!r}")
        if standardizer is not None and not isinstance(standardizer, Standardizer):
            raise TypeError(f"standardization must be '<method>/<param>', a Standardizer or None, got {standardizer!r}")
        if standardizer is not None and not layout.is_multiplex(modality):
            raise InvalidArgumentError(f"standardization applies to multiplex modalities only, not {modality!r}")
        self.modality = modality
        self.tile_size = int(tile_size)
        self.strategy = strategy
        self.masks = masks
        self.transform = transform
        self.standardizer = standardizer
        self.numpy = bool(numpy) or torch is None
        self.full_panel = channel_table["channel_name"].astype(str).tolist()
        self.panel = self._select_channels(channel_table, channels, where)
        self.reader = TileReader(cache_bytes)
        self._mask_cache = MaskCache()
        self._sources = sources
        self._index = {s.tissue_id: i for i, s in enumerate(sources)}
        self._plan_channels()
        if isinstance(centres, str):
            if centres != "cells":
                raise InvalidArgumentError(f"centres={centres!r}: expected 'cells' or a table with tissue_id, y, x")
            centres = self._cell_centres()
        if centres is not None:
            self._tiles_from_centres(centres)
        elif tiling_table is not None:
            self._tiles_from_table(tiling_table)
        else:
            self._tiles_from_grid(strategy, min_tissue)
        self._checked: set[int] = set()

    def _plan_channels(self) -> None:
        """Per tissue: which image channels to read, where they go in the panel, their standardization."""
        full = {name: i for i, name in enumerate(self.full_panel)}
        selected = {name: i for i, name in enumerate(self.panel)}
        self._read, self._present, self._stat_positions, self._names = [], [], [], []
        for source in self._sources:
            unknown = [c for c in source.channel_names if c not in full]
            if unknown:
                raise CohortFormatError(
                    source.image.key, "image.channels", f"channel {unknown[0]!r} is not in the {self.modality!r} panel"
                )
            valid = self.standardizer.valid(source.tissue_id) if self.standardizer is not None else None
            read = [
                k
                for k, name in enumerate(source.channel_names)
                if name in selected and (valid is None or valid[full[name]])
            ]
            present = np.zeros(len(self.panel), dtype=bool)
            present[[selected[source.channel_names[k]] for k in read]] = True
            self._read.append(np.asarray(read, dtype=np.intp))
            self._present.append(present)
            self._stat_positions.append(np.asarray([full[source.channel_names[k]] for k in read], dtype=np.intp))
            self._names.append([source.channel_names[k] for k in read])

    # tiles ---------------------------------------------------------------------------------------

    def _set_tiles(self, tissue: np.ndarray, rows: np.ndarray, cols: np.ndarray, cell_ids: np.ndarray | None) -> None:
        self._tile_tissue = np.asarray(tissue, dtype=np.int32)
        self._rows = np.asarray(rows, dtype=np.int64)
        self._cols = np.asarray(cols, dtype=np.int64)
        self._cell_ids = None if cell_ids is None else np.asarray(cell_ids, dtype=np.int64)
        if len(self._rows) == 0:
            logger.warning("the tile dataset is empty (tile_size=%d, strategy=%r)", self.tile_size, self.strategy)

    def _tiles_from_table(self, table: pd.DataFrame) -> None:
        table = table[table["tissue_id"].astype(str).isin(self._index)]
        order = table["tissue_id"].astype(str).map(self._index).to_numpy()
        # The dataset's tissue order (the tissues table's), then tile ids.
        perm = np.lexsort((table["tile_id"].to_numpy(), order))
        self._set_tiles(order[perm], table["row"].to_numpy()[perm], table["col"].to_numpy()[perm], None)

    def _tiles_from_grid(self, strategy: str, min_tissue: float) -> None:
        from spora_sd.stats.tiling import STRATEGIES, tile_starts, tile_tissue_fraction

        if strategy not in STRATEGIES:
            raise CohortNotFoundError(
                f"no tiling table for strategy {strategy!r} and tile size {self.tile_size}; a grid can be computed "
                f"for {', '.join(STRATEGIES)} only (or run spora_sd.compute_tiling)"
            )
        ts = self.tile_size
        parts = []
        for i, source in enumerate(self._sources):
            ref = source.masks.get(TISSUE)
            if ref is not None:
                mask = self._mask_cache.get(ref).astype(bool, copy=False)
            else:
                logger.info("%s: no tissue mask; tiling the whole image", source.tissue_id)
                mask = np.ones(source.image.shape[1:], dtype=bool)
            rows = tile_starts(mask.shape[0], ts, ts, strategy)
            cols = tile_starts(mask.shape[1], ts, ts, strategy)
            keep_r, keep_c = np.nonzero(tile_tissue_fraction(mask, rows, cols, ts) >= min_tissue)
            parts.append((np.full(keep_r.size, i), rows[keep_r], cols[keep_c]))
        self._set_tiles(*(np.concatenate([p[k] for p in parts]) for k in range(3)), None)

    def _cell_centres(self) -> pd.DataFrame:
        frames = []
        for source in self._sources:
            ref = source.masks.get(CELLS)
            if ref is None:
                raise CohortNotFoundError(f"tissue {source.tissue_id!r} has no cell instance mask to centre tiles on")
            frame = cell_centres(self._mask_cache.get(ref))
            frame.insert(0, "tissue_id", source.tissue_id)
            frames.append(frame)
        return pd.concat(frames, ignore_index=True)

    def _tiles_from_centres(self, centres: pd.DataFrame) -> None:
        missing = [c for c in ("tissue_id", "y", "x") if c not in centres.columns]
        if missing:
            raise InvalidArgumentError(
                f"centres: missing columns {missing} (expected tissue_id, y, x and optionally cell_id; "
                f"got {list(map(str, centres.columns))})"
            )
        centres = centres[centres["tissue_id"].astype(str).isin(self._index)]
        tissue = centres["tissue_id"].astype(str).map(self._index).to_numpy()
        half = self.tile_size // 2
        # The pixel holding the centre sits at index tile_size // 2 of the tile.
        rows = np.floor(centres["y"].to_numpy(np.float64) + 0.5).astype(np.int64) - half
        cols = np.floor(centres["x"].to_numpy(np.float64) + 0.5).astype(np.int64) - half
        cell_ids = centres["cell_id"].to_numpy() if "cell_id" in centres.columns else None
        # Tissue, then the chunk that holds the tile's centre: neighbours in the index share chunks.
        order = np.lexsort((cols, rows, (cols + half) // CHUNK_SIZE, (rows + half) // CHUNK_SIZE, tissue))
        self._set_tiles(tissue[order], rows[order], cols[order], None if cell_ids is None else cell_ids[order])

    # ---------------------------------------------------------------------------------------------
    # the Dataset protocol

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def tissue_ids(self) -> list[str]:
        """The tissues served, in order."""
        return [s.tissue_id for s in self._sources]

    @property
    def tiles(self) -> pd.DataFrame:
        """Every tile: ``tissue_id, row, col`` (and ``cell_id`` for cell-centred tiles), in index order."""
        out = pd.DataFrame(
            {
                "tissue_id": np.asarray(self.tissue_ids, dtype=object)[self._tile_tissue],
                "row": self._rows,
                "col": self._cols,
            }
        )
        if self._cell_ids is not None:
            out["cell_id"] = self._cell_ids
        return out

    def _check_image(self, t: int) -> None:
        """Once per tissue and process: the image has as many channels as its channels_per_tissue row."""
        source = self._sources[t]
        n_image = source.image.shape[0]
        if n_image != len(source.channel_names):
            raise CohortFormatError(
                source.image.key,
                "image.channels",
                f"image has {n_image} channels; channels_per_tissue lists {len(source.channel_names)} for "
                f"{source.tissue_id!r}",
            )
        self._checked.add(t)

    def __getitem__(self, index: int) -> Any:
        if not -len(self) <= index < len(self):
            raise IndexError(f"tile index {index} out of range for {len(self)} tiles")
        index = int(index) % len(self)
        t = int(self._tile_tissue[index])
        if t not in self._checked:
            self._check_image(t)
        source = self._sources[t]
        row, col, ts = int(self._rows[index]), int(self._cols[index]), self.tile_size
        # No copy when a new array is made from the tile anyway (standardized, or cast to float32).
        copy = self.standardizer is None and source.image.dtype == np.float32
        raw = self.reader.read(source.image, row, col, ts, ts, self._read[t], copy=copy)
        if self.standardizer is not None:
            image = self.standardizer.apply(raw, source.tissue_id, self._stat_positions[t])
            _, height, width = source.image.shape
            if row < 0 or col < 0 or row + ts > height or col + ts > width:
                # Outside the image the tile is 0 after standardization too (not the standardized 0).
                top, left = max(-row, 0), max(-col, 0)
                bottom, right = max(min(height - row, ts), top), max(min(width - col, ts), left)
                image[:, :top] = 0.0
                image[:, bottom:] = 0.0
                image[:, :, :left] = 0.0
                image[:, :, right:] = 0.0
        else:
            image = raw.astype(np.float32, copy=False)  # float32 images were copied by the reader
        item: dict[str, Any] = {
            "image": image,
            "channel_names": list(self._names[t]),
            "channel_present": self._present[t].copy(),
            "masks": {name: self._mask_tile(source, name, row, col) for name in self.masks},
            "tissue_id": source.tissue_id,
            "row": row,
            "col": col,
            "labels": dict(source.labels),
        }
        if self._cell_ids is not None:
            item["cell_id"] = int(self._cell_ids[index])
        if not self.numpy:
            item["image"] = torch.from_numpy(image)
            item["channel_present"] = torch.from_numpy(item["channel_present"])
            item["masks"] = {k: torch.from_numpy(v) for k, v in item["masks"].items()}
        if self.transform is not None:
            item = self.transform(item)
        return item

    def _mask_tile(self, source: _TissueSource, name: str, row: int, col: int) -> np.ndarray:
        mask = self._mask_cache.get(source.masks[name])
        tile = crop_padded(mask, row, col, self.tile_size, self.tile_size)
        return tile.astype(bool, copy=False) if name == TISSUE else tile.astype(np.int64, copy=False)

    def __repr__(self) -> str:
        return (
            f"TileDataset({self.modality!r}, tiles={len(self)}, tissues={len(self._sources)}, "
            f"tile_size={self.tile_size}, channels={len(self.panel)}, "
            f"standardization={None if self.standardizer is None else self.standardizer.method!r})"
        )


def _uniprot_pattern() -> str:
    """The UniProt accession pattern of the channels schema (one definition for validator and reader)."""
    from spora_sd.layout.schemas import load_schema

    # The schema also allows the empty string ("no accession"), which must not count as one here.
    return load_schema("channels")["properties"]["uniprot_id"]["pattern"].removeprefix("^$|")


def _spatialdata_sources(sdata: Any, modality: str) -> tuple[list[_TissueSource], pd.DataFrame, pd.DataFrame | None]:
    """Tissues, channel table and tissue table of a SpatialData object named as :mod:`spora_sd.convert.element_names` says."""
    images: dict[str, Any] = {}
    label_refs: dict[str, dict[str, MaskRef]] = {}
    for name in sdata.images:
        try:
            parsed = element_names.parse_element_name(name)
        except ValueError:
            continue
        if parsed.kind == "image" and parsed.part == modality:
            images[parsed.tissue_id] = sdata.images[name]
    for name in sdata.labels:
        try:
            parsed = element_names.parse_element_name(name)
        except ValueError:
            continue
        label_refs.setdefault(parsed.tissue_id, {})[parsed.part] = MaskRef(
            key=f"labels/{name}", data=_scale0(sdata.labels[name]).data
        )
    sources = []
    seen: list[str] = []
    for tissue_id, element in images.items():
        array = _scale0(element)
        names = [str(c) for c in array.coords["c"].values]
        seen.extend(n for n in names if n not in seen)
        sources.append(
            _TissueSource(
                tissue_id=tissue_id,
                image=ArraySource(array.data, key=f"images/{element_names.image_name(tissue_id, modality)}"),
                channel_names=names,
                masks=label_refs.get(tissue_id, {}),
            )
        )
    tables = getattr(sdata, "tables", {})
    channel_table = _spatialdata_channels(sdata, modality)
    if channel_table is None:
        channel_table = pd.DataFrame({"channel_name": seen})
    unknown = [c for c in seen if c not in set(channel_table["channel_name"].astype(str))]
    if unknown:
        raise InvalidArgumentError(
            f"SpatialData object: image channels {unknown} are not in its {modality!r} channel table "
            f"({_listed(channel_table['channel_name'].astype(str).tolist())})"
        )
    tissue_table = None
    if element_names.TISSUE_TABLE in tables:
        tissue_table = _tissue_frame(tables[element_names.TISSUE_TABLE])
    return sources, channel_table, tissue_table


def _spatialdata_channels(sdata: Any, modality: str) -> pd.DataFrame | None:
    """The modality's ``channels.parquet`` as :func:`spora_sd.to_spatialdata` stores it (attrs), else the
    ``var`` of the cell table, else ``None`` (the images' own channels then make the panel)."""
    info = read_spora_attrs(sdata)
    records = info.channel_records(modality) if info is not None else None
    if records:
        return pd.DataFrame.from_records(records)
    tables = getattr(sdata, "tables", {})
    if layout.is_multiplex(modality) and element_names.CELL_TABLE in tables:
        var = tables[element_names.CELL_TABLE].var
        table = var.reset_index(drop=True)
        table.insert(0, "channel_name", var.index.astype(str))
        return table
    return None


def _scale0(element: Any) -> Any:
    """Full-resolution DataArray of an image or labels element (single- or multi-scale)."""
    if hasattr(element, "coords") and hasattr(element, "data"):
        return element
    node = element["scale0"]
    return next(iter(node.ds.values()))


def _tissue_frame(table: Any) -> pd.DataFrame:
    """The tissues table of a SpatialData object as a DataFrame with a ``tissue_id`` column."""
    frame = table.obs.copy() if hasattr(table, "obs") else pd.DataFrame(table).copy()
    if "tissue_id" not in frame.columns:
        frame.insert(0, "tissue_id", frame.index.astype(str))
    return frame.reset_index(drop=True)
