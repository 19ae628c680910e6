"""The LaminDB part of ``make demo``: a local instance, one registration, two searches, one load."""

from __future__ import annotations

import logging
import os
from pathlib import Path

__all__ = ["demo"]

logger = logging.getLogger(__name__)


def demo(cohort_path: str | os.PathLike[str], instance_dir: str | os.PathLike[str]) -> None:
    """Register a cohort in a local instance under ``instance_dir``, search it, load it back.

    The instance (SQLite, with the offline ontologies) is created on the first call and reused
    afterwards; registering the same cohort again creates nothing new.

    Parameters
    ----------
    cohort_path
        A spora cohort folder.
    instance_dir
        Storage folder of the instance (e.g. ``./spora-demo/lamin``).

    Examples
    --------
    >>> demo("spora-demo/demo2025synthetic", "spora-demo/lamin")     # doctest: +SKIP
    """
    from spatialdata.testing import assert_spatial_data_objects_are_identical

    from .instance import init_instance
    from .query import load, search
    from .registration import register

    slug = init_instance(Path(instance_dir), name="spora-demo")
    artifact = register(cohort_path)
    tissue = artifact.tissues.first()
    disease = artifact.diseases.first()
    logger.info("registered %s as %s in %s: %s, %s", cohort_path, artifact.key, slug, tissue.name, disease.name)
    for criterion in ({"tissue": tissue.name}, {"disease": disease.ontology_id}):
        hits = search(**criterion)
        logger.info("search(%s) -> %s", criterion, ", ".join(hits["key"]) or "nothing")
        if artifact.key not in set(hits["key"]):
            raise RuntimeError(f"search({criterion}) did not find {artifact.key}")
    sdata = load(artifact)
    assert_spatial_data_objects_are_identical(sdata, load(artifact.uid))
    logger.info(
        "loaded %s back: %d images, %d labels, %d tables",
        artifact.key,
        len(sdata.images),
        len(sdata.labels),
        len(sdata.tables),
    )
