"""What an in-place registration curates, read from a cohort's tables alone (local or remote).

The curator of :mod:`spora_sd.lamin.annotation` validates the labels (``attrs``), the cell-type
columns of the cell table and the markers. :func:`tables_view` builds exactly that from parquet
files: the cell table's ``obs`` with only ``tissue_id``, ``cell_type`` and ``cell_category`` (column
selection: the other columns are not read), the panel (``channels.parquet`` of every multiplex
modality) as ``var``, and the tissue table. ``to_spatialdata(..., elements=("tables",))`` would also
read every cell mask, to put the cells' centroids into ``obsm["spatial"]``; registration needs none
of that, and for a remote cohort it would be most of the bytes read.

Examples
--------
>>> import spora_sd, tempfile
>>> root = spora_sd.make_synthetic_cohort(tempfile.mkdtemp(), n_tissues=2, image_size=32, n_cells=4)
>>> view = tables_view(root)
>>> sorted(view.tables), list(view.tables["cells"].obs.columns)
(['cells', 'tissues'], ['tissue_id', 'cell_type', 'cell_category'])
>>> view.attrs["modalities"]
['he', 'imc']
"""

from __future__ import annotations

import os
import warnings
from typing import TYPE_CHECKING, Any

import pandas as pd

from spora_sd.convert.cell_table import _panel_var
from spora_sd.convert.element_names import CELL_TABLE, TISSUE_TABLE
from spora_sd.io.cohort import Cohort, open_cohort

if TYPE_CHECKING:
    from spatialdata import SpatialData

__all__ = ["OBS_COLUMNS", "tables_view"]

#: The cell-table columns that registration reads.
OBS_COLUMNS = ("tissue_id", "cell_type", "cell_category")


def _categorical(frame: pd.DataFrame) -> pd.DataFrame:
    for column in frame.columns:
        if frame[column].dtype == object or pd.api.types.is_string_dtype(frame[column].dtype):
            frame[column] = frame[column].astype("category")
    return frame


def tables_view(cohort: str | os.PathLike[str] | Cohort, storage_options: dict[str, Any] | None = None) -> SpatialData:
    """A SpatialData of tables only: ``cells`` (obs: :data:`OBS_COLUMNS`; var: the panel), ``tissues``.

    Parameters
    ----------
    cohort
        A cohort folder, a remote location (``s3://...``, see :func:`spora_sd.open_cohort`) or an
        opened cohort.
    storage_options
        For a remote location.

    Returns
    -------
    spatialdata.SpatialData
        With ``attrs`` ``dataset``, ``modalities`` and the registry's ``title``/``citation``/``doi``,
        ``bio`` and ``tech`` when the dataset is known.
    """
    import anndata as ad
    from spatialdata import SpatialData

    from spora_sd.datasets.registry import cohorts

    c = cohort if isinstance(cohort, Cohort) else open_cohort(cohort, storage_options=storage_options)
    var, _ = _panel_var(c, c.multiplex_modalities)
    tables: dict[str, Any] = {}
    if c.cell_columns:
        obs = c.cells(columns=[col for col in OBS_COLUMNS if col in c.cell_columns])
        obs = _categorical(obs[[col for col in OBS_COLUMNS if col in obs.columns]].copy())
        obs.index = pd.RangeIndex(len(obs)).astype(str)
        with warnings.catch_warnings():  # no X: anndata says so
            warnings.simplefilter("ignore")
            tables[CELL_TABLE] = ad.AnnData(obs=obs, var=var)
    tissues = _categorical(c.tissues.reset_index(drop=True).copy())
    tissues.index = tissues.index.astype(str)
    tables[TISSUE_TABLE] = ad.AnnData(obs=tissues)
    attrs: dict[str, Any] = {"dataset": c.dataset, "modalities": list(c.modalities)}
    info = cohorts.get(c.dataset)
    if info is not None:
        attrs.update({"title": info.title, "citation": info.citation, "doi": info.doi})
        attrs.update({"bio": dict(info.bio()), "tech": dict(info.tech())})
    return SpatialData(tables=tables, attrs=attrs)
