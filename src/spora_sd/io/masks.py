"""Read and write masks: ``.npz`` files holding one array under the key ``"mask"`` (spec §4, §7).

Masks come from other labs, so they are read with ``allow_pickle=False``: a pickled (object) array is
refused, never executed. The ``.npy`` header is checked before any pixel is allocated: its shape
against :func:`spora_sd.io.limits.max_mask_pixels` (rule ``mask.too_large``) and against the size of
the stored member (a header that declares more data than the file holds is ``mask.unreadable``).

Examples
--------
>>> import numpy as np, tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "m.npz"
>>> _ = write_mask(path, np.eye(3, dtype="uint32"))
>>> read_mask(path).sum()
np.uint64(3)
"""

from __future__ import annotations

import contextlib
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from spora_sd.errors import CohortFormatError, CohortNotFoundError, InvalidArgumentError, SporaError
from spora_sd.io.atomic import atomic_path
from spora_sd.io.limits import check_mask_size
from spora_sd.io.location import as_path
from spora_sd.io.remote import is_local, open_binary, remote_errors
from spora_sd.layout import MASK_KEY

__all__ = ["read_mask", "read_mask_shape", "write_mask"]


def write_mask(path: str | Path, mask: np.ndarray, *, overwrite: bool = True) -> Path:
    """Write a 2-D mask with :func:`numpy.savez_compressed` under the key ``"mask"``, atomically."""
    path = Path(path)
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise InvalidArgumentError(f"{path}: a mask must be 2-D (y, x), got shape {mask.shape}")
    if mask.dtype == object:
        raise InvalidArgumentError(f"{path}: object arrays cannot be stored as masks (they would need pickle)")
    with atomic_path(path, overwrite=overwrite) as tmp, open(tmp, "wb") as fh:
        # A file object, not a name: numpy would otherwise append ".npz" to the temporary name.
        np.savez_compressed(fh, **{MASK_KEY: mask})
    return path


def _as_path(path: Any) -> Any:
    """A local path as :class:`~pathlib.Path`; a remote one (:class:`upath.UPath`) as it is."""
    return as_path(path)


@contextlib.contextmanager
def _file(path: Any) -> Iterator[Any]:
    """The mask file: a local path, or a remote file object whose reads are range requests.

    A zip file's directory is at its end, and each member says where it starts: reading the header of
    a remote mask costs a few small range requests, never the whole file.
    """
    if is_local(path):
        yield path
        return
    try:
        with remote_errors(path):
            fh = open_binary(path)
    except CohortNotFoundError:
        raise CohortNotFoundError(f"{path}: mask not found") from None
    with fh:
        yield fh


@contextlib.contextmanager
def _open(path: Any) -> Iterator[np.lib.npyio.NpzFile]:
    with _file(path) as source:
        try:
            with remote_errors(path):
                npz = np.load(source, allow_pickle=False)
        except SporaError:
            raise
        except FileNotFoundError:
            raise CohortNotFoundError(f"{path}: mask not found") from None
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
            raise CohortFormatError(path, "mask.unreadable", f"not a readable .npz file: {exc}") from None
        with npz:
            yield npz


def read_mask(path: str | Path, *, max_pixels: int | None = None) -> np.ndarray:
    """Read the ``"mask"`` array of an ``.npz`` file, refusing pickled content.

    The header is checked first (:func:`read_mask_shape`): a mask that is not 2-D, holds objects or
    declares more than ``max_pixels`` pixels (default :func:`spora_sd.io.limits.max_mask_pixels`) is
    refused before anything is allocated.
    """
    path = _as_path(path)
    shape, _ = read_mask_shape(path, max_pixels=max_pixels)
    if len(shape) != 2:
        raise CohortFormatError(path, "mask.shape", f"a mask must be 2-D, got shape {shape}")
    with _open(path) as npz:
        if MASK_KEY not in npz.files:
            raise CohortFormatError(path, "mask.key", f"no array under the key 'mask' (keys: {npz.files})")
        try:
            with remote_errors(path):
                mask = npz[MASK_KEY]
        except SporaError:
            raise
        except (OSError, ValueError, zipfile.BadZipFile, zlib.error, EOFError, KeyError) as exc:
            # Object arrays were refused from the header above; a ValueError here is a short or corrupt member.
            raise CohortFormatError(path, "mask.unreadable", f"cannot decompress the mask: {exc}") from None
    if mask.ndim != 2:
        raise CohortFormatError(path, "mask.shape", f"a mask must be 2-D, got shape {mask.shape}")
    return mask


def read_mask_shape(path: str | Path, *, max_pixels: int | None = None) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of a mask from the ``.npy`` header only, without decompressing the pixels.

    Raises
    ------
    CohortFormatError
        ``mask.unreadable`` (not an ``.npz``, or a header that declares more or less data than the
        member holds), ``mask.key``, ``mask.pickled`` (object dtype), ``mask.too_large`` (a 2-D shape
        of more than ``max_pixels`` pixels, default :func:`spora_sd.io.limits.max_mask_pixels`).
    """
    path = _as_path(path)
    try:
        with _file(path) as source, remote_errors(path), zipfile.ZipFile(source) as zf:
            name = f"{MASK_KEY}.npy"
            if name not in zf.namelist():
                raise CohortFormatError(path, "mask.key", f"no array under the key 'mask' (members: {zf.namelist()})")
            stored = zf.getinfo(name).file_size
            with zf.open(name) as fh:
                major, _ = np.lib.format.read_magic(fh)
                read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
                shape, _, dtype = read_header(fh)  # header only: no pixel is decompressed
                header_bytes = fh.tell()
    except SporaError:
        raise  # the rules above, a missing file, a server that fails (RemoteAccessError is an OSError)
    except FileNotFoundError:
        raise CohortNotFoundError(f"{path}: mask not found") from None
    except (OSError, zipfile.BadZipFile, zlib.error, ValueError, EOFError) as exc:
        raise CohortFormatError(path, "mask.unreadable", f"not a readable .npz file: {exc}") from None
    shape = tuple(int(s) for s in shape)
    if dtype.hasobject:
        raise CohortFormatError(path, "mask.pickled", "the mask is a pickled object array")
    check_mask_size(path, shape, max_pixels)
    declared = header_bytes + int(np.prod(shape, dtype=object)) * dtype.itemsize
    if declared != stored:
        raise CohortFormatError(
            path,
            "mask.unreadable",
            f"the .npy header declares a {shape} {dtype} array ({declared} bytes with the header), but the "
            f"member holds {stored} bytes: the file is truncated or corrupt",
        )
    return shape, dtype
