"""Masks for tiles: whole masks decoded once per worker (``.npz`` cannot be read in parts), cropped per tile.

Examples
--------
>>> import numpy as np
>>> crop_padded(np.arange(16).reshape(4, 4), row=2, col=3, height=3, width=2).tolist()
[[11, 0], [15, 0], [0, 0]]
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

from spora_sd.errors import InvalidArgumentError
from spora_sd.io.masks import read_mask

__all__ = ["MaskCache", "MaskRef", "crop_padded"]


def crop_padded(mask: np.ndarray, row: int, col: int, height: int, width: int) -> np.ndarray:
    """The window ``[row:row+height, col:col+width]`` of a 2-D array, zero-padded where it leaves the array."""
    out = np.zeros((height, width), dtype=mask.dtype)
    y0, y1 = max(row, 0), min(row + height, mask.shape[0])
    x0, x1 = max(col, 0), min(col + width, mask.shape[1])
    if y0 < y1 and x0 < x1:
        out[y0 - row : y1 - row, x0 - col : x1 - col] = mask[y0:y1, x0:x1]
    return out


@dataclass(frozen=True)
class MaskRef:
    """Where one mask of one tissue lives: an ``.npz`` file of a cohort, or an array (a SpatialData labels element).

    ``key`` names it in the cache and in error messages.
    """

    key: str
    path: str | None = None
    data: Any = None

    def load(self) -> np.ndarray:
        """The whole mask as a 2-D numpy array."""
        if self.path is not None:
            return read_mask(self.path)
        data = self.data.compute(scheduler="synchronous") if hasattr(self.data, "compute") else self.data
        mask = np.asarray(data)
        if mask.ndim != 2:
            raise InvalidArgumentError(f"{self.key}: a mask must be 2-D (y, x), got shape {mask.shape}")
        return mask


class MaskCache:
    """The last ``size`` masks used, decoded, in this process (a new worker starts empty).

    Examples
    --------
    >>> import numpy as np
    >>> cache = MaskCache(size=1)
    >>> cache.get(MaskRef("a", data=np.ones((2, 2), "uint8"))).sum()
    np.uint64(4)
    """

    def __init__(self, size: int = 4) -> None:
        self.size = int(size)
        self._reset()

    def _reset(self) -> None:
        self._masks: OrderedDict[str, np.ndarray] = OrderedDict()
        self._pid = os.getpid()

    def __getstate__(self) -> dict:
        return {"size": self.size}

    def __setstate__(self, state: dict) -> None:
        self.size = state["size"]
        self._reset()

    def get(self, ref: MaskRef) -> np.ndarray:
        if self._pid != os.getpid():
            self._reset()
        mask = self._masks.get(ref.key)
        if mask is None:
            mask = ref.load()
            self._masks[ref.key] = mask
            while len(self._masks) > max(self.size, 1):
                self._masks.popitem(last=False)
        else:
            self._masks.move_to_end(ref.key)
        return mask
