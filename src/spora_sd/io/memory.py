"""Hand the allocators' free memory back to the operating system, before a large allocation.

A process that read a large cohort keeps much of the memory it freed since: Arrow's allocator
(mimalloc) keeps the pages of freed columns for reuse, and glibc's ``malloc`` keeps free pages in
its heaps until they sit at a heap's top. Neither is a leak, but both stay in the resident set
(RSS), and a step that then allocates hundreds of MB (the spatial graph of millions of cells)
peaks that much higher. :func:`release_free_memory` gives those pages back; the memory still in
use is not touched, so it is safe to call at any point.

spora-sd calls it before the spatial graph (:func:`spora_sd.analysis.spatial_neighbors`), whose
output is a few hundred MB at millions of cells, and when the functions that read or write a
cohort's tables return (:func:`returns_free_memory`): at 2,000 tissues and 5.9 M cells,
``to_spatialdata`` left 335 MB of freed Parquet buffers in Arrow's pool, which no later numpy or
Python allocation can reuse (3 ms to release). ``malloc_trim`` exists in glibc only; elsewhere
(macOS, musl) only Arrow's pool is released.

Examples
--------
>>> freed = release_free_memory()
>>> freed >= 0
True
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os
import sys
from collections.abc import Callable
from typing import ParamSpec, TypeVar

logger = logging.getLogger(__name__)

_P = ParamSpec("_P")
_R = TypeVar("_R")


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or ``None`` where the C library has none (macOS, musl, Windows)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # no libc by that name, or a libc without malloc_trim (musl)
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def _rss() -> int:
    """This process's resident set in bytes (Linux's ``/proc/self/statm``; 0 where there is none)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def release_free_memory() -> int:
    """Return the free pages of Arrow's memory pool and of glibc's heaps to the OS.

    Returns
    -------
    The bytes by which the resident set shrank (0 if it did not, or where it cannot be read).

    Examples
    --------
    >>> import numpy as np
    >>> blocks = [np.ones(10_000) for _ in range(1_000)]  # 80 MB in heap-sized pieces
    >>> del blocks
    >>> release_free_memory() >= 0
    True
    """
    before = _rss()
    if "pyarrow" in sys.modules:  # Arrow's pool exists only once pyarrow is imported
        sys.modules["pyarrow"].default_memory_pool().release_unused()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
    freed = max(0, before - _rss())
    logger.debug("released %.0f MB of free memory to the OS", freed / 2**20)
    return freed


def returns_free_memory(func: Callable[_P, _R]) -> Callable[_P, _R]:
    """Decorate a function that reads or writes large tables: it calls :func:`release_free_memory` on return.

    What the function freed (Arrow's pool pages above all, which only Arrow can reuse) then does not
    stay in the process's resident set for the steps after it. On return or on error; the result is
    untouched.

    Examples
    --------
    >>> import pyarrow as pa
    >>> @returns_free_memory
    ... def total(n: int) -> int:
    ...     return pa.array(range(n)).sum().as_py()
    >>> total(1_000)
    499500
    """

    @functools.wraps(func)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return func(*args, **kwargs)
        finally:
            release_free_memory()

    return wrapper
