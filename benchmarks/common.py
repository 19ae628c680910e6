"""Shared pieces of the benchmark suite: results, timing, memory, the synthetic cohorts they run on.

Every benchmark compares spora-sd against a baseline measured in the same process on the same data
and prints one line per result::

    name: ratio=0.83 goal=<=1.0 (spora open time / spatialdata.read_zarr time) [spora 1.2 s, baseline 1.4 s]
"""

from __future__ import annotations

import gc
import os
import resource
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

WORK = Path(os.environ.get("SPORA_SD_BENCH_DIR", Path(__file__).parent / "_work"))


@dataclass
class Result:
    """One benchmark figure: a ratio against a baseline, and the goal it is held to."""

    name: str
    ratio: float
    goal: str  # e.g. "<=1.0" or ">=5"
    what: str  # what the ratio is, in words
    details: dict[str, float | str] = field(default_factory=dict)

    @property
    def met(self) -> bool:
        op, value = self.goal[:2], float(self.goal[2:])
        return self.ratio <= value if op == "<=" else self.ratio >= value

    def line(self) -> str:
        extra = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in self.details.items())
        status = "met" if self.met else "MISSED"
        return f"{self.name}: ratio={self.ratio:.3g} goal={self.goal} ({self.what}) [{status}; {extra}]"


def timed(func: Callable[[], object], repeat: int = 1) -> tuple[float, object]:
    """Best wall time of ``repeat`` calls, and the last result."""
    best, out = float("inf"), None
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        out = func()
        best = min(best, time.perf_counter() - t0)
    return best, out


class PeakRSS:
    """Context manager sampling this process's RSS every 10 ms; ``.peak`` and ``.delta`` in bytes."""

    def __enter__(self) -> PeakRSS:
        self._proc = psutil.Process()
        self.start = self._proc.memory_info().rss
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, self._proc.memory_info().rss)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)

    @property
    def delta(self) -> int:
        return self.peak - self.start


def max_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def synthetic_cohort(name: str, quick: bool, **sizes: object) -> Path:
    """A synthetic cohort under the benchmark work folder, made once and reused across runs."""
    from spora_sd import make_synthetic_cohort

    root = WORK / ("quick" if quick else "full")
    path = root / name
    if not (path / "metadata" / "tissues.parquet").is_file():
        make_synthetic_cohort(root, name=name, **sizes)  # type: ignore[arg-type]
    return path


def imc_cohort(name: str, quick: bool, sizes: dict) -> Path:
    """An IMC-only cohort of ``sizes`` (n_tissues, image_size, n_channels, n_cells), two pyramid levels,
    no derived products: the cohort the open, crop and remote benchmarks read."""
    return synthetic_cohort(
        name,
        quick,
        n_tissues=sizes["n_tissues"],
        modalities=("imc",),
        image_size=sizes["image_size"],
        n_channels=sizes["n_channels"],
        n_cells=sizes["n_cells"],
        n_levels=2,
        seed=0,
        standardization=False,
        tiling=False,
    )
