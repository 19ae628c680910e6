"""A cohort image as the view serves it: one channel per chunk, read from the cohort's chunks on request.

A cohort's chunks hold every channel of a 256 x 256 crop (layout: chunk shape ``(C, 256, 256)``,
zstd, in shards). Vitessce (Viv) draws a few channels; read as they are stored, the browser would
fetch and decode every channel of every chunk it touches (30 channels of 16 chunks, 63 MB decoded,
for the six shown channels of a 1000 x 1000 tissue). So the server presents each image to the
browser as a Zarr v3 array with the same shape and one channel per chunk, uncompressed, unsharded
(loopback): the browser asks for the channels it shows. A served chunk is a whole number of the
cohort's chunks: ``(1, k * h, k * w)`` for the cohort's inner chunk ``(C, h, w)``, with
``k = max(1, SERVED_PX // h)`` per axis (a 256 px chunk is served as 512 x 512: the first view of a
1000 x 1000 tissue takes 4 tiles of 6 channels, 24 requests, instead of 96; a chunk of 512 px or
more is served as it is; a power-of-two chunk, as Viv wants, stays one). The server answers a chunk
``<level>/c/<c>/<y>/<x>`` by decoding the cohort's chunks it covers (with zarr) and copying out the
channel; past the image's edge it holds the fill value, as Zarr pads an edge chunk. Decoded cohort
chunks are kept in a small bounded cache (:class:`DecodedChunks`), so the channels of one chunk cost
one decode; a chunk being decoded is waited for, not decoded twice.

Only the cohort's shard files a chunk key names (:meth:`ChannelChunkedImage.source_files`: the
shards holding the cohort chunks it covers, up to ``k * k``) are opened for it; metadata keys read
the image's ``zarr.json`` files. Keys that are not a metadata key of the image or a chunk inside its
grid are ``None`` (the server answers 404) and touch no file.

Examples
--------
>>> import spora_sd, tempfile, json, numpy as np
>>> path = spora_sd.make_synthetic_cohort(tempfile.mkdtemp(), n_tissues=1, image_size=300, n_cells=5)
>>> cohort = spora_sd.open_cohort(path)
>>> tissue = cohort.image_tissue_ids("imc")[0]
>>> image = ChannelChunkedImage(cohort.image_path(tissue, "imc"), DecodedChunks())
>>> json.loads(image.get("0/zarr.json"))["chunk_grid"]["configuration"]["chunk_shape"]
[1, 512, 512]
>>> pixels = np.asarray(cohort.image(tissue, "imc")[2])  # channel 2: 2 x 2 cohort chunks, one served chunk
>>> chunk = np.frombuffer(image.get("0/c/2/0/0"), "<u2").reshape(512, 512)
>>> h, w = pixels.shape
>>> bool((chunk[:h, :w] == pixels).all()), bool((chunk[h:] == 0).all() and (chunk[:, w:] == 0).all())
(True, True)
>>> image.cache.loads, [f.relative_to(image.folder).as_posix() for f in image.source_files("0/c/2/0/0")]
(4, ['0/c/0/0/0', '0/c/0/0/1', '0/c/0/1/0', '0/c/0/1/1'])
>>> image.get("0/c/2/1/0") is None, image.get("../zarr.json") is None, image.source_files("0/c/2/1/0")
(True, True, None)
"""

from __future__ import annotations

import copy
import functools
import itertools
import json
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spora_sd.errors import CohortFormatError
from spora_sd.io.consolidated import CONSOLIDATED_KEY, with_consolidated
from spora_sd.io.images import open_zarr

__all__ = ["CACHE_BYTES", "SERVED_PX", "ChannelChunkedImage", "DecodedChunks", "served_chunk"]

logger = logging.getLogger(__name__)

#: Bytes of decoded cohort chunks the server keeps (a 256 x 256 x 30 uint16 chunk is 3.9 MB).
CACHE_BYTES = 256 << 20
#: A served chunk spans whole cohort chunks up to this many pixels a side (fewer, larger requests).
SERVED_PX = 512
_ZARR_JSON = "zarr.json"
_CHUNK_KEY = re.compile(r"(?P<level>[0-9]+)/c/(?P<c>[0-9]+)/(?P<y>[0-9]+)/(?P<x>[0-9]+)$")
_SERVED_CODECS = [{"name": "bytes", "configuration": {"endian": "little"}}]


