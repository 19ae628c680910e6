"""Lossless round trip: ``from_spatialdata(to_spatialdata(c))`` reproduces ``c`` file by file.

Images and masks bit for bit (same dtype, every pyramid level, same Zarr metadata: chunks, shards,
codecs, OME attributes), every Parquet table equal (columns, order, dtypes, category order), and the
derived products (standardization statistics, tilings) recomputed to the same tables.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import spora_sd
from spora_sd.testing import assert_cohorts_equal


def _not_tile_multiple(n: int) -> bool:
    return n % 256 != 0


cohort_params = st.fixed_dictionaries(
    {
        "n_tissues": st.integers(1, 3),
        "image_size": st.tuples(st.integers(20, 300), st.integers(20, 300)).filter(
            lambda hw: _not_tile_multiple(hw[0]) and _not_tile_multiple(hw[1])
        ),
        "n_channels": st.integers(3, 9),
        "dtype": st.sampled_from(["uint8", "uint16", "float32"]),
        "modalities": st.sampled_from([("imc",), ("imc", "he"), ("mibi",)]),
        "resolutions": st.sampled_from([(1.0,), (0.5,)]),
        "n_levels": st.integers(1, 2),
        "n_cells": st.integers(3, 12),
        "seed": st.integers(0, 10_000),
    }
)


# No shrinking: each example writes two cohorts, and a failure prints its parameters anyway.
@settings(
    max_examples=8,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow],
)
@given(params=cohort_params)
def test_round_trip_is_lossless(params: dict) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        source = spora_sd.make_synthetic_cohort(Path(tmp) / "a", name="round2025trip", **params)
        copy = spora_sd.from_spatialdata(spora_sd.to_spatialdata(source), Path(tmp) / "b" / "round2025trip")
        assert spora_sd.validate(copy).ok
        assert_cohorts_equal(source, copy)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return spora_sd.make_synthetic_cohort(
        tmp_path_factory.mktemp("rt"), name="round2025trip", n_tissues=3, image_size=(90, 130), n_cells=8, n_channels=5
    )


def test_round_trip_through_a_zarr_store(source: Path, tmp_path: Path) -> None:
    import spatialdata as sd

    from spora_sd.convert.store import write_spatialdata

    store = write_spatialdata(spora_sd.to_spatialdata(source), tmp_path / "c.zarr")
    copy = spora_sd.from_spatialdata(sd.read_zarr(store), tmp_path / "round2025trip")
    assert_cohorts_equal(source, copy)


def test_subset_new_key_and_added_annotations(source: Path, tmp_path: Path) -> None:
    sdata = spora_sd.to_spatialdata(source)
    keep = sorted(sdata.coordinate_systems)[:2]
    sdata = sdata.filter_by_coordinate_system(keep, filter_tables=False)  # keeps the tissues table
    table = sdata.tables["cells"]
    table.obs["cluster"] = pd.Categorical(np.where(table.obs["cell_id"] % 2 == 0, "even", "odd"))
    copy = spora_sd.from_spatialdata(sdata, tmp_path / "derived2026subset", standardization=False, tiling=False)
    assert [p for p in spora_sd.validate(copy).problems if p.severity == "error"] == []

    def rekey(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame[frame["tissue_id"].astype(str).isin(keep)].reset_index(drop=True)
        column = frame["tissue_id"]
        if isinstance(column.dtype, pd.CategoricalDtype):
            column = column.cat.remove_unused_categories()
            frame["tissue_id"] = column.cat.rename_categories(lambda t: t.replace("round2025trip", "derived2026subset"))
        else:
            frame["tissue_id"] = column.str.replace("round2025trip", "derived2026subset")
        return frame

    # the same tissues (patients, specimens, clinical columns) under the new dataset key
    tissues = pd.read_parquet(copy / "metadata/tissues.parquet")
    pd.testing.assert_frame_equal(tissues, rekey(pd.read_parquet(source / "metadata/tissues.parquet")))
    # the same cells, plus the annotation added in SpatialData
    cells = pd.read_parquet(copy / "metadata/cells.parquet")
    expected = rekey(pd.read_parquet(source / "metadata/cells.parquet"))
    expected["cluster"] = pd.Categorical(np.where(expected["cell_id"] % 2 == 0, "even", "odd"))
    pd.testing.assert_frame_equal(cells, expected)
