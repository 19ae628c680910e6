"""Analyses of a cohort's cell table that scale to thousands of tissues.

:func:`spatial_neighbors` (:mod:`.neighbors`) builds squidpy's spatial graph one tissue at a time,
with the memory of its outputs plus one tissue. squidpy, spatialdata and anndata are imported when
a function runs, not when this package is imported.
"""

from __future__ import annotations

from spora_sd.analysis.neighbors import spatial_neighbors

__all__ = ["spatial_neighbors"]
