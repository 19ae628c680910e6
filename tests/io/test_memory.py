"""release_free_memory: free pages go back to the OS; memory in use is untouched."""

from __future__ import annotations

import sys

import numpy as np
import psutil
import pyarrow as pa
import pytest

from spora_sd.io.memory import _malloc_trim, _rss, release_free_memory


def test_rss_is_this_process():
    assert abs(_rss() - psutil.Process().memory_info().rss) < 64 * 2**20


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim: Linux only")
def test_freed_heap_pages_are_returned():
    """Heap-sized pieces (below glibc's mmap threshold) freed with one piece left at the top of the heap.

    glibc returns only the heap's top on free; the pieces under the kept one stay resident until
    malloc_trim.
    """
    assert _malloc_trim() is not None
    pieces = [np.ones(8_000) for _ in range(8_000)]  # 64 KB each, 512 MB: from the heap, not mmap
    kept = pieces[-1]
    del pieces
    before = _rss()
    freed = release_free_memory()
    assert freed > 100 * 2**20, f"freed {freed / 2**20:.0f} MB of about 512 MB"
    assert before - _rss() >= freed - 16 * 2**20
    assert kept.sum() == 8_000  # memory in use is untouched


def test_arrow_pool_is_released():
    """Arrow's pool (mimalloc) keeps freed buffers' pages in the RSS; they come back."""
    kept = pa.table({"y": np.arange(10)})
    buffers = [pa.allocate_buffer(100_000) for _ in range(4_000)]  # 400 MB of pool pages
    del buffers
    before = _rss()
    freed = release_free_memory()
    assert freed > 200 * 2**20, f"freed {freed / 2**20:.0f} MB of about 400 MB"
    assert before - _rss() >= freed - 16 * 2**20
    assert kept.column("y").to_pylist() == list(range(10))
