"""release_free_memory: free pages go back to the OS; memory in use is untouched."""

from __future__ import annotations

import sys

import numpy as np
import psutil
import pyarrow as pa
import pytest

from spora_sd.io.memory import _malloc_trim, _rss, release_free_memory, returns_free_memory


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


def _free_arrow_pages() -> int:
    """Leave 400 MB of freed buffers in Arrow's pool; the RSS with them in it."""
    buffers = [pa.allocate_buffer(100_000) for _ in range(4_000)]
    del buffers
    return _rss()


def test_returns_free_memory_on_return_and_on_error():
    @returns_free_memory
    def work(fail: bool) -> str:
        work.rss = _free_arrow_pages()  # type: ignore[attr-defined]
        if fail:
            raise ValueError("bad input")
        return "result"

    assert work(False) == "result"
    assert work.rss - _rss() > 200 * 2**20  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="bad input"):
        work(True)
    assert work.rss - _rss() > 200 * 2**20  # type: ignore[attr-defined]
    assert work.__name__ == "work" and work.__wrapped__ is not None  # type: ignore[attr-defined]


def test_table_readers_and_writers_return_free_memory(small_cohort, tmp_path):
    """The public functions that read or write a cohort's tables leave no freed Arrow pages behind."""
    import spora_sd

    calls = {
        "to_spatialdata": lambda: spora_sd.to_spatialdata(small_cohort),
        "validate": lambda: spora_sd.validate(small_cohort),
        "compute_cell_intensities": lambda: spora_sd.compute_cell_intensities(small_cohort),
    }
    sdata = calls["to_spatialdata"]()
    calls["from_spatialdata"] = lambda: spora_sd.from_spatialdata(sdata, tmp_path / "back")
    for name, call in calls.items():
        before = _free_arrow_pages()
        call()
        assert before - _rss() > 200 * 2**20, name
