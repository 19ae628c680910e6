"""A cohort image served one channel per chunk: the bytes, the shards each chunk reads, the cache, bad keys."""

from __future__ import annotations

import json
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest

from spora_sd.viewer.channel_chunks import ChannelChunkedImage, DecodedChunks, served_chunk

#: (C, Y, X) of the test image, its shards and its inner chunks: ragged edges, 2 x 2 chunks per shard
SHAPE, SHARD, INNER = (3, 40, 50), (3, 16, 16), (3, 8, 8)
#: cohort chunks of the test image (5 x 7)
N_CHUNKS = 5 * 7


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """An OME-Zarr 0.5 image as a cohort stores it (sharded, zstd, consolidated level metadata)."""
    import zarr

    folder = tmp_path_factory.mktemp("image") / "t.ome.zarr"
    pixels = np.random.default_rng(0).integers(1, 60000, SHAPE, dtype=np.uint16)
    root = zarr.open_group(folder, mode="w", zarr_format=3)
    level = root.create_array(
        "0", shape=SHAPE, chunks=INNER, shards=SHARD, dtype="uint16", compressors=zarr.codecs.ZstdCodec()
    )
    level[...] = pixels
    root.attrs["ome"] = {
        "version": "0.5",
        "multiscales": [{"axes": ["c", "y", "x"], "datasets": [{"path": "0"}]}],
        "omero": {"channels": [{"label": n, "window": {"start": 0, "end": 9}} for n in ("DNA1", "CD3E", "VIM")]},
    }
    with warnings.catch_warnings():  # zarr: "consolidated metadata is not part of the v3 spec" (spora-sd writes it)
        warnings.simplefilter("ignore", UserWarning)
        zarr.consolidate_metadata(folder)
    return folder, pixels


def _chunk(served: ChannelChunkedImage, key: str) -> np.ndarray:
    body = served.get(key)
    assert body is not None, key
    side = served.levels["0"].chunk[1:]
    return np.frombuffer(body, "<u2").reshape(side)


