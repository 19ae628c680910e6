"""Remote cohorts: opening over a slow S3 link, and a 256 x 256 crop over S3 against a raw Zarr read.

Both run against moto's S3 server on loopback (``tests/servers.py``), in this process:

- **open over 20 ms per request**: a synthetic IMC cohort (200 tissues of 256 x 256 px, 10 channels,
  two pyramid levels; quick: 5 tissues) uploaded to the server, read through a loopback proxy that
  adds 20 ms before each request (``FaultProxy.delay``). The operation is a lazy
  ``to_spatialdata(cohort, elements=("images",))``: the tables and every image's metadata, no pixel.
  Ratio: remote time / the same call on the local copy (goal <= 3). Also printed: the requests the
  proxy received and the bytes the server sent, and the requests per image beyond the tables.
- **crop**: random 256 x 256 all-channel crops (not on the chunk grid, so most touch four chunks) of
  a 2,600 x 2,600 px, 10-channel image (shards of 2 x 2 chunks; quick: 600 px, one chunk per shard),
  through ``Cohort.image(...)`` (dask over spora-sd's checked Zarr reads) against ``zarr`` slicing of
  the same array through the same kind of store (zarr's ``FsspecStore`` over s3fs, opened
  beforehand). Ratios: time / raw Zarr time (goal <= 1.3), and bytes the server sent / bytes of the
  chunks the crops overlap, from the shard indexes (goal <= 1.2; the rest is the shard index).
- **store layer**: the same crops through zarr's ``ObjectStore`` over obstore, for the choice in
  ``docs/design.md``: raw obstore time / raw FsspecStore time (for the record, no goal).
"""

from __future__ import annotations

import logging
import math
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from common import Result, imc_cohort, synthetic_cohort, timed

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from servers import ACCESS_KEY, REGION, SECRET_KEY, FaultProxy, S3Server

OPEN_SIZES = {
    True: {"n_tissues": 5, "image_size": 256, "n_channels": 10, "n_cells": 30, "repeat": 1},
    False: {"n_tissues": 200, "image_size": 256, "n_channels": 10, "n_cells": 30, "repeat": 3},
}
CROP_SIZES = {True: {"image_size": 600, "crops": 10}, False: {"image_size": 2600, "crops": 50}}
DELAY = 0.020
SIZE = 256


def _options(endpoint: str) -> dict[str, Any]:
    return {"key": ACCESS_KEY, "secret": SECRET_KEY, "client_kwargs": {"endpoint_url": endpoint, "region_name": REGION}}


def _open(quick: bool, s3: S3Server) -> list[Result]:
    import spora_sd

    p = OPEN_SIZES[quick]
    local = imc_cohort("bench2025remote", quick, p)
    url = s3.upload_folder(local, f"bench/{local.name}")
    n_images = len(spora_sd.open_cohort(local).tissue_ids("imc"))

    def run(location: Any, options: dict | None) -> Any:
        return spora_sd.to_spatialdata(location, elements=("images",), storage_options=options)

    with FaultProxy(s3.endpoint_url) as proxy:
        proxy.delay = DELAY
        options = _options(proxy.url)
        run(local, None)  # warm-up: imports, first-call caches
        local_time = remote_time = float("inf")
        requests = server_bytes = 0
        for i in range(p["repeat"]):
            t, _ = timed(lambda: run(local, None))
            local_time = min(local_time, t)
            # a fresh filesystem each time: no listing cached from the previous round
            fresh = dict(options, skip_instance_cache=True, use_listings_cache=False) if i else options
            proxy.log.clear()
            s3.log.clear()
            t, sdata = timed(lambda fresh=fresh: run(url, fresh))
            remote_time = min(remote_time, t)
            requests, server_bytes = proxy.log.count, s3.log.bytes_sent
            assert len(sdata.images) == n_images
        zarr_json = sum(p.endswith("zarr.json") for p in proxy.log.paths())
    return [
        Result(
            "remote_open",
            remote_time / local_time,
            "<=3",
            f"lazy to_spatialdata over S3 with {DELAY * 1e3:.0f} ms per request / the same on the local copy",
            {
                "tissues": float(n_images),
                "remote s": remote_time,
                "local s": local_time,
                "requests": float(requests),
                "zarr.json requests": float(zarr_json),
                "other requests": float(requests - zarr_json),
                "requests per image": requests / n_images,
                "KB read": server_bytes / 1e3,
            },
        )
    ]


