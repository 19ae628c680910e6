"""``validate(path)`` -> :class:`spora_sd.ValidationReport`: every rule of the layout, each problem with
a stable rule id (:mod:`.validator` for structure, masks and tables; :mod:`.images` for OME-Zarr images).
"""
