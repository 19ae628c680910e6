"""Every read path over S3 (moto) and HTTP gives what the local cohort gives, reading only what it needs."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from remote.helpers import RemoteCohort, fresh_s3_cohort

import spora_sd
from spora_sd.io.cohort import Cohort
from spora_sd.testing import assert_sdata_equal


def _open(remote: RemoteCohort) -> Cohort:
    return spora_sd.open_cohort(remote.url, storage_options=remote.storage_options)


def _pixel_requests(remote: RemoteCohort) -> list[str]:
    """Requests for chunk (shard) files: keys under an image level's ``c/`` folder."""
    return [p for p in remote.log.paths() if ".ome.zarr/" in p and "/c/" in p]


def test_open_reads_tables_and_image_metadata_only(remote: RemoteCohort) -> None:
    with remote.log.recording() as log:
        cohort = _open(remote)
        sdata = spora_sd.to_spatialdata(cohort, elements=("images",))
    assert cohort.remote and cohort.dataset == remote.local.name
    assert len(sdata.images) == len(spora_sd.open_cohort(remote.local).tissues)  # one per (tissue, modality)
    assert log.count > 0
    assert _pixel_requests(remote) == []  # no pixel was read
    assert not any(p.endswith(".npz") for p in log.paths())  # nor a mask


def test_s3_open_lists_each_folder_once_and_reads_small_tables_in_one_request(s3_cohort: RemoteCohort) -> None:
    # a fresh filesystem (options no other test uses): nothing cached from earlier tests
    options = dict(s3_cohort.storage_options or {}, listings_expiry_time=4321.0)
    with s3_cohort.log.recording() as log:
        cohort = spora_sd.open_cohort(s3_cohort.url, storage_options=options)
        spora_sd.to_spatialdata(cohort, elements=("images",))
    listings = [p for p in log.paths() if "list-type=2" in p]
    assert len(listings) == len(set(listings))  # each folder once, from the cache afterwards
    assert not any("prefix=" in p and "%2Fihc%2F" in p for p in listings)  # no folder the root does not have
    tables = Counter(p.rsplit("/", 1)[-1] for p in log.paths() if p.endswith(".parquet"))
    # read once each, in one request (pyarrow alone reads the footer, then the columns)
    assert tables["channels.parquet"] == 1 and tables["channels_per_tissue.parquet"] == 1, tables


def test_image_metadata_is_one_zarr_json_per_image(remote: RemoteCohort) -> None:
    cohort = _open(remote)
    tissue_ids = cohort.tissue_ids("imc")
    with remote.log.recording() as log:
        fetched = cohort.prefetch_images("imc", None, tissue_ids)
    # the group zarr.json holds its levels' metadata (consolidated, as spora-sd writes images)
    assert fetched == len(tissue_ids)
    read = [p.split("?")[0] for p in log.paths() if p.split("?")[0].endswith("zarr.json")]
    assert sorted(p.rsplit("/", 2)[-2] for p in read) == sorted(f"{t}.ome.zarr" for t in tissue_ids)
    with remote.log.recording() as log:
        cohort.image_levels(tissue_ids[0], "imc")
    assert not any(p.endswith("zarr.json") for p in log.paths())  # opened from what was fetched


def test_images_without_consolidated_metadata_read_each_level(s3_server, small_cohort: Path, tmp_path: Path) -> None:
    # as other writers make them: the group zarr.json, then one zarr.json per level, in two concurrent batches
    root = shutil.copytree(small_cohort, tmp_path / small_cohort.name)
    for group in root.rglob("*.ome.zarr/zarr.json"):
        meta = json.loads(group.read_text())
        del meta["consolidated_metadata"]
        group.write_text(json.dumps(meta))
    cohort = spora_sd.open_cohort(fresh_s3_cohort(s3_server, root), storage_options=s3_server.storage_options)
    tissue_ids = cohort.tissue_ids("imc")
    with s3_server.log.recording() as log:
        fetched = cohort.prefetch_images("imc", None, tissue_ids)
    assert fetched == 2 * len(tissue_ids)  # the synthetic images have one level
    assert sum(p.endswith("zarr.json") for p in log.paths()) == fetched
    with s3_server.log.recording() as log:
        levels = cohort.image_levels(tissue_ids[0], "imc")
    assert not any(p.endswith("zarr.json") for p in log.paths())
    local = spora_sd.open_cohort(small_cohort).image(tissue_ids[0], "imc")
    np.testing.assert_array_equal(levels[0].compute(), local.compute())


