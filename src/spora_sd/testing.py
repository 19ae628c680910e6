"""Assertions for tests of code that writes spora cohorts or SpatialData objects.

Shipped with the package, as :mod:`spatialdata.testing` and anndata's ``assert_equal`` are, so that
a pipeline built on spora-sd can check its output in its own tests:

- :func:`assert_cohorts_equal` compares two cohort folders file by file: the same set of files and
  folders, every table equal (pandas' testing), every mask equal (dtype, shape, labels), every image
  equal level by level (dtype, shape, pixels read chunk by chunk, and the Zarr metadata).
- :func:`assert_sdata_equal` compares two SpatialData objects: element names per kind, coordinate
  systems, element values, transformations, tables and ``attrs``.

Both raise :class:`AssertionError` with one line per difference, each naming the file or element.
Nothing is ignored: a file of an unknown kind is compared byte for byte.

Examples
--------
>>> import pathlib, shutil, tempfile
>>> import pandas as pd
>>> import spora_sd
>>> from spora_sd.testing import assert_cohorts_equal
>>> tmp = pathlib.Path(tempfile.mkdtemp())
>>> a = spora_sd.make_synthetic_cohort(tmp / "a", n_tissues=1, image_size=32, n_cells=4)
>>> b = shutil.copytree(a, tmp / "b" / a.name)
>>> assert_cohorts_equal(a, b)
>>> tissues = pd.read_parquet(b / "metadata/tissues.parquet")
>>> tissues.loc[0, "age"] += 1
>>> tissues.to_parquet(b / "metadata/tissues.parquet")
>>> assert_cohorts_equal(a, b)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
AssertionError: cohorts differ (1 difference): .../a/synthetic2025cohort vs .../b/synthetic2025cohort
  metadata/tissues.parquet: ...
"""

from __future__ import annotations

import filecmp
import itertools
import json
import math
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from spora_sd import layout

if TYPE_CHECKING:
    from spatialdata import SpatialData

    from spora_sd.io.cohort import Cohort

__all__ = ["assert_cohorts_equal", "assert_sdata_equal"]

#: Largest block of an image level read at once when comparing pixels (per cohort).
BLOCK_BYTES = 64 * 2**20
#: Differences listed per message before "... and N more".
MAX_SHOWN = 50

_ZARR_JSON = "zarr.json"


# --------------------------------------------------------------------------------------------------
# cohorts


def assert_cohorts_equal(
    a: str | os.PathLike[str] | Cohort,
    b: str | os.PathLike[str] | Cohort,
    *,
    check_zarr_metadata: bool = True,
) -> None:
    """Assert that two spora cohort folders hold the same files with equal content.

    Every file and folder is compared; only the content manifest (``metadata/manifest.json``, a
    checksum of each file, which differs whenever a table's bytes differ) is skipped:

    - the same set of files and folders (an image, ``<tissue>.ome.zarr``, counts as one entry);
    - Parquet tables (``tissues``, ``cells``, ``channels``, ``channels_per_tissue``, standardization,
      tiling, label encoders, ...) with :func:`pandas.testing.assert_frame_equal`: columns, their
      order, dtypes, category order, index and values;
    - ``.npz`` masks: dtype, shape and every label;
    - OME-Zarr images: the same Zarr nodes (levels), each level's dtype, shape and pixels, read block
      by block (never a whole image at once); with ``check_zarr_metadata`` also every ``zarr.json``
      (chunks, shards, codecs, OME attributes);
    - any other file byte for byte.

    Parameters
    ----------
    a, b
        Cohort folders (or opened :class:`~spora_sd.Cohort` objects).
    check_zarr_metadata
        Also require equal ``zarr.json`` files in the images. Turn off to compare pixels only (e.g.
        an image rewritten with other chunks or codecs).

    Raises
    ------
    AssertionError
        Listing every difference, one per line, each starting with the file's path relative to the
        cohort roots.

    Examples
    --------
    >>> import pathlib, shutil, tempfile
    >>> import spora_sd
    >>> from spora_sd.testing import assert_cohorts_equal
    >>> tmp = pathlib.Path(tempfile.mkdtemp())
    >>> a = spora_sd.make_synthetic_cohort(tmp / "a", n_tissues=1, image_size=32, n_cells=4, tiling=False)
    >>> b = shutil.copytree(a, tmp / "b" / a.name)
    >>> assert_cohorts_equal(a, b)
    >>> shutil.rmtree(b / "segmentations/1_0mpp/cell_masks/cell_types")
    >>> try:
    ...     assert_cohorts_equal(a, b)
    ... except AssertionError as error:
    ...     print(str(error).splitlines()[1])
      segmentations/1_0mpp/cell_masks/cell_types: only in the first cohort
    """
    root_a, root_b = _root(a), _root(b)
    problems: list[str] = []
    for root in (root_a, root_b):
        if not root.is_dir():
            raise AssertionError(f"{root}: not a cohort folder (no such directory)")
    entries_a, entries_b = _entries(root_a), _entries(root_b)
    problems += _only_in(entries_a, entries_b, "the first cohort")
    problems += _only_in(entries_b, entries_a, "the second cohort")
    for rel in sorted(entries_a.keys() & entries_b.keys()):
        kind_a, kind_b = entries_a[rel], entries_b[rel]
        if kind_a != kind_b:
            problems.append(f"{rel}: a {kind_a} in the first cohort, a {kind_b} in the second")
            continue
        x, y = root_a / rel, root_b / rel
        if kind_a == "folder":
            continue
        if kind_a == "image":
            problems += _compare_image(rel, x, y, check_zarr_metadata=check_zarr_metadata)
        elif rel.endswith(layout.TABLE_SUFFIX):
            problems += _compare_table(rel, x, y)
        elif rel.endswith(layout.MASK_SUFFIX):
            problems += _compare_mask(rel, x, y)
        elif not filecmp.cmp(x, y, shallow=False):
            problems.append(f"{rel}: contents differ (compared byte for byte)")
    _raise(problems, "cohorts differ", f": {root_a} vs {root_b}")


