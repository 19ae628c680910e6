"""Chunk-aligned reads: what the store is asked for, the decoded-chunk cache, zero padding, pickling."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import zarr
from zarr.abc.store import RangeByteRequest, Store
from zarr.storage import LocalStore, WrapperStore

from spora_sd.errors import CohortFormatError
from spora_sd.io.images import write_image
from spora_sd.ml.reader import ArraySource, TileReader, ZarrSource

# Reads recorded by CountingStore, as (key, byte range) pairs; reset by each test.
READS: list[tuple[str, object]] = []


class CountingStore(WrapperStore):
    """A real LocalStore that records every read: the unit under test is what zarr fetches.

    zarr >= 3.4 (Python 3.12 here) reads byte ranges through ``get_ranges`` (coalescing neighbouring
    ranges) or ``get_sync``; both are routed through the recording ``get``/``get_sync`` below.
    """

    async def get(self, key, prototype, byte_range=None):  # type: ignore[override]
        READS.append((key, byte_range))
        return await super().get(key, prototype, byte_range)

    def get_ranges(self, key, byte_ranges, *, prototype, **kwargs):  # type: ignore[override]
        return Store.get_ranges(self, key, byte_ranges, prototype=prototype, **kwargs)

    def get_sync(self, key, *, prototype=None, byte_range=None):  # type: ignore[override]
        READS.append((key, byte_range))
        return self._store.get_sync(key, prototype=prototype, byte_range=byte_range)


def open_counting(path: str) -> zarr.Array:
    return zarr.open_array(CountingStore(LocalStore(path, read_only=True)), mode="r", zarr_format=3)


def chunk_reads() -> list[tuple[str, str]]:
    """Payload reads, as (shard key, "chunk" or "shard"), leaving out shard-index reads (suffix reads).

    Zarr reads one chunk of a shard with a ranged read, and a whole shard in one read when every chunk
    of it is wanted.
    """
    return sorted(
        (key, "chunk" if isinstance(byte_range, RangeByteRequest) else "shard")
        for key, byte_range in READS
        if byte_range is None or isinstance(byte_range, RangeByteRequest)
    )


@pytest.fixture(scope="module")
def sharded_image(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """3 channels, 640 x 600 px, chunks (3, 256, 256) grouped in shards of 2 x 2 chunks."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 1000, size=(3, 640, 600), dtype=np.uint16)
    path = tmp_path_factory.mktemp("reader") / "image.zarr"
    array = zarr.create_array(
        path, shape=image.shape, dtype=image.dtype, chunks=(3, 256, 256), shards=(3, 512, 512), zarr_format=3
    )
    array[...] = image
    return path, image


@pytest.fixture
def source(sharded_image: tuple[Path, np.ndarray]) -> ZarrSource:
    source = ZarrSource(sharded_image[0], opener=open_counting)
    _ = source.shape  # open (reads metadata) before counting
    READS.clear()
    return source


def test_aligned_tile_reads_exactly_one_chunk(source: ZarrSource, sharded_image: tuple[Path, np.ndarray]) -> None:
    image = sharded_image[1]
    reader = TileReader()
    tile = reader.read(source, 256, 256, 256, 256)
    np.testing.assert_array_equal(tile, image[:, 256:512, 256:512])
    assert chunk_reads() == [("c/0/0/0", "chunk")]  # shard (0, 0) holds chunk (1, 1): one ranged read in it
    assert reader.stats.chunks_decoded == 1


@pytest.mark.parametrize(
    ("row", "col", "size", "n_chunks", "expected_reads"),
    [
        (10, 20, 100, 1, [("c/0/0/0", "chunk")]),  # unaligned, inside one chunk
        (200, 500, 32, 2, [("c/0/0/0", "chunk"), ("c/0/0/1", "chunk")]),  # across a shard boundary (x = 512)
        (500, 500, 32, 4, [(f"c/0/{y}/{x}", "chunk") for y in (0, 1) for x in (0, 1)]),  # 4 chunks, 4 shards
        (200, 200, 100, 4, [("c/0/0/0", "shard")]),  # the 2 x 2 chunks it overlaps fill shard (0, 0)
    ],
)
def test_unaligned_tile_reads_only_overlapped_chunks(
    source: ZarrSource,
    sharded_image: tuple[Path, np.ndarray],
    row: int,
    col: int,
    size: int,
    n_chunks: int,
    expected_reads: list[tuple[str, str]],
) -> None:
    image = sharded_image[1]
    reader = TileReader()
    tile = reader.read(source, row, col, size, size)
    np.testing.assert_array_equal(tile, image[:, row : row + size, col : col + size])
    assert reader.stats.chunks_decoded == n_chunks
    assert reader.stats.source_reads == 1  # the overlapped chunks form a rectangle: one call to zarr
    assert chunk_reads() == expected_reads


