"""Cohort <-> SpatialData: :mod:`.to_spatialdata` and :mod:`.from_spatialdata`, one public function each.

Element names are :mod:`.element_names`; the versioned ``sdata.attrs["spora"]`` format is :mod:`.attrs`, its
only reader and writer; the cell table is :mod:`.cell_table`. An export is planned completely before
anything is written (:mod:`.plan`), from the attrs a conversion left (:mod:`.plan_from_attrs`) or inferred
from any SpatialData object (:mod:`.plan_inferred`).
"""