def _root(cohort: Any) -> Path:
    path = getattr(cohort, "path", cohort)  # a Cohort, or a path
    return Path(os.fspath(path)).expanduser()


def _entries(root: Path) -> dict[str, str]:
    """``relative path -> "file" | "folder" | "image"``; an OME-Zarr image is one entry."""
    out: dict[str, str] = {}
    manifest = layout.CohortPaths(root).manifest
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        for name in list(dirnames):
            rel = (here / name).relative_to(root).as_posix()
            if name.endswith(layout.IMAGE_SUFFIX):
                out[rel] = "image"
                dirnames.remove(name)  # its inside is compared as Zarr nodes, not as files
            else:
                out[rel] = "folder"
        for name in filenames:
            if here / name != manifest:
                out[(here / name).relative_to(root).as_posix()] = "file"
    return out


def _only_in(these: Mapping[str, str], others: Mapping[str, str], where: str) -> list[str]:
    """Entries missing from ``others``; below a missing folder, only the folder is named."""
    out, missing_dirs = [], []
    for rel in sorted(these.keys() - others.keys()):
        if any(rel.startswith(f"{d}/") for d in missing_dirs):
            continue
        out.append(f"{rel}: only in {where}")
        if these[rel] == "folder":
            missing_dirs.append(rel)
    return out


def _compare_table(rel: str, x: Path, y: Path) -> list[str]:
    try:
        pd.testing.assert_frame_equal(pd.read_parquet(x), pd.read_parquet(y), obj=rel)
    except AssertionError as error:
        return [f"{rel}: {_indent(str(error).strip())}"]
    return []


def _compare_mask(rel: str, x: Path, y: Path) -> list[str]:
    from spora_sd.io.masks import read_mask

    u, v = read_mask(x), read_mask(y)
    header = _header_difference(u.dtype, u.shape, v.dtype, v.shape)
    if header:
        return [f"{rel}: {header}"]
    diff = _BlockDiff()
    diff.add((0, 0), u, v)
    return [f"{rel}: {diff.describe(u.size, 'labels')}"] if diff.count else []


