"""A Vitessce config attached to each registered cohort (``ln.integrations.save_vitessce_config``).

LaminHub shows a "Vitessce" button next to an artifact that has such a config. The config shows the
cohort's first tissue, with the layout of the local view (:mod:`spora_sd.viewer.config`):

- a cohort registered **in place** (a cohort folder): its OME-Zarr image, addressed inside the
  artifact (``<artifact url>/<modality>/<res>/images/<tissue>...``), with the default channels and
  contrast of ``spora-sd view``. The outlines and cells of the local view come from stores the
  local server writes on the fly; a hub has no such server, so they are left out;
- a **SpatialData copy**: the image, the cell labels and the cell table of that tissue through
  ``vitessce.SpatialDataWrapper``.

The data are named by the artifact's URL (:func:`artifact_url`): ``vitessce``'s own
``sdata_artifact=`` needs ``artifact.path.to_url()``, which local paths lack (``AttributeError`` on
a local instance), so a local artifact is addressed as ``file://`` and linked to the config by hand.

:func:`~spora_sd.lamin.register` attaches one to every new SpatialData copy, and to cohorts
registered in place from cloud storage (see :func:`hub_can_show`). What works offline: ``save_vitessce_config`` validates the config, saves it as a ``.vitessce.json``
artifact (kind ``__lamindb_config__``) with a Run of its own, and links it to the cohort's artifact as
an action; all of this is local database work, and runs on a local SQLite or PostgreSQL instance with
no hub. Only *showing* it needs LaminHub (it renders the JSON with Vitessce from a CDN); locally,
``spora-sd view --artifact UID`` shows the artifact.

``vitessce`` is an optional dependency (installed with ``--no-deps``, see
:func:`spora_sd.viewer.config.require_vitessce`): without it, registration logs that no config was
attached and carries on.

Examples
--------
Needs a LaminDB instance and a registered cohort::

    config_artifact = attach_vitessce_config(artifact)
    config_artifact.suffix, config_artifact.kind
    # ('.vitessce.json', '__lamindb_config__')
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from spora_sd.convert.element_names import CELL_TABLE, CELLS_LABELS, image_name, labels_name
from spora_sd.errors import SporaError
from spora_sd.lamin.instance import quiet

if TYPE_CHECKING:
    import lamindb as ln
    from vitessce import VitessceConfig

__all__ = ["artifact_url", "attach_vitessce_config", "hub_can_show", "vitessce_config"]

logger = logging.getLogger(__name__)


def artifact_url(artifact: ln.Artifact) -> str:
    """The artifact's URL as Vitessce wants it: ``s3://``/``gs://``/``https://``, or ``file://`` on this machine.

    ``vitessce``'s ``*_artifact=`` arguments call ``artifact.path.to_url()``, which only cloud paths
    have; so the wrappers get this URL, and the artifact is linked to them by :func:`_link`.
    """
    path = artifact.path
    if hasattr(path, "to_url"):
        return str(path.to_url())
    return Path(path.as_posix()).as_uri()


def _link(config: VitessceConfig, artifact: ln.Artifact) -> VitessceConfig:
    """Name ``artifact`` as the data of every file of ``config`` (what ``save_vitessce_config`` reads)."""
    url = artifact_url(artifact)
    for dataset in config.config["datasets"]:
        for wrapper in dataset.objs:
            wrapper.artifacts[url] = artifact  # what the wrappers' register_artifact() records
    return config


def _in_place_config(artifact: ln.Artifact, folder: Path) -> VitessceConfig:
    from spora_sd.viewer.config import TissueView, tissue_config
    from spora_sd.viewer.contrast import default_channels, default_windows
    from spora_sd.viewer.session import ViewSession

    with tempfile.TemporaryDirectory() as cache:  # no store is written: only the image is referenced
        session = ViewSession(folder, cache)
        tissue = session.tissues[0]
        cohort = session.cohort
        channels = cohort.image_metadata(tissue, session.modality).channel_names
        dtype = cohort.image_levels(tissue, session.modality)[0].dtype
        relative = session.image_folder(tissue).relative_to(cohort.path).as_posix()
        spec = TissueView(
            name=tissue,
            image_url=f"{artifact_url(artifact).rstrip('/')}/{relative}",
            channels=channels,
            shown=default_channels(cohort, session.modality, channels),
            windows=default_windows(cohort, tissue, session.modality, channels, dtype),
        )
    return _link(tissue_config(spec), artifact)  # the image lives inside the artifact


def _copy_config(artifact: ln.Artifact) -> VitessceConfig:
    from spora_sd.convert.attrs import read_spora_attrs
    from spora_sd.viewer.config import SCHEMA_VERSION, require_vitessce

    vitessce = require_vitessce()
    sdata = artifact.load(is_run_input=False)
    info = read_spora_attrs(sdata.attrs)
    tissues = sorted(sdata.coordinate_systems)
    if not tissues:
        raise SporaError(f"artifact {artifact.uid}: the SpatialData has no coordinate system (no tissue) to show")
    tissue = tissues[0]
    modalities = info.modalities if info is not None else []
    image = next((image_name(tissue, m) for m in modalities if image_name(tissue, m) in sdata.images), None)
    if image is None:
        image = next(name for name in sdata.images if name.startswith(tissue))
    labels = labels_name(tissue, CELLS_LABELS)
    vc = vitessce.VitessceConfig(schema_version=SCHEMA_VERSION, name=tissue, description=artifact.description)
    wrapper = vitessce.SpatialDataWrapper(
        sdata_url=artifact_url(artifact),
        image_path=f"images/{image}",
        obs_segmentations_path=f"labels/{labels}" if labels in sdata.labels else None,
        table_path=f"tables/{CELL_TABLE}",
        obs_set_paths=["obs/cell_type"],
        obs_set_names=["cell type"],
        coordinate_system=tissue,
        coordination_values={"obsType": "cell"},
    )
    dataset = vc.add_dataset(name=tissue).add_object(wrapper)
    spatial = vc.add_view("spatialBeta", dataset=dataset)
    controller = vc.add_view("layerControllerBeta", dataset=dataset)
    sets = vc.add_view("obsSets", dataset=dataset)
    vc.link_views([spatial, controller, sets], ["obsType"], ["cell"])
    vc.layout(spatial | (controller / sets))
    return _link(vc, artifact)


def _local_folder(artifact: ln.Artifact) -> Path | None:
    """The artifact's folder when it is on this machine (a cohort registered in place), else None."""
    path = artifact.path
    if getattr(path, "protocol", "file") not in ("", "file", "local"):
        return None
    local = Path(path.as_posix())
    return local if local.is_dir() else None


