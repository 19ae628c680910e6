"""Read and write masks: ``.npz`` files holding one array under the key ``"mask"`` (spec §4, §7).

Masks come from other labs, so they are read with ``allow_pickle=False``: a pickled (object) array is
refused, never executed.

Examples
--------
>>> import numpy as np, tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "m.npz"
>>> _ = write_mask(path, np.eye(3, dtype="uint32"))
>>> read_mask(path).sum()
np.uint64(3)
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from spora_sd.errors import CohortFormatError, CohortNotFoundError, InvalidArgumentError
from spora_sd.io.atomic import atomic_path
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


def _open(path: Path) -> np.lib.npyio.NpzFile:
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise CohortNotFoundError(f"{path}: mask not found") from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise CohortFormatError(path, "mask.unreadable", f"not a readable .npz file: {exc}") from None


def read_mask(path: str | Path) -> np.ndarray:
    """Read the ``"mask"`` array of an ``.npz`` file, refusing pickled content."""
    path = Path(path)
    with _open(path) as npz:
        if MASK_KEY not in npz.files:
            raise CohortFormatError(path, "mask.key", f"no array under the key 'mask' (keys: {npz.files})")
        try:
            mask = npz[MASK_KEY]
        except ValueError as exc:
            # numpy refuses object arrays when allow_pickle=False: that is what we want.
            raise CohortFormatError(path, "mask.pickled", f"the mask is a pickled object array: {exc}") from None
        except (OSError, zipfile.BadZipFile, EOFError, KeyError) as exc:
            raise CohortFormatError(path, "mask.unreadable", f"cannot decompress the mask: {exc}") from None
    if mask.ndim != 2:
        raise CohortFormatError(path, "mask.shape", f"a mask must be 2-D, got shape {mask.shape}")
    return mask


def read_mask_shape(path: str | Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of a mask from the ``.npy`` header only, without decompressing the pixels."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as zf:
            name = f"{MASK_KEY}.npy"
            if name not in zf.namelist():
                raise CohortFormatError(path, "mask.key", f"no array under the key 'mask' (members: {zf.namelist()})")
            with zf.open(name) as fh:
                major, _ = np.lib.format.read_magic(fh)
                read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
                shape, _, dtype = read_header(fh)  # header only: no pixel is decompressed
    except CohortFormatError:
        raise
    except FileNotFoundError:
        raise CohortNotFoundError(f"{path}: mask not found") from None
    except (OSError, zipfile.BadZipFile, ValueError, EOFError) as exc:
        raise CohortFormatError(path, "mask.unreadable", f"not a readable .npz file: {exc}") from None
    if dtype.hasobject:
        raise CohortFormatError(path, "mask.pickled", "the mask is a pickled object array")
    return tuple(shape), dtype