def _compare_image(rel: str, x: Path, y: Path, *, check_zarr_metadata: bool) -> list[str]:
    nodes_x, nodes_y = _zarr_nodes(x), _zarr_nodes(y)
    problems = []
    for only, where in ((nodes_x.keys() - nodes_y.keys(), "first"), (nodes_y.keys() - nodes_x.keys(), "second")):
        problems += [f"{rel}/{node}: Zarr node only in the {where} cohort" for node in sorted(only)]
    for node in sorted(nodes_x.keys() & nodes_y.keys()):
        meta_x, meta_y = nodes_x[node], nodes_y[node]
        where = f"{rel}/{node}" if node else rel
        if meta_x.get("node_type") != meta_y.get("node_type"):
            problems.append(
                f"{where}: a Zarr {meta_x.get('node_type')} in the first cohort, "
                f"a Zarr {meta_y.get('node_type')} in the second"
            )
            continue
        if check_zarr_metadata and meta_x != meta_y:
            problems.append(f"{where}/{_ZARR_JSON}: {_dict_difference(meta_x, meta_y)}")
        if meta_x.get("node_type") == "array":
            problems += _compare_level(where, x / node, y / node)
    # anything else in the store (not metadata, not inside an array's chunks) is compared as a file
    other_x, other_y = _other_files(x, nodes_x), _other_files(y, nodes_y)
    for only, where in ((other_x - other_y, "first"), (other_y - other_x, "second")):
        problems += [f"{rel}/{name}: only in the {where} cohort" for name in sorted(only)]
    for name in sorted(other_x & other_y):
        if not filecmp.cmp(x / name, y / name, shallow=False):
            problems.append(f"{rel}/{name}: contents differ (compared byte for byte)")
    return problems


def _other_files(path: Path, nodes: Mapping[str, dict]) -> set[str]:
    """Files of a Zarr store that are neither a ``zarr.json`` nor inside an array (its chunks)."""
    arrays = [Path(path, node) for node, meta in nodes.items() if meta.get("node_type") == "array"]
    out = set()
    for file in path.rglob("*"):
        if file.name == _ZARR_JSON or not file.is_file() or any(a in file.parents for a in arrays):
            continue
        out.add(file.relative_to(path).as_posix())
    return out


def _zarr_nodes(path: Path) -> dict[str, dict]:
    """Every Zarr node (group or array) of a store: ``relative path -> parsed zarr.json``."""
    out = {}
    for meta_file in sorted(path.rglob(_ZARR_JSON)):
        node = meta_file.parent.relative_to(path).as_posix()
        try:
            out["" if node == "." else node] = json.loads(meta_file.read_text())
        except (OSError, ValueError) as error:
            out["" if node == "." else node] = {"node_type": f"unreadable ({error})"}
    return out


def _compare_level(where: str, x: Path, y: Path) -> list[str]:
    import zarr

    u, v = zarr.open_array(x, mode="r"), zarr.open_array(y, mode="r")
    header = _header_difference(u.dtype, u.shape, v.dtype, v.shape)
    if header:
        return [f"{where}: {header}"]
    diff = _BlockDiff()
    for block in _blocks(u.shape, u.chunks, u.dtype.itemsize):
        diff.add(tuple(s.start for s in block), u[block], v[block])
    return [f"{where}: {diff.describe(math.prod(u.shape), 'pixels')}"] if diff.count else []


def _blocks(shape: tuple[int, ...], chunks: tuple[int, ...], itemsize: int) -> Iterator[tuple[slice, ...]]:
    """Chunk-aligned blocks covering an array, each at most :data:`BLOCK_BYTES` (or one chunk)."""
    block = [max(1, int(c)) for c in chunks]
    for axis in reversed(range(len(shape))):  # grow along the last axes first: rows of whole chunks
        while block[axis] < shape[axis] and math.prod(block) * 2 * itemsize <= BLOCK_BYTES:
            block[axis] *= 2
    starts = [range(0, n, b) for n, b in zip(shape, block, strict=True)]
    for origin in itertools.product(*starts):
        yield tuple(slice(o, min(o + b, n)) for o, b, n in zip(origin, block, shape, strict=True))