def test_tables_match_the_local_cohort(remote: RemoteCohort) -> None:
    cohort, local = _open(remote), spora_sd.open_cohort(remote.local)
    pd.testing.assert_frame_equal(cohort.tissues, local.tissues)
    pd.testing.assert_frame_equal(cohort.cells(), local.cells())
    tissue = local.tissue_ids()[1]
    pd.testing.assert_frame_equal(
        cohort.cells(columns=["x"], tissues=[tissue]).reset_index(drop=True),
        local.cells(columns=["x"], tissues=[tissue]).reset_index(drop=True),
    )
    pd.testing.assert_frame_equal(cohort.channels("imc"), local.channels("imc"))
    pd.testing.assert_frame_equal(cohort.channels_per_tissue("imc"), local.channels_per_tissue("imc"))
    for name, table in local.standardization("imc").items():
        pd.testing.assert_frame_equal(cohort.standardization("imc")[name], table)
    assert cohort.tilings() == local.tilings()
    mpp, strategy, size = local.tilings()[0]
    coords, stats = cohort.tiling(mpp, strategy, size)
    local_coords, local_stats = local.tiling(mpp, strategy, size)
    pd.testing.assert_frame_equal(coords, local_coords)
    pd.testing.assert_frame_equal(stats, local_stats)
    assert cohort.label_encoder(local.tasks()[0]) == local.label_encoder(local.tasks()[0])
    assert cohort.summary() | {"path": None} == local.summary() | {"path": None}
    assert cohort.missing == []


def test_images_crop_and_whole_match(remote: RemoteCohort) -> None:
    cohort, local = _open(remote), spora_sd.open_cohort(remote.local)
    for modality in ("imc", "he"):
        tissue = local.tissue_ids(modality)[0]
        image, expected = cohort.image(tissue, modality), local.image(tissue, modality)
        np.testing.assert_array_equal(image.compute(), expected.compute())  # whole
        np.testing.assert_array_equal(image[:, 17:145, 33:161].compute(), expected[:, 17:145, 33:161].compute())


def test_masks_match(remote: RemoteCohort) -> None:
    cohort, local = _open(remote), spora_sd.open_cohort(remote.local)
    tissue = local.tissue_ids()[0]
    np.testing.assert_array_equal(cohort.instance_mask(tissue), local.instance_mask(tissue))
    np.testing.assert_array_equal(cohort.tissue_mask(tissue), local.tissue_mask(tissue))
    task = local.tasks()[0]
    np.testing.assert_array_equal(cohort.semantic_mask(tissue, task), local.semantic_mask(tissue, task))


def test_masks_are_read_with_range_requests(s3_server, tmp_path: Path) -> None:
    from spora_sd.io.location import resolve_location
    from spora_sd.io.masks import read_mask, read_mask_shape, write_mask

    rng = np.random.default_rng(0)
    mask = rng.integers(0, 60000, size=(2000, 2000), dtype=np.uint16)  # random: about 8 MB compressed
    local = write_mask(tmp_path / "big.npz", mask)
    s3_server.put("masks/big.npz", local.read_bytes())
    path = resolve_location("s3://spora/masks/big.npz", s3_server.storage_options)
    with s3_server.log.recording() as log:
        shape, dtype = read_mask_shape(path)
    assert (shape, dtype) == ((2000, 2000), np.dtype("uint16"))
    assert log.bytes_sent < local.stat().st_size / 4  # the header: a few range requests, not the file
    assert all(method in ("GET", "HEAD") for method, _, _ in log.entries)
    np.testing.assert_array_equal(read_mask(path), mask)


def test_to_spatialdata_lazy_equals_local(remote: RemoteCohort) -> None:
    remote_sdata = spora_sd.to_spatialdata(remote.url, storage_options=remote.storage_options)
    local_sdata = spora_sd.to_spatialdata(remote.local)
    assert_sdata_equal(remote_sdata, local_sdata)


def test_cell_intensities_equal(remote: RemoteCohort) -> None:
    pd.testing.assert_frame_equal(
        spora_sd.compute_cell_intensities(remote.url, storage_options=remote.storage_options),
        spora_sd.compute_cell_intensities(remote.local),
    )


def test_standardization_and_tiling_are_written_to_a_local_output(remote: RemoteCohort, tmp_path: Path) -> None:
    from spora_sd.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match="never writes to a remote cohort"):
        spora_sd.compute_tiling(remote.url, storage_options=remote.storage_options)
    out = tmp_path / remote.local.name
    folder = spora_sd.compute_standardization(remote.url, "imc", storage_options=remote.storage_options, output=out)
    assert folder.is_relative_to(out)
    tiles = spora_sd.compute_tiling(remote.url, tile_size=64, storage_options=remote.storage_options, output=out)
    local = spora_sd.open_cohort(remote.local)
    expected = local.standardization("imc")
    for name, table in expected.items():
        written = pd.read_parquet(folder / f"{name}.parquet")
        if "tissue_id" in written.columns:
            written = written.set_index("tissue_id")
        pd.testing.assert_frame_equal(written, table, check_exact=False, rtol=1e-12)
    ref = tmp_path / "ref"
    reference = spora_sd.compute_tiling(remote.local, tile_size=64, output=ref)
    pd.testing.assert_frame_equal(pd.read_parquet(tiles), pd.read_parquet(reference))


