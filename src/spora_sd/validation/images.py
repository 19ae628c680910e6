"""Structural checks of one OME-Zarr image, for the validator.

They read metadata (``zarr.json``) and the index at the end of each shard file, never the pixels
(unless ``deep=True``): a truncated or corrupted shard is found from its index, whose CRC32C
checksum and chunk offsets must fit the file.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from spora_sd.errors import CohortFormatError
from spora_sd.io.images import CHUNK_SIZE, MAX_SHARDS, ImageMetadata, read_image_metadata
from spora_sd.report import Problem

__all__ = ["check_image"]

_EMPTY = np.uint64(2**64 - 1)

try:  # zarr's crc32c codec depends on one of these; either gives the same checksum
    from google_crc32c import value as _crc32c
except ImportError:  # pragma: no cover - depends on the environment
    try:
        from crc32c import crc32c as _crc32c
    except ImportError:
        _crc32c = None


def _level_meta(path: Path) -> dict:
    meta_file = path / "zarr.json"
    if not meta_file.is_file():
        raise CohortFormatError(path, "image.unreadable", "pyramid level has no zarr.json")
    try:
        return json.loads(meta_file.read_text())
    except (OSError, ValueError) as exc:
        raise CohortFormatError(meta_file, "image.unreadable", f"invalid JSON: {exc}") from None


def _check_shard_file(file: Path, n_chunks: int) -> str | None:
    """Return a reason when the shard's index does not fit the file, else None."""
    size = file.stat().st_size
    index_bytes = n_chunks * 16
    if size < index_bytes + 4:
        return f"{size} bytes is too short for a shard index of {n_chunks} chunks"
    with open(file, "rb") as fh:
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


def _check_level(
    level_path: Path, rel: str, n_channels: int | None, deep: bool, problems: list[Problem]
) -> tuple[int, ...] | None:
    meta = _level_meta(level_path)
    if meta.get("zarr_format") != 3 or meta.get("node_type") != "array":
        problems.append(Problem(rel, "image.zarr_format", "pyramid level is not a Zarr format 3 array"))
        return None
    shape = tuple(int(s) for s in meta.get("shape", ()))
    if len(shape) != 3:
        problems.append(Problem(rel, "image.shape", f"expected 3 dimensions (c, y, x), got shape {shape}"))
        return None
    if n_channels is not None and shape[0] != n_channels:
        problems.append(
            Problem(rel, "image.channels", f"{shape[0]} channels, but channels_per_tissue lists {n_channels}")
        )
    grid = meta.get("chunk_grid", {}).get("configuration", {}).get("chunk_shape")
    codecs = meta.get("codecs", [])
    sharding = next((c for c in codecs if c.get("name") == "sharding_indexed"), None)
    if sharding is None:
        problems.append(
            Problem(rel, "image.shards", "not sharded: the layout groups chunks with Zarr's sharding codec")
        )
        chunk = grid
        shard = None
    else:
        chunk = sharding.get("configuration", {}).get("chunk_shape")
        shard = grid
    expected_chunk = [shape[0], CHUNK_SIZE, CHUNK_SIZE]
    if list(chunk or []) != expected_chunk:
        problems.append(Problem(rel, "image.chunks", f"chunk shape is {chunk}, expected {expected_chunk}"))
        return shape
    if shard is not None:
        if len(shard) != 3 or shard[0] != shape[0] or any(s % c for s, c in zip(shard, chunk, strict=True)):
            problems.append(Problem(rel, "image.shards", f"shard shape {shard} is not a multiple of the chunk {chunk}"))
            return shape
        n_shards = math.ceil(shape[1] / shard[1]) * math.ceil(shape[2] / shard[2])
        if n_shards > MAX_SHARDS:
            problems.append(Problem(rel, "image.shards", f"{n_shards} shards; at most {MAX_SHARDS} are allowed"))
        n_chunks = int(np.prod([s // c for s, c in zip(shard, chunk, strict=True)]))
        chunk_dir = level_path / "c"
        for dirpath, _, filenames in os.walk(chunk_dir):
            for name in filenames:
                reason = _check_shard_file(Path(dirpath) / name, n_chunks)
                if reason:
                    file_rel = f"{rel}/{Path(dirpath, name).relative_to(level_path).as_posix()}"
                    problems.append(Problem(file_rel, "image.truncated", reason))
    if deep:
        import zarr

        try:
            np.asarray(zarr.open_array(level_path, mode="r")[...])
        except Exception as exc:  # noqa: BLE001 - any decode failure is a broken image
            problems.append(Problem(rel, "image.unreadable", f"cannot decode the pixels: {exc}"))
    return shape


def check_image(
    path: Path,
    rel: str,
    *,
    mpp: float,
    expected_channels: list[str] | None,
    deep: bool = False,
) -> tuple[list[Problem], tuple[int, int] | None]:
    """Check one image; returns the problems and the (height, width) of level 0 when readable."""
    problems: list[Problem] = []
    try:
        meta: ImageMetadata = read_image_metadata(path)
    except CohortFormatError as exc:
        return [Problem(rel, exc.rule, exc.message)], None
    scale0 = meta.scales[0]
    if len(scale0) != 3 or scale0[0] != 1.0 or not np.allclose(scale0[1:], [mpp, mpp], rtol=1e-9):
        problems.append(Problem(rel, "image.scale", f"level 0 scale is {scale0}, expected [1.0, {mpp}, {mpp}]"))
    if expected_channels is not None and meta.channel_names and meta.channel_names != expected_channels:
        problems.append(
            Problem(
                rel,
                "image.channel_labels",
                f"omero channel labels {meta.channel_names} differ from the tissue's channels {expected_channels}",
            )
        )
    if not meta.channel_names:
        problems.append(Problem(rel, "image.ome_metadata", "no omero.channels labels"))
    hw = None
    n_channels = len(expected_channels) if expected_channels is not None else None
    for lp in meta.level_paths:
        level_rel = f"{rel}/{lp}"
        try:
            shape = _check_level(path / lp, level_rel, n_channels, deep, problems)
        except CohortFormatError as exc:
            problems.append(Problem(level_rel, exc.rule, exc.message))
            continue
        if lp == "0" and shape is not None:
            hw = (shape[1], shape[2])
    return problems, hw
