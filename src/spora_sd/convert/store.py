"""Write a SpatialData object to a Zarr store in time linear in its number of elements.

``SpatialData.write`` grows about quadratically with the number of elements (scverse/spatialdata#938).
Before each element, ``write_element`` checks that no element of that name is on disk with another
type (``_check_element_not_on_disk_with_different_type``), by listing every element group already
in the store (``elements_paths_on_disk``): the k-th element pays a listing of k - 1 groups. ome-zarr
also reads and rewrites the ``labels`` group's list of names for each labels element. Measured
(cProfile) on a 200-tissue cohort (802 elements): the listings took 71 s of a 127 s write
(800 calls iterating 326,396 group members in all); the k-th ``_write_element`` also slowed from
43 ms (50 tissues) to 58 ms.

:func:`write_spatialdata` writes the same format, with a constant cost per element:

- every group and array of the store is created, with its final metadata, in one concurrent
  ``zarr.create_hierarchy`` call (creating nodes one by one costs a few ms each); the ``labels``
  group's list of names is written once;
- the root attributes with spatialdata's ``write_attrs``; points and shapes with spatialdata's own
  element writers (``spatialdata._io``); tables with anndata's writer as spatialdata calls it,
  except that long string arrays (the obs names) are written one chunk at a time (given the whole
  array, Zarr encodes all its chunks at once, about 140 bytes per name over the names themselves);
- images and labels: each element group's attributes (OME-NGFF multiscales, omero channels,
  image-label, coordinate transformations, ``spatialdata_attrs``) are built from spatialdata's and
  ome-zarr's own format objects; each pyramid level is created with the *storage layout of its
  source*: an element read lazily from a Zarr v3 array (a spora cohort's images, a store opened with
  ``spatialdata.read_zarr``) keeps that array's chunks, sharding and codecs; any other gets its dask
  chunks as Zarr chunks and Zarr's default codecs, as spatialdata writes it;
- the pixels of every image and labels element are written by dask in a few large batches (one task
  per block, each block covering whole shards so that no shard is written by two tasks), in
  parallel on dask's default scheduler, or on the active ``dask.distributed`` client;
- the metadata is consolidated once, at the end, from the nodes' own ``zarr.json`` files read one
  at a time: the root ``zarr.json`` that ``zarr.consolidate_metadata`` writes, without holding
  every node's parsed metadata at once (about 250 MB less at 2,000 tissues).

Measured with ``benchmarks/bench_scale.py`` (``docs/benchmarks.md``, "Scale"): 7.4 s for 802
elements, 27.5 s for 3,202 and 83.5 s for 8,002 (``SpatialData.write_element`` per element: 143 s
and 1,861 s for the first two), and 0.63x a raw ``zarr`` write plus ``anndata.write_zarr`` of the
same arrays and tables at 3,202 elements.

The store is built under a temporary name next to the target and renamed when complete
(:func:`spora_sd.io.atomic.atomic_path`). ``tests/convert/test_store.py`` checks that every group's
attributes equal what ``SpatialData.write`` writes (on the installed spatialdata) and that
``spatialdata.read_zarr`` reads the store back equal to the object written.
"""

from __future__ import annotations

import copy
import functools
import itertools
import json
import logging
import os
import unicodedata
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dask
import dask.array as da
import numpy as np

from spora_sd.errors import InvalidArgumentError
from spora_sd.io.atomic import atomic_path
from spora_sd.io.consolidated import CONSOLIDATED_KEY, with_consolidated

if TYPE_CHECKING:
    import zarr
    from spatialdata import SpatialData
    from zarr.core.metadata import ArrayV3Metadata

__all__ = ["write_spatialdata"]

logger = logging.getLogger(__name__)

#: Images and labels whose pixels are written by one dask computation (the progress bar moves per batch).
BATCH_ELEMENTS = 256
#: Strings per chunk of a table's string arrays (obs names), each chunk written on its own.
STRING_CHUNK = 1 << 18


