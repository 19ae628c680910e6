"""One tissue of the QC report: its thumbnails and intensity quantiles, made in one picklable job.

:func:`tissue_jobs` plans one :class:`TissueJob` per tissue in the main process (paths and channel
positions only, so the job can run on a dask.distributed worker); :func:`run_tissue_job` reads the
images of one tissue (one downsampled level each, see :mod:`spora_sd.qc.thumbnails`) and its tissue
mask, and returns a :class:`TissueResult` of a few kilobytes. A tissue that cannot be read does not
stop the report: its error is shown in its row (the validation section says more).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from spora_sd import layout
from spora_sd.errors import SporaError
from spora_sd.io.cohort import Cohort
from spora_sd.io.images import check_image_metadata, read_image_metadata
from spora_sd.io.masks import read_mask
from spora_sd.qc.distributions import tissue_quantiles
from spora_sd.qc.thumbnails import composite, outline, pick_level, png_data_uri, pooled, resize_mask

__all__ = ["ModalityJob", "TissueJob", "TissueResult", "run_tissue_job", "tissue_jobs"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModalityJob:
    """How to draw one modality of one tissue."""

    modality: str
    images: tuple[tuple[float, str], ...]  # (mpp, image path) of every stored resolution
    channels: tuple[str, ...] | None  # the image's channels per the tables (None: IHC, unnamed)
    rgb: tuple[int, ...]  # positions in the image of the red, green, blue channels; -1 where missing
    panel_positions: tuple[int, ...]  # panel position of each image channel (for the quantiles)
    panel_size: int
    rescale: bool  # False for H&E (8-bit RGB as is)


@dataclass(frozen=True)
class TissueJob:
    """Everything :func:`run_tissue_job` needs, as plain values."""

    tissue_id: str
    modalities: tuple[ModalityJob, ...]
    masks: tuple[tuple[float, str], ...]  # (mpp, tissue mask path) that exist
    size: int
    on_mismatch: str = "raise"
    problems: tuple[str, ...] = ()  # what planning found (e.g. no channels_per_tissue row), shown in the row


@dataclass
class TissueResult:
    """The row of one tissue: a thumbnail (data URI) per modality and the panel quantiles."""

    tissue_id: str
    thumbnails: dict[str, str] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)  # modality -> level description
    quantiles: dict[str, np.ndarray] = field(default_factory=dict)  # modality -> (panel, quantiles), NaN if absent
    errors: list[str] = field(default_factory=list)
    has_mask: bool = False


def tissue_jobs(
    cohort: Cohort, markers: Mapping[str, Sequence[str]], size: int, tissues: Sequence[str] | None = None
) -> list[TissueJob]:
    """One job per tissue of the tissues table (in its order), with the images that exist for it."""
    by_tissue: dict[str, list[str]] = {}
    table = cohort.tissues
    for tissue_id, modality in zip(table["tissue_id"].astype(str), table["modality"].astype(str), strict=True):
        by_tissue.setdefault(tissue_id, []).append(modality)
    mask_resolutions = cohort.mask_resolutions()
    resolutions = {m: cohort.resolutions(m) for m in cohort.modalities}  # listed once, not per tissue
    jobs = []
    for tissue_id in tissues if tissues is not None else list(by_tissue):
        modality_jobs, problems = [], []
        for modality in dict.fromkeys(by_tissue.get(tissue_id, [])):
            if modality not in resolutions:
                continue  # reported by the validator; nothing to draw
            try:
                channels = cohort.image_channels(tissue_id, modality)
            except SporaError as exc:  # broken tables: the row says so, the report goes on
                problems.append(f"{modality}: {exc}")
                continue
            images = tuple(
                (mpp, str(cohort.paths.image(modality, mpp, tissue_id)))
                for mpp in resolutions[modality]
                if cohort.paths.image(modality, mpp, tissue_id).exists()
            )
            panel = cohort.panel(modality)
            names = list(channels) if channels is not None else panel
            wanted = markers.get(modality, names[:3])
            modality_jobs.append(
                ModalityJob(
                    modality=modality,
                    images=images,
                    channels=tuple(channels) if channels is not None else None,
                    rgb=tuple(names.index(m) if m in names else -1 for m in wanted),
                    panel_positions=tuple(panel.index(n) if n in panel else -1 for n in names),
                    panel_size=len(panel),
                    rescale=modality != layout.HE,
                )
            )
        masks = tuple(
            (mpp, str(cohort.paths.tissue_mask(mpp, tissue_id)))
            for mpp in mask_resolutions
            if cohort.paths.tissue_mask(mpp, tissue_id).is_file()
        )
        jobs.append(TissueJob(tissue_id, tuple(modality_jobs), masks, size, cohort.on_mismatch, tuple(problems)))
    return jobs


def _mask_for(job: TissueJob, mpp: float) -> np.ndarray | None:
    """The tissue mask at ``mpp`` if stored, else at the coarsest stored resolution (cheapest to read)."""
    if not job.masks:
        return None
    by_mpp = dict(job.masks)
    path = by_mpp.get(mpp, by_mpp[max(by_mpp)])
    return read_mask(Path(path))


def _draw(job: TissueJob, mj: ModalityJob, result: TissueResult) -> None:
    if not mj.images:
        result.errors.append(f"{mj.modality}: no image stored")
        return
    choice, level = pick_level([(mpp, Path(p)) for mpp, p in mj.images], job.size)
    check_image_metadata(
        read_image_metadata(choice.image), mpp=choice.mpp, channel_names=mj.channels, on_mismatch=job.on_mismatch
    )
    pixels = pooled(level, choice.factor)
    mask = _mask_for(job, choice.mpp)
    inside = resize_mask(mask, pixels.shape[1:]) if mask is not None else None
    result.has_mask = result.has_mask or inside is not None
    planes = np.stack([pixels[i] if 0 <= i < len(pixels) else np.zeros(pixels.shape[1:], np.float32) for i in mj.rgb])
    rgb = composite(planes, inside, rescale=mj.rescale)
    if inside is not None:
        rgb = outline(rgb, inside)
    result.thumbnails[mj.modality] = png_data_uri(rgb)
    result.sources[mj.modality] = choice.describe()
    if mj.rescale:  # intensity quantiles for multiplex and IHC channels, in panel order
        quantiles = np.full((mj.panel_size, 5), np.nan)
        for i, q in zip(mj.panel_positions, tissue_quantiles(pixels, inside), strict=False):
            if i >= 0:
                quantiles[i] = q
        result.quantiles[mj.modality] = quantiles


def run_tissue_job(job: TissueJob) -> TissueResult:
    """Thumbnails and quantiles of one tissue; a read failure becomes an error line of its row."""
    result = TissueResult(job.tissue_id, errors=list(job.problems))
    for mj in job.modalities:
        try:
            _draw(job, mj, result)
        except (SporaError, OSError) as exc:
            logger.warning("%s (%s): %s", job.tissue_id, mj.modality, exc)
            result.errors.append(f"{mj.modality}: {exc}")
    return result
