"""The tables-only view that in-place registration curates: local, and over S3 without images or masks."""

from __future__ import annotations

import pandas as pd

from spora_sd.lamin.cohort_tables import OBS_COLUMNS, tables_view


def test_tables_view_has_what_curation_reads(synthetic_paths) -> None:
    import spora_sd

    view = tables_view(synthetic_paths["lung"])
    full = spora_sd.to_spatialdata(synthetic_paths["lung"])
    cells, expected = view.tables["cells"], full.tables["cells"]
    assert list(cells.obs.columns) == [c for c in OBS_COLUMNS if c in expected.obs.columns]
    for column in cells.obs.columns:
        assert list(cells.obs[column].astype(str)) == list(expected.obs[column].astype(str))
    pd.testing.assert_frame_equal(cells.var, expected.var)
    assert view.tables["tissues"].n_obs == full.tables["tissues"].n_obs
    assert view.attrs["dataset"] == "lung2024synthetic"
    assert view.attrs["modalities"] == ["imc"]
    assert not view.images and not view.labels


def test_tables_view_over_s3_reads_no_image_or_mask(s3_server, synthetic_paths) -> None:
    local = tables_view(synthetic_paths["lung"])
    url = s3_server.upload_folder(synthetic_paths["lung"], "lamin-tables/lung2024synthetic")
    with s3_server.log.recording() as log:
        remote = tables_view(url, storage_options=s3_server.storage_options)
    paths = log.paths()
    assert paths, "nothing was read over S3"
    assert not [p for p in paths if ".zarr" in p or p.endswith(".npz")]
    assert remote.tables["cells"].n_obs == local.tables["cells"].n_obs
    assert list(remote.tables["cells"].obs["cell_type"].astype(str)) == list(
        local.tables["cells"].obs["cell_type"].astype(str)
    )