class _BlockDiff:
    """Counts differing elements over blocks and remembers the first one."""

    def __init__(self) -> None:
        self.count = 0
        self.first: tuple[tuple[int, ...], Any, Any] | None = None

    def add(self, origin: tuple[int, ...], u: np.ndarray, v: np.ndarray) -> None:
        u, v = np.asarray(u), np.asarray(v)
        differ = u != v
        if u.dtype.kind in "fc":
            differ &= ~(np.isnan(u) & np.isnan(v))
        n = int(np.count_nonzero(differ))
        if n and self.first is None:
            index = tuple(int(i) for i in np.unravel_index(int(np.argmax(differ)), differ.shape))
            self.first = (tuple(o + i for o, i in zip(origin, index, strict=True)), u[index].item(), v[index].item())
        self.count += n

    def describe(self, size: int, what: str) -> str:
        assert self.first is not None
        at, left, right = self.first
        return f"{self.count} of {size} {what} differ; first at {at}: {left!r} != {right!r}"


def _header_difference(dtype_a: Any, shape_a: tuple, dtype_b: Any, shape_b: tuple) -> str | None:
    parts = []
    if np.dtype(dtype_a) != np.dtype(dtype_b):
        parts.append(f"dtype {np.dtype(dtype_a)} != {np.dtype(dtype_b)}")
    if tuple(shape_a) != tuple(shape_b):
        parts.append(f"shape {tuple(shape_a)} != {tuple(shape_b)}")
    return "; ".join(parts) or None


# --------------------------------------------------------------------------------------------------
# SpatialData

_KINDS = ("images", "labels", "points", "shapes", "tables")


def assert_sdata_equal(a: SpatialData, b: SpatialData, *, check_transformations: bool = True) -> None:
    """Assert that two SpatialData objects hold the same elements, values, transformations and attrs.

    - the same element names per kind (images, labels, points, shapes, tables) and the same
      coordinate systems;
    - each element equal with :func:`spatialdata.testing.assert_elements_are_identical` (xarray's
      equality for images and labels, computed chunk by chunk; geopandas' and dask's for shapes and
      points; anndata's for tables, whose ``obs_names``/``var_names`` are compared as strings when
      their dtypes differ: pandas 3 reads an object index back with its string dtype);
    - with ``check_transformations``, each element's transformations to the same coordinate systems,
      compared as affine matrices over its spatial axes: after a round trip through Zarr,
      spatialdata writes an image's ``Scale`` over ``(y, x)`` as one over ``(c, y, x)``, which its own
      ``==`` calls different although both map pixels to the same place;
    - ``attrs`` equal, the message naming the first differing key.

    Raises
    ------
    AssertionError
        Listing every difference, one per line, each naming the element (``images/<name>``) or key.

    Examples
    --------
    >>> import numpy as np
    >>> import spatialdata as sd
    >>> from spatialdata.models import Image2DModel
    >>> from spora_sd.testing import assert_sdata_equal
    >>> def make(value):
    ...     image = Image2DModel.parse(np.full((1, 4, 4), value, "uint8"), dims=("c", "y", "x"))
    ...     return sd.SpatialData(images={"x_image": image}, attrs={"spora": {"version": 1}})
    >>> assert_sdata_equal(make(1), make(1))
    >>> try:
    ...     assert_sdata_equal(make(1), make(2))
    ... except AssertionError as error:
    ...     print(str(error).splitlines()[1].split(":")[0])
      images/x_image
    """
    problems: list[str] = []
    names: dict[str, list[str]] = {}
    for kind in _KINDS:
        in_a, in_b = set(getattr(a, kind)), set(getattr(b, kind))
        for only, where in ((in_a - in_b, "first"), (in_b - in_a, "second")):
            problems += [f"{kind}/{name}: only in the {where} SpatialData" for name in sorted(only)]
        names[kind] = sorted(in_a & in_b)
    systems_a, systems_b = set(a.coordinate_systems), set(b.coordinate_systems)
    if systems_a != systems_b:
        problems.append(
            f"coordinate systems: only in the first {sorted(systems_a - systems_b)}, "
            f"only in the second {sorted(systems_b - systems_a)}"
        )
    for kind, kind_names in names.items():
        for name in kind_names:
            problems += _compare_element(f"{kind}/{name}", getattr(a, kind)[name], getattr(b, kind)[name])
            if check_transformations and kind != "tables":
                problems += _compare_transformations(f"{kind}/{name}", getattr(a, kind)[name], getattr(b, kind)[name])
    if not _equal(dict(a.attrs), dict(b.attrs)):
        problems.append(f"attrs: {_dict_difference(dict(a.attrs), dict(b.attrs))}")
    _raise(problems, "SpatialData objects differ")


