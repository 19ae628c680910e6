"""Read and write the cohort's images: OME-Zarr, Zarr format 3, OME-NGFF 0.5.

Layout rules (spec §4): axes ``c, y, x``; level ``0`` at full resolution with scale ``[1, mpp, mpp]``
in micrometers; chunks ``(C, 256, 256)`` holding all channels; chunks grouped by Zarr's own
sharding codec into at most 100 shards per image; channel names in ``omero.channels[].label``.

Examples
--------
>>> import numpy as np, tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "x_abcdefgh_0000.ome.zarr"
>>> _ = write_image(path, np.zeros((2, 300, 500), "uint16"), mpp=1.0, channel_names=["CD3E", "DNA1"])
>>> read_image_metadata(path).channel_names
['CD3E', 'DNA1']
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import zarr

from spora_sd.errors import CohortFormatError, InvalidArgumentError
from spora_sd.io.atomic import atomic_path
from spora_sd.layout import IMAGE_SUFFIX

__all__ = [
    "CHUNK_SIZE",
    "MAX_SHARDS",
    "ImageMetadata",
    "build_pyramid",
    "open_image_levels",
    "read_image_metadata",
    "shard_shape",
    "write_image",
]

logger = logging.getLogger(__name__)

CHUNK_SIZE = 256
MAX_SHARDS = 100
NGFF_VERSION = "0.5"
AXES = ("c", "y", "x")


def shard_shape(shape: Sequence[int], chunk: int = CHUNK_SIZE, max_shards: int = MAX_SHARDS) -> tuple[int, int, int]:
    """The smallest square shard (a multiple of the chunk) that keeps at most ``max_shards`` shards.

    >>> shard_shape((30, 1000, 1000))
    (30, 256, 256)
    >>> shard_shape((30, 40000, 30000))
    (30, 3840, 3840)
    """
    c, h, w = (int(s) for s in shape)
    ny, nx = math.ceil(h / chunk), math.ceil(w / chunk)
    k = 1
    while math.ceil(ny / k) * math.ceil(nx / k) > max_shards:
        k += 1
    return (c, chunk * k, chunk * k)


def _ome_attrs(name: str, mpp: float, n_levels: int, channel_names: Sequence[str], dtype: np.dtype) -> dict:
    if np.issubdtype(dtype, np.integer):
        vmax = float(np.iinfo(dtype).max)
    else:
        vmax = 1.0
    datasets = [
        {
            "path": str(level),
            "coordinateTransformations": [{"type": "scale", "scale": [1.0, mpp * 2**level, mpp * 2**level]}],
        }
        for level in range(n_levels)
    ]
    return {
        "ome": {
            "version": NGFF_VERSION,
            "multiscales": [
                {
                    "name": name,
                    "axes": [
                        {"name": "c", "type": "channel"},
                        {"name": "y", "type": "space", "unit": "micrometer"},
                        {"name": "x", "type": "space", "unit": "micrometer"},
                    ],
                    "datasets": datasets,
                }
            ],
            "omero": {
                "channels": [
                    {
                        "label": str(label),
                        "color": "FFFFFF",
                        "active": True,
                        "window": {"start": 0.0, "end": vmax, "min": 0.0, "max": vmax},
                    }
                    for label in channel_names
                ],
                "rdefs": {"model": "color"},
            },
        }
    }


def build_pyramid(image: Any, n_levels: int) -> list[da.Array]:
    """Full-resolution image plus ``n_levels - 1`` levels, each 2x smaller (mean, cast back to dtype)."""
    base = image if isinstance(image, da.Array) else da.from_array(np.asarray(image))
    levels = [base]
    for _ in range(1, n_levels):
        prev = levels[-1]
        if min(prev.shape[1:]) < 2:
            break
        coarse = da.coarsen(np.mean, prev.astype("float64"), {1: 2, 2: 2}, trim_excess=True)
        if np.issubdtype(prev.dtype, np.integer):
            coarse = da.round(coarse)
        levels.append(coarse.astype(prev.dtype))
    return levels


def _write_level(group: zarr.Group, path: str, data: Any) -> None:
    shape = tuple(int(s) for s in data.shape)
    shards = shard_shape(shape)
    chunks = (shape[0], CHUNK_SIZE, CHUNK_SIZE)
    arr = group.create_array(
        path,
        shape=shape,
        dtype=data.dtype,
        chunks=chunks,
        shards=shards,
        dimension_names=list(AXES),
        fill_value=0,
    )
    # Write one band of whole rows of shards at a time: each write covers whole shards, so no shard is
    # read back and rewritten, zarr encodes the shards of a band concurrently, and memory stays at one
    # band of the source (a tissue image is at most 10 rows of shards; see _band_cuts).
    if isinstance(data, np.ndarray):
        arr[...] = data  # already in memory: one call lets zarr encode every shard concurrently
        return
    cuts = _band_cuts(data, shape[1], shards[1])
    for y0, y1 in zip(cuts[:-1], cuts[1:], strict=True):
        arr[:, y0:y1, :] = np.asarray(data[:, y0:y1, :])


def _band_cuts(data: Any, height: int, shard_rows: int) -> list[int]:
    """Row bounds of the bands written one at a time: whole rows of shards, cut where a dask source's blocks end.

    A band that cut through a source chunk would make the next band read and decode that chunk again
    (a source stored as one chunk per image would be read once per row of shards). So a band ends at
    the first row of shards that ends together with a source chunk, unless it would grow past the
    taller of a row of shards and a source chunk: memory stays at about two of those, and a chunk is
    read at most twice.

    >>> import dask.array as da
    >>> _band_cuts(da.zeros((2, 600, 9), chunks=(2, 256, 9)), 600, 256)
    [0, 256, 512, 600]
    >>> _band_cuts(da.zeros((2, 600, 9), chunks=(2, 600, 9)), 600, 256)  # one chunk: read it once
    [0, 600]
    >>> _band_cuts(da.zeros((2, 600, 9), chunks=(2, 300, 9)), 600, 256)
    [0, 512, 600]
    """
    chunks = getattr(data, "chunks", None)  # dask-style: a tuple of block sizes per axis
    if not (isinstance(chunks, tuple) and len(chunks) == 3 and isinstance(chunks[1], tuple)):
        return [*range(0, height, shard_rows), height]
    source_ends = set(np.cumsum(chunks[1]).tolist())
    longest = max(shard_rows, *chunks[1])
    cuts = [0]
    for y in range(shard_rows, height, shard_rows):
        if y in source_ends or y - cuts[-1] >= longest:
            cuts.append(y)
    return [*cuts, height]


def write_image(
    path: str | Path,
    image: Any | Sequence[Any],
    *,
    mpp: float,
    channel_names: Sequence[str],
    n_levels: int = 1,
    overwrite: bool = True,
) -> Path:
    """Write one tissue's image as OME-Zarr v3, atomically.

    Parameters
    ----------
    path
        Target ``<tissue_id>.ome.zarr`` folder.
    image
        A ``(C, Y, X)`` array (numpy, dask or zarr), or a list of such arrays, one per pyramid level,
        each 2x smaller than the previous one.
    mpp
        Microns per pixel of level 0.
    channel_names
        One label per channel, written to ``omero.channels[].label``.
    n_levels
        When ``image`` is a single array, the number of pyramid levels to build (1 = none).
    overwrite
        Replace an existing image (atomically) instead of raising :class:`~spora_sd.errors.TargetExistsError`.
    """
    path = Path(path)
    levels = list(image) if isinstance(image, list | tuple) else build_pyramid(image, n_levels)
    base = levels[0]
    if base.ndim != 3:
        raise InvalidArgumentError(f"{path}: image must have 3 dimensions (c, y, x), got shape {base.shape}")
    if len(channel_names) != base.shape[0]:
        raise InvalidArgumentError(
            f"{path}: {len(channel_names)} channel names for an image with {base.shape[0]} channels"
        )
    name = path.name.removesuffix(IMAGE_SUFFIX)
    with atomic_path(path, overwrite=overwrite) as tmp:
        group = zarr.open_group(tmp, mode="w", zarr_format=3)
        for level, data in enumerate(levels):
            _write_level(group, str(level), data)
        group.attrs.update(_ome_attrs(name, float(mpp), len(levels), channel_names, np.dtype(base.dtype)))
    logger.debug("wrote %s (%s, %d levels)", path, base.shape, len(levels))
    return path


@dataclass(frozen=True)
class ImageMetadata:
    """What the OME metadata of an image says."""

    path: Path
    channel_names: list[str]
    level_paths: list[str]
    scales: list[list[float]]

    @property
    def mpp(self) -> float:
        """Microns per pixel of level 0."""
        return float(self.scales[0][-1])


def _read_group_json(path: Path) -> dict:
    meta_file = path / "zarr.json"
    if not meta_file.is_file():
        if (path / ".zgroup").is_file() or (path / ".zattrs").is_file():
            raise CohortFormatError(path, "image.zarr_format", "Zarr format 2 store; the layout requires Zarr format 3")
        raise CohortFormatError(path, "image.unreadable", "not a Zarr group (no zarr.json)")
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, ValueError) as exc:
        raise CohortFormatError(meta_file, "image.unreadable", f"zarr.json is not valid JSON: {exc}") from None
    if meta.get("zarr_format") != 3:
        raise CohortFormatError(path, "image.zarr_format", f"zarr_format is {meta.get('zarr_format')!r}, expected 3")
    if meta.get("node_type") != "group":
        raise CohortFormatError(path, "image.unreadable", "expected a Zarr group holding the levels '0', '1', ...")
    return meta


def read_image_metadata(path: str | Path) -> ImageMetadata:
    """Parse and check the OME-NGFF 0.5 metadata of an image (reads only ``zarr.json``)."""
    path = Path(path)
    attrs = _read_group_json(path).get("attributes", {})
    ome = attrs.get("ome")
    if not isinstance(ome, dict) or not isinstance(ome.get("multiscales"), list) or not ome["multiscales"]:
        raise CohortFormatError(path, "image.ome_metadata", "missing OME-NGFF 0.5 'ome.multiscales' attributes")
    ms = ome["multiscales"][0]
    try:
        axes = [a["name"] for a in ms["axes"]]
        datasets = ms["datasets"]
        level_paths = [str(d["path"]) for d in datasets]
        scales = [
            [float(v) for v in next(t for t in d["coordinateTransformations"] if t["type"] == "scale")["scale"]]
            for d in datasets
        ]
    except (KeyError, TypeError, StopIteration, ValueError) as exc:
        raise CohortFormatError(path, "image.ome_metadata", f"malformed multiscales metadata: {exc!r}") from None
    if tuple(axes) != AXES:
        raise CohortFormatError(path, "image.ome_metadata", f"axes are {axes}, expected ['c', 'y', 'x']")
    if not level_paths or level_paths[0] != "0":
        raise CohortFormatError(path, "image.ome_metadata", "the full-resolution level must be at path '0'")
    for lp in level_paths:
        if not lp.isdigit():
            raise CohortFormatError(path, "image.ome_metadata", f"level path {lp!r} is not a plain integer")
    channels = ome.get("omero", {}).get("channels", [])
    names = [str(c.get("label", "")) for c in channels] if isinstance(channels, list) else []
    return ImageMetadata(path=path, channel_names=names, level_paths=level_paths, scales=scales)


def open_image_levels(path: str | Path, *, chunk_bytes: int | None = None) -> list[da.Array]:
    """Lazy dask arrays over every pyramid level of an image; reads metadata only.

    Each dask chunk is one Zarr chunk ``(C, 256, 256)``, so computing a crop reads only the chunks
    under it. With ``chunk_bytes``, each dask chunk groups ``k x k`` Zarr chunks, the largest ``k``
    that keeps it under ``chunk_bytes``: a crop is then usually one task and one Zarr call (Zarr still
    reads only the chunks under it), which is faster than one task per 256 x 256 chunk.
    """
    path = Path(path)
    meta = read_image_metadata(path)
    levels = []
    for lp in meta.level_paths:
        try:
            arr = zarr.open_array(path / lp, mode="r", zarr_format=3)
        except Exception as exc:  # noqa: BLE001 - zarr raises several types for a broken array
            raise CohortFormatError(path / lp, "image.unreadable", f"cannot open level {lp}: {exc}") from None
        chunks = arr.chunks
        if chunk_bytes is not None:
            k = max(1, math.isqrt(int(chunk_bytes) // max(1, math.prod(chunks) * arr.dtype.itemsize)))
            chunks = (chunks[0], chunks[1] * k, chunks[2] * k)
        levels.append(da.from_zarr(arr, chunks=chunks, inline_array=True))
    return levels