def test_neighbouring_tiles_reuse_decoded_chunks(source: ZarrSource, sharded_image: tuple[Path, np.ndarray]) -> None:
    image = sharded_image[1]
    reader = TileReader()
    for row, col in [(100, 100), (110, 120), (130, 90), (100, 200)]:
        np.testing.assert_array_equal(reader.read(source, row, col, 32, 32), image[:, row : row + 32, col : col + 32])
    assert chunk_reads() == [("c/0/0/0", "chunk")]
    assert (reader.stats.chunks_decoded, reader.stats.cache_hits) == (1, 3)


def test_without_cache_every_tile_decodes_again(source: ZarrSource) -> None:
    reader = TileReader(cache_bytes=0)
    reader.read(source, 100, 100, 32, 32)
    reader.read(source, 110, 110, 32, 32)
    assert reader.stats.chunks_decoded == 2
    assert len(chunk_reads()) == 2


def test_cache_evicts_least_recently_used(source: ZarrSource) -> None:
    one_chunk = 3 * 256 * 256 * 2
    reader = TileReader(cache_bytes=2 * one_chunk)
    for col in (0, 256, 0, 512, 0):  # chunk 0 stays recent, 256 is evicted by 512
        reader.read(source, 0, col, 16, 16)
    assert reader.stats.chunks_decoded == 3
    reader.read(source, 0, 256, 16, 16)
    assert reader.stats.chunks_decoded == 4


def test_channel_selection_and_zero_padding(source: ZarrSource, sharded_image: tuple[Path, np.ndarray]) -> None:
    image = sharded_image[1]
    reader = TileReader()
    tile = reader.read(source, -10, 590, 40, 30, channels=np.array([2, 0]))
    expected = np.zeros((2, 40, 30), dtype=image.dtype)
    expected[:, 10:, :10] = image[[2, 0], 0:30, 590:600]
    np.testing.assert_array_equal(tile, expected)
    outside = reader.read(source, 700, 700, 8, 8)
    assert outside.shape == (3, 8, 8) and not outside.any()


def test_array_source_reads_dask_and_numpy_alike(sharded_image: tuple[Path, np.ndarray]) -> None:
    import dask.array as da

    image = sharded_image[1]
    lazy = ArraySource(da.from_array(image, chunks=(3, 128, 128)), key="dask")
    eager = ArraySource(image, key="numpy")
    assert lazy.chunks == (128, 128) and eager.chunks == (256, 256)
    reader = TileReader()
    for src in (lazy, eager):
        np.testing.assert_array_equal(reader.read(src, 300, 250, 50, 70), image[:, 300:350, 250:320])


def test_sources_and_reader_pickle_without_open_arrays(
    source: ZarrSource, sharded_image: tuple[Path, np.ndarray]
) -> None:
    reader = TileReader()
    reader.read(source, 0, 0, 8, 8)
    source2, reader2 = pickle.loads(pickle.dumps((source, reader)))
    assert source2._array is None and reader2.stats.chunks_decoded == 0  # nothing open, nothing cached
    np.testing.assert_array_equal(reader2.read(source2, 0, 0, 8, 8), sharded_image[1][:, :8, :8])


def test_reader_starts_a_fresh_cache_in_a_forked_process(source: ZarrSource) -> None:
    reader = TileReader()
    reader.read(source, 0, 0, 8, 8)
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: the inherited cache and array handle must not be reused
        try:
            reader.read(source, 0, 0, 8, 8)
            ok = reader.stats.chunks_decoded == 1 and source._pid == os.getpid()
            os.write(write_fd, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.close(write_fd)
    answer = os.read(read_fd, 1)
    os.waitpid(pid, 0)
    assert answer == b"1"


def test_broken_image_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "broken.zarr").mkdir()
    (tmp_path / "broken.zarr" / "zarr.json").write_text("not json")
    with pytest.raises(CohortFormatError, match="broken.zarr"):
        _ = ZarrSource(tmp_path / "broken.zarr").shape


def test_cohort_image_chunks_are_256(tmp_path: Path) -> None:
    path = write_image(
        tmp_path / "x_abcdefgh_0000.ome.zarr", np.ones((2, 300, 300), "uint16"), mpp=1.0, channel_names=["A", "B"]
    )
    assert ZarrSource(path / "0").chunks == (256, 256)


def test_reads_are_copies_unless_a_view_is_asked_for(sharded_image: tuple[Path, np.ndarray]) -> None:
    image = sharded_image[1].astype("float32")
    reader = TileReader()
    source = ArraySource(image, key="float")
    tile = reader.read(source, 0, 0, 256, 256)  # the whole chunk, all channels
    tile[:] = -1  # a copy: neither the cache nor the image changes
    np.testing.assert_array_equal(reader.read(source, 0, 0, 256, 256), image[:, :256, :256])
    view = reader.read(source, 0, 0, 256, 256, channels=np.arange(3), copy=False)
    assert not view.flags.writeable and np.shares_memory(view, image)
