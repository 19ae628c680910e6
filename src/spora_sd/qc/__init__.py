"""Looking at a cohort: the static QC report (:func:`write_qc_report`) and its parts.

- :mod:`spora_sd.qc.page` builds the page (``spora-sd report``);
- :mod:`spora_sd.qc.tissues` makes one tissue's row (a picklable job per tissue);
- :mod:`spora_sd.qc.thumbnails` reads a downsampled level and draws the RGB composite with the tissue outline;
- :mod:`spora_sd.qc.distributions` draws the per-marker intensity strips across tissues;
- :mod:`spora_sd.qc.markers` picks the three thumbnail markers;
- :mod:`spora_sd.qc.cells` counts cells and cell types per tissue from ``cells.parquet``.
"""

from __future__ import annotations

from spora_sd.qc.page import write_qc_report

__all__ = ["write_qc_report"]
