"""Synthetic spora cohorts that look like real ones, for tests, demos and benchmarks.

:func:`make_synthetic_cohort` writes a complete, valid cohort: tissues with cells drawn as
touching, non-overlapping ellipses, cell types placed in tumour nests, stroma and a lymphoid aggregate, an IMC
panel of real markers whose expression depends on the cell type (gamma-distributed per cell, with
pixel shot noise), a registered H&E rendered from the same cells, masks, the cells table with mean
intensities measured on the written images, clinical columns, standardization statistics and a tiling.

Everything is drawn from ``numpy.random.SeedSequence([seed, ...])`` streams, one per tissue, so a
seed gives the same pixels and tables whatever the order (or the dask workers) the tissues are
rendered in. Rendering is vectorised over cells and pixels, and tissues are written one at a time
(one tissue's arrays in memory).

The generator is split by concern: :mod:`.biology` (cell types, the marker panel, expression),
:mod:`.geometry` (tissue, cells, shapes), :mod:`.rendering` (pixels) and :mod:`.writer` (files).

Examples
--------
>>> import tempfile
>>> from spora_sd.io.cohort import open_cohort
>>> root = make_synthetic_cohort(tempfile.mkdtemp(), n_tissues=2, image_size=96, n_cells=20, seed=1)
>>> cohort = open_cohort(root)
>>> cohort.modalities
['he', 'imc']
>>> cohort.panel("imc")[:4]
['DNA1', 'H3C1', 'PTPRC', 'CD3E']
"""

from spora_sd.datasets.synthetic.biology import CELL_TYPES, MARKERS, CellType, Marker
from spora_sd.datasets.synthetic.writer import make_synthetic_cohort

__all__ = ["CELL_TYPES", "MARKERS", "CellType", "Marker", "make_synthetic_cohort"]