class DecodedChunks:
    """A thread-safe least-recently-used cache of decoded chunks, bounded in bytes.

    :meth:`get` returns the cached array of a key or makes it with ``load``; concurrent asks for a key
    being loaded wait for that load. An array larger than the bound is returned but not kept.

    Examples
    --------
    >>> cache = DecodedChunks(max_bytes=100)
    >>> cache.get("a", lambda: np.zeros(10, np.uint8)).nbytes, cache.get("b", lambda: np.zeros(95, np.uint8)).nbytes
    (10, 95)
    >>> cache.keys(), cache.nbytes, cache.loads
    (['b'], 95, 2)
    """

    def __init__(self, max_bytes: int = CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self.nbytes = 0
        #: how many times ``load`` ran (a decode each)
        self.loads = 0
        self._arrays: OrderedDict[Any, np.ndarray] = OrderedDict()
        self._loading: dict[Any, threading.Event] = {}
        self._lock = threading.Lock()

    def keys(self) -> list[Any]:
        """The cached keys, least recently used first."""
        with self._lock:
            return list(self._arrays)

    def get(self, key: Any, load: Callable[[], np.ndarray]) -> np.ndarray:
        while True:
            with self._lock:
                array = self._arrays.get(key)
                if array is not None:
                    self._arrays.move_to_end(key)
                    return array
                busy = self._loading.get(key)
                if busy is None:
                    done = self._loading[key] = threading.Event()
                    self.loads += 1
                    break
            busy.wait()  # loaded (cached) or failed (the next ask loads it again)
        try:
            array = load()
            with self._lock:
                if array.nbytes <= self.max_bytes:
                    self._arrays[key] = array
                    self.nbytes += array.nbytes
                    while self.nbytes > self.max_bytes:
                        _, old = self._arrays.popitem(last=False)
                        self.nbytes -= old.nbytes
            return array
        finally:
            with self._lock:
                del self._loading[key]
            done.set()


def served_chunk(inner: tuple[int, ...], served_px: int = SERVED_PX) -> tuple[int, int, int]:
    """The served chunk shape of a cohort chunk shape ``(C, h, w)``: one channel, whole cohort chunks a side.

    >>> served_chunk((30, 256, 256)), served_chunk((3, 16, 16)), served_chunk((30, 512, 512)), served_chunk((3, 1024, 256))
    ((1, 512, 512), (1, 512, 512), (1, 512, 512), (1, 1024, 512))
    """
    return (1, *(n * max(1, served_px // n) for n in inner[1:]))


@dataclass(frozen=True)
class _Level:
    """One pyramid level: the cohort's array (shapes, dtype and fill value are its own) and the served metadata."""

    path: str
    array: Any  # a zarr.Array
    served: dict[str, Any]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    @property
    def inner(self) -> tuple[int, ...]:
        """The cohort's chunk shape (the inner chunk of a shard)."""
        return tuple(self.array.chunks)

    @property
    def shard(self) -> tuple[int, ...]:
        return tuple(self.array.shards or self.array.chunks)

    @property
    def chunk(self) -> tuple[int, ...]:
        """The served chunk shape (one channel, a whole number of cohort chunks a side)."""
        return tuple(self.served["chunk_grid"]["configuration"]["chunk_shape"])

    @property
    def grid(self) -> tuple[int, ...]:
        """Chunks per axis of the served array."""
        return tuple(-(-n // c) for n, c in zip(self.shape, self.chunk, strict=True))

    def cohort_chunks(self, c: int, y: int, x: int) -> list[tuple[int, int, int]]:
        """The cohort chunks ``(ci, yi, xi)`` (indices in the cohort's chunk grid) that served chunk ``(c, y, x)`` covers."""
        ky, kx = (s // i for s, i in zip(self.chunk[1:], self.inner[1:], strict=True))
        ny, nx = (-(-n // i) for n, i in zip(self.shape[1:], self.inner[1:], strict=True))
        ys, xs = range(y * ky, min((y + 1) * ky, ny)), range(x * kx, min((x + 1) * kx, nx))
        return [(c // self.inner[0], yi, xi) for yi, xi in itertools.product(ys, xs)]

    def shard_of(self, ci: int, yi: int, xi: int) -> str:
        """The shard key (``c/<c>/<y>/<x>``, under the level's folder) holding cohort chunk ``(ci, yi, xi)``."""
        index = (i * n // s for i, n, s in zip((ci, yi, xi), self.inner, self.shard, strict=True))
        return "c/" + "/".join(map(str, index))


def _served_array(meta: dict[str, Any], inner: tuple[int, ...], served_px: int) -> dict[str, Any]:
    served = copy.deepcopy(meta)
    served["chunk_grid"] = {"name": "regular", "configuration": {"chunk_shape": list(served_chunk(inner, served_px))}}
    served["codecs"] = list(_SERVED_CODECS)
    served["chunk_key_encoding"] = {"name": "default", "configuration": {"separator": "/"}}
    served["storage_transformers"] = []
    return served


def _read_level(folder: Path, path: str, served_px: int) -> _Level:
    """A level's array, opened from its ``zarr.json`` (read once; local, or remote through the cohort's store)."""
    meta = json.loads((folder / path / _ZARR_JSON).read_text(encoding="utf-8"))
    array = open_zarr(folder / path, meta=meta)
    return _Level(path=path, array=array, served=_served_array(meta, tuple(array.chunks), served_px))


class ChannelChunkedImage:
    """One cohort image (an OME-Zarr folder of ``(C, Y, X)`` levels) served one channel per chunk.

    Parameters
    ----------
    folder
        The image's ``.ome.zarr`` folder in the cohort.
    cache
        The decoded chunks, shared by the images of a view.
    served_px
        Pixels a side a served chunk reaches (whole cohort chunks, see :func:`served_chunk`).
    """

    def __init__(self, folder: Path, cache: DecodedChunks, served_px: int = SERVED_PX) -> None:
        self.folder = folder  # a pathlib.Path, or a upath.UPath of a remote cohort
        self.cache = cache
        self._group = json.loads((self.folder / _ZARR_JSON).read_text(encoding="utf-8"))
        multiscales = self._group["attributes"]["ome"]["multiscales"][0]
        self.levels = {d["path"]: _read_level(self.folder, d["path"], served_px) for d in multiscales["datasets"]}

    def metadata(self) -> dict[str, Any]:
        """The served group's ``zarr.json``: the cohort's, with consolidated level metadata re-chunked."""
        if CONSOLIDATED_KEY not in self._group:
            return copy.deepcopy(self._group)
        return with_consolidated(self._group, {path: level.served for path, level in self.levels.items()})

    def _chunk_at(self, key: str) -> tuple[_Level, int, int, int] | None:
        match = _CHUNK_KEY.match(key)
        level = match and self.levels.get(match["level"])
        if not level:
            return None
        c, y, x = int(match["c"]), int(match["y"]), int(match["x"])
        if not all(i < n for i, n in zip((c, y, x), level.grid, strict=True)):
            return None
        return level, c, y, x

    def source_files(self, key: str) -> tuple[Path, ...] | None:
        """The cohort's shard files a chunk key reads, in key order (None for a key that is no chunk of the image)."""
        found = self._chunk_at(key)
        if found is None:
            return None
        level, c, y, x = found
        shards = dict.fromkeys(level.shard_of(*chunk) for chunk in level.cohort_chunks(c, y, x))
        return tuple(self.folder / level.path / shard for shard in shards)

    def get(self, key: str) -> bytes | None:
        """The bytes of a key of the served image, or None if it has no such key."""
        if key == _ZARR_JSON:
            return json.dumps(self.metadata()).encode()
        level_path, _, rest = key.partition("/")
        if rest == _ZARR_JSON and level_path in self.levels:
            return json.dumps(self.levels[level_path].served).encode()
        found = self._chunk_at(key)
        if found is None:
            return None
        level, c, y, x = found
        _, h, w = level.chunk
        _, ih, iw = level.inner
        out = np.full((h, w), level.array.fill_value, dtype=level.array.dtype.newbyteorder("<"))
        for ci, yi, xi in level.cohort_chunks(c, y, x):
            load = functools.partial(self._decode, level, ci, yi, xi)
            decoded = self.cache.get((str(self.folder), level.path, ci, yi, xi), load)
            top, left = yi * ih - y * h, xi * iw - x * w
            out[top : top + ih, left : left + iw] = decoded[c - ci * level.inner[0]]
        return out.tobytes()

    def _decode(self, level: _Level, ci: int, yi: int, xi: int) -> np.ndarray:
        """The cohort's chunk ``(ci, yi, xi)`` (an inner chunk of its shard), padded to the full chunk shape."""
        starts = [i * n for i, n in zip((ci, yi, xi), level.inner, strict=True)]
        region = tuple(slice(s, min(s + n, size)) for s, n, size in zip(starts, level.inner, level.shape, strict=True))
        try:
            block = np.asarray(level.array[region])
        except (OSError, ValueError, RuntimeError) as exc:  # a corrupt shard: a 500 naming it, the server goes on
            shard = self.folder / level.path / level.shard_of(ci, yi, xi)
            raise CohortFormatError(shard, "image.unreadable", f"cannot decode chunk: {exc}") from exc
        if block.shape == level.inner:
            return block
        full = np.full(level.inner, level.array.fill_value, dtype=level.array.dtype)
        full[tuple(slice(0, n) for n in block.shape)] = block
        return full