@dataclass
class _Level:
    """One pyramid level to write: its lazy pixels (blocks aligned to the target's shards) and its array."""

    source: da.Array
    target: zarr.Array


# --------------------------------------------------------------------------------------------------
# tables


def _chunked_strings(write: Any, group: Any, key: str, elem: Any, *, iospec: Any, dataset_kwargs: Any) -> None:
    """anndata's writer, except that a long string array (the obs names) is written one chunk at a time.

    Given the whole array, Zarr encodes every chunk at once: about 140 bytes per name over the array
    itself (330 MB for 2.4 M obs names), where one chunk at a time costs a chunk. anndata creates
    the array (empty, with its encoding attributes), which then grows chunk by chunk.
    """
    if iospec.encoding_type != "string-array" or getattr(elem, "ndim", 1) != 1 or len(elem) <= STRING_CHUNK:
        write(group, key, elem, dataset_kwargs=dataset_kwargs)
        return
    write(group, key, elem[:0], dataset_kwargs={**dataset_kwargs, "chunks": (STRING_CHUNK,)})
    array = group[key]
    array.resize((len(elem),))
    for start in range(0, len(elem), STRING_CHUNK):
        array[start : start + STRING_CHUNK] = np.asarray(elem[start : start + STRING_CHUNK], dtype=object)


def _write_table(table: Any, group: zarr.Group, name: str, element_format: Any) -> None:
    """``spatialdata._io.write_table`` (the same group and attributes), with :func:`_chunked_strings`."""
    from anndata.experimental import write_dispatched
    from spatialdata.models import TableModel, get_table_keys

    region = region_key = instance_key = None
    if TableModel.ATTRS_KEY in table.uns:
        region, region_key, instance_key = get_table_keys(table)
        TableModel.validate(table)
    write_dispatched(group, name, table, callback=_chunked_strings)
    group[name].attrs.update(
        {
            "spatialdata-encoding-type": "ngff:regions_table",
            "region": region,
            "region_key": region_key,
            "instance_key": instance_key,
            "version": element_format.spatialdata_format_version,
        }
    )


# --------------------------------------------------------------------------------------------------
# storage layout


def _zarr_source(data: da.Array) -> zarr.Array | None:
    """The Zarr array ``data`` reads, when it reads exactly one of its shape, else None.

    ``da.from_array(x, inline_array=True)`` puts ``x`` in the arguments of its ``Blockwise`` layer
    (spora's ``open_image_levels``, where ``x`` wraps the Zarr array in ``x.array``); the default
    (``da.from_zarr`` in ``spatialdata.read_zarr``) in a one-key layer of its own. Only those two places
    are looked at, so this costs one pass over the layers, not over the tasks.
    """
    import zarr

    def unwrap(value: Any) -> zarr.Array | None:
        # a dask DataNode holds its object in .value; an array-like over Zarr (spora's CheckedLevel) in .array
        for _ in range(3):
            if isinstance(value, zarr.Array):
                return value
            value = getattr(value, "array", None) if hasattr(value, "array") else getattr(value, "value", None)
        return None

    found: dict[int, zarr.Array] = {}
    for layer in data.dask.layers.values():
        indices = getattr(layer, "indices", None)
        values = [v for v, index in indices if index is None] if indices is not None else []
        if indices is None and len(layer) == 1:
            values = list(layer.values())
        for value in values:
            array = unwrap(value)
            if array is not None:
                found[id(array)] = array
    same = [a for a in found.values() if tuple(a.shape) == tuple(data.shape)]
    return same[0] if len(same) == 1 else None


@functools.lru_cache(maxsize=64)
def _default_metadata(dtype: str, ndim: int) -> dict[str, Any]:
    """Zarr's own metadata for a new unsharded array of ``dtype`` (default codecs), as a dict."""
    import zarr

    shape = (1,) * ndim
    return zarr.create_array(
        zarr.storage.MemoryStore(), shape=shape, chunks=shape, dtype=dtype, fill_value=0
    ).metadata.to_dict()


