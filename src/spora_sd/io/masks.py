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
import io
import re
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

__all__ = ["parse_npy_header", "read_mask", "read_mask_shape", "write_mask"]


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


_MAGIC = b"\x93NUMPY"
# The header numpy writes for a plain dtype ("{'descr': '<u4', 'fortran_order': False, 'shape': (58, 66), }"
# padded with spaces). Anything else (structured dtypes, other spellings) goes to numpy's own parser.
_HEADER = re.compile(
    r"\{'descr': '([<>|=]?[A-Za-z][0-9]*)', 'fortran_order': (True|False), "
    r"'shape': \(((?:[0-9]+, )*(?:[0-9]+,?)?)\), \} *\n?"
)


def parse_npy_header(raw: bytes) -> tuple[tuple[int, ...], bool, np.dtype]:
    """Shape, Fortran order and dtype from the bytes of an ``.npy`` header (magic string included).

    The fixed format numpy writes for plain dtypes is parsed by a regular expression; any other
    header (a structured dtype, another spelling) goes to numpy's own parser (``ast.literal_eval``,
    which evaluates literals only). Neither path unpickles. A malformed header raises ``ValueError``.

    Examples
    --------
    >>> import io
    >>> buffer = io.BytesIO()
    >>> np.lib.format.write_array(buffer, np.zeros((2, 3), dtype="<u4"))
    >>> parse_npy_header(buffer.getvalue()[:128])
    ((2, 3), False, dtype('uint32'))
    """
    if raw[:6] != _MAGIC or len(raw) < 10:
        raise ValueError(f"not an .npy header: magic string {raw[:8]!r}")
    major = raw[6]
    start = 10 if major == 1 else 12
    if major in (2, 3) and len(raw) >= 12:
        text = raw[start : start + int.from_bytes(raw[8:12], "little")]
    elif major == 1:
        text = raw[start : start + int.from_bytes(raw[8:10], "little")]
    else:
        raise ValueError(f"unsupported .npy format version {major}")
    found = _HEADER.fullmatch(text.decode("latin1"))
    if found is not None:
        descr, fortran, dims = found.groups()
        shape = tuple(int(d) for d in dims.replace(",", " ").split())
        return shape, fortran == "True", np.dtype(descr)
    fh = io.BytesIO(raw)
    np.lib.format.read_magic(fh)
    read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
    shape, fortran_order, dtype = read_header(fh)
    return tuple(int(s) for s in shape), bool(fortran_order), dtype


def _read_header(fh: Any) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """The ``.npy`` header of an open member: shape, Fortran order, dtype and the header's length in bytes."""
    raw = fh.read(12)
    if len(raw) < 10 or raw[:6] != _MAGIC:
        raise ValueError(f"not an .npy member: magic string {raw[:8]!r}")
    if raw[6] == 1:
        length = 10 + int.from_bytes(raw[8:10], "little")
    elif len(raw) == 12:
        length = 12 + int.from_bytes(raw[8:12], "little")
    else:
        raise ValueError("truncated .npy header")
    if length > 1 << 20:
        raise ValueError(f"an .npy header of {length} bytes")
    raw += fh.read(length - len(raw))
    if len(raw) < length:
        raise ValueError("truncated .npy header")
    shape, fortran_order, dtype = parse_npy_header(raw)
    return shape, fortran_order, dtype, length


def _checked_header(path: Any, fh: Any, stored: int, max_pixels: int | None) -> tuple[tuple[int, ...], bool, np.dtype]:
    """Read and check the header of the open member ``fh`` of ``stored`` bytes (see :func:`read_mask_shape`)."""
    shape, fortran_order, dtype, header_bytes = _read_header(fh)
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
    return shape, fortran_order, dtype


@contextlib.contextmanager
def _member(path: Any) -> Iterator[tuple[Any, int]]:
    """The open ``mask.npy`` member of the ``.npz`` at ``path`` and its size; format errors are ``CohortFormatError``."""
    try:
        with _file(path) as source, remote_errors(path), zipfile.ZipFile(source) as zf:
            name = f"{MASK_KEY}.npy"
            if name not in zf.namelist():
                raise CohortFormatError(path, "mask.key", f"no array under the key 'mask' (members: {zf.namelist()})")
            with zf.open(name) as fh:
                yield fh, zf.getinfo(name).file_size
    except SporaError:
        raise  # the rules, a missing file, a server that fails (RemoteAccessError is an OSError)
    except FileNotFoundError:
        raise CohortNotFoundError(f"{path}: mask not found") from None
    except (OSError, zipfile.BadZipFile, zlib.error, ValueError, EOFError) as exc:
        raise CohortFormatError(path, "mask.unreadable", f"not a readable .npz file: {exc}") from None


def read_mask(path: str | Path, *, max_pixels: int | None = None) -> np.ndarray:
    """Read the ``"mask"`` array of an ``.npz`` file, refusing pickled content.

    The header is checked first (as in :func:`read_mask_shape`): a mask that is not 2-D, holds
    objects or declares more than ``max_pixels`` pixels (default
    :func:`spora_sd.io.limits.max_mask_pixels`) is refused before anything is allocated. The pixels
    are then decompressed straight into the returned array, and the member's CRC is checked.
    """
    path = _as_path(path)
    with _member(path) as (fh, stored):
        shape, fortran_order, dtype = _checked_header(path, fh, stored, max_pixels)
        if len(shape) != 2:
            raise CohortFormatError(path, "mask.shape", f"a mask must be 2-D, got shape {shape}")
        flat = np.empty(int(np.prod(shape)) * dtype.itemsize, dtype=np.uint8)
        view, done = memoryview(flat), 0
        while done < len(flat):
            n = fh.readinto(view[done:])
            if not n:
                raise CohortFormatError(path, "mask.unreadable", "cannot decompress the mask: the member ends early")
            done += n
        if fh.read(1):  # also reaches the end of the member, where zipfile checks its CRC
            raise CohortFormatError(path, "mask.unreadable", "cannot decompress the mask: data after the array")
    pixels = flat.view(dtype)
    return pixels.reshape(shape[::-1]).T if fortran_order else pixels.reshape(shape)


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
    with _member(path) as (fh, stored):
        shape, _, dtype = _checked_header(path, fh, stored, max_pixels)  # header only: no pixel is decompressed
    return shape, dtype
