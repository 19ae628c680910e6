"""Derived products of a cohort: per-cell intensities (:mod:`.intensities`), standardization statistics
(:mod:`.standardization`), tiling (:mod:`.tiling`), and how per-tissue work runs (:mod:`.parallel`:
sequentially or on a ``dask.distributed`` client).
"""