@pytest.mark.parametrize(
    ("served_px", "side"),
    [(8, 8), (20, 16), (32, 32), (512, 512)],
    ids=["one-cohort-chunk", "2x2-in-one-shard", "4x4-across-shards", "default-whole-image"],
)
def test_each_served_chunk_is_one_channel_of_the_cohorts_pixels(
    image: tuple[Path, np.ndarray], served_px: int, side: int
) -> None:
    folder, pixels = image
    cache = DecodedChunks()
    served = ChannelChunkedImage(folder, cache, served_px=served_px)
    assert served.levels["0"].chunk == (1, side, side)
    grid = [-(-n // side) for n in SHAPE[1:]]
    assert json.loads(served.get("0/zarr.json"))["chunk_grid"]["configuration"]["chunk_shape"] == [1, side, side]
    for c in range(SHAPE[0]):
        for y in range(grid[0]):
            for x in range(grid[1]):
                key = f"0/c/{c}/{y}/{x}"
                chunk = _chunk(served, key)
                rows, cols = (
                    slice(y * side, min((y + 1) * side, SHAPE[1])),
                    slice(x * side, min((x + 1) * side, SHAPE[2])),
                )
                inside = pixels[c, rows, cols]
                assert (chunk[: inside.shape[0], : inside.shape[1]] == inside).all(), key
                # past the image's edge: the fill value, as Zarr pads an edge chunk
                assert chunk[inside.shape[0] :].sum() == 0 and chunk[:, inside.shape[1] :].sum() == 0, key
                # the key names every shard it reads, and no other (the request log's audit relies on it)
                shards = [
                    folder / "0" / "c" / "0" / str(sy) / str(sx)
                    for sy in range(rows.start // SHARD[1], -(-rows.stop // SHARD[1]))
                    for sx in range(cols.start // SHARD[2], -(-cols.stop // SHARD[2]))
                ]
                assert served.source_files(key) == tuple(shards), key
    # every cohort chunk decoded once, whatever the served chunk: the cache is per cohort chunk
    assert cache.loads == N_CHUNKS


def test_a_served_chunk_is_a_whole_number_of_cohort_chunks() -> None:
    assert served_chunk((30, 256, 256)) == (1, 512, 512)
    assert served_chunk((30, 512, 512)) == (1, 512, 512)
    assert served_chunk((30, 600, 600)) == (1, 600, 600)  # at or past the target: served as it is
    assert served_chunk((30, 128, 256)) == (1, 512, 512) and served_chunk((30, 200, 200)) == (1, 400, 400)


def test_the_metadata_says_one_channel_per_chunk_and_keeps_the_ome_attributes(image: tuple[Path, np.ndarray]) -> None:
    folder, _ = image
    served = ChannelChunkedImage(folder, DecodedChunks())
    level = json.loads(served.get("0/zarr.json"))
    assert level["shape"] == list(SHAPE) and level["data_type"] == "uint16"
    assert level["chunk_grid"]["configuration"]["chunk_shape"] == [1, 512, 512]  # 8 px cohort chunks, 64 x 64
    assert level["codecs"] == [{"name": "bytes", "configuration": {"endian": "little"}}]
    group = json.loads(served.get("zarr.json"))
    stored = json.loads((folder / "zarr.json").read_text())
    assert group["attributes"] == stored["attributes"]  # channel names, windows: as the cohort has them
    assert group["consolidated_metadata"]["metadata"]["0"] == level


def test_the_decoded_chunks_are_bounded_and_least_recently_used_go_first(image: tuple[Path, np.ndarray]) -> None:
    folder, _ = image
    one = int(np.prod(INNER)) * 2  # bytes of one decoded cohort chunk
    cache = DecodedChunks(max_bytes=2 * one)
    served = ChannelChunkedImage(folder, cache, served_px=8)
    for key in ("0/c/0/0/0", "0/c/0/0/1", "0/c/1/0/0", "0/c/0/1/0"):
        served.get(key)
    assert cache.nbytes == 2 * one and len(cache.keys()) == 2
    assert [k[-2:] for k in cache.keys()] == [(0, 0), (1, 0)]  # (0, 1) was the least recently used
    assert cache.loads == 3
    # a served chunk of 2 x 2 cohort chunks is assembled through the same bound: all four decoded, two kept
    wide = ChannelChunkedImage(folder, cache, served_px=16)
    assert (_chunk(wide, "0/c/2/1/1") == image[1][2, 16:32, 16:32]).all()
    assert [k[-2:] for k in cache.keys()] == [(3, 2), (3, 3)] and cache.loads == 7


def test_concurrent_asks_for_one_chunk_decode_it_once(image: tuple[Path, np.ndarray]) -> None:
    folder, pixels = image
    cache = DecodedChunks()
    served = ChannelChunkedImage(folder, cache, served_px=32)
    results: dict[int, np.ndarray] = {}
    start = threading.Barrier(6)

    def ask(i: int) -> None:
        start.wait()
        results[i] = _chunk(served, f"0/c/{i % 3}/1/1")

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert cache.loads == 3  # the edge chunk (1, 1) covers cohort chunks (4, 4), (4, 5) and (4, 6)
    assert all((results[i][:8, :18] == pixels[i % 3, 32:40, 32:50]).all() for i in range(6))


@pytest.mark.parametrize(
    "key",
    [
        "../zarr.json",
        "0/../../zarr.json",
        "0/c/0/0/../../../../../zarr.json",
        ".zattrs",
        ".zgroup",
        "0/.zarray",
        "1/zarr.json",
        "1/c/0/0/0",
        "0/c/3/0/0",
        "0/c/0/1/0",
        "0/c/0/0/1",
        "0/c/0/0",
        "0/c/0/0/0/0",
        "0/c/-1/0/0",
        "0/c/0/0/0x1",
        "0/0/0/0",
        "",
    ],
)
def test_keys_that_are_no_chunk_or_metadata_of_the_image_are_none(image: tuple[Path, np.ndarray], key: str) -> None:
    folder, _ = image
    cache = DecodedChunks()
    served = ChannelChunkedImage(folder, cache)
    assert served.get(key) is None and served.source_files(key) is None
    assert cache.loads == 0


def test_a_corrupt_shard_is_an_error_naming_it(image: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    import shutil

    from spora_sd.errors import CohortFormatError

    folder = tmp_path / "t.ome.zarr"
    shutil.copytree(image[0], folder)
    shard = folder / "0" / "c" / "0" / "1" / "2"
    shard.write_bytes(b"\x07" * shard.stat().st_size)
    # a served chunk spanning nine shards, the corrupt one among them: the error names that one
    served = ChannelChunkedImage(folder, DecodedChunks(), served_px=48)
    assert shard in served.source_files("0/c/1/0/0")
    with pytest.raises(CohortFormatError, match=r"c/0/1/2: \[image.unreadable\] cannot decode chunk"):
        served.get("0/c/1/0/0")
    assert served.get("0/c/1/0/1") is not None  # the other shards still serve
