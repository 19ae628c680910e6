"""Size limits on what the headers of a cohort's files may declare, checked before anything is allocated.

A mask's ``.npy`` header or an image's ``zarr.json`` states the shape of an array; readers check it
against these limits before they allocate memory for it, so a corrupt or hostile header is a
:class:`~spora_sd.errors.CohortFormatError` (rules ``mask.too_large``, ``image.too_large``), never a
``MemoryError`` or a machine that swaps to a halt.

The defaults hold the largest whole-slide images (131,072 x 131,072 pixels; a 100,000 x 80,000 H&E
slide at 0.25 mpp is 8 gigapixels). Each limit can be raised (or lowered) with an environment
variable, read when a file is checked:

=================================  ======================  ==========================================
environment variable               default                 what it bounds
=================================  ======================  ==========================================
``SPORA_SD_MAX_MASK_PIXELS``       ``2**34``               height x width of a mask
``SPORA_SD_MAX_IMAGE_PIXELS``      ``2**34``               height x width of an image (any level)
``SPORA_SD_MAX_IMAGE_CHANNELS``    ``1024``                channels of an image
``SPORA_SD_MAX_CHUNK_BYTES``       ``2**30`` (1 GiB)       bytes of one Zarr chunk, decoded
=================================  ======================  ==========================================

Examples
--------
>>> max_mask_pixels()
17179869184
>>> check_mask_size("m.npz", (200_000, 200_000))  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
spora_sd.errors.CohortFormatError: m.npz: [mask.too_large] the header declares a 200000 x 200000 mask ...
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

from spora_sd.errors import CohortFormatError, InvalidArgumentError

__all__ = [
    "DEFAULT_MAX_CHUNK_BYTES",
    "DEFAULT_MAX_IMAGE_CHANNELS",
    "DEFAULT_MAX_IMAGE_PIXELS",
    "DEFAULT_MAX_MASK_PIXELS",
    "ENV_MAX_CHUNK_BYTES",
    "ENV_MAX_IMAGE_CHANNELS",
    "ENV_MAX_IMAGE_PIXELS",
    "ENV_MAX_MASK_PIXELS",
    "check_image_size",
    "check_mask_size",
    "max_chunk_bytes",
    "max_image_channels",
    "max_image_pixels",
    "max_mask_pixels",
]

DEFAULT_MAX_MASK_PIXELS = 2**34
DEFAULT_MAX_IMAGE_PIXELS = 2**34
DEFAULT_MAX_IMAGE_CHANNELS = 1024
DEFAULT_MAX_CHUNK_BYTES = 2**30

ENV_MAX_MASK_PIXELS = "SPORA_SD_MAX_MASK_PIXELS"
ENV_MAX_IMAGE_PIXELS = "SPORA_SD_MAX_IMAGE_PIXELS"
ENV_MAX_IMAGE_CHANNELS = "SPORA_SD_MAX_IMAGE_CHANNELS"
ENV_MAX_CHUNK_BYTES = "SPORA_SD_MAX_CHUNK_BYTES"

_HINT = "if the file is right, raise the limit with the environment variable {env} (now {limit})"


def _limit(env: str, default: int) -> int:
    text = os.environ.get(env)
    if text is None or not text.strip():
        return default
    try:
        value = int(text.strip().replace("_", ""))
    except ValueError:
        raise InvalidArgumentError(f"${env}={text!r} is not a whole number") from None
    if value < 1:
        raise InvalidArgumentError(f"${env}={text!r} must be a positive number")
    return value


def max_mask_pixels() -> int:
    """Largest height x width of a mask (``$SPORA_SD_MAX_MASK_PIXELS``, default ``2**34``)."""
    return _limit(ENV_MAX_MASK_PIXELS, DEFAULT_MAX_MASK_PIXELS)


def max_image_pixels() -> int:
    """Largest height x width of an image level (``$SPORA_SD_MAX_IMAGE_PIXELS``, default ``2**34``)."""
    return _limit(ENV_MAX_IMAGE_PIXELS, DEFAULT_MAX_IMAGE_PIXELS)


def max_image_channels() -> int:
    """Largest number of channels of an image (``$SPORA_SD_MAX_IMAGE_CHANNELS``, default 1024)."""
    return _limit(ENV_MAX_IMAGE_CHANNELS, DEFAULT_MAX_IMAGE_CHANNELS)


def max_chunk_bytes() -> int:
    """Largest decoded size of one Zarr chunk of an image (``$SPORA_SD_MAX_CHUNK_BYTES``, default 1 GiB)."""
    return _limit(ENV_MAX_CHUNK_BYTES, DEFAULT_MAX_CHUNK_BYTES)


def check_mask_size(path: str | Path, shape: Sequence[int], limit: int | None = None) -> None:
    """Raise ``mask.too_large`` when a mask's declared ``(height, width)`` exceeds ``limit`` pixels.

    ``limit`` defaults to :func:`max_mask_pixels`. Shapes that are not 2-D are left to the shape check.
    """
    limit = max_mask_pixels() if limit is None else int(limit)
    if len(shape) != 2 or any(int(s) < 0 for s in shape):
        return
    pixels = math.prod(int(s) for s in shape)
    if pixels > limit:
        raise CohortFormatError(
            path,
            "mask.too_large",
            f"the header declares a {shape[0]} x {shape[1]} mask ({pixels} pixels), more than the limit of "
            f"{limit}; " + _HINT.format(env=ENV_MAX_MASK_PIXELS, limit=limit),
        )


def check_image_size(
    path: str | Path,
    shape: Sequence[int],
    chunks: Sequence[int] | None = None,
    itemsize: int = 1,
    *,
    max_pixels: int | None = None,
    max_channels: int | None = None,
) -> None:
    """Raise ``image.too_large`` when a ``(C, Y, X)`` level (or one of its chunks) exceeds the limits.

    Parameters
    ----------
    path
        The level (``<tissue_id>.ome.zarr/<level>``), for the error message.
    shape, chunks
        Shape of the array and of one (inner) chunk, as ``zarr.json`` declares them.
    itemsize
        Bytes per pixel of the array's dtype.
    max_pixels, max_channels
        Override :func:`max_image_pixels` and :func:`max_image_channels`.
    """
    max_pixels = max_image_pixels() if max_pixels is None else int(max_pixels)
    max_channels = max_image_channels() if max_channels is None else int(max_channels)
    if len(shape) != 3:
        return
    c, h, w = (int(s) for s in shape)
    if h * w > max_pixels:
        raise CohortFormatError(
            path,
            "image.too_large",
            f"zarr.json declares {h} x {w} pixels ({h * w}), more than the limit of {max_pixels}; "
            + _HINT.format(env=ENV_MAX_IMAGE_PIXELS, limit=max_pixels),
        )
    if c > max_channels:
        raise CohortFormatError(
            path,
            "image.too_large",
            f"zarr.json declares {c} channels, more than the limit of {max_channels}; "
            + _HINT.format(env=ENV_MAX_IMAGE_CHANNELS, limit=max_channels),
        )
    if chunks is not None:
        limit = max_chunk_bytes()
        size = math.prod(int(s) for s in chunks) * int(itemsize)
        if size > limit:
            raise CohortFormatError(
                path,
                "image.too_large",
                f"one chunk {tuple(int(s) for s in chunks)} is {size} bytes decoded, more than the limit of "
                f"{limit}; " + _HINT.format(env=ENV_MAX_CHUNK_BYTES, limit=limit),
            )