def hub_can_show(artifact: ln.Artifact) -> bool:
    """Whether :func:`register` attaches a config: a SpatialData copy, or a cohort in cloud storage.

    A cohort registered in place from a folder on this machine is left alone: no hub can read that
    folder, and an in-place registration writes nothing into the instance's storage (the config is a
    file there). :func:`attach_vitessce_config` attaches one anyway when called directly.
    """
    # a cohort registered in place from a bucket is left alone too (for now): its config needs contrast
    # windows read from the images, and in-place registration reads no image chunk (issue 12)
    return artifact.otype == "SpatialData"


def vitessce_config(artifact: ln.Artifact) -> VitessceConfig:
    """The Vitessce config of a registered cohort (in place or a SpatialData copy; see the module)."""
    local = _local_folder(artifact)
    if artifact.otype != "SpatialData" and local is not None:
        return _in_place_config(artifact, local)
    return _copy_config(artifact)


def attach_vitessce_config(artifact: ln.Artifact, *, force: bool = False) -> ln.Artifact | None:
    """Save the artifact's Vitessce config and link it to the artifact (once per artifact version).

    Parameters
    ----------
    artifact
        A registered cohort.
    force
        Attach even where :func:`hub_can_show` says no hub could show it (a local in-place cohort).

    Returns
    -------
    lamindb.Artifact or None
        The config artifact (the one attached before, if any), or None when nothing was attached:
        ``vitessce`` is not installed (logged as a warning) or no hub could show the artifact.
    """
    from lamindb.integrations import save_vitessce_config

    if not force and not hub_can_show(artifact):
        logger.debug("%s: a local folder registered in place; no Vitessce config attached", artifact.key)
        return None
    try:
        from spora_sd.viewer.config import require_vitessce

        require_vitessce()
    except SporaError as exc:
        logger.warning("no Vitessce config attached to %s: %s", artifact.key, exc)
        return None
    existing = artifact._actions.first()
    if existing is not None:
        return existing
    config = vitessce_config(artifact)
    with quiet():  # lamindb prints LaminHub links, which a local instance does not have
        saved = save_vitessce_config(config, description=f"Vitessce view of {artifact.key}")
    logger.info("attached Vitessce config %s to %s", saved.uid, artifact.key)
    return saved