def _compare_element(where: str, x: Any, y: Any) -> list[str]:
    from anndata import AnnData
    from spatialdata.testing import assert_elements_are_identical

    if type(x) is not type(y):
        return [f"{where}: a {type(x).__name__} in the first, a {type(y).__name__} in the second"]
    if isinstance(x, AnnData):
        x, y = _same_index_dtype(x, y)
    try:
        assert_elements_are_identical(x, y, check_transformations=False)
    except AssertionError as error:
        return [f"{where}: {_indent(str(error).strip() or 'values differ')}"]
    return []


def _same_index_dtype(x: Any, y: Any) -> tuple[Any, Any]:
    """Copies with ``obs_names`` and ``var_names`` as strings, when their dtypes differ."""
    if x.obs_names.dtype == y.obs_names.dtype and x.var_names.dtype == y.var_names.dtype:
        return x, y
    out = []
    for table in (x, y):
        table = table.copy()
        table.obs_names = table.obs_names.astype(str)
        table.var_names = table.var_names.astype(str)
        out.append(table)
    return out[0], out[1]


def _compare_transformations(where: str, x: Any, y: Any) -> list[str]:
    from spatialdata.models import get_axes_names
    from spatialdata.transformations import get_transformation

    tx, ty = get_transformation(x, get_all=True), get_transformation(y, get_all=True)
    if tx.keys() != ty.keys():
        return [f"{where}: transformations to {sorted(tx)} in the first, to {sorted(ty)} in the second"]
    axes = tuple(ax for ax in ("x", "y", "z") if ax in get_axes_names(x))
    problems = []
    for system in sorted(tx):
        mx = tx[system].to_affine_matrix(input_axes=axes, output_axes=axes)
        my = ty[system].to_affine_matrix(input_axes=axes, output_axes=axes)
        if not np.array_equal(mx, my):
            problems.append(
                f"{where}: transformation to {system!r} differs over {axes}: "
                f"{mx.tolist()} != {my.tolist()} ({tx[system]!r} vs {ty[system]!r})"
            )
    return problems


# --------------------------------------------------------------------------------------------------
# messages


def _dict_difference(x: Any, y: Any, path: str = "") -> str:
    """The first difference between two nested JSON-like values, named by its key path."""
    if isinstance(x, Mapping) and isinstance(y, Mapping):
        only_x, only_y = sorted(map(str, x.keys() - y.keys())), sorted(map(str, y.keys() - x.keys()))
        if only_x or only_y:
            return f"{path or 'keys'}: only in the first {only_x}, only in the second {only_y}"
        for key in sorted(x, key=str):
            if not _equal(x[key], y[key]):
                return _dict_difference(x[key], y[key], f"{path}[{key!r}]")
        return f"{path or 'values'}: equal keys, but values compare unequal"
    if isinstance(x, list | tuple) and isinstance(y, list | tuple) and len(x) == len(y):
        for i, (u, v) in enumerate(zip(x, y, strict=True)):
            if not _equal(u, v):
                return _dict_difference(u, v, f"{path}[{i}]")
    return f"{path or 'value'}: {_short(x)} != {_short(y)}"


def _equal(x: Any, y: Any) -> bool:
    if isinstance(x, Mapping) and isinstance(y, Mapping):
        return x.keys() == y.keys() and all(_equal(x[k], y[k]) for k in x)
    if isinstance(x, list | tuple) and isinstance(y, list | tuple):
        return type(x) is type(y) and len(x) == len(y) and all(_equal(u, v) for u, v in zip(x, y, strict=True))
    if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
        return bool(np.array_equal(np.asarray(x), np.asarray(y)))
    try:
        return bool(x == y)
    except (TypeError, ValueError):  # e.g. an ambiguous truth value inside a container
        return False


def _short(value: Any, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}..."


def _indent(text: str) -> str:
    return "\n    ".join(line for line in text.splitlines() if line.strip())


def _raise(problems: list[str], what: str, where: str = "") -> None:
    if not problems:
        return
    n = len(problems)
    shown = problems[:MAX_SHOWN] + ([f"... and {n - MAX_SHOWN} more"] if n > MAX_SHOWN else [])
    header = f"{what} ({n} difference{'s' if n != 1 else ''}){where}"
    raise AssertionError("\n".join([header, *(f"  {p}" for p in shown)]))
