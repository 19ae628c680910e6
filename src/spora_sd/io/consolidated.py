"""Consolidated metadata of image groups: each level's ``zarr.json`` copied into the group's ``zarr.json``.

An image (``<tissue_id>.ome.zarr``) is a Zarr group whose levels ``0``, ``1``, ... are arrays, each
with its own ``zarr.json``. Opening the image reads the group's ``zarr.json`` (the OME metadata,
which names the levels) and then one ``zarr.json`` per level (shape, chunks, codecs). Over a network
that is three requests per image of two levels. Zarr-python 3's *consolidated metadata* puts the
levels' metadata into the group's ``zarr.json`` as well, under ``consolidated_metadata``::

    {"zarr_format": 3, "node_type": "group", "attributes": {"ome": ...},
     "consolidated_metadata": {"kind": "inline", "must_understand": false,
                               "metadata": {"0": {<level 0's zarr.json>}, "1": {...}}}}

so one request opens an image. It is an optional extension: the layout allows extra ``zarr.json``
keys, Zarr readers that do not know it ignore it (``must_understand: false``), and cohorts written
without it (by other tools) stay valid and are read as before, one ``zarr.json`` per level.

spora-sd's image writer (:func:`spora_sd.io.images.write_image`) writes it;
:func:`spora_sd.io.consolidate.consolidate_images` adds it to an existing cohort, local or on S3. Readers use it only when it covers every level the
OME metadata names (:func:`consolidated_levels`); ``validate`` checks that it equals the levels' own
``zarr.json`` (rule ``image.consolidated``, :func:`consolidated_problems`), so stale consolidated
metadata is an error, never a wrong shape.

Examples
--------
>>> group = {"zarr_format": 3, "node_type": "group", "attributes": {}}
>>> level = {"zarr_format": 3, "node_type": "array", "shape": [2, 8, 8]}
>>> merged = with_consolidated(group, {"0": level})
>>> consolidated_levels(merged, ["0"]) == {"0": level}
True
>>> consolidated_levels(merged, ["0", "1"]) is None  # does not cover level 1: read the levels
True
>>> consolidated_problems(merged, {"0": dict(level, shape=[2, 4, 4])})
[('0', 'shape')]
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "CONSOLIDATED_KEY",
    "consolidated_levels",
    "consolidated_problems",
    "encode_json",
    "with_consolidated",
]

#: The key of the group ``zarr.json`` that holds the consolidated metadata (zarr-python 3's spelling).
CONSOLIDATED_KEY = "consolidated_metadata"


def with_consolidated(group: Mapping[str, Any], levels: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """A copy of the group's ``zarr.json`` content with ``levels`` (level path -> its ``zarr.json``) consolidated.

    The same structure as ``zarr.consolidate_metadata`` writes (inline, ``must_understand: false``),
    so zarr-python reads it too (``zarr.open_consolidated``).
    """
    out = {k: copy.deepcopy(v) for k, v in group.items() if k != CONSOLIDATED_KEY}
    out[CONSOLIDATED_KEY] = {
        "kind": "inline",
        "must_understand": False,
        "metadata": {str(path): copy.deepcopy(dict(meta)) for path, meta in levels.items()},
    }
    return out


def _entries(group: Mapping[str, Any]) -> Mapping[str, Any] | None:
    block = group.get(CONSOLIDATED_KEY)
    if not isinstance(block, Mapping) or block.get("kind", "inline") != "inline":
        return None
    entries = block.get("metadata")
    return entries if isinstance(entries, Mapping) else None


def consolidated_levels(group: Mapping[str, Any], level_paths: Sequence[str]) -> dict[str, dict[str, Any]] | None:
    """The consolidated ``zarr.json`` of each of ``level_paths``, or None when they are not all there.

    None (read each level's own ``zarr.json``) when the group has no consolidated metadata, or it
    lacks a level, or an entry is not a Zarr v3 array: a reader then takes the path it takes for
    cohorts written by other tools.
    """
    entries = _entries(group)
    if entries is None or not level_paths:
        return None
    out: dict[str, dict[str, Any]] = {}
    for path in level_paths:
        entry = entries.get(str(path))
        if not isinstance(entry, Mapping) or entry.get("zarr_format") != 3 or entry.get("node_type") != "array":
            return None
        out[str(path)] = dict(entry)
    return out


def consolidated_problems(group: Mapping[str, Any], levels: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, str]]:
    """Where the group's consolidated metadata disagrees with the levels' own ``zarr.json``: ``(level, key)`` pairs.

    ``levels`` maps each level path to the content of its own ``zarr.json``. A level that the
    consolidated metadata lacks is reported with key ``"(missing)"``, a key that differs by its name.
    Empty when the group has no consolidated metadata (it is optional) or when everything agrees.
    """
    entries = _entries(group)
    if entries is None:
        return []
    problems: list[tuple[str, str]] = []
    for path, own in levels.items():
        entry = entries.get(str(path))
        if not isinstance(entry, Mapping):
            problems.append((str(path), "(missing)"))
            continue
        for key in sorted(set(entry) | set(own)):
            if entry.get(key) != own.get(key):
                problems.append((str(path), key))
    return problems


def encode_json(content: Mapping[str, Any]) -> bytes:
    """``zarr.json`` bytes as zarr-python writes them (2-space indent, UTF-8)."""
    return json.dumps(content, indent=2, ensure_ascii=False, allow_nan=True).encode()
