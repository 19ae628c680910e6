"""Remote cohorts: opening over a slow S3 link, and a 256 x 256 crop over S3 against a raw Zarr read.

Both run against moto's S3 server on loopback, in a process of its own (``python -m moto.server``),
so that the server's CPU is not counted as the client's; the delaying proxy (``FaultProxy`` of
``tests/servers.py``) runs in a third process (this file with ``--proxy``):

- **open over 20 ms per request**: a synthetic IMC cohort (200 tissues of 256 x 256 px, 10 channels,
  two pyramid levels; quick: 5 tissues) uploaded to the server, read through a loopback proxy that
  adds 20 ms before each request (``FaultProxy.delay``). The operation is a lazy
  ``to_spatialdata(cohort, elements=("images",))``: the tables and every image's metadata, no pixel.
  Ratio: remote time / the same call on the local copy (goal <= 3), on the cohort as spora-sd's
  writers make it (each image group's ``zarr.json`` holds its levels' metadata, consolidated). Also
  printed: the requests the proxy received and the bytes it forwarded, the requests per image beyond
  the tables, and the remote time with pixels through zarr's ``FsspecStore`` instead of its
  ``ObjectStore``; and, for the record (``remote_open_unconsolidated``), the same open of a copy
  without consolidated metadata (as other writers make it: one more ``zarr.json`` per level).
- **crop**: random 256 x 256 all-channel crops (not on the chunk grid, so most touch four chunks) of
  a 2,600 x 2,600 px, 10-channel image (shards of 2 x 2 chunks; quick: 600 px, one chunk per shard),
  through ``Cohort.image(...)`` (dask over spora-sd's checked Zarr reads, zarr's ``ObjectStore`` over
  obstore) against ``zarr`` slicing of the same array through the same kind of store (opened
  beforehand). Ratios: time / raw Zarr time (goal <= 1.3), and bytes the server sent / bytes of the
  chunks the crops overlap, from the shard indexes (goal <= 1.2; the rest is the shard index),
  counted by a proxy without delay.
- **store layer**: the same crops through spora-sd with zarr's ``FsspecStore`` over s3fs (an s3fs
  option obstore cannot express, :data:`FSSPEC_ONLY`, makes spora-sd fall back to it), for the choice
  in ``docs/design.md``: obstore time / FsspecStore time (for the record, no goal); raw Zarr through
  both stores is printed too.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import subprocess
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from common import Result, imc_cohort, synthetic_cohort, timed

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from servers import ACCESS_KEY, REGION, SECRET_KEY, FaultProxy, S3Server, moto_process

OPEN_SIZES = {
    True: {"n_tissues": 5, "image_size": 256, "n_channels": 10, "n_cells": 30, "repeat": 1},
    False: {"n_tissues": 200, "image_size": 256, "n_channels": 10, "n_cells": 30, "repeat": 3},
}
CROP_SIZES = {True: {"image_size": 600, "crops": 10}, False: {"image_size": 2600, "crops": 50}}
DELAY = 0.020
#: An s3fs option with no obstore equivalent: spora-sd then reads pixels through zarr's FsspecStore
#: (``spora_sd.io.remote.zarr_store``), which is how the two store layers are compared.
FSSPEC_ONLY = {"default_block_size": 50 << 20}
SIZE = 256


class MotoProcess(S3Server):
    """moto's S3 server in a process of its own (``python -m moto.server``), with one bucket."""

    def start(self) -> MotoProcess:
        self._process, self._port = moto_process()
        self.client().create_bucket(Bucket=self.bucket)
        return self

    def stop(self) -> None:
        self._process.terminate()
        self._process.wait(timeout=10)

    @property
    def port(self) -> int:
        return self._port


