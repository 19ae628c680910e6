"""Read and write the cohort's images: OME-Zarr, Zarr format 3, OME-NGFF 0.5.

Layout rules (spec §4): axes ``c, y, x``; level ``0`` at full resolution with scale ``[1, mpp, mpp]``
in micrometers; chunks ``(C, 256, 256)`` holding all channels; chunks grouped by Zarr's own
sharding codec into at most 100 shards per image; channel names in ``omero.channels[].label``.

Reading never returns data that the files do not hold. :func:`open_image_levels` checks the metadata
against what the caller knows from the tables (channel names, the resolution folder's mpp) and the
arrays against the layout (3-D, an allowed dtype, sizes within :mod:`spora_sd.io.limits`); every
chunk it reads goes through a check that the shard file exists (Zarr would return zeros for a
missing one), and a decoding failure (checksum mismatch, decompression error) becomes a
:class:`~spora_sd.errors.CohortFormatError` naming the image, the level and the chunk. The writer
stores every shard, even an all-zero one, and protects every chunk with zstd's checksum, so a
missing shard or a flipped bit is an error, not a wrong pixel.

Examples
--------
>>> import numpy as np, tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "x_abcdefgh_0000.ome.zarr"
>>> _ = write_image(path, np.zeros((2, 300, 500), "uint16"), mpp=1.0, channel_names=["CD3E", "DNA1"])
>>> read_image_metadata(path).channel_names
['CD3E', 'DNA1']
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import dask.array as da
import numpy as np
import zarr
from dask.base import tokenize

from spora_sd.errors import CohortFormatError, InvalidArgumentError
from spora_sd.io.atomic import atomic_path
from spora_sd.io.consolidated import consolidated_levels
from spora_sd.io.limits import check_image_size
from spora_sd.io.location import as_path
from spora_sd.io.remote import (
    MissingChunkError,
    file_size,
    is_local,
    open_binary,
    read_bytes,
    remote_error,
    remote_errors,
    retrying,
    zarr_store,
)
from spora_sd.layout import IMAGE_DTYPES, IMAGE_SUFFIX, IMAGE_UNIT, LENGTH_UNITS

__all__ = [
    "CHUNK_SIZE",
    "MAX_SHARDS",
    "ON_MISMATCH",
    "CheckedLevel",
    "ImageMetadata",
    "build_pyramid",
    "check_image_metadata",
    "image_metadata_problems",
    "open_image_levels",
    "open_level",
    "open_zarr",
    "read_image_metadata",
    "shard_index_problem",
    "shard_keys",
    "shard_shape",
    "write_image",
]

logger = logging.getLogger(__name__)

CHUNK_SIZE = 256
MAX_SHARDS = 100
NGFF_VERSION = "0.5"
AXES = ("c", "y", "x")
#: What readers do when the image's metadata contradicts the tables or the resolution folder:
#: ``"raise"`` a :class:`~spora_sd.errors.CohortFormatError` (the default), or ``"warn"`` and go on
#: with the tables' channel names and the folder's mpp (to rescue a cohort whose metadata is known wrong).
ON_MISMATCH = ("raise", "warn")
OnMismatch = Literal["raise", "warn"]

_EMPTY = np.uint64(2**64 - 1)

try:  # zarr's crc32c codec depends on one of these; either gives the same checksum
    from google_crc32c import value as _crc32c
except ImportError:  # pragma: no cover - depends on the environment
    try:
        from crc32c import crc32c as _crc32c
    except ImportError:
        _crc32c = None


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
    from zarr.codecs import ZstdCodec

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
        # zstd's frame checksum: a flipped bit in a chunk is a decoding error, not a wrong pixel
        compressors=ZstdCodec(level=0, checksum=True),
        # every shard and chunk is stored, even all zero: a missing shard file is then always an
        # interrupted copy, which readers refuse instead of reading zeros
        config={"write_empty_chunks": True},
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
    if np.dtype(base.dtype).name not in IMAGE_DTYPES:
        raise InvalidArgumentError(
            f"{path}: image dtype {np.dtype(base.dtype)} is not allowed; the layout stores {', '.join(IMAGE_DTYPES)}"
        )
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
        _consolidate(tmp)
    logger.debug("wrote %s (%s, %d levels)", path, base.shape, len(levels))
    return path


def _consolidate(group: Path) -> None:
    """Copy the levels' ``zarr.json`` into the group's (``consolidated_metadata``; see :mod:`spora_sd.io.consolidated`).

    Readers then open the image with one file instead of one per level (one request over a network).
    """
    with warnings.catch_warnings():
        # zarr warns that consolidated metadata is not part of the Zarr v3 specification yet. We write
        # it on purpose, as an optional extension: must_understand is false, readers that do not know
        # it read the levels' own zarr.json, and validate checks that both agree (image.consolidated).
        warnings.filterwarnings("ignore", message="Consolidated metadata")
        zarr.consolidate_metadata(group, zarr_format=3)


@dataclass(frozen=True)
class ImageMetadata:
    """What the OME metadata of an image says.

    Attributes
    ----------
    path
        The image (``<tissue_id>.ome.zarr``).
    channel_names
        ``omero.channels[].label``, in channel order (empty when the image has none).
    level_paths
        The ``datasets[].path`` of the pyramid levels, ``"0"`` first.
    scales
        The ``scale`` transformation of each level, in the units of the axes.
    units
        ``axes[].unit`` of ``c, y, x`` (``None`` where unstated).
    consolidated
        The ``zarr.json`` content of every level (level path -> dict) from the group's consolidated
        metadata, when it covers them all (:func:`spora_sd.io.consolidated.consolidated_levels`);
        ``None`` otherwise (each level's own ``zarr.json`` is read).
    """

    path: Path
    channel_names: list[str]
    level_paths: list[str]
    scales: list[list[float]]
    units: tuple[str | None, ...] = field(default=(None, None, None))
    consolidated: Mapping[str, Mapping[str, Any]] | None = field(default=None, compare=False, repr=False)

    @property
    def mpp(self) -> float:
        """Microns per pixel of level 0: the ``x`` scale in the ``x`` axis' unit, converted to micrometers.

        An unstated unit is taken as micrometers; an unknown one gives NaN (and a problem from
        :func:`image_metadata_problems`).
        """
        factor = LENGTH_UNITS.get(self.units[-1] or IMAGE_UNIT, math.nan)
        return float(self.scales[0][-1]) * factor


#: Contents of ``zarr.json`` files already fetched, keyed by ``str(path)`` (``None``: not there). A remote
#: cohort fetches those of many images in one concurrent batch (:meth:`spora_sd.Cohort.prefetch_images`)
#: and passes them here, so opening an image costs no further request.
MetadataCache = Mapping[str, bytes | None]


def _remote_json(folder: Any, cache: MetadataCache | None) -> bytes | None:
    """The bytes of the remote ``<folder>/zarr.json`` (from ``cache`` when there), ``None`` when it does not exist.

    The cache is looked up by string: joining remote paths (a ``UPath`` each) costs about a
    millisecond, which opening 1,000 images would pay thousands of times.
    """
    key = f"{str(folder).rstrip('/')}/zarr.json"
    if cache is not None and key in cache:
        return cache[key]
    file = folder / "zarr.json"
    try:
        with remote_errors(file):
            return retrying(lambda: read_bytes(file), file)
    except FileNotFoundError:
        return None


def _read_group_json(path: Path, cache: MetadataCache | None = None) -> dict:
    meta_file = path / "zarr.json" if is_local(path) else None
    if meta_file is None:
        raw = _remote_json(path, cache)
        if raw is None:
            raise CohortFormatError(path, "image.unreadable", "not a Zarr group (no zarr.json)")
        text: str | bytes = raw
    elif not meta_file.is_file():
        if (path / ".zgroup").is_file() or (path / ".zattrs").is_file():
            raise CohortFormatError(path, "image.zarr_format", "Zarr format 2 store; the layout requires Zarr format 3")
        raise CohortFormatError(path, "image.unreadable", "not a Zarr group (no zarr.json)")
    else:
        text = ""
    try:
        meta = json.loads(text or meta_file.read_text())  # type: ignore[union-attr]
    except (OSError, ValueError) as exc:
        raise CohortFormatError(meta_file, "image.unreadable", f"zarr.json is not valid JSON: {exc}") from None
    if meta.get("zarr_format") != 3:
        raise CohortFormatError(path, "image.zarr_format", f"zarr_format is {meta.get('zarr_format')!r}, expected 3")
    if meta.get("node_type") != "group":
        raise CohortFormatError(path, "image.unreadable", "expected a Zarr group holding the levels '0', '1', ...")
    return meta


def read_image_metadata(path: str | Path, *, cache: MetadataCache | None = None) -> ImageMetadata:
    """Parse and check the OME-NGFF 0.5 metadata of an image (reads only ``zarr.json``).

    ``path`` may be remote (a :class:`upath.UPath`); ``cache`` holds ``zarr.json`` contents already
    fetched (see :data:`MetadataCache`).
    """
    path = as_path(path)
    group = _read_group_json(path, cache)
    attrs = group.get("attributes", {})
    ome = attrs.get("ome")
    if not isinstance(ome, dict) or not isinstance(ome.get("multiscales"), list) or not ome["multiscales"]:
        raise CohortFormatError(path, "image.ome_metadata", "missing OME-NGFF 0.5 'ome.multiscales' attributes")
    ms = ome["multiscales"][0]
    try:
        axes = [a["name"] for a in ms["axes"]]
        units = tuple(a.get("unit") if isinstance(a.get("unit"), str) else None for a in ms["axes"])
        datasets = ms["datasets"]
        level_paths = [str(d["path"]) for d in datasets]
        scales = [
            [float(v) for v in next(t for t in d["coordinateTransformations"] if t["type"] == "scale")["scale"]]
            for d in datasets
        ]
    except (KeyError, TypeError, StopIteration, ValueError, AttributeError) as exc:
        raise CohortFormatError(path, "image.ome_metadata", f"malformed multiscales metadata: {exc!r}") from None
    if tuple(axes) != AXES:
        raise CohortFormatError(path, "image.ome_metadata", f"axes are {axes}, expected ['c', 'y', 'x']")
    if not level_paths or level_paths[0] != "0":
        raise CohortFormatError(path, "image.ome_metadata", "the full-resolution level must be at path '0'")
    for lp in level_paths:
        if not lp.isdigit():
            raise CohortFormatError(path, "image.ome_metadata", f"level path {lp!r} is not a plain integer")
    omero = ome.get("omero")
    channels = omero.get("channels", []) if isinstance(omero, dict) else []
    if not isinstance(channels, list) or not all(isinstance(c, dict) for c in channels):
        raise CohortFormatError(path, "image.ome_metadata", "omero.channels is not a list of objects")
    names = [str(c.get("label", "")) for c in channels]
    return ImageMetadata(
        path=path,
        channel_names=names,
        level_paths=level_paths,
        scales=scales,
        units=units,
        consolidated=consolidated_levels(group, level_paths),
    )


def image_metadata_problems(
    meta: ImageMetadata, *, mpp: float | None = None, channel_names: Sequence[str] | None = None
) -> list[tuple[str, str]]:
    """Where an image's OME metadata contradicts the cohort: ``(rule, message)`` pairs, empty if none.

    Parameters
    ----------
    meta
        From :func:`read_image_metadata`.
    mpp
        The resolution folder's microns per pixel: the level-0 scale of ``y`` and ``x`` times their
        unit (``micrometer``; ``nanometer`` and the other OME-NGFF length units are converted) must
        equal it (rule ``image.scale``).
    channel_names
        The image's channels according to the tables (``channels.parquet`` filtered by the tissue's
        row of ``channels_per_tissue.parquet``; ``R, G, B`` for H&E): ``omero.channels[].label``, when
        present, must be the same names in the same order (rule ``image.channel_labels``).

    Examples
    --------
    >>> meta = ImageMetadata(Path("x.ome.zarr"), ["DNA1", "CD3E"], ["0"], [[1.0, 1000.0, 1000.0]],
    ...                      units=("", "nanometer", "nanometer"))
    >>> image_metadata_problems(meta, mpp=1.0, channel_names=["DNA1", "CD3E"])
    []
    >>> [rule for rule, _ in image_metadata_problems(meta, mpp=0.5, channel_names=["CD3E", "DNA1"])]
    ['image.scale', 'image.channel_labels']
    """
    problems: list[tuple[str, str]] = []
    scale0 = meta.scales[0]
    units = (tuple(meta.units) + (None, None, None))[:3]
    unknown = [
        f"{axis}: {unit!r}" for axis, unit in zip(AXES[1:], units[1:], strict=True) if unit and unit not in LENGTH_UNITS
    ]
    if unknown:
        problems.append(
            (
                "image.scale",
                f"axis units {', '.join(unknown)} are not length units spora-sd reads ({IMAGE_UNIT!r} expected; "
                f"also read: {', '.join(LENGTH_UNITS)})",
            )
        )
    elif len(scale0) != 3 or scale0[0] != 1.0:
        problems.append(("image.scale", f"level 0 scale is {scale0}, expected [1.0, mpp, mpp]"))
    else:
        factors = [LENGTH_UNITS[u or IMAGE_UNIT] for u in units[1:]]
        sizes = [float(v) * f for v, f in zip(scale0[1:], factors, strict=True)]
        stated = " x ".join(f"{v} {u or IMAGE_UNIT}" for v, u in zip(scale0[1:], units[1:], strict=True))
        if not np.isclose(sizes[0], sizes[1], rtol=1e-6, atol=0):
            problems.append(("image.scale", f"pixels are not square: level 0 scale is {stated}"))
        elif mpp is not None and not np.isclose(sizes[1], float(mpp), rtol=1e-6, atol=0):
            problems.append(
                (
                    "image.scale",
                    f"level 0 pixels are {stated} ({sizes[1]:g} micrometers), but the resolution folder says "
                    f"{float(mpp):g} micrometers per pixel",
                )
            )
    if channel_names is not None and meta.channel_names and list(meta.channel_names) != list(channel_names):
        problems.append(
            (
                "image.channel_labels",
                f"omero channel labels {meta.channel_names} differ from the channels the tables list for this "
                f"image {list(channel_names)} (channels.parquet in the order of its rows, filtered by "
                "channels_per_tissue.parquet)",
            )
        )
    return problems


def check_image_metadata(
    meta: ImageMetadata,
    *,
    mpp: float | None = None,
    channel_names: Sequence[str] | None = None,
    on_mismatch: OnMismatch = "raise",
) -> None:
    """Raise (or, with ``on_mismatch="warn"``, warn about) the first of :func:`image_metadata_problems`."""
    _check_on_mismatch(on_mismatch)
    for rule, message in image_metadata_problems(meta, mpp=mpp, channel_names=channel_names):
        if on_mismatch == "raise":
            raise CohortFormatError(meta.path, rule, message)
        warnings.warn(f"{meta.path}: [{rule}] {message} (read anyway: on_mismatch='warn')", UserWarning, stacklevel=3)


def _check_on_mismatch(on_mismatch: object) -> None:
    if on_mismatch not in ON_MISMATCH:
        raise InvalidArgumentError(f"on_mismatch must be one of {ON_MISMATCH}, not {on_mismatch!r}")


def shard_keys(shape: Sequence[int], shard: Sequence[int], encoding: Any = None) -> list[tuple[tuple[int, ...], str]]:
    """Grid position and store key of every shard (or chunk, if unsharded) that an array of ``shape`` has.

    ``encoding`` is the ``chunk_key_encoding`` of ``zarr.json`` (default: ``c/`` and ``/``).

    >>> [key for _, key in shard_keys((2, 300, 200), (2, 256, 256))]
    ['c/0/0/0', 'c/0/1/0']
    >>> shard_keys((1, 5, 5), (1, 5, 5), {"name": "v2", "configuration": {"separator": "."}})
    [((0, 0, 0), '0.0.0')]
    """
    encoding = encoding if isinstance(encoding, dict) else {}
    name = encoding.get("name", "default")
    config = encoding.get("configuration") if isinstance(encoding.get("configuration"), dict) else {}
    if name not in ("default", "v2"):
        raise ValueError(f"unknown chunk_key_encoding {name!r}")
    separator = config.get("separator", "/" if name == "default" else ".")
    grid = [range(math.ceil(int(n) / int(s))) if int(s) > 0 else range(0) for n, s in zip(shape, shard, strict=True)]
    out = []
    for coords in itertools.product(*grid):
        key = separator.join(map(str, coords))
        out.append((coords, f"c{separator}{key}" if name == "default" else key))
    return out


def shard_index_problem(file: Path, n_chunks: int) -> str | None:
    """Why a shard file's index does not fit the file (truncated or corrupted), or ``None`` when it does.

    Reads only the index at the end of the file (16 bytes per chunk and a CRC32C checksum).
    """
    size = file_size(file)
    index_bytes = n_chunks * 16
    if size < index_bytes + 4:
        return f"{size} bytes is too short for a shard index of {n_chunks} chunks"
    with open_binary(file) as fh:
        fh.seek(size - index_bytes - 4)
        raw = fh.read(index_bytes + 4)
    body, checksum = raw[:index_bytes], raw[index_bytes:]
    if _crc32c is not None and int(_crc32c(body)).to_bytes(4, "little") != checksum:
        return "shard index checksum (crc32c) does not match: the file is truncated or corrupted"
    entries = np.frombuffer(body, dtype="<u8").reshape(-1, 2)
    used = entries[(entries[:, 0] != _EMPTY) | (entries[:, 1] != _EMPTY)]
    if used.size and int((used[:, 0] + used[:, 1]).max()) > size - index_bytes - 4:
        return "a chunk of the shard lies past the end of the file: the file is truncated"
    return None


def _span(sl: slice, n: int) -> tuple[int, int]:
    start, stop, _ = sl.indices(n)
    return start, max(start, stop)


class CheckedLevel:
    """One pyramid level as an array-like for :func:`dask.array.from_array`: reads that fail loudly.

    ``level[key]`` reads through Zarr, but first checks that every shard file under ``key`` exists
    (Zarr reads a missing one as zeros), and turns any decoding failure (a checksum mismatch, a zstd
    error, a truncated shard) into a :class:`~spora_sd.errors.CohortFormatError` naming the image,
    the level and the chunk. The check costs one ``stat`` per shard under the crop.

    Parameters
    ----------
    image
        The image (``<tissue_id>.ome.zarr``).
    level
        The level's path inside it (``"0"``, ``"1"``, ...).
    array
        The open Zarr array of that level.
    """

    def __init__(self, image: str | Path, level: str, array: zarr.Array) -> None:
        self.image = as_path(image)
        self._folder: Any = None
        # remote: the store itself refuses a missing shard (spora_sd.io.remote.zarr_store), no stat needed
        self.local = is_local(self.image)
        self.level = str(level)
        self.array = array
        self.shape = tuple(int(s) for s in array.shape)
        self.dtype = np.dtype(array.dtype)
        self.ndim = len(self.shape)
        self.chunks = tuple(int(c) for c in array.chunks)
        shards = getattr(array, "shards", None)
        self.sharded = bool(shards)
        self.shards = tuple(int(c) for c in shards) if shards else self.chunks
        # a shard file holds at least its index (16 bytes per chunk and a checksum); Zarr reads a shorter one as zeros
        n_chunks = math.prod(s // c for s, c in zip(self.shards, self.chunks, strict=True))
        self._min_size = n_chunks * 16 + 4 if self.sharded else 1

    @property
    def folder(self) -> Path:
        if self._folder is None:  # joined once: a remote join costs about a millisecond
            self._folder = self.image / self.level
        return self._folder

    def _key(self, coords: tuple[int, ...]) -> str:
        return str(self.array.metadata.encode_chunk_key(coords))

    def _where(self, region: Sequence[tuple[int, int]]) -> str:
        return ", ".join(f"{axis} {a}:{b}" for axis, (a, b) in zip(AXES, region, strict=False))

    def _grid(self, region: Sequence[tuple[int, int]], step: Sequence[int]) -> Iterator[tuple[int, ...]]:
        ranges = [
            range(a // s, (b - 1) // s + 1) if b > a else range(0) for (a, b), s in zip(region, step, strict=True)
        ]
        return itertools.product(*ranges)

    def require_shards(self, region: Sequence[tuple[int, int]]) -> None:
        """Raise ``image.chunk_missing`` when a shard file under ``region`` (start, stop per axis) is missing."""
        if not self.local:
            return  # the remote store raises MissingChunkError instead, without a request of its own
        for coords in self._grid(region, self.shards):
            key = self._key(coords)
            try:
                size = os.stat(self.folder / key).st_size
            except (FileNotFoundError, NotADirectoryError):
                size = None
            if size is None or size < self._min_size:
                lo = [c * s for c, s in zip(coords, self.shards, strict=True)]
                hi = [min(n, a + s) for n, a, s in zip(self.shape, lo, self.shards, strict=True)]
                where = f"level {self.level}: shard {key} ({self._where(list(zip(lo, hi, strict=True)))})"
                if size is None:
                    raise CohortFormatError(
                        self.folder / key,
                        "image.chunk_missing",
                        f"{where} is missing, so its pixels would read as zeros; the copy of this image is "
                        "incomplete (copy it again)",
                    )
                raise CohortFormatError(
                    self.folder / key,
                    "image.truncated",
                    f"{where} is {size} bytes, too short for its index of {self._min_size} bytes, so its pixels "
                    "would read as zeros: the file is truncated",
                )

    def _failure(self, region: Sequence[tuple[int, int]], exc: BaseException) -> CohortFormatError:
        """The error for a failed read of ``region``: find the chunk that fails and say why."""
        for coords in self._grid(region, self.chunks):
            lo = [c * s for c, s in zip(coords, self.chunks, strict=True)]
            hi = [min(n, a + s) for n, a, s in zip(self.shape, lo, self.chunks, strict=True)]
            try:
                self.array[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))]
            except Exception as chunk_exc:  # noqa: BLE001 - whatever zarr or a codec raises
                shard = tuple(a // s for a, s in zip(lo, self.shards, strict=True))
                key = self._key(shard)
                file = self.folder / key
                n_chunks = math.prod(s // c for s, c in zip(self.shards, self.chunks, strict=True))
                reason = None
                if isinstance(chunk_exc, MissingChunkError):
                    return self._missing(file, what_key=key, lo=lo, hi=hi)
                if self.sharded and (file.is_file() if self.local else True):
                    try:
                        reason = shard_index_problem(file, n_chunks)
                    except FileNotFoundError:
                        return self._missing(file, what_key=key, lo=lo, hi=hi)
                what = f"level {self.level}, chunk {coords} ({self._where(list(zip(lo, hi, strict=True)))}) in {key}"
                if reason:
                    return CohortFormatError(file, "image.truncated", f"{what}: {reason}")
                return CohortFormatError(
                    file, "image.corrupt", f"{what} cannot be decoded: {type(chunk_exc).__name__}: {chunk_exc}"
                )
        return CohortFormatError(
            self.folder,
            "image.unreadable",
            f"level {self.level}: cannot read {self._where(region)}: {type(exc).__name__}: {exc}",
        )

    def _missing(self, file: Any, *, what_key: str, lo: Sequence[int], hi: Sequence[int]) -> CohortFormatError:
        where = f"level {self.level}: shard {what_key} ({self._where(list(zip(lo, hi, strict=True)))})"
        return CohortFormatError(
            file,
            "image.chunk_missing",
            f"{where} is missing, so its pixels would read as zeros; the copy of this image is incomplete "
            "(copy it again)",
        )

    def read(self, region: Sequence[tuple[int, int]]) -> np.ndarray:
        """The pixels of ``region`` (``(start, stop)`` per axis), checked as the class describes."""
        self.require_shards(region)
        key = tuple(slice(a, b) for a, b in region)
        try:
            return np.asarray(retrying(lambda: self.array[key], self.image))
        except MemoryError:
            raise
        except MissingChunkError as exc:
            shard = tuple(int(c) for c in exc.key.replace(".", "/").split("/")[1:])
            lo = [c * s for c, s in zip(shard, self.shards, strict=False)]
            hi = [min(n, a + s) for n, a, s in zip(self.shape, lo, self.shards, strict=False)]
            raise self._missing(self.folder / exc.key, what_key=exc.key, lo=lo, hi=hi) from None
        except Exception as exc:  # noqa: BLE001 - zarr and its codecs raise many types
            if not self.local:
                error = remote_error(exc, self.folder)
                if error is not None and not isinstance(error, FileNotFoundError):
                    raise error from None  # the server, not the file: say so, do not blame the chunk
            raise self._failure(region, exc) from None

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        if any(k is Ellipsis for k in key):
            i = next(i for i, k in enumerate(key) if k is Ellipsis)
            key = key[:i] + (slice(None),) * (self.ndim - len(key) + 1) + key[i + 1 :]
        key = key + (slice(None),) * (self.ndim - len(key))
        if len(key) != self.ndim:
            raise InvalidArgumentError(f"{self.folder}: index {key!r} has more axes than the image ({self.ndim})")
        if all(isinstance(k, slice) and k.step in (None, 1) for k in key):
            return self.read([_span(k, n) for k, n in zip(key, self.shape, strict=True)])
        # Anything else (integers, steps, index arrays, as dask may fuse into a read): read the
        # bounding box of every axis, then index it in memory.
        region, rest = [], []
        for k, n in zip(key, self.shape, strict=True):
            if isinstance(k, slice):
                picked = np.arange(n)[k]
                if not picked.size:
                    region.append((0, 0))
                    rest.append(slice(None))
                    continue
                lo, hi = int(picked.min()), int(picked.max()) + 1
                region.append((lo, hi))
                rest.append(slice(int(picked[0]) - lo, None, k.step))  # from the first picked, to the box's end
            elif isinstance(k, int | np.integer):
                if not -n <= int(k) < n:
                    raise IndexError(f"index {k} is out of bounds for an axis of size {n}")
                region.append((int(k) % n, int(k) % n + 1))
                rest.append(0)
            else:
                picked = np.asarray(k)
                picked = np.flatnonzero(picked) if picked.dtype == bool else np.where(picked < 0, picked + n, picked)
                lo = int(picked.min()) if picked.size else 0
                region.append((lo, int(picked.max()) + 1 if picked.size else 0))
                rest.append(picked - lo)
        return self.read(region)[tuple(rest)]

    def __reduce__(self) -> tuple[Any, ...]:
        return (CheckedLevel, (self.image, self.level, self.array))


def open_zarr(folder: Any, cache: MetadataCache | None = None, meta: Mapping[str, Any] | None = None) -> zarr.Array:
    """A read-only Zarr v3 array over ``folder`` (a local path, or a remote one or its URL); unchecked.

    Most readers want :func:`open_level` (checked against the layout); this is the bare array for
    readers that do their own checks (:class:`spora_sd.ml.reader.ZarrSource`,
    :class:`spora_sd.viewer.channel_chunks.ChannelChunkedImage`). ``meta``: the array's ``zarr.json``,
    when the caller has read it already (it is not read again).
    """
    return _open_array(as_path(folder), cache, meta)


def _open_array(folder: Any, cache: MetadataCache | None, meta: Mapping[str, Any] | None = None) -> zarr.Array:
    """A Zarr array over ``folder``: local, or remote through :func:`spora_sd.io.remote.zarr_store`.

    The array is built from ``meta`` (its group's consolidated metadata) when given, else from its
    ``zarr.json`` (remote: from ``cache`` when there, else one request), with Zarr's own metadata
    parser. ``zarr.open_array`` reads the same file through Zarr's event-loop thread: 1.15 ms per
    array against 0.39 ms this way (2,000 arrays, load average 8.7), paid for each of the 4,000
    levels of 2,000 images.
    """
    from zarr.core.array import Array, AsyncArray
    from zarr.core.metadata.v3 import ArrayV3Metadata
    from zarr.storage import LocalStore, StorePath

    if meta is None:
        if is_local(folder):
            raw: bytes | None = (Path(folder) / "zarr.json").read_bytes()  # FileNotFoundError when absent
        else:
            raw = _remote_json(folder, cache)
        if raw is None:
            raise FileNotFoundError(f"{folder}/zarr.json")
        meta = json.loads(raw)
    if not isinstance(meta, dict) or meta.get("zarr_format") != 3 or meta.get("node_type") != "array":
        raise ValueError("not a Zarr format 3 array")
    if is_local(folder):
        store = LocalStore(folder, read_only=True)
    else:
        with remote_errors(folder):
            store = zarr_store(folder)
    return Array(AsyncArray(metadata=ArrayV3Metadata.from_dict(meta), store_path=StorePath(store, "")))


def open_level(
    path: str | Path,
    level: str,
    *,
    cache: MetadataCache | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> CheckedLevel:
    """Open one pyramid level and check it against the layout; no pixel is read.

    ``metadata`` is the level's ``zarr.json`` content when already known (the group's consolidated
    metadata, :attr:`ImageMetadata.consolidated`): then the level's own file is not read.

    Raises
    ------
    CohortFormatError
        ``image.unreadable`` (not a Zarr v3 array), ``image.shape`` (not ``(c, y, x)``),
        ``image.dtype`` (a dtype outside :data:`spora_sd.layout.IMAGE_DTYPES`), ``image.too_large``
        (beyond :mod:`spora_sd.io.limits`).
    """
    path = as_path(path)
    folder = path / str(level)
    try:
        arr = _open_array(folder, cache, metadata)
    except Exception as exc:  # noqa: BLE001 - zarr raises several types for a broken array
        if not is_local(folder):
            error = remote_error(exc, folder)
            if error is not None and not isinstance(error, FileNotFoundError):
                raise error from None
        raise CohortFormatError(folder, "image.unreadable", f"cannot open level {level}: {exc}") from None
    if arr.ndim != 3:
        raise CohortFormatError(
            folder, "image.shape", f"level {level} has shape {arr.shape}; the layout stores (c, y, x) arrays"
        )
    try:
        dtype = np.dtype(arr.dtype)
    except TypeError:
        dtype = None
    if dtype is None or dtype.name not in IMAGE_DTYPES:
        raise CohortFormatError(
            folder,
            "image.dtype",
            f"level {level} has dtype {arr.dtype}; images are stored as one of {', '.join(IMAGE_DTYPES)}",
        )
    check_image_size(folder, arr.shape, arr.chunks, dtype.itemsize)
    checked = CheckedLevel(path, str(level), arr)
    checked._folder = folder  # joined above already (a remote join costs about 0.1 ms)
    return checked


def open_image_levels(
    path: str | Path,
    *,
    chunk_bytes: int | None = None,
    mpp: float | None = None,
    channel_names: Sequence[str] | None = None,
    on_mismatch: OnMismatch = "raise",
    cache: MetadataCache | None = None,
) -> list[da.Array]:
    """Lazy dask arrays over every pyramid level of an image; reads metadata only.

    Each dask chunk is one Zarr chunk ``(C, 256, 256)``, so computing a crop reads only the chunks
    under it. With ``chunk_bytes``, each dask chunk groups ``k x k`` Zarr chunks, the largest ``k``
    that keeps it under ``chunk_bytes``: a crop is then usually one task and one Zarr call (Zarr still
    reads only the chunks under it), which is faster than one task per 256 x 256 chunk.

    Computing a chunk whose shard file is missing, or that cannot be decoded, raises
    :class:`~spora_sd.errors.CohortFormatError` (see :class:`CheckedLevel`), never returns zeros.

    Parameters
    ----------
    path
        The image (``<tissue_id>.ome.zarr``).
    chunk_bytes
        Target size of one dask chunk (``None``: one Zarr chunk each).
    mpp
        The resolution folder's microns per pixel, to check the level-0 scale against.
    channel_names
        The image's channels according to the tables, to check ``omero.channels[].label`` against
        (names and order) and the channel count of every level.
    on_mismatch
        ``"raise"`` (default) or ``"warn"``: what to do when the metadata contradicts ``mpp`` or
        ``channel_names`` (see :func:`image_metadata_problems`). The channel count must agree either way.
    cache
        ``zarr.json`` contents already fetched (remote images; see :data:`MetadataCache`).
    """
    path = as_path(path)
    meta = read_image_metadata(path, cache=cache)
    # Remote images open from the group's consolidated metadata (one request per image instead of one
    # per level); local ones read each level's own zarr.json, which costs little and notices a level
    # rewritten by hand since (validate reports stale consolidated metadata: image.consolidated).
    known = (meta.consolidated or {}) if not is_local(path) else {}
    opened = [open_level(path, lp, cache=cache, metadata=known.get(lp)) for lp in meta.level_paths]
    for level in opened:
        if channel_names is not None and level.shape[0] != len(channel_names):
            raise CohortFormatError(
                level.folder,
                "image.channels",
                f"{level.shape[0]} channels, but the tables list {len(channel_names)} for this image: "
                f"{list(channel_names)}",
            )
        if level.shape[0] != opened[0].shape[0]:
            raise CohortFormatError(
                level.folder, "image.shape", f"{level.shape[0]} channels, but level 0 has {opened[0].shape[0]}"
            )
    check_image_metadata(meta, mpp=mpp, channel_names=channel_names, on_mismatch=on_mismatch)
    levels = []
    for level in opened:
        chunks = level.chunks
        if chunk_bytes is not None:
            k = max(1, math.isqrt(int(chunk_bytes) // max(1, math.prod(chunks) * level.dtype.itemsize)))
            chunks = (chunks[0], chunks[1] * k, chunks[2] * k)
        try:
            stamp = os.stat(level.folder / "zarr.json").st_mtime_ns if level.local else 0
        except OSError:
            stamp = 0
        name = "spora-image-" + tokenize(str(level.folder), stamp, level.shape, str(level.dtype), chunks)
        levels.append(
            da.from_array(
                level,
                chunks=chunks,
                name=name,
                inline_array=True,
                meta=np.empty((0, 0, 0), dtype=level.dtype),
            )
        )
    return levels
