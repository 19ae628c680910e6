"""Structural checks of one OME-Zarr image, for the validator.

They read metadata (``zarr.json``), list the shard files and read the index at the end of each,
never the pixels (unless ``deep=True``): every shard file that the array's shape implies must exist
(Zarr would read a missing one as zeros), and a truncated or corrupted shard is found from its
index, whose CRC32C checksum and chunk offsets must fit the file. ``deep=True`` also decodes every
chunk, one row of chunks at a time.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from spora_sd.errors import CohortFormatError
from spora_sd.io.consolidated import consolidated_problems
from spora_sd.io.images import (
    CHUNK_SIZE,
    MAX_SHARDS,
    ImageMetadata,
    image_metadata_problems,
    open_level,
    read_image_metadata,
    shard_index_problem,
    shard_keys,
)
from spora_sd.io.limits import check_image_size
from spora_sd.io.remote import walk_files
from spora_sd.layout import IMAGE_DTYPES
from spora_sd.report import Problem

__all__ = ["check_image"]

#: Missing shard files listed by name in one problem, at most.
_LISTED = 3


def _level_meta(path: Path) -> dict:
    meta_file = path / "zarr.json"
    if not meta_file.is_file():
        raise CohortFormatError(path, "image.unreadable", "pyramid level has no zarr.json")
    try:
        return json.loads(meta_file.read_text())
    except (OSError, ValueError) as exc:
        raise CohortFormatError(meta_file, "image.unreadable", f"invalid JSON: {exc}") from None


def _missing_shards(level_path: Path, rel: str, shape: tuple[int, ...], shard: list[int], meta: dict) -> Problem | None:
    try:
        expected = shard_keys(shape, shard, meta.get("chunk_key_encoding"))
    except ValueError as exc:
        return Problem(rel, "image.unreadable", str(exc))
    missing = [key for _, key in expected if not (level_path / key).is_file()]
    if not missing:
        return None
    listed = ", ".join(missing[:_LISTED]) + (f" and {len(missing) - _LISTED} more" if len(missing) > _LISTED else "")
    return Problem(
        rel,
        "image.chunk_missing",
        f"{len(missing)} of {len(expected)} shard files are missing ({listed}): their pixels would read as "
        "zeros; the copy of this image is incomplete",
    )


def _decode_all(level_path: Path, rel: str, problems: list[Problem]) -> None:
    """Decode every chunk, a row of chunks of one shard at a time; report the first chunk that fails."""
    try:
        level = open_level(level_path.parent, level_path.name)
        _, height, width = level.shape
        rows, columns = level.chunks[1], level.shards[2]
        for y0 in range(0, height, rows):
            for x0 in range(0, width, columns):
                level[:, y0 : min(height, y0 + rows), x0 : min(width, x0 + columns)]
    except CohortFormatError as exc:
        file = Path(exc.file)
        where = f"{rel}/{file.relative_to(level_path).as_posix()}" if level_path in file.parents else rel
        problems.append(Problem(where, exc.rule, exc.message))


def _check_level(
    level_path: Path, rel: str, meta: dict, n_channels: int | None, deep: bool, problems: list[Problem]
) -> tuple[int, ...] | None:
    if meta.get("zarr_format") != 3 or meta.get("node_type") != "array":
        problems.append(Problem(rel, "image.zarr_format", "pyramid level is not a Zarr format 3 array"))
        return None
    raw_shape = meta.get("shape")
    if not isinstance(raw_shape, list) or not all(isinstance(s, int) and s >= 0 for s in raw_shape):
        problems.append(Problem(rel, "image.unreadable", f"zarr.json has no valid shape: {raw_shape!r}"))
        return None
    shape = tuple(raw_shape)
    if len(shape) != 3:
        problems.append(Problem(rel, "image.shape", f"expected 3 dimensions (c, y, x), got shape {shape}"))
        return None
    data_type = meta.get("data_type")
    if data_type not in IMAGE_DTYPES:
        problems.append(Problem(rel, "image.dtype", f"data_type {data_type!r} is not one of {', '.join(IMAGE_DTYPES)}"))
        return None
    if n_channels is not None and shape[0] != n_channels:
        problems.append(
            Problem(rel, "image.channels", f"{shape[0]} channels, but channels_per_tissue lists {n_channels}")
        )
    grid = meta.get("chunk_grid", {}).get("configuration", {}).get("chunk_shape")
    codecs = meta.get("codecs", [])
    sharding = next((c for c in codecs if isinstance(c, dict) and c.get("name") == "sharding_indexed"), None)
    if sharding is None:
        problems.append(
            Problem(rel, "image.shards", "not sharded: the layout groups chunks with Zarr's sharding codec")
        )
        chunk = grid
        shard = None
    else:
        chunk = sharding.get("configuration", {}).get("chunk_shape")
        shard = grid
    try:
        check_image_size(level_path, shape, chunk if isinstance(chunk, list) else None, np.dtype(data_type).itemsize)
    except CohortFormatError as exc:
        problems.append(Problem(rel, exc.rule, exc.message))
        return None
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
        missing = _missing_shards(level_path, rel, shape, shard, meta)
        if missing is not None:
            problems.append(missing)
        n_chunks = int(np.prod([s // c for s, c in zip(shard, chunk, strict=True)]))
        chunk_dir = level_path / "c"
        # local: a walk of the folder; remote: one recursive listing, then the index of each shard
        # (its last bytes) with one range request
        for name, _ in walk_files(chunk_dir):
            reason = shard_index_problem(chunk_dir / name, n_chunks)
            if reason:
                problems.append(Problem(f"{rel}/c/{name}", "image.truncated", reason))
    if deep and not any(p.file == rel or p.file.startswith(f"{rel}/") for p in problems):
        _decode_all(level_path, rel, problems)
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
    for rule, message in image_metadata_problems(meta, mpp=mpp, channel_names=expected_channels):
        problems.append(Problem(rel, rule, message))
    if not meta.channel_names:
        problems.append(Problem(rel, "image.ome_metadata", "no omero.channels labels"))
    hw = None
    n_channels = len(expected_channels) if expected_channels is not None else None
    own: dict[str, dict] = {}
    for lp in meta.level_paths:
        level_rel = f"{rel}/{lp}"
        try:
            own[lp] = _level_meta(path / lp)
            shape = _check_level(path / lp, level_rel, own[lp], n_channels, deep, problems)
        except CohortFormatError as exc:
            problems.append(Problem(level_rel, exc.rule, exc.message))
            continue
        if lp == "0" and shape is not None:
            hw = (shape[1], shape[2])
    problems += _consolidated_problems(path, rel, own)
    return problems, hw


def _consolidated_problems(path: Path, rel: str, own: dict[str, dict]) -> list[Problem]:
    """``image.consolidated`` when the group's consolidated metadata (optional) disagrees with the levels' zarr.json."""
    try:
        group = _level_meta(path)  # the group's zarr.json (read_image_metadata parsed it already)
    except CohortFormatError:
        return []
    stale = consolidated_problems(group, own)
    if not stale:
        return []
    levels = sorted({lp for lp, _ in stale})
    details = "; ".join(f"level {lp}: {', '.join(k for p, k in stale if p == lp)}" for lp in levels)
    return [
        Problem(
            f"{rel}/zarr.json",
            "image.consolidated",
            f"consolidated_metadata disagrees with the levels' own zarr.json ({details}): readers would open the "
            "levels with stale shapes or codecs; rewrite it with spora_sd.consolidate_images (or remove the key)",
        )
    ]
