"""What one ``spora-sd view`` shows: the cohort, its tissues, and each tissue's view, made on first use.

A :class:`ViewSession` picks the modality to show (the first multiplex one with images, else H&E),
lists the tissues that have an image of it, and builds a tissue's :class:`~spora_sd.viewer.config.TissueView`
the first time the browser asks for it: the default channels and contrast (no pixel read), and the
labels and cells stores (:mod:`spora_sd.viewer.stores`) in the session's cache folder.

Examples
--------
>>> import spora_sd, tempfile
>>> path = spora_sd.make_synthetic_cohort(tempfile.mkdtemp(), n_tissues=2, image_size=64, n_cells=5)
>>> session = ViewSession(path, tempfile.mkdtemp())
>>> session.modality, len(session.tissues)
('imc', 2)
>>> session.image_folder(session.tissues[0]).name.endswith(".ome.zarr")
True
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from spora_sd import layout
from spora_sd.errors import CohortNotFoundError, InvalidArgumentError
from spora_sd.io.cohort import Cohort, open_cohort
from spora_sd.viewer.channel_chunks import ChannelChunkedImage, DecodedChunks
from spora_sd.viewer.config import TissueView
from spora_sd.viewer.contrast import default_channels, default_windows
from spora_sd.viewer.stores import build_tissue_stores

__all__ = ["ViewSession"]

logger = logging.getLogger(__name__)


class ViewSession:
    """The cohort behind a view server, and the tissue views it has built so far (thread-safe).

    Parameters
    ----------
    cohort
        A cohort folder, dataset key or alias (:func:`spora_sd.open_cohort`), or an open :class:`Cohort`.
    cache
        Folder for the per-tissue stores (labels, cells).
    modality
        The modality to show; default: the first multiplex modality with images, else ``he``.
    """

    def __init__(self, cohort: str | Path | Cohort, cache: str | Path, modality: str | None = None) -> None:
        self.cohort = cohort if isinstance(cohort, Cohort) else open_cohort(cohort)
        self.cache = Path(cache)
        candidates = [m for m in [*self.cohort.multiplex_modalities, layout.HE] if m in self.cohort.modalities]
        with_images = [m for m in candidates if self.cohort.image_tissue_ids(m)]
        if modality is None:
            if not with_images:
                raise CohortNotFoundError(f"{self.cohort.path}: no multiplex or H&E images to view")
            modality = with_images[0]
        elif modality not in with_images:
            raise InvalidArgumentError(
                f"modality={modality!r}: {self.cohort.path} has images of {', '.join(with_images) or 'no modality'}"
            )
        self.modality = modality
        self.tissues: list[str] = sorted(self.cohort.image_tissue_ids(modality))
        self._views: dict[str, TissueView] = {}
        #: the cohort chunks decoded for the browser's channel chunk requests, shared by the tissues
        self.decoded = DecodedChunks()
        self._images: dict[str, ChannelChunkedImage] = {}
        self._images_lock = threading.Lock()  # not the tissue's lock: its view may be building its stores
        self._locks: dict[str, threading.Lock] = {t: threading.Lock() for t in self.tissues}

    @property
    def name(self) -> str:
        return self.cohort.path.name

    def check_tissue(self, tissue_id: str) -> str:
        """``tissue_id`` if the view has it, else :class:`InvalidArgumentError` naming the tissues."""
        if tissue_id not in self._locks:
            shown = ", ".join(self.tissues[:5]) + (", ..." if len(self.tissues) > 5 else "")
            raise InvalidArgumentError(
                f"tissue {tissue_id!r} has no {self.modality} image in {self.name}; tissues: {shown}"
            )
        return tissue_id

    def image_folder(self, tissue_id: str) -> Path:
        """The tissue's OME-Zarr image in the cohort (served one channel per chunk, :meth:`image_store`)."""
        return self.cohort.image_path(self.check_tissue(tissue_id), self.modality)

    def image_store(self, tissue_id: str) -> ChannelChunkedImage:
        """The tissue's image as the browser reads it: one channel per chunk (reads its metadata once)."""
        self.check_tissue(tissue_id)
        with self._images_lock:
            image = self._images.get(tissue_id)
            if image is None:
                image = self._images[tissue_id] = ChannelChunkedImage(self.image_folder(tissue_id), self.decoded)
        return image

    def store_folder(self, tissue_id: str) -> Path:
        """The folder of the tissue's labels and cells stores in the cache."""
        return self.cache / self.check_tissue(tissue_id)

    def tissue_view(self, tissue_id: str, base: str = "") -> TissueView:
        """The view of one tissue (built once), its URLs under ``base + /data/<tissue_id>/``."""
        with self._locks[self.check_tissue(tissue_id)]:
            spec = self._views.get(tissue_id)
            if spec is None:
                spec = self._views[tissue_id] = self._build(tissue_id)
        prefix = f"{base}/data/{tissue_id}"
        return TissueView(
            name=spec.name,
            image_url=f"{prefix}/image.zarr",
            channels=spec.channels,
            shown=spec.shown,
            windows=spec.windows,
            labels_url=f"{prefix}/labels.zarr" if spec.labels_url else None,
            cells_url=f"{prefix}/cells.zarr" if spec.cells_url else None,
            set_columns=spec.set_columns,
            features=spec.features,
            cell_types=spec.cell_types,
            rgb=spec.rgb,
        )

    def _build(self, tissue_id: str) -> TissueView:
        meta = self.cohort.image_metadata(tissue_id, self.modality)
        # opening the levels checks the image against the tables (channels, scale); it reads no pixel
        dtype = self.cohort.image_levels(tissue_id, self.modality)[0].dtype
        channels = list(meta.channel_names or self.cohort.image_channels(tissue_id, self.modality) or [])
        rgb = self.modality == layout.HE
        features = self.cohort.intensity_columns(self.modality) if not rgb else []
        stores = build_tissue_stores(self.cohort, tissue_id, self.store_folder(tissue_id), features)
        windows = default_windows(self.cohort, tissue_id, self.modality, channels, dtype)  # H&E: the dtype range
        logger.info("%s: view ready (%d channels, %d cell sets)", tissue_id, len(channels), len(stores.set_columns))
        return TissueView(
            name=tissue_id,
            image_url="",
            channels=channels,
            shown=default_channels(self.cohort, self.modality, channels),
            windows=windows,
            labels_url=str(stores.labels) if stores.labels else None,
            cells_url=str(stores.cells) if stores.cells else None,
            set_columns=stores.set_columns,
            features=stores.features,
            cell_types=stores.cell_types,
            rgb=rgb,
        )

    def summary(self) -> dict[str, Any]:
        """What the page's tissue picker shows."""
        return {"cohort": self.name, "modality": self.modality, "tissues": self.tissues}