def _array_metadata(data: da.Array, dims: Sequence[str]) -> ArrayV3Metadata:
    """The metadata of the array to write ``data`` to.

    Read from a Zarr v3 array of the same dtype: that array's metadata (chunks, shards, codecs, fill
    value). Read from anything else: Zarr's defaults (spatialdata's codecs) with the dask chunks as Zarr
    chunks (the largest block of each axis), as spatialdata writes it.
    """
    from zarr.core.metadata import ArrayV3Metadata

    source = _zarr_source(data)
    if source is not None and source.metadata.zarr_format == 3 and source.dtype == data.dtype:
        meta = source.metadata.to_dict()
    else:
        chunks = tuple(source.chunks) if source is not None else tuple(int(c) for c in data.chunksize)
        meta = copy.deepcopy(_default_metadata(str(data.dtype), data.ndim))
        meta["chunk_grid"] = {"name": "regular", "configuration": {"chunk_shape": chunks}}
    meta.update(shape=tuple(int(s) for s in data.shape), attributes={}, dimension_names=tuple(dims))
    return ArrayV3Metadata.from_dict(meta)


def _aligned(data: da.Array, block: Sequence[int]) -> da.Array:
    """``data`` with every dask block covering whole ``block``\\ s (shards, or chunks), rechunked only if needed.

    Two tasks writing parts of one shard (or chunk) would each read, merge and rewrite it: without a
    lock one write is lost. A misaligned axis gets blocks of the largest multiple of ``block`` that
    is not larger than its largest block (at least one ``block``).

    >>> import dask.array as da
    >>> _aligned(da.zeros((2, 600), chunks=(2, 512)), (2, 256)).chunks
    ((2,), (512, 88))
    >>> _aligned(da.zeros((2, 600), chunks=(2, 300)), (2, 256)).chunks
    ((2,), (256, 256, 88))
    """
    target: list[int | tuple[int, ...]] = []
    for sizes, b in zip(data.chunks, block, strict=True):
        ends = list(itertools.accumulate(sizes))[:-1]
        target.append(tuple(sizes) if all(e % b == 0 for e in ends) else max(b, (max(sizes) // b) * b))
    if all(isinstance(t, tuple) for t in target):
        return data
    return data.rechunk(tuple(target))


# --------------------------------------------------------------------------------------------------
# raster metadata (the format of spatialdata's write_image / write_labels)


def _levels(element: Any) -> list[Any]:
    """The ``DataArray`` of each pyramid level (one for a single-scale element)."""
    from spatialdata._utils import get_pyramid_levels
    from xarray import DataTree

    return get_pyramid_levels(element) if isinstance(element, DataTree) else [element]


def _raster_attrs(kind: str, name: str, element: Any, levels: Sequence[Any], raster_format: Any) -> dict[str, Any]:
    """The attributes spatialdata gives an image or labels element group (``zarr.json``)."""
    from ome_zarr.writer import _get_valid_axes
    from spatialdata._io.format import get_ome_zarr_format
    from spatialdata.models import get_channel_names
    from spatialdata.transformations import get_transformation
    from spatialdata.transformations.transformations import _get_current_output_axes

    fmt = get_ome_zarr_format(raster_format)
    dims = tuple(str(d) for d in levels[0].dims)
    shapes = [tuple(int(s) for s in level.shape) for level in levels]
    per_level = fmt.generate_coordinate_transformations(shapes)
    fmt.validate_coordinate_transformations(len(dims), len(shapes), per_level)
    transformations = get_transformation(element, get_all=True)
    if not transformations:
        raise InvalidArgumentError(f"{kind} element {name!r} has no transformation and cannot be written")
    multiscale = {
        "datasets": [{"path": f"s{i}", "coordinateTransformations": t} for i, t in enumerate(per_level)],
        # ome-zarr names an image by its group path, labels by the element name
        "name": f"/{kind}/{name}" if kind == "images" else name,
        "axes": _get_valid_axes(axes=list(dims), fmt=fmt),
        "coordinateTransformations": [
            t.to_ngff(
                input_axes=dims,
                output_axes=tuple(_get_current_output_axes(transformation=t, input_axes=dims)),
                output_coordinate_system_name=system,
            ).to_dict()
            for system, t in transformations.items()
        ],
    }
    ome: dict[str, Any] = {"version": raster_format.version, "multiscales": [multiscale]}
    if kind == "images":
        ome["omero"] = {"channels": [{"label": c} for c in get_channel_names(element)]}
    else:
        ome["image-label"] = {"version": fmt.version}
    return {"ome": ome, "spatialdata_attrs": {"version": raster_format.spatialdata_format_version}}


def _raster_nodes(kind: str, name: str, element: Any, raster_format: Any) -> tuple[dict[str, Any], list[da.Array]]:
    """The Zarr nodes of an image or labels element (its group with its metadata, one array per level),
    and the lazy pixels of each level (an in-memory element becomes one dask block per level)."""
    from zarr.core.group import GroupMetadata

    levels = _levels(element)
    nodes: dict[str, Any] = {
        f"{kind}/{name}": GroupMetadata(attributes=_raster_attrs(kind, name, element, levels, raster_format))
    }
    pixels = [lv.data if isinstance(lv.data, da.Array) else da.from_array(lv.data) for lv in levels]
    for i, (level, data) in enumerate(zip(levels, pixels, strict=True)):
        nodes[f"{kind}/{name}/s{i}"] = _array_metadata(data, [str(d) for d in level.dims])
    return nodes, pixels


# --------------------------------------------------------------------------------------------------
# pixels


def _write_block(target: zarr.Array, region: tuple[slice, ...], block: Any) -> None:
    target[region] = block


def _store(levels: Sequence[_Level]) -> None:
    """Write the pixels of ``levels`` in one dask computation, on the active distributed client if any.

    One task per source block (``target[region] = block``); its key is made from a random token, so
    nothing is tokenized (``dask.array.store`` tokenizes every Zarr target, which costs more than
    writing a small image).
    """
    from dask.delayed import Delayed

    from spora_sd.stats.parallel import active_client

    if not levels:
        return
    token = uuid.uuid4().hex
    graph: dict[Any, Any] = {}
    writes = []
    for n, level in enumerate(levels):
        source = level.source
        graph.update(source.__dask_graph__())
        name = f"spora-store-{token}-{n}"
        starts = [list(itertools.accumulate((0, *c[:-1]))) for c in source.chunks]
        for index in itertools.product(*(range(len(c)) for c in source.chunks)):
            region = tuple(
                slice(starts[axis][i], starts[axis][i] + source.chunks[axis][i]) for axis, i in enumerate(index)
            )
            graph[(name, *index)] = (_write_block, level.target, region, (source.name, *index))
            writes.append((name, *index))
    done = f"spora-store-done-{token}"
    graph[done] = (len, writes)
    client = active_client()
    dask.compute(Delayed(done, graph), **({"scheduler": client} if client is not None else {}))


# --------------------------------------------------------------------------------------------------
# consolidated metadata


def _node_files(root: Path) -> Iterator[tuple[str, Path]]:
    """``(path, zarr.json)`` of every node under the group at ``root``, parents first, in Zarr's order.

    Zarr's order: by depth, then by case-folded path. A folder without ``zarr.json`` (the Parquet files of points
    and shapes) is no node, and an array's folder holds only chunks: neither is entered.
    """
    level = [("", root)]
    while level:
        found: list[tuple[str, Path]] = []
        for prefix, folder in level:
            for entry in os.scandir(folder):
                if entry.is_dir() and os.path.isfile(os.path.join(entry.path, "zarr.json")):
                    found.append((f"{prefix}{entry.name}", Path(entry.path)))
        found.sort(key=lambda item: (unicodedata.normalize("NFKC", item[0]).casefold(), item[0]))
        yield from ((path, folder / "zarr.json") for path, folder in found)
        groups = []
        for path, folder in found:
            with open(folder / "zarr.json", "rb") as f:
                if json.load(f).get("node_type") == "group":
                    groups.append((f"{path}/", folder))
        level = groups


def _consolidate(root: Path) -> None:
    """Write the consolidated metadata of the Zarr v3 store at ``root`` into its root ``zarr.json``.

    What ``zarr.consolidate_metadata`` writes (``tests/convert/test_store.py`` compares the two),
    built one node at a time from the ``zarr.json`` files the writer produced: each node's metadata as
    written, each group with an empty ``consolidated_metadata`` of its own, keyed by its path. Zarr's
    own opens every node and holds their parsed metadata objects at once (the write's peak RSS is
    about 250 MB lower without it for the 19,000 nodes of a 2,000-tissue cohort); this holds one
    node. The new root ``zarr.json`` is written under a temporary name and renamed.
    """
    indent = " " * 6
    empty = with_consolidated({}, {})[CONSOLIDATED_KEY]  # each group's own, empty block
    head = json.loads((root / "zarr.json").read_bytes())
    head.pop(CONSOLIDATED_KEY, None)
    node_type = head.pop("node_type", "group")
    if head.get("zarr_format") != 3:  # Zarr v2 keeps consolidated metadata in .zmetadata: zarr's own
        import warnings

        import zarr

        with warnings.catch_warnings():
            # Parquet files of points and shapes are not Zarr nodes; spatialdata silences this too.
            warnings.filterwarnings("ignore", category=zarr.errors.ZarrUserWarning)
            zarr.consolidate_metadata(zarr.storage.LocalStore(root))
        return
    tmp = root / f".zarr.json.{uuid.uuid4().hex}"
    with open(tmp, "w", encoding="utf-8") as out:
        out.write(json.dumps(head, indent=2, allow_nan=True)[:-2])
        out.write(',\n  "consolidated_metadata": {\n    "kind": "inline",\n    "must_understand": false,\n')
        out.write('    "metadata": {')
        for n, (path, file) in enumerate(_node_files(root)):
            node = json.loads(file.read_bytes())
            if node.get("node_type") == "group":
                node.pop("node_type")
                node[CONSOLIDATED_KEY] = empty
                node["node_type"] = "group"
            text = json.dumps(node, indent=2, allow_nan=True).replace("\n", "\n" + indent)
            out.write(f"{',' if n else ''}\n{indent}{json.dumps(path)}: {text}")
        out.write(f'\n    }}\n  }},\n  "node_type": {json.dumps(node_type)}\n}}')
    os.replace(tmp, root / "zarr.json")


def write_spatialdata(
    sdata: SpatialData, path: str | os.PathLike[str], *, overwrite: bool = False, progress: bool = False
) -> Path:
    """Write ``sdata`` to a SpatialData Zarr store, atomically, in time linear in its number of elements.

    The store is what ``sdata.write(path)`` writes (``spatialdata.read_zarr`` reads it back equal to
    ``sdata``: elements, transformations, tables and ``attrs``), except that images and labels read
    lazily from Zarr v3 arrays keep those arrays' chunks, sharding and codecs (a spora cohort's images
    stay sharded). Unlike ``sdata.write``, the cost per element does not grow with the number of
    elements already written (scverse/spatialdata#938): see :mod:`spora_sd.convert.store`.

    Pixels are written with dask, in parallel: on the active ``dask.distributed`` client when there
    is one (:func:`spora_sd.stats.parallel.active_client`), else on dask's default scheduler.

    The store is built under a temporary name next to ``path`` and renamed when complete, so an
    interrupted write never leaves a store that looks finished, and an existing store is replaced
    only when the new one is complete.

    Parameters
    ----------
    sdata
        The object to write (e.g. from :func:`spora_sd.to_spatialdata`).
    path
        Target ``.zarr`` folder.
    overwrite
        Replace an existing store (else :class:`~spora_sd.errors.TargetExistsError`, before anything
        is written).
    progress
        Show a progress bar over the elements on stderr.

    Returns
    -------
    Path
        ``path``; ``sdata.path`` is set to it, as :meth:`spatialdata.SpatialData.write` does.

    Raises
    ------
    TargetExistsError
        ``path`` exists and ``overwrite`` is false.
    ValueError
        An element or table key is not a valid SpatialData name (spatialdata's own check).

    Examples
    --------
    >>> import spora_sd, spatialdata, tempfile, pathlib
    >>> root = spora_sd.make_synthetic_cohort(tempfile.mkdtemp(), n_tissues=2, image_size=64, n_cells=5)
    >>> sdata = spora_sd.to_spatialdata(root)
    >>> out = spora_sd.write_spatialdata(sdata, pathlib.Path(tempfile.mkdtemp()) / "cohort.zarr")
    >>> back = spatialdata.read_zarr(out)
    >>> sorted(back.images) == sorted(sdata.images) and sorted(back.tables) == sorted(sdata.tables)
    True
    """
    import zarr
    from spatialdata._io import write_points, write_shapes
    from spatialdata._io.format import _parse_formats
    from zarr.core.group import GroupMetadata

    from spora_sd.stats.parallel import _progress

    target = Path(path)
    sdata._validate_all_elements()  # names and table keys: spatialdata's own checks, one pass
    sdata._validate_element_names_are_unique()
    formats = _parse_formats(None)
    elements = list(sdata.gen_elements())
    # Every group and array of the store, with its final metadata, created in one concurrent call
    # (zarr creates nodes one by one in a few ms each); ome-zarr's list of the labels is written
    # once here, where ome-zarr reads and rewrites it for each labels element.
    nodes: dict[str, Any] = {
        kind: GroupMetadata(attributes={"ome": {"labels": list(sdata.labels)}} if kind == "labels" else {})
        for kind in dict.fromkeys(kind for kind, _, _ in elements)
    }
    rasters: list[tuple[str, list[da.Array]]] = []  # (element path, pixels of each level)
    for kind, name, element in elements:
        if kind in ("images", "labels"):
            element_nodes, pixels = _raster_nodes(kind, name, element, formats["raster"])
            nodes.update(element_nodes)
            rasters.append((f"{kind}/{name}", pixels))
        elif kind in ("points", "shapes"):
            nodes[f"{kind}/{name}"] = GroupMetadata()
    with atomic_path(target, overwrite=overwrite) as tmp:
        store = zarr.storage.LocalStore(tmp)
        root = zarr.create_group(store=store, zarr_format=formats["SpatialData"].zarr_format)
        sdata.write_attrs(sdata_format=formats["SpatialData"], zarr_group=root)
        created = dict(zarr.create_hierarchy(store=store, nodes=nodes))
        with _progress(progress, len(elements), "writing elements") as advance:
            for kind, name, element in elements:
                if kind == "tables":
                    _write_table(element, created[kind], name, formats[kind])
                elif kind == "points":
                    write_points(points=element, group=created[f"{kind}/{name}"], element_format=formats[kind])
                elif kind == "shapes":
                    write_shapes(shapes=element, group=created[f"{kind}/{name}"], element_format=formats[kind])
                else:
                    continue
                advance()
            for start in range(0, len(rasters), BATCH_ELEMENTS):
                batch = rasters[start : start + BATCH_ELEMENTS]
                levels = []
                for element_path, pixels in batch:
                    for i, data in enumerate(pixels):
                        array = created[f"{element_path}/s{i}"]
                        levels.append(_Level(_aligned(data, array.shards or array.chunks), array))
                _store(levels)
                for _ in batch:
                    advance()
        # the 20,000-odd node handles and dask graphs of a large store are not needed to consolidate
        del created, rasters, nodes
        store.close()
        _consolidate(tmp)
    sdata.path = target
    logger.debug("wrote %s (%d elements)", target, len(elements))
    return target
