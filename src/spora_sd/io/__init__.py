"""Files of a cohort: open it (:mod:`.cohort`), read and write its images (:mod:`.images`, OME-Zarr v3),
masks (:mod:`.masks`, npz, never unpickled) and tables (:mod:`.tables`, Parquet, schema-checked), atomically
(:mod:`.atomic`).
"""