def test_tile_dataset_reads_the_same_tiles(remote: RemoteCohort) -> None:
    from spora_sd.ml import TileDataset

    kwargs = {"tile_size": 64, "numpy": True, "masks": ("cells",)}
    remote_ds = TileDataset(remote.url, storage_options=remote.storage_options, **kwargs)
    local_ds = TileDataset(remote.local, **kwargs)
    assert len(remote_ds) == len(local_ds) > 0
    for i in (0, len(local_ds) // 2, len(local_ds) - 1):
        a, b = remote_ds[i], local_ds[i]
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["masks"]["cells"], b["masks"]["cells"])


@pytest.mark.parametrize("deep", [False, True])
def test_validate_remote(remote: RemoteCohort, deep: bool) -> None:
    report = spora_sd.validate(remote.url, deep=deep, storage_options=remote.storage_options)
    assert report.ok, report.problems
    assert report.root == remote.url


def test_crop_reads_the_shard_index_and_the_overlapped_chunks_only(s3_server, tmp_path: Path) -> None:
    """A 256 x 256 crop of a sharded image: one index read per shard, then the chunks under the crop."""
    import math

    from spora_sd.io.images import open_image_levels, write_image
    from spora_sd.io.location import resolve_location

    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 50, size=(2, 2600, 2600), dtype=np.uint8)  # 11 x 11 chunks: shards of 2 x 2
    local = write_image(tmp_path / "x2025crop_abcdefgh_0000.ome.zarr", pixels, mpp=1.0, channel_names=["A", "B"])
    url = s3_server.upload_folder(local, "crops/x2025crop_abcdefgh_0000.ome.zarr")
    # dask chunks of several Zarr chunks (as Cohort.image and to_spatialdata make them for remote images)
    level = open_image_levels(resolve_location(url, s3_server.storage_options), chunk_bytes=128 * 2**20)[0]
    y, x = 600, 700  # chunks rows 2-3, columns 2-3: one shard (1, 1), four chunks
    with s3_server.log.recording() as log:
        crop = level[:, y : y + 256, x : x + 256].compute()
    np.testing.assert_array_equal(crop, pixels[:, y : y + 256, x : x + 256])
    shard = local / "0" / "c" / "0" / "1" / "1"
    data = shard.read_bytes()
    index = np.frombuffer(data[-(4 * 16 + 4) : -4], dtype="<u8").reshape(4, 2)
    chunk_bytes = int(index[:, 1].sum())
    assert all("/0/c/0/1/1" in p for p in log.paths())  # only that shard's object
    # its index and each chunk by range, or (as here, where the crop needs all four chunks of the shard)
    # the whole shard in one request: never more than the chunks and the index
    assert log.count <= 1 + 4
    assert log.bytes_sent <= chunk_bytes + 4 * 16 + 4
    assert math.isclose(log.bytes_sent, chunk_bytes, rel_tol=0.2)

    y, x = 300, 300  # chunks (1, 1) of shard (0, 0) only: the index, then that chunk
    with s3_server.log.recording() as log:
        crop = level[:, y : y + 200, x : x + 200].compute()
    # the right pixels, not zeros from a key read without the image's prefix (zarr >= 3.2 reads the
    # inner chunks of a shard with get_ranges)
    np.testing.assert_array_equal(crop, pixels[:, y : y + 200, x : x + 200])
    shard = (local / "0" / "c" / "0" / "0" / "0").read_bytes()
    one_chunk = int(np.frombuffer(shard[-(4 * 16 + 4) : -4], dtype="<u8").reshape(4, 2)[3, 1])
    assert log.count == 2
    assert log.bytes_sent == one_chunk + 4 * 16 + 4


def test_reopening_sees_a_table_rewritten_in_the_bucket(s3_server, small_cohort: Path) -> None:
    # s3fs keeps one filesystem per set of options, with a listing cache (sizes included): an open
    # must list afresh, or a table rewritten since the last open is read with its old size
    import pyarrow.parquet as pq
    from remote.helpers import fresh_s3_cohort

    url = fresh_s3_cohort(s3_server, small_cohort)
    before = spora_sd.open_cohort(url, storage_options=s3_server.storage_options).cells()
    kept = pq.read_table(small_cohort / "metadata" / "cells.parquet").slice(0, 5)
    sink = pa.BufferOutputStream()
    pq.write_table(kept, sink)
    prefix = url.removeprefix(f"s3://{s3_server.bucket}/")
    s3_server.put(f"{prefix}/metadata/cells.parquet", sink.getvalue().to_pybytes())
    after = spora_sd.open_cohort(url, storage_options=s3_server.storage_options).cells()
    assert len(before) > 5 and len(after) == 5