class ProxyProcess:
    """A :class:`FaultProxy` with ``delay`` in a process of its own; ``stats()`` asks it what it saw."""

    def __init__(self, upstream: str, delay: float) -> None:
        self._process = subprocess.Popen(
            [sys.executable, __file__, "--proxy", upstream, str(delay)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._process.stdout is not None
        self.url = self._process.stdout.readline().strip()

    def _ask(self, command: str) -> str:
        assert self._process.stdin is not None and self._process.stdout is not None
        self._process.stdin.write(command + "\n")
        self._process.stdin.flush()
        return self._process.stdout.readline()

    def clear(self) -> None:
        self._ask("clear")

    def stats(self) -> dict[str, int]:
        """``requests`` received, ``zarr_json`` of them, and ``bytes`` of the answers from upstream."""
        return json.loads(self._ask("stats"))

    def close(self) -> None:
        assert self._process.stdin is not None
        self._process.stdin.close()
        self._process.wait(timeout=10)


@contextmanager
def proxy_process(upstream: str, delay: float = 0.0) -> Iterator[ProxyProcess]:
    proxy = ProxyProcess(upstream, delay)
    try:
        yield proxy
    finally:
        proxy.close()


def _serve_proxy(upstream: str, delay: float) -> None:
    """The proxy process: prints its URL, then answers ``clear`` and ``stats`` lines on stdin."""
    with FaultProxy(upstream) as proxy:
        proxy.delay = delay
        print(proxy.url, flush=True)
        for line in sys.stdin:
            if line.strip() == "clear":
                proxy.log.clear()
                proxy.forwarded.clear()
                print("{}", flush=True)
            else:
                paths = proxy.log.paths()
                zarr_json = sum(p.split("?")[0].endswith("zarr.json") for p in paths)
                stats = {"requests": len(paths), "zarr_json": zarr_json, "bytes": proxy.forwarded.bytes_sent}
                print(json.dumps(stats), flush=True)


def _options(endpoint: str) -> dict[str, Any]:
    return {"key": ACCESS_KEY, "secret": SECRET_KEY, "client_kwargs": {"endpoint_url": endpoint, "region_name": REGION}}


def _without_consolidated(local: Path) -> Path:
    """A copy of ``local`` whose image groups hold no consolidated metadata, as writers other than spora-sd make it."""
    plain = local.parent / "unconsolidated" / local.name
    if not (plain / "metadata" / "tissues.parquet").is_file():
        shutil.copytree(local, plain, dirs_exist_ok=True)
    for group in plain.rglob("*.ome.zarr/zarr.json"):
        meta = json.loads(group.read_text())
        if meta.pop("consolidated_metadata", None) is not None:
            group.write_text(json.dumps(meta, indent=2))
    return plain


def _open(quick: bool, s3: S3Server) -> list[Result]:
    import spora_sd

    p = OPEN_SIZES[quick]
    local = imc_cohort("bench2025remote", quick, p)
    spora_sd.consolidate_images(local)  # a cohort cached by a run before the writers consolidated: as they write now
    plain = _without_consolidated(local)
    url = s3.upload_folder(local, f"bench/{local.name}")
    url_plain = s3.upload_folder(plain, f"bench/unconsolidated/{plain.name}")
    n_images = len(spora_sd.open_cohort(local).tissue_ids("imc"))

    def run(location: Any, options: dict | None) -> Any:
        return spora_sd.to_spatialdata(location, elements=("images",), storage_options=options)

    with proxy_process(s3.endpoint_url, DELAY) as proxy:
        options = _options(proxy.url)
        run(local, None)  # warm-up: imports, first-call caches
        run(plain, None)
        local_time = remote_time = fsspec_time = direct_time = plain_local = plain_remote = float("inf")
        stats: dict[str, int] = {}
        plain_stats: dict[str, int] = {}
        for i in range(p["repeat"]):
            t, _ = timed(lambda: run(local, None))
            local_time = min(local_time, t)
            # a fresh filesystem each time: no listing cached from the previous round
            fresh = dict(options, listings_expiry_time=3600.0 + i)
            proxy.clear()
            t, sdata = timed(lambda fresh=fresh: run(url, fresh))
            remote_time = min(remote_time, t)
            stats = proxy.stats()
            assert len(sdata.images) == n_images
            # the copy without consolidated metadata, local and remote
            t, _ = timed(lambda: run(plain, None))
            plain_local = min(plain_local, t)
            proxy.clear()
            t, sdata = timed(lambda i=i: run(url_plain, dict(options, listings_expiry_time=5400.0 + i)))
            plain_remote = min(plain_remote, t)
            plain_stats = proxy.stats()
            assert len(sdata.images) == n_images
            # the same through zarr's FsspecStore (an option obstore cannot express keeps s3fs)
            t, _ = timed(lambda i=i: run(url, dict(options, listings_expiry_time=7200.0 + i, **FSSPEC_ONLY)))
            fsspec_time = min(fsspec_time, t)
            # the same without the proxy and its delay: what the server and the client cost alone
            direct = dict(_options(s3.endpoint_url), listings_expiry_time=3600.0 + i)
            t, _ = timed(lambda direct=direct: run(url, direct))
            direct_time = min(direct_time, t)
    requests = stats["requests"]
    return [
        Result(
            "remote_open",
            remote_time / local_time,
            "<=3",
            f"lazy to_spatialdata over S3 with {DELAY * 1e3:.0f} ms per request / the same on the local copy "
            "(images with consolidated metadata, as spora-sd writes them)",
            {
                "tissues": float(n_images),
                "remote s": remote_time,
                "local s": local_time,
                "remote s (FsspecStore)": fsspec_time,
                "remote s (no proxy, no delay)": direct_time,
                "requests": float(requests),
                "zarr.json requests": float(stats["zarr_json"]),
                "other requests": float(requests - stats["zarr_json"]),
                "requests per image": requests / n_images,
                "KB read": stats["bytes"] / 1e3,
            },
        ),
        Result(
            "remote_open_unconsolidated",
            plain_remote / plain_local,
            ">=0",
            f"the same open of a copy without consolidated metadata (other writers), over S3 with {DELAY * 1e3:.0f} "
            "ms per request / on the local copy, for the record",
            {
                "remote s": plain_remote,
                "local s": plain_local,
                "requests": float(plain_stats["requests"]),
                "zarr.json requests": float(plain_stats["zarr_json"]),
                "requests per image": plain_stats["requests"] / n_images,
                "KB read": plain_stats["bytes"] / 1e3,
            },
        ),
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


def _crop_bytes(url: str, level_key: str, tid: str, crops: list[tuple[int, int]], s3: S3Server) -> tuple[int, int]:
    """Bytes the server sends for the crops, through spora-sd and through raw Zarr (counted by a proxy)."""
    import zarr
    from zarr.storage import FsspecStore

    import spora_sd

    with proxy_process(s3.endpoint_url) as proxy:
        options = _options(proxy.url)
        image = spora_sd.open_cohort(url, storage_options=options).image(tid, "imc")
        raw = zarr.open_array(
            FsspecStore.from_url(f"{url}/{level_key}", storage_options=options, read_only=True), mode="r"
        )
        sent = []
        for read in (
            lambda y, x: image[:, y : y + SIZE, x : x + SIZE].compute(),
            lambda y, x: raw[:, y : y + SIZE, x : x + SIZE],
        ):
            proxy.clear()
            for y, x in crops:
                read(y, x)
            sent.append(proxy.stats()["bytes"])
    return sent[0], sent[1]


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
    image = cohort.image(tid, "imc")  # pixels through zarr's ObjectStore over obstore
    image_fsspec = spora_sd.open_cohort(url, storage_options=dict(options, **FSSPEC_ONLY)).image(tid, "imc")
    level_key = f"imc/1_0mpp/images/{tid}.ome.zarr/0"
    raw_fsspec = zarr.open_array(
        FsspecStore.from_url(f"{url}/{level_key}", storage_options=options, read_only=True), mode="r"
    )
    object_store = obstore.store.S3Store(
        s3.bucket,
        prefix=f"{prefix}/{level_key}",
        endpoint=s3.endpoint_url,
        access_key_id=ACCESS_KEY,
        secret_access_key=SECRET_KEY,
        region=REGION,
        client_options={"allow_http": True},
    )
    raw = zarr.open_array(ObjectStore(object_store, read_only=True), mode="r")
    height, width = image.shape[1:]
    rng = np.random.default_rng(0)
    crops = [(int(rng.integers(0, height - SIZE)), int(rng.integers(0, width - SIZE))) for _ in range(p["crops"])]
    shard, chunk = tuple(raw.shards or raw.chunks), tuple(raw.chunks)
    overlapped = sum(_overlapped_chunk_bytes(local / level_key, shard, chunk, y, x) for y, x in crops)

    def spora(img: Any = image) -> int:
        return sum(int(img[:, y : y + SIZE, x : x + SIZE].compute().sum() > 0) for y, x in crops)

    def baseline(array: Any = raw) -> int:
        return sum(int(array[:, y : y + SIZE, x : x + SIZE].sum() > 0) for y, x in crops)

    spora(), spora(image_fsspec), baseline(), baseline(raw_fsspec)  # warm-up
    spora_bytes, raw_bytes = _crop_bytes(url, level_key, tid, crops, s3)
    times = {"spora": float("inf"), "spora_fsspec": float("inf"), "raw": float("inf"), "raw_fsspec": float("inf")}
    for _ in range(3):
        for name, func in (
            ("spora", spora),
            ("spora_fsspec", lambda: spora(image_fsspec)),
            ("raw", baseline),
            ("raw_fsspec", lambda: baseline(raw_fsspec)),
        ):
            times[name] = min(times[name], timed(func)[0])
    y, x = crops[0]
    np.testing.assert_array_equal(image[:, y : y + SIZE, x : x + SIZE].compute(), raw[:, y : y + SIZE, x : x + SIZE])
    n = len(crops)
    ms = {k: 1e3 * v / n for k, v in times.items()}
    return [
        Result(
            "remote_crop",
            times["spora"] / times["raw"],
            "<=1.3",
            "256 x 256 all-channel crop over S3: Cohort.image time / raw zarr time, both zarr ObjectStore (obstore)",
            {
                "crops": float(n),
                "image px": float(height),
                "shard px": float(shard[1]),
                "spora ms/crop": ms["spora"],
                "zarr ms/crop": ms["raw"],
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
            times["spora"] / times["spora_fsspec"],
            ">=0",
            "Cohort.image crop time: zarr ObjectStore (obstore) / zarr FsspecStore (s3fs), for the record",
            {
                "spora obstore ms/crop": ms["spora"],
                "spora fsspec ms/crop": ms["spora_fsspec"],
                "raw obstore ms/crop": ms["raw"],
                "raw fsspec ms/crop": ms["raw_fsspec"],
                "spora fsspec / raw fsspec": times["spora_fsspec"] / times["raw_fsspec"],
            },
        ),
    ]


def run(quick: bool) -> list[Result]:
    logging.getLogger("ome_zarr").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=UserWarning)
    with MotoProcess() as s3:
        return [*_open(quick, s3), *_crop(quick, s3)]


if __name__ == "__main__":
    if sys.argv[1:2] == ["--proxy"]:
        _serve_proxy(sys.argv[2], float(sys.argv[3]))
