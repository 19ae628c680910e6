"""Named cohorts: the registry of known datasets (:mod:`.registry`, ``cohorts.yaml``) and the synthetic
cohort generator (:mod:`.synthetic`).
"""
