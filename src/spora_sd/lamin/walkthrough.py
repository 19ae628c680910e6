"""The LaminDB part of ``make demo``: a local instance, one in-place registration, two searches, one load."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

__all__ = ["DEMO_LABELS", "demo"]

logger = logging.getLogger(__name__)

#: Labels for a cohort that carries none (a synthetic cohort is a made-up breast carcinoma).
DEMO_LABELS = {"tissue": "breast", "disease": "breast carcinoma", "organism": "human"}


def _contents(sdata: Any) -> tuple[set[str], set[str], dict[str, tuple[int, int]]]:
    """Element names and table shapes: what the demo checks after loading."""
    return set(sdata.images), set(sdata.labels), {name: table.shape for name, table in sdata.tables.items()}


def demo(cohort_path: str | os.PathLike[str], instance_dir: str | os.PathLike[str]) -> None:
    """Register a cohort in place in a local instance under ``instance_dir``, search it, load it back.

    The SQLite instance (with the offline ontologies) is created on the first call and reused
    afterwards. The cohort folder is registered where it is (no copy; its parent folder becomes a
    storage location of the instance); registering it again creates nothing new. Labels that the cohort does
    not carry (a synthetic cohort has none) are taken from :data:`DEMO_LABELS`; the assay comes from
    its modalities. Progress goes to the ``spora_sd.lamin.walkthrough`` logger.

    Parameters
    ----------
    cohort_path
        A spora cohort folder.
    instance_dir
        Storage folder of the instance (e.g. ``./spora-demo/lamin``).

    Raises
    ------
    RuntimeError
        When a search does not find the registered cohort, or the loaded cohort has other elements.

    Examples
    --------
    Needs a LaminDB instance (:func:`spora_sd.lamin.init_instance`)::

        demo("spora-demo/demo2025synthetic", "spora-demo/lamin")
    """
    from spora_sd import to_spatialdata
    from spora_sd.lamin.instance import init_instance
    from spora_sd.lamin.query import load, search
    from spora_sd.lamin.registration import missing_fields, register

    slug = init_instance(Path(instance_dir), name="spora-demo")
    sdata = to_spatialdata(cohort_path)
    missing = {field: DEMO_LABELS[field] for field in missing_fields(sdata.attrs) if field in DEMO_LABELS}
    if missing:
        logger.info("%s carries no %s: using the demo's labels %s", cohort_path, ", ".join(missing), missing)
    artifact = register(cohort_path, **missing)
    tissue, disease = artifact.tissues.first(), artifact.diseases.first()
    logger.info("registered %s as %s in %s (%s; %s)", cohort_path, artifact.key, slug, tissue.name, disease.name)
    for criterion in ({"tissue": tissue.name}, {"disease": disease.ontology_id}):
        hits = search(**criterion)
        logger.info("search(%s) -> %s", criterion, ", ".join(hits["key"]) or "nothing")
        if artifact.key not in set(hits["key"]):
            raise RuntimeError(f"search({criterion}) did not find {artifact.key}")
    loaded = load(artifact)
    if _contents(loaded) != _contents(sdata):
        raise RuntimeError(f"{artifact.key} loaded back differs from the converted cohort: {_contents(loaded)}")
    logger.info(
        "loaded %s back: %d images, %d labels, %d tables",
        artifact.key,
        len(loaded.images),
        len(loaded.labels),
        len(loaded.tables),
    )