def _overlapped_chunk_bytes(local_level: Path, shard: tuple[int, ...], chunk: tuple[int, ...], y: int, x: int) -> int:
    """Bytes of the stored chunks that a ``SIZE`` x ``SIZE`` crop at (y, x) overlaps, from the shard indexes."""
    total = 0
    per_shard = [s // c for s, c in zip(shard, chunk, strict=True)]
    n_chunks = math.prod(per_shard)
    for cy in range(y // chunk[1], (y + SIZE - 1) // chunk[1] + 1):
        for cx in range(x // chunk[2], (x + SIZE - 1) // chunk[2] + 1):
            sy, sx = cy // per_shard[1], cx // per_shard[2]
            data = (local_level / "c" / "0" / str(sy) / str(sx)).read_bytes()
            index = np.frombuffer(data[-(n_chunks * 16 + 4) : -4], dtype="<u8").reshape(per_shard[1], per_shard[2], 2)
            total += int(index[cy % per_shard[1], cx % per_shard[2], 1])
    return total


def _crop(quick: bool, s3: S3Server) -> list[Result]:
    import obstore.store
    import zarr
    from zarr.storage import FsspecStore, ObjectStore

    import spora_sd

    p = CROP_SIZES[quick]
    local = synthetic_cohort(
        "bench2025remotecrop",
        quick,
        n_tissues=1,
        modalities=("imc",),
        image_size=p["image_size"],
        n_channels=10,
        n_cells=200,
        n_levels=1,
        seed=0,
        standardization=False,
        tiling=False,
    )
    prefix = f"bench/{local.name}"
    url = s3.upload_folder(local, prefix)
    options = _options(s3.endpoint_url)
    cohort = spora_sd.open_cohort(url, storage_options=options)
    tid = cohort.tissue_ids("imc")[0]
    image = cohort.image(tid, "imc")
    level_key = f"imc/1_0mpp/images/{tid}.ome.zarr/0"
    raw = zarr.open_array(FsspecStore.from_url(f"{url}/{level_key}", storage_options=options, read_only=True), mode="r")
    object_store = obstore.store.S3Store(
        s3.bucket,
        prefix=f"{prefix}/{level_key}",
        endpoint=s3.endpoint_url,
        access_key_id=ACCESS_KEY,
        secret_access_key=SECRET_KEY,
        region=REGION,
        client_options={"allow_http": True},
    )
    raw_obstore = zarr.open_array(ObjectStore(object_store, read_only=True), mode="r")
    height, width = image.shape[1:]
    rng = np.random.default_rng(0)
    crops = [(int(rng.integers(0, height - SIZE)), int(rng.integers(0, width - SIZE))) for _ in range(p["crops"])]
    shard, chunk = tuple(raw.shards or raw.chunks), tuple(raw.chunks)
    overlapped = sum(_overlapped_chunk_bytes(local / level_key, shard, chunk, y, x) for y, x in crops)

    def spora() -> int:
        return sum(int(image[:, y : y + SIZE, x : x + SIZE].compute().sum() > 0) for y, x in crops)

    def baseline(array: Any = raw) -> int:
        return sum(int(array[:, y : y + SIZE, x : x + SIZE].sum() > 0) for y, x in crops)

    spora(), baseline(), baseline(raw_obstore)  # warm-up
    s3.log.clear()
    spora()
    spora_bytes = s3.log.bytes_sent
    s3.log.clear()
    baseline()
    raw_bytes = s3.log.bytes_sent
    spora_time = raw_time = obstore_time = float("inf")
    for _ in range(3):
        spora_time = min(spora_time, timed(spora)[0])
        raw_time = min(raw_time, timed(baseline)[0])
        obstore_time = min(obstore_time, timed(lambda: baseline(raw_obstore))[0])
    y, x = crops[0]
    np.testing.assert_array_equal(image[:, y : y + SIZE, x : x + SIZE].compute(), raw[:, y : y + SIZE, x : x + SIZE])
    n = len(crops)
    return [
        Result(
            "remote_crop",
            spora_time / raw_time,
            "<=1.3",
            "256 x 256 all-channel crop over S3: Cohort.image time / raw zarr (FsspecStore) time",
            {
                "crops": float(n),
                "image px": float(height),
                "shard px": float(shard[1]),
                "spora ms/crop": 1e3 * spora_time / n,
                "zarr ms/crop": 1e3 * raw_time / n,
            },
        ),
        Result(
            "remote_crop_bytes",
            spora_bytes / overlapped,
            "<=1.2",
            "bytes the server sent for the crops / bytes of the chunks they overlap",
            {"KB sent": spora_bytes / 1e3, "KB overlapped": overlapped / 1e3, "raw zarr KB sent": raw_bytes / 1e3},
        ),
        Result(
            "remote_store_layer",
            obstore_time / raw_time,
            ">=0",
            "raw zarr crop time: ObjectStore (obstore) / FsspecStore (s3fs), for the record",
            {"obstore ms/crop": 1e3 * obstore_time / n, "fsspec ms/crop": 1e3 * raw_time / n},
        ),
    ]


def run(quick: bool) -> list[Result]:
    logging.getLogger("ome_zarr").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=UserWarning)
    with S3Server() as s3:
        return [*_open(quick, s3), *_crop(quick, s3)]
