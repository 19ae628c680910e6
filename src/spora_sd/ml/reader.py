"""Chunk-aligned reads of ``(C, Y, X)`` images, with a small cache of decoded chunks.

Cohort images are stored in chunks of ``(C, 256, 256)`` holding every channel (spec §4), so reading a
tile costs one decode per chunk it overlaps, whatever the number of channels asked for. A
:class:`TileReader` reads a window chunk by chunk and keeps the decoded chunks in a least-recently-used
cache bounded in bytes, so that neighbouring tiles (cell-centred tiles above all: a 256 x 256 chunk
holds hundreds of cells) reuse a decoded chunk instead of decoding it again.

Sources are opened lazily and once per process: a :class:`ZarrSource` keeps only its path when
pickled, and reopens the Zarr array the first time a (forked or spawned) ``DataLoader`` worker reads
from it. The cache is dropped in a new process too, so each worker owns its cache.

Examples
--------
>>> import numpy as np
>>> reader = TileReader()
>>> source = ArraySource(np.arange(2 * 600 * 600, dtype="uint16").reshape(2, 600, 600), key="demo")
>>> reader.read(source, 250, 250, 10, 10).shape  # overlaps 4 chunks of 256 x 256
(2, 10, 10)
>>> reader.stats.chunks_decoded, reader.read(source, 251, 251, 4, 4).shape, reader.stats.chunks_decoded
(4, (2, 4, 4), 4)
>>> reader.read(source, -5, 590, 10, 20)[0, :5].max()  # outside the image: zero padded
np.uint16(0)
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spora_sd.errors import CohortFormatError, InvalidArgumentError
from spora_sd.io.location import as_path

__all__ = ["DEFAULT_CACHE_BYTES", "ArraySource", "ReadStats", "TileReader", "ZarrSource"]

logger = logging.getLogger(__name__)

#: Default budget of the decoded-chunk cache, per process (per DataLoader worker).
DEFAULT_CACHE_BYTES = 256 * 2**20


def _is_zarr_array(array: Any) -> bool:
    import zarr

    return isinstance(array, zarr.Array)


def open_zarr_array(path: str) -> Any:
    """Open a Zarr v3 array read-only (the default opener of :class:`ZarrSource`); local or remote."""
    from spora_sd.io.images import open_zarr

    return open_zarr(path)


class ZarrSource:
    """A ``(C, Y, X)`` Zarr array on disk, opened on first read in each process.

    Parameters
    ----------
    path
        The array (for a cohort image: ``<tissue_id>.ome.zarr/0``).
    opener
        A module-level function ``path -> zarr.Array``; the default opens the array read-only. Tests
        pass one that wraps the store to count what is read.

    Examples
    --------
    >>> import numpy as np, tempfile, pathlib, pickle
    >>> from spora_sd.io.images import write_image
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "x_abcdefgh_0000.ome.zarr"
    >>> _ = write_image(path, np.ones((2, 300, 300), "uint16"), mpp=1.0, channel_names=["A", "B"])
    >>> source = pickle.loads(pickle.dumps(ZarrSource(path / "0")))
    >>> source.shape, source.chunks
    ((2, 300, 300), (256, 256))
    """

    def __init__(self, path: str | Path, opener: Callable[[str], Any] = open_zarr_array) -> None:
        self.path = str(path)
        self.key = self.path
        self._opener = opener
        self._array: Any = None
        self._pid = -1

    def __getstate__(self) -> dict:
        # The open array (and zarr's event loop behind it) stays in the process that opened it.
        return {"path": self.path, "key": self.key, "_opener": self._opener, "_array": None, "_pid": -1}

    @property
    def array(self) -> Any:
        """The Zarr array, opened once per process."""
        if self._array is None or self._pid != os.getpid():
            try:
                array = self._opener(self.path)
            except FileNotFoundError:
                raise
            except Exception as exc:  # noqa: BLE001 - zarr raises several types for a broken store
                raise CohortFormatError(self.path, "image.unreadable", f"cannot open the image array: {exc}") from None
            if array.ndim != 3:
                raise CohortFormatError(
                    self.path, "image.shape", f"expected a (c, y, x) array, got shape {array.shape}"
                )
            if _is_zarr_array(array):
                from spora_sd.io.images import CheckedLevel

                # checked reads: a missing shard or a corrupt chunk raises (naming it) instead of giving zeros
                level = as_path(self.path)  # a local path or a remote URL (with its cohort's options)
                array = CheckedLevel(level.parent, level.name, array)
            self._array, self._pid = array, os.getpid()
        return self._array

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.array.shape)  # type: ignore[return-value]

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.array.dtype)

    @property
    def chunks(self) -> tuple[int, int]:
        """Height and width of one (inner) chunk: the unit of decoding."""
        chunks = self.array.chunks
        return int(chunks[1]), int(chunks[2])

    def read_block(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """All channels of ``[y0:y1, x0:x1]`` (inside the image)."""
        return np.asarray(self.array[:, y0:y1, x0:x1])


class ArraySource:
    """Any ``(C, Y, X)`` array that supports slicing: numpy, dask (e.g. a SpatialData image), zarr.

    Dask arrays are computed block by block with the synchronous scheduler: a tile is small, and
    the thread pool would cost more than it saves. The virtual chunk grid follows the array's own
    chunks when it has them, else ``default_chunk`` pixels.

    Parameters
    ----------
    data
        The array.
    key
        A name unique among the sources that share a :class:`TileReader` (it keys the cache).
    default_chunk
        Chunk side used when ``data`` has no chunks of its own (numpy).
    """

    def __init__(self, data: Any, key: str, default_chunk: int = 256) -> None:
        if getattr(data, "ndim", None) != 3:
            raise InvalidArgumentError(f"{key}: expected a (c, y, x) array, got shape {getattr(data, 'shape', None)}")
        self.data = data
        self.key = key
        chunks = getattr(data, "chunks", None)
        if chunks and isinstance(chunks[1], tuple):  # dask: a tuple of block sizes per axis
            self._chunks = (int(chunks[1][0]), int(chunks[2][0]))
        elif chunks:  # zarr: one chunk shape
            self._chunks = (int(chunks[1]), int(chunks[2]))
        else:
            self._chunks = (default_chunk, default_chunk)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.data.shape)  # type: ignore[return-value]

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.data.dtype)

    @property
    def chunks(self) -> tuple[int, int]:
        return self._chunks

    def read_block(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        block = self.data[:, y0:y1, x0:x1]
        if hasattr(block, "compute"):
            block = block.compute(scheduler="synchronous")
        return np.asarray(block)


Source = ZarrSource | ArraySource


@dataclass
class ReadStats:
    """What a :class:`TileReader` did: chunks decoded from their source, chunks served from the cache,
    and calls to the source (one call may decode a rectangle of several chunks)."""

    chunks_decoded: int = 0
    cache_hits: int = 0
    source_reads: int = 0


class TileReader:
    """Reads windows of images chunk by chunk, caching decoded chunks (least recently used first out).

    Parameters
    ----------
    cache_bytes
        Budget of the decoded-chunk cache in this process. ``0`` disables the cache (every window
        decodes the chunks it overlaps).

    Examples
    --------
    >>> import numpy as np
    >>> image = np.arange(3 * 512 * 512, dtype="uint16").reshape(3, 512, 512)
    >>> reader = TileReader()
    >>> tile = reader.read(ArraySource(image, key="x"), 0, 256, 256, 256, channels=np.array([2, 0]))
    >>> bool((tile == image[[2, 0], :256, 256:]).all()), reader.stats.chunks_decoded
    (True, 1)
    """

    def __init__(self, cache_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self.cache_bytes = int(cache_bytes)
        self._reset()

    def _reset(self) -> None:
        self._cache: OrderedDict[tuple[str, int, int], np.ndarray] = OrderedDict()
        self._cached_bytes = 0
        self._pid = os.getpid()
        self.stats = ReadStats()

    def __getstate__(self) -> dict:
        return {"cache_bytes": self.cache_bytes}

    def __setstate__(self, state: dict) -> None:
        self.cache_bytes = state["cache_bytes"]
        self._reset()

    def clear(self) -> None:
        """Drop every cached chunk and zero the statistics."""
        self._reset()

    # ---------------------------------------------------------------------------------------------

    def _store(self, key: tuple[str, int, int], chunk: np.ndarray) -> None:
        if chunk.nbytes > self.cache_bytes:
            return
        self._cache[key] = chunk
        self._cached_bytes += chunk.nbytes
        while self._cached_bytes > self.cache_bytes:
            _, old = self._cache.popitem(last=False)
            self._cached_bytes -= old.nbytes

    def _fetch(self, source: Source, cys: range, cxs: range, shape: tuple[int, int, int]) -> dict:
        """Decoded chunks ``(cy, cx) -> array`` for a rectangle of chunk indices, cached or read."""
        _, height, width = shape
        ch, cw = source.chunks
        found: dict[tuple[int, int], np.ndarray] = {}
        missing = []
        for cy in cys:
            for cx in cxs:
                chunk = self._cache.get((source.key, cy, cx))
                if chunk is None:
                    missing.append((cy, cx))
                else:
                    self._cache.move_to_end((source.key, cy, cx))
                    found[(cy, cx)] = chunk
        self.stats.cache_hits += len(found)
        if not missing:
            return found
        ys = sorted({cy for cy, _ in missing})
        xs = sorted({cx for _, cx in missing})
        if len(missing) == len(ys) * len(xs) and ys[-1] - ys[0] + 1 == len(ys) and xs[-1] - xs[0] + 1 == len(xs):
            # The missing chunks form a rectangle: one call lets zarr decode them concurrently.
            rects = [(ys[0], ys[-1] + 1, xs[0], xs[-1] + 1)]
        else:
            rects = [(cy, cy + 1, cx, cx + 1) for cy, cx in missing]
        for ry0, ry1, rx0, rx1 in rects:
            y0, x0 = ry0 * ch, rx0 * cw
            block = source.read_block(y0, min(ry1 * ch, height), x0, min(rx1 * cw, width))
            self.stats.source_reads += 1
            single = ry1 - ry0 == 1 and rx1 - rx0 == 1
            for cy in range(ry0, ry1):
                for cx in range(rx0, rx1):
                    by, bx = cy * ch - y0, cx * cw - x0
                    # A copy, so that a cached chunk does not keep the whole block alive.
                    chunk = block if single else np.ascontiguousarray(block[:, by : by + ch, bx : bx + cw])
                    found[(cy, cx)] = chunk
                    self.stats.chunks_decoded += 1
                    if self.cache_bytes > 0:
                        self._store((source.key, cy, cx), chunk)
        return found

    def read(
        self,
        source: Source,
        row: int,
        col: int,
        height: int,
        width: int,
        channels: np.ndarray | None = None,
        copy: bool = True,
    ) -> np.ndarray:
        """The window ``[row:row+height, col:col+width]`` of ``source``, zero-padded outside the image.

        Parameters
        ----------
        source
            The image.
        row, col
            Top-left pixel of the window; may be negative or reach past the image.
        height, width
            Window size in pixels.
        channels
            Positions of the channels to return, in the order wanted (default: all).
        copy
            ``False`` lets a window that lies in one chunk come back as a read-only view of the cached
            chunk (no copy), for callers that only read it.

        Returns
        -------
        numpy.ndarray
            ``(n_channels, height, width)`` in the image's dtype.
        """
        if self._pid != os.getpid():
            self._reset()  # a new (forked) worker: its own cache
        shape = source.shape
        n_channels, img_h, img_w = shape
        ch, cw = source.chunks
        if channels is not None and len(channels) == n_channels and np.array_equal(channels, np.arange(n_channels)):
            channels = None  # all channels in order: a slice, not a copying fancy index
        c_index: Any = slice(None) if channels is None else np.asarray(channels, dtype=np.intp)
        n_out = n_channels if channels is None else len(c_index)
        y0, y1 = max(row, 0), min(row + height, img_h)
        x0, x1 = max(col, 0), min(col + width, img_w)
        if y0 >= y1 or x0 >= x1:  # entirely outside the image
            return np.zeros((n_out, height, width), dtype=source.dtype)
        chunks = self._fetch(source, range(y0 // ch, (y1 - 1) // ch + 1), range(x0 // cw, (x1 - 1) // cw + 1), shape)
        if len(chunks) == 1 and (y0, y1, x0, x1) == (row, row + height, col, col + width):
            # The whole window lies in one chunk: one (channel-selecting) copy, or a view.
            (cy, cx), chunk = next(iter(chunks.items()))
            window = chunk[c_index, y0 - cy * ch : y1 - cy * ch, x0 - cx * cw : x1 - cx * cw]
            if copy or channels is not None:
                return np.array(window, copy=True)
            window = window.view()
            window.flags.writeable = False  # a view of the cache: must not be written to
            return window
        dtype = next(iter(chunks.values())).dtype
        out = np.zeros((n_out, height, width), dtype=dtype)
        for (cy, cx), chunk in chunks.items():
            # Intersection of the window with this chunk, in image coordinates.
            iy0, iy1 = max(y0, cy * ch), min(y1, (cy + 1) * ch)
            ix0, ix1 = max(x0, cx * cw), min(x1, (cx + 1) * cw)
            out[:, iy0 - row : iy1 - row, ix0 - col : ix1 - col] = chunk[
                c_index, iy0 - cy * ch : iy1 - cy * ch, ix0 - cx * cw : ix1 - cx * cw
            ]
        return out
